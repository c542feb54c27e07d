"""A self-contained report of one experiment folder: Markdown, HTML, CSV, LaTeX and PNGs.

:func:`write_report` reads ``DIR/results`` (and ``DIR/spec.yaml``, ``DIR/optuna.db`` where
present) and writes one folder holding ``report.md`` (the PNGs beside it, by file name),
``report.html`` (self-contained: inline CSS, every figure inlined as a ``data:`` URI, no
reference to any file or address, so it can be sent alone), one ``<table>.csv`` and
``<table>.tex`` per table, and the figures. It works for a plain ``raysearch train``
folder (one configuration), a sweep and an ablation; sections that do not apply say why.
The bootstrap intervals are seeded (:data:`analysis.rank.BOOTSTRAP_SEED`), so the same
folder gives the same numbers.

Example:
    >>> from analysis import write_report
    >>> write_report("/tmp/tdemo", out="/tmp/tdemo-report")     # doctest: +SKIP
    PosixPath('/tmp/tdemo-report')
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import plots
from analysis.ablation import (
    ablation_caption,
    ablation_latex,
    ablation_paper_table,
    ablation_table,
    booktabs,
    factor_labels,
    format_ablation_table,
    latex_escape,
    markdown_escape,
)
from analysis.confidence import sweep_confidence
from analysis.fidelity import MIN_CONFIGS, fidelity_line, selection_fidelity
from analysis.importance import (
    DISAGREE_RANK_GAP,
    DISAGREE_SHARE_GAP,
    MIN_TRIALS,
    compare_importance,
    completed_trials,
    load_study,
    param_importance,
    pareto_front,
    trial_counts,
)
from analysis.load import load_results, load_spec, objective
from analysis.rank import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    MIN_PAIRS,
    TIE_DECIMALS,
    per_class_table,
    rank_configs,
    trial_table,
)
from raysearch.config.objective import format_metric

__all__ = ["write_report", "latex_table", "markdown_table"]

TOP_ROWS = 20  # rows of a long table shown in the report; the CSV and .tex files hold all
MAX_FAILURES = 20  # failed runs listed with their reason
MAX_REASON_CHARS = 160  # characters of a failure reason shown (the result rows keep it whole)
TRIAL_STATUSES = ("completed", "pruned", "failed", "unfinished")
# Columns of rank_configs left out of the report's ranking table (ranking_all.csv has them).
RANKING_HIDDEN = ("std", "ci_low", "ci_high", "max_classes", "n_trials", "trial_ids", "config_key")
FIDELITY_SHOWN = ["test_metric", "spearman", "spearman_ci_low", "spearman_ci_high", "regret", "n"]  # result first
LATEX_ROWS = 10  # configurations in ranking.tex: a table that fits a page
TIE_RULE = (f"equal means (to {TIE_DECIMALS} decimals) are ordered by Optuna number, the configuration found first ranking "
            "higher, then by trial id; the console, export and compare use the same order.")

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #eee; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: .6em 0; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
td.text { white-space: normal; text-align: left; }  /* prose cells wrap; figures never do */
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
p.note { color: #555; font-size: 14px; }
"""


@dataclass
class _Section:
    """A report section: blocks of ("text", str), ("table", name, DataFrame, caption,
    metric_values, tex, csv) or ("image", file name, alt text), rendered alike into Markdown and
    HTML. A table's files hold every row; the page shows the first :data:`TOP_ROWS`.
    ``metric_values``: every number of the table is a metric value (4 decimals); ``tex``:
    the ``.tex`` file's text where the table has its own (else a plain tabular); ``csv``: the
    ``.csv`` file's table where it differs from the one shown (numbers where the page shows text)."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def text(self, s: str) -> None:
        self.blocks.append(("text", s))

    def table(self, name: str, df: pd.DataFrame, caption: str = "", metric_values: bool = False,
              tex: str | None = None, csv: pd.DataFrame | None = None) -> None:
        """A table shown from ``df``; its files hold ``csv`` (default ``df``) and ``tex``."""
        if len(df) > TOP_ROWS:
            caption += f" Showing the first {TOP_ROWS} of {len(df)} rows; {name}.csv has all."
        self.blocks.append(("table", name, df, caption.strip(), metric_values, tex, csv))

    def image(self, file: str, alt: str) -> None:
        self.blocks.append(("image", file, alt))


# -- cell formatting and table writers -----------------------------------------------------
# Columns holding metric values or statistics of them: fixed 4 decimals, so they line up.
_FIXED = re.compile(r"mean|std|ci_low|ci_high|rank|effect|diff|_full$|_variant$|auroc|f1_max|aupro"
                    r"|spearman|kendall|regret|_test$|fanova|ped_anova")


def _cell(value, column: str = "") -> str:
    """A table cell as text: metrics to 4 decimals, p-values to 3 significant digits, other
    numbers (learning rates, latencies) to 4 significant digits, NaN as n/a."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        if re.search(r"(^|_)p(_raw|_holm)?$", column):  # p-values: 3 significant digits
            return f"{value:.3g}"
        return f"{value:.4f}" if _FIXED.search(column) else f"{value:.4g}"
    return str(value)


def _display(df: pd.DataFrame, metric_values: bool = False) -> pd.DataFrame:
    """``df`` as strings, index included as the first column(s); ``metric_values``: every
    float to 4 decimals (a table of metric values whose columns are, e.g., classes)."""
    flat = df.reset_index() if df.index.name or isinstance(df.index, pd.MultiIndex) else df
    return pd.DataFrame({str(c): [_cell(v, "mean" if metric_values else str(c)) for v in flat[c]]
                         for c in flat.columns})


def markdown_table(df: pd.DataFrame, metric_values: bool = False) -> str:
    """A GitHub-flavoured Markdown table of ``df`` (floats to 4 decimals, p-values to 3 digits;
    every cell and header escaped with :func:`analysis.ablation.markdown_escape`)."""
    cells = _display(df, metric_values)
    esc = markdown_escape
    lines = ["| " + " | ".join(esc(c) for c in cells.columns) + " |",
             "|" + "|".join("---" for _ in cells.columns) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines)


def latex_table(df: pd.DataFrame, metric_values: bool = False) -> str:
    """A plain LaTeX ``tabular`` of ``df`` (no packages needed; special characters escaped).

    Example:
        >>> print(latex_table(pd.DataFrame({"a_b": [0.5], "mean": [0.5]})))
        \\begin{tabular}{rr}
        \\hline
        a\\_b & mean \\\\
        \\hline
        0.5 & 0.5000 \\\\
        \\hline
        \\end{tabular}
    """
    cells = _display(df, metric_values)
    esc = latex_escape
    lines = [r"\begin{tabular}{" + "r" * len(cells.columns) + "}", r"\hline",
             " & ".join(esc(c) for c in cells.columns) + r" \\", r"\hline"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in cells.itertuples(index=False)]
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines)


def _html_table(df: pd.DataFrame, metric_values: bool = False) -> str:
    return ('<div class="scroll">' + _display(df, metric_values).to_html(index=False, escape=True, border=0)
            + "</div>")


# -- sections ------------------------------------------------------------------------------
def _overview(df: pd.DataFrame, spec: dict, metrics: list[str], modes: list[str], study) -> _Section:
    s = _Section("Overview")
    first = lambda col: markdown_escape(", ".join(sorted(map(str, df[col].dropna().unique()))) or "n/a")  # noqa: E731
    s.text(f"Method **{markdown_escape(spec.get('method') or '') or first('method')}** on **{first('dataset')}**; "
           f"experiment kinds: {first('kind')}; classes: {first('normal_class')}; seeds: {first('seed')}.")
    s.text("Objective: " + ", ".join(f"{m} ({d})" for m, d in zip(metrics, modes, strict=True))
           + f"; selection split: {first('selection_split')}. Test metrics are shown for reading only, "
           "never used to rank.")
    s.text(f"Code: raysearch {first('package_version')}, git commit {first('git_commit')}.")
    if not df.empty:
        _trial_counts(s, df, metrics[0], modes[0], study)
    counts = df.groupby(["kind", "status"], dropna=False).agg(runs=("trial_id", "size")).reset_index()
    s.table("runs", counts, "Result rows (one per trial and class) by experiment kind and row status; "
            "a trial's status is in the trials table.")
    return s


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{counts.get(k, 0)} {k}" for k in TRIAL_STATUSES)


def _trial_counts(s: _Section, df: pd.DataFrame, metric: str, mode: str, study) -> None:
    """The trials by status: one column per experiment kind of the rows (see
    :func:`analysis.rank.trial_table`) and, for a sweep, the Optuna study's. The study's
    counts are the ones stated; where the rows of kind tune count otherwise, it says so."""
    columns = {}
    for kind in sorted(df["kind"].dropna().unique()):
        trials = trial_table(df[df["kind"] == kind], metric, mode)
        columns[f"{kind} rows"] = trials["status"].value_counts().reindex(TRIAL_STATUSES, fill_value=0)
    study_counts = trial_counts(study) if study is not None else {}
    if study is not None:
        columns["Optuna study"] = pd.Series(study_counts).reindex(TRIAL_STATUSES, fill_value=0)
    if not columns:
        return
    table = pd.DataFrame(columns).astype(int)
    table.index.name = "status"
    if study is not None:
        counts = table["Optuna study"].to_dict()
        repeats = study_counts["repeats"]
        s.text(f"Trials of the sweep (Optuna study {study.study_name}, optuna.db): {_counts_text(counts)}."
               + (f" The sampler also proposed {repeats} config(s) already trained; each was told its earlier "
                  "value instead of being trained again (user attribute repeat_of)." if repeats else ""))
        rows = table.get("tune rows")
        if rows is None:
            s.text("No result row is of kind tune: the study's trials wrote no rows here.")
        elif rows.to_dict() != counts:
            s.text(f"**The result rows differ**: they hold {_counts_text(rows.to_dict())} trials of kind tune. "
                   "The study's counts are the ones to cite; a trial can fail before its first class writes "
                   "a row, and a trial still running has partial rows.")
    s.table("trials", table, "Trials by status: per experiment kind from the result rows (a trial failed if a "
            "class failed, was pruned if the scheduler stopped it, completed if every class completed)"
            + (", and from the Optuna study." if study is not None else "."))


def _trial_name(trial_id: Any, number: Any) -> str:
    """A trial as every table names it: its id and, where known, its Optuna number (``#11``)."""
    known = number is not None and not pd.isna(number)
    return f"{trial_id} (#{int(number)})" if known else str(trial_id)


def _difference(row: Any, latex: bool = False) -> str:
    """The difference to rank 1 with its interval, or the reason there is none."""
    if int(row["rank"]) == 1:
        return "rank 1"
    if not np.isfinite(row["diff"]):
        return "n/a (no shared cell)"
    diff = format_metric(row["diff"], signed=True)
    if np.isfinite(row["diff_ci_low"]):
        low, high = format_metric(row["diff_ci_low"], signed=True), format_metric(row["diff_ci_high"], signed=True)
        text = f"{diff} [{low}, {high}]"
    else:
        pairs = int(row["n_pairs"])
        text = f"{diff} (no interval: {pairs} pair{'' if pairs == 1 else 's'}, needs {MIN_PAIRS})"
    return text.replace("-", "$-$").replace("+", "$+$") if latex else text


def _test_column(ranking: pd.DataFrame, metric: str) -> str | None:
    """The test metric shown beside the objective: its counterpart where it has values."""
    found = [c for c in ranking.columns if c.startswith("test_") and c.endswith("_mean")]
    return found[0] if found else None


def ranking_results(ranking: pd.DataFrame, metric: str, confidence: float) -> pd.DataFrame:
    """The report's ranking table: the result columns only, as text, in this order: rank,
    trial (id and Optuna number), the objective's mean, the difference to rank 1 with its
    interval (or why there is none), n, the test metric; then ``complete`` (where a
    configuration is incomplete), ``seed_std`` (several seeds) and ``config_hash``. The
    searched parameters are :func:`ranking_params`'s table."""
    test = _test_column(ranking, metric)
    out = pd.DataFrame({
        "rank": ranking["rank"].astype(int).astype(str),
        "trial": [_trial_name(t, n) for t, n in zip(ranking["trial_id"], ranking["optuna_trial"], strict=True)],
        f"mean {metric}": ranking["mean"].map(format_metric),
        f"Δ to rank 1 ({confidence:.0%} CI)": [_difference(r) for _, r in ranking.iterrows()],
        "n": ranking["n"].astype(int).astype(str),
    })
    if test:
        out[test[: -len("_mean")]] = ranking[test].map(format_metric)
    if not ranking["complete"].astype(bool).all():
        out["complete"] = ranking["complete"].map(lambda c: "yes" if c else "no")
    if (ranking["n_seeds"] > 1).any():
        out["seed_std"] = ranking["seed_std"].map(format_metric)
    out["config_hash"] = ranking["config_hash"].fillna("n/a").astype(str)
    return out


def param_name(column: str) -> str:
    """A config key as a parameter column names it: ``params.gmm.components`` -> ``gmm.components``."""
    return column.removeprefix("params.")


def ranking_params(ranking: pd.DataFrame) -> pd.DataFrame:
    """The searched parameters of each ranked configuration (rank, trial, then the config keys
    that vary between configurations, named without ``params.``); no columns when none vary."""
    params = ranking.attrs.get("params", [])
    out = pd.DataFrame({"rank": ranking["rank"].astype(int),
                        "trial": [_trial_name(t, n) for t, n in zip(ranking["trial_id"], ranking["optuna_trial"],
                                                                     strict=True)]})
    for column in params:
        out[param_name(column)] = ranking[column].to_numpy()
    return out


def ranking_latex(ranking: pd.DataFrame, metric: str, confidence: float, top: int = LATEX_ROWS) -> str:
    """The first ``top`` configurations as a booktabs ``tabular`` that fits a page: rank, trial,
    mean, difference to rank 1 with its interval, n and the test metric (user strings
    escaped). Needs ``\\usepackage{booktabs}``; the first line is a comment saying what it holds."""
    shown = ranking.head(top)
    test = _test_column(ranking, metric)
    header = ["Rank", "Trial", latex_escape(f"mean {metric}"), latex_escape(f"Δ to rank 1 ({confidence:.0%} CI)")
              .replace("Δ", r"$\Delta$"), "$n$"]
    header += [latex_escape(test[: -len("_mean")])] if test else []
    rows = []
    for _, r in shown.iterrows():
        cells = [str(int(r["rank"])), latex_escape(_trial_name(r["trial_id"], r["optuna_trial"])),
                 format_metric(r["mean"]), latex_escape(_difference(r)).replace("-", "$-$").replace("+", "$+$"),
                 str(int(r["n"]))]
        cells += [format_metric(r[test])] if test else []
        rows.append(cells)
    more = f"; the first {len(shown)} of {len(ranking)}, ranking.csv has all" if len(ranking) > len(shown) else ""
    comment = (f"% Configurations ranked by mean {metric}{more}. Delta: paired difference to rank 1 over the "
               f"(class, seed) cells both finished, {confidence:.0%} percentile bootstrap interval.")
    return comment + "\n" + booktabs(header, rows, "rlrlr" + ("r" if test else ""))


def _ranking_summary(ranking: pd.DataFrame, metric: str, confidence: float) -> list[str]:
    best = ranking.iloc[0]
    n_seeds, n_classes = int(best["n_seeds"]), int(best["n_classes"])
    line = (f"Best configuration: trial `{_trial_name(best['trial_id'], best['optuna_trial'])}`, config "
            f"`{best['config_hash']}`: {metric} {format_metric(best['mean'])} over n = {int(best['n'])} runs "
            f"({n_classes} classes x {n_seeds} seed(s)).")
    if n_seeds > 1 and np.isfinite(best["seed_std"]):
        line += f" Seed-to-seed std of its class mean: {format_metric(best['seed_std'])}."
    test = _test_column(ranking, metric)
    if test and metric.startswith("val_"):
        line += f" Its {test[:-5]} is {format_metric(best[test])} (reported, not selected on)."
    if not best["complete"]:
        line += " Warning: no configuration finished every class; this one is incomplete."
    lines = [line]
    if len(ranking) > 1:
        second = ranking.iloc[1]
        verdict = ""
        if np.isfinite(second["diff_ci_low"]):
            verdict = ("; the interval excludes 0" if second["diff_ci_low"] > 0 or second["diff_ci_high"] < 0
                       else "; the interval includes 0: rank 1 and rank 2 are not separated")
        lines.append(f"Rank 2 (trial `{_trial_name(second['trial_id'], second['optuna_trial'])}`) differs from "
                     f"rank 1 by {_difference(second)} over {int(second['n_pairs'])} paired cell(s){verdict}.")
    if n_seeds == 1 and np.isfinite(ranking["diff_ci_low"]).any():
        lines.append("Single seed: the intervals reflect class-to-class spread, not seed noise.")
    return lines


def _ranking_sections(df: pd.DataFrame, metric: str, mode: str, confidence: float,
                      out: Path) -> list[_Section]:
    ranking = rank_configs(df, metric, mode, confidence)
    s = _Section("Ranking")
    if ranking.empty:
        s.text(f"No completed run has a value of {metric}; nothing to rank.")
        return [s]
    for line in _ranking_summary(ranking, metric, confidence):
        s.text(line)
    verdict = sweep_confidence(df, metric, mode)
    if verdict.can_rank is not None:
        warn = not verdict.can_rank or verdict.all_at_chance
        s.text(("**Warning**: " if warn else "Selection confidence (label-free): ") + verdict.line()
               + ". (The noise is the Hanley-McNeil standard error of each trial's objective "
               "from its validation sizes; the spread is the range of the objective across complete "
               "configurations; see README, \"Validation protocol\".)")
    incomplete = int((~ranking["complete"].astype(bool)).sum())
    if incomplete:
        s.text(f"{incomplete} configuration(s) did not finish every class (or every seed on every class); "
               "they are marked complete = no and ranked after the complete ones.")
    s.text(f"How to read it: each row is one configuration, named by its trial (id and Optuna number) and its "
           f"config_hash (the id in the result rows, Optuna's user attributes and export). *mean* is {metric} "
           "over its n runs (one per class and seed). *Δ to rank 1* is the paired difference to rank 1: for "
           "every (class, seed) cell both finished, this configuration minus rank 1, averaged over the cells, so "
           f"the difficulty of each class cancels out; the bracket is a {confidence:.0%} percentile bootstrap "
           f"interval over those cells (expanded for few cells, {BOOTSTRAP_RESAMPLES} resamples, seed "
           f"{BOOTSTRAP_SEED}; it cannot leave the metric's range), and there is none below {MIN_PAIRS} cells. "
           f"An interval that holds 0 does not separate the configuration from rank 1. Ties: {TIE_RULE} The "
           "test metric is for reading only; the searched parameters are in the next table.")
    ranking.to_csv(out / "ranking_all.csv", index=False)
    columns = [c for c in ranking.columns if c not in RANKING_HIDDEN]
    s.table("ranking", ranking_results(ranking, metric, confidence),
            f"Configurations by mean {metric} over classes and seeds ({mode}). ranking.csv holds these columns "
            "as numbers with the searched parameters; ranking_all.csv adds std, the bootstrap interval of the "
            "mean (ci_low, ci_high) and the trial ids.",
            csv=ranking[columns], tex=ranking_latex(ranking, metric, confidence))
    params = ranking_params(ranking)
    if len(params.columns) > 2:
        s.table("ranking_params", params, "The searched parameters of each configuration (the config keys that "
                "differ between the ranked configurations), in the ranking's order.")
    plots.plot_ranking(ranking, out / "ranking.png", metric, confidence)
    s.image("ranking.png", plots.ranking_title(ranking, metric, confidence))

    per_class = per_class_table(df, metric, mode)
    labels = {r["config_key"]: plots.ranking_label(r) for _, r in ranking.iterrows()}
    per_class = per_class.loc[[k for k in ranking["config_key"] if k in per_class.index]]
    per_class.index = [labels[k] for k in per_class.index]
    per_class.index.name = "configuration"
    c = _Section("Per class")
    c.table("per_class", per_class, f"Seed-mean {metric} per configuration (rows: rank, trial, ranking order) "
            "and normal class (columns); n/a: not finished.", metric_values=True)
    plots.plot_per_class(per_class, out / "per_class.png", metric)
    c.image("per_class.png", f"Heatmap of {metric} per configuration and class")
    return [s, c]


def _fidelity_section(df: pd.DataFrame, metric: str, mode: str, out: Path) -> _Section | None:
    """Selection fidelity of a sweep (rows of kind tune, or 3 or more non-ablation trials)."""
    sweep = df[df["kind"] != "ablate"]
    if not ((sweep["kind"] == "tune").any() or sweep["trial_id"].nunique() >= MIN_CONFIGS):
        return None
    s = _Section("Selection fidelity (diagnostic)")
    result = selection_fidelity(sweep, metric, mode)
    if not result.computed:
        s.text(f"Not computed: {result.reason}.")
        return s
    s.text(fidelity_line(result) + ".")
    s.text(f"Does the objective {metric} predict test performance? Each configuration is one complete "
           f"trial ({result.n_configs} of {result.n_trials} trials finished all {result.n_classes} classes; "
           "pruned, failed and partial trials are left out), with its objective and each test metric "
           "averaged over classes. **Computed on test labels: a diagnostic only, never used for "
           "selection** (choosing a configuration or an objective by it would be selection on test).")
    s.text("How to read it: Spearman near 1 means the order of the configurations by the objective "
           "follows their order on test; near 0 or negative, the objective does not predict test. "
           "Regret = best test value among the configurations minus the test value of the one the "
           f"objective picked: the test points lost by trusting the objective. The {result.confidence:.0%} "
           "interval is a percentile bootstrap over configurations; with few configurations it is wide, "
           "so read it before the point value.")
    table = result.table[FIDELITY_SHOWN + [c for c in result.table.columns if c not in FIDELITY_SHOWN]]
    s.table("fidelity", table, f"Objective {metric} ({mode}) against each test metric across configurations, "
            "the result first (Spearman with its interval, the regret, n); spearman_per_class_mean averages the "
            "correlation within each class.")
    per_class = result.per_class[["normal_class", "test_metric", "spearman", "regret", "kendall", "n", "picked"]]
    s.table("fidelity_per_class", per_class.reset_index(drop=True), "Within each class and test metric: the "
            "correlations across configurations and the regret of that class's own pick (n/a: fewer than 3 "
            "configurations with values, or constant values).")
    test_metric = result.table["test_metric"].iloc[0]
    plots.plot_fidelity(result, out / "fidelity.png", metric, test_metric)
    s.image("fidelity.png", f"{metric} vs {test_metric} per configuration, picked one highlighted")
    return s


def _history_section(df: pd.DataFrame, metric: str, mode: str, out: Path, study) -> _Section | None:
    if not (df["kind"] == "tune").any():
        return None
    s = _Section("Optimisation history")
    plots.plot_history(study if study is not None else df, out / "history.png", metric, mode)
    source = "the Optuna study's values" if study is not None else "the result rows"
    s.text(f"Each point is a completed trial's objective (mean over its classes, from {source}); the line "
           "is the best so far.")
    s.image("history.png", f"Optimisation history of {metric}")
    return s


def _study_sections(experiment_dir: str, metrics: list[str], out: Path, study,
                    study_error: str | None = None) -> list[_Section]:
    """Importance (or why not) and, for several objectives, the Pareto front."""
    s = _Section("Hyperparameter importance")
    if study_error:
        s.text(f"Not computed: {study_error}.")
        return [s]
    if study is None:
        s.text("No Optuna study (optuna.db) in this folder: only sweeps (raysearch tune) have one, "
               "so there is no parameter importance to compute.")
        return [s]
    n_done, n_all = len(completed_trials(study)), len(study.trials)
    try:
        importance = param_importance(study)
    except (ValueError, KeyError, RuntimeError) as err:
        s.text(f"Not computed: {err}.")
    else:
        importance = compare_importance(importance)
        s.text(f"Computed from **{n_done} completed trials** of the study's {n_all} (pruned, failed and "
               f"running trials are left out; below {MIN_TRIALS} completed trials nothing is computed). "
               f"Objective explained: {metrics[0]}.")
        s.text("fANOVA (seeded random forest): share of the objective's variance explained by each parameter "
               "over the whole space. PED-ANOVA: how differently each parameter is distributed among the top "
               "10 % of trials. Both are normalised to sum to 1; *_rank orders each (1 = most important).")
        flagged = list(importance.index[importance["disagree"]])
        rule = (f"a parameter is flagged when its two places differ by more than {DISAGREE_RANK_GAP} or its "
                f"two shares by more than {DISAGREE_SHARE_GAP}")
        if flagged:
            s.text(f"**The evaluators disagree** on {', '.join(f'`{p}`' for p in flagged)} ({rule}; column "
                   "why): read neither number alone for these; more trials usually settle it.")
        else:
            s.text(f"The two evaluators agree on every parameter ({rule}; none is).")
        s.table("importance", importance)
        plots.plot_importance(importance, out / "importance.png")
        s.image("importance.png", "Hyperparameter importance")
    if len(metrics) < 2:
        return [s]
    p = _Section("Pareto front")
    front = pareto_front(experiment_dir, metrics=metrics)
    p.table("pareto", front, f"Trials no other trial beats on every objective ({', '.join(metrics)}).")
    plots.plot_pareto(study, out / "pareto.png", metrics=metrics)
    p.image("pareto.png", "Pareto front")
    return [s, p]


def _ablation_section(df: pd.DataFrame, metric: str, confidence: float, out: Path, spec: dict) -> _Section:
    """The ablation: one paper table per metric (the objective, then its test counterpart),
    the factors in the spec's order in each, and the forest plot of the effects."""
    s = _Section("Ablation")
    metrics = [metric]
    if metric.startswith("val_") and ("test_" + metric[4:]) in df.columns:
        metrics.append("test_" + metric[4:])
    labels = factor_labels(spec)
    order = [v for v in labels if v != "full"]
    try:
        table = ablation_table(df, metrics, confidence, order)
        papers = [ablation_paper_table(df, m, confidence, order=order, labels=labels) for m in metrics]
    except ValueError as err:
        s.text(f"Not computed: {err}.")
        return s
    for m, paper in zip(metrics, papers, strict=True):
        name = "ablation_paper" if m == metric else f"ablation_paper_{m}"
        s.table(name, format_ablation_table(paper), ablation_caption(paper), tex=ablation_latex(paper), csv=paper)
    legacy = [f"{m}_{old}" for m in metrics for new, old in (("p_raw", "p"), ("pair_test", "test"))
              if f"{m}_{new}" in table.columns and f"{m}_{old}" in table.columns]
    table.drop(columns=legacy).to_csv(out / "ablation.csv", index=False)
    s.text(f"ablation.csv holds every factor's paired effect (variant − full) on {', '.join(metrics)}: the two "
           "means over the paired cells, the effect with its interval, the paired test (*_pair_test), its "
           "p-value raw and Holm-corrected over the factors, and the number of pairs.")
    if len(table):
        plots.plot_ablation(table, out / "ablation.png", metrics, labels)
        s.image("ablation.png", "Ablation effects with confidence intervals")
    return s


def _reason(error: str, width: int = MAX_REASON_CHARS) -> str:
    """The last line of a failure reason (a traceback ends with the exception), shortened."""
    lines = str(error).strip().splitlines()
    line = lines[-1] if lines else "(no reason recorded)"
    return line if len(line) <= width else line[: width - 3] + "..."


def _failures_section(df: pd.DataFrame) -> _Section | None:
    failed = df[df["status"] == "failed"]
    if failed.empty:
        return None
    s = _Section("Failures")
    table = failed[["trial_id", "normal_class", "seed", "error"]].copy()
    table["error"] = table["error"].fillna("").map(_reason)
    note = f" The first {MAX_FAILURES} are listed." if len(table) > MAX_FAILURES else ""
    s.table("failures", table.head(MAX_FAILURES).reset_index(drop=True),
            f"{len(table)} failed run(s), with the last line of each reason.{note}")
    return s


# -- rendering -----------------------------------------------------------------------------
def _anchor(title: str, taken: set[str]) -> str:
    """An id for a section heading: lower-case words joined by '-', unique within the page."""
    base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def _data_uri(path: Path) -> str:
    """A PNG file as a ``data:`` URI, so the page carries its figures inside."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _render(title: str, sections: list[_Section], out: Path) -> None:
    md, body = [f"# {markdown_escape(title)}", ""], [f"<h1>{html.escape(title)}</h1>"]
    taken: set[str] = set()
    anchors = [_anchor(s.title, taken) for s in sections]
    body.append('<nav><p class="note">Contents: ' + " · ".join(
        f'<a href="#{a}">{html.escape(s.title)}</a>' for s, a in zip(sections, anchors, strict=True)) + "</p></nav>")
    for s, anchor in zip(sections, anchors, strict=True):
        md += [f"## {s.title}", ""]
        body.append(f'<h2 id="{anchor}">{html.escape(s.title)}</h2>')
        for block in s.blocks:
            if block[0] == "text":
                md += [block[1], ""]
                body.append(f"<p>{_inline_html(block[1])}</p>")
            elif block[0] == "table":
                name, full, caption, metric_values, tex, csv = block[1:7]
                shown = full.head(TOP_ROWS)
                data = full if csv is None else csv
                data.to_csv(out / f"{name}.csv", index=bool(data.index.name))
                (out / f"{name}.tex").write_text((tex or latex_table(full, metric_values)) + "\n")
                if caption:
                    md += [f"*{caption}*", ""]
                    body.append(f'<p class="note">{_inline_html(caption)}</p>')
                md += [markdown_table(shown, metric_values), "", f"(files: {name}.csv, {name}.tex)", ""]
                body.append(_html_table(shown, metric_values))
                body.append(f'<p class="note">Files beside this page: {name}.csv, {name}.tex</p>')
            else:
                file, alt = block[1], block[2]
                md += [f"![{alt}]({file})", ""]
                body.append(f'<img src="{_data_uri(out / file)}" alt="{html.escape(alt)}">')
    (out / "report.md").write_text("\n".join(md))
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    (out / "report.html").write_text(page)


_MARKDOWN_ESCAPED = re.compile(r"\\([\\|<>*`\[\]])")  # what markdown_escape wrote


def _inline_html(text: str) -> str:
    """Escape ``text`` and turn the Markdown **bold**, *italic* and `code` used above into tags;
    a character :func:`analysis.ablation.markdown_escape` escaped stays that character."""
    held: list[str] = []

    def hold(match: re.Match) -> str:
        held.append(match.group(1))
        return f"\0{len(held) - 1}\0"

    out = html.escape(_MARKDOWN_ESCAPED.sub(hold, text))
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    out = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<i>\1</i>", out)
    return re.sub("\0(\\d+)\0", lambda m: html.escape(held[int(m.group(1))]), out)


def _study(experiment_dir: str) -> tuple[object | None, str | None]:
    """The folder's Optuna study and None, or None and why there is none to read."""
    if "://" in experiment_dir or not os.path.isfile(os.path.join(experiment_dir, "optuna.db")):
        return None, None
    try:
        return load_study(experiment_dir), None
    except (KeyError, ValueError) as err:  # no study of the spec's name, or several and no name
        return None, f"optuna.db could not be read as this experiment's study: {err}"


def write_report(experiment_dir: str | Path, out: str | Path | None = None,
                 confidence: float = 0.95) -> Path:
    """Write the report of an experiment folder into ``out`` (default ``DIR/report``).

    Sections: overview (trials by status, the Optuna study's counts for a sweep; result
    rows by kind and status), ranking (:func:`analysis.rank.rank_configs`: each
    configuration's mean and n and its paired difference to rank 1 with a seeded bootstrap
    interval; a plot of both) and per-class table of the non-ablation runs, the
    selection fidelity (sweeps: does the objective predict the test metrics? a diagnostic
    on test labels, see :mod:`analysis.fidelity`), the optimisation history (sweeps), hyperparameter importance (sweeps with at least
    :data:`analysis.importance.MIN_TRIALS` completed trials; otherwise a sentence saying
    why not), the Pareto front (multi-objective sweeps), the ablation table (ablation runs)
    and the failed runs with their reasons. Returns ``out``.

    Example:
        >>> write_report("/tmp/tdemo", out="/tmp/tdemo-report")   # doctest: +SKIP
        PosixPath('/tmp/tdemo-report')
    """
    experiment_dir = str(experiment_dir)
    if out is None:
        if "://" in experiment_dir:
            raise ValueError(f"{experiment_dir} is a URI; pass out= a local folder for the report")
        out = os.path.join(experiment_dir, "report")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    df = load_results(experiment_dir)
    spec = load_spec(experiment_dir)
    metrics, modes = objective(spec)
    metric, mode = metrics[0], modes[0]
    name = spec.get("name") or ", ".join(map(str, df["experiment"].dropna().unique())) or experiment_dir
    study, study_error = _study(experiment_dir)

    sections = [_overview(df, spec, metrics, modes, study)]
    if study_error:
        sections[0].text(f"**Warning**: {study_error}; the trial counts are the result rows' only.")
    if df.empty:
        sections[0].text("This folder has no result rows yet.")
    else:
        # A sweep or a train run is ranked by configuration; an ablation is no search, so its
        # variants are not ranked: its report leads with the ablation table.
        searched = df[df["kind"] != "ablate"]
        if (df["kind"] == "ablate").any():
            sections.insert(0, _ablation_section(df, metric, confidence, out, spec))
        if len(searched):
            sections += _ranking_sections(searched, metric, mode, confidence, out)
            fidelity = _fidelity_section(searched, metric, mode, out)
            sections += [fidelity] if fidelity else []
            history = _history_section(searched, metric, mode, out, study)
            sections += [history] if history else []
        if not ((df["kind"] == "tune").any() or study is not None or study_error):
            pass  # no search and no study: no importance section
        elif "://" in experiment_dir:
            sections.append(_Section("Hyperparameter importance", [(
                "text", "Not computed: the Optuna study is read from a local copy of the folder only.")]))
        else:
            sections += _study_sections(experiment_dir, metrics, out, study, study_error)
        failures = _failures_section(df)
        sections += [failures] if failures else []
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    overview = next(s for s in sections if s.title == "Overview")
    overview.blocks.insert(0, ("text", f"Folder `{experiment_dir}`; report written {stamp}."))
    _render(f"Report: {name}", sections, out)
    return out
