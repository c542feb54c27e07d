"""Ray Train: the per-worker loop over a spec's classes and the TorchTrainer factory.

One *run* trains one config over all classes of its spec, in the spec's fixed order, on
``train.workers`` Ray Train workers (DDP when there are several, GPU when
``train.gpus_per_worker`` > 0); a single-worker sweep trial runs the same loop in its
Tune trial's own process (:class:`TrialSession`). Each finished class becomes one result row, written by rank 0 straight into the experiment's storage, and
its best and last model states are kept as ``checkpoints/<run>/<class>/{best,last}.pt``.
Every evaluation reports metrics to Ray (and a resumable Ray checkpoint), so a worker
lost mid-run restarts from its last evaluation.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch

from raysearch.config import registry
from raysearch.config.objective import final_means, running_means
from raysearch.config.selection import selection_metric
from raysearch.config.spec import Spec, spec_from_dict
from raysearch.data import load_task
from raysearch.data.base import OneClassTask
from raysearch.methods.base import Method
from raysearch.store import results
from raysearch.store.results import RunInfo
from raysearch.train.loop import ClassResult, ReportFn, train_class
from raysearch.train.progress import progress as run_progress
from raysearch.train.trackers import EpochWriter, curves_dir

__all__ = ["TrainSession", "TrialSession", "make_trainer", "worker_loop", "loop_config", "class_row", "class_means"]

def _save_state(uri: str, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    results.write_bytes(uri, buf.getvalue())


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def memory_mb(device: torch.device) -> dict[str, float | None]:
    """This process's memory now and at its peak, and the device's peak since the last reset."""
    import resource

    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        rss = None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if rss is not None:
        peak = max(peak, rss)  # the kernel updates its high-water mark lazily
    device_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"host_rss_mb": rss, "host_peak_rss_mb": peak, "device_peak_mb": device_peak}


def class_row(spec: Spec, run: RunInfo, result: ClassResult, class_index: int, wall: float,
              device: torch.device, checkpoint: str | None) -> dict[str, Any]:
    """The result row of a finished class."""
    import ray

    row = results.base_row(spec, run)
    row.update(
        status="completed",
        normal_class=result.normal_class,
        class_index=class_index,
        epochs=result.epochs_run,
        best_epoch=result.best_epoch,
        final_loss=result.final_loss,
        train_time_s=result.train_time_s,
        wall_time_s=wall,
        num_params=result.num_params,
        latency_ms=result.latency_ms,
        device=_device_name(device),
        node_id=ray.get_runtime_context().get_node_id(),
        weights=result.facts.get("weights"),
        facts=json.dumps(result.facts, sort_keys=True, default=str),
        checkpoint=None if checkpoint is None else results.redact(checkpoint),
        resumed_epoch=result.resumed_epoch,
        val_normals=result.val_counts[0],
        val_anomalies=result.val_counts[1],
        **memory_mb(device),
    )
    row.update({k: v for k, v in result.metrics.items() if k in results.METRIC_COLUMNS})
    return row


# Metrics averaged over classes in every report (``mean_<name>``); searches optimise these.
MEAN_METRICS = (*results.METRIC_COLUMNS, "latency_ms", "num_params")


def class_means(per_class: list[dict[str, Any]], n_classes: int | None = None) -> dict[str, float]:
    """``mean_<metric>`` of a report: over the classes so far while the run goes on; given
    the run's ``n_classes`` once every class has ended, the trial's value, NaN unless every
    class has one (:mod:`raysearch.config.objective`, the rule the ranking applies)."""
    if n_classes is not None and len(per_class) >= n_classes:
        return final_means(per_class, MEAN_METRICS, n_classes)
    return running_means(per_class, MEAN_METRICS)


class _Session:
    """Checkpoints and reports through ``api``: ``ray.train`` and ``ray.tune`` share the calls."""

    api = "ray.train"

    def checkpoint(self):
        return importlib.import_module(self.api).get_checkpoint()

    def report(self, metrics: dict[str, Any], directory: str | None = None) -> None:
        api = importlib.import_module(self.api)
        ckpt = None if directory is None else api.Checkpoint.from_directory(directory)
        api.report(metrics, checkpoint=ckpt)


class TrainSession(_Session):
    """A Ray Train worker's view: its rank, device, checkpoint and reports."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
            return model
        import ray.train.torch

        return ray.train.torch.prepare_model(
            model, move_to_device=False, parallel_strategy_kwargs={"static_graph": True}
        )


class TrialSession(_Session):
    """A single-worker run inside a Ray Tune trial's own process (no Ray Train worker group).

    The trial's resource request holds the CPUs and GPU (fraction) that a Train worker
    would hold; reports and checkpoints go straight to Tune.
    """

    api = "ray.tune"
    rank, world = 0, 1

    def __init__(self) -> None:
        import ray

        gpus = ray.get_gpu_ids()  # Ray sets CUDA_VISIBLE_DEVICES to the trial's GPU
        self.device = torch.device("cuda", 0) if gpus and torch.cuda.is_available() else torch.device("cpu")

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model


TEST_EVENTS = "RAYSEARCH_TEST_EVENTS"


def test_event(name: str) -> None:
    """A hook for tests that stop a run at a known point instead of sleeping.

    With ``RAYSEARCH_TEST_EVENTS`` set to a folder, rank 0 creates ``<folder>/<name>``
    after each checkpointed report, then waits while ``<folder>/hold`` exists and is
    empty or holds a pattern (``fnmatch``) that ``name`` matches. Unset (as in every real
    run) it does nothing. :func:`worker_loop` hands it to its reporter as the hook called
    after each checkpointed report.
    """
    import fnmatch

    folder = os.environ.get(TEST_EVENTS)
    if not folder:
        return
    with open(os.path.join(folder, name), "w"):
        pass
    hold = os.path.join(folder, "hold")
    while True:
        try:
            with open(hold) as f:
                pattern = f.read().strip()
        except FileNotFoundError:
            return
        if pattern and not fnmatch.fnmatch(name, pattern):
            return
        time.sleep(0.05)


def _load_class(spec: Spec, run: RunInfo, index: int, name: str, rank: int, device: torch.device):
    """The data of one class, or None when it cannot be read (rank 0 writes the class's
    failed row with the file and the reason; the run goes on with the next class)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        return load_task(spec.data, spec.selection, name, spec.train.seed)
    except Exception as err:  # noqa: BLE001 - this class's data is broken, not the run
        if rank == 0:
            reason = f"data of class {name}: {results.failure_reason(err)}"
            results.write_unfinished_rows(spec, run, reason, classes=[(index, name)])
        return None


def _prepare_device(spec: Spec, device: torch.device, cpus_per_worker: float | None) -> None:
    """This worker's threads and device, or an error when the spec wants a GPU it cannot use."""
    import ray

    if spec.train.gpus_per_worker > 0 and device.type != "cuda":
        # Never a silent CPU run on a GPU node: a driver too old for this torch build,
        # or a CPU-only torch, makes torch.cuda unusable.
        raise RuntimeError(
            f"train.gpus_per_worker is {spec.train.gpus_per_worker} but torch {torch.__version__} cannot use "
            f"a GPU on node {ray.get_runtime_context().get_node_id()[:12]} (torch.cuda.is_available() is "
            f"{torch.cuda.is_available()}); check the NVIDIA driver against the torch CUDA build "
            f"{torch.version.cuda}"
        )
    # A worker computes with the CPUs it holds (Ray's OMP_NUM_THREADS is no guide: it is 1
    # for a worker of several CPUs). A trial process reused by Tune sets it again per trial.
    torch.set_num_threads(spec.train.worker_threads(cpus_per_worker or spec.train.worker_cpus()))
    if device.type == "cuda":
        torch.cuda.set_device(device)
        if spec.train.gpus_per_worker and spec.train.gpus_per_worker < 1:
            # Logical GPU fractions do not cap memory: cap it here to this trial's share.
            torch.cuda.set_per_process_memory_fraction(float(spec.train.gpus_per_worker), device)


class _Reporter:
    """A run's reports to Ray (and to the progress queue on rank 0), each with its resumable
    checkpoint when it has one.

    Two checkpoint contents: an evaluation inside a class stores
    ``{"class_index", "finished", "resume": the loop's state}``; a class's closing report
    stores the worker's state after the class (``"resume"`` None). ``on_checkpoint`` is
    called on rank 0 with a name after each checkpointed report (:func:`test_event`).
    """

    def __init__(self, session: TrainSession | TrialSession, spec: Spec, run: RunInfo, n_classes: int,
                 progress: Any, on_checkpoint: Callable[[str], None]) -> None:
        self.session, self.spec, self.run, self.n_classes = session, spec, run, n_classes
        self.progress, self.on_checkpoint = progress, on_checkpoint
        self.reported: list[int] = []  # the class of every report sent, in order

    def during_class(self, ci: int, finished: dict[str, dict[str, float]]) -> ReportFn:
        """The ``report`` that :func:`train_class` calls inside class ``ci``."""
        return functools.partial(self.evaluation, ci, finished)

    def evaluation(self, ci: int, finished: dict[str, dict[str, float]], metrics: dict[str, Any],
                   resumable: dict[str, Any] | None) -> None:
        """An evaluation inside class ``ci`` (``finished``: the classes before it), with the
        loop's resumable state, or None."""
        metrics = dict(metrics, class_index=ci, classes_done=len(finished))
        metrics.update(class_means([*finished.values(), metrics]))
        saved = None if resumable is None else {"class_index": ci, "finished": dict(finished), "resume": resumable}
        self._send(ci, metrics, saved)

    def class_end(self, ci: int, metrics: dict[str, Any], state: dict[str, Any], checkpoint: bool) -> None:
        """Class ``ci`` has ended (it is in ``state["finished"]`` already); with
        ``checkpoint`` the worker's ``state`` is stored with the report."""
        finished = state["finished"]
        metrics = dict(metrics, class_index=ci, classes_done=len(finished))
        metrics.update(class_means(list(finished.values()), self.n_classes))
        self._send(ci, metrics, state if checkpoint else None)

    def run_end_again(self, finished: dict[str, dict[str, float]]) -> None:
        """The run's end once more, for a run restored from a checkpoint taken after its last class."""
        self.session.report(dict(class_means(list(finished.values()), self.n_classes), progress=self.n_classes,
                                 classes_done=len(finished)))

    def _send(self, ci: int, metrics: dict[str, Any], saved: dict[str, Any] | None) -> None:
        rank = self.session.rank
        if self.progress is not None and rank == 0:
            self.progress.put_nowait(dict(metrics, total_classes=self.n_classes, epochs=self.spec.train.epochs))
        if saved is None:
            self.session.report(metrics)
        else:
            with tempfile.TemporaryDirectory(prefix="raysearch-ckpt-") as tmp:
                torch.save(saved, os.path.join(tmp, "state.pt"))
                self.session.report(metrics, tmp)  # persisted to the run's storage before it returns
            if rank == 0:
                self.on_checkpoint(f"checkpoint-{self.run.trial_id}-{ci}-{metrics.get('epoch')}")
        self.reported.append(ci)


class _Worker:
    """One worker's pass over the classes of a run: restore, train each class, store its
    row and models (rank 0), report its end."""

    def __init__(self, spec: Spec, run: RunInfo, session: TrainSession | TrialSession, method_cls: type[Method],
                 classes: list[str], reporter: _Reporter) -> None:
        self.spec, self.run, self.session, self.reporter = spec, run, session, reporter
        self.method_cls, self.classes = method_cls, classes

    def restored_state(self) -> dict[str, Any]:
        """The worker's state from the session's checkpoint (a restarted run), or that of a
        new run: ``{"class_index": next class, "finished": {class: its means' inputs},
        "resume": the loop's state inside that class or None}``."""
        checkpoint = self.session.checkpoint()
        if checkpoint is None:
            return {"class_index": 0, "finished": {}, "resume": None}
        with checkpoint.as_directory() as d:
            return torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=True)

    def run_class(self, ci: int, state: dict[str, Any]) -> dict[str, Any]:
        """Class ``ci``, from ``state`` (the worker's state before it); the state after it."""
        started = time.perf_counter()
        finished: dict[str, dict[str, float]] = state["finished"]
        metrics, final_loss = self._outcome(ci, state["resume"], finished, started)
        state = {"class_index": ci + 1, "finished": finished, "resume": None}
        # The class's closing report, after its row is stored: a scheduler may stop the
        # run here and nothing is lost. Its progress is the end of the class, so the last
        # class's report is the run's full fidelity.
        epochs = self.spec.train.epochs
        end = dict(
            metrics,
            epoch=epochs,
            normal_class=self.classes[ci],
            progress=run_progress(ci, epochs, epochs),
            best_class_value=metrics.get(selection_metric(self.spec)),
            loss_loss=final_loss,
        )
        self.reporter.class_end(ci, end, state, checkpoint=self.session.rank == 0 and self.spec.train.checkpoint)
        return state

    def _outcome(self, ci: int, resume: dict[str, Any] | None, finished: dict[str, dict[str, float]],
                 started: float) -> tuple[dict[str, Any], float | None]:
        """Class ``ci``'s metrics and final loss, from its stored row or from training it
        (an empty outcome when its data is broken); ``finished`` gains the class."""
        normal_class = self.classes[ci]
        # A stored row wins over a mid-class checkpoint: a run stopped between writing a
        # class's row and reporting its end resumes from an earlier checkpoint, and must
        # not train the class again (its row would change).
        stored = results.completed_row(self.run, ci, normal_class)
        if stored is not None:
            # A restarted run (a resumed sweep, a retried worker group) keeps the row that
            # an earlier attempt wrote for this class and does not train it again.
            finished[normal_class] = {k: stored.get(k) for k in MEAN_METRICS}
            return {k: stored.get(k) for k in results.METRIC_COLUMNS}, stored.get("final_loss")
        task = _load_class(self.spec, self.run, ci, normal_class, self.session.rank, self.session.device)
        if task is None:  # its data is broken: its row says why, and the next class trains
            return {}, None
        result = self._train(ci, task, resume, finished)
        if self.session.rank == 0:
            self._persist(ci, result, started)
        finished[normal_class] = dict(result.metrics, latency_ms=result.latency_ms, num_params=result.num_params)
        return result.metrics, result.final_loss

    def _train(self, ci: int, task: OneClassTask, resume: dict[str, Any] | None,
               finished: dict[str, dict[str, float]]) -> ClassResult:
        """Train class ``ci`` (from ``resume`` when given), reporting every evaluation."""
        rank = self.session.rank
        # Rank 0's per-epoch curves of this class, closed (a bucket's copied up) when it ends.
        curves = None if rank else EpochWriter(curves_dir(self.run, self.classes[ci], self.spec.train.seed),
                                               self.spec.selection.split)
        try:
            return train_class(
                self.spec,
                task,
                self.method_cls,
                self.session.device,
                rank=rank,
                world=self.session.world,
                wrap_model=self.session.wrap,
                report=self.reporter.during_class(ci, finished),
                resume=resume,
                class_offset=ci,
                on_epoch=curves,
            )
        finally:
            if curves is not None:
                curves.close()

    def _persist(self, ci: int, result: ClassResult, started: float) -> None:
        """Rank 0: the class's best and last models (with checkpoints on) and its result row."""
        spec, run, normal_class = self.spec, self.run, self.classes[ci]
        ckpt_uri = None
        if spec.train.checkpoint:
            base = results.join(run.storage, "checkpoints", run.trial_id, normal_class)
            for which, model_state in result.states.items():
                if model_state is not None:
                    _save_state(results.join(base, f"{which}.pt"), model_state)
            ckpt_uri = results.join(base, "best.pt")
        row = class_row(spec, run, result, ci, time.perf_counter() - started, self.session.device, ckpt_uri)
        results.write_rows(results.results_dir(run.storage), results.config_schema(spec), [row],
                           results.row_name(run, ci, normal_class))


def worker_loop(config: dict[str, Any], session: TrainSession | TrialSession | None = None) -> None:
    """``train_loop_per_worker``: every class of the spec, in order, on this worker.

    Ray Train calls it with the config alone; a sweep trial that runs in its own
    process passes a :class:`TrialSession`.
    """
    spec = spec_from_dict(config["spec"], source=config.get("source", "<spec>"))
    run = RunInfo(**config["run"])
    progress = config.get("progress")
    session = session or TrainSession()
    _prepare_device(spec, session.device, config.get("cpus_per_worker"))
    method_cls = registry.method_class(spec.method)
    classes = spec.classes()
    reporter = _Reporter(session, spec, run, len(classes), progress, on_checkpoint=test_event)
    worker = _Worker(spec, run, session, method_cls, classes, reporter)
    state = worker.restored_state()
    for ci in range(state["class_index"], len(classes)):
        state = worker.run_class(ci, state)
    if state["class_index"] == len(classes) and not reporter.reported:
        # Restored from a checkpoint taken after the last class: report the run's end again.
        reporter.run_end_again(state["finished"])
    if progress is not None and session.rank == 0:
        progress.put_nowait(None)


def loop_config(spec: Spec, run: RunInfo, progress: Any = None, cpus_per_worker: float | None = None) -> dict[str, Any]:
    """The config :func:`worker_loop` takes (plain data that Ray can ship). ``cpus_per_worker``:
    the CPUs each worker holds when they are not ``spec.train.worker_cpus()`` (``raysearch
    train`` resolves a null ``train.cpus_per_worker`` to the free CPUs); sets its threads."""
    return {"spec": spec.to_dict(), "source": spec.source, "run": asdict(run), "progress": progress,
            "cpus_per_worker": cpus_per_worker}


def make_trainer(
    spec: Spec,
    run: RunInfo,
    *,
    progress: Any = None,
    callbacks: list | None = None,
    max_failures: int | None = None,
    storage_path: str | None = None,
    cpus_per_worker: float | None = None,
):
    """A TorchTrainer that runs ``spec`` as one run named ``run.trial_id``.

    Ray keeps one resumable checkpoint (the latest evaluation) per run; the best and
    last model of every class are written by :func:`worker_loop` itself. Each worker
    holds ``cpus_per_worker`` CPUs (default ``spec.train.worker_cpus()``).
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    t = spec.train
    storage = storage_path or results.join(run.storage, "ray")
    path, filesystem = results.ray_storage(storage)
    use_gpu = t.gpus_per_worker > 0
    cpus = cpus_per_worker or t.worker_cpus()
    resources = {"CPU": cpus}
    if use_gpu:
        resources["GPU"] = t.gpus_per_worker
    return TorchTrainer(
        worker_loop,
        train_loop_config=loop_config(spec, run, progress, cpus),
        scaling_config=ray.train.ScalingConfig(
            num_workers=t.workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=run.trial_id,
            storage_path=path,
            storage_filesystem=filesystem,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(
                max_failures=t.max_failures if max_failures is None else max_failures
            ),
            callbacks=callbacks,
        ),
    )
