"""One owner per experiment: raysearch.store.lock on local folders, between processes and on S3."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from raysearch.config.schema import SpecError
from raysearch.store import results
from raysearch.store.lock import OWNER_FILE, ExperimentLock, LockedError, Owner, read_owner

T0 = 1_800_000_000.0  # a fixed wall clock: 2027-01-15T08:00:00+00:00
HOST = socket.gethostname()

# A command in its own process: says "ready", waits for a line, tries the lock, says
# "won" (then holds it until the next line) or "locked <message>" (exit 3).
CHILD = """
import sys
from raysearch.store.lock import ExperimentLock, LockedError
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


def child(out):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, out], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    return proc


def say(proc, line="go"):
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def owner_file(out, **fields):
    """Write an owner file as another command would have left it."""
    record = dict(host="elsewhere", pid=4242, command="ablate", started="2027-01-15T07:00:00+00:00",
                  heartbeat="2027-01-15T08:00:00+00:00", token="0" * 32)
    record.update(fields)
    results.write_bytes(results.join(out, OWNER_FILE), json.dumps(record).encode())


def owner_of(out):
    return Owner.from_bytes(results.read_bytes(results.join(out, OWNER_FILE)))


def wait_for(condition, what):
    """Poll ``condition`` until it holds; fail (not hang) if it never does."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_a_second_lock_fails_with_one_line_naming_the_owner(tmp_path):
    out = str(tmp_path / "exp")
    with ExperimentLock(out, command="tune", clock=lambda: T0) as first:
        assert owner_of(out) == first.owner
        assert (first.owner.host, first.owner.pid, first.owner.command) == (HOST, os.getpid(), "tune")
        assert first.owner.started == first.owner.heartbeat == "2027-01-15T08:00:00+00:00"
        with pytest.raises(LockedError) as err:
            ExperimentLock(out, command="ablate", clock=lambda: T0 + 12).acquire()
        assert err.value.owner == first.owner
    assert isinstance(err.value, SpecError)  # the CLI prints it in one line and exits 2
    assert str(err.value) == (
        f"{out} is in use by raysearch tune (pid {os.getpid()} on host {HOST}, "
        "started 2027-01-15T08:00:00+00:00, last heartbeat 12 s ago); wait for it or stop it")


@pytest.mark.parametrize("ending", [None, RuntimeError, KeyboardInterrupt])
def test_the_lock_is_released_when_the_block_ends_however_it_ends(tmp_path, ending):
    out = str(tmp_path / "exp")
    lock = ExperimentLock(out, command="train")
    if ending is None:
        with lock:
            assert read_owner(out) == lock.owner
    else:
        with pytest.raises(ending), lock:
            raise ending("stopped")
    assert read_owner(out) is None and not lock.held
    with ExperimentLock(out, command="train"):  # and the next command gets it at once
        pass


def test_an_owner_with_an_old_heartbeat_is_taken_over_and_a_fresh_one_is_not(tmp_path):
    out = str(tmp_path / "exp")
    owner_file(out, heartbeat="2027-01-15T07:58:01+00:00")  # 119 s before T0: live
    with pytest.raises(LockedError, match=r"in use by raysearch ablate \(pid 4242 on host elsewhere, .*"
                                          r"last heartbeat 119 s ago\)"):
        ExperimentLock(out, command="tune", clock=lambda: T0).acquire()

    owner_file(out, heartbeat="2027-01-15T07:57:59+00:00")  # 121 s before T0: stale
    said = io.StringIO()
    with ExperimentLock(out, command="tune", clock=lambda: T0, stream=said) as lock:
        assert owner_of(out) == lock.owner
    assert said.getvalue() == (
        f"raysearch: taking over {out} from raysearch ablate (pid 4242 on host elsewhere, started "
        "2027-01-15T07:00:00+00:00, last heartbeat 2 min ago): its heartbeat is older than 2 min\n")


def test_an_owner_whose_process_is_gone_on_this_host_is_taken_over(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    out = str(tmp_path / "exp")
    owner_file(out, host=HOST, pid=ended.pid)  # heartbeat at T0: fresh
    said = io.StringIO()
    with ExperimentLock(out, command="tune", clock=lambda: T0, stream=said) as lock:
        assert owner_of(out).token == lock.owner.token
    assert said.getvalue().endswith(f"(pid {ended.pid} on host {HOST}, started 2027-01-15T07:00:00+00:00, "
                                    "last heartbeat 0 s ago): its process is no longer running\n")


def test_a_live_owner_on_another_host_is_not_taken_over(tmp_path):
    out = str(tmp_path / "exp")
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    owner_file(out, host="elsewhere", pid=ended.pid)  # that pid is free here, which says nothing there
    before = results.read_bytes(results.join(out, OWNER_FILE))
    with pytest.raises(LockedError, match="on host elsewhere"):
        ExperimentLock(out, command="tune", clock=lambda: T0 + 30).acquire()
    assert results.read_bytes(results.join(out, OWNER_FILE)) == before


def test_a_file_left_by_an_earlier_process_with_this_pid_is_taken_over(tmp_path):
    """A container restarted after SIGKILL gives its new driver the old one's pid."""
    out = str(tmp_path / "exp")
    owner_file(out, host=HOST, pid=os.getpid())
    said = io.StringIO()
    with ExperimentLock(out, command="tune", clock=lambda: T0, stream=said):
        pass
    assert said.getvalue().endswith("its process is no longer running (this process has its pid now)\n")


@pytest.mark.parametrize("content", [b"", b"{", b'{"host": "h"}', b"[1, 2]"])
def test_an_unreadable_owner_file_counts_as_stale(tmp_path, content):
    out = str(tmp_path / "exp")
    results.write_bytes(results.join(out, OWNER_FILE), content)
    said = io.StringIO()
    with ExperimentLock(out, command="compact", stream=said) as lock:
        assert owner_of(out) == lock.owner
    assert said.getvalue() == f"raysearch: taking over {out}: its owner file is unreadable\n"


def test_the_heartbeat_is_refreshed_and_stops_with_the_lock(tmp_path):
    out = str(tmp_path / "exp")
    ticks = iter(range(10**6))
    lock = ExperimentLock(out, command="tune", heartbeat_s=0.01, clock=lambda: T0 + next(ticks))
    with lock:
        first = owner_of(out)
        assert first.heartbeat == "2027-01-15T08:00:00+00:00"
        wait_for(lambda: owner_of(out).heartbeat != first.heartbeat, "a heartbeat")
        beat = owner_of(out)
        assert beat.started == first.started and beat.token == first.token and beat.age(T0) == 0
        assert beat.heartbeat > first.heartbeat
    assert read_owner(out) is None


def test_a_lock_taken_over_knows_it_and_leaves_the_new_owner_alone(tmp_path):
    out = str(tmp_path / "exp")
    said = io.StringIO()
    old = ExperimentLock(out, command="tune", heartbeat_s=0.01, stream=said, clock=lambda: T0).acquire()
    try:
        new = ExperimentLock(out, command="ablate", stream=io.StringIO(), clock=lambda: T0 + 600).acquire()
        wait_for(lambda: old.lost, "the old owner to notice")
    finally:
        old.release()
    assert owner_of(out) == new.owner  # the old lock removed nothing of the new owner's
    assert f"raysearch: {out} was taken over by raysearch ablate (pid {os.getpid()}" in said.getvalue()
    new.release()
    assert read_owner(out) is None


def test_an_owner_killed_with_sigkill_is_taken_over_by_the_next_command(tmp_path):
    out = str(tmp_path / "exp")
    proc = child(out)
    say(proc)
    assert proc.stdout.readline() == "won\n"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert read_owner(out).pid == proc.pid  # the file stays
    said = io.StringIO()
    with ExperimentLock(out, command="tune", stream=said):
        pass
    assert said.getvalue().endswith("its process is no longer running\n")


@pytest.mark.parametrize("before", ["free", "stale"])
def test_of_two_processes_that_race_for_the_lock_exactly_one_wins(tmp_path, before):
    out = str(tmp_path / "exp")
    if before == "stale":  # both try to take over the same stale owner
        owner_file(out, heartbeat="2000-01-01T00:00:00+00:00")
    procs = [child(out), child(out)]
    for proc in procs:
        say(proc)
    answers = [proc.stdout.readline() for proc in procs]
    assert sorted(a.split()[0] for a in answers) == ["locked", "won"], answers
    winner = procs[answers.index("won\n")]
    loser = procs[1 - answers.index("won\n")]
    assert f"in use by raysearch tune (pid {winner.pid} on host {HOST}," in answers[procs.index(loser)]
    assert read_owner(out).pid == winner.pid
    say(winner, "release")
    assert winner.wait(timeout=60) == 0 and loser.wait(timeout=60) == 3
    assert read_owner(out) is None
    assert sorted(os.listdir(out)) == [".owner.mutex"]  # no temporary or set-aside files left


def test_a_command_outside_the_list_is_refused(tmp_path):
    with pytest.raises(ValueError, match="command must be one of tune, ablate, train, compact, but got 'report'"):
        ExperimentLock(str(tmp_path), command="report")


def test_the_lock_works_on_an_object_store(s3_storage):
    out = s3_storage("lock")
    shown = results.redact(out)
    with ExperimentLock(out, command="tune", clock=lambda: T0) as first:
        assert owner_of(out) == first.owner
        with pytest.raises(LockedError) as err:
            ExperimentLock(out, command="ablate", clock=lambda: T0 + 5).acquire()
        assert str(err.value).startswith(f"{shown} is in use by raysearch tune (pid {os.getpid()}")
        assert "testing:testing@" not in str(err.value)  # keys in the URI are not printed
    assert read_owner(out) is None

    owner_file(out, heartbeat="2000-01-01T00:00:00+00:00")
    said = io.StringIO()
    ticks = iter(range(10**6))
    with ExperimentLock(out, command="train", heartbeat_s=0.01, stream=said, clock=lambda: T0 + next(ticks)) as lock:
        assert said.getvalue().startswith(f"raysearch: taking over {shown} from raysearch ablate (pid 4242")
        started = owner_of(out)
        assert started.token == lock.owner.token
        wait_for(lambda: owner_of(out).heartbeat != started.heartbeat, "a heartbeat on S3")
    assert read_owner(out) is None


