"""Live curves without Ray or torch: the tags and run folders of the per-epoch TensorBoard
writer, the writer itself, what --log trackers get of a report, and the --log option."""


import pytest
from helpers.sweeps import read_scalars

from raysearch.config.schema import SpecError
from raysearch.store import results
from raysearch.train import trackers


def test_parse_log_takes_repeated_and_comma_separated_names():
    assert trackers.parse_log(["mlflow,wandb", " MLflow ", ""]) == ("mlflow", "wandb")
    assert trackers.parse_log([]) == ()
    with pytest.raises(SpecError, match="unknown tracker 'neptune'; expected one of: mlflow, wandb"):
        trackers.parse_log(["neptune"])


def test_mlflow_needs_a_tracking_uri_for_a_bucket(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert trackers.mlflow_uri("/data/exp") == "sqlite:////data/exp/mlflow.db"
    with pytest.raises(SpecError, match="set MLFLOW_TRACKING_URI"):
        trackers.mlflow_uri("s3://bucket/exp")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert trackers.mlflow_uri("s3://bucket/exp") is None  # MLflow reads the variable itself


def test_curve_tags_group_losses_lr_and_validation_and_drop_everything_else():
    values = {"loss_loss": 0.5, "loss_gmm": 2.0, "lr": 0.1, "val_image_auroc": 0.9, "val_image_auroc_blur": 0.8,
              "test_image_auroc": 0.7, "mean_val_image_auroc": 0.9, "done": False, "should_checkpoint": True,
              "training_iteration": 3, "time_total_s": 12.0, "iterations_since_restore": 3, "progress": 0.5,
              "epoch": 2, "normal_class": "3", "best_class_value": 0.9, "val_pixel_auroc": None}
    assert trackers.curve_tags(values) == {"loss/total": 0.5, "loss/gmm": 2.0, "lr": 0.1, "val/image_auroc": 0.9,
                                           "val/image_auroc_blur": 0.8}
    # A spec that selects on the test split: its per-evaluation metrics are the test set's.
    assert trackers.curve_tags(values, split="test")["test/image_auroc"] == 0.9


def test_trackers_get_the_objective_validation_and_losses_without_bookkeeping_or_test():
    report = {"mean_val_image_auroc": 0.9, "mean_test_image_auroc": 0.8, "mean_latency_ms": 1.0, "val_image_auroc": 0.9,
              "test_image_auroc": 0.8, "test_aupro": 0.7, "loss_loss": 0.5, "loss_gmm": 2.0, "progress": 1.5,
              "epoch": 2, "class_index": 1, "classes_done": 1, "training_iteration": 3, "done": False,
              "should_checkpoint": True, "time_total_s": 9.0, "iterations_since_restore": 3, "trial_id": "a_1",
              "normal_class": "5", "best_class_value": 0.9, "config": {"train.lr": 0.1}}
    assert trackers.tracker_values(report) == {
        "mean_val_image_auroc": 0.9, "val_image_auroc": 0.9, "loss_loss": 0.5, "loss_gmm": 2.0, "progress": 1.5,
        "epoch": 2, "class_index": 1, "training_iteration": 3}


def test_run_folders_are_short_and_name_the_trial():
    run = results.RunInfo("demo", "tune", "8f2e1_00007", "/exp", optuna_trial=7)
    assert trackers.run_folder(run) == "trial007-8f2e1_00007"
    assert trackers.curves_dir(run, "3") == "/exp/tensorboard/trial007-8f2e1_00007/class_3"
    ablation = results.RunInfo("demo", "ablate", "8f2e1_00003", "/exp", variant="no_gmm")
    assert trackers.run_folder(ablation, seed=1) == "no_gmm-seed1-8f2e1_00003"
    train = results.RunInfo("demo", "train", "train-20260101-120000-ab12", "s3://b/exp")
    assert trackers.curves_dir(train, "0", seed=0) == "s3://b/exp/tensorboard/train-20260101-120000-ab12/class_0"


@pytest.mark.parametrize("uri", [False, True])
def test_epoch_writer_writes_each_epoch_at_its_step(tmp_path, uri):
    folder = str(tmp_path / "tensorboard" / "run" / "class_3")
    # A URI is written in a local temporary folder and copied up when the class ends.
    w = trackers.EpochWriter(("file://" + folder) if uri else folder)
    w(1, {"loss_loss": 0.5, "loss_gmm": 2.0, "lr": 0.1})
    w(2, {"loss_loss": 0.25, "loss_gmm": 1.0, "lr": 0.05, "val_image_auroc": 0.75, "epoch": 2})
    if not uri:  # flushed at every epoch: a running TensorBoard sees it before the class ends
        assert read_scalars(folder)["loss/total"] == [(1, 0.5), (2, 0.25)]
    w.close()
    w.close()
    assert read_scalars(folder) == {
        "loss/total": [(1, 0.5), (2, 0.25)],
        "loss/gmm": [(1, 2.0), (2, 1.0)],
        "lr": [(1, pytest.approx(0.1)), (2, pytest.approx(0.05))],
        "val/image_auroc": [(2, 0.75)],
    }


def test_epoch_writer_that_cannot_write_warns_once_and_never_raises(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    w = trackers.EpochWriter(str(blocker / "class_0"))
    with pytest.warns(trackers.TrackerWarning, match="per-epoch TensorBoard curves are off") as caught:
        for epoch in range(1, 4):
            w(epoch, {"loss_loss": 1.0, "lr": 0.1})
        w.close()
        trackers.EpochWriter(str(blocker / "class_1"))(1, {"loss_loss": 1.0})  # the run's next class
    assert len([c for c in caught if issubclass(c.category, trackers.TrackerWarning)]) == 1


