"""Compaction of the results store: the same rows before and after, one version of each row,
nothing lost or doubled by a compaction stopped half-way, on local folders and on S3."""

import os

import pytest

from raysearch.cli import main
from raysearch.run.experiment import finished_runs
from raysearch.store import results
from raysearch.store.lock import ExperimentLock, read_owner

T0 = 1_800_000_000  # a fixed row timestamp (2027-01-15T08:00:00Z)
SCHEMA = results.results_schema({})
CLASSES = ["a", "b", "c"]


def run_info(out, trial, kind="tune"):
    return results.RunInfo(experiment="exp", kind=kind, trial_id=trial, storage=out)


def write_row(out, trial, ci, *, auroc=0.5, status="completed", timestamp=T0, kind="tune"):
    """One class's row, stored as a trial stores it (its own file, named by row_name)."""
    run = run_info(out, trial, kind)
    row = dict(experiment="exp", kind=kind, trial_id=trial, class_index=ci, normal_class=CLASSES[ci],
               status=status, val_image_auroc=auroc, timestamp=timestamp)
    return results.write_rows(results.results_dir(out), SCHEMA, [row], results.row_name(run, ci, CLASSES[ci]))


def sweep(out, trials=4):
    """``trials`` tune trials x 3 classes (the last trial misses its last class) and a train run."""
    for t in range(trials):
        for ci in range(3 if t < trials - 1 else 2):
            write_row(out, f"t{t}", ci, auroc=t + ci / 10)
    write_row(out, "train-1", 0, kind="train", auroc=0.9)


def row_set(out):
    keep = ("kind", "trial_id", "class_index", "status", "val_image_auroc", "timestamp")
    return sorted(tuple(r[k] for k in keep) for r in results.read_results(out).to_pylist())


def files(out):
    return sorted(os.listdir(os.path.join(out, "results")))


def test_compaction_keeps_the_same_rows_in_one_part(tmp_path):
    out = str(tmp_path / "exp")
    sweep(out)
    before, n_before = row_set(out), finished_runs(out, "tune", 3)
    done = results.compact(out)
    assert len(done.merged) == 12 and len(done.parts) == 1 and done.rows == 12
    assert [f.startswith("part-") for f in files(out)] == [True]
    assert row_set(out) == before and len(before) == 12
    assert finished_runs(out, "tune", 3) == n_before == 3
    assert results.compact(out).summary() == "nothing to compact"  # a second run changes nothing
    assert [f.startswith("part-") for f in files(out)] == [True]


def test_parts_are_capped_and_small_parts_merged_again(tmp_path):
    out = str(tmp_path / "exp")
    sweep(out)
    before = row_set(out)
    assert len(results.compact(out, max_rows=5).parts) == 3  # 12 rows: 5 + 5 + 2
    write_row(out, "t9", 0)
    done = results.compact(out, max_rows=5)  # the new file and the part of 2 rows, not the full ones
    assert len(done.merged) == 2 and done.rows == 3
    assert len(files(out)) == 3
    assert row_set(out) == sorted([*before, ("tune", "t9", 0, "completed", 0.5, results_time(T0))])


def results_time(seconds):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(seconds, timezone.utc)


def test_killed_after_the_part_is_written_reads_each_row_once(tmp_path, monkeypatch):
    out = str(tmp_path / "exp")
    sweep(out)
    before = row_set(out)

    def killed(fs, merged):
        raise KeyboardInterrupt  # the process dies before deleting the merged files

    monkeypatch.setattr(results, "_delete", killed)
    with pytest.raises(KeyboardInterrupt):
        results.compact(out)
    assert len(files(out)) == 13  # 12 files and the part that holds them all
    assert row_set(out) == before  # each row once
    assert finished_runs(out, "tune", 3) == 3
    monkeypatch.undo()
    done = results.compact(out)  # the next compaction merges the leftovers and the part
    assert len(done.merged) == 13 and done.rows == 12
    assert row_set(out) == before and len(files(out)) == 1


def test_killed_before_the_part_is_in_place_changes_nothing(tmp_path, monkeypatch):
    out = str(tmp_path / "exp")
    sweep(out)
    before_files, before = files(out), row_set(out)
    write_bytes = results.write_bytes

    def killed(uri, data):
        # the temporary file is written; the process dies before renaming it into place
        write_bytes(os.path.join(os.path.dirname(uri), "." + os.path.basename(uri) + ".1234.tmp"), data)
        raise KeyboardInterrupt

    monkeypatch.setattr(results, "write_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        results.compact(out)
    assert [f for f in files(out) if not f.startswith(".")] == before_files
    assert row_set(out) == before


def test_an_unreadable_file_is_left_in_place_with_a_warning(tmp_path):
    out = str(tmp_path / "exp")
    sweep(out)
    bad = tmp_path / "exp" / "results" / "t7--000-a.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.warns(results.UnreadableResultWarning, match="t7--000-a.parquet: unreadable result file skipped"):
        done = results.compact(out)
    assert done.unreadable == [str(bad)] and len(done.merged) == 12
    assert bad.read_bytes() == b"not parquet"
    assert "1 unreadable file(s) left in place" in done.summary()


def test_completed_row_finds_a_row_after_its_file_was_compacted(tmp_path):
    """What a resumed worker loop asks before training a class: it is stored, so it is skipped."""
    out = str(tmp_path / "exp")
    sweep(out)
    run = run_info(out, "t1")
    assert results.completed_row(run, 2, "c")["val_image_auroc"] == pytest.approx(1.2)
    results.compact(out)
    assert not os.path.exists(os.path.join(out, "results", results.row_name(run, 2, "c") + ".parquet"))
    assert results.completed_row(run, 2, "c")["val_image_auroc"] == pytest.approx(1.2)
    assert results.completed_row(run_info(out, "t3"), 2, "c") is None  # never stored
    assert results.read_row_file(results.results_dir(out), results.row_name(run, 0, "a"))[0]["trial_id"] == "t1"


def test_a_rerun_after_compaction_supersedes_the_compacted_row(tmp_path):
    out = str(tmp_path / "exp")
    sweep(out)
    write_row(out, "t3", 2, status="failed", auroc=None)
    results.compact(out)
    run = run_info(out, "t3")
    assert results.completed_row(run, 2, "c") is None  # its stored row failed
    write_row(out, "t3", 2, auroc=0.75, timestamp=T0 + 60)  # the class runs again
    assert results.completed_row(run, 2, "c")["val_image_auroc"] == 0.75
    rows = [r for r in results.read_results(out).to_pylist() if r["trial_id"] == "t3"]
    assert sorted((r["class_index"], r["status"]) for r in rows) == [(0, "completed"), (1, "completed"),
                                                                     (2, "completed")]
    assert finished_runs(out, "tune", 3) == 4
    results.compact(out)  # and stays the newest once compacted in turn
    assert [r["val_image_auroc"] for r in results.read_results(out).to_pylist()
            if (r["trial_id"], r["class_index"]) == ("t3", 2)] == [0.75]


def test_an_older_file_loses_to_a_newer_compacted_row_and_a_tie_goes_to_the_file(tmp_path):
    out = str(tmp_path / "exp")
    write_row(out, "t0", 0, auroc=0.6, timestamp=T0 + 10)
    results.compact(out)
    write_row(out, "t0", 0, auroc=0.1, timestamp=T0)  # an older version (another node's clock)
    assert [r["val_image_auroc"] for r in results.read_results(out).to_pylist()] == [0.6]
    assert results.completed_row(run_info(out, "t0"), 0, "a")["val_image_auroc"] == 0.6
    write_row(out, "t0", 0, auroc=0.7, timestamp=T0 + 10)  # the same second: the file wins
    assert [r["val_image_auroc"] for r in results.read_results(out).to_pylist()] == [0.7]
    assert results.completed_row(run_info(out, "t0"), 0, "a")["val_image_auroc"] == 0.7


def test_compaction_on_s3(s3_storage):
    out = s3_storage("compaction")
    sweep(out)
    before = row_set(out)
    done = results.compact(out)
    assert len(done.merged) == 12 and len(done.parts) == 1
    fs, path = results.resolve(results.results_dir(out))
    import pyarrow.fs as pafs

    names = [i.base_name for i in fs.get_file_info(pafs.FileSelector(path))]
    assert len(names) == 1 and names[0].startswith("part-")
    assert row_set(out) == before
    assert results.completed_row(run_info(out, "t0"), 1, "b")["val_image_auroc"] == pytest.approx(0.1)
    assert finished_runs(out, "tune", 3) == 3


def test_compact_command_takes_the_lock(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "exp")
    sweep(out)
    owners = []
    compact = results.compact

    def watched(path, **kw):
        owners.append(read_owner(path))
        return compact(path, **kw)

    monkeypatch.setattr(results, "compact", watched)
    assert main(["compact", out]) == 0
    assert owners[0] is not None and owners[0].command == "compact" and owners[0].pid == os.getpid()
    assert read_owner(out) is None  # released
    assert "12 file(s) merged into 1 part(s) (12 rows)" in capsys.readouterr().out
    assert len(files(out)) == 1


def test_compact_command_refuses_a_held_experiment(tmp_path, capsys):
    out = str(tmp_path / "exp")
    sweep(out)
    with ExperimentLock(out, "tune"):
        assert main(["compact", out]) == 2
    err = capsys.readouterr().err
    assert "is in use by raysearch tune (pid" in err and f"pid {os.getpid()}" in err
    assert len(files(out)) == 12  # nothing merged


def test_compact_command_needs_an_experiment_folder(tmp_path, capsys):
    assert main(["compact", str(tmp_path)]) == 2
    assert "no results/" in capsys.readouterr().err
