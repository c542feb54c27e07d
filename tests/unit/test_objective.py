"""The objective's one home (raysearch.config.objective): report keys, the trial value rule, and
the ranking agreeing with it. Torch-free and Ray-free."""

import math

import pandas as pd
import pytest

from analysis.rank import trial_table
from raysearch.config.objective import (
    final_means,
    metric_of,
    objective,
    report_key,
    running_means,
    trial_value,
)
from raysearch.config.schema import SpecError


def test_report_keys_round_trip_and_objective_reads_metric_and_mode():
    assert report_key("val_aupro") == "mean_val_aupro" and metric_of(report_key("val_aupro")) == "val_aupro"
    assert metric_of("progress") == "progress"
    assert objective("val_pixel_auroc") == (("val_pixel_auroc",), ("max",))
    assert objective(["val_image_auroc", "latency_ms"], ["max", "min"]) == (("val_image_auroc", "latency_ms"), ("max", "min"))
    with pytest.raises(SpecError, match="search.metric: unknown metric 'auto'"):
        objective("auto")  # a loaded spec has auto resolved; a raw one must not slip through


def test_a_trial_value_needs_every_class_finite():
    assert trial_value([0.9, 0.7], 2) == pytest.approx(0.8)
    assert math.isnan(trial_value([0.9], 2))  # a class missing
    assert math.isnan(trial_value([0.9, float("nan")], 2))  # a class without a value
    assert math.isnan(trial_value([0.9, None], 2))


def test_running_means_skip_missing_classes_and_final_means_do_not():
    per_class = [{"val_image_auroc": 0.8, "latency_ms": 2.0}, {"val_image_auroc": float("nan"), "latency_ms": 4.0}]
    running = running_means(per_class, ["val_image_auroc", "latency_ms"])
    assert running == {"mean_val_image_auroc": 0.8, "mean_latency_ms": 3.0}
    final = final_means(per_class, ["val_image_auroc", "latency_ms"], 2)
    assert math.isnan(final["mean_val_image_auroc"]) and final["mean_latency_ms"] == 3.0


def test_the_ranking_calls_completed_exactly_the_trials_with_a_value():
    rows = pd.DataFrame({
        "trial_id": ["a", "a", "b", "b", "c"],
        "class_index": [0, 1, 0, 1, 0],
        "normal_class": ["x", "y", "x", "y", "x"],
        "status": ["completed"] * 5,
        "val_image_auroc": [0.8, 0.6, 0.9, float("nan"), 0.95],
    })
    table = trial_table(rows, "val_image_auroc", "max", n_classes=2).set_index("trial_id")
    for trial, group in rows.groupby("trial_id"):
        value = trial_value(group["val_image_auroc"], 2)
        assert (table.at[trial, "status"] == "completed") == math.isfinite(value)
        if math.isfinite(value):
            assert table.at[trial, "mean"] == pytest.approx(value)
