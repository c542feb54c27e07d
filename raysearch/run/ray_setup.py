"""Ray start-up for raysearch: :func:`init_ray` and the set-up of every Ray worker process.

:func:`setup_worker` runs in every worker process (``worker_process_setup_hook``).

Ray Train 2.60 removes a run's placement group from a small detached actor
(``ray/train/v2/_internal/execution/controller/placement_group_cleaner.py``) whose
thread polls ``is_actor_alive(actor_id=..., timeout=...)`` to see whether the run's
controller still lives. The poll catches ``RayStateApiException`` only ("State API may
be temporarily unavailable. Continuing to monitor."); anything else ends the thread, and
the placement group of the run then stays reserved after its controller is gone, so a
sweep waits forever for the CPUs or GPUs it holds. Under load (a busy node, a 2-core
machine running several trials) the poll fails before it reaches the State API:
``get_actor`` builds a ``StateApiClient``, which opens a new GCS connection to look up
the dashboard's address (``ray.dashboard.utils.ray_address_to_api_server_url``).

- ``GcsClient(address)`` that cannot reach the GCS in time raises
  ``ray.exceptions.RpcError("Timed out while waiting for GCS to become available.")``
  (rpc_code 4, DEADLINE_EXCEEDED; seen with Ray 2.60.0);
- ``internal_kv_get_with_retry`` that gets no answer in 20 tries raises the built-in
  ``ConnectionError("Could not read 'dashboard' from GCS. ...")``;
- Ray reports its own timeouts as ``ray.exceptions.GetTimeoutError``, a ``TimeoutError``.

The HTTP request itself is safe: ``StateApiClient`` turns ``requests`` errors into
``ServerUnavailable`` / ``RayStateApiException``. So :func:`setup_worker` turns exactly
these GCS errors (``RpcError``, ``TimeoutError``, ``ConnectionError``) into
``RayStateApiException``, which the poller handles by polling again; any other error
is a bug and passes unchanged. The patch is written for the Ray versions that
pyproject.toml allows; tests/train/test_ray_setup.py fails when the cleaner it patches
changes.
"""

from __future__ import annotations

import os
import socket
from typing import Any

__all__ = ["init_ray", "setup_worker", "ray_reachable"]

# Train's controller polls workers this often; every report waits for a poll (2 s by
# default), which dominates short epochs. Measured in benchmarks/.
HEALTH_CHECK_INTERVAL_S = "0.2"
# Train gives a worker group 60 s to start before it retries; a retry left the first
# attempt's placement group reserved (Ray 2.60), and on a busy small machine, where
# importing torch alone can take that long, the sweep then waited forever for CPUs.
WORKER_GROUP_START_TIMEOUT_S = "900"
# Tune's wait for a finished trial's thread before its process takes the next trial.
REUSE_THREAD_TIMEOUT_S = "120"


def setup_worker() -> None:
    """Keep Train's placement-group cleaner polling through GCS timeouts (see above).

    Wraps ``is_actor_alive`` as the cleaner module sees it, so that ``RpcError``,
    ``TimeoutError`` (``GetTimeoutError`` included) and ``ConnectionError`` reach the
    cleaner as ``RayStateApiException`` (the original error is its ``__cause__``). A
    second call changes nothing. Where this Ray has no such cleaner (the module or the
    function moved), it leaves Ray as it is and warns (``RuntimeWarning``; Python shows
    a warning from one place once, and the hook runs once per worker process).

    Example (what Ray does in each worker, given ``worker_process_setup_hook``):
        >>> setup_worker()  # doctest: +SKIP
    """
    import functools
    import warnings

    try:
        from ray.exceptions import RpcError
        from ray.train.v2._internal.execution.controller import placement_group_cleaner as cleaner
        from ray.util.state.exception import RayStateApiException

        original = cleaner.is_actor_alive
    except (ImportError, AttributeError) as err:
        warnings.warn(f"raysearch: Ray Train's placement-group cleaner was not patched ({err}); under load a "
                      "stopped trial may keep its placement group reserved", RuntimeWarning, stacklevel=2)
        return
    if getattr(original, "_raysearch_patched", False):
        return
    gcs_errors = (RpcError, TimeoutError, ConnectionError)  # GetTimeoutError is a TimeoutError

    @functools.wraps(original)
    def is_actor_alive(*args: Any, **kwargs: Any) -> bool:
        try:
            return original(*args, **kwargs)
        except gcs_errors as err:
            raise RayStateApiException(f"state API unavailable: {type(err).__name__}: {err}") from err

    is_actor_alive._raysearch_patched = True  # type: ignore[attr-defined]
    cleaner.is_actor_alive = is_actor_alive


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to a cluster (``address``) or start a local Ray on this machine.

    The dashboard runs (Train's placement-group cleanup needs the State API it serves)
    but listens on 127.0.0.1 only.
    """
    import ray

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", HEALTH_CHECK_INTERVAL_S)
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", WORKER_GROUP_START_TIMEOUT_S)
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if ray.is_initialized():
        return
    env_vars = {
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"],
        "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"],
        "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"),
        # A reused trial process (train.launcher auto) waits this long for the previous
        # trial's thread to end before taking the next trial; Tune's 2 s default is
        # exceeded on a loaded machine (a trial ends with a gc.collect of its model and
        # data), and the failed reuse then stalled the sweep.
        "TUNE_FUNCTION_THREAD_TIMEOUT_S": os.environ.get("TUNE_FUNCTION_THREAD_TIMEOUT_S", REUSE_THREAD_TIMEOUT_S),
    }
    if os.environ.get("RAYSEARCH_TEST_EVENTS"):  # see raysearch.train.worker.test_event
        env_vars["RAYSEARCH_TEST_EVENTS"] = os.environ["RAYSEARCH_TEST_EVENTS"]
    kwargs: dict[str, Any] = dict(
        log_to_driver=False,  # workers' output stays in Ray's logs; the console is raysearch's
        # ray_setup keeps Train's placement-group cleaner alive under load (see there).
        runtime_env={"env_vars": env_vars, "worker_process_setup_hook": "raysearch.run.ray_setup.setup_worker"},
        configure_logging=True,
        logging_level="WARNING",
    )
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(
            address="local",  # a new local Ray, never a cluster that `ray start` left on this machine
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            **kwargs,
        )



def ray_reachable(timeout_s: float = 1.0) -> bool:
    """Whether this driver's Ray still answers: its GCS accepts a connection.

    A signal sent to a whole process group (Slurm's ``scancel``, systemd, ``kill --
    -PGID``) reaches a local Ray's GCS and raylet with the driver; Ray's client then
    waits ``gcs_rpc_server_reconnect_timeout_s`` (60 s) and ends the process with exit
    code 1. The driver uses this check to exit on its own terms instead (see
    :func:`raysearch.run.experiment.graceful_stop`). False when Ray is not initialised.
    """
    import ray

    if not ray.is_initialized():
        return False
    host, _, port = ray.get_runtime_context().gcs_address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError:
        return False
    return True
