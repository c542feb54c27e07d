"""Resume equals uninterrupted: a class restored from a mid-class checkpoint ends bitwise
where the run that was never stopped ends, for every registered method.

The in-process contract trains a class straight through, and again from the resumable
state its ``report`` received at an evaluation in the middle, round-tripped through
``torch.save`` / ``torch.load(weights_only=True)`` as ``raysearch.training.worker_loop``
stores it. Final best and last weights must be bitwise equal, and so must every metric
reported after the restore point. On CPU with one thread every kernel is deterministic,
so any difference is state the checkpoint failed to carry (an RNG, an optimizer step, a
mixture refit, a frozen network).

The slow tests do the same through Ray: a sweep trial's process is killed with SIGKILL
right after its first checkpointed report, Tune restarts it from that checkpoint, and
its result row must equal the row of the same spec run without a kill.
"""

from __future__ import annotations

import io
import math
import os

import pytest
import torch
from tiny import SMALL

from raysearch import registry
from raysearch.data import load_task
from raysearch.loop import train_class
from raysearch.spec import load_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo_spec(method: str) -> str:
    return os.path.join(REPO, "search_spaces", "demo", f"{method}.yaml")


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


def same_number(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def assert_same_metrics(a: dict, b: dict, what: str) -> None:
    assert set(a) == set(b), what
    differ = {k: (a[k], b[k]) for k in a if not same_number(a[k], b[k])}
    assert not differ, f"{what}: {differ}"


def assert_same_states(a: dict, b: dict, what: str) -> None:
    assert set(a) == set(b), what
    differ = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert not differ, f"{what}: tensors differ: {differ}"


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

def _rows(out: str) -> list[dict]:
    from raysearch import results

    return results.read_results(out).to_pylist()


def _wait_for(found, thread, what: str, timeout_s: float = 300):
    """Poll for an event (a file a run writes) while the run's thread is alive."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        value = found()
        if value:
            return value
        assert thread.is_alive(), f"the sweep ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout_s:.0f} s"
        time.sleep(0.05)


def _trial_process(trial_id: str) -> int:
    """The pid of the Tune trial process that runs ``trial_id``: a live ImplicitFunc
    actor whose working directory (Tune's per-trial folder) names the trial."""
    import ray
    from ray.util.state import list_actors

    dashboard = ray._private.worker.global_worker.node.address_info["webui_url"]
    alive = list_actors(address=f"http://{dashboard}", filters=[("state", "=", "ALIVE")])
    pids = []
    for actor in alive:
        if actor.class_name != "ImplicitFunc":
            continue
        try:
            cwd = os.readlink(f"/proc/{actor.pid}/cwd")
        except OSError:
            continue
        if trial_id in cwd:
            pids.append(actor.pid)
    assert len(pids) == 1, (trial_id, [(a.class_name, a.pid) for a in alive])
    return pids[0]


@pytest.mark.slow
@pytest.mark.parametrize("method", registry.method_names())
def test_killed_trial_row_equals_uninterrupted_row(method, ray_session, run_events, tmp_path):
    """SIGKILL a one-trial sweep's trial process right after its first checkpointed report:
    Tune restarts the trial from that checkpoint (train.max_failures), and its row and
    weights equal those of the same sweep run without a kill."""
    import signal
    import threading

    from raysearch import results
    from raysearch.tuning import run_tune

    first = load_spec(demo_spec(method)).classes()[0]
    spec = load_spec(demo_spec(method), SMALL + [
        f"data.classes=[{first}]", "train.epochs=3", "train.max_failures=1",
        "search.trials=1", "search.concurrent=1", "search.scheduler={kind: none}",
    ])
    straight_out, killed_out = str(tmp_path / "straight"), str(tmp_path / "killed")
    assert run_tune(spec, straight_out, quiet=True) == 0

    # Runs mark each checkpointed report as checkpoint-<trial>-<class index>-<epoch> and
    # wait there while `hold` exists; other tests' marks may be in the folder already.
    seen = set(os.listdir(run_events))
    hold = os.path.join(run_events, "hold")
    outcome: dict[str, int] = {}
    thread = threading.Thread(target=lambda: outcome.update(code=run_tune(spec, killed_out, quiet=True)))
    open(hold, "w").close()
    try:
        thread.start()
        mark = _wait_for(lambda: [n for n in os.listdir(run_events) if n not in seen
                                  and n.startswith("checkpoint-") and n.endswith("-0-1")],
                         thread, "a checkpoint after epoch 1")
        assert len(mark) == 1, mark
        trial_id = mark[0][len("checkpoint-"):-len("-0-1")]
        os.kill(_trial_process(trial_id), signal.SIGKILL)
    finally:
        os.remove(hold)  # after the kill: the restarted trial must not wait
        thread.join(timeout=600)
    assert outcome.get("code") == 0

    (straight,), (killed,) = _rows(straight_out), _rows(killed_out)
    assert killed["trial_id"] == trial_id and killed["status"] == straight["status"] == "completed"
    assert straight["resumed_epoch"] is None and killed["resumed_epoch"] == 1
    for key in (*results.METRIC_COLUMNS, "best_epoch", "final_loss", "epochs"):
        assert same_number(straight[key], killed[key]), (key, straight[key], killed[key])
    for which in ("best", "last"):
        a, b = (torch.load(os.path.join(os.path.dirname(r["checkpoint"]), f"{which}.pt"), weights_only=True)
                for r in (straight, killed))
        assert_same_states(a, b, f"{which} weights")
