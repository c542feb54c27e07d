"""Validation metrics at a fraction of a training epoch: pixel AUROC from score histograms on the device.

:mod:`raysearch.metrics` computes every metric exactly on the host, with one sort of all
normal-pixel scores (a validation split of 800 images at 256 px is ~52 M pixels). The
loop's per-evaluation validation pass uses :func:`evaluate_fast` instead, which differs
in one place: the pixel AUROC comes from :func:`binned_pixel_auroc`. The anomaly maps
stay on the model's device; every pixel falls into one of ``bins`` equal-width bins over
the observed score range, chunk by chunk (bounded temporary memory, no per-image
Python), and the AUROC is read off the normal and anomalous counts per bin. Image
metrics stay exact (scikit-learn on a few hundred scores costs milliseconds) and AUPRO,
when asked for, is the exact :func:`raysearch.metrics.aupro`.

Tolerance (proved in the docstring of :func:`binned_pixel_auroc`, checked in
tests/train/test_fast_metrics.py): ``|binned - exact| <= bound <= tol`` with ``tol`` = 1e-4 by
default. The bound is computed from the histograms; where it exceeds ``tol`` (a few
outliers squeezing every other score into a handful of bins) the function computes the
exact value on the device instead. Ties and constant maps are exact.

Example:
    >>> import torch
    >>> masks = torch.tensor([[[0, 1], [0, 1]]])
    >>> binned_pixel_auroc(masks, torch.tensor([[[0.1, 0.5], [0.5, 0.9]]])).value
    0.875
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from raysearch.metrics import aupro, f1_max, image_auroc

__all__ = ["PixelAUROC", "binned_pixel_auroc", "evaluate_fast", "DEFAULT_BINS", "DEFAULT_TOL"]

# 65,536 bins: the counts are two int64 vectors of 512 KiB, and on smooth maps the bound
# below stays orders of magnitude under DEFAULT_TOL.
DEFAULT_BINS = 1 << 16
# The largest |binned - exact| accepted; above it the exact value is computed instead.
DEFAULT_TOL = 1e-4
# Pixels binned at once: the int64 bin indices of a chunk take 2 MiB. Measured on the CPU
# (5 M pixels, one thread): 16 ms with 2^18, 35-50 ms with 2^22 or 2^14 (page faults of
# large temporaries; loop overhead of small ones).
CHUNK_PIXELS = 1 << 18


class PixelAUROC(NamedTuple):
    value: float  # the AUROC (nan when all pixels are of one class)
    bound: float  # a proved bound on |value - exact AUROC|; 0.0 when value is exact
    exact: bool  # True when the histograms were not fine enough and the exact value was computed


def _flat_inputs(masks: torch.Tensor, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """masks -> bool (P,), maps -> float32/float64 (P,) on the maps' device; checks shapes and values."""
    if masks.dim() == 4 and masks.shape[1] == 1:  # (N, 1, H, W)
        masks = masks[:, 0]
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if masks.shape != maps.shape:
        raise ValueError(f"masks and maps must have the same shape, got {tuple(masks.shape)} and {tuple(maps.shape)}")
    a = maps.detach().reshape(-1)
    if a.dtype not in (torch.float32, torch.float64):
        a = a.float()
    m = masks.detach().reshape(-1).to(a.device) != 0
    return m, a


def _check_finite(lo: torch.Tensor, hi: torch.Tensor, a: torch.Tensor) -> None:
    """NaN makes both extremes NaN and an infinity is one of them: no pass over the pixels."""
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        bad = int((~torch.isfinite(a)).sum())
        raise ValueError(f"anomaly maps must be finite, but got {bad} NaN or infinite values of {a.numel()}")


def _exact_auroc(m: torch.Tensor, a: torch.Tensor) -> float:
    """Mann-Whitney AUROC on the device: sort the normals, binary-search the anomalous pixels."""
    neg = torch.sort(a[~m]).values
    pos = a[m]
    below = torch.searchsorted(neg, pos, right=False)  # normals < p
    upto = torch.searchsorted(neg, pos, right=True)  # normals <= p
    wins = int(below.sum())
    ties = int(upto.sum()) - wins
    return (wins + 0.5 * ties) / (pos.numel() * neg.numel())


@torch.no_grad()
def binned_pixel_auroc(masks: torch.Tensor, maps: torch.Tensor, bins: int = DEFAULT_BINS,
                       tol: float = DEFAULT_TOL) -> PixelAUROC:
    """AUROC over all pixels of all images from fixed-bin score histograms, on the maps' device.

    Each pixel's bin is ``floor((score - min) * bins / (max - min))`` (clamped to the last
    bin): a monotone function of the score, so an anomalous pixel in a higher bin than a
    normal one has the higher score. Counting a pair in the same bin as one half, the
    AUROC P(pos > neg) + 0.5 P(pos == neg) is exact except for same-bin pairs of different
    scores, each off by exactly one half::

        |binned - exact| <= 0.5 * sum_b pos_b * neg_b / (P * N)     (b over bins of > 1 distinct score)

    The bound is first taken over every bin; only when it exceeds ``tol`` are the bins'
    lowest and highest scores found (a second pass) to drop the bins of one distinct
    score, whose ties are exact. If it still exceeds ``tol`` the exact value is computed
    (a sort on the device). Constant maps: 0.5, exactly.

    Args:
        masks: (N, H, W) ground truth, nonzero = anomalous pixel, any device.
        maps: (N, H, W) anomaly maps, higher = more anomalous.
        bins: histogram bins over [min, max] of the maps.
        tol: the largest bound accepted before the exact value is computed.

    Returns:
        :class:`PixelAUROC` (value, bound, exact); value is nan when all pixels are of one class.

    Example:
        >>> import torch
        >>> masks = torch.tensor([[[0, 1], [1, 0]]])
        >>> binned_pixel_auroc(masks, torch.tensor([[[0.2, 0.2], [0.2, 0.2]]]))
        PixelAUROC(value=0.5, bound=0.0, exact=False)
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2, but got {bins=}")
    m, a = _flat_inputs(masks, maps)
    if a.numel() == 0:
        return PixelAUROC(float("nan"), 0.0, False)
    lo, hi = torch.aminmax(a)
    _check_finite(lo, hi, a)
    n_pos = int(m.sum())
    n_neg = m.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return PixelAUROC(float("nan"), 0.0, False)
    if bool(lo == hi):  # every pair is a tie
        return PixelAUROC(0.5, 0.0, False)
    scale = bins / (hi - lo)  # 0-dim tensor in the maps' dtype: no host sync per chunk
    if not bool(torch.isfinite(scale)):  # a range too narrow for the dtype
        return PixelAUROC(_exact_auroc(m, a), 0.0, True)

    def bin_of(x: torch.Tensor) -> torch.Tensor:
        return (x - lo).mul_(scale).long().clamp_(0, bins - 1)  # (C,) monotone in x

    counts = torch.zeros(2 * bins, dtype=torch.int64, device=a.device)
    for start in range(0, a.numel(), CHUNK_PIXELS):
        x, y = a[start : start + CHUNK_PIXELS], m[start : start + CHUNK_PIXELS]
        counts += torch.bincount(bin_of(x).add_(y, alpha=bins), minlength=2 * bins)  # [normals | anomalous]
    neg, pos = counts.view(2, bins)  # (bins,), (bins,)
    below = torch.cumsum(neg, 0) - neg  # normals in lower bins
    same_bin = pos * neg  # (bins,) pairs counted one half
    # int64 throughout: exact for up to ~4e9 pixels.
    wins, ties = int((pos * below).sum()), int(same_bin.sum())
    total = n_pos * n_neg
    value = (wins + 0.5 * ties) / total
    bound = 0.5 * ties / total
    if bound > tol:  # bins of one distinct score hold exact ties: find them
        lowest = torch.full((bins,), math.inf, dtype=a.dtype, device=a.device)
        highest = torch.full((bins,), -math.inf, dtype=a.dtype, device=a.device)
        for start in range(0, a.numel(), CHUNK_PIXELS):
            x = a[start : start + CHUNK_PIXELS]
            idx = bin_of(x)
            lowest.scatter_reduce_(0, idx, x, "amin")
            highest.scatter_reduce_(0, idx, x, "amax")
        bound = 0.5 * int(same_bin[highest > lowest].sum()) / total
    if bound > tol:
        return PixelAUROC(_exact_auroc(m, a), 0.0, True)
    return PixelAUROC(value, bound, False)


def evaluate_fast(labels: Any, scores: Any, masks: torch.Tensor | None = None, maps: torch.Tensor | None = None,
                  prefix: str = "", with_aupro: bool = True, max_fpr: float = 0.3,
                  bins: int = DEFAULT_BINS, tol: float = DEFAULT_TOL) -> dict[str, float]:
    """:func:`raysearch.metrics.evaluate` with the pixel AUROC binned on the maps' device.

    The same keys as ``evaluate`` (``aupro`` only with ``with_aupro``); image metrics and
    AUPRO exact, ``pixel_auroc`` within ``tol`` of the exact value.

    Example:
        >>> import torch
        >>> evaluate_fast([0, 1], [0.2, 0.7], torch.tensor([[[0, 0]], [[0, 1]]]),
        ...               torch.tensor([[[0.1, 0.2]], [[0.3, 0.9]]]), prefix="val_", with_aupro=False)
        {'val_image_auroc': 1.0, 'val_image_f1_max': 1.0, 'val_pixel_auroc': 1.0}
    """
    out = {
        prefix + "image_auroc": image_auroc(labels, scores),
        prefix + "image_f1_max": f1_max(labels, scores),
    }
    if masks is None or maps is None:
        return out
    if not bool((masks != 0).any()):  # as evaluate: no pixel metrics without an anomalous pixel
        return out
    out[prefix + "pixel_auroc"] = binned_pixel_auroc(masks, maps, bins, tol).value
    if with_aupro:
        out[prefix + "aupro"] = aupro(masks, maps, max_fpr=max_fpr)
    return out
