"""Selection fidelity: which label-free objective picks the configurations that test best?

For each method and task, random configurations of a search space that also holds
deliberately weak settings (a learning rate off by 10x, one or two epochs, shallow flows,
narrow backbones) are trained once with :func:`raysearch.train.loop.train_class`. At every
evaluation the loop's ``observe`` hook hands over the image scores of a validation split
holding every known family (``selection.allow_overlap``) and of the test split, and the
anomaly maps of methods that make them. Kept in ``benchmarks/data/selection_traces.json.gz``
per evaluation: the image scores, and the pooled pixel AUROC and AUPRO of the validation
anomalies of the families the method's default holds out (what ``val_pixel_auroc`` /
``val_aupro`` are in a sweep of that space).

Every candidate objective is then replayed offline from the traces, with each class's
epoch selection redone on that objective (ties to the later epoch, as the loop does):

- ``image mean``: the unweighted mean of the held-out families' image AUROCs
  (``val_image_auroc``, the default);
- each family alone (``val_image_auroc_<family>``);
- ``val_pixel_auroc``, ``val_aupro`` (methods with maps);
- the mean of ``val_image_auroc`` and ``val_pixel_auroc`` (a candidate combination;
  no such metric is recorded);
- ``other_classes``: held-out training images of the other classes (digits) or of the
  other categories of the folder (the semantic task);
- ``normal gap`` (distcon, label-free, no anomalies at all): minus the mean standardised
  score of held-out normals, i.e. how well the model generalises to unseen normals.

For every objective: Spearman (bootstrap interval over configurations) and Kendall
between the class-mean objective and the class-mean test image AUROC of the selected
epochs, and the regret (best test AUROC among the configurations minus that of the one
the objective picks), by :func:`analysis.selection_fidelity` on replayed rows; and the
label-free confidence check (:mod:`analysis.confidence`) of the replayed sweep.

Tasks (all CPU, small CNNs, 64 px, no downloads):

- ``digits`` (distcon): normal classes 3 and 8, 150 training images, 300 test images;
- ``toy`` (cutswap, clflow): a harder toy-mvtec (stripes and dots), faint, small
  scratches, blobs and holes;
- ``ihc``, ``flower`` (every method): real photographs with real defects pasted or
  blended from other photographs (:mod:`real_tasks`);
- ``semantic`` (distcon): categories of real photographs whose test anomalies are other
  photographs (:mod:`real_tasks`), normal categories flower and coffee.

Run:  python benchmarks/selection_fidelity.py [--configs 24] [--processes 2] [--recompute]
      python benchmarks/selection_fidelity.py --methods clflow --tasks ihc --configs 8   # a quick look
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
VALIDATION = [  # one validation split with every family, so any objective can be replayed
    "selection.synthesis=[cutpaste, scar, perlin, patchswap, elastic, blur, noise]",
    "selection.allow_overlap=true",
    "selection.min_normals=20",
    "selection.min_anomalies=40",
    "train.checkpoint=false",
]

SETTINGS = {
    "distcon": {
        "spec": "distcon.yaml",
        "overrides": ["train.batch_size=32", "train.eval_every=2", "train.epochs=6"],
        "space": {
            "train.lr": {"float": [1.0e-4, 3.0e-2], "log": True},
            "train.epochs": {"choice": [2, 6]},
            "params.rotations": {"choice": ["0-90-180-270", "0-180"]},
            "params.gmm.components": {"int": [1, 8]},
            "params.contrastive.temperature": {"float": [0.05, 1.0], "log": True},
            "params.loss.gmm_weight": {"float": [0.001, 1.0], "log": True},
            "params.backbone.width": {"choice": [8, 32]},
        },
        "tasks": ("digits", "ihc", "flower", "semantic"),
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
        "tasks": ("toy", "ihc", "flower"),
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
        "tasks": ("toy", "ihc", "flower"),
    },
}
REAL_TASKS = ("ihc", "flower", "semantic")


def task_overrides(task: str) -> list[str]:
    """The data (and validation anomalies) of one task."""
    if task == "digits":
        return ["data.classes=[3, 8]", "data.max_train=150", "data.max_test=300", "selection.anomalies=both"]
    folder = ["data.dataset=folder", "data.image_size=64", "selection.anomalies=synthetic"]
    if task == "toy":
        return folder + [f"data.root={_bench.hard_toy_root()}", "data.classes=[stripes, dots]"]
    from real_tasks import tasks_root

    if task == "semantic":
        return folder + [f"data.root={tasks_root() / 'semantic'}", "data.classes=[flower, coffee]",
                         "selection.anomalies=both"]
    return folder + [f"data.root={tasks_root() / 'defects'}", f"data.classes=[{task}]"]


# -- training once, keeping every evaluation's scores ------------------------------------
def base_spec(method: str, task: str):
    from raysearch.config.spec import load_spec

    setting = SETTINGS[method]
    overrides = list(setting["overrides"]) + VALIDATION + task_overrides(task)
    return load_spec(os.path.join(_bench.DEMO, setting["spec"]), overrides)


def held_out(method: str, task: str) -> tuple[str, ...]:
    """The synthetic families raysearch's default validates the method's space on."""
    from raysearch.config.selection import default_families
    from raysearch.config.spec import spec_from_dict

    raw = base_spec(method, task).to_dict()
    raw["search"] = dict(raw.get("search") or {}, space=SETTINGS[method]["space"])
    raw["selection"].update(synthesis=None, allow_overlap=False, anomalies="synthetic")
    return default_families(spec_from_dict(raw))


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


def pooled_pixel(family: np.ndarray, names: tuple[str, ...], masks: np.ndarray, maps: np.ndarray,
                 families: tuple[str, ...]) -> list[float]:
    """Pixel AUROC and AUPRO of the validation normals plus the anomalies of ``families``,
    pooled: what a sweep validating on ``families`` reports as val_pixel_auroc / val_aupro."""
    from raysearch.metrics import evaluate

    keep = (family < 0) | np.isin(family, [names.index(f) for f in families if f in names])
    m = evaluate(np.zeros(int(keep.sum())), np.zeros(int(keep.sum())), masks=masks[keep], maps=maps[keep])
    return [round(m.get("pixel_auroc", float("nan")), 5), round(m.get("aupro", float("nan")), 5)]


def train_config(job: tuple[str, str, int, dict]) -> dict:
    import torch

    from raysearch.config import registry
    from raysearch.data import load_task
    from raysearch.train.loop import train_class

    torch.set_num_threads(1)
    method, task_name, index, config = job
    spec = base_spec(method, task_name).with_overrides(config)
    families = held_out(method, task_name)
    record = {"method": method, "task": task_name, "index": index, "config": config, "classes": {}}
    with _bench.Timer() as t:
        for normal_class in spec.classes():
            task = load_task(spec.data, spec.selection, normal_class, spec.train.seed)
            evals = []
            val_family = task.val.family.numpy()
            val_masks = None if task.val.masks is None else task.val.masks.numpy()

            def observe(epoch, scores, metrics, evals=evals, val_family=val_family, val_masks=val_masks, task=task):
                ev = {"epoch": epoch, "val": np.round(scores["val"], 5).tolist(),
                      "test": np.round(scores["test"], 5).tolist()}
                if "val_maps" in scores and val_masks is not None:
                    ev["pixel"] = pooled_pixel(val_family, task.val.family_names, val_masks, scores["val_maps"], families)
                    ev["test_pixel_auroc"] = round(metrics.get("test_pixel_auroc", float("nan")), 5)
                evals.append(ev)

            try:
                train_class(spec, task, registry.method_class(spec.method), "cpu", observe=observe)
                error = None
            except Exception as err:  # a diverged weak config: kept as a failed config
                error = f"{type(err).__name__}: {err}"
            info = {"evals": evals, "error": error, "val_family": val_family.tolist(),
                    "val_families": list(task.val.family_names), "test_labels": task.test.labels.tolist(),
                    "held_out": list(families)}
            if spec.data.dataset == "folder":
                info["test_defects"] = _defect_types(os.path.join(spec.data.root, normal_class))
            record["classes"][normal_class] = info
    record["seconds"] = t.s
    return record


PARTIAL = TRACES.replace(".json.gz", ".partial.jsonl")


def _safe_train(job: tuple[str, str, int, dict]) -> dict:
    """:func:`train_config`, with a job that cannot even start recorded, not raised (one
    bad job must not cost the others)."""
    try:
        return train_config(job)
    except Exception as err:
        method, task, index, config = job
        return {"method": method, "task": task, "index": index, "config": config, "classes": {},
                "seconds": 0.0, "error": f"{type(err).__name__}: {err}"}


def compute_traces(jobs_of: dict[str, tuple[str, ...]], n: int, processes: int) -> list[dict]:
    """Train every (method, task, configuration) not yet in :data:`PARTIAL`; each finished
    job is appended there at once, so an interrupted run continues where it stopped."""
    jobs = [(m, task, i, c) for m, tasks in jobs_of.items() for task in tasks for i, c in enumerate(sample_configs(m, n))]
    done = []
    if os.path.exists(PARTIAL):
        with open(PARTIAL) as f:
            done = [json.loads(line) for line in f if line.strip()]
    have = {(r["method"], r["task"], r["index"]) for r in done if "error" not in r}
    done = [r for r in done if (r["method"], r["task"], r["index"]) in have]
    jobs = [j for j in jobs if (j[0], j[1], j[2]) not in have]
    if any(j[1] == "toy" for j in jobs):
        _bench.hard_toy_root()  # once, before the workers start
    if any(j[1] in REAL_TASKS for j in jobs):
        from real_tasks import tasks_root

        tasks_root()
    # Longest first: clflow and cutswap configurations take longest.
    jobs.sort(key=lambda j: ("distcon", "cutswap", "clflow").index(j[0]), reverse=True)
    os.makedirs(os.path.dirname(PARTIAL), exist_ok=True)
    with get_context("spawn").Pool(processes) as pool, open(PARTIAL, "a") as out:
        for record in pool.imap_unordered(_safe_train, jobs, chunksize=1):
            out.write(json.dumps(record) + "\n")
            out.flush()
            done.append(record)
            if "error" in record:
                print(f"job {record['method']}/{record['task']}/{record['index']} failed: {record['error']}", flush=True)
    return done


# -- replaying objectives ----------------------------------------------------------------
def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    from raysearch.metrics import image_auroc

    return image_auroc(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg])


def family_values(cls: dict, ev: dict, families: list[str]) -> dict[str, float]:
    """Each family's image AUROC against all validation normals at one evaluation."""
    family = np.asarray(cls["val_family"])
    names = cls["val_families"]
    val = np.asarray(ev["val"])
    normals = val[family < 0]
    return {f: _auroc(val[family == names.index(f)], normals) for f in families if f in names}


def objective_value(cls: dict, ev: dict, objective: dict) -> float:
    """An objective's value at one evaluation."""
    kind = objective["kind"]
    if kind == "normal_gap":
        family = np.asarray(cls["val_family"])
        return -float(np.mean(np.asarray(ev["val"])[family < 0]))
    if kind in ("pixel", "aupro"):
        return ev["pixel"][0 if kind == "pixel" else 1] if "pixel" in ev else float("nan")
    values = family_values(cls, ev, objective["families"])
    image = float(np.mean(list(values.values()))) if values else float("nan")
    if kind == "image+pixel":
        return 0.5 * (image + ev["pixel"][0]) if "pixel" in ev else float("nan")
    return image


def select(cls: dict, objective: dict) -> dict | None:
    """The evaluation an objective selects (ties to the later epoch) and its value."""
    if cls["error"] is not None or not cls["evals"]:
        return None
    best, pick = -math.inf, None
    for ev in cls["evals"]:
        v = objective_value(cls, ev, objective)
        if math.isfinite(v) and v >= best:
            best, pick = v, ev
    return None if pick is None else {"value": best, "eval": pick}


def test_auroc(cls: dict, ev: dict, defect: str | None = None) -> float:
    labels = np.asarray(cls["test_labels"])
    scores = np.asarray(ev["test"])
    keep = np.ones(len(labels), bool)
    if defect is not None:
        defects = np.asarray(cls["test_defects"])
        keep = (defects == "good") | (defects == defect)
    return _auroc(scores[keep & (labels == 1)], scores[keep & (labels == 0)])


def replay_rows(records: list[dict], objective: dict, defects: list[str]) -> list[dict]:
    """Result-store-shaped rows (one per config and class) of an objective's selections,
    with the per-family AUROCs and validation counts the confidence check reads."""
    from raysearch.config.selection import family_metric

    rows = []
    for r in records:
        for ci, (name, cls) in enumerate(r["classes"].items()):
            chosen = select(cls, objective)
            row = {"trial_id": f"{r['method']}-{r['index']:03d}", "optuna_trial": r["index"], "kind": "tune",
                   "normal_class": name, "class_index": ci, "status": "completed" if chosen else "failed"}
            if chosen:
                # As a sweep validating on the objective's families would record them.
                family = np.asarray(cls["val_family"])
                fams = [f for f in objective.get("families") or [] if f in cls["val_families"]]
                row["val_objective"] = chosen["value"]
                row["test_image_auroc"] = test_auroc(cls, chosen["eval"])
                row["val_normals"] = int((family < 0).sum())
                row["val_anomalies"] = int(sum((family == cls["val_families"].index(f)).sum() for f in fams))
                for f, v in family_values(cls, chosen["eval"], fams).items():
                    row[family_metric(f)] = v
                for d in defects:
                    row[f"test_auroc_{d}"] = test_auroc(cls, chosen["eval"], d)
            rows.append(row)
    return rows


def default_objective(method: str, task: str, objectives: dict[str, dict]) -> str:
    """The name of the objective raysearch uses by default for this method and task:
    :data:`raysearch.config.selection.DEFAULT_OBJECTIVE` over the task's default validation
    anomalies (other classes for digits, a dataset of classes; else the held-out synthetic
    families)."""
    from raysearch.config.selection import DEFAULT_OBJECTIVE

    assert DEFAULT_OBJECTIVE == "val_image_auroc", "map the new default to its replayed objective here"
    if task == "digits":
        return "other_classes"
    return next(name for name, o in objectives.items() if o["kind"] == "image")


def objectives_for(method: str, task: str, records: list[dict]) -> dict[str, dict]:
    from raysearch.config.selection import OTHER_CLASSES

    first = next(iter(records[0]["classes"].values()))
    held = list(first["held_out"])
    has_maps = any("pixel" in ev for r in records for c in r["classes"].values() for ev in c["evals"])
    out = {f"image mean ({'+'.join(held)})": {"kind": "image", "families": held}}
    if OTHER_CLASSES in first["val_families"]:
        out["other_classes"] = {"kind": "image", "families": [OTHER_CLASSES]}
    if has_maps:
        out["val_pixel_auroc"] = {"kind": "pixel", "families": held}
        out["val_aupro"] = {"kind": "aupro", "families": held}
        out["mean of image and pixel AUROC"] = {"kind": "image+pixel", "families": held}
    if method == "distcon":
        out["normal gap (label-free, no anomalies)"] = {"kind": "normal_gap", "families": []}
    for family in FAMILIES_ALL:
        out[f"{family} alone"] = {"kind": "image", "families": [family]}
    return out


def evaluate_objectives(records: list[dict], method: str, task: str, n_boot: int = 2000) -> list[dict]:
    import pandas as pd

    from analysis import selection_fidelity
    from analysis.confidence import selection_confidence
    from analysis.load import prepare

    first = next(iter(records[0]["classes"].values()))
    defects = sorted(set(first.get("test_defects", [])) - {"good"})
    out = []
    objectives = objectives_for(method, task, records)
    default = default_objective(method, task, objectives)
    for name, objective in objectives.items():
        df = prepare(pd.DataFrame(replay_rows(records, objective, defects)))
        metrics = ["test_image_auroc"] + [f"test_auroc_{d}" for d in defects]
        fid = selection_fidelity(df, "val_objective", "max", test_metrics=metrics, n_boot=n_boot)
        if not fid.computed:
            out.append({"objective": name, "reason": fid.reason})
            continue
        table = fid.table.set_index("test_metric")
        main = table.loc["test_image_auroc"]
        entry = {"objective": name, "kind": objective["kind"], "families": objective["families"],
                 "default": name == default,
                 "n": int(fid.n_configs), "spearman": float(main["spearman"]),
                 "ci": [float(main["spearman_ci_low"]), float(main["spearman_ci_high"])],
                 "kendall": float(main["kendall"]), "regret": float(main["regret"]),
                 "picked_test": float(main["picked_test"]), "best_test": float(main["best_test"]),
                 "median_test": float(main["median_test"]),
                 "by_defect": {d: float(table.loc[f"test_auroc_{d}", "spearman"]) for d in defects
                               if f"test_auroc_{d}" in table.index}}
        if objective["kind"] in ("image", "pixel", "image+pixel"):
            conf = selection_confidence(df, "val_objective")
            entry["confidence"] = conf.line()
            entry["can_rank"] = conf.can_rank
        out.append(entry)
    return out


def summarise(results: dict[str, dict[str, list[dict]]]) -> dict[str, list[dict]]:
    """Per method and objective, across its tasks: the mean Spearman and the worst regret."""
    out: dict[str, list[dict]] = {}
    for method, by_task in results.items():
        names = [e["objective"] for e in next(iter(by_task.values()))]
        rows = []
        for name in names:
            entries = [e for task in by_task.values() for e in task if e["objective"] == name and "spearman" in e]
            if len(entries) < len(by_task):
                continue
            rows.append({"objective": name, "tasks": len(entries),
                         "mean_spearman": float(np.mean([e["spearman"] for e in entries])),
                         "min_spearman": float(np.min([e["spearman"] for e in entries])),
                         "mean_regret": float(np.mean([e["regret"] for e in entries])),
                         "max_regret": float(np.max([e["regret"] for e in entries]))})
        rows.sort(key=lambda r: -r["mean_spearman"])
        out[method] = rows
    return out


def _load(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with gzip.open(path, "rt") as f:
        traces = json.load(f)
    return [r for r in traces.get("records", []) if "task" in r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--tasks", nargs="+", default=None, help="a subset of each method's tasks")
    ap.add_argument("--configs", type=int, default=24, help="random configurations per method and task")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--recompute", action="store_true", help="train again instead of reading the kept traces")
    ap.add_argument("--resume", action="store_true", help="with --recompute: keep the jobs an interrupted run finished")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples of the Spearman interval")
    args = ap.parse_args()

    wanted = {m: tuple(t for t in SETTINGS[m]["tasks"] if args.tasks is None or t in args.tasks) for m in args.methods}
    if args.recompute and os.path.exists(PARTIAL) and not args.resume:
        os.remove(PARTIAL)
    records = [] if args.recompute else _load(TRACES)
    have = {(r["method"], r["task"], r["index"]) for r in records}
    missing = {m: tuple(t for t in tasks if any((m, t, i) not in have for i in range(args.configs)))
               for m, tasks in wanted.items()}
    missing = {m: t for m, t in missing.items() if t}
    if missing:
        with _bench.Timer() as t:
            fresh = compute_traces(missing, args.configs, args.processes)
        keys = {(r["method"], r["task"]) for r in fresh}
        records = [r for r in records if (r["method"], r["task"]) not in keys] + fresh
        failed = [r for r in fresh if "error" in r]
        if failed:
            raise SystemExit(f"{len(failed)} jobs failed (kept in {PARTIAL}); fix and run again to finish them")
        os.makedirs(os.path.dirname(TRACES), exist_ok=True)
        with gzip.open(TRACES, "wt") as f:
            json.dump({"machine": _bench.machine(), "toy_options": TOY_OPTIONS, "validation": VALIDATION,
                       "settings": SETTINGS, "records": records}, f)
        os.remove(PARTIAL)
        print(f"trained {len(fresh)} configurations x tasks in {t.s:.0f} s on {args.processes} processes")

    print(_bench.machine_line(_bench.machine()))
    payload: dict = {"methods": {}, "configs": args.configs}
    for method, tasks in wanted.items():
        payload["methods"][method] = {}
        for task in tasks:
            rows = [r for r in records if r["method"] == method and r["task"] == task and r["index"] < args.configs]
            failed = sum(any(c["error"] for c in r["classes"].values()) for r in rows)
            results = evaluate_objectives(rows, method, task, args.boot)
            payload["methods"][method][task] = {"configs": len(rows), "failed": failed, "objectives": results,
                                                "train_seconds": sum(r["seconds"] for r in rows)}
            print(f"\n{method} on {task}: {len(rows)} configurations ({failed} failed)")
            print(f"  {'objective':44s} {'n':>3s} {'Spearman [95% CI]':>24s} {'regret':>7s} "
                  f"{'picked':>7s} {'median':>7s} {'best':>7s}")
            for e in results:
                if "reason" in e:
                    print(f"  {e['objective']:44s} not computed: {e['reason']}")
                    continue
                ci = f"{e['spearman']:+.2f} [{e['ci'][0]:+.2f}, {e['ci'][1]:+.2f}]"
                print(f"  {e['objective']:44s} {e['n']:3d} {ci:>24s} {e['regret']:7.3f} "
                      f"{e['picked_test']:7.3f} {e['median_test']:7.3f} {e['best_test']:7.3f}")
            for e in results:
                if e.get("confidence"):
                    print(f"  confidence of {e['objective']}: {e['confidence']}")
    summary = summarise({m: {t: v["objectives"] for t, v in by.items()} for m, by in payload["methods"].items()})
    payload["summary"] = summary
    print("\nacross tasks (mean / min Spearman, mean / max regret):")
    for method, rows in summary.items():
        print(f"  {method}")
        for r in rows:
            print(f"    {r['objective']:44s} {r['mean_spearman']:+.2f} / {r['min_spearman']:+.2f}   "
                  f"{r['mean_regret']:.3f} / {r['max_regret']:.3f}")
    print("\ngoal per method: Spearman >= 0.6 and regret <= 0.02 AUROC for the default objective")
    print(f"results: {_bench.save('selection_fidelity', payload)}")


if __name__ == "__main__":
    main()
