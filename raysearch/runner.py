"""`raysearch train`: one config, every class of its spec, through Ray Train.

The driver starts (or joins) Ray, writes the resolved spec beside the results, runs the
TorchTrainer in a background thread and renders the progress that rank 0 sends through a
Ray queue; at the end it prints a summary table read back from the results store. A run
that fails leaves a failed row with its reason for every class it did not finish.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
import uuid
from typing import Any, TextIO

import yaml

from raysearch import results
from raysearch.spec import Spec

__all__ = ["run_train", "write_resolved_spec", "format_table"]


def write_resolved_spec(spec: Spec, storage: str, name: str = "spec.yaml") -> str:
    """Write the full resolved spec (defaults filled in) into the experiment folder."""
    uri = results.join(storage, name)
    text = yaml.safe_dump(spec.to_dict(), sort_keys=False)
    results.write_bytes(uri, text.encode())
    return uri


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned text table."""
    cells = [headers] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class ProgressLine:
    """One status line: class, epoch, loss, last validation metric, time left."""

    def __init__(self, stream: TextIO, n_classes: int, epochs: int):
        self.stream = stream
        self.tty = stream.isatty()
        self.total = n_classes  # progress counts classes (a fraction within the current one)
        self.started = time.perf_counter()
        self.last_len = 0

    def update(self, m: dict[str, Any]) -> None:
        done = m.get("progress", 0)
        elapsed = time.perf_counter() - self.started
        left = elapsed / done * (self.total - done) if done else float("nan")
        val = m.get("val_image_auroc", m.get("test_image_auroc", float("nan")))
        text = (
            f"class {m['class_index'] + 1}/{m['total_classes']} ({m['normal_class']})  "
            f"epoch {m['epoch']}/{m['epochs']}  loss {_fmt(m.get('loss_loss'))}  "
            f"val AUROC {_fmt(val)}  elapsed {elapsed:.0f}s  left ~{_fmt(left, 0)}s"
        )
        if self.tty:
            self.stream.write("\r" + text.ljust(self.last_len))
            self.last_len = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.last_len:
            self.stream.write("\n")
            self.stream.flush()


def run_train(
    spec: Spec,
    output: str,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    quiet: bool = False,
    stream: TextIO = sys.stderr,
) -> tuple[int, list[dict[str, Any]]]:
    """Train ``spec`` once; returns (exit code, result rows of this run)."""
    from ray.util.queue import Empty, Queue

    from raysearch.ray_setup import init_ray
    from raysearch.training import (
        RunInfo,
        config_schema,
        failed_row,
        make_trainer,
        results_dir,
        row_name,
    )

    classes = spec.classes()  # fails fast on missing data or unknown classes
    init_ray(address=address, num_cpus=num_cpus)
    run_id = f"train-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    run = RunInfo(experiment=spec.name, kind="train", trial_id=run_id, storage=output)
    write_resolved_spec(spec, output)
    queue = Queue(maxsize=1000, actor_options={"num_cpus": 0})
    trainer = make_trainer(spec, run, progress=queue)
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as err:  # reported below as failed rows
            outcome["error"] = err

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    line = ProgressLine(stream, len(classes), spec.train.epochs)
    if not quiet:
        stream.write(f"raysearch train: {spec.name} ({spec.method}, {len(classes)} classes) -> {results.redact(output)}\n")
    while thread.is_alive() or not queue.empty():
        try:
            m = queue.get(timeout=0.5)
        except Empty:
            continue
        if m is not None and not quiet:
            line.update(m)
    thread.join()
    line.close()

    rows = _rows_of(output, run_id)
    code = 0
    if "error" in outcome:
        code = 1
        reason = _reason(outcome["error"])
        done = {r["normal_class"] for r in rows}
        missing = [(i, c) for i, c in enumerate(classes) if c not in done]
        failed = [failed_row(spec, run, reason, c, i) for i, c in missing]
        for (i, c), row in zip(missing, failed):
            results.write_rows(results_dir(output), config_schema(spec), [row], row_name(run, i, c))
        rows = _rows_of(output, run_id)
        stream.write(f"raysearch train: the run failed: {reason}\n")
    if not quiet:
        stream.write(summary(rows) + "\n")
        stream.write(f"results: {results.redact(results_dir(output))}\n")
    return code, rows


_EXCEPTION_LINE = re.compile(r"^\s*([\w.]+(Error|Exception|Diverged|Failed)\b)(:|$)")


def _reason(err: BaseException) -> str:
    """The innermost readable cause of a Ray Train failure: its last ``SomeError: ...``
    line, or, where Ray cut the traceback short, its last line."""
    text = str(err).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "Output truncated" not in ln]
    for ln in reversed(lines):
        if _EXCEPTION_LINE.match(ln):
            return ln[:500]
    return (lines[-1] if lines else type(err).__name__)[:500]


def _rows_of(output: str, run_id: str) -> list[dict[str, Any]]:
    try:
        table = results.read_results(output)
    except FileNotFoundError:
        return []
    if table.num_rows == 0:
        return []
    rows = [r for r in table.to_pylist() if r["trial_id"] == run_id]
    return sorted(rows, key=lambda r: (r["class_index"] if r["class_index"] is not None else -1))


def summary(rows: list[dict[str, Any]]) -> str:
    """The end-of-run table: one line per class and the mean."""
    headers = ["class", "status", "val AUROC", "test AUROC", "pixel AUROC", "AUPRO", "best ep", "time s"]
    body = [
        [
            r["normal_class"],
            r["status"],
            r["val_image_auroc"],
            r["test_image_auroc"],
            r["test_pixel_auroc"],
            r["test_aupro"],
            r["best_epoch"],
            r["wall_time_s"],
        ]
        for r in rows
    ]
    done = [r for r in rows if r["status"] == "completed"]
    if done:
        def mean(key: str) -> float | None:
            vals = [r[key] for r in done if r[key] is not None and not math.isnan(r[key])]
            return sum(vals) / len(vals) if vals else None

        body.append(
            ["mean", f"{len(done)}/{len(rows)}", mean("val_image_auroc"), mean("test_image_auroc"),
             mean("test_pixel_auroc"), mean("test_aupro"), None, sum(r["wall_time_s"] or 0 for r in done)]
        )
    return format_table(headers, body)
