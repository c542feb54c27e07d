"""A run's progress and what the console shows of it: live lines and plain tables.

Progress is counted in classes: the classes a run finished, in the spec's fixed order,
plus the fraction of the current class's epochs. Reports to Ray carry it, ASHA compares
trials at the same progress, Optuna's intermediate values are indexed by it (in
thousandths of a class) and the console lines estimate the time left from it. A run is
finished when its progress reaches its number of classes: the report after the last
class's row is stored.

This module imports neither torch nor ray.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from raysearch.config.objective import DECIMALS

__all__ = ["progress", "finished", "optuna_step", "OPTUNA_STEPS_PER_CLASS", "RunLine", "SweepLine", "Estimate", "fmt",
           "time_left", "format_table"]

# Optuna's intermediate values need integer steps: progress in thousandths of a class.
OPTUNA_STEPS_PER_CLASS = 1000


def progress(class_index: int, epochs_done: int, epochs: int) -> float:
    """The progress of a run ``epochs_done`` epochs into the class at ``class_index``."""
    return class_index + epochs_done / epochs


def finished(result: dict[str, Any] | None, n_classes: int) -> bool:
    """Whether a run's report is the end of its last class (every row stored)."""
    return bool(result) and float(result.get("progress", 0)) >= n_classes - 1e-9


def optuna_step(value: float) -> int:
    """The Optuna step of a progress value (thousandths of a class)."""
    return round(float(value) * OPTUNA_STEPS_PER_CLASS)


def time_left(elapsed: float, done: float, total: float) -> float:
    """Seconds left at the rate so far (NaN before anything is done)."""
    return elapsed / done * (total - done) if done else math.nan


class Estimate:
    """The time left at the rate measured from the first report on: start-up (Ray, the
    first trial processes, loading data) is no part of the rate, so the first estimate
    is not inflated by it. No estimate before a second reading has moved the progress.

    Example:
        >>> e = Estimate()
        >>> e.left(now=30.0, done=0.0, total=4.0), e.left(now=40.0, done=0.5, total=4.0)
        (nan, nan)
        >>> e.left(now=50.0, done=1.0, total=4.0)  # 0.5 done in 10 s since the first report
        60.0
    """

    def __init__(self) -> None:
        self.first: tuple[float, float] | None = None

    def left(self, now: float, done: float, total: float) -> float:
        """Seconds left at ``now`` with ``done`` of ``total`` done; NaN while unknown."""
        if done <= 0:
            return math.nan
        if self.first is None:
            self.first = (now, done)
            return math.nan
        t0, d0 = self.first
        return time_left(now - t0, done - d0, total - d0) if done > d0 else math.nan


def _clock(elapsed: float, left: float) -> str:
    """``elapsed 12s`` and, once there is an estimate, ``  left ~34s``."""
    return f"elapsed {elapsed:.0f}s" + ("" if math.isnan(left) else f"  left ~{left:.0f}s")


def fmt(value: Any, digits: int = DECIMALS) -> str:
    """A table or line cell: ``-`` for a missing value, floats to ``digits`` places (by default
    :data:`raysearch.config.objective.DECIMALS`, as every metric is shown)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain aligned text table."""
    cells = [headers] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class RunLine:
    """One status line: class, epoch, loss, last validation metric, time left."""

    def __init__(self, stream: TextIO, n_classes: int, epochs: int):
        self.stream = stream
        self.tty = stream.isatty()
        self.total = n_classes  # progress counts classes (a fraction within the current one)
        self.started = time.perf_counter()
        self.estimate = Estimate()
        self.last_len = 0

    def update(self, m: dict[str, Any]) -> None:
        now = time.perf_counter()
        left = self.estimate.left(now, m.get("progress", 0), self.total)
        val = m.get("val_image_auroc", m.get("test_image_auroc", float("nan")))
        text = (
            f"class {m['class_index'] + 1}/{m['total_classes']} ({m['normal_class']})  "
            f"epoch {m['epoch']}/{m['epochs']}  loss {fmt(m.get('loss_loss'))}  "
            f"val AUROC {fmt(val)}  {_clock(now - self.started, left)}"
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


class SweepLine:
    """A live line: trials done / running / pruned / failed, the best so far and which
    trial it is, time (and time left once a trial has reported)."""

    def __init__(self, stream: TextIO, total: int, metric: str, mode: str):
        self.stream, self.total, self.metric, self.mode = stream, total, metric, mode
        self.tty = stream.isatty()
        self.started = time.perf_counter()
        self.estimate = Estimate()
        self.last = 0.0
        self.last_len = 0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; a stream does not pickle.
        return {**self.__dict__, "stream": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"estimate": Estimate(), "last_len": 0, **state, "stream": sys.stderr})

    def update(self, counts: dict[str, float], best: float, force: bool = False, best_trial: str | None = None) -> None:
        """Show ``counts`` (trials completed, pruned, failed, running, and ``done``: ended
        trials plus running trials' fractions, which the time left is estimated from) and
        the best value so far with ``best_trial``, how the console names its trial (``#6``)."""
        now = time.perf_counter()
        if not force and now - self.last < (0.5 if self.tty else 15.0):
            return
        self.last = now
        done = int(counts["completed"] + counts["pruned"] + counts["failed"])
        left = self.estimate.left(now, counts.get("done", done), self.total)
        named = f" ({best_trial})" if best_trial and not math.isnan(best) else ""
        text = (
            f"trials {done}/{self.total} done ({counts['completed']:.0f} completed, "
            f"{counts['pruned']:.0f} pruned, {counts['failed']:.0f} failed), {counts['running']:.0f} running  "
            f"best {self.metric} {fmt(best)}{named}  {_clock(now - self.started, left)}"
        )
        self.stream.write(("\r" + text.ljust(self.last_len)) if self.tty else (text + "\n"))
        self.last_len = len(text)
        self.stream.flush()

    def say(self, text: str) -> None:
        """A line of its own (a failed trial), above the live line on a terminal."""
        self.stream.write(("\r\033[K" + text + "\n") if self.tty else (text + "\n"))
        self.stream.flush()
        self.last = 0.0  # the live line comes back at the next update

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
