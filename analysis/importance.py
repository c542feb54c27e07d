"""Hyperparameter importance and Pareto fronts from a sweep's Optuna study.

A sweep keeps its study in ``DIR/optuna.db`` (SQLite, study named after the spec's
``name``). Optuna is imported inside the functions, so ``import analysis`` stays light.

Importances are computed by two of Optuna's evaluators side by side (fANOVA, seeded, and
PED-ANOVA, deterministic), from :data:`MIN_TRIALS` completed trials on; where they
disagree on a parameter (:func:`compare_importance`), neither number should be read alone.

Example:
    >>> from analysis import param_importance
    >>> param_importance("raysearch-results/distcon-sweep")    # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import pandas as pd

from analysis.load import load_spec

__all__ = ["load_study", "param_importance", "compare_importance", "trial_counts", "pareto_front",
           "objective_names", "completed_trials", "MIN_TRIALS", "EVALUATORS", "DISAGREE_RANK_GAP",
           "DISAGREE_SHARE_GAP"]

MIN_TRIALS = 10  # fewer completed trials: a random forest / quantile split says nothing reliable
# Two evaluators disagree on a parameter when its places in their orders differ by more
# than DISAGREE_RANK_GAP, or its normalised shares by more than DISAGREE_SHARE_GAP.
DISAGREE_RANK_GAP = 1  # places: neighbours swapping is noise, a jump of two is not
DISAGREE_SHARE_GAP = 0.3  # of the total importance (each evaluator's shares sum to 1)
# Optuna trial states as the result rows name trial statuses (see analysis.rank.trial_table).
STATES = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "unfinished",
          "WAITING": "unfinished"}

# name -> (evaluator class name in optuna.importance, constructor arguments)
EVALUATORS: dict[str, tuple[str, dict[str, Any]]] = {
    "fanova": ("FanovaImportanceEvaluator", {"seed": 0}),  # seeded: the forest is random
    "ped_anova": ("PedAnovaImportanceEvaluator", {}),  # importance of reaching the top 10 %
}


def load_study(study_url_or_dir: Any, study_name: str | None = None):
    """An Optuna study from a study object, a storage URL or an experiment folder.

    For a folder the storage is ``sqlite:///<abs DIR>/optuna.db`` and the name defaults to
    the spec's ``name``; for a URL holding one study, its only study.

    Example:
        >>> study = load_study("/tmp/tdemo")                       # doctest: +SKIP
    """
    import optuna

    if isinstance(study_url_or_dir, optuna.Study):
        return study_url_or_dir
    source = str(study_url_or_dir)
    if "://" in source:
        url = source
    else:
        db = os.path.join(os.path.abspath(os.path.expanduser(source)), "optuna.db")
        if not os.path.isfile(db):
            raise FileNotFoundError(f"{source}: no optuna.db; only sweeps (raysearch tune) keep a study")
        url = f"sqlite:///{db}"
        study_name = study_name or load_spec(source).get("name")
    if study_name is None:
        names = optuna.study.get_all_study_names(url)
        if len(names) != 1:
            raise ValueError(f"{url} holds {len(names)} studies {names}; pass study_name")
        study_name = names[0]
    return optuna.load_study(study_name=study_name, storage=url)


def completed_trials(study) -> list:
    """The study's trials in state COMPLETE that were trained (not told a repeated config's value)."""
    import optuna

    from raysearch.config.space import is_repeat

    return [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if not is_repeat(t)]


def trained_only(study):
    """``study``, or an in-memory copy without the trials told a repeated config's value
    (each config counts once in the importances)."""
    import optuna

    from raysearch.config.space import is_repeat

    trials = study.get_trials(deepcopy=False)
    if not any(is_repeat(t) for t in trials):
        return study
    copy = optuna.create_study(directions=study.directions, study_name=study.study_name)
    copy.add_trials([t for t in trials if not is_repeat(t) and t.state.is_finished()])
    return copy


def param_importance(study_url_or_dir: Any, study_name: str | None = None,
                     evaluators: Sequence[str] = ("fanova", "ped_anova"), objective: int = 0
                     ) -> pd.DataFrame:
    """Normalised importance of each searched parameter, one column per evaluator.

    ``evaluators`` are names from :data:`EVALUATORS` (fANOVA: variance of the objective
    explained by each parameter over the whole space; PED-ANOVA: how much each parameter's
    distribution differs in the top 10 % of trials). For a multi-objective study,
    ``objective`` picks which value is explained. Only completed trials count; fewer than
    :data:`MIN_TRIALS` raise ValueError. Rows are sorted by the first evaluator.

    Example:
        >>> param_importance("raysearch-results/distcon-sweep")   # doctest: +SKIP
                                fanova  ped_anova
        param
        train.lr                  0.61       0.55
    """
    import optuna
    import optuna.importance as oi

    unknown = [e for e in evaluators if e not in EVALUATORS]
    if unknown or not evaluators:
        raise ValueError(f"unknown importance evaluators {unknown}; known: {', '.join(EVALUATORS)}")
    study = trained_only(load_study(study_url_or_dir, study_name))
    n = len(completed_trials(study))
    if n < MIN_TRIALS:
        raise ValueError(f"parameter importance needs at least {MIN_TRIALS} completed trials, "
                         f"but study {study.study_name!r} has {n}")
    if not 0 <= objective < len(study.directions):
        raise ValueError(f"objective must index one of the study's {len(study.directions)} objectives, "
                         f"but got {objective=}.")
    columns = {}
    for name in evaluators:
        cls_name, kwargs = EVALUATORS[name]
        evaluator = getattr(oi, cls_name)(**kwargs)
        target = None
        if len(study.directions) > 1:
            # PED-ANOVA reads a target as "lower is better"; fANOVA does not care about sign.
            sign = -1.0 if study.directions[objective] == optuna.study.StudyDirection.MAXIMIZE else 1.0
            target = lambda t, i=objective, s=sign: s * t.values[i]  # noqa: E731
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning, and the target-sign notice
            columns[name] = oi.get_param_importances(study, evaluator=evaluator, target=target)
    table = pd.DataFrame(columns).fillna(0.0)
    table.index.name = "param"
    return table.sort_values(list(evaluators)[0], ascending=False)


def compare_importance(table: pd.DataFrame, rank_gap: int = DISAGREE_RANK_GAP,
                       share_gap: float = DISAGREE_SHARE_GAP) -> pd.DataFrame:
    """:func:`param_importance`'s table with each evaluator's order and a disagreement flag.

    Adds ``<evaluator>_rank`` (1 = most important; ties share the better place) for every
    evaluator column, then ``disagree``: True where, for some pair of evaluators, the
    parameter's places differ by more than ``rank_gap`` or its shares by more than
    ``share_gap``; and ``why`` (the gaps that set it, else empty).

    Example:
        >>> t = pd.DataFrame({"fanova": [0.5, 0.3, 0.15, 0.05], "ped_anova": [0.1, 0.3, 0.1, 0.5]},
        ...                  index=["a", "b", "c", "d"])
        >>> compare_importance(t)[["fanova_rank", "ped_anova_rank", "disagree"]].values.tolist()
        [[1, 3, True], [2, 2, False], [3, 3, False], [4, 1, True]]
    """
    evaluators = [c for c in table.columns if c in EVALUATORS] or list(table.columns)
    out = table.copy()
    for name in evaluators:
        out[f"{name}_rank"] = table[name].rank(ascending=False, method="min").astype(int)
    why = pd.Series([""] * len(out), index=out.index, dtype=object)
    for i, a in enumerate(evaluators):
        for b in evaluators[i + 1:]:
            places = (out[f"{a}_rank"] - out[f"{b}_rank"]).abs()
            shares = (table[a] - table[b]).abs()
            for param in out.index:
                reasons = ([f"{a} place {out.at[param, f'{a}_rank']} vs {b} {out.at[param, f'{b}_rank']}"]
                           if places[param] > rank_gap else [])
                reasons += ([f"shares differ by {shares[param]:.2f}"] if shares[param] > share_gap else [])
                if reasons:
                    why[param] = "; ".join(filter(None, [why[param], *reasons]))
    out["disagree"] = why != ""
    out["why"] = why
    return out


def trial_counts(study) -> dict[str, int]:
    """The study's trials by state, named as the result rows name trial statuses:
    ``completed``, ``pruned``, ``failed`` and ``unfinished`` (running or waiting); and
    ``repeats``, suggestions of a config already trained, told its value instead.

    Example:
        >>> trial_counts(load_study("/tmp/tdemo"))                  # doctest: +SKIP
        {'completed': 12, 'pruned': 3, 'failed': 1, 'unfinished': 0, 'repeats': 2}
    """
    from raysearch.config.space import is_repeat

    counts = dict.fromkeys(("completed", "pruned", "failed", "unfinished", "repeats"), 0)
    for t in study.get_trials(deepcopy=False):
        counts["repeats" if is_repeat(t) else STATES.get(t.state.name, "unfinished")] += 1
    return counts


def pareto_front(study_or_source: Any, study_name: str | None = None,
                 metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """The Pareto-optimal trials of a multi-objective study (``study.best_trials``).

    One row per trial: ``number``, one column per objective, then the parameters.
    Objectives are named by ``metrics``, else (for a folder) by its spec's
    ``search.metric`` list, else by ``study.metric_names``, else ``objective_<i>``. A single-objective study raises
    ValueError (its best trial is ``study.best_trial``).

    Example:
        >>> pareto_front(study, metrics=["val_image_auroc", "latency_ms"])  # doctest: +SKIP
           number  val_image_auroc  latency_ms  train.lr
        0       4            0.912        1.8    0.0031
    """
    study = load_study(study_or_source, study_name)
    if len(study.directions) < 2:
        raise ValueError(f"study {study.study_name!r} has one objective; a Pareto front needs two or more")
    if not metrics and isinstance(study_or_source, (str, os.PathLike)) and "://" not in str(study_or_source):
        metrics = (load_spec(study_or_source).get("search") or {}).get("metric")
        metrics = metrics if isinstance(metrics, list) else None
    names = list(metrics) if metrics else objective_names(study)
    if len(names) != len(study.directions):
        raise ValueError(f"metrics {names} do not name the study's {len(study.directions)} objectives")
    rows = [{"number": t.number, **dict(zip(names, t.values, strict=True)), **t.params} for t in study.best_trials]
    return pd.DataFrame(rows).sort_values(names[0]).reset_index(drop=True)


def objective_names(study) -> list[str]:
    """The study's objective names: ``study.metric_names`` where set, else ``objective_<i>``."""
    names = getattr(study, "metric_names", None)
    return list(names) if names else [f"objective_{i}" for i in range(len(study.directions))]
