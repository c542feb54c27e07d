"""Anomaly detection metrics: image AUROC, F1-max, pixel AUROC and AUPRO.

Conventions (see ``/work/shared/METHODS.md``, "Metrics"): label 1 / mask 1 is
anomalous and is the positive class; higher scores mean more anomalous. Every function
accepts numpy arrays or torch tensors (any device, any float dtype) and returns a
Python float; a metric that is undefined for its input (a single class present) is
``nan``, never an exception.

The pixel-level metrics work on every pixel of every test image at once (MVTec AD at
256 px is ~111 M pixels), so they avoid scikit-learn there: both are exact and built
on one sort of the normal-pixel scores plus binary searches of the anomalous ones, in
float32 (~4 bytes a pixel of extra memory, no int64 argsort of all pixels). They are
the reference: the training loop's per-evaluation pixel AUROC comes from score
histograms on the device (:mod:`raysearch.fast_metrics`, within 1e-4 of these), and
every result row's metrics from these functions.

Example:
    >>> import numpy as np
    >>> evaluate(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    {'image_auroc': 0.75, 'image_f1_max': 0.8}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score

__all__ = ["image_auroc", "pixel_auroc", "aupro", "f1_max", "evaluate", "family_aurocs"]

# 8-connectivity for ground-truth regions (MVTec AD's AUPRO definition).
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _to_numpy(x: Any) -> np.ndarray:
    """A numpy view/copy of ``x`` (torch tensors are detached and moved to the CPU)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype.itemsize < 4:  # bf16 / fp16 -> fp32
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _image_inputs(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _to_numpy(labels).reshape(-1).astype(bool)
    s = _to_numpy(scores).reshape(-1).astype(np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores must have the same length, got {y.shape[0]} and {s.shape[0]}")
    bad = int(np.count_nonzero(~np.isfinite(s)))
    if bad:
        raise ValueError(f"scores must be finite, but got {bad} NaN or infinite values of {s.size}")
    return y, s


def _pixel_inputs(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """masks -> bool (N, H, W), maps -> float32/float64 (N, H, W); checks shapes and values."""
    m = _to_numpy(masks)
    a = _to_numpy(maps)
    # Tolerate a singleton channel axis: (N, 1, H, W).
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if m.ndim == 2 and a.ndim == 2:  # a single image
        m, a = m[None], a[None]
    if m.shape != a.shape or m.ndim != 3:
        raise ValueError(f"masks and maps must both be (N, H, W) of the same shape, got {m.shape} and {a.shape}")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(a)))
    if bad:
        raise ValueError(f"anomaly maps must be finite, but got {bad} NaN or infinite values of {a.size}")
    return m.astype(bool, copy=False), a


def image_auroc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve of image scores (scikit-learn ``roc_auc_score``).

    Args:
        labels: (N,) 1 = anomalous (the positive class), 0 = normal.
        scores: (N,) higher = more anomalous.

    Returns:
        The AUROC in [0, 1], or ``nan`` if only one class is present.

    Example:
        >>> image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    y, s = _image_inputs(labels, scores)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, s))


def family_aurocs(family: Any, scores: Any, names: Sequence[str], prefix: str = "") -> dict[str, float]:
    """Image AUROC of each anomaly family against all normals, and their unweighted mean.

    Args:
        family: (N,) -1 for a normal image, j for an anomaly of family ``names[j]``.
        scores: (N,) higher = more anomalous.
        names: the family names.

    Returns:
        ``{prefix + "image_auroc_<name>": ..., prefix + "image_auroc": mean of those}``;
        the mean is over the families with a finite AUROC.

    Example:
        >>> family_aurocs([-1, -1, 0, 1], [0.1, 0.5, 0.9, 0.3], ["blur", "noise"], prefix="val_")
        {'val_image_auroc_blur': 1.0, 'val_image_auroc_noise': 0.5, 'val_image_auroc': 0.75}
    """
    f = np.asarray(family).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    normal = f < 0
    out: dict[str, float] = {}
    for j, name in enumerate(names):
        pick = normal | (f == j)
        out[f"{prefix}image_auroc_{name}"] = image_auroc((f[pick] == j).astype(np.int64), s[pick])
    values = [v for v in out.values() if math.isfinite(v)]
    out[f"{prefix}image_auroc"] = float(np.mean(values)) if values else float("nan")
    return out


def f1_max(labels: Any, scores: Any) -> float:
    """The best F1 over all thresholds of ``scores`` (scikit-learn ``precision_recall_curve``).

    Returns ``nan`` if there is no anomalous sample.

    Example:
        >>> f1_max([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.9])  # threshold 0.2: P = 2/3, R = 1
        0.8
    """
    y, s = _image_inputs(labels, scores)
    if not y.any():
        return float("nan")
    precision, recall, _ = precision_recall_curve(y, s)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


def _auroc_sorted(neg_sorted: np.ndarray, pos: np.ndarray) -> float:
    """Exact AUROC = P(pos > neg) + 0.5 P(pos == neg) (Mann-Whitney U / (n_pos n_neg)).

    This equals the trapezoidal ROC area of scikit-learn, ties included (a tie between a
    positive and a negative counts one half, like average ranks). ``neg_sorted`` is
    ascending; ``pos`` in any order.
    """
    pos = np.sort(pos)  # sorted queries make the binary searches cache friendly
    below = np.searchsorted(neg_sorted, pos, side="left")  # negatives < p
    below_or_tied = np.searchsorted(neg_sorted, pos, side="right")  # negatives <= p
    # int64 sums are exact; halve the tie count only at the end.
    wins = int(below.sum(dtype=np.int64))
    ties = int(below_or_tied.sum(dtype=np.int64)) - wins
    return (wins + 0.5 * ties) / (float(pos.size) * float(neg_sorted.size))


def pixel_auroc(masks: Any, maps: Any) -> float:
    """AUROC over all pixels of all images (one ROC), exact, without scikit-learn.

    Sort-based Mann-Whitney statistic: the normal-pixel scores are sorted once and each
    anomalous pixel is located among them by binary search, so ties count one half
    exactly as in ``sklearn.metrics.roc_auc_score``. Memory: one float copy of the
    normal pixels and of the anomalous pixels.

    Args:
        masks: (N, H, W) ground truth in {0, 1} (1 = anomalous pixel).
        maps: (N, H, W) anomaly maps, higher = more anomalous.

    Returns:
        The AUROC, or ``nan`` if all pixels are of one class.

    Example:
        >>> import numpy as np
        >>> pixel_auroc(np.array([[[0, 1], [0, 1]]]), np.array([[[0.1, 0.5], [0.5, 0.9]]]))
        0.875
    """
    m, a = _pixel_inputs(masks, maps)
    pos = a[m]
    neg = a[~m]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    neg.sort()  # in place: `neg` is already a copy
    return _auroc_sorted(neg, pos)


def _region_weights(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Per anomalous pixel (in ``masks[masks]`` order) 1 / size of its connected region.

    Regions are 8-connected components labelled image by image (regions never join
    across images). Returns the weights and the number of regions.
    """
    weights = np.empty(int(np.count_nonzero(masks)), dtype=np.float64)
    start, regions = 0, 0
    for i in np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1)):
        labels, n = ndimage.label(masks[i], structure=_EIGHT_CONNECTED)  # (H, W) 1..n
        region_of_pixel = labels[masks[i]]  # (P_i,), same row-major order as a[m]
        sizes = np.bincount(region_of_pixel, minlength=n + 1)  # sizes[0] is the background
        weights[start : start + region_of_pixel.size] = 1.0 / sizes[region_of_pixel]
        start += region_of_pixel.size
        regions += n
    assert start == weights.size
    return weights, regions


def _aupro_from_pixels(
    neg: np.ndarray,
    neg_is_sorted: bool,
    pos: np.ndarray,
    pos_weights: np.ndarray,
    max_fpr: float,
    num_thresholds: int | None,
) -> float:
    """AUPRO from normal-pixel scores and per-anomalous-pixel PRO weights (sum = 1).

    The PRO/FPR curve has a vertex at every distinct score t: FPR(t) = #{neg >= t} /
    n_neg, PRO(t) = sum of the weights of anomalous pixels >= t, vertices joined by
    straight lines (MVTec AD's reference evaluation). Only thresholds where FPR moves
    add area, i.e. the distinct normal scores u: the segment over u runs from
    (FPR(>u), PRO(>u)) to (FPR(>=u), PRO(>=u)). So the area up to ``max_fpr`` is a sum
    over the distinct normal scores in the top ``max_fpr`` fraction, with the PRO
    values looked up by binary search among the sorted anomalous scores.
    """
    n_neg = neg.size
    # The k highest normal scores reach FPR >= max_fpr; everything lower is not needed.
    k = min(n_neg, max(1, math.ceil(max_fpr * n_neg)))
    if neg_is_sorted:
        top = neg[n_neg - k :]
    elif k < n_neg:
        top = np.sort(np.partition(neg, n_neg - k)[n_neg - k :])
    else:
        top = np.sort(neg)
    top = top[::-1]  # (k,) descending
    # Distinct values and their counts (runs in the sorted array).
    starts = np.flatnonzero(np.concatenate(([True], top[1:] != top[:-1])))
    values = top[starts].astype(np.float64)  # (G,) descending
    counts = np.diff(np.append(starts, k)).astype(np.int64)  # (G,)
    # The lowest group may continue below the top-k cut: count it in full.
    counts[-1] = int(np.count_nonzero(neg == top[-1]))
    fpr_hi = np.cumsum(counts) / n_neg  # FPR at threshold >= u
    fpr_lo = fpr_hi - counts / n_neg  # FPR at threshold > u

    order = np.argsort(pos, kind="stable")
    pos_sorted = pos[order].astype(np.float64)  # (P,) ascending
    # suffix[j] = total PRO weight of pos_sorted[j:]; suffix[P] = 0.
    suffix = np.concatenate((np.cumsum(pos_weights[order][::-1])[::-1], [0.0]))

    def pro_at(t: np.ndarray, side: str) -> np.ndarray:
        # side "left": PRO(>= t); side "right": PRO(> t).
        return suffix[np.searchsorted(pos_sorted, t, side=side)]

    if num_thresholds is None:
        pro_lo = pro_at(values, "right")  # (G,)
        pro_hi = pro_at(values, "left")  # (G,)
        # Clip the last segment at max_fpr, interpolating PRO linearly along it.
        width = np.clip(np.minimum(fpr_hi, max_fpr) - fpr_lo, 0.0, None)
        frac = width / (counts / n_neg)
        pro_end = pro_lo + frac * (pro_hi - pro_lo)
        area = float(np.sum(width * (pro_lo + pro_end) / 2))
        return area / max_fpr

    # Threshold grid: evenly spaced from the highest score down to the normal score at
    # which FPR reaches max_fpr; converges to the exact value as the grid gets finer.
    hi = max(float(values[0]), float(pos_sorted[-1]))
    thresholds = np.linspace(hi, float(values[-1]), num_thresholds)  # descending
    # FPR(>= t): the cumulative count of the distinct values >= t.
    n_groups = np.searchsorted(-values, -thresholds, side="right")  # groups with value >= t
    fpr = np.where(n_groups > 0, fpr_hi[np.maximum(n_groups - 1, 0)], 0.0)
    pro = pro_at(thresholds, "left")
    fpr = np.concatenate(([0.0], fpr))
    pro = np.concatenate(([0.0], pro))
    # Trapezoids up to max_fpr, the last one cut at max_fpr by interpolation.
    f0, f1_, p0, p1 = fpr[:-1], fpr[1:], pro[:-1], pro[1:]
    seg = f1_ - f0
    width = np.clip(np.minimum(f1_, max_fpr) - f0, 0.0, None)
    frac = np.divide(width, seg, out=np.zeros_like(seg), where=seg > 0)
    area = float(np.sum(width * (p0 + (p0 + frac * (p1 - p0))) / 2))
    return area / max_fpr


def _check_aupro_args(max_fpr: float, num_thresholds: int | None) -> None:
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], but got {max_fpr=}")
    if num_thresholds is not None and num_thresholds < 2:
        raise ValueError(f"num_thresholds must be None (exact) or >= 2, but got {num_thresholds=}")


def aupro(masks: Any, maps: Any, max_fpr: float = 0.3, num_thresholds: int | None = None) -> float:
    """Area under the per-region-overlap (PRO) curve up to ``max_fpr``, divided by ``max_fpr``.

    For a threshold t, PRO(t) is the mean over all connected ground-truth regions
    (8-connectivity, labelled per image) of the fraction of the region's pixels with
    score >= t, and FPR(t) is the fraction of normal pixels (outside the masks of all
    images) with score >= t. The curve is integrated by trapezoids from FPR 0 to
    ``max_fpr`` (the last segment interpolated at ``max_fpr``) and divided by
    ``max_fpr`` -- not by the last FPR reached -- so a perfect map scores 1.

    Args:
        masks: (N, H, W) ground truth in {0, 1}.
        maps: (N, H, W) anomaly maps, higher = more anomalous.
        max_fpr: the integration limit on the FPR axis (MVTec AD uses 0.3).
        num_thresholds: None (default) computes the exact curve, with a vertex at every
            distinct score (sort based; ties between normal and anomalous pixels give a
            straight segment). An integer uses that many evenly spaced thresholds
            instead (anomalib-style grid; an approximation kept for comparison).

    Returns:
        AUPRO in [0, 1], or ``nan`` when there is no anomalous or no normal pixel.

    Example:
        >>> import numpy as np
        >>> masks = np.zeros((1, 4, 4), dtype=np.uint8); masks[0, :2, :2] = 1
        >>> aupro(masks, masks.astype(float))  # a perfect map
        1.0
    """
    _check_aupro_args(max_fpr, num_thresholds)
    m, a = _pixel_inputs(masks, maps)
    if not m.any() or m.all():
        return float("nan")
    weights, regions = _region_weights(m)
    return _aupro_from_pixels(a[~m], False, a[m], weights / regions, max_fpr, num_thresholds)


def evaluate(
    labels: Any,
    scores: Any,
    masks: Any | None = None,
    maps: Any | None = None,
    prefix: str = "",
    max_fpr: float = 0.3,
) -> dict[str, float]:
    """All metrics of one split, keyed ``prefix + name``.

    Always ``image_auroc`` and ``image_f1_max``; ``pixel_auroc`` and ``aupro`` too when
    ``masks`` and ``maps`` are given and the masks contain at least one anomalous pixel.
    The normal-pixel scores are sorted once and shared by the two pixel metrics.

    Args:
        labels: (N,) image labels, 1 = anomalous.
        scores: (N,) image scores, higher = more anomalous.
        masks: (N, H, W) pixel ground truth in {0, 1}, or None.
        maps: (N, H, W) anomaly maps, or None.
        prefix: prepended to every key, e.g. ``"test_"``.
        max_fpr: the AUPRO integration limit.

    Example:
        >>> evaluate([0, 1], [0.2, 0.7], prefix="val_")
        {'val_image_auroc': 1.0, 'val_image_f1_max': 1.0}
    """
    out = {
        prefix + "image_auroc": image_auroc(labels, scores),
        prefix + "image_f1_max": f1_max(labels, scores),
    }
    if masks is None or maps is None:
        return out
    _check_aupro_args(max_fpr, None)
    m, a = _pixel_inputs(masks, maps)
    if not m.any():
        return out
    pos = a[m]
    neg = a[~m]
    if neg.size == 0:
        out[prefix + "pixel_auroc"] = float("nan")
        out[prefix + "aupro"] = float("nan")
        return out
    neg.sort()
    out[prefix + "pixel_auroc"] = _auroc_sorted(neg, pos)
    weights, regions = _region_weights(m)
    out[prefix + "aupro"] = _aupro_from_pixels(neg, True, pos, weights / regions, max_fpr, None)
    return out
