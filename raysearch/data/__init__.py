"""Datasets and the one-class protocol.

Every dataset is read from its real on-disk format into uint8 tensors and cut into a
:class:`~raysearch.data.base.OneClassTask` per normal class by
:func:`raysearch.data.protocol.make_task`. This module is the registry; it imports no
torch so that specs validate (and ``import analysis`` works) without it.

Datasets of *classes* (digits, CIFAR, ImageNet-30) draw anomalies from the other
classes of the test set; datasets of *categories* (MVTec AD, BTAD, any folder in the
MVTec layout, the built-in toy-mvtec) have their own defective test images and, where
present, ground-truth masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from raysearch.config.schema import SpecError

if TYPE_CHECKING:
    from raysearch.config.spec import DataSpec, SelectionSpec
    from raysearch.data.base import OneClassTask

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DataNotFoundError",
    "IMAGE_SUFFIXES",
    "NORMAL_FOLDERS",
    "category_problems",
    "dataset_kind",
    "describe_dataset",
    "list_classes",
    "check_data",
    "load_task",
]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_SUPERCLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)  # fmt: skip
MVTEC_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill",
    "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
)  # fmt: skip
BTAD_CATEGORIES = ("01", "02", "03")


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
NORMAL_FOLDERS = ("good", "ok")  # MVTec AD, BTAD


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in folder.iterdir())


def category_problems(category_dir: Path) -> list[str]:
    """What is missing in one MVTec-layout category folder (empty when it is usable)."""
    train = next((category_dir / "train" / n for n in NORMAL_FOLDERS if (category_dir / "train" / n).is_dir()), None)
    problems = []
    if train is None:
        problems.append(f"{category_dir / 'train'} has no good/ (or ok/) folder")
    elif not _has_images(train):
        problems.append(f"{train} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    test = category_dir / "test"
    folders = [p for p in test.iterdir() if p.is_dir()] if test.is_dir() else []
    if not any(p.name in NORMAL_FOLDERS and _has_images(p) for p in folders):
        problems.append(f"{test} has no good/ folder with images")
    if not any(p.name not in NORMAL_FOLDERS and _has_images(p) for p in folders):
        problems.append(f"{test} has no defect folder with images")
    return problems


class DataNotFoundError(SpecError):
    """The dataset's files are not where the spec says (a user error: exit 2, one line)."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: Literal["classes", "categories"]
    description: str
    loader: str  # "module:function" returning the raw arrays for one normal class
    classes: tuple[str, ...] | None = None  # fixed list; None = discovered under data.root
    aliases: tuple[str, ...] = ()  # other accepted names of the classes (e.g. CIFAR names)
    folders: tuple[str, ...] = ()  # sub-folders of data.root also searched for the files
    builtin: bool = False  # needs no files from the user


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "digits", "classes", "scikit-learn's handwritten digits (built in), classes 0-9",
            "raysearch.data.readers:digits", classes=tuple(str(i) for i in range(10)), builtin=True,
        ),
        DatasetInfo(
            "cifar10", "classes", "CIFAR-10 python pickles in <root>/cifar-10-batches-py, classes 0-9",
            "raysearch.data.readers:cifar10", classes=tuple(str(i) for i in range(10)),
            aliases=CIFAR10_CLASSES,
        ),
        DatasetInfo(
            "cifar100", "classes",
            "CIFAR-100 python pickles in <root>/cifar-100-python, the 20 superclasses 0-19",
            "raysearch.data.readers:cifar100", classes=tuple(str(i) for i in range(20)),
            aliases=CIFAR100_SUPERCLASSES,
        ),
        DatasetInfo(
            "imagenet30", "classes",
            "ImageNet-30 folders <root>[/imagenet30]/{train,test}/<class>/*.jpg (also one_class_train/test)",
            "raysearch.data.readers:imagenet30", folders=("imagenet30", "ImageNet-30"),
        ),
        DatasetInfo(
            "mvtec", "categories", "MVTec AD in <root>[/mvtec_anomaly_detection]/<category>/...",
            "raysearch.data.readers:mvtec_layout", classes=MVTEC_CATEGORIES,
            folders=("mvtec_anomaly_detection", "mvtec", "mvtec_ad"),
        ),
        DatasetInfo(
            "btad", "categories", "BTAD in <root>[/BTech_Dataset_transformed]/{01,02,03}/...",
            "raysearch.data.readers:mvtec_layout", classes=BTAD_CATEGORIES,
            folders=("BTech_Dataset_transformed", "btad", "BTAD"),
        ),
        DatasetInfo(
            "folder", "categories",
            "any <root>/<category>/{train/good,test/good,test/<defect>[,ground_truth/<defect>]}",
            "raysearch.data.readers:mvtec_layout",
        ),
        DatasetInfo(
            "toy-mvtec", "categories",
            "generated textures with defects and masks in the MVTec layout (built in): stripes, dots",
            "raysearch.data.readers:toy_mvtec", classes=("stripes", "dots"), builtin=True,
        ),
    )
}


def _info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise SpecError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}", key="data.dataset") from None


def dataset_kind(name: str) -> str:
    """``classes`` (anomalies are other classes) or ``categories`` (own defects)."""
    return _info(name).kind


def describe_dataset(name: str) -> str:
    return _info(name).description


def dataset_root(info: DatasetInfo, root: str) -> Path:
    """The folder that holds the dataset's files: ``root`` or one of its known sub-folders."""
    base = Path(root).expanduser()
    for candidate in (base, *(base / f for f in info.folders)):
        if info.kind == "categories" and _category_dirs(candidate):
            return candidate
        if info.kind == "classes" and candidate.is_dir() and any(
            (candidate / s).is_dir() for s in ("train", "one_class_train")
        ):
            return candidate
    tried = ", ".join(str(p) for p in (base, *(base / f for f in info.folders)))
    raise DataNotFoundError(
        f"no {info.name} dataset found (looked in {tried}); download it and set data.root to its folder",
        key="data.root",
    )


def _category_dirs(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "train").is_dir() and (p / "test").is_dir())


def list_classes(data: DataSpec) -> list[str]:
    """The normal classes a spec runs, in its fixed order, each checked against the dataset."""
    info = _info(data.dataset)
    known = info.classes
    if known is None:  # discovered from the files
        root = dataset_root(info, data.root)
        if info.kind == "categories":
            known = tuple(_category_dirs(root))
        else:
            train = root / "train" if (root / "train").is_dir() else root / "one_class_train"
            known = tuple(sorted(p.name for p in train.iterdir() if p.is_dir()))
    if data.classes == "all":
        return list(known)
    out = []
    for name in data.classes:
        name = str(name)
        if name in info.aliases:  # CIFAR class names are accepted for indices
            name = str(info.aliases.index(name))
        if name not in known:
            shown = ", ".join(known) if len(known) <= 30 else f"{len(known)} names"
            raise SpecError(f"unknown class {name!r} of {info.name}; expected one of {shown}", key="data.classes")
        out.append(name)
    return out


def planned_classes(data: DataSpec) -> tuple[list[str], str | None]:
    """The classes a run would train, for a plan made without the data (``--dry-run``):
    the checked list where the data is there, else the spec's own list with a note saying
    it was not checked; an error when neither the data nor the spec names them."""
    try:
        return list_classes(data), None
    except DataNotFoundError as err:
        if data.classes == "all":
            raise SpecError(f"{err.problem}; without the data, list data.classes to plan a run",
                            key="data.classes") from None
        return [str(c) for c in data.classes], f"classes not checked: {err.problem}"


def check_other_categories(data: DataSpec, anomalies: str) -> None:
    """Other-class validation anomalies of a dataset of categories come from its other
    categories: refuse, before any worker starts, a folder that holds only one."""
    info = _info(data.dataset)
    if anomalies not in ("other_classes", "both") or info.kind != "categories":
        return
    if info.name == "toy-mvtec":
        return  # built in, with several categories
    found = _category_dirs(dataset_root(info, data.root))
    if len(found) < 2:
        raise SpecError(f"{data.root} holds {len(found)} category; other_classes validation anomalies are the "
                        "training images of the other categories: add categories or use anomalies: synthetic",
                        key="selection.anomalies")


def check_data(data: DataSpec) -> list[str]:
    """The spec's classes, after checking the files their tasks read (before any worker
    starts): every problem (a missing or empty folder, an image that cannot be decoded, a
    mask without its image or of another size, a defect image without a mask) with its
    path, in one error, not a failed trial per class. Image checks are cached, see
    :mod:`raysearch.data.checks`.

    Example (``root`` holds a category whose ``test/crack/003.png`` is cut short)::

        check_data(DataSpec(dataset="folder", root=root))
        # DataNotFoundError: data.root: 1 problem with the data:
        #   <root>/widget/test/crack/003.png: truncated or corrupt (image file is truncated ...)
    """
    classes = list_classes(data)
    info = _info(data.dataset)
    if info.name in ("cifar10", "cifar100") and not data.download:
        from raysearch.data.readers import cifar_paths

        cifar_paths(info.name, data.root, download=False)
    elif not info.builtin:
        from raysearch.data.checks import data_problems, format_problems

        problems = data_problems(data, classes)
        if problems:
            raise DataNotFoundError(format_problems(problems), key="data.root")
    return classes


def load_task(data: DataSpec, selection: SelectionSpec, normal_class: str, seed: int) -> OneClassTask:
    """Read one normal class's data and cut it into train / validation / test splits."""
    from raysearch.data.protocol import make_task

    info = _info(data.dataset)
    module, _, function = info.loader.partition(":")
    raw = getattr(import_module(module), function)(info, data, normal_class)
    return make_task(raw, data, selection, seed, normal_class, data.dataset)
