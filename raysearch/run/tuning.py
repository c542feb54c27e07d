"""`raysearch tune`: Ray Tune with Optuna over a spec's search space.

What the searcher learns from is kept honest:

* the objective is ``mean_<metric>``, the metric averaged over the classes a trial has
  reached (validation unless the spec opts into paper-style test selection);
* ASHA compares trials at the same ``progress`` (:mod:`raysearch.train.progress`: classes done
  in the spec's fixed order plus the fraction of the current class's epochs), and a
  trial it stops early is told to Optuna as PRUNED with its intermediate values, never
  as COMPLETE with a low-fidelity score (:mod:`raysearch.run.searcher`);
* failed trials (NaN loss, out of memory, a crash) are told as FAIL and leave a failed
  result row with the reason; the sweep goes on.

How trials run, resume and stop is :mod:`raysearch.run.experiment`, shared with ablations.
The Optuna study is a SQLite file in the experiment folder (``optuna.db``) that the
optuna CLI and optuna-dashboard open; Ray's experiment state lives in ``ray/``.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from raysearch.config.objective import report_key
from raysearch.config.space import SearchSpec, parse_search
from raysearch.config.spec import Spec
from raysearch.run.experiment import Job, TrialPlan, reuse_processes, run_experiment, run_job
from raysearch.run.searcher import (
    PruningOptunaSearch,
    SpaceFunction,
    StudySync,
    close_running,
    make_sampler,
    pause_running,
    study_url,
)
from raysearch.store import results
from raysearch.store.lock import exclusive
from raysearch.train.progress import format_table

__all__ = ["run_tune", "dry_run", "sweep_summary", "study_url", "asha_scheduler"]


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
    current stdout); start nothing. The data need not be there where the spec lists its
    classes."""
    from raysearch.run.plan import plan_head, resources_line

    stream = stream or sys.stdout
    search = with_budget(parse_search(spec), trials, concurrent)
    classes = plan_head(spec, "experiment", stream)
    t = spec.train
    stream.write(f"objective: {', '.join(f'{m} ({d})' for m, d in zip(search.metrics, search.modes, strict=True))}"
                 f" averaged over classes\n")
    startup = f", {search.startup_trials} random start-up trials" if search.sampler == "tpe" else ""
    sched = search.scheduler
    stream.write(f"sampler {search.sampler} (seed {search.seed}{startup}), {search.trials} trials, "
                 f"{search.concurrent} at a time, scheduler "
                 + (f"asha (grace {sched.grace}, reduction factor {sched.reduction_factor:g})" if search.uses_asha
                    else "none") + "\n")
    stream.write("space:\n")
    for p in search.space:
        stream.write(f"  {p.key}: {p.describe()}\n")
    runs = search.trials * len(classes)
    gpus = t.workers * t.gpus_per_worker
    stream.write(f"runs: {search.trials} trials x {len(classes)} classes = {runs} class runs "
                 f"of {t.epochs} epochs each (fewer with early stopping)\n")
    stream.write(resources_line(t, "per trial") + (f"; time one class run with `raysearch train` and multiply by "
                                                    f"{runs * gpus:g} for an upper bound in GPU hours" if gpus else "")
                 + "\n")
    return search


def asha_scheduler(spec: Spec, search: SearchSpec):
    """The ASHA scheduler of a sweep: trials compared at equal progress (classes done).

    Its rungs are ``grace`` evaluations of the first class and that times each power of
    the reduction factor, up to the run's classes.
    """
    from ray.tune.schedulers import ASHAScheduler

    n_classes = len(spec.classes())
    return ASHAScheduler(
        time_attr="progress",
        metric=report_key(search.metrics[0]),
        mode=search.modes[0],
        # A class's last report comes after its row is stored, so a stop at a rung
        # or at max_t never loses a finished class.
        max_t=n_classes,
        # `grace` evaluations of the first class, as a fraction of the spec's epochs.
        grace_period=min(n_classes, search.scheduler.grace * spec.train.eval_every / spec.train.epochs),
        reduction_factor=search.scheduler.reduction_factor,
    )


@exclusive("tune")
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
    log: Sequence[str] = (),
) -> int:
    """Run (or resume) the sweep of ``spec`` in ``output``; returns the exit code.

    ``log``: trackers that also get every evaluation (``mlflow``, ``wandb``; see
    :mod:`raysearch.train.trackers`).
    """
    import optuna
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    # --trials / --concurrent become the spec's own values, so spec.yaml records the budget
    # and a resume from the folder alone runs (and announces) the same number of trials.
    budget = {k: v for k, v in (("search.trials", trials), ("search.concurrent", concurrent)) if v is not None}
    spec = spec.with_overrides(budget) if budget else spec
    search = parse_search(spec)
    n_classes = len(spec.classes())
    metric_keys = [report_key(m) for m in search.metrics]
    sync = StudySync(output)
    storage = None

    def tune_config_of():
        searcher = PruningOptunaSearch(
            n_classes=n_classes,
            objective_keys=metric_keys,
            output=output,
            budget=search.trials,
            space=SpaceFunction(search, spec.flat_config()),
            metric=metric_keys if search.multi_objective else metric_keys[0],
            mode=list(search.modes) if search.multi_objective else search.modes[0],
            sampler=make_sampler(search),
            study_name=spec.name,
            storage=study_url(output),
            points_to_evaluate=[p] if (p := default_point(spec, search)) and search.sampler != "grid" else None,
        )
        return tune.TuneConfig(
            search_alg=searcher,
            scheduler=asha_scheduler(spec, search) if search.uses_asha else FIFOScheduler(),
            num_samples=search.trials,
            max_concurrent_trials=search.concurrent,
            reuse_actors=reuse_processes(spec.train),
        )

    def start(on_ray_lost) -> list[int]:
        nonlocal storage
        if resume:
            sync.fetch()
        os.makedirs(os.path.dirname(sync.local), exist_ok=True)
        storage = optuna.storages.RDBStorage(study_url(output))
        if not quiet:
            stream.write(f"raysearch tune: {spec.name}: {search.trials} trials, {search.concurrent} at a time -> "
                         f"{results.redact(output)}\n")
            url = shlex.quote(study_url(output))  # commands to paste: a folder may hold spaces
            stream.write(f"  optuna study: optuna-dashboard {url}\n")
            stream.write(f"                optuna trials --study-name {spec.name} --storage {url}\n")
        # A resumed sweep's searcher is the one Tune saved (restored with the experiment),
        # with its record of the trials asked and of the spec's default point enqueued.
        tune_config = None if resume else tune_config_of()
        return run_experiment(spec, TrialPlan(spec, output, "tune"), tune_config=tune_config, param_space=None,
                              total=search.trials, objective=metric_keys[0], mode=search.modes[0], resume=resume,
                              quiet=quiet, stream=stream, study_sync=sync, log=log, on_ray_lost=on_ray_lost)

    def finish() -> None:
        close_running(storage, spec.name)
        sync.push()

    def interrupted() -> None:
        if storage is not None:
            pause_running(storage, spec.name)  # --resume turns them RUNNING again
        sync.push()

    job = Job(command="tune", noun="sweep", runs="trials", kept="finished trials and classes are kept",
              spec=spec, output=output, total=search.trials,
              summary=lambda: sweep_summary(output, search, n_classes=n_classes), start=start, finish=finish,
              interrupted=interrupted)
    return run_job(job, resume=resume, address=address, num_cpus=num_cpus, quiet=quiet, stream=stream)


def _fidelity_line(df, objective: str, mode: str) -> str:
    """One line of the selection-fidelity diagnostic (test labels; never selects anything)."""
    from analysis import fidelity_line, selection_fidelity

    if objective not in df.columns:
        return f"selection fidelity: not computed ({objective} is not in the rows)"
    return fidelity_line(selection_fidelity(df, objective, mode))


def sweep_summary(output: str, search: SearchSpec, top: int = 5, n_classes: int | None = None) -> str:
    """The best configurations of a sweep by their class-mean objective, each named by its
    trial, Optuna number and ``config_hash`` (:func:`analysis.rank.trial_table`: the order and
    the id that export, compare and the report use)."""
    from analysis.confidence import sweep_confidence
    from analysis.load import load_results
    from analysis.rank import trial_table

    df = load_results(output)
    df = df[df["kind"] == "tune"] if not df.empty else df  # not `raysearch train` runs in DIR
    if df.empty:
        return "no result rows"
    metric, mode = search.metrics[0], search.modes[0]
    trials = trial_table(df, metric, mode, n_classes)
    counts = trials["status"].value_counts()
    lines = [f"trials: {counts.get('completed', 0)} completed, {counts.get('pruned', 0)} pruned, "
             f"{counts.get('failed', 0)} failed" + (f", {counts['unfinished']} unfinished" if counts.get("unfinished") else "")]
    best = trials[trials["complete"]].head(top)
    if not best.empty:
        searched = [p.key for p in search.space if p.key in df.columns]
        first = df.drop_duplicates("trial_id").set_index("trial_id")
        body = []
        for r in best.itertuples():
            number = None if r.optuna_trial is None or r.optuna_trial != r.optuna_trial else int(r.optuna_trial)
            body.append([int(r.rank), r.trial_id, number, float(r.mean), r.config_hash,
                         *[_cell(first.at[r.trial_id, k]) for k in searched]])
        lines.append(format_table(["rank", "trial", "optuna #", f"mean {metric}", "config_hash", *searched], body))
    if counts.get("completed", 0) < 10:
        lines.append("note: fewer than 10 completed trials; rankings and importances are not yet reliable")
    confidence = sweep_confidence(df, metric, mode)  # label-free: before any test label is read
    if confidence.can_rank is not None:
        lines.append(confidence.line())
    fidelity = (metric, mode) if metric.startswith("val_") else ("val_image_auroc", "max")
    lines.append(_fidelity_line(df, *fidelity))
    lines.append(f"results: {results.redact(results.results_dir(output))}")
    folder = shlex.quote(results.redact(output))
    lines.append(f"next: raysearch report {folder}    raysearch export {folder} --top 3")
    return "\n".join(lines)


def _cell(value: Any) -> Any:
    """A config value as the summary table shows it (floats to 4 significant digits)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return value
