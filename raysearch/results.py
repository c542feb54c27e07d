"""The results store: a Parquet dataset with one file per finished trial and class.

Each file is written under a temporary name and renamed, so a reader never sees half a
file and concurrent trials never collide; a rerun of the same (trial, class) replaces its
own file, so a resumed experiment cannot duplicate rows. The schema is fixed per method:
the row fields below, every metric column, and one typed column per resolved config key
(``params.gmm.components``, ``train.lr``...), so ``pyarrow.dataset.dataset(DIR/results)``
or duckdb's ``read_parquet('DIR/results/*.parquet')`` read the store as it is.

Storage is a local path or a cloud URI (``s3://bucket/prefix``) through pyarrow
filesystems; this module imports neither torch nor ray.

Example:
    >>> table = read_results("raysearch-results/distcon-demo")  # doctest: +SKIP
    >>> table.column("test_image_auroc")                          # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import types
import typing
import uuid
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raysearch.selection import FAMILY_METRICS

__all__ = [
    "METRIC_COLUMNS",
    "ROW_FIELDS",
    "results_schema",
    "write_rows",
    "read_row_file",
    "read_results",
    "resolve",
    "join",
    "write_bytes",
    "read_bytes",
    "exists",
    "UnreadableResultWarning",
]

SPLITS = ("val", "test")
METRICS = ("image_auroc", "image_f1_max", "pixel_auroc", "aupro")
# Pooled metrics of each split, then one validation image AUROC per known family (null
# where the experiment does not use the family), so every file of a store has one schema.
METRIC_COLUMNS = tuple(f"{s}_{m}" for s in SPLITS for m in METRICS) + FAMILY_METRICS

# name -> (arrow type, meaning)
ROW_FIELDS: dict[str, tuple[pa.DataType, str]] = {
    "experiment": (pa.string(), "experiment name (the spec's name unless overridden)"),
    "kind": (pa.string(), "train | tune | ablate"),
    "trial_id": (pa.string(), "Ray Tune trial id, or the run id of a plain train"),
    "optuna_trial": (pa.int64(), "Optuna trial number (sweeps only)"),
    "variant": (pa.string(), "ablation factor name ('full' for the full model)"),
    "status": (pa.string(), "completed | pruned | failed"),
    "error": (pa.string(), "the failure reason for failed rows"),
    "method": (pa.string(), "method name"),
    "dataset": (pa.string(), "dataset name"),
    "normal_class": (pa.string(), "normal class or category"),
    "class_index": (pa.int64(), "position of the class in the spec's fixed order"),
    "seed": (pa.int64(), "train.seed"),
    "selection_split": (pa.string(), "validation (leakage-free) or test (paper-style)"),
    "selection_metric": (pa.string(), "the validation metric that picked the best epoch"),
    "val_normals": (pa.int64(), "normal images of the validation split"),
    "val_anomalies": (pa.int64(), "anomalous images of the validation split (all families)"),
    "config_hash": (pa.string(), "hash of the resolved config"),
    "config_json": (pa.string(), "the resolved flat config as JSON"),
    "epochs": (pa.int64(), "epochs trained"),
    "best_epoch": (pa.int64(), "epoch selected on the selection split"),
    "final_loss": (pa.float64(), "mean training loss of the last epoch"),
    "train_time_s": (pa.float64(), "training wall time of this class"),
    "wall_time_s": (pa.float64(), "wall time including data loading and evaluation"),
    "num_params": (pa.int64(), "trainable parameters"),
    "latency_ms": (pa.float64(), "per-image scoring latency, timed alone after training"),
    "device": (pa.string(), "cpu or the GPU name"),
    "host_rss_mb": (pa.float64(), "resident memory of the training process when the class ended (MiB)"),
    "host_peak_rss_mb": (pa.float64(), "peak resident memory of the training process so far (MiB)"),
    "device_peak_mb": (pa.float64(), "peak GPU memory allocated by torch during the class (MiB; null on CPU)"),
    "workers": (pa.int64(), "Ray Train workers"),
    "node_id": (pa.string(), "Ray node that ran rank 0"),
    "weights": (pa.string(), "backbone weights loaded"),
    "facts": (pa.string(), "what the method says of the run (describe()) as JSON, e.g. augmentations turned off"),
    "checkpoint": (pa.string(), "URI of the selected (best) checkpoint"),
    "resumed_epoch": (pa.int64(), "epochs done before a restart resumed this class (null: trained in one go)"),
    "package_version": (pa.string(), "raysearch version"),
    "git_commit": (pa.string(), "git commit of the code, where known"),
    "timestamp": (pa.timestamp("s", tz="UTC"), "when the row was written"),
}


# -- storage: one layer for local paths and cloud URIs ----------------------------------
def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it for a local path or a URI."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    return pafs.FileSystem.from_uri(uri)


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or a URI (a URI's ``?query`` stays at the end)."""
    if "://" in uri:
        base, sep, query = uri.partition("?")
        return posixpath.join(base, *parts) + sep + query
    return os.path.join(uri, *parts)


def redact(uri: str) -> str:
    """A URI without the keys it may carry (``s3://KEY:SECRET@bucket/...``), for output and rows."""
    return re.sub(r"^([a-z0-9+.-]+://)[^/@]*@", r"\1", uri)


def ray_storage(uri: str) -> tuple[str, pafs.FileSystem | None]:
    """``storage_path`` and ``storage_filesystem`` for Ray's RunConfig and ``Tuner.restore``.

    A URI becomes its pyarrow filesystem and the path inside it, so every option the
    URI carries (``?endpoint_override=...&scheme=http`` for an S3-compatible server,
    ``region=...``) reaches Ray's own storage too.
    """
    if "://" not in uri:
        return os.path.abspath(os.path.expanduser(uri)), None
    fs, path = resolve(uri)
    return path, fs


def write_bytes(uri: str, data: bytes) -> None:
    """Write a file atomically where the filesystem allows (temporary name, then rename)."""
    fs, path = resolve(uri)
    parent = posixpath.dirname(path)
    fs.create_dir(parent, recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        fs.move(tmp, path)
    else:  # object stores: a single PUT is atomic already
        with fs.open_output_stream(path) as out:
            out.write(data)


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


# -- schema --------------------------------------------------------------------------
def _arrow_type(annotation: Any) -> pa.DataType:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _arrow_type(args[0]) if len(args) == 1 else pa.string()
    if origin is typing.Literal:
        return pa.string() if all(isinstance(a, str) for a in typing.get_args(annotation)) else pa.string()
    return {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}.get(annotation, pa.string())


def results_schema(config_types: Mapping[str, Any]) -> pa.Schema:
    """Row fields + metric columns + one typed column per config key (annotations)."""
    fields = [pa.field(name, tp) for name, (tp, _) in ROW_FIELDS.items()]
    fields += [pa.field(name, pa.float64()) for name in METRIC_COLUMNS]
    fields += [pa.field(key, _arrow_type(tp)) for key, tp in sorted(config_types.items())]
    return pa.schema(fields)


def _cell(value: Any, tp: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_string(tp) and not isinstance(value, str):
        return json.dumps(value)
    return value


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]


def write_rows(results_dir: str, schema: pa.Schema, rows: Iterable[Mapping[str, Any]], name: str) -> str:
    """Write ``rows`` as one Parquet file ``results_dir/<name>.parquet``; returns its URI.

    Unknown keys in a row are an error (the schema is the contract); missing ones are null.
    """
    rows = list(rows)
    columns = {}
    for f in schema:
        columns[f.name] = [_cell(r.get(f.name), f.type) for r in rows]
    extra = {k for r in rows for k in r} - set(schema.names)
    if extra:
        raise KeyError(f"result row keys not in the schema: {sorted(extra)}")
    table = pa.table(columns, schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    uri = join(results_dir, f"{_safe(name)}.parquet")
    write_bytes(uri, sink.getvalue().to_pybytes())
    return uri


class UnreadableResultWarning(UserWarning):
    """A result file that cannot be read (truncated, empty, not Parquet) was skipped."""


def _read_file(fs: pafs.FileSystem, path: str) -> pa.Table | None:
    """One result file, or None (with a warning naming it) when it cannot be read."""
    try:
        with fs.open_input_file(path) as f:
            return pq.read_table(f)
    except (pa.ArrowInvalid, OSError) as err:
        warnings.warn(f"{path}: unreadable result file skipped ({str(err).splitlines()[0]})",
                      UnreadableResultWarning, stacklevel=3)
        return None


def read_row_file(results_dir: str, name: str) -> list[dict[str, Any]]:
    """The rows of ``results_dir/<name>.parquet`` (as :func:`write_rows` named it), or [] when
    it does not exist or cannot be read (a resumed run then trains that class again and its
    new file replaces the unreadable one)."""
    fs, path = resolve(join(results_dir, f"{_safe(name)}.parquet"))
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    table = _read_file(fs, path)
    return [] if table is None else table.to_pylist()


def read_results(experiment_dir: str) -> pa.Table:
    """Every row of an experiment (``experiment_dir/results/*.parquet``) as one table."""
    import pyarrow.dataset as ds

    fs, path = resolve(join(experiment_dir, "results"))
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{experiment_dir}: no results/ folder; is this an experiment folder?")
    selector = pafs.FileSelector(path, recursive=False)
    files = sorted(
        i.path for i in fs.get_file_info(selector) if i.path.endswith(".parquet") and not posixpath.basename(i.path).startswith(".")
    )
    if not files:
        return pa.table({})
    try:
        return ds.dataset(files, filesystem=fs, format="parquet").to_table()
    except (pa.ArrowInvalid, OSError):
        # One unreadable file (a truncated copy, a zero-byte upload) must not hide the
        # others: read them one by one and skip, with a warning, what cannot be read.
        tables = [t for t in (_read_file(fs, f) for f in files) if t is not None]
        return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
