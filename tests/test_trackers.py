"""Live curves: the per-epoch TensorBoard writer and its train_class hook, the --log option
(a missing package is one line and exit 2 before Ray starts), and one tiny sweep with
--log mlflow (and wandb, offline, where installed) that leaves MLflow runs, W&B offline
runs, Tune's CSV/JSON/TensorBoard logs and per-epoch event files with the values the
result rows hold."""

import glob
import importlib.machinery
import importlib.util
import json
import math
import os
import struct

import pytest
from tiny import TINY

from raysearch import cli, results, trackers
from raysearch.schema import SpecError
from raysearch.spec import load_spec


def read_scalars(folder: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files in ``folder``: tag -> [(step, value), ...].

    An event file is a sequence of TFRecords (a little-endian uint64 length, its CRC, an
    ``Event`` protobuf, its CRC); tensorboardX ships the protobuf classes.
    """
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_parse_log_takes_repeated_and_comma_separated_names():
    assert trackers.parse_log(["mlflow,wandb", " MLflow ", ""]) == ("mlflow", "wandb")
    assert trackers.parse_log([]) == ()
    with pytest.raises(SpecError, match="unknown tracker 'neptune'; expected one of: mlflow, wandb"):
        trackers.parse_log(["neptune"])


@pytest.mark.parametrize("command", ["tune", "ablate"])
def test_missing_tracker_package_is_one_line_and_exit_2_before_ray(command, demo_spec_path, tmp_path, monkeypatch,
                                                                   capsys):
    real = importlib.util.find_spec
    # mlflow missing, wandb present (whichever extras this environment has)
    present = {"mlflow": None, "wandb": importlib.machinery.ModuleSpec("wandb", None)}
    monkeypatch.setattr(trackers.importlib.util, "find_spec",
                        lambda name, *a: present[name] if name in present else real(name, *a))

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started")

    monkeypatch.setattr("raysearch.ray_setup.init_ray", no_ray)
    out = tmp_path / "exp"
    code = cli.main([command, demo_spec_path, *[a for kv in TINY for a in ("--set", kv)],
                     "--output", str(out), "--log", "wandb,mlflow"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == ("raysearch: error: --log: mlflow needs the mlflow-skinny package: "
                       "pip install 'raysearch[trackers]' (or pip install mlflow-skinny)")
    assert not out.exists()  # nothing started, nothing written


def test_mlflow_needs_a_tracking_uri_for_a_bucket(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert trackers.mlflow_uri("/data/exp") == "sqlite:////data/exp/mlflow.db"
    with pytest.raises(SpecError, match="set MLFLOW_TRACKING_URI"):
        trackers.mlflow_uri("s3://bucket/exp")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert trackers.mlflow_uri("s3://bucket/exp") is None  # MLflow reads the variable itself


@pytest.mark.parametrize("uri", [False, True])
def test_epoch_writer_writes_each_epoch_under_the_class(tmp_path, uri):
    folder = str(tmp_path / "run" / "epochs")
    # A URI is written in a local temporary folder and copied up when the class ends.
    w = trackers.EpochWriter(("file://" + folder) if uri else folder, "class_3")
    w(1, {"loss_loss": 0.5, "loss_gmm": 2.0, "lr": 0.1})
    w(2, {"loss_loss": 0.25, "loss_gmm": 1.0, "lr": 0.05})
    if not uri:  # flushed at every epoch: a running TensorBoard sees it before the class ends
        assert read_scalars(folder)["class_3/loss_loss"] == [(1, 0.5), (2, 0.25)]
    w.close()
    w.close()
    assert read_scalars(folder) == {
        "class_3/loss_loss": [(1, 0.5), (2, 0.25)],
        "class_3/loss_gmm": [(1, 2.0), (2, 1.0)],
        "class_3/lr": [(1, pytest.approx(0.1)), (2, pytest.approx(0.05))],
    }


def test_epoch_writer_that_cannot_write_warns_once_and_never_raises(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    w = trackers.EpochWriter(str(blocker / "epochs"), "class_0")
    with pytest.warns(trackers.TrackerWarning, match="per-epoch TensorBoard curves are off") as caught:
        for epoch in range(1, 4):
            w(epoch, {"loss_loss": 1.0, "lr": 0.1})
        w.close()
        trackers.EpochWriter(str(blocker / "epochs"), "class_1")(1, {"loss_loss": 1.0})  # the next class
    assert len([c for c in caught if issubclass(c.category, trackers.TrackerWarning)]) == 1


def test_train_class_calls_the_hook_once_per_epoch_with_the_reported_losses(demo_spec_path):
    from raysearch.data import load_task
    from raysearch.loop import _lr_factor, train_class
    from raysearch.registry import method_class

    spec = load_spec(demo_spec_path, TINY + ["train.epochs=3", "train.eval_every=2", "train.warmup_epochs=0"])
    task = load_task(spec.data, spec.selection, "3", spec.train.seed)
    epochs, reported = [], []
    train_class(spec, task, method_class(spec.method), on_epoch=lambda e, v: epochs.append((e, v)),
                report=lambda metrics, state: reported.append(metrics))
    assert [e for e, _ in epochs] == [1, 2, 3]
    names = {k for k in reported[0] if k.startswith("loss_")}
    assert "loss_loss" in names
    for _, values in epochs:
        assert set(values) == names | {"lr"} and all(math.isfinite(v) for v in values.values())
    # The evaluation at epoch 2 reports the same epoch means the hook got.
    assert [m["epoch"] for m in reported] == [2]
    assert epochs[1][1] == pytest.approx({k: reported[0][k] for k in names} | {"lr": epochs[1][1]["lr"]})
    # The learning rate of each epoch's last step (cosine decay, no warm-up).
    steps = max(1, len(task.train) // spec.train.batch_size)
    for e, values in epochs:
        expected = spec.train.lr * _lr_factor(e * steps - 1, 3 * steps, 0)
        assert values["lr"] == pytest.approx(expected)


@pytest.mark.slow
def test_sweep_with_log_mlflow_leaves_runs_tune_logs_and_epoch_curves(ray_session, demo_spec_path, tmp_path,
                                                                      monkeypatch):
    MlflowClient = pytest.importorskip("mlflow.tracking", reason="pip install 'raysearch[trackers]'").MlflowClient

    from raysearch.tuning import run_tune

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
