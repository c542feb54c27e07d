"""Export the best configurations of an experiment as spec files that `raysearch train` runs.

Each exported file is the experiment's resolved spec (``DIR/spec.yaml``) with one
trial's configuration applied, named ``<experiment>-<rank>``, and a ``provenance`` block
saying where it came from: the experiment folder, the trial id and Optuna trial number,
the metric that ranked it and its per-class values, and the checkpoint of every class.
Only trials that completed every class are exported, ranked by the class mean of the
spec's search metric (validation unless the spec selects on test). The output has no
timestamps, so exporting twice writes the same bytes.

Example:
    >>> paths = export_best("raysearch-results/distcon-digits-demo", top=3, to="best")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

from analysis.load import objective
from raysearch import results

__all__ = ["best_trials", "export_best"]

_SECTIONS = ("data", "selection", "train")


def best_trials(experiment: str, metric: str, mode: str = "max") -> list[dict[str, Any]]:
    """Trials that completed every class, best first: trial id, value, per-class rows."""
    table = results.read_results(experiment)
    rows = table.to_pylist() if table.num_rows else []
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_trial.setdefault(r["trial_id"], []).append(r)
    most = max((len(rs) for rs in by_trial.values()), default=0)
    ranked = []
    for tid, rs in by_trial.items():
        if len(rs) < most or any(r["status"] != "completed" or r.get(metric) is None for r in rs):
            continue
        value = sum(float(r[metric]) for r in rs) / len(rs)
        if math.isfinite(value):
            ranked.append({"trial_id": tid, "value": value, "rows": sorted(rs, key=lambda r: r["class_index"])})
    ranked.sort(key=lambda t: (-t["value"] if mode == "max" else t["value"], t["trial_id"]))
    return ranked


def _apply_flat(spec: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """The resolved spec with a trial's flat config (``params.x.y``, ``train.lr``...) applied."""
    out = json.loads(json.dumps(spec))  # a deep copy of plain data
    for key, value in flat.items():
        section, _, rest = key.partition(".")
        if section == "params":
            out.setdefault("params", {})[rest] = value
        elif section in _SECTIONS:
            node = out.setdefault(section, {})
            parts = rest.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
    return out


def export_best(experiment: str, top: int = 1, to: str = "best") -> list[Path]:
    """Write the ``top`` best trials of ``experiment`` as spec files under ``to``."""
    spec_uri = results.join(experiment, "spec.yaml")
    if not results.exists(spec_uri):
        raise ValueError(f"{experiment}: no spec.yaml (the resolved spec that raysearch train, tune and ablate "
                         "write beside results/); export needs it to write specs that run")
    spec = yaml.safe_load(results.read_bytes(spec_uri).decode())
    metrics, modes = objective(spec)
    metric, mode = metrics[0], modes[0]
    ranked = best_trials(experiment, metric, mode)
    if not ranked:
        raise ValueError(f"{experiment}: no trial completed every class; nothing to export")
    os.makedirs(to, exist_ok=True)
    paths = []
    for rank, trial in enumerate(ranked[:top], start=1):
        first = trial["rows"][0]
        out = _apply_flat(spec, json.loads(first["config_json"]))
        out["name"] = f"{spec['name']}-{rank}"
        out["provenance"] = {
            **(spec.get("provenance") or {}),
            "exported_from": {
                "experiment": os.path.abspath(experiment) if "://" not in experiment else experiment,
                "name": spec["name"],
                "trial_id": trial["trial_id"],
                "optuna_trial": first.get("optuna_trial"),
                "variant": first.get("variant"),
                "rank": rank,
                "metric": metric,
                "mode": mode,
                "value": trial["value"],
                "per_class": {r["normal_class"]: {m: r.get(m) for m in (metric, "test_image_auroc")}
                              for r in trial["rows"]},
                "checkpoints": {r["normal_class"]: r.get("checkpoint") for r in trial["rows"]},
            },
        }
        path = Path(to) / f"{spec['name']}-{rank}.yaml"
        text = f"# exported by raysearch from {spec['name']} (rank {rank} of {len(ranked)} by {metric})\n"
        text += yaml.safe_dump(out, sort_keys=False)
        path.write_text(text)
        paths.append(path)
    return paths
