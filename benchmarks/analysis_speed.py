"""Speed of the analysis tables over 100,000 synthetic result rows (goal: < 2 s each).

Two tables of 100k rows each, shaped like the results store (every row field, the eight
metric columns, ~20 flattened config columns and a ``config_json`` per row):

* a sweep for :func:`analysis.rank_configs`: 2,000 configurations x 5 seeds x 10
  classes, 90 % completed, 7 % pruned, 3 % failed (failed and pruned rows carry no metric);
* an ablation for :func:`analysis.ablation_table`: the full model and 9 factors x
  200 seeds x 50 classes (every row completed).

Each call is timed from the raw DataFrame (so :func:`analysis.load.prepare`, the config
hashing and the statistics are included), once to warm up and then ``--repeats`` times;
the median is reported.

Reading the rows is timed apart: the results store holds one Parquet file per (trial,
class), i.e. one row per file, so ``--store-files`` such files are written to a
temporary folder and read back with :func:`analysis.load_results`; the per-file cost is
extrapolated to 100k files.

Run:  python benchmarks/analysis_speed.py [--rows 100000 --repeats 5 --store-files 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import _bench
import numpy as np
import pandas as pd

from analysis import ablation_table, rank_configs
from raysearch.store.results import METRIC_COLUMNS, ROW_FIELDS

FIXED = {  # the non-searched part of a resolved config (values like the distcon demo)
    "method": "distcon", "data.dataset": "digits", "data.image_size": 32, "data.root": "~/data",
    "data.max_train": None, "data.max_test": None, "selection.split": "validation",
    "selection.anomalies": "synthetic", "selection.holdout": 0.1, "train.epochs": 15,
    "train.batch_size": 64, "train.eval_every": 5, "train.workers": 1, "train.gpus_per_worker": 0.0,
    "train.optimizer": "adam", "params.backbone.name": "small_cnn", "params.projection_dim": 64,
    "params.gmm.covariance": "diag", "params.loss.rotation_weight": 0.5,
}


def _base(n: int, rng: np.random.Generator) -> dict[str, object]:
    cols: dict[str, object] = {name: [None] * n for name in ROW_FIELDS}
    for k, v in FIXED.items():
        cols[k] = [v] * n
    for m in METRIC_COLUMNS:
        cols[m] = np.full(n, np.nan)
    cols.update(experiment=["bench"] * n, method=["distcon"] * n, dataset=["digits"] * n,
                selection_split=["validation"] * n, epochs=np.full(n, 15), workers=np.ones(n, int),
                train_time_s=rng.uniform(5, 50, n), wall_time_s=rng.uniform(6, 60, n),
                num_params=np.full(n, 120_000), latency_ms=rng.uniform(0.1, 1, n), device=["cpu"] * n,
                timestamp=np.arange(n) + 1_700_000_000)
    return cols


def sweep_rows(n_configs: int, seeds: int, classes: int, seed: int = 0) -> pd.DataFrame:
    """``n_configs x seeds x classes`` rows of a sweep over six searched keys."""
    rng = np.random.default_rng(seed)
    n = n_configs * seeds * classes
    cfg = np.repeat(np.arange(n_configs), seeds * classes)
    sd = np.tile(np.repeat(np.arange(seeds), classes), n_configs)
    cl = np.tile(np.arange(classes), n_configs * seeds)
    space = {
        "params.gmm.components": rng.integers(1, 9, n_configs),
        "params.gmm.temperature": np.round(rng.uniform(0.1, 2.0, n_configs), 4),
        "params.contrastive.temperature": np.round(rng.uniform(0.1, 1.0, n_configs), 4),
        "params.loss.gmm_weight": np.round(rng.uniform(0.01, 1.0, n_configs), 4),
        "params.rotations": rng.choice(["0-90-180-270", "0-180"], n_configs),
        "train.lr": np.round(10 ** rng.uniform(-3.3, -2, n_configs), 6),
    }
    configs = []
    for i in range(n_configs):
        base = {**FIXED, **{k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in space.items()}}
        configs.append([json.dumps({**base, "train.seed": s, "data.classes": [str(c) for c in range(classes)]},
                                   sort_keys=True) for s in range(seeds)])
    cols = _base(n, rng)
    quality = rng.normal(0.85, 0.05, n_configs)
    val = np.clip(quality[cfg] + rng.normal(0, 0.03, n) + (cl - classes / 2) * 0.005, 0, 1)
    status = rng.choice(["completed", "pruned", "failed"], n, p=[0.90, 0.07, 0.03])
    done = status == "completed"
    cols["val_image_auroc"] = np.where(done, val, np.nan)
    cols["test_image_auroc"] = np.where(done, np.clip(val + rng.normal(0, 0.02, n), 0, 1), np.nan)
    cols["val_image_f1_max"] = np.where(done, val * 0.9, np.nan)
    for k, v in space.items():
        cols[k] = v[cfg]
    cols.update(kind=["tune"] * n, status=status, seed=sd, normal_class=cl.astype(str), class_index=cl,
                trial_id=[f"t{c:05d}_{s}" for c, s in zip(cfg, sd)], optuna_trial=cfg * seeds + sd,
                config_json=[configs[c][s] for c, s in zip(cfg, sd)],
                config_hash=[f"{c:012x}" for c in cfg], **{"train.seed": sd})
    return pd.DataFrame(cols)


def ablation_rows(variants: int, seeds: int, classes: int, seed: int = 1) -> pd.DataFrame:
    """``variants x seeds x classes`` completed rows of an ablation (variant 0 is ``full``)."""
    rng = np.random.default_rng(seed)
    names = ["full"] + [f"factor_{i}" for i in range(1, variants)]
    n = variants * seeds * classes
    var = np.repeat(np.arange(variants), seeds * classes)
    sd = np.tile(np.repeat(np.arange(seeds), classes), variants)
    cl = np.tile(np.arange(classes), variants * seeds)
    effect = np.concatenate([[0.0], rng.normal(-0.02, 0.02, variants - 1)])
    cell = rng.normal(0.85, 0.05, seeds * classes)  # class difficulty and seed luck, shared by variants
    val = np.clip(cell[sd * classes + cl] + effect[var] + rng.normal(0, 0.01, n), 0, 1)
    cols = _base(n, rng)
    configs = [json.dumps({**FIXED, "variant": v}, sort_keys=True) for v in names]
    cols.update(kind=["ablate"] * n, status=["completed"] * n, seed=sd, normal_class=cl.astype(str),
                class_index=cl, variant=[names[v] for v in var], trial_id=[f"a{v}_{s}" for v, s in zip(var, sd)],
                config_json=[configs[v] for v in var], val_image_auroc=val,
                test_image_auroc=np.clip(val + rng.normal(0, 0.02, n), 0, 1), **{"train.seed": sd})
    return pd.DataFrame(cols)


def store_read(df: pd.DataFrame, files: int) -> dict[str, float]:
    """Seconds to read ``files`` one-row Parquet files (the store's layout) with load_results."""
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from analysis import load_results

    tmp = tempfile.mkdtemp(prefix="raysearch-bench-store-")
    os.makedirs(os.path.join(tmp, "results"))
    table = pa.Table.from_pandas(df.iloc[:files], preserve_index=False)
    for i in range(table.num_rows):
        pq.write_table(table.slice(i, 1), os.path.join(tmp, "results", f"row{i:06d}.parquet"))
    with _bench.Timer() as t:
        n = len(load_results(tmp))
    return {"files": n, "seconds": t.s, "per_file_ms": 1000 * t.s / n}


def timed(fn, repeats: int) -> tuple[list[float], object]:
    out = fn()  # warm-up (imports scipy.stats, fills caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return times, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000, help="rows per table (rounded to the shapes above)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--store-files", type=int, default=2000, help="one-row Parquet files to read back (0: skip)")
    args = ap.parse_args()
    scale = args.rows / 100_000

    print(_bench.machine_line(_bench.machine()))
    with _bench.Timer() as t_make:
        sweep = sweep_rows(max(1, round(2000 * scale)), 5, 10)
        abl = ablation_rows(10, max(1, round(200 * scale)), 50)
    print(f"built {len(sweep):,} sweep rows ({sweep['config_json'].nunique():,} configs x seeds, "
          f"{sweep.shape[1]} columns) and {len(abl):,} ablation rows in {t_make.s:.1f} s")

    rank_s, table = timed(lambda: rank_configs(sweep), args.repeats)
    print(f"rank_configs over {len(sweep):,} rows: median {_bench.median(rank_s):.3f} s "
          f"(min {min(rank_s):.3f}, max {max(rank_s):.3f}, n={len(rank_s)}); {len(table):,} configurations ranked")
    abl_s, atable = timed(lambda: ablation_table(abl), args.repeats)
    print(f"ablation_table over {len(abl):,} rows: median {_bench.median(abl_s):.3f} s "
          f"(min {min(abl_s):.3f}, max {max(abl_s):.3f}, n={len(abl_s)}); {len(atable)} factors, "
          f"{int(atable['val_image_auroc_n'].iloc[0]):,} pairs each")
    worst = max(_bench.median(rank_s), _bench.median(abl_s))
    print(f"slowest: {worst:.3f} s (goal < 2 s: {'met' if worst < 2 else 'not met'})")
    store = store_read(sweep, args.store_files) if args.store_files else None
    if store:
        print(f"load_results of {store['files']:,} one-row Parquet files (the store's layout): {store['seconds']:.2f} s, "
              f"{store['per_file_ms']:.2f} ms per file -> ~{store['per_file_ms'] * 100:.0f} s for 100,000 rows")
    path = _bench.save("analysis_speed", {
        "args": vars(args), "sweep_rows": len(sweep), "ablation_rows": len(abl), "columns": sweep.shape[1],
        "configs": len(table), "rank_configs_s": rank_s, "ablation_table_s": abl_s, "store_read": store,
    })
    print(f"wrote {os.path.relpath(path, _bench.REPO)}")


if __name__ == "__main__":
    main()
