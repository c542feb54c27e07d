"""Comparing experiments: the configuration each one selected, side by side per category.

``raysearch compare DIR...`` (and :func:`write_comparison`) puts sweeps, ablations and
train runs into one experiments x categories table of one metric (default
``test_image_auroc``). Each experiment is represented by the configuration that its own
objective selected (the first metric of its spec's ``search`` block, validation unless the
spec selects on test), never by the compared metric, so a test column here was not chosen
on test:

- a sweep (rows of kind ``tune``): its best complete trial, by
  :func:`analysis.rank.trial_table` (the one ranking of trials);
- an ablation (kind ``ablate``): the full model (variant ``full``), every seed whose run
  completed every class;
- a train folder (kind ``train``): its latest complete run (the one whose newest row is
  newest). The runs of one train folder are reruns of one spec (``raysearch train``
  refuses another spec's folder), seed included, so they are not independent seeds to
  average; the latest stands for the code as it is now.

A folder holding rows of several kinds is read as the first of sweep, ablation, train.
A cell is the mean over the selected runs (one per seed) of that category, ± a Student-t
interval over the seeds clipped to the metric's range
(:func:`analysis.rank.metric_range`); with one seed there is no interval. The best value
per category is bold; an experiment's mean rank averages its rank (1 = best; values
equal at the shown 3 decimals tie and share the mean rank) over the categories it has
that at least one other experiment has too (a category only one experiment ran is
neither ranked nor bold). Categories are the union over the experiments, in the first
experiment's order; an experiment that did not run a category has an empty cell there,
and the ``mean`` column appears only when every experiment has every category. A
``val_*`` metric is flagged as not comparable when the experiments' validation sets
differ (:data:`SELECTION_KEYS` of the specs' ``selection`` blocks): each experiment's
validation numbers are then measured on other images.

Example:
    >>> from analysis import compare_experiments
    >>> c = compare_experiments(["raysearch-results/cutswap-train", "raysearch-results/clflow-train"])  # doctest: +SKIP
    >>> print(c.markdown())                                                                            # doctest: +SKIP
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.ablation import REFERENCE, booktabs, format_interval, latex_escape, markdown_escape
from analysis.load import load_results, load_spec, objective
from analysis.rank import metric_range, t_interval, trial_table
from raysearch.config.objective import DECIMALS

__all__ = ["Selection", "Comparison", "select_configuration", "compare_experiments", "plot_comparison",
           "write_comparison", "SELECTION_KEYS", "DEFAULT_METRIC"]

DEFAULT_METRIC = "test_image_auroc"  # compared by default: the official test split, which never selects
# Keys of a spec's `selection` block that decide which images the validation split holds.
SELECTION_KEYS = ("split", "anomalies", "synthesis", "holdout", "seed", "min_normals", "min_anomalies")
KINDS = (("tune", "sweep"), ("ablate", "ablation"), ("train", "train"))  # row kind -> experiment, in priority
DIGITS = DECIMALS  # decimals of a metric in the tables: as everywhere
# Metrics where lower is better (anything else is compared as higher = better).
LOWER_IS_BETTER = ("latency_ms", "num_params", "train_time_s", "wall_time_s", "host_peak_rss_mb", "device_peak_mb")
FILES = ("compare.md", "compare.html", "compare.csv", "compare.tex", "compare_params.csv", "compare.png")


@dataclass(frozen=True)
class Selection:
    """The configuration an experiment's own objective selected, and its completed rows."""

    label: str  # the spec's name (the folder's name without one)
    path: str
    kind: str  # sweep | ablation | train
    selected: str  # which configuration, in words
    trial_ids: tuple[str, ...]  # the selected runs (one per seed)
    objective: str  # the metric that selected it
    rows: pd.DataFrame = field(repr=False)  # completed rows of the selected runs
    spec: dict[str, Any] = field(repr=False)


def _name(path: str) -> str:
    return posixpath.basename(str(path).split("?")[0].rstrip("/")) or str(path)


def select_configuration(experiment_dir: str | Path) -> Selection:
    """The configuration that ``experiment_dir``'s own objective selected (see the module).

    Raises ValueError (one line, naming the folder) when the folder has no rows or no
    configuration that completed every class, FileNotFoundError when it has no
    ``results/``.

    Example:
        >>> select_configuration("raysearch-results/distcon-digits-demo").selected   # doctest: +SKIP
        'sweep trial 8730aa1d (best val_image_auroc of 9 complete trials)'
    """
    path = str(experiment_dir)
    df = load_results(path)
    if df.empty:
        raise ValueError(f"{path}: no result rows; nothing to compare")
    spec = load_spec(path)
    metrics, modes = objective(spec)
    metric, mode = metrics[0], modes[0]
    kinds = set(df["kind"].dropna())
    row_kind, kind = next(((k, name) for k, name in KINDS if k in kinds), (None, "train"))
    rows = df[df["kind"] == row_kind] if row_kind else df
    if kind == "ablation":
        rows = rows[rows["variant"] == REFERENCE]
    trials = trial_table(rows, metric, mode) if len(rows) else pd.DataFrame(columns=["complete"])
    complete = trials[trials["complete"].astype(bool)]
    if complete.empty:
        what = {"sweep": "trial", "ablation": f"run of the variant {REFERENCE!r}", "train": "run"}[kind]
        raise ValueError(f"{path}: no complete configuration: no {what} completed every class with a value of "
                         f"{metric} (the {kind}'s objective)")
    if kind == "sweep":
        chosen = [str(complete["trial_id"].iloc[0])]
        selected = f"sweep trial {chosen[0]} (best {metric} of {len(complete)} complete trials)"
    elif kind == "ablation":
        chosen = [str(t) for t in complete["trial_id"]]
        seeds = ", ".join(str(s) for s in sorted(complete["seed"].dropna().astype(int)))
        selected = f"ablation variant {REFERENCE} (seeds {seeds})"
    else:
        stamps = rows.groupby("trial_id")["timestamp"].max()
        ids = [str(t) for t in complete["trial_id"]]
        latest = sorted(ids, key=lambda t: (pd.notna(stamps.get(t)), stamps.get(t) if pd.notna(stamps.get(t))
                                            else pd.Timestamp(0, tz="UTC"), t))[-1]
        chosen = [latest]
        selected = f"train run {latest}" + (f" (latest of {len(ids)} complete runs)" if len(ids) > 1 else "")
    done = rows[rows["trial_id"].astype(str).isin(chosen) & (rows["status"] == "completed")]
    return Selection(label=str(spec.get("name") or _name(path)), path=path, kind=kind, selected=selected,
                     trial_ids=tuple(chosen), objective=metric, rows=done, spec=spec)


def _mode(metric: str) -> str:
    return "min" if metric in LOWER_IS_BETTER else "max"


@dataclass
class Comparison:
    """Experiments x categories of one metric; see :func:`compare_experiments`.

    ``cells``: one row per (experiment, category) with ``mean``, ``ci_low``, ``ci_high``
    and ``n`` (seeds). ``table``: experiments (rows, by label) x categories of the means,
    then ``mean`` (only when every experiment has every category) and ``mean_rank``.
    ``best``: category (and ``mean``) -> labels holding the best value. ``notes``: lines
    to print under the table, flags first, then each label's folder. ``params``: the
    config keys whose values differ between the selected configurations
    (:func:`differing_params`).
    """

    metric: str
    mode: str
    confidence: float
    selections: list[Selection]
    categories: list[str]
    cells: pd.DataFrame
    table: pd.DataFrame
    best: dict[str, set[str]]
    notes: list[str]
    params: pd.DataFrame = field(default_factory=pd.DataFrame)  # experiments x config keys that differ

    # -- cells as text ---------------------------------------------------------------------
    def _cell(self, label: str, column: str, bold: tuple[str, str], latex: bool = False) -> str:
        if column == "mean_rank":
            value = self.table.at[label, column]
            return "" if not np.isfinite(value) else f"{value:.2f}"
        if column == "mean":
            value = self.table.at[label, "mean"]
            text = format_interval(value, None, None, DIGITS, latex=latex)
        else:
            c = self.cells.set_index(["experiment", "category"]).loc[(label, column)]
            if not np.isfinite(c["mean"]):
                return ""
            text = format_interval(c["mean"], c["ci_low"], c["ci_high"], DIGITS, latex=latex)
        return f"{bold[0]}{text}{bold[1]}" if label in self.best.get(column, ()) else text

    def _columns(self) -> list[str]:
        return [*self.categories, *(["mean"] if "mean" in self.table.columns else []), "mean_rank"]

    def markdown(self) -> str:
        """The table as GitHub Markdown (best per category in **bold**)."""
        header = ["experiment", "selected", *[c if c != "mean_rank" else "mean rank" for c in self._columns()]]
        esc = markdown_escape
        lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for s in self.selections:
            cells = [esc(s.label), esc(s.selected), *[self._cell(s.label, c, ("**", "**")) for c in self._columns()]]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def params_markdown(self) -> str:
        """The parameters that differ between the selected configurations, as Markdown ("" when none)."""
        if self.params.empty or not len(self.params.columns):
            return ""
        from analysis.report import markdown_table

        return markdown_table(self.params)

    def latex(self) -> str:
        """The table as a booktabs ``tabular`` (best per category in ``\\textbf``); the
        selected configurations and the notes are in the comment lines above it."""
        columns = self._columns()
        header = ["Experiment", *[latex_escape(c) if c != "mean_rank" else "Mean rank" for c in columns]]
        rows = [[latex_escape(s.label), *[self._cell(s.label, c, ("\\textbf{", "}"), latex=True) for c in columns]]
                for s in self.selections]
        comments = [f"% {self.metric}: {s.label} = {s.selected}" for s in self.selections]
        comments += [f"% {n.replace('**', '')}" for n in self.notes]
        return "\n".join(comments) + "\n" + booktabs(header, rows, "l" + "c" * len(columns))

    def html(self, png: bytes | None = None) -> str:
        """A self-contained HTML page: the table (best in ``<b>``), the notes and the plot
        inlined as a ``data:`` URI."""
        from analysis.report import CSS

        columns = self._columns()
        head = "".join(f"<th>{html.escape(h)}</th>" for h in
                       ["experiment", "selected", *[c if c != "mean_rank" else "mean rank" for c in columns]])
        body = []
        for s in self.selections:
            # Bold is marked with control characters 0 and 1 (no label holds them), made <b> after escaping.
            cells = [s.label, s.selected, *[self._cell(s.label, c, ("\0", "\1")) for c in columns]]
            cells = [html.escape(c).replace("\0", "<b>").replace("\1", "</b>") for c in cells]
            body.append(f"<tr><td>{cells[0]}</td><td class=\"text\">{cells[1]}</td>"  # the selection in words wraps
                        + "".join(f"<td>{c}</td>" for c in cells[2:]) + "</tr>")
        title = f"Comparison: {self.metric}"
        notes = "".join(f'<p class="note">{_inline_html(n)}</p>' for n in self.notes)
        if not self.params.empty and len(self.params.columns):
            from analysis.report import _html_table

            notes += ('<h2>Parameters that differ</h2><p class="note">The config keys whose values differ '
                      "between the selected configurations.</p>" + _html_table(self.params))
        image = ("" if png is None else
                 f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="{html.escape(title)}">')
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
                f"<style>{CSS}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
                f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
                f"</div>\n{notes}\n{image}\n</body></html>\n")

    def csv_table(self) -> pd.DataFrame:
        """One row per experiment: label, kind, selected runs, folder, then per category its
        mean, ci_low, ci_high and n (seeds), then ``mean`` (where shown) and ``mean_rank``."""
        out = []
        cells = self.cells.set_index(["experiment", "category"])
        for s in self.selections:
            row: dict[str, Any] = {"experiment": s.label, "kind": s.kind, "selected": s.selected,
                                   "trial_ids": ",".join(s.trial_ids), "objective": s.objective, "path": s.path}
            for c in self.categories:
                for stat in ("mean", "ci_low", "ci_high", "n"):
                    row[f"{c}_{stat}" if stat != "mean" else c] = cells.at[(s.label, c), stat]
            if "mean" in self.table.columns:
                row["mean"] = self.table.at[s.label, "mean"]
            row["mean_rank"] = self.table.at[s.label, "mean_rank"]
            out.append(row)
        return pd.DataFrame(out)


def _inline_html(text: str) -> str:
    out = html.escape(text)
    while "**" in out:
        out = out.replace("**", "<b>", 1).replace("**", "</b>", 1)
    return out


def _unique_labels(selections: list[Selection]) -> list[Selection]:
    """Every row is labelled by its experiment's name; experiments of one name (a spec
    trained, then swept) add their kind (``name (sweep)``, ``name (train)``), and where
    that still repeats, a number in the order given (``name (sweep 2)``). The notes name
    each label's folder."""
    counts = pd.Series([s.label for s in selections]).value_counts()
    kinds = pd.Series([(s.label, s.kind) for s in selections]).value_counts()
    seen: dict[tuple[str, str], int] = {}
    out = []
    for s in selections:
        if counts[s.label] > 1:
            key = (s.label, s.kind)
            seen[key] = seen.get(key, 0) + 1
            suffix = s.kind if kinds[key] == 1 else f"{s.kind} {seen[key]}"
            s = dataclasses.replace(s, label=f"{s.label} ({suffix})")
        out.append(s)
    return out


def _datasets(selections: list[Selection]) -> dict[str, str]:
    """Each experiment's dataset(s), from its selected rows."""
    return {s.label: ", ".join(sorted(map(str, s.rows["dataset"].dropna().unique()))) or "unknown"
            for s in selections}


def differing_params(selections: list[Selection]) -> pd.DataFrame:
    """Experiments (rows, by label) x the config keys whose values differ between the
    configurations they selected (``params.`` left off the names; the seed and the class list
    are left out). No columns where every configuration is the same."""
    from analysis.load import IGNORED_CONFIG_KEYS

    configs = {}
    for s in selections:
        first = s.rows.dropna(subset=["config_json"]).head(1)
        configs[s.label] = json.loads(first["config_json"].iloc[0]) if len(first) else {}
    table = pd.DataFrame.from_dict(configs, orient="index")
    table = table.drop(columns=[c for c in IGNORED_CONFIG_KEYS if c in table.columns])
    table = table.apply(lambda col: col.map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v))
    varying = [c for c in table.columns if table[c].astype(str).nunique(dropna=False) > 1]
    table = table[varying].rename(columns=lambda c: c.removeprefix("params."))
    table.index.name = "experiment"
    return table


def _categories(selections: list[Selection]) -> list[str]:
    """The union of the experiments' categories: the first experiment's, in its class order,
    then each new one as later experiments bring it."""
    order: list[str] = []
    for s in selections:
        firsts = s.rows.groupby("normal_class")["class_index"].min().reset_index()
        firsts = firsts.sort_values(["class_index", "normal_class"], na_position="last")
        order += [c for c in firsts["normal_class"] if c not in order]
    return order


def _selection_flags(selections: list[Selection], metric: str) -> list[str]:
    """Lines that say where the numbers cannot be compared as they stand."""
    flags = []
    if metric.startswith("val_"):
        missing = [s.label for s in selections if not s.spec.get("selection")]
        differ = []
        for key in SELECTION_KEYS:
            values = {s.label: (s.spec.get("selection") or {}).get(key) for s in selections if s.spec.get("selection")}
            if len({repr(v) for v in values.values()}) > 1:
                differ.append(f"selection.{key}: " + ", ".join(f"{k} {_short(v)}" for k, v in values.items()))
        if differ:
            flags.append(f"**Not comparable: the {metric} numbers come from different validation sets** "
                         f"({'; '.join(differ)}). Each experiment's validation images differ; compare a test "
                         "metric instead.")
        if missing and len(selections) > 1:
            flags.append(f"**The validation set of {', '.join(missing)} is unknown** (no spec.yaml): its {metric} "
                         "numbers may not be comparable with the others.")
    on_test = [s.label for s in selections if (s.spec.get("selection") or {}).get("split") == "test"]
    if on_test:
        flags.append(f"**{', '.join(on_test)} selected on the test split** (selection.split: test): "
                     "its test numbers are optimistic.")
    return flags


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def compare_experiments(experiments: Sequence[str | Path], metric: str = DEFAULT_METRIC,
                        confidence: float = 0.95, allow_different_data: bool = False) -> Comparison:
    """Compare the configurations that ``experiments`` selected on ``metric``, per category.

    Raises ValueError (one line) for an experiment without a complete configuration, a
    metric that is not a result column, a metric with no value in any experiment, or
    experiments on different datasets unless ``allow_different_data`` (their categories
    are other images, so a table of them invites a comparison that does not hold);
    FileNotFoundError for a folder without ``results/``.

    Example:
        >>> c = compare_experiments(["runs/sweep", "runs/ablation", "runs/train"])   # doctest: +SKIP
        >>> c.table["mean_rank"]                                                     # doctest: +SKIP
    """
    if not experiments:
        raise ValueError("name at least one experiment folder to compare")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), but got {confidence=}.")
    twice = sorted({str(e) for e in experiments if [str(x) for x in experiments].count(str(e)) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)}: named twice; name each experiment once")
    selections = _unique_labels([select_configuration(e) for e in experiments])
    datasets = _datasets(selections)
    if len(set(datasets.values())) > 1 and not allow_different_data:
        raise ValueError("the experiments use different datasets (" + "; ".join(
            f"{k}: {v}" for k, v in datasets.items()) + "); compare experiments on one dataset, or pass "
            "--allow-different-data")
    for s in selections:
        if metric not in s.rows.columns:
            numeric = [c for c in s.rows.columns if pd.api.types.is_numeric_dtype(s.rows[c])]
            raise ValueError(f"metric {metric!r} is not a result column of {s.path}; numeric columns: "
                             f"{', '.join(numeric)}")
    mode = _mode(metric)
    bounds = metric_range(metric)
    categories = _categories(selections)
    cells = []
    for s in selections:
        values = pd.to_numeric(s.rows[metric], errors="coerce")
        per_run = s.rows.assign(_v=values).groupby(["normal_class", "trial_id"])["_v"].mean()  # one value per seed
        for c in categories:
            v = per_run.loc[c].dropna().to_numpy(float) if c in per_run.index.get_level_values(0) else np.array([])
            n = len(v)
            mean = v.mean() if n else np.nan
            std = v.std(ddof=1) if n >= 2 else np.nan
            lo, hi = t_interval(np.array([mean]), np.array([std]), np.array([n]), confidence)
            cells.append({"experiment": s.label, "category": c, "mean": mean, "ci_low": float(np.clip(lo[0], *bounds)),
                          "ci_high": float(np.clip(hi[0], *bounds)), "n": n})
    cells = pd.DataFrame(cells)
    if not np.isfinite(cells["mean"]).any():
        raise ValueError(f"no experiment has a value of {metric} ({', '.join(s.path for s in selections)})")

    labels = [s.label for s in selections]
    table = cells.pivot(index="experiment", columns="category", values="mean").reindex(index=labels,
                                                                                      columns=categories)
    # Rank within each category that two or more experiments have (a lone value beats nobody),
    # on the values as shown: what differs below the shown decimals ties.
    contested = [c for c in categories if table[c].notna().sum() >= 2]
    ranks = table[contested].round(DIGITS).rank(axis=0, ascending=(mode == "min"), method="average")
    full = bool(np.isfinite(table.to_numpy(float)).all())
    if full:
        table["mean"] = table[categories].mean(axis=1)
    table["mean_rank"] = ranks.mean(axis=1)
    best = {}
    for c in [*contested, *(["mean"] if full and len(labels) >= 2 else [])]:
        column = table[c].astype(float).round(DIGITS)
        target = column.min() if mode == "min" else column.max()
        best[c] = set(column.index[column == target])

    notes = _selection_flags(selections, metric)
    seeds = sorted(set(cells.loc[cells["n"] > 0, "n"]))
    spread = "; one seed: no interval" if 1 in seeds else ""
    low, high = bounds
    clip = f", clipped to [{low:g}, {high:g}]" if np.isfinite(high) else ""
    notes.append(f"Each experiment is represented by the configuration its own objective selected (column "
                 f"selected). Cells: {metric}, mean over the selected configuration's seeds ± {confidence:.0%} "
                 f"Student-t interval over the seeds{clip}{spread}. Bold: the best per category "
                 f"({'lowest' if mode == 'min' else 'highest'}). Mean rank: the rank within each category "
                 f"(1 = best; values equal at {DIGITS} decimals tie), averaged over the categories an experiment has.")
    if not full:
        alone = [c for c in categories if c not in contested]
        notes.append("The experiments do not all have every category: empty cells are categories an experiment "
                     "did not run (or has no value of the metric for); there is no mean column, and each mean "
                     "rank is over that experiment's own categories"
                     + (f" that another experiment has too ({', '.join(alone)}: one experiment only, not ranked)"
                        if alone else "") + ".")
    if len(set(datasets.values())) > 1:
        notes.append("**The experiments use different datasets** (" + "; ".join(f"{k}: {v}" for k, v in
                                                                                 datasets.items())
                     + "): each category is other images in each; compared as asked.")
    notes.append("Folders: " + "; ".join(f"{s.label}: {s.path}" for s in selections) + ".")
    return Comparison(metric=metric, mode=mode, confidence=confidence, selections=selections, categories=categories,
                      cells=cells, table=table, best=best, notes=notes, params=differing_params(selections))


def comparison_legend(comparison: Comparison, label: str) -> str:
    """An experiment's entry in the comparison plot's legend: its label and mean rank, the
    rank only where it has one (a lone category is not ranked).

    Example:
        >>> comparison_legend(c, "sweep")      # doctest: +SKIP
        'sweep (mean rank 1.50)'
    """
    rank = comparison.table.at[label, "mean_rank"]
    return f"{label} (mean rank {rank:.2f})" if np.isfinite(rank) else f"{label} (not ranked: no shared category)"


def plot_comparison(comparison: Comparison, path: str | Path) -> Path:
    """One point per experiment and category (the mean over seeds, with its interval), the
    experiments side by side within each category."""
    from analysis.plots import _figure, _legend_below, _save

    c = comparison
    labels = [s.label for s in c.selections]
    k = len(labels)
    fig = _figure(min(max(5.5, 1.6 + 1.1 * len(c.categories) * max(1, k / 3)), 16), 4.4)
    ax = fig.add_subplot()
    x = np.arange(len(c.categories))
    width = 0.7 / max(k, 1)
    cells = c.cells.set_index(["experiment", "category"])
    for i, label in enumerate(labels):
        rows = cells.loc[label].reindex(c.categories)
        mean = rows["mean"].to_numpy(float)
        err = np.vstack([mean - rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float) - mean])
        ax.errorbar(x + (i - (k - 1) / 2) * width, mean, yerr=np.nan_to_num(err), fmt="o", capsize=3,
                    label=comparison_legend(c, label))
    ax.set_xticks(x, c.categories, rotation=45 if len(c.categories) > 8 else 0)
    ax.set_xlabel("category")
    ax.set_ylabel(f"{c.metric} ({'lower' if c.mode == 'min' else 'higher'} is better)")
    ax.set_title(f"{c.metric} per category of each experiment's selected configuration", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    _legend_below(fig, [ax], ncols=1)  # long experiment names: one a row
    return _save(fig, path)


def write_comparison(experiments: Sequence[str | Path], out: str | Path = "compare",
                     metric: str = DEFAULT_METRIC, confidence: float = 0.95,
                     allow_different_data: bool = False) -> Comparison:
    """Compare ``experiments`` (:func:`compare_experiments`) and write ``compare.md``,
    ``compare.html`` (self-contained: the plot inlined), ``compare.csv``, ``compare.tex``,
    ``compare_params.csv`` (the parameters that differ) and ``compare.png`` into ``out``.
    Returns the comparison.

    Example:
        >>> c = write_comparison(["runs/a", "runs/b"], out="compare")   # doctest: +SKIP
        >>> print(c.markdown())                                         # doctest: +SKIP
    """
    c = compare_experiments(experiments, metric, confidence, allow_different_data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_comparison(c, out / "compare.png").read_bytes()
    title = f"# Comparison: {metric}\n\n"
    params = c.params_markdown()
    differ = f"\n\n## Parameters that differ\n\n{params}" if params else ""
    (out / "compare.md").write_text(title + c.markdown() + "\n\n" + "\n\n".join(c.notes) + differ
                                    + "\n\n![comparison plot](compare.png)\n")
    c.params.to_csv(out / "compare_params.csv")
    (out / "compare.html").write_text(c.html(png))
    c.csv_table().to_csv(out / "compare.csv", index=False)
    (out / "compare.tex").write_text(c.latex() + "\n")
    return c

