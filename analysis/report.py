"""A self-contained report of one experiment folder: Markdown, HTML, CSV, LaTeX and PNGs.

:func:`write_report` reads ``DIR/results`` (and ``DIR/spec.yaml``, ``DIR/optuna.db`` where
present) and writes one folder holding ``report.md``, ``report.html`` (inline CSS; its
only references are the PNGs beside it, by file name), one ``<table>.csv`` and
``<table>.tex`` per table, and the figures. It works for a plain ``raysearch train``
folder (one configuration), a sweep and an ablation; sections that do not apply say why.

Example:
    >>> from analysis import write_report
    >>> write_report("/tmp/tdemo", out="/tmp/tdemo-report")     # doctest: +SKIP
    PosixPath('/tmp/tdemo-report')
"""

from __future__ import annotations

import html
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.ablation import ablation_table
from analysis.fidelity import MIN_CONFIGS, fidelity_line, selection_fidelity
from analysis.importance import param_importance, pareto_front
from analysis.load import load_results, load_spec, objective
from analysis.rank import per_class_table, rank_configs

__all__ = ["write_report", "latex_table", "markdown_table"]

TOP_ROWS = 20  # rows of a long table shown in the report; the CSV and .tex files hold all
MAX_FAILURES = 20  # failed runs listed with their reason
MAX_REASON_CHARS = 160  # characters of a failure reason shown (the result rows keep it whole)

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #eee; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: .6em 0; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
p.note { color: #555; font-size: 14px; }
"""


@dataclass
class _Section:
    """A report section: blocks of ("text", str), ("table", name, DataFrame, caption) or
    ("image", file name, alt text), rendered alike into Markdown and HTML. A table's
    files hold every row; the page shows the first :data:`TOP_ROWS`."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def text(self, s: str) -> None:
        self.blocks.append(("text", s))

    def table(self, name: str, df: pd.DataFrame, caption: str = "") -> None:
        if len(df) > TOP_ROWS:
            caption += f" Showing the first {TOP_ROWS} of {len(df)} rows; {name}.csv has all."
        self.blocks.append(("table", name, df, caption.strip()))

    def image(self, file: str, alt: str) -> None:
        self.blocks.append(("image", file, alt))


# -- cell formatting and table writers -----------------------------------------------------
# Columns holding metric values or statistics of them: fixed 4 decimals, so they line up.
_FIXED = re.compile(r"mean|std|ci_low|ci_high|rank|effect|_full$|_variant$|auroc|f1_max|aupro"
                    r"|spearman|kendall|regret|_test$")


def _cell(value, column: str = "") -> str:
    """A table cell as text: metrics to 4 decimals, p-values to 3 significant digits, other
    numbers (learning rates, latencies) to 4 significant digits, NaN as n/a."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        if column.endswith("_p"):
            return f"{value:.3g}"
        return f"{value:.4f}" if _FIXED.search(column) else f"{value:.4g}"
    return str(value)


def _display(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` as strings, index included as the first column(s)."""
    flat = df.reset_index() if df.index.name or isinstance(df.index, pd.MultiIndex) else df
    return pd.DataFrame({str(c): [_cell(v, str(c)) for v in flat[c]] for c in flat.columns})


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``df`` (floats to 4 decimals, p-values to 3 digits)."""
    cells = _display(df)
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in cells.columns) + " |",
             "|" + "|".join("---" for _ in cells.columns) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_table(df: pd.DataFrame) -> str:
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
    cells = _display(df)
    esc = lambda s: "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(s))  # noqa: E731
    lines = [r"\begin{tabular}{" + "r" * len(cells.columns) + "}", r"\hline",
             " & ".join(esc(c) for c in cells.columns) + r" \\", r"\hline"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in cells.itertuples(index=False)]
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines)


def _html_table(df: pd.DataFrame) -> str:
    return '<div class="scroll">' + _display(df).to_html(index=False, escape=True, border=0) + "</div>"


# -- sections ------------------------------------------------------------------------------
def _overview(df: pd.DataFrame, spec: dict, metrics: list[str], modes: list[str]) -> _Section:
    s = _Section("Overview")
    first = lambda col: ", ".join(sorted(map(str, df[col].dropna().unique()))) or "n/a"  # noqa: E731
    s.text(f"Method **{spec.get('method') or first('method')}** on **{first('dataset')}**; "
           f"experiment kinds: {first('kind')}; classes: {first('normal_class')}; seeds: {first('seed')}.")
    s.text("Objective: " + ", ".join(f"{m} ({d})" for m, d in zip(metrics, modes))
           + f"; selection split: {first('selection_split')}. Test metrics are shown for reading only, "
           "never used to rank.")
    s.text(f"Code: raysearch {first('package_version')}, git commit {first('git_commit')}.")
    counts = df.groupby(["kind", "status"], dropna=False).agg(
        runs=("trial_id", "size"), trials=("trial_id", "nunique")).reset_index()
    s.table("runs", counts, "Result rows (one per trial and class) by experiment kind and status.")
    return s


def _summary_line(ranking: pd.DataFrame, metric: str, confidence: float) -> str:
    best = ranking.iloc[0]
    ci = ("no interval (a single run)" if math.isnan(best["ci_low"])
          else f"{confidence:.0%} CI [{best['ci_low']:.4f}, {best['ci_high']:.4f}]")
    line = (f"Best configuration `{best['config_key']}`: {metric} {best['mean']:.4f} ± "
            f"{_cell(best['std'])} (std; {ci}; n = {int(best['n'])} runs over "
            f"{int(best['n_classes'])} classes x {int(best['n_seeds'])} seed(s)).")
    test_col = [c for c in ranking.columns if c.startswith("test_") and c.endswith("_mean")]
    if test_col and metric.startswith("val_"):
        line += f" Its {test_col[0][:-5]} is {_cell(best[test_col[0]])} (reported, not selected on)."
    if not best["complete"]:
        line += " Warning: no configuration finished every class; this one is incomplete."
    if int(best["n_seeds"]) == 1:
        line += " Single seed: the interval reflects class-to-class spread, not seed noise."
    return line


def _ranking_sections(df: pd.DataFrame, metric: str, mode: str, confidence: float,
                      out: Path) -> list[_Section]:
    ranking = rank_configs(df, metric, mode, confidence)
    s = _Section("Ranking")
    if ranking.empty:
        s.text(f"No completed run has a value of {metric}; nothing to rank.")
        return [s]
    s.text(_summary_line(ranking, metric, confidence))
    incomplete = int((~ranking["complete"].astype(bool)).sum())
    if incomplete:
        s.text(f"{incomplete} configuration(s) did not finish every class (or every seed on every class); "
               "they are marked complete = no and ranked after the complete ones.")
    s.table("ranking", ranking, f"Configurations by mean {metric} over classes and seeds ({mode}); "
            "mean_rank averages each configuration's rank within every class.")

    per_class = per_class_table(df, metric, mode)
    per_class = per_class.loc[[k for k in ranking["config_key"] if k in per_class.index]]
    c = _Section("Per class")
    c.table("per_class", per_class, f"Seed-mean {metric} per configuration (rows, ranking order) and "
            "normal class (columns); n/a: not finished.")
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
    s.table("fidelity", result.table, f"Objective {metric} ({mode}) against each test metric across "
            "configurations; spearman_per_class_mean averages the correlation within each class.")
    per_class = result.per_class.pivot(index="normal_class", columns="test_metric",
                                       values=["spearman", "kendall", "regret"])
    per_class.columns = [f"{m}_{stat}" for stat, m in per_class.columns]
    per_class = per_class.reindex(index=list(dict.fromkeys(result.per_class["normal_class"])),
                                  columns=[f"{m}_{stat}" for m in result.table["test_metric"]
                                           for stat in ("spearman", "kendall", "regret")])
    per_class.index.name = "normal_class"
    s.table("fidelity_per_class", per_class, "Within each class: the correlations across configurations "
            "and the regret of that class's own pick (n/a: fewer than 3 configurations with values, or "
            "constant values).")
    test_metric = result.table["test_metric"].iloc[0]
    plots.plot_fidelity(result, out / "fidelity.png", metric, test_metric)
    s.image("fidelity.png", f"{metric} vs {test_metric} per configuration, picked one highlighted")
    return s


def _history_section(df: pd.DataFrame, metric: str, mode: str, out: Path) -> _Section | None:
    if not (df["kind"] == "tune").any():
        return None
    s = _Section("Optimisation history")
    plots.plot_history(df, out / "history.png", metric, mode)
    s.text("Each point is a completed trial's objective (mean over its classes); the line is the best so far.")
    s.image("history.png", f"Optimisation history of {metric}")
    return s


def _study_sections(experiment_dir: str, metrics: list[str], out: Path) -> list[_Section]:
    """Importance (or why not) and, for several objectives, the Pareto front."""
    s = _Section("Hyperparameter importance")
    if not os.path.isfile(os.path.join(experiment_dir, "optuna.db")):
        s.text("No Optuna study (optuna.db) in this folder: only sweeps (raysearch tune) have one, "
               "so there is no parameter importance to compute.")
        return [s]
    try:
        importance = param_importance(experiment_dir)
    except (ValueError, KeyError) as err:
        s.text(f"Not computed: {err}.")
    else:
        s.text("fANOVA: share of the objective's variance explained by each parameter over the whole "
               "space. PED-ANOVA: how differently each parameter is distributed among the top 10 % of "
               f"trials. Both are normalised to sum to 1. Objective explained: {metrics[0]}.")
        s.table("importance", importance)
        plots.plot_importance(importance, out / "importance.png")
        s.image("importance.png", "Hyperparameter importance")
    if len(metrics) < 2:
        return [s]
    p = _Section("Pareto front")
    front = pareto_front(experiment_dir, metrics=metrics)
    p.table("pareto", front, f"Trials no other trial beats on every objective ({', '.join(metrics)}).")
    plots.plot_pareto(experiment_dir, out / "pareto.png", metrics=metrics)
    p.image("pareto.png", "Pareto front")
    return [s, p]


def _ablation_section(df: pd.DataFrame, metric: str, confidence: float, out: Path) -> _Section:
    s = _Section("Ablation")
    metrics = [metric]
    if metric.startswith("val_") and ("test_" + metric[4:]) in df.columns:
        metrics.append("test_" + metric[4:])
    try:
        table = ablation_table(df, metrics, confidence)
    except ValueError as err:
        s.text(f"Not computed: {err}.")
        return s
    s.text("Each factor's effect is the mean paired difference variant − full over the (seed, class) "
           f"cells both finished, with a {confidence:.0%} Student-t interval; the p-value is from the "
           "Wilcoxon signed-rank test with 6 or more pairs, else the paired t-test (column *_test).")
    s.table("ablation", table, f"Sorted by the size of the effect on {metric}.")
    if len(table):
        plots.plot_ablation(table, out / "ablation.png", metrics)
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
def _render(title: str, sections: list[_Section], out: Path) -> None:
    md, body = [f"# {title}", ""], [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        md += [f"## {s.title}", ""]
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        for block in s.blocks:
            if block[0] == "text":
                md += [block[1], ""]
                body.append(f"<p>{_inline_html(block[1])}</p>")
            elif block[0] == "table":
                name, full, caption = block[1], block[2], block[3]
                shown = full.head(TOP_ROWS)
                full.to_csv(out / f"{name}.csv", index=bool(full.index.name))
                (out / f"{name}.tex").write_text(latex_table(full) + "\n")
                if caption:
                    md += [f"*{caption}*", ""]
                    body.append(f'<p class="note">{_inline_html(caption)}</p>')
                md += [markdown_table(shown), "", f"(files: {name}.csv, {name}.tex)", ""]
                body.append(_html_table(shown))
                body.append(f'<p class="note">Files: {name}.csv, {name}.tex</p>')
            else:
                file, alt = block[1], block[2]
                md += [f"![{alt}]({file})", ""]
                body.append(f'<img src="{html.escape(file)}" alt="{html.escape(alt)}">')
    (out / "report.md").write_text("\n".join(md))
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    (out / "report.html").write_text(page)


def _inline_html(text: str) -> str:
    """Escape ``text`` and turn the Markdown **bold**, *italic* and `code` used above into tags."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    return re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<i>\1</i>", out)


def write_report(experiment_dir: str | Path, out: str | Path | None = None,
                 confidence: float = 0.95) -> Path:
    """Write the report of an experiment folder into ``out`` (default ``DIR/report``).

    Sections: overview (runs by kind and status), ranking and per-class table of the
    non-ablation runs (with the best configuration's mean, spread, interval and n), the
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

    sections = [_overview(df, spec, metrics, modes)]
    if df.empty:
        sections[0].text("This folder has no result rows yet.")
    else:
        # A sweep or a train run is ranked by configuration; an ablation folder alone
        # ranks its variants (each one configuration over seeds and classes).
        searched = df[df["kind"] != "ablate"]
        if searched.empty:
            searched = df
        if len(searched):
            sections += _ranking_sections(searched, metric, mode, confidence, out)
            fidelity = _fidelity_section(searched, metric, mode, out)
            sections += [fidelity] if fidelity else []
            history = _history_section(searched, metric, mode, out)
            sections += [history] if history else []
        if (df["kind"] == "ablate").any():
            sections.append(_ablation_section(df, metric, confidence, out))
        if "://" in experiment_dir:
            sections.append(_Section("Hyperparameter importance", [(
                "text", "Not computed: the Optuna study is read from a local copy of the folder only.")]))
        else:
            sections += _study_sections(experiment_dir, metrics, out)
        failures = _failures_section(df)
        sections += [failures] if failures else []
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections[0].blocks.insert(0, ("text", f"Folder `{experiment_dir}`; report written {stamp}."))
    _render(f"Report: {name}", sections, out)
    return out
