"""Set-up run in every Ray worker process of raysearch (``worker_process_setup_hook``).

Ray Train 2.60 removes a run's placement group from a small detached actor that polls
the State API to see whether the run's controller is still alive. Under load (a busy
node, a 2-core machine running several trials) that poll can raise
``GetTimeoutError`` or ``RpcError`` (GCS timeouts), which the poller does not catch: its thread dies, the placement
group of every later-stopped trial stays reserved, and a sweep waits forever for the
CPUs or GPUs it holds. Here a failed poll counts as "State API unavailable", which
the poller already handles by polling again.
"""

from __future__ import annotations

__all__ = ["setup_worker"]


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
