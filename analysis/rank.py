"""Ranking configurations over classes and seeds, with the number of runs behind each mean.

A *configuration* is a resolved config without ``train.seed`` and ``data.classes``
(the ``config_key`` column, see :func:`analysis.load.config_key`); each of its result rows
is one (seed, class) run. Only rows with status ``completed`` and a finite metric count.
The test metric is shown beside the validation objective and never used to rank.

Intervals are percentile bootstrap intervals (:func:`percentile_interval`): a mean of
resampled values lies between their smallest and largest, so an interval never leaves
the metric's range (:func:`metric_range`; AUROC-like metrics are in [0, 1], a difference
of two in [-1, 1]), and each is reproducible (:data:`BOOTSTRAP_RESAMPLES` resamples from
:data:`BOOTSTRAP_SEED`). The headline of :func:`rank_configs` is the paired difference to
the rank-1 configuration over the (class, seed) cells both finished
(:func:`paired_difference`): class difficulty, shared by the pair, cancels out.

Example:
    >>> from analysis import load_results, rank_configs
    >>> rank_configs(load_results("/tmp/tdemo")).head()       # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import IGNORED_CONFIG_KEYS, prepare
from raysearch.config.space import is_repeat

__all__ = ["rank_order", "trial_table", "rank_configs", "per_class_table", "history_table", "varying_params", "t_interval",
           "percentile_interval", "paired_difference", "cell_table", "metric_range",
           "BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED", "MIN_PAIRS", "TIE_DECIMALS"]

MODES = ("max", "min")
BOOTSTRAP_RESAMPLES = 2000  # resamples per interval: the 2.5 % quantile then rests on 50 resamples
BOOTSTRAP_SEED = 0  # every interval of a report is drawn from this seed: the same rows give the same report
TIE_DECIMALS = 9  # means equal to this many decimals tie: one value summed in another order differs in its last bits
MIN_PAIRS = 5  # fewer values: no interval (4 values have only 35 distinct resamples; the tails are a few of them)
_RESAMPLE_CHUNK = 2_000_000  # weights drawn per block (resamples x values): bounds the memory of a long column
# Metrics bounded to [0, 1] by definition (areas under curves, F1); others are unbounded.
_UNIT_METRIC = re.compile(r"auroc|aupro|f1_max")


def metric_range(metric: str) -> tuple[float, float]:
    """The values ``metric`` can take: (0, 1) for AUROC, AUPRO and F1-max columns, else
    (-inf, inf) (latency, parameter counts, ...).

    Example:
        >>> metric_range("val_image_auroc"), metric_range("latency_ms")
        ((0.0, 1.0), (-inf, inf))
    """
    return (0.0, 1.0) if _UNIT_METRIC.search(metric) else (-math.inf, math.inf)


def t_interval(mean: np.ndarray, std: np.ndarray, n: np.ndarray, confidence: float,
               bounds: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Student-t confidence interval of a mean: mean ± t(1-a/2, n-1)·std/√n.

    NaN where n < 2 (no spread can be estimated from one run). ``bounds`` (low, high)
    clips the interval to the values the mean can take (e.g. ``(-1, 1)`` for a difference
    of two AUROCs): a t-interval alone can leave them.

    Example:
        >>> lo, hi = t_interval(np.array([1.0]), np.array([1.0]), np.array([4]), 0.95)
        >>> round(float(lo[0]), 3), round(float(hi[0]), 3)
        (-0.591, 2.591)
        >>> [round(float(v[0]), 3) for v in t_interval(np.array([0.9]), np.array([0.2]), np.array([4]), 0.95, (0, 1))]
        [0.582, 1.0]
    """
    from scipy import stats  # imported here: scipy.stats costs ~1 s at import

    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        dof = np.where(n >= 2, n - 1, np.nan)
        half = stats.t.ppf(0.5 + confidence / 2, dof) * np.asarray(std) / np.sqrt(n)
    low, high = np.asarray(mean) - half, np.asarray(mean) + half
    if bounds is not None:
        low, high = np.clip(low, *bounds), np.clip(high, *bounds)
    return low, high


def percentile_interval(samples: Sequence[np.ndarray], confidence: float = 0.95,
                        n_boot: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                        bounds: tuple[float, float] = (-math.inf, math.inf), min_n: int = MIN_PAIRS
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean of each 1-D array in ``samples``.

    Each array of n values is resampled with replacement ``n_boot`` times; the interval is
    the (a', 1 - a') quantiles of the resampled means, with the *expanded* level
    a' = Φ(√(n/(n-1))·t((1-confidence)/2, n-1)) (Hesterberg 2015) rather than
    (1-confidence)/2: the plain percentile interval is too narrow for small n (about 85 %
    coverage at a nominal 95 % with 5 values), the expanded one is about as wide as a
    t-interval there and tends to the plain one as n grows. A resampled mean lies within
    the array's smallest and largest value, so the interval cannot leave the values'
    range; it is clipped to ``bounds`` as well (against rounding). NaN for arrays with
    fewer than ``min_n`` values.

    Reproducible: the resamples of an array of n values depend only on (``seed``, n,
    ``n_boot``) and the array's order, not on the other arrays; arrays of one length
    share their resamples (they are drawn once, as counts per position, and applied to
    all of them with one matrix product).

    Example:
        >>> low, high = percentile_interval([np.ones(6), np.array([0.9, 1.0, 1.0, 1.0, 1.0])], bounds=(0, 1))
        >>> low.round(2).tolist(), high.round(2).tolist()
        ([1.0, 0.92], [1.0, 1.0])
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), but got {confidence=}.")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, but got {n_boot=}.")
    from scipy import stats  # imported here: scipy.stats costs ~1 s at import

    low, high = np.full(len(samples), np.nan), np.full(len(samples), np.nan)
    lengths = np.array([len(x) for x in samples], dtype=int)
    for n in sorted(set(lengths[lengths >= max(min_n, 1)].tolist())):
        # Expanded percentile levels (Hesterberg 2015, "What teachers should know about the
        # bootstrap", sec. 4.3): the plain percentile interval has the width of z·s/√n·√((n-1)/n)
        # and covers ~85 % at a nominal 95 % with 5 values; taking the quantiles at
        # Φ(√(n/(n-1))·t(a, n-1)) gives it the t-interval's width for small n while staying a
        # set of quantiles of resampled means (so within the values' range).
        alpha = (1 - confidence) / 2
        if n >= 2:
            alpha = float(stats.norm.cdf(math.sqrt(n / (n - 1)) * stats.t.ppf(alpha, n - 1)))
        which = np.flatnonzero(lengths == n)
        values = np.vstack([np.asarray(samples[i], dtype=float) for i in which])  # (configs, n)
        rng = np.random.default_rng([seed, n])
        chunk = max(1, _RESAMPLE_CHUNK // n)
        means = []
        for start in range(0, n_boot, chunk):
            # counts[b, j]: how often value j is drawn in resample b (a multinomial over n equal cells)
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, n_boot - start))  # (B, n)
            means.append(values @ counts.T / n)  # (configs, B)
        lo, hi = np.quantile(np.hstack(means), [alpha, 1 - alpha], axis=1)
        low[which], high[which] = np.clip(lo, *bounds), np.clip(hi, *bounds)
    return low, high


def cell_table(df: pd.DataFrame, metric: str = "val_image_auroc") -> pd.DataFrame:
    """Configurations x (normal_class, seed) cells: ``metric`` per cell (the mean where a
    cell has several completed rows), NaN where a cell did not finish.

    Cells are sorted by class then seed, so each row's values come in a fixed order
    whatever the order of the rows (the bootstrap depends on it).
    """
    df = prepare(df) if "config_key" not in df.columns else df
    done = _finished(df, metric)
    cells = done.assign(_seed=done["seed"].astype(str), _value=done[metric].astype(float)).pivot_table(
        index="config_key", columns=["normal_class", "_seed"], values="_value", aggfunc="mean", dropna=False)
    cells = cells.reindex(columns=sorted(cells.columns))
    cells.columns = cells.columns.set_names(["normal_class", "seed"])
    return cells


def paired_difference(cells: pd.DataFrame, reference: Any, confidence: float = 0.95,
                      n_boot: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                      bounds: tuple[float, float] = (-math.inf, math.inf)) -> pd.DataFrame:
    """Each configuration's paired difference to ``reference`` (a row label of ``cells``).

    ``cells`` is :func:`cell_table`'s output; ``bounds`` the metric's range
    (:func:`metric_range`). Per (class, seed) cell that both finished, the difference
    *this configuration − reference*; columns ``diff`` (mean over those cells),
    ``diff_ci_low``/``diff_ci_high`` (:func:`percentile_interval` over the cells, within
    (low − high, high − low) of ``bounds``; NaN below :data:`MIN_PAIRS` cells and for the
    reference itself) and ``n_pairs``.

    Example:
        >>> cells = pd.DataFrame([[0.9, 0.8, 0.7], [0.8, 0.8, 0.5]], index=["best", "other"])
        >>> paired_difference(cells, "best").round(4).to_dict("list")["diff"]
        [0.0, -0.1]
    """
    values = cells.to_numpy(dtype=float)
    ref = cells.loc[reference].to_numpy(dtype=float)
    diffs = values - ref[None, :]  # NaN where either side did not finish
    pairs = [row[np.isfinite(row)] for row in diffs]
    n_pairs = np.array([len(p) for p in pairs])
    with np.errstate(invalid="ignore"):
        diff = np.array([p.mean() if len(p) else np.nan for p in pairs])
    span = bounds[1] - bounds[0]
    low, high = percentile_interval(pairs, confidence, n_boot, seed, (-span, span))
    is_ref = np.asarray(cells.index == reference)
    low[is_ref], high[is_ref] = np.nan, np.nan
    return pd.DataFrame({"diff": diff, "diff_ci_low": low, "diff_ci_high": high, "n_pairs": n_pairs},
                        index=cells.index)


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


def _test_metrics(done: pd.DataFrame, metric: str) -> list[str]:
    """Test metric columns with a value among ``done``: ``metric``'s counterpart first."""
    counterpart = "test_" + metric[len("val_"):] if metric.startswith("val_") else None
    found = [c for c in done.columns if str(c).startswith("test_")
             and np.isfinite(pd.to_numeric(done[c], errors="coerce")).any()]
    return sorted(found, key=lambda c: c != counterpart)


def _first_trials(done: pd.DataFrame) -> pd.DataFrame:
    """Per config_key, its first trial (lowest Optuna number, then trial id): ``trial_id``,
    ``optuna_trial`` and that trial's ``config_hash``."""
    trials = done[["config_key", "trial_id", "optuna_trial", "config_hash"]].drop_duplicates(["config_key", "trial_id"])
    trials = trials.assign(trial_id=trials["trial_id"].astype(str),
                           _order=pd.to_numeric(trials["optuna_trial"], errors="coerce"))
    trials = trials.sort_values(["config_key", "_order", "trial_id"], na_position="last", kind="stable")
    return trials.drop_duplicates("config_key").set_index("config_key")[["trial_id", "optuna_trial", "config_hash"]]


TRIAL_STATUSES = ("completed", "pruned", "failed", "unfinished")


def rank_order(table: pd.DataFrame, mode: str) -> pd.DataFrame:
    """``table`` (columns ``complete``, ``mean``, ``optuna_trial``, ``trial_id``) in the one
    ranking order of raysearch, used by the console summary, ``export``, ``compare``, an
    ablation's ``--base`` (all through :func:`trial_table`) and the report
    (:func:`rank_configs`):

    1. complete before incomplete;
    2. the objective's ``mean``, best first (``mode``); means equal to :data:`TIE_DECIMALS`
       decimals tie, since one value summed in another order differs in its last bits;
    3. the lower Optuna trial number: of two equal configurations, the one the search
       found first (a row without a number comes after those with one);
    4. the trial id.

    No test metric enters the order. NaN means come last within their group.

    Example:
        >>> t = pd.DataFrame({"complete": [True, True, True], "mean": [0.9, 0.95, 0.95 + 1e-12],
        ...                   "optuna_trial": [0, 7, 6], "trial_id": ["a", "b", "c"]})
        >>> rank_order(t, "max")["trial_id"].tolist()
        ['c', 'b', 'a']
    """
    value = pd.to_numeric(table["mean"], errors="coerce").astype(float).round(TIE_DECIMALS)
    keys = pd.DataFrame({"incomplete": ~table["complete"].astype(bool),
                         "value": -value if mode == "max" else value,
                         "number": pd.to_numeric(table["optuna_trial"], errors="coerce").astype(float),
                         "trial": table["trial_id"].astype(str)}, index=table.index)
    order = keys.sort_values(["incomplete", "value", "number", "trial"], na_position="last", kind="stable").index
    return table.loc[order]


def trial_table(df: pd.DataFrame, metric: str = "val_image_auroc", mode: str = "max",
                n_classes: int | None = None) -> pd.DataFrame:
    """One row per trial (a sweep trial, an ablation run or a train run), best first: the
    one ranking of trials that the console summary, ``export``, an ablation's ``--base``
    and the report use.

    A trial's ``status`` is ``failed`` when a class failed, ``pruned`` when the scheduler
    stopped it, ``completed`` when it has a completed row with a finite ``metric`` for
    each of the ``n_classes`` classes (default: as many as the experiment's rows name), and
    ``unfinished`` otherwise (interrupted, or still running). Only completed trials are
    complete and ranked (``rank`` 1 = best ``mean``, ties as :func:`rank_order` says); the
    others follow with no rank. Columns: ``rank``, ``trial_id``, ``kind``,
    ``optuna_trial``, ``variant``, ``seed``, ``config_hash`` (the rows' id of the trial's
    configuration, the one Optuna's user attributes carry), ``config_key``, ``status``,
    ``classes_done``, ``mean`` (over the classes done), ``complete``.

    Example:
        >>> rows = pd.DataFrame({"trial_id": ["a", "a", "b"], "class_index": [0, 1, 0],
        ...                      "val_image_auroc": [0.75, 0.25, 0.5]})
        >>> trial_table(rows)[["trial_id", "status", "mean"]].values.tolist()
        [['a', 'completed', 0.5], ['b', 'unfinished', 0.5]]
    """
    df = prepare(df)
    _check(df, metric, mode)
    columns = ["rank", "trial_id", "kind", "optuna_trial", "variant", "seed", "config_hash", "config_key", "status",
               "classes_done", "mean", "complete"]
    if df.empty:
        return pd.DataFrame(columns=columns)
    index = pd.to_numeric(df["class_index"], errors="coerce")
    if n_classes is None:
        n_classes = int(index.max()) + 1 if index.notna().any() else int(df.groupby("trial_id")["normal_class"].nunique().max())
    values = pd.to_numeric(df[metric], errors="coerce")
    done = (df["status"] == "completed") & np.isfinite(values)
    df = df.assign(_value=values.where(done), _done=done, _class=index.astype(object).where(index.notna(), df["normal_class"]))
    # One vectorised pass per column over every trial (a Python loop over 10,000 trials took ~10 s).
    key = df["trial_id"]
    firsts = df.drop_duplicates("trial_id")  # each trial's first row, in order of appearance
    firsts = firsts[firsts["trial_id"].notna()]
    ids = firsts["trial_id"]
    failed = (df["status"] == "failed").groupby(key, sort=False).any().reindex(ids).to_numpy(bool)
    pruned = (df["status"] == "pruned").groupby(key, sort=False).any().reindex(ids).to_numpy(bool)
    classes_done = (df.loc[done, "_class"].groupby(key[done], sort=False).nunique()
                    .reindex(ids).fillna(0).astype(int).to_numpy())
    # Series.mean per trial, not the grouped mean: its summation differs in the last bit,
    # and a trial's mean is the same number everywhere it is shown (console, export, report).
    means = df["_value"].groupby(key, sort=False).agg(lambda v: v.mean()).reindex(ids).to_numpy(float)
    status = np.where(failed, "failed", np.where(pruned, "pruned",
                      np.where(classes_done >= n_classes, "completed", "unfinished")))
    table = pd.DataFrame({"trial_id": [str(t) for t in ids], "kind": list(firsts["kind"]),
                          "optuna_trial": list(firsts["optuna_trial"]), "variant": list(firsts["variant"]),
                          "seed": list(firsts["seed"]), "config_hash": list(firsts["config_hash"]),
                          "config_key": list(firsts["config_key"]),
                          "status": status.tolist(), "classes_done": classes_done.tolist(),
                          "mean": means.tolist(), "complete": (status == "completed").tolist()})
    table = rank_order(table, mode)
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
    configs = {k: json.loads(c) for k, c in zip(firsts["config_key"], firsts["config_json"], strict=True)}
    table = pd.DataFrame.from_dict(configs, orient="index")
    table = table.drop(columns=[c for c in IGNORED_CONFIG_KEYS if c in table.columns])
    table = table.apply(lambda col: col.map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v))
    varying = [c for c in table.columns if table[c].nunique(dropna=False) > 1]
    table = table[varying]
    table.index.name = "config_key"
    return table


def rank_configs(df: pd.DataFrame, metric: str = "val_image_auroc", mode: str = "max",
                 confidence: float = 0.95, n_classes: int | None = None, n_boot: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> pd.DataFrame:
    """One row per configuration, ranked by ``metric`` aggregated over its classes and seeds:
    a results table to publish.

    Columns, in order:

    - ``rank``; ``trial_id`` and ``optuna_trial``: the configuration's trial (its first
      one by Optuna number, then id, where several trials share it, e.g. one per seed);
    - the config keys that vary between configurations (the searched parameters; their
      names are also in ``table.attrs["params"]``);
    - ``mean`` and ``n``: the objective over the configuration's runs ((seed, class) cells);
    - ``diff``, ``diff_ci_low``, ``diff_ci_high``, ``n_pairs``: the paired difference to
      rank 1 (:func:`paired_difference`: per (class, seed) cell both finished, this config
      minus rank 1; the mean over the cells with a seeded percentile bootstrap interval at
      ``confidence``, resampling cells; no interval with fewer than :data:`MIN_PAIRS`
      cells; rank 1 itself has ``diff`` 0 and no interval);
    - ``<test metric>_mean`` for every test metric with values (the counterpart of a
      ``val_`` metric first): for reading only, never used to rank;
    - ``std`` (over runs), ``seed_std`` (std of the per-seed means over classes; NaN with
      one seed), ``ci_low``/``ci_high`` (percentile bootstrap interval of ``mean`` over the
      runs, within the metric's range; NaN with fewer than :data:`MIN_PAIRS` runs);
    - ``n_seeds``; ``n_classes`` finished vs ``max_classes`` (the most any configuration
      has); ``complete`` (every trial of the configuration completed all ``n_classes``
      classes, see :func:`trial_table`); ``mean_rank`` (rank the configurations within each
      class by their seed-mean there, 1 = best, then average over the config's classes);
      ``config_hash`` (the rows' id of the configuration's first trial: the id a person
      reads, as in the rows, Optuna's user attributes and ``export``); ``config_key`` (the
      grouping key, which leaves the seed out); ``n_trials`` and ``trial_ids``.

    The order is :func:`rank_order`'s: complete configurations first, by ``mean`` (best
    first; equal means by Optuna number, then trial id); incomplete ones follow, ordered
    the same way, so a mean over an easy subset of classes never outranks a full one. The intervals are reproducible: ``n_boot``
    resamples from ``seed`` (see :func:`percentile_interval`). A config key named like one
    of the columns above is shown as ``<key> (config)``.

    Example:
        >>> table = rank_configs(load_results("/tmp/tdemo"))       # doctest: +SKIP
        >>> table[["rank", "trial_id", "mean", "n", "diff", "diff_ci_low", "diff_ci_high"]]  # doctest: +SKIP
    """
    df = prepare(df)
    _check(df, metric, mode, confidence)
    done = _finished(df, metric).copy()
    done[metric] = done[metric].astype(float)
    test_metrics = _test_metrics(done, metric)
    bounds = metric_range(metric)
    head = ["rank", "trial_id", "optuna_trial"]
    stats = ["mean", "n", "diff", "diff_ci_low", "diff_ci_high", "n_pairs"]
    stats += [f"{m}_mean" for m in test_metrics]
    stats += ["std", "seed_std", "ci_low", "ci_high", "n_seeds", "n_classes", "max_classes", "complete",
              "mean_rank", "config_hash", "config_key", "n_trials", "trial_ids"]
    if done.empty:
        return pd.DataFrame(columns=head + stats)

    g = done.groupby("config_key", sort=False)
    table = g[metric].agg(mean="mean", std="std", n="count")
    table["n_seeds"] = g["seed"].nunique(dropna=False)
    table["n_classes"] = g["normal_class"].nunique()
    table["max_classes"] = int(table["n_classes"].max())
    # Complete: every trial of the configuration is (see trial_table).
    trials = trial_table(df, metric, mode, n_classes)
    complete = set(trials.loc[trials["complete"], "trial_id"])
    all_complete = df["trial_id"].astype(str).isin(complete).groupby(df["config_key"]).all()
    table["complete"] = all_complete.reindex(table.index).fillna(False).astype(bool)

    # Rank aggregation: within each class, rank configs by their seed-mean (1 = best).
    per_class = done.groupby(["normal_class", "config_key"])[metric].mean()
    ranks = per_class.groupby(level="normal_class").rank(ascending=(mode == "min"), method="average")
    table["mean_rank"] = ranks.groupby(level="config_key").mean()
    for m in test_metrics:
        table[f"{m}_mean"] = g[m].mean()
    seed_means = done.groupby(["config_key", "seed"], dropna=False)[metric].mean()
    table["seed_std"] = seed_means.groupby(level="config_key").std()
    table["n_trials"] = g["trial_id"].nunique()
    ids = done[["config_key", "trial_id"]].dropna().astype({"trial_id": str}).drop_duplicates()
    table["trial_ids"] = ids.sort_values("trial_id").groupby("config_key")["trial_id"].agg(",".join)
    first = _first_trials(done)
    table["trial_id"] = first["trial_id"]
    table["optuna_trial"] = first["optuna_trial"]
    table["config_hash"] = first["config_hash"]

    table = rank_order(table, mode)
    table["rank"] = np.arange(1, len(table) + 1)

    cells = cell_table(done, metric).reindex(table.index)
    runs = [row[np.isfinite(row)] for row in cells.to_numpy()]
    table["ci_low"], table["ci_high"] = percentile_interval(runs, confidence, n_boot, seed, bounds)
    diff = paired_difference(cells, cells.index[0], confidence, n_boot, seed, bounds)
    for c in diff.columns:
        table[c] = diff[c]

    table = table.reset_index()  # config_key becomes a column
    table["optuna_trial"] = pd.to_numeric(table["optuna_trial"], errors="coerce").astype("Int64")
    params = varying_params(done)  # keys that vary among the ranked configurations
    params = params.rename(columns={c: f"{c} (config)" for c in params.columns if c in head + stats})
    params = params.reindex(table["config_key"]).reset_index(drop=True)
    ranked = pd.concat([table[head], params, table[stats]], axis=1)
    ranked.attrs["params"] = list(params.columns)
    return ranked


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
                 "value": t.values[index] if t.values is not None else math.nan} for t in study.trials
                if not is_repeat(t)]  # a repeated config was told its value, not trained
        table = pd.DataFrame(rows, columns=["order", "trial", "status", "value"])
        table.loc[table["status"] != "complete", "value"] = math.nan
        table["status"] = table["status"].replace({"complete": "completed", "fail": "failed"})
    values = table["value"].astype(float)
    best = values.cummax() if mode == "max" else values.cummin()
    table["best_so_far"] = best.ffill()  # cummax leaves NaN at unfinished trials; carry the best
    return table.reset_index(drop=True)
