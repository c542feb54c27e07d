"""Known-answer tests for raysearch.metrics: scikit-learn agreement and hand-computed AUPRO."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from helpers.sweeps import random_pixels
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from raysearch.metrics import aupro, evaluate, f1_max, image_auroc, pixel_auroc


def _reference_aupro(masks: np.ndarray, maps: np.ndarray, max_fpr: float) -> float:
    """MVTec AD's reference algorithm, written plainly: sort every pixel, cumulate, keep tie ends."""
    masks = masks.astype(bool)
    fpr_inc = np.where(masks, 0.0, 1.0 / np.count_nonzero(~masks))
    regions = []
    for i in range(len(masks)):
        lab, n = ndimage.label(masks[i], structure=np.ones((3, 3)))
        regions += [(i, lab == r) for r in range(1, n + 1)]
    pro_inc = np.zeros(masks.shape)
    for i, region in regions:
        pro_inc[i][region] = 1.0 / (region.sum() * len(regions))
    order = np.argsort(-maps.ravel(), kind="stable")
    s = maps.ravel()[order]
    fpr = np.cumsum(fpr_inc.ravel()[order])
    pro = np.cumsum(pro_inc.ravel()[order])
    last_of_tie = np.append(s[1:] != s[:-1], True)
    fpr = np.concatenate(([0.0], fpr[last_of_tie]))
    pro = np.concatenate(([0.0], pro[last_of_tie]))
    j = int(np.searchsorted(fpr, max_fpr, side="left"))
    xs, ys = list(fpr[:j]), list(pro[:j])
    if j < len(fpr):
        x0, x1, y0, y1 = fpr[j - 1], fpr[j], pro[j - 1], pro[j]
        ys.append(y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0))
        xs.append(max_fpr)
    return float(np.trapezoid(ys, xs) / max_fpr)


# ---------------------------------------------------------------- image level


def test_single_class_gives_nan_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(image_auroc([0, 0, 0], [0.1, 0.2, 0.3]))
        assert math.isnan(image_auroc([1, 1], [0.1, 0.2]))
        assert math.isnan(f1_max([0, 0], [0.1, 0.2]))
        assert math.isnan(pixel_auroc(np.zeros((1, 2, 2)), np.ones((1, 2, 2))))
        assert math.isnan(aupro(np.zeros((1, 2, 2)), np.ones((1, 2, 2))))


def test_f1_max_hand_case():
    # Thresholds 0.9: P=1, R=1/2, F1=2/3; 0.3: P=1/2, R=1/2; 0.2: P=2/3, R=1, F1=0.8.
    assert f1_max([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.9]) == pytest.approx(0.8)
    assert f1_max([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.9]) == pytest.approx(1.0)


def test_nan_scores_are_an_error_naming_the_problem():
    with pytest.raises(ValueError, match="finite"):
        image_auroc([0, 1], [0.1, float("nan")])


# ---------------------------------------------------------------- pixel AUROC


def test_pixel_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        pixel_auroc(np.zeros((2, 4, 4)), np.zeros((2, 8, 8)))


# ---------------------------------------------------------------- AUPRO


def _two_regions() -> tuple[np.ndarray, np.ndarray]:
    """A (2 px, score 1.0) and B (4 px, score 0.5); 10 normal pixels, two at 0.8, eight at 0.

    The PRO/FPR curve: (0, 0.5) at t=1 (A found, B not; the mean over regions, not over
    pixels, which would give 1/3); (0.2, 0.5) at t=0.8; (0.2, 1) at t=0.5; (1, 1) at t=0.
    """
    masks = np.zeros((1, 4, 4), dtype=np.uint8)
    maps = np.zeros((1, 4, 4), dtype=np.float32)
    masks[0, 0, :2], maps[0, 0, :2] = 1, 1.0  # region A
    masks[0, 2:, 2:], maps[0, 2:, 2:] = 1, 0.5  # region B (not touching A, even diagonally)
    maps[0, 3, :2] = 0.8  # two of the ten normal pixels
    return masks, maps


@pytest.mark.parametrize(
    "max_fpr, expected",
    [
        (0.3, (0.2 * 0.5 + 0.1 * 1.0) / 0.3),  # 2/3
        (0.1, (0.1 * 0.5) / 0.1),  # 0.5
        (1.0, 0.2 * 0.5 + 0.8 * 1.0),  # 0.9
    ],
)
def test_aupro_two_regions_step_curve(max_fpr, expected):
    masks, maps = _two_regions()
    assert aupro(masks, maps, max_fpr=max_fpr) == pytest.approx(expected)


def test_aupro_divides_by_max_fpr():
    masks, maps = _two_regions()
    # A perfect map: PRO = 1 from FPR 0 on, so the normalised area is 1 for any limit.
    for max_fpr in (0.05, 0.3, 1.0):
        assert aupro(masks, masks.astype(float), max_fpr=max_fpr) == pytest.approx(1.0)
    # All normal pixels tied with B at 0.7: one straight segment from (0, 0.5) to (1, 1),
    # PRO = 0.5 + 0.5 * FPR, whose mean over [0, 0.3] is 0.5 + 0.5 * 0.15.
    tied = np.where(masks == 1, maps, 0.7).astype(np.float32)
    tied[0, 2:, 2:] = 0.7
    assert aupro(masks, tied) == pytest.approx(0.5 + 0.5 * 0.15)


def test_aupro_regions_are_8_connected_and_per_image():
    # Image 0: one region of two diagonal pixels, one found. Image 1: one pixel, at the
    # same place as image 0's second pixel, not found. 8-connectivity per image gives
    # two regions, PRO = (1/2 + 0) / 2 = 1/4 (4-connectivity: 1/3; joined across images: 1/3).
    masks = np.zeros((2, 4, 4), dtype=np.uint8)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[1, 1, 1] = 1
    maps = np.full((2, 4, 4), 0.5, dtype=np.float32)  # normals, all tied
    maps[masks == 1] = 0.0
    maps[0, 0, 0] = 1.0
    assert aupro(masks, maps) == pytest.approx(0.25)


def test_aupro_equals_reference_algorithm_with_ties():
    rng = np.random.default_rng(2)
    for _ in range(20):
        masks, maps = random_pixels(rng)
        for max_fpr in (0.3, 0.05, 1.0):
            assert aupro(masks, maps, max_fpr=max_fpr) == pytest.approx(
                _reference_aupro(masks, maps, max_fpr), abs=1e-10
            )


def test_aupro_threshold_grid_converges_to_exact():
    rng = np.random.default_rng(3)
    masks = np.zeros((4, 32, 32), dtype=np.uint8)
    masks[1:, 8:20, 10:18] = 1
    maps = rng.random(masks.shape).astype(np.float32) + 0.5 * masks
    exact = aupro(masks, maps)
    assert aupro(masks, maps, num_thresholds=20000) == pytest.approx(exact, abs=2e-3)
    assert aupro(masks, maps, num_thresholds=20000) != exact  # it is a different computation


def test_aupro_rejects_bad_arguments():
    masks, maps = _two_regions()
    with pytest.raises(ValueError, match="max_fpr"):
        aupro(masks, maps, max_fpr=0.0)
    with pytest.raises(ValueError, match="num_thresholds"):
        aupro(masks, maps, num_thresholds=1)


# ---------------------------------------------------------------- evaluate


def test_evaluate_keys_and_values():
    masks, maps = _two_regions()
    masks = np.concatenate([masks, np.zeros_like(masks)])  # a normal image too
    maps = np.concatenate([maps, np.zeros_like(maps)])
    labels, scores = np.array([1, 0]), np.array([0.9, 0.1])
    out = evaluate(labels, scores, masks, maps, prefix="test_")
    assert set(out) == {"test_image_auroc", "test_image_f1_max", "test_pixel_auroc", "test_aupro"}
    assert all(isinstance(v, float) for v in out.values())
    assert out["test_pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    assert out["test_aupro"] == pytest.approx(aupro(masks, maps))
    assert out["test_image_auroc"] == 1.0

    assert set(evaluate(labels, scores)) == {"image_auroc", "image_f1_max"}
    no_anomalous_pixel = evaluate(labels, scores, np.zeros_like(masks), maps)
    assert set(no_anomalous_pixel) == {"image_auroc", "image_f1_max"}
