"""Live curves: the per-epoch TensorBoard writer and its train_class hook, the --log option
(a missing package is one line and exit 2 before Ray starts), and one tiny sweep with
--log mlflow (and wandb, offline, where installed) that leaves MLflow runs, W&B offline
runs, Tune's CSV/JSON/TensorBoard logs and per-epoch event files with the values the
result rows hold."""

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


@pytest.mark.slow
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
        history = client.get_metric_history(run.info.run_id, "progress")
        assert sorted(m.value for m in history) == [0.5, 1.0]  # epoch 1 of 2, then the class's end

    # W&B: one offline run per trial (its id is the trial's) in DIR/wandb, for `wandb sync`.
    if "wandb" in log:
        for trial_id in rows:
            assert [os.path.getsize(f) > 0 for f in glob.glob(
                os.path.join(out, "wandb", f"offline-run-*-{trial_id}", f"run-{trial_id}.wandb"))] == [True]

    # Tune's own logs and per-epoch curves in each trial's folder DIR/ray/tune/<trial>/.
    trial_dirs = sorted(glob.glob(os.path.join(out, "ray", "tune", "raysearch_trial_*")))
    assert len(trial_dirs) == 2
    for trial_dir in trial_dirs:
        with open(os.path.join(trial_dir, "result.json")) as f:
            reports = [json.loads(line) for line in f]
        trial_id = reports[-1]["trial_id"]
        assert [r["progress"] for r in reports] == [0.5, 1.0]
        with open(os.path.join(trial_dir, "progress.csv")) as f:
            assert len(f.read().strip().splitlines()) == 1 + 2  # header and two reports
        evaluations = read_scalars(trial_dir)  # Tune's TensorBoard logger, one point per report
        assert [v for _, v in evaluations["ray/tune/progress"]] == [0.5, 1.0]
        curves = read_scalars(os.path.join(trial_dir, "epochs"))
        assert [step for step, _ in curves["class_3/loss_loss"]] == [1, 2]
        assert [step for step, _ in curves["class_3/lr"]] == [1, 2]
        # The last epoch's mean loss is the row's final loss (float32 in the event file).
        assert curves["class_3/loss_loss"][-1][1] == pytest.approx(rows[trial_id]["final_loss"], rel=1e-6)
