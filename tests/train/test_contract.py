"""Contract tests: the same checks over every registered method (add a method, get these)."""

import dataclasses
import math

import pytest
import torch
from helpers.training import SIZE, tiny_spec, tiny_task

from raysearch.config import registry
from raysearch.config.schema import flatten
from raysearch.methods.base import DataInfo, Method, Scores
from raysearch.train.loop import train_class

METHODS = registry.method_names()


@pytest.mark.parametrize("method", METHODS)
def test_params_have_defaults_and_are_frozen(method):
    params = registry.params_class(method)()
    flat = flatten(params)
    assert flat and all(v is not None or k.endswith("dir") for k, v in flat.items())
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.__setattr__(next(iter(dataclasses.asdict(params))), 0)


@pytest.mark.parametrize("method", METHODS)
def test_method_class_matches_registry(method):
    cls = registry.method_class(method)
    assert issubclass(cls, Method) and cls.name == method
    assert cls.Params is registry.params_class(method)


@pytest.mark.parametrize("method", METHODS)
def test_hooks_shapes_and_determinism(method):
    spec = tiny_spec(method)
    cls = registry.method_class(method)
    task = tiny_task(with_masks=True)
    info = DataInfo(3, SIZE, len(task.train), True)

    def run():
        torch.manual_seed(0)
        m = cls(spec.params, info, torch.device("cpu"), seed=0)
        model = m.build()
        model.train()
        losses = m.training_step(model, task.train[:8], 0)
        assert "loss" in losses and losses["loss"].dim() == 0 and math.isfinite(float(losses["loss"]))
        losses["loss"].backward()
        assert any(p.grad is not None for p in m.trainable_parameters(model))
        m.fit_scorer(model, task.train)
        s = m.score(model, task.test.images)
        assert isinstance(s, Scores) and s.image.shape == (len(task.test),)
        assert torch.isfinite(s.image).all()
        if s.maps is not None:
            assert s.maps.shape == (len(task.test), SIZE, SIZE)
        assert m.count_parameters(model) > 0
        return float(losses["loss"]), s.image

    (l1, s1), (l2, s2) = run(), run()
    assert l1 == pytest.approx(l2, rel=1e-5) and torch.allclose(s1, s2, atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_train_class_reports_and_selects(method):
    spec = tiny_spec(method)
    reports = []
    result = train_class(spec, tiny_task(with_masks=True), registry.method_class(method),
                         report=lambda m, s: reports.append((m, s)))
    assert [m["epoch"] for m, _ in reports] == [1]  # the last evaluation is the caller's class-end report
    assert all(s is not None and "model" in s for _, s in reports)
    for key in ("val_image_auroc", "test_image_auroc", "val_image_f1_max"):
        assert 0.0 <= result.metrics[key] <= 1.0
    assert result.best_epoch in (1, 2) and result.latency_ms > 0
    assert set(result.states) == {"best", "last"}
