"""analysis: known answers on result tables built here (planted best config, planted
ablation effect, hand-ranked classes, planted important parameter) and a full report."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers.sweeps import (
    CLASS_OFFSET,
    CLASSES,
    check_html,
    planted_study,
    planted_sweep,
    row,
    write_rows,
)

from analysis import (
    ablation_table,
    config_key,
    history_table,
    load_results,
    param_importance,
    pareto_front,
    per_class_table,
    rank_configs,
    write_report,
)


def test_config_key_ignores_seed_and_classes():
    a = config_key(json.dumps({"train.lr": 0.1, "train.seed": 0, "data.classes": ["a"]}))
    b = config_key(json.dumps({"data.classes": ["b"], "train.seed": 3, "train.lr": 0.1}))
    assert a == b and a != config_key(json.dumps({"train.lr": 0.2, "train.seed": 0}))


def test_planted_best_config_ranks_first_and_its_ci_holds_the_mean(tmp_path):
    write_rows(tmp_path, planted_sweep(np.random.default_rng(0)))
    ranking = rank_configs(load_results(tmp_path))
    assert len(ranking) == 5
    best = ranking.iloc[0]
    assert best["params.x"] == 0  # first although its test AUROC is the worst: test never ranks
    assert best["test_image_auroc_mean"] == pytest.approx(0.5)
    assert best["n"] == 12 and best["n_seeds"] == 3 and best["n_classes"] == 4 and best["complete"]
    assert best["ci_low"] < 0.90 < best["ci_high"]
    assert best["n_trials"] == 3 and len(best["trial_ids"].split(",")) == 3
    assert list(ranking["params.x"]) == [0, 1, 2, 3, 4]
    assert list(ranking["rank"]) == [1, 2, 3, 4, 5]
    low = rank_configs(load_results(tmp_path), mode="min")
    assert low.iloc[0]["params.x"] == 4


def test_incomplete_config_is_flagged_and_ranked_after_complete_ones(tmp_path):
    rows = planted_sweep(np.random.default_rng(1))
    great = {"method": "distcon", "params.x": 99, "train.lr": 0.5}
    rows += [row(great, 0, c, 0.99) for c in ("a", "b")]  # best mean, but only 2 of 4 classes
    rows += [row(great, 0, c, 0.0, status="pruned") for c in ("c", "d")]  # do not count
    ranking = rank_configs(_load(tmp_path, rows))
    flagged = ranking[ranking["params.x"] == 99].iloc[0]
    assert not flagged["complete"] and flagged["n_classes"] == 2 and flagged["max_classes"] == 4
    assert flagged["mean"] == pytest.approx(0.99)
    assert flagged["rank"] == 6 and ranking["complete"].iloc[:5].all()
    table = per_class_table(load_results(tmp_path))
    assert np.isnan(table.loc[flagged["config_key"], "c"]) and list(table.columns) == CLASSES


def _load(folder, rows):
    write_rows(folder, rows)
    return load_results(folder)


def test_mean_rank_on_a_hand_ranked_case(tmp_path):
    # Within-class ranks (1 = best):   a    b    c      mean rank   mean value
    #   A: .875 .500 .625             1    3    2.5    6.5/3       .6667
    #   B: .750 .875 .625             2    1    2.5    5.5/3       .75
    #   C: .625 .750 .875             3    2    1      6/3         .75   (ties B; B's rank wins)
    values = {"A": (0.875, 0.5, 0.625), "B": (0.75, 0.875, 0.625), "C": (0.625, 0.75, 0.875)}
    rows = [row({"name": name}, 0, cls, v) for name, vs in values.items() for cls, v in zip("abc", vs, strict=True)]
    ranking = rank_configs(_load(tmp_path, rows))
    by_name = dict(zip(ranking["name"], ranking["mean_rank"], strict=True))
    assert by_name == pytest.approx({"A": 6.5 / 3, "B": 5.5 / 3, "C": 2.0})
    assert list(ranking["name"]) == ["B", "C", "A"]
    assert (ranking["n"] == 3).all() and (ranking["n_pairs"] == 3).all()
    assert ranking["ci_low"].isna().all() and ranking["diff_ci_low"].isna().all()  # 3 < 5 values: no interval
    # Paired differences to rank 1 (B) per class: C - B = (-.125, -.125, +.25), A - B = (.125, -.375, 0)
    assert list(ranking["diff"]) == pytest.approx([0.0, 0.0, -0.25 / 3])
    low = rank_configs(load_results(tmp_path), mode="min")
    assert dict(zip(low["name"], low["mean_rank"], strict=True)) == pytest.approx({k: 4 - v for k, v in by_name.items()})


def test_history_carries_the_best_so_far():
    import pandas as pd

    rows = [row({"n": i}, 0, "a", v, optuna_trial=i, status=s)
            for i, (v, s) in enumerate([(0.5, "completed"), (0.9, "pruned"), (0.7, "completed"), (0.6, "completed")])]
    table = history_table(pd.DataFrame(rows))
    assert list(table["status"]) == ["completed", "pruned", "completed", "completed"]
    assert list(table["best_so_far"]) == pytest.approx([0.5, 0.5, 0.7, 0.7])


def ablation_rows(rng: np.random.Generator, seeds=(0, 1, 2), classes=("a", "b", "c", "d", "e")) -> list[dict]:
    """full; no_gmm = full - 0.05 (planted harm); null_factor = full + noise only."""
    rows = []
    for seed in seeds:
        for cls in classes:
            full = 0.85 + rng.normal(0, 0.05)  # class/seed difficulty, shared by the pair
            for variant, shift in (("full", 0.0), ("no_gmm", -0.05), ("null_factor", 0.0)):
                v = full + shift + (rng.normal(0, 0.01) if variant != "full" else 0.0)
                rows.append(row({"variant": variant}, seed, cls, v, test=v + 0.01, kind="ablate",
                                variant=variant, trial=f"{variant}-{seed}-{cls}"))
    return rows


def test_ablation_finds_the_planted_effect_and_not_the_null_one(tmp_path):
    table = ablation_table(_load(tmp_path, ablation_rows(np.random.default_rng(2))))
    assert list(table["variant"]) == ["no_gmm", "null_factor"]  # sorted by |effect|
    harm, null = table.iloc[0], table.iloc[1]
    assert harm["val_image_auroc_effect"] == pytest.approx(-0.05, abs=0.01)
    assert harm["val_image_auroc_ci_high"] < 0 and harm["val_image_auroc_p_raw"] < 0.05
    assert harm["val_image_auroc_pair_test"] == "wilcoxon" and harm["val_image_auroc_n"] == 15
    assert harm["test_image_auroc_effect"] == pytest.approx(-0.05, abs=0.01)  # its own columns
    assert null["val_image_auroc_ci_low"] < 0 < null["val_image_auroc_ci_high"]
    few = ablation_table(_load(tmp_path / "few", ablation_rows(np.random.default_rng(3), seeds=(0,),
                                                                   classes=("a", "b", "c"))))
    assert set(few["val_image_auroc_pair_test"]) == {"ttest_rel"} and set(few["val_image_auroc_n"]) == {3}


def test_ablation_without_rows_says_so(tmp_path):
    with pytest.raises(ValueError, match="no completed ablation rows"):
        ablation_table(_load(tmp_path, planted_sweep(np.random.default_rng(0))))


def test_importance_ranks_the_planted_parameter_first():
    importance = param_importance(planted_study())
    assert list(importance.columns) == ["fanova", "ped_anova"]
    assert list(importance.index) == ["x", "y"]
    assert (importance.loc["x"] > 0.8).all()
    with pytest.raises(ValueError, match="has 5"):
        param_importance(planted_study(5))


def test_pareto_front_is_non_dominated():
    import optuna

    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=20)
    front = pareto_front(study, metrics=["val_image_auroc", "latency_ms"])
    assert len(front) == len(study.best_trials) and {"val_image_auroc", "latency_ms", "x"} <= set(front.columns)
    for _, a in front.iterrows():
        dominated = [t for t in study.trials
                     if t.values[0] >= a["val_image_auroc"] and t.values[1] <= a["latency_ms"] and t.values != [a["val_image_auroc"], a["latency_ms"]]]
        assert not dominated


def test_report_of_a_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    rows = planted_sweep(np.random.default_rng(4))
    configs = list(dict.fromkeys(r["trial_id"] for r in rows))
    for r in rows:
        r["optuna_trial"] = configs.index(r["trial_id"])
    rows += [row({"params.x": 7}, 0, c, 0.0, status="failed", optuna_trial=len(configs)) for c in CLASSES]
    write_rows(sweep, rows)
    (sweep / "spec.yaml").write_text("name: sweep\nmethod: distcon\nsearch:\n  metric: val_image_auroc\n  mode: max\n")
    planted_study(12, storage=f"sqlite:///{sweep / 'optuna.db'}", name="sweep")
    out = write_report(sweep)
    assert out == sweep / "report"
    expected = {"report.md", "report.html", "history.png", "per_class.png", "importance.png", "failures.csv"}
    expected |= {f"{t}.{e}" for t in ("runs", "ranking", "per_class", "importance") for e in ("csv", "tex")}
    assert expected <= {p.name for p in out.iterdir()}
    assert set(check_html(out)) == {"ranking.png", "per_class.png", "history.png", "importance.png", "fidelity.png"}
    md = (out / "report.md").read_text()
    assert "loss is NaN" in md and "Hyperparameter importance" in md
    assert r"\begin{tabular}" in (out / "ranking.tex").read_text()


def test_report_of_an_ablation(tmp_path):
    ablate = tmp_path / "ablate"
    write_rows(ablate, ablation_rows(np.random.default_rng(5)))
    out = write_report(ablate, out=tmp_path / "ablate-report")
    assert {"ablation.csv", "ablation_paper.tex", "ablation.png", "report.md"} <= {p.name for p in out.iterdir()}
    assert sorted(check_html(out)) == ["ablation.png"]  # the variants are not ranked as a search's trials
    md = (out / "report.md").read_text()
    sections = [ln for ln in md.splitlines() if ln.startswith("## ")]
    assert sections[0] == "## Ablation" and "## Ranking" not in sections
    assert "Hyperparameter importance" not in md and "Best configuration" not in md  # no empty or search sections


def test_report_of_a_single_train_run(tmp_path):
    (tmp_path / "results").mkdir()
    out = write_report(tmp_path, out=tmp_path / "r")  # before any row: reported, not an error
    assert "no result rows yet" in (out / "report.md").read_text()
    rows = [row({"params.x": 1}, 0, c, 0.8 + CLASS_OFFSET[c], kind="train", trial="run1") for c in CLASSES]
    write_rows(tmp_path, rows)
    out = write_report(tmp_path, out=tmp_path / "r")
    md = (out / "report.md").read_text()
    assert "n = 4 runs (4 classes x 1 seed(s))" in md and "history.png" not in md
    assert set(check_html(out)) == {"ranking.png", "per_class.png"}


def test_hand_built_minimal_table_is_enough():
    import pandas as pd

    df = pd.DataFrame({"trial_id": ["t1", "t1", "t2"], "normal_class": ["a", "b", "a"],
                       "config_json": ['{"k": 1}', '{"k": 1}', '{"k": 2}'], "val_image_auroc": [0.9, 0.8, 0.7]})
    ranking = rank_configs(df)
    assert list(ranking["k"]) == [1, 2] and list(ranking["complete"]) == [True, False]


def test_import_needs_neither_torch_nor_ray():
    code = ("import analysis, analysis.load, analysis.rank, analysis.ablation, analysis.importance, "
            "analysis.plots, analysis.report; import sys; "
            "bad = [m for m in sys.modules if re.match(r'(torch|ray)(\\.|$)', m)]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", "import re; " + code], check=True)


def test_report_of_a_multi_objective_sweep_has_a_pareto_front(tmp_path):
    import optuna

    write_rows(tmp_path, planted_sweep(np.random.default_rng(6)))
    (tmp_path / "spec.yaml").write_text("name: mo\nmethod: distcon\nsearch:\n  metric: [val_image_auroc, latency_ms]\n")
    study = optuna.create_study(study_name="mo", storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                                directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1 + 3 * t.params["x"] + t.suggest_float("z", 0, 1)),
                   n_trials=12)
    out = write_report(tmp_path)
    assert {"pareto.csv", "pareto.tex"} <= {p.name for p in out.iterdir()}
    assert {"pareto.png", "importance.png"} <= set(check_html(out))
    front = (out / "pareto.csv").read_text().splitlines()[0].split(",")
    assert front[:3] == ["number", "val_image_auroc", "latency_ms"]
