"""Readers of the real on-disk formats, one function per dataset family.

Each reader returns a :class:`RawClass` for one normal class: pools of images that are
read (and resized to ``data.image_size``) only for the indices the protocol picks, so
``data.max_train`` / ``data.max_test`` also cut reading time, and the test labels and
masks. The CIFAR pickles are read directly (torchvision's readers verify MD5 sums of the
full files and give CIFAR-100's fine labels only); torchvision is used only to download
them when ``data.download`` is true.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from raysearch.data import (
    IMAGE_SUFFIXES,  # noqa: F401 (methods/clflow imports it from here)
    NORMAL_FOLDERS,
    DataNotFoundError,
    DatasetInfo,
    _category_dirs,
    dataset_root,
)
from raysearch.data.augment import resize
from raysearch.data.checks import images_in, mask_names

__all__ = ["Pool", "RawClass", "digits", "cifar10", "cifar100", "imagenet30", "mvtec_layout", "toy_mvtec"]



@dataclass
class Pool:
    """``size`` images, read on demand: ``read(indices)`` -> uint8 (n, 3, S, S) tensor."""

    size: int
    read: Callable[[Sequence[int]], torch.Tensor]

    @classmethod
    def of_array(cls, array: np.ndarray, image_size: int) -> Pool:
        """From a uint8 (N, C, H, W) array with C in {1, 3}."""

        def read(indices: Sequence[int]) -> torch.Tensor:
            x = torch.from_numpy(np.ascontiguousarray(array[np.asarray(indices, dtype=np.int64)]))
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            return resize(x.contiguous(), image_size)

        return cls(len(array), read)

    @classmethod
    def of_files(cls, paths: Sequence[Path | None], image_size: int, mask: bool = False) -> Pool:
        """From image files (colour or grayscale, any size); ``None`` is an empty mask."""

        def read(indices: Sequence[int]) -> torch.Tensor:
            if mask:
                return torch.stack([_read_mask(paths[i], image_size) for i in indices]) if len(indices) else (
                    torch.zeros(0, image_size, image_size, dtype=torch.uint8)
                )
            if not len(indices):
                return torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8)
            return torch.stack([_read_image(paths[i], image_size) for i in indices])

        return cls(len(paths), read)


@dataclass
class RawClass:
    train: Pool  # training normals
    test: Pool
    test_labels: np.ndarray  # int64 (N,), 1 = anomalous
    test_masks: Pool | None = None  # uint8 (n, S, S) per read; None: no pixel ground truth
    others: Pool | None = None  # training images of the other classes (or other categories)


def _read_image(path: Path, size: int) -> torch.Tensor:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # see checks.inspect_image
            with Image.open(path) as img:
                img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
    except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for broken files name no path
        raise DataNotFoundError(f"cannot read image {path}: {err}", key="data.root") from None


def _read_mask(path: Path | None, size: int) -> torch.Tensor:
    if path is None:
        return torch.zeros(size, size, dtype=torch.uint8)
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("L")
        if img.size != (size, size):
            img = img.resize((size, size), Image.NEAREST)
        return torch.from_numpy((np.asarray(img) > 127).astype(np.uint8))


def _one_class(
    info: DatasetInfo,
    normal: str,
    image_size: int,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
) -> RawClass:
    c = int(normal)
    return RawClass(
        train=Pool.of_array(train_x[train_y == c], image_size),
        test=Pool.of_array(test_x, image_size),
        test_labels=(test_y != c).astype(np.int64),
        others=Pool.of_array(train_x[train_y != c], image_size),
    )


# -- digits ---------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, bunch.target, test_size=0.5, stratify=bunch.target, random_state=0
    )  # fixed halves: the same split on every machine
    return x_tr, y_tr, x_te, y_te


def digits(info: DatasetInfo, data, normal: str) -> RawClass:
    x_tr, y_tr, x_te, y_te = _digits_arrays()
    return _one_class(info, normal, data.image_size, x_tr, y_tr, x_te, y_te)


# -- CIFAR ----------------------------------------------------------------------------

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@lru_cache(maxsize=4)
def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _cifar_files(root: Path, folder: str, names: Sequence[str], download: bool, dataset: str) -> list[Path]:
    base = root / folder
    paths = [base / n for n in names]
    missing = [p for p in paths if not p.is_file()]
    if missing and download:
        from torchvision import datasets

        cls = datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100
        for train in (True, False):
            cls(str(root), train=train, download=True)
        missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataNotFoundError(
            f"{dataset} files not found: expected {', '.join(str(p) for p in missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''} (the python version from {CIFAR_URL}); "
            "set data.root to the folder that holds it, or data.download: true to fetch it",
            key="data.root",
        )
    return paths


def _cifar_arrays(paths: Sequence[Path], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for path in paths:
        batch = _unpickle(path)
        try:
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[label_key], dtype=np.int64))
        except (KeyError, ValueError) as err:
            raise DataNotFoundError(f"{path} is not a CIFAR python pickle ({err})", key="data.root") from None
    return np.concatenate(xs), np.concatenate(ys)


def cifar_paths(dataset: str, root: str, download: bool) -> list[Path]:
    """The pickle files of cifar10 (5 training batches, then the test batch) or cifar100."""
    base = Path(root).expanduser()
    if dataset == "cifar10":
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        return _cifar_files(base, "cifar-10-batches-py", names, download, dataset)
    return _cifar_files(base, "cifar-100-python", ["train", "test"], download, dataset)


def cifar10(info: DatasetInfo, data, normal: str) -> RawClass:
    paths = cifar_paths("cifar10", data.root, data.download)
    x_tr, y_tr = _cifar_arrays(paths[:5], b"labels")
    x_te, y_te = _cifar_arrays(paths[5:], b"labels")
    return _one_class(info, normal, data.image_size, x_tr, y_tr, x_te, y_te)


def cifar100(info: DatasetInfo, data, normal: str) -> RawClass:
    paths = cifar_paths("cifar100", data.root, data.download)
    x_tr, y_tr = _cifar_arrays(paths[:1], b"coarse_labels")  # the 20 superclasses
    x_te, y_te = _cifar_arrays(paths[1:], b"coarse_labels")
    return _one_class(info, normal, data.image_size, x_tr, y_tr, x_te, y_te)


# -- folders --------------------------------------------------------------------------


def imagenet30(info: DatasetInfo, data, normal: str) -> RawClass:
    root = dataset_root(info, data.root)
    train_dir = root / "train" if (root / "train").is_dir() else root / "one_class_train"
    test_dir = root / "test" if (root / "test").is_dir() else root / "one_class_test"
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    train = {c: images_in(train_dir / c, recursive=True) for c in classes}
    test_files, test_labels = [], []
    for c in sorted(p.name for p in test_dir.iterdir() if p.is_dir()):
        files = images_in(test_dir / c, recursive=True)
        test_files += files
        test_labels += [int(c != normal)] * len(files)
    if not train[normal] or not test_files:
        raise DataNotFoundError(f"no images for class {normal!r} under {train_dir} / {test_dir}", key="data.root")
    others = [p for c in classes if c != normal for p in train[c]]
    return RawClass(
        train=Pool.of_files(train[normal], data.image_size),
        test=Pool.of_files(test_files, data.image_size),
        test_labels=np.asarray(test_labels, dtype=np.int64),
        others=Pool.of_files(others, data.image_size),
    )


def _mask_for(gt_dir: Path, image: Path) -> Path | None:
    """The mask of ``image``: ``<stem>_mask.<ext>`` or ``<stem>.<ext>`` in ``gt_dir`` (PNG
    first), matched exactly: ``1.png`` never takes ``10_mask.png``."""
    return next((gt_dir / n for n in mask_names(image) if (gt_dir / n).is_file()), None)


def read_category(category_dir: Path, image_size: int) -> RawClass:
    """One category in the MVTec layout; ground-truth masks where ``ground_truth/`` exists."""
    normal_name = next((n for n in NORMAL_FOLDERS if (category_dir / "train" / n).is_dir()), None)
    if normal_name is None:
        raise DataNotFoundError(
            f"{category_dir}/train has no good/ (or ok/) folder of normal images", key="data.root"
        )
    train = images_in(category_dir / "train" / normal_name)
    if not train:
        raise DataNotFoundError(f"no images in {category_dir / 'train' / normal_name}", key="data.root")
    has_gt = (category_dir / "ground_truth").is_dir()
    files: list[Path] = []
    labels: list[int] = []
    masks: list[Path | None] = []
    for defect_dir in sorted(p for p in (category_dir / "test").iterdir() if p.is_dir()):
        anomalous = defect_dir.name not in NORMAL_FOLDERS
        for path in images_in(defect_dir):
            files.append(path)
            labels.append(int(anomalous))
            mask = None
            if anomalous and has_gt:
                mask = _mask_for(category_dir / "ground_truth" / defect_dir.name, path)
                if mask is None:
                    raise DataNotFoundError(
                        f"no ground-truth mask for {path} in {category_dir / 'ground_truth' / defect_dir.name} "
                        f"(expected {path.stem}_mask.png or {path.stem}.png)",
                        key="data.root",
                    )
            masks.append(mask)
    if not files or sum(labels) == 0 or sum(labels) == len(labels):
        raise DataNotFoundError(
            f"{category_dir / 'test'} needs both good/ and defect folders with images", key="data.root"
        )
    return RawClass(
        train=Pool.of_files(train, image_size),
        test=Pool.of_files(files, image_size),
        test_labels=np.asarray(labels, dtype=np.int64),
        test_masks=Pool.of_files(masks, image_size, mask=True) if has_gt else None,
    )


def _other_categories(root: Path, normal: str, image_size: int) -> Pool | None:
    """The training normals of every other category under ``root``: the ``other_classes``
    validation family of a dataset of categories (None when ``normal`` is the only one)."""
    files = []
    for category in _category_dirs(root):
        if category == normal:
            continue
        good = next((root / category / "train" / n for n in NORMAL_FOLDERS if (root / category / "train" / n).is_dir()), None)
        files += images_in(good) if good is not None else []
    return Pool.of_files(files, image_size) if files else None


def _with_others(raw: RawClass, others: Pool | None) -> RawClass:
    raw.others = others
    return raw


def mvtec_layout(info: DatasetInfo, data, normal: str) -> RawClass:
    root = dataset_root(info, data.root)
    if not (root / normal).is_dir():
        raise DataNotFoundError(f"category folder {root / normal} not found", key="data.root")
    return _with_others(read_category(root / normal, data.image_size), _other_categories(root, normal, data.image_size))


def toy_mvtec(info: DatasetInfo, data, normal: str) -> RawClass:
    from raysearch.data.toy import ensure_toy_mvtec

    root = ensure_toy_mvtec()
    return _with_others(read_category(root / normal, data.image_size), _other_categories(root, normal, data.image_size))
