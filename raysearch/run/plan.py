"""What a run would do, as ``--dry-run`` prints it: the lines that ``train``, ``tune`` and
``ablate`` share (the experiment and its classes, the validation split, the resources)
and the plan of a ``raysearch train`` run.

A plan needs no data where the spec lists its classes, and starts nothing: this module
imports neither torch nor ray.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

__all__ = ["plan_head", "resources_line", "train_dry_run"]


def plan_head(spec: Any, what: str, stream: TextIO) -> list[str]:
    """Write ``<what> <name>: method <m>, <n> classes (<classes>)``, a note where the
    classes were not checked against the data, and the validation line; return the
    classes."""
    from raysearch.config.selection import selection_summary
    from raysearch.data import planned_classes

    classes, note = planned_classes(spec.data)
    stream.write(f"{what} {spec.name}: method {spec.method}, {len(classes)} classes ({', '.join(classes)})\n")
    if note:
        stream.write(f"note: {note}\n")
    stream.write(f"validation: {selection_summary(spec)}\n")
    return classes


def resources_line(train: Any, per: str, cpus: float | None = None) -> str:
    """``resources: ...``: the workers of a run and what each holds, ``per`` a run's name
    (``"per trial"``, or ``""`` for the one run of ``train``); ``cpus``: the CPUs a worker
    holds where they are not ``train.worker_cpus()``.

    Example:
        >>> from raysearch.config.spec import TrainSpec
        >>> resources_line(TrainSpec(workers=2), "per trial")
        'resources: 2 worker(s) x 1 CPU per trial (no GPU), 1 torch thread(s) each'
        >>> resources_line(TrainSpec(gpus_per_worker=0.5), "")
        'resources: 1 worker(s) x 0.5 GPU'
    """
    per = f" {per}" if per else ""
    if train.gpus_per_worker:
        return f"resources: {train.workers} worker(s) x {train.gpus_per_worker:g} GPU{per}"
    cpus = train.worker_cpus() if cpus is None else cpus
    return (f"resources: {train.workers} worker(s) x {cpus:g} CPU{per} (no GPU), "
            f"{train.worker_threads(cpus)} torch thread(s) each")


def train_dry_run(spec: Any, output: str, *, address: str | None = None, num_cpus: int | None = None,
                  stream: TextIO | None = None) -> None:
    """Print what ``raysearch train`` would run (to ``stream``, default the current
    stdout): the resolved spec as YAML, then the plan: classes, epochs and evaluations,
    the validation split, the workers and what each holds, the output folder. Starts
    nothing.

    The CPUs of a CPU run on a local Ray are those it would start with (``--num-cpus``,
    else this machine's), shared by the workers, as :func:`raysearch.run.runner.train_cpus`
    shares the free ones.
    """
    import yaml

    from raysearch.store import results
    from raysearch.train.trackers import CURVES_FOLDER

    stream = stream or sys.stdout
    stream.write("# the resolved spec (every default filled in)\n")
    stream.write(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    stream.write("\n")
    classes = plan_head(spec, "train", stream)
    t = spec.train
    if t.eval_every >= t.epochs:
        every = "after the last epoch"
    else:
        every = f"every {t.eval_every} epochs" + ("" if t.epochs % t.eval_every == 0 else " and after the last")
    stream.write(f"runs: {len(classes)} classes, one after another, {t.epochs} epochs each, evaluated {every}\n")
    local_cpus = None if address else float(num_cpus or os.cpu_count() or 1)
    stream.write(resources_line(t, "", t.worker_cpus(local_cpus)) + (f" (a local Ray of {local_cpus:g} CPUs)"
                 if local_cpus and not t.gpus_per_worker else "") + "\n")
    stream.write(f"output: {results.redact(output)} (results/, checkpoints/, {CURVES_FOLDER}/)\n")
