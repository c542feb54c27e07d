"""One owner per experiment: raysearch.lock on local folders, between processes and on S3."""

import io
import os
import socket

import pytest

from raysearch.lock import ExperimentLock

T0 = 1_800_000_000.0  # a fixed wall clock: 2027-01-15T08:00:00+00:00
HOST = socket.gethostname()

# A command in its own process: says "ready", waits for a line, tries the lock, says
# "won" (then holds it until the next line) or "locked <message>" (exit 3).
CHILD = """
import sys
from raysearch.lock import ExperimentLock, LockedError
print("ready", flush=True)
sys.stdin.readline()
try:
    lock = ExperimentLock(sys.argv[1], "tune").acquire()
except LockedError as err:
    print("locked", err, flush=True)
    sys.exit(3)
print("won", flush=True)
sys.stdin.readline()
lock.release()
"""


@pytest.mark.parametrize("command", ["train", "tune", "ablate"])
def test_a_second_driver_on_a_used_output_is_refused_before_anything_starts(tmp_path, capsys, command):
    """While one driver holds an experiment, train, tune and ablate into it exit 2 naming
    it, and leave the folder as it was."""
    from raysearch.cli import main

    out = tmp_path / "exp"
    with ExperimentLock(str(out), "tune", stream=io.StringIO()):
        before = sorted(p.name for p in out.iterdir())
        code = main([command, "search_spaces/demo/distcon.yaml", "--output", str(out), "--set", "data.classes=[3]"])
        assert sorted(p.name for p in out.iterdir()) == before
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"{out} is in use by raysearch tune (pid {os.getpid()} on host" in err
