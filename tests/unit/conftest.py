"""The unit tier imports neither torch nor Ray, directly or through raysearch.

When a session runs unit tests only (``python -m pytest tests/unit``, or files or tests
under it), torch and Ray are unimportable from the start: a test that needs them fails
with ``ModuleNotFoundError``, and a library that uses them only where they are installed
(tensorboardX imports torch if it can) goes without. The session also fails if torch or
Ray is in ``sys.modules`` at its end (imported before this file took effect, by a plugin
or tests/conftest.py), naming what imported them first. A session that also runs the
train or Ray tiers imports both on purpose and is neither blocked nor checked.
"""

from __future__ import annotations

import os
import sys

import pytest

HEAVY = ("torch", "ray")
HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep

_culprits: list[str] = []  # "<what> imported <modules>", in order


def _heavy() -> set[str]:
    return {name for name in HEAVY if name in sys.modules}


_seen: set[str] = _heavy()  # a plugin that imported them before any test (reported too)
if _seen:
    _culprits.append(f"before the unit tests (a plugin or conftest) imported {', '.join(sorted(_seen))}")


class _Unimportable:
    """A ``sys.meta_path`` finder that refuses torch and Ray and their submodules."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HEAVY:
            raise ModuleNotFoundError(f"No module named {name!r}: the unit tier runs without torch and Ray "
                                      "(tests/unit/conftest.py); move the test to tests/train or tests/ray",
                                      name=name)
        return None


def _unit_only_args(config) -> bool:
    """Whether every path the command line names lies in this folder."""
    root = str(config.invocation_params.dir)
    paths = [os.path.abspath(os.path.join(root, arg.split("::")[0])) for arg in config.args]
    return bool(paths) and all((p + os.sep).startswith(HERE) for p in paths)


def pytest_configure(config):
    if _unit_only_args(config):
        sys.meta_path.insert(0, _Unimportable())


def _note(what: str) -> None:
    new = _heavy() - _seen
    if new:
        _seen.update(new)
        _culprits.append(f"{what} imported {', '.join(sorted(new))}")


def pytest_collectreport(report):
    # A test file is imported while it is collected.
    if report.nodeid.endswith(".py"):
        _note(f"collecting {report.nodeid}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    yield
    _note(item.nodeid)


def _unit_only(session) -> bool:
    return bool(session.items) and all(str(item.path).startswith(HERE) for item in session.items)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    _note("the end of the session")
    if not _culprits or not _unit_only(session):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["tests/unit must import neither torch nor Ray (move such a test to tests/train or tests/ray):",
             *(f"  {c}" for c in _culprits)]
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", "unit tier imported torch or Ray", red=True)
        for line in lines:
            reporter.write_line(line)
    else:
        print("\n".join(lines), file=sys.stderr)
    if session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
