"""End to end through a real local Ray: `raysearch train` of the demo spec, tiny."""

import json
import math
import os

import pyarrow.dataset as ds
import pytest
from helpers.tiny import (
    TINY,
    TRAIN_WORKER,
    check_placement_groups_released,
    event_point,
    holding,
    kill_actor,
    live_placement_groups,
    wait_for_event,
    wait_until,
)

from raysearch.config.spec import load_spec
from raysearch.run.runner import run_train

pytestmark = pytest.mark.slow


def test_train_demo_spec_writes_rows_and_checkpoints(ray_session, demo_spec_path, tmp_path):
    spec = load_spec(demo_spec_path, TINY)
    out = str(tmp_path / "exp")
    code, rows = run_train(spec, out, quiet=True)
    assert code == 0
    assert [r["normal_class"] for r in rows] == ["3"]
    row = rows[0]
    assert row["status"] == "completed" and row["error"] is None
    for key in ("val_image_auroc", "test_image_auroc", "val_image_f1_max", "latency_ms"):
        assert 0 <= row[key] and math.isfinite(row[key]), key
    assert row["test_pixel_auroc"] is None  # digits have no masks
    assert row["epochs"] == 2 and row["best_epoch"] in (1, 2)
    assert row["num_params"] > 0 and row["device"] == "cpu"
    assert 0 < row["host_rss_mb"] <= row["host_peak_rss_mb"] and row["device_peak_mb"] is None
    assert row["params.gmm.components"] == spec.params.gmm.components
    assert row["selection_split"] == "validation"
    # The store reads as one Parquet dataset; the resolved spec and both checkpoints exist.
    table = ds.dataset(str(tmp_path / "exp" / "results")).to_table()
    assert table.num_rows == 1
    assert (tmp_path / "exp" / "spec.yaml").exists()
    ckpt = tmp_path / "exp" / "checkpoints" / row["trial_id"] / "3"
    assert (ckpt / "best.pt").exists() and (ckpt / "last.pt").exists()


def test_diverging_run_becomes_failed_row(ray_session, demo_spec_path, tmp_path):
    spec = load_spec(demo_spec_path, TINY + ["train.lr=1e30", "train.optimizer=sgd", "train.momentum=0.0"])
    code, rows = run_train(spec, str(tmp_path / "exp"), quiet=True)
    assert code == 1
    assert len(rows) == 1 and rows[0]["status"] == "failed"
    assert "loss became" in rows[0]["error"]


def registered_checkpoint_epoch(run_dir) -> int | None:
    """The epoch of the latest checkpoint that Ray Train's controller has registered for a
    run, or None before there is one.

    A worker's report returns once its result is queued for the controller, not once the
    controller has taken it; a worker group that fails restarts from the controller's
    latest checkpoint. Train 2.60 has no public call for that outside the workers: its
    controller writes its checkpoint bookkeeping to ``checkpoint_manager_snapshot.json``
    in the run's folder right after registering a checkpoint. Should Train rename the file
    or change its fields, the wait on this fails (or a KeyError is raised) loudly.
    """
    path = os.path.join(run_dir, "checkpoint_manager_snapshot.json")
    try:
        with open(path) as f:
            state = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):  # not yet written, or being written
        return None
    latest = state["latest_checkpoint_result"]
    return None if latest is None else latest["metrics"]["epoch"]


def test_killed_worker_resumes_from_its_checkpoint(ray_session, run_events, demo_spec_path, tmp_path):
    """SIGKILL the Train worker while it waits after its first checkpoint (epoch 2 of 4),
    once Train has registered that checkpoint: the run restarts from it."""
    import threading

    spec = load_spec(demo_spec_path, TINY + ["train.epochs=4", "train.eval_every=2", "train.max_failures=2"])
    out = tmp_path / "exp"
    groups, seen = live_placement_groups(), set(os.listdir(run_events))
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=run_train(spec, str(out), quiet=True)))
    with holding(run_events):
        thread.start()
        [marked] = wait_for_event(run_events, thread.is_alive, ignore=seen)
        trial, class_index, epoch = event_point(marked)
        assert (class_index, epoch) == (0, 2)
        wait_until(lambda: registered_checkpoint_epoch(out / "ray" / trial) == 2, thread.is_alive,
                   "checkpoint_manager_snapshot.json recording the epoch-2 checkpoint", timeout_s=120)
        kill_actor(TRAIN_WORKER)
    thread.join(timeout=300)
    code, rows = outcome["result"]
    assert code == 0
    assert len(rows) == 1 and rows[0]["status"] == "completed"  # the class's row appears once
    assert rows[0]["resumed_epoch"] == 2 and rows[0]["epochs"] == 4
    check_placement_groups_released(ray_train=True, before=groups)  # the lost worker group's too
