"""`raysearch tune` end to end through a real local Ray: rows, statuses, the Optuna
study, placement-group cleanup, NaN trials, and resume after the driver is killed."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from tiny import TINY, check_placement_groups_released, run_command

from raysearch import results
from raysearch.spec import load_spec
from raysearch.tuning import run_tune, study_url

pytestmark = pytest.mark.slow



def rows_of(out):
    return results.read_results(out).to_pylist()


def study_of(out, name):
    return optuna.load_study(study_name=name, storage=study_url(out))


def test_sweep_rows_study_states_and_no_leaked_placement_groups(ray_session, demo_spec_path, tmp_path):
    spec = load_spec(demo_spec_path, TINY + [
        "data.classes=[3, 5]", "data.max_train=80", "selection.holdout=0.3",
        "search.trials=4", "search.concurrent=1", "search.seed=3",
        "search.scheduler={kind: asha, grace: 1, reduction_factor: 2}",
    ])
    out = str(tmp_path / "sweep")
    assert run_tune(spec, out, quiet=True) == 0

    rows = rows_of(out)
    keys = [(r["trial_id"], r["normal_class"]) for r in rows]
    assert len(rows) == 8 and len(set(keys)) == 8  # one row per trial and class
    assert {r["status"] for r in rows} <= {"completed", "pruned"}
    for r in rows:
        if r["status"] == "completed":
            assert r["val_image_auroc"] is not None and r["test_image_auroc"] is not None
        else:
            assert "stopped early by ASHA" in r["error"] and r["test_image_auroc"] is None

    # The study agrees with the scheduler: a trial stopped early is PRUNED, never COMPLETE;
    # a COMPLETE trial has every class's row, and its value is the validation mean.
    study = study_of(out, spec.name)
    by_number = {t.number: t for t in study.trials}
    assert sorted(by_number) == [0, 1, 2, 3]
    by_trial = {}
    for r in rows:
        by_trial.setdefault(r["optuna_trial"], []).append(r)
    assert sorted(by_trial) == [0, 1, 2, 3]
    states = {}
    for number, trial_rows in by_trial.items():
        t = by_number[number]
        states[number] = t.state.name
        if any(r["status"] == "pruned" for r in trial_rows):
            assert t.state == optuna.trial.TrialState.PRUNED
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert all(r["status"] == "completed" for r in trial_rows)
            mean_val = sum(r["val_image_auroc"] for r in trial_rows) / len(trial_rows)
            assert t.value == pytest.approx(mean_val)  # the objective is validation, never test
        else:
            assert t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values
    assert states[0] == "COMPLETE"  # the first trial at every rung always continues
    assert "PRUNED" in states.values(), states
    # The first trial evaluates the spec's own values.
    assert by_number[0].params["params.gmm.components"] == spec.params.gmm.components

    # Every Train placement group was released (with the dashboard on, Train cleans up).
    check_placement_groups_released()


def test_nan_trial_becomes_failed_row_and_sweep_goes_on(ray_session, demo_spec_path, tmp_path):
    spec = load_spec(demo_spec_path, TINY + [
        "train.epochs=1", "train.optimizer=sgd", "train.momentum=0.0",
        "search.sampler=grid", "search.trials=2", "search.concurrent=1", "search.scheduler={kind: none}",
        "search.space={train.lr: {choice: [1.0e+30, 0.002]}}",
    ])
    out = str(tmp_path / "nan")
    assert run_tune(spec, out, quiet=True) == 0
    rows = {r["train.lr"]: r for r in rows_of(out)}
    assert len(rows) == 2
    assert rows[1e30]["status"] == "failed" and "loss became" in rows[1e30]["error"]
    assert rows[0.002]["status"] == "completed"
    states = sorted(t.state.name for t in study_of(out, spec.name).trials)
    assert states == ["COMPLETE", "FAIL"]
    check_placement_groups_released()  # the failed run released its placement group


def _tune_cmd(spec_path, out, *extra):
    sets = [a for s in TINY + ["search.trials=4", "search.concurrent=1", "search.scheduler={kind: none}"]
            for a in ("--set", s)]
    return [sys.executable, "-m", "raysearch.cli", "tune", spec_path, *sets, "--output", out,
            "--num-cpus", "2", "--quiet", *extra]


def _row_files(out):
    """The result files of an experiment (local folder or URI) and their bytes."""
    import pyarrow.fs as pafs

    fs, path = results.resolve(results.join(out, "results"))
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return {}
    infos = fs.get_file_info(pafs.FileSelector(path))
    return {i.base_name: results.read_bytes(results.join(out, "results", i.base_name))
            for i in infos if i.base_name.endswith(".parquet")}


@pytest.mark.parametrize("where, kill_at", [("local", (1, 3)), ("s3", (2,))])
def test_killed_driver_resumes_to_full_count_without_duplicates(where, kill_at, request, demo_spec_path, tmp_path):
    """SIGKILL the driver (and the local Ray it started) mid-sweep, then --resume; locally
    twice (the resumed driver is killed too). In S3 storage the resumed driver runs with
    another home folder: it finds the Optuna study in the storage, as a driver restarted
    on another machine would."""
    out = str(tmp_path / "resume") if where == "local" else request.getfixturevalue("s3_storage")("resume")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for i, rows_before_kill in enumerate(kill_at):
        extra = ("--resume",) if i else ()
        proc = subprocess.Popen(_tune_cmd(demo_spec_path, out, *extra), env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and len(_row_files(out)) < rows_before_kill:
            time.sleep(0.5)
        assert proc.poll() is None, "the sweep finished before it could be interrupted"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
    before = _row_files(out)
    assert len(before) >= kill_at[-1]

    if where == "s3":
        env["HOME"] = str(tmp_path / "another-machine")
    done = run_command(_tune_cmd(demo_spec_path, out, "--resume"), env=env, timeout_s=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = rows_of(out)
    trial_ids = [r["trial_id"] for r in rows]
    assert len(rows) == 4 and len(set(trial_ids)) == 4, trial_ids
    assert all(r["status"] == "completed" for r in rows)
    numbers = [r["optuna_trial"] for r in rows]
    assert len(set(numbers)) == 4
    after = _row_files(out)
    for name, data in before.items():  # rows written before the kill are unchanged
        assert after[name] == data
    if where == "s3":  # the study the resumed driver wrote back to the storage
        local = tmp_path / "study.db"
        local.write_bytes(results.read_bytes(results.join(out, "optuna.db")))
        study = optuna.load_study(study_name="distcon-digits-demo", storage=f"sqlite:///{local}")
    else:
        study = study_of(out, "distcon-digits-demo")
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) >= 4


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_sweep_exits_with_a_resume_hint_and_resumes(signum, code, demo_spec_path, tmp_path):
    """Ctrl-C (SIGINT) or SIGTERM to the driver once a row is stored: it stops the way Tune
    stops, exits 130 / 143 with the command that continues it, and leaves the interrupted
    trials resumable (RUNNING, never FAIL, in the study); --resume finishes the sweep."""
    out = str(tmp_path / "sweep")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = tmp_path / "driver.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(_tune_cmd(demo_spec_path, out), env=env, start_new_session=True, stdout=f,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not _row_files(out):
            time.sleep(0.5)
        assert proc.poll() is None, "the sweep finished before it could be interrupted"
        proc.send_signal(signum)
        assert proc.wait(timeout=240) == code, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            try:  # the local Ray the driver started, should any of it be left
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    text = log.read_text()
    assert f"raysearch: tune interrupted ({signal.Signals(signum).name})" in text and "--resume" in text
    assert "Tuner.restore" not in text
    study = study_of(out, "distcon-digits-demo")
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    before = _row_files(out)

    done = run_command(_tune_cmd(demo_spec_path, out, "--resume"), env=env, timeout_s=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = rows_of(out)
    assert len(rows) == 4 and len({r["trial_id"] for r in rows}) == 4
    assert all(r["status"] == "completed" for r in rows)
    after = _row_files(out)
    assert all(after[name] == data for name, data in before.items())
    states = [t.state for t in study_of(out, "distcon-digits-demo").trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4, states
    assert optuna.trial.TrialState.RUNNING not in states and optuna.trial.TrialState.WAITING not in states
    # Resuming the finished sweep changes nothing: no new study trial, no new row.
    again = run_command(_tune_cmd(demo_spec_path, out, "--resume"), env=env, timeout_s=300)
    assert again.returncode == 0 and "nothing to resume" in again.stdout, again.stdout[-2000:]
    assert [t.state for t in study_of(out, "distcon-digits-demo").trials] == states
    assert _row_files(out) == after


def test_killed_trial_process_restarts_from_its_checkpoint(ray_session, demo_spec_path, tmp_path):
    """SIGKILL a single-worker trial's process after its first checkpoint: Tune restarts
    the trial from it (train.max_failures), and the class's row records where it resumed."""
    import glob
    import threading

    import ray
    from ray.util.state import list_actors

    spec = load_spec(demo_spec_path, TINY + [
        "data.max_train=240", "params.backbone.width=32", "train.epochs=40", "train.eval_every=2",
        "train.max_failures=2", "search.trials=1", "search.concurrent=1", "search.scheduler={kind: none}",
    ])
    out = tmp_path / "sweep"
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(code=run_tune(spec, str(out), quiet=True)))
    thread.start()
    deadline = time.time() + 240
    while not glob.glob(str(out / "ray" / "**" / "checkpoint_*"), recursive=True) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # the checkpoint's folder appears before Tune has registered it
    dashboard = ray._private.worker.global_worker.node.address_info["webui_url"]
    alive = list_actors(address=f"http://{dashboard}", filters=[("state", "=", "ALIVE")])
    trials = [a for a in alive if a.class_name == "ImplicitFunc"]
    assert len(trials) == 1, [a.class_name for a in alive]
    assert not glob.glob(str(out / "results" / "*.parquet")), "the class finished before the kill"
    os.kill(trials[0].pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert outcome.get("code") == 0
    rows = rows_of(str(out))
    assert len(rows) == 1 and rows[0]["status"] == "completed"  # the class's row appears once
    assert rows[0]["resumed_epoch"] is not None and rows[0]["resumed_epoch"] >= 2
    assert rows[0]["epochs"] == 40
    assert [t.state.name for t in study_of(str(out), spec.name).trials] == ["COMPLETE"]
    check_placement_groups_released()


def test_ddp_trial_runs_through_ray_train(ray_session, demo_spec_path, tmp_path):
    """A trial with two workers goes through a TorchTrainer (DDP over gloo); its rows and
    study entry are those of any other trial, and its placement groups are released."""
    spec = load_spec(demo_spec_path, TINY + [
        "train.workers=2", "search.trials=1", "search.concurrent=1", "search.scheduler={kind: none}",
    ])
    out = str(tmp_path / "ddp")
    assert run_tune(spec, out, quiet=True) == 0
    rows = rows_of(out)
    assert len(rows) == 1 and rows[0]["status"] == "completed" and rows[0]["workers"] == 2
    assert rows[0]["val_image_auroc"] is not None
    assert [t.state.name for t in study_of(out, spec.name).trials] == ["COMPLETE"]
    check_placement_groups_released()
