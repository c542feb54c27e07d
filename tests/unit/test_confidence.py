"""The label-free selection confidence (analysis.confidence) against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.confidence import auroc_se, selection_confidence, sweep_confidence


def test_hanley_mcneil_standard_error_matches_the_hand_computed_values():
    # At A = 0.5, Q1 = Q2 = 1/3: var = (1/4 + (n_pos + n_neg - 2) / 12) / (n_pos n_neg).
    assert auroc_se(0.5, 40, 20) == pytest.approx(math.sqrt((0.25 + 58 / 12) / 800))
    # Hanley & McNeil's worked case: A = 0.9, 100 + 100 -> Q1 = 0.9/1.1, Q2 = 1.62/1.9.
    q1, q2 = 0.9 / 1.1, 1.62 / 1.9
    assert auroc_se(0.9, 100, 100) == pytest.approx(math.sqrt((0.09 + 99 * (q1 - 0.81) + 99 * (q2 - 0.81)) / 1e4))
    assert auroc_se(1.0, 10, 10) == 0.0
    assert math.isnan(auroc_se(0.7, 0, 10)) and math.isnan(auroc_se(float("nan"), 10, 10))


def _rows(values: dict[str, list[float]], objective: list[float], classes=("a",), normals=20, per_family=100):
    """One completed row per (trial, class): the objective and each family's AUROC."""
    rows = []
    for t, value in enumerate(objective):
        for c in classes:
            row = {"trial_id": f"t{t}", "kind": "tune", "status": "completed", "normal_class": c,
                   "val_image_auroc": value, "val_normals": normals, "val_anomalies": per_family * len(values)}
            row.update({f"val_image_auroc_{f}": v[t] for f, v in values.items()})
            rows.append(row)
    return pd.DataFrame(rows)


def test_a_sweep_at_chance_cannot_rank_and_says_every_family_is_at_chance():
    blur = [0.50, 0.52, 0.48, 0.51]
    noise = [0.49, 0.47, 0.53, 0.50]
    objective = [(a + b) / 2 for a, b in zip(blur, noise, strict=True)]
    verdict = selection_confidence(_rows({"blur": blur, "noise": noise}, objective), "val_image_auroc")
    # One class, pooled over 200 anomalies and 20 normals: noise = 1.96 x the median SE.
    ses = sorted(auroc_se(v, 200, 20) for v in objective)
    assert verdict.noise == pytest.approx(1.96 * (ses[1] + ses[2]) / 2)
    assert verdict.spread == pytest.approx(max(objective) - min(objective))
    assert verdict.can_rank is False and verdict.all_at_chance
    assert verdict.line() == (f"validation cannot rank these 4 configurations: spread {verdict.spread:.4f}, "
                              f"noise +-{verdict.noise:.4f}; every family is at chance (semantic anomalies? "
                              "validate on other classes: selection.anomalies: other_classes)")


def test_a_saturated_family_is_named_and_a_wide_spread_can_rank():
    scar = [0.60, 0.70, 0.80, 0.95]
    cutpaste = [1.0, 0.995, 1.0, 0.999]
    objective = [(a + b) / 2 for a, b in zip(scar, cutpaste, strict=True)]
    verdict = selection_confidence(_rows({"scar": scar, "cutpaste": cutpaste}, objective, classes=("a", "b")),
                                   "val_image_auroc")
    # Two classes with equal values: the trial SE is sqrt(2 SE^2) / 2 = SE / sqrt(2).
    ses = sorted(auroc_se(v, 200, 20) / math.sqrt(2) for v in objective)
    assert verdict.noise == pytest.approx(1.96 * (ses[1] + ses[2]) / 2)
    assert verdict.can_rank is True and verdict.saturated == ["cutpaste"] and verdict.at_chance == []
    assert verdict.line().startswith("validation can rank these 4 configurations: spread 0.1745, noise +-")
    assert verdict.line().endswith("; saturated: cutpaste")


def test_one_family_objective_counts_that_family_only_and_incomplete_trials_are_left_out():
    df = _rows({"blur": [0.6, 0.7, 0.8], "noise": [0.6, 0.7, 0.8]}, [0.6, 0.7, 0.8])
    df["val_image_auroc_blur"] = [0.6, 0.7, 0.8]
    verdict = sweep_confidence(df, "val_image_auroc_blur")
    assert verdict.noise == pytest.approx(1.96 * auroc_se(0.7, 100, 20))  # 100 blur anomalies, not 200
    partial = pd.concat([df, pd.DataFrame([{**df.iloc[0].to_dict(), "trial_id": "t9", "normal_class": "b"}])])
    # A second class appears, which only t9 has, and t9 lacks the first: none is complete.
    assert selection_confidence(partial, "val_image_auroc").line() == (
        "selection confidence: not assessed (0 complete configuration(s); needs 3)")


def test_the_check_is_not_assessed_where_it_cannot_speak():
    df = _rows({"blur": [0.6, 0.7, 0.8]}, [0.6, 0.7, 0.8])
    assert sweep_confidence(df, "latency_ms", "min").can_rank is None
    assert sweep_confidence(df.drop(columns=["val_normals"]), "val_image_auroc").reason.startswith("the rows do not")
    assert sweep_confidence(df.iloc[:2], "val_image_auroc").can_rank is None
    ablation = df.assign(kind="ablate")
    assert sweep_confidence(ablation, "val_image_auroc").reason == "no searched rows"  # ablation variants
    assert np.isfinite(sweep_confidence(df, "val_image_auroc").noise)
