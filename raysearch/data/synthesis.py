"""Anomaly synthesis by pasting image regions: CutPaste and scar, batched on the device.

CutPaste (Li et al. 2021, "CutPaste: Self-Supervised Learning for Anomaly Detection and
Localization", CVPR): a rectangle of area fraction ``area`` and aspect ratio ``aspect``
is cut from a random place of an image and pasted at another random place; "scar" is a
thin rectangle rotated by up to +-45 degrees. Both are one rotated-box mask per image:
every destination pixel (y, x) inside the box takes the source pixel at
(y, x) - destination centre + source centre, so the whole batch is one gather.
Optionally the patch is colour-jittered (CutPaste does; ``jitter`` = 0 turns it off).
Perlin / DRAEM masks live in :mod:`raysearch.data.perlin`.

Each function returns ``(images, masks)``: images of the input's dtype and masks uint8
(B, H, W) in {0, 1} marking the changed region (the box, whether or not a pixel's value
happens to be equal). ``source`` gives another batch to cut from (default: the image
itself).

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    >>> src = torch.full_like(x, 255)
    >>> out, m = cutpaste(x, g, source=src, jitter=0.0)
    >>> bool((out[:, 0] == 255).eq(m.bool()).all())
    True
"""

from __future__ import annotations

import math

import torch

from raysearch.data.augment import _uniform, color_jitter, to_float

__all__ = ["cutpaste", "scar", "paste_boxes", "synthesize"]


def paste_boxes(
    images: torch.Tensor,
    source: torch.Tensor,
    size_hw: torch.Tensor,
    dst_center: torch.Tensor,
    src_center: torch.Tensor,
    angle: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a rotated box of ``source`` into ``images``; sizes and centres in pixels.

    Args:
        images, source: (B, C, H, W), same dtype.
        size_hw: (B, 2) box height and width; dst_center, src_center: (B, 2) as (y, x);
        angle: (B,) rotation of the box in radians.
    """
    b, _, h, w = images.shape
    dev = images.device
    yy = torch.arange(h, device=dev, dtype=torch.float32).view(1, h, 1)
    xx = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, w)
    dy = yy - dst_center[:, 0].view(b, 1, 1)
    dx = xx - dst_center[:, 1].view(b, 1, 1)
    cos, sin = torch.cos(angle).view(b, 1, 1), torch.sin(angle).view(b, 1, 1)
    u = cos * dx + sin * dy  # coordinates in the box frame
    v = -sin * dx + cos * dy
    inside = (u.abs() <= size_hw[:, 1].view(b, 1, 1) / 2) & (v.abs() <= size_hw[:, 0].view(b, 1, 1) / 2)
    sy = (dy + src_center[:, 0].view(b, 1, 1)).round().long().clamp(0, h - 1)
    sx = (dx + src_center[:, 1].view(b, 1, 1)).round().long().clamp(0, w - 1)
    batch = torch.arange(b, device=dev).view(b, 1, 1)
    pasted = source.permute(0, 2, 3, 1)[batch, sy, sx].permute(0, 3, 1, 2)  # (B, C, H, W)
    out = torch.where(inside.unsqueeze(1), pasted, images)
    return out, inside.to(torch.uint8)


def _jittered(source: torch.Tensor, generator: torch.Generator | None, jitter: float) -> torch.Tensor:
    if jitter <= 0:
        return source
    out = color_jitter(to_float(source), generator, jitter, jitter, jitter, min(jitter / 4, 0.5))
    if source.dtype == torch.uint8:
        return out.mul(255).round().clamp(0, 255).to(torch.uint8)
    return out


def _centres(
    n: int, half_extent: torch.Tensor, size: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Centres that keep a box of the given half extent inside [0, size)."""
    lo = half_extent
    hi = (size - 1 - half_extent).clamp(min=lo)
    return lo + _uniform(n, 0.0, 1.0, generator, device) * (hi - lo)


def cutpaste(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    area: tuple[float, float] = (0.02, 0.15),
    aspect: tuple[float, float] = (0.3, 3.3),
    source: torch.Tensor | None = None,
    jitter: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutPaste: an axis-aligned box of ``area`` (fraction of the image) and ``aspect`` (w / h)."""
    b, _, h, w = images.shape
    dev = images.device
    source = images if source is None else source
    frac = _uniform(b, *area, generator, dev)
    ratio = torch.exp(_uniform(b, math.log(aspect[0]), math.log(aspect[1]), generator, dev))
    bh = (torch.sqrt(frac * h * w / ratio)).clamp(2, h - 1)
    bw = (torch.sqrt(frac * h * w * ratio)).clamp(2, w - 1)
    size_hw = torch.stack([bh, bw], 1)
    src = torch.stack([_centres(b, bh / 2, h, generator, dev), _centres(b, bw / 2, w, generator, dev)], 1)
    dst = torch.stack([_centres(b, bh / 2, h, generator, dev), _centres(b, bw / 2, w, generator, dev)], 1)
    return paste_boxes(images, _jittered(source, generator, jitter), size_hw, dst, src, torch.zeros(b, device=dev))


def scar(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    width: tuple[float, float] = (0.008, 0.06),
    length: tuple[float, float] = (0.04, 0.1),
    max_angle: float = 45.0,
    source: torch.Tensor | None = None,
    jitter: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutPaste-scar: a thin box (``width``, ``length`` as fractions of the side) rotated by
    up to +-``max_angle`` degrees. The defaults scale the paper's 2-16 x 10-25 px at 256 px."""
    b, _, h, w = images.shape
    dev = images.device
    side = float(min(h, w))
    source = images if source is None else source
    bw = (_uniform(b, *width, generator, dev) * side).clamp(min=1.0)
    bh = (_uniform(b, *length, generator, dev) * side).clamp(min=3.0)
    angle = _uniform(b, -max_angle, max_angle, generator, dev) * math.pi / 180
    reach = torch.sqrt(bw**2 + bh**2) / 2  # half diagonal: the rotated box stays inside
    src = torch.stack([_centres(b, reach, h, generator, dev), _centres(b, reach, w, generator, dev)], 1)
    dst = torch.stack([_centres(b, reach, h, generator, dev), _centres(b, reach, w, generator, dev)], 1)
    size_hw = torch.stack([bh, bw], 1)
    return paste_boxes(images, _jittered(source, generator, jitter), size_hw, dst, src, angle)


def synthesize(
    images: torch.Tensor, generator: torch.Generator | None = None, kinds: tuple[str, ...] = ("cutpaste", "scar")
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic anomalies for a batch, the kinds assigned in turn (image i gets kinds[i % n]).

    Used for the validation split's synthetic anomalies. Known kinds: cutpaste, scar,
    perlin (a DRAEM-style Perlin mask filled from another image of the batch).
    """
    out = images.clone()
    masks = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.uint8, device=images.device)
    for i, kind in enumerate(kinds):
        idx = torch.arange(i, images.shape[0], len(kinds), device=images.device)
        if len(idx) == 0:
            continue
        part = images[idx]
        if kind == "cutpaste":
            out[idx], masks[idx] = cutpaste(part, generator)
        elif kind == "scar":
            out[idx], masks[idx] = scar(part, generator)
        elif kind == "perlin":
            from raysearch.data.perlin import draem_blend, perlin_masks

            donors = images[(idx + 1) % images.shape[0]]
            pm = perlin_masks(len(idx), tuple(images.shape[-2:]), generator=generator, device=images.device)
            out[idx], masks[idx] = draem_blend(part, donors, pm, generator=generator)
        else:
            raise ValueError(f"unknown synthesis kind {kind!r}; expected cutpaste, scar or perlin")
    return out, masks
