"""A built-in tiny dataset in the MVTec AD layout, generated from a seed (no download).

Textures that vary from image to image (oriented stripes with random phase, frequency
and wobble; jittered dot lattices; a noisy over/under weave) and defects drawn by a
generator that has nothing in common with the training-time synthesis (no CutPaste,
no Perlin): ``scratch`` (a dark quadratic Bezier curve), ``blob`` (a wobbly elliptical
colour stain) and ``hole`` (a dark disk with a soft edge). Every ground-truth mask is
exactly the set of pixels the defect touched (alpha >= ``alpha_cut``; weaker alpha is
cut to zero, so no pixel outside the mask differs from the defect-free image).

Difficulty: ``defect_opacity`` (< 1: fainter, semi-transparent defects) and
``defect_scale`` (< 1: smaller defects) of :func:`render_sample` and
:func:`make_toy_mvtec` make a harder setting that spreads weak and strong
configurations apart; the defaults (1.0, 1.0) give the original, very visible defects
(bit for bit, so ``TOY_MVTEC_NAME`` covers them), e.g. 0.3 / 0.5 for a hard variant.

Layout (as MVTec AD)::

    root/<category>/train/good/000.png
    root/<category>/test/good/000.png
    root/<category>/test/<defect>/000.png
    root/<category>/ground_truth/<defect>/000_mask.png   (0 / 255, mode L)

It is meant for end-to-end tests and demos of the pixel-level methods (cutswap, clflow)
without MVTec AD itself: the defaults write about 2 x 82 PNGs of 64 px, under 2 MB.

Example:
    >>> import tempfile
    >>> root = make_toy_mvtec(tempfile.mkdtemp(), categories=("dots",), n_train=2,
    ...                       n_test_good=1, n_test_defect=1, size=32)
    >>> sorted(p.name for p in (root / "dots" / "test").iterdir())
    ['blob', 'good', 'hole', 'scratch']
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "CATEGORIES",
    "DEFECTS",
    "render_sample",
    "make_toy_mvtec",
    "ensure_toy_mvtec",
    "TOY_MVTEC_NAME",
]

CATEGORIES = ("stripes", "dots", "weave")
DEFECTS = ("scratch", "blob", "hole")
TOY_MVTEC_NAME = "toy-mvtec-v1"  # bump the version when the generator's output changes

# Textures, one function each: (rng, yy, xx in pixels, size) -> float (H, W, 3) in [0, 1].


def _jitter_colour(
    rng: np.random.Generator, base: Sequence[float], spread: float = 0.04
) -> np.ndarray:
    return np.clip(np.asarray(base) + rng.uniform(-spread, spread, 3), 0, 1)


def _stripes(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    angle = np.deg2rad(30 + rng.normal(0, 8))  # stripe normal: 30 deg +- jitter
    cycles = rng.uniform(5, 7)  # stripes per image width
    phase = rng.uniform(0, 2 * np.pi)
    wobble = 0.02 * size * np.sin(2 * np.pi * (2 * yy / size + rng.uniform()))  # pixels
    u = (xx * np.cos(angle) + yy * np.sin(angle) + wobble) / size
    v = 0.5 + 0.5 * np.sin(2 * np.pi * cycles * u + phase)  # (H, W)
    light, dark = _jitter_colour(rng, (0.85, 0.80, 0.62)), _jitter_colour(rng, (0.50, 0.42, 0.32))
    return dark + v[..., None] * (light - dark)


def _dots(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    period = size / rng.uniform(5.5, 6.5)  # pixels between dot centres
    oy, ox = rng.uniform(0, period, 2)
    n = int(np.ceil(size / period)) + 2
    jit = rng.normal(0, 0.06 * period, (n, n, 2))  # per-dot centre jitter
    rad = period * rng.uniform(0.24, 0.32) * (1 + rng.normal(0, 0.06, (n, n)))  # per-dot radius
    iy = np.floor((yy - oy) / period).astype(int) + 1  # cell index (+1: cells start at -1)
    ix = np.floor((xx - ox) / period).astype(int) + 1
    cy = oy + (iy - 0.5) * period + jit[iy, ix, 0]
    cx = ox + (ix - 0.5) * period + jit[iy, ix, 1]
    d = np.hypot(yy - cy, xx - cx)
    v = np.clip(rad[iy, ix] - d + 0.5, 0, 1)  # anti-aliased disk, 1 inside
    bg, dot = _jitter_colour(rng, (0.78, 0.82, 0.86)), _jitter_colour(rng, (0.30, 0.55, 0.58))
    return bg + v[..., None] * (dot - bg)


def _weave(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int) -> np.ndarray:
    cells = rng.uniform(7, 9)  # thread crossings per image width
    fy, fx = (yy / size * cells + rng.uniform()), (xx / size * cells + rng.uniform())
    over = (np.floor(fy) + np.floor(fx)) % 2  # which thread is on top in this cell
    # A thread is brightest along its middle: sin(pi * position across the thread).
    shade = np.where(over == 0, np.sin(np.pi * (fy % 1)), np.sin(np.pi * (fx % 1)))
    shade = shade * (1 + rng.normal(0, 0.08, shade.shape))  # fibre noise
    light, dark = _jitter_colour(rng, (0.80, 0.66, 0.48)), _jitter_colour(rng, (0.48, 0.36, 0.24))
    return dark + np.clip(shade, 0, 1)[..., None] * (light - dark)


_TEXTURES = {"stripes": _stripes, "dots": _dots, "weave": _weave}

# Defects: (rng, yy, xx, size, scale) -> (alpha (H, W) in [0, 1], colour (3,)); ``scale``
# multiplies every length of the defect (1.0: the original sizes, bit for bit).


def _scratch(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    p0 = rng.uniform(0.2 * size, 0.8 * size, 2)
    # Head roughly towards the centre (+- 60 deg) so that most of the stroke stays inside.
    to_centre = np.arctan2(size / 2 - p0[0], size / 2 - p0[1])  # direction is (sin, cos) as (y, x)
    theta = to_centre + rng.uniform(-np.pi / 3, np.pi / 3)
    length = rng.uniform(0.3, 0.6) * size * scale
    p2 = p0 + length * np.array([np.sin(theta), np.cos(theta)])
    normal = np.array([np.cos(theta), -np.sin(theta)])
    bend = rng.normal(0, 0.15 * size) * scale
    p1 = (p0 + p2) / 2 + normal * bend  # control point of the quadratic Bezier
    t = np.linspace(0, 1, 4 * size)[:, None]  # dense enough for sub-pixel spacing
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2  # (T, 2) as (y, x)
    pix = np.stack([yy.ravel(), xx.ravel()], 1)  # (H*W, 2)
    d = np.sqrt(((pix[:, None, :] - curve[None]) ** 2).sum(-1)).min(1).reshape(yy.shape)
    half_width = rng.uniform(0.7, 1.4) * scale  # pixels
    alpha = np.clip(half_width + 0.5 - d, 0, 1)  # anti-aliased stroke
    return alpha, np.full(3, rng.uniform(0.04, 0.14))


def _blob(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    cy, cx = rng.uniform(0.2 * size, 0.8 * size, 2)
    a, b = rng.uniform(0.08, 0.18, 2) * size * scale  # semi-axes, pixels
    rot = rng.uniform(0, np.pi)
    u = (yy - cy) * np.cos(rot) + (xx - cx) * np.sin(rot)
    v = -(yy - cy) * np.sin(rot) + (xx - cx) * np.cos(rot)
    ang = np.arctan2(v, u)
    wobble = 1 + 0.15 * np.sin(rng.integers(2, 5) * ang + rng.uniform(0, 2 * np.pi))  # lobed rim
    r = np.hypot(u / a, v / b) / wobble  # 1 on the rim
    opacity = rng.uniform(0.65, 0.9)
    alpha = opacity * np.clip((1 - r) / 0.2, 0, 1)  # soft rim over the outer 20 % of the radius
    stains = np.array([(0.62, 0.10, 0.12), (0.18, 0.50, 0.12), (0.45, 0.12, 0.62)])
    return alpha, _jitter_colour(rng, stains[rng.integers(len(stains))])


def _hole(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, size: int, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    cy, cx = rng.uniform(0.15 * size, 0.85 * size, 2)
    radius = rng.uniform(0.06, 0.12) * size * scale
    edge = rng.uniform(1.0, 2.0) * scale  # soft edge width, pixels
    alpha = np.clip((radius - np.hypot(yy - cy, xx - cx)) / edge, 0, 1)
    return alpha, np.full(3, rng.uniform(0.02, 0.08))


_DEFECTS = {"scratch": _scratch, "blob": _blob, "hole": _hole}


def render_sample(
    category: str,
    size: int,
    rng: np.random.Generator,
    defect: str | None = None,
    noise_std: float = 0.015,
    alpha_cut: float = 0.25,
    min_defect_pixels: int = 4,
    defect_opacity: float = 1.0,
    defect_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One toy image, its defect mask and the same image without the defect.

    Args:
        category: a texture in :data:`CATEGORIES`.
        size: side in pixels.
        rng: numpy generator (all randomness of the sample).
        defect: one of :data:`DEFECTS`, or None for a normal image.
        noise_std: Gaussian pixel noise (on [0, 1] intensities), shared by both images.
        alpha_cut: defect alpha below this is dropped; the mask is alpha >= alpha_cut
            (tested before ``defect_opacity`` scales it, so the opacity leaves the mask as is).
        min_defect_pixels: redraw a defect whose mask is smaller than this.
        defect_opacity: in (0, 1], multiplies the defect's alpha: 1.0 is the original
            defect, e.g. 0.3 a faint, semi-transparent one. The mask stays the pixels of
            nonzero alpha; a faint pixel may round to its defect-free value, but no pixel
            outside the mask ever differs.
        defect_scale: > 0, multiplies the defect's size (lengths, widths, radii, soft
            edges; not its position): e.g. 0.5 for defects of half the size.

    Returns:
        image uint8 (H, W, 3), mask uint8 (H, W) in {0, 1}, clean uint8 (H, W, 3);
        image == clean exactly where mask == 0.

    Example:
        >>> img, mask, clean = render_sample("stripes", 32, np.random.default_rng(0), "hole")
        >>> bool((img[mask == 0] == clean[mask == 0]).all()), int(mask.sum()) > 0
        (True, True)
    """
    if category not in _TEXTURES:
        raise ValueError(f"unknown toy category {category=}; expected one of {CATEGORIES}.")
    if defect is not None and defect not in _DEFECTS:
        raise ValueError(f"unknown toy defect {defect=}; expected one of {DEFECTS} or None.")
    _check_difficulty(defect_opacity, defect_scale)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5  # pixel centres
    texture = _TEXTURES[category](rng, yy, xx, size)  # (H, W, 3)
    noise = rng.normal(0, noise_std, texture.shape)
    alpha, colour = np.zeros((size, size)), np.zeros(3)
    if defect is not None:
        for _ in range(100):  # a defect almost never falls under min_defect_pixels
            alpha, colour = _DEFECTS[defect](rng, yy, xx, size, defect_scale)
            alpha = np.where(alpha >= alpha_cut, alpha, 0.0)
            if (alpha > 0).sum() >= min_defect_pixels:
                break
        alpha = alpha * defect_opacity  # exact for 1.0; zero stays zero, so the mask is unchanged

    def to_uint8(x: np.ndarray) -> np.ndarray:
        return np.clip(np.round((x + noise) * 255), 0, 255).astype(np.uint8)

    image = texture + alpha[..., None] * (colour - texture)  # alpha-blend the defect
    return to_uint8(image), (alpha > 0).astype(np.uint8), to_uint8(texture)


def _check_difficulty(defect_opacity: float, defect_scale: float) -> None:
    if not 0 < defect_opacity <= 1:
        raise ValueError(f"defect_opacity must be in (0, 1], but got {defect_opacity=}.")
    if not defect_scale > 0:
        raise ValueError(f"defect_scale must be > 0, but got {defect_scale=}.")


def _rng(seed: int, category: str, split: int) -> np.random.Generator:
    # Independent, stable streams per (seed, category, split): adding a category or
    # changing one split's size leaves the others' images unchanged.
    key = (zlib.crc32(category.encode()), split)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def make_toy_mvtec(
    root: str | os.PathLike,
    categories: Sequence[str] = ("stripes", "dots"),
    n_train: int = 60,
    n_test_good: int = 10,
    n_test_defect: int = 4,
    size: int = 64,
    seed: int = 0,
    defects: Sequence[str] = DEFECTS,
    defect_opacity: float = 1.0,
    defect_scale: float = 1.0,
) -> Path:
    """Write the toy dataset in the MVTec AD layout under ``root`` and return ``root``.

    Args:
        root: output folder (created; existing files of the same names are overwritten).
        categories: textures from :data:`CATEGORIES`, one folder each.
        n_train: normal training images per category.
        n_test_good: normal test images per category.
        n_test_defect: test images per defect type and category.
        size: image side in pixels.
        seed: everything is a deterministic function of the seed.
        defects: defect types from :data:`DEFECTS`, one test folder each.
        defect_opacity, defect_scale: difficulty, as in :func:`render_sample` (defaults:
            the original defects; e.g. 0.3 and 0.5 for faint, small ones). Use a different
            ``root`` per setting: the output layout does not record them.

    Example:
        >>> import tempfile
        >>> root = make_toy_mvtec(tempfile.mkdtemp(), categories=("weave",), n_train=1,
        ...                       n_test_good=1, n_test_defect=1, size=16, defects=("blob",))
        >>> sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))
        ['weave/ground_truth/blob/000_mask.png', 'weave/test/blob/000.png', 'weave/test/good/000.png', 'weave/train/good/000.png']
    """
    from PIL import Image  # local: keep module import light

    for cat in categories:
        if cat not in _TEXTURES:
            raise ValueError(f"unknown toy category {cat!r}; expected one of {CATEGORIES}.")
    for d in defects:
        if d not in _DEFECTS:
            raise ValueError(f"unknown toy defect {d!r}; expected one of {DEFECTS}.")
    for name, n in (
        ("n_train", n_train),
        ("n_test_good", n_test_good),
        ("n_test_defect", n_test_defect),
    ):
        if n < 0:
            raise ValueError(f"{name} must be >= 0, but got {name}={n}.")
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, but got {size=}.")
    _check_difficulty(defect_opacity, defect_scale)
    root = Path(root)

    def save(array: np.ndarray, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)

    for cat in categories:
        base = root / cat
        rng = _rng(seed, cat, 0)
        for i in range(n_train):
            save(render_sample(cat, size, rng)[0], base / "train" / "good" / f"{i:03d}.png")
        rng = _rng(seed, cat, 1)
        for i in range(n_test_good):
            save(render_sample(cat, size, rng)[0], base / "test" / "good" / f"{i:03d}.png")
        for defect in defects:
            rng = _rng(seed, cat, 2 + DEFECTS.index(defect))
            for i in range(n_test_defect):
                image, mask, _ = render_sample(
                    cat, size, rng, defect, defect_opacity=defect_opacity, defect_scale=defect_scale
                )
                save(image, base / "test" / defect / f"{i:03d}.png")
                save(mask * 255, base / "ground_truth" / defect / f"{i:03d}_mask.png")
    return root


def ensure_toy_mvtec(cache_dir: str | os.PathLike | None = None) -> Path:
    """The default toy dataset, generated once into a cache and reused afterwards.

    The dataset lives in ``<cache>/toy-mvtec-v1`` where ``<cache>`` is ``cache_dir``,
    else ``$RAYSEARCH_CACHE``, else ``~/.cache/raysearch``. It is written into a
    temporary sibling folder and renamed into place, so a reader never sees a half
    written dataset, and concurrent callers (e.g. Ray workers) are safe: the first
    rename wins and the others discard their copy.

    Example:
        >>> import tempfile
        >>> path = ensure_toy_mvtec(tempfile.mkdtemp())
        >>> path.name, sorted(p.name for p in path.iterdir())
        ('toy-mvtec-v1', ['dots', 'stripes'])
    """
    if cache_dir is None:
        cache_dir = os.environ.get("RAYSEARCH_CACHE") or Path.home() / ".cache" / "raysearch"
    cache = Path(cache_dir).expanduser()
    target = cache / TOY_MVTEC_NAME
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{TOY_MVTEC_NAME}.tmp-", dir=cache))
    try:
        make_toy_mvtec(tmp)
        try:
            os.rename(tmp, target)  # atomic on one file system
        except OSError:
            if not target.is_dir():  # not a lost race: a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
