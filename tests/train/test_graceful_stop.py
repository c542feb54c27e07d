"""`experiment.graceful_stop` in this process, without Ray: what a signal does."""

import os
import signal
import threading

import pytest

from raysearch.run import experiment, ray_setup


@pytest.mark.parametrize("reachable, lost", [(True, False), (False, True)])
def test_after_a_signal_the_driver_leaves_on_its_own_only_when_ray_died_with_it(monkeypatch, reachable, lost):
    """SIGTERM runs the run's own stop at once; the watcher calls ``on_ray_lost`` with the
    signals received once Ray has failed three checks in a row, and never while Ray answers."""
    checks = threading.Semaphore(0)

    def ray_answers() -> bool:
        checks.release()
        return reachable

    monkeypatch.setattr(ray_setup, "ray_reachable", ray_answers)
    monkeypatch.setattr(experiment, "RAY_CHECK_S", 0.01)
    stopped, called = threading.Event(), []
    gone = threading.Event()

    def on_ray_lost(received):
        called.append(list(received))
        gone.set()

    before = signal.getsignal(signal.SIGTERM)
    with experiment.graceful_stop(on_signal=stopped.set, on_ray_lost=on_ray_lost) as received:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stopped.wait(10) and received == [signal.SIGTERM]
        for _ in range(experiment.RAY_LOST_AFTER + (0 if lost else 2)):  # enough checks to decide
            assert checks.acquire(timeout=10)
        assert gone.wait(10) if lost else not gone.is_set()
    assert called == ([[signal.SIGTERM]] if lost else [])
    assert signal.getsignal(signal.SIGTERM) is before  # the handler goes with the block
