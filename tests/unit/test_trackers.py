"""Live curves: the per-epoch TensorBoard writer and its train_class hook, the --log option
(a missing package is one line and exit 2 before Ray starts), and one tiny sweep with
--log mlflow (and wandb, offline, where installed) that leaves MLflow runs, W&B offline
runs, Tune's CSV/JSON/TensorBoard logs and per-epoch event files with the values the
result rows hold."""


import pytest
from helpers.sweeps import read_scalars

from raysearch.config.schema import SpecError
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


