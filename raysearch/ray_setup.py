"""Ray start-up for raysearch: :func:`init_ray` and the set-up of every Ray worker process.

:func:`setup_worker` runs in every worker process (``worker_process_setup_hook``).

Ray Train 2.60 removes a run's placement group from a small detached actor that polls
the State API to see whether the run's controller is still alive. Under load (a busy
node, a 2-core machine running several trials) that poll can raise
``GetTimeoutError`` or ``RpcError`` (GCS timeouts), which the poller does not catch: its thread dies, the placement
group of every later-stopped trial stays reserved, and a sweep waits forever for the
CPUs or GPUs it holds. Here a failed poll counts as "State API unavailable", which
the poller already handles by polling again.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["init_ray", "setup_worker"]

# Train's controller polls workers this often; every report waits for a poll (2 s by
# default), which dominates short epochs. Measured in benchmarks/.
HEALTH_CHECK_INTERVAL_S = "0.2"
# Train gives a worker group 60 s to start before it retries; a retry left the first
# attempt's placement group reserved (Ray 2.60), and on a busy small machine, where
# importing torch alone can take that long, the sweep then waited forever for CPUs.
WORKER_GROUP_START_TIMEOUT_S = "900"


def setup_worker() -> None:
    try:
        from ray.train.v2._internal.execution.controller import placement_group_cleaner as cleaner
        from ray.util.state.exception import RayStateApiException
    except ImportError:  # another Ray layout: nothing to patch
        return
    original = cleaner.is_actor_alive
    if getattr(original, "_raysearch_patched", False):
        return

    def is_actor_alive(actor_id: str, timeout: int) -> bool:
        try:
            return original(actor_id=actor_id, timeout=timeout)
        except RayStateApiException:
            raise
        except Exception as err:  # GetTimeoutError, RpcError("Timed out while waiting for GCS") ...
            raise RayStateApiException(f"state API unavailable: {err}") from None

    is_actor_alive._raysearch_patched = True  # type: ignore[attr-defined]
    cleaner.is_actor_alive = is_actor_alive


def init_ray(address: str | None = None, num_cpus: int | None = None, log_to_driver: bool = False) -> None:
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
    }
    if os.environ.get("RAYSEARCH_TEST_EVENTS"):  # see raysearch.training.test_event
        env_vars["RAYSEARCH_TEST_EVENTS"] = os.environ["RAYSEARCH_TEST_EVENTS"]
    kwargs: dict[str, Any] = dict(
        log_to_driver=log_to_driver,
        # ray_setup keeps Train's placement-group cleaner alive under load (see there).
        runtime_env={"env_vars": env_vars, "worker_process_setup_hook": "raysearch.ray_setup.setup_worker"},
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

