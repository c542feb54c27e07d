"""Ablation tables: each factor's paired effect against the full model, with a test.

An ablation runs the full model (variant ``full``) and one variant per factor on the same
seeds and classes. A variant's effect on a metric is the mean of the paired differences
``variant - full`` over the (seed, normal_class) cells both finished, so class difficulty
and seed luck cancel out. Only rows with kind ``ablate`` and status ``completed`` count.

Two tables come out of the same numbers:

- :func:`ablation_table`: one row per factor with its effect on every metric asked for
  (the forest plot's input, :func:`analysis.plots.plot_ablation`);
- :func:`ablation_paper_table`: the table of a paper for one metric, the full model first:
  variant | mean ± CI | Δ vs full ± CI | p (Holm) | ``*``, written by
  :func:`format_ablation_table` (Markdown, console) and :func:`ablation_latex` (booktabs).

Statistics, and why:

- p-values: Wilcoxon signed-rank test of the paired differences (6 or more pairs), else the
  paired t-test (:func:`paired_test`), then Holm's step-down correction over the factors of
  one metric (:func:`holm`): an ablation tests every factor at once, and Holm keeps the
  chance of any false "significant" at the level, with more power than Bonferroni.
- Intervals: Student-t over the (seed, class) pairs, not a bootstrap. An ablation has few
  pairs (the demo: 2 seeds x 2 classes = 4), and the plain percentile bootstrap is too
  narrow there: its half-width is about z·s/√n·√((n-1)/n) against t(n-1)·s/√n, i.e. 1.70
  against 3.18 standard errors at n = 4. The expanded percentiles that
  :func:`analysis.rank.percentile_interval` uses mend that but give no interval below
  :data:`analysis.rank.MIN_PAIRS` values, which is where most ablations are; the t-interval
  has its nominal coverage at any n >= 2 when the differences are roughly normal. It is
  then clipped to the metric's range (:func:`analysis.rank.metric_range`: [0, 1] for
  AUROC, F1 and AUPRO, [-1, 1] for their differences); clipping removes only impossible
  values, so the coverage is unchanged, and the interval is shown as ``+a/-b`` where it
  became asymmetric.

Example:
    >>> from analysis import ablation_paper_table, format_ablation_table, load_results
    >>> table = ablation_paper_table(load_results("raysearch-results/distcon-ablation"))  # doctest: +SKIP
    >>> format_ablation_table(table)                                                # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import prepare
from analysis.rank import metric_range, t_interval
from raysearch.config.objective import DECIMALS

__all__ = [
    "ablation_table",
    "ablation_paper_table",
    "format_ablation_table",
    "ablation_latex",
    "ablation_caption",
    "variant_labels",
    "factor_labels",
    "paired_test",
    "holm",
    "format_interval",
    "latex_escape",
    "markdown_escape",
    "booktabs",
    "REFERENCE",
    "MIN_WILCOXON_PAIRS",
    "ALPHA",
]

REFERENCE = "full"  # the variant every factor is compared with
MIN_WILCOXON_PAIRS = 6  # fewer pairs: the signed-rank test cannot reach p < 0.05 (2/2^5 = 0.0625)
ALPHA = 0.05  # level of the `*` mark, applied to the Holm-corrected p-value
CELLS = ["seed", "normal_class"]  # one pair = one (seed, class) cell that both variants finished


def _difference_range(metric: str) -> tuple[float, float]:
    low, high = metric_range(metric)
    return low - high, high - low


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), in the input's order.

    With the m finite p-values sorted, p(1) <= ... <= p(m), the adjusted value of p(i) is
    max over j <= i of min(1, (m - j + 1)·p(j)): the running maximum keeps the order of the
    p-values, and rejecting where the adjusted p < alpha controls the family-wise error
    rate at alpha. NaN p-values (a factor without a test) stay NaN and do not count in m.

    Example:
        >>> holm([0.01, 0.04, 0.03]).round(4).tolist()
        [0.03, 0.06, 0.06]
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    m = int(finite.sum())
    if m == 0:
        return out
    order = np.argsort(p[finite], kind="stable")
    scaled = (m - np.arange(m)) * p[finite][order]  # (m - j + 1)·p(j) with j from 1
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    out[finite] = adjusted
    return out


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


def factor_labels(spec: Mapping[str, Any]) -> dict[str, str]:
    """The factors of a spec's ``ablations`` block in the spec's order, each with its name in
    reports: the factor's ``label`` where it gives one, else its name with underscores as
    spaces; ``full`` first.

    Example:
        >>> factor_labels({"ablations": {"factors": {"paste_not_swap": {"params.x": 1},
        ...                                          "no_gmm": {"label": "w/o GMM", "params.y": 0}}}})
        {'full': 'full', 'paste_not_swap': 'paste not swap', 'no_gmm': 'w/o GMM'}
    """
    factors = ((spec or {}).get("ablations") or {}).get("factors") or {}
    labels = {REFERENCE: REFERENCE}
    for name, entry in factors.items():
        label = entry.get("label") if isinstance(entry, Mapping) else None
        labels[str(name)] = str(label) if label else str(name).replace("_", " ")
    return labels


def _ablation_rows(df: pd.DataFrame, metrics: Sequence[str], confidence: float,
                   order: Sequence[str] = ()) -> tuple[pd.DataFrame, list[str]]:
    """The completed ablation rows and their variants (``full`` first, then the factors in
    ``order``, then any other in the order the rows name them), checked."""
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
    known = [v for v in order if v in variants and v != REFERENCE]
    return rows, [REFERENCE, *known, *[v for v in variants if v != REFERENCE and v not in known]]


def ablation_table(df: pd.DataFrame, metrics: Sequence[str] = ("val_image_auroc", "test_image_auroc"),
                   confidence: float = 0.95, order: Sequence[str] = ()) -> pd.DataFrame:
    """One row per ablated factor with its paired effect on each metric.

    For each metric ``m`` the columns are ``m_full`` and ``m_variant`` (the two means over
    the paired cells), ``m_effect`` (mean of variant - full), ``m_ci_low``/``m_ci_high``
    (Student-t interval at ``confidence``, clipped to the range of a difference, see
    :func:`analysis.rank.metric_range`), ``m_p_raw`` and ``m_pair_test`` (the paired test's p-value and
    name, see :func:`paired_test`), ``m_p_holm`` (Holm-corrected over the factors, per
    metric, see :func:`holm`) and ``m_n`` (pairs). ``m_p`` and ``m_test`` are copies of
    ``m_p_raw`` and ``m_pair_test`` under their old names. Rows come in ``order`` (the
    spec's factor order, :func:`factor_labels`), the same for every metric; factors it does
    not name follow in the order the rows name them.

    Raises ValueError when there are no completed ablation rows or no ``full`` rows.

    Example:
        >>> table = ablation_table(load_results("DIR"))            # doctest: +SKIP
        >>> table[["variant", "val_image_auroc_effect", "val_image_auroc_p_holm"]]  # doctest: +SKIP
    """
    rows, variants = _ablation_rows(df, metrics, confidence, order)
    out = pd.DataFrame({"variant": variants[1:]})
    for m in metrics:
        # (seed, class) x variant; duplicates of a cell (a rerun) are averaged.
        wide = rows.pivot_table(index=CELLS, columns="variant", values=m, aggfunc="mean")
        low, high = _difference_range(m)
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
                f"{m}_effect": mean, f"{m}_ci_low": float(np.clip(lo[0], low, high)),
                f"{m}_ci_high": float(np.clip(hi[0], low, high)),
                f"{m}_p_raw": p, f"{m}_p_holm": math.nan, f"{m}_pair_test": test, f"{m}_n": n,
            })
        names = [f"{m}_{c}" for c in ("full", "variant", "effect", "ci_low", "ci_high", "p_raw", "p_holm",
                                       "pair_test", "n")]
        block = pd.DataFrame(stats_rows, index=out.index, columns=names)
        block[f"{m}_p_holm"] = holm(block[f"{m}_p_raw"].to_numpy(float))
        out = pd.concat([out, block], axis=1)
    return out


def ablation_paper_table(df: pd.DataFrame, metric: str = "val_image_auroc", confidence: float = 0.95,
                         alpha: float = ALPHA, order: Sequence[str] = (),
                         labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The ablation table of a paper for one metric: the full model first, then each factor.

    Columns: ``variant``; ``n`` (the variant's (seed, class) runs), ``mean``,
    ``ci_low``/``ci_high`` (Student-t over those runs, so it holds class-to-class as well as
    seed-to-seed spread, clipped to :func:`analysis.rank.metric_range`); ``delta``,
    ``delta_ci_low``/``delta_ci_high`` and ``n_pairs`` (variant - full, paired over the
    (seed, class) cells both finished; see :func:`ablation_table`); ``p_raw`` and
    ``pair_test`` (the paired test), ``p_holm`` (Holm over the factors) and ``significant``
    (``p_holm < alpha``); ``label``, the variant's name in reports (``labels``, else the
    identifier with underscores as spaces). The full model's delta and p cells are NaN.
    Factors follow in ``order`` (the spec's, see :func:`ablation_table`), so the tables of
    every metric list them alike. ``table.attrs`` keeps ``metric``, ``confidence``,
    ``alpha`` and ``factors`` for the writers.

    Example:
        >>> table = ablation_paper_table(load_results("DIR"), "test_image_auroc")  # doctest: +SKIP
        >>> table[["variant", "mean", "delta", "p_holm", "significant"]]            # doctest: +SKIP
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), but got {alpha=}.")
    rows, variants = _ablation_rows(df, [metric], confidence, order)
    effects = ablation_table(rows, [metric], confidence, order).set_index("variant")
    labels = labels or {}
    low, high = metric_range(metric)
    cells = rows.groupby(["variant", *CELLS])[metric].mean()  # a rerun of a cell counts once
    out = []
    for v in [REFERENCE, *effects.index]:
        values = cells.loc[v].dropna().to_numpy(float) if v in cells.index.get_level_values(0) else np.array([])
        n = len(values)
        mean = values.mean() if n else math.nan
        std = values.std(ddof=1) if n >= 2 else math.nan
        lo, hi = t_interval(np.array([mean]), np.array([std]), np.array([n]), confidence)
        row = {"variant": v, "label": labels.get(v) or v.replace("_", " "), "n": n, "mean": mean, "ci_low": float(np.clip(lo[0], low, high)),
               "ci_high": float(np.clip(hi[0], low, high)), "delta": math.nan, "delta_ci_low": math.nan,
               "delta_ci_high": math.nan, "n_pairs": 0, "p_raw": math.nan, "p_holm": math.nan,
               "pair_test": "", "significant": False}
        if v != REFERENCE:
            e = effects.loc[v]
            row.update({"delta": e[f"{metric}_effect"], "delta_ci_low": e[f"{metric}_ci_low"],
                        "delta_ci_high": e[f"{metric}_ci_high"], "n_pairs": int(e[f"{metric}_n"]),
                        "p_raw": e[f"{metric}_p_raw"], "p_holm": e[f"{metric}_p_holm"],
                        "pair_test": e[f"{metric}_pair_test"],
                        "significant": bool(e[f"{metric}_p_holm"] < alpha)})
        out.append(row)
    table = pd.DataFrame(out)
    table.attrs.update(metric=metric, confidence=confidence, alpha=alpha, factors=len(out) - 1)
    return table


def format_interval(mean: float, low: float | None, high: float | None, digits: int = DECIMALS, *,
                    signed: bool = False, latex: bool = False) -> str:
    """``mean ± half-width`` (``0.912 ± 0.013``), ``mean +a/-b`` where the interval is
    asymmetric at ``digits`` places (clipped to the metric's range), the mean alone without
    an interval, ``n/a`` without a mean. ``latex``: numbers in text mode (so ``\\textbf``
    bolds them) with ``$\\pm$``, ``$^{+a}_{-b}$`` and ``$-$``.

    Example:
        >>> format_interval(0.912, 0.899, 0.925), format_interval(0.995, 0.985, 1.0)
        ('0.912 ± 0.013', '0.995 +0.005/-0.010')
        >>> print(format_interval(-0.05, -0.06, -0.04, signed=True, latex=True))
        $-$0.050 $\\pm$ 0.010
    """
    if mean is None or not np.isfinite(mean):
        return "n/a"
    m = f"{mean:{'+' if signed else ''}.{digits}f}"
    if latex:
        m = m.replace("-", "$-$").replace("+", "$+$")  # a minus sign, not a hyphen
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return m
    up, down = round(high - mean, digits), round(mean - low, digits)
    if up == down:
        return f"{m} $\\pm$ {up:.{digits}f}" if latex else f"{m} ± {up:.{digits}f}"
    if latex:
        return f"{m}$^{{+{up:.{digits}f}}}_{{-{down:.{digits}f}}}$"
    return f"{m} +{up:.{digits}f}/-{down:.{digits}f}"


def _format_p(p: float, latex: bool = False) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    if p < 0.001:
        return "$<$0.001" if latex else "<0.001"
    return f"{p:.3f}"


def _meta(table: pd.DataFrame, metric: str | None, confidence: float | None) -> tuple[str, float, float]:
    metric = metric or table.attrs.get("metric")
    if metric is None:
        raise ValueError("metric is not known: pass metric= or a table from ablation_paper_table")
    return metric, confidence or table.attrs.get("confidence", 0.95), table.attrs.get("alpha", ALPHA)


def format_ablation_table(table: pd.DataFrame, metric: str | None = None, digits: int = DECIMALS,
                          confidence: float | None = None) -> pd.DataFrame:
    """:func:`ablation_paper_table`'s output as six text columns, for Markdown and the console:
    ``variant`` (its label), ``n`` (runs), ``<metric> (mean ± 95% CI)``, ``Δ vs full (± 95%
    CI)``, ``p_holm``, ``p_holm < 0.05`` (``*`` where ``p_holm`` < alpha). The full model's
    last three cells are empty.

    Example:
        >>> from analysis.report import markdown_table
        >>> print(markdown_table(format_ablation_table(table)))    # doctest: +SKIP
    """
    metric, confidence, alpha = _meta(table, metric, confidence)
    level = f"{confidence:.0%} CI"
    out = []
    for r in table.itertuples(index=False):
        full = r.variant == REFERENCE
        out.append([_label(r), str(int(r.n)), format_interval(r.mean, r.ci_low, r.ci_high, digits),
                    "" if full else format_interval(r.delta, r.delta_ci_low, r.delta_ci_high, digits, signed=True),
                    "" if full else _format_p(r.p_holm),
                    "*" if not full and np.isfinite(r.p_holm) and r.p_holm < alpha else ""])
    return pd.DataFrame(out, columns=["variant", "n", f"{metric} (mean ± {level})", f"Δ vs full (± {level})",
                                      "p_holm", f"p_holm < {alpha:g}"])


def _label(row: Any) -> str:
    """A variant's name in a table: its ``label`` where the table has one, else its identifier."""
    label = getattr(row, "label", None)
    return str(label) if isinstance(label, str) and label else str(row.variant)


def ablation_caption(table: pd.DataFrame, metric: str | None = None, confidence: float | None = None) -> str:
    """One paragraph saying what :func:`ablation_paper_table`'s numbers are: runs, pairs,
    intervals, tests and the correction.

    Example:
        >>> ablation_caption(table)                                  # doctest: +SKIP
        'val_image_auroc of the full model and each factor: mean ± 95% Student-t interval ...'
    """
    metric, confidence, alpha = _meta(table, metric, confidence)
    factors = table[table["variant"] != REFERENCE]
    pairs = sorted(set(int(n) for n in factors["n_pairs"]))
    n_pairs = "no" if not pairs else str(pairs[0]) if len(pairs) == 1 else f"{pairs[0]}-{pairs[-1]}"
    runs = sorted(set(int(n) for n in table["n"]))
    n_runs = str(runs[0]) if len(runs) == 1 else f"{runs[0]}-{runs[-1]}"
    tests = sorted(set(factors["pair_test"]) - {"", "none"})
    test = {"wilcoxon": "Wilcoxon signed-rank", "ttest_rel": "paired t-test"}
    low, high = metric_range(metric)
    clipped = f", clipped to [{low:g}, {high:g}]" if np.isfinite(high) else ""
    return (f"{metric} of the full model and each factor: mean ± {confidence:.0%} Student-t interval over "
            f"{n_runs} (seed, class) runs{clipped}. Δ = variant − full, the mean paired difference over the "
            f"{n_pairs} (seed, class) pairs both finished, with its {confidence:.0%} interval. p: "
            f"{' / '.join(test.get(t, t) for t in tests) or 'no test'} of the pairs, Holm-corrected over "
            f"the {len(factors)} factor(s) (p_holm); * p_holm < {alpha:g}.")


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}


def latex_escape(text: object) -> str:
    """``text`` with LaTeX's special characters escaped.

    Example:
        >>> latex_escape("no_gmm & 5%")
        'no\\\\_gmm \\\\& 5\\\\%'
    """
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


_MARKDOWN_SPECIAL = set("\\|<>*`[]")


def markdown_escape(text: object) -> str:
    """``text`` with the characters that Markdown (and HTML inside it) would read as markup
    escaped by a backslash: ``\\ | < > * ` [ ]``.

    Example:
        >>> print(markdown_escape("a|b <i>*x*</i>"))
        a\\|b \\<i\\>\\*x\\*\\</i\\>
    """
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in str(text))


def booktabs(header: Sequence[str], rows: Sequence[Sequence[str]], align: str,
             rules_after: Sequence[int] = ()) -> str:
    """A booktabs ``tabular`` (``\\toprule``, ``\\midrule``, ``\\bottomrule``) of cells that
    are already LaTeX (escape text with :func:`latex_escape`); ``rules_after``: row indices
    followed by a ``\\midrule``. Needs ``\\usepackage{booktabs}``.

    Example:
        >>> print(booktabs(["a", "b"], [["1", "2"]], "lr"))
        \\begin{tabular}{lr}
        \\toprule
        a & b \\\\
        \\midrule
        1 & 2 \\\\
        \\bottomrule
        \\end{tabular}
    """
    if len(align) != len(header) or any(len(r) != len(header) for r in rows):
        raise ValueError(f"expected {len(header)} cells per row and alignment {align!r} to match")
    lines = [f"\\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    for i, r in enumerate(rows):
        lines.append(" & ".join(r) + r" \\")
        if i in rules_after and i < len(rows) - 1:
            lines.append(r"\midrule")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


_PRETTY = {"auroc": "AUROC", "aupro": "AUPRO", "f1": "F1", "max": "max", "val": "val.", "test": "test"}


def _pretty_metric(metric: str) -> str:
    """``val_image_auroc`` -> ``val. image AUROC`` (a column header in a paper)."""
    words = metric.split("_")
    return latex_escape(" ".join(_PRETTY.get(w, w) for w in words).replace("F1 max", "F1-max"))


def ablation_latex(table: pd.DataFrame, metric: str | None = None, digits: int = DECIMALS,
                   confidence: float | None = None) -> str:
    """:func:`ablation_paper_table`'s output as a six-column booktabs ``tabular`` that fits one
    column of a two-column paper: Variant | n | mean ± CI | Δ vs full | p (Holm) | ``*``, the
    full model first and ruled off, mean ± CI as ``0.912 $\\pm$ 0.013``. Needs
    ``\\usepackage{booktabs}``; the first line is a comment with :func:`ablation_caption`.

    Example:
        >>> print(ablation_latex(table))                             # doctest: +SKIP
    """
    metric, confidence, alpha = _meta(table, metric, confidence)
    header = ["Variant", "$n$", _pretty_metric(metric), r"$\Delta$ vs full", r"$p_{\mathrm{Holm}}$",
              rf"$p_{{\mathrm{{Holm}}}} < {alpha:g}$"]
    rows = []
    for r in table.itertuples(index=False):
        full = r.variant == REFERENCE
        rows.append([latex_escape(_label(r)), str(int(r.n)),
                     format_interval(r.mean, r.ci_low, r.ci_high, digits, latex=True),
                     "" if full else format_interval(r.delta, r.delta_ci_low, r.delta_ci_high, digits,
                                                     signed=True, latex=True),
                     "" if full else _format_p(r.p_holm, latex=True),
                     "$^{*}$" if not full and np.isfinite(r.p_holm) and r.p_holm < alpha else ""])
    caption = ablation_caption(table, metric, confidence).replace("\n", " ")
    return f"% {caption}\n" + booktabs(header, rows, "lrcccc", rules_after=[0])


def variant_labels(df: pd.DataFrame) -> dict[str, str]:
    """``config_key`` -> variant name of an ablation's rows, so tables keyed by configuration
    (the ranking, the per-class table) can show names instead of hashes. Two variants with
    the same configuration (a factor that sets the base's own value) share one label,
    ``a / b``.

    Example:
        >>> ranking["config_key"].map(variant_labels(df))            # doctest: +SKIP
    """
    df = prepare(df)
    rows = df[(df["kind"] == "ablate") & df["variant"].notna()]
    names = rows.groupby("config_key", sort=False)["variant"].agg(
        lambda s: " / ".join(dict.fromkeys(map(str, s))))
    return {str(k): v for k, v in names.items()}
