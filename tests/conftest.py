"""Shared fixtures: one local Ray for the whole session (Ray start-ups are costly on 2 cores)."""

from __future__ import annotations

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with the dashboard on 127.0.0.1 (Train's cleanup needs it).

    Four logical CPUs on a 2-core machine: a placement group that Ray fails to release
    (seen under heavy load) makes a test fail its own check instead of hanging the suite.
    """
    import ray

    from raysearch.training import init_ray

    init_ray(num_cpus=4)
    yield ray
    ray.shutdown()


@pytest.fixture
def demo_spec_path() -> str:
    return os.path.join(REPO, "search_spaces", "demo", "distcon.yaml")
