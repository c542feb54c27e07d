"""The storage layer: local folders and URIs (with their query options and keys) alike."""

import contextlib
import errno
import os
import resource
import signal

import pyarrow.fs as pafs
import pytest

from raysearch.store import results


def test_join_keeps_a_uri_query_at_the_end(tmp_path):
    uri = "s3://bucket/exp?endpoint_override=127.0.0.1:9000&scheme=http"
    assert results.join(uri, "results", "a.parquet") == (
        "s3://bucket/exp/results/a.parquet?endpoint_override=127.0.0.1:9000&scheme=http")
    assert results.join("gs://bucket/exp", "ray") == "gs://bucket/exp/ray"
    assert results.join(str(tmp_path), "x") == str(tmp_path / "x")


def test_redact_drops_keys_only():
    assert results.redact("s3://KEY:SECRET@bucket/p/x.pt?region=eu-west-1") == "s3://bucket/p/x.pt?region=eu-west-1"
    assert results.redact("gs://bucket/a@b") == "gs://bucket/a@b"  # an @ in the path is no key
    assert results.redact("/tmp/a@b") == "/tmp/a@b"


def test_ray_storage_passes_the_uri_options_as_a_filesystem(tmp_path):
    path, fs = results.ray_storage(str(tmp_path / "exp" / "ray"))
    assert path == str(tmp_path / "exp" / "ray") and fs is None
    path, fs = results.ray_storage("s3://bucket/exp/ray?endpoint_override=127.0.0.1:9&scheme=http&region=x")
    assert path == "bucket/exp/ray" and isinstance(fs, pafs.S3FileSystem)


def test_failure_reason_is_the_innermost_exception_line():
    from raysearch.store.results import failure_reason as _reason

    train = RuntimeError("Training failed due to worker errors:\n[Rank 0 Error Snippet]:\nTraceback (most recent call last):\n"
                         '  File "loop.py", line 3, in f\nraysearch.train.loop.TrainingDiverged: loss became nan at epoch 2\n')
    assert _reason(train) == "raysearch.train.loop.TrainingDiverged: loss became nan at epoch 2"
    cut = RuntimeError("Training failed due to worker errors:\n[Rank 0,1 Error Snippet]:\nTraceback ...\n"
                       "... (Output truncated. See individual worker logs for full details) ...\n"
                       "Parameter at index 20 has been marked as ready twice.")
    assert _reason(cut) == "Parameter at index 20 has been marked as ready twice."
    assert _reason(RuntimeError("loss became inf at epoch 1")) == "loss became inf at epoch 1"
    # A trial's own reason wins over the exception lines around it in Tune's error text.
    tune_text = ("Traceback ...\nraysearch.run.experiment.TrialFailed: data of class 3: OSError: x.png: truncated\n"
                 "\nThe above exception was the direct cause of:\nray.exceptions.RayTaskError: boom")
    assert _reason(tune_text) == "data of class 3: OSError: x.png: truncated"
    assert _reason(None) == _reason("") == "the run failed (no error text)"




@contextlib.contextmanager
def _file_size_limit(limit: int):
    """Writes past ``limit`` bytes fail with EFBIG (an OSError, as a full disk's ENOSPC is)."""
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel ends the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, previous)


def test_a_write_that_fails_raises_and_leaves_no_temporary_file(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"old")
    with _file_size_limit(1000), pytest.raises(OSError):
        results.write_bytes(str(tmp_path / "a.bin"), b"x" * 5000)
    assert sorted(os.listdir(tmp_path)) == ["a.bin"] and (tmp_path / "a.bin").read_bytes() == b"old"


def test_the_cli_says_a_failed_write_in_one_line_with_the_path_and_errno(monkeypatch, capsys):
    from raysearch import cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/exp/results/t--000-0.parquet")

    monkeypatch.setitem(cli.COMMANDS, "compact", full)
    assert cli.main(["compact", "/data/exp"]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("raysearch: error: /data/exp/results/t--000-0.parquet: No space left on device (ENOSPC)")
