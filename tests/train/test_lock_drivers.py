"""One owner per experiment: raysearch.store.lock on local folders, between processes and on S3."""

import io
import os

import pytest

from raysearch.store.lock import ExperimentLock


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
