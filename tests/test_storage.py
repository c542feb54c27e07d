"""The storage layer: local folders and URIs (with their query options and keys) alike."""

import pyarrow.fs as pafs
import pytest

from raysearch import results
from raysearch.cli import build_parser, main


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


def test_storage_and_output_place_the_experiment(tmp_path, monkeypatch, capsys):
    from raysearch import cli

    seen = {}
    monkeypatch.setattr(cli, "_checked_spec", lambda args: type("S", (), {"name": "demo"})())
    monkeypatch.setattr("raysearch.tuning.run_tune", lambda spec, output, **kw: seen.setdefault("out", output) and 0)
    main(["tune", "spec.yaml", "--storage", str(tmp_path / "store")])
    assert seen.pop("out") == str(tmp_path / "store" / "demo")
    main(["tune", "spec.yaml", "--storage", "s3://bucket/sweeps?region=eu-west-1"])
    assert seen.pop("out") == "s3://bucket/sweeps/demo?region=eu-west-1"
    with pytest.raises(SystemExit) as err:
        build_parser().parse_args(["tune", "s.yaml", "--storage", "a", "--output", "b"])
    assert err.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_failure_reason_is_the_innermost_exception_line():
    from raysearch.results import failure_reason as _reason

    train = RuntimeError("Training failed due to worker errors:\n[Rank 0 Error Snippet]:\nTraceback (most recent call last):\n"
                         '  File "loop.py", line 3, in f\nraysearch.loop.TrainingDiverged: loss became nan at epoch 2\n')
    assert _reason(train) == "raysearch.loop.TrainingDiverged: loss became nan at epoch 2"
    cut = RuntimeError("Training failed due to worker errors:\n[Rank 0,1 Error Snippet]:\nTraceback ...\n"
                       "... (Output truncated. See individual worker logs for full details) ...\n"
                       "Parameter at index 20 has been marked as ready twice.")
    assert _reason(cut) == "Parameter at index 20 has been marked as ready twice."
    assert _reason(RuntimeError("loss became inf at epoch 1")) == "loss became inf at epoch 1"
    # A trial's own reason wins over the exception lines around it in Tune's error text.
    tune_text = ("Traceback ...\nraysearch.experiment.TrialFailed: data of class 3: OSError: x.png: truncated\n"
                 "\nThe above exception was the direct cause of:\nray.exceptions.RayTaskError: boom")
    assert _reason(tune_text) == "data of class 3: OSError: x.png: truncated"
    assert _reason(None) == _reason("") == "the run failed (no error text)"


def test_study_sync_finds_the_local_study_on_the_machine_that_unpickles_it(tmp_path, monkeypatch):
    """Tune pickles the sync with the experiment; a driver resumed with another home
    folder (another machine) must push its own copy of the study, not the old path."""
    import pickle

    from raysearch.searcher import StudySync

    monkeypatch.setenv("HOME", str(tmp_path / "first"))
    sync = StudySync("s3://bucket/exp?region=x")
    assert sync.local.startswith(str(tmp_path / "first"))
    data = pickle.dumps(sync)
    monkeypatch.setenv("HOME", str(tmp_path / "second"))
    restored = pickle.loads(data)
    assert restored.local.startswith(str(tmp_path / "second"))
    assert restored.remote == "s3://bucket/exp/optuna.db?region=x"
