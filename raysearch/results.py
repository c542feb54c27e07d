"""The results store and its rows: a Parquet dataset with one file per finished trial and class.

Each file is written under a temporary name and renamed, so a reader never sees half a
file and concurrent trials never collide; a rerun of the same (trial, class) replaces its
own file, so a resumed experiment cannot duplicate rows. The schema is fixed per method:
the row fields below, every metric column, and one typed column per resolved config key
(``params.gmm.components``, ``train.lr``...), so ``pyarrow.dataset.dataset(DIR/results)``
or duckdb's ``read_parquet('DIR/results/*.parquet')`` read the store as it is.

Storage is a local path or a cloud URI (``s3://bucket/prefix``) through pyarrow
filesystems; this module imports neither torch nor ray.

Rows are built here too (:func:`base_row`, :func:`unfinished_row`); the row of a
finished class adds what training measured (``raysearch.training.class_row``). A class
that did not finish gets its failed or pruned row from :func:`write_unfinished_rows`,
the one writer of such rows for train, tune and ablate.

Example:
    >>> table = read_results("raysearch-results/distcon-demo")  # doctest: +SKIP
    >>> table.column("test_image_auroc")                          # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import subprocess
import time
import types
import typing
import uuid
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raysearch.selection import FAMILY_METRICS, selection_metric

if TYPE_CHECKING:
    from raysearch.spec import Spec

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
    "RunInfo",
    "results_dir",
    "row_name",
    "config_schema",
    "base_row",
    "unfinished_row",
    "completed_row",
    "write_unfinished_rows",
    "failure_reason",
    "write_resolved_spec",
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


def write_resolved_spec(spec: Spec, storage: str, name: str = "spec.yaml") -> str:
    """Write the full resolved spec (defaults filled in) into the experiment folder, with
    the data's fingerprint (files and bytes per class) as ``provenance.data_fingerprint``,
    which ``--resume`` compares with the data it finds."""
    import yaml

    from raysearch.data.checks import data_fingerprint

    raw = spec.to_dict()
    raw["provenance"] = {**(raw.get("provenance") or {}),
                         "data_fingerprint": data_fingerprint(spec.data, spec.classes())}
    uri = join(storage, name)
    write_bytes(uri, yaml.safe_dump(raw, sort_keys=False).encode())
    return uri


# ---------------------------------------------------------------------------------------
# Rows of a run


@dataclass(frozen=True)
class RunInfo:
    """Where and under which names a run writes its results."""

    experiment: str
    kind: str  # train | tune | ablate
    trial_id: str
    storage: str  # the experiment folder or URI; results/ and checkpoints/ live inside
    optuna_trial: int | None = None
    variant: str | None = None


def results_dir(storage: str) -> str:
    """The results folder of an experiment folder or URI."""
    return join(storage, "results")


def row_name(run: RunInfo, class_index: int, normal_class: str) -> str:
    """File name of a (run, class) row: the same on a rerun, so resumes never duplicate."""
    return f"{run.trial_id}--{class_index:03d}-{normal_class}"


def config_schema(spec: Spec) -> pa.Schema:
    """The results schema of a spec's method (typed config columns)."""
    from raysearch import registry
    from raysearch.schema import field_paths
    from raysearch.spec import DataSpec, SelectionSpec, TrainSpec

    types_: dict[str, Any] = {f"params.{k}": v for k, v in field_paths(registry.params_class(spec.method)).items()}
    for section, cls in (("data", DataSpec), ("selection", SelectionSpec), ("train", TrainSpec)):
        types_.update({f"{section}.{k}": v for k, v in field_paths(cls).items()})
    return results_schema(types_)


def git_commit() -> str | None:
    """The commit of the installed source tree, where it is a git checkout."""
    import raysearch

    here = os.path.dirname(os.path.abspath(raysearch.__file__))
    try:
        out = subprocess.run(
            ["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def base_row(spec: Spec, run: RunInfo) -> dict[str, Any]:
    """The fields every row of a run has: who ran what, with which config and code."""
    import raysearch
    from raysearch.spec import config_hash

    flat = spec.flat_config()
    row = {
        "experiment": run.experiment,
        "kind": run.kind,
        "trial_id": run.trial_id,
        "optuna_trial": run.optuna_trial,
        "variant": run.variant,
        "method": spec.method,
        "dataset": spec.data.dataset,
        "seed": spec.train.seed,
        "selection_split": spec.selection.split,
        "selection_metric": selection_metric(spec),
        "config_hash": config_hash(flat),
        "config_json": json.dumps(flat, sort_keys=True, default=str),
        "workers": spec.train.workers,
        "package_version": raysearch.__version__,
        "git_commit": git_commit(),
        "timestamp": int(time.time()),
    }
    row.update({k: v for k, v in flat.items() if k != "method"})
    return row


def unfinished_row(spec: Spec, run: RunInfo, reason: str, normal_class: str | None, class_index: int | None,
                   status: str = "failed") -> dict[str, Any]:
    """The row of a class that did not finish (``failed`` or ``pruned``), with its reason."""
    row = base_row(spec, run)
    row.update(status=status, error=reason, normal_class=normal_class, class_index=class_index)
    return row


def completed_row(run: RunInfo, class_index: int, normal_class: str) -> dict[str, Any] | None:
    """The stored row of a class that this run completed, or None."""
    rows = read_row_file(results_dir(run.storage), row_name(run, class_index, normal_class))
    return rows[0] if rows and rows[0]["status"] == "completed" else None


_EXCEPTION_LINE = re.compile(r"^\s*([\w.]+(Error|Exception|Diverged|Failed)\b)(:|$)")
_TRIAL_FAILED = "TrialFailed: "  # the marker of a trial's own reason in Tune's error text


def failure_reason(error: BaseException | str | None) -> str:
    """The reason line of a failed row, from an exception or an error text.

    A trial's own reason (``TrialFailed: ...``) where the text carries one, else the
    innermost readable cause (its last ``SomeError: ...`` line), else, where Ray cut the
    traceback short, its last line.
    """
    if error is None or (isinstance(error, str) and not error.strip()):
        return "the run failed (no error text)"
    text = str(error).strip()
    if not text:
        return type(error).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "Output truncated" not in ln]
    for ln in reversed(lines):
        if _TRIAL_FAILED in ln:
            return ln.split(_TRIAL_FAILED, 1)[1].strip()[:500]
    for ln in reversed(lines):
        if _EXCEPTION_LINE.match(ln):
            return ln[:500]
    return (lines[-1] if lines else type(error).__name__)[:500]


def write_unfinished_rows(spec: Spec, run: RunInfo, reason: str, status: str = "failed",
                          classes: Iterable[tuple[int, str]] | None = None) -> int:
    """Write a ``status`` row with ``reason`` for every class of the run that has no completed
    row (of ``classes``, default all of the spec's); returns how many were written.

    The one writer of failed and pruned rows: a run that stopped, failed or was stopped
    early by the scheduler leaves one row per class, and a class that finished keeps its
    row.
    """
    schema = config_schema(spec)
    written = 0
    for index, name in (enumerate(spec.classes()) if classes is None else classes):
        if completed_row(run, index, name) is not None:
            continue
        write_rows(results_dir(run.storage), schema, [unfinished_row(spec, run, reason, name, index, status)],
                   row_name(run, index, name))
        written += 1
    return written
