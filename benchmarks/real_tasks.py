"""Benchmark tasks built from real photographs that installed packages ship.

Two kinds, both written in the MVTec layout so raysearch reads them as ``data.dataset:
folder`` exactly as it reads a user's data:

- **Defect tasks** (one category each): normals are random crops of one photograph,
  downscaled to ``size``; a test defect is an irregular region of a crop replaced by the
  same region of a crop of *another* photograph, blended at an opacity drawn per image.
  ``blend`` defects are large and faint (opacity 0.35-0.6), ``patch`` defects small and
  opaque (0.8-1.0). Masks are the blended region (opacity > 0). Subtle by design, so that
  weak configurations (a learning rate off by 10x, one epoch, a shallow flow) score well
  below strong ones: a real spread of test AUROC.
- **A semantic task** (several categories): each category is crops of one photograph;
  its test anomalies are crops of photographs that are *not* categories of the folder
  (no masks). The other categories' training images are then a fair validation family
  (``selection.anomalies: other_classes``): they are other kinds of image, but not the
  test's kinds.

Sources: scikit-learn's ``china.jpg`` and ``flower.jpg`` and scikit-image's
photographs (``ihc``, ``hubble_deep_field``, ``coffee``, ``rocket``, ``retina``,
``coins``). scikit-image's texture images (brick,
grass, gravel) and its face images and photographs with faces (astronaut, camera, the LFW subset, chelsea) are never used.
scikit-image is a benchmark-only requirement (``pip install scikit-image``).

Run alone to write the tasks and print what they hold:
    python benchmarks/real_tasks.py [--root DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

# Never used by this module (reserved for independent checks of raysearch).
RESERVED = frozenset({"brick", "grass", "gravel", "astronaut", "lfw_subset", "chelsea", "camera"})

DEFECT_TASKS = {
    # task name: (normal photograph, defect source photographs)
    "ihc": ("ihc", ("hubble_deep_field", "coffee", "flower")),
    "flower": ("flower", ("china", "rocket", "coffee")),
}
SEMANTIC_TASK = {
    "categories": ("flower", "china", "ihc", "coffee"),
    "test_anomalies": ("rocket", "retina", "coins", "hubble_deep_field"),
}
SKIMAGE_NAMES = {"ihc": "immunohistochemistry"}
OPTIONS = {"size": 64, "crop": 128, "n_train": 110, "n_test_good": 30, "n_test_defect": 15,
           "semantic_n_test_anomalous": 30, "version": 1}


def photo(name: str) -> np.ndarray:
    """An (H, W, 3) uint8 photograph by name (scikit-learn's or scikit-image's)."""
    if name in RESERVED:
        raise ValueError(f"{name} is reserved for independent checks and never used here")
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        image = load_sample_image(f"{name}.jpg")
    else:
        try:
            import skimage.data
        except ImportError:
            raise SystemExit("the real-image tasks need scikit-image: pip install scikit-image") from None
        image = getattr(skimage.data, SKIMAGE_NAMES.get(name, name))()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def crops(image: np.ndarray, n: int, crop: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random ``crop``-pixel squares of ``image`` (scaled down where it is smaller),
    each resized to ``size`` (N, size, size, 3) uint8."""
    from PIL import Image

    h, w = image.shape[:2]
    c = min(crop, h, w)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        y, x = rng.integers(0, h - c + 1), rng.integers(0, w - c + 1)
        out[i] = np.asarray(Image.fromarray(image[y:y + c, x:x + c]).resize((size, size), Image.BILINEAR))
    return out


def blob_mask(size: int, area: float, rng: np.random.Generator) -> np.ndarray:
    """An irregular region of about ``area`` of the image: a union of 2-4 random ellipses."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    mask = np.zeros((size, size), bool)
    cy, cx = rng.uniform(0.25, 0.75, 2) * size
    radius = np.sqrt(area * size * size / np.pi)
    for _ in range(rng.integers(2, 5)):
        oy, ox = rng.normal(0, radius * 0.5, 2)
        ry, rx = radius * rng.uniform(0.5, 1.1, 2)
        t = rng.uniform(0, np.pi)
        dy, dx = yy - cy - oy, xx - cx - ox
        u = dx * np.cos(t) + dy * np.sin(t)
        v = -dx * np.sin(t) + dy * np.cos(t)
        mask |= (u / rx) ** 2 + (v / ry) ** 2 <= 1
    return mask


def defect(normal: np.ndarray, source: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A defect image and its mask: a blob of ``source`` blended into ``normal``."""
    size = normal.shape[0]
    if kind == "blend":
        mask, opacity = blob_mask(size, rng.uniform(0.04, 0.10), rng), rng.uniform(0.35, 0.6)
    else:
        mask, opacity = blob_mask(size, rng.uniform(0.01, 0.03), rng), rng.uniform(0.8, 1.0)
    alpha = mask[..., None] * opacity
    image = (1 - alpha) * normal.astype(np.float32) + alpha * source.astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), mask.astype(np.uint8)


def _save(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _save_all(images: np.ndarray, folder: Path) -> None:
    for i, image in enumerate(images):
        _save(image, folder / f"{i:03d}.png")


def write_defect_task(root: Path, name: str, seed: int = 0) -> Path:
    normal_name, sources = DEFECT_TASKS[name]
    o = OPTIONS
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    normal = photo(normal_name)
    base = root / name
    _save_all(crops(normal, o["n_train"], o["crop"], o["size"], rng), base / "train" / "good")
    _save_all(crops(normal, o["n_test_good"], o["crop"], o["size"], rng), base / "test" / "good")
    source_crops = np.concatenate([crops(photo(s), o["n_test_defect"], o["crop"], o["size"], rng) for s in sources])
    for kind in ("blend", "patch"):
        clean = crops(normal, o["n_test_defect"], o["crop"], o["size"], rng)
        for i in range(o["n_test_defect"]):
            image, mask = defect(clean[i], source_crops[rng.integers(len(source_crops))], kind, rng)
            _save(image, base / "test" / kind / f"{i:03d}.png")
            _save(mask * 255, base / "ground_truth" / kind / f"{i:03d}_mask.png")
    return base


def write_semantic_task(root: Path, seed: int = 0) -> Path:
    o = OPTIONS
    rng = np.random.default_rng([seed, 7])
    outsiders = np.concatenate([crops(photo(s), o["semantic_n_test_anomalous"], o["crop"], o["size"], rng)
                                for s in SEMANTIC_TASK["test_anomalies"]])
    for category in SEMANTIC_TASK["categories"]:
        image = photo(category)
        base = root / category
        _save_all(crops(image, o["n_train"], o["crop"], o["size"], rng), base / "train" / "good")
        _save_all(crops(image, o["n_test_good"], o["crop"], o["size"], rng), base / "test" / "good")
        pick = rng.choice(len(outsiders), size=o["semantic_n_test_anomalous"], replace=False)
        _save_all(outsiders[np.sort(pick)], base / "test" / "other_image")
    return root


def tasks_root(root: str | None = None) -> Path:
    """Every task, written once into ``root`` (default: the temp folder) and reused while
    :data:`OPTIONS` are unchanged. Defect tasks are ``<root>/defects/<name>``, the
    semantic task ``<root>/semantic``."""
    from _bench import generated

    def write(base: str) -> None:
        for name in DEFECT_TASKS:
            write_defect_task(Path(base) / "defects", name)
        write_semantic_task(Path(base) / "semantic")

    options = {"options": OPTIONS, "defects": DEFECT_TASKS, "semantic": SEMANTIC_TASK}
    return Path(generated(root or os.path.join(tempfile.gettempdir(), "raysearch-bench-real"), options, write))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=None)
    args = ap.parse_args()
    base = tasks_root(args.root)
    for folder in sorted(p for p in base.rglob("*") if p.is_dir() and p.parent.name in ("test", "train")):
        print(f"{folder.relative_to(base)}: {len(list(folder.glob('*.png')))} images")


if __name__ == "__main__":
    main()
