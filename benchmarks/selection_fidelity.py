"""Selection fidelity: does the validation objective pick the configurations that test best?

For each method, random configurations of a search space that also holds deliberately
weak settings (a learning rate off by 10x, one or two epochs, shallow flows) are trained
once with :func:`raysearch.loop.train_class` on a setting with a real spread of test
AUROC. At every evaluation the loop's ``observe`` hook hands over the image scores of a
validation split holding every known family (``selection.allow_overlap``) and of the
test split; they are kept in ``benchmarks/data/selection_traces.json.gz``. Selection
rules are then replayed offline from those scores:

- ``old``: the protocol before validation families: the hold-out fraction of normals
  (``round(0.1 * N)``) plus as many CutPaste and scar anomalies (half each), the best
  epoch the first maximum;
- ``new default``: what raysearch does by default now: for the toy textures the
  families that no configuration of the space trains on
  (:func:`raysearch.selection.default_families` of the benchmark's spec), the unweighted
  mean of their AUROCs, ties to the later epoch; for digits (a dataset of classes,
  ``selection.anomalies: auto``) held-out training images of the other classes, and
  the synthetic families as a second rule (``new synthetic``);
- each family alone, to see which validation family resembles which test defect.

For every rule: Spearman (bootstrap interval over configurations) and Kendall between the
class-mean objective and the class-mean test AUROC of the selected epochs, and the regret
(best test AUROC among the configurations minus that of the configuration the rule
picks), computed by :func:`analysis.selection_fidelity` on the replayed rows.

Settings (all CPU, small CNNs, no downloads):

- distcon on digits, normal classes 3 and 8 (150 training images, 300 test images);
- cutswap and clflow on a harder toy-mvtec (stripes and dots, 64 px) generated with
  ``defect_opacity=0.5, defect_scale=0.6``: faint, small scratches, blobs and holes.

Run:  python benchmarks/selection_fidelity.py [--configs 24] [--processes 2] [--recompute]
      python benchmarks/selection_fidelity.py --methods distcon --configs 8   # a quick look
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
from multiprocessing import get_context

import _bench
import numpy as np

TRACES = os.path.join(_bench.HERE, "data", "selection_traces.json.gz")
TOY_OPTIONS = _bench.HARD_TOY
FAMILIES_ALL = ("cutpaste", "scar", "perlin", "patchswap", "elastic", "blur", "noise")
VALIDATION = [  # one validation split with every family, so any rule can be replayed
    "selection.synthesis=[cutpaste, scar, perlin, patchswap, elastic, blur, noise]",
    "selection.allow_overlap=true",
    "selection.min_normals=20",
    "selection.min_anomalies=40",
    "train.checkpoint=false",
]

SETTINGS = {
    "distcon": {
        "spec": "distcon.yaml",
        "overrides": ["data.classes=[3, 8]", "data.max_train=150", "data.max_test=300", "selection.anomalies=both",
                      "train.batch_size=32", "train.eval_every=2", "train.epochs=6"],
        "space": {
            "train.lr": {"float": [1.0e-4, 3.0e-2], "log": True},
            "train.epochs": {"choice": [2, 6]},
            "params.rotations": {"choice": ["0-90-180-270", "0-180"]},
            "params.gmm.components": {"int": [1, 8]},
            "params.contrastive.temperature": {"float": [0.05, 1.0], "log": True},
            "params.loss.gmm_weight": {"float": [0.001, 1.0], "log": True},
            "params.backbone.width": {"choice": [8, 32]},
        },
    },
    "cutswap": {
        "spec": "cutswap.yaml",
        "overrides": ["train.eval_every=3", "train.epochs=9", "train.batch_size=16"],
        "space": {
            "train.lr": {"float": [1.0e-4, 1.0e-2], "log": True},
            "train.epochs": {"choice": [3, 9]},
            "params.saliency.layers": {"choice": ["layer1+layer2+layer3", "layer2+layer3", "layer1+layer3"]},
            "params.cluster.k": {"int": [2, 6]},
            "params.patch.area_max": {"float": [0.05, 0.25]},
            "params.task.classes": {"choice": ["binary", "three_way"]},
            "params.backbone.width": {"choice": [8, 32]},
        },
    },
    "clflow": {
        "spec": "clflow.yaml",
        "overrides": ["train.eval_every=2", "train.epochs=6", "train.batch_size=16"],
        "space": {
            "train.lr": {"float": [1.0e-4, 1.0e-2], "log": True},
            "train.epochs": {"choice": [2, 6]},
            "params.flow.steps": {"int": [1, 8]},
            "params.flow.hidden_ratio": {"choice": [0.16, 0.5, 1.0]},
            "params.synthesis.kinds": {"choice": ["perlin", "cutpaste", "perlin+cutpaste"]},
            "params.loss.cls_weight": {"float": [0.05, 2.0], "log": True},
            "params.loss.con_weight": {"float": [0.05, 2.0], "log": True},
            "params.backbone.width": {"choice": [8, 32]},
        },
    },
}
OLD_HOLDOUT = 0.1  # the previous protocol: round(0.1 * N) normals and as many CutPaste / scar anomalies


# -- training once, keeping every evaluation's scores ------------------------------------
def base_spec(method: str):
    from raysearch.spec import load_spec

    setting = SETTINGS[method]
    overrides = list(setting["overrides"]) + VALIDATION
    if method != "distcon":
        overrides += ["data.dataset=folder", f"data.root={_bench.hard_toy_root()}", "data.classes=[stripes, dots]",
                      "data.image_size=64"]
    return load_spec(os.path.join(_bench.DEMO, setting["spec"]), overrides)


def sample_configs(method: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` random configurations of the setting's space (uniform, log-uniform where marked)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        config = {}
        for key, entry in SETTINGS[method]["space"].items():
            if "choice" in entry:
                config[key] = entry["choice"][rng.integers(len(entry["choice"]))]
            elif "int" in entry:
                lo, hi = entry["int"]
                config[key] = int(rng.integers(lo, hi + 1))
            else:
                lo, hi = entry["float"]
                u = rng.uniform(math.log(lo), math.log(hi)) if entry.get("log") else rng.uniform(lo, hi)
                config[key] = float(math.exp(u) if entry.get("log") else u)
        out.append(config)
    return out


def _defect_types(task_dir: str) -> list[str]:
    """The test images' folder names in the order the MVTec reader reads them."""
    from raysearch.data.readers import IMAGE_SUFFIXES, NORMAL_FOLDERS

    names = []
    for d in sorted((p for p in os.scandir(os.path.join(task_dir, "test")) if p.is_dir()), key=lambda p: p.name):
        files = [f for f in os.listdir(d.path) if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
        names += ["good" if d.name in NORMAL_FOLDERS else d.name] * len(files)
    return names


def train_config(job: tuple[str, int, dict]) -> dict:
    import torch

    from raysearch import registry
    from raysearch.data import load_task
    from raysearch.loop import train_class

    torch.set_num_threads(1)
    method, index, config = job
    spec = base_spec(method).with_overrides(config)
    record = {"method": method, "index": index, "config": config, "classes": {}}
    with _bench.Timer() as t:
        for normal_class in spec.classes():
            task = load_task(spec.data, spec.selection, normal_class, spec.train.seed)
            evals = []

            def observe(epoch, scores, evals=evals):
                evals.append({"epoch": epoch, "val": np.round(scores["val"], 5).tolist(),
                              "test": np.round(scores["test"], 5).tolist()})

            try:
                train_class(spec, task, registry.method_class(spec.method), "cpu", observe=observe)
                error = None
            except Exception as err:  # a diverged weak config: kept as a failed config
                error = f"{type(err).__name__}: {err}"
            info = {"evals": evals, "error": error, "val_family": task.val.family.tolist(),
                    "val_families": list(task.val.family_names), "test_labels": task.test.labels.tolist()}
            if spec.data.dataset == "folder":
                info["test_defects"] = _defect_types(os.path.join(spec.data.root, normal_class))
            record["classes"][normal_class] = info
    record["seconds"] = t.s
    return record


def compute_traces(methods: list[str], n: int, processes: int) -> dict:
    jobs = [(m, i, c) for m in methods for i, c in enumerate(sample_configs(m, n))]
    if any(m != "distcon" for m in methods):
        _bench.hard_toy_root()  # once, before the workers start
    with _bench.Timer() as t:
        with get_context("spawn").Pool(processes) as pool:
            records = pool.map(train_config, jobs, chunksize=1)
    return {"machine": _bench.machine(), "seconds": t.s, "processes": processes, "configs": n,
            "toy_options": TOY_OPTIONS, "validation": VALIDATION,
            "settings": {m: SETTINGS[m] for m in methods}, "records": records}


# -- replaying selection rules ---------------------------------------------------------
def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    from raysearch.metrics import image_auroc

    return image_auroc(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg])


def rule_value(cls: dict, ev: dict, rule: dict) -> float:
    """A rule's objective at one evaluation: the mean family AUROC over its validation subset."""
    family = np.asarray(cls["val_family"])
    names = cls["val_families"]
    val = np.asarray(ev["val"])
    normals = val[family < 0][: rule.get("normals")]
    values = []
    for name in rule["families"]:
        if name not in names:
            continue
        anomalies = val[family == names.index(name)][: rule.get("per_family")]
        values.append(_auroc(anomalies, normals))
    if rule.get("pooled"):  # the old protocol: one pooled AUROC over its small split
        anomalies = np.concatenate([val[family == names.index(n)][: rule["per_family"]] for n in rule["families"]])
        return _auroc(anomalies, normals)
    return float(np.mean(values)) if values else float("nan")


def test_auroc(cls: dict, ev: dict, defect: str | None = None) -> float:
    labels = np.asarray(cls["test_labels"])
    scores = np.asarray(ev["test"])
    keep = np.ones(len(labels), bool)
    if defect is not None:
        defects = np.asarray(cls["test_defects"])
        keep = (defects == "good") | (defects == defect)
    return _auroc(scores[keep & (labels == 1)], scores[keep & (labels == 0)])


def select(cls: dict, rule: dict) -> dict | None:
    """The evaluation a rule selects (ties by its rule) and its objective value."""
    if cls["error"] is not None or not cls["evals"]:
        return None
    values = [rule_value(cls, ev, rule) for ev in cls["evals"]]
    best, pick = -math.inf, None
    for ev, v in zip(cls["evals"], values, strict=True):
        if not math.isfinite(v):
            continue
        if v > best or (v == best and rule["ties"] == "later"):
            best, pick = v, ev
    return None if pick is None else {"value": best, "eval": pick}


def replay_rows(records: list[dict], rule: dict, defects: list[str]) -> list[dict]:
    """Result-store-shaped rows (one per config and class) of a rule's selections."""
    rows = []
    for r in records:
        for ci, (name, cls) in enumerate(r["classes"].items()):
            chosen = select(cls, rule)
            row = {"trial_id": f"{r['method']}-{r['index']:03d}", "optuna_trial": r["index"], "kind": "tune",
                   "normal_class": name, "class_index": ci, "status": "completed" if chosen else "failed"}
            if chosen:
                row["val_image_auroc"] = chosen["value"]
                row["test_image_auroc"] = test_auroc(cls, chosen["eval"])
                for d in defects:
                    row[f"test_auroc_{d}"] = test_auroc(cls, chosen["eval"], d)
            rows.append(row)
    return rows


def rules_for(method: str) -> dict[str, dict]:
    from raysearch.selection import OTHER_CLASSES, default_families

    spec = base_spec(method)
    raw = spec.to_dict()
    raw["search"] = dict(raw.get("search") or {}, space=SETTINGS[method]["space"])
    raw["selection"].update(synthesis=None, allow_overlap=False, anomalies="synthetic")
    from raysearch.spec import spec_from_dict

    held_out = default_families(spec_from_dict(raw))
    n_train = (spec.data.max_train or 150) if method == "distcon" else TOY_OPTIONS["n_train"]
    n_old = max(2, round(OLD_HOLDOUT * n_train))
    rules = {
        "old: cutpaste+scar, small split, earliest tie": {
            "families": ["cutpaste", "scar"], "normals": n_old, "per_family": n_old // 2, "pooled": True,
            "ties": "earlier"},
    }
    synthetic = {"families": list(held_out), "ties": "later"}
    if method == "distcon":  # digits is a dataset of classes: raysearch's default is other_classes
        rules["new default: other_classes"] = {"families": [OTHER_CLASSES], "ties": "later"}
        rules[f"new synthetic: {'+'.join(held_out)}"] = synthetic
    else:
        rules[f"new default: {'+'.join(held_out)}"] = synthetic
    for family in FAMILIES_ALL:
        rules[f"{family} alone"] = {"families": [family], "ties": "later"}
    return rules


def evaluate_rules(records: list[dict], method: str, n_boot: int = 2000) -> list[dict]:
    import pandas as pd

    from analysis import selection_fidelity
    from analysis.load import prepare

    records = [r for r in records if r["method"] == method]
    first = next(iter(records[0]["classes"].values()))
    defects = sorted(set(first.get("test_defects", [])) - {"good"})
    out = []
    for name, rule in rules_for(method).items():
        df = prepare(pd.DataFrame(replay_rows(records, rule, defects)))
        metrics = ["test_image_auroc"] + [f"test_auroc_{d}" for d in defects]
        fid = selection_fidelity(df, "val_image_auroc", "max", test_metrics=metrics, n_boot=n_boot)
        if not fid.computed:
            out.append({"rule": name, "reason": fid.reason})
            continue
        table = fid.table.set_index("test_metric")
        main = table.loc["test_image_auroc"]
        entry = {"rule": name, "families": rule["families"], "n": int(fid.n_configs),
                 "spearman": float(main["spearman"]), "ci": [float(main["spearman_ci_low"]), float(main["spearman_ci_high"])],
                 "kendall": float(main["kendall"]), "regret": float(main["regret"]),
                 "picked_test": float(main["picked_test"]), "best_test": float(main["best_test"]),
                 "median_test": float(main["median_test"]),
                 "by_defect": {d: float(table.loc[f"test_auroc_{d}", "spearman"]) for d in defects
                               if f"test_auroc_{d}" in table.index}}
        out.append(entry)
    return out


def within_groups(records: list[dict], method: str) -> dict[str, dict[str, float]]:
    """Spearman(val, test) of the default rule within each value of every categorical
    parameter of the space: does the objective rank configurations that share it?"""
    from scipy import stats

    rule = next(v for k, v in rules_for(method).items() if k.startswith("new default"))
    records = [r for r in records if r["method"] == method]
    points = []
    for r in records:
        chosen = [(select(c, rule), c) for c in r["classes"].values()]
        if any(ch is None for ch, _ in chosen):
            continue
        points.append((r["config"], float(np.mean([ch["value"] for ch, _ in chosen])),
                       float(np.mean([test_auroc(c, ch["eval"]) for ch, c in chosen]))))
    out: dict[str, dict[str, float]] = {}
    for key, entry in SETTINGS[method]["space"].items():
        if "choice" not in entry:
            continue
        groups = {}
        for value in entry["choice"]:
            pts = [(v, t) for config, v, t in points if config[key] == value]
            if len(pts) >= 5:
                groups[str(value)] = float(stats.spearmanr(*zip(*pts))[0])
        out[key] = groups
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--configs", type=int, default=24, help="random configurations per method")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--recompute", action="store_true", help="train again instead of reading the kept traces")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples of the Spearman interval")
    args = ap.parse_args()

    traces = None
    if not args.recompute and os.path.exists(TRACES):
        with gzip.open(TRACES, "rt") as f:
            traces = json.load(f)
        have = {r["method"] for r in traces["records"]}
        if not set(args.methods) <= have or traces["configs"] < args.configs:
            traces = None
    if traces is None:
        traces = compute_traces(args.methods, args.configs, args.processes)
        os.makedirs(os.path.dirname(TRACES), exist_ok=True)
        with gzip.open(TRACES, "wt") as f:
            json.dump(traces, f)
    records = [r for r in traces["records"] if r["index"] < args.configs]

    print(_bench.machine_line(_bench.machine()))
    print(f"traces: {os.path.relpath(TRACES, _bench.REPO)} ({traces['machine']['date']}, "
          f"{traces['seconds']:.0f} s of training on {traces['processes']} processes)")
    payload = {"traces_date": traces["machine"]["date"], "toy_options": TOY_OPTIONS, "methods": {}}
    for method in args.methods:
        rows = [r for r in records if r["method"] == method]
        failed = sum(any(c["error"] for c in r["classes"].values()) for r in rows)
        results = evaluate_rules(rows, method, args.boot)
        groups = within_groups(rows, method)
        payload["methods"][method] = {"configs": len(rows), "failed": failed, "rules": results,
                                      "within_groups": groups, "train_seconds": sum(r["seconds"] for r in rows)}
        print(f"\n{method}: {len(rows)} configurations ({failed} failed)")
        print(f"  {'rule':52s} {'n':>3s} {'Spearman [95% CI]':>24s} {'Kendall':>8s} {'regret':>7s} "
              f"{'picked':>7s} {'median':>7s} {'best':>7s}")
        for e in results:
            if "reason" in e:
                print(f"  {e['rule']:52s} not computed: {e['reason']}")
                continue
            ci = f"{e['spearman']:+.2f} [{e['ci'][0]:+.2f}, {e['ci'][1]:+.2f}]"
            print(f"  {e['rule']:52s} {e['n']:3d} {ci:>24s} {e['kendall']:+8.2f} {e['regret']:7.3f} "
                  f"{e['picked_test']:7.3f} {e['median_test']:7.3f} {e['best_test']:7.3f}")
        by_defect = [e for e in results if e.get("by_defect")]
        if by_defect:
            defects = list(by_defect[0]["by_defect"])
            print("  Spearman of each rule's objective with the test AUROC of one defect type:")
            print(f"  {'rule':52s} " + " ".join(f"{d:>8s}" for d in defects))
            for e in by_defect:
                print(f"  {e['rule']:52s} " + " ".join(f"{e['by_defect'][d]:+8.2f}" for d in defects))
        print("  Spearman(val, test) of the default rule among configurations that share a categorical value:")
        for key, g in groups.items():
            print(f"  {key:36s} " + ", ".join(f"{v}: {x:+.2f}" for v, x in g.items()))
    print("\ngoal per method: Spearman >= 0.6 and regret <= 0.02 AUROC for the new rule")
    print(f"results: {_bench.save('selection_fidelity', payload)}")


if __name__ == "__main__":
    main()
