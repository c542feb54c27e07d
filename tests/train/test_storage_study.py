"""The storage layer: local folders and URIs (with their query options and keys) alike."""

import pytest

from raysearch.cli import build_parser, main


def test_storage_and_output_place_the_experiment(tmp_path, monkeypatch, capsys):
    from raysearch import cli

    seen = {}
    monkeypatch.setattr(cli, "_checked_spec", lambda args: type("S", (), {"name": "demo"})())
    monkeypatch.setattr("raysearch.run.tuning.run_tune", lambda spec, output, **kw: seen.setdefault("out", output) and 0)
    main(["tune", "spec.yaml", "--storage", str(tmp_path / "store")])
    assert seen.pop("out") == str(tmp_path / "store" / "demo")
    main(["tune", "spec.yaml", "--storage", "s3://bucket/sweeps?region=eu-west-1"])
    assert seen.pop("out") == "s3://bucket/sweeps/demo?region=eu-west-1"
    with pytest.raises(SystemExit) as err:
        build_parser().parse_args(["tune", "s.yaml", "--storage", "a", "--output", "b"])
    assert err.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_study_sync_finds_the_local_study_on_the_machine_that_unpickles_it(tmp_path, monkeypatch):
    """Tune pickles the sync with the experiment; a driver resumed with another home
    folder (another machine) must push its own copy of the study, not the old path."""
    import pickle

    from raysearch.run.searcher import StudySync

    monkeypatch.setenv("HOME", str(tmp_path / "first"))
    sync = StudySync("s3://bucket/exp?region=x")
    assert sync.local.startswith(str(tmp_path / "first"))
    data = pickle.dumps(sync)
    monkeypatch.setenv("HOME", str(tmp_path / "second"))
    restored = pickle.loads(data)
    assert restored.local.startswith(str(tmp_path / "second"))
    assert restored.remote == "s3://bucket/exp/optuna.db?region=x"
