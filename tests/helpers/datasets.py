"""Small datasets written in the real on-disk formats (CIFAR pickles, MVTec folders)."""

from __future__ import annotations

import pickle

import numpy as np
from PIL import Image


def write_cifar10(root, per_class=6, test_per_class=4):
    """CIFAR-10's python pickles: 5 training batches and a test batch, bytes keys."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(labels):
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        data[:, 0] = np.asarray(labels) * 20  # first red pixel encodes the class
        return {b"batch_label": b"x", b"labels": list(labels), b"data": data, b"filenames": [b"f"] * len(labels)}

    train_labels = [c for c in range(10) for _ in range(per_class)]
    for i in range(5):
        with open(folder / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump(batch(train_labels[i::5]), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch([c for c in range(10) for _ in range(test_per_class)]), f)
    return root


def write_cifar100(root):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", 200), ("test", 100)):
        coarse = [i % 20 for i in range(n)]
        data = np.zeros((n, 3072), dtype=np.uint8)
        data[:, 0] = np.asarray(coarse) * 10
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"fine_labels": [i % 100 for i in range(n)], b"coarse_labels": coarse}, f)
    return root


def write_mvtec(root, category="widget", masks=True, size=40, grayscale=False):
    base = root / category
    mode = "L" if grayscale else "RGB"
    rng = np.random.default_rng(1)

    def save(path, value):
        path.parent.mkdir(parents=True, exist_ok=True)
        shape = (size, size) if grayscale else (size, size, 3)
        Image.fromarray(np.full(shape, value, np.uint8) + rng.integers(0, 5, shape, dtype=np.uint8), mode).save(path)

    for i in range(12):
        save(base / "train" / "good" / f"{i:03d}.png", 100)
    for i in range(3):
        save(base / "test" / "good" / f"{i:03d}.png", 100)
        save(base / "test" / "crack" / f"{i:03d}.png", 200)
        if masks:
            mask = np.zeros((size, size), np.uint8)
            mask[: size // 2] = 255  # the top half is the defect
            (base / "ground_truth" / "crack").mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask, "L").save(base / "ground_truth" / "crack" / f"{i:03d}_mask.png")
    return root
