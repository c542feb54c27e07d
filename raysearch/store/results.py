"""The results store and its rows: a Parquet dataset of ``DIR/results/*.parquet``.

A finished (trial, class) is stored as its own file before the trial reports it, written
under a temporary name and renamed, so a reader never sees half a file and concurrent
trials never collide. :func:`compact` later merges these files into a few large
``part-<uuid>.parquet`` files (at the end of every run, on ``--resume`` and with
``raysearch compact DIR``), because reading costs about a millisecond per file.

A row's identity is ``(kind, trial_id, class_index)``. Readers (:func:`read_results`,
:func:`read_row_file`, :func:`completed_row`) keep one version of each: the one with
the newest ``timestamp``; on a tie the per-(trial, class) file wins over a part (it is
the same row, or a rerun written in the same second). So a rerun of a class supersedes
its earlier row wherever that row is, and a compaction stopped half-way (its part
written, the merged files not yet deleted) neither loses nor duplicates a row. The schema is fixed per method:
the row fields below, every metric column, and one typed column per resolved config key
(``params.gmm.components``, ``train.lr``...), so ``pyarrow.dataset.dataset(DIR/results)``
or duckdb's ``read_parquet('DIR/results/*.parquet')`` read the store as it is.

Storage is a local path or a cloud URI (``s3://bucket/prefix``) through pyarrow
filesystems; this module imports neither torch nor ray.

Rows are built here too (:func:`base_row`, :func:`unfinished_row`); the row of a
finished class adds what training measured (``raysearch.train.worker.class_row``). A class
that did not finish gets its failed or pruned row from :func:`write_unfinished_rows`,
the one writer of such rows for train, tune and ablate.

Example:
    >>> table = read_results("raysearch-results/distcon-demo")  # doctest: +SKIP
    >>> table.column("test_image_auroc")                          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raysearch.config.schema import SpecError
from raysearch.config.selection import FAMILY_METRICS, selection_metric

if TYPE_CHECKING:
    from raysearch.config.spec import Spec

__all__ = [
    "METRIC_COLUMNS",
    "ROW_FIELDS",
    "check_output",
    "results_schema",
    "write_rows",
    "read_row_file",
    "read_results",
    "compact",
    "compact_quietly",
    "Compaction",
    "PART_ROWS",
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


def check_output(output: str, key: str = "--output") -> None:
    """An output folder must be creatable: not a file, not below a file, writable
    (checked before any work starts; ``key`` names the option in the message)."""
    if "://" in output:
        return  # a bucket is checked when the first file is written
    path = os.path.abspath(output)
    if os.path.exists(path) and not os.path.isdir(path):
        raise SpecError(f"{path} is a file, not a folder", key=key)
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise SpecError(f"cannot create {path}: {parent} is a file", key=key)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SpecError(f"cannot create {path}: {parent} is not writable", key=key)


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
        try:
            with fs.open_output_stream(tmp) as out:
                out.write(data)
            fs.move(tmp, path)
        except BaseException:  # a full disk, a signal: leave no half-written temporary file
            with contextlib.suppress(OSError):
                fs.delete_file(tmp)
            raise
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
        if path not in _WARNED:  # once per file and process: every reader of the store meets it
            _WARNED.add(path)
            reason = str(err).splitlines()[0].replace("Could not open Parquet input source '<Buffer>': ", "")
            warnings.warn(f"{path}: unreadable result file skipped ({reason})", UnreadableResultWarning, stacklevel=3)
        return None


_WARNED: set[str] = set()  # the unreadable files this process has named


def read_row_file(results_dir: str, name: str) -> list[dict[str, Any]]:
    """The rows stored under ``name`` (as :func:`write_rows` named them), or [].

    The file ``results_dir/<name>.parquet`` where it exists, else (or where a compacted
    part holds a newer version) the rows of a compacted part whose :func:`row_name` is
    ``name``: after :func:`compact` the per-class file is gone but its row is found. A file
    that cannot be read counts as missing, with a warning (a resumed run then trains that
    class again and its new file supersedes the unreadable one).
    """
    name = _safe(name)
    fs, path = resolve(join(results_dir, f"{name}.parquet"))
    candidates = []  # (rank, rows): the newest wins, see _rank
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        table = _read_file(fs, path)
        if table is not None and table.num_rows:
            candidates.append((_rank(_newest_time(table), path), table.to_pylist()))
    for part, table in _compacted(results_dir, name):
        candidates.append((_rank(_newest_time(table), part), table.to_pylist()))
    return max(candidates, key=lambda c: c[0])[1] if candidates else []


# -- deduplication and compaction ----------------------------------------------------------
PART_PREFIX = "part-"  # compacted files: part-<uuid>.parquet; every other file holds one (trial, class)
# Rows per compacted part at most: 250k rows of ~70 columns are ~15 MB of Parquet, read in
# well under a second, and few enough parts that a 1M-row store is 4 files.
PART_ROWS = 250_000
ROW_KEY = ("kind", "trial_id", "class_index")  # a row's identity: one version of it is kept
_IO_THREADS = 16  # concurrent reads and deletes while compacting (an object store answers in ~10-50 ms)


def _is_part(path: str) -> bool:
    return posixpath.basename(path).startswith(PART_PREFIX)


def _rank(timestamp: int | None, path: str) -> tuple:
    """Which version of a row wins: the newest timestamp, then a per-(trial, class) file over
    a part, then the later file name (only so that the choice is the same every time)."""
    return (-1 if timestamp is None else timestamp, not _is_part(path), path)


def _newest_time(table: pa.Table) -> int | None:
    if "timestamp" not in table.column_names:
        return None
    import pyarrow.compute as pc

    value = pc.max(table.column("timestamp").cast(pa.int64())).as_py()
    return value


def _store_files(fs: pafs.FileSystem, path: str) -> list[str]:
    """The result files of a results folder (not the hidden temporary files of a write)."""
    return sorted(i.path for i in fs.get_file_info(pafs.FileSelector(path, recursive=False))
                  if i.path.endswith(".parquet") and not posixpath.basename(i.path).startswith("."))


def _deduplicate(table: pa.Table, files: list[str]) -> pa.Table:
    """Keep, for each row key, the rows of the file whose version wins (:func:`_rank`);
    ``files[i]`` is the file row ``i`` came from. Rows of one file are never dropped
    against each other, so a hand-written file of several rows reads as it is."""
    if table.num_rows == 0 or any(k not in table.column_names for k in (*ROW_KEY, "timestamp")):
        return table
    keys = list(zip(*(table.column(k).to_pylist() for k in ROW_KEY), strict=True))
    times = table.column("timestamp").cast(pa.int64()).to_pylist()
    best: dict[tuple, tuple] = {}
    first_file: dict[tuple, str] = {}
    conflict = False
    for key, t, f in zip(keys, times, files, strict=True):
        rank = _rank(t, f)
        if key not in best:
            best[key], first_file[key] = rank, f
            continue
        conflict = conflict or first_file[key] != f
        if rank > best[key]:
            best[key] = rank
    if not conflict:
        return table
    return table.filter(pa.array([best[k][2] == f for k, f in zip(keys, files, strict=True)]))


def read_results(experiment_dir: str) -> pa.Table:
    """Every row of an experiment (``experiment_dir/results/*.parquet``) as one table, one
    version of each (kind, trial_id, class_index): the newest (see the module's docstring)."""
    import pyarrow.dataset as ds

    fs, path = resolve(join(experiment_dir, "results"))
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{experiment_dir}: no results/ folder; is this an experiment folder?")
    files = _store_files(fs, path)
    if not files:
        return pa.table({})
    try:
        dataset = ds.dataset(files, filesystem=fs, format="parquet")
        table = dataset.to_table(columns=[*dataset.schema.names, "__filename"])
        sources = table.column("__filename").to_pylist()
        table = table.drop_columns(["__filename"])
    except (pa.ArrowInvalid, OSError):
        # One unreadable file (a truncated copy, a zero-byte upload) must not hide the
        # others: read them one by one and skip, with a warning, what cannot be read.
        read = [(f, t) for f, t in ((f, _read_file(fs, f)) for f in files) if t is not None]
        if not read:
            return pa.table({})
        table = pa.concat_tables([t for _, t in read], promote_options="default")
        sources = [f for f, t in read for _ in range(t.num_rows)]
    return _deduplicate(table, sources)


@dataclass(frozen=True)
class Compaction:
    """What :func:`compact` did."""

    merged: list[str] = field(default_factory=list)   # files merged into parts, then deleted
    parts: list[str] = field(default_factory=list)    # the part files written
    rows: int = 0                                     # rows in the parts written (one version of each)
    unreadable: list[str] = field(default_factory=list)  # files that could not be read, left in place

    def summary(self) -> str:
        """``12 files merged into 1 part (12 rows); 1 unreadable file left in place``."""
        line = (f"{len(self.merged)} file(s) merged into {len(self.parts)} part(s) ({self.rows} rows)"
                if self.merged else "nothing to compact")
        if self.unreadable:
            line += f"; {len(self.unreadable)} unreadable file(s) left in place"
        return line


# Per process: the parts of a results folder already read, for read_row_file. A part is
# never changed once written (a compaction writes new parts and deletes old ones), and
# compaction runs only under the experiment's lock, outside any run: a process that
# trains or resumes sees the same parts all along. compact() forgets its folder here.
_PARTS: dict[str, dict[str, tuple[pa.Table, dict[str, list[int]]]]] = {}


def _compacted(results_dir: str, name: str) -> list[tuple[str, pa.Table]]:
    """(part, rows) of every compacted part holding rows stored under ``name``."""
    fs, path = resolve(results_dir)
    cache_key = f"{fs.type_name}:{path}"
    parts = _PARTS.get(cache_key)
    if parts is None:
        parts = {}
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            for part in (f for f in _store_files(fs, path) if _is_part(f)):
                table = _read_file(fs, part)
                if table is not None:
                    parts[part] = (table, _name_index(table))
        _PARTS[cache_key] = parts
    found = []
    for part, (table, index) in parts.items():
        if name in index:
            found.append((part, table.take(pa.array(index[name], pa.int64()))))
    return found


def _name_index(table: pa.Table) -> dict[str, list[int]]:
    """Row positions by the file name (:func:`row_name`) each row was first stored under."""
    index: dict[str, list[int]] = {}
    if not {"trial_id", "class_index", "normal_class"} <= set(table.column_names):
        return index
    cols = zip(*(table.column(k).to_pylist() for k in ("trial_id", "class_index", "normal_class")), strict=True)
    for i, (trial, ci, cls) in enumerate(cols):
        if trial is not None and ci is not None:
            index.setdefault(_safe(f"{trial}--{ci:03d}-{cls}"), []).append(i)
    return index


def compact(experiment_dir: str, *, max_rows: int = PART_ROWS) -> Compaction:
    """Merge the per-(trial, class) files of ``experiment_dir/results`` into parts.

    The merged files are the per-(trial, class) files, parts with fewer than ``max_rows``
    rows, and any full part holding a row that one of those supersedes. One version of
    each row is kept (the newest, as readers choose it), written as parts of at most
    ``max_rows`` rows, each atomically (temporary name, then rename; one PUT on an
    object store); only then are the merged files deleted. A process killed before a
    part is in place changes nothing; one killed while deleting leaves rows in both a
    part and their old files, which readers see once and the next compaction merges.
    A file that cannot be read is left in place with a warning.
    Run it only while no run writes the experiment (``raysearch compact`` takes its lock).

    Example:
        >>> compact("raysearch-results/distcon-demo").summary()  # doctest: +SKIP
        '120 file(s) merged into 1 part(s) (120 rows)'
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, but got {max_rows=}")
    where = results_dir(experiment_dir)
    fs, path = resolve(where)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return Compaction()
    files = _store_files(fs, path)
    singles = [f for f in files if not _is_part(f)]
    sizes = {}
    for part in (f for f in files if _is_part(f)):
        try:
            with fs.open_input_file(part) as f:
                sizes[part] = pq.ParquetFile(f).metadata.num_rows
        except (pa.ArrowInvalid, OSError):
            sizes[part] = 0  # read again below, which warns and leaves it
    inputs = singles + [p for p, n in sizes.items() if n < max_rows]
    if not singles and len(inputs) < 2:
        return Compaction()
    pieces, unreadable = _read_inputs(fs, inputs)
    merged = [f for f in inputs if f not in unreadable]  # a file of no rows is merged too
    full = [p for p, n in sizes.items() if n >= max_rows]
    if full and merged:  # a full part whose row a merged file supersedes is merged too
        keys = {k for t, _ in pieces if set(ROW_KEY) <= set(t.column_names)
                for k in zip(*(t.column(c).to_pylist() for c in ROW_KEY), strict=True)}
        for part in full:
            with fs.open_input_file(part) as f:
                held = pq.read_table(f, columns=list(ROW_KEY))
            table = _read_file(fs, part) if keys & set(zip(*(held.column(c).to_pylist() for c in ROW_KEY),
                                                             strict=True)) else None
            if table is not None:
                pieces.append((table, [part] * table.num_rows))
                merged.append(part)
    if not merged:
        return Compaction(unreadable=unreadable)
    table = pa.concat_tables([t for t, _ in pieces], promote_options="default") if pieces else pa.table({})
    # one chunk, or the part would get one row group per merged file (slow to write and read)
    table = _deduplicate(table, [f for _, fs_ in pieces for f in fs_]).combine_chunks()
    parts = []
    for start in range(0, table.num_rows, max_rows):
        sink = pa.BufferOutputStream()
        pq.write_table(table.slice(start, max_rows), sink)
        uri = join(where, f"{PART_PREFIX}{uuid.uuid4().hex}.parquet")
        write_bytes(uri, sink.getvalue().to_pybytes())
        parts.append(uri)
    _PARTS.pop(f"{fs.type_name}:{path}", None)
    _delete(fs, merged)
    return Compaction(merged=merged, parts=parts, rows=table.num_rows, unreadable=unreadable)


def _read_inputs(fs: pafs.FileSystem, files: list[str]) -> tuple[list[tuple[pa.Table, list[str]]], list[str]]:
    """The rows of ``files`` as (table, the file of each row) pieces, and the files that
    cannot be read (with a warning each).

    One dataset scan first, with the schema :func:`read_results` reads them with (a
    store has one schema); where a file cannot be read, each file alone.
    """
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset(files, filesystem=fs, format="parquet")
        table = dataset.to_table(columns=[*dataset.schema.names, "__filename"])
    except (pa.ArrowInvalid, OSError):
        with ThreadPoolExecutor(_IO_THREADS) as pool:
            tables = list(pool.map(lambda f: _read_file(fs, f), files))
        return ([(t, [f] * t.num_rows) for f, t in zip(files, tables, strict=True) if t is not None],
                [f for f, t in zip(files, tables, strict=True) if t is None])
    sources = table.column("__filename").to_pylist()
    return [(table.drop_columns(["__filename"]), sources)], []


def _delete(fs: pafs.FileSystem, files: list[str]) -> None:
    """Delete merged files (their rows are in a part already); one already gone is fine."""
    def delete(path: str) -> None:
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            pass

    with ThreadPoolExecutor(_IO_THREADS) as pool:
        list(pool.map(delete, files))


def compact_quietly(experiment_dir: str, stream: typing.TextIO | None = None) -> Compaction | None:
    """:func:`compact` at the start or end of a run: a failure is one line on ``stream``,
    never the run's failure (every row is stored already; the next compaction retries)."""
    try:
        return compact(experiment_dir)
    except (OSError, pa.ArrowException) as err:
        if stream is not None:
            stream.write(f"raysearch: could not compact {redact(results_dir(experiment_dir))} ({err}); "
                         "its rows are stored, uncompacted\n")
        return None


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
    from raysearch.config import registry
    from raysearch.config.schema import field_paths
    from raysearch.config.spec import DataSpec, SelectionSpec, TrainSpec

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
    from raysearch.config.spec import config_hash

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
    """The stored row of a class that this run completed (in its own file or, once
    compacted, in a part; the newest version), or None."""
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
