"""Readers on small files written in the real formats; the one-class protocol; augmentations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers.datasets import write_cifar10, write_cifar100, write_mvtec
from PIL import Image

from raysearch.config.schema import SpecError
from raysearch.config.spec import DataSpec, SelectionSpec
from raysearch.data import DataNotFoundError, list_classes, load_task
from raysearch.data.augment import (
    color_jitter,
    random_grayscale,
    random_resized_crop,
    simclr_augment,
    to_float,
)
from raysearch.data.synthesis import cutpaste, scar, synthesize


def data_spec(**kw):
    return DataSpec(**kw)


def test_cifar10_reads_pickles_one_class(tmp_path):
    write_cifar10(tmp_path)
    data = data_spec(dataset="cifar10", root=str(tmp_path), classes=["bird"])
    assert list_classes(data) == ["2"]  # names map to indices
    task = load_task(data, SelectionSpec(anomalies="synthetic", holdout=0.34, min_normals=2, min_anomalies=2, synthesis=("blur",)), "2", seed=0)
    # 6 training images of class 2: 2 held out for validation, 4 to train on.
    assert task.train.shape == (4, 3, 32, 32) and task.train.dtype == torch.uint8
    assert (task.train[:, 0, 0, 0] == 40).all()  # only class 2 in training
    assert task.val.labels.tolist() == [0, 0, 1, 1] and task.val.masks.shape == (4, 32, 32)
    assert len(task.test) == 40 and int(task.test.labels.sum()) == 36  # 4 normal, 36 anomalous
    assert ((task.test.images[:, 0, 0, 0] == 40) == (task.test.labels == 0)).all()


def test_cifar_other_classes_validation_draws_from_training_only(tmp_path):
    write_cifar10(tmp_path)
    data = data_spec(dataset="cifar10", root=str(tmp_path), image_size=16)
    task = load_task(data, SelectionSpec(holdout=0.34, anomalies="other_classes", min_normals=2, min_anomalies=2), "5", seed=3)
    assert task.val.images.shape == (4, 3, 16, 16) and task.val.masks is None
    # The anomalies are training images of other classes, not test images.
    test_set = {bytes(x.numpy()) for x in task.test.images}
    assert not any(bytes(x.numpy()) in test_set for x in task.val.images[2:])


def test_cifar100_uses_superclasses(tmp_path):
    write_cifar100(tmp_path)
    data = data_spec(dataset="cifar100", root=str(tmp_path))
    assert len(list_classes(data)) == 20
    task = load_task(data, SelectionSpec(split="test"), "7", seed=0)
    assert len(task.train) == 10 and (task.train[:, 0, 0, 0] == 70).all()
    assert int((task.test.labels == 0).sum()) == 5
    assert task.val is task.test  # paper-style selection: no hold-out


def test_missing_cifar_names_the_expected_files(tmp_path):
    data = data_spec(dataset="cifar10", root=str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError) as info:
        load_task(data, SelectionSpec(), "0", seed=0)
    message = str(info.value)
    assert message.startswith("data.root:") and "cifar-10-batches-py" in message and "download" in message


@pytest.mark.parametrize("grayscale", [False, True])
def test_mvtec_folder_with_masks(tmp_path, grayscale):
    write_mvtec(tmp_path, grayscale=grayscale)
    data = data_spec(dataset="folder", root=str(tmp_path), image_size=32)
    assert list_classes(data) == ["widget"]
    task = load_task(data, SelectionSpec(holdout=0.25, min_normals=2), "widget", seed=0)
    assert task.train.shape == (9, 3, 32, 32)
    assert task.test.labels.tolist() == [1, 1, 1, 0, 0, 0]  # crack/ sorts before good/
    masks = task.test.masks
    assert masks.shape == (6, 32, 32) and masks.dtype == torch.uint8
    assert masks[:3, :16].all() and not masks[:3, 16:].any() and not masks[3:].any()


def test_folder_without_ground_truth_has_no_masks(tmp_path):
    write_mvtec(tmp_path, masks=False)
    task = load_task(data_spec(dataset="folder", root=str(tmp_path)), SelectionSpec(), "widget", seed=0)
    assert task.test.masks is None and len(task.test) == 6


def test_mvtec_finds_conventional_subfolder_and_reports_missing(tmp_path):
    write_mvtec(tmp_path / "mvtec_anomaly_detection", category="bottle")
    data = data_spec(dataset="mvtec", root=str(tmp_path), classes=["bottle"])
    task = load_task(data, SelectionSpec(), "bottle", seed=0)
    assert len(task.test) == 6
    with pytest.raises(DataNotFoundError, match="category folder .*carpet not found"):
        load_task(data, SelectionSpec(), "carpet", seed=0)
    with pytest.raises(SpecError, match="unknown class 'bottel'"):
        list_classes(data_spec(dataset="mvtec", classes=["bottel"]))


def test_digits_protocol_is_leakage_free_and_deterministic():
    data = data_spec(dataset="digits", max_train=40, max_test=50)
    selection = SelectionSpec(anomalies="synthetic", holdout=0.2, min_normals=2, min_anomalies=8, synthesis=("noise",))
    a = load_task(data, selection, "4", seed=0)
    b = load_task(data, selection, "4", seed=0)
    assert torch.equal(a.train, b.train) and torch.equal(a.val.images, b.val.images)
    assert len(a.train) == 32 and len(a.val) == 16 and int(a.val.labels.sum()) == 8
    # Held-out normals are not trained on, and nothing of the test set is in training.
    train = {bytes(x.numpy()) for x in a.train}
    assert not any(bytes(x.numpy()) in train for x in a.val.images[:8])
    assert not any(bytes(x.numpy()) in train for x in a.test.images)
    # max_test keeps the normal/anomaly ratio (about 1:9) with at least 2 normals.
    assert len(a.test) == 50 and 2 <= int((a.test.labels == 0).sum()) <= 8
    # The split depends on selection.seed alone: every training seed gets the same one.
    c = load_task(data, selection, "4", seed=1)
    assert torch.equal(a.train, c.train) and torch.equal(a.val.images, c.val.images)
    d = load_task(data, dataclasses.replace(selection, seed=1), "4", seed=0)
    assert not torch.equal(a.train, d.train)  # another selection seed, another hold-out


def test_too_few_images_for_holdout_is_a_spec_error():
    with pytest.raises(SpecError, match="too few to hold out"):
        load_task(data_spec(dataset="digits", max_train=4), SelectionSpec(holdout=0.8), "0", seed=0)


def test_toy_mvtec_is_builtin(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSEARCH_CACHE", str(tmp_path))
    data = data_spec(dataset="toy-mvtec", image_size=32, max_test=12)
    task = load_task(data, SelectionSpec(), "dots", seed=0)
    assert task.test.masks is not None
    anomalous = task.test.labels == 1
    assert task.test.masks[anomalous].flatten(1).any(1).all() and not task.test.masks[~anomalous].any()


# -- augmentations and synthesis ----------------------------------------------------


def test_full_crop_is_identity_and_small_crops_zoom():
    x = to_float(torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8))
    same = random_resized_crop(x, torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(same, x, atol=1e-5)
    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(3, 3, 16, 16).contiguous()
    zoom = random_resized_crop(ramp, torch.Generator().manual_seed(0), scale=(0.25, 0.25), ratio=(1.0, 1.0))
    span = zoom[..., -1] - zoom[..., 0]  # a quarter-area crop spans half the ramp
    assert torch.allclose(span, torch.full_like(span, 0.5), atol=0.08)


def test_jitter_and_grayscale_probabilities():
    x = torch.rand(400, 3, 4, 4)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(color_jitter(x, g, p=0.0), x)
    gray = random_grayscale(x, g, p=1.0)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    changed = (random_grayscale(x, g, p=0.2) != x).flatten(1).any(1).float().mean()
    assert 0.13 < float(changed) < 0.27
    out = simclr_augment(x, g)
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1


def test_cutpaste_and_scar_change_exactly_the_mask():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    src = torch.full_like(x, 255)
    for fn in (cutpaste, scar):
        out, m = fn(x, g, source=src, jitter=0.0)
        assert m.dtype == torch.uint8 and m.shape == (8, 32, 32)
        assert m.flatten(1).sum(1).min() > 0  # every image got a region
        assert torch.equal(out[:, 0] == 255, m.bool())
    area = cutpaste(x, g, source=src, jitter=0.0, area=(0.1, 0.1), aspect=(1.0, 1.0))[1].flatten(1).float().mean(1)
    assert torch.allclose(area, torch.full_like(area, 0.1), atol=0.04)


def test_synthesize_mixes_kinds_and_changes_pixels():
    x = torch.randint(0, 256, (6, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    out, masks = synthesize(x, torch.Generator().manual_seed(0), kinds=("cutpaste", "scar", "perlin"))
    assert masks.flatten(1).any(1).all()
    outside = ~masks.bool().unsqueeze(1).expand_as(x)
    assert torch.equal(out[outside], x[outside])  # nothing changes outside the masks
    assert (out != x).flatten(1).any(1).all()


def test_other_categories_are_the_other_classes_family_of_a_folder(tmp_path):
    write_mvtec(tmp_path, "widget")
    write_mvtec(tmp_path, "gadget")
    for path in (tmp_path / "gadget" / "train" / "good").iterdir():  # the other category: dark images
        Image.fromarray(np.full((40, 40, 3), 30, np.uint8)).save(path)
    data = data_spec(dataset="folder", root=str(tmp_path), image_size=16)
    selection = SelectionSpec(holdout=0.25, anomalies="both", synthesis=("blur",), min_normals=2, min_anomalies=3)
    task = load_task(data, selection, "widget", seed=0)
    assert task.val.family_names == ("blur", "other_classes")
    others = task.val.images[task.val.family == 1]
    assert len(others) == 3 and int(others.float().mean()) < 40  # gadget's training images, not widget's
    assert task.val.masks is None  # other-category anomalies have no masks, so no pixel metrics
    # A folder of one category has no other category to draw from: one message naming the fix.
    alone = data_spec(dataset="folder", root=str(tmp_path / "gadget-only"), image_size=16)
    write_mvtec(tmp_path / "gadget-only", "gadget")
    with pytest.raises(SpecError, match="selection.anomalies: folder has no other classes .* use anomalies: synthetic"):
        load_task(alone, selection, "gadget", seed=0)


def test_a_single_category_folder_is_refused_other_classes_before_any_worker(tmp_path):
    from raysearch.data import check_other_categories

    write_mvtec(tmp_path, "widget")
    data = data_spec(dataset="folder", root=str(tmp_path))
    check_other_categories(data, "synthetic")  # nothing to check
    with pytest.raises(SpecError, match=r"selection.anomalies: .* holds 1 category; other_classes .* use anomalies: synthetic"):
        check_other_categories(data, "both")
    write_mvtec(tmp_path, "gadget")
    check_other_categories(data, "other_classes")
