"""`raysearch train`: one config, every class of its spec, through Ray Train.

The driver starts (or joins) Ray, writes the resolved spec beside the results, runs the
TorchTrainer in a background thread and renders the progress that rank 0 sends through a
Ray queue; at the end it prints a summary table read back from the results store. A class
whose data cannot be read fails alone (its row says why) and the others train; a run
that fails leaves a failed row with its reason for every class it did not finish.
Ctrl-C or SIGTERM stops the run (exit 130 or 143) and keeps every finished class.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import uuid
from typing import Any, TextIO

from raysearch.config.spec import Spec
from raysearch.store import results
from raysearch.store.lock import exclusive
from raysearch.train.progress import RunLine, format_table

__all__ = ["run_train", "summary", "train_cpus"]


@exclusive("train")
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

    from raysearch.run.experiment import check_same_spec, graceful_stop, interrupted_exit
    from raysearch.run.ray_setup import init_ray
    from raysearch.train.worker import make_trainer

    classes = spec.classes()  # fails fast on missing data or unknown classes
    check_same_spec(output, spec, "rows")
    init_ray(address=address, num_cpus=num_cpus)
    cpus = train_cpus(spec, local=not address)
    run_id = f"train-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    run = results.RunInfo(experiment=spec.name, kind="train", trial_id=run_id, storage=output)
    results.write_resolved_spec(spec, output)
    queue = Queue(maxsize=1000, actor_options={"num_cpus": 0})
    trainer = make_trainer(spec, run, progress=queue, cpus_per_worker=cpus)
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as err:  # reported below as failed rows
            outcome["error"] = err

    thread = threading.Thread(target=fit, daemon=True)
    stop = threading.Event()
    line = RunLine(stream, len(classes), spec.train.epochs)
    if not quiet:
        t = spec.train
        stream.write(f"raysearch train: {spec.name} ({spec.method}, {len(classes)} classes) -> {results.redact(output)}\n"
                     f"resources: {t.workers} worker(s) x {cpus:g} CPU"
                     + (f" and {t.gpus_per_worker:g} GPU" if t.gpus_per_worker else "")
                     + f", {t.worker_threads(cpus)} torch thread(s) each\n")
    with graceful_stop(on_signal=stop.set) as received:
        thread.start()
        while (thread.is_alive() or not queue.empty()) and not stop.is_set():
            try:
                m = queue.get(timeout=0.5)
            except Empty:
                continue
            if m is not None and not quiet:
                line.update(m)
    line.close()
    if received:
        # The workers stop with this process (Ray shuts down at exit); finished classes
        # have their rows already, and no row is written for the interrupted one.
        done = len(_rows_of(output, run_id))
        return interrupted_exit(received, "train", f"{done} finished class(es) kept in "
                                f"{results.redact(results.results_dir(output))}",
                                "Run it again to train every class.", sys.stderr), _rows_of(output, run_id)
    thread.join()

    code = 0
    if "error" in outcome:
        code = 1
        reason = results.failure_reason(outcome["error"])
        results.write_unfinished_rows(spec, run, reason)
        stream.write(f"raysearch train: the run failed: {reason}\n")
    results.compact_quietly(output, stream)
    rows = _rows_of(output, run_id)
    failed = [r for r in rows if r["status"] != "completed"]
    if failed and not code:
        code = 1
        stream.write(f"raysearch train: {len(failed)} of {len(classes)} classes failed: "
                     + "; ".join(f"{r['normal_class']}: {r['error']}" for r in failed) + "\n")
    if not quiet:
        stream.write(summary(rows) + "\n")
        stream.write(f"results: {results.redact(results.results_dir(output))}\n")
    return code, rows


def train_cpus(spec: Spec, local: bool) -> float:
    """The CPUs each worker of a ``raysearch train`` run holds: ``train.cpus_per_worker`` when
    set; where it is null, a CPU run on a local Ray shares the free CPUs among its workers
    (one run uses the machine), anything else holds 1 (a cluster's nodes differ)."""
    import ray

    free = ray.available_resources().get("CPU") if local else None
    return spec.train.worker_cpus(free)


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
