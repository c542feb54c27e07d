"""The progress measure and the console's live lines (no Ray)."""

import io
import math

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


def test_the_time_left_is_estimated_from_the_first_evaluations():
    line = SweepLine(io.StringIO(), total=4, metric="val_image_auroc", mode="max")
    line.started -= 100  # 100 s into the sweep
    # No trial has ended, but two running trials are a quarter and half through: 0.75 of 4 done.
    line.update({"completed": 0, "pruned": 0, "failed": 0, "running": 2, "done": 0.75}, math.nan, force=True)
    text = line.stream.getvalue()
    assert "trials 0/4 done (0 completed, 0 pruned, 0 failed), 2 running" in text
    assert f"left ~{time_left(100, 0.75, 4):.0f}s" in text and "left ~433s" in text
    assert math.isnan(time_left(5, 0, 4))


def test_tables_align_and_show_missing_values_as_dashes():
    assert format_table(["a", "bb"], [[1.23456, None], ["x", 2]]).splitlines() == [
        "a       bb", "------  --", "1.2346  -", "x       2"]
