"""Planning and running an experiment of many trials on Ray Tune: used by tune and ablate.

One Tune trial is one config trained over the spec's classes by the per-worker loop of
:mod:`raysearch.train.worker`. A single-worker trial runs that loop in its own Tune process,
which reserves the worker's CPUs and GPU fraction: no worker group to start per trial.
A multi-worker (DDP) trial is a small driver that reserves nothing and runs a Ray Train
TorchTrainer, with ``TuneReportCallback`` forwarding rank 0's reports; its workers own
the resources. ``train.launcher: train`` sends every trial through Ray Train.

Here live the trial plan (:class:`TrialPlan`: how a Tune config becomes a spec and the
names its rows carry), the trainable (:class:`TrialDriver`), the rows of trials that did
not finish and the live line (:class:`SweepRows`), the checks before a run starts or
resumes, and Ctrl-C / SIGTERM handling. The searcher is in :mod:`raysearch.run.searcher`,
Ray start-up in :mod:`raysearch.run.ray_setup`, row building in :mod:`raysearch.store.results`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from ray.tune import Callback
from ray.tune.search import Searcher

from raysearch.config.objective import metric_of
from raysearch.config.schema import SpecError
from raysearch.config.spec import Spec
from raysearch.run.searcher import OPTUNA_KEY, StudySync
from raysearch.store import results
from raysearch.train.progress import SweepLine, finished
from raysearch.train.trackers import tracker_callbacks, tune_loggers

__all__ = ["TrialPlan", "TrialDriver", "SweepRows", "run_experiment", "check_resume", "finished_runs",
           "graceful_stop", "interrupted_exit", "resume_hint", "Job", "run_job", "check_same_spec", "experiment_paths", "in_trial_process", "reuse_processes",
           "VARIANT_KEY", "ROWS_OF_KEY", "heal_rows", "train_lost_classes"]

VARIANT_KEY = "__variant"  # the ablation variant of a trial ("full" or a factor name)
ROWS_OF_KEY = "__rows_of"  # the trial whose lost rows a repair trial writes again
EXPERIMENT = "tune"  # Ray's experiment folder under DIR/ray/


class TrialPlan:
    """How a Tune config becomes a trial: its spec and the identity its rows carry.

    Sweeps put sampled values (dotted keys) and the Optuna trial number in the config;
    ablations put a variant name (a key of ``variants``, whose overrides apply) and a
    seed. Picklable: Tune saves it with the experiment.
    """

    def __init__(self, spec: Spec, output: str, kind: str, variants: dict[str, dict[str, Any]] | None = None):
        self.spec_dict, self.source, self.name = spec.to_dict(), spec.source, spec.name
        self.output, self.kind, self.variants = output, kind, dict(variants or {})

    def overrides(self, config: dict[str, Any]) -> dict[str, Any]:
        out = dict(self.variants.get(config.get(VARIANT_KEY), {}))
        out.update({k: v for k, v in config.items() if not k.startswith("__")})
        return out

    def trial_spec(self, config: dict[str, Any]) -> Spec:
        from raysearch.config.spec import spec_from_dict

        return spec_from_dict(self.spec_dict, source=self.source).with_overrides(self.overrides(config))

    def resources(self, config: dict[str, Any]):
        """The Tune resource request of a trial (a callable for ``tune.with_resources``)."""
        from ray.tune.execution.placement_groups import resource_dict_to_pg_factory

        t = self.trial_spec(config).train
        if in_trial_process(t):
            return resource_dict_to_pg_factory({"cpu": t.worker_cpus(), "gpu": t.gpus_per_worker})
        # The driver only waits on its Train run: it takes no CPU, so the workers can use
        # every CPU of a node (Tune refuses an all-zero request, hence one byte of memory).
        return resource_dict_to_pg_factory({"cpu": 0, "memory": 1})

    def label(self, trial_id: str, config: dict[str, Any]) -> str:
        """How the console names a trial: ``#6`` (its Optuna number) in a sweep, ``no_gmm
        seed 1`` (variant and seed) in an ablation, else its trial id."""
        if config.get(OPTUNA_KEY) is not None:
            return f"#{config[OPTUNA_KEY]}"
        if config.get(VARIANT_KEY) is not None:
            seed = config.get("train.seed")
            return config[VARIANT_KEY] + ("" if seed is None else f" seed {seed}")
        return trial_id

    def run_info(self, trial_id: str, config: dict[str, Any]):
        """The identity of a trial's rows: Tune's trial id, or, for a trial that trains a
        finished trial's lost classes again (:func:`train_lost_classes`), that trial's."""
        return results.RunInfo(experiment=self.name, kind=self.kind, trial_id=config.get(ROWS_OF_KEY, trial_id),
                               storage=self.output, optuna_trial=config.get(OPTUNA_KEY),
                               variant=config.get(VARIANT_KEY))


def in_trial_process(train) -> bool:
    """Whether a trial trains in its own Tune process (one worker) rather than through Ray Train."""
    return train.launcher in ("auto", "fresh") and train.workers == 1


def reuse_processes(train) -> bool:
    """Whether Tune hands a finished trial's process to the next trial (``reuse_actors``)."""
    return train.launcher == "auto" and in_trial_process(train)


class TrialDriver:
    """The Tune trainable: one trial trains its config over the spec's classes.

    A picklable callable (Tune stores it with the experiment). The rows of a failed
    or stopped trial are written by :class:`SweepRows`, the single writer, after Tune
    has decided what became of the trial.
    """

    def __init__(self, plan: TrialPlan, runs_path: str):
        self.plan, self.runs_path = plan, runs_path
        self.__name__ = "raysearch_trial"  # Tune names trainables after their function

    def __call__(self, config: dict[str, Any]) -> None:
        from ray import tune

        from raysearch.train.worker import TrialSession, loop_config, make_trainer, worker_loop

        spec = self.plan.trial_spec(config)
        run = self.plan.run_info(tune.get_context().get_trial_id(), config)
        try:
            if in_trial_process(spec.train):
                worker_loop(loop_config(spec, run), TrialSession())
            else:
                from ray.tune.integration.ray_train import TuneReportCallback

                make_trainer(spec, run, callbacks=[TuneReportCallback()], storage_path=self.runs_path).fit()
        except Exception as err:
            raise TrialFailed(results.failure_reason(err)) from None
        finally:
            # A reused process hands what this trial built (models, data, optimizer
            # state, often in reference cycles) back before the next trial starts.
            gc.collect()


class TrialFailed(RuntimeError):
    """A trial's training failed; its rows say why."""


def experiment_paths(output: str) -> tuple[str, str]:
    """Ray's folder of an experiment and the Tune experiment inside it."""
    ray_dir = results.join(output if "://" in output else os.path.abspath(output), "ray")
    return ray_dir, results.join(ray_dir, EXPERIMENT)


# What an experiment folder holds once a run has started in it (a report folder does not count).
EXPERIMENT_ENTRIES = ("ray", "results", "optuna.db", "checkpoints")


def check_resume(output: str, resume: bool, what: str) -> None:
    """Refuse to resume nothing, or to start over (and mix with) an existing experiment."""
    _, experiment_path = experiment_paths(output)
    if resume and not _can_restore(experiment_path):
        raise SpecError(f"nothing to resume: no {what} state under {experiment_path}", key="--resume")
    if not resume:
        used = [name for name in EXPERIMENT_ENTRIES if results.exists(results.join(output, name))]
        if used:
            raise SpecError(f"{results.redact(output)} already holds an experiment ({', '.join(used)}); pass --resume "
                            "to continue it or --output elsewhere", key="--output")


# What may differ between a run and its resumption: where the data is (its content is
# checked by the data fingerprint) and the spec's record of where it came from.
_MAY_DIFFER = ("data.root", "provenance")


def spec_changes(output: str, spec: Spec) -> list[str]:
    """How ``spec`` differs from the one an experiment folder recorded (``spec.yaml``):
    ``key: new (was old)`` lines, or, for the same spec, how its data differs from the
    recorded fingerprint (``data: class bottle: 209 files (was 210)``); [] when the
    folder has no spec or they agree."""
    import yaml

    uri = results.join(output, "spec.yaml")
    if not results.exists(uri):
        return []
    try:
        old = yaml.safe_load(results.read_bytes(uri)) or {}
    except yaml.YAMLError:
        return [f"{results.redact(uri)} is not readable YAML"]
    before = _leaves(old)
    after = _leaves(yaml.safe_load(yaml.safe_dump(spec.to_dict(), sort_keys=False)))
    keys = sorted(k for k in set(before) | set(after)
                  if not k.startswith(_MAY_DIFFER) and before.get(k) != after.get(k))
    changes = [f"{k}: {after.get(k)!r} (was {before.get(k)!r})" for k in keys]
    recorded = (old.get("provenance") or {}).get("data_fingerprint")
    if recorded and not changes:
        from raysearch.data.checks import data_fingerprint, fingerprint_changes

        changes = [f"data: {c}" for c in fingerprint_changes(recorded, data_fingerprint(spec.data, spec.classes()))]
    return changes


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_leaves(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): tree}


def check_same_spec(output: str, spec: Spec, what: str) -> None:
    """Refuse to resume an experiment, or to add a train run to a folder, with another spec."""
    changes = spec_changes(output, spec)
    if changes:
        shown = "; ".join(changes[:5]) + (f"; and {len(changes) - 5} more" if len(changes) > 5 else "")
        if changes[0].startswith("data: "):
            raise SpecError(f"{results.redact(output)} holds {what} of other data ({shown}); restore the data "
                            "it ran on, or use another --output", key="--output")
        raise SpecError(f"{results.redact(output)} holds {what} of another spec ({shown}); use the same spec and "
                        "--set options, or another --output", key="--output")


def stored_statuses(output: str, kind: str) -> dict[str, dict[int, str]]:
    """The readable rows of ``kind`` in the store, as trial id -> {class index: status}
    (one read of the store; a file that cannot be read counts as missing)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", results.UnreadableResultWarning)  # such a class is not done
        try:
            table = results.read_results(output)
        except FileNotFoundError:
            return {}
    if table.num_rows == 0:
        return {}
    statuses: dict[str, dict[int, str]] = {}
    for r in table.select(["kind", "trial_id", "class_index", "status"]).to_pylist():
        if r["kind"] == kind and r["class_index"] is not None:
            statuses.setdefault(r["trial_id"], {})[r["class_index"]] = r["status"]
    return statuses


def finished_runs(output: str, kind: str, n_classes: int) -> int:
    """Trials of ``kind`` with a final row (completed, pruned or failed) for every class."""
    return sum(len(c) >= n_classes for c in stored_statuses(output, kind).values())


# After a signal, how often the driver checks that its Ray still answers, and how many
# failed checks in a row mean that Ray died with the signal (sent to the whole group).
RAY_CHECK_S = 0.5
RAY_LOST_AFTER = 3


@contextlib.contextmanager
def graceful_stop(on_signal: Callable[[], None] | None = None,
                  on_ray_lost: Callable[[list[int]], None] | None = None):
    """Ctrl-C (SIGINT) and SIGTERM ask a run to stop instead of killing it; yields the list
    of signals received. A second signal aborts at once (KeyboardInterrupt).

    By default the stop is Tune's own: trials are checkpointed and stay resumable. Tune's
    SIGINT handler is turned off (``TUNE_DISABLE_SIGINT_HANDLER``) so that the signal is
    recorded here, and the stop is Tune's SIGUSR1 handler, which it installs during
    ``fit`` whatever that variable says. ``on_signal`` replaces that stop (``raysearch
    train`` sets an event its driver loop watches).

    A signal sent to the whole process group (Slurm, systemd, ``kill -- -PGID``) also
    ends a local Ray's GCS and raylet, and then no stop can finish: Ray would end the
    driver with exit code 1 a minute later. After a signal a watcher thread checks that
    Ray still answers (:func:`raysearch.run.ray_setup.ray_reachable`); when it does not,
    ``on_ray_lost(received)`` runs in that thread. It must not return (it ends the
    process with ``os._exit`` after keeping what it can).
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # signals reach the main thread only
        return
    done = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        if on_ray_lost is not None:
            threading.Thread(target=_watch_ray, args=(done, received, on_ray_lost), name="raysearch-ray-watch",
                             daemon=True).start()
        if on_signal is None:
            os.kill(os.getpid(), signal.SIGUSR1)
        else:
            on_signal()

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, handler)
    try:
        with scoped_env(TUNE_DISABLE_SIGINT_HANDLER="1"):
            yield received
    finally:
        done.set()
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def scoped_env(**values: str):
    """Set environment variables for the duration of a block; restore them after."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _watch_ray(done: threading.Event, received: list[int], on_ray_lost: Callable[[list[int]], None]) -> None:
    """Until ``done``: call ``on_ray_lost`` once Ray has failed :data:`RAY_LOST_AFTER` checks in a row."""
    from raysearch.run.ray_setup import ray_reachable

    misses = 0
    while not done.wait(RAY_CHECK_S):
        misses = 0 if ray_reachable() else misses + 1
        if misses >= RAY_LOST_AFTER:
            on_ray_lost(received)
            return


def interrupted_exit(received: list[int], what: str, kept: str, next_step: str, stream: TextIO) -> int:
    """The exit code of a run stopped by a signal (130 for SIGINT, 143 for SIGTERM), after
    one line that says what was kept and what to do next."""
    name = "SIGTERM" if signal.SIGTERM in received else "SIGINT"
    stream.write(f"raysearch: {what} interrupted ({name}); {kept}. {next_step}\n")
    stream.flush()
    return 143 if name == "SIGTERM" else 130


def resume_hint(what: str, output: str) -> str:
    """How to continue an interrupted sweep or ablation: a command to paste as it is (the
    folder holds the resolved spec, so nothing else is needed)."""
    return f"Continue with: raysearch {what} --resume --output {shlex.quote(results.redact(output))}"


@dataclass
class Job:
    """What a sweep or an ablation adds to the run skeleton of :func:`run_job`."""

    command: str  # "tune" or "ablate": the CLI verb and the rows' kind
    noun: str  # "sweep" / "ablation", in messages
    runs: str  # "trials" / "runs", what `total` counts
    kept: str  # what an interrupted job keeps, for its last line
    spec: Spec
    output: str
    total: int
    summary: Callable[[], str]
    # Announce and run (Ray is up, spec.yaml written), passing the given ``on_ray_lost`` to
    # run_experiment; returns the signals received.
    start: Callable[[Callable[[list[int]], None]], list[int]]
    finish: Callable[[], None] = lambda: None  # after a run to its end (tune: close the study)
    interrupted: Callable[[], None] = lambda: None  # after a signal (tune: push the study)


def run_job(job: Job, *, resume: bool, address: str | None, num_cpus: int | None, quiet: bool,
            stream: TextIO) -> int:
    """The run skeleton of ``tune`` and ``ablate``, written once: the resume checks, the
    early exit of a finished job, Ray, the resolved spec, the run, the exit of an
    interrupted run with the command that continues it, compaction and the summary.
    Returns the exit code."""
    from raysearch.run.ray_setup import init_ray

    article = "an" if job.noun[0] in "aeiou" else "a"
    check_resume(job.output, resume, job.noun)
    if resume:
        check_same_spec(job.output, job.spec, f"{article} {job.noun}")
        results.compact_quietly(job.output, stream)  # the rows of the interrupted run, before it continues
        if finished_runs(job.output, job.command, len(job.spec.classes())) >= job.total:
            # Resuming a finished job changes nothing (no new trial, no new row).
            stream.write(f"raysearch {job.command}: {job.spec.name}: all {job.total} {job.runs} have finished; "
                         "nothing to resume\n")
            if not quiet:
                stream.write(job.summary() + "\n")
            return 0
    init_ray(address=address, num_cpus=num_cpus)
    results.write_resolved_spec(job.spec, job.output)

    def stopped(received: list[int]) -> int:
        job.interrupted()
        return interrupted_exit(received, job.command, job.kept, resume_hint(job.command, job.output), sys.stderr)

    def ray_lost(received: list[int]) -> None:
        # Ray died with the signal, so Tune cannot stop: what is finished is in the store
        # already (rows, the study, Tune's last snapshot), and --resume takes it from there.
        from raysearch.store.lock import release_held

        code = stopped(received)
        release_held()
        logging.shutdown()
        os._exit(code)

    received = job.start(ray_lost)
    if received:
        return stopped(received)
    job.finish()
    results.compact_quietly(job.output, stream)
    if not quiet:
        stream.write(job.summary() + "\n")
    return 0


def run_experiment(
    spec: Spec,
    plan: TrialPlan,
    *,
    tune_config: Any,
    param_space: dict[str, Any] | None,
    total: int,
    objective: str,
    mode: str,
    resume: bool,
    quiet: bool,
    stream: TextIO,
    study_sync: StudySync | None = None,
    log: Sequence[str] = (),
    on_ray_lost: Callable[[list[int]], None] | None = None,
) -> list[int]:
    """Run (or resume) a Tune experiment whose trials train ``plan``'s configs; returns the
    signals that stopped it (empty when it ran to its end).

    Tune's CSV and JSON loggers write every trial's reports to its folder
    ``DIR/ray/tune/<trial>/`` (the TensorBoard curves are the trials' own, in
    ``DIR/tensorboard/``: :mod:`raysearch.train.trackers`); ``log`` adds trackers (``mlflow``, ``wandb``:
    :func:`raysearch.train.trackers.tracker_callbacks`). A resumed experiment keeps the trackers
    it started with (Tune restores its callbacks).

    Ray must be initialised. A single-worker trial trains in its own Tune process, which
    holds the worker's CPUs and GPU share; a multi-worker trial (or any trial with
    ``train.launcher: train``) is a small driver without resources that runs a Ray Train
    TorchTrainer, whose workers hold them.
    """
    from ray import tune

    ray_dir, experiment_path = experiment_paths(plan.output)
    trainable = tune.with_resources(TrialDriver(plan, results.join(ray_dir, "runs")), plan.resources)
    # Tune's CSV and JSON loggers stay on (every trial's folder DIR/ray/tune/<trial>/ gets
    # progress.csv and result.json); its TensorBoard logger is off (see fit below): the
    # curves are the runs' own (raysearch.train.trackers.EpochWriter, DIR/tensorboard/).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    if resume:
        if log:
            stream.write("note: --resume keeps the trackers the run started with; --log is not applied\n")
        path, filesystem = results.ray_storage(experiment_path)
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False,
                                   storage_filesystem=filesystem)
    else:
        storage_path, filesystem = results.ray_storage(ray_dir)
        rows = SweepRows(plan, len(spec.classes()), total, objective, mode,
                         stream=None if quiet else stream, study_sync=study_sync)
        run_config = tune.RunConfig(
            name=EXPERIMENT,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            callbacks=[rows, *tune_loggers(),
                       *tracker_callbacks(log, experiment=os.path.basename(os.path.normpath(plan.output)),
                                          output=plan.output)],
            verbose=0,
            # With train.max_failures, retries of a trial whose process or node was lost;
            # the retry resumes from the trial's last checkpoint.
            failure_config=tune.FailureConfig(max_failures=spec.train.max_failures),
        )
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
    # Tune's "Resume experiment with: Tuner.restore(...)" is not how raysearch resumes.
    logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)
    controller = logging.getLogger("ray.tune.execution.tune_controller")
    if not any(isinstance(f, TrialFailureFilter) for f in controller.filters):
        controller.addFilter(TrialFailureFilter())
    # Tune adds no logger of its own: the CSV and JSON loggers are in the callbacks (a
    # resumed experiment restores them with its run config).
    with graceful_stop(on_ray_lost=on_ray_lost) as received, scoped_env(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1"):
        grid = tuner.fit()
    if not received:
        lost = heal_rows(plan, grid, len(spec.classes()))
        if lost:
            received = train_lost_classes(plan, lost, trainable, ray_dir, stream, on_ray_lost)
    return received


def pruned_reason(progress: float, n_classes: int) -> str:
    """The reason of the rows of a trial that ASHA stopped early."""
    return f"stopped early by ASHA at progress {float(progress):.2f}/{n_classes} classes"


def trial_config(result) -> dict[str, Any] | None:
    """The config of a trial of a Tune result grid: in its last report, or, for a trial
    that never reported (a resumed experiment's record of it holds no report), in the
    ``params.json`` Tune wrote to its folder when it started."""
    import json

    if result.config is not None:
        return result.config
    try:
        with result.filesystem.open_input_stream(f"{result.path}/params.json") as f:
            return json.loads(f.read())
    except OSError:  # FileNotFoundError included
        return None


def heal_rows(plan: TrialPlan, grid, n_classes: int) -> list[tuple[str, dict[str, Any], list[str]]]:
    """Heal the rows of a Tune run's trials that the store lacks or cannot read (a file
    truncated or deleted while the experiment was stopped): a failed or pruned trial's
    rows are written again from what Tune recorded; the finished trials that lack a
    completed row are returned, (trial id, config, classes), to train those classes again.
    The store is read once; a trial's spec is built only where something is lost."""
    stored = stored_statuses(plan.output, plan.kind)
    lost = []
    for result in grid:
        trial_id, config = (result.metrics or {}).get("trial_id"), trial_config(result)
        if trial_id is None or config is None:  # Tune keeps no id or config of it here
            continue
        run = plan.run_info(trial_id, config)
        have = stored.get(run.trial_id, {})
        if result.error is not None or not finished(result.metrics, n_classes):
            if len(have) < n_classes:  # a row of any status is this trial's final word on a class
                reason = (results.failure_reason(result.error) if result.error is not None
                          else pruned_reason(result.metrics.get("progress", 0), n_classes))
                results.write_unfinished_rows(plan.trial_spec(config), run, reason,
                                              "failed" if result.error is not None else "pruned")
        elif sum(status == "completed" for status in have.values()) < n_classes:
            classes = plan.trial_spec(config).classes()
            lost.append((trial_id, config, [c for ci, c in enumerate(classes) if have.get(ci) != "completed"]))
    return lost


class ReplaySearcher(Searcher):
    """A Tune searcher that suggests the given configs in order, then ends. (Tune's own
    ``BasicVariantGenerator(points_to_evaluate=...)`` refuses keys that are not in the
    Tuner's ``param_space``, and these configs have no search space.)"""

    def __init__(self, configs: list[dict[str, Any]]):
        super().__init__()
        self.pending = list(configs)

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        """The next config, or ``Searcher.FINISHED``."""
        return self.pending.pop(0) if self.pending else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Nothing to learn: the configs are fixed."""


def train_lost_classes(plan: TrialPlan, lost: list[tuple[str, dict[str, Any], list[str]]], trainable: Any,
                        ray_dir: str, stream: TextIO, on_ray_lost: Callable[[list[int]], None] | None) -> list[int]:
    """Train the classes of finished trials whose rows are lost, as new Tune trials that
    write under the finished trials' ids (:data:`ROWS_OF_KEY`): a trial skips every class
    whose row is stored, so only the lost ones train. The study is not told again (the
    trials were told from their reports). Returns the signals that stopped it."""
    import time

    from ray import tune

    stream.write(f"raysearch: the store lacks readable rows of {len(lost)} finished trial(s) ("
                 + "; ".join(f"{t}: class {', '.join(c)}" for t, _, c in lost) + "); training those classes again\n")
    configs = [{**config, ROWS_OF_KEY: trial_id} for trial_id, config, _ in lost]
    storage_path, filesystem = results.ray_storage(ray_dir)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ReplaySearcher(configs),
                                    num_samples=len(configs), max_concurrent_trials=1),
        run_config=tune.RunConfig(name=f"repair-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=storage_path,
                                  storage_filesystem=filesystem, verbose=0),
    )
    with graceful_stop(on_ray_lost=on_ray_lost) as received, scoped_env(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1"):
        grid = tuner.fit()
    for result in grid:
        if result.error is not None:
            config = result.config
            results.write_unfinished_rows(plan.trial_spec(config), plan.run_info("", config),
                                          results.failure_reason(result.error))
    return received


class TrialFailureFilter(logging.Filter):
    """Drops Tune's record of a failed trial, a whole traceback on the console: the trial's
    error file keeps it, and :class:`SweepRows` says the reason in one line with its path."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Trial task failed for trial")


class SweepRows(Callback):
    """Rows for the classes a pruned or failed trial did not complete; the live progress line.

    The single writer of pruned and failed rows: it runs in the Tune driver after Tune
    has decided whether a trial finished, was stopped by the scheduler or failed.
    """

    best_trial: str | None = None  # the console's name of the best trial (a class default: older pickles lack it)

    def __init__(self, plan: TrialPlan, n_classes: int, total: int, objective: str, mode: str,
                 stream: TextIO | None, study_sync: StudySync | None = None):
        self.plan, self.full, self.study_sync = plan, n_classes, study_sync
        self.objective, self.mode = objective, mode
        self.line = None if stream is None else SweepLine(stream, total, metric_of(objective), mode)
        self.best, self.best_trial = math.nan, None

    def _counts(self, trials) -> dict[str, float]:
        """Trials by state, and ``done``: the trials that ended plus the fraction of its
        classes each running trial has reached (what the time estimate divides by, so it
        has a value from the first evaluation on)."""
        counts: dict[str, float] = {"completed": 0, "pruned": 0, "failed": 0, "running": 0, "done": 0.0}
        for t in trials:
            if t.status == "ERROR":
                counts["failed"] += 1
            elif t.status == "TERMINATED":
                counts["completed" if finished(t.last_result, self.full) else "pruned"] += 1
            elif t.status == "RUNNING":
                counts["running"] += 1
                counts["done"] += min(float((t.last_result or {}).get("progress", 0)), self.full) / self.full
        counts["done"] += counts["completed"] + counts["pruned"] + counts["failed"]
        return counts

    def on_trial_result(self, iteration, trials, trial, result, **info):
        v = result.get(self.objective) if finished(result, self.full) else None
        if v is not None and math.isfinite(v):
            better = (v > self.best) if self.mode == "max" else (v < self.best)
            if math.isnan(self.best) or better:
                self.best, self.best_trial = v, self.plan.label(trial.trial_id, trial.config)

    def _finish_rows(self, trial, status: str, reason: str) -> None:
        results.write_unfinished_rows(self.plan.trial_spec(trial.config),
                                      self.plan.run_info(trial.trial_id, trial.config), reason, status)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        if not finished(last, self.full):
            self._finish_rows(trial, "pruned", pruned_reason(last.get("progress", 0), self.full))
        self._push_study()

    def on_trial_error(self, iteration, trials, trial, **info):
        reason = results.failure_reason(_error_text(trial))
        self._finish_rows(trial, "failed", reason)
        if self.line is not None:  # one line; Tune's own record of the traceback is filtered out
            where = trial.error_file or trial.path
            self.line.say(f"trial {trial.trial_id} failed: {reason} (traceback: {where})")
        self._push_study()

    def _push_study(self) -> None:
        # Callbacks run after the searcher has told the study, so the copy is current.
        if getattr(self, "study_sync", None) is not None:
            self.study_sync.push()

    def on_step_end(self, iteration, trials, **info):
        if self.line is not None:
            self.line.update(self._counts(trials), self.best, best_trial=self.best_trial)

    def on_experiment_end(self, trials, **info):
        if self.line is not None:
            self.line.update(self._counts(trials), self.best, force=True, best_trial=self.best_trial)
            self.line.close()


def _can_restore(path: str) -> bool:
    return results.exists(results.join(path, "tuner.pkl"))


def _error_text(trial) -> str | None:
    """The error Tune recorded for ``trial`` (its local error file; storage syncs later)."""
    path = trial.error_file
    if path and os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    return trial.get_error()
