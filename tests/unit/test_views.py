"""What a person reads of a ranking: result columns first, one tie rule and one config id in
every view, plot titles that match the intervals drawn, the ablation report's shape, and user
strings escaped in every format (no torch, no Ray)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import yaml
from helpers.sweeps import CLASSES, row, write_experiment, write_rows

from analysis import compare_experiments, load_results, rank_configs, trial_table, write_report
from analysis.export import best_trials, export_best, rerun_command
from analysis.plots import ranking_title
from analysis.report import ranking_params, ranking_results
from raysearch.config.spec import config_hash


def _tied_sweep() -> list[dict]:
    """Three configs over 4 classes: "late" (Optuna #7) and "early" (#6) tie exactly on the
    objective, with ids that sort the other way; "low" is worse. Test values reverse the order."""
    rows = []
    for trial, number, lr, base, test in (("a-late", 7, 0.002, 0.9, 0.99), ("b-early", 6, 0.001, 0.9, 0.5),
                                          ("c-low", 2, 0.003, 0.8, 0.99)):
        for i, cls in enumerate(CLASSES):
            value = base + (0.01 if i % 2 else -0.01)
            rows.append(row({"method": "distcon", "train.lr": lr, "params.gmm.components": number}, 0, cls,
                            value, test, trial=trial, optuna_trial=number))
    return rows


def test_the_tie_rule_orders_report_trials_export_and_compare_alike(tmp_path):
    folder = write_experiment(tmp_path, _tied_sweep())
    df = load_results(folder)
    report = rank_configs(df)["trial_id"].tolist()
    trials = trial_table(df)["trial_id"].tolist()
    export = [t["trial_id"] for t in best_trials(folder, "val_image_auroc")]
    picked = compare_experiments([folder]).selections[0].trial_ids
    assert report == trials == export == ["b-early", "a-late", "c-low"]  # the lower Optuna number first
    assert picked == ("b-early",)


def test_report_and_export_name_a_configuration_by_the_rows_config_hash(tmp_path):
    folder = write_experiment(tmp_path, _tied_sweep())
    rows = [r for r in _tied_sweep() if r["trial_id"] == "b-early"]
    expected = config_hash(json.loads(rows[0]["config_json"]))
    ranking = rank_configs(load_results(folder))
    assert ranking["config_hash"].iloc[0] == expected
    assert ranking_results(ranking, "val_image_auroc", 0.95)["config_hash"].iloc[0] == expected
    (path,) = export_best(folder, top=1, to=str(tmp_path / "best"))
    exported = yaml.safe_load(path.read_text())["provenance"]["exported_from"]
    assert exported["config_hash"] == expected and exported["trial_id"] == "b-early"
    out = write_report(folder, out=tmp_path / "report")
    md = (out / "report.md").read_text()
    assert f"config `{expected}`" in md and ranking["config_key"].iloc[0] not in md


def test_ranking_table_leads_with_the_result_and_parameters_follow_without_prefix(tmp_path):
    ranking = rank_configs(load_results(write_experiment(tmp_path, _tied_sweep())))
    table = ranking_results(ranking, "val_image_auroc", 0.95)
    assert list(table.columns) == ["rank", "trial", "mean val_image_auroc", "Δ to rank 1 (95% CI)", "n",
                                   "test_image_auroc", "config_hash"]
    assert table["trial"].tolist() == ["b-early (#6)", "a-late (#7)", "c-low (#2)"]
    assert table["Δ to rank 1 (95% CI)"].tolist() == [
        "rank 1", "+0.0000 (no interval: 4 pairs, needs 5)", "-0.1000 (no interval: 4 pairs, needs 5)"]
    params = ranking_params(ranking)
    assert list(params.columns) == ["rank", "trial", "train.lr", "gmm.components"]


def test_export_rounds_provenance_drops_a_builtin_root_and_says_how_to_rerun(tmp_path):
    rows = _tied_sweep()
    for r in rows:
        r["val_image_auroc"] = 0.9994999999999999
    folder = write_experiment(tmp_path, rows)
    (path,) = export_best(folder, top=1, to=str(tmp_path / "best"))
    spec = yaml.safe_load(path.read_text())
    assert spec["provenance"]["exported_from"]["value"] == 0.9995
    assert set(spec["provenance"]["exported_from"]["per_class"]["a"].values()) == {0.9995, 0.99}  # c-low: #2
    assert "root" not in spec["data"]  # digits is built in
    assert rerun_command(path) == f"raysearch train {path}"


def test_ranking_title_names_intervals_only_where_drawn():
    none = pd.DataFrame({"ci_low": [np.nan] * 2, "ci_high": [np.nan] * 2,
                         "diff_ci_low": [np.nan] * 2, "diff_ci_high": [np.nan] * 2})
    assert "interval" in ranking_title(none) and "with 95% bootstrap intervals" not in ranking_title(none)
    assert ranking_title(none).endswith("(no intervals: fewer than 5 cells per configuration)")
    every = none.assign(ci_low=[0.8, 0.7], ci_high=[0.9, 0.8])
    assert ranking_title(every) == "Ranking by val_image_auroc with 95% bootstrap intervals"
    some = every.assign(ci_low=[0.8, np.nan], ci_high=[0.9, np.nan])
    assert "where a configuration has 5 or more cells" in ranking_title(some)


def test_a_sweep_of_one_seed_with_few_classes_says_nothing_of_intervals(tmp_path):
    out = write_report(write_experiment(tmp_path, _tied_sweep()), out=tmp_path / "report")
    md = (out / "report.md").read_text()
    assert "with 95% bootstrap intervals" not in md and "the intervals reflect" not in md


def test_user_strings_are_escaped_in_markdown_html_and_latex(tmp_path):
    odd = "<b>x</b>|*y*_&%"
    rows = [dict(r, normal_class=odd if r["normal_class"] == "a" else r["normal_class"]) for r in _tied_sweep()]
    folder = write_experiment(tmp_path, rows, name="n<i>1</i>")
    out = write_report(folder, out=tmp_path / "report")
    md = (out / "report.md").read_text()
    assert r"\<b\>x\</b\>\|\*y\*_&%" in md and "<b>x</b>" not in md and "# Report: n\\<i\\>1\\</i\\>" in md
    page = (out / "report.html").read_text()
    assert "&lt;b&gt;x&lt;/b&gt;|*y*_&amp;%" in page and "<b>x</b>" not in page and "<i>1</i>" not in page
    tex = (out / "per_class.tex").read_text()
    assert r"\textless{}b\textgreater{}x\textless{}/b\textgreater{}\textbar{}*y*\_\&\%" in tex
    assert pd.read_csv(out / "per_class.csv").columns[1:].tolist()[0] == odd  # CSV cells stay raw


def _ablation(tmp_path, labels: bool = True) -> str:
    """An ablation of 2 seeds x 4 classes; the spec lists factors b_factor, a_factor."""
    rows = []
    effects = {"full": 0.0, "a_factor": -0.2, "b_factor": -0.01}
    for variant, effect in effects.items():
        for seed in (0, 1):
            config = {"method": "distcon", "variant": variant}
            for i, cls in enumerate(CLASSES):
                rows.append(row(config, seed, cls, 0.9 + effect + 0.01 * i, 0.8 + effect, kind="ablate",
                                variant=variant, trial=f"{variant}-s{seed}"))
    folder = tmp_path / "abl"
    write_rows(folder, rows)
    label = "{label: 'A removed', params.x: 0}" if labels else "{params.x: 0}"
    (folder / "spec.yaml").write_text("name: abl\nmethod: distcon\nsearch: {metric: val_image_auroc}\n"
                                      f"ablations:\n  factors:\n    b_factor: {{params.y: 0}}\n    a_factor: {label}\n")
    return str(folder)


def test_ablation_report_leads_with_the_table_in_the_specs_order_with_n(tmp_path):
    out = write_report(_ablation(tmp_path), out=tmp_path / "report")
    md = (out / "report.md").read_text()
    headings = [ln for ln in md.splitlines() if ln.startswith("## ")]
    assert headings[0] == "## Ablation" and "## Ranking" not in headings
    assert "Hyperparameter importance" not in md and "too few for an interval" not in md
    for name in ("ablation_paper.csv", "ablation_paper_test_image_auroc.csv"):
        table = pd.read_csv(out / name)
        assert table["variant"].tolist() == ["full", "b_factor", "a_factor"]  # the spec's order, val and test
        assert table["label"].tolist() == ["full", "b factor", "A removed"] and set(table["n"]) == {8}
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert lines[0] == ("| variant | n | val_image_auroc (mean ± 95% CI) | Δ vs full (± 95% CI) | p_holm "
                        "| p_holm \\< 0.05 |")
    assert [ln.split(" | ")[0] for ln in lines[1:4]] == ["| full", "| b factor", "| A removed"]
