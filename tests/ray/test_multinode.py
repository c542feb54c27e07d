"""Two real Ray nodes on one machine (separate `ray start` processes, separate raylets):
a `raysearch tune --address` sweep spreads its trials over both nodes, with its
experiment in S3-compatible storage (a local moto server), since two nodes on one
machine share a disk and would hide a dependence on the driver's local files."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from helpers.tiny import TINY, run_command

from raysearch.store import results

pytestmark = pytest.mark.slow

# Each node has one CPU and each trial takes one, so two concurrent trials must run on
# different nodes.
TINY = TINY + ["search.scheduler={kind: none}"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_bin() -> str:
    return os.path.join(os.path.dirname(sys.executable), "ray")


def count_nodes(address: str, env: dict) -> int:
    code = "import ray; ray.init(address=%r, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    try:
        out = run_command([sys.executable, "-c", code % address], env=env, timeout_s=60)
    except AssertionError:  # the node is not answering yet
        return 0
    counts = [int(line) for line in out.stdout.splitlines() if line.strip().isdigit()]
    return counts[-1] if out.returncode == 0 and counts else 0


@pytest.fixture
def two_nodes(tmp_path):
    env = dict(os.environ, RAY_AUTH_MODE="token")
    port, dash = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    procs = []

    def start(*args):
        log = open(tmp_path / f"node{len(procs)}.log", "w")
        procs.append(subprocess.Popen([ray_bin(), "start", "--block", "--num-cpus", "1", *args], env=env,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    try:
        start("--head", "--port", str(port), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
              "--resources", '{"node_a": 1}')
        deadline = time.time() + 90
        while count_nodes(address, env) < 1 and time.time() < deadline:
            time.sleep(2)
        start("--address", address, "--resources", '{"node_b": 1}')
        while count_nodes(address, env) < 2 and time.time() < deadline:
            time.sleep(2)
        assert count_nodes(address, env) == 2, "the two Ray nodes did not come up"

        def lose_second_node():
            """The second node disappears at once, as a reclaimed spot instance does."""
            os.killpg(procs[1].pid, signal.SIGKILL)
            procs[1].wait()

        yield address, env, lose_second_node
    finally:
        for p in reversed(procs):  # each node by its own process group, never `ray stop`
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=30)
            except ProcessLookupError:  # already gone (the lost node)
                pass
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def test_sweep_spreads_trials_over_two_nodes(two_nodes, s3_storage, demo_spec_path, tmp_path):
    address, env, _ = two_nodes
    storage = s3_storage("multinode")
    driver_dir = tmp_path / "driver"  # the driver's working folder: it must stay empty
    driver_dir.mkdir()
    sets = [a for s in TINY for a in ("--set", s)]
    done = run_command([sys.executable, "-m", "raysearch.cli", "tune", demo_spec_path, *sets, "--address", address,
                        "--trials", "4", "--concurrent", "2", "--storage", storage, "--quiet"], env=env,
                       timeout_s=600, cwd=str(driver_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    experiment = results.join(storage, "distcon-digits-demo")
    rows = results.read_results(experiment).to_pylist()
    assert len(rows) == 4 and all(r["status"] == "completed" for r in rows)
    assert len({r["node_id"] for r in rows}) == 2, [r["node_id"] for r in rows]
    # Everything of the experiment is in the bucket, nothing in the driver's folder; the
    # rows' checkpoint addresses carry no keys.
    for name in ("spec.yaml", "optuna.db", "ray/tune/tuner.pkl"):
        assert results.exists(results.join(experiment, name)), name
    for r in rows:
        assert r["checkpoint"].startswith("s3://raysearch/multinode/") and "testing" not in r["checkpoint"]
        assert results.exists(r["checkpoint"].replace("s3://", "s3://testing:testing@"))
    assert os.listdir(driver_dir) == []


def test_trial_of_a_lost_node_restarts_elsewhere_from_its_checkpoint(two_nodes, s3_storage, demo_spec_path):
    """Two long trials, one per node; the second node is killed after both have
    checkpointed: its trial restarts on the remaining node from its last checkpoint
    (train.max_failures) and the sweep completes with one row per trial."""
    import pyarrow.fs as pafs

    address, env, lose_second_node = two_nodes
    storage = s3_storage("node-loss")
    experiment = results.join(storage, "distcon-digits-demo")
    sets = [a for s in TINY + ["data.max_train=240", "params.backbone.width=32", "train.epochs=30",
                               "train.eval_every=2", "train.max_failures=2"] for a in ("--set", s)]
    cmd = [sys.executable, "-m", "raysearch.cli", "tune", demo_spec_path, *sets, "--address", address,
           "--trials", "2", "--concurrent", "2", "--storage", storage, "--quiet"]
    log = open(os.devnull, "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        fs, tune_dir = results.resolve(results.join(experiment, "ray", "tune"))
        deadline = time.time() + 300
        trials_with_checkpoints: set = set()
        while len(trials_with_checkpoints) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(1)
            if fs.get_file_info(tune_dir).type == pafs.FileType.NotFound:
                continue
            trials_with_checkpoints = {
                i.path.split("/")[-3] for i in fs.get_file_info(pafs.FileSelector(tune_dir, recursive=True))
                if i.base_name == "state.pt"
            }
        assert len(trials_with_checkpoints) == 2, "both trials should have checkpointed by now"
        assert not results.exists(results.join(experiment, "results")) or results.read_results(experiment).num_rows == 0
        lose_second_node()
        code = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 0
    rows = results.read_results(experiment).to_pylist()
    assert len(rows) == 2 and all(r["status"] == "completed" and r["epochs"] == 30 for r in rows)
    assert len({r["trial_id"] for r in rows}) == 2
    resumed = [r for r in rows if r["resumed_epoch"] is not None]
    assert len(resumed) == 1 and resumed[0]["resumed_epoch"] >= 2, [r["resumed_epoch"] for r in rows]
    assert len({r["node_id"] for r in rows}) == 1  # both finished on the node that was left
