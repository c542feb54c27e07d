"""Export the best configurations of an experiment as spec files that `raysearch train` runs.

Each exported file is the experiment's resolved spec (``DIR/spec.yaml``) with one
trial's configuration applied, named ``<experiment>-<rank>``, and a ``provenance`` block
saying where it came from: the experiment folder, the trial id and Optuna trial number,
the metric that ranked it and its per-class values, the checkpoint of every class
(relative to the experiment folder, so it stays valid when the folder is copied) and
the keys the search tuned.
Only trials that completed every class are exported, in the one ranking order
(:func:`analysis.rank.trial_table`: the class mean of the spec's search metric, validation
unless the spec selects on test, ties by :func:`analysis.rank.rank_order`); provenance
values are rounded to :data:`raysearch.config.objective.DECIMALS` places, a built-in dataset's
spec carries no ``data.root``, and :func:`rerun_command` is how to train one again. The output has no
timestamps, so exporting twice writes the same bytes.

Example:
    >>> paths = export_best("raysearch-results/distcon-digits-demo", top=3, to="best")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import yaml

from analysis.load import objective
from raysearch.config.objective import round_metric
from raysearch.store import results

__all__ = ["best_trials", "export_best", "rerun_command"]

_SECTIONS = ("data", "selection", "train")


def best_trials(experiment: str, metric: str, mode: str = "max", n_classes: int | None = None,
                kind: str | None = None) -> list[dict[str, Any]]:
    """Trials that completed every class, best first (the ranking of
    :func:`analysis.rank.trial_table`): trial id, value and per-class rows."""
    from analysis.load import load_results

    df = load_results(experiment)
    if kind is not None and not df.empty:
        df = df[df["kind"] == kind]
    return _best_of(df, metric, mode, n_classes)


def _ranked(experiment: str, metric: str, mode: str):
    """The ranked trials and the selection confidence of the same rows (one read)."""
    from analysis.confidence import sweep_confidence
    from analysis.load import load_results

    df = load_results(experiment)
    return _best_of(df, metric, mode, None), sweep_confidence(df, metric, mode)


def _best_of(df, metric: str, mode: str, n_classes: int | None) -> list[dict[str, Any]]:
    from analysis.rank import trial_table

    if df.empty:
        return []
    table = trial_table(df, metric, mode, n_classes)
    ranked = []
    for trial in table[table["complete"]].itertuples():
        rows = results_of(df, trial.trial_id)
        ranked.append({"trial_id": trial.trial_id, "config_hash": trial.config_hash, "value": float(trial.mean),
                       "rows": rows})
    return ranked


def results_of(df, trial_id: str) -> list[dict[str, Any]]:
    """The completed rows of one trial in class order, as plain dicts."""
    rows = df[(df["trial_id"] == trial_id) & (df["status"] == "completed")]
    rows = rows.sort_values("class_index").drop_duplicates("class_index", keep="last")
    ints = {name for name, (tp, _) in results.ROW_FIELDS.items() if str(tp) == "int64"}
    return [{k: _plain(v, k in ints) for k, v in r.items()} for r in rows.to_dict("records")]


def _plain(value: Any, integer: bool) -> Any:
    """A cell as YAML writes it plainly: None for a missing value, int for an integer field."""
    import pandas as pd

    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    if integer:
        return int(value)
    return value.item() if hasattr(value, "item") else value


def _relative(uri: str | None, trial_id: str) -> str | None:
    """A checkpoint's path within its experiment folder (``checkpoints/<trial>/<class>/best.pt``,
    as the worker loop stores it), wherever the folder was when it was written."""
    if not uri:
        return uri
    marker = f"checkpoints/{trial_id}/"
    path = uri.split("?")[0]
    return path[path.index(marker):] if marker in path else uri


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


def _drop_unused_root(spec: dict[str, Any]) -> None:
    """Leave ``data.root`` out of a spec whose dataset is built in (it reads no files), so an
    exported file does not name a folder that means nothing to it."""
    from raysearch.data import DATASETS  # the registry imports no torch

    data = spec.get("data") or {}
    info = DATASETS.get(str(data.get("dataset")))
    if info is not None and info.builtin:
        data.pop("root", None)


def rerun_command(path: str | os.PathLike) -> str:
    """The command that trains an exported spec file again, shell-quoted.

    Example:
        >>> rerun_command("best/my sweep-1.yaml")
        "raysearch train 'best/my sweep-1.yaml'"
    """
    return f"raysearch train {shlex.quote(str(path))}"


def export_best(experiment: str, top: int = 1, to: str = "best", notes: list[str] | None = None) -> list[Path]:
    """Write the ``top`` best trials of ``experiment`` as spec files under ``to``.

    The label-free selection confidence of the ranking (:mod:`analysis.confidence`) is
    recorded in each file's provenance and, where ``notes`` is given, appended to it."""
    spec_uri = results.join(experiment, "spec.yaml")
    if not results.exists(spec_uri):
        raise ValueError(f"{experiment}: no spec.yaml (the resolved spec that raysearch train, tune and ablate "
                         "write beside results/); export needs it to write specs that run")
    spec = yaml.safe_load(results.read_bytes(spec_uri).decode())
    metrics, modes = objective(spec)
    metric, mode = metrics[0], modes[0]
    ranked, verdict = _ranked(experiment, metric, mode)
    if not ranked:
        raise ValueError(f"{experiment}: no trial completed every class; nothing to export")
    if notes is not None and verdict.can_rank is not None:
        notes.append(verdict.line())
    os.makedirs(to, exist_ok=True)
    paths = []
    for rank, trial in enumerate(ranked[:top], start=1):
        first = trial["rows"][0]
        out = _apply_flat(spec, json.loads(first["config_json"]))
        out["name"] = f"{spec['name']}-{rank}"
        _drop_unused_root(out)
        kept = {k: v for k, v in (spec.get("provenance") or {}).items() if k != "data_fingerprint"}
        out["provenance"] = {
            **kept,
            "exported_from": {
                "experiment": os.path.abspath(experiment) if "://" not in experiment else experiment,
                "name": spec["name"],
                "trial_id": trial["trial_id"],
                "optuna_trial": first.get("optuna_trial"),
                "config_hash": trial["config_hash"],
                "variant": first.get("variant"),
                "rank": rank,
                "metric": metric,
                "mode": mode,
                "value": round_metric(trial["value"]),
                "per_class": {r["normal_class"]: {m: round_metric(r.get(m)) for m in (metric, "test_image_auroc")}
                              for r in trial["rows"]},
                # Relative to the experiment folder: valid after the folder is copied.
                "checkpoints": {r["normal_class"]: _relative(r.get("checkpoint"), trial["trial_id"]) for r in trial["rows"]},
                # The keys the search chose; every other value is the spec's own.
                "tuned": sorted(((spec.get("search") or {}).get("space") or {}).keys()),
                "selection_confidence": verdict.line(),
            },
        }
        path = Path(to) / f"{spec['name']}-{rank}.yaml"
        text = f"# exported by raysearch from {spec['name']} (rank {rank} of {len(ranked)} by {metric})\n"
        text += yaml.safe_dump(out, sort_keys=False)
        path.write_text(text)
        paths.append(path)
    return paths
