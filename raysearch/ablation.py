"""`raysearch ablate`: the full model and each named factor, over seeds and classes.

The spec's ``ablations`` block names factors as dotted overrides of a base config::

    ablations:
      seeds: [0, 1, 2]
      concurrent: 2               # trials at a time (default: search.concurrent or 1)
      factors:
        no_gmm: {params.loss.gmm_weight: 0}
        single_rotation: {params.rotations: "0", params.loss.rotation_weight: 0}

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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from raysearch import results
from raysearch.lock import exclusive
from raysearch.schema import SpecError
from raysearch.spec import Spec, load_spec

__all__ = ["AblationSpec", "parse_ablations", "resolve_base", "run_ablate", "FULL"]

FULL = "full"  # the variant without any factor applied


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
    for name, overrides in factors.items():
        key = f"ablations.factors.{name}"
        if name == FULL:
            raise SpecError(f"'{FULL}' is the name of the unchanged model; choose another", key=key)
        if not isinstance(overrides, Mapping) or not overrides:
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
) -> int:
    """Run (or resume) the ablation study of ``spec`` in ``output``; returns the exit code."""
    from ray import tune

    from raysearch.experiment import (
        VARIANT_KEY,
        TrialPlan,
        check_resume,
        check_same_spec,
        finished_runs,
        interrupted_exit,
        resume_hint,
        reuse_processes,
        run_experiment,
    )
    from raysearch.ray_setup import init_ray
    from raysearch.results import write_resolved_spec

    ablation = parse_ablations(spec)
    if base is not None and "://" not in base and os.path.abspath(os.path.expanduser(base)) == os.path.abspath(output):
        raise SpecError("an ablation writes to its own folder, never into the experiment it reads; "
                        "pass another --output", key="--output")
    full_spec = resolve_base(spec, base)
    check_resume(output, resume, "ablation")
    if resume:
        check_same_spec(output, full_spec, "an ablation")
    variants = ablation.variants()
    total = len(variants) * len(ablation.seeds)
    if resume and finished_runs(output, "ablate", len(full_spec.classes())) >= total:
        # Resuming a finished ablation changes nothing.
        stream.write(f"raysearch ablate: {spec.name}: all {total} runs have finished; nothing to resume\n")
        if not quiet:
            stream.write(ablation_summary(output) + "\n")
        return 0
    init_ray(address=address, num_cpus=num_cpus)
    write_resolved_spec(full_spec, output)
    if not quiet:
        stream.write(f"raysearch ablate: {spec.name}: {len(variants)} variants ({', '.join(variants)}) x "
                     f"{len(ablation.seeds)} seeds x {len(full_spec.classes())} classes -> {output}\n")
    plan = TrialPlan(full_spec, output, "ablate", variants=ablation.factors)
    tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=ablation.concurrent, reuse_actors=reuse_processes(spec.train))
    param_space = {VARIANT_KEY: tune.grid_search(variants), "train.seed": tune.grid_search(list(ablation.seeds))}
    received = run_experiment(full_spec, plan, tune_config=tune_config, param_space=param_space, total=total,
                              objective="mean_val_image_auroc", mode="max", resume=resume, quiet=quiet,
                              stream=stream)
    if received:
        return interrupted_exit(received, "ablate", "finished runs and classes are kept",
                                resume_hint("ablate", spec, output), sys.stderr)
    if not quiet:
        stream.write(ablation_summary(output) + "\n")
    return 0


def ablation_summary(output: str) -> str:
    """Each factor's paired effect against the full model (validation and test AUROC)."""
    from analysis import ablation_table, load_results
    from raysearch.progress import format_table

    try:
        table = ablation_table(load_results(output))
    except ValueError as err:  # no completed rows of the full model
        return f"no ablation table: {err}"
    cols = ["variant", "val_image_auroc_n", "val_image_auroc_effect", "val_image_auroc_ci_low",
            "val_image_auroc_ci_high", "val_image_auroc_p", "test_image_auroc_effect"]
    headers = ["factor", "pairs", "val effect", "CI low", "CI high", "p", "test effect"]
    rows = table[[c for c in cols if c in table.columns]].values.tolist()
    lines = [format_table(headers[: len(rows[0])] if rows else headers, rows),
             "effects are factor minus full model, paired by seed and class; "
             f"raysearch report {output} has the full tables and plots",
             f"results: {results.redact(results.join(output, 'results'))}"]
    return "\n".join(lines)
