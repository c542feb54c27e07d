"""Selection fidelity: does the validation objective predict test performance?

A sweep ranks configurations by a validation objective (``search.metric``, e.g.
``val_image_auroc``); the test metrics stored beside it never select anything. This module
measures, after the fact, how well the objective's order of configurations agrees with
their order on test:

- ``spearman`` / ``kendall``: rank correlation across configurations between the
  objective and a test metric, each averaged over classes (with a percentile bootstrap
  interval for Spearman, resampling configurations);
- ``spearman_per_class_mean``: the same correlation within each class, averaged over classes;
- ``regret``: the best test value among the configurations minus the test value of the
  configuration the objective picked, i.e. the test points lost by trusting the objective.

It is a **diagnostic computed on test labels**. It never feeds selection: choosing a
configuration (or an objective) because of it would be selection on test, and the test
numbers would no longer be an unbiased estimate.

How to read it: Spearman near 1 means the validation order follows the test order (the
objective is a faithful proxy); near 0 or negative means it does not. A regret near 0
means the picked configuration is (nearly) the best on test as well. With few
configurations the interval is wide: read it before the point value.

A *configuration* here is a trial (``trial_id``) that is complete: it has a completed row
with a finite objective for every class of the experiment (every ``normal_class`` among the
completed rows). Pruned, failed and partial trials are left out; ``n_configs`` of
``n_trials`` are used. Rows of kind ``tune`` are used when there are any, else every row
that is not an ablation.

Example:
    >>> from analysis import load_results, selection_fidelity, fidelity_line
    >>> result = selection_fidelity(load_results("/tmp/tdemo"))   # doctest: +SKIP
    >>> print(fidelity_line(result))                              # doctest: +SKIP
    selection fidelity (diagnostic, 16 configs): Spearman(val_image_auroc, test_image_auroc) 0.62 [0.21, 0.86], ...
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.load import prepare
from raysearch.config.objective import format_metric
from raysearch.store import results

__all__ = ["FidelityResult", "selection_fidelity", "fidelity_line", "counterpart_metric", "MIN_CONFIGS"]

MIN_CONFIGS = 3  # configurations needed for a rank correlation to mean anything
MODES = ("max", "min")

TABLE_COLUMNS = ["test_metric", "n", "spearman", "spearman_ci_low", "spearman_ci_high", "kendall",
                 "spearman_per_class_mean", "picked", "picked_test", "best_test", "median_test", "regret"]
PER_CLASS_COLUMNS = ["normal_class", "test_metric", "n", "spearman", "kendall", "picked", "picked_test",
                     "best_test", "regret"]


@dataclass
class FidelityResult:
    """What :func:`selection_fidelity` found.

    ``table``: one row per test metric (see :data:`TABLE_COLUMNS`); ``per_class``: one row
    per (normal_class, test_metric) (see :data:`PER_CLASS_COLUMNS`); ``configs``: one row
    per complete configuration (``trial_id``, ``optuna_trial``, the class-mean objective,
    the class-mean test metrics, ``picked``), in trial order. ``reason`` says why the table
    is empty, else it is None.
    """

    objective: str
    mode: str
    n_configs: int
    n_trials: int
    n_classes: int
    table: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TABLE_COLUMNS))
    per_class: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PER_CLASS_COLUMNS))
    configs: pd.DataFrame = field(default_factory=pd.DataFrame)
    confidence: float = 0.95
    reason: str | None = None

    @property
    def computed(self) -> bool:
        """True when the table has at least one test metric."""
        return not self.table.empty


def counterpart_metric(objective: str) -> str | None:
    """The test metric that matches a validation objective (``val_X`` -> ``test_X``), else None.

    Example:
        >>> counterpart_metric("val_aupro"), counterpart_metric("latency_ms")
        ('test_aupro', None)
    """
    return "test_" + objective[len("val_"):] if objective.startswith("val_") else None


# -- statistics ------------------------------------------------------------------------------
def _rank_correlation(x: np.ndarray, y: np.ndarray, kind: str) -> float:
    """Spearman's rho or Kendall's tau-b of the finite pairs; NaN with fewer than 3 pairs or a
    constant side."""
    from scipy import stats

    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < MIN_CONFIGS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float((stats.spearmanr if kind == "spearman" else stats.kendalltau)(x, y)[0])


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    return _rank_correlation(x, y, "spearman")


def _kendall(x: np.ndarray, y: np.ndarray) -> float:
    return _rank_correlation(x, y, "kendall")


def _bootstrap_spearman(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int,
                        confidence: float) -> tuple[float, float]:
    """Percentile bootstrap interval of Spearman's rho, resampling the pairs with replacement.

    Spearman's rho is Pearson's r of the average ranks (what ``scipy.stats.spearmanr``
    computes); all resamples are ranked at once. A resample in which either side is
    constant has no correlation and is dropped. NaN when no resample is usable.
    """
    from scipy import stats

    if n_boot <= 0 or len(x) < MIN_CONFIGS:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    rx = stats.rankdata(x[idx], axis=1)
    ry = stats.rankdata(y[idx], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry).sum(axis=1) / denom
    rho = rho[np.isfinite(rho) & (denom > 1e-12)]
    if rho.size == 0:
        return math.nan, math.nan
    alpha = (1 - confidence) / 2
    low, high = np.quantile(np.clip(rho, -1.0, 1.0), [alpha, 1 - alpha])
    return float(low), float(high)


def _pick(objective: pd.Series, mode: str) -> object:
    """The index label of the best objective value; ties go to the first label (trial order)."""
    values = objective.to_numpy(float)
    if not np.isfinite(values).any():
        return None
    i = int(np.nanargmax(values) if mode == "max" else np.nanargmin(values))
    return objective.index[i]


# -- configurations -----------------------------------------------------------------------------
def _sweep_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of kind tune if there are any, else every row that is not an ablation."""
    kind = df["kind"].astype(object)
    if (kind == "tune").any():
        return df[kind == "tune"]
    return df[kind != "ablate"]


def _test_columns(df: pd.DataFrame, test_metrics: Sequence[str] | None) -> list[str]:
    if test_metrics is not None:
        missing = [m for m in test_metrics if m not in df.columns]
        if missing:
            raise ValueError(f"test metric(s) {missing} are not columns of the results")
        return list(test_metrics)
    known = [c for c in results.METRIC_COLUMNS if c.startswith("test_") and c in df.columns]
    others = sorted(c for c in df.columns if str(c).startswith("test_") and c not in known
                    and pd.api.types.is_numeric_dtype(df[c]))
    return known + others


def _complete_configs(rows: pd.DataFrame, objective: str, tests: list[str]
                      ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], list[str], int]:
    """The complete trials: class means of the objective and of every test metric.

    Returns (configs, cells, classes, n_trials): ``configs`` indexed by trial_id in trial
    order (Optuna number, then trial_id) with the class-mean objective and test metrics (a
    test mean is NaN unless every class has a value); ``cells[metric]``: trial_id x class
    (the mean of the rows of that cell).
    """
    n_trials = int(rows["trial_id"].nunique())
    done = rows[rows["status"] == "completed"]
    order = (done.groupby("normal_class")["class_index"].min().reset_index()
             .sort_values(["class_index", "normal_class"], na_position="last"))
    classes = list(order["normal_class"])
    value = pd.to_numeric(done[objective], errors="coerce")
    done = done[np.isfinite(value)]
    columns = [objective] + tests
    numbers = done[["trial_id", "normal_class"]].copy()
    for c in columns:
        numbers[c] = pd.to_numeric(done[c], errors="coerce").astype(float)
    cells = {c: numbers.pivot_table(index="trial_id", columns="normal_class", values=c, aggfunc="mean",
                                    dropna=False).reindex(columns=classes) for c in columns}
    complete = cells[objective].notna().all(axis=1) if classes else pd.Series(dtype=bool)
    trials = list(complete.index[complete])
    first = rows.groupby("trial_id")["optuna_trial"].min()
    configs = pd.DataFrame({"trial_id": trials,
                            "optuna_trial": pd.to_numeric(first.reindex(trials), errors="coerce").to_numpy()})
    configs = configs.sort_values(["optuna_trial", "trial_id"], na_position="last", kind="stable")
    configs = configs.set_index("trial_id")
    cells = {c: t.reindex(configs.index) for c, t in cells.items()}
    for c in columns:
        configs[c] = cells[c].mean(axis=1, skipna=False)
    return configs, cells, classes, n_trials


# -- the diagnostic ------------------------------------------------------------------------------
def selection_fidelity(df: pd.DataFrame, objective: str = "val_image_auroc", mode: str = "max",
                       test_metrics: Sequence[str] | None = None, n_boot: int = 1000, seed: int = 0,
                       confidence: float = 0.95) -> FidelityResult:
    """How well the validation ``objective`` predicts each test metric across configurations.

    ``df``: result rows (``analysis.load.load_results`` or a hand-built table; it goes
    through :func:`analysis.load.prepare`). ``mode``: the objective's direction (with
    "min" the smallest objective is picked and the correlations are signed so that +1
    still means "the objective's preference follows test"). ``test_metrics``: default every
    ``test_*`` column with values for at least 3 complete configurations. ``n_boot`` and
    ``seed``: the bootstrap of the Spearman interval (at ``confidence``), reproducible for
    a seed. All test metrics are taken as higher-is-better.

    ``result.table`` columns: ``test_metric``, ``n`` (configurations with a value),
    ``spearman`` with ``spearman_ci_low``/``spearman_ci_high``, ``kendall`` (tau-b),
    ``spearman_per_class_mean``, ``picked`` (the trial_id with the best class-mean
    objective; ties: the first in trial order), ``picked_test``, ``best_test``,
    ``median_test`` and ``regret`` = best_test - picked_test. ``result.per_class``: per
    class, the same correlations and the regret of that class's own pick.

    Never raises for too little data: with fewer than 3 complete configurations or no test
    values the table is empty and ``result.reason`` says why.

    Example:
        >>> import pandas as pd
        >>> rows = [{"trial_id": t, "normal_class": c, "val_image_auroc": v, "test_image_auroc": v + d}
        ...         for t, v in (("t1", 0.7), ("t2", 0.8), ("t3", 0.9)) for c, d in (("a", 0.0), ("b", 0.1))]
        >>> r = selection_fidelity(pd.DataFrame(rows))
        >>> r.n_configs, r.table.loc[0, "picked"]
        (3, 't3')
        >>> print(fidelity_line(r))
        selection fidelity (diagnostic, 3 configs): Spearman(val_image_auroc, test_image_auroc) 1.00 [1.00, 1.00], regret 0.000 (picked 0.950, best 0.950)
    """
    if mode not in MODES:
        raise ValueError(f"mode must be 'max' or 'min', but got {mode=}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), but got {confidence=}.")
    df = prepare(df)
    if objective not in df.columns:
        raise ValueError(f"objective {objective!r} is not a column of the results")
    tests = [m for m in _test_columns(df, test_metrics) if m != objective]
    rows = _sweep_rows(df)
    configs, cells, classes, n_trials = _complete_configs(rows, objective, tests)
    result = FidelityResult(objective=objective, mode=mode, n_configs=len(configs), n_trials=n_trials,
                            n_classes=len(classes), confidence=confidence)
    picked = _pick(configs[objective], mode)
    configs["picked"] = configs.index == picked
    result.configs = configs.reset_index()
    if len(configs) < MIN_CONFIGS:
        result.reason = (f"{len(configs)} complete configuration(s) of {n_trials} trial(s); "
                         f"the diagnostic needs at least {MIN_CONFIGS}")
        return result
    tests = [m for m in tests if configs[m].notna().sum() >= MIN_CONFIGS]
    if not tests:
        result.reason = (f"no test metric has values for {MIN_CONFIGS} or more of the {len(configs)} "
                         "complete configurations (no test labels?)")
        return result

    sign = 1.0 if mode == "max" else -1.0  # order the objective best-last, as the tests are
    x_all = sign * configs[objective].to_numpy(float)
    table, per_class = [], []
    for metric in tests:
        y_all = configs[metric].to_numpy(float)
        ok = np.isfinite(y_all)
        x, y = x_all[ok], y_all[ok]
        class_rows = [_class_row(cls, metric, cells[objective][cls], cells[metric][cls], sign, mode)
                      for cls in classes]
        per_class += class_rows
        picked_test = float(configs.loc[picked, metric])
        low, high = _bootstrap_spearman(x, y, n_boot, seed, confidence)
        class_rho = np.array([r["spearman"] for r in class_rows], dtype=float)
        table.append({
            "test_metric": metric, "n": int(ok.sum()), "spearman": _spearman(x, y),
            "spearman_ci_low": low, "spearman_ci_high": high, "kendall": _kendall(x, y),
            "spearman_per_class_mean": float(np.mean(class_rho[np.isfinite(class_rho)]))
            if np.isfinite(class_rho).any() else math.nan,
            "picked": picked, "picked_test": picked_test, "best_test": float(np.max(y)),
            "median_test": float(np.median(y)), "regret": float(np.max(y)) - picked_test,
        })
    result.table = pd.DataFrame(table, columns=TABLE_COLUMNS)
    result.per_class = pd.DataFrame(per_class, columns=PER_CLASS_COLUMNS)
    return result


def _class_row(cls: str, metric: str, objective: pd.Series, test: pd.Series, sign: float, mode: str) -> dict:
    """One class: correlations across configurations and the regret of the class's own pick."""
    x, y = sign * objective.to_numpy(float), test.to_numpy(float)
    ok = np.isfinite(x) & np.isfinite(y)
    picked = _pick(objective, mode)
    picked_test = float(test.loc[picked]) if picked is not None else math.nan
    best = float(np.max(y[ok])) if ok.any() else math.nan
    return {"normal_class": cls, "test_metric": metric, "n": int(ok.sum()), "spearman": _spearman(x, y),
            "kendall": _kendall(x, y), "picked": picked, "picked_test": picked_test, "best_test": best,
            "regret": best - picked_test}


# -- one line for the console -------------------------------------------------------------------
def _num(value: float, digits: int) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def fidelity_line(result: FidelityResult, test_metric: str | None = None) -> str:
    """One console line: the Spearman correlation of the objective with ``test_metric``
    (default the objective's own test metric, else the table's first), its interval and the
    regret; or why it was not computed.

    Example:
        >>> print(fidelity_line(FidelityResult("val_image_auroc", "max", 2, 2, 4, reason="2 complete configurations")))
        selection fidelity: not computed (2 complete configurations)
    """
    if not result.computed:
        return f"selection fidelity: not computed ({result.reason or 'no test metric'})"
    table = result.table.set_index("test_metric")
    if test_metric is None:
        own = counterpart_metric(result.objective)
        test_metric = own if own in table.index else table.index[0]
    if test_metric not in table.index:
        return f"selection fidelity: not computed (no values of {test_metric})"
    r = table.loc[test_metric]
    interval = (f" [{_num(r['spearman_ci_low'], 2)}, {_num(r['spearman_ci_high'], 2)}]"
                if np.isfinite(r["spearman_ci_low"]) else "")
    return (f"selection fidelity (diagnostic, {int(r['n'])} configs): "
            f"Spearman({result.objective}, {test_metric}) {_num(r['spearman'], 2)}{interval}, "
            f"regret {format_metric(r['regret'])} (picked {format_metric(r['picked_test'])}, "
            f"best {format_metric(r['best_test'])})")

