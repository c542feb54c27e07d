"""The objective of a trial, in one place: metric names and modes, the keys reports carry,
and the rule that turns per-class values into a trial's value. Torch-free, Ray-free.

- :data:`METRICS`: what a search may optimise and its natural direction;
  :func:`objective` reads a ``search:`` block's ``metric`` / ``mode``.
- A trial reports ``mean_<metric>`` (:func:`report_key`; :func:`metric_of` strips it).
- :func:`trial_value`: a trial's objective is the mean over its classes, and it exists
  only when *every* class has a finite value. The worker's last report, the searcher's
  adoption of trials from their rows and the ranking (``analysis.rank.trial_table``)
  apply this one rule, so Optuna is never told COMPLETE for a trial the ranking calls
  unfinished. Before the last class ends, :func:`running_means` is the mean over the
  classes so far (what ASHA compares between trials at the same progress).
- :data:`DECIMALS`: every metric value, difference and interval bound is shown to this
  many decimals, on the console, in the report, in ``compare`` and in ``export``'s
  provenance (:func:`format_metric`, :func:`round_metric`).

Example:
    >>> report_key("val_pixel_auroc"), metric_of("mean_val_pixel_auroc")
    ('mean_val_pixel_auroc', 'val_pixel_auroc')
    >>> trial_value([0.9, 0.7], 2), trial_value([0.9, float("nan")], 2)
    (0.8, nan)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from raysearch.config.schema import SpecError
from raysearch.config.selection import FAMILY_METRICS

__all__ = ["METRICS", "REPORT_PREFIX", "DECIMALS", "objective", "report_key", "metric_of", "trial_value",
           "running_means", "final_means", "format_metric", "round_metric"]

# Metrics a search may optimise (class means over the classes a trial finished).
METRICS = {
    "val_image_auroc": "max",
    "val_image_f1_max": "max",
    "val_pixel_auroc": "max",
    "val_aupro": "max",
    **{name: "max" for name in FAMILY_METRICS},  # one validation family's image AUROC
    "test_image_auroc": "max",  # paper-style only (selection.split: test)
    "latency_ms": "min",
    "num_params": "min",
}
REPORT_PREFIX = "mean_"
DECIMALS = 4  # decimals of a metric value wherever one is shown: AUROC differences of 1e-4 are visible


def format_metric(value: Any, signed: bool = False, missing: str = "n/a") -> str:
    """A metric value (or a difference of two) as shown everywhere: :data:`DECIMALS` places,
    ``missing`` for None or NaN; ``signed`` puts a ``+`` before positive values.

    Example:
        >>> format_metric(0.99675), format_metric(0.00042, signed=True), format_metric(float("nan"))
        ('0.9968', '+0.0004', 'n/a')
    """
    v = _finite(value)
    if v is None:
        return missing
    return f"{v:{'+' if signed else ''}.{DECIMALS}f}"


def round_metric(value: Any) -> float | None:
    """A metric value rounded to :data:`DECIMALS` places for a file a person reads (None for
    None or NaN), so ``0.9994999999999999`` is written ``0.9995``.

    Example:
        >>> round_metric(0.9994999999999999), round_metric(None)
        (0.9995, None)
    """
    v = _finite(value)
    return None if v is None else round(v, DECIMALS)


def _as_tuple(value: Any) -> tuple:
    """One value or a list of them, as a tuple (search metrics, modes, `when` values)."""
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def objective(metric: Any = None, mode: Any = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The search metrics and their modes from a ``search:`` block's ``metric`` and ``mode``.

    Each may be one value or a list (multi-objective); a missing metric is
    ``val_image_auroc`` (a loaded spec has ``auto`` resolved already, see
    :data:`raysearch.config.selection.DEFAULT_OBJECTIVE`) and a missing mode each metric's
    natural direction.

    Example:
        >>> objective(["val_image_auroc", "latency_ms"])
        (('val_image_auroc', 'latency_ms'), ('max', 'min'))
    """
    metrics = _as_tuple(metric or "val_image_auroc")
    for m in metrics:
        if m not in METRICS:
            raise SpecError(f"unknown metric {m!r}; known: auto, {', '.join(METRICS)}", key="search.metric")
    if mode is None:
        return metrics, tuple(METRICS[m] for m in metrics)
    modes = _as_tuple(mode)
    if len(modes) != len(metrics) or any(m not in ("min", "max") for m in modes):
        raise SpecError(f"expected min or max for each metric, got {mode!r}", key="search.mode")
    return metrics, modes


def report_key(metric: str) -> str:
    """The key of a metric's class mean in a trial's reports."""
    return REPORT_PREFIX + metric


def metric_of(key: str) -> str:
    """The metric a report key averages (the key itself when it is no class mean)."""
    return key.removeprefix(REPORT_PREFIX)


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def trial_value(values: Iterable[Any], n_classes: int) -> float:
    """A trial's objective: the mean of its ``n_classes`` per-class values, NaN unless every
    one is finite (a trial with a missing or diverged class has no value)."""
    finite = [_finite(v) for v in values]
    if len(finite) < n_classes or any(v is None for v in finite):
        return float("nan")
    return sum(finite) / len(finite)  # type: ignore[arg-type]


def running_means(per_class: Sequence[Mapping[str, Any]], metrics: Iterable[str]) -> dict[str, float]:
    """``mean_<metric>`` over the classes so far that have the metric (NaN where none has):
    a trial's value while it runs."""
    out = {}
    for name in metrics:
        vals = [v for m in per_class if (v := _finite(m.get(name))) is not None]
        out[report_key(name)] = sum(vals) / len(vals) if vals else float("nan")
    return out


def final_means(per_class: Sequence[Mapping[str, Any]], metrics: Iterable[str], n_classes: int) -> dict[str, float]:
    """``mean_<metric>`` once every class has ended: :func:`trial_value` of each metric."""
    return {report_key(name): trial_value([m.get(name) for m in per_class], n_classes) for name in metrics}
