"""Ray's and Optuna's own log lines go to the experiment's log file, not the terminal.

``raysearch train``, ``tune`` and ``ablate`` print their own lines (the plan, the live
progress line, the summary) on the terminal; what Ray and Optuna log while they run (Ray's
token-authentication warning at start-up, Tune's and Train's warnings, Optuna's ``[I ...]
A new study created ...``) is appended to ``DIR/raysearch.log`` instead, each with its
time and level (``ray.init`` puts its own format on the ``ray`` logger's handlers, ours
included). ``--verbose`` keeps those lines on the terminal too.

Only Python's ``logging`` is touched: the handlers of the libraries' top loggers are
swapped for the file's for the duration of a command and restored after. This module
imports neither torch nor ray (:func:`library_logs` imports the libraries it routes, so
that their own handlers exist before they are swapped).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence

from raysearch.store import results

__all__ = ["LOG_FILE", "LIBRARIES", "library_logs", "route_logs"]

LOG_FILE = "raysearch.log"  # in the experiment folder
LIBRARIES = ("ray", "optuna")  # the top loggers routed (their children propagate to them)
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _FolderFileHandler(logging.FileHandler):
    """A file handler that opens its file (and makes its folder) at the first record, so a
    command that logs nothing leaves no file."""

    def __init__(self, path: str):
        super().__init__(path, mode="a", encoding="utf-8", delay=True)

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:
            os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
        super().emit(record)


@contextlib.contextmanager
def route_logs(path: str, names: Sequence[str], verbose: bool = False) -> Iterator[None]:
    """Within the block, the loggers ``names`` write to the file ``path`` (appended, made at
    the first record) and, unless ``verbose``, nowhere else: their own handlers are set
    aside and they stop propagating. Their handlers, propagation and levels come back after.
    """
    handler = _FolderFileHandler(path)
    handler.setFormatter(logging.Formatter(FORMAT))
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate))
        if not verbose:
            for h in list(logger.handlers):
                logger.removeHandler(h)
            logger.propagate = False
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, handlers, propagate in saved:
            logger.removeHandler(handler)
            for h in handlers:
                if h not in logger.handlers:
                    logger.addHandler(h)
            logger.propagate = propagate
        handler.close()


@contextlib.contextmanager
def library_logs(output: str, verbose: bool = False) -> Iterator[str]:
    """Ray's and Optuna's log lines into ``<output>/raysearch.log`` for the block (see the
    module docstring); yields the log file's path or URI. On a bucket the lines are
    written to a local file and appended to the bucket's copy when the block ends."""
    for name in LIBRARIES:  # a library sets up its own handler when imported: before the swap
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    uri = results.join(output, LOG_FILE)
    local = tempfile.mkdtemp(prefix="raysearch-log-") if "://" in output else None
    path = os.path.join(local, LOG_FILE) if local else uri
    try:
        with route_logs(path, LIBRARIES, verbose):
            yield uri
    finally:
        if local is not None:
            try:
                if os.path.exists(path):
                    with open(path, "rb") as f:
                        new = f.read()
                    old = results.read_bytes(uri) if results.exists(uri) else b""
                    results.write_bytes(uri, old + new)
            finally:
                shutil.rmtree(local, ignore_errors=True)
