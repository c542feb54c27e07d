"""Resume equals uninterrupted through Ray (the in-process contract is
tests/train/test_resume_contract.py): a sweep trial's process is killed with SIGKILL right
after its first checkpointed report, Tune restarts it from that checkpoint, and its result
row must equal the row of the same spec run without a kill."""

from __future__ import annotations

import os

import pytest
import torch
from helpers.specs import demo_spec
from helpers.tiny import SMALL, TUNE_TRIAL, holding, kill_actor, rows_of, wait_until
from helpers.training import assert_same_states, same_number

from raysearch.config import registry
from raysearch.config.spec import load_spec


@pytest.mark.slow
@pytest.mark.parametrize("method", registry.method_names())
def test_killed_trial_row_equals_uninterrupted_row(method, ray_session, run_events, tmp_path):
    """SIGKILL a one-trial sweep's trial process right after its first checkpointed report:
    Tune restarts the trial from that checkpoint (train.max_failures), and its row and
    weights equal those of the same sweep run without a kill."""
    import threading

    from raysearch.run.tuning import run_tune
    from raysearch.store import results

    first = load_spec(demo_spec(method)).classes()[0]
    spec = load_spec(demo_spec(method), SMALL + [
        f"data.classes=[{first}]", "train.epochs=3", "train.max_failures=1",
        "search.trials=1", "search.concurrent=1", "search.scheduler={kind: none}",
    ])
    straight_out, killed_out = str(tmp_path / "straight"), str(tmp_path / "killed")
    assert run_tune(spec, straight_out, quiet=True) == 0

    # Runs mark each checkpointed report as checkpoint-<trial>-<class index>-<epoch> and
    # wait there while the block holds them; other tests' marks may be in the folder already.
    seen = set(os.listdir(run_events))
    outcome: dict[str, int] = {}
    thread = threading.Thread(target=lambda: outcome.update(code=run_tune(spec, killed_out, quiet=True)))
    try:
        with holding(run_events):  # released after the kill: the restarted trial must not wait
            thread.start()
            mark = wait_until(lambda: [n for n in os.listdir(run_events) if n not in seen
                                       and n.startswith("checkpoint-") and n.endswith("-0-1")],
                              thread.is_alive, "a checkpoint after epoch 1")
            assert len(mark) == 1, mark
            trial_id = mark[0][len("checkpoint-"):-len("-0-1")]
            kill_actor(TUNE_TRIAL, trial_id)
    finally:
        thread.join(timeout=600)
    assert outcome.get("code") == 0

    (straight,), (killed,) = rows_of(straight_out), rows_of(killed_out)
    assert killed["trial_id"] == trial_id and killed["status"] == straight["status"] == "completed"
    assert straight["resumed_epoch"] is None and killed["resumed_epoch"] == 1
    for key in (*results.METRIC_COLUMNS, "best_epoch", "final_loss", "epochs"):
        assert same_number(straight[key], killed[key]), (key, straight[key], killed[key])
    for which in ("best", "last"):
        a, b = (torch.load(os.path.join(os.path.dirname(r["checkpoint"]), f"{which}.pt"), weights_only=True)
                for r in (straight, killed))
        assert_same_states(a, b, f"{which} weights")
