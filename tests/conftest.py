"""Shared fixtures: one local Ray for the whole session (Ray start-ups are costly on 2 cores)."""

from __future__ import annotations

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs and the dashboard on 127.0.0.1 (Train's cleanup needs it)."""
    import ray

    from raysearch.training import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture
def demo_spec_path() -> str:
    return os.path.join(REPO, "search_spaces", "demo", "distcon.yaml")
