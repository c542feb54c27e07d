"""Speed options change how a step runs, never what it computes.

``train.compile`` (torch.compile with the ``eager`` backend here: graph capture without
code generation, so it runs on any CPU), ``train.channels_last`` and
``train.data_on_device`` are each checked against the default run of the same spec on a
few dozen digits: the same losses and metrics, bitwise where the kernels are the same
(one thread on CPU), within a tolerance where the memory layout changes the order of
the sums. Checkpoints hold the plain module's state, so compiled and plain runs resume
each other.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from helpers.tiny import SMALL

from raysearch.config import registry
from raysearch.config.spec import SpecError, load_spec, spec_from_dict
from raysearch.data import load_task
from raysearch.train.loop import _batch, _data_on_device, train_class

COMPILE = ["train.compile=true", "train.compile_backend=eager"]


def run(demo_spec_path, extra=(), **kwargs):
    spec = load_spec(demo_spec_path, [*SMALL, "train.epochs=3", *extra])
    task = load_task(spec.data, spec.selection, spec.classes()[0], spec.train.seed)
    return train_class(spec, task, registry.method_class(spec.method), **kwargs)


def same_numbers(a: dict, b: dict, rel: float = 0.0) -> bool:
    assert set(a) == set(b)
    return all(
        (isinstance(x, float) and math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=rel, abs=rel)
        for x, y in ((a[k], b[k]) for k in a)
    )


def checkpoint_roundtrip(state: dict) -> dict:
    """A resumable state through torch.save / torch.load(weights_only=True), as a Ray checkpoint."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return torch.load(io.BytesIO(buf.getvalue()), map_location="cpu", weights_only=True)


def test_compiled_run_equals_eager_run(demo_spec_path, one_thread, monkeypatch):
    torch._dynamo.reset()
    compiled_with: list[str] = []
    real_compile = torch.compile

    def recording_compile(model, **kwargs):
        compiled_with.append(kwargs["backend"])
        return real_compile(model, **kwargs)

    monkeypatch.setattr(torch, "compile", recording_compile)
    plain = run(demo_spec_path)
    assert compiled_with == []
    compiled = run(demo_spec_path, COMPILE)
    assert compiled_with == ["eager"]
    # The eager backend runs the captured graph with the same kernels: the same numbers, bitwise.
    assert compiled.final_loss == plain.final_loss
    assert same_numbers(compiled.metrics, plain.metrics), (compiled.metrics, plain.metrics)
    assert compiled.best_epoch == plain.best_epoch
    for k, v in plain.states["last"].items():
        assert torch.equal(compiled.states["last"][k], v), k


def test_compiled_checkpoints_hold_the_plain_module_and_resume_without_compile(demo_spec_path, one_thread):
    torch._dynamo.reset()
    reports: list[dict] = []
    compiled = run(demo_spec_path, COMPILE, report=lambda m, s: reports.append(s))
    states = [s for s in reports if s is not None]
    assert states
    keys = {k for s in states for k in (*s["model"], *s["best_state"])}
    keys |= {k for which in compiled.states.values() for k in which}
    assert keys and not any("_orig_mod" in k for k in keys)

    # A plain run resumes the compiled run's first checkpoint and ends where the
    # compiled run ended (bitwise, as compiled and plain runs are above).
    resumed = run(demo_spec_path, resume=checkpoint_roundtrip(states[0]))
    assert resumed.resumed_epoch == 1
    assert resumed.final_loss == compiled.final_loss
    for k, v in compiled.states["last"].items():
        assert torch.equal(resumed.states["last"][k], v), k


def test_plain_checkpoint_resumes_into_a_compiled_run_and_old_prefixed_keys_load(demo_spec_path, one_thread):
    torch._dynamo.reset()
    reports: list[dict] = []
    plain = run(demo_spec_path, report=lambda m, s: reports.append(s))
    state = checkpoint_roundtrip(reports[0])
    # A state saved from a compiled module elsewhere names every key "_orig_mod.<key>".
    state["model"] = {f"_orig_mod.{k}": v for k, v in state["model"].items()}
    resumed = run(demo_spec_path, COMPILE, resume=state)
    assert resumed.resumed_epoch == 1
    assert resumed.final_loss == plain.final_loss
    assert not any("_orig_mod" in k for k in resumed.states["last"])


def test_channels_last_gives_the_same_loss(demo_spec_path, one_thread, monkeypatch):
    from raysearch.methods.distcon.method import DistCon

    seen: list[bool] = []  # every batch the method's training step gets is channels_last
    step = DistCon.training_step
    monkeypatch.setattr(DistCon, "training_step", lambda self, model, images, epoch: (
        seen.append(images.is_contiguous(memory_format=torch.channels_last)), step(self, model, images, epoch))[1])
    plain = run(demo_spec_path)
    assert seen and not any(seen)
    seen.clear()
    cl = run(demo_spec_path, ["train.channels_last=true"])
    assert seen and all(seen)
    # Another memory layout may sum in another order: equal up to rounding.
    assert cl.final_loss == pytest.approx(plain.final_loss, rel=1e-3)
    assert cl.metrics["val_image_auroc"] == pytest.approx(plain.metrics["val_image_auroc"], abs=0.05)


def test_channels_last_batches_and_weights():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4)
    idx = torch.tensor([1, 0])
    batch = _batch(images, idx, torch.device("cpu"), on_device=True, channels_last=True)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch, images[idx])


def test_streamed_batches_equal_the_in_memory_path(demo_spec_path, one_thread):
    in_memory = run(demo_spec_path, ["train.data_on_device=true"])
    streamed = run(demo_spec_path, ["train.data_on_device=false"])
    assert streamed.final_loss == in_memory.final_loss
    assert same_numbers(streamed.metrics, in_memory.metrics)
    for k, v in in_memory.states["last"].items():
        assert torch.equal(streamed.states["last"][k], v), k


def test_streamed_batch_is_the_indexed_images():
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    idx = torch.tensor([7, 2, 2, 9])
    batch = _batch(images, idx, torch.device("cpu"), on_device=False, channels_last=False)
    assert torch.equal(batch, images[idx])


def test_data_placement_rule(demo_spec_path):
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    for value, expected in (("auto", True), (True, True), (False, False)):
        spec = load_spec(demo_spec_path, [f"train.data_on_device={str(value).lower()}"])
        assert spec.train.data_on_device == value
        # On the CPU the images are in host memory already: auto keeps them there.
        assert _data_on_device(spec, images, torch.device("cpu")) is expected


@pytest.mark.parametrize("key, value", [
    ("compile", "eager"),
    ("compile", 1),
    ("compile_backend", "tensorrt-ish"),
    ("channels_last", "yes"),
    ("data_on_device", "always"),
    ("data_on_device", 1),
    ("data_on_device_fraction", 0),
    ("data_on_device_fraction", 1.5),
])
def test_bad_values_are_refused_with_their_key(key, value):
    with pytest.raises(SpecError, match=rf"train\.{key}: expected"):
        spec_from_dict({"name": "t", "method": "distcon", "train": {key: value}})


def test_defaults_change_nothing():
    t = spec_from_dict({"name": "t", "method": "distcon"}).train
    assert (t.compile, t.compile_backend, t.channels_last, t.data_on_device) == (False, "inductor", False, "auto")
