"""Shared fixtures: one local Ray for the whole session (Ray start-ups are costly on 2 cores).

The tiers: tests/unit (neither torch nor Ray, see its conftest), tests/train (in process,
no Ray cluster), tests/ray (a local Ray cluster, every test marked slow). Helpers that
several files share are in tests/helpers (this folder is on the import path: `from
helpers.tiny import TINY`).
"""

from __future__ import annotations

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def run_events(tmp_path_factory) -> str:
    """The folder where runs mark each checkpointed report (``raysearch.train.worker.test_event``).

    A test waits for ``checkpoint-<trial>-<class index>-<epoch>`` there instead of
    sleeping; while a file ``hold`` exists there, runs wait after such a report.
    """
    return str(tmp_path_factory.mktemp("run-events"))


@pytest.fixture(scope="session")
def ray_session(run_events):
    """A local Ray with the dashboard on 127.0.0.1 (Train's cleanup needs it).

    Four logical CPUs on a 2-core machine: a placement group that Ray fails to release
    (seen under heavy load) makes a test fail its own check instead of hanging the suite.
    Its workers mark checkpointed reports in ``run_events``.
    """
    import ray

    from raysearch.run.ray_setup import init_ray

    os.environ["RAYSEARCH_TEST_EVENTS"] = run_events
    init_ray(num_cpus=4)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_storage():
    """A local S3-compatible server (moto's server mode) on loopback with one bucket.

    Returns a function that gives a storage URI under a prefix; the URI carries the
    endpoint and the (fake) keys, so every Ray process reaches the server without any
    environment of its own.
    """
    import socket
    import subprocess
    import sys
    import time

    import pyarrow.fs as pafs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("the local S3 server (moto) did not start") from None
                time.sleep(0.2)
        pafs.S3FileSystem(access_key="testing", secret_key="testing", region="us-east-1", scheme="http",
                          endpoint_override=f"127.0.0.1:{port}", allow_bucket_creation=True).create_dir("raysearch")
        query = f"?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
        yield lambda prefix: f"s3://testing:testing@raysearch/{prefix}{query}"
    finally:
        server.kill()
        server.wait()


@pytest.fixture
def demo_spec_path() -> str:
    return os.path.join(REPO, "search_spaces", "demo", "distcon.yaml")


@pytest.fixture
def one_thread():
    """One intra-op thread: CPU kernels then reduce in one fixed order."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config, items):
    """The ``slow`` marker and the Ray tier are the same tests: ``-m "not slow"`` is the
    unit and train tiers, ``-m slow`` is tests/ray."""
    ray_tier = os.path.join(REPO, "tests", "ray") + os.sep
    wrong = [item.nodeid for item in items if ("slow" in item.keywords) != str(item.path).startswith(ray_tier)]
    if wrong:
        raise pytest.UsageError("a test in tests/ray must be marked slow, and only those are: " + ", ".join(wrong))
