"""Ablation tables: each factor's paired effect against the full model, with a test.

An ablation runs the full model (variant ``full``) and one variant per factor on the same
seeds and classes. A variant's effect on a metric is the mean of the paired differences
``variant - full`` over the (seed, normal_class) cells both finished, so class difficulty
and seed luck cancel out. Only rows with kind ``ablate`` and status ``completed`` count.

Example:
    >>> from analysis import ablation_table, load_results
    >>> ablation_table(load_results("raysearch-results/distcon-ablate"))   # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.load import prepare
from analysis.rank import t_interval

__all__ = ["ablation_table", "paired_test", "REFERENCE", "MIN_WILCOXON_PAIRS"]

REFERENCE = "full"  # the variant every factor is compared with
MIN_WILCOXON_PAIRS = 6  # fewer pairs: the signed-rank test cannot reach p < 0.05 (2/2^5 = 0.0625)


def paired_test(diffs: np.ndarray) -> tuple[float, str]:
    """Two-sided p-value of paired differences and the test's name.

    Wilcoxon signed-rank when there are at least :data:`MIN_WILCOXON_PAIRS` pairs and not
    every difference is zero (it assumes no normality); otherwise the paired t-test (which
    gives NaN when every difference is equal). "none" with NaN below two pairs.

    Example:
        >>> p, test = paired_test(np.array([-0.10, -0.12, -0.08, -0.11, -0.09, -0.13]))
        >>> test, p < 0.05
        ('wilcoxon', True)
    """
    from scipy import stats  # imported here: scipy.stats costs ~1 s at import

    diffs = np.asarray(diffs, dtype=float)
    if len(diffs) >= MIN_WILCOXON_PAIRS and np.any(diffs != 0):
        return float(stats.wilcoxon(diffs).pvalue), "wilcoxon"
    if len(diffs) < 2:
        return math.nan, "none"
    with np.errstate(invalid="ignore", divide="ignore"):
        # ttest_rel(variant, full) is the one-sample t-test of the differences against 0.
        return float(stats.ttest_1samp(diffs, 0.0).pvalue), "ttest_rel"


def ablation_table(df: pd.DataFrame, metrics: Sequence[str] = ("val_image_auroc", "test_image_auroc"),
                   confidence: float = 0.95) -> pd.DataFrame:
    """One row per ablated factor with its paired effect on each metric.

    For each metric ``m`` the columns are ``m_full`` and ``m_variant`` (the two means over
    the paired cells), ``m_effect`` (mean of variant - full), ``m_ci_low``/``m_ci_high``
    (Student-t interval at ``confidence``), ``m_p`` and ``m_test`` (see
    :func:`paired_test`) and ``m_n`` (pairs). Rows are sorted by ``|effect|`` on the first
    metric, largest first; factors without pairs come last.

    Raises ValueError when there are no completed ablation rows or no ``full`` rows.

    Example:
        >>> table = ablation_table(load_results("DIR"))            # doctest: +SKIP
        >>> table[["variant", "val_image_auroc_effect", "val_image_auroc_p"]]  # doctest: +SKIP
    """
    if not metrics:
        raise ValueError("metrics must name at least one metric column, but got an empty list.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), but got {confidence=}.")
    df = prepare(df)
    missing = [m for m in metrics if m not in df.columns]
    if missing:
        raise ValueError(f"metric columns {missing} are not in the table")
    rows = df[(df["kind"] == "ablate") & (df["status"] == "completed")]
    if rows.empty:
        raise ValueError(f"no completed ablation rows (kind == 'ablate') among {len(df)} rows")
    variants = [str(v) for v in pd.unique(rows["variant"].dropna())]
    if REFERENCE not in variants:
        raise ValueError(f"no completed rows of the reference variant {REFERENCE!r}; variants: {variants}")

    cells = ["seed", "normal_class"]
    out = pd.DataFrame({"variant": [v for v in variants if v != REFERENCE]})
    for m in metrics:
        # (seed, class) x variant; duplicates of a cell (a rerun) are averaged.
        wide = rows.pivot_table(index=cells, columns="variant", values=m, aggfunc="mean")
        stats_rows = []
        for v in out["variant"]:
            pair = wide[[REFERENCE, v]].dropna() if v in wide.columns and REFERENCE in wide.columns \
                else pd.DataFrame(columns=[REFERENCE, v])
            diffs = (pair[v] - pair[REFERENCE]).to_numpy(dtype=float)
            n = len(diffs)
            mean = diffs.mean() if n else math.nan
            std = diffs.std(ddof=1) if n >= 2 else math.nan
            lo, hi = t_interval(np.array([mean]), np.array([std]), np.array([n]), confidence)
            p, test = paired_test(diffs)
            stats_rows.append({
                f"{m}_full": pair[REFERENCE].mean() if n else math.nan,
                f"{m}_variant": pair[v].mean() if n else math.nan,
                f"{m}_effect": mean, f"{m}_ci_low": float(lo[0]), f"{m}_ci_high": float(hi[0]),
                f"{m}_p": p, f"{m}_test": test, f"{m}_n": n,
            })
        out = pd.concat([out, pd.DataFrame(stats_rows, index=out.index)], axis=1)
    size = out[f"{metrics[0]}_effect"].abs()
    out = out.loc[size.sort_values(ascending=False, na_position="last", kind="stable").index]
    return out.reset_index(drop=True)
