"""The Optuna side of a sweep: the searcher Tune asks, its sampler and the study file.

:class:`PruningOptunaSearch` is Ray's OptunaSearch with honest reporting (early-stopped
trials are PRUNED with their intermediate values, trials without a finite objective
FAIL) and a budget kept with the study. The study is a SQLite file in the experiment
folder (``optuna.db``), which the optuna CLI and optuna-dashboard open; for an experiment
in cloud storage it is a local file copied there after every trial (:class:`StudySync`).
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any

from ray.tune.search.optuna import OptunaSearch

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


def make_sampler(search: SearchSpec):
    """The Optuna sampler named by ``search.sampler``, seeded."""
    import optuna

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
        return optuna.samplers.GridSampler(grid_space(search), seed=seed)
    raise SpecError(f"unknown sampler {search.sampler!r}", key="search.sampler")


MAX_REPEATS = 100  # repeated suggestions told in a row before one is trained anyway


def tell_if_repeat(study, trial) -> bool:
    """Tell ``trial`` the objective of a completed trial with exactly its params, if any.

    A config that was trained to the end gives the same result again (its seed is part
    of the config), and on a space of choices samplers propose the same config again
    and again: such a suggestion is told its twin's value (and marked with
    :data:`REPEAT_ATTR`) instead of being trained. Returns whether it was.
    """
    import optuna

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


class PruningOptunaSearch(OptunaSearch):
    """OptunaSearch that tells early-stopped trials as PRUNED and numbers the configs.

    Ray's OptunaSearch tells a trial that ASHA stopped early as COMPLETE with its
    low-fidelity value, and TPE would then learn from it as if it were final. Here such
    a trial keeps its intermediate values and is told PRUNED; a trial without a finite
    objective is told FAIL.

    The study names its objectives (``study.metric_names``) and each trial carries its
    Tune trial id, its rows' ``config_hash`` and the pattern of its result files as user
    attributes.

    Ray's OptunaSearch keeps its study and trials in private attributes (``_ot_study``,
    ``_ot_trials``, ``_storage``, ``_completed_trials``) that this class reads, and a
    restored trial is re-attached to the study's storage (Optuna's ``Study._storage``); a test
    (tests/train/test_searcher.py) fails when the installed Ray changes them. What it tells
    Optuna goes through the public API (``study.tell`` with a number and a state,
    ``Trial.report``), and the steps it reported are its own record.
    """

    def __init__(self, *args, n_classes: int, objective_keys: list[str], output: str | None = None,
                 budget: int | None = None, **kwargs):
        self.objective_keys = objective_keys  # before Ray's __init__, which sets up the study
        self.output = output
        super().__init__(*args, **kwargs)
        # The sweep's trial count, kept here rather than by Tune alone: Tune's saved
        # state can lag the study by the trials that started after its last snapshot.
        self.budget, self.n_classes, self.asked = budget, n_classes, 0
        self.reported: dict[int, set[int]] = {}  # Optuna trial number -> steps told to the study

    def _setup_study(self, mode):
        import warnings

        import optuna

        super()._setup_study(mode)
        # The dashboard and `optuna trials` name the objectives instead of "Objective 0"
        # (an API Optuna still marks experimental; a test checks it).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._ot_study.set_metric_names([metric_of(k) for k in self.objective_keys])

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
        resume_interrupted(self._storage, saved.study_name)
        # The steps the study holds, including those told after Tune's last snapshot.
        self.reported = {t.number: set(t.intermediate_values) for t in self._ot_study.get_trials(deepcopy=False)}
        self._skip_told_trials()
        self._adopt_unrecorded_trials()

    def _skip_told_trials(self) -> None:
        """Trials Tune resumes that the study had already closed (told PRUNED, COMPLETE or
        FAIL after Tune's last snapshot of a killed driver) are not told again: Optuna
        refuses to tell a finished trial, and the study keeps what it was told first."""
        by_number = {t.number: t for t in self._ot_study.get_trials(deepcopy=False)}
        for trial_id, ot_trial in self._ot_trials.items():
            told = by_number.get(ot_trial.number)
            if told is not None and told.state.is_finished():
                self._completed_trials.add(trial_id)

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
            by_class = {r["class_index"]: r for r in trial_rows}  # one row per class
            values = [trial_value([r.get(metric_of(k)) for r in by_class.values()], self.n_classes)
                      for k in self.objective_keys]
            if statuses == {"completed"} and all(math.isfinite(v) for v in values):
                self._ot_study.tell(t.number, values if len(values) > 1 else values[0])
            else:
                self._ot_study.tell(t.number, state=State.FAIL if "failed" in statuses else State.PRUNED)

    def suggest(self, trial_id: str):
        from ray.tune.search import Searcher

        if self.budget is not None and self.asked >= self.budget and trial_id not in self._ot_trials:
            return Searcher.FINISHED
        config = super().suggest(trial_id)
        for _ in range(MAX_REPEATS):  # a config trained before is told its value, not trained again
            if not isinstance(config, dict) or not tell_if_repeat(self._ot_study, self._ot_trials[trial_id]):
                break
            del self._ot_trials[trial_id]
            config = super().suggest(trial_id)
        if isinstance(config, dict):
            ot_trial = self._ot_trials[trial_id]
            config[OPTUNA_KEY] = ot_trial.number
            # What optuna-dashboard shows beside the number: where the trial's rows are.
            ot_trial.set_user_attr("trial_id", trial_id)
            if isinstance(self._space, SpaceFunction):  # the config_hash column of the trial's rows
                from raysearch.config.spec import config_hash

                sampled = {k: v for k, v in config.items() if not k.startswith("__")}
                ot_trial.set_user_attr("config_hash", config_hash({**self._space.fixed, **sampled}))
            if self.output is not None:
                ot_trial.set_user_attr("rows", results.join(results.redact(results.results_dir(self.output)),
                                                            f"{trial_id}--*.parquet"))
            self.asked += 1
            if self.output is not None:
                StudySync(self.output).push()  # the study knows the trial before Tune's state does
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Intermediate values at step = progress in thousandths of a class, each step once."""
        if isinstance(self.metric, list) or trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return  # Optuna keeps no intermediate values for multi-objective studies
        value, step = result.get(self.metric), optuna_step(result.get("progress", 0))
        ot_trial = self._ot_trials[trial_id]
        steps = self.reported.setdefault(ot_trial.number, set())
        if value is not None and math.isfinite(value) and step not in steps:
            ot_trial.report(value, step)
            steps.add(step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        import optuna

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        stopped_early = not error and result is not None and not finished(result, self.n_classes)
        if stopped_early:
            # Tune does not pass the result that the scheduler stopped on to
            # on_trial_result: keep it as the last intermediate value.
            self.on_trial_result(trial_id, result)
            self._ot_study.tell(self._ot_trials[trial_id].number, state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        if result is not None and not error:
            vals = [result.get(k) for k in self.objective_keys]
            if any(v is None or not math.isfinite(v) for v in vals):
                error, result = True, None  # no usable objective: a failed trial, never a fake score
        super().on_trial_complete(trial_id, result=result, error=error)


INTERRUPTED_ATTR = "interrupted"  # user attribute of a trial paused by a stopped sweep


def _set_state(storage, study_name: str, old, new, marked: bool) -> int:
    """Move the study's trials in state ``old`` (those carrying :data:`INTERRUPTED_ATTR`
    only, if ``marked``) to ``new`` through Optuna's storage API; returns how many."""
    import optuna

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
    import optuna

    State = optuna.trial.TrialState
    return _set_state(storage, study_name, State.RUNNING, State.WAITING, marked=False)


def resume_interrupted(storage, study_name: str) -> int:
    """Turn the trials :func:`pause_running` marked back to RUNNING; returns how many.
    It runs before the resumed sweep asks for a trial: ``ask`` takes WAITING trials first."""
    import optuna

    State = optuna.trial.TrialState
    return _set_state(storage, study_name, State.WAITING, State.RUNNING, marked=True)


def close_running(storage, study_name: str) -> int:
    """Tell trials left RUNNING by a driver that was killed as FAIL; returns how many.

    Called when a sweep has ended: every trial Tune ran is told by then, so a trial still
    RUNNING was asked after Tune's last snapshot and restarted under a new number.
    """
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for t in running:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return len(running)
