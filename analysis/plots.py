"""Figures for a report: each function draws one PNG at ``path`` and returns that path.

Figures are drawn with matplotlib's object API on the Agg canvas (``Figure`` +
``FigureCanvasAgg``), not through pyplot: no display is needed, no global backend is
switched (a notebook's inline backend stays as it is) and nothing is left open.
matplotlib is imported when a figure is drawn, not when ``analysis`` is imported.

Example:
    >>> from analysis import load_results, rank_configs, plots
    >>> plots.plot_history(load_results("/tmp/tdemo"), "history.png")   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.rank import history_table
from raysearch.config.objective import format_metric

__all__ = ["plot_history", "plot_importance", "plot_ablation", "plot_per_class", "plot_pareto", "plot_fidelity",
           "plot_ranking", "ranking_label", "ranking_title"]

DPI = 120  # dots per inch of the saved PNGs
MAX_RANKING_ROWS = 20  # configurations drawn in the ranking plot (the table has all)
MAX_HEATMAP_ROWS = 30  # configurations shown in the per-class heatmap (the table has all)
MAX_ANNOTATED_CELLS = 400  # above this the heatmap cells carry no printed value


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _legend_below(fig, axes: Sequence[Any], fontsize: int = 8, ncols: int = 4) -> None:
    """One legend for ``axes`` below the plots (each label once, at most ``ncols`` a row), so
    it covers no data."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center",
                   ncols=min(len(entries), ncols), fontsize=fontsize)


def plot_history(source: Any, path: str | Path, metric: str = "val_image_auroc", mode: str = "max") -> Path:
    """Objective per completed trial in trial order, with the best-so-far line.

    ``source``: a results DataFrame or an Optuna study (see
    :func:`analysis.rank.history_table`). Pruned and failed trials are ticked along the
    bottom edge so the reader sees how many trials the search spent on them.
    """
    table = history_table(source, metric, mode)
    done = table[table["status"] == "completed"]
    other = table[table["status"] != "completed"]
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot()
    ax.plot(done["order"], done["value"], "o", color="tab:blue", label=f"completed trial ({len(done)})")
    ax.step(table["order"], table["best_so_far"], where="post", color="tab:orange", lw=2, label="best so far")
    if len(other):
        ax.plot(other["order"], np.full(len(other), 0.02), "|", color="tab:gray", ms=12,
                transform=ax.get_xaxis_transform(), label=f"pruned or failed ({len(other)})")
    ax.set_xlabel("trial (in order started)")
    ax.set_ylabel(f"{metric} (mean over classes)")
    ax.set_title(f"Optimisation history: {metric} ({mode})")
    ax.grid(alpha=0.3)
    _legend_below(fig, [ax], fontsize=9)
    return _save(fig, path)


def plot_importance(importance: pd.DataFrame, path: str | Path) -> Path:
    """Horizontal bars of each parameter's importance, one bar per evaluator.

    ``importance``: :func:`analysis.importance.param_importance`'s table, or
    :func:`analysis.importance.compare_importance`'s (its evaluator columns are drawn and a
    parameter the evaluators disagree on is marked "(disagree)").
    """
    from analysis.importance import EVALUATORS

    if importance.empty:
        raise ValueError("no importances to plot (the table is empty)")
    params = list(importance.index)[::-1]  # most important at the top
    evaluators = [c for c in importance.columns if c in EVALUATORS] or list(importance.columns)
    flagged = importance["disagree"] if "disagree" in importance.columns else pd.Series(False, importance.index)
    fig = _figure(7.5, 1.2 + 0.45 * len(params) * max(1, len(evaluators) / 2))
    ax = fig.add_subplot()
    height = 0.8 / len(evaluators)
    y = np.arange(len(params))
    for i, name in enumerate(evaluators):
        ax.barh(y + (i - (len(evaluators) - 1) / 2) * height, importance.loc[params, name], height,
                label=name)
    ax.set_yticks(y, [f"{p} (disagree)" if flagged[p] else str(p) for p in params])
    ax.set_xlabel("normalised importance (sums to 1 per evaluator)")
    ax.set_title("Hyperparameter importance")
    ax.grid(axis="x", alpha=0.3)
    _legend_below(fig, [ax], fontsize=9)
    return _save(fig, path)


def ranking_label(row: Any) -> str:
    """A configuration's label in figures: "rank. trial_id (#Optuna number)", the number where
    known; "rank. variant" for an ablation's variant (a ``variant`` entry that is set).

    Example:
        >>> ranking_label({"rank": 1, "trial_id": "a1_00004", "optuna_trial": 4})
        '1. a1_00004 (#4)'
    """
    variant = row.get("variant") if hasattr(row, "get") else None
    if isinstance(variant, str) and variant:
        return f"{int(row['rank'])}. {variant}"
    number = row["optuna_trial"]
    known = number is not None and not pd.isna(number)
    return f"{int(row['rank'])}. {row['trial_id']}" + (f" (#{int(number)})" if known else "")


def _intervals(shown: pd.DataFrame, low: str, high: str) -> np.ndarray:
    """Which rows of ``shown`` have an interval between columns ``low`` and ``high`` to draw."""
    return np.isfinite(shown[low].to_numpy(float)) & np.isfinite(shown[high].to_numpy(float))


def ranking_title(table: pd.DataFrame, metric: str = "val_image_auroc", confidence: float = 0.95,
                  max_rows: int = MAX_RANKING_ROWS) -> str:
    """The title of :func:`plot_ranking`'s figure: it names intervals only where the figure
    draws some, and says why there are none otherwise.

    Example:
        >>> t = pd.DataFrame({"ci_low": [np.nan], "ci_high": [np.nan], "diff_ci_low": [np.nan],
        ...                   "diff_ci_high": [np.nan]})
        >>> ranking_title(t, "val_image_auroc")
        'Ranking by val_image_auroc (no intervals: fewer than 5 cells per configuration)'
    """
    from analysis.rank import MIN_PAIRS

    shown = table.iloc[:max_rows]
    drawn = _intervals(shown, "ci_low", "ci_high") | _intervals(shown, "diff_ci_low", "diff_ci_high")
    more = f"; best {len(shown)} of {len(table)}" if len(table) > len(shown) else ""
    if drawn.all():
        return f"Ranking by {metric} with {confidence:.0%} bootstrap intervals{more}"
    if drawn.any():
        return (f"Ranking by {metric} with {confidence:.0%} bootstrap intervals where a configuration has "
                f"{MIN_PAIRS} or more cells{more}")
    return f"Ranking by {metric} (no intervals: fewer than {MIN_PAIRS} cells per configuration){more}"


def plot_ranking(table: pd.DataFrame, path: str | Path, metric: str = "val_image_auroc",
                 confidence: float = 0.95, max_rows: int = MAX_RANKING_ROWS) -> Path:
    """The ranking (:func:`analysis.rank.rank_configs`'s output) with its intervals, best at the top.

    Left: each configuration's mean with its bootstrap interval over runs. Right: the
    paired difference to rank 1 with its interval (the headline: class difficulty
    cancels out); the dashed line is rank 1. A hollow marker has no interval (fewer
    than :data:`analysis.rank.MIN_PAIRS` values, or rank 1 itself); incomplete
    configurations are drawn in grey. The first ``max_rows`` rows are drawn.
    """
    if table.empty:
        raise ValueError("no configurations to plot (the ranking is empty)")
    shown = table.iloc[:max_rows].iloc[::-1]  # best at the top
    y = np.arange(len(shown))
    labels = [ranking_label(r) for _, r in shown.iterrows()]
    complete = shown["complete"].astype(bool).to_numpy()
    fig = _figure(10.0, 1.6 + 0.32 * len(shown))
    axes = fig.subplots(1, 2, sharey=True)
    panels = (("mean", "ci_low", "ci_high", f"{metric} (mean over classes and seeds)"),
              ("diff", "diff_ci_low", "diff_ci_high", f"Δ {metric} to rank 1 (paired over (class, seed) cells)"))
    for ax, (col, low, high, xlabel) in zip(axes, panels, strict=True):
        centre = shown[col].to_numpy(float)
        lo, hi = shown[low].to_numpy(float), shown[high].to_numpy(float)
        has = _intervals(shown, low, high)
        for mask, colour, what in ((complete, "tab:blue", "complete"), (~complete, "tab:gray", "incomplete")):
            m = mask & has
            if m.any():
                ax.errorbar(centre[m], y[m], xerr=np.vstack([centre[m] - lo[m], hi[m] - centre[m]]), fmt="o",
                            color=colour, capsize=3, ms=5, label=f"{what}, with interval")
            m = mask & ~has
            if m.any():
                ax.plot(centre[m], y[m], "o", mfc="white", color=colour, ms=5, label=f"{what}, no interval")
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[1].axvline(0.0, color="tab:red", ls="--", lw=1, label="rank 1")
    _legend_below(fig, axes)
    axes[0].set_yticks(y, labels, fontsize=8)
    fig.suptitle(ranking_title(table, metric, confidence, max_rows))
    return _save(fig, path)


def plot_ablation(table: pd.DataFrame, path: str | Path, metrics: Sequence[str] | None = None,
                  labels: dict[str, str] | None = None) -> Path:
    """Each factor's effect (variant - full) with its confidence interval, one panel per metric.

    ``table`` is :func:`analysis.ablation.ablation_table`'s output; ``metrics`` default to
    every metric it holds; ``labels`` name the variants (default: the identifier with
    underscores as spaces). The factors keep the table's order, the first at the top. Each
    bar is labelled with its number of pairs and p-value (Holm-corrected over the factors
    where the table has it, ``p_holm``).
    """
    if metrics is None:
        metrics = [c[: -len("_effect")] for c in table.columns if c.endswith("_effect")]
    if table.empty or not metrics:
        raise ValueError("no ablation effects to plot (the table is empty)")
    variants = list(table["variant"])[::-1]  # the first factor at the top
    rows = table.set_index("variant").loc[variants]
    fig = _figure(4.8 * len(metrics), 1.8 + 0.6 * len(variants))
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    y = np.arange(len(variants))
    for ax, m in zip(axes, metrics, strict=True):
        effect = rows[f"{m}_effect"].to_numpy(float)
        err = np.vstack([effect - rows[f"{m}_ci_low"].to_numpy(float),
                         rows[f"{m}_ci_high"].to_numpy(float) - effect])
        ax.errorbar(effect, y, xerr=np.nan_to_num(err), fmt="o", color="tab:blue", capsize=4)
        ax.axvline(0.0, color="tab:gray", lw=1)
        p_col = next(c for c in (f"{m}_p_holm", f"{m}_p_raw", f"{m}_p") if c in rows.columns)
        p_name = "p_holm" if p_col.endswith("_p_holm") else "p"
        for yi, (e, n, p) in enumerate(zip(effect, rows[f"{m}_n"], rows[p_col], strict=True)):
            if np.isfinite(e):
                ax.annotate(f"n={n}, {p_name}={p:.2g}", (e, yi), xytext=(0, 7), textcoords="offset points",
                            ha="center", fontsize=8)
        ax.set_yticks(y, [(labels or {}).get(v) or str(v).replace("_", " ") for v in variants])
        ax.set_xlabel(f"Δ {m} (variant − full)")
        ax.set_title(m)
        ax.grid(axis="x", alpha=0.3)
        ax.margins(y=0.3)  # room for the n/p labels above the top bar
    fig.suptitle("Ablation effects with confidence intervals")
    return _save(fig, path)


def plot_per_class(table: pd.DataFrame, path: str | Path, metric: str = "val_image_auroc",
                   max_rows: int = MAX_HEATMAP_ROWS) -> Path:
    """Heatmap of configurations x classes (:func:`analysis.rank.per_class_table`'s output).

    The first ``max_rows`` rows are drawn (the table is ordered best first); empty cells
    (unfinished classes) are blank and marked n/a where the cells carry values.
    """
    if table.empty:
        raise ValueError("no per-class values to plot (the table is empty)")
    shown = table.iloc[:max_rows]
    values = shown.to_numpy(dtype=float)
    n_rows, n_cols = values.shape
    fig = _figure(min(max(5.0, 3.0 + 0.8 * n_cols), 16), min(max(2.8, 1.6 + 0.4 * n_rows), 14))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap="viridis")
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_xticks(np.arange(n_cols), [str(c) for c in shown.columns], rotation=45 if n_cols > 8 else 0)
    ax.set_yticks(np.arange(n_rows), [str(r) for r in shown.index])
    ax.set_xlabel("normal class")
    ax.set_ylabel(str(table.index.name or "configuration"))
    if values.size <= MAX_ANNOTATED_CELLS:
        finite = values[np.isfinite(values)]
        middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, format_metric(v), ha="center", va="center", fontsize=8,
                        color="black" if v > middle else "white")
            else:  # a class the configuration did not finish
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=8, color="tab:gray")
    more = f" (best {n_rows} of {len(table)})" if len(table) > n_rows else ""
    ax.set_title(f"{metric} per class{more}")
    return _save(fig, path)


def plot_pareto(study_or_source: Any, path: str | Path, metrics: Sequence[str] | None = None,
                study_name: str | None = None) -> Path:
    """Completed trials of a multi-objective study on its first two objectives, front highlighted."""
    from analysis.importance import completed_trials, load_study, objective_names

    study = load_study(study_or_source, study_name)
    if len(study.directions) < 2:
        raise ValueError(f"study {study.study_name!r} has one objective; a Pareto plot needs two or more")
    names = list(metrics) if metrics else objective_names(study)
    every = np.array([t.values[:2] for t in completed_trials(study)], dtype=float).reshape(-1, 2)
    front = np.array([t.values[:2] for t in study.best_trials], dtype=float).reshape(-1, 2)
    front = front[np.argsort(front[:, 0])]
    fig = _figure(6.5, 4.8)
    ax = fig.add_subplot()
    ax.plot(every[:, 0], every[:, 1], "o", color="tab:gray", alpha=0.5, label=f"completed trial ({len(every)})")
    ax.plot(front[:, 0], front[:, 1], "o-", color="tab:red", label=f"Pareto front ({len(front)})")
    directions = [d.name.lower()[:3] for d in study.directions]
    ax.set_xlabel(f"{names[0]} ({directions[0]})")
    ax.set_ylabel(f"{names[1]} ({directions[1]})")
    extra = f"; {len(names) - 2} more objectives not shown" if len(names) > 2 else ""
    ax.set_title(f"Pareto front{extra}")
    ax.grid(alpha=0.3)
    _legend_below(fig, [ax], fontsize=9)
    return _save(fig, path)


def plot_fidelity(df_or_result: Any, path: str | Path, objective: str = "val_image_auroc",
                  test_metric: str = "test_image_auroc", mode: str = "max") -> Path:
    """Class-mean objective (x) vs class-mean ``test_metric`` (y), one point per complete config.

    ``df_or_result``: a results DataFrame (passed to
    :func:`analysis.fidelity.selection_fidelity` with ``objective`` and ``mode``) or a
    :class:`analysis.fidelity.FidelityResult` (its own objective is used). The configuration
    the objective picked is drawn as a red star and labelled; the title gives Spearman's rho
    with its interval and the regret. A diagnostic on test labels, never used to select.
    """
    from analysis.fidelity import FidelityResult, selection_fidelity

    if isinstance(df_or_result, FidelityResult):
        result = df_or_result
    else:
        result = selection_fidelity(df_or_result, objective, mode, test_metrics=[test_metric])
    if not result.computed:
        raise ValueError(f"no selection fidelity to plot: {result.reason}")
    rows = result.table.set_index("test_metric")
    if test_metric not in rows.index:
        raise ValueError(f"no selection fidelity for {test_metric}; computed for {', '.join(rows.index)}")
    stats = rows.loc[test_metric]
    configs = result.configs
    shown = configs[np.isfinite(configs[test_metric].to_numpy(float))]
    picked = shown[shown["picked"]]
    others = shown[~shown["picked"]]
    fig = _figure(6.5, 4.8)
    ax = fig.add_subplot()
    ax.plot(others[result.objective], others[test_metric], "o", color="tab:blue", alpha=0.7,
            label=f"complete configuration ({len(shown)})")
    if len(picked):
        x, y = float(picked[result.objective].iloc[0]), float(picked[test_metric].iloc[0])
        ax.plot([x], [y], "*", color="tab:red", ms=16, label="picked by the objective")
        # The pick sits at the best end of the x axis: write its label towards the middle.
        right = result.mode == "max"
        ax.annotate(f"picked {picked['trial_id'].iloc[0]}", (x, y), xytext=(-10 if right else 10, 8),
                    textcoords="offset points", ha="right" if right else "left", fontsize=8, color="tab:red")
    ax.axhline(stats["best_test"], color="tab:gray", ls="--", lw=1, label="best test value")
    ax.set_xlabel(f"{result.objective} (mean over classes; {result.mode} is best)")
    ax.set_ylabel(f"{test_metric} (mean over classes; not used to select)")
    ci = (f" [{stats['spearman_ci_low']:.2f}, {stats['spearman_ci_high']:.2f}]"
          if np.isfinite(stats["spearman_ci_low"]) else "")
    ax.set_title(f"Selection fidelity (diagnostic): Spearman {stats['spearman']:.2f}{ci}, "
                 f"regret {format_metric(stats['regret'])}", fontsize=10)
    ax.margins(x=0.08, y=0.1)
    ax.grid(alpha=0.3)
    _legend_below(fig, [ax], fontsize=9)
    return _save(fig, path)
