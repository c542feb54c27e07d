"""`raysearch compare`: three experiments built by hand (a sweep whose validation pick is not
its best on test, an ablation with two seeds, a folder with two train runs) over three
categories, with known cells, bold cells, mean ranks, flags and exit codes."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from helpers.sweeps import write_experiment
from scipy import stats

from analysis import compare_experiments, select_configuration
from raysearch.cli import main

CLASSES = ["a", "b", "c"]
HALF = stats.t.ppf(0.975, 1) * np.std([0.0, 0.02], ddof=1) / np.sqrt(2)  # two seeds 0.02 apart: 0.127


def run(kind: str, trial: str, cls: str, val: float | None, test: float | None, *, seed: int = 0,
        status: str = "completed", variant: str | None = None, optuna_trial: int | None = None,
        day: int = 1, classes: tuple[str, ...] = tuple(CLASSES)) -> dict:
    """One result row; ``class_index`` is the class's position in its experiment's own classes."""
    return {"experiment": kind, "kind": kind, "trial_id": trial, "variant": variant, "optuna_trial": optuna_trial,
            "status": status, "normal_class": cls, "class_index": classes.index(cls), "seed": seed,
            "dataset": "digits", "config_json": json.dumps({"trial": trial, "train.seed": seed}),
            "timestamp": datetime(2026, 1, day, tzinfo=timezone.utc),
            "val_image_auroc": val, "test_image_auroc": test}


@pytest.fixture
def experiments(tmp_path) -> dict[str, str]:
    sweep = [  # t1 is best on validation (0.94) but worse on test than t2
        run("tune", "t1", "a", 0.95, 0.80, optuna_trial=0), run("tune", "t1", "b", 0.93, 0.70, optuna_trial=0),
        run("tune", "t2", "a", 0.85, 0.95, optuna_trial=1), run("tune", "t2", "b", 0.83, 0.92, optuna_trial=1),
        run("tune", "t3", "a", 0.99, 0.99, optuna_trial=2),  # best value, but pruned before class b
        run("tune", "t3", "b", None, None, optuna_trial=2, status="pruned"),
    ]
    ablation = []
    for seed, shift in ((0, 0.0), (1, 0.02)):
        for cls, test in zip(CLASSES, (0.85, 0.75, 0.60), strict=True):
            ablation.append(run("ablate", f"full-s{seed}", cls, 0.9, test + shift, seed=seed, variant="full"))
            ablation.append(run("ablate", f"no_x-s{seed}", cls, 0.8, 0.99, seed=seed, variant="no_x"))
    ac = ("a", "c")  # the train spec's classes
    train = [run("train", "r1", c, 0.9, 0.99, day=1, classes=ac) for c in ac]  # an older run of the same spec
    train += [run("train", "r2", c, v, t, day=2, classes=ac) for c, v, t in (("a", 0.91, 0.90), ("c", 0.92, 0.65))]
    folders = {}
    for name, rows, holdout in (("sweep", sweep, 0.1), ("ablation", ablation, 0.1), ("train", train, 0.2)):
        (tmp_path / name).mkdir()
        folders[name] = write_experiment(tmp_path / name, rows, name=name, holdout=holdout)
    return folders


def test_each_experiment_is_its_own_objectives_pick(experiments):
    sweep = select_configuration(experiments["sweep"])
    assert sweep.kind == "sweep" and sweep.trial_ids == ("t1",)  # by validation, not by test
    assert sweep.selected == "sweep trial t1 (best val_image_auroc of 2 complete trials)"
    ablation = select_configuration(experiments["ablation"])
    assert ablation.kind == "ablation" and sorted(ablation.trial_ids) == ["full-s0", "full-s1"]
    train = select_configuration(experiments["train"])
    assert train.trial_ids == ("r2",) and train.selected == "train run r2 (latest of 2 complete runs)"


def test_cells_bold_and_mean_ranks_are_the_known_ones(experiments):
    c = compare_experiments([experiments[k] for k in ("sweep", "ablation", "train")])
    assert c.categories == CLASSES and c.metric == "test_image_auroc" and c.mode == "max"
    means = c.table[CLASSES]
    expected = pd.DataFrame({"a": [0.80, 0.86, 0.90], "b": [0.70, 0.76, np.nan], "c": [np.nan, 0.61, 0.65]},
                            index=["sweep", "ablation", "train"])
    pd.testing.assert_frame_equal(means, expected, check_names=False, atol=1e-12)
    cells = c.cells.set_index(["experiment", "category"])
    assert cells.loc[("ablation", "a"), "ci_high"] - 0.86 == pytest.approx(HALF)  # t over 2 seeds
    assert np.isnan(cells.loc[("sweep", "a"), "ci_low"]) and cells.loc[("sweep", "a"), "n"] == 1
    assert c.best == {"a": {"train"}, "b": {"ablation"}, "c": {"train"}}
    # ranks: a = (sweep 3, ablation 2, train 1); b = (sweep 2, ablation 1); c = (ablation 2, train 1)
    assert c.table["mean_rank"].to_dict() == pytest.approx({"sweep": 2.5, "ablation": 5 / 3, "train": 1.0})
    assert "mean" not in c.table.columns  # the experiments do not share every category

    md = c.markdown().splitlines()
    assert md[0] == "| experiment | selected | a | b | c | mean rank |"
    assert md[2] == "| sweep | sweep trial t1 (best val_image_auroc of 2 complete trials) | 0.8000 | 0.7000 |  | 2.50 |"
    assert md[3] == (f"| ablation | ablation variant full (seeds 0, 1) | 0.8600 ± {HALF:.4f} | **0.7600 ± {HALF:.4f}** "
                     f"| 0.6100 ± {HALF:.4f} | 1.67 |")
    assert md[4] == "| train | train run r2 (latest of 2 complete runs) | **0.9000** |  | **0.6500** | 1.00 |"
    assert not any(n.startswith("**Not comparable") for n in c.notes)  # test metrics share the test split
    assert any("do not all have every category" in n for n in c.notes)

    tex = c.latex()
    assert r"\textbf{0.9000}" in tex and r"\textbf{0.7600 $\pm$ " in tex and r"\toprule" in tex
    assert r"\begin{tabular}{lcccc}" in tex and r"sweep & 0.8000 & 0.7000 &  & 2.50 \\" in tex


def test_validation_numbers_of_different_validation_sets_are_flagged(experiments):
    c = compare_experiments([experiments[k] for k in ("sweep", "ablation", "train")], metric="val_image_auroc")
    flags = [n for n in c.notes if n.startswith("**Not comparable")]
    assert len(flags) == 1 and "selection.holdout: sweep 0.1, ablation 0.1, train 0.2" in flags[0]
    assert c.table.loc["sweep", "a"] == pytest.approx(0.95)  # the validation pick's own values
    same = compare_experiments([experiments["sweep"], experiments["ablation"]], metric="val_image_auroc")
    assert not any(n.startswith("**Not comparable") for n in same.notes)


def test_ties_share_bold_and_rank_and_a_shared_category_set_has_a_mean(experiments, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(experiments["sweep"], copy)
    (copy / "spec.yaml").write_text((copy / "spec.yaml").read_text().replace("name: sweep", "name: again"))
    c = compare_experiments([experiments["sweep"], str(copy)])
    assert c.table["mean"].tolist() == pytest.approx([0.75, 0.75])
    assert c.best == {"a": {"sweep", "again"}, "b": {"sweep", "again"}, "mean": {"sweep", "again"}}
    assert c.table["mean_rank"].tolist() == [1.5, 1.5]
    assert c.markdown().splitlines()[3].endswith("| **0.8000** | **0.7000** | **0.7500** | 1.50 |")
    with pytest.raises(ValueError, match="named twice"):
        compare_experiments([experiments["sweep"], experiments["sweep"]])


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href") and v is not None]


def test_cli_writes_every_format_and_prints_the_table(experiments, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", experiments["sweep"], experiments["ablation"], experiments["train"],
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| experiment | selected | a | b | c | mean rank |")
    assert "| train | train run r2 (latest of 2 complete runs) | **0.9000** |  | **0.6500** | 1.00 |" in printed
    assert {p.name for p in out.iterdir()} == {"compare.md", "compare.html", "compare.csv", "compare.tex",
                                              "compare_params.csv", "compare.png"}
    page = (out / "compare.html").read_text()
    parser = _Refs()
    parser.feed(page)
    assert len(parser.refs) == 1 and parser.refs[0].startswith("data:image/png;base64,")  # self-contained
    assert "<td><b>0.9000</b></td>" in page
    csv = pd.read_csv(out / "compare.csv").set_index("experiment")
    assert csv.loc["train", "a"] == pytest.approx(0.90) and np.isnan(csv.loc["train", "b"])
    assert csv.loc["ablation", "a_ci_high"] == pytest.approx(0.86 + HALF) and csv.loc["ablation", "a_n"] == 2
    assert f"**0.7600 ± {HALF:.4f}**" in (out / "compare.md").read_text()

    assert main(["compare", experiments["sweep"], experiments["train"], "--metric", "val_image_auroc",
                 "--out", str(out)]) == 0
    assert "**Not comparable: the val_image_auroc numbers" in capsys.readouterr().out


def test_cli_errors_are_one_line_and_exit_2(experiments, tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    assert main(["compare", experiments["sweep"], str(tmp_path / "plain")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not an experiment folder" in err and str(tmp_path / "plain") in err

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    write_experiment(unfinished, [run("tune", "t9", "a", 0.9, 0.9), run("tune", "t9", "b", None, None,
                                                                       status="pruned")], name="unfinished")
    assert main(["compare", str(unfinished), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no complete configuration" in err and str(unfinished) in err

    assert main(["compare", experiments["sweep"], "--metric", "nope", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "metric 'nope' is not a result column" in err


def test_experiments_on_different_datasets_are_refused_unless_asked(experiments, tmp_path, capsys):
    other = tmp_path / "cifar"
    other.mkdir()
    rows = [dict(run("train", "r1", c, 0.9, 0.8), dataset="cifar10") for c in CLASSES]
    write_experiment(other, rows, name="cifar")
    assert main(["compare", experiments["sweep"], str(other), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "different datasets (sweep: digits; cifar: cifar10)" in err
    assert "--allow-different-data" in err and not (tmp_path / "x").exists()
    assert main(["compare", experiments["sweep"], str(other), "--out", str(tmp_path / "x"),
                 "--allow-different-data"]) == 0
    assert "**The experiments use different datasets**" in capsys.readouterr().out


def test_rows_are_named_one_way_and_the_differing_parameters_are_shown(experiments, tmp_path):
    again = tmp_path / "again"
    again.mkdir()
    write_experiment(again, [run("tune", "t1", c, 0.9, 0.8, optuna_trial=0) for c in CLASSES], name="sweep")
    c = compare_experiments([experiments["sweep"], again, experiments["train"]])
    assert [s.label for s in c.selections] == ["sweep (sweep 1)", "sweep (sweep 2)", "train"]  # names, numbered when shared
    assert f"sweep (sweep 2): {again}" in c.notes[-1] and c.notes[-1].startswith("Folders: ")
    # the selected configurations differ in their config's "trial" key: t1, t1, r2
    assert c.params["trial"].to_dict() == {"sweep (sweep 1)": "t1", "sweep (sweep 2)": "t1", "train": "r2"}
    assert "train.seed" not in c.params.columns


def test_user_strings_are_escaped_in_markdown_and_latex(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    odd = ("a|b", "<i>c</i>")
    rows = [run("train", "r1", cls, 0.9, 0.8, classes=odd) for cls in odd]
    write_experiment(folder, rows, name="x*y_&")
    c = compare_experiments([str(folder)])
    md = c.markdown()
    assert r"| a\|b | \<i\>c\</i\> |" in md and r"| x\*y_& |" in md
    tex = c.latex()
    assert r"x*y\_\&" in tex and r"\textless{}i\textgreater{}c\textless{}/i\textgreater{}" in tex
    assert r"a\textbar{}b" in tex
    page = c.html()
    assert "&lt;i&gt;c&lt;/i&gt;" in page and "<i>c</i>" not in page
