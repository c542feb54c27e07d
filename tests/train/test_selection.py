"""Validation families held out from training, per-family metrics, epoch selection, progress."""

from __future__ import annotations

import dataclasses
import math

import torch
from helpers.training import tiny_spec, tiny_task

from raysearch.config import registry
from raysearch.config.selection import trained_families
from raysearch.config.spec import DataSpec, SelectionSpec, load_spec, spec_from_dict
from raysearch.data import load_task
from raysearch.train import loop

DEMO = "search_spaces/demo/{}.yaml"


# -- which families a spec may validate on -------------------------------------------
def test_each_method_declares_what_it_trains_on():
    cutswap = registry.params_class("cutswap")()
    assert trained_families(spec_from_dict({"name": "a", "method": "distcon"})) == frozenset()
    assert cutswap.trained_families() == {"patchswap", "cutpaste"}  # swap + three-way third class
    clflow = registry.params_class("clflow")()
    assert clflow.trained_families() == {"perlin"}
    plain = dataclasses.replace(clflow, mode="plain_fastflow")
    assert plain.trained_families() == frozenset()


def test_selection_metric_follows_the_search_objective():
    assert load_spec(DEMO.format("cutswap"), ["search.metric=val_image_auroc"]).selection.metric == "val_image_auroc"
    spec = load_spec(DEMO.format("cutswap"), ["search.metric=val_pixel_auroc"])
    assert spec.selection.metric == "val_pixel_auroc" and loop.selection_metric(spec) == "val_pixel_auroc"
    # A non-validation objective (latency) leaves the epoch to val_image_auroc.
    assert load_spec(DEMO.format("cutswap"), ["search.metric=latency_ms"]).selection.metric == "val_image_auroc"
    blur = load_spec(DEMO.format("cutswap"), ["selection.metric=val_image_auroc_blur"])
    assert blur.selection.metric == "val_image_auroc_blur"


# -- the validation split -------------------------------------------------------------
def test_validation_split_has_every_family_at_its_size_and_is_fixed_by_selection_seed():
    data = DataSpec(dataset="digits", max_train=60, max_test=20)
    selection = SelectionSpec(min_normals=10, min_anomalies=12, synthesis=("blur", "noise"), anomalies="both")
    task = load_task(data, selection, "3", seed=0)
    val = task.val
    assert val.family_names == ("blur", "noise", "other_classes")
    counts = {j: int((val.family == j).sum()) for j in (-1, 0, 1, 2)}
    assert counts == {-1: 10, 0: 12, 1: 12, 2: 12}  # 10 held-out normals (the floor), 12 per family
    assert torch.equal(val.labels, (val.family >= 0).long()) and val.masks is None  # other classes have no masks
    # Adding a family leaves the others' anomalies as they were.
    alone = load_task(data, dataclasses.replace(selection, synthesis=("noise",), anomalies="synthetic"), "3", seed=0)
    assert torch.equal(alone.val.images[alone.val.family == 0], val.images[val.family == 1])
    # train.seed changes nothing; selection.seed changes the hold-out and the synthesis.
    assert torch.equal(load_task(data, selection, "3", seed=5).val.images, val.images)
    other = load_task(data, dataclasses.replace(selection, seed=1), "3", seed=0)
    assert not torch.equal(other.val.images, val.images)


def test_synthetic_validation_has_masks_and_the_floor_never_takes_half():
    data = DataSpec(dataset="digits", max_train=12)
    task = load_task(data, SelectionSpec(anomalies="synthetic", min_normals=20, min_anomalies=3, synthesis=("elastic",)), "1", seed=0)
    assert int((task.val.family == -1).sum()) == 6 and len(task.train) == 6  # floor capped at half
    anomalies = task.val.family == 0
    assert int(anomalies.sum()) == 6  # at least as many anomalies as normals
    assert task.val.masks[anomalies].flatten(1).any(1).all() and not task.val.masks[~anomalies].any()


# -- epoch selection --------------------------------------------------------------------
def _selected_epoch(monkeypatch, values, **selection) -> int:
    """The best epoch that train_class picks when validation gives ``values`` epoch by epoch."""
    seq = iter(values)
    real = loop._evaluate_split

    def fake(method, model, split, prefix, batch_size, keep=None, **options):
        out = real(method, model, split, prefix, batch_size, keep, **options)
        if prefix == "val_":
            v = next(seq, float("nan"))
            out.update(val_image_auroc=v, val_image_auroc_blur=1 - v if math.isfinite(v) else v)
        return out

    monkeypatch.setattr(loop, "_evaluate_split", fake)
    spec = tiny_spec("distcon", epochs=len(values))
    if selection:
        spec = dataclasses.replace(spec, selection=dataclasses.replace(spec.selection, **selection))
    return train_and_pick(spec)


def train_and_pick(spec) -> int:
    return loop.train_class(spec, tiny_task(with_masks=False), registry.method_class("distcon")).best_epoch


def test_ties_go_to_the_later_epoch(monkeypatch):
    assert _selected_epoch(monkeypatch, [0.5, 0.5, 0.5]) == 3
    assert _selected_epoch(monkeypatch, [0.5, 0.7, 0.7, 0.6]) == 3


def test_a_nan_first_evaluation_does_not_block_later_ones(monkeypatch):
    assert _selected_epoch(monkeypatch, [float("nan"), 0.6, 0.4]) == 2


def test_the_selection_metric_picks_the_epoch(monkeypatch):
    # val_image_auroc_blur is 1 - val_image_auroc in the fake: its best epoch is the worst of the other.
    assert _selected_epoch(monkeypatch, [0.9, 0.5, 0.7], metric="val_image_auroc_blur") == 2


# -- progress and method facts -------------------------------------------------------------
def test_progress_is_counted_in_classes():
    spec = tiny_spec("distcon", epochs=4)
    reports = []
    loop.train_class(spec, tiny_task(with_masks=False), registry.method_class("distcon"),
                     report=lambda m, s: reports.append(m["progress"]), class_offset=1)
    assert reports == [1.25, 1.5, 1.75]  # the class's end (2.0) is the caller's report


def test_flipped_rotation_sets_turn_the_view_flip_off(monkeypatch):
    from raysearch.methods.distcon import method as distcon_method

    seen = []
    real = distcon_method.simclr_augment
    monkeypatch.setattr(distcon_method, "simclr_augment", lambda *a, **k: seen.append(k["flip"]) or real(*a, **k))
    for rotations, flip in (("0-90-180-270", True), ("0-180-hflip", False)):
        spec = tiny_spec("distcon")
        spec = spec.with_overrides({"params.rotations": rotations})
        method = registry.method_class("distcon")(spec.params, _info(), "cpu", seed=0)
        model = method.build()
        method.training_step(model, tiny_task(with_masks=False).train[:4], 0)
        assert seen[-1] is flip
        assert ("view_flip" in method.describe()) is (not flip)


def _info():
    from raysearch.methods.base import DataInfo

    return DataInfo(channels=3, image_size=32, num_train=24, has_masks=False)


def test_clflow_notes_a_random_fallback_of_auto_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch cache
    cls = registry.method_class("clflow")
    params = registry.params_class("clflow")()
    notes = cls.notes(dataclasses.replace(params, backbone=dataclasses.replace(params.backbone, weights="auto")),
                      {"params.backbone.name": ["resnet18", "wide_resnet50_2"]})
    assert len(notes) == 1 and "resnet18, wide_resnet50_2" in notes[0] and "RANDOM" in notes[0]
    assert cls.notes(params, {}) == [] or params.backbone.weights != "random"
    random_weights = dataclasses.replace(params, backbone=dataclasses.replace(params.backbone, weights="random"))
    assert cls.notes(random_weights, {}) == []


def test_dry_run_says_what_the_validation_split_holds():
    import io

    from raysearch.run.tuning import dry_run

    out = io.StringIO()
    dry_run(load_spec(DEMO.format("cutswap")), out)
    line = next(ln for ln in out.getvalue().splitlines() if ln.startswith("validation:"))
    assert line == ("validation: scar, perlin, elastic, blur, noise (100 per family) against >= 20 held-out normals "
                    "(selection.seed 0); the epoch is picked by val_image_auroc; configurations train on cutpaste, "
                    "patchswap")
