"""How much compute the search needs, replayed on learning curves trained once.

Two tabular tasks, each a full grid over four parameters of one method, every config
trained once with :func:`raysearch.train.loop.train_class` (one torch thread, CPU) and its
validation objective kept after every epoch in ``benchmarks/data/search_curves.json``:

- ``distcon-digits``: distcon on digits, normal classes 3 and 8 (their mean is the
  objective), validation anomalies from the other digits, 8 epochs; 4 x 4 x 4 x 2 = 128
  configs of learning rate, contrastive temperature, GMM components and rotation set;
- ``cutswap-toy``: cutswap on the harder toy textures (faint, small defects; class
  stripes), synthetic validation families that no config trains on, 8 epochs;
  4 x 4 x 3 x 2 = 96 configs of learning rate, largest patch area, saliency clusters and
  task classes.

A class's values are what a sweep sees: the loop's report after each epoch but the
last, then the class's closing value (the objective at the selected epoch). A trial
reports, like :func:`raysearch.train.worker.train_run`, the mean over its finished classes'
closing values and the current class's value, at progress ``classes done + epochs /
epochs``.

Replay: one trial at a time. Configs come from raysearch's own sampling
(:func:`raysearch.config.space.suggest` on the task's search space, the sampler
:func:`raysearch.run.searcher.make_sampler` builds, ask/tell on an in-memory study), and
ASHA is the scheduler :func:`raysearch.run.tuning.asha_scheduler` builds, fed every report.
A suggestion of a config already trained to the end is told its value and costs nothing
(:func:`raysearch.run.searcher.tell_if_repeat`, as the sweep's searcher does). A stopped trial is told PRUNED with its intermediate values (steps
:func:`raysearch.train.progress.optuna_step`), a finished one COMPLETE with its objective, as
in a sweep. Compute is counted in class-epochs. The figure: class-epochs until a
finished trial comes within one point (0.01) of the grid's best objective, median over
30 seeds (a search that never gets there within the budget counts as the budget).

The search defaults that matter (TPE's start-up trials, ASHA's grace and reduction
factor) are chosen on ``distcon-digits`` and reported on
``cutswap-toy``, against raysearch's defaults, for random, TPE, random+ASHA and TPE+ASHA.

Run:  python benchmarks/search_efficiency.py [--seeds 30] [--processes 2] [--recompute]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import types
import warnings
from multiprocessing import get_context

import _bench
import numpy as np

CURVES = os.path.join(_bench.HERE, "data", "search_curves.json")
TOLERANCE = 0.01  # "within one point"
EPOCHS = 8
COMMON = [f"train.epochs={EPOCHS}", "train.eval_every=1", "train.checkpoint=false", "train.batch_size=16"]
TASKS = {
    "distcon-digits": {
        "spec": "distcon.yaml",
        "overrides": ["data.classes=[3, 8]", "selection.anomalies=other_classes", "selection.holdout=0.3"],
        "grid": {
            "train.lr": [0.0003, 0.001, 0.003, 0.01],
            "params.contrastive.temperature": [0.1, 0.2, 0.5, 1.0],
            "params.gmm.components": [1, 2, 4, 8],
            "params.rotations": ["0-90-180-270", "0-180"],
        },
    },
    "cutswap-toy": {
        "spec": "cutswap.yaml",
        "overrides": ["data.dataset=folder", "data.classes=[stripes]", "data.image_size=64", "selection.holdout=0.25"],
        "grid": {
            "train.lr": [0.0003, 0.001, 0.003, 0.01],
            "params.patch.area_max": [0.05, 0.1, 0.15, 0.25],
            "params.cluster.k": [2, 4, 6],
            "params.task.classes": ["binary", "three_way"],
        },
    },
}
TUNE_ON, REPORT_ON = "distcon-digits", "cutswap-toy"
# The settings tried on TUNE_ON: TPE start-up trials x ASHA (grace, reduction factor)
STARTUP = (3, 5, 10, 20)
ASHA = ((1, 2), (1, 3), (1, 4), (2, 2), (2, 3), (3, 3))
BASELINE = (10, 1, 3.0)  # Optuna's 10 start-up trials, ASHA grace 1 and reduction factor 3: raysearch's first defaults
ARMS = {"random": ("random", False), "tpe": ("tpe", False), "random+asha": ("random", True), "tpe+asha": ("tpe", True)}


# -- the tasks and their curves ---------------------------------------------------------
def task_spec(name: str):
    """The task's spec; its search space is the grid (choice entries)."""
    from raysearch.config.spec import load_spec

    task = TASKS[name]
    overrides = [*COMMON, *task["overrides"]]
    if task["spec"] == "cutswap.yaml":
        overrides.append(f"data.root={_bench.hard_toy_root()}")
    spec = load_spec(os.path.join(_bench.DEMO, task["spec"]), overrides)
    space = {k: {"choice": list(v)} for k, v in task["grid"].items()}
    return dataclasses.replace(spec, search=dict(spec.search or {}, space=space, metric="val_image_auroc", mode="max"))


def grid_configs(name: str) -> list[dict]:
    grid = TASKS[name]["grid"]
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def config_id(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


def train_curve(job: tuple[str, dict]) -> dict:
    """Train one config of a task on every class (one torch thread); its per-epoch values."""
    import torch

    from raysearch.config import registry
    from raysearch.config.selection import selection_metric
    from raysearch.data import load_task
    from raysearch.train.loop import train_class

    torch.set_num_threads(1)
    name, config = job
    spec = task_spec(name).with_overrides(config)
    metric = selection_metric(spec)
    classes: dict[str, dict] = {}
    with _bench.Timer() as t:
        for normal_class in spec.classes():
            task = load_task(spec.data, spec.selection, normal_class, spec.train.seed)
            reported: list[float] = []
            try:
                result = train_class(spec, task, registry.method_class(spec.method), "cpu",
                                     report=lambda metrics, state, r=reported: r.append(float(metrics[metric])))
                values = [*reported, float(result.metrics[metric])]  # epochs 1..E-1, then the closing value
                classes[normal_class] = {"values": values, "best_epoch": result.best_epoch,
                                         "test_image_auroc": result.metrics.get("test_image_auroc"), "error": None}
            except Exception as err:  # a diverged config: it fails like a failed trial
                classes[normal_class] = {"values": [], "error": f"{type(err).__name__}: {err}"}
    return {"task": name, "config": config, "classes": classes, "seconds": t.s}


def compute_curves(names: list[str], processes: int, kept: dict | None = None) -> dict:
    """Train every config of ``names`` (keeping the other tasks of ``kept``) and save the curves."""
    if any(TASKS[n]["spec"] == "cutswap.yaml" for n in names):
        _bench.hard_toy_root()  # once, before the workers start
    payload = dict(kept or {"tasks": {}})
    for name in names:
        jobs = [(name, c) for c in grid_configs(name)]
        print(f"{name}: training {len(jobs)} configs ({processes} processes, 1 thread each)...", flush=True)
        with _bench.Timer() as t:
            with get_context("spawn").Pool(processes) as pool:
                records = pool.map(train_curve, jobs, chunksize=1)
        spec = task_spec(name)
        payload["tasks"][name] = {
            "machine": _bench.machine(), "seconds": t.s, "processes": processes,
            "spec": os.path.relpath(os.path.join(_bench.DEMO, TASKS[name]["spec"]), _bench.REPO),
            "overrides": [*COMMON, *TASKS[name]["overrides"]], "grid": TASKS[name]["grid"],
            "classes": list(spec.classes()), "epochs": EPOCHS, "toy_options": _bench.HARD_TOY,
            "curves": records,
        }
        os.makedirs(os.path.dirname(CURVES), exist_ok=True)
        with open(CURVES, "w") as f:
            json.dump(payload, f, indent=None, separators=(",", ":"))
        print(f"{name}: {len(records)} configs in {t.s:.0f} s -> {os.path.relpath(CURVES, _bench.REPO)}", flush=True)
    return payload


# -- replaying searches -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Setting:
    """One way to search: the sampler, ASHA on or off, and the defaults being tuned."""

    sampler: str
    asha: bool
    startup: int = 10
    grace: int = 1
    reduction: float = 3.0
    tell_repeats: bool = True  # False: a repeated config is trained again (raysearch before repeats were told)

    def label(self) -> str:
        arm = next(k for k, v in ARMS.items() if v == (self.sampler, self.asha))
        parts = [f"startup {self.startup}"] if self.sampler == "tpe" else []
        if self.asha:
            parts.append(f"grace {self.grace}, reduction {self.reduction:g}")
        if not self.tell_repeats:
            parts.append("repeats trained")
        return f"{arm} ({', '.join(parts)})" if parts else arm


class Table:
    """A task's curves: per config, each class's values; the objective and test AUROC."""

    def __init__(self, name: str, data: dict):
        self.name, self.spec = name, task_spec(name)
        self.classes, self.epochs, self.grid = data["classes"], data["epochs"], data["grid"]
        self.values: dict[str, list[list[float]] | None] = {}
        self.objective: dict[str, float] = {}
        self.test: dict[str, float] = {}
        for record in data["curves"]:
            key = config_id(record["config"])
            per_class = [record["classes"][c] for c in self.classes]
            if any(c["error"] for c in per_class):
                self.values[key] = None
                continue
            self.values[key] = [c["values"] for c in per_class]
            self.objective[key] = float(np.mean([c["values"][-1] for c in per_class]))
            self.test[key] = float(np.mean([c["test_image_auroc"] for c in per_class]))
        self.best = max(self.objective.values())
        self.target = self.best - TOLERANCE
        self.budget = len(self.values) * len(self.classes) * self.epochs  # the whole grid once

    def search(self, setting: Setting, seed: int) -> dict:
        """One replayed search; it stops at the target or at the budget (class-epochs)."""
        import optuna
        from ray.tune.schedulers import TrialScheduler

        from raysearch.config.space import SchedulerSpec, is_repeat, parse_search, suggest
        from raysearch.run.searcher import MAX_REPEATS, make_sampler, tell_if_repeat
        from raysearch.run.tuning import asha_scheduler
        from raysearch.train.progress import finished, optuna_step, progress

        search = dataclasses.replace(
            parse_search(self.spec), sampler=setting.sampler, seed=seed, startup_trials=setting.startup,
            scheduler=SchedulerSpec(kind="asha" if setting.asha else "none", grace=setting.grace,
                                    reduction_factor=setting.reduction))
        study = optuna.create_study(direction="maximize", sampler=make_sampler(search))
        scheduler = asha_scheduler(self.spec, search) if setting.asha else None
        metric, fixed, n = f"mean_{search.metrics[0]}", self.spec.flat_config(), len(self.classes)
        used, hit = 0, None
        repeats = 0  # suggestions told a trained config's value in a row
        while used < self.budget and hit is None:
            trial = study.ask()
            config = suggest(trial, search, fixed)
            if setting.tell_repeats and repeats < MAX_REPEATS and tell_if_repeat(study, trial):  # as the sweep's searcher does
                repeats += 1
                continue
            repeats = 0
            per_class = self.values[config_id({k: config[k] for k in self.grid})]
            if per_class is None:  # the config fails at its first epoch
                used += 1
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            handle = types.SimpleNamespace(trial_id=str(trial.number))
            if scheduler:
                scheduler.on_trial_add(None, handle)
            closing: list[float] = []
            result: dict = {}
            stopped = False
            for ci, values in enumerate(per_class):
                for epoch in range(1, self.epochs + 1):
                    used += 1
                    value = (sum(closing) + values[epoch - 1]) / (len(closing) + 1)
                    result = {"progress": progress(ci, epoch, self.epochs), metric: value}
                    trial.report(value, optuna_step(result["progress"]))
                    if scheduler and scheduler.on_trial_result(None, handle, result) == TrialScheduler.STOP \
                            and not finished(result, n):
                        stopped = True
                        break
                if stopped:
                    break
                closing.append(values[-1])
            if scheduler:
                scheduler.on_trial_complete(None, handle, result)
            if stopped:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                continue
            study.tell(trial, result[metric])
            if result[metric] >= self.target:
                hit = used
        return {"epochs": hit, "trials": sum(not is_repeat(t) for t in study.trials)}


_TABLES: dict[str, Table] = {}


def _replay(job: tuple[str, Setting, int]) -> dict:
    """One search of a pool worker (tables loaded once per process)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    name, setting, seed = job
    if name not in _TABLES:
        with open(CURVES) as f:
            _TABLES[name] = Table(name, json.load(f)["tasks"][name])
    return _TABLES[name].search(setting, seed)


def summarize(table: Table, runs: list[dict]) -> dict:
    capped = [r["epochs"] if r["epochs"] is not None else table.budget for r in runs]
    return {"median": float(np.median(capped)), "q25": float(np.percentile(capped, 25)),
            "q75": float(np.percentile(capped, 75)), "mean": float(np.mean(capped)),
            "reached": sum(r["epochs"] is not None for r in runs), "seeds": len(runs),
            "trials": float(np.mean([r["trials"] for r in runs]))}


def replay_all(tables: dict[str, Table], jobs: list[tuple[str, Setting]], seeds: int, processes: int) -> dict:
    """``{(task, setting): summary}`` over ``seeds`` searches of each job."""
    flat = [(name, setting, seed) for name, setting in jobs for seed in range(seeds)]
    with get_context("spawn").Pool(processes) as pool:
        runs = pool.map(_replay, flat, chunksize=4)
    out = {}
    for k, (name, setting) in enumerate(jobs):
        out[(name, setting)] = summarize(tables[name], runs[k * seeds : (k + 1) * seeds])
    return out


def describe(table: Table) -> str:
    objectives = np.array(list(table.objective.values()))
    tests = np.array([table.test[k] for k in table.objective])
    from scipy.stats import spearmanr

    near = int((objectives >= table.target).sum())
    return (f"{table.name}: {len(table.values)} configs x {len(table.classes)} class(es) x {table.epochs} epochs, "
            f"{len(table.values) - len(table.objective)} failed; objective best {table.best:.4f}, median "
            f"{np.median(objectives):.4f}, worst {objectives.min():.4f}; {near} config(s) within {TOLERANCE} of the "
            f"best (target {table.target:.4f}); Spearman(objective, test AUROC) "
            f"{spearmanr(objectives, tests).statistic:+.2f}; budget {table.budget} class-epochs (the grid once)")


def raysearch_defaults() -> tuple[int, int, float]:
    """(TPE start-up trials, ASHA grace, reduction factor) that a spec gets when it sets none."""
    from raysearch.config.space import SchedulerSpec, SearchSpec

    startup = next(f.default for f in dataclasses.fields(SearchSpec) if f.name == "startup_trials")
    return startup, SchedulerSpec().grace, SchedulerSpec().reduction_factor


def arms(startup: int, grace: int, reduction: float) -> list[Setting]:
    return [Setting(sampler, asha, startup, grace, reduction) for sampler, asha in ARMS.values()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=30, help="searches per setting")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--recompute", nargs="*", choices=list(TASKS), help="train these tasks' grids again (all if none named)")
    args = ap.parse_args()
    print(_bench.machine_line(_bench.machine()), flush=True)
    kept = json.load(open(CURVES)) if os.path.exists(CURVES) else None
    missing = [n for n in TASKS if args.recompute is not None and (not args.recompute or n in args.recompute)
               or not kept or n not in kept["tasks"]]
    data = compute_curves(missing, args.processes, kept) if missing else kept
    tables = {n: Table(n, data["tasks"][n]) for n in TASKS}
    for name, table in tables.items():
        d = data["tasks"][name]
        print(f"{describe(table)}; trained in {d['seconds']:.0f} s on {d['machine']['date']}", flush=True)

    # 1. the defaults, chosen on one task
    candidates = [Setting("tpe", True, s, g, r) for s in STARTUP for g, r in ASHA]
    with _bench.Timer() as t:
        tuning = replay_all(tables, [(TUNE_ON, c) for c in candidates], args.seeds, args.processes)
    pick = min(candidates, key=lambda c: (tuning[(TUNE_ON, c)]["median"], tuning[(TUNE_ON, c)]["mean"]))
    print(f"tuning on {TUNE_ON} ({args.seeds} seeds per setting, {t.s:.0f} s): TPE+ASHA class-epochs to target")
    for c in sorted(candidates, key=lambda c: (tuning[(TUNE_ON, c)]["median"], tuning[(TUNE_ON, c)]["mean"])):
        r = tuning[(TUNE_ON, c)]
        print(f"  {c.label():52s} median {r['median']:6.0f} (IQR {r['q25']:.0f}-{r['q75']:.0f}), mean {r['mean']:6.0f}, "
              f"reached {r['reached']}/{r['seeds']}" + ("   <- chosen" if c == pick else ""))

    # 2. every arm with raysearch's defaults and with the chosen ones, on both tasks
    default = BASELINE
    chosen = (pick.startup, pick.grace, pick.reduction)
    current = raysearch_defaults()
    print(f"raysearch's defaults (startup, grace, reduction): {current}; chosen here: {chosen}"
          + ("" if current == chosen else "  <- they differ"))
    retrained = [dataclasses.replace(a, tell_repeats=False) for a in arms(*default) if a.sampler == "tpe"]
    jobs = [(name, a) for name in (REPORT_ON, TUNE_ON)
            for a in dict.fromkeys([*arms(*default), *arms(*chosen), *retrained])]
    report = replay_all(tables, jobs, args.seeds, args.processes)
    rows = []
    print(f"replay ({args.seeds} seeds): class-epochs until a finished trial is within {TOLERANCE} of the best")
    settings = [("first defaults", default), (f"chosen on {TUNE_ON}", chosen)] if chosen != default else \
        [(f"first defaults = chosen on {TUNE_ON}", default)]
    for name in (REPORT_ON, TUNE_ON):
        for label, which in settings:
            base = report[(name, Setting("random", False, *which))]
            random = base["median"]
            for a in arms(*which) + (retrained if which == default else []):
                r = report[(name, a)]
                rows.append({"task": name, "settings": label, "arm": a.label(), **dataclasses.asdict(a), **r,
                             "ratio_to_random": r["median"] / random, "mean_ratio_to_random": r["mean"] / base["mean"]})
                print(f"  {name:15s} {label:24s} {a.label():60s} median {r['median']:5.0f} "
                      f"(IQR {r['q25']:.0f}-{r['q75']:.0f}), mean {r['mean']:5.0f}, reached {r['reached']}/{r['seeds']}, "
                      f"{r['trials']:.0f} trials; / random: median {r['median'] / random:.2f}, mean "
                      f"{r['mean'] / base['mean']:.2f}")
    headline = next(r for r in rows if r["task"] == REPORT_ON and r["settings"] == settings[-1][0]
                    and r["arm"] == Setting("tpe", True, *chosen).label())
    ratio = headline["ratio_to_random"]
    print(f"TPE+ASHA / random on {REPORT_ON} with the defaults chosen on {TUNE_ON}: {ratio:.2f} "
          f"(goal <= 0.33: {'met' if ratio <= 1 / 3 else 'not met'})")
    path = _bench.save("search_efficiency", {
        "args": vars(args), "tolerance": TOLERANCE, "tune_on": TUNE_ON, "report_on": REPORT_ON,
        "tasks": {n: {"configs": len(tab.values), "failed": len(tab.values) - len(tab.objective), "best": tab.best,
                      "target": tab.target, "near": int(sum(v >= tab.target for v in tab.objective.values())),
                      "budget": tab.budget, "classes": tab.classes, "epochs": tab.epochs, "grid": tab.grid,
                      "summary": describe(tab), "seconds": data["tasks"][n]["seconds"],
                      "date": data["tasks"][n]["machine"]["date"]} for n, tab in tables.items()},
        "defaults": default, "chosen": chosen, "raysearch_defaults": current, "tuning_seconds": t.s,
        "tuning": [{**dataclasses.asdict(c), "label": c.label(), **tuning[(TUNE_ON, c)]} for c in candidates],
        "rows": rows, "ratio": ratio, "mean_ratio": headline["mean_ratio_to_random"],
    })
    print(f"wrote {os.path.relpath(path, _bench.REPO)}")


if __name__ == "__main__":
    main()
