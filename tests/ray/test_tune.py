"""`raysearch tune` end to end through a real local Ray: rows, statuses, the Optuna
study, placement-group cleanup, NaN trials, and resume after the driver is killed."""

import json
import os
import shlex
import signal
import subprocess
import sys

import optuna
import pytest
from helpers.tiny import (
    TINY,
    TUNE_TRIAL,
    check_placement_groups_released,
    check_run_ended,
    event_point,
    holding,
    kill_actor,
    kill_group,
    live_placement_groups,
    rows_of,
    run_command,
    wait_for_event,
)

from raysearch.config.space import REPEAT_ATTR, is_repeat
from raysearch.config.spec import load_spec
from raysearch.run.tuning import run_tune, study_url
from raysearch.store import results

pytestmark = pytest.mark.slow


def study_of(out, name):
    return optuna.load_study(study_name=name, storage=study_url(out))


def test_sweep_rows_study_states_and_no_leaked_placement_groups(ray_session, demo_spec_path, tmp_path):
    spec = load_spec(demo_spec_path, TINY + [
        "data.classes=[3, 5]", "data.max_train=80", "selection.holdout=0.3",
        "search.trials=4", "search.concurrent=1", "search.seed=3",
        "search.scheduler={kind: asha, grace: 1, reduction_factor: 2}",
    ])
    out = str(tmp_path / "sweep")
    groups = live_placement_groups()
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

    # Every trial (in its own Tune process) released its placement group, ASHA-stopped ones too.
    check_placement_groups_released(ray_train=False, before=groups)


def test_nan_trial_is_one_line_and_a_resume_heals_rows_lost_from_the_store(ray_session, demo_spec_path, tmp_path,
                                                                          capfd):
    """A trial whose loss becomes NaN: a failed row, a FAIL in the study, one line on the
    console naming its reason and its error file (no traceback), and the sweep goes on.
    Then the store loses its rows (the compacted part truncated, an empty stray file
    added): --resume writes the failed trial's row again from Tune's record and trains
    the completed trial's class again, to the same row; the study is untouched."""
    spec = load_spec(demo_spec_path, TINY + [
        "train.epochs=1", "train.optimizer=sgd", "train.momentum=0.0",
        "search.sampler=grid", "search.trials=2", "search.concurrent=1", "search.scheduler={kind: none}",
        "search.space={train.lr: {choice: [1.0e+30, 0.002]}}",
    ])
    out = str(tmp_path / "nan")
    groups = live_placement_groups()
    assert run_tune(spec, out, stream=sys.stderr) == 0
    console = capfd.readouterr().err
    rows = {r["train.lr"]: r for r in rows_of(out)}
    assert len(rows) == 2
    assert rows[1e30]["status"] == "failed" and "loss became" in rows[1e30]["error"]
    assert rows[0.002]["status"] == "completed"
    states = sorted(t.state.name for t in study_of(out, spec.name).trials)
    assert states == ["COMPLETE", "FAIL"]
    check_placement_groups_released(ray_train=False, before=groups)  # the failed trial's too
    failed = [line for line in console.splitlines() if " failed: " in line and line.startswith("trial ")]
    assert len(failed) == 1 and "loss became" in failed[0] and "traceback: " in failed[0], console[-3000:]
    assert os.path.exists(failed[0].rsplit("traceback: ", 1)[1].rstrip(")"))
    assert "Traceback" not in console, console[-3000:]

    parts = [p for p in os.listdir(os.path.join(out, "results")) if p.endswith(".parquet")]
    for part in parts:  # every row lost: the run compacted them into its parts
        with open(os.path.join(out, "results", part), "r+b") as f:
            f.truncate(200)
    open(os.path.join(out, "results", "zz--000-0.parquet"), "wb").close()
    with pytest.warns(results.UnreadableResultWarning):
        assert run_tune(spec, out, resume=True, stream=sys.stderr) == 0
    assert "training those classes again" in capfd.readouterr().err
    healed = {r["train.lr"]: r for r in rows_of(out)}
    assert healed[1e30]["status"] == "failed" and healed[1e30]["trial_id"] == rows[1e30]["trial_id"]
    assert healed[0.002]["status"] == "completed" and healed[0.002]["trial_id"] == rows[0.002]["trial_id"]
    assert healed[0.002]["val_image_auroc"] == rows[0.002]["val_image_auroc"]
    assert sorted(t.state.name for t in study_of(out, spec.name).trials) == states


def _tune_cmd(spec_path, out, *extra, sets=()):
    sets = [a for s in TINY + ["search.trials=4", "search.concurrent=1", "search.scheduler={kind: none}", *sets]
            for a in ("--set", s)]
    return [sys.executable, "-m", "raysearch.cli", "tune", spec_path, *sets, "--output", out,
            "--num-cpus", "2", "--quiet", *extra]


def _events_env(tmp_path):
    """A folder of the test's own for its runs' events, and the environment that names it."""
    events = tmp_path / "events"
    events.mkdir()
    return str(events), dict(os.environ, PYTHONUNBUFFERED="1", RAYSEARCH_TEST_EVENTS=str(events))


def _stored_rows(out):
    """The stored rows of an experiment (local folder or URI) by (trial, class index), each
    as canonical text (NaN equals NaN there): a row written again shows as a change, however
    the store lays out its files."""
    try:
        rows = rows_of(out)
    except FileNotFoundError:  # no results folder yet
        return {}
    return {(r["trial_id"], r["class_index"]): json.dumps(r, sort_keys=True, default=str) for r in rows}


@pytest.mark.parametrize("where, kills", [("local", 2), ("s3", 1)])
def test_killed_driver_resumes_to_full_count_without_duplicates(where, kills, request, demo_spec_path, tmp_path):
    """SIGKILL the driver (and the local Ray it started) while a trial waits right after it
    stored its row (at its class's closing checkpoint: with train.eval_every=2 a trial has
    no earlier one), then --resume; locally twice (the resumed driver is killed the same
    way). In S3 storage the resumed driver runs with another home folder: it finds the
    Optuna study in the storage, as a driver restarted on another machine would."""
    out = str(tmp_path / "resume") if where == "local" else request.getfixturevalue("s3_storage")("resume")
    events, env = _events_env(tmp_path)
    sets = ["train.eval_every=2"]
    for i in range(kills):
        for name in os.listdir(events):  # a resumed trial may mark a report it marked before
            os.remove(os.path.join(events, name))
        log = tmp_path / f"driver-{i}.log"
        with holding(events), open(log, "w") as f:
            proc = subprocess.Popen(_tune_cmd(demo_spec_path, out, *(("--resume",) if i else ()), sets=sets),
                                    env=env, start_new_session=True, stdout=f, stderr=subprocess.STDOUT)
            try:
                marked = wait_for_event(events, lambda proc=proc: proc.poll() is None, log=log)
            finally:
                kill_group(proc, events)  # the driver, the local Ray it started and its workers
            check_run_ended(events)  # no trial of the killed run goes on once the wait is lifted
        assert [event_point(name)[1:] for name in marked] == [(0, 2)]  # a class's end, after its row
    before = _stored_rows(out)
    assert before  # each kill came after a stored row

    if where == "s3":
        env["HOME"] = str(tmp_path / "another-machine")
    done = run_command(_tune_cmd(demo_spec_path, out, "--resume", sets=sets), env=env, timeout_s=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = rows_of(out)
    trial_ids = [r["trial_id"] for r in rows]
    assert len(rows) == 4 and len(set(trial_ids)) == 4, trial_ids
    assert all(r["status"] == "completed" for r in rows)
    numbers = [r["optuna_trial"] for r in rows]
    assert len(set(numbers)) == 4
    after = _stored_rows(out)
    assert {key: after.get(key) for key in before} == before  # rows stored before the kill are unchanged
    if where == "s3":  # the study the resumed driver wrote back to the storage
        local = tmp_path / "study.db"
        local.write_bytes(results.read_bytes(results.join(out, "optuna.db")))
        study = optuna.load_study(study_name="distcon-digits-demo", storage=f"sqlite:///{local}")
    else:
        study = study_of(out, "distcon-digits-demo")
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) >= 4


@pytest.mark.parametrize("signum, code, sets, held_at, group", [
    # Ctrl-C in a terminal: SIGINT to the whole foreground process group, mid-class (after epoch 1 of 2)
    (signal.SIGINT, 130, [], (0, 1), True),
    # SIGTERM to the driver alone, after the class's row, at its closing report
    (signal.SIGTERM, 143, ["train.eval_every=2"], (0, 2), False),
    # SIGTERM to the whole group (Slurm's scancel, systemd, kill -- -PGID): the local Ray's
    # GCS and raylet end with the driver, and the driver must not wait for them
    (signal.SIGTERM, 143, [], (0, 1), True),
], ids=["sigint-group", "sigterm-driver", "sigterm-group"])
def test_interrupted_sweep_exits_with_a_resume_hint_and_resumes(signum, code, sets, held_at, group, demo_spec_path,
                                                                 tmp_path):
    """Ctrl-C (SIGINT) or SIGTERM, to the driver or to its whole process group, while the
    first trial waits after a checkpoint (mid-class, or right after it stored its class's
    row): the driver exits 130 / 143 with one line that gives the command that continues
    it (within seconds where Ray died with the signal; nothing of Ray's or Optuna's own
    logs: those are in DIR/raysearch.log), and leaves the interrupted trial resumable
    (WAITING, never RUNNING or FAIL, in the study); the printed command, pasted as it is
    (the folder's name has a space), finishes the sweep with four trials, one row per
    trial and class, and keeps the rows stored before the signal."""
    out = str(tmp_path / "my sweep")
    events, env = _events_env(tmp_path)
    log = tmp_path / "driver.log"
    with holding(events), open(log, "w") as f:
        proc = subprocess.Popen(_tune_cmd(demo_spec_path, out, sets=sets), env=env, start_new_session=True,
                                stdout=f, stderr=subprocess.STDOUT)
        try:
            marked = wait_for_event(events, lambda: proc.poll() is None, log=log)
            if group:
                os.killpg(proc.pid, signum)
            else:
                proc.send_signal(signum)
            # The trial still waits: Tune has to stop its process for the driver to exit, and
            # nothing of the run may go on (check_run_ended) before the wait is lifted.
            assert proc.wait(timeout=240) == code, log.read_text()[-3000:]
            check_run_ended(events)
        finally:
            kill_group(proc, events)  # the driver, had it not exited, and anything left of its run
    assert [event_point(name)[1:] for name in marked] == [held_at]
    text = log.read_text()
    hints = [line for line in text.splitlines() if "--resume" in line]
    name = signal.Signals(signum).name
    assert len(hints) == 1 and hints[0].startswith(f"raysearch: tune interrupted ({name})"), text[-3000:]
    assert "Tuner.restore" not in text
    # Ray's and Optuna's own lines go to the experiment's log file, not the terminal.
    assert "A new study created" not in text and "Token authentication" not in text, text[-3000:]
    assert "A new study created in RDB with name: distcon-digits-demo" in (tmp_path / "my sweep" / "raysearch.log").read_text()
    states = [t.state for t in study_of(out, "distcon-digits-demo").trials]
    assert optuna.trial.TrialState.WAITING in states, states
    assert not {optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING} & set(states), states
    before = _stored_rows(out)
    assert len(before) == (1 if held_at[1] == 2 else 0)  # the held trial's row, once its class has ended

    pasted = shlex.split(hints[0].split("Continue with: ", 1)[1])  # the folder alone: no spec, no --set
    assert pasted == ["raysearch", "tune", "--resume", "--output", out], hints[0]
    done = run_command([sys.executable, "-m", "raysearch.cli", *pasted[1:]], env=env, timeout_s=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "raysearch tune: distcon-digits-demo: 4 trials" in done.stderr  # the budget the sweep started with
    rows = rows_of(out)
    assert len(rows) == 4 and len({(r["trial_id"], r["normal_class"]) for r in rows}) == 4
    study = study_of(out, "distcon-digits-demo")
    trained = [t.number for t in study.trials if not is_repeat(t)]  # a repeated config is told, not trained
    assert len({r["trial_id"] for r in rows}) == 4 and sorted(r["optuna_trial"] for r in rows) == trained
    assert all(t.user_attrs[REPEAT_ATTR] in trained for t in study.trials if is_repeat(t))
    assert all(r["status"] == "completed" for r in rows)
    after = _stored_rows(out)
    assert {key: after.get(key) for key in before} == before
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * len(states), states  # nothing RUNNING, WAITING or FAIL
    # Resuming the finished sweep changes nothing: no new study trial, no new row.
    again = run_command(_tune_cmd(demo_spec_path, out, "--resume", sets=sets), env=env, timeout_s=300)
    assert again.returncode == 0 and "nothing to resume" in again.stdout, again.stdout[-2000:]
    assert [t.state for t in study_of(out, "distcon-digits-demo").trials] == states
    assert _stored_rows(out) == after


def test_killed_trial_process_restarts_from_its_checkpoint(ray_session, run_events, demo_spec_path, tmp_path):
    """SIGKILL a single-worker trial's process while it waits after its first checkpoint
    (epoch 2 of 4): Tune restarts the trial from that checkpoint (train.max_failures), and
    the class's row records where it resumed."""
    import threading

    spec = load_spec(demo_spec_path, TINY + [
        "train.epochs=4", "train.eval_every=2", "train.max_failures=2",
        "search.trials=1", "search.concurrent=1", "search.scheduler={kind: none}",
    ])
    out = tmp_path / "sweep"
    groups, seen = live_placement_groups(), set(os.listdir(run_events))
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(code=run_tune(spec, str(out), quiet=True)))
    with holding(run_events):
        thread.start()
        [marked] = wait_for_event(run_events, thread.is_alive, ignore=seen)
        assert event_point(marked)[1:] == (0, 2)
        # A trial in its own Tune process reports synchronously: its report returns only
        # after the driver has taken the result and registered its checkpoint, so that
        # checkpoint is where Tune restarts the trial.
        kill_actor(TUNE_TRIAL)
    thread.join(timeout=300)
    assert outcome.get("code") == 0
    rows = rows_of(str(out))
    assert len(rows) == 1 and rows[0]["status"] == "completed"  # the class's row appears once
    assert rows[0]["resumed_epoch"] == 2 and rows[0]["epochs"] == 4
    assert [t.state.name for t in study_of(str(out), spec.name).trials] == ["COMPLETE"]
    check_placement_groups_released(ray_train=False, before=groups)


def test_ddp_trial_runs_through_ray_train(ray_session, demo_spec_path, tmp_path):
    """A trial with two workers goes through a TorchTrainer (DDP over gloo); its rows and
    study entry are those of any other trial, and its placement groups are released."""
    spec = load_spec(demo_spec_path, TINY + [
        "train.workers=2", "search.trials=1", "search.concurrent=1", "search.scheduler={kind: none}",
    ])
    out = str(tmp_path / "ddp")
    groups = live_placement_groups()
    assert run_tune(spec, out, quiet=True) == 0
    rows = rows_of(out)
    assert len(rows) == 1 and rows[0]["status"] == "completed" and rows[0]["workers"] == 2
    assert rows[0]["val_image_auroc"] is not None
    assert [t.state.name for t in study_of(out, spec.name).trials] == ["COMPLETE"]
    check_placement_groups_released(ray_train=True, before=groups)
