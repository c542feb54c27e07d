"""Live curves in process: the train_class hook the per-epoch TensorBoard writer hangs on
(losses and lr every epoch, the validation metrics of each evaluation), and the --log
option (a missing package is one line and exit 2 before Ray starts)."""

import importlib.machinery
import importlib.util
import math

import pytest
from helpers.tiny import TINY

from raysearch import cli
from raysearch.config.spec import load_spec
from raysearch.train import trackers


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

    monkeypatch.setattr("raysearch.run.ray_setup.init_ray", no_ray)
    out = tmp_path / "exp"
    code = cli.main([command, demo_spec_path, *[a for kv in TINY for a in ("--set", kv)],
                     "--output", str(out), "--log", "wandb,mlflow"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == ("raysearch: error: --log: mlflow needs the mlflow-skinny package: "
                       "pip install 'raysearch[trackers]' (or pip install mlflow-skinny)")
    assert not out.exists()  # nothing started, nothing written


def test_train_class_calls_the_hook_once_per_epoch_with_the_reported_losses(demo_spec_path):
    from raysearch.config.registry import method_class
    from raysearch.data import load_task
    from raysearch.train.loop import _lr_factor, train_class

    spec = load_spec(demo_spec_path, TINY + ["train.epochs=3", "train.eval_every=2", "train.warmup_epochs=0"])
    task = load_task(spec.data, spec.selection, "3", spec.train.seed)
    epochs, reported = [], []
    train_class(spec, task, method_class(spec.method), on_epoch=lambda e, v: epochs.append((e, v)),
                report=lambda metrics, state: reported.append(metrics))
    assert [e for e, _ in epochs] == [1, 2, 3]
    names = {k for k in reported[0] if k.startswith("loss_")}
    val = {k for k in reported[0] if k.startswith("val_")}
    assert "loss_loss" in names and "val_image_auroc" in val
    # Losses and lr every epoch; the validation metrics where the epoch was evaluated (2, and 3, the last).
    assert [set(values) for _, values in epochs] == [names | {"lr"}, names | {"lr"} | val, names | {"lr"} | val]
    assert all(math.isfinite(v) for _, values in epochs for k, v in values.items() if not k.startswith("val_"))
    # The evaluation at epoch 2 reports the same epoch means and metrics the hook got.
    assert [m["epoch"] for m in reported] == [2]
    assert epochs[1][1] == pytest.approx({k: reported[0][k] for k in names | val} | {"lr": epochs[1][1]["lr"]},
                                         nan_ok=True)
    # The learning rate of each epoch's last step (cosine decay, no warm-up).
    steps = max(1, len(task.train) // spec.train.batch_size)
    for e, values in epochs:
        expected = spec.train.lr * _lr_factor(e * steps - 1, 3 * steps, 0)
        assert values["lr"] == pytest.approx(expected)
