"""Live curves through a real local Ray: a tiny `raysearch train` of two classes leaves one
TensorBoard run per class with the loss, lr and validation tags at step = epoch, and a
tiny sweep with --log mlflow (and wandb, offline, where installed) leaves MLflow runs,
W&B offline runs, Tune's CSV/JSON logs and per-epoch curves under short run names with
the values the result rows hold."""

import glob
import importlib.machinery
import importlib.util
import json
import os

import pytest
from helpers.sweeps import read_scalars
from helpers.tiny import TINY

from raysearch.config.spec import load_spec
from raysearch.store import results

pytestmark = pytest.mark.slow


def test_sweep_with_log_mlflow_leaves_runs_tune_logs_and_epoch_curves(ray_session, demo_spec_path, tmp_path,
                                                                      monkeypatch):
    MlflowClient = pytest.importorskip("mlflow.tracking", reason="pip install 'raysearch[trackers]'").MlflowClient

    from raysearch.run.tuning import run_tune

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)  # the defaults: local stores, W&B offline
    log = ["mlflow"] + (["wandb"] if importlib.util.find_spec("wandb") else [])
    spec = load_spec(demo_spec_path, TINY + ["search.trials=2", "search.concurrent=1",
                                             "search.scheduler={kind: none}"])
    out = str(tmp_path / "sweep")
    assert run_tune(spec, out, quiet=True, log=log) == 0
    rows = {r["trial_id"]: r for r in results.read_results(out).to_pylist()}
    assert len(rows) == 2 and {r["status"] for r in rows.values()} == {"completed"}

    # MLflow: one run per trial in DIR/mlflow.db, every report a step, the last equal to the row.
    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    experiment = client.get_experiment_by_name("sweep")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    for run in runs:
        trial_id = next(t for t in rows if t in run.data.tags["trial_name"])
        assert run.info.status == "FINISHED"
        assert run.data.metrics["mean_val_image_auroc"] == pytest.approx(rows[trial_id]["val_image_auroc"])
        # No Ray bookkeeping, no test metric: the objective, validation, losses and progress.
        assert "loss_loss" in run.data.metrics and "val_image_auroc" in run.data.metrics
        assert not [k for k in run.data.metrics if not k.startswith(("mean_val_", "val_", "loss_"))
                    and k not in ("progress", "epoch", "class_index", "training_iteration")], run.data.metrics
        history = client.get_metric_history(run.info.run_id, "progress")
        assert sorted(m.value for m in history) == [0.5, 1.0]  # epoch 1 of 2, then the class's end

    # W&B: one offline run per trial (its id is the trial's) in DIR/wandb, for `wandb sync`.
    if "wandb" in log:
        for trial_id in rows:
            assert [os.path.getsize(f) > 0 for f in glob.glob(
                os.path.join(out, "wandb", f"offline-run-*-{trial_id}", f"run-{trial_id}.wandb"))] == [True]

    # Tune's CSV and JSON logs in each trial's folder DIR/ray/tune/<trial>/, and no event
    # file of Tune's (its TensorBoard logger would plot Ray's bookkeeping).
    trial_dirs = sorted(glob.glob(os.path.join(out, "ray", "tune", "raysearch_trial_*")))
    assert len(trial_dirs) == 2
    for trial_dir in trial_dirs:
        with open(os.path.join(trial_dir, "result.json")) as f:
            reports = [json.loads(line) for line in f]
        assert [r["progress"] for r in reports] == [0.5, 1.0]
        with open(os.path.join(trial_dir, "progress.csv")) as f:
            assert len(f.read().strip().splitlines()) == 1 + 2  # header and two reports
        assert not glob.glob(os.path.join(trial_dir, "**", "events.out.tfevents.*"), recursive=True)

    # The curves: DIR/tensorboard/trial<Optuna number>-<trial id>/class_3, no test metric.
    runs = sorted(os.listdir(os.path.join(out, "tensorboard")))
    assert runs == sorted(f"trial{r['optuna_trial']:03d}-{t}" for t, r in rows.items())
    for run in runs:
        trial_id = run.split("-", 1)[1]
        curves = read_scalars(os.path.join(out, "tensorboard", run, "class_3"))
        assert {tag.split("/")[0] for tag in curves} == {"loss", "lr", "val"}
        assert [step for step, _ in curves["loss/total"]] == [1, 2]
        assert [step for step, _ in curves["val/image_auroc"]] == [1, 2]
        # The last epoch's mean loss is the row's final loss (float32 in the event file).
        assert curves["loss/total"][-1][1] == pytest.approx(rows[trial_id]["final_loss"], rel=1e-6)


def test_train_run_writes_one_tensorboard_run_per_class_with_clean_tags(ray_session, demo_spec_path, tmp_path):
    from raysearch.run.runner import run_train

    spec = load_spec(demo_spec_path, TINY + ["data.classes=[3,5]", "train.epochs=3", "train.eval_every=2"])
    out = str(tmp_path / "train")
    code, rows = run_train(spec, out, quiet=True)
    assert code == 0 and [r["normal_class"] for r in rows] == ["3", "5"]
    run_id = rows[0]["trial_id"]
    assert os.listdir(os.path.join(out, "tensorboard")) == [run_id]
    for row in rows:
        curves = read_scalars(os.path.join(out, "tensorboard", run_id, f"class_{row['normal_class']}"))
        losses = {tag for tag in curves if tag.startswith("loss/")}
        assert "loss/total" in losses and not any("loss_" in tag for tag in curves)
        vals = {tag for tag in curves if tag.startswith("val/")}
        assert "val/image_auroc" in vals
        # Only these groups: no Ray bookkeeping, no progress counters, no test metric.
        assert set(curves) == losses | vals | {"lr"}
        # Each class's curve starts at epoch 1: losses and lr every epoch, validation at
        # the evaluations (epoch 2, and 3, the last).
        for tag in losses | {"lr"}:
            assert [step for step, _ in curves[tag]] == [1, 2, 3], tag
        assert [step for step, _ in curves["val/image_auroc"]] == [2, 3]
        assert curves["loss/total"][-1][1] == pytest.approx(row["final_loss"], rel=1e-6)
        if row["best_epoch"] == 3:  # the row's validation score is the last evaluation's
            assert curves["val/image_auroc"][-1][1] == pytest.approx(row["val_image_auroc"], rel=1e-6)
