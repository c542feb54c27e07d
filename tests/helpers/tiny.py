"""The tiny run every end-to-end test uses (one digits class, two epochs, a few dozen
images), and the waits and checks those tests share."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

TINY = [
    "selection.min_normals=4",  # a small validation split: 4 normals, 8 anomalies per family
    "selection.min_anomalies=8",
    "data.classes=[3]",
    "data.max_train=48",
    "data.max_test=40",
    "train.epochs=2",
    "train.eval_every=1",
    "train.batch_size=16",
    "params.backbone.width=8",
]

# A few dozen 32-pixel images of a demo spec's first class, a small CNN, evaluations (and
# so checkpoints) after every epoch: the in-process training tests (resume, speed options).
SMALL = [
    "selection.min_normals=4",
    "selection.min_anomalies=4",
    "data.image_size=32",
    "data.max_train=48",
    "data.max_test=24",
    "train.batch_size=16",
    "train.eval_every=1",
    "params.backbone.width=8",
]


@contextlib.contextmanager
def holding(events: str) -> Iterator[None]:
    """Runs that mark a checkpointed report in the folder ``events`` wait there until the
    block ends (``raysearch.train.worker.test_event``).

    A test starts its run inside the block, waits for the event it needs, and acts (kills
    or signals); the run cannot get past that event meanwhile, so "it finished before the
    kill" cannot happen.
    """
    hold = os.path.join(events, "hold")
    with open(hold, "w"):
        pass
    try:
        yield
    finally:
        os.remove(hold)


def wait_until(condition: Callable[[], T], running: Callable[[], bool], what: str, timeout_s: float = 300.0,
               log: str | os.PathLike | None = None) -> T:
    """Poll ``condition`` (an event another process makes: a file, a registered
    checkpoint) until it returns something true, and return that.

    ``running`` says whether the run that makes the event still goes: a run that ended
    without it fails the test at once, with the tail of its ``log`` where there is one.
    """
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        found = condition()
        if found:
            return found
        ended = not running()
        if ended or time.monotonic() > deadline:
            tail = "" if log is None else ":\n" + open(log).read()[-3000:]
            why = "the run ended without" if ended else f"{timeout_s:.0f} s passed without"
            raise AssertionError(f"{why} {what}{tail}")
        time.sleep(0.1)


def wait_for_event(events: str, running: Callable[[], bool], ignore: set[str] | frozenset[str] = frozenset(),
                   timeout_s: float = 300.0, log: str | os.PathLike | None = None) -> list[str]:
    """The sorted names of the ``checkpoint-<trial>-<class index>-<epoch>`` files in
    ``events`` (less ``ignore``) as soon as there is one (see :func:`wait_until`)."""

    def marked() -> list[str]:
        return sorted(n for n in os.listdir(events) if n.startswith("checkpoint-") and n not in ignore)

    return wait_until(marked, running, "a checkpointed report", timeout_s, log)


def run_processes(events: str) -> list[int]:
    """The live processes started with ``RAYSEARCH_TEST_EVENTS=<events>`` in their
    environment: a command's driver, the local Ray it started and every Ray worker of it."""
    mark = f"RAYSEARCH_TEST_EVENTS={events}".encode()
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if mark in f.read().split(b"\0"):
                        pids.append(int(pid))
            except OSError:  # gone meanwhile, or not ours to read
                pass
    return pids


def check_run_ended(events: str, timeout_s: float = 60.0) -> None:
    """Every process of a stopped command is gone (see :func:`run_processes`): none of its
    trials keeps training once the test lets waiting runs go on."""
    wait_until(lambda: not run_processes(events), lambda: True, "the end of every process of the run", timeout_s)


def event_point(name: str) -> tuple[str, int, int]:
    """``(trial id, class index, epoch)`` of an event file's name."""
    trial, class_index, epoch = name.removeprefix("checkpoint-").rsplit("-", 2)
    return trial, int(class_index), int(epoch)


def rows_of(out: str | os.PathLike) -> list[dict]:
    """The result rows of an experiment folder, as dicts."""
    from raysearch.store import results

    return results.read_results(str(out)).to_pylist()


def live_placement_groups() -> set[str]:
    """The ids of the session Ray's placement groups that are not removed."""
    import ray.util

    return {pg_id for pg_id, pg in ray.util.placement_group_table().items() if pg["state"] != "REMOVED"}


def check_placement_groups_released(*, ray_train: bool, before: set[str], timeout_s: float | None = None) -> None:
    """Every placement group made since ``before`` (:func:`live_placement_groups`) is
    released within ``timeout_s``; one still reserved then fails the test, on either path.

    ``ray_train`` says which path the test's runs take, because the two differ in who
    releases the placement group, and so in how long that may take:

    - ``False`` (20 s by default): trials that train in their own Tune process (one
      worker, ``train.launcher`` auto or fresh: raysearch's ``in_trial_process``). Tune
      makes and removes their placement groups itself.
    - ``True`` (60 s by default): runs through Ray Train's worker groups (``raysearch
      train``, multi-worker trials, ``train.launcher: train``). Train's controller removes
      a worker group's placement group when the group stops, and a detached cleaner actor
      removes it when the controller is gone, polling the State API every second; under
      load those polls are slow. Ray 2.60's cleaner thread died on GCS timeouts and then
      kept the group forever, and a worker group that Train retried after its 60 s start
      timeout kept the first attempt's group: raysearch.run.ray_setup patches the first and
      raises the second timeout to 900 s, so a group still reserved here is a leak to fix,
      not a known Ray failure to tolerate.

    Groups alive before the test began are another test's leak, which failed that test;
    they are not counted again.
    """
    import time

    import ray.util

    if timeout_s is None:
        timeout_s = 60.0 if ray_train else 20.0
    deadline = time.monotonic() + timeout_s
    while True:
        live = live_placement_groups() - before
        if not live:
            return
        if time.monotonic() > deadline:
            table = ray.util.placement_group_table()
            detail = [(pg_id, table[pg_id].get("state"), table[pg_id].get("bundles")) for pg_id in sorted(live)]
            owner = "Ray Train runs" if ray_train else "Tune trials"
            raise AssertionError(f"{len(live)} placement group(s) of finished {owner} still reserved "
                                 f"after {timeout_s:.0f} s: {detail}")
        time.sleep(1)


def kill_group(proc, events: str | None = None) -> None:
    """SIGKILL a command started with ``start_new_session=True`` and every process left in
    its group (the local Ray it started), as a machine that goes down would; then reap it.

    Ray starts its workers in sessions of their own: they would outlive the group by a
    few seconds (until they notice their raylet is gone). With ``events`` (the folder the
    command's runs mark) they are killed too (see :func:`run_processes`).
    """
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in run_processes(events) if events else ():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def run_command(cmd: list[str], env: dict[str, str] | None = None, timeout_s: float = 600, cwd: str | None = None):
    """Run a command that may start Ray daemons, with its output in a file, never hanging.

    ``subprocess.run(capture_output=True, timeout=...)`` waits for every process that
    holds its pipes, and Ray daemons a killed command started keep them open; here
    the command runs in its own process group, which is killed on timeout.
    """
    import signal
    import subprocess
    import tempfile

    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, cwd=cwd)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
        log.seek(0)
        output = log.read()
    if code is None:
        raise AssertionError(f"{' '.join(cmd[:4])} ... did not finish in {timeout_s:.0f} s:\n{output[-3000:]}")
    return subprocess.CompletedProcess(cmd, code, output, output)


TUNE_TRIAL = "ImplicitFunc"  # the actor of a trial that trains in its own Tune process
TRAIN_WORKER = "TrainWorker"  # a worker of a Ray Train worker group (RayTrainWorker)


def kill_actor(kind: str, trial_id: str | None = None) -> int:
    """SIGKILL the one live actor of the session's Ray whose class is ``kind``
    (:data:`TUNE_TRIAL`, :data:`TRAIN_WORKER`) and return its pid; with ``trial_id``,
    only an actor whose working directory (Tune's per-trial folder) names that trial.

    Ray names an actor class by its name or by its qualified name
    (``wrap_function.<locals>.ImplicitFunc``), depending on the install, and Train's
    worker is ``RayTrainWorker``: the last dotted part of the name ending in ``kind``
    matches. Not exactly one match fails the test with every live actor's class.
    """
    import signal

    import ray
    from ray.util.state import list_actors

    dashboard = ray._private.worker.global_worker.node.address_info["webui_url"]  # this session's Ray only
    alive = list_actors(address=f"http://{dashboard}", filters=[("state", "=", "ALIVE")])

    def in_trial(pid: int) -> bool:
        try:
            return trial_id in os.readlink(f"/proc/{pid}/cwd")
        except OSError:  # gone meanwhile
            return False

    pids = [a.pid for a in alive if a.class_name.rsplit(".", 1)[-1].endswith(kind)
            and (trial_id is None or in_trial(a.pid))]
    assert len(pids) == 1, (kind, trial_id, sorted((a.class_name, a.pid) for a in alive))
    os.kill(pids[0], signal.SIGKILL)
    return pids[0]
