"""Bad input is refused early with one line; an unreadable result file does not hide the others."""

from __future__ import annotations

import warnings

import pyarrow as pa
import pytest

from raysearch.cli import main
from raysearch.config.schema import SpecError
from raysearch.config.spec import load_spec
from raysearch.store import results

DEMO = "search_spaces/demo/{}.yaml"


# -- command-line values -------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--trials", "--concurrent", "--num-cpus"])
@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_counts_must_be_positive_before_anything_starts(flag, value, capsys):
    with pytest.raises(SystemExit) as info:
        main(["tune", DEMO.format("distcon"), flag, value, "--dry-run"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {flag}: expected a positive integer, got" in err


@pytest.mark.parametrize("key", ["train.lr", "train.weight_decay", "train.momentum"])
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_training_numbers_are_refused(key, value):
    with pytest.raises(SpecError, match=f"{key}: expected a finite number"):
        load_spec(DEMO.format("distcon"), [f"{key}={value}"])


def test_set_keeps_dotted_keys_of_search_space_and_factors_whole():
    spec = load_spec(DEMO.format("cutswap"), [
        "search.space.params.task.third={choice: [cutpaste, scar]}",
        "ablations.factors.paste.params.patch.mode=paste",
    ])
    assert spec.search["space"]["params.task.third"] == {"choice": ["cutpaste", "scar"]}
    assert spec.ablations["factors"]["paste"] == {"params.patch.mode": "paste"}
    assert "scar" not in spec.selection.synthesis  # the new choice is held out of validation


# -- unreadable result files ------------------------------------------------------------
def _store(tmp_path):
    schema = results.results_schema({})
    out = str(tmp_path / "results")
    for i in range(3):
        row = {"trial_id": f"t{i}", "kind": "tune", "status": "completed", "normal_class": "a", "class_index": 0,
               "config_json": f'{{"train.lr": {i + 1}}}', "val_image_auroc": 0.5 + i / 10,
               "test_image_auroc": 0.6 + i / 10}
        results.write_rows(out, schema, [row], f"t{i}--000-a")
    return out


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_an_unreadable_result_file_is_skipped_with_a_warning(tmp_path, damage):
    out = _store(tmp_path)
    bad = tmp_path / "results" / "t1--000-a.parquet"
    bad.write_bytes(bad.read_bytes()[:40] if damage == "truncate" else b"")
    with pytest.warns(results.UnreadableResultWarning, match="t1--000-a.parquet: unreadable result file skipped"):
        table = results.read_results(str(tmp_path))
    assert sorted(table.column("trial_id").to_pylist()) == ["t0", "t2"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a file is named once per process, however often it is read
        assert results.read_row_file(out, "t1--000-a") == []  # a resumed run trains that class again
        assert results.read_row_file(out, "t0--000-a")[0]["trial_id"] == "t0"


def test_report_and_export_survive_an_unreadable_file(tmp_path, capsys):
    _store(tmp_path)
    (tmp_path / "results" / "t2--000-a.parquet").write_bytes(b"not parquet")
    with pytest.warns(results.UnreadableResultWarning):
        assert main(["report", str(tmp_path), "--to", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.html").is_file()
    # No spec.yaml beside the rows (a copied results folder): one line, exit 2.
    capsys.readouterr()
    assert main(["export", str(tmp_path), "--to", str(tmp_path / "best")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raysearch: error:") and "no spec.yaml" in err and "\n" not in err


def test_concatenation_keeps_a_common_schema(tmp_path):
    # The fallback reader concatenates files one by one; the store's fixed schema makes
    # that a plain concatenation.
    _store(tmp_path)
    (tmp_path / "results" / "t0--000-a.parquet").write_bytes(b"")
    with pytest.warns(results.UnreadableResultWarning):
        table = results.read_results(str(tmp_path))
    assert table.schema.field("val_image_auroc").type == pa.float64() and table.num_rows == 2


@pytest.mark.parametrize("command", [["report", "{exp}", "--to"], ["export", "{exp}", "--to"],
                                     ["compare", "{exp}", "{exp}", "--out"]])
@pytest.mark.parametrize("where", ["file", "below a file"])
def test_a_destination_that_cannot_be_a_folder_is_refused_before_any_work(tmp_path, command, where, capsys):
    _store(tmp_path / "exp")
    (tmp_path / "f").write_text("")
    dest = tmp_path / "f" if where == "file" else tmp_path / "f" / "sub"
    code = main([c.format(exp=tmp_path / "exp") for c in command] + [str(dest)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"raysearch: error: {command[-1]}:") and str(tmp_path / "f") in err, err
    assert "\n" not in err and "Traceback" not in err


def test_the_cli_shows_its_own_warnings_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    _store(tmp_path)
    main(["compact", str(tmp_path)])
    ours = warnings.formatwarning("x.parquet: unreadable result file skipped", results.UnreadableResultWarning,
                                  "elsewhere.py", 1)
    assert ours == "raysearch: warning: x.parquet: unreadable result file skipped\n"
    theirs = warnings.formatwarning("deprecated", DeprecationWarning, "elsewhere.py", 1)
    assert "elsewhere.py:1: DeprecationWarning: deprecated" in theirs
