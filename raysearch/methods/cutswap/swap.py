"""CutSwap synthesis: pick a patch pair in the most salient cluster and swap the patches.

Paper: Qin, Gu, Yu, Zhang, "Multilevel saliency-guided self-supervised learning for image
anomaly detection", SIViP 18 (2024) 6339-6351 (arXiv 2311.18332). From its abstract:
"on each map, we select a pixel pair from the cluster with the highest centroid saliency
to form a patch pair ... The resulting negative sample is created by swapping the
locations of the patch pair".

Everything here is batched tensor code for the whole batch: a draw is one tensor op,
k-means is :func:`raysearch.components.kmeans.saliency_clusters`, and the swap is one
gather. Conventions (ours, the paper does not fix them):

- Patch sizes as in CutPaste: area fraction ``U(area)`` of the image, aspect ratio
  (width / height) log-uniform in ``aspect``; integer sides. If the two patches cannot be
  ``min_distance`` sides apart along either axis (a huge area), the relatively shorter
  side is shrunk until they can, so a pair always exists.
- A pixel p is a patch *centre*; its box covers rows ``p_y - h // 2 .. p_y - h // 2 + h - 1``
  (same for columns) and must lie inside the image.
- "At least one patch apart": ``|dy| >= min_distance * h`` or ``|dx| >= min_distance * w``;
  with ``min_distance >= 1`` the boxes are disjoint, so a swap permutes pixels (the
  pixel multiset of every channel is unchanged) and touches only the two boxes.
- The pair comes from the most salient cluster (the k-means cluster whose centroid
  saliency is highest). If that cluster admits no such pair (it is too small for the
  drawn patch), the next most salient cluster is used, and as a last resort the whole
  image; ``rank`` reports which (``k`` = whole image). Within the chosen set the first
  pixel is uniform over the pixels that have a partner, the second uniform over the
  partners of the first.
- ``mode="paste"`` (ablation) copies patch 1 over patch 2 and leaves patch 1 alone.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    >>> maps = torch.zeros(2, 16, 16); maps[:, :, :8] = 1.0  # left half salient
    >>> out = cutswap(x, g, maps, area=(0.02, 0.05))
    >>> out.images.shape, out.mask.shape, bool((out.centres[..., 1] < 16).all())
    (torch.Size([2, 3, 32, 32]), torch.Size([2, 32, 32]), True)
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from raysearch.components.kmeans import saliency_clusters

__all__ = [
    "CutSwapResult",
    "cutswap",
    "sample_patch_sizes",
    "pick_pairs",
    "ranked_cluster_sets",
    "swap_patches",
]


class CutSwapResult(NamedTuple):
    images: torch.Tensor  # (B, C, H, W) same dtype as the input
    mask: torch.Tensor  # (B, H, W) uint8: the union of the two boxes (swap) or box 2 (paste)
    centres: torch.Tensor  # (B, 2, 2) long: (patch 1, patch 2) x (y, x)
    sizes: torch.Tensor  # (B, 2) long: (height, width) of both patches
    rank: torch.Tensor  # (B,) long: saliency rank of the cluster used; K (or 0 in random mode) = whole image


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """U[0, 1) drawn on the generator's device, returned on ``device``."""
    dev = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=dev).to(device)


def sample_patch_sizes(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator | None,
    area: tuple[float, float] = (0.02, 0.15),
    aspect: tuple[float, float] = (0.3, 3.3),
    min_distance: float = 1.0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(n, 2) long patch (height, width): CutPaste's area and log-uniform aspect draws.

    Sides are at least 1 pixel and, where two patches would not fit ``min_distance``
    sides apart along either axis, the relatively shorter side is shrunk until they do.

    Example:
        >>> s = sample_patch_sizes(4, 64, 64, torch.Generator().manual_seed(0), area=(0.1, 0.1), aspect=(1, 1))
        >>> s[0].tolist()
        [20, 20]
    """
    device = torch.device(device)
    frac = area[0] + (area[1] - area[0]) * _uniform((n,), generator, device)
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    ratio = torch.exp(log_lo + (log_hi - log_lo) * _uniform((n,), generator, device))  # w / h
    pixels = frac * height * width
    bh = torch.sqrt(pixels / ratio).round().clamp(1, height).long()
    bw = torch.sqrt(pixels * ratio).round().clamp(1, width).long()
    # Feasibility of a pair: along some axis, side * (1 + min_distance) <= image side.
    fits = (bh * (1 + min_distance) <= height) | (bw * (1 + min_distance) <= width)
    shrink_h = ~fits & (bh * width <= bw * height)  # height is the relatively shorter side
    shrink_w = ~fits & ~shrink_h
    bh = torch.where(shrink_h, torch.full_like(bh, max(1, math.floor(height / (1 + min_distance)))), bh)
    bw = torch.where(shrink_w, torch.full_like(bw, max(1, math.floor(width / (1 + min_distance)))), bw)
    return torch.stack([bh, bw], dim=1)


def _sample_index(mask: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row, uniform over the True entries of ``mask`` (B, N) -> (B,).

    Inverse-CDF sampling (device-agnostic, unlike ``torch.multinomial`` with a generator).
    Every row must have a True entry (the callers guarantee it).
    """
    cdf = mask.float().cumsum(1)  # (B, N); integer counts, exact in float32 up to 2**24
    u = _uniform((mask.shape[0], 1), generator, mask.device) * cdf[:, -1:]  # (B, 1) in [0, count)
    return torch.searchsorted(cdf, u, right=True)[:, 0].clamp_max(mask.shape[1] - 1)


def _grid(height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    yy = torch.arange(height, device=device).view(1, height, 1)
    xx = torch.arange(width, device=device).view(1, 1, width)
    return yy, xx


def _valid_centres(sizes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H, W) bool: the centres whose box of ``sizes`` (B, 2) lies inside the image."""
    yy, xx = _grid(height, width, sizes.device)
    bh, bw = sizes[:, 0].view(-1, 1, 1), sizes[:, 1].view(-1, 1, 1)
    top, left = yy - bh // 2, xx - bw // 2
    return (top >= 0) & (top + bh <= height) & (left >= 0) & (left + bw <= width)


def pick_pairs(
    sets: torch.Tensor,
    sizes: torch.Tensor,
    generator: torch.Generator | None,
    min_distance: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two centres per image from the first of ranked candidate sets that admits a pair.

    Args:
        sets: (B, R, H, W) bool candidate pixels, best first (e.g. clusters by saliency);
            the whole image is appended as a last resort, so R may be 0.
        sizes: (B, 2) patch (height, width).
        min_distance: the centres are at least this many sides apart along one axis.

    Returns:
        centre 1 (B, 2), centre 2 (B, 2) as (y, x), and the rank used (B,) (R = whole image).

    Example:
        >>> sets = torch.zeros(1, 1, 8, 8, dtype=torch.bool); sets[0, 0, 0] = True  # row 0
        >>> c1, c2, r = pick_pairs(sets, torch.tensor([[1, 2]]), torch.Generator().manual_seed(0))
        >>> c1[0, 0].item(), c2[0, 0].item(), abs(c1[0, 1] - c2[0, 1]).item() >= 2, r.item()
        (0, 0, True, 0)
    """
    b, r, h, w = sets.shape
    dev = sets.device
    valid = _valid_centres(sizes, h, w)  # (B, H, W)
    everything = torch.ones(b, 1, h, w, dtype=torch.bool, device=dev)
    cand = torch.cat([sets.bool(), everything], dim=1) & valid[:, None]  # (B, R+1, H, W)
    yy, xx = _grid(h, w, dev)
    yy, xx = yy[None].float(), xx[None].float()  # (1, 1, H, 1), (1, 1, 1, W)
    inf = torch.tensor(float("inf"), device=dev)
    # A pixel has a partner in its set iff the set reaches far enough along an axis: the
    # set's extreme rows / columns decide it exactly (no pairwise comparison needed).
    y_min = torch.where(cand, yy, inf).amin(dim=(2, 3), keepdim=True)  # (B, R+1, 1, 1)
    y_max = torch.where(cand, yy, -inf).amax(dim=(2, 3), keepdim=True)
    x_min = torch.where(cand, xx, inf).amin(dim=(2, 3), keepdim=True)
    x_max = torch.where(cand, xx, -inf).amax(dim=(2, 3), keepdim=True)
    need_y = (min_distance * sizes[:, 0].float()).view(b, 1, 1, 1)
    need_x = (min_distance * sizes[:, 1].float()).view(b, 1, 1, 1)
    reach = (torch.maximum(y_max - yy, yy - y_min) >= need_y) | (torch.maximum(x_max - xx, xx - x_min) >= need_x)
    first_ok = cand & reach  # (B, R+1, H, W): pixels that can be the first centre
    feasible = first_ok.flatten(2).any(dim=2)  # (B, R+1); the whole image always is
    rank = feasible.int().argmax(dim=1)  # (B,): the first feasible set
    pick = torch.arange(b, device=dev)
    p1 = _sample_index(first_ok[pick, rank].flatten(1), generator)  # (B,) flat index
    y1, x1 = (p1 // w).view(b, 1, 1), (p1 % w).view(b, 1, 1)
    far = ((yy[0] - y1).abs() >= need_y[:, 0]) | ((xx[0] - x1).abs() >= need_x[:, 0])  # (B, H, W)
    p2 = _sample_index((cand[pick, rank] & far).flatten(1), generator)
    c1 = torch.stack([p1 // w, p1 % w], dim=1)
    c2 = torch.stack([p2 // w, p2 % w], dim=1)
    return c1, c2, rank


def ranked_cluster_sets(
    maps: torch.Tensor,
    size: tuple[int, int],
    generator: torch.Generator | None,
    k: int = 3,
    with_coords: bool = False,
    coord_weight: float = 1.0,
    iters: int = 10,
    init: Literal["kmeans++", "random"] = "kmeans++",
) -> torch.Tensor:
    """k-means every saliency map; the clusters as masks at ``size``, most salient first.

    Args:
        maps: (B, g, g) saliency maps (any resolution; clustered at this one).
        size: (H, W) of the returned masks (cluster ids upsampled by nearest neighbour).

    Returns:
        (B, k, H, W) bool: cluster masks ordered by decreasing mean saliency, the k-means'
        top cluster (highest centroid saliency) always first; empty clusters last.
    """
    b, gh, gw = maps.shape
    maps = maps.float()
    assign, top = saliency_clusters(
        maps, k=k, with_coords=with_coords, coord_weight=coord_weight, iters=iters, generator=generator, init=init
    )  # (B, g, g), (B,)
    onehot = assign[..., None] == torch.arange(k, device=maps.device)  # (B, g, g, k)
    counts = onehot.sum(dim=(1, 2))  # (B, k)
    mean = (onehot * maps[..., None]).sum(dim=(1, 2)) / counts.clamp_min(1)  # (B, k)
    mean = torch.where(counts > 0, mean, torch.full_like(mean, -math.inf))
    mean = mean.scatter(1, top[:, None], math.inf)  # the paper's cluster ranks first
    order = mean.argsort(dim=1, descending=True, stable=True)  # (B, k)
    ranked = assign[:, None] == order[:, :, None, None]  # (B, k, g, g)
    if (gh, gw) != tuple(size):
        ranked = F.interpolate(ranked.float(), size=tuple(size), mode="nearest") > 0.5
    return ranked


def swap_patches(
    images: torch.Tensor,
    c1: torch.Tensor,
    c2: torch.Tensor,
    sizes: torch.Tensor,
    mode: Literal["swap", "paste"] = "swap",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Swap (or paste 1 over 2) two same-size boxes per image with one gather.

    Args:
        images: (B, C, H, W) any dtype.
        c1, c2: (B, 2) long box centres (y, x); boxes must lie inside the image.
        sizes: (B, 2) long box (height, width).

    Returns:
        images and a uint8 (B, H, W) mask of the changed boxes.

    Example:
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> out, m = swap_patches(x, torch.tensor([[0, 0]]), torch.tensor([[0, 2]]), torch.tensor([[1, 1]]))
        >>> out[0, 0, 0].tolist(), m[0, 0].tolist()
        ([2.0, 1.0, 0.0, 3.0], [1, 0, 1, 0])
    """
    b, _, h, w = images.shape
    yy, xx = _grid(h, w, images.device)
    bh, bw = sizes[:, 0].view(b, 1, 1), sizes[:, 1].view(b, 1, 1)
    t1, l1 = c1[:, 0].view(b, 1, 1) - bh // 2, c1[:, 1].view(b, 1, 1) - bw // 2  # top-left of box 1
    t2, l2 = c2[:, 0].view(b, 1, 1) - bh // 2, c2[:, 1].view(b, 1, 1) - bw // 2
    in1 = (yy >= t1) & (yy < t1 + bh) & (xx >= l1) & (xx < l1 + bw)  # (B, H, W)
    in2 = (yy >= t2) & (yy < t2 + bh) & (xx >= l2) & (xx < l2 + bw)
    dy, dx = t2 - t1, l2 - l1
    if mode == "swap":
        src_y = torch.where(in1, yy + dy, torch.where(in2, yy - dy, yy))  # (B, H, W)
        src_x = torch.where(in1, xx + dx, torch.where(in2, xx - dx, xx))
        mask = in1 | in2
    elif mode == "paste":
        src_y = torch.where(in2, yy - dy, yy).expand(b, h, w)
        src_x = torch.where(in2, xx - dx, xx).expand(b, h, w)
        mask = in2
    else:
        raise ValueError(f"mode must be 'swap' or 'paste', but got {mode=}.")
    batch = torch.arange(b, device=images.device).view(b, 1, 1)
    out = images.permute(0, 2, 3, 1)[batch, src_y, src_x].permute(0, 3, 1, 2)  # (B, C, H, W)
    return out.contiguous(), mask.to(torch.uint8)


def cutswap(
    images: torch.Tensor,
    generator: torch.Generator | None,
    maps: torch.Tensor | None = None,
    *,
    locations: Literal["saliency", "random"] = "saliency",
    mode: Literal["swap", "paste"] = "swap",
    area: tuple[float, float] = (0.02, 0.15),
    aspect: tuple[float, float] = (0.3, 3.3),
    min_distance: float = 1.0,
    k: int = 3,
    with_coords: bool = False,
    coord_weight: float = 1.0,
    iters: int = 10,
    init: Literal["kmeans++", "random"] = "kmeans++",
) -> CutSwapResult:
    """One CutSwap (or saliency-guided paste) per image; see the module docstring.

    Args:
        images: (B, C, H, W) any dtype.
        maps: (B, g, g) saliency maps (any g); required for ``locations="saliency"``,
            ignored for ``random`` (the CutPaste-like baseline: a pair anywhere).
        k, with_coords, coord_weight, iters, init: the k-means of
            :func:`~raysearch.components.kmeans.saliency_clusters`.
    """
    b, _, h, w = images.shape
    dev = images.device
    sizes = sample_patch_sizes(b, h, w, generator, area, aspect, min_distance, dev)  # (B, 2)
    if locations == "saliency":
        if maps is None:
            raise ValueError("locations='saliency' needs saliency maps; got maps=None.")
        sets = ranked_cluster_sets(
            maps.to(dev), (h, w), generator, k=k, with_coords=with_coords, coord_weight=coord_weight, iters=iters, init=init
        )  # (B, k, H, W)
    elif locations == "random":
        sets = torch.zeros(b, 0, h, w, dtype=torch.bool, device=dev)
    else:
        raise ValueError(f"locations must be 'saliency' or 'random', but got {locations=}.")
    c1, c2, rank = pick_pairs(sets, sizes, generator, min_distance)
    out, mask = swap_patches(images, c1, c2, sizes, mode)
    return CutSwapResult(out, mask, torch.stack([c1, c2], dim=1), sizes, rank)
