"""TPE + ASHA against random search at the same budget, replayed on real learning curves.

1. Curves (computed once, cached in ``benchmarks/data/curves.json``): every config of a
   small grid of the distcon digits demo (one normal class, validation anomalies from
   the other classes, batch 16, 6 epochs, an evaluation every epoch) trained with
   :func:`raysearch.loop.train_class`. The value at epochs 1-5 is what the loop reports
   after each evaluation; the value at epoch 6 is the class's closing value (the
   validation AUROC of the selected epoch), exactly the values a sweep's scheduler and
   searcher see at ``progress`` 1..6.
2. Replay: a simulated sequential search (one trial at a time) asks Optuna for a config
   (ask/tell; the sampler as :func:`raysearch.searcher.make_sampler` builds it), looks its
   curve up epoch by epoch and counts compute in epochs. ASHA is Ray's rule (rungs at 1
   and 3 epochs for grace 1, reduction factor 3, max 6; a trial stops at a rung when its
   value is below the (1 - 1/3) quantile of the values recorded there before it). A
   stopped trial is told PRUNED with its intermediate values, a finished one COMPLETE
   with its closing value, as raysearch does.

The figure: epochs of compute until a finished trial is within 1 AUROC point of the
grid's best closing value, median over seeds (searches that never get there within the
budget count as the budget, and are counted), for TPE + ASHA and random search without
a scheduler, and their ratio (goal <= 1/3). TPE alone and random + ASHA separate the
two effects.

Run:  python benchmarks/search_efficiency.py [--seeds 30 --budget 240] [--recompute]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import warnings
from multiprocessing import get_context

import _bench
import numpy as np

CURVES = os.path.join(_bench.HERE, "data", "curves.json")
SPEC = os.path.join(_bench.DEMO, "distcon.yaml")
NORMAL_CLASS = "3"
EPOCHS = 6
BASE = [
    f"data.classes=[{NORMAL_CLASS}]",
    "selection.anomalies=other_classes",
    "selection.holdout=0.3",  # 27 normals + 27 other-class digits: an AUROC step of ~0.1 %
    f"train.epochs={EPOCHS}",
    "train.batch_size=16",  # 4 steps per epoch on the 64 remaining training images
    "train.eval_every=1",
    "train.checkpoint=false",
]
GRID = {  # 4 x 2 x 2 = 16 configurations
    "train.lr": [0.0001, 0.001, 0.003, 0.01],
    "params.rotations": ["0-90-180-270", "0-180"],
    "params.contrastive.temperature": [0.1, 0.5],
}
GRACE, REDUCTION = 1, 3
TOLERANCE = 0.01  # "within 1 AUROC point"
FIXED_BUDGETS = (36, 96)  # epochs (6 and 16 full trials) at which the best value found is compared


def grid_configs() -> list[dict]:
    keys = list(GRID)
    return [dict(zip(keys, values)) for values in itertools.product(*(GRID[k] for k in keys))]


def config_id(config: dict) -> str:
    return json.dumps({k: config[k] for k in GRID}, sort_keys=True)


def train_curve(config: dict) -> dict:
    """Train one grid config (one torch thread) and return its per-epoch values."""
    import torch

    from raysearch import registry
    from raysearch.data import load_task
    from raysearch.loop import train_class
    from raysearch.spec import load_spec

    torch.set_num_threads(1)
    spec = load_spec(SPEC, BASE).with_overrides(config)
    task = load_task(spec.data, spec.selection, NORMAL_CLASS, spec.train.seed)
    reported: list[float] = []
    with _bench.Timer() as t:
        result = train_class(spec, task, registry.method_class(spec.method), "cpu",
                             report=lambda metrics, state: reported.append(metrics["val_image_auroc"]))
    values = reported + [result.metrics["val_image_auroc"]]  # epochs 1..5, then the closing value
    assert len(values) == EPOCHS, values
    return {"config": config, "values": values, "best_epoch": result.best_epoch,
            "test_image_auroc": result.metrics.get("test_image_auroc"), "seconds": t.s,
            "train_size": len(task.train), "val_size": len(task.val)}


def compute_curves(processes: int) -> dict:
    configs = grid_configs()
    with _bench.Timer() as t:
        with get_context("spawn").Pool(processes) as pool:
            curves = pool.map(train_curve, configs, chunksize=1)
    payload = {"machine": _bench.machine(), "spec": os.path.relpath(SPEC, _bench.REPO), "overrides": BASE,
               "grid": GRID, "epochs": EPOCHS, "normal_class": NORMAL_CLASS, "seconds": t.s,
               "processes": processes, "curves": curves}
    os.makedirs(os.path.dirname(CURVES), exist_ok=True)
    with open(CURVES, "w") as f:
        json.dump(payload, f, indent=1)
    return payload


class Asha:
    """Ray Tune's ASHA stopping rule (one bracket), by trial order."""

    def __init__(self, max_t: int, grace: int, rf: float):
        n = int(np.log(max_t / grace) / np.log(rf) + 1)
        self.rf = rf
        self.rungs = {grace * int(rf**k): [] for k in range(n)}

    def stop(self, epoch: int, value: float) -> bool:
        recorded = self.rungs.get(epoch)
        if recorded is None:
            return False
        cutoff = np.nanpercentile(recorded, (1 - 1 / self.rf) * 100) if recorded else None
        recorded.append(value)
        return cutoff is not None and value < cutoff


def simulate(curves: dict[str, list[float]], sampler: str, asha: bool, seed: int, budget: int,
             target: float) -> dict:
    import optuna
    from optuna.distributions import CategoricalDistribution

    if sampler == "tpe":  # as raysearch.searcher.make_sampler builds it
        s = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    else:
        s = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=s)
    space = {k: CategoricalDistribution(v) for k, v in GRID.items()}
    rule = Asha(EPOCHS, GRACE, REDUCTION) if asha else None
    used, hit, trials, best = 0, None, 0, -np.inf
    trace: list[tuple[int, float]] = []  # (epochs used, best closing value so far) after each finished trial
    while used < budget:
        trial = study.ask(space)
        values = curves[config_id(trial.params)]
        trials += 1
        stopped = False
        for epoch in range(1, EPOCHS + 1):
            used += 1
            trial.report(values[epoch - 1], epoch)
            if epoch < EPOCHS and rule is not None and rule.stop(epoch, values[epoch - 1]):
                stopped = True
                break
        if stopped:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(trial, values[-1])
        best = max(best, values[-1])
        trace.append((used, best))
        if hit is None and values[-1] >= target:
            hit = used
    return {"epochs_to_target": hit, "trials": trials, "best_at_budget": best, "trace": trace}


def best_by(trace: list[list[float]], epochs: int) -> float:
    """Best closing value among the trials finished within ``epochs`` (NaN if none)."""
    done = [b for used, b in trace if used <= epochs]
    return done[-1] if done else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=30)
    ap.add_argument("--budget", type=int, default=240, help="epochs of compute per search (40 full trials)")
    ap.add_argument("--recompute", action="store_true", help="train the grid again (a few minutes)")
    ap.add_argument("--processes", type=int, default=2, help="parallel trainings when computing the curves")
    args = ap.parse_args()
    print(_bench.machine_line(_bench.machine()), flush=True)

    if args.recompute or not os.path.exists(CURVES):
        print(f"computing {len(grid_configs())} learning curves ({args.processes} processes, 1 thread each)...",
              flush=True)
        data = compute_curves(args.processes)
    else:
        with open(CURVES) as f:
            data = json.load(f)
    m = data["machine"]
    print(f"curves: {len(data['curves'])} configs x class {data['normal_class']} x {data['epochs']} epochs of "
          f"{data['spec']} ({' '.join(data['overrides'])}); trained in {data['seconds']:.0f} s on "
          f"{m['date']} (cached in {os.path.relpath(CURVES, _bench.REPO)})")

    curves = {config_id(c["config"]): c["values"] for c in data["curves"]}
    finals = np.array([c["values"][-1] for c in data["curves"]])
    best = float(finals.max())
    target = best - TOLERANCE
    good = int((finals >= target).sum())
    print(f"closing val AUROC over the grid: best {best:.4f}, median {np.median(finals):.4f}, "
          f"worst {finals.min():.4f}; {good}/{len(finals)} configs within {TOLERANCE:.2f} of the best")
    for c in sorted(data["curves"], key=lambda c: -c["values"][-1]):
        print(f"  {config_id(c['config'])}: " + " ".join(f"{v:.3f}" for v in c["values"]))

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    arms = {"tpe+asha": ("tpe", True), "random": ("random", False),
            "tpe": ("tpe", False), "random+asha": ("random", True)}
    runs: dict[str, list[dict]] = {}
    for name, (sampler, asha) in arms.items():
        runs[name] = [simulate(curves, sampler, asha, seed, args.budget, target) for seed in range(args.seeds)]
    summary = {}
    print(f"replay: {args.seeds} seeds, budget {args.budget} epochs, target closing val AUROC >= {target:.4f}")
    for name, rs in runs.items():
        hits = [r["epochs_to_target"] for r in rs]
        capped = [h if h is not None else args.budget for h in hits]
        reached = sum(h is not None for h in hits)
        summary[name] = {
            "median_epochs": float(np.median(capped)),
            "q25": float(np.percentile(capped, 25)), "q75": float(np.percentile(capped, 75)),
            "reached": reached, "mean_trials": float(np.mean([r["trials"] for r in rs])),
            **{f"best_at_{b}": float(np.nanmean([best_by(r["trace"], b) for r in rs])) for b in FIXED_BUDGETS},
        }
        print(f"  {name:12s} epochs to target: median {np.median(capped):5.1f} "
              f"(IQR {summary[name]['q25']:.0f}-{summary[name]['q75']:.0f}), reached in {reached}/{len(rs)} seeds, "
              f"{summary[name]['mean_trials']:.0f} trials per budget on average; mean best closing value after "
              + ", ".join(f"{b} epochs {summary[name][f'best_at_{b}']:.4f}" for b in FIXED_BUDGETS))
    ratio = summary["tpe+asha"]["median_epochs"] / summary["random"]["median_epochs"]
    print(f"TPE+ASHA / random (median epochs to target): {ratio:.2f} (goal <= 0.33: {'met' if ratio <= 1 / 3 else 'not met'})")
    path = _bench.save("search_efficiency", {
        "args": vars(args), "grid_size": len(finals), "best": best, "target": target, "good_configs": good,
        "curves_date": m["date"], "curves_seconds": data["seconds"], "summary": summary, "ratio": ratio,
        "runs": {k: [{f: r[f] for f in ("epochs_to_target", "trials", "best_at_budget")} for r in v]
                 for k, v in runs.items()},
    })
    print(f"wrote {os.path.relpath(path, _bench.REPO)}")


if __name__ == "__main__":
    main()
