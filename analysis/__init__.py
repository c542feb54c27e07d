"""analysis: rankings, ablation tables, importances, plots and reports of raysearch results.

Works on an experiment folder alone (a copy on a laptop is enough): it reads
``DIR/results/*.parquet``, ``DIR/spec.yaml`` and, for sweeps, ``DIR/optuna.db``.
``import analysis`` imports neither torch nor ray; matplotlib and optuna are imported
only when a figure is drawn or an importance computed.

- :mod:`analysis.load` — :func:`load_results`, the spec and the search objective;
- :mod:`analysis.rank` — :func:`rank_configs`, :func:`per_class_table`, the history;
- :mod:`analysis.ablation` — :func:`ablation_table` (paired effects against ``full``),
  :func:`ablation_paper_table` (a paper's table: full model first, Holm-corrected p) and its
  writers :func:`format_ablation_table` and :func:`ablation_latex`;
- :mod:`analysis.compare` — :func:`compare_experiments`, :func:`write_comparison` (the
  configuration each experiment selected, per category, side by side);
- :mod:`analysis.importance` — :func:`param_importance`, :func:`pareto_front`;
- :mod:`analysis.fidelity` — :func:`selection_fidelity`, :func:`fidelity_line` (does the
  validation objective predict test? a diagnostic on test labels, never used to select);
- :mod:`analysis.plots` — one PNG per function;
- :mod:`analysis.report` — :func:`write_report` (Markdown, HTML, CSV, LaTeX).

Example:
    >>> from analysis import load_results, rank_configs, write_report
    >>> rank_configs(load_results("/tmp/tdemo"))[["rank", "mean", "ci_low", "ci_high", "n"]]  # doctest: +SKIP
    >>> write_report("/tmp/tdemo", out="/tmp/tdemo-report")   # doctest: +SKIP
"""

from analysis.ablation import (
    ablation_caption,
    ablation_latex,
    ablation_paper_table,
    ablation_table,
    format_ablation_table,
    holm,
    variant_labels,
)
from analysis.compare import (
    compare_experiments,
    plot_comparison,
    select_configuration,
    write_comparison,
)
from analysis.fidelity import fidelity_line, selection_fidelity
from analysis.importance import (
    compare_importance,
    load_study,
    param_importance,
    pareto_front,
    trial_counts,
)
from analysis.load import config_key, load_results, load_spec, objective
from analysis.plots import (
    plot_ablation,
    plot_fidelity,
    plot_history,
    plot_importance,
    plot_pareto,
    plot_per_class,
    plot_ranking,
)
from analysis.rank import history_table, per_class_table, rank_configs, trial_table
from analysis.report import write_report

__all__ = [
    "load_results",
    "load_spec",
    "objective",
    "config_key",
    "rank_configs",
    "trial_table",
    "per_class_table",
    "history_table",
    "ablation_table",
    "ablation_paper_table",
    "format_ablation_table",
    "ablation_latex",
    "ablation_caption",
    "variant_labels",
    "holm",
    "compare_experiments",
    "select_configuration",
    "write_comparison",
    "plot_comparison",
    "param_importance",
    "compare_importance",
    "trial_counts",
    "pareto_front",
    "load_study",
    "selection_fidelity",
    "fidelity_line",
    "plot_history",
    "plot_importance",
    "plot_ablation",
    "plot_per_class",
    "plot_pareto",
    "plot_fidelity",
    "plot_ranking",
    "write_report",
]
