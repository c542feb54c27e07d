"""Resume equals uninterrupted: a class restored from a mid-class checkpoint ends bitwise
where the run that was never stopped ends, for every registered method.

The in-process contract trains a class straight through, and again from the resumable
state its ``report`` received at an evaluation in the middle, round-tripped through
``torch.save`` / ``torch.load(weights_only=True)`` as ``raysearch.train.worker.worker_loop``
stores it. Final best and last weights must be bitwise equal, and so must every metric
reported after the restore point. On CPU with one thread every kernel is deterministic,
so any difference is state the checkpoint failed to carry (an RNG, an optimizer step, a
mixture refit, a frozen network).

The same through Ray (a sweep trial's process killed with SIGKILL right after its first
checkpointed report) is tests/ray/test_resume_contract_killed.py.
"""

from __future__ import annotations

import io
import os

import pytest
import torch
from helpers.specs import demo_spec
from helpers.tiny import SMALL
from helpers.training import assert_same_states, same_number

from raysearch.config import registry
from raysearch.config.spec import load_spec
from raysearch.data import load_task
from raysearch.train.loop import train_class

EPOCHS = 5
RESUME_AFTER = 3  # the restored run continues from the checkpoint of this epoch's evaluation

# Variants that carry state of their own beyond the default configuration of a method.
VARIANTS = {
    # Mixtures refit by EM / k-means from the first batch and then every refit_every
    # epochs, drawing their seeds from the method's generator.
    "distcon-em": ("distcon", ["params.gmm.update=em", "params.gmm.refit_every=2"]),
    "distcon-kmeans": ("distcon", ["params.gmm.update=kmeans"]),
    # Scoring mixtures refit by EM at every evaluation (the generator moves in fit_scorer).
    "distcon-refit-score": ("distcon", ["params.score.refit_gmm=true"]),
    # Momentum buffers and a warm-up: the learning rate depends on the global step.
    "distcon-sgd-warmup": ("distcon", ["train.optimizer=sgd", "train.warmup_epochs=2"]),
    "cutswap-paste": ("cutswap", ["params.patch.mode=paste", "params.saliency.fusion=max"]),
    "cutswap-random-scar": ("cutswap", ["params.patch.locations=random", "params.task.third=scar"]),
    # A frozen saliency network refreshed every 2 epochs: at the restore point it is
    # neither the initial network nor the current one, so it must come from extra_state.
    "cutswap-frozen": ("cutswap", ["params.saliency.source=frozen", "params.saliency.refresh_every=2"]),
    "clflow-cutpaste-scar": ("clflow", ["params.synthesis.kinds=cutpaste+scar", "params.synthesis.prob=0.7"]),
    "clflow-late-proxy": ("clflow", ["params.loss.proxy_start_epoch=2", "params.classification.target=pixel"]),
    "clflow-plain": ("clflow", ["params.mode=plain_fastflow"]),
}
CASES = {m: (m, []) for m in registry.method_names()} | VARIANTS


def small_spec(method: str, extra: list[str]):
    return load_spec(demo_spec(method), SMALL + [f"train.epochs={EPOCHS}"] + extra)


def checkpoint_bytes(resumable: dict) -> bytes:
    """The state as worker_loop stores it in a Ray checkpoint."""
    buf = io.BytesIO()
    torch.save({"class_index": 0, "finished": {}, "resume": resumable}, buf)
    return buf.getvalue()


def restore(data: bytes) -> dict:
    """The resume state as worker_loop reads it back (tensors and plain data only)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)["resume"]


def assert_same_metrics(a: dict, b: dict, what: str) -> None:
    assert set(a) == set(b), what
    differ = {k: (a[k], b[k]) for k in a if not same_number(a[k], b[k])}
    assert not differ, f"{what}: {differ}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_resumed_class_equals_uninterrupted(case, one_thread):
    """Stopped after epoch RESUME_AFTER and restored from that evaluation's checkpoint, a
    class reports the same metrics and ends with the same weights as when never stopped."""
    method, extra = CASES[case]
    spec = small_spec(method, extra)
    method_cls = registry.method_class(method)
    normal_class = spec.classes()[0]
    task = load_task(spec.data, spec.selection, normal_class, spec.train.seed)

    straight_reports: list[tuple[dict, bytes | None]] = []
    straight = train_class(spec, task, method_cls, report=lambda m, s: straight_reports.append(
        (m, None if s is None else checkpoint_bytes(s))))
    assert [m["epoch"] for m, _ in straight_reports] == list(range(1, EPOCHS))
    saved = straight_reports[RESUME_AFTER - 1][1]
    assert saved is not None

    # A new process would build a new method and model: train_class does, from the spec.
    resumed_reports: list[dict] = []
    resumed = train_class(spec, task, method_cls, resume=restore(saved),
                          report=lambda m, s: resumed_reports.append(m))

    assert resumed.resumed_epoch == RESUME_AFTER and straight.resumed_epoch is None
    after = [m for m, _ in straight_reports[RESUME_AFTER:]]
    assert [m["epoch"] for m in resumed_reports] == [m["epoch"] for m in after]
    for a, b in zip(after, resumed_reports, strict=True):
        assert_same_metrics(a, b, f"report of epoch {a['epoch']}")
    # Training went on after the restore point, so equal weights are no accident.
    assert not all(torch.equal(v, restore(saved)["model"][k]) for k, v in straight.states["last"].items())
    assert set(resumed.states) == set(straight.states) == {"best", "last"}
    for which in ("best", "last"):
        assert_same_states(straight.states[which], resumed.states[which], f"{which} weights")
    assert_same_metrics(straight.metrics, resumed.metrics, "final metrics")
    assert (straight.best_epoch, straight.final_loss) == (resumed.best_epoch, resumed.final_loss)


def test_every_method_has_a_case():
    assert {m for m, _ in CASES.values()} == set(registry.method_names())


def _ddp_rank(rank: int, world: int, folder: str, case: str) -> None:
    """One DDP rank (gloo, CPU) of the straight and the restored run; rank 0 saves both results."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world)
    try:
        method, extra = CASES[case]
        spec = small_spec(method, extra)
        method_cls = registry.method_class(method)
        task = load_task(spec.data, spec.selection, spec.classes()[0], spec.train.seed)

        saved: list[bytes | None] = []  # rank 0's checkpoints of the straight run

        def keep(metrics: dict, resumable: dict | None) -> None:
            saved.append(None if resumable is None else checkpoint_bytes(resumable))

        def run(resume=None, report=None):
            return train_class(spec, task, method_cls, rank=rank, world=world, resume=resume, report=report,
                               wrap_model=lambda m: DistributedDataParallel(m, static_graph=True))

        straight = run(report=keep)
        state_file = os.path.join(folder, "state.pt")
        if rank == 0:  # as worker_loop: rank 0 writes the checkpoint, every rank reads it
            with open(state_file, "wb") as f:
                f.write(saved[RESUME_AFTER - 1])
        dist.barrier()
        with open(state_file, "rb") as f:
            resumed = run(resume=restore(f.read()))
        if rank == 0:
            torch.save({name: {"states": r.states, "metrics": r.metrics, "resumed_epoch": r.resumed_epoch}
                        for name, r in (("straight", straight), ("resumed", resumed))},
                       os.path.join(folder, "results.pt"))
    finally:
        dist.destroy_process_group()


def test_resumed_ddp_class_equals_uninterrupted(tmp_path):
    """Two DDP ranks draw different augmentations (the method's generator is seeded per
    rank); a checkpoint carries both ranks' streams and each rank restores its own."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_rank, args=(2, str(tmp_path), "distcon"), nprocs=2)
    out = torch.load(tmp_path / "results.pt", weights_only=True)
    straight, resumed = out["straight"], out["resumed"]
    assert resumed["resumed_epoch"] == RESUME_AFTER
    for which in ("best", "last"):
        assert_same_states(straight["states"][which], resumed["states"][which], f"{which} weights")
    assert_same_metrics(straight["metrics"], resumed["metrics"], "final metrics")


# -- through Ray: a sweep trial killed after its first checkpoint --------------------------


