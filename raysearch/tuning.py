"""`raysearch tune`: Ray Tune with Optuna over a spec's search space.

One Tune trial is one config trained over the spec's classes by the per-worker loop of
:mod:`raysearch.training`. A single-worker trial runs that loop in its own Tune process,
which reserves the worker's CPUs and GPU fraction: no worker group to start per trial.
A multi-worker (DDP) trial is a small driver that reserves nothing and runs a Ray Train
TorchTrainer, with ``TuneReportCallback`` forwarding rank 0's reports; its workers own
the resources. ``train.launcher: train`` sends every trial through Ray Train.

What the searcher learns from is kept honest:

* the objective is ``mean_<metric>``, the metric averaged over the classes a trial has
  reached (validation unless the spec opts into paper-style test selection);
* ASHA compares trials at the same ``progress``: classes done in the spec's fixed order
  plus the fraction of the current class's epochs (each trial's own ``train.epochs``,
  so a trial that searches its epochs reaches full progress when it ends), and a trial
  it stops early is told to Optuna as PRUNED with its intermediate values, never as
  COMPLETE with a low-fidelity score;
* failed trials (NaN loss, out of memory, a crash) are told as FAIL and leave a failed
  result row with the reason; the sweep goes on.

The Optuna study is a SQLite file in the experiment folder (``optuna.db``) that the
optuna CLI and optuna-dashboard open; Ray's experiment state lives in ``ray/``.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Any, TextIO

from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from raysearch import results
from raysearch.runner import format_table, write_resolved_spec
from raysearch.schema import SpecError
from raysearch.selection import selection_summary
from raysearch.space import SearchSpec, grid_space, parse_search, suggest
from raysearch.spec import Spec

__all__ = ["run_tune", "dry_run", "study_url", "make_sampler", "OPTUNA_KEY"]

OPTUNA_KEY = "__optuna_trial"  # the Optuna trial number, carried in each Tune config
VARIANT_KEY = "__variant"  # the ablation variant of a trial ("full" or a factor name)
EXPERIMENT = "tune"  # Ray's experiment folder under DIR/ray/


def study_path(output: str) -> str:
    """The local SQLite file of an experiment's Optuna study.

    Inside a local experiment folder; for an experiment in cloud storage, a local cache
    file that is copied to ``<output>/optuna.db`` after every trial (the driver is the
    study's only writer) and fetched from there by ``--resume``.
    """
    if "://" not in output:
        return os.path.abspath(os.path.join(output, "optuna.db"))
    digest = hashlib.sha256(output.encode()).hexdigest()[:16]
    return os.path.join(os.path.expanduser("~/.cache/raysearch"), digest, "optuna.db")


def study_url(output: str) -> str:
    return f"sqlite:///{study_path(output)}"


class StudySync:
    """Copies the local study file to a remote experiment folder (no-op for local ones).

    Tune pickles it with the experiment (in the searcher and the rows callback), so the
    local file is found on the machine that uses it, never the one that pickled it.
    """

    def __init__(self, output: str):
        self.output = output
        self.remote = results.join(output, "optuna.db") if "://" in output else None

    @property
    def local(self) -> str:
        return study_path(self.output)

    def fetch(self) -> None:
        if self.remote and results.exists(self.remote):
            os.makedirs(os.path.dirname(self.local), exist_ok=True)
            with open(self.local, "wb") as f:
                f.write(results.read_bytes(self.remote))

    def push(self) -> None:
        if self.remote and os.path.exists(self.local):
            with open(self.local, "rb") as f:
                results.write_bytes(self.remote, f.read())


def make_sampler(search: SearchSpec):
    """The Optuna sampler named by ``search.sampler``, seeded."""
    import optuna

    seed = search.seed
    if search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if search.sampler == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise SpecError("sampler cmaes needs the cmaes package: pip install 'raysearch[cmaes]'",
                            key="search.sampler") from None
        return optuna.samplers.CmaEsSampler(seed=seed)
    if search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if search.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    if search.sampler == "grid":
        return optuna.samplers.GridSampler(grid_space(search), seed=seed)
    raise SpecError(f"unknown sampler {search.sampler!r}", key="search.sampler")


# Optuna's intermediate values need integer steps: progress in thousandths of a class.
OPTUNA_STEPS_PER_CLASS = 1000


def full_progress(spec: Spec) -> int:
    """The number of classes: the progress of a run that trained every class."""
    return len(spec.classes())


def finished(result: dict[str, Any] | None, full: int) -> bool:
    """Whether a trial's last report is the end of its last class (every row stored)."""
    return bool(result) and float(result.get("progress", 0)) >= full - 1e-9


def default_point(spec: Spec, search: SearchSpec) -> dict[str, Any]:
    """The spec's own values for the space's keys: the first config evaluated."""
    flat = spec.flat_config()
    point: dict[str, Any] = {}
    values = dict(flat)
    for p in search.space:
        if not p.applies(values):
            continue
        value = flat.get(p.key)
        if p.kind == "choice" and value not in p.choices:
            return {}  # the spec's value is outside the space: nothing sensible to seed
        if p.kind != "choice" and not (p.low <= value <= p.high):
            return {}
        point[p.key] = value
    return point


def with_budget(search: SearchSpec, trials: int | None, concurrent: int | None) -> SearchSpec:
    """The search with ``--trials`` / ``--concurrent`` applied."""
    return SearchSpec(**{**search.__dict__, "trials": search.trials if trials is None else trials,
                         "concurrent": search.concurrent if concurrent is None else concurrent})


def dry_run(spec: Spec, stream: TextIO | None = None, trials: int | None = None,
            concurrent: int | None = None) -> SearchSpec:
    """Print the resolved search and an estimate of its cost (to ``stream``, default the
    current stdout); start nothing."""
    stream = stream or sys.stdout
    search = with_budget(parse_search(spec), trials, concurrent)
    classes = spec.classes()
    t = spec.train
    stream.write(f"experiment {spec.name}: method {spec.method}, {len(classes)} classes ({', '.join(classes)})\n")
    stream.write(f"objective: {', '.join(f'{m} ({d})' for m, d in zip(search.metrics, search.modes))}"
                 f" averaged over classes\n")
    stream.write(f"validation: {selection_summary(spec)}\n")
    stream.write(f"sampler {search.sampler} (seed {search.seed}), {search.trials} trials, "
                 f"{search.concurrent} at a time, scheduler "
                 f"{'asha' if search.uses_asha else 'none'}\n")
    stream.write("space:\n")
    for p in search.space:
        stream.write(f"  {p.key}: {p.describe()}\n")
    runs = search.trials * len(classes)
    gpus = t.workers * t.gpus_per_worker
    stream.write(f"runs: {search.trials} trials x {len(classes)} classes = {runs} class runs "
                 f"of {t.epochs} epochs each (fewer with early stopping)\n")
    if gpus:
        stream.write(f"resources: {t.workers} worker(s) x {t.gpus_per_worker} GPU per trial; "
                     f"time one class run with `raysearch train` and multiply by {runs * gpus:g} "
                     f"for an upper bound in GPU hours\n")
    else:
        stream.write(f"resources: {t.workers} worker(s) x {t.cpus_per_worker} CPU per trial (no GPU)\n")
    return search


class _Progress:
    """A live line: trials done / running / pruned / failed, best so far, time."""

    def __init__(self, stream: TextIO, total: int, metric: str, mode: str):
        self.stream, self.total, self.metric, self.mode = stream, total, metric, mode
        self.tty = stream.isatty()
        self.started = time.perf_counter()
        self.best = math.nan
        self.last = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; a stream does not pickle.
        return {**self.__dict__, "stream": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, stream=sys.stderr)

    def update(self, counts: dict[str, int], best: float, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < (0.5 if self.tty else 15.0):
            return
        self.last = now
        elapsed = now - self.started
        finished = counts["completed"] + counts["pruned"] + counts["failed"]
        left = elapsed / finished * (self.total - finished) if finished else math.nan
        text = (
            f"trials {finished}/{self.total} done ({counts['completed']} completed, "
            f"{counts['pruned']} pruned, {counts['failed']} failed), {counts['running']} running  "
            f"best {self.metric} {'-' if math.isnan(best) else f'{best:.4f}'}  "
            f"elapsed {elapsed:.0f}s  left ~{'-' if math.isnan(left) else f'{left:.0f}'}s"
        )
        self.stream.write(("\r" + text) if self.tty else (text + "\n"))
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


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
        from raysearch.spec import spec_from_dict

        return spec_from_dict(self.spec_dict, source=self.source).with_overrides(self.overrides(config))

    def resources(self, config: dict[str, Any]):
        """The Tune resource request of a trial (a callable for ``tune.with_resources``)."""
        from ray.tune.execution.placement_groups import resource_dict_to_pg_factory

        t = self.trial_spec(config).train
        if in_trial_process(t):
            return resource_dict_to_pg_factory({"cpu": t.cpus_per_worker, "gpu": t.gpus_per_worker})
        # The driver only waits on its Train run: it takes no CPU, so the workers can use
        # every CPU of a node (Tune refuses an all-zero request, hence one byte of memory).
        return resource_dict_to_pg_factory({"cpu": 0, "memory": 1})

    def run_info(self, trial_id: str, config: dict[str, Any]):
        from raysearch.training import RunInfo

        return RunInfo(experiment=self.name, kind=self.kind, trial_id=trial_id, storage=self.output,
                       optuna_trial=config.get(OPTUNA_KEY), variant=config.get(VARIANT_KEY))


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

        from raysearch.runner import _reason
        from raysearch.training import TrialSession, loop_config, make_trainer, worker_loop

        spec = self.plan.trial_spec(config)
        run = self.plan.run_info(tune.get_context().get_trial_id(), config)
        try:
            if in_trial_process(spec.train):
                worker_loop(loop_config(spec, run), TrialSession())
            else:
                from ray.tune.integration.ray_train import TuneReportCallback

                make_trainer(spec, run, callbacks=[TuneReportCallback()], storage_path=self.runs_path).fit()
        except Exception as err:
            raise TrialFailed(_reason(err)) from None
        finally:
            # A reused process hands what this trial built (models, data, optimizer
            # state, often in reference cycles) back before the next trial starts.
            gc.collect()


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


def finished_runs(output: str, kind: str, n_classes: int) -> int:
    """Trials of ``kind`` with a final row (completed, pruned or failed) for every class."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", results.UnreadableResultWarning)  # such a class is not done
        try:
            table = results.read_results(output)
        except FileNotFoundError:
            return 0
    if table.num_rows == 0:
        return 0
    classes: dict[str, set[int]] = {}
    for r in table.select(["kind", "trial_id", "class_index"]).to_pylist():
        if r["kind"] == kind and r["class_index"] is not None:
            classes.setdefault(r["trial_id"], set()).add(r["class_index"])
    return sum(len(c) >= n_classes for c in classes.values())


@contextlib.contextmanager
def graceful_stop():
    """Ctrl-C (SIGINT) and SIGTERM stop the Tune run the way Tune stops itself: trials are
    checkpointed and stay resumable. Yields the list of signals received; a second signal
    aborts at once (``--resume`` then continues from Tune's last snapshot).

    Tune's own SIGINT handler is turned off (``TUNE_DISABLE_SIGINT_HANDLER``) so that the
    signal is recorded here; the stop itself is Tune's SIGUSR1 handler, which it installs
    during ``fit`` whatever that variable says.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # signals reach the main thread only
        return

    def handler(signum: int, frame: Any) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    for s in previous:
        signal.signal(s, handler)
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = env


def interrupted_exit(received: list[int], what: str, spec: Spec, output: str, stream: TextIO) -> int:
    """The exit code of a run stopped by a signal (130 for SIGINT, 143 for SIGTERM), after
    one line that says how to continue it."""
    name = "SIGTERM" if signal.SIGTERM in received else "SIGINT"
    stream.write(f"raysearch: {what} interrupted ({name}); finished trials and classes are kept. Continue with: "
                 f"raysearch {what} {spec.source} --output {results.redact(output)} --resume "
                 "(and the same --set options)\n")
    stream.flush()
    return 143 if name == "SIGTERM" else 130


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
) -> list[int]:
    """Run (or resume) a Tune experiment whose trials train ``plan``'s configs; returns the
    signals that stopped it (empty when it ran to its end).

    Ray must be initialised. A single-worker trial trains in its own Tune process, which
    holds the worker's CPUs and GPU share; a multi-worker trial (or any trial with
    ``train.launcher: train``) is a small driver without resources that runs a Ray Train
    TorchTrainer, whose workers hold them.
    """
    from ray import tune

    ray_dir, experiment_path = experiment_paths(plan.output)
    trainable = tune.with_resources(TrialDriver(plan, results.join(ray_dir, "runs")), plan.resources)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)  # no per-trial logs: by design
    if resume:
        path, filesystem = results.ray_storage(experiment_path)
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False,
                                   storage_filesystem=filesystem)
    else:
        storage_path, filesystem = results.ray_storage(ray_dir)
        rows = SweepRows(plan, spec.classes(), full_progress(spec), total, objective, mode,
                         stream=None if quiet else stream, study_sync=study_sync)
        run_config = tune.RunConfig(
            name=EXPERIMENT,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            callbacks=[rows],
            verbose=0,
            # With train.max_failures, retries of a trial whose process or node was lost;
            # the retry resumes from the trial's last checkpoint.
            failure_config=tune.FailureConfig(max_failures=spec.train.max_failures),
        )
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
    # Tune's "Resume experiment with: Tuner.restore(...)" is not how raysearch resumes.
    logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)
    with graceful_stop() as received:
        tuner.fit()
    return received


def run_tune(
    spec: Spec,
    output: str,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    trials: int | None = None,
    concurrent: int | None = None,
    resume: bool = False,
    quiet: bool = False,
    stream: TextIO = sys.stderr,
) -> int:
    """Run (or resume) the sweep of ``spec`` in ``output``; returns the exit code."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from raysearch.ray_setup import init_ray

    search = with_budget(parse_search(spec), trials, concurrent)
    full = full_progress(spec)
    metric_keys = [f"mean_{m}" for m in search.metrics]
    check_resume(output, resume, "sweep")
    if resume and finished_runs(output, "tune", len(spec.classes())) >= search.trials:
        # Resuming a finished sweep changes nothing (no new study trial, no new row).
        stream.write(f"raysearch tune: {spec.name}: all {search.trials} trials have finished; nothing to resume\n")
        if not quiet:
            stream.write(sweep_summary(output, search) + "\n")
        return 0
    init_ray(address=address, num_cpus=num_cpus)
    write_resolved_spec(spec, output)
    sync = StudySync(output)
    if resume:
        sync.fetch()
    os.makedirs(os.path.dirname(sync.local), exist_ok=True)
    storage = optuna.storages.RDBStorage(study_url(output))
    if not quiet:
        stream.write(f"raysearch tune: {spec.name}: {search.trials} trials, {search.concurrent} at a time -> {results.redact(output)}\n")
        stream.write(f"  optuna study: optuna-dashboard {study_url(output)}\n")
        stream.write(f"                optuna trials --study-name {spec.name} --storage {study_url(output)}\n")

    searcher = PruningOptunaSearch(
        full_progress=full,
        objective_keys=metric_keys,
        output=output,
        budget=search.trials,
        n_classes=len(spec.classes()),
        space=SpaceFunction(search, spec.flat_config()),
        metric=metric_keys if search.multi_objective else metric_keys[0],
        mode=list(search.modes) if search.multi_objective else search.modes[0],
        sampler=make_sampler(search),
        study_name=spec.name,
        storage=storage,
        points_to_evaluate=[p] if (p := default_point(spec, search)) and search.sampler != "grid" else None,
    )
    if search.uses_asha:
        scheduler = ASHAScheduler(
            time_attr="progress",
            metric=metric_keys[0],
            mode=search.modes[0],
            # A class's last report comes after its row is stored, so a stop at a rung
            # or at max_t never loses a finished class.
            max_t=full,
            # `grace` evaluations of the first class, as a fraction of the spec's epochs.
            grace_period=min(full, search.scheduler.grace * spec.train.eval_every / spec.train.epochs),
            reduction_factor=search.scheduler.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    tune_config = tune.TuneConfig(
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=search.trials,
        max_concurrent_trials=search.concurrent,
        reuse_actors=reuse_processes(spec.train),
    )
    received = run_experiment(spec, TrialPlan(spec, output, "tune"), tune_config=tune_config, param_space=None,
                              total=search.trials, objective=metric_keys[0], mode=search.modes[0], resume=resume,
                              quiet=quiet, stream=stream, study_sync=sync)
    if received:  # interrupted trials stay RUNNING in the study: --resume finishes them
        sync.push()
        return interrupted_exit(received, "tune", spec, output, sys.stderr)
    _close_running(storage, spec.name)
    sync.push()
    if not quiet:
        stream.write(sweep_summary(output, search) + "\n")
    return 0


class SpaceFunction:
    """The define-by-run search space of a spec (a picklable object: Tune saves the searcher)."""

    def __init__(self, search: SearchSpec, fixed: dict[str, Any]):
        self.search, self.fixed = search, fixed

    def __call__(self, trial) -> dict[str, Any]:
        return suggest(trial, self.search, self.fixed)


class PruningOptunaSearch(OptunaSearch):
    """OptunaSearch that tells early-stopped trials as PRUNED and numbers the configs.

    Ray's OptunaSearch tells a trial that ASHA stopped early as COMPLETE with its
    low-fidelity value, and TPE would then learn from it as if it were final. Here such
    a trial keeps its intermediate values and is told PRUNED; a trial without a finite
    objective is told FAIL.
    """

    def __init__(self, *args, full_progress: int, objective_keys: list[str], output: str | None = None,
                 budget: int | None = None, n_classes: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.full_progress = full_progress
        self.objective_keys = objective_keys
        self.output = output
        # The sweep's trial count, kept here rather than by Tune alone: Tune's saved
        # state can lag the study by the trials that started after its last snapshot.
        self.budget, self.n_classes, self.asked = budget, n_classes, 0

    def restore(self, checkpoint_path: str) -> None:
        """Restore Tune's saved searcher, attached to this machine's copy of the study.

        The saved searcher holds the study's address on the machine that saved it (for
        an experiment in cloud storage, a cache under that machine's home folder); a
        driver resumed elsewhere opens the copy that ``--resume`` fetched.
        """
        import optuna

        super().restore(checkpoint_path)
        if self.output is None:  # a study given as an object: nothing to re-attach
            return
        saved = self._ot_study
        self._storage = optuna.storages.RDBStorage(study_url(self.output))
        self._ot_study = optuna.load_study(study_name=saved.study_name, storage=self._storage, sampler=saved.sampler)
        for ot_trial in self._ot_trials.values():
            ot_trial.study, ot_trial.storage = self._ot_study, self._ot_study._storage
        self._adopt_unrecorded_trials()

    def _adopt_unrecorded_trials(self) -> None:
        """Count trials that ran after Tune's last snapshot of a killed driver.

        Tune saves its state every few seconds; a trial that started after the last save
        is unknown to the restored experiment, but the study has it (pushed when it was
        asked) and it may have written rows. One with a row for every class counts
        toward the sweep's total and is told to the study from its rows; one without
        is replaced by a new trial (the study closes it as FAIL at the end).
        """
        import optuna

        known = {t.number for t in self._ot_trials.values()}
        self.asked = len(known)
        try:
            table = results.read_results(self.output)
        except FileNotFoundError:
            return
        rows: dict[int, list[dict]] = {}
        for r in table.to_pylist() if table.num_rows else []:
            if r["kind"] == "tune" and r["optuna_trial"] is not None:
                rows.setdefault(r["optuna_trial"], []).append(r)
        State = optuna.trial.TrialState
        for t in self._ot_study.get_trials(deepcopy=False):
            trial_rows = rows.get(t.number, [])
            if t.number in known or t.state == State.WAITING or len({r["class_index"] for r in trial_rows}) < self.n_classes:
                continue
            self.asked += 1
            if t.state != State.RUNNING:
                continue  # told before the driver was killed
            statuses = {r["status"] for r in trial_rows}
            columns = [k.removeprefix("mean_") for k in self.objective_keys]
            cells = [[r.get(c) for r in trial_rows] for c in columns]
            if statuses == {"completed"} and all(v is not None and math.isfinite(v) for col in cells for v in col):
                values = [sum(col) / len(col) for col in cells]
                self._ot_study.tell(t.number, values if len(values) > 1 else values[0])
            else:
                self._ot_study.tell(t.number, state=State.FAIL if "failed" in statuses else State.PRUNED)

    def suggest(self, trial_id: str):
        from ray.tune.search import Searcher

        if self.budget is not None and self.asked >= self.budget and trial_id not in self._ot_trials:
            return Searcher.FINISHED
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            config[OPTUNA_KEY] = self._ot_trials[trial_id].number
            self.asked += 1
            if self.output is not None:
                StudySync(self.output).push()  # the study knows the trial before Tune's state does
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Intermediate values at step = progress in thousandths of a class."""
        if isinstance(self.metric, list) or trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return  # Optuna keeps no intermediate values for multi-objective studies
        value, step = result.get(self.metric), round(float(result.get("progress", 0)) * OPTUNA_STEPS_PER_CLASS)
        ot_trial = self._ot_trials[trial_id]
        if value is not None and math.isfinite(value) and step not in ot_trial.storage.get_trial(
            ot_trial._trial_id
        ).intermediate_values:
            ot_trial.report(value, step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        import optuna

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        stopped_early = not error and result is not None and not finished(result, self.full_progress)
        if stopped_early:
            # Tune does not pass the result that the scheduler stopped on to
            # on_trial_result: keep it as the last intermediate value.
            self.on_trial_result(trial_id, result)
            self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        if result is not None and not error:
            vals = [result.get(k) for k in self.objective_keys]
            if any(v is None or not math.isfinite(v) for v in vals):
                error, result = True, None  # no usable objective: a failed trial, never a fake score
        super().on_trial_complete(trial_id, result=result, error=error)


class SweepRows(Callback):
    """Rows for the classes a pruned or failed trial did not complete; the live progress line.

    The single writer of pruned and failed rows: it runs in the Tune driver after Tune
    has decided whether a trial finished, was stopped by the scheduler or failed.
    """

    def __init__(self, plan: TrialPlan, classes: list[str], full: int, total: int, objective: str, mode: str,
                 stream: TextIO | None, study_sync: StudySync | None = None):
        self.plan, self.classes, self.full, self.study_sync = plan, classes, full, study_sync
        self.objective, self.mode = objective, mode
        self.line = None if stream is None else _Progress(stream, total, objective.removeprefix("mean_"), mode)
        self.best = math.nan

    def _counts(self, trials) -> dict[str, int]:
        counts = {"completed": 0, "pruned": 0, "failed": 0, "running": 0}
        for t in trials:
            if t.status == "ERROR":
                counts["failed"] += 1
            elif t.status == "TERMINATED":
                counts["completed" if finished(t.last_result, self.full) else "pruned"] += 1
            elif t.status == "RUNNING":
                counts["running"] += 1
        return counts

    def on_trial_result(self, iteration, trials, trial, result, **info):
        v = result.get(self.objective) if finished(result, self.full) else None
        if v is not None and math.isfinite(v):
            better = (v > self.best) if self.mode == "max" else (v < self.best)
            if math.isnan(self.best) or better:
                self.best = v

    def _finish_rows(self, trial, status: str, reason: str) -> None:
        from raysearch.training import config_schema, failed_row, results_dir, row_name

        run = self.plan.run_info(trial.trial_id, trial.config)
        trial_spec = self.plan.trial_spec(trial.config)
        schema = config_schema(trial_spec)
        where = results_dir(self.plan.output)
        for i, c in enumerate(self.classes):
            name = row_name(run, i, c)
            if any(r["status"] == "completed" for r in results.read_row_file(where, name)):
                continue
            results.write_rows(where, schema, [failed_row(trial_spec, run, reason, c, i, status=status)], name)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        if not finished(last, self.full):
            self._finish_rows(trial, "pruned", f"stopped early by ASHA at progress {float(last.get('progress', 0)):.2f}/{self.full} classes")
        self._push_study()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish_rows(trial, "failed", _error_reason(_error_text(trial)))
        self._push_study()

    def _push_study(self) -> None:
        # Callbacks run after the searcher has told the study, so the copy is current.
        if getattr(self, "study_sync", None) is not None:
            self.study_sync.push()

    def on_step_end(self, iteration, trials, **info):
        if self.line is not None:
            self.line.update(self._counts(trials), self.best)

    def on_experiment_end(self, trials, **info):
        if self.line is not None:
            self.line.update(self._counts(trials), self.best, force=True)
            self.line.close()


class TrialFailed(RuntimeError):
    """A trial's training failed; its rows say why."""


def _can_restore(path: str) -> bool:
    return results.exists(results.join(path, "tuner.pkl"))


def _error_text(trial) -> str | None:
    """The error Tune recorded for ``trial`` (its local error file; storage syncs later)."""
    path = trial.error_file
    if path and os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    return trial.get_error()


def _error_reason(text: str | None) -> str:
    """The reason line of a failed trial's error text (TrialFailed's message where present)."""
    if not text:
        return "the trial failed (no error text)"
    marker = "TrialFailed: "
    for line in reversed(text.splitlines()):
        if marker in line:
            return line.split(marker, 1)[1].strip()[:500]
    from raysearch.runner import _reason

    return _reason(RuntimeError(text))


def _close_running(storage, study_name: str) -> None:
    """Mark trials left RUNNING by an interrupted driver as FAIL (they were restarted anew)."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)


def _fidelity_line(table, objective: str, mode: str) -> str:
    """One line of the selection-fidelity diagnostic (test labels; never selects anything)."""
    from analysis import fidelity_line, selection_fidelity
    from analysis.load import prepare

    df = prepare(table.to_pandas())
    if objective not in df.columns:
        return f"selection fidelity: not computed ({objective} is not in the rows)"
    return fidelity_line(selection_fidelity(df[df["kind"] == "tune"], objective, mode))


def sweep_summary(output: str, search: SearchSpec, top: int = 5) -> str:
    """The best configurations of a sweep by their class-mean objective."""
    table = results.read_results(output)
    if table.num_rows == 0:
        return "no result rows"
    rows = [r for r in table.to_pylist() if r["kind"] == "tune"]  # not `raysearch train` runs in DIR
    by_trial: dict[str, list[dict]] = {}
    for r in rows:
        by_trial.setdefault(r["trial_id"], []).append(r)
    metric = search.metrics[0]
    col = metric
    scored = []
    status_counts = {"completed": 0, "pruned": 0, "failed": 0}
    for tid, rs in by_trial.items():
        statuses = {r["status"] for r in rs}
        status = "failed" if "failed" in statuses else "pruned" if "pruned" in statuses else "completed"
        status_counts[status] += 1
        if status != "completed":
            continue
        vals = [r[col] for r in rs if r[col] is not None]
        scored.append((sum(vals) / len(vals) if vals else math.nan, tid, rs[0].get("optuna_trial")))
    reverse = search.modes[0] == "max"
    scored.sort(key=lambda x: (math.isnan(x[0]), -x[0] if reverse else x[0]))
    lines = [f"trials: {status_counts['completed']} completed, {status_counts['pruned']} pruned, "
             f"{status_counts['failed']} failed"]
    if scored:
        lines.append(format_table(["rank", "trial", "optuna #", f"mean {metric}"],
                                  [[i + 1, tid, n, v] for i, (v, tid, n) in enumerate(scored[:top])]))
    if status_counts["completed"] < 10:
        lines.append("note: fewer than 10 completed trials; rankings and importances are not yet reliable")
    if metric.startswith("val_"):
        lines.append(_fidelity_line(table, metric, search.modes[0]))
    else:
        lines.append(_fidelity_line(table, "val_image_auroc", "max"))
    lines.append(f"results: {results.redact(results.join(output, 'results'))}")
    return "\n".join(lines)
