"""The progress measure and the console's live lines (no Ray)."""

import io
import math
import pickle
import sys

import pytest

from raysearch.train.progress import (
    SweepLine,
    finished,
    format_table,
    optuna_step,
    progress,
    time_left,
)


def test_progress_counts_classes_and_a_run_is_finished_at_its_last_class():
    assert progress(0, 1, 4) == 0.25 and progress(2, 4, 4) == 3
    assert finished({"progress": 3}, 3) and not finished({"progress": 2.75}, 3) and not finished(None, 3)
    assert optuna_step(progress(1, 1, 2)) == 1500


def _line(total: int = 4) -> SweepLine:
    line = SweepLine(io.StringIO(), total=total, metric="val_image_auroc", mode="max")
    line.stream.isatty = lambda: False
    return line


def _counts(done: float, running: int = 2) -> dict:
    return {"completed": 0, "pruned": 0, "failed": 0, "running": running, "done": done}


def test_no_time_left_until_a_trial_has_reported_then_the_rate_since_that_report(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("raysearch.train.progress.time.perf_counter", lambda: clock[0])
    line = _line()
    clock[0] += 30  # Ray and the first trial processes start: nothing reported yet
    line.update(_counts(0.0), math.nan, force=True)
    clock[0] += 10  # the first report: two trials a tenth and a quarter through
    line.update(_counts(0.35), math.nan, force=True)
    clock[0] += 20  # 0.4 more of 4 in 20 s: 0.02 per second, 3.25 left
    line.update(_counts(0.75), 0.91, force=True, best_trial="#1")
    first, second, third = line.stream.getvalue().splitlines()
    assert first == ("trials 0/4 done (0 completed, 0 pruned, 0 failed), 2 running  best val_image_auroc -  "
                     "elapsed 30s")
    assert "left" not in second and second.endswith("elapsed 40s")
    # The 30 s of start-up are no part of the rate (from the start it would be 0.75 in 60 s: 260 s).
    assert third.endswith("best val_image_auroc 0.9100 (#1)  elapsed 60s  left ~162s")
    assert math.isnan(time_left(5, 0, 4)) and time_left(20, 0.4, 3.65) == pytest.approx(162.5)


def test_the_line_names_the_best_trial_and_a_pickled_line_comes_back():
    line = _line()
    line.update(_counts(1.0, running=0) | {"completed": 1}, 0.99675, force=True, best_trial="#6")
    assert "best val_image_auroc 0.9968 (#6)" in line.stream.getvalue()
    copy = pickle.loads(pickle.dumps(line))  # Tune saves its callbacks with the experiment
    assert copy.stream is sys.stderr and copy.total == 4


def test_tables_align_and_show_missing_values_as_dashes():
    assert format_table(["a", "bb"], [[1.23456, None], ["x", 2]]).splitlines() == [
        "a       bb", "------  --", "1.2346  -", "x       2"]
