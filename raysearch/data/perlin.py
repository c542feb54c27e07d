"""Perlin-noise masks and DRAEM-style anomaly synthesis, batched on the device.

Perlin noise: Perlin 1985 / 2002 ("Improving noise": the 6t^5 - 15t^4 + 10t^3 fade).
Masks and blending follow DRAEM (Zavrtanik et al. 2021, "DRAEM - A discriminatively
trained reconstruction embedding for surface anomaly detection", ICCV): noise with a
random power-of-two lattice resolution per axis, rotated, thresholded at 0.5; the mask
region is filled with another texture / image blended with opacity beta. clflow
(CL-Flow, SPIE 2024) uses them as surrogate anomaly masks.

Randomness: every draw comes from ``generator``; draws are made on the generator's own
device and moved to ``device``, so a CPU generator works with data on any device.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> masks = perlin_masks(4, 32, generator=g)
    >>> masks.shape, masks.dtype, bool(masks.flatten(1).any(1).all())
    (torch.Size([4, 32, 32]), torch.uint8, True)
    >>> imgs = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    >>> srcs = torch.full((4, 3, 32, 32), 200, dtype=torch.uint8)
    >>> out, m = draem_blend(imgs, srcs, masks, generator=g)
    >>> bool((out[m[:, None].expand_as(out) == 0] == 0).all())
    True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["perlin_noise", "perlin_masks", "draem_blend"]

Size = int | tuple[int, int]


def _hw(size: Size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else size
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, but got {size=}.")
    return int(h), int(w)


def _rand(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """U[0, 1) from ``generator`` (drawn on its device), returned on ``device``."""
    dev = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=dev).to(device)


def _fade(t: torch.Tensor) -> torch.Tensor:
    """Perlin's quintic fade 6t^5 - 15t^4 + 10t^3 (zero 1st and 2nd derivative at 0, 1)."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(
    batch: int,
    size: Size,
    generator: torch.Generator | None = None,
    scale_range: tuple[int, int] = (0, 6),
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """2D Perlin gradient noise, a different lattice resolution per sample and axis.

    Each sample draws exponents e_y, e_x uniformly from the integers in
    [scale_range[0], scale_range[1]) (DRAEM: [0, 6)) and uses a lattice of 2^e_y x 2^e_x
    cells; unit gradients at random angles sit on the lattice corners. All samples
    share one (B, 2^(max-1) + 1, 2^(max-1) + 1) gradient table and each reads only its
    own corner of it, so the batch needs no per-sample loop.

    Returns:
        float32 (B, H, W), values in about [-1, 1] (scaled by sqrt(2), as DRAEM).

    Example:
        >>> n = perlin_noise(2, (16, 24), generator=torch.Generator().manual_seed(0))
        >>> n.shape, bool(n.abs().max() <= 1.0)
        (torch.Size([2, 16, 24]), True)
    """
    h, w = _hw(size)
    lo, hi = scale_range
    if not (0 <= lo < hi):
        raise ValueError(f"scale_range must satisfy 0 <= low < high, but got {scale_range=}.")
    device = torch.device(device) if device is not None else torch.device("cpu")
    gen_dev = generator.device if generator is not None else device
    exps = torch.randint(lo, hi, (batch, 2), generator=generator, device=gen_dev).to(
        device
    )  # (B, 2)
    res = (2.0**exps).float()  # (B, 2) cells per axis (y, x)
    g = 2 ** (hi - 1) + 1  # lattice points per axis at the largest resolution
    angles = 2 * math.pi * _rand((batch, g * g), generator, device)  # (B, G*G)
    grads = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1)  # (B, G*G, 2) as (gy, gx)

    uy = (torch.arange(h, device=device) / h)[None] * res[:, :1]  # (B, H) lattice coordinate
    ux = (torch.arange(w, device=device) / w)[None] * res[:, 1:]  # (B, W)
    iy, ix = uy.floor().long(), ux.floor().long()  # cell indices
    fy, fx = (uy - iy)[:, :, None], (ux - ix)[:, None, :]  # (B, H, 1), (B, 1, W) position in cell

    def corner(dy: int, dx: int) -> torch.Tensor:
        # dot(gradient at corner (iy+dy, ix+dx), offset from that corner)  -> (B, H, W)
        flat = ((iy + dy)[:, :, None] * g + (ix + dx)[:, None, :]).reshape(batch, h * w)  # (B, H*W)
        gr = torch.gather(grads, 1, flat[..., None].expand(-1, -1, 2)).reshape(batch, h, w, 2)
        return gr[..., 0] * (fy - dy) + gr[..., 1] * (fx - dx)

    ty, tx = _fade(fy), _fade(fx)
    top = torch.lerp(corner(0, 0), corner(0, 1), tx)  # interpolate along x
    bottom = torch.lerp(corner(1, 0), corner(1, 1), tx)
    return math.sqrt(2) * torch.lerp(top, bottom, ty)  # (B, H, W)


def _rotate(noise: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, W) maps about their centres by per-sample angles (B,), reflecting at borders."""
    theta = degrees * (math.pi / 180)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    affine = torch.stack(
        [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1
    )  # (B, 2, 3)
    grid = F.affine_grid(affine, [noise.shape[0], 1, *noise.shape[1:]], align_corners=False)
    return F.grid_sample(
        noise[:, None], grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )[:, 0]


def perlin_masks(
    batch: int,
    size: Size,
    generator: torch.Generator | None = None,
    threshold: float = 0.5,
    scale_range: tuple[int, int] = (0, 6),
    rotation_range: tuple[float, float] = (-90.0, 90.0),
    retries: int = 3,
    fallback_area: float = 0.05,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Binary Perlin masks, never empty: uint8 (B, H, W) in {0, 1}.

    Noise from :func:`perlin_noise`, rotated by an angle uniform in ``rotation_range``
    degrees (DRAEM rotates by [-90, 90]; we reflect at the borders where DRAEM fills
    zeros), then ``noise > threshold``. Empty masks (low-resolution noise often stays
    below 0.5) are redrawn up to ``retries`` times, only for the empty ones; any still
    empty become the top ``fallback_area`` fraction of their noise (a Perlin-shaped blob
    around the noise peak). DRAEM instead keeps them as "no anomaly" samples; we
    guarantee a region because the callers mix clean samples in explicitly.

    Example:
        >>> m = perlin_masks(3, 16, generator=torch.Generator().manual_seed(0), threshold=2.0, retries=0)
        >>> m.flatten(1).sum(1).tolist()  # threshold above the noise range: all fallbacks
        [13, 13, 13]
    """
    h, w = _hw(size)
    if not 0 < fallback_area <= 1:
        raise ValueError(f"fallback_area must be in (0, 1], but got {fallback_area=}.")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, but got {retries=}.")
    device = torch.device(device) if device is not None else torch.device("cpu")

    def draw(n: int) -> torch.Tensor:
        noise = perlin_noise(n, (h, w), generator, scale_range, device)  # (n, H, W)
        lo, hi = rotation_range
        if lo == hi == 0:
            return noise
        return _rotate(noise, lo + (hi - lo) * _rand((n,), generator, device))

    noise = draw(batch)  # (B, H, W)
    for _ in range(retries):
        empty = ~(noise > threshold).flatten(1).any(1)  # (B,)
        idx = empty.nonzero()[:, 0]  # one host sync per retry
        if idx.numel() == 0:
            break
        noise[idx] = draw(idx.numel())
    masks = noise > threshold  # (B, H, W)
    # Fallback for the rest, vectorised: keep the m highest-noise pixels of each map.
    m = max(1, round(fallback_area * h * w))
    kth = noise.flatten(1).topk(m, dim=1).values[:, -1]  # (B,) the m-th largest value
    empty = ~masks.flatten(1).any(1)  # (B,)
    masks = torch.where(empty[:, None, None], noise >= kth[:, None, None], masks)
    return masks.to(torch.uint8)


def draem_blend(
    images: torch.Tensor,
    sources: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator | None = None,
    beta_range: tuple[float, float] = (0.1, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste ``sources`` into ``images`` inside ``masks`` with a random opacity beta per image.

    out = (1 - m) * img + m * ((1 - beta) * img + beta * source), beta ~ U(beta_range)
    per sample (DRAEM's blend; there beta weights the original image and lies in
    [0, 0.8), here beta is the opacity of the source). Pixels outside the mask are
    returned bit-identical.

    Args:
        images, sources: uint8 (B, 3, H, W); sources e.g. textures or other training images.
        masks: (B, H, W) in {0, 1} (e.g. :func:`perlin_masks`).
        generator: source of beta.
        beta_range: (low, high) of the opacity.

    Returns:
        (uint8 (B, 3, H, W) blended images, uint8 (B, H, W) masks).

    Example:
        >>> img = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
        >>> src = torch.full((1, 3, 2, 2), 100, dtype=torch.uint8)
        >>> mask = torch.tensor([[[1, 0], [0, 0]]], dtype=torch.uint8)
        >>> out, _ = draem_blend(img, src, mask, beta_range=(0.5, 0.5))
        >>> out[0, 0].tolist()
        [[50, 0], [0, 0]]
    """
    if images.dtype != torch.uint8 or sources.dtype != torch.uint8:
        raise ValueError(
            f"images and sources must be uint8, but got {images.dtype} and {sources.dtype}."
        )
    if images.dim() != 4 or sources.shape != images.shape:
        raise ValueError(
            f"images and sources must both be (B, C, H, W) of one shape, but got {tuple(images.shape)} and {tuple(sources.shape)}."
        )
    b, _, h, w = images.shape
    if masks.shape != (b, h, w):
        raise ValueError(f"masks must be (B, H, W) = {(b, h, w)}, but got {tuple(masks.shape)}.")
    lo, hi = beta_range
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"beta_range must satisfy 0 <= low <= high <= 1, but got {beta_range=}.")
    beta = (lo + (hi - lo) * _rand((b,), generator, images.device)).view(b, 1, 1, 1)  # (B, 1, 1, 1)
    img, src = images.float(), sources.float()
    blended = (
        (img + beta * (src - img)).round().clamp(0, 255).to(torch.uint8)
    )  # (1-beta)*img + beta*src
    inside = masks.bool()[:, None]  # (B, 1, H, W)
    return torch.where(inside, blended, images), masks.to(torch.uint8)
