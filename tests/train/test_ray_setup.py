"""The patch of Ray Train's placement-group cleaner (raysearch.run.ray_setup.setup_worker),
against the installed Ray, without a cluster: the patched function is replaced by one
that fails the way a GCS under load makes it fail."""

import importlib
import inspect
import re
import sys
from types import SimpleNamespace

import pytest
from ray.exceptions import GetTimeoutError, RpcError
from ray.train.v2._internal.execution.controller import placement_group_cleaner as cleaner
from ray.train.v2._internal.state import util as state_util
from ray.util.state.exception import RayStateApiException, ServerUnavailable

from raysearch.run.ray_setup import setup_worker

CLEANER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"

# How a GCS under load fails the cleaner's poll (see raysearch/run/ray_setup.py).
GCS_ERRORS = [
    RpcError("Timed out while waiting for GCS to become available.", rpc_code=4),
    GetTimeoutError("Get timed out: some object(s) not ready."),
    ConnectionError("Could not read 'dashboard' from GCS. Did GCS start successfully?"),
]


class Poll:
    """A stand-in for ``is_actor_alive``: each call takes the next outcome (an exception
    is raised, anything else returned) and records its arguments."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = []

    def __call__(self, actor_id, timeout):
        self.calls.append((actor_id, timeout))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


@pytest.fixture
def poll(monkeypatch):
    """Install a Poll as the cleaner's ``is_actor_alive`` (the real one comes back after
    the test); the test sets its outcomes, then calls setup_worker."""
    fake = Poll()
    monkeypatch.setattr(cleaner, "is_actor_alive", fake)
    return fake


def test_the_patched_function_keeps_its_signature():
    """setup_worker wraps this function and the cleaner calls it by keyword: a Ray
    that changes either needs the patch looked at again."""
    assert cleaner.is_actor_alive is state_util.is_actor_alive or getattr(
        cleaner.is_actor_alive, "_raysearch_patched", False)
    assert str(inspect.signature(state_util.is_actor_alive)) == "(actor_id: str, timeout: int) -> bool"
    source = inspect.getsource(cleaner.PlacementGroupCleaner._monitor_loop)
    assert re.search(r"is_actor_alive\(\s*actor_id=self\._controller_actor_id,\s*timeout=", source)
    assert re.search(r"except ray\.util\.state\.exception\.RayStateApiException:\s*logger\.warning\(", source)


@pytest.mark.parametrize("error", GCS_ERRORS, ids=lambda e: type(e).__name__)
def test_a_gcs_timeout_becomes_a_state_api_error(poll, error):
    poll.outcomes = [error]
    setup_worker()
    with pytest.raises(RayStateApiException, match="state API unavailable") as raised:
        cleaner.is_actor_alive(actor_id="controller", timeout=7)
    assert raised.value.__cause__ is error
    assert poll.calls == [("controller", 7)]


@pytest.mark.parametrize("error", [ValueError("bad id"), KeyError("state"), ServerUnavailable("no dashboard")],
                         ids=lambda e: type(e).__name__)
def test_other_errors_pass_unchanged(poll, error):
    poll.outcomes = [error]
    setup_worker()
    with pytest.raises(type(error)) as raised:
        cleaner.is_actor_alive(actor_id="controller", timeout=7)
    assert raised.value is error


def test_answers_pass_unchanged_and_a_second_setup_wraps_nothing_more(poll):
    poll.outcomes = [True, False, GCS_ERRORS[0]]
    setup_worker()
    patched = cleaner.is_actor_alive
    setup_worker()
    assert cleaner.is_actor_alive is patched
    assert patched(actor_id="a", timeout=1) is True
    assert patched(actor_id="a", timeout=1) is False
    with pytest.raises(RayStateApiException) as raised:
        patched(actor_id="a", timeout=1)
    assert raised.value.__cause__ is GCS_ERRORS[0]  # wrapped once, not a wrapped wrapper
    assert len(poll.calls) == 3


def _monitor(poll, monkeypatch):
    """Run the cleaner's monitor loop in this thread with one placement group registered;
    returns the placement groups it cleaned up (Ray's own removal and exit stubbed out)."""
    pg_cleaner = cleaner.PlacementGroupCleaner(controller_actor_id="controller", check_interval_s=0.001,
                                               get_actor_timeout_s=7, stop_timeout=None)
    cleaned = []
    monkeypatch.setattr(pg_cleaner, "_cleanup_placement_group", cleaned.append)
    monkeypatch.setattr(pg_cleaner, "_exit", lambda: None)
    pg_cleaner.register_placement_group(SimpleNamespace(id="placement-group-of-the-run"))
    pg_cleaner._monitor_loop()
    return [pg.id for pg in cleaned]


def test_the_cleaner_polls_on_through_gcs_timeouts_and_then_frees_the_group(poll, monkeypatch):
    poll.outcomes = [*GCS_ERRORS, True, False]  # three failed polls, alive, then dead
    setup_worker()
    assert _monitor(poll, monkeypatch) == ["placement-group-of-the-run"]
    assert poll.calls == [("controller", 7)] * 5


def test_without_the_patch_a_gcs_timeout_ends_the_cleaner(poll, monkeypatch):
    """What setup_worker is for: the unpatched loop dies and frees nothing."""
    poll.outcomes = [GCS_ERRORS[0], False]
    with pytest.raises(RpcError):
        _monitor(poll, monkeypatch)


def test_a_ray_without_the_cleaner_module_is_left_alone_with_a_warning(monkeypatch):
    package, _, name = CLEANER.rpartition(".")
    monkeypatch.delattr(importlib.import_module(package), name)
    monkeypatch.setitem(sys.modules, CLEANER, None)  # its import now fails
    with pytest.warns(RuntimeWarning, match="placement-group cleaner was not patched"):
        setup_worker()


def test_a_cleaner_without_the_function_is_left_alone_with_a_warning(monkeypatch):
    monkeypatch.delattr(cleaner, "is_actor_alive")
    with pytest.warns(RuntimeWarning, match="placement-group cleaner was not patched"):
        setup_worker()
    assert not hasattr(cleaner, "is_actor_alive")
