"""The binned pixel AUROC against the exact one: within its stated tolerance on known cases.

``raysearch.fast_metrics.binned_pixel_auroc`` claims |binned - exact| <= bound <= tol
(DEFAULT_TOL = 1e-4), with ties and constant maps exact; ``evaluate_fast`` claims the
keys and values of ``raysearch.metrics.evaluate`` (exact image metrics and AUPRO).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from raysearch.fast_metrics import DEFAULT_TOL, binned_pixel_auroc, evaluate_fast
from raysearch.metrics import evaluate, pixel_auroc


def _blobs(seed: int, n: int = 6, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth maps with square defects whose scores overlap the normals' (a realistic AUROC ~0.9)."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    for i in range(n):
        r, c = torch.randint(0, size - 8, (2,), generator=g).tolist()
        masks[i, r : r + 8, c : c + 8] = 1
    noise = torch.randn(n, 1, size, size, generator=g)
    smooth = torch.nn.functional.avg_pool2d(noise, 3, 1, 1)[:, 0]
    return masks, smooth + 0.5 * masks


@pytest.mark.parametrize("seed", range(5))
def test_binned_equals_exact_within_its_bound_on_smooth_maps(seed):
    masks, maps = _blobs(seed)
    exact = pixel_auroc(masks.numpy(), maps.numpy())
    got = binned_pixel_auroc(masks, maps)
    assert not got.exact
    assert abs(got.value - exact) <= got.bound <= DEFAULT_TOL
    assert 0.6 < exact < 0.99  # a case where the order of the scores matters


def test_the_bound_holds_when_bins_are_coarse_and_fallback_is_off():
    """With 16 bins the histogram is far from exact: the error is real and stays under the bound."""
    masks, maps = _blobs(0)
    exact = pixel_auroc(masks.numpy(), maps.numpy())
    got = binned_pixel_auroc(masks, maps, bins=16, tol=1.0)
    assert got.bound > 1e-3 and abs(got.value - exact) > 0  # coarse: really approximate
    assert abs(got.value - exact) <= got.bound


def test_too_coarse_falls_back_to_the_exact_value():
    masks, maps = _blobs(1)
    exact = pixel_auroc(masks.numpy(), maps.numpy())
    got = binned_pixel_auroc(masks, maps, bins=16, tol=1e-4)
    assert got.exact and got.bound == 0.0
    assert got.value == pytest.approx(exact, abs=1e-12)


def test_an_outlier_that_squeezes_every_score_into_one_bin_falls_back():
    masks, maps = _blobs(2)
    maps[0, 0, 0] = 1e9  # every other score lands in the lowest bin
    exact = pixel_auroc(masks.numpy(), maps.numpy())
    got = binned_pixel_auroc(masks, maps)
    assert got.exact and got.value == pytest.approx(exact, abs=1e-12)


@pytest.mark.parametrize("levels", [2, 3, 7, 50])
def test_ties_are_exact(levels):
    """Few distinct scores, shared by normal and anomalous pixels: every same-bin pair is a true tie."""
    rng = np.random.default_rng(levels)
    masks = (rng.random((4, 16, 16)) < 0.3).astype(np.uint8)
    maps = (rng.integers(0, levels, masks.shape) + masks * rng.integers(0, 2, masks.shape)).astype(np.float32)
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    got = binned_pixel_auroc(torch.from_numpy(masks), torch.from_numpy(maps), bins=8 * levels + 1)
    assert got.value == pytest.approx(expected, abs=1e-12)
    assert got.bound == 0.0 and not got.exact  # found exact from the histograms, no fallback


def test_ties_in_a_bin_of_several_distinct_scores_need_the_second_pass():
    """Two distinct scores in one bin: the first bound is loose, the bins' extremes tighten it."""
    masks = torch.tensor([[[0, 1, 0, 1], [0, 1, 0, 0]]], dtype=torch.uint8)
    maps = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.49]]])
    exact = pixel_auroc(masks.numpy(), maps.numpy())
    got = binned_pixel_auroc(masks, maps, bins=4, tol=1e-4)
    assert got.value == pytest.approx(exact, abs=1e-12)


def test_constant_maps_are_one_half():
    masks = torch.zeros(2, 8, 8, dtype=torch.uint8)
    masks[0, :3, :3] = 1
    got = binned_pixel_auroc(masks, torch.full((2, 8, 8), 0.25))
    assert got == (0.5, 0.0, False)
    assert pixel_auroc(masks.numpy(), np.full((2, 8, 8), 0.25)) == 0.5


@pytest.mark.parametrize("fill", [0, 1])
def test_masks_of_one_class_give_nan_like_the_exact_metric(fill):
    masks = torch.full((2, 8, 8), fill, dtype=torch.uint8)
    maps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0))
    assert math.isnan(binned_pixel_auroc(masks, maps).value)
    assert math.isnan(pixel_auroc(masks.numpy(), maps.numpy()))


def test_perfect_and_inverted_maps():
    masks, _ = _blobs(3)
    perfect = masks.float() + 0.01 * torch.rand(masks.shape, generator=torch.Generator().manual_seed(1))
    assert binned_pixel_auroc(masks, perfect).value == 1.0
    assert binned_pixel_auroc(masks, -perfect).value == 0.0


def test_chunks_and_dtypes_give_the_same_counts(monkeypatch):
    """Binning in chunks of a few pixels equals binning at once; bf16 and float64 maps are accepted."""
    import raysearch.fast_metrics as fm

    masks, maps = _blobs(4)
    whole = binned_pixel_auroc(masks, maps)
    monkeypatch.setattr(fm, "CHUNK_PIXELS", 1000)
    assert binned_pixel_auroc(masks, maps) == whole
    assert binned_pixel_auroc(masks[:, None], maps.double()[:, None]).value == pytest.approx(whole.value, abs=1e-4)
    low = maps.bfloat16()
    assert binned_pixel_auroc(masks, low).value == pytest.approx(pixel_auroc(masks.numpy(), low.float().numpy()),
                                                                  abs=DEFAULT_TOL)


def test_bad_inputs_are_refused_like_the_exact_metric():
    masks, maps = _blobs(0)
    with pytest.raises(ValueError, match="same shape"):
        binned_pixel_auroc(masks[:2], maps)
    maps[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        binned_pixel_auroc(masks, maps)


@pytest.mark.parametrize("with_aupro", [True, False])
def test_evaluate_fast_matches_evaluate(with_aupro):
    masks, maps = _blobs(5, n=8)
    labels = masks.flatten(1).any(1).long()
    labels[:2] = 0
    masks[:2] = 0  # two normal images
    scores = maps.flatten(1).amax(1)
    exact = evaluate(labels.numpy(), scores.numpy(), masks.numpy(), maps.numpy(), prefix="val_")
    fast = evaluate_fast(labels, scores, masks, maps, prefix="val_", with_aupro=with_aupro)
    if not with_aupro:
        exact.pop("val_aupro")
    assert set(fast) == set(exact)
    for key, value in exact.items():
        tol = DEFAULT_TOL if key == "val_pixel_auroc" else 0.0
        assert fast[key] == pytest.approx(value, abs=tol), key


def test_evaluate_fast_without_anomalous_pixels_has_no_pixel_metrics():
    masks = torch.zeros(2, 4, 4, dtype=torch.uint8)
    got = evaluate_fast([0, 1], [0.1, 0.2], masks, torch.rand(2, 4, 4))
    assert got == evaluate([0, 1], [0.1, 0.2], masks.numpy(), np.random.rand(2, 4, 4))
