"""Reading an experiment folder: the result rows, the resolved spec and the search objective.

Everything here works on a copied folder with neither torch nor ray installed: the rows
come from :func:`raysearch.store.results.read_results` (pyarrow) and the spec from
``DIR/spec.yaml`` (pyyaml). Tables built by hand are accepted too: optional columns that
are missing are added as nulls (see :func:`prepare`), so tests and notebooks need not
write the full schema.

Example:
    >>> df = load_results("raysearch-results/distcon-demo")       # doctest: +SKIP
    >>> df.groupby("config_key")["val_image_auroc"].mean()         # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from raysearch.store import results

__all__ = ["load_results", "load_spec", "objective", "prepare", "config_key", "IGNORED_CONFIG_KEYS"]

# Config keys that do not distinguish one configuration from another when ranking:
# the seed (a configuration is judged over its seeds) and the class list (a configuration
# is judged over its classes; per-class runs differ only there).
IGNORED_CONFIG_KEYS = ("train.seed", "data.classes")


def config_key(config_json: str | None) -> str | None:
    """A stable 12-hex-digit key of a resolved config without ``train.seed`` and ``data.classes``.

    Example:
        >>> a = config_key('{"train.lr": 0.1, "train.seed": 0}')
        >>> a == config_key('{"train.seed": 7, "train.lr": 0.1}')
        True
    """
    if config_json is None or (isinstance(config_json, float) and pd.isna(config_json)):
        return None
    config = json.loads(config_json)
    for key in IGNORED_CONFIG_KEYS:
        config.pop(key, None)
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(canonical.encode()).hexdigest()[:12]


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with every row field and metric column present and a ``config_key``.

    Missing columns are filled so that hand-built tables work: ``status`` as "completed"
    (a table without statuses is taken to hold finished rows), ``normal_class`` as "all",
    ``seed`` from ``train.seed`` or 0, everything else as null. A missing ``config_hash``
    is computed from ``config_json`` as the run wrote it (:func:`raysearch.config.spec.config_hash`).
    ``config_key`` comes from ``config_json`` (see :func:`config_key`), else
    ``config_hash``, else ``trial_id``. An existing ``config_key`` column is kept.
    """
    df = df.copy()
    n = len(df)
    fills: dict[str, Any] = {"status": "completed", "normal_class": "all"}
    for name in results.ROW_FIELDS:
        if name in df.columns:
            continue
        if name == "seed":
            df[name] = df["train.seed"] if "train.seed" in df.columns else 0
        else:
            df[name] = pd.Series([fills.get(name)] * n, index=df.index, dtype=object)
    for name in results.METRIC_COLUMNS:
        if name not in df.columns:
            df[name] = float("nan")
    df["normal_class"] = df["normal_class"].astype(str)
    if df["config_hash"].isna().any():
        from raysearch.config.spec import (
            config_hash,  # the rows' own hash, so a table built by hand names configs alike
        )

        hashes = {c: config_hash(json.loads(c)) for c in pd.unique(df["config_json"].dropna())}
        df["config_hash"] = df["config_hash"].fillna(df["config_json"].map(hashes))
    if "config_key" not in df.columns:
        # Hash each distinct config once: 100k rows hold a few thousand configs at most.
        keys = {c: config_key(c) for c in pd.unique(df["config_json"].dropna())}
        key = df["config_json"].map(keys)
        for fallback in ("config_hash", "trial_id"):
            key = key.fillna(df[fallback])
        df["config_key"] = key.astype(str)
    return df


def load_results(experiment_dir: str | Path) -> pd.DataFrame:
    """Every result row of an experiment folder as a DataFrame, with a ``config_key`` column.

    ``experiment_dir`` is a local folder or a URI (``s3://bucket/prefix``) holding
    ``results/*.parquet``. Rows of every status are returned; the analysis functions keep
    the completed ones themselves.

    Example:
        >>> df = load_results("/tmp/tdemo")                           # doctest: +SKIP
        >>> df[["trial_id", "status", "normal_class", "val_image_auroc"]]  # doctest: +SKIP
    """
    table = results.read_results(str(experiment_dir))
    return prepare(table.to_pandas())


def load_spec(experiment_dir: str | Path) -> dict[str, Any]:
    """The resolved spec ``DIR/spec.yaml`` as a plain dict, or {} when the folder has none."""
    uri = results.join(str(experiment_dir), "spec.yaml")
    if not results.exists(uri):
        return {}
    return yaml.safe_load(results.read_bytes(uri)) or {}


def objective(spec: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The search metrics and their modes from a spec's ``search:`` block
    (:func:`raysearch.config.objective.objective`). Without a search block: the spec's resolved
    ``selection.metric`` (else val_image_auroc), max.

    Example:
        >>> objective({"search": {"metric": ["val_image_auroc", "latency_ms"]}})
        (['val_image_auroc', 'latency_ms'], ['max', 'min'])
    """
    from raysearch.config.objective import objective as parse  # torch-free

    search = spec.get("search") or {}
    # A spec without a search block (a `raysearch train` run) ranks by the metric that
    # picked its epochs, as resolved in spec.yaml.
    metric = search.get("metric") or (spec.get("selection") or {}).get("metric")
    metrics, modes = parse(metric, search.get("mode"))
    return list(metrics), list(modes)
