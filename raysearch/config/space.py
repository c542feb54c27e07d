"""The spec's ``search`` block: objective, sampler, budget, scheduler and the search space.

Space entries use dotted spec keys and one of three forms::

    params.gmm.components: {int: [1, 16], log: true}
    params.gmm.temperature: {float: [0.05, 2.0], log: true}      # or step: 0.05 (not with log)
    params.rotations: {choice: ["0-90-180-270", "0-180"]}
    params.gmm.refit_every: {int: [1, 10], when: {params.gmm.update: em}}

``when`` makes an entry conditional: it is sampled only when the named keys (sampled
earlier in the space, or fixed in the spec) have the given value (or one of a list).
Optuna distributions are built from this directly, define-by-run, so the search never
drifts from the spec. Every entry is checked against the spec before anything starts:
an unknown key or a value the method refuses is an error naming the key.

This module imports neither torch nor ray (optuna only when sampling).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from raysearch.config.objective import _as_tuple, objective
from raysearch.config.schema import SpecError, build

__all__ = ["Param", "SchedulerSpec", "SearchSpec", "parse_search", "suggest", "categorical_choices", "REPEAT_ATTR", "is_repeat"]

@dataclass(frozen=True)
class Param:
    key: str
    kind: Literal["float", "int", "choice"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    when: tuple[tuple[str, tuple], ...] = ()

    def applies(self, values: Mapping[str, Any]) -> bool:
        return all(values.get(k) in allowed for k, allowed in self.when)

    def describe(self) -> str:
        if self.kind == "choice":
            text = "choice " + ", ".join(map(str, self.choices))
        else:
            text = f"{self.kind} [{self.low}, {self.high}]" + (" log" if self.log else "") + (
                f" step {self.step}" if self.step else ""
            )
        if self.when:
            text += "  when " + ", ".join(f"{k} in {list(v)}" for k, v in self.when)
        return text


@dataclass(frozen=True)
class SchedulerSpec:
    kind: Literal["asha", "none"] = "asha"
    grace: int = 1  # evaluations every trial gets before ASHA may stop it
    reduction_factor: float = 3.0  # ASHA keeps the top 1/reduction_factor at each rung

    def validate(self) -> None:
        if self.grace < 1 or self.reduction_factor <= 1:
            raise SpecError("expected grace >= 1 and reduction_factor > 1", key="grace")


@dataclass(frozen=True)
class _RawSearch:
    metric: Any = "val_image_auroc"
    mode: Any = None
    sampler: Literal["tpe", "random", "cmaes", "nsga2", "grid", "qmc"] = "tpe"
    startup_trials: int = 10  # tpe: random trials before its model is used
    trials: int = 16
    concurrent: int = 2
    seed: int = 0
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    space: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SearchSpec:
    metrics: tuple[str, ...]
    modes: tuple[str, ...]
    sampler: str
    trials: int
    concurrent: int
    seed: int
    scheduler: SchedulerSpec
    space: tuple[Param, ...]
    startup_trials: int = 10

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1

    @property
    def uses_asha(self) -> bool:
        return self.scheduler.kind == "asha" and not self.multi_objective


def _choice_value(value: Any) -> Any:
    """A choice as the search samples it: lists (rotation sets) joined by '-', as Optuna stores strings."""
    return "-".join(map(str, value)) if isinstance(value, list) else value


def categorical_choices(search: Mapping[str, Any] | None) -> dict[str, list]:
    """The categorical entries of a raw ``search`` block: dotted key -> its choices.

    Works on an unchecked block (for checks that run before :func:`parse_search`).

    Example:
        >>> categorical_choices({"space": {"params.rotations": {"choice": [[0, 180], "0"]}, "train.lr": {"float": [0.1, 1]}}})
        {'params.rotations': ['0-180', '0']}
    """
    space = (search or {}).get("space") or {}
    if not isinstance(space, Mapping):
        return {}
    return {str(k): [_choice_value(c) for c in v["choice"]] for k, v in space.items()
            if isinstance(v, Mapping) and isinstance(v.get("choice"), list)}


def _parse_param(key: str, entry: Any) -> Param:
    where = f"search.space.{key}"
    if not isinstance(entry, Mapping):
        raise SpecError("expected {float: [lo, hi]}, {int: [lo, hi]} or {choice: [...]}", key=where)
    kinds = [k for k in ("float", "int", "choice") if k in entry]
    if len(kinds) != 1:
        raise SpecError("expected exactly one of float, int, choice", key=where)
    kind = kinds[0]
    allowed = {"float": {"float", "log", "step", "when"}, "int": {"int", "log", "step", "when"},
               "choice": {"choice", "when"}}[kind]
    extra = sorted(set(entry) - allowed)
    if extra:
        raise SpecError(f"unknown key {extra[0]!r}; allowed: {', '.join(sorted(allowed))}", key=where)
    when_raw = entry.get("when") or {}
    if not isinstance(when_raw, Mapping):
        raise SpecError("when: expected a mapping {key: value or [values]}", key=where)
    when = tuple((str(k), _as_tuple(v)) for k, v in when_raw.items())
    if kind == "choice":
        choices = entry["choice"]
        if not isinstance(choices, list) or not choices:
            raise SpecError("choice: expected a non-empty list", key=where)
        # Lists (rotation sets) are valid choices; Optuna stores them as strings.
        choices = tuple(_choice_value(c) for c in choices)
        return Param(key, "choice", choices=choices, when=when)
    bounds = entry[kind]
    if (
        not isinstance(bounds, list)
        or len(bounds) != 2
        or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
        or bounds[0] >= bounds[1]
    ):
        raise SpecError(f"{kind}: expected [low, high] with low < high, got {bounds!r}", key=where)
    log = bool(entry.get("log", False))
    step = entry.get("step")
    if log and step is not None:
        raise SpecError("log and step cannot be combined (Optuna refuses it)", key=where)
    if log and bounds[0] <= 0:
        raise SpecError("log needs a positive lower bound", key=where)
    if kind == "int" and not all(isinstance(b, int) for b in bounds):
        raise SpecError(f"int: expected integer bounds, got {bounds!r}", key=where)
    return Param(key, kind, low=bounds[0], high=bounds[1], log=log, step=step, when=when)


def parse_search(spec: Any) -> SearchSpec:
    """Validate ``spec.search`` against the spec (keys and values) and return it parsed."""
    try:
        return _parse_search(spec)
    except SpecError as err:
        key = err.key if (err.key or "").startswith("search") else f"search.{err.key}" if err.key else "search"
        raise SpecError(err.problem, source=spec.source, key=key) from None


def _parse_search(spec: Any) -> SearchSpec:
    raw = dict(spec.search or {})
    space_raw = raw.get("space") or {}
    if not isinstance(space_raw, Mapping):
        raise SpecError("expected a mapping of dotted keys", key="search.space")
    base = build(_RawSearch, {k: v for k, v in raw.items() if k != "space"})
    metrics, modes = objective(base.metric, base.mode)
    if any(m.startswith("test_") for m in metrics) and spec.selection.split != "test":
        raise SpecError("test metrics select nothing unless selection.split is test (paper-style)",
                        key="search.metric")
    if base.trials < 1 or base.concurrent < 1:
        raise SpecError("trials and concurrent must be >= 1", key="search.trials")
    if base.startup_trials < 0:
        raise SpecError(f"expected startup_trials >= 0, got {base.startup_trials}", key="search.startup_trials")
    if base.sampler == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise SpecError("sampler cmaes needs the cmaes package: pip install 'raysearch[cmaes]'",
                            key="search.sampler") from None
    if len(metrics) > 1 and base.sampler in ("cmaes",):
        raise SpecError("cmaes is single-objective; use nsga2 or tpe", key="search.sampler")
    params = tuple(_parse_param(str(k), v) for k, v in space_raw.items())
    keys = {p.key for p in params}
    for p in params:
        for cond, _ in p.when:
            if cond not in keys and cond not in spec.flat_config():
                raise SpecError(f"when: unknown key {cond!r}", key=f"search.space.{p.key}")
        # Every candidate value must be accepted by the spec: check the bounds and choices.
        samples = list(p.choices) if p.kind == "choice" else [p.low, p.high]
        for value in samples:
            try:
                spec.with_overrides({p.key: value})
            except SpecError as err:
                raise SpecError(f"value {value!r} is refused: {err.problem}",
                                key=f"search.space.{p.key}") from None
    if base.sampler == "grid" and any(p.kind != "choice" and p.step is None for p in params):
        raise SpecError("sampler grid needs choice entries or float/int entries with step", key="search.sampler")
    return SearchSpec(
        metrics=metrics,
        modes=modes,
        sampler=base.sampler,
        trials=base.trials,
        concurrent=base.concurrent,
        seed=base.seed,
        scheduler=base.scheduler,
        space=params,
        startup_trials=base.startup_trials,
    )


REPEAT_ATTR = "repeat_of"  # user attribute of a study trial told the value of the trained trial it repeats


def is_repeat(trial: Any) -> bool:
    """Whether a study trial was told another trial's value instead of being trained
    (see :func:`raysearch.run.searcher.tell_if_repeat`)."""
    return trial.user_attrs.get(REPEAT_ATTR) is not None


def suggest(trial: Any, search: SearchSpec, fixed: Mapping[str, Any]) -> dict[str, Any]:
    """Define-by-run sampling of one config: ``{dotted key: value}`` for the entries that apply.

    ``fixed`` holds the spec's own values, which conditions may refer to.
    """
    values: dict[str, Any] = dict(fixed)
    out: dict[str, Any] = {}
    for p in search.space:
        if not p.applies(values):
            continue
        if p.kind == "choice":
            v = trial.suggest_categorical(p.key, list(p.choices))
        elif p.kind == "int":
            v = trial.suggest_int(p.key, int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
        else:
            v = trial.suggest_float(p.key, float(p.low), float(p.high), log=p.log, step=p.step)
        values[p.key] = out[p.key] = v
    return out


def grid_space(search: SearchSpec) -> dict[str, list]:
    """The value lists of a grid search (choices, or ranges walked by their step)."""
    grid: dict[str, list] = {}
    for p in search.space:
        if p.kind == "choice":
            grid[p.key] = list(p.choices)
        else:
            n = int(math.floor((p.high - p.low) / p.step + 1e-9)) + 1
            grid[p.key] = [p.low + i * p.step for i in range(n)]
            if p.kind == "int":
                grid[p.key] = [int(v) for v in grid[p.key]]
    return grid
