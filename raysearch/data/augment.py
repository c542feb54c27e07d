"""Batched image augmentations on the device: no per-image Python in the hot loop.

Every function takes a float batch (B, C, H, W) in [0, 1] (see :func:`to_float`) and a
``torch.Generator``; every random draw is one tensor op for the whole batch, made on the
generator's device and moved to the batch's device, so results are reproducible from a
seed on CPU and GPU alike. The SimCLR pipeline (Chen et al. 2020) is
:func:`simclr_augment`: random resized crop, horizontal flip, colour jitter with
probability ``jitter_p``, grayscale with probability ``gray_p``.

Colour jitter differs from torchvision's in two documented ways (our choice, for speed):
the four adjustments run in a fixed order (brightness, contrast, saturation, hue) rather
than a random permutation, and the hue shift is a rotation of the chroma plane in YIQ
space rather than an HSV round trip.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> x = to_float(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8))
    >>> simclr_augment(x, g).shape
    torch.Size([4, 3, 16, 16])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "to_float",
    "normalize",
    "random_resized_crop",
    "random_hflip",
    "color_jitter",
    "random_grayscale",
    "simclr_augment",
    "resize",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GRAY = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as torchvision's rgb_to_grayscale


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) in [0, 255] -> float32 in [0, 1]; float input is returned as is."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Standardise with the ImageNet channel statistics (what torchvision backbones expect)."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 or float batch to ``size`` x ``size`` (bilinear, antialiased)."""
    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(to_float(images), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if images.dtype == torch.uint8:
        return out.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return out


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    dev = generator.device if generator is not None else device
    return (torch.rand(n, generator=generator, device=dev) * (hi - lo) + lo).to(device)


def _bernoulli(n: int, p: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return _uniform(n, 0.0, 1.0, generator, device) < p


def random_resized_crop(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Crop a random box of area fraction ``scale`` and aspect ``ratio`` and resize it back.

    One affine grid per image and a single ``grid_sample`` for the batch. Boxes whose
    sides would exceed the image are clipped to it (torchvision retries instead, then
    falls back to a centre crop; the distributions differ only at extreme draws).
    """
    b, _, h, w = x.shape
    area = _uniform(b, *scale, generator, x.device)
    log_ratio = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), generator, x.device)
    aspect = torch.exp(log_ratio)
    bw = torch.sqrt(area * aspect).clamp(max=1.0)  # box width / image width
    bh = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (_uniform(b, 0.0, 1.0, generator, x.device) * (1 - bw) + bw / 2) * 2 - 1  # box centre in [-1, 1]
    cy = (_uniform(b, 0.0, 1.0, generator, x.device) * (1 - bh) + bh / 2) * 2 - 1
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = bw, cx
    theta[:, 1, 1], theta[:, 1, 2] = bh, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_hflip(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    flip = _bernoulli(x.shape[0], p, generator, x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def _gray(x: torch.Tensor) -> torch.Tensor:
    weights = x.new_tensor(_GRAY).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def color_jitter(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    p: float = 1.0,
) -> torch.Tensor:
    """Colour jitter of RGB batches; each image is jittered with probability ``p``.

    Factors are drawn from [1 - s, 1 + s] (hue shift from [-hue, hue] turns) as in
    torchvision; see the module docstring for the two differences.
    """
    b, dev = x.shape[0], x.device
    apply = _bernoulli(b, p, generator, dev).view(-1, 1, 1, 1)
    out = x
    if brightness > 0:
        f = _uniform(b, max(0.0, 1 - brightness), 1 + brightness, generator, dev).view(-1, 1, 1, 1)
        out = (out * f).clamp(0, 1)
    if contrast > 0:
        f = _uniform(b, max(0.0, 1 - contrast), 1 + contrast, generator, dev).view(-1, 1, 1, 1)
        mean = _gray(out).mean(dim=(2, 3), keepdim=True)
        out = (mean + f * (out - mean)).clamp(0, 1)
    if saturation > 0:
        f = _uniform(b, max(0.0, 1 - saturation), 1 + saturation, generator, dev).view(-1, 1, 1, 1)
        gray = _gray(out)
        out = (gray + f * (out - gray)).clamp(0, 1)
    if hue > 0:
        angle = _uniform(b, -hue, hue, generator, dev) * 2 * math.pi
        out = _rotate_hue(out, angle).clamp(0, 1)
    return torch.where(apply, out, x)


_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def _rotate_hue(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate the chroma (I, Q) plane of each image by ``angle`` radians."""
    to_yiq = x.new_tensor(_RGB_TO_YIQ)
    to_rgb = torch.linalg.inv(to_yiq)
    cos, sin = torch.cos(angle).to(x.dtype), torch.sin(angle).to(x.dtype)
    rot = torch.zeros(x.shape[0], 3, 3, device=x.device, dtype=x.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    m = to_rgb @ rot @ to_yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", m, x)


def random_grayscale(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.2) -> torch.Tensor:
    apply = _bernoulli(x.shape[0], p, generator, x.device).view(-1, 1, 1, 1)
    return torch.where(apply, _gray(x).expand_as(x), x)


def simclr_augment(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
    jitter_p: float = 0.8,
    gray_p: float = 0.2,
    flip: bool = True,
) -> torch.Tensor:
    """The SimCLR view: crop, flip (unless ``flip`` is False), colour jitter (p = ``jitter_p``),
    grayscale (p = ``gray_p``)."""
    x = random_resized_crop(x, generator, scale=crop_scale)
    if flip:
        x = random_hflip(x, generator)
    x = color_jitter(x, generator, *jitter, p=jitter_p)
    return random_grayscale(x, generator, p=gray_p)
