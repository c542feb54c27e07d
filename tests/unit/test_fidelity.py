"""analysis.fidelity: selection fidelity against values computed by hand.

Each case is a few configurations (trials) x 2 classes with chosen numbers; the expected
Spearman, Kendall, pick and regret are worked out in the comments.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from helpers.sweeps import check_html, planted_sweep, row, write_rows

from analysis import fidelity_line, plot_fidelity, selection_fidelity, write_report
from analysis.load import prepare


def table(values: dict[str, dict[str, tuple[float, float]]], extra: list[dict] | None = None,
          kind: str = "tune") -> pd.DataFrame:
    """Rows of trials ``{trial: {class: (val, test)}}``, numbered in the dict's order."""
    rows = [{"trial_id": trial, "optuna_trial": i, "kind": kind, "status": "completed",
             "normal_class": cls, "class_index": "ab".index(cls), "seed": 0,
             "val_image_auroc": val, "test_image_auroc": test}
            for i, (trial, classes) in enumerate(values.items()) for cls, (val, test) in classes.items()]
    return prepare(pd.DataFrame(rows + (extra or [])))


def first(result, metric: str = "test_image_auroc") -> pd.Series:
    return result.table.set_index("test_metric").loc[metric]


def cls(result, name: str, metric: str = "test_image_auroc") -> pd.Series:
    per = result.per_class
    return per[(per["normal_class"] == name) & (per["test_metric"] == metric)].iloc[0]


# Class means: val .65 < .75 < .85 < .95 and test .55 < .65 < .75 < .90 (same order).
MONOTONE = {"t1": {"a": (0.60, 0.50), "b": (0.70, 0.60)},
            "t2": {"a": (0.70, 0.62), "b": (0.80, 0.68)},
            "t3": {"a": (0.80, 0.70), "b": (0.90, 0.80)},
            "t4": {"a": (0.90, 0.85), "b": (1.00, 0.95)}}

# One swap. Class a: val .60 .70 .80 .90, test .50 .60 .80 .70 (t3/t4 swapped: rho .8,
# tau 4/6; its pick t4 scores .70, best .80: regret .10). Class b: val .70 .80 .90 .96,
# test .55 .65 .75 .80 (monotone: rho 1, tau 1, regret 0). Class means: val .65 .75 .85 .93,
# test .525 .625 .775 .75, ranks 1 2 4 3: rho = 1 - 6*2/(4*15) = 0.8, tau = (5-1)/6;
# picked t4 (.75), best t3 (.775): regret .025; median (.625 + .75) / 2 = .6875.
ONE_SWAP = {"t1": {"a": (0.60, 0.50), "b": (0.70, 0.55)},
            "t2": {"a": (0.70, 0.60), "b": (0.80, 0.65)},
            "t3": {"a": (0.80, 0.80), "b": (0.90, 0.75)},
            "t4": {"a": (0.90, 0.70), "b": (0.96, 0.80)}}


def test_monotone_configs_give_spearman_one_and_no_regret():
    result = selection_fidelity(table(MONOTONE))
    assert (result.n_configs, result.n_trials, result.n_classes) == (4, 4, 2) and result.reason is None
    r = first(result)
    assert list(result.table["test_metric"]) == ["test_image_auroc"]  # the other test columns are empty
    assert r["n"] == 4 and r["spearman"] == pytest.approx(1.0) and r["kendall"] == pytest.approx(1.0)
    assert r["picked"] == "t4" and r["picked_test"] == pytest.approx(0.90) and r["regret"] == pytest.approx(0.0)
    assert r["best_test"] == pytest.approx(0.90) and r["median_test"] == pytest.approx(0.70)
    assert r["spearman_ci_low"] == pytest.approx(1.0) and r["spearman_ci_high"] == pytest.approx(1.0)
    assert r["spearman_per_class_mean"] == pytest.approx(1.0)
    assert list(result.configs["trial_id"]) == ["t1", "t2", "t3", "t4"]
    assert list(result.configs["picked"]) == [False, False, False, True]


def test_reversed_configs_give_spearman_minus_one_and_regret_best_minus_worst():
    # Test class means reversed: t1 .90, t2 .75, t3 .65, t4 .55; the objective picks t4.
    reversed_ = {"t1": {"a": (0.60, 0.85), "b": (0.70, 0.95)}, "t2": {"a": (0.70, 0.70), "b": (0.80, 0.80)},
                 "t3": {"a": (0.80, 0.62), "b": (0.90, 0.68)}, "t4": {"a": (0.90, 0.50), "b": (1.00, 0.60)}}
    r = first(selection_fidelity(table(reversed_)))
    assert r["spearman"] == pytest.approx(-1.0) and r["kendall"] == pytest.approx(-1.0)
    assert r["picked"] == "t4" and r["picked_test"] == pytest.approx(0.55) and r["best_test"] == pytest.approx(0.90)
    assert r["regret"] == pytest.approx(0.90 - 0.55)


def test_one_swap_matches_the_hand_computed_values():
    result = selection_fidelity(table(ONE_SWAP))
    r = first(result)
    assert r["spearman"] == pytest.approx(0.8) and r["kendall"] == pytest.approx(4 / 6)
    assert r["picked"] == "t4" and r["picked_test"] == pytest.approx(0.75)
    assert r["best_test"] == pytest.approx(0.775) and r["regret"] == pytest.approx(0.025)
    assert r["median_test"] == pytest.approx(0.6875)
    assert r["spearman_per_class_mean"] == pytest.approx((0.8 + 1.0) / 2)
    a, b = cls(result, "a"), cls(result, "b")
    assert a["spearman"] == pytest.approx(0.8) and a["kendall"] == pytest.approx(4 / 6)
    assert a["picked"] == "t4" and a["regret"] == pytest.approx(0.10) and a["n"] == 4
    assert b["spearman"] == pytest.approx(1.0) and b["kendall"] == pytest.approx(1.0) and b["regret"] == pytest.approx(0.0)
    assert list(result.per_class["normal_class"]) == ["a", "b"]


def test_pruned_failed_and_partial_trials_are_left_out_and_counted():
    bad = {"val_image_auroc": 0.99, "test_image_auroc": 0.0, "class_index": 0, "seed": 0, "kind": "tune"}
    extra = [{**bad, "trial_id": "t5", "optuna_trial": 5, "normal_class": "a", "status": "completed"},
             {**bad, "trial_id": "t5", "optuna_trial": 5, "normal_class": "b", "status": "pruned",
              "class_index": 1, "val_image_auroc": None, "test_image_auroc": None},
             {**bad, "trial_id": "t6", "optuna_trial": 6, "normal_class": "a", "status": "completed"},
             {**bad, "trial_id": "t7", "optuna_trial": 7, "normal_class": "a", "status": "failed"},
             {**bad, "trial_id": "t7", "optuna_trial": 7, "normal_class": "b", "status": "failed", "class_index": 1}]
    result = selection_fidelity(table(ONE_SWAP, extra))
    assert (result.n_configs, result.n_trials, result.n_classes) == (4, 7, 2)
    r = first(result)  # exactly the one-swap numbers: the 0.99 objectives never count
    assert r["n"] == 4 and r["spearman"] == pytest.approx(0.8) and r["picked"] == "t4"
    assert r["regret"] == pytest.approx(0.025)
    assert "4 configs" in fidelity_line(result)
    # Ablation rows beside a sweep are not configurations of the sweep.
    ablate = [{**bad, "trial_id": f"v{c}", "kind": "ablate", "normal_class": c, "status": "completed"} for c in "ab"]
    assert selection_fidelity(table(ONE_SWAP, ablate)).n_trials == 4


def test_mode_min_picks_the_smallest_objective():
    # Picked t1 (val mean .65), test .525; best .775: regret .25. The objective's order is
    # reversed, so the one-swap correlations change sign: rho -0.8, tau -4/6.
    result = selection_fidelity(table(ONE_SWAP), mode="min")
    r = first(result)
    assert r["picked"] == "t1" and r["picked_test"] == pytest.approx(0.525) and r["regret"] == pytest.approx(0.25)
    assert r["spearman"] == pytest.approx(-0.8) and r["kendall"] == pytest.approx(-4 / 6)
    a, b = cls(result, "a"), cls(result, "b")
    assert a["picked"] == "t1" and a["regret"] == pytest.approx(0.80 - 0.50) and a["spearman"] == pytest.approx(-0.8)
    assert b["regret"] == pytest.approx(0.80 - 0.55) and b["spearman"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="mode"):
        selection_fidelity(table(ONE_SWAP), mode="best")


def test_ties_in_the_objective_go_to_the_first_trial_in_order():
    # t3 and t4 tie on the objective (.85); t4 has the smaller Optuna number, so it is first.
    tied = {"t4": {"a": (0.80, 0.60), "b": (0.90, 0.60)}, "t1": {"a": (0.60, 0.50), "b": (0.70, 0.50)},
            "t2": {"a": (0.70, 0.55), "b": (0.80, 0.55)}, "t3": {"a": (0.80, 0.70), "b": (0.90, 0.70)}}
    df = table(tied)
    r = first(selection_fidelity(df))
    assert r["picked"] == "t4" and r["regret"] == pytest.approx(0.10)
    assert first(selection_fidelity(df.iloc[::-1]))["picked"] == "t4"  # row order does not matter


def test_fewer_than_three_configurations_give_a_reason_not_an_error():
    two = {k: MONOTONE[k] for k in ("t1", "t2")}
    pruned = [{"trial_id": "t3", "optuna_trial": 2, "kind": "tune", "status": "pruned", "normal_class": "a",
               "class_index": 0, "seed": 0, "val_image_auroc": None, "test_image_auroc": None}]
    result = selection_fidelity(table(two, pruned))
    assert result.table.empty and not result.computed and result.n_configs == 2 and result.n_trials == 3
    assert result.reason.startswith("2 complete configuration") and "at least 3" in result.reason
    assert fidelity_line(result) == f"selection fidelity: not computed ({result.reason})"
    empty = selection_fidelity(prepare(pd.DataFrame({"trial_id": [], "normal_class": [], "val_image_auroc": []})))
    assert empty.table.empty and empty.reason.startswith("0 complete")


def test_no_test_labels_give_a_reason():
    df = table(MONOTONE)
    df["test_image_auroc"] = np.nan
    result = selection_fidelity(df)
    assert result.table.empty and result.n_configs == 4 and "no test metric" in result.reason
    assert "not computed" in fidelity_line(result)


def test_test_metrics_need_every_class_and_three_configs_and_constant_classes_give_nan():
    df = table(MONOTONE)
    # test_pixel_auroc: class a rises with the objective; class b is constant (no correlation).
    df["test_pixel_auroc"] = [0.1, 0.9, 0.2, 0.9, 0.3, 0.9, 0.4, 0.9]
    # test_aupro: values for two configurations only -> too few, left out.
    df["test_aupro"] = [0.5, 0.5, 0.6, 0.6] + [np.nan] * 4
    result = selection_fidelity(df)
    assert list(result.table["test_metric"]) == ["test_image_auroc", "test_pixel_auroc"]
    assert math.isnan(cls(result, "b", "test_pixel_auroc")["spearman"])
    assert cls(result, "a", "test_pixel_auroc")["spearman"] == pytest.approx(1.0)
    assert first(result, "test_pixel_auroc")["spearman_per_class_mean"] == pytest.approx(1.0)
    only = selection_fidelity(df, test_metrics=["test_pixel_auroc"])
    assert list(only.table["test_metric"]) == ["test_pixel_auroc"]
    with pytest.raises(ValueError, match="not columns"):
        selection_fidelity(df, test_metrics=["test_nothing"])


def noisy(n: int = 8, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    quality = np.linspace(0.6, 0.95, n)
    return table({f"t{i}": {c: (q + rng.normal(0, 0.03), q + rng.normal(0, 0.05)) for c in "ab"}
                  for i, q in enumerate(quality)})


def test_bootstrap_interval_holds_the_estimate_and_is_reproducible():
    from scipy import stats

    df = noisy()
    result = selection_fidelity(df, n_boot=500, seed=3)
    r = first(result)
    assert -1 <= r["spearman_ci_low"] <= r["spearman"] <= r["spearman_ci_high"] <= 1
    assert r["spearman_ci_low"] < r["spearman_ci_high"]
    again = first(selection_fidelity(df, n_boot=500, seed=3))
    assert (again["spearman_ci_low"], again["spearman_ci_high"]) == (r["spearman_ci_low"], r["spearman_ci_high"])
    # The vectorised bootstrap equals resampling configurations and calling spearmanr on each.
    x, y = result.configs["val_image_auroc"].to_numpy(), result.configs["test_image_auroc"].to_numpy()
    idx = np.random.default_rng(3).integers(0, len(x), size=(500, len(x)))
    rhos = [stats.spearmanr(x[i], y[i])[0] for i in idx if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0]
    assert np.quantile(rhos, [0.025, 0.975]) == pytest.approx([r["spearman_ci_low"], r["spearman_ci_high"]])
    assert r["spearman"] == pytest.approx(stats.spearmanr(x, y)[0])
    none = first(selection_fidelity(df, n_boot=0))
    assert math.isnan(none["spearman_ci_low"]) and none["spearman"] == r["spearman"]


def test_fidelity_line_says_it_is_a_diagnostic():
    line = fidelity_line(selection_fidelity(table(ONE_SWAP)))
    assert line.startswith("selection fidelity (diagnostic, 4 configs): Spearman(val_image_auroc, test_image_auroc) 0.80 [")
    assert line.endswith("regret 0.0250 (picked 0.7500, best 0.7750)")


def test_plot_fidelity_draws_a_png(tmp_path):
    result = selection_fidelity(noisy())
    path = plot_fidelity(result, tmp_path / "f.png", "val_image_auroc")
    assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG"
    assert plot_fidelity(noisy(), tmp_path / "g.png").is_file()  # from the rows directly
    with pytest.raises(ValueError, match="not computed|no selection fidelity"):
        plot_fidelity(table({k: MONOTONE[k] for k in ("t1", "t2")}), tmp_path / "h.png")


def test_report_has_the_fidelity_section_after_the_ranking(tmp_path):
    sweep = tmp_path / "sweep"
    # 15 trials (5 configs x 3 seeds); config 0 is best on val but scores 0.5 on test, the
    # others 0.99: the objective's pick loses 0.49 test points.
    write_rows(sweep, planted_sweep(np.random.default_rng(7)))
    (sweep / "spec.yaml").write_text("name: sweep\nmethod: distcon\nsearch:\n  metric: val_image_auroc\n")
    out = write_report(sweep)
    md = (out / "report.md").read_text()
    assert "## Selection fidelity (diagnostic)" in md
    assert md.index("## Per class") < md.index("## Selection fidelity") < md.index("## Optimisation history")
    assert "selection fidelity (diagnostic, 15 configs)" in md and "regret 0.490" in md
    assert "never used for selection" in md and "15 of 15 trials" in md
    assert "fidelity.png" in check_html(out)
    assert {"fidelity.csv", "fidelity.tex", "fidelity_per_class.csv"} <= {p.name for p in out.iterdir()}
    per_class = pd.read_csv(out / "fidelity_per_class.csv")
    assert list(per_class["normal_class"]) == ["a", "b", "c", "d"]

    # Two complete trials: the section says why, in one line.
    few = tmp_path / "few"
    write_rows(few, [row({"x": i}, 0, c, 0.8 + i / 10, trial=f"t{i}") for i in range(2) for c in "abcd"])
    md = (write_report(few) / "report.md").read_text()
    assert "Not computed: 2 complete configuration(s) of 2 trial(s); the diagnostic needs at least 3." in md

    # A single train run has no sweep, hence no section.
    one = tmp_path / "one"
    write_rows(one, [row({"x": 1}, 0, c, 0.8, kind="train", trial="run1") for c in "abcd"])
    assert "Selection fidelity" not in (write_report(one) / "report.md").read_text()
