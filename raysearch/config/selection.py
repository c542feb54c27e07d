"""What the validation split is made of, and what picks a run's epoch: torch-free.

Self-supervised anomaly detectors train on synthetic anomalies of their own (cutswap on
swapped and pasted patches, clflow on Perlin / CutPaste blends). Scored on validation
anomalies of a family it trains on, a configuration is rewarded for having learnt that
generator, not for detecting real defects. So the validation families of an experiment
are held out from every family that *any* configuration of the spec could train on: the
spec's own values, every choice of its search space and every ablation factor. Every
trial of a sweep or an ablation is then ranked on the same validation set.

Families (``selection.synthesis``; :data:`SYNTHETIC_FAMILIES`):

- ``cutpaste``, ``scar``: CutPaste (Li et al. 2021) boxes and thin rotated scars;
- ``perlin``: a DRAEM (Zavrtanik et al. 2021) Perlin mask filled from another image;
- ``patchswap``: two patches of the same image exchanged (cutswap's negatives);
- ``elastic``, ``blur``, ``noise``: a locally warped, blurred or noisy region, which no
  method trains on.

``other_classes`` (held-out training images of the other classes, datasets of classes
only) is one more family; ``selection.anomalies: both`` combines it with the synthetic
ones. ``val_image_auroc_<family>`` is each family against all validation normals and
``val_image_auroc`` their unweighted mean.

Each method's parameter class declares ``trained_families()``: the families a
configuration trains on.

Example:
    >>> from raysearch.methods.cutswap.params import CutSwapParams
    >>> sorted(CutSwapParams().trained_families())
    ['cutpaste', 'patchswap']
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from typing import Any

from raysearch.config.schema import SpecError, override

__all__ = [
    "SYNTHETIC_FAMILIES",
    "OTHER_CLASSES",
    "FAMILIES",
    "FAMILY_METRICS",
    "VAL_METRICS",
    "family_metric",
    "trained_families",
    "default_families",
    "families_of",
    "validation_families",
    "resolve_selection",
    "selection_summary",
    "selection_metric",
    "objective_note",
    "DEFAULT_OBJECTIVE",
    "AUTO",
]

SYNTHETIC_FAMILIES = ("cutpaste", "scar", "perlin", "patchswap", "elastic", "blur", "noise")
OTHER_CLASSES = "other_classes"
FAMILIES = (*SYNTHETIC_FAMILIES, OTHER_CLASSES)

# Validation metrics that may pick an epoch (all: higher is better).
POOLED_VAL_METRICS = ("val_image_auroc", "val_image_f1_max", "val_pixel_auroc", "val_aupro")
PIXEL_METRICS = ("val_pixel_auroc", "val_aupro")
# Enumerating the search space's choices beyond this many combinations is refused: the
# families a configuration trains on must be known for every combination.
MAX_COMBINATIONS = 100_000


def family_metric(family: str) -> str:
    """The result column of one validation family: ``val_image_auroc_<family>``."""
    return f"val_image_auroc_{family}"


FAMILY_METRICS = tuple(family_metric(f) for f in FAMILIES)
VAL_METRICS = (*POOLED_VAL_METRICS, *FAMILY_METRICS)


def _params_variants(spec: Any) -> Iterable[Mapping[str, Any]]:
    """Dotted ``params.*`` overrides of every configuration the spec can run (as far as
    categorical choices go: numbers never change what a method trains on)."""
    from raysearch.config.space import categorical_choices  # space imports this module

    yield {}
    choices = {k: v for k, v in categorical_choices(spec.search).items() if k.startswith("params.")}
    count = 1
    for values in choices.values():
        count *= len(values)
    if count > MAX_COMBINATIONS:
        raise SpecError(
            f"{count} combinations of categorical choices: too many to check which synthetic "
            "anomalies each trains on; set selection.synthesis and selection.allow_overlap explicitly",
            key="search.space",
        )
    keys = list(choices)
    for combo in itertools.product(*(choices[k] for k in keys)):
        yield dict(zip(keys, combo, strict=True))
    factors = (spec.ablations or {}).get("factors") or {}
    if isinstance(factors, Mapping):
        for overrides in factors.values():
            if isinstance(overrides, Mapping):
                yield {str(k): v for k, v in overrides.items() if str(k).startswith("params.")}


def trained_families(spec: Any) -> frozenset[str]:
    """Every synthetic family that some configuration of ``spec`` trains on.

    Combinations the method refuses (caught later, where the search space is checked)
    are skipped.
    """
    out: set[str] = set()
    for updates in _params_variants(spec):
        try:
            params = override(spec.params, {k[len("params."):]: v for k, v in updates.items()}) if updates else spec.params
        except SpecError:
            continue
        out |= set(params.trained_families())
    return frozenset(out)


def _held_out(trained: frozenset[str]) -> tuple[str, ...]:
    return tuple(f for f in SYNTHETIC_FAMILIES if f not in trained)


def default_families(spec: Any) -> tuple[str, ...]:
    """The known synthetic families minus every family the spec's configurations train on."""
    return _held_out(trained_families(spec))


def families_of(split: str, anomalies: str, synthesis: Iterable[str] | None,
                has_others: bool = False) -> tuple[str, ...]:
    """The families of a validation split, in order: the synthetic ones, then other classes.

    A loaded spec has ``anomalies`` and ``synthesis`` resolved; for a bare
    ``SelectionSpec`` (tests, notebooks) ``anomalies: auto`` takes other classes where the
    dataset has them and ``synthesis`` null takes every known family.

    Example:
        >>> families_of("validation", "both", ["blur"])
        ('blur', 'other_classes')
    """
    if split == "test":
        return ()
    if anomalies == "auto":
        anomalies = OTHER_CLASSES if has_others else "synthetic"
    if anomalies == OTHER_CLASSES:
        return (OTHER_CLASSES,)
    names = SYNTHETIC_FAMILIES if synthesis is None else tuple(synthesis)
    return names + ((OTHER_CLASSES,) if anomalies == "both" else ())


def validation_families(selection: Any, has_others: bool = False) -> tuple[str, ...]:
    """The families of a ``SelectionSpec`` (see :func:`families_of`)."""
    return families_of(selection.split, selection.anomalies, selection.synthesis, has_others)


def _cache_key(spec: Any) -> str:
    return json.dumps([spec.method, repr(spec.params), spec.search, spec.ablations], sort_keys=True, default=str)


_CACHE: dict[str, frozenset[str]] = {}


def _trained_cached(spec: Any) -> frozenset[str]:
    key = _cache_key(spec)
    if key not in _CACHE:
        if len(_CACHE) > 256:
            _CACHE.clear()
        _CACHE[key] = trained_families(spec)
    return _CACHE[key]


def selection_summary(spec: Any) -> str:
    """One line: what the validation split of a resolved spec holds and what picks the epoch.

    Example:
        >>> from raysearch.config.spec import load_spec
        >>> selection_summary(load_spec("search_spaces/demo/cutswap.yaml"))  # doctest: +SKIP
        'scar, perlin, elastic, blur, noise (100 per family) against >= 20 held-out normals; ...'
    """
    sel = spec.selection
    if sel.split == "test":
        return f"the test set (paper-style selection); the epoch is picked by {sel.metric} on it"
    families = validation_families(sel)
    trained = sorted(_trained_cached(spec))
    return (f"{', '.join(families)} ({sel.min_anomalies} per family) against >= {sel.min_normals} held-out "
            f"normals (selection.seed {sel.seed}); the epoch is picked by {sel.metric}"
            + (f"; configurations train on {', '.join(trained)}" if trained else "")
            + ("; overlap allowed" if sel.allow_overlap else ""))


def resolve_selection(spec: Any) -> dict[str, Any]:
    """The resolved ``synthesis`` and ``metric`` of ``spec.selection``, checked against the spec.

    Raises:
        SpecError: a family that some configuration trains on (unless
            ``selection.allow_overlap``), a metric the split cannot have.
    """
    sel = spec.selection
    if sel.split == "test" or sel.anomalies == "other_classes":
        if sel.synthesis:
            why = "selection.split is test" if sel.split == "test" else "selection.anomalies is other_classes"
            raise SpecError(f"synthetic families are unused when {why}; remove selection.synthesis or use "
                            "anomalies: synthetic or both", key="selection.synthesis")
        synthesis: tuple[str, ...] | None = None  # unused
    else:
        trained = _trained_cached(spec)
        if sel.synthesis is None:
            synthesis = _held_out(trained)
            if not synthesis:
                raise SpecError("the spec's configurations train on every known synthetic family; name "
                                "selection.synthesis with selection.allow_overlap: true", key="selection.synthesis")
        else:
            synthesis = tuple(sel.synthesis)
            overlap = [f for f in synthesis if f in trained]
            if overlap and not sel.allow_overlap:
                held_out = list(_held_out(trained))
                raise SpecError(
                    f"validation families {overlap} are trained on by configurations of this spec (its values, "
                    f"search space or ablation factors), so selection would reward learning the generator; "
                    f"use families from {held_out} or set selection.allow_overlap: true",
                    key="selection.synthesis",
                )
    families = families_of(sel.split, sel.anomalies, synthesis)

    metric = sel.metric
    if metric is None:
        first = (spec.search or {}).get("metric") or AUTO
        first = first[0] if isinstance(first, (list, tuple)) and first else first
        if first == AUTO:
            first = DEFAULT_OBJECTIVE
        metric = first if isinstance(first, str) and first.startswith("val_") else DEFAULT_OBJECTIVE
    allowed = list(POOLED_VAL_METRICS) + [family_metric(f) for f in families]
    if metric not in allowed:
        raise SpecError(f"expected one of {', '.join(allowed)} for this validation split, got {metric!r}",
                        key="selection.metric")
    if metric in PIXEL_METRICS and sel.split != "test" and (OTHER_CLASSES in families):
        key = "selection.metric" if sel.metric is not None else "search.metric"
        raise SpecError(f"{metric} needs pixel masks, and other-class validation anomalies have none; "
                        "use val_image_auroc", key=key)
    return {"synthesis": synthesis, "metric": metric}


# ``search.metric: auto`` (the default) for every method and dataset, chosen by evidence:
# benchmarks/selection_fidelity.py replays every candidate objective (the image AUROC
# mean, each family alone, val_pixel_auroc, val_aupro, their mean with the image AUROC)
# with epoch selection redone on each, over 24 configurations per method and task on toy
# textures and real photographs (BENCHMARKS.md, "Selection fidelity"). For cutswap and
# clflow, which make maps, the pixel AUROC predicted test worst (mean Spearman 0.45 over
# their six tasks, against 0.57 for the image mean) and AUPRO tied with the image mean
# (0.565) at a much higher evaluation cost.
DEFAULT_OBJECTIVE = "val_image_auroc"
AUTO = "auto"
OBJECTIVE_EVIDENCE = ("Across six tasks of cutswap and clflow (toy textures, two real-photograph tasks), "
                      "Spearman(val, test) averaged 0.57 for val_image_auroc, 0.57 for val_aupro and 0.45 for "
                      "val_pixel_auroc (BENCHMARKS.md, Selection fidelity).")


def objective_note(params_cls: type) -> str:
    """What ``search.metric: auto`` becomes for a method, and why (``raysearch methods NAME``)."""
    if params_cls().makes_maps():
        return (f"default objective (search.metric: auto): {DEFAULT_OBJECTIVE}; this method's pixel metrics "
                f"(val_pixel_auroc, val_aupro) are recorded and may be chosen, but they ranked configurations "
                f"no better. {OBJECTIVE_EVIDENCE}")
    return (f"default objective (search.metric: auto): {DEFAULT_OBJECTIVE} (this method makes no anomaly maps); "
            "for datasets of classes its validation anomalies are held-out images of the other classes.")


def selection_metric(spec: Any) -> str:
    """The metric that picks each class's best epoch: ``selection.metric``, resolved when the
    spec loaded (the search's first objective when it is a val_* metric, else
    val_image_auroc). With ``selection.split: test`` the val_* metrics are the test set's."""
    return spec.selection.metric or "val_image_auroc"
