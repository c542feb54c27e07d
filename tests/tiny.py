"""The tiny run every end-to-end test uses: one digits class, two epochs, a few dozen images."""

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


def check_placement_groups_released(timeout_s: float = 20.0) -> None:
    """Every placement group of the session's Ray is released, or the test is marked xfail.

    Ray 2.60's Train sometimes keeps the placement group of a stopped or restarted run
    (seen under heavy load, see raysearch/ray_setup.py); that is recorded as a known
    failure here, after every other check of the test has passed.
    """
    import time

    import pytest
    import ray.util

    deadline = time.time() + timeout_s
    while True:
        live = [pg for pg in ray.util.placement_group_table().values() if pg["state"] != "REMOVED"]
        if not live:
            return
        if time.time() > deadline:
            pytest.xfail(f"Ray kept {len(live)} placement group(s) of finished runs (known Ray 2.60 leak)")
        time.sleep(1)


def run_command(cmd: list[str], env: dict[str, str] | None = None, timeout_s: float = 600, cwd: str | None = None):
    """Run a command that may start Ray daemons, with its output in a file, never hanging.

    ``subprocess.run(capture_output=True, timeout=...)`` waits for every process that
    holds its pipes, and Ray daemons a killed command started keep them open; here
    the command runs in its own process group, which is killed on timeout.
    """
    import os
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
