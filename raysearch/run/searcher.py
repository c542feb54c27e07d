"""The Optuna side of a sweep: the searcher Tune asks, its sampler and the study file.

:class:`PruningOptunaSearch` is a Tune ``Searcher`` over an Optuna study, through
Optuna's public ask and tell: early-stopped trials are PRUNED with their intermediate
values, trials without a finite objective FAIL, and the budget is kept with the study.
The study is a SQLite file in the experiment folder (``optuna.db``), which the optuna
CLI and optuna-dashboard open; for an experiment in cloud storage it is a local file
copied there after every trial (:class:`StudySync`).
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from ray.tune.search import Searcher

from raysearch.config.objective import metric_of, trial_value
from raysearch.config.schema import SpecError
from raysearch.config.space import REPEAT_ATTR, SearchSpec, grid_space, suggest
from raysearch.store import results
from raysearch.train.progress import finished, optuna_step

__all__ = ["PruningOptunaSearch", "SpaceFunction", "StudySync", "make_sampler", "tell_if_repeat", "study_path", "study_url",
           "close_running", "pause_running", "resume_interrupted", "OPTUNA_KEY"]

OPTUNA_KEY = "__optuna_trial"  # the Optuna trial number, carried in each Tune config


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


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for a study driven by ask and tell.

    Optuna's own stops ``Study.optimize`` once every grid point has been told, and raises
    when told outside of it; here the sweep's budget ends the search, so a trial's end
    tells the sampler nothing.
    """

    def after_trial(self, study, trial, state, values) -> None:
        """Nothing to do: there is no optimize loop to stop."""


def make_sampler(search: SearchSpec):
    """The Optuna sampler named by ``search.sampler``, seeded."""
    seed = search.seed
    if search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                          n_startup_trials=search.startup_trials)
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
        return GridSampler(grid_space(search), seed=seed)
    raise SpecError(f"unknown sampler {search.sampler!r}", key="search.sampler")


MAX_REPEATS = 100  # repeated suggestions told in a row before one is trained anyway


def tell_if_repeat(study, trial) -> bool:
    """Tell ``trial`` the objective of a completed trial with exactly its params, if any.

    A config that was trained to the end gives the same result again (its seed is part
    of the config), and on a space of choices samplers propose the same config again
    and again: such a suggestion is told its twin's value (and marked with
    :data:`REPEAT_ATTR`) instead of being trained. Returns whether it was.
    """
    for done in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if done.number != trial.number and done.params == trial.params:
            trial.set_user_attr(REPEAT_ATTR, done.number)
            study.tell(trial, done.values if len(done.values) > 1 else done.value)
            return True
    return False


class SpaceFunction:
    """The define-by-run search space of a spec (a picklable object: Tune saves the searcher)."""

    def __init__(self, search: SearchSpec, fixed: dict[str, Any]):
        self.search, self.fixed = search, fixed

    def __call__(self, trial) -> dict[str, Any]:
        return suggest(trial, self.search, self.fixed)


class PruningOptunaSearch(Searcher):
    """Tune's searcher over an Optuna study, through Optuna's ask and tell.

    Each config Tune asks for is one ``study.ask()``, sampled by the define-by-run
    ``space``; the spec's own values are enqueued first (``points_to_evaluate``). How a
    trial ended is told honestly: a trial the scheduler stopped early is PRUNED and keeps
    its intermediate values (steps are thousandths of a class), a trial that errored or
    has no finite objective is FAIL. A suggestion that repeats a config trained to the
    end is told its twin's value instead of being trained (:func:`tell_if_repeat`).

    The study names its objectives (``study.metric_names``) and each trial carries its
    Tune trial id, its rows' ``config_hash`` and the pattern of its result files as user
    attributes. The sweep's trial count (``budget``, ``asked``) is kept here rather than
    by Tune alone: Tune's saved state can lag the study by the trials that started after
    its last snapshot.

    The study lives in its storage (the experiment's ``optuna.db``). What Tune saves with
    the experiment is this searcher's own record: which Optuna trial each Tune trial is,
    which were told, the steps reported and the count asked. Pickled, the searcher leaves
    its database connection behind and reopens the study from the storage URL on first
    use; a study kept in memory (no storage) is saved with it.
    """

    # The record that save() writes and restore() reads.
    SAVED = ("trials", "told", "reported", "asked", "budget", "enqueued", "sampler", "study_name", "storage_url",
             "output", "objective_keys", "n_classes")

    def __init__(self, space: Callable[[Any], dict[str, Any] | None], metric: str | list[str],
                 mode: str | list[str], *, n_classes: int, objective_keys: list[str], sampler: Any = None,
                 study_name: str | None = None, storage: str | None = None,
                 points_to_evaluate: list[dict[str, Any]] | None = None, output: str | None = None,
                 budget: int | None = None):
        super().__init__(metric=metric, mode=mode)
        self.space, self.sampler = space, sampler
        self.study_name, self.storage_url = study_name or "optuna", storage  # no storage: a study in memory
        self.points_to_evaluate = list(points_to_evaluate or [])
        self.n_classes, self.objective_keys, self.output, self.budget = n_classes, objective_keys, output, budget
        self.trials: dict[str, int] = {}  # Tune trial id -> Optuna trial number
        self.told: set[str] = set()  # Tune trials whose end the study has been told
        self.reported: dict[int, set[int]] = {}  # Optuna trial number -> steps told to the study
        self.asked = 0  # trials of the budget asked for
        self.enqueued = False  # whether points_to_evaluate are in the study
        self._study = self._backend = None  # the study and its storage, opened on first use

    @property
    def study(self):
        """The Optuna study, opened (created the first time) from the storage on first use."""
        if self._study is None:
            self._study = self._open_study()
        return self._study

    @property
    def backend(self):
        """The study's storage, for Optuna's storage API (opened with the study)."""
        if self._study is None:
            self._study = self._open_study()
        return self._backend

    @property
    def multi_objective(self) -> bool:
        """Whether the study has several objectives (Optuna keeps no intermediate values then)."""
        return isinstance(self.mode, list) and len(self.mode) > 1

    def _open_study(self):
        """Create or load the study, name its objectives and enqueue the points to evaluate once."""
        self._backend = (optuna.storages.RDBStorage(self.storage_url) if self.storage_url
                         else optuna.storages.InMemoryStorage())
        modes = self.mode if isinstance(self.mode, list) else [self.mode]
        study = optuna.create_study(storage=self._backend, sampler=self.sampler, pruner=optuna.pruners.NopPruner(),
                                    study_name=self.study_name, load_if_exists=True,
                                    directions=["minimize" if m == "min" else "maximize" for m in modes])
        # The dashboard and `optuna trials` name the objectives instead of "Objective 0"
        # (an API Optuna still marks experimental; a test checks it).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([metric_of(k) for k in self.objective_keys])
        if not self.enqueued:
            for point in self.points_to_evaluate:
                study.enqueue_trial(point)
            self.enqueued = True
        return study

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles the searcher with the experiment: a study in a storage stays there
        (no open database connection in the pickle) and is reopened from its URL."""
        state = self.__dict__.copy()
        if self.storage_url:
            state["_study"] = state["_backend"] = None
        return state

    def save(self, checkpoint_path: str) -> None:
        """Write the searcher's record (:attr:`SAVED`); a study kept in memory goes with it."""
        state = {k: getattr(self, k) for k in self.SAVED}
        if not self.storage_url:
            state["_study"], state["_backend"] = self.study, self.backend
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        """Restore Tune's saved searcher, attached to this machine's copy of the study.

        The saved record holds the study's address on the machine that saved it (for an
        experiment in cloud storage, a cache under that machine's home folder); a driver
        resumed elsewhere opens the copy that ``--resume`` fetched. The trials a stopped
        sweep paused run again, and the study's record of the trials that ran after Tune's
        last snapshot is taken over.
        """
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self._study = self._backend = None
        self.__dict__.update(state)
        if self.output is None:  # no experiment folder: the study reopens from the saved record
            return
        self.storage_url = study_url(self.output)
        study = self.study
        resume_interrupted(self.backend, self.study_name)  # before any ask, which takes WAITING trials first
        # The steps the study holds, including those told after Tune's last snapshot.
        self.reported = {t.number: set(t.intermediate_values) for t in study.get_trials(deepcopy=False)}
        self._skip_told_trials()
        self._adopt_unrecorded_trials()

    def _skip_told_trials(self) -> None:
        """Trials Tune resumes that the study had already closed (told PRUNED, COMPLETE or
        FAIL after Tune's last snapshot of a killed driver) are not told again: the study
        keeps what it was told first."""
        states = {t.number: t.state for t in self.study.get_trials(deepcopy=False)}
        self.told |= {tid for tid, n in self.trials.items() if n in states and states[n].is_finished()}

    def _adopt_unrecorded_trials(self) -> None:
        """Count trials that ran after Tune's last snapshot of a killed driver.

        Tune saves its state every few seconds; a trial that started after the last save
        is unknown to the restored experiment, but the study has it (pushed when it was
        asked) and it may have written rows. One with a row for every class counts
        toward the sweep's total and is told to the study from its rows; one without
        is replaced by a new trial (the study closes it as FAIL at the end).
        """
        known = set(self.trials.values())
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
        for t in self.study.get_trials(deepcopy=False):
            trial_rows = rows.get(t.number, [])
            if t.number in known or t.state == State.WAITING or len({r["class_index"] for r in trial_rows}) < self.n_classes:
                continue
            self.asked += 1
            if t.state == State.RUNNING:  # not told before the driver was killed
                self._tell_from_rows(t.number, trial_rows)

    def _tell_from_rows(self, number: int, trial_rows: list[dict]) -> None:
        """Tell the study a trial Tune never recorded, from its result rows (one per class)."""
        State = optuna.trial.TrialState
        statuses = {r["status"] for r in trial_rows}
        by_class = {r["class_index"]: r for r in trial_rows}
        values = [trial_value([r.get(metric_of(k)) for r in by_class.values()], self.n_classes)
                  for k in self.objective_keys]
        if statuses == {"completed"} and all(math.isfinite(v) for v in values):
            self.study.tell(number, values)
        else:
            self.study.tell(number, state=State.FAIL if "failed" in statuses else State.PRUNED)

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        """The next config (its Optuna number under :data:`OPTUNA_KEY`), or
        ``Searcher.FINISHED`` once the budget has been asked for."""
        if self.budget is not None and self.asked >= self.budget:
            return Searcher.FINISHED
        trial, config = self._ask()
        for _ in range(MAX_REPEATS):  # a config trained before is told its value, not trained again
            if not tell_if_repeat(self.study, trial):
                break
            trial, config = self._ask()
        self.trials[trial_id] = trial.number
        self.asked += 1
        self._label(trial, trial_id, config)
        config[OPTUNA_KEY] = trial.number
        if self.output is not None:
            StudySync(self.output).push()  # the study knows the trial before Tune's state does
        return config

    def _ask(self) -> tuple[Any, dict[str, Any]]:
        """A new trial of the study and its config, sampled by the define-by-run space."""
        trial = self.study.ask()
        config = self.space(trial)
        return trial, {**trial.params, **(config or {})}

    def _label(self, trial, trial_id: str, config: dict[str, Any]) -> None:
        """What optuna-dashboard shows beside the number: the Tune trial id, the
        ``config_hash`` column of the trial's rows and where those rows are."""
        trial.set_user_attr("trial_id", trial_id)
        if isinstance(self.space, SpaceFunction):
            from raysearch.config.spec import config_hash

            trial.set_user_attr("config_hash", config_hash({**self.space.fixed, **config}))
        if self.output is not None:
            trial.set_user_attr("rows", results.join(results.redact(results.results_dir(self.output)),
                                                     f"{trial_id}--*.parquet"))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Intermediate values at step = progress in thousandths of a class, each step once
        (a multi-objective study keeps none)."""
        number = self.trials.get(trial_id)
        if number is None or trial_id in self.told or self.multi_objective:
            return
        value, step = result.get(self.objective_keys[0]), optuna_step(result.get("progress", 0))
        steps = self.reported.setdefault(number, set())
        if value is not None and math.isfinite(value) and step not in steps:
            self.backend.set_trial_intermediate_value(self._trial_key(number), step, float(value))
            steps.add(step)

    def _trial_key(self, number: int) -> int:
        """The storage's id of the study's trial ``number``."""
        study_id = self.backend.get_study_id_from_name(self.study_name)
        return self.backend.get_trial_id_from_study_id_trial_number(study_id, number)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Tell the study how the trial ended (see :meth:`_ending`), once."""
        if trial_id not in self.trials or trial_id in self.told:
            return
        state, values = self._ending(trial_id, result, error)
        self.study.tell(self.trials[trial_id], values, state=state, skip_if_finished=True)
        self.told.add(trial_id)

    def _ending(self, trial_id: str, result: dict | None, error: bool):
        """The state and objective values a trial is told: FAIL when it errored or has no
        finite objective, PRUNED when it stopped before its last class (the result it
        stopped on, which Tune passes to on_trial_complete only, kept as its last
        intermediate value), else COMPLETE."""
        State = optuna.trial.TrialState
        if error:
            return State.FAIL, None
        if result is None:  # stopped before it reported
            return State.PRUNED, None
        if not finished(result, self.n_classes):
            self.on_trial_result(trial_id, result)
            return State.PRUNED, None
        values = [result.get(k) for k in self.objective_keys]
        if any(v is None or not math.isfinite(v) for v in values):
            return State.FAIL, None  # never a fake score
        return State.COMPLETE, values


INTERRUPTED_ATTR = "interrupted"  # user attribute of a trial paused by a stopped sweep


def _set_state(storage, study_name: str, old, new, marked: bool) -> int:
    """Move the study's trials in state ``old`` (those carrying :data:`INTERRUPTED_ATTR`
    only, if ``marked``) to ``new`` through Optuna's storage API; returns how many."""
    study_id = storage.get_study_id_from_name(study_name)
    moved = 0
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(old,)):
        if marked and not t.user_attrs.get(INTERRUPTED_ATTR):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, INTERRUPTED_ATTR, new == optuna.trial.TrialState.WAITING)
        storage.set_trial_state_values(trial_id, new)
        moved += 1
    return moved


def pause_running(storage, study_name: str) -> int:
    """Mark the trials of an interrupted sweep WAITING (with the user attribute
    :data:`INTERRUPTED_ATTR`) instead of leaving them RUNNING; returns how many.

    A sweep stopped by a signal is not running: the study shows its unfinished trials
    as waiting for ``--resume``, which turns them RUNNING again (:func:`resume_interrupted`)
    before Tune continues them. Optuna's ``set_trial_state_values`` allows RUNNING ->
    WAITING -> RUNNING.
    """
    State = optuna.trial.TrialState
    return _set_state(storage, study_name, State.RUNNING, State.WAITING, marked=False)


def resume_interrupted(storage, study_name: str) -> int:
    """Turn the trials :func:`pause_running` marked back to RUNNING; returns how many.
    It runs before the resumed sweep asks for a trial: ``ask`` takes WAITING trials first."""
    State = optuna.trial.TrialState
    return _set_state(storage, study_name, State.WAITING, State.RUNNING, marked=True)


LOST_ATTR = "lost"  # user attribute of a trial a killed driver asked for but never ran


def close_running(storage, study_name: str) -> int:
    """Tell trials left RUNNING by a driver that was killed as FAIL; returns how many.

    Called when a sweep has ended: every trial Tune ran is told by then, so a trial still
    RUNNING was asked after Tune's last snapshot and restarted under a new number.
    """
    study = optuna.load_study(study_name=study_name, storage=storage)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    study_id = storage.get_study_id_from_name(study_name)
    for t in running:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, LOST_ATTR, "asked just before the driver was killed, never run; "
                                                         "another trial took its place")
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return len(running)
