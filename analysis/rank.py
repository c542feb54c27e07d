"""Ranking configurations over classes and seeds, with the number of runs behind each mean.

A *configuration* is a resolved config without ``train.seed`` and ``data.classes``
(the ``config_key`` column, see :func:`analysis.load.config_key`); each of its result rows
is one (seed, class) run. Only rows with status ``completed`` and a finite metric count.
The test metric is shown beside the validation objective and never used to rank.

Example:
    >>> from analysis import load_results, rank_configs
    >>> rank_configs(load_results("/tmp/tdemo")).head()       # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import IGNORED_CONFIG_KEYS, prepare

__all__ = ["trial_table", "rank_configs", "per_class_table", "history_table", "varying_params", "t_interval"]

MODES = ("max", "min")


def t_interval(mean: np.ndarray, std: np.ndarray, n: np.ndarray, confidence: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Student-t confidence interval of a mean: mean ± t(1-a/2, n-1)·std/√n.

    NaN where n < 2 (no spread can be estimated from one run).

    Example:
        >>> lo, hi = t_interval(np.array([1.0]), np.array([1.0]), np.array([4]), 0.95)
        >>> round(float(lo[0]), 3), round(float(hi[0]), 3)
        (-0.591, 2.591)
    """
    from scipy import stats  # imported here: scipy.stats costs ~1 s at import

    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        dof = np.where(n >= 2, n - 1, np.nan)
        half = stats.t.ppf(0.5 + confidence / 2, dof) * np.asarray(std) / np.sqrt(n)
    return np.asarray(mean) - half, np.asarray(mean) + half


def _check(df: pd.DataFrame, metric: str, mode: str, confidence: float = 0.95) -> None:
    if metric not in df.columns:
        numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
        raise ValueError(f"metric {metric!r} is not a column; numeric columns: {', '.join(numeric)}")
    if mode not in MODES:
        raise ValueError(f"mode must be 'max' or 'min', but got {mode=}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), but got {confidence=}.")


def _finished(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Completed rows with a finite value of ``metric``."""
    values = pd.to_numeric(df[metric], errors="coerce")
    return df[(df["status"] == "completed") & np.isfinite(values)]


TRIAL_STATUSES = ("completed", "pruned", "failed", "unfinished")


def trial_table(df: pd.DataFrame, metric: str = "val_image_auroc", mode: str = "max",
                n_classes: int | None = None) -> pd.DataFrame:
    """One row per trial (a sweep trial, an ablation run or a train run), best first: the
    one ranking of trials that the console summary, ``export``, an ablation's ``--base``
    and the report use.

    A trial's ``status`` is ``failed`` when a class failed, ``pruned`` when the scheduler
    stopped it, ``completed`` when it has a completed row with a finite ``metric`` for
    each of the ``n_classes`` classes (default: as many as the experiment's rows name), and
    ``unfinished`` otherwise (interrupted, or still running). Only completed trials are
    complete and ranked (``rank`` 1 = best ``mean``, ties by trial id); the others follow
    with no rank. Columns: ``rank``, ``trial_id``, ``kind``, ``optuna_trial``,
    ``variant``, ``seed``, ``config_key``, ``status``, ``classes_done``, ``mean`` (over
    the classes done), ``complete``.

    Example:
        >>> rows = pd.DataFrame({"trial_id": ["a", "a", "b"], "class_index": [0, 1, 0],
        ...                      "val_image_auroc": [0.75, 0.25, 0.5]})
        >>> trial_table(rows)[["trial_id", "status", "mean"]].values.tolist()
        [['a', 'completed', 0.5], ['b', 'unfinished', 0.5]]
    """
    df = prepare(df)
    _check(df, metric, mode)
    columns = ["rank", "trial_id", "kind", "optuna_trial", "variant", "seed", "config_key", "status",
               "classes_done", "mean", "complete"]
    if df.empty:
        return pd.DataFrame(columns=columns)
    index = pd.to_numeric(df["class_index"], errors="coerce")
    if n_classes is None:
        n_classes = int(index.max()) + 1 if index.notna().any() else int(df.groupby("trial_id")["normal_class"].nunique().max())
    values = pd.to_numeric(df[metric], errors="coerce")
    done = (df["status"] == "completed") & np.isfinite(values)
    df = df.assign(_value=values.where(done), _done=done, _class=index.astype(object).where(index.notna(), df["normal_class"]))
    rows = []
    for tid, trial in df.groupby("trial_id", sort=False):
        statuses = set(trial["status"])
        classes_done = trial.loc[trial["_done"], "_class"].nunique()
        status = ("failed" if "failed" in statuses else "pruned" if "pruned" in statuses
                  else "completed" if classes_done >= n_classes else "unfinished")
        first = trial.iloc[0]
        rows.append({"trial_id": str(tid), "kind": first["kind"], "optuna_trial": first["optuna_trial"],
                     "variant": first["variant"], "seed": first["seed"], "config_key": first["config_key"],
                     "status": status, "classes_done": int(classes_done), "mean": trial["_value"].mean(),
                     "complete": status == "completed"})
    table = pd.DataFrame(rows)
    table["_order"] = -table["mean"] if mode == "max" else table["mean"]
    table = table.sort_values(["complete", "_order", "trial_id"], ascending=[False, True, True],
                              na_position="last", kind="stable").drop(columns="_order")
    ranks = np.arange(1, len(table) + 1, dtype=float)
    table.insert(0, "rank", np.where(table["complete"], ranks, np.nan))
    table["rank"] = table["rank"].astype("Int64")
    return table.reset_index(drop=True)[columns]


def varying_params(df: pd.DataFrame) -> pd.DataFrame:
    """One row per ``config_key`` with the config keys whose values differ between configs.

    Read from ``config_json`` (one parse per distinct config); keys in
    :data:`analysis.load.IGNORED_CONFIG_KEYS` are left out. Empty columns when there is
    no ``config_json`` or only one configuration.
    """
    df = prepare(df) if "config_key" not in df.columns else df
    firsts = df.dropna(subset=["config_json"]).drop_duplicates("config_key")
    configs = {k: json.loads(c) for k, c in zip(firsts["config_key"], firsts["config_json"])}
    table = pd.DataFrame.from_dict(configs, orient="index")
    table = table.drop(columns=[c for c in IGNORED_CONFIG_KEYS if c in table.columns])
    table = table.apply(lambda col: col.map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v))
    varying = [c for c in table.columns if table[c].nunique(dropna=False) > 1]
    table = table[varying]
    table.index.name = "config_key"
    return table


def rank_configs(df: pd.DataFrame, metric: str = "val_image_auroc", mode: str = "max",
                 confidence: float = 0.95, n_classes: int | None = None) -> pd.DataFrame:
    """One row per configuration, ranked by ``metric`` aggregated over its classes and seeds.

    Columns: ``rank``; ``config_key``; ``mean``, ``std``, ``n`` (runs = (seed, class)
    pairs), ``ci_low``/``ci_high`` (Student-t interval at ``confidence``, treating each run
    as one observation, so it covers class-to-class as well as seed-to-seed spread);
    ``n_seeds``; ``n_classes`` finished vs ``max_classes`` (the most any configuration
    has); ``complete`` (every trial of the configuration completed all ``n_classes``
    classes, see :func:`trial_table`);
    ``mean_rank`` (rank the configurations within each class by their seed-mean there, 1 =
    best, then average over the config's classes); ``<test metric>_mean`` beside a ``val_``
    metric, for reading only; ``n_trials`` and ``trial_ids``; then the config keys that
    vary between configurations.

    Complete configurations come first, ordered by ``mean`` (best first; ``mean_rank``
    breaks ties); incomplete ones follow, ordered the same way, so a mean over an easy
    subset of classes never outranks a full one.

    Example:
        >>> table = rank_configs(load_results("/tmp/tdemo"))       # doctest: +SKIP
        >>> table[["rank", "mean", "ci_low", "ci_high", "n", "complete"]]  # doctest: +SKIP
    """
    df = prepare(df)
    _check(df, metric, mode, confidence)
    done = _finished(df, metric).copy()
    done[metric] = done[metric].astype(float)
    test_metric = "test_" + metric[len("val_"):] if metric.startswith("val_") else None
    if test_metric is not None and test_metric not in df.columns:
        test_metric = None
    columns = ["rank", "config_key", "mean", "std", "n", "ci_low", "ci_high", "n_seeds", "n_classes",
               "max_classes", "complete", "mean_rank"]
    columns += [f"{test_metric}_mean"] if test_metric else []
    columns += ["n_trials", "trial_ids"]
    if done.empty:
        return pd.DataFrame(columns=columns)

    g = done.groupby("config_key", sort=False)
    table = g[metric].agg(mean="mean", std="std", n="count")
    table["ci_low"], table["ci_high"] = t_interval(table["mean"], table["std"], table["n"], confidence)
    table["n_seeds"] = g["seed"].nunique(dropna=False)
    table["n_classes"] = g["normal_class"].nunique()
    table["max_classes"] = int(table["n_classes"].max())
    # Complete: every trial of the configuration is (see trial_table).
    trials = trial_table(df, metric, mode, n_classes)
    complete = set(trials.loc[trials["complete"], "trial_id"])
    all_complete = df.groupby("config_key")["trial_id"].agg(lambda s: set(map(str, s)) <= complete)
    table["complete"] = all_complete.reindex(table.index).fillna(False).astype(bool)

    # Rank aggregation: within each class, rank configs by their seed-mean (1 = best).
    per_class = done.groupby(["normal_class", "config_key"])[metric].mean()
    ranks = per_class.groupby(level="normal_class").rank(ascending=(mode == "min"), method="average")
    table["mean_rank"] = ranks.groupby(level="config_key").mean()
    if test_metric:
        table[f"{test_metric}_mean"] = g[test_metric].mean()
    table["n_trials"] = g["trial_id"].nunique()
    table["trial_ids"] = g["trial_id"].agg(lambda s: ",".join(sorted(map(str, s.dropna().unique()))))

    table = table.sort_values(["mean", "mean_rank"], ascending=[mode == "min", True], kind="stable")
    table = table.sort_values("complete", ascending=False, kind="stable")
    table["rank"] = np.arange(1, len(table) + 1)
    table = table.reset_index()[columns]
    return table.merge(varying_params(df), left_on="config_key", right_index=True, how="left")


def per_class_table(df: pd.DataFrame, metric: str = "val_image_auroc", mode: str = "max") -> pd.DataFrame:
    """Configurations x classes: the seed-mean of ``metric`` per cell (completed runs only).

    Classes keep the spec's order (``class_index``) where known; rows are ordered by the
    mean over the row's classes, best first. Empty cells (unfinished classes) are NaN.

    Example:
        >>> per_class_table(load_results("/tmp/tdemo"))           # doctest: +SKIP
    """
    df = prepare(df)
    _check(df, metric, mode)
    done = _finished(df, metric)
    table = done.pivot_table(index="config_key", columns="normal_class", values=metric, aggfunc="mean")
    order = (done.groupby("normal_class")["class_index"].min()
             .reset_index().sort_values(["class_index", "normal_class"], na_position="last"))
    table = table[[c for c in order["normal_class"] if c in table.columns]]
    table = table.loc[table.mean(axis=1).sort_values(ascending=(mode == "min")).index]
    table.columns.name = "normal_class"
    return table


def history_table(source: Any, metric: str = "val_image_auroc", mode: str = "max") -> pd.DataFrame:
    """The optimisation history: one row per trial in the order trials were started.

    ``source`` is a results DataFrame (a trial's value is its ``metric`` averaged over its
    classes, as the sweep's objective is; a trial counts as completed only if all its rows
    are, see :func:`trial_table`) or an Optuna study (values[0] of each trial, or the objective named ``metric`` in
    ``study.metric_names``). Columns: ``order`` (Optuna trial number where known),
    ``trial``, ``status``, ``value`` (NaN unless completed), ``best_so_far``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be 'max' or 'min', but got {mode=}.")
    if isinstance(source, pd.DataFrame):
        df = prepare(source)
        _check(df, metric, mode)
        df = df[df["kind"] == "tune"] if (df["kind"] == "tune").any() else df
        trials = trial_table(df, metric, mode)
        started = df.groupby("trial_id")["timestamp"].min()
        table = pd.DataFrame({"order": pd.to_numeric(trials["optuna_trial"], errors="coerce").astype(float),
                              "started": trials["trial_id"].map(started), "trial": trials["trial_id"],
                              "status": trials["status"], "value": trials["mean"].where(trials["complete"])})
        table = table.sort_values(["order", "started", "trial"], na_position="last", kind="stable")
        table = table.drop(columns="started")
        if table["order"].isna().any():  # no Optuna numbers: number the trials as sorted
            table["order"] = np.arange(len(table))
    else:
        study = source
        index = 0
        names = getattr(study, "metric_names", None) or []
        if metric in names:
            index = names.index(metric)
        rows = [{"order": t.number, "trial": str(t.number), "status": t.state.name.lower(),
                 "value": t.values[index] if t.values is not None else math.nan} for t in study.trials]
        table = pd.DataFrame(rows, columns=["order", "trial", "status", "value"])
        table.loc[table["status"] != "complete", "value"] = math.nan
        table["status"] = table["status"].replace({"complete": "completed", "fail": "failed"})
    values = table["value"].astype(float)
    best = values.cummax() if mode == "max" else values.cummin()
    table["best_so_far"] = best.ffill()  # cummax leaves NaN at unfinished trials; carry the best
    return table.reset_index(drop=True)
