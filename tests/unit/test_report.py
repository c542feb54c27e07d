"""The publishable parts of a report, on known inputs: intervals that stay in the metric's
range, the paired difference to rank 1 against a hand computation, a reproducible
bootstrap, no interval below five pairs, trial counts equal to the Optuna study's, the
importance evaluators side by side with a disagreement flag, and a report.html that
refers to nothing outside itself."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from helpers.sweeps import CLASSES, check_html, planted_study, row, write_rows

from analysis import load_results, param_importance, rank_configs, write_report
from analysis.importance import compare_importance, trial_counts
from analysis.rank import MIN_PAIRS, cell_table, paired_difference, percentile_interval, t_interval


def _load(folder, rows):
    write_rows(folder, rows)
    return load_results(folder)


def _grid(values: dict[str, dict[tuple[str, int], float]]) -> list[dict]:
    """Rows from {config name: {(class, seed): value}}, one trial per (config, seed)."""
    return [row({"name": name}, seed, cls, v, trial=f"{name}-s{seed}")
            for name, cells in values.items() for (cls, seed), v in cells.items()]


# -- intervals stay in the metric's range ---------------------------------------------------
def test_all_ones_gives_degenerate_intervals_at_one_and_zero(tmp_path):
    cells = {(c, s): 1.0 for c in CLASSES for s in (0, 1)}  # 8 cells each
    ranking = rank_configs(_load(tmp_path, _grid({"A": cells, "B": dict(cells)})))
    assert list(ranking["mean"]) == [1.0, 1.0]
    assert list(ranking["ci_low"]) == [1.0, 1.0] and list(ranking["ci_high"]) == [1.0, 1.0]
    second = ranking.iloc[1]
    assert (second["diff"], second["diff_ci_low"], second["diff_ci_high"], second["n_pairs"]) == (0.0, 0.0, 0.0, 8)


def test_intervals_near_one_never_pass_one(tmp_path):
    # Near the ceiling a t-interval passes 1; the bootstrap interval cannot.
    near = [0.999, 0.9995, 1.0, 0.998, 1.0, 0.97, 1.0, 0.9999]
    a = {(c, s): near[2 * i + s] for i, c in enumerate(CLASSES) for s in (0, 1)}
    b = {(c, s): 1.0 - v / 100 for (c, s), v in zip(a, range(8), strict=True)}
    ranking = rank_configs(_load(tmp_path, _grid({"A": a, "B": b})))
    for _, r in ranking.iterrows():
        assert 0.0 <= r["ci_low"] <= r["mean"] <= r["ci_high"] <= 1.0
        assert np.isnan(r["diff_ci_low"]) or -1.0 <= r["diff_ci_low"] <= r["diff"] <= r["diff_ci_high"] <= 1.0
    values = np.array(near)
    t_low, t_high = t_interval(np.array([values.mean()]), np.array([values.std(ddof=1)]), np.array([8]), 0.95)
    assert t_high[0] > 1.0  # what the old headline interval did
    clipped = t_interval(np.array([values.mean()]), np.array([values.std(ddof=1)]), np.array([8]), 0.95, (0.0, 1.0))
    assert clipped[1][0] == 1.0 and clipped[0][0] == pytest.approx(t_low[0])


def test_differences_of_extreme_values_stay_within_minus_one_and_one():
    low, high = percentile_interval([np.array([-1.0] * 5), np.array([1.0, 1.0, 1.0, 1.0, 1.0, -1.0])],
                                    bounds=(-1.0, 1.0))
    assert low.tolist()[0] == high.tolist()[0] == -1.0
    assert -1.0 <= low[1] <= high[1] == 1.0


def test_bootstrap_interval_of_a_known_case():
    # Resampled means of one 1 and nine 0s are k/10, k ~ Binomial(10, 0.1). The expanded level
    # for n = 10 is a' = Φ(√(10/9)·t(0.025, 9)) = 0.0085: P(k = 0) = 0.35 > a', and
    # P(k >= 4) = 0.013 > a' > P(k >= 5) = 0.0016, so the 95 % interval is [0, 4/10].
    low, high = percentile_interval([np.array([1.0] + [0.0] * 9)])
    assert (low[0], high[0]) == (0.0, pytest.approx(0.4))


def test_expanded_interval_is_about_as_wide_as_a_t_interval_for_few_values():
    values = np.array([0.81, 0.86, 0.78, 0.90, 0.84])
    low, high = percentile_interval([values], bounds=(0.0, 1.0))
    t_low, t_high = t_interval(np.array([values.mean()]), np.array([values.std(ddof=1)]), np.array([5]), 0.95)
    plain = np.quantile([values[np.random.default_rng(i).integers(0, 5, 5)].mean() for i in range(2000)],
                        [0.025, 0.975])
    assert high[0] - low[0] > 1.3 * (plain[1] - plain[0])  # the plain percentile interval is too narrow
    assert 0.6 < (high[0] - low[0]) / (t_high[0] - t_low[0]) < 1.2
    assert values.min() <= low[0] < values.mean() < high[0] <= values.max()


# -- the paired difference ------------------------------------------------------------------
def test_paired_difference_equals_a_hand_computation(tmp_path):
    # Two seeds x three classes. B is rank 1 (mean 0.8); A misses (c, 1).
    #           a,0   a,1   b,0   b,1   c,0   c,1
    #   B:      .90   .80   .70   .80   .90   .70        mean .80
    #   A:      .85   .70   .75   .60   .60   --         mean .70
    #   A - B: -.05  -.10  +.05  -.20  -.30              5 pairs: mean -.12
    b = {("a", 0): 0.9, ("a", 1): 0.8, ("b", 0): 0.7, ("b", 1): 0.8, ("c", 0): 0.9, ("c", 1): 0.7}
    a = {("a", 0): 0.85, ("a", 1): 0.7, ("b", 0): 0.75, ("b", 1): 0.6, ("c", 0): 0.6}
    ranking = rank_configs(_load(tmp_path, _grid({"A": a, "B": b})), n_classes=3)
    assert list(ranking["name"]) == ["B", "A"]
    best, other = ranking.iloc[0], ranking.iloc[1]
    assert best["diff"] == 0.0 and np.isnan(best["diff_ci_low"]) and best["n_pairs"] == 6  # the reference
    assert other["diff"] == pytest.approx(-0.12) and other["n_pairs"] == 5
    diffs = np.array([-0.05, -0.10, 0.05, -0.20, -0.30])
    low, high = percentile_interval([diffs], bounds=(-1.0, 1.0))
    assert (other["diff_ci_low"], other["diff_ci_high"]) == (pytest.approx(low[0]), pytest.approx(high[0]))
    assert diffs.min() <= other["diff_ci_low"] < -0.12 < other["diff_ci_high"] <= diffs.max()
    assert other["mean"] == pytest.approx(0.70) and best["mean"] == pytest.approx(0.80)
    assert best["seed_std"] == pytest.approx(np.std([(0.9 + 0.7 + 0.9) / 3, (0.8 + 0.8 + 0.7) / 3], ddof=1))


def test_ranking_reads_like_a_results_table(tmp_path):
    rows = []
    for i, lr in enumerate((0.1, 0.01, 0.001)):
        config = {"method": "distcon", "train.lr": lr, "params.k": 3}  # params.k does not vary
        rows += [row(config, 0, c, 0.9 - 0.05 * i, test=0.8, trial=f"t{i}", optuna_trial=i) for c in CLASSES]
    ranking = rank_configs(_load(tmp_path, rows))
    columns = list(ranking.columns)
    assert columns[:4] == ["rank", "trial_id", "optuna_trial", "train.lr"]  # label, then the searched keys
    assert columns[4:11] == ["mean", "n", "diff", "diff_ci_low", "diff_ci_high", "n_pairs", "test_image_auroc_mean"]
    assert columns.index("config_key") > columns.index("test_image_auroc_mean") and "params.k" not in columns
    assert list(ranking["trial_id"]) == ["t0", "t1", "t2"] and list(ranking["optuna_trial"]) == [0, 1, 2]
    assert list(ranking["diff"]) == pytest.approx([0.0, -0.05, -0.10])
    assert ranking["diff_ci_low"].isna().all()  # 4 classes x 1 seed: 4 < 5 pairs, no interval
    assert ranking["ci_low"].isna().all() and ranking["seed_std"].isna().all()


def test_no_interval_below_five_pairs_and_one_from_five():
    cells = pd.DataFrame([[0.9] * 5, [0.8, 0.7, 0.8, 0.9, 0.6], [0.8, 0.7, 0.8, 0.9, np.nan]],
                         index=["best", "five", "four"])
    table = paired_difference(cells, "best", bounds=(0.0, 1.0))
    assert list(table["n_pairs"]) == [5, 5, 4] and MIN_PAIRS == 5
    assert np.isfinite(table.loc["five", ["diff_ci_low", "diff_ci_high"]].astype(float)).all()
    assert table.loc["four", ["diff_ci_low", "diff_ci_high"]].isna().all()
    assert table.loc["four", "diff"] == pytest.approx(-0.1)


def test_bootstrap_is_reproducible_and_does_not_depend_on_the_other_configs(tmp_path):
    rng = np.random.default_rng(7)
    values = {name: {(c, s): float(rng.uniform(0.6, 0.95)) for c in CLASSES for s in (0, 1, 2)}
              for name in ("A", "B", "C")}
    df = _load(tmp_path / "three", _grid(values))
    first, again = rank_configs(df), rank_configs(df.sample(frac=1.0, random_state=3))  # rows shuffled
    pd.testing.assert_frame_equal(first, again)
    other = rank_configs(df, seed=1)
    assert not np.allclose(other["ci_low"], first["ci_low"])  # the seed is what fixes them
    # Adding a configuration ranked below the others leaves their intervals as they were.
    more = dict(values, D={k: 0.1 for k in values["A"]})
    bigger = rank_configs(_load(tmp_path / "four", _grid(more)))
    pd.testing.assert_frame_equal(bigger.iloc[:3][["ci_low", "ci_high", "diff_ci_low", "diff_ci_high"]],
                                  first[["ci_low", "ci_high", "diff_ci_low", "diff_ci_high"]])
    cells = cell_table(df)
    assert cells.shape == (3, 12) and list(cells.columns[:3]) == [("a", "0"), ("a", "1"), ("a", "2")]


# -- trial counts from the study --------------------------------------------------------------
def _study_with_states(folder, name: str, states: list[str]):
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}", direction="maximize")
    for i, state in enumerate(states):
        done = state == "COMPLETE"
        study.add_trial(create_trial(state=TrialState[state], params={"x": i / 10},
                                     distributions={"x": FloatDistribution(0, 1)}, value=0.5 if done else None))
    return study


def _sweep_rows(statuses: list[str]) -> list[dict]:
    rows = []
    for i, status in enumerate(statuses):
        config = {"train.lr": 10.0 ** -(i + 1)}
        rows += [row(config, 0, c, 0.8 + 0.01 * i, status=status, trial=f"t{i}", optuna_trial=i) for c in CLASSES]
    return rows


def _trials_csv(out) -> dict[str, dict[str, int]]:
    return pd.read_csv(out / "trials.csv", index_col="status").to_dict()


def test_trial_counts_equal_the_studys(tmp_path):
    states = ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED", "PRUNED", "FAIL", "RUNNING"]
    statuses = ["completed", "completed", "completed", "pruned", "pruned", "failed"]
    study = _study_with_states(tmp_path, "counts", states)
    assert trial_counts(study) == {"completed": 3, "pruned": 2, "failed": 1, "unfinished": 1, "repeats": 0}
    rows = _sweep_rows(statuses)
    rows += [row({"train.lr": 0.5}, 0, "a", 0.9, trial="t6", optuna_trial=6)]  # running: 1 class of 4
    write_rows(tmp_path, rows)
    (tmp_path / "spec.yaml").write_text("name: counts\nmethod: distcon\n")
    out = write_report(tmp_path)
    md = (out / "report.md").read_text()
    assert "Trials of the sweep (Optuna study counts, optuna.db): 3 completed, 2 pruned, 1 failed, 1 unfinished." in md
    assert "The result rows differ" not in md
    assert "Rank 2 (trial `t1 (#1)`) differs from rank 1 by -0.0100 (no interval: 4 pairs, needs 5) over 4 paired cell(s)." in md
    counts = _trials_csv(out)
    assert counts["Optuna study"] == counts["tune rows"] == {"completed": 3, "pruned": 2, "failed": 1, "unfinished": 1}
    assert "Not computed: parameter importance needs at least 10 completed trials" in md


def test_trial_counts_say_when_the_rows_differ(tmp_path):
    _study_with_states(tmp_path, "drift", ["COMPLETE", "COMPLETE", "FAIL", "FAIL"])
    write_rows(tmp_path, _sweep_rows(["completed", "completed", "failed"]))  # one failure wrote no row
    (tmp_path / "spec.yaml").write_text("name: drift\nmethod: distcon\n")
    md = (write_report(tmp_path) / "report.md").read_text()
    assert "Trials of the sweep (Optuna study drift, optuna.db): 2 completed, 0 pruned, 2 failed, 0 unfinished." in md
    assert "**The result rows differ**: they hold 2 completed, 0 pruned, 1 failed, 0 unfinished" in md


def test_a_study_of_another_name_is_reported_not_raised(tmp_path):
    _study_with_states(tmp_path, "not-this-one", ["COMPLETE"])
    write_rows(tmp_path, _sweep_rows(["completed", "pruned"]))
    (tmp_path / "spec.yaml").write_text("name: other\nmethod: distcon\n")
    out = write_report(tmp_path)
    md = (out / "report.md").read_text()
    assert "**Warning**: optuna.db could not be read as this experiment's study" in md
    assert _trials_csv(out) == {"tune rows": {"completed": 1, "pruned": 1, "failed": 0, "unfinished": 0}}


# -- importance: two evaluators side by side --------------------------------------------------
def test_importance_disagreement_rule_on_a_constructed_table():
    table = pd.DataFrame({"fanova": [0.40, 0.35, 0.20, 0.05], "ped_anova": [0.05, 0.30, 0.25, 0.40]},
                         index=["lr", "depth", "width", "decay"])
    flags = compare_importance(table)
    assert list(flags["fanova_rank"]) == [1, 2, 3, 4] and list(flags["ped_anova_rank"]) == [4, 2, 3, 1]
    assert dict(flags["disagree"]) == {"lr": True, "depth": False, "width": False, "decay": True}
    assert "fanova place 1 vs ped_anova 4" in flags.loc["lr", "why"] and flags.loc["depth", "why"] == ""
    # One place apart but shares 0.35 apart: flagged by the share rule alone.
    shares = compare_importance(pd.DataFrame({"fanova": [0.6, 0.4], "ped_anova": [0.95, 0.05]}, index=["a", "b"]))
    assert shares["disagree"].all() and shares.loc["a", "why"] == "shares differ by 0.35"
    assert not compare_importance(table, rank_gap=3, share_gap=0.5)["disagree"].any()


def test_importance_in_the_report_shows_both_evaluators_and_the_count(tmp_path):
    first, again = param_importance(planted_study(14)), param_importance(planted_study(14))
    pd.testing.assert_frame_equal(first, again)  # fANOVA seeded, PED-ANOVA deterministic
    write_rows(tmp_path, _sweep_rows(["completed"] * 3))
    (tmp_path / "spec.yaml").write_text("name: imp\nmethod: distcon\n")
    planted_study(14, storage=f"sqlite:///{tmp_path / 'optuna.db'}", name="imp")
    out = write_report(tmp_path)
    md = (out / "report.md").read_text()
    assert "Computed from **14 completed trials** of the study's 14" in md
    table = pd.read_csv(out / "importance.csv", index_col="param")
    assert list(table.columns) == ["fanova", "ped_anova", "fanova_rank", "ped_anova_rank", "disagree", "why"]
    assert list(table.index) == ["x", "y"] and not table["disagree"].any()
    assert "The two evaluators agree on every parameter" in md


# -- a self-contained report.html -----------------------------------------------------------
class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.attrs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.attrs += [(tag, k, v or "") for k, v in attrs]


def test_report_html_refers_to_nothing_outside_itself(tmp_path):
    rows = _sweep_rows(["completed"] * 3)
    rows += [row({"train.lr": 0.9}, 0, c, 0.0, status="failed", trial="t9", optuna_trial=9) for c in CLASSES]
    write_rows(tmp_path / "exp", rows)
    (tmp_path / "exp" / "spec.yaml").write_text("name: html\nmethod: distcon\n")
    planted_study(12, storage=f"sqlite:///{tmp_path / 'exp' / 'optuna.db'}", name="html")
    out = write_report(tmp_path / "exp", out=tmp_path / "report")
    assert set(check_html(out)) == {"ranking.png", "per_class.png", "fidelity.png", "history.png", "importance.png"}

    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.copy(out / "report.html", alone / "report.html")  # the page alone, without its folder
    page = (alone / "report.html").read_text()
    parser = _Page()
    parser.feed(page)
    ids = {v for _, k, v in parser.attrs if k == "id"}
    refs = [(tag, k, v) for tag, k, v in parser.attrs if k in ("src", "href", "srcset", "data", "action", "poster")]
    assert refs and not any(tag in ("link", "script", "iframe", "object", "embed") for tag, _, _ in parser.attrs)
    for tag, _, ref in refs:
        if ref.startswith("#"):
            assert ref[1:] in ids, ref  # an in-page anchor that exists
        else:
            assert tag == "img" and ref.startswith("data:image/png;base64,"), ref[:60]
            assert base64.b64decode(ref.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)  # base64 may spell anything
    assert "url(" not in text and "@import" not in text and "http" not in text.lower()
    # report.md keeps the PNGs beside it
    assert "![Ranking by val_image_auroc (no intervals: fewer than 5 cells per configuration)](ranking.png)" \
        in (out / "report.md").read_text()
    header = pd.read_csv(out / "ranking.csv").columns.tolist()
    assert header[:4] == ["rank", "trial_id", "optuna_trial", "train.lr"]
    assert {"ci_low", "ci_high", "trial_ids"} <= set(pd.read_csv(out / "ranking_all.csv").columns)
    assert json.loads(json.dumps(header))  # plain strings
