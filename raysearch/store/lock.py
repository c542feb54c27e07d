"""One owner per experiment: the owner file ``<experiment>/owner.json``.

Two drivers writing one experiment (two ``raysearch tune --resume`` of the same folder,
a ``compact`` during a sweep) would interleave Tune snapshots, study writes and result
files. A command that writes an experiment holds an :class:`ExperimentLock` on it for
its whole run::

    with ExperimentLock(output, command="tune"):
        ...  # run the sweep

The owner file names the host, the pid, the command, the start time and a heartbeat
that a daemon thread refreshes every :data:`HEARTBEAT_S` seconds. A second command on
the same experiment fails at once with :class:`LockedError`, one line naming the
running owner. An owner is taken over (with a line on ``stream``) when it is stale:

- its heartbeat is older than :data:`STALE_AFTER_S` (the owner died on another host,
  or was killed with SIGKILL), or
- it ran on this host and its process is gone (no need to wait for the heartbeat to
  age), or
- its owner file cannot be read or parsed.

Leaving the ``with`` block releases the lock, whether by return, exception or Ctrl-C
(``KeyboardInterrupt``); the file is removed only while it is still this lock's (a
token written into it tells owners apart, even two with one pid). A process that dies
without unwinding (SIGKILL, ``os._exit``, SIGTERM without a handler) leaves its file,
and the next command takes it over by the pid check on the same host or by the age
of the heartbeat anywhere else. Heartbeats compare wall clocks, so hosts whose clocks
differ by a good part of :data:`STALE_AFTER_S` may take each other over early or late.

Local folders are race-free: the owner file appears complete in one step (written
under a temporary name, then hard-linked into place, which fails if the file exists),
and every read-judge-replace (acquire, take-over, heartbeat, release) runs under an
``flock`` on ``<experiment>/.owner.mutex``, so of two processes that take over one
stale owner at once exactly one wins. A stale file is first renamed aside and checked
to be the one judged stale before it is deleted.

Object stores (``s3://``, ``gs://``) through pyarrow have no create-if-absent and no
locks: the lock writes its owner file, then reads it back and fails if another owner's
is there. This is best effort: two commands that start within one round trip of each
other may both believe they own the experiment. Each heartbeat checks the file again
and says so on ``stream`` when another owner has replaced it (:attr:`ExperimentLock.lost`).

This module imports neither torch nor ray.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import TextIO

from raysearch.config.schema import SpecError
from raysearch.store import results

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the atomic create alone guards the file
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "ExperimentLock",
    "LockedError",
    "Owner",
    "read_owner",
    "exclusive",
    "release_held",
    "OWNER_FILE",
    "COMMANDS",
    "HEARTBEAT_S",
    "STALE_AFTER_S",
]

OWNER_FILE = "owner.json"
# Serialises read-judge-replace of the owner file among processes on local storage.
MUTEX_FILE = ".owner.mutex"
# The commands that write an experiment and so take its lock.
COMMANDS = ("tune", "ablate", "train", "compact")
# How often the owner rewrites its heartbeat (s): one small write, cheap even to S3.
HEARTBEAT_S = 30.0
# A heartbeat older than this (s) means the owner is gone: four missed refreshes, so a
# busy machine or a slow object store does not lose its lock to a late heartbeat.
STALE_AFTER_S = 120.0

# The locks this process holds now, by token: an owner file with this process's pid
# (same host) but an unknown token was left by an earlier process that had the same pid.
_HELD: dict[str, ExperimentLock] = {}
_HELD_GUARD = threading.Lock()


class LockedError(SpecError):
    """The experiment is owned by a running command; the CLI prints it in one line, exit 2.

    ``str(err)``: ``<experiment> is in use by raysearch tune (pid 123 on host h, started
    2026-01-02T03:04:05+00:00, last heartbeat 12 s ago); wait for it or stop it``.
    """

    def __init__(self, output: str, owner: Owner | None, now: float):
        # None: an object store's owner file changed to something unreadable as we took it
        who = owner.describe(now) if owner is not None else "another command"
        super().__init__(f"{results.redact(output)} is in use by {who}; wait for it or stop it")
        self.output = output
        self.owner = owner


@dataclass(frozen=True)
class Owner:
    """The content of an owner file."""

    host: str       # socket.gethostname() of the owner
    pid: int        # its process id on that host
    command: str    # one of COMMANDS
    started: str    # when it took the lock, ISO 8601 in UTC
    heartbeat: str  # its last heartbeat, ISO 8601 in UTC (every HEARTBEAT_S)
    token: str      # unique per acquisition: tells this owner from another with the same pid

    def to_bytes(self) -> bytes:
        return (json.dumps(dataclasses.asdict(self), indent=1) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Owner:
        """Parse an owner file; ``ValueError`` when it is not one."""
        try:
            raw = json.loads(data)
            owner = cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls)})
            _parse_time(owner.heartbeat)
            _parse_time(owner.started)
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"not an owner file: {err}") from None
        if not isinstance(owner.pid, int) or not isinstance(owner.host, str) or not isinstance(owner.token, str):
            raise ValueError(f"not an owner file: {raw!r}")
        return owner

    def age(self, now: float) -> float:
        """Seconds since the last heartbeat (0 when the owner's clock is ahead of ``now``)."""
        return max(0.0, now - _parse_time(self.heartbeat))

    def describe(self, now: float) -> str:
        """``raysearch tune (pid 123 on host h, started ..., last heartbeat 12 s ago)``."""
        return (f"raysearch {self.command} (pid {self.pid} on host {self.host}, started {self.started}, "
                f"last heartbeat {_duration(self.age(now))} ago)")


def read_owner(output: str) -> Owner | None:
    """The owner of experiment ``output``, or None when it has none (or an unreadable file).

    Example:
        >>> owner = read_owner("raysearch-results/distcon-demo")  # doctest: +SKIP
        >>> owner.describe(time.time()) if owner else "free"      # doctest: +SKIP
    """
    try:
        return Owner.from_bytes(results.read_bytes(results.join(output, OWNER_FILE)))
    except (FileNotFoundError, ValueError):
        return None


class ExperimentLock:
    """Exclusive ownership of one experiment folder or URI while a command writes it.

    Args:
        output: the experiment, a local folder (created if missing) or a URI.
        command: the command that takes it, one of :data:`COMMANDS`.
        heartbeat_s: seconds between heartbeats.
        stale_after_s: an owner whose heartbeat is older than this is taken over.
        stream: where take-overs and a lost lock are reported (default ``sys.stderr``).
        clock: wall-clock seconds since the epoch (injectable for tests).

    Raises (on acquire) :class:`LockedError` when a live command owns the experiment.

    Example:
        >>> with ExperimentLock("raysearch-results/distcon-demo", command="tune"):  # doctest: +SKIP
        ...     run_the_sweep()
    """

    def __init__(
        self,
        output: str,
        command: str,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if command not in COMMANDS:
            raise ValueError(f"command must be one of {', '.join(COMMANDS)}, but got {command!r}")
        if not 0 < heartbeat_s < stale_after_s:
            raise ValueError(f"expected 0 < heartbeat_s < stale_after_s, but got {heartbeat_s=}, {stale_after_s=}")
        self.output = output
        self.command = command
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self.clock = clock
        self._stream = stream
        self._uri = results.join(output, OWNER_FILE)
        self._local = "://" not in output
        self._path = results.resolve(self._uri)[1]  # the file's path (local) or the path in its filesystem
        self.owner: Owner | None = None  # ours while held
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost = False
        self._write_failed = False

    # -- public ------------------------------------------------------------------------
    @property
    def held(self) -> bool:
        return self.owner is not None

    @property
    def lost(self) -> bool:
        """True once a heartbeat found another owner's file in place of this lock's."""
        return self._lost

    def acquire(self) -> ExperimentLock:
        """Take the experiment (taking over a stale owner), then start the heartbeat."""
        if self.owner is not None:
            raise RuntimeError(f"{results.redact(self.output)}: this lock is held already")
        now = self.clock()
        stamp = _iso(now)
        owner = Owner(host=socket.gethostname(), pid=os.getpid(), command=self.command, started=stamp,
                      heartbeat=stamp, token=uuid.uuid4().hex)
        if self._local:
            self._acquire_local(owner)
        else:
            self._acquire_remote(owner)
        with _HELD_GUARD:
            _HELD[owner.token] = self
        self.owner = owner
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="raysearch-owner-heartbeat", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        """Stop the heartbeat and remove the owner file if it is still this lock's."""
        owner = self.owner
        if owner is None:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        self.owner = None
        with _HELD_GUARD:
            _HELD.pop(owner.token, None)
        try:
            if self._local:
                with self._mutex():
                    current, _ = self._read_local()
                    if current is not None and current.token == owner.token:
                        os.unlink(self._path)
            else:
                current, _ = self._read_remote()
                if current is not None and current.token == owner.token:
                    fs, path = results.resolve(self._uri)
                    fs.delete_file(path)
        except OSError as err:  # do not hide what ended the run; the next one takes it over
            self._say(f"raysearch: could not remove the owner file of {results.redact(self.output)}: {err}")

    def __enter__(self) -> ExperimentLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()

    # -- acquiring ---------------------------------------------------------------------
    def _acquire_local(self, owner: Owner) -> None:
        os.makedirs(os.path.dirname(self._path), exist_ok=True)
        data = owner.to_bytes()
        with self._mutex():
            while True:  # each turn either creates the file, fails, or removes a stale one
                if _create_exclusive(self._path, data, owner.token):
                    return
                current, raw = self._read_local()
                if raw is None:  # removed between our create and our read
                    continue
                reason = self._stale_reason(current)
                if reason is None:
                    raise LockedError(self.output, current, self.clock())
                if self._remove_stale(raw):
                    self._say(self._takeover_line(current, reason))

    def _acquire_remote(self, owner: Owner) -> None:
        current, raw = self._read_remote()
        if raw is not None:
            reason = self._stale_reason(current)
            if reason is None:
                raise LockedError(self.output, current, self.clock())
            self._say(self._takeover_line(current, reason))
        results.write_bytes(self._uri, owner.to_bytes())
        current, _ = self._read_remote()  # another command may have written after us
        if current is None or current.token != owner.token:
            raise LockedError(self.output, current, self.clock())

    def _stale_reason(self, owner: Owner | None) -> str | None:
        """Why ``owner`` may be taken over, or None while it is live."""
        if owner is None:
            return "its owner file is unreadable"
        age = owner.age(self.clock())
        if age > self.stale_after_s:
            return f"its heartbeat is older than {_duration(self.stale_after_s)}"
        if owner.host == socket.gethostname():
            if owner.pid == os.getpid():
                with _HELD_GUARD:
                    if owner.token not in _HELD:
                        return "its process is no longer running (this process has its pid now)"
            elif not _pid_alive(owner.pid):
                return "its process is no longer running"
        return None

    def _takeover_line(self, owner: Owner | None, reason: str) -> str:
        where = results.redact(self.output)
        if owner is None:
            return f"raysearch: taking over {where}: {reason}"
        return f"raysearch: taking over {where} from {owner.describe(self.clock())}: {reason}"

    def _remove_stale(self, raw: bytes) -> bool:
        """Remove the owner file judged stale; False when it changed meanwhile (then it stays)."""
        aside = f"{self._path}.stale.{uuid.uuid4().hex}"
        try:
            os.rename(self._path, aside)
        except FileNotFoundError:
            return False
        with open(aside, "rb") as f:
            moved = f.read()
        if moved != raw:  # another process (without the mutex) put a new owner there: put it back
            with contextlib.suppress(FileExistsError):
                os.link(aside, self._path)
            os.unlink(aside)
            return False
        os.unlink(aside)
        return True

    # -- the heartbeat -----------------------------------------------------------------
    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            owner = self.owner
            if owner is None:
                return
            try:
                if not self._refresh(owner):
                    return
            except OSError as err:  # a network hiccup: keep trying, say it once
                if not self._write_failed:
                    self._write_failed = True
                    self._say(f"raysearch: could not refresh the heartbeat of {results.redact(self.output)}: {err}")

    def _refresh(self, owner: Owner) -> bool:
        """Write a new heartbeat if the file is still ours; False (and say so) when it is not."""
        beat = dataclasses.replace(owner, heartbeat=_iso(self.clock()))
        if self._local:
            with self._mutex():
                current, _ = self._read_local()
                if current is not None and current.token == owner.token:
                    results.write_bytes(self._path, beat.to_bytes())
                    self.owner = beat
                    return True
        else:
            current, _ = self._read_remote()
            if current is not None and current.token == owner.token:
                results.write_bytes(self._uri, beat.to_bytes())
                self.owner = beat
                return True
        self._lost = True
        by = f" by {current.describe(self.clock())}" if current is not None else ""
        self._say(f"raysearch: {results.redact(self.output)} was taken over{by}; this run no longer owns it")
        return False

    # -- files -------------------------------------------------------------------------
    def _read_local(self) -> tuple[Owner | None, bytes | None]:
        """(owner or None if unparsable, raw bytes or None if there is no file)."""
        try:
            with open(self._path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None, None
        return _parse(raw), raw

    def _read_remote(self) -> tuple[Owner | None, bytes | None]:
        try:
            raw = results.read_bytes(self._uri)
        except FileNotFoundError:
            return None, None
        return _parse(raw), raw

    @contextlib.contextmanager
    def _mutex(self) -> Iterator[None]:
        fd = os.open(os.path.join(os.path.dirname(self._path), MUTEX_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                with contextlib.suppress(OSError):  # a filesystem without locks: the atomic create still holds
                    fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _say(self, line: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(line + "\n")
        stream.flush()


# -- helpers ---------------------------------------------------------------------------
def _create_exclusive(path: str, data: bytes, token: str) -> bool:
    """Create ``path`` holding ``data`` unless it exists; readers never see it half written."""
    tmp = f"{path}.{token}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # atomic, and fails when path exists
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here: create-if-absent, then write (a reader may see it empty)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    finally:
        os.unlink(tmp)


def _parse(raw: bytes) -> Owner | None:
    try:
        return Owner.from_bytes(raw)
    except ValueError:
        return None


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie does not: it holds nothing)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):  # no /proc (macOS): kill(0) is all we know
        return True


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _parse_time(stamp: str) -> float:
    when = datetime.fromisoformat(stamp)
    if when.tzinfo is None:
        raise ValueError(f"time without a zone: {stamp!r}")
    return when.timestamp()


def _duration(seconds: float) -> str:
    """12 s, 3 min, 5 h: the unit a person reads at a glance."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def release_held() -> None:
    """Release every lock this process holds: for a process about to end with
    ``os._exit`` (the driver whose Ray died with it, :func:`raysearch.run.experiment.graceful_stop`),
    so that the next command finds the experiment free instead of taking it over."""
    with _HELD_GUARD:
        held = list(_HELD.values())
    for lock in held:
        lock.release()


def exclusive(command: str) -> Callable:
    """Decorate ``run(spec, output, ..., stream=...)`` to run holding ``output``'s lock.

    The lock is taken before anything else looks at the folder, so a second driver is
    told who runs there rather than that the folder is in use by an experiment.
    """
    import functools

    def decorate(run: Callable) -> Callable:
        @functools.wraps(run)
        def locked(spec, output: str, *args, **kwargs):
            with ExperimentLock(output, command, stream=kwargs.get("stream")):
                return run(spec, output, *args, **kwargs)

        return locked

    return decorate
