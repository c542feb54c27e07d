"""Bad data fails early: every broken file, orphan or misfit mask and missing mask is
listed with its path in one error before Ray starts; image checks are cached; the data
fingerprint changes with the files."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from helpers.datasets import write_cifar10, write_mvtec
from PIL import Image

from raysearch.cli import main
from raysearch.config.spec import DataSpec
from raysearch.data import DataNotFoundError, check_data
from raysearch.data.checks import (
    ImageCheck,
    cache_dir,
    data_fingerprint,
    fingerprint_changes,
    format_problems,
    inspect_image,
)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A fresh cache folder per test (the XDG one: RAYSEARCH_CACHE would come first)."""
    monkeypatch.delenv("RAYSEARCH_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "raysearch"


@pytest.fixture
def opened(monkeypatch):
    """Paths that PIL opened, in order (checks go through ``PIL.Image.open``)."""
    calls = []
    real = Image.open

    def counting(fp, *args, **kwargs):
        calls.append(getattr(fp, "name", fp))
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting)
    return calls


def _data(root, **kw):
    return DataSpec(dataset="folder", root=str(root), **kw)


def _problems(root, **kw) -> str:
    with pytest.raises(DataNotFoundError) as info:
        check_data(_data(root, **kw))
    message = str(info.value)
    assert "\n" not in message and message.startswith("data.root: ")
    return message


def _image_bytes(fmt, size=(48, 48)):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


# -- what catches a truncated file ------------------------------------------------------
def test_verify_alone_misses_truncated_jpegs_and_png_end_chunks(tmp_path):
    """Why inspect_image decodes JPEGs and reads a PNG's tail: Pillow's verify() passes both."""
    jpeg, png = _image_bytes("JPEG"), _image_bytes("PNG")
    for data in (jpeg[: len(jpeg) // 2], png[:-2]):
        with Image.open(io.BytesIO(data)) as img:
            img.verify()  # no error
    (tmp_path / "half.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "cut.png").write_bytes(png[:-2])
    (tmp_path / "middle.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "text.png").write_bytes(b"not an image at all")
    (tmp_path / "whole.jpg").write_bytes(jpeg)
    assert inspect_image(tmp_path / "half.jpg").error.startswith("truncated or corrupt (image file is truncated")
    assert inspect_image(tmp_path / "cut.png").error == "truncated: the PNG end chunk (IEND) is missing"
    assert inspect_image(tmp_path / "middle.png").error.startswith("truncated or corrupt")
    assert inspect_image(tmp_path / "text.png").error.startswith("not a readable image")
    (tmp_path / "header.jpg").write_bytes(jpeg[:100])  # cut before the image size
    assert inspect_image(tmp_path / "header.jpg") == inspect_image(tmp_path / "text.png")
    assert inspect_image(tmp_path / "whole.jpg").error is None
    assert inspect_image(tmp_path / "whole.jpg").size == (48, 48)


def test_truncated_png_and_jpeg_are_named_in_one_error(tmp_path):
    write_mvtec(tmp_path, category="widget")
    write_mvtec(tmp_path, category="gadget")
    png = tmp_path / "widget" / "train" / "good" / "004.png"
    png.write_bytes(png.read_bytes()[:100])
    jpeg = tmp_path / "gadget" / "test" / "good" / "007.jpg"
    whole = _image_bytes("JPEG", (40, 40))
    jpeg.write_bytes(whole[: len(whole) // 2])
    message = _problems(tmp_path)
    assert message.startswith("data.root: 2 problems with the data: ")
    assert f"{png}: truncated or corrupt" in message and f"{jpeg}: truncated or corrupt" in message
    # The classes a spec runs, only: gadget's file is not named.
    with pytest.raises(DataNotFoundError, match="1 problem with the data: .*004.png"):
        check_data(_data(tmp_path, classes=["widget"]))


# -- masks ------------------------------------------------------------------------------
def test_a_mask_of_another_size_is_named_with_both_sizes(tmp_path):
    write_mvtec(tmp_path, size=40)
    mask = tmp_path / "widget" / "ground_truth" / "crack" / "001_mask.png"
    Image.new("L", (32, 40)).save(mask)
    message = _problems(tmp_path)
    image = tmp_path / "widget" / "test" / "crack" / "001.png"
    assert f"{mask}: mask is 32x40 pixels, its image {image} is 40x40" in message
    assert "1 problem with" in message


def test_a_mask_without_an_image_is_named(tmp_path):
    write_mvtec(tmp_path)
    orphan = tmp_path / "widget" / "ground_truth" / "crack" / "010_mask.png"
    Image.new("L", (40, 40)).save(orphan)  # no test/crack/010.png (and 001's mask is no prefix match)
    gone = tmp_path / "widget" / "ground_truth" / "scratch"
    gone.mkdir()
    Image.new("L", (40, 40)).save(gone / "000_mask.png")  # a defect with masks and no test images
    message = _problems(tmp_path)
    assert f"{orphan}: a mask without an image in {tmp_path / 'widget' / 'test' / 'crack'}" in message
    assert f"{gone}: 1 masks but no folder {tmp_path / 'widget' / 'test' / 'scratch'} of images" in message
    assert "2 problems" in message


def test_a_defect_image_without_a_mask_fails_only_where_ground_truth_exists(tmp_path):
    write_mvtec(tmp_path, category="masked")
    write_mvtec(tmp_path, category="unmasked", masks=False)
    (tmp_path / "masked" / "ground_truth" / "crack" / "002_mask.png").unlink()
    (tmp_path / "masked" / "test" / "hole").mkdir()  # a defect without a ground_truth/hole folder
    Image.new("RGB", (40, 40)).save(tmp_path / "masked" / "test" / "hole" / "000.png")
    message = _problems(tmp_path)
    image = tmp_path / "masked" / "test" / "crack" / "002.png"
    assert f"{image}: no mask in {tmp_path / 'masked' / 'ground_truth' / 'crack'} (expected 002_mask.png" in message
    hole = tmp_path / "masked" / "test" / "hole"
    assert f"{hole}: no mask folder {tmp_path / 'masked' / 'ground_truth' / 'hole'} for its 1 images" in message
    assert "unmasked" not in message and "2 problems" in message
    assert check_data(_data(tmp_path, classes=["unmasked"])) == ["unmasked"]


# -- one error, capped, exit 2 before Ray ---------------------------------------------------
def test_many_problems_are_capped_and_counted(tmp_path):
    write_mvtec(tmp_path)
    train = sorted((tmp_path / "widget" / "train" / "good").iterdir())
    for path in train:  # 12 broken training images
        path.write_bytes(b"\x89PNG\r\n\x1a\n")
    message = _problems(tmp_path)
    assert message.startswith("data.root: 12 problems with the data: ")
    assert message.endswith("; and 2 more")
    assert str(train[0]) in message and str(train[-1]) not in message
    assert format_problems(["x: bad"]) == "1 problem with the data: x: bad"


def test_the_cli_exits_2_with_the_list_before_ray_starts(tmp_path, monkeypatch, capsys):
    import raysearch.run.runner

    write_mvtec(tmp_path)
    broken = tmp_path / "widget" / "test" / "crack" / "000.png"
    broken.write_bytes(broken.read_bytes()[:-3])
    started = []
    monkeypatch.setattr(raysearch.run.runner, "run_train", lambda *a, **k: started.append(1) or (0, None))
    code = main(["train", "search_spaces/demo/cutswap.yaml", "--set", "data.dataset=folder",
                 "--set", f"data.root={tmp_path}", "--set", "data.classes=[widget]", "--output", str(tmp_path / "out")])
    assert code == 2 and not started
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raysearch: error: search_spaces/demo/cutswap.yaml: data.root: ")
    assert f"{broken}: truncated: the PNG end chunk (IEND) is missing" in err[0]


# -- the cache ----------------------------------------------------------------------------
def test_a_second_check_opens_no_image_and_the_cache_is_outside_the_data(tmp_path, cache, opened):
    data_root = tmp_path / "data"
    write_mvtec(data_root)
    assert check_data(_data(data_root)) == ["widget"]
    assert len(opened) == 12 + 6 + 3  # train, test good + crack, masks: each opened once
    (cache_file,) = (cache / "data-checks").iterdir()
    entries = json.loads(cache_file.read_text())["files"]
    assert len(entries) == 21 and entries["widget/ground_truth/crack/000_mask.png"][2:] == [40, 40, None]
    assert not any(p.name.endswith(".json") for p in data_root.rglob("*"))
    opened.clear()
    assert check_data(_data(data_root)) == ["widget"]
    assert opened == []
    assert cache_dir() == cache


def test_a_changed_file_is_checked_again(tmp_path, opened):
    write_mvtec(tmp_path)
    check_data(_data(tmp_path))
    opened.clear()
    path = tmp_path / "widget" / "test" / "good" / "001.png"
    path.write_bytes(path.read_bytes()[:-2])  # another size
    with pytest.raises(DataNotFoundError, match=f"{path}: truncated"):
        check_data(_data(tmp_path))
    assert [os.path.basename(p) for p in opened] == ["001.png"]
    opened.clear()
    Image.new("RGB", (40, 40), (9, 9, 9)).save(path)
    good = path.read_bytes()
    path.write_bytes(good)
    os.utime(path, ns=(1, 1))  # the same bytes, another modification time
    assert check_data(_data(tmp_path)) == ["widget"]
    assert [os.path.basename(p) for p in opened] == ["001.png"]


def test_a_broken_file_stays_reported_from_the_cache(tmp_path, opened):
    write_mvtec(tmp_path)
    mask = tmp_path / "widget" / "ground_truth" / "crack" / "000_mask.png"
    mask.write_bytes(mask.read_bytes()[:50])
    first = _problems(tmp_path)
    opened.clear()
    assert _problems(tmp_path) == first and opened == []


def test_a_corrupt_or_unwritable_cache_is_ignored(tmp_path, cache, monkeypatch, opened):
    write_mvtec(tmp_path / "data")
    check_data(_data(tmp_path / "data"))
    (cache_file,) = (cache / "data-checks").iterdir()
    for garbage in ("{not json", '{"version": 1, "files": {"widget/train/good/000.png": [1, 2]}}', "[]"):
        cache_file.write_text(garbage)
        opened.clear()
        assert check_data(_data(tmp_path / "data")) == ["widget"] and len(opened) == 21
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert check_data(_data(tmp_path / "data")) == ["widget"]
    bad = tmp_path / "data" / "widget" / "train" / "good" / "003.png"
    bad.write_bytes(b"")
    with pytest.raises(DataNotFoundError, match=f"{bad}: not a readable image"):
        check_data(_data(tmp_path / "data"))


def test_cache_files_unused_for_a_month_are_deleted(tmp_path, cache):
    folder = cache / "data-checks"
    folder.mkdir(parents=True)
    old, recent = folder / "0000000000000000.json", folder / "1111111111111111.json"
    for path in (old, recent):
        path.write_text("{}")
    os.utime(old, (0, 0))
    write_mvtec(tmp_path / "data")
    check_data(_data(tmp_path / "data"))
    assert not old.exists() and recent.exists() and len(list(folder.iterdir())) == 2


def test_checking_one_class_keeps_the_cache_of_the_others(tmp_path, opened):
    for category in ("a", "b"):
        write_mvtec(tmp_path, category=category)
    check_data(_data(tmp_path))
    check_data(_data(tmp_path, classes=["a"]))
    (tmp_path / "a" / "train" / "good" / "011.png").unlink()  # a stale entry of a checked folder
    check_data(_data(tmp_path, classes=["a"]))
    opened.clear()
    assert check_data(_data(tmp_path)) == ["a", "b"] and opened == []


# -- fingerprint --------------------------------------------------------------------------
def test_fingerprint_is_stable_and_names_the_class_that_changed(tmp_path):
    for category in ("bottle", "cable"):
        write_mvtec(tmp_path, category=category)
    data = _data(tmp_path)
    first = data_fingerprint(data, ["bottle", "cable"])
    assert first == data_fingerprint(data, ["bottle", "cable"])
    files = [p for p in (tmp_path / "bottle").rglob("*.png")]
    assert first["classes"]["bottle"] == {"files": 21, "bytes": sum(p.stat().st_size for p in files)}
    assert json.loads(json.dumps(first)) == first  # goes into spec.yaml as it is
    extra = tmp_path / "bottle" / "train" / "good" / "100.png"
    Image.new("RGB", (40, 40)).save(extra)
    second = data_fingerprint(data, ["bottle", "cable"])
    assert fingerprint_changes(first, second) == [
        "class bottle: 22 files (was 21)",
        f"class bottle: {first['classes']['bottle']['bytes'] + extra.stat().st_size} bytes "
        f"(was {first['classes']['bottle']['bytes']})",
    ]
    assert fingerprint_changes(first, first) == []
    assert fingerprint_changes(first, data_fingerprint(data, ["cable"])) == ["class bottle: not in the data now"]


def test_fingerprint_of_builtin_and_pickled_datasets(tmp_path):
    digits = data_fingerprint(DataSpec(dataset="digits"), ["0", "1"])
    assert digits["classes"]["0"]["files"] == 1 and digits["classes"]["0"]["bytes"] > 10_000
    assert digits == data_fingerprint(DataSpec(dataset="digits"), ["0", "1"])
    toy = data_fingerprint(DataSpec(dataset="toy-mvtec"), ["dots"])
    assert toy == {"dataset": "toy-mvtec", "classes": {"dots": {"generator": "toy-mvtec-v1"}}}
    write_cifar10(tmp_path)
    data = DataSpec(dataset="cifar10", root=str(tmp_path))
    before = data_fingerprint(data, ["2"])
    pickles = sorted((tmp_path / "cifar-10-batches-py").iterdir())
    assert before["classes"]["2"] == {"files": 6, "bytes": sum(p.stat().st_size for p in pickles)}
    with open(pickles[0], "ab") as f:
        f.write(b"\0" * 10)
    assert fingerprint_changes(before, data_fingerprint(data, ["2"])) == [
        f"class 2: {before['classes']['2']['bytes'] + 10} bytes (was {before['classes']['2']['bytes']})"
    ]


def test_a_large_image_is_checked_without_pillows_bomb_warning_and_a_huge_one_is_named(tmp_path, monkeypatch):
    """Past Image.MAX_IMAGE_PIXELS Pillow warns (the image is read and resized like any
    other: no warning reaches the console); past twice that it refuses, and the check
    names the image. The limit is lowered here so that the images stay small."""
    import warnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    large, huge = tmp_path / "large.png", tmp_path / "huge.png"
    Image.new("RGB", (12, 12)).save(large)  # 144 pixels: Pillow's warning zone (100..200)
    Image.new("RGB", (15, 15)).save(huge)  # 225 pixels: over twice the limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert inspect_image(large) == ImageCheck((12, 12))
        assert inspect_image(huge).error.startswith("too many pixels for Pillow")
