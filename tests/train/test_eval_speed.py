"""What each evaluation computes, and the CPUs and threads a worker holds.

Per evaluation the validation pass bins the pixel AUROC on the device and computes
AUPRO only when the selection metric or a search objective reads it; the final
evaluation of a class keeps every metric, exact. A run whose best epoch is its last does
not score the validation split twice. ``train.cpus_per_worker`` null holds 1 CPU, or in
``raysearch train`` of a CPU run the free CPUs; ``train.threads`` null follows the CPUs.
"""

from __future__ import annotations

import math

import pytest
from helpers.specs import demo_spec
from helpers.tiny import SMALL

from raysearch.config import registry
from raysearch.config.spec import SpecError, TrainSpec, load_spec
from raysearch.data import load_task
from raysearch.train.loop import aupro_each_evaluation, train_class

CLFLOW = demo_spec("clflow")
# A few dozen 32 px toy-mvtec images, a narrow CNN and a 2-step flow: seconds per run.
TOY = [*SMALL, "data.classes=[stripes]", "params.backbone.width=8", "params.flow.steps=2",
       "data.max_train=32", "data.max_test=16"]


def counted(method_cls: type, calls: list[int]) -> type:
    """``method_cls`` recording the number of images of every ``score_batched`` call."""

    class Counted(method_cls):  # type: ignore[misc, valid-type]
        def score_batched(self, model, images, batch_size):
            calls.append(len(images))
            return super().score_batched(model, images, batch_size)

    return Counted


def run(extra=(), **kwargs):
    spec = load_spec(CLFLOW, [*TOY, *extra])
    task = load_task(spec.data, spec.selection, spec.classes()[0], spec.train.seed)
    calls: list[int] = []
    reports: list[dict] = []
    result = train_class(spec, task, counted(registry.method_class(spec.method), calls),
                         report=lambda m, state: reports.append(m), **kwargs)
    return result, reports, calls, task


def test_aupro_is_computed_per_evaluation_only_when_read():
    base = load_spec(CLFLOW)
    assert not aupro_each_evaluation(base)
    assert aupro_each_evaluation(load_spec(CLFLOW, ["selection.metric=val_aupro"]))
    assert aupro_each_evaluation(load_spec(CLFLOW, ["search.metric=[val_image_auroc, val_aupro]"]))
    assert not aupro_each_evaluation(load_spec(CLFLOW, ["selection.metric=val_pixel_auroc"]))


def test_evaluations_bin_the_pixel_auroc_and_the_final_one_keeps_every_metric(one_thread):
    result, reports, _, _ = run(["train.epochs=3"])
    assert len(reports) == 2  # epochs 1 and 2; the last evaluation is the class's end
    for m in reports:
        assert math.isfinite(m["val_pixel_auroc"]) and "val_aupro" not in m
    for key in ("val_pixel_auroc", "val_aupro", "test_pixel_auroc", "test_aupro", "test_image_auroc"):
        assert math.isfinite(result.metrics[key]), key


def test_aupro_is_in_every_report_when_it_selects(one_thread):
    result, reports, _, _ = run(["train.epochs=2", "selection.metric=val_aupro"])
    assert reports and all(math.isfinite(m["val_aupro"]) for m in reports)
    assert math.isfinite(result.metrics["val_aupro"])


def test_one_evaluation_scores_the_validation_split_once(one_thread):
    """Best epoch = last epoch: the final pass reuses the last evaluation's scores (exact metrics)."""
    result, _, calls, task = run(["train.epochs=2", "train.eval_every=2"])
    n_val, n_test = len(task.val.labels), len(task.test.labels)
    assert n_val != n_test
    assert calls.count(n_val) == 1 and calls.count(n_test) == 1
    assert result.best_epoch == 2 and math.isfinite(result.metrics["val_aupro"])


def test_an_earlier_best_epoch_is_scored_again_from_its_state(one_thread, monkeypatch):
    """When the best epoch is not the last, the final pass restores it and scores the split again."""
    import raysearch.train.loop as loop

    values = iter([0.9, 0.1])  # epoch 1 wins the selection
    real = loop._evaluate_split

    def fake(method, model, split, prefix, *args, **kwargs):
        out = real(method, model, split, prefix, *args, **kwargs)
        if kwargs.get("fast"):
            out["val_image_auroc"] = next(values)
        return out

    monkeypatch.setattr(loop, "_evaluate_split", fake)
    result, _, calls, task = run(["train.epochs=2"])
    assert result.best_epoch == 1
    assert calls.count(len(task.val.labels)) == 3  # two evaluations and the final pass


def test_worker_cpus_and_threads():
    assert TrainSpec().worker_cpus() == 1.0  # tune and ablate trials: one CPU, one thread each
    assert TrainSpec().worker_threads(TrainSpec().worker_cpus()) == 1
    assert TrainSpec().worker_cpus(free_cpus=16) == 16.0  # raysearch train of a CPU run
    assert TrainSpec(workers=4).worker_cpus(free_cpus=6) == 1.0
    assert TrainSpec(workers=8).worker_cpus(free_cpus=6) == 1.0  # never 0
    assert TrainSpec(gpus_per_worker=1).worker_cpus(free_cpus=16) == 1.0  # a GPU run keeps 1
    assert TrainSpec(cpus_per_worker=3).worker_cpus(free_cpus=16) == 3.0  # the user's value wins
    assert TrainSpec(cpus_per_worker=2.5).worker_threads(2.5) == 2
    assert TrainSpec(cpus_per_worker=2, threads=1).worker_threads(2) == 1


@pytest.mark.parametrize(("key", "value"), [("threads", 0), ("cpus_per_worker", 0), ("cpus_per_worker", -1)])
def test_bad_cpu_values_are_refused_with_their_key(key, value):
    with pytest.raises(SpecError, match=f"train.{key}"):
        load_spec(CLFLOW, [f"train.{key}={value}"])


def test_train_holds_the_free_cpus_of_a_local_ray(monkeypatch):
    import ray

    from raysearch.run.runner import train_cpus

    monkeypatch.setattr(ray, "available_resources", lambda: {"CPU": 6.0})
    assert train_cpus(load_spec(CLFLOW), local=True) == 6.0
    assert train_cpus(load_spec(CLFLOW), local=False) == 1.0
    assert train_cpus(load_spec(CLFLOW, ["train.cpus_per_worker=2"]), local=True) == 2.0
    assert train_cpus(load_spec(CLFLOW, ["train.workers=2"]), local=True) == 3.0
