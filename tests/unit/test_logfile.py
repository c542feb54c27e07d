"""Ray's and Optuna's own log lines go to the experiment's log file, not the terminal
(`--verbose` keeps them on the terminal too); the loggers are as they were afterwards."""

import io
import logging

from raysearch.run.logfile import route_logs


def _library_logger(name: str, stream: io.StringIO) -> logging.Logger:
    """A logger set up as a library sets up its own: a stream handler, no propagation."""
    logger = logging.getLogger(name)
    logger.handlers.clear()
    logger.addHandler(logging.StreamHandler(stream))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def test_library_lines_go_to_the_file_and_the_loggers_come_back(tmp_path):
    terminal = io.StringIO()
    lib = _library_logger("fakelib", terminal)
    path = tmp_path / "exp" / "raysearch.log"  # the folder does not exist yet
    with route_logs(str(path), ["fakelib"]):
        logging.getLogger("fakelib.auth").warning("Token authentication is disabled")
        logging.getLogger("fakelib").info("A new study created")
    assert terminal.getvalue() == ""
    lines = path.read_text().splitlines()
    assert [line.split(" ", 3)[2:] for line in lines] == [
        ["WARNING", "fakelib.auth: Token authentication is disabled"], ["INFO", "fakelib: A new study created"]]
    # Afterwards the library logs where it did before, and the file gets nothing more.
    lib.warning("after")
    assert terminal.getvalue() == "after\n" and len(path.read_text().splitlines()) == 2
    assert lib.propagate is False and len(lib.handlers) == 1


def test_verbose_keeps_the_lines_on_the_terminal_too(tmp_path):
    terminal = io.StringIO()
    _library_logger("fakelib2", terminal)
    path = tmp_path / "raysearch.log"
    with route_logs(str(path), ["fakelib2"], verbose=True):
        logging.getLogger("fakelib2").warning("shown")
    assert terminal.getvalue() == "shown\n" and path.read_text().endswith("fakelib2: shown\n")


def test_a_command_that_logs_nothing_leaves_no_file(tmp_path):
    with route_logs(str(tmp_path / "exp" / "raysearch.log"), ["fakelib3"]):
        pass
    assert not (tmp_path / "exp").exists()
