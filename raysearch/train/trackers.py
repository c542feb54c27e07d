"""Live curves in the trackers people already run: TensorBoard, MLflow, Weights & Biases.

Three layers, from always-on to opt-in:

* :class:`EpochWriter`: rank 0 of every run (``train``, a sweep's or an ablation's trial)
  writes each epoch's curves to TensorBoard event files, one TensorBoard run per class:
  ``DIR/tensorboard/<run>/<class>/`` (:func:`run_folder` names the run, :func:`curve_tags`
  the tags: ``loss/<term>``, ``lr``, ``val/<metric>``). Reports to Tune stay per
  evaluation, so ASHA and Ray Train's health-check poll see nothing new.
* Tune's own CSV and JSON loggers write what every evaluation reports (with Ray's
  bookkeeping) to the trial's folder ``DIR/ray/tune/<trial>/`` (``progress.csv``,
  ``result.json``); Tune's TensorBoard logger is off (:func:`tune_loggers`): its tags are
  every reported key, Ray's included, at one step per report across all classes.
* ``--log mlflow`` / ``--log wandb`` (:func:`tracker_callbacks`): Ray's own logger
  callbacks send every evaluation (:func:`tracker_values` of it) to MLflow (by default a
  SQLite store in the experiment folder) or W&B (offline unless ``WANDB_MODE`` says
  otherwise). Their packages are the ``trackers`` extra; :func:`check_trackers` refuses a
  missing one before Ray starts.

``import raysearch.train.trackers`` imports neither ray, tensorboardX, mlflow nor wandb.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from raysearch.config.schema import SpecError
from raysearch.store import results

__all__ = ["TRACKERS", "EpochWriter", "TrackerWarning", "parse_log", "check_trackers", "tracker_callbacks",
           "mlflow_uri", "curve_tags", "run_folder", "curves_dir", "tune_loggers", "tracker_values"]

# --log name -> (module it imports, the package that brings it). `pip install raysearch[trackers]`
# installs both packages.
TRACKERS: dict[str, tuple[str, str]] = {
    "mlflow": ("mlflow", "mlflow-skinny"),
    "wandb": ("wandb", "wandb"),
}
CURVES_FOLDER = "tensorboard"  # DIR/tensorboard/<run>/<class>/: the live curves, one TensorBoard run per class
MLFLOW_DB = "mlflow.db"  # the MLflow store in an experiment folder (SQLite)


class TrackerWarning(UserWarning):
    """Curves could not be written (a folder that is not writable, a missing package);
    training goes on without them."""


def parse_log(values: Iterable[str]) -> tuple[str, ...]:
    """The trackers of ``--log`` options, each repeatable or comma-separated, in order and once.

    Example:
        >>> parse_log(["mlflow,wandb", "mlflow"])
        ('mlflow', 'wandb')
    """
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in TRACKERS:
                raise SpecError(f"unknown tracker {name!r}; expected one of: {', '.join(TRACKERS)}", key="--log")
            if name not in names:
                names.append(name)
    return tuple(names)


def check_trackers(names: Sequence[str], output: str) -> None:
    """Refuse (with one line that gives the pip command) a tracker whose package is missing,
    and ``mlflow`` for a bucket ``output`` without ``MLFLOW_TRACKING_URI``; call it before
    Ray starts."""
    for name in names:
        module, package = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise SpecError(f"{name} needs the {package} package: pip install 'raysearch[trackers]' "
                            f"(or pip install {package})", key="--log")
    if "mlflow" in names:
        mlflow_uri(output)


def mlflow_uri(output: str) -> str | None:
    """Where ``--log mlflow`` writes: ``MLFLOW_TRACKING_URI`` when set (None: MLflow reads it),
    else a SQLite store in the experiment folder, ``sqlite:///DIR/mlflow.db``.

    MLflow 3 keeps its ``file://`` store in maintenance mode and refuses to open one unless
    ``MLFLOW_ALLOW_FILE_STORE=true``; SQLite is the local store it recommends (and SQLAlchemy
    is here already: Optuna's study is a SQLite file beside it).
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    if "://" in output:
        raise SpecError(f"{results.redact(output)} is a bucket; MLflow needs a local store or a server: set "
                        "MLFLOW_TRACKING_URI (e.g. http://host:5000 or sqlite:////path/mlflow.db)", key="--log")
    return f"sqlite:///{os.path.join(os.path.abspath(output), MLFLOW_DB)}"


def tracker_values(result: dict[str, Any]) -> dict[str, Any]:
    """What ``--log`` trackers get of a report: the objective's running means over classes
    (``mean_val_*``), the evaluation's validation metrics and loss terms (``val_*``,
    ``loss_*``), ``progress`` (in classes), ``epoch`` and ``class_index``, and
    ``training_iteration``, the report's index, which Ray's callbacks plot at. Not Ray's
    bookkeeping (``done``, ``time_*``, ...) nor any test metric: a search shows no test
    value live.

    Example:
        >>> tracker_values({"mean_val_image_auroc": 0.9, "mean_test_image_auroc": 0.8, "test_image_auroc": 0.8,
        ...                 "loss_loss": 0.5, "progress": 1.0, "training_iteration": 2, "done": True})
        {'mean_val_image_auroc': 0.9, 'loss_loss': 0.5, 'progress': 1.0, 'training_iteration': 2}
    """
    exact = ("progress", "epoch", "class_index", "training_iteration")
    return {k: v for k, v in result.items() if k in exact or k.startswith(("mean_val_", "val_", "loss_"))}


def tracker_callbacks(names: Sequence[str], *, experiment: str, output: str) -> list[Any]:
    """Ray Tune logger callbacks for the trackers ``names`` (see :func:`parse_log`); each
    gets :func:`tracker_values` of every report.

    ``experiment`` names the MLflow experiment and the W&B project (``MLFLOW_EXPERIMENT_NAME``
    and ``WANDB_PROJECT`` win when set). W&B runs offline unless ``WANDB_MODE`` is set, into
    ``DIR/wandb/offline-run-*`` (``WANDB_DIR`` wins); ``wandb sync`` uploads them later.
    """
    check_trackers(names, output)
    local = "://" not in output
    callbacks: list[Any] = []
    for name in names:
        if name == "mlflow":
            from raysearch.train.tracker_loggers import MLflowLogger

            callbacks.append(MLflowLogger(
                tracking_uri=mlflow_uri(output),
                experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment,
                tags={"raysearch.run.experiment": results.redact(output)},
            ))
            # Not on the console: MLflow's (and its migrations') INFO lines as it creates the store.
            for name in ("mlflow", "alembic"):
                logging.getLogger(name).setLevel(logging.WARNING)
        elif name == "wandb":
            from raysearch.train.tracker_loggers import WandbLogger

            # Ray asks for an API key unless the mode is offline or disabled, and its logging
            # actor gets only the key from this process's environment: the mode goes to
            # wandb.init explicitly.
            mode = os.environ.setdefault("WANDB_MODE", "offline")
            folder = os.environ.get("WANDB_DIR") or (os.path.abspath(output) if local else os.getcwd())
            os.makedirs(folder, exist_ok=True)
            callbacks.append(WandbLogger(
                project=os.environ.get("WANDB_PROJECT") or experiment,
                group=os.environ.get("WANDB_RUN_GROUP") or experiment,
                mode=mode,
                dir=folder,
            ))
    return callbacks


def curve_tags(values: dict[str, Any], split: str = "validation") -> dict[str, float]:
    """The TensorBoard tags of one epoch's values, grouped as TensorBoard shows them.

    ``loss_<term>`` becomes ``loss/<term>`` (the total, ``loss_loss``, ``loss/total``),
    ``lr`` stays ``lr`` and ``val_<metric>`` becomes ``val/<metric>``, or ``test/<metric>``
    where the spec selects on the test split (``selection.split: test``: its ``val_*``
    metrics are the test set's). Everything else is no curve: Ray's bookkeeping
    (``done``, ``training_iteration``, ``time_*``, ...), progress counters and the test
    metrics of a finished class.

    Example:
        >>> curve_tags({"loss_loss": 0.5, "loss_gmm": 2.0, "lr": 0.1, "val_image_auroc": 0.9, "done": False})
        {'loss/total': 0.5, 'loss/gmm': 2.0, 'lr': 0.1, 'val/image_auroc': 0.9}
    """
    val = "test" if split == "test" else "val"
    tags: dict[str, float] = {}
    for key, value in values.items():
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key == "lr":
            tag = "lr"
        elif key.startswith("loss_"):
            term = key[len("loss_"):]
            tag = f"loss/{'total' if term == 'loss' else term}"
        elif key.startswith("val_"):
            tag = f"{val}/{key[len('val_'):]}"
        else:
            continue
        tags[tag] = float(value)
    return tags


def run_folder(run: results.RunInfo, seed: int | None = None) -> str:
    """The short name of a run's curves, a folder of ``DIR/tensorboard/``: the Optuna
    number and trial id of a sweep's trial (``trial007-8f2e1_00007``), the variant, seed
    and trial id of an ablation's (``no_gmm-seed1-8f2e1_00003``), the run id of
    ``raysearch train`` (``train-20260101-120000-ab12``).

    Example:
        >>> run_folder(results.RunInfo("demo", "tune", "8f2e1_00007", "/x", optuna_trial=7))
        'trial007-8f2e1_00007'
    """
    if run.optuna_trial is not None:
        return f"trial{run.optuna_trial:03d}-{run.trial_id}"
    if run.variant is not None:
        return f"{run.variant}-seed{seed}-{run.trial_id}" if seed is not None else f"{run.variant}-{run.trial_id}"
    return run.trial_id


def curves_dir(run: results.RunInfo, normal_class: str, seed: int | None = None) -> str:
    """The folder of one class's curves: ``DIR/tensorboard/<run>/class_<class>``, a
    TensorBoard run of its own (so each class's curve starts at epoch 1)."""
    return results.join(run.storage, CURVES_FOLDER, run_folder(run, seed), f"class_{normal_class}")


def tune_loggers() -> list[Any]:
    """Tune's CSV and JSON logger callbacks, given explicitly so that Tune adds no logger
    of its own while ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS`` is set (its TensorBoard logger
    would plot Ray's bookkeeping; :class:`EpochWriter` writes the curves)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [CSVLoggerCallback(), JsonLoggerCallback()]


_warned: set[str] = set()


def _warn_once(folder: str, why: str) -> None:
    """One warning per run: the classes of a run share the parent of their folders."""
    run = folder.rstrip("/").rsplit("/", 1)[0]
    if run in _warned:
        return
    _warned.add(run)
    warnings.warn(f"per-epoch TensorBoard curves are off for {results.redact(folder)}: {why}; training goes on",
                  TrackerWarning, stacklevel=3)


class EpochWriter:
    """Per-epoch TensorBoard scalars of one class of a run: a :func:`raysearch.train.loop.train_class`
    ``on_epoch`` hook.

    Each call writes the epoch's values under the tags of :func:`curve_tags` at step =
    epoch (1-based) and flushes, so a running TensorBoard shows the epoch at once. ``folder``
    holds one class (:func:`curves_dir`); ``split`` is the spec's ``selection.split``.
    The event file is made
    at the first epoch (a class that does not train leaves none). A local ``folder`` is
    written directly; on a bucket (``s3://...``) the file is written in a local temporary
    folder and copied up by :meth:`close`.

    Never stops training: a folder it cannot write, or tensorboardX missing, gives one
    :class:`TrackerWarning` and the run goes on without curves.

    Example:
        >>> w = EpochWriter("/tmp/exp/tensorboard/train-1/class_3")  # doctest: +SKIP
        >>> w(1, {"loss_loss": 0.9, "lr": 0.01, "val_image_auroc": 0.8}); w.close()  # doctest: +SKIP
    """

    def __init__(self, folder: str, split: str = "validation"):
        self.folder, self.split = folder, split
        self._writer: Any = None
        self._local: str | None = None
        self._off = False

    def _open(self) -> Any:
        try:
            from tensorboardX.event_file_writer import EventsWriter
        except ImportError:
            self._off = True
            _warn_once(self.folder, "tensorboardX is not installed (pip install tensorboardX)")
            return None
        try:
            if "://" in self.folder:
                self._local = tempfile.mkdtemp(prefix="raysearch-epochs-")
            local = self._local or self.folder
            os.makedirs(local, exist_ok=True)
            # tensorboardX's synchronous writer (its SummaryWriter queues events for a thread,
            # and its flush does not wait for them). A class restarted in the same second
            # (a resumed run) writes a second file beside the first, not over it.
            return EventsWriter(os.path.join(local, "events"), f".{os.getpid()}.{time.time_ns()}")
        except Exception as err:  # noqa: BLE001 - no curves is no reason to stop a run
            self._off = True
            _warn_once(self.folder, f"{type(err).__name__}: {err}")
            return None

    def __call__(self, epoch: int, values: dict[str, float]) -> None:
        if self._off:
            return
        try:
            if self._writer is None:
                self._writer = self._open()
                if self._writer is None:
                    return
            from tensorboardX.proto.event_pb2 import Event
            from tensorboardX.proto.summary_pb2 import Summary

            # A NaN loss is written too: it shows where a run diverged.
            scalars = [Summary.Value(tag=tag, simple_value=value)
                       for tag, value in curve_tags(values, self.split).items()]
            self._writer.write_event(Event(wall_time=time.time(), step=epoch, summary=Summary(value=scalars)))
            self._writer.flush()
        except Exception as err:  # noqa: BLE001
            self._off = True
            _warn_once(self.folder, f"{type(err).__name__}: {err}")

    def close(self) -> None:
        """Close the event file (on a bucket: copy it up); safe to call twice."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            writer.close()
            if self._local is not None:
                for name in os.listdir(self._local):
                    with open(os.path.join(self._local, name), "rb") as f:
                        results.write_bytes(results.join(self.folder, name), f.read())
        except Exception as err:  # noqa: BLE001
            _warn_once(self.folder, f"{type(err).__name__}: {err}")
        finally:
            if self._local is not None:
                shutil.rmtree(self._local, ignore_errors=True)
                self._local = None
