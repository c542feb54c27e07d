"""Anomaly synthesis by pasting image regions: CutPaste and scar, batched on the device.

CutPaste (Li et al. 2021, "CutPaste: Self-Supervised Learning for Anomaly Detection and
Localization", CVPR): a rectangle of area fraction ``area`` and aspect ratio ``aspect``
is cut from a random place of an image and pasted at another random place; "scar" is a
thin rectangle rotated by up to +-45 degrees. Both are one rotated-box mask per image:
every destination pixel (y, x) inside the box takes the source pixel at
(y, x) - destination centre + source centre, so the whole batch is one gather.
Optionally the patch is colour-jittered (CutPaste does; ``jitter`` = 0 turns it off).
Perlin / DRAEM masks live in :mod:`raysearch.data.perlin`.

Validation anomaly families (:func:`synthesize_family`, names in :data:`FAMILY_NAMES`):
the validation split's synthetic anomalies are made one family at a time from held-out
normal images, so that model selection can be scored per family:

- ``cutpaste``: :func:`cutpaste` with its defaults (CutPaste, Li et al. 2021).
- ``scar``: :func:`scar` with its defaults (CutPaste-scar, Li et al. 2021).
- ``perlin``: a DRAEM Perlin mask filled from another image of the batch (DRAEM,
  Zavrtanik et al. 2021; :mod:`raysearch.data.perlin`).
- ``patchswap``: two same-size, non-overlapping boxes of one image exchange their
  contents (resembles the cutswap method's training negatives).
- ``elastic``: a smooth random displacement field warps one elliptical region (new).
- ``blur``: one elliptical region is replaced by a Gaussian-blurred copy (new).
- ``noise``: one elliptical region gets additive Gaussian pixel noise (new).

The last three are trained on by no method: they measure how selection generalises to
anomalies unlike any training-time synthesis.

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
import torch.nn.functional as F

from raysearch.config.selection import SYNTHETIC_FAMILIES
from raysearch.data.augment import _uniform, color_jitter, to_float

__all__ = ["FAMILY_NAMES", "cutpaste", "scar", "paste_boxes", "synthesize", "synthesize_family"]

# The names live with the selection rules (torch-free), so specs validate without torch.
FAMILY_NAMES = SYNTHETIC_FAMILIES


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


# -- validation anomaly families ------------------------------------------------------


def _draw(
    kind: str, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """``torch.rand`` / ``torch.randn`` drawn on the generator's device, returned on ``device``."""
    dev = generator.device if generator is not None else device
    fn = torch.rand if kind == "rand" else torch.randn
    return fn(shape, generator=generator, device=dev).to(device)


def _perlin_family(images: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    from raysearch.data.perlin import draem_blend, perlin_masks

    b, _, h, w = images.shape
    if b > 1:
        donors = torch.roll(images, -1, 0)  # image i is filled from image i + 1, as synthesize
    else:  # one image: itself shifted by half its size, so the fill still differs
        donors = torch.roll(images, (h // 2, w // 2), (-2, -1))
    masks = perlin_masks(b, (h, w), generator=generator, device=images.device)
    return draem_blend(images, donors, masks, generator=generator)


def _patchswap(
    images: torch.Tensor,
    generator: torch.Generator | None,
    area: tuple[float, float] = (0.02, 0.15),
    aspect: tuple[float, float] = (0.3, 3.3),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two same-size boxes, integer sized and placed, separated along one axis, swapped.

    The boxes sit side by side along the axis where two of them fit (a random one where
    both do): their starts along it are the sorted pair of two uniform draws in the slack,
    so they never overlap; along the other axis each start is uniform on its own.
    """
    b, _, h, w = images.shape
    dev = images.device
    frac = _uniform(b, *area, generator, dev)
    ratio = torch.exp(_uniform(b, math.log(aspect[0]), math.log(aspect[1]), generator, dev))
    bh = torch.sqrt(frac * h * w / ratio).round().clamp(1, h)
    bw = torch.sqrt(frac * h * w * ratio).round().clamp(1, w)
    fit_y, fit_x = 2 * bh <= h, 2 * bw <= w
    coin = _uniform(b, 0.0, 1.0, generator, dev) < 0.5
    along_x = fit_x & (~fit_y | coin) | (~fit_x & ~fit_y & (w >= h))
    bw = torch.where(along_x, bw.clamp(max=w // 2), bw)  # only for images too small to fit both
    bh = torch.where(along_x, bh, bh.clamp(max=h // 2))
    u = _draw("rand", (b, 4), generator, dev)

    def starts(side: int, length: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return (r * (side - length + 1)).floor().clamp(max=side - length)

    def sorted_pair(side: int, length: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Starts s1 <= s2 - length: two draws in [0, side - 2 * length], the second moved on.
        a, c = starts(side - length, length, r[:, 0]), starts(side - length, length, r[:, 1])
        return torch.minimum(a, c), torch.maximum(a, c) + length

    xa, xb = sorted_pair(w, bw, u[:, :2])
    ya, yb = sorted_pair(h, bh, u[:, 2:])
    free_ya, free_yb = starts(h, bh, u[:, 2]), starts(h, bh, u[:, 3])
    free_xa, free_xb = starts(w, bw, u[:, 0]), starts(w, bw, u[:, 1])
    ya, yb = torch.where(along_x, free_ya, ya), torch.where(along_x, free_yb, yb)
    xa, xb = torch.where(along_x, xa, free_xa), torch.where(along_x, xb, free_xb)
    size_hw = torch.stack([bh, bw], 1)
    # Centres of integer boxes: a pixel index p is inside iff |p - centre| <= length / 2.
    ca = torch.stack([ya + (bh - 1) / 2, xa + (bw - 1) / 2], 1)
    cb = torch.stack([yb + (bh - 1) / 2, xb + (bw - 1) / 2], 1)
    angle = torch.zeros(b, device=dev)
    out, mask_b = paste_boxes(images, images, size_hw, cb, ca, angle)  # A's content at B
    out, mask_a = paste_boxes(out, images, size_hw, ca, cb, angle)  # B's content at A
    return out, mask_a | mask_b


def _ellipse_radius(
    b: int, h: int, w: int, generator: torch.Generator | None, device: torch.device,
    axes: tuple[float, float] = (0.08, 0.3),
) -> torch.Tensor:
    """Normalised elliptical radius (B, H, W): the region is ``r <= 1``, never empty.

    Random centre in the middle 70 % of the image, semi-axes ``axes`` of the shorter side
    (at least 1 px, so the pixel nearest the centre, at most 0.71 px away, is inside)
    and a random angle.
    """
    side = float(min(h, w))
    u = _draw("rand", (b, 5), generator, device)
    cy, cx = (0.15 + 0.7 * u[:, 0]) * (h - 1), (0.15 + 0.7 * u[:, 1]) * (w - 1)
    a = (axes[0] + (axes[1] - axes[0]) * u[:, 2]) * side
    c = (axes[0] + (axes[1] - axes[0]) * u[:, 3]) * side
    a, c = a.clamp(min=1.0).view(b, 1, 1), c.clamp(min=1.0).view(b, 1, 1)
    angle = (math.pi * u[:, 4]).view(b, 1, 1)
    dy = torch.arange(h, device=device, dtype=torch.float32).view(1, h, 1) - cy.view(b, 1, 1)
    dx = torch.arange(w, device=device, dtype=torch.float32).view(1, 1, w) - cx.view(b, 1, 1)
    p = torch.cos(angle) * dx + torch.sin(angle) * dy
    q = -torch.sin(angle) * dx + torch.cos(angle) * dy
    return torch.sqrt((p / a) ** 2 + (q / c) ** 2)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def _elastic(
    images: torch.Tensor,
    generator: torch.Generator | None,
    amplitude: tuple[float, float] = (0.05, 0.1),
    min_pixels: float = 2.5,
    lattice: int = 6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp inside an ellipse by a smooth random field of peak ``amplitude`` x side pixels.

    The field is a ``lattice`` x ``lattice`` grid of random vectors, bicubically upsampled,
    tapered to zero at the region's rim (no seam) and normalised so that its largest
    displacement inside the region equals the drawn amplitude (at least ``min_pixels``).
    """
    b, _, h, w = images.shape
    dev = images.device
    r = _ellipse_radius(b, h, w, generator, dev)
    region = r <= 1
    amp = (_uniform(b, *amplitude, generator, dev) * min(h, w)).clamp(min=min_pixels)
    coarse = _draw("rand", (b, 2, lattice, lattice), generator, dev) * 2 - 1
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)  # (B, 2, H, W)
    field = field * ((1 - r * r) * 2).clamp(0, 1).unsqueeze(1)  # full inside, 0 at the rim
    peak = field.norm(dim=1).flatten(1).amax(1).clamp(min=1e-6)  # (B,)
    disp = field * (amp / peak).view(b, 1, 1, 1)  # pixels, (dy, dx)
    yy = torch.arange(h, device=dev, dtype=torch.float32).view(1, h, 1)
    xx = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, w)
    gx = (2 * (xx + disp[:, 1]) + 1) / w - 1  # align_corners=False normalised coordinates
    gy = (2 * (yy + disp[:, 0]) + 1) / h - 1
    grid = torch.stack([gx, gy], -1)  # (B, H, W, 2) as (x, y)
    warped = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = torch.where(region.unsqueeze(1), _to_uint8(warped), images)
    return out, region.to(torch.uint8)


def _blur(
    images: torch.Tensor, generator: torch.Generator | None, sigma: tuple[float, float] = (0.03, 0.07),
    min_sigma: float = 1.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace an ellipse by a Gaussian blur of sigma ``sigma`` x side pixels (>= ``min_sigma``).

    Separable: one grouped 1-D convolution per axis for the whole batch, replicate padding;
    the kernel length follows the upper bound of the range, so no value is read back.
    """
    b, c, h, w = images.shape
    dev = images.device
    side = min(h, w)
    r = _ellipse_radius(b, h, w, generator, dev)
    region = r <= 1
    s = (_uniform(b, *sigma, generator, dev) * side).clamp(min=min_sigma)  # (B,) pixels
    half = max(1, math.ceil(3 * max(sigma[1] * side, min_sigma)))
    t = torch.arange(-half, half + 1, device=dev, dtype=torch.float32)
    k = torch.exp(-0.5 * (t.view(1, -1) / s.view(b, 1)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, K)
    x = images.float().reshape(1, b * c, h, w)
    x = F.conv2d(F.pad(x, (0, 0, half, half), mode="replicate"), k.view(b * c, 1, -1, 1), groups=b * c)
    x = F.conv2d(F.pad(x, (half, half, 0, 0), mode="replicate"), k.view(b * c, 1, 1, -1), groups=b * c)
    out = torch.where(region.unsqueeze(1), _to_uint8(x.view(b, c, h, w)), images)
    return out, region.to(torch.uint8)


def _noise(
    images: torch.Tensor, generator: torch.Generator | None, std: tuple[float, float] = (0.04, 0.12)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Add Gaussian noise of std ``std`` x 255 (per image; per pixel and channel) in an ellipse."""
    b, c, h, w = images.shape
    dev = images.device
    region = _ellipse_radius(b, h, w, generator, dev) <= 1
    sd = _uniform(b, *std, generator, dev).view(b, 1, 1, 1) * 255
    noisy = images.float() + sd * _draw("randn", (b, c, h, w), generator, dev)
    out = torch.where(region.unsqueeze(1), _to_uint8(noisy), images)
    return out, region.to(torch.uint8)


def synthesize_family(
    family: str, images: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One validation anomaly family (see the module docstring) for a whole batch.

    Args:
        family: one of :data:`FAMILY_NAMES`.
        images: uint8 (B, C, H, W) normal images.
        generator: all randomness (draws on its device, data on the images' device).

    Returns:
        uint8 (B, C, H, W) anomalous images and uint8 (B, H, W) masks in {0, 1}, never
        empty: the changed region. Every pixel outside the mask equals the input; one
        inside may happen to be unchanged (e.g. blurring a flat area).

    Parameters: cutpaste / scar use their functions' defaults (colour jitter 0.1);
    perlin fills from image i + 1 of the batch (a single image: from itself rolled by
    half its size), opacity 0.1..1 (DRAEM's ``draem_blend``); patchswap boxes have area
    0.02..0.15 and aspect 0.3..3.3 (log-uniform), as CutPaste; the elliptical regions
    of elastic / blur / noise have semi-axes 0.08..0.3 of the shorter side (>= 1 px),
    a random angle, and a centre in the middle 70 %; elastic displaces by up to
    0.05..0.1 x side (>= 2.5 px), blur has sigma 0.03..0.07 x side (>= 1.5 px),
    noise std 0.04..0.12 x 255.

    Example:
        >>> x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8,
        ...                   generator=torch.Generator().manual_seed(0))
        >>> out, m = synthesize_family("blur", x, torch.Generator().manual_seed(1))
        >>> out.shape, m.shape, bool((out == x)[~m.bool().unsqueeze(1).expand_as(x)].all())
        (torch.Size([2, 3, 16, 16]), torch.Size([2, 16, 16]), True)
    """
    if family not in FAMILY_NAMES:
        raise ValueError(f"unknown anomaly family {family!r}; expected one of {FAMILY_NAMES}.")
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 (B, C, H, W), but got {images.dtype} {tuple(images.shape)}.")
    if family == "cutpaste":
        return cutpaste(images, generator)
    if family == "scar":
        return scar(images, generator)
    if family == "perlin":
        return _perlin_family(images, generator)
    if family == "patchswap":
        return _patchswap(images, generator)
    if family == "elastic":
        return _elastic(images, generator)
    if family == "blur":
        return _blur(images, generator)
    return _noise(images, generator)
