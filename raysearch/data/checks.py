"""Checks of a dataset's files before anything trains, and the dataset's fingerprint.

:func:`raysearch.data.check_data` calls :func:`data_problems` before Ray starts, so bad
data is one error listing every problem with its path (exit 2), not a failed trial per
class an hour later. For folders in the MVTec layout (and ImageNet-30) that is: missing
or empty folders, images that cannot be decoded (truncated, corrupt), masks without an
image, masks of another size than their image, and defect images without a mask in a
category that has ``ground_truth/``.

What finds a broken file (measured with Pillow 13 by cutting files at every length):

- PNG: ``Image.verify()`` checks the CRC of every chunk up to ``IEND`` and catches
  every cut except one inside the last 4 bytes (the end chunk's CRC); the file's tail
  is checked for the complete end chunk. Decoding the pixels (``Image.load()``) catches
  less (a PNG cut after its image data loads) and costs ~40x more (27 ms against
  0.6 ms for a 1024 px RGB image), so PNGs are not decoded.
- JPEG: ``verify()`` checks nothing; decoding does, and at 1/8 scale (``draft``) it
  still reads every entropy-coded byte, in half the time of a full decode.
- Other formats (BMP, TIFF, WebP): ``verify()`` and a full decode.

With these, every cut of a test image at ~300 lengths was found in PNG, JPEG
(baseline and progressive), WebP, BMP and TIFF, as long as Pillow's
``ImageFile.LOAD_TRUNCATED_IMAGES`` keeps its default (False).

Results are cached per dataset root under ``<cache>/data-checks/`` (``<cache>`` is
:func:`cache_dir`, never the dataset folder, which may be read-only), keyed by each
file's path, size and modification time: a second check of the same data opens no
image, and a file that changed is checked again. A cache that cannot be read or
written is ignored.

The fingerprint (:func:`data_fingerprint`) is per class the number and total size of
the files that class's task reads, recorded with an experiment and compared on
``--resume`` with :func:`fingerprint_changes`.

Example:
    >>> fingerprint_changes({"dataset": "mvtec", "classes": {"bottle": {"files": 210, "bytes": 9}}},
    ...                     {"dataset": "mvtec", "classes": {"bottle": {"files": 209, "bytes": 9}}})
    ['class bottle: 209 files (was 210)']
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import struct
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from raysearch.data import (
    DATASETS,
    IMAGE_SUFFIXES,
    NORMAL_FOLDERS,
    category_problems,
    dataset_root,
)

if TYPE_CHECKING:
    from raysearch.config.spec import DataSpec

__all__ = [
    "ImageCheck",
    "cache_dir",
    "check_images",
    "data_fingerprint",
    "data_problems",
    "fingerprint_changes",
    "format_problems",
    "images_in",
    "inspect_image",
    "mask_names",
]

CHECK_VERSION = 1  # bump when inspect_image checks more: cached results of older checks are ignored
MAX_LISTED = 10  # problems named in the one-line error; the rest are counted ("and N more")
# Files inspected at once. File reads release the GIL, so threads overlap the reads of a
# slow or network disk; on a page-cached local disk (2 cores) 1 and 2 threads measured the same.
CHECK_THREADS = 8
CACHE_DAYS = 30  # a dataset's cache file unused this long is deleted (moved data, test folders)
PNG_END = b"IEND\xaeB`\x82"  # the end chunk's type and CRC, the last 8 bytes of a whole PNG
PNG_TAIL = 4096  # bytes read from a PNG's end to find PNG_END (a few trailing bytes are allowed)
# What Pillow raises on a file it cannot decode (its messages name no path).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error)


def cache_dir() -> Path:
    """Where raysearch caches what it computed: ``$RAYSEARCH_CACHE``, else
    ``$XDG_CACHE_HOME/raysearch``, else ``~/.cache/raysearch``."""
    if os.environ.get("RAYSEARCH_CACHE"):
        return Path(os.environ["RAYSEARCH_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "raysearch"


def images_in(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files (by suffix, any case) in ``folder``, sorted; none when it is missing."""
    if not folder.is_dir():
        return []
    if recursive:
        return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    with os.scandir(folder) as found:  # the entries' types come with the listing: no stat per file
        names = [e.name for e in found if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file()]
    return [folder / n for n in sorted(names)]


def mask_names(image: Path) -> list[str]:
    """The file names the mask of ``image`` may have in its ``ground_truth/<defect>``
    folder, in order of preference: ``<stem>_mask.<ext>``, then ``<stem>.<ext>``, PNG first.

    Example:
        >>> mask_names(Path("test/crack/001.png"))[:3]
        ['001_mask.png', '001_mask.PNG', '001_mask.bmp']
    """
    suffixes = [".png"] + sorted(IMAGE_SUFFIXES - {".png"})
    return [f"{stem}{s}" for stem in (f"{image.stem}_mask", image.stem) for x in suffixes for s in (x, x.upper())]


# -- one image ------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageCheck:
    """What :func:`inspect_image` found in one file."""

    size: tuple[int, int] | None  # (width, height) in pixels from the header; None if unknown
    error: str | None = None  # what is wrong with the file; None for a good image


def inspect_image(path: Path) -> ImageCheck:
    """Open, verify and where needed decode one image file (see the module docstring).

    An ``OSError`` from opening the file itself (no permission, gone) propagates: it is
    not a property of the file's bytes and is not cached.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> path = Path(tempfile.mkdtemp()) / "a.png"
        >>> Image.new("RGB", (6, 4)).save(path)
        >>> inspect_image(path)
        ImageCheck(size=(6, 4), error=None)
        >>> path.write_bytes(path.read_bytes()[:-2]) and inspect_image(path).error
        'truncated: the PNG end chunk (IEND) is missing'
    """
    from PIL import Image

    with open(path, "rb") as f, warnings.catch_warnings():
        # A large photograph is an input like any other (it is resized when read);
        # Pillow's warning past 89 Mpixels would only interleave with raysearch's lines.
        # Past twice that, Pillow refuses it: that error is this image's own.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        size = None
        try:
            with Image.open(f) as img:
                size, fmt = img.size, img.format
                if fmt == "JPEG":  # verify() checks nothing in a JPEG: decode the scans at 1/8 scale
                    img.draft(img.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
                    img.load()
                else:
                    img.verify()
            if fmt == "PNG":
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - PNG_TAIL))
                if PNG_END not in f.read():
                    return ImageCheck(size, "truncated: the PNG end chunk (IEND) is missing")
            elif fmt != "JPEG":  # verify() is partial or empty for the other formats
                f.seek(0)
                with Image.open(f) as img:
                    img.load()
        except Image.DecompressionBombError as err:
            return ImageCheck(size, f"too many pixels for Pillow ({err})")
        except _DECODE_ERRORS as err:
            if size is None:  # Pillow's message only repeats the path
                return ImageCheck(None, "not a readable image (empty, cut short in its header, or another format)")
            return ImageCheck(size, f"truncated or corrupt ({err})")
    return ImageCheck(size)


# -- many images, cached --------------------------------------------------------------


def _cache_path(root: Path) -> Path:
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "data-checks" / f"{digest}.json"


def _read_cache(path: Path) -> dict[str, list[Any]]:
    """``{relative path: [bytes, mtime_ns, width, height, error]}``; empty when unusable."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict) or raw.get("version") != CHECK_VERSION or not isinstance(raw.get("files"), dict):
        return {}
    return {k: v for k, v in raw["files"].items() if isinstance(v, list) and len(v) == 5}


def _write_cache(path: Path, root: Path, entries: dict[str, list[Any]]) -> None:
    """Atomically (a reader never sees half a file); any failure is ignored."""
    text = json.dumps({"version": CHECK_VERSION, "root": str(root.resolve()), "files": entries})
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        old = time.time() - CACHE_DAYS * 86400
        for other in path.parent.glob("*.json"):
            if other.stat().st_mtime < old:
                other.unlink(missing_ok=True)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _from_entry(entry: list[Any]) -> ImageCheck | None:
    _, _, w, h, error = entry
    if not (error is None or isinstance(error, str)):
        return None
    if isinstance(w, int) and isinstance(h, int):
        return ImageCheck((w, h), error)
    return ImageCheck(None, error) if w is None and h is None else None


def check_images(root: Path, files: Sequence[Path], folders: Iterable[Path] = ()) -> dict[Path, ImageCheck]:
    """:func:`inspect_image` of every file under ``root``, cached by (path, size, mtime).

    ``folders`` are the folders whose every image is in ``files``: cache entries of
    files there that are gone are dropped. Entries of other folders of ``root`` stay, so
    checking some classes keeps what is cached for the others. Each file is a key of
    the result, e.g. ``{root / "a.png": ImageCheck(size=(5, 3), error=None)}``.
    """
    root = Path(os.path.abspath(root))
    cache_file = _cache_path(root)
    prefix = len(str(root)) + 1

    def relative(path: Path) -> str:  # not resolved, so a linked file stays under root; str ops: fast
        full = os.path.abspath(path)
        if not full.startswith(str(root) + os.sep):
            raise ValueError(f"{path} is not under {root}")
        return full[prefix:].replace(os.sep, "/")

    cache = _read_cache(cache_file)
    found: dict[Path, ImageCheck] = {}
    todo: list[tuple[Path, str, int, int]] = []
    current = {path: relative(path) for path in files}
    for path, rel in current.items():
        try:
            st = path.stat()
        except OSError as err:
            found[path] = ImageCheck(None, f"cannot be read ({err.strerror})")
            continue
        entry = cache.get(rel)
        hit = _from_entry(entry) if entry is not None and entry[:2] == [st.st_size, st.st_mtime_ns] else None
        if hit is not None:
            found[path] = hit
        else:
            todo.append((path, rel, st.st_size, st.st_mtime_ns))

    def inspect(item: tuple[Path, str, int, int]) -> tuple[ImageCheck, bool]:
        try:
            return inspect_image(item[0]), True
        except OSError as err:  # opening failed: not the file's content, so not cached
            return ImageCheck(None, f"cannot be read ({err.strerror or err})"), False

    threads = min(CHECK_THREADS, os.cpu_count() or 1, len(todo))
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(inspect, todo))
    else:
        results = [inspect(item) for item in todo]
    for (path, rel, nbytes, mtime), (check, keep) in zip(todo, results, strict=True):
        found[path] = check
        if keep:
            cache[rel] = [nbytes, mtime, *(check.size or (None, None)), check.error]
        else:
            cache.pop(rel, None)
    listed = {relative(p) for p in folders}
    seen = set(current.values())
    stale = [k for k in cache if k not in seen and any(str(d) in listed for d in PurePosixPath(k).parents)]
    for key in stale:
        del cache[key]
    if todo or stale:
        _write_cache(cache_file, root, cache)
    return found


# -- a category in the MVTec layout ---------------------------------------------------


@dataclass
class _CategoryFiles:
    folders: list[Path]  # every folder listed (for the cache)
    train: list[Path]
    test: dict[str, list[Path]]  # defect (or good) folder name -> images
    masks: dict[str, list[Path]] | None  # ground_truth/<name> -> masks; None without ground_truth/

    def every(self) -> list[Path]:
        """Every image and mask file of the category (what its task may read)."""
        masks = self.masks or {}
        return [*self.train, *(p for v in self.test.values() for p in v), *(p for v in masks.values() for p in v)]


def _category_files(category_dir: Path) -> _CategoryFiles:
    normal = next((n for n in NORMAL_FOLDERS if (category_dir / "train" / n).is_dir()), NORMAL_FOLDERS[0])
    test_dir, gt_dir = category_dir / "test", category_dir / "ground_truth"
    tests = sorted(p for p in test_dir.iterdir() if p.is_dir()) if test_dir.is_dir() else []
    gts = sorted(p for p in gt_dir.iterdir() if p.is_dir()) if gt_dir.is_dir() else []
    return _CategoryFiles(
        folders=[category_dir / "train" / normal, *tests, *gts],
        train=images_in(category_dir / "train" / normal),
        test={p.name: images_in(p) for p in tests},
        masks={p.name: images_in(p) for p in gts} if gt_dir.is_dir() else None,
    )


def _mask_problems(category_dir: Path, files: _CategoryFiles, checked: dict[Path, ImageCheck]) -> list[str]:
    """Defect images without a mask (where ``ground_truth/`` exists), masks without an
    image, and masks of another size than their image."""
    if files.masks is None:  # no pixel ground truth: image metrics only
        return []
    problems = []
    for name, images in files.test.items():
        anomalous = name not in NORMAL_FOLDERS
        test, gt = category_dir / "test" / name, category_dir / "ground_truth" / name
        if name not in files.masks:
            if anomalous and images:
                problems.append(f"{test}: no mask folder {gt} for its {len(images)} images")
            continue
        by_name = {p.name: p for p in files.masks[name]}
        claimed = set()
        for image in images:
            mask = next((by_name[n] for n in mask_names(image) if n in by_name), None)
            if mask is None:
                if anomalous:
                    problems.append(f"{image}: no mask in {gt} (expected {image.stem}_mask.png or {image.stem}.png)")
                continue
            claimed.add(mask)
            image_size, mask_size = checked[image].size, checked[mask].size
            if image_size and mask_size and image_size != mask_size:
                problems.append(f"{mask}: mask is {mask_size[0]}x{mask_size[1]} pixels, "
                                f"its image {image} is {image_size[0]}x{image_size[1]}")
        problems += [f"{m}: a mask without an image in {test}" for m in files.masks[name] if m not in claimed]
    for name, masks in files.masks.items():
        if name not in files.test and masks:
            problems.append(f"{category_dir / 'ground_truth' / name}: {len(masks)} masks but no folder "
                            f"{category_dir / 'test' / name} of images")
    return problems


def _categories_problems(root: Path, classes: Sequence[str]) -> list[str]:
    problems: dict[str, list[str]] = {}
    files: dict[str, _CategoryFiles] = {}
    for c in classes:
        if not ((root / c / "train").is_dir() and (root / c / "test").is_dir()):
            problems[c] = [f"{root / c}: category folder (with train/ and test/) not found"]
            continue
        problems[c] = category_problems(root / c)
        files[c] = _category_files(root / c)
    checked = check_images(root, [p for f in files.values() for p in f.every()],
                           [d for f in files.values() for d in f.folders])
    for c, f in files.items():
        problems[c] += [f"{p}: {checked[p].error}" for p in f.every() if checked[p].error]
        problems[c] += _mask_problems(root / c, f, checked)
    return [p for c in classes for p in problems[c]]


def _imagenet30_problems(root: Path) -> list[str]:
    problems, every, folders = [], [], []
    for split in ("train", "test"):
        base = root / split if (root / split).is_dir() else root / f"one_class_{split}"
        if not base.is_dir():
            problems.append(f"{base}: folder not found")
            continue
        for folder in sorted(p for p in base.iterdir() if p.is_dir()):
            found = images_in(folder, recursive=True)
            if not found:
                problems.append(f"{folder}: holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            every += found
            folders += [folder, *(p for p in folder.rglob("*") if p.is_dir())]
    checked = check_images(root, every, folders)
    return problems + [f"{p}: {checked[p].error}" for p in every if checked[p].error]


def data_problems(data: DataSpec, classes: Sequence[str]) -> list[str]:
    """Every problem with the files that the tasks of ``classes`` read, each as
    ``"<path>: <what is wrong>"``; empty for the built-in datasets and for CIFAR (whose
    pickles :func:`raysearch.data.check_data` finds or downloads)."""
    info = DATASETS[data.dataset]
    if info.builtin or info.name in ("cifar10", "cifar100"):
        return []
    root = dataset_root(info, data.root)
    if info.kind == "categories":
        return _categories_problems(root, classes)
    return _imagenet30_problems(root)


def format_problems(problems: Sequence[str], limit: int = MAX_LISTED) -> str:
    """One line naming the first ``limit`` problems and counting the rest.

    Example:
        >>> format_problems(["a.png: truncated", "b.png: truncated", "c.png: truncated"], limit=2)
        '3 problems with the data: a.png: truncated; b.png: truncated; and 1 more'
    """
    shown = "; ".join(problems[:limit])
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{len(problems)} problem{'s' * (len(problems) != 1)} with the data: {shown}{more}"


# -- fingerprint ----------------------------------------------------------------------


def _totals(paths: Iterable[Path]) -> dict[str, int]:
    files = nbytes = 0
    for p in paths:
        try:
            nbytes += p.stat().st_size
        except OSError:
            continue
        files += 1
    return {"files": files, "bytes": nbytes}


def _digits_file() -> Path | None:
    """scikit-learn's digits file, found without importing scikit-learn (slow to import)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"


def data_fingerprint(data: DataSpec, classes: Sequence[str]) -> dict[str, Any]:
    """Per class, the number and total size of the files its task reads (torch-free, by
    ``stat`` only), to record with an experiment and compare on ``--resume``.

    ``{"dataset": name, "classes": {class: {"files": n, "bytes": b}}}``. Every class of
    digits reads scikit-learn's one digits file and every class of CIFAR all the
    pickles, so their entries are those files (none when missing); an ImageNet-30 class
    counts its own train and test folders; a category its images and masks; toy-mvtec,
    generated from a seed, is named by its generator version.

    Example:
        >>> from raysearch.config.spec import DataSpec
        >>> data_fingerprint(DataSpec(dataset="toy-mvtec"), ["dots"])
        {'dataset': 'toy-mvtec', 'classes': {'dots': {'generator': 'toy-mvtec-v1'}}}
    """
    info = DATASETS[data.dataset]
    out: dict[str, dict[str, Any]] = {}
    if info.name == "toy-mvtec":
        from raysearch.data.toy import TOY_MVTEC_NAME

        out = {c: {"generator": TOY_MVTEC_NAME} for c in classes}
    elif info.name == "digits":
        path = _digits_file()
        out = {c: _totals([path] if path is not None else []) for c in classes}
    elif info.name in ("cifar10", "cifar100"):
        folder = "cifar-10-batches-py" if info.name == "cifar10" else "cifar-100-python"
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if info.name == "cifar10" else ["train", "test"]
        totals = _totals(Path(data.root).expanduser() / folder / n for n in names)
        out = {c: dict(totals) for c in classes}
    elif info.kind == "categories":
        root = dataset_root(info, data.root)
        for c in classes:
            out[c] = _totals(_category_files(root / c).every())
    else:  # imagenet30: the class's own folders
        root = dataset_root(info, data.root)
        for c in classes:
            bases = [root / s if (root / s).is_dir() else root / f"one_class_{s}" for s in ("train", "test")]
            out[c] = _totals(p for b in bases for p in images_in(b / c, recursive=True))
    return {"dataset": info.name, "classes": out}


def _change(key: str, new: Any, old: Any) -> str:
    if isinstance(new, int) and isinstance(old, int):
        return f"{new} {key} (was {old})"
    return f"{key} {new} (was {old})"


def fingerprint_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """How ``new`` differs from ``old`` (two :func:`data_fingerprint` results), one
    readable line per difference; empty when the data is the same.

    Example:
        >>> old = {"dataset": "folder", "classes": {"a": {"files": 3, "bytes": 30}, "b": {"files": 1, "bytes": 5}}}
        >>> new = {"dataset": "folder", "classes": {"a": {"files": 4, "bytes": 41}}}
        >>> fingerprint_changes(old, new)
        ['class a: 4 files (was 3)', 'class a: 41 bytes (was 30)', 'class b: not in the data now']
    """
    changes = []
    if old.get("dataset") != new.get("dataset"):
        changes.append(f"dataset: {new.get('dataset')} (was {old.get('dataset')})")
    before, after = old.get("classes") or {}, new.get("classes") or {}
    for c in [*before, *(c for c in after if c not in before)]:
        if c not in after:
            changes.append(f"class {c}: not in the data now")
        elif c not in before:
            changes.append(f"class {c}: new")
        else:
            a, b = before[c], after[c]
            for key in [*a, *(k for k in b if k not in a)]:
                if a.get(key) != b.get(key):
                    changes.append(f"class {c}: {_change(key, b.get(key), a.get(key))}")
    return changes
