"""Failures a user meets, end to end through a real local Ray: a class whose data breaks
during training fails alone, and `raysearch train` stopped by SIGINT or SIGTERM keeps
every class it finished."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers.tiny import TINY
from PIL import Image

from raysearch.config.spec import load_spec
from raysearch.store import results

pytestmark = pytest.mark.slow


def _category(root, name, n=12):
    rng = np.random.default_rng(0)
    for folder, count in (("train/good", n), ("test/good", 4), ("test/crack", 4)):
        (root / name / folder).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / name / folder / f"{i}.png")


def test_a_class_whose_data_breaks_fails_alone_and_the_others_train(ray_session, demo_spec_path, tmp_path):
    """The data passed its check, then a file broke (a copy still running, a disk error):
    that class's row names the file; the next class trains and completes."""
    from raysearch.run.tuning import run_tune

    root = tmp_path / "data"
    for name in ("bottle", "cable"):
        _category(root, name)
    broken = root / "bottle" / "train" / "good" / "3.png"
    broken.write_bytes(broken.read_bytes()[:40])  # truncated after the check would have run
    spec = load_spec(demo_spec_path, TINY + [
        "data.dataset=folder", f"data.root={root}", "data.classes=[bottle, cable]", "data.image_size=16",
        "selection.anomalies=synthetic", "selection.synthesis=[blur]",
        "search.trials=1", "search.concurrent=1", "search.scheduler={kind: none}",
    ])
    out = str(tmp_path / "exp")
    assert run_tune(spec, out, quiet=True) == 0
    rows = {r["normal_class"]: r for r in results.read_results(out).to_pylist()}
    assert rows["bottle"]["status"] == "failed"
    assert "data of class bottle" in rows["bottle"]["error"] and "3.png" in rows["bottle"]["error"]
    assert rows["cable"]["status"] == "completed" and rows["cable"]["val_image_auroc"] is not None


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_train_keeps_every_finished_class(signum, code, demo_spec_path, tmp_path):
    """The signal arrives while the second class trains (held at its first checkpoint):
    the first class's row stays, none is written for the second, and the exit code and
    line say what happened."""
    events = tmp_path / "events"
    events.mkdir()
    (events / "hold").write_text("checkpoint-*-1-*")  # hold the run in the second class
    out = tmp_path / "exp"
    cmd = [sys.executable, "-m", "raysearch.cli", "train", demo_spec_path, "--output", str(out), "--num-cpus", "2",
           "--quiet", *[f"--set={o}" for o in TINY + ["data.classes=[3, 5]"]]]
    env = dict(os.environ, RAYSEARCH_TEST_EVENTS=str(events), PYTHONUNBUFFERED="1")
    log = tmp_path / "train.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not list(events.glob("checkpoint-*-1-*")):  # the second class (index 1) has begun
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signum)
        assert proc.wait(timeout=120) == code, log.read_text()[-3000:]
    finally:
        (events / "hold").unlink(missing_ok=True)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the local Ray the driver started, should any be left
        except ProcessLookupError:
            pass
    text = log.read_text()
    assert f"raysearch: train interrupted ({signal.Signals(signum).name}); 1 finished class(es) kept" in text
    rows = results.read_results(str(out)).to_pylist()
    assert [(r["normal_class"], r["status"]) for r in rows] == [("3", "completed")]
