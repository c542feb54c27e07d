"""`raysearch ablate`: the full model and each named factor, over seeds and classes.

The spec's ``ablations`` block names factors as dotted overrides of a base config::

    ablations:
      seeds: [0, 1, 2]
      concurrent: 2               # trials at a time (default: search.concurrent or 1)
      factors:
        no_gmm: {label: "without the GMM loss", params.loss.gmm_weight: 0}
        single_rotation: {params.rotations: "0", params.loss.rotation_weight: 0}

A factor's optional ``label`` is its name in reports (else the name with underscores as
spaces); it changes nothing that runs.

The base config is the spec's own values, an exported config (``--base FILE.yaml``) or
the best trial of an experiment (``--base DIR``). Every variant ("full" and each
factor) runs for every seed as one Tune trial over the spec's classes: a grid without a
searcher, with the same trial driver, results store, fault handling and ``--resume``
as sweeps. Rows carry ``kind = ablate`` and the ``variant``; ``analysis.ablation``
turns them into paired effects. An ablation writes to its own experiment folder.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from raysearch.config.objective import format_metric
from raysearch.config.schema import SpecError
from raysearch.config.spec import Spec, load_spec
from raysearch.store import results
from raysearch.store.lock import exclusive

__all__ = ["AblationSpec", "parse_ablations", "resolve_base", "run_ablate", "dry_run", "ablation_summary", "FULL"]

FULL = "full"  # the variant without any factor applied
LABEL = "label"  # a factor's optional key: its name in reports (else the name, underscores as spaces)


@dataclass(frozen=True)
class AblationSpec:
    seeds: tuple[int, ...]
    factors: dict[str, dict[str, Any]]
    concurrent: int

    def variants(self) -> list[str]:
        return [FULL, *self.factors]


def parse_ablations(spec: Spec) -> AblationSpec:
    """Check the spec's ``ablations`` block; every factor must give a valid spec."""
    raw: Mapping[str, Any] = spec.ablations or {}
    unknown = sorted(set(raw) - {"seeds", "factors", "concurrent"})
    if unknown:
        raise SpecError("unknown key; allowed keys here: concurrent, factors, seeds", key=f"ablations.{unknown[0]}")
    seeds = raw.get("seeds", [spec.train.seed])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SpecError(f"expected a non-empty list of integers, got {seeds!r}", key="ablations.seeds")
    if len(set(seeds)) != len(seeds):
        raise SpecError(f"seeds repeat: {seeds}", key="ablations.seeds")
    factors = raw.get("factors")
    if not isinstance(factors, Mapping) or not factors:
        raise SpecError("expected a mapping of factor name -> {dotted key: value}", key="ablations.factors")
    checked: dict[str, dict[str, Any]] = {}
    for name, entry in factors.items():
        key = f"ablations.factors.{name}"
        if name == FULL:
            raise SpecError(f"'{FULL}' is the name of the unchanged model; choose another", key=key)
        if not isinstance(entry, Mapping):
            raise SpecError("expected a non-empty mapping of dotted keys to values", key=key)
        overrides = {k: v for k, v in entry.items() if k != LABEL}  # the label names the factor in reports
        if LABEL in entry and not (isinstance(entry[LABEL], str) and entry[LABEL].strip()):
            raise SpecError(f"expected a non-empty text, got {entry[LABEL]!r}", key=f"{key}.{LABEL}")
        if not overrides:
            raise SpecError("expected a non-empty mapping of dotted keys to values", key=key)
        try:
            spec.with_overrides(overrides)
        except SpecError as err:
            raise SpecError(err.problem, key=f"{key}.{err.key}" if err.key else key) from None
        checked[str(name)] = dict(overrides)
    concurrent = raw.get("concurrent", (spec.search or {}).get("concurrent", 1))
    if not isinstance(concurrent, int) or concurrent < 1:
        raise SpecError(f"expected an integer >= 1, got {concurrent!r}", key="ablations.concurrent")
    return AblationSpec(seeds=tuple(seeds), factors=checked, concurrent=concurrent)


# Keys of a trial's config that describe the experiment, not the model: a base taken from
# another experiment keeps this spec's data, classes, seeds and epochs (train.seed and
# train.epochs are left out too).
_KEPT_FROM_SPEC = ("data.", "selection.", "method")


def _best_trial_overrides(experiment: str, spec: Spec) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config of the experiment's best completed trial (all classes), as overrides."""
    from analysis.export import best_trials
    from analysis.load import objective

    metrics, modes = objective(spec.to_dict())
    ranked = best_trials(experiment, metrics[0], modes[0])
    if not ranked:
        raise SpecError(f"{experiment} has no trial that completed every class", key="--base")
    best = ranked[0]
    flat = json.loads(best["rows"][0]["config_json"])
    overrides = {k: v for k, v in flat.items()
                 if not k.startswith(_KEPT_FROM_SPEC) and k not in ("train.seed", "train.epochs")}
    origin = {"experiment": experiment, "trial_id": best["trial_id"],
              "optuna_trial": best["rows"][0].get("optuna_trial"), "metric": metrics[0], "value": best["value"]}
    return overrides, origin


def resolve_base(spec: Spec, base: str | None) -> Spec:
    """The spec whose values are the full model: the spec itself, a config file, or a best trial."""
    if base is None:
        return spec
    path = os.path.expanduser(base)
    if os.path.isdir(path) or "://" in base:
        overrides, origin = _best_trial_overrides(path, spec)
        out = spec.with_overrides(overrides)
        return out.with_overrides({"provenance": {**dict(spec.provenance), "ablation_base": origin}})
    if not os.path.isfile(path):
        raise SpecError("expected an experiment folder or a spec file", key="--base", source=base)
    exported = load_spec(path)
    if exported.method != spec.method:
        raise SpecError(f"the base is a {exported.method} config, the spec is {spec.method}", key="--base",
                        source=base)
    flat = exported.flat_config()
    overrides = {k: v for k, v in flat.items()
                 if not k.startswith(_KEPT_FROM_SPEC) and k not in ("train.seed", "train.epochs")}
    out = spec.with_overrides(overrides)
    return out.with_overrides({"provenance": {**dict(spec.provenance), "ablation_base": {"config": path}}})


@exclusive("ablate")
def run_ablate(
    spec: Spec,
    output: str,
    *,
    base: str | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    resume: bool = False,
    quiet: bool = False,
    stream: TextIO = sys.stderr,
    log: Sequence[str] = (),
) -> int:
    """Run (or resume) the ablation study of ``spec`` in ``output``; returns the exit code.

    ``log``: trackers that also get every evaluation (``mlflow``, ``wandb``; see
    :mod:`raysearch.train.trackers`).
    """
    from ray import tune

    from analysis.load import objective
    from raysearch.config.objective import report_key
    from raysearch.run.experiment import (
        VARIANT_KEY,
        Job,
        TrialPlan,
        reuse_processes,
        run_experiment,
        run_job,
    )

    ablation = parse_ablations(spec)
    if base is not None and "://" not in base and os.path.abspath(os.path.expanduser(base)) == os.path.abspath(output):
        raise SpecError("an ablation writes to its own folder, never into the experiment it reads; "
                        "pass another --output", key="--output")
    full_spec = resolve_base(spec, base)
    variants = ablation.variants()
    total = len(variants) * len(ablation.seeds)

    def start(on_ray_lost) -> list[int]:
        if not quiet:
            stream.write(f"raysearch ablate: {spec.name}: {len(variants)} variants ({', '.join(variants)}) x "
                         f"{len(ablation.seeds)} seeds x {len(full_spec.classes())} classes -> "
                         f"{results.redact(output)}\n")
        plan = TrialPlan(full_spec, output, "ablate", variants=ablation.factors)
        tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=ablation.concurrent,
                                      reuse_actors=reuse_processes(spec.train))
        param_space = {VARIANT_KEY: tune.grid_search(variants), "train.seed": tune.grid_search(list(ablation.seeds))}
        metrics, modes = objective(full_spec.to_dict())  # the progress line's "best" is the table's metric
        return run_experiment(full_spec, plan, tune_config=tune_config, param_space=param_space, total=total,
                              objective=report_key(metrics[0]), mode=modes[0], resume=resume, quiet=quiet,
                              stream=stream, log=log, on_ray_lost=on_ray_lost)

    job = Job(command="ablate", noun="ablation", runs="runs", kept="finished runs and classes are kept",
              spec=full_spec, output=output, total=total, summary=lambda: ablation_summary(output), start=start)
    return run_job(job, resume=resume, address=address, num_cpus=num_cpus, quiet=quiet, stream=stream)


def ablation_summary(output: str) -> str:
    """The ablation table of ``output`` for the console: for the objective (and its test
    counterpart) the full model first, then each factor in the spec's order by its label,
    with its mean ± CI, its paired difference to the full model ± CI and the Holm-corrected
    p-value (:func:`analysis.ablation.ablation_paper_table`)."""
    from analysis.ablation import (
        ablation_caption,
        ablation_paper_table,
        factor_labels,
        format_ablation_table,
    )
    from analysis.load import load_results, load_spec, objective
    from raysearch.train.progress import format_table

    df = load_results(output)
    spec = load_spec(output)
    metric = objective(spec)[0][0]
    labels = factor_labels(spec)
    order = [v for v in labels if v != FULL]
    metrics = [metric]
    if metric.startswith("val_") and f"test_{metric[4:]}" in df.columns:
        metrics.append(f"test_{metric[4:]}")
    lines = []
    for m in metrics:
        try:
            table = ablation_paper_table(df, m, order=order, labels=labels)
        except ValueError as err:  # no completed rows of the full model
            return f"no ablation table: {err}"
        text = format_ablation_table(table)
        lines += [format_table(list(text.columns), text.values.tolist()), ablation_caption(table), ""]
    lines += [f"raysearch report {output} has the full tables and plots",
              f"results: {results.redact(results.join(output, 'results'))}"]
    return "\n".join(lines)


def dry_run(spec: Spec, base: str | None = None, stream: TextIO | None = None) -> AblationSpec:
    """Print the ablation that ``raysearch ablate`` would run (the full model's origin, every
    variant with its overrides, the seeds, the classes and the number of class runs) to
    ``stream`` (default the current stdout); start nothing.

    Example:
        >>> dry_run(load_spec("search_spaces/demo/distcon.yaml"))   # doctest: +SKIP
        ablation distcon-digits-demo: method distcon, 2 classes (0, 1)
        ...
    """
    from raysearch.run.plan import plan_head, resources_line

    stream = stream or sys.stdout
    ablation = parse_ablations(spec)
    full_spec = resolve_base(spec, base)
    t = full_spec.train
    origin = (full_spec.provenance or {}).get("ablation_base") or {}
    if "config" in origin:
        where = f"the config file {origin['config']}"
    elif "trial_id" in origin:
        where = (f"trial {origin['trial_id']} of {origin['experiment']} (best {origin['metric']} "
                 f"{format_metric(origin['value'])})")
    else:
        where = "the spec's own values"
    classes = plan_head(full_spec, "ablation", stream)
    stream.write(f"full model: {where}\n")
    own, full = spec.flat_config(), full_spec.flat_config()
    changed = {k: v for k, v in full.items() if own.get(k) != v}
    if changed:
        stream.write(f"  differs from the spec in: {', '.join(f'{k}={v!r}' for k, v in changed.items())}\n")
    stream.write(f"variants ({len(ablation.variants())}):\n")
    stream.write(f"  {FULL}: no overrides\n")
    for name, overrides in ablation.factors.items():
        stream.write(f"  {name}: {', '.join(f'{k}={v!r}' for k, v in overrides.items())}\n")
    stream.write(f"seeds: {', '.join(map(str, ablation.seeds))}\n")
    trials = len(ablation.variants()) * len(ablation.seeds)
    stream.write(f"runs: {len(ablation.variants())} variants x {len(ablation.seeds)} seeds = {trials} trials, "
                 f"{ablation.concurrent} at a time; x {len(classes)} classes = {trials * len(classes)} class runs "
                 f"of {t.epochs} epochs each\n")
    stream.write(resources_line(t, "per trial") + "\n")
    return ablation
