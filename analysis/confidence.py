"""Selection confidence: can the validation objective rank these configurations? Label-free.

The fidelity diagnostic (:mod:`analysis.fidelity`) needs test labels. This check reads
nothing of the test set: only each row's validation values and the sizes of its
validation split. It answers two questions a user must ask before trusting a ranking:

- **Is the spread between configurations larger than the noise of one measurement?**
  Each class's objective is an AUROC over ``val_normals`` normal and ``val_anomalies``
  anomalous validation images, so its standard error follows Hanley & McNeil (1982). A
  family mean is treated as one AUROC over the pooled anomalies, and a pixel AUROC as one
  over the images (pixels of one image are not independent, so the image counts are the
  effective sample size). A trial's class mean has ``SE = sqrt(sum SE_c^2) / C``. The
  noise is ``1.96 x`` the median trial SE (a 95 % half-width); the spread is the range
  of the complete trials' objective. The objective **cannot rank** the trials when the
  spread is no larger than the noise, and the line also counts the trials within the
  noise of the best (which the objective cannot tell apart from it). Every trial is
  scored on the same validation images, so a difference between two trials is less
  noisy than two independent SEs suggest: the threshold is one half-width, not two (on
  the ten replayed sweeps of benchmarks/selection_fidelity.py it flagged four of the
  five whose Spearman(val, test) was below 0.5, and one of the five above 0.8).
- **Does each validation family say anything?** A family whose image AUROC is within
  ``1.96 x SE(0.5)`` of chance for every trial carries no ranking signal; one at 0.99
  or above for every trial is saturated (it cannot separate good from better). Both are
  named; "every family is at chance" is the semantic-data failure where synthetic
  defects do not resemble the test anomalies at all.

Example:
    >>> round(auroc_se(0.5, 40, 20), 4)
    0.0797
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from raysearch.config.objective import format_metric

__all__ = ["auroc_se", "SelectionConfidence", "selection_confidence", "sweep_confidence", "CHANCE_Z", "SATURATED"]

CHANCE_Z = 1.96
# When no synthetic family separates anything, the test anomalies are likely of another
# kind: on the semantic task of benchmarks/selection_fidelity.py other categories ranked
# distcon with Spearman 0.90 where the synthetic families gave 0.49.
ALL_AT_CHANCE_HINT = "semantic anomalies? validate on other classes: selection.anomalies: other_classes"
SATURATED = 0.99
MIN_TRIALS = 3
FAMILY_PREFIX = "val_image_auroc_"


def auroc_se(auroc: float, n_pos: float, n_neg: float) -> float:
    """Hanley-McNeil standard error of an AUROC over ``n_pos`` positives and ``n_neg`` negatives.

    Example:
        >>> round(auroc_se(0.9, 100, 100), 4)
        0.0226
    """
    if not (n_pos >= 1 and n_neg >= 1) or not math.isfinite(auroc):
        return float("nan")
    a = min(max(auroc, 0.0), 1.0)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


@dataclass
class SelectionConfidence:
    """The verdict of :func:`selection_confidence`; ``line()`` is what the console, the report
    and export print."""

    objective: str
    n_trials: int = 0
    spread: float = float("nan")
    noise: float = float("nan")
    within_noise: int = 0
    can_rank: bool | None = None  # None: too few complete trials to judge
    at_chance: list[str] = field(default_factory=list)
    saturated: list[str] = field(default_factory=list)
    all_at_chance: bool = False
    reason: str | None = None

    def line(self) -> str:
        if self.can_rank is None:
            return f"selection confidence: not assessed ({self.reason})"
        head = (f"validation {'can' if self.can_rank else 'cannot'} rank these {self.n_trials} configurations: "
                f"spread {format_metric(self.spread)}, noise +-{format_metric(self.noise)}")
        if self.can_rank and self.within_noise > 1:
            head += f"; {self.within_noise} are within the noise of the best"
        notes = []
        if self.all_at_chance:
            notes.append(f"every family is at chance ({ALL_AT_CHANCE_HINT})")
        else:
            if self.at_chance:
                notes.append("at chance: " + ", ".join(self.at_chance))
            if self.saturated:
                notes.append("saturated: " + ", ".join(self.saturated))
        return "; ".join([head, *notes])


def _family_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith(FAMILY_PREFIX) and df[c].notna().any()]


def _count(value: object) -> float:
    """A validation count from a row (None / NaN where an older row lacks it)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def _row_se(value: float, row: pd.Series, families: Sequence[str] | None, n_split_families: int) -> float:
    """One class's objective SE from its validation counts."""
    normals, anomalies = _count(row.get("val_normals")), _count(row.get("val_anomalies"))
    if families is not None and len(families) and n_split_families:
        # The objective reads only some of the split's families: their share of its anomalies.
        anomalies = anomalies * min(len(families), n_split_families) / n_split_families
    return auroc_se(value, anomalies, normals)


def selection_confidence(df: pd.DataFrame, objective: str, *, families: Sequence[str] | None = None,
                         min_trials: int = MIN_TRIALS) -> SelectionConfidence:
    """The label-free confidence check of a sweep's rows (see the module docstring).

    Args:
        df: result rows (``status``, ``trial_id``, ``normal_class``, the objective,
            ``val_normals``, ``val_anomalies``, ``val_image_auroc_<family>``).
        objective: the column that ranks the trials (an AUROC-like value, higher is better;
            for a pixel metric the SE is taken at the image counts, and for AUPRO it is the
            AUROC's, an approximation).
        families: the families the objective reads (None: every family of the split).
    """
    out = SelectionConfidence(objective)
    if df.empty:
        out.reason = "no searched rows"
        return out
    if objective not in df.columns:
        out.reason = f"{objective} is not in the rows"
        return out
    rows = df[df["status"] == "completed"] if "status" in df.columns else df
    rows = rows[np.isfinite(pd.to_numeric(rows[objective], errors="coerce"))]
    n_classes = df["normal_class"].nunique()
    fam_cols = _family_columns(df)
    n_split = len(fam_cols)
    names = None if families is None else list(families)
    trial_values, trial_ses = [], []
    for _, group in rows.groupby("trial_id", sort=False):
        group = group.drop_duplicates("normal_class", keep="last")
        if group["normal_class"].nunique() < n_classes:
            continue
        values = group[objective].astype(float).to_numpy()
        ses = [_row_se(v, r, names, n_split) for v, (_, r) in zip(values, group.iterrows(), strict=True)]
        trial_values.append(float(values.mean()))
        trial_ses.append(math.sqrt(sum(s * s for s in ses)) / len(ses))
    out.n_trials = len(trial_values)
    if out.n_trials < min_trials:
        out.reason = f"{out.n_trials} complete configuration(s); needs {min_trials}"
        return out
    ses = np.asarray(trial_ses)
    if not np.isfinite(ses).any():
        out.reason = "the rows do not record the validation sizes (val_normals, val_anomalies)"
        return out
    values = np.asarray(trial_values)
    out.noise = CHANCE_Z * float(np.nanmedian(ses))
    out.spread = float(values.max() - values.min())
    out.can_rank = bool(out.spread > out.noise)
    out.within_noise = int((values >= values.max() - out.noise).sum())
    _judge_families(out, rows, fam_cols)
    return out


def _judge_families(out: SelectionConfidence, rows: pd.DataFrame, fam_cols: list[str]) -> None:
    """Name the families every completed row scores at chance or at saturation."""
    n_split = len(fam_cols)
    for col in fam_cols:
        sub = rows[rows[col].notna()]
        if sub.empty:
            continue
        values = sub[col].astype(float).to_numpy()
        per_family = sub["val_anomalies"].map(_count).to_numpy() / max(n_split, 1) if "val_anomalies" in sub else None
        normals = sub["val_normals"].map(_count).to_numpy() if "val_normals" in sub else None
        name = col[len(FAMILY_PREFIX):]
        if per_family is not None and normals is not None:
            half = np.array([CHANCE_Z * auroc_se(0.5, p, n) for p, n in zip(per_family, normals, strict=True)])
            if np.all(np.abs(values - 0.5) <= half):
                out.at_chance.append(name)
                continue
        if np.all(values >= SATURATED):
            out.saturated.append(name)
    out.all_at_chance = bool(fam_cols) and len(out.at_chance) == len(fam_cols)


def sweep_confidence(df: pd.DataFrame, metric: str, mode: str = "max") -> SelectionConfidence:
    """:func:`selection_confidence` of an experiment's searched rows (not its ablation rows)
    ranked by ``metric``: what ``raysearch tune``'s summary, the report and export print."""
    if not (metric.startswith("val_") and mode == "max") or metric == "val_image_f1_max":
        out = SelectionConfidence(metric)
        out.reason = f"{metric} ({mode}) is not a validation AUROC"
        return out
    if not df.empty and "kind" in df.columns:
        df = df[df["kind"] != "ablate"]
    families = None
    if metric.startswith(FAMILY_PREFIX):  # one family alone
        families = [metric[len(FAMILY_PREFIX):]]
    return selection_confidence(df, metric, families=families)
