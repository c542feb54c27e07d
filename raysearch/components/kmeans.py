"""Batched k-means on the device: B independent clusterings in one set of tensor ops.

Lloyd's algorithm (Lloyd 1982) with k-means++ seeding (Arthur & Vassilvitskii 2007).
cutswap (multilevel saliency-guided patch swapping, SIVP 2024) clusters every saliency
map of a batch by its values (optionally with pixel coordinates) and keeps the cluster
with the highest mean saliency; a per-image scikit-learn call inside the training loop
would be far too slow, so here the only Python loops run over seeding steps and
iterations, never over batch items.

Randomness: all draws come from ``generator``; they are made on the generator's device
and moved to the data, so a CPU generator works with data on any device.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.cat([torch.zeros(2, 5, 1), torch.ones(2, 5, 1)], dim=1)  # (B=2, N=10, D=1)
    >>> centroids, assign = batched_kmeans(x, k=2, generator=g)
    >>> centroids.shape, assign.shape
    (torch.Size([2, 2, 1]), torch.Size([2, 10]))
    >>> bool((assign[:, :5] != assign[:, 5:]).all())
    True
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["batched_kmeans", "saliency_clusters"]


def _uniform(
    shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor
) -> torch.Tensor:
    """U[0, 1) draws from ``generator`` (on its own device), returned on ``like``'s device."""
    dev = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=dev).to(
        device=like.device, dtype=like.dtype
    )


def _sq_dists(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances: x (B, N, D), c (B, K, D) -> (B, N, K)."""
    # Direct difference, not the |x|^2 - 2xc + |c|^2 expansion: exact for the low D
    # (saliency value + 2 coordinates) this is used with, and never negative.
    return (x[:, :, None, :] - c[:, None, :, :]).pow(2).sum(-1)


def _gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, N, D), idx (B, M) -> x[b, idx[b, m]] as (B, M, D)."""
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[2]))


def _sample_index(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row drawn with probability ~ weights (B, N) >= 0 -> (B,).

    Inverse-CDF sampling (device-agnostic, unlike ``torch.multinomial`` with a
    generator); a row of all zeros is sampled uniformly.
    """
    total = weights.sum(1, keepdim=True)  # (B, 1)
    weights = torch.where(total > 0, weights, torch.ones_like(weights))
    cdf = weights.cumsum(1)  # (B, N)
    u = _uniform((weights.shape[0], 1), generator, weights) * cdf[:, -1:]  # (B, 1) in [0, total)
    # right=True: the first index whose cdf exceeds u, which has a positive weight.
    return torch.searchsorted(cdf, u, right=True)[:, 0].clamp_max(weights.shape[1] - 1)


def batched_kmeans(
    x: torch.Tensor,
    k: int,
    iters: int = 10,
    generator: torch.Generator | None = None,
    init: Literal["kmeans++", "random"] = "kmeans++",
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means on each of B point sets at once.

    Args:
        x: (B, N, D) points; N >= k.
        k: clusters per set.
        iters: Lloyd iterations (a fixed count: no data-dependent stopping, no host sync).
        generator: source of the initial centres (None = torch's global generator).
        init: ``kmeans++`` (D^2 seeding) or ``random`` (k distinct points per set).

    Returns:
        centroids (B, k, D) and assignments (B, N) in [0, k), consistent with each other
        (assignments to the nearest final centroid).

    Empty clusters: a cluster that loses all its points is moved to the point farthest
    from its own centroid (the j-th empty cluster of a set to the j-th farthest point),
    the usual remedy (as in scikit-learn), so every centroid stays a finite data point.

    Example:
        >>> g = torch.Generator().manual_seed(1)
        >>> x = torch.tensor([[[0.0], [0.1], [5.0], [5.1]]])
        >>> c, a = batched_kmeans(x, k=2, generator=g)
        >>> sorted(c[0, :, 0].tolist())
        [0.05000000074505806, 5.050000190734863]
    """
    if x.dim() != 3:
        raise ValueError(f"x must be (B, N, D), but got shape {tuple(x.shape)}.")
    b, n, _ = x.shape
    if not (isinstance(k, int) and 1 <= k <= n):
        raise ValueError(f"k must be an int in [1, N={n}], but got {k=}.")
    if iters < 0:
        raise ValueError(f"iters must be >= 0, but got {iters=}.")
    x = x.float() if not x.is_floating_point() else x
    if init == "random":
        # k distinct points per set: the k largest of N uniform keys (a random subset).
        keys = _uniform((b, n), generator, x)  # (B, N)
        centroids = _gather_rows(x, keys.topk(k, dim=1).indices)  # (B, k, D)
    elif init == "kmeans++":
        first = _sample_index(
            torch.zeros(b, n, dtype=x.dtype, device=x.device), generator
        )  # uniform
        centroids = _gather_rows(x, first[:, None])  # (B, 1, D)
        min_d = _sq_dists(x, centroids)[..., 0]  # (B, N)
        for _ in range(1, k):
            # D^2 seeding: the next centre is drawn with probability ~ squared distance.
            nxt = _gather_rows(x, _sample_index(min_d, generator)[:, None])  # (B, 1, D)
            centroids = torch.cat([centroids, nxt], dim=1)
            min_d = torch.minimum(min_d, _sq_dists(x, nxt)[..., 0])
    else:
        raise ValueError(f"init must be 'kmeans++' or 'random', but got {init=}.")

    arange_k = torch.arange(k, device=x.device)
    for _ in range(iters):
        d = _sq_dists(x, centroids)  # (B, N, k)
        min_d, assign = d.min(dim=2)  # (B, N)
        onehot = (assign[..., None] == arange_k).to(x.dtype)  # (B, N, k)
        counts = onehot.sum(1)  # (B, k)
        sums = onehot.transpose(1, 2) @ x  # (B, k, D)
        means = sums / counts.clamp_min(1)[..., None]  # (B, k, D)
        empty = counts == 0  # (B, k)
        # Re-seed empty clusters at the farthest points (distance to their own centroid).
        far = _gather_rows(x, min_d.topk(k, dim=1).indices)  # (B, k, D), farthest first
        rank = (empty.long().cumsum(1) - 1).clamp_min(0)  # j-th empty cluster -> j-th farthest
        refill = _gather_rows(far, rank)  # (B, k, D)
        centroids = torch.where(empty[..., None], refill, means)
    assign = _sq_dists(x, centroids).argmin(dim=2)  # (B, N)
    return centroids, assign


def saliency_clusters(
    maps: torch.Tensor,
    k: int = 3,
    with_coords: bool = False,
    coord_weight: float = 1.0,
    iters: int = 10,
    generator: torch.Generator | None = None,
    init: Literal["kmeans++", "random"] = "kmeans++",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster every saliency map's pixels; find the most salient cluster (cutswap).

    Features per pixel: its saliency value, plus (with ``with_coords``) its row and
    column scaled to [0, 1] and multiplied by ``coord_weight`` (so clusters are also
    spatially compact; how much is the weight's job: saliency lies in [0, 1] too).

    Args:
        maps: (B, H, W) saliency maps (e.g. from :func:`~raysearch.components.layercam.layercam`).
        k: clusters per map.
        with_coords: add pixel coordinates to the features.
        coord_weight: scale of the coordinate features.
        iters, generator, init: as in :func:`batched_kmeans`.

    Returns:
        assign (B, H, W) cluster ids, and top_cluster (B,): per map the cluster whose
        centroid saliency (the mean saliency of its pixels) is highest.

    Example:
        >>> m = torch.zeros(2, 4, 4); m[:, :2, :2] = 1.0
        >>> assign, top = saliency_clusters(m, k=2, generator=torch.Generator().manual_seed(0))
        >>> bool((assign[0] == top[0]).sum() == 4)
        True
    """
    if maps.dim() != 3:
        raise ValueError(f"maps must be (B, H, W), but got shape {tuple(maps.shape)}.")
    b, h, w = maps.shape
    maps = maps.float() if not maps.is_floating_point() else maps
    feats = [maps.reshape(b, h * w, 1)]  # (B, N, 1)
    if with_coords:
        ys = torch.linspace(0, 1, h, device=maps.device, dtype=maps.dtype)
        xs = torch.linspace(0, 1, w, device=maps.device, dtype=maps.dtype)
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(
            1, h * w, 2
        )  # (1, N, 2)
        feats.append((coord_weight * grid).expand(b, -1, -1))
    x = torch.cat(feats, dim=2)  # (B, N, 1 | 3)
    centroids, assign = batched_kmeans(x, k, iters=iters, generator=generator, init=init)
    top = centroids[..., 0].argmax(dim=1)  # (B,): saliency is feature 0
    return assign.reshape(b, h, w), top
