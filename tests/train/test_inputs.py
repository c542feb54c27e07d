"""Bad input is refused early with one line; an unreadable result file does not hide the others."""

from __future__ import annotations

import pytest
from PIL import Image

from raysearch.cli import main
from raysearch.config.schema import SpecError
from raysearch.config.spec import load_spec
from raysearch.data.readers import _mask_for
from raysearch.store import results

DEMO = "search_spaces/demo/{}.yaml"


def test_explicit_budget_replaces_the_specs(capsys):
    assert main(["tune", DEMO.format("distcon"), "--trials", "3", "--concurrent", "1", "--dry-run"]) == 0
    assert "3 trials, 1 at a time" in capsys.readouterr().out


# -- masks ---------------------------------------------------------------------------
def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (4, 4)).save(path)
    return path


def test_masks_are_matched_exactly_never_by_prefix(tmp_path):
    gt = tmp_path / "ground_truth" / "crack"
    _png(gt / "10_mask.png")
    assert _mask_for(gt, tmp_path / "test" / "crack" / "1.png") is None  # not 10's mask
    assert _mask_for(gt, tmp_path / "test" / "crack" / "10.png") == gt / "10_mask.png"
    same_stem = _png(gt / "2.bmp")
    assert _mask_for(gt, tmp_path / "test" / "crack" / "2.png") == same_stem


# -- one experiment per folder ------------------------------------------------------------
@pytest.mark.parametrize("entry", ["results", "optuna.db", "checkpoints", "ray"])
def test_a_used_output_is_refused_without_resume(tmp_path, entry):
    from raysearch.run.experiment import check_resume

    out = tmp_path / "exp"
    (out / "report").mkdir(parents=True)  # a report folder alone does not count
    check_resume(str(out), resume=False, what="sweep")
    target = out / entry
    target.mkdir() if entry != "optuna.db" else target.write_bytes(b"")
    with pytest.raises(SpecError, match=f"already holds an experiment \\({entry}\\); pass --resume"):
        check_resume(str(out), resume=False, what="sweep")


def test_finished_runs_counts_trials_with_a_final_row_for_every_class(tmp_path):
    from raysearch.run.experiment import finished_runs

    schema = results.results_schema({})
    out = str(tmp_path / "results")
    rows = {"a": [(0, "completed"), (1, "completed")], "b": [(0, "completed")], "c": [(0, "pruned"), (1, "pruned")],
            "d": [(0, "failed"), (1, "failed")]}
    for trial, classes in rows.items():
        for ci, status in classes:
            results.write_rows(out, schema, [{"trial_id": trial, "kind": "tune", "class_index": ci, "status": status}],
                               f"{trial}--{ci:03d}")
    results.write_rows(out, schema, [{"trial_id": "e", "kind": "train", "class_index": 0, "status": "completed"},
                                     {"trial_id": "e", "kind": "train", "class_index": 1, "status": "completed"}], "e")
    assert finished_runs(str(tmp_path), "tune", 2) == 3  # b misses a class; e is a train run
    assert finished_runs(str(tmp_path / "nowhere"), "tune", 2) == 0


def test_resume_and_train_refuse_an_output_of_another_spec(tmp_path):
    from raysearch.run.experiment import check_same_spec
    from raysearch.run.runner import run_train

    spec = load_spec("search_spaces/demo/distcon.yaml", ["data.classes=[3]"])
    out = str(tmp_path / "exp")
    check_same_spec(out, spec, "a sweep")  # a new folder: nothing to compare
    results.write_resolved_spec(spec, out)
    check_same_spec(out, spec, "a sweep")
    check_same_spec(out, spec.with_overrides({"data.root": "/elsewhere"}), "a sweep")  # data moved: allowed
    other = spec.with_overrides({"train.lr": 0.5, "params.gmm.components": 7})
    with pytest.raises(SpecError, match=r"holds a sweep of another spec \(params.gmm.components: 7 \(was \d+\); "
                                        r"train.lr: 0.5 \(was [\d.e-]+\)\)"):
        check_same_spec(out, other, "a sweep")
    with pytest.raises(SpecError, match="holds rows of another spec"):  # before Ray starts
        run_train(other, out, quiet=True)


@pytest.mark.parametrize("where", ["file", "below a file"])
def test_an_output_that_cannot_be_a_folder_is_refused(tmp_path, where, capsys):
    (tmp_path / "f").write_text("")
    out = tmp_path / "f" if where == "file" else tmp_path / "f" / "exp"
    code = main(["tune", "search_spaces/demo/distcon.yaml", "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "--output" in err and str(tmp_path / "f") in err, err


def test_resume_needs_only_the_folder_and_its_hint_can_be_pasted(tmp_path, capsys):
    from raysearch.run.experiment import resume_hint

    out = tmp_path / "my sweep"
    assert resume_hint("tune", str(out)) == f"Continue with: raysearch tune --resume --output '{out}'"
    spec = load_spec("search_spaces/demo/distcon.yaml", ["train.epochs=2"])
    results.write_resolved_spec(spec, str(out))
    # The folder's spec.yaml is the spec: the run gets as far as finding nothing to resume.
    assert main(["tune", "--resume", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--resume: nothing to resume: no sweep state under" in err and "\n" == err[-1] and err.count("\n") == 1
    assert main(["ablate", "--resume", "--output", str(tmp_path / "empty")]) == 2
    assert "--resume: no spec.yaml in" in capsys.readouterr().err
    assert main(["tune", "--output", str(out)]) == 2
    assert "a spec file is required unless --resume --output DIR" in capsys.readouterr().err


# -- bad data is found before anything starts ----------------------------------------------
def test_every_broken_category_is_listed_before_training(tmp_path):
    import shutil

    from helpers.datasets import write_mvtec

    from raysearch.config.spec import DataSpec
    from raysearch.data import DataNotFoundError, check_data

    for category in ("ok", "emptytrain", "nodefects"):
        write_mvtec(tmp_path, category=category)
    for image in (tmp_path / "emptytrain" / "train" / "good").iterdir():
        image.unlink()
    shutil.rmtree(tmp_path / "nodefects" / "test" / "crack")
    data = DataSpec(dataset="folder", root=str(tmp_path))
    with pytest.raises(DataNotFoundError) as info:
        check_data(data)
    message = str(info.value)
    assert "\n" not in message and f"{tmp_path / 'ok'}/" not in message  # the healthy class is not named
    assert f"{tmp_path / 'emptytrain' / 'train' / 'good'} holds no images" in message
    assert f"{tmp_path / 'nodefects' / 'test'} has no defect folder with images" in message
    assert check_data(DataSpec(dataset="folder", root=str(tmp_path), classes=["ok"])) == ["ok"]


def test_a_truncated_image_names_its_file(tmp_path):
    from raysearch.data import DataNotFoundError
    from raysearch.data.readers import _read_image

    path = _png(tmp_path / "broken.png")
    Image.new("RGB", (64, 64), (200, 10, 10)).save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataNotFoundError, match=f"cannot read image {path}"):
        _read_image(path, 32)


def test_resume_refuses_data_that_changed_since_the_experiment_started(tmp_path):
    from raysearch.run.experiment import check_same_spec

    root = tmp_path / "mvtec"
    for cat in ("bottle", "cable"):
        for folder in ("train/good", "test/good", "test/crack"):
            (root / cat / folder).mkdir(parents=True)
            for i in range(2):
                _png(root / cat / folder / f"{i}.png")
    spec = load_spec("search_spaces/demo/distcon.yaml", ["data.dataset=mvtec", f"data.root={root}",
                                                         "data.classes=[bottle, cable]", "selection.anomalies=synthetic"])
    out = str(tmp_path / "exp")
    results.write_resolved_spec(spec, out)
    check_same_spec(out, spec, "a sweep")
    _png(root / "cable" / "train/good" / "9.png")
    with pytest.raises(SpecError, match=r"holds a sweep of other data \(data: class cable: 7 files \(was 6\)"):
        check_same_spec(out, spec, "a sweep")


@pytest.mark.parametrize("command", ["tune", "ablate"])
def test_a_dry_run_needs_no_data_where_the_spec_lists_its_classes(tmp_path, capsys, command):
    base = [command, "search_spaces/demo/distcon.yaml", "--dry-run", "--set", "data.dataset=folder",
            "--set", f"data.root={tmp_path / 'nowhere'}", "--set", "selection.anomalies=synthetic"]
    assert main([*base, "--set", "data.classes=[bottle, cable]"]) == 0
    out = capsys.readouterr().out
    assert "2 classes (bottle, cable)" in out and "note: classes not checked: no folder dataset found" in out
    assert main([*base, "--set", "data.classes=all"]) == 2  # nothing names the classes
    assert "without the data, list data.classes" in capsys.readouterr().err
