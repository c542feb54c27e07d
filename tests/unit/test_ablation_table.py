"""The ablation table of a paper: Holm's correction by hand, the full model first, `*` only
after correction, intervals inside the metric's range, booktabs LaTeX, the console summary
and `ablate --dry-run`. Result folders are written here with the store's own writer."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers.sweeps import write_experiment
from scipy import stats

from analysis import (
    ablation_latex,
    ablation_paper_table,
    ablation_table,
    format_ablation_table,
    holm,
    load_results,
    variant_labels,
)
from raysearch.cli import main
from raysearch.run.ablation import ablation_summary

DEMO = "search_spaces/demo/distcon.yaml"


def ablation_rows(values: dict[str, dict[tuple[int, str], float]], classes: list[str],
                  test_shift: float = 0.0) -> list[dict]:
    """variant -> {(seed, class): value} as completed ablation rows (test = val + test_shift)."""
    rows = []
    for variant, cells in values.items():
        for (seed, cls), v in cells.items():
            rows.append({"experiment": "abl", "kind": "ablate", "variant": variant, "status": "completed",
                         "trial_id": f"{variant}-s{seed}", "normal_class": cls, "class_index": classes.index(cls),
                         "seed": seed, "dataset": "digits",
                         "config_json": json.dumps({"variant": variant, "train.seed": seed}),
                         "val_image_auroc": v, "test_image_auroc": min(1.0, v + test_shift)})
    return rows


# 2 seeds x 3 classes = 6 pairs: the fewest for the Wilcoxon test.
CLASSES3 = ["a", "b", "c"]
CELLS6 = [(s, c) for s in (0, 1) for c in CLASSES3]
FULL6 = dict(zip(CELLS6, [0.90, 0.80, 0.70, 0.91, 0.81, 0.71], strict=True))
NO_GMM = [-0.050, -0.051, -0.052, -0.053, -0.054, -0.055]  # all below 0: exact p = 2 / 2^6
NO_AUG = [-0.010, -0.011, -0.012, -0.013, -0.014, -0.016]  # all below 0: exact p = 2 / 2^6
NULL = [0.001, -0.002, 0.003, -0.004, 0.005, -0.006]       # mixed signs


def shifted(full: dict, diffs: list[float]) -> dict:
    return {cell: v + d for (cell, v), d in zip(full.items(), diffs, strict=True)}


def six_pair_rows() -> list[dict]:
    return ablation_rows({"full": FULL6, "no_gmm": shifted(FULL6, NO_GMM), "no_aug": shifted(FULL6, NO_AUG),
                          "null": shifted(FULL6, NULL)}, CLASSES3, test_shift=0.01)


# -- Holm --------------------------------------------------------------------------------
def test_holm_by_hand():
    # sorted 0.01 < 0.03 < 0.04: 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, 1 x 0.04 = 0.04 -> 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm([0.02, np.nan, 0.5])  # a factor without a test does not count: m = 2
    assert adjusted[0] == pytest.approx(0.04) and np.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.5)
    p = np.array([0.002, 0.2, 0.011, 0.04, 0.013])
    adj = holm(p)
    assert (np.diff(adj[np.argsort(p)]) >= 0).all() and (adj >= p).all()
    assert holm([]).size == 0


# -- the table ---------------------------------------------------------------------------
def test_raw_p_below_005_is_not_starred_after_holm(tmp_path):
    df = load_results(write_experiment(tmp_path, six_pair_rows()))
    table = ablation_paper_table(df, "val_image_auroc", order=["null", "no_gmm", "no_aug"])
    assert list(table["variant"]) == ["full", "null", "no_gmm", "no_aug"]  # full first, then the spec's order
    by = table.set_index("variant")
    p_null = stats.wilcoxon(NULL).pvalue
    assert by.loc["no_gmm", "p_raw"] == pytest.approx(2 / 2**6) and by.loc["no_gmm", "pair_test"] == "wilcoxon"
    assert by.loc["no_aug", "p_raw"] == pytest.approx(2 / 2**6)
    assert by.loc["null", "p_raw"] == pytest.approx(p_null)
    # Holm over 3 factors: 3 x 0.03125, max(2 x 0.03125, that), max(p_null, that)
    assert by.loc["no_gmm", "p_holm"] == pytest.approx(0.09375)
    assert by.loc["no_aug", "p_holm"] == pytest.approx(0.09375)
    assert by.loc["null", "p_holm"] == pytest.approx(max(p_null, 0.09375))
    assert not table["significant"].any()
    text = format_ablation_table(table)
    assert list(text["p_holm < 0.05"]) == ["", "", "", ""]  # raw p = 0.031 < 0.05 everywhere, yet no star

    # mean ± t-interval over the 6 runs; delta ± t-interval over the 6 pairs
    t5 = stats.t.ppf(0.975, 5)
    full = np.array(list(FULL6.values()))
    assert by.loc["full", "mean"] == pytest.approx(0.805) and by.loc["full", "n"] == 6
    assert by.loc["full", "ci_high"] - 0.805 == pytest.approx(t5 * full.std(ddof=1) / np.sqrt(6))
    d = np.array(NO_GMM)
    assert by.loc["no_gmm", "delta"] == pytest.approx(-0.0525) and by.loc["no_gmm", "n_pairs"] == 6
    assert by.loc["no_gmm", "delta_ci_low"] == pytest.approx(-0.0525 - t5 * d.std(ddof=1) / np.sqrt(6))
    assert np.isnan(by.loc["full", "delta"]) and np.isnan(by.loc["full", "p_holm"])
    assert text.iloc[0, 3:].tolist() == ["", "", ""]  # the full model's delta, p and star cells are empty
    assert text.set_index("variant").loc["no gmm"].iloc[2] == f"-0.0525 ± {t5 * d.std(ddof=1) / np.sqrt(6):.4f}"


def test_star_only_where_the_corrected_p_is_below_005(tmp_path):
    classes = ["a", "b", "c", "d"]
    cells = [(s, c) for s in (0, 1, 2) for c in classes]  # 12 pairs
    full = {cell: 0.6 + 0.03 * i for i, cell in enumerate(cells)}
    harm = [-0.05 - 0.001 * i for i in range(12)]  # all below 0: exact p = 2 / 2^12
    null = [(-1) ** i * 0.001 * (i + 1) for i in range(12)]
    rows = ablation_rows({"full": full, "no_gmm": shifted(full, harm), "null": shifted(full, null)}, classes)
    table = ablation_paper_table(load_results(write_experiment(tmp_path, rows)), "val_image_auroc")
    by = table.set_index("variant")
    assert by.loc["no_gmm", "p_raw"] == pytest.approx(2 / 2**12)
    assert by.loc["no_gmm", "p_holm"] == pytest.approx(2 * 2 / 2**12)  # 2 factors
    assert by.loc["null", "p_holm"] == pytest.approx(max(stats.wilcoxon(null).pvalue, 4 / 2**12))
    text = format_ablation_table(table).set_index("variant")  # labels: the identifiers with spaces
    marks = text["p_holm < 0.05"]
    assert marks["no gmm"] == "*" and marks["null"] == "" and marks["full"] == ""
    assert text.loc["no gmm", "p_holm"] == "<0.001"


def test_intervals_stay_inside_the_metrics_range(tmp_path):
    full = dict.fromkeys(CELLS6, 1.0)
    near_one = dict(zip(CELLS6, [1.0, 1.0, 0.94, 1.0, 1.0, 0.97], strict=True))
    broken = dict(zip(CELLS6, [0.0, 0.0, 0.0, 0.3, 0.0, 0.0], strict=True))
    rows = ablation_rows({"full": full, "near_one": near_one, "broken": broken}, CLASSES3)
    table = ablation_paper_table(load_results(write_experiment(tmp_path, rows)), "val_image_auroc")
    by = table.set_index("variant")
    t5 = stats.t.ppf(0.975, 5)
    v = np.array(list(near_one.values()))
    half = t5 * v.std(ddof=1) / np.sqrt(6)
    assert v.mean() + half > 1 and by.loc["near_one", "ci_high"] == 1.0  # an AUROC interval ends at 1
    assert by.loc["near_one", "ci_low"] == pytest.approx(v.mean() - half)
    assert by.loc["broken", "delta"] == pytest.approx(-0.95)
    assert by.loc["broken", "delta_ci_low"] == -1.0 and by.loc["broken", "ci_low"] == 0.0  # a delta ends at -1
    cell = format_ablation_table(table).set_index("variant").iloc[:, 1]["near one"]
    assert cell == f"0.9850 +{1 - 0.985:.4f}/-{half:.4f}"  # clipped, so shown as asymmetric
    long = ablation_table(load_results(tmp_path), ["val_image_auroc"]).set_index("variant")
    assert long.loc["broken", "val_image_auroc_ci_low"] == -1.0


def test_long_table_names_the_pair_test_apart_from_the_test_split(tmp_path):
    table = ablation_table(load_results(write_experiment(tmp_path, six_pair_rows())))
    for m in ("val_image_auroc", "test_image_auroc"):
        assert {f"{m}_p_raw", f"{m}_p_holm", f"{m}_pair_test"} <= set(table.columns)
        assert f"{m}_test" not in table.columns  # a pair test's name is never read as the test split
    assert set(table["val_image_auroc_pair_test"]) == {"wilcoxon"}


def test_latex_has_booktabs_rules_and_six_columns(tmp_path):
    table = ablation_paper_table(load_results(write_experiment(tmp_path, six_pair_rows())), "test_image_auroc")
    tex = ablation_latex(table)
    lines = tex.splitlines()
    assert lines[0].startswith("% test_image_auroc of the full model")
    assert r"\begin{tabular}{lrcccc}" in lines
    assert [ln for ln in lines if ln in (r"\toprule", r"\midrule", r"\bottomrule")] == [
        r"\toprule", r"\midrule", r"\midrule", r"\bottomrule"]  # header | full model | factors
    body = [ln for ln in lines if ln.endswith(r"\\")]
    assert len(body) == 1 + 4 and all(len(re.findall(r"(?<!\\)&", ln)) == 5 for ln in body)
    assert body[1].startswith("full & 6 & 0.8150 $\\pm$ 0.") and body[1].endswith("&  &  &  \\\\")
    assert body[0].endswith(r"$p_{\mathrm{Holm}} < 0.05$ \\")  # the marks column has a header
    no_gmm = next(ln for ln in body if ln.startswith("no gmm & "))
    assert no_gmm.startswith("no gmm & 6 & ") and re.search(r"\$-\$0\.0525 \$\\pm\$ 0\.\d{4}", no_gmm)
    assert r"$p_{\mathrm{Holm}}$" in body[0] and "AUROC" in body[0]


def test_variant_labels_replace_config_hashes(tmp_path):
    df = load_results(write_experiment(tmp_path, six_pair_rows()))
    labels = variant_labels(df)
    assert sorted(labels.values()) == ["full", "no_aug", "no_gmm", "null"]
    assert set(df["config_key"].map(labels)) == {"full", "no_aug", "no_gmm", "null"}  # seeds share a label


# -- console -----------------------------------------------------------------------------
def test_console_summary_names_variants_full_first(tmp_path):
    folder = write_experiment(tmp_path, six_pair_rows())
    with open(tmp_path / "spec.yaml", "a") as f:  # the spec's factor order and one label
        f.write("ablations:\n  factors:\n    'null': {label: 'no change', params.x: 1}\n"
                "    no_gmm: {params.x: 2}\n    no_aug: {params.x: 3}\n")
    text = ablation_summary(folder)
    lines = text.splitlines()
    headers = [i for i, ln in enumerate(lines) if ln.startswith("variant")]
    assert len(headers) == 2  # val_image_auroc (the objective), then test_image_auroc
    for i in headers:
        assert "p_holm" in lines[i] and "Δ vs full" in lines[i]
        assert [ln.split("  ")[0] for ln in lines[i + 2:i + 6]] == ["full", "no change", "no gmm", "no aug"]
    assert "val_image_auroc (mean ± 95% CI)" in lines[headers[0]]
    assert "test_image_auroc (mean ± 95% CI)" in lines[headers[1]]
    assert "Holm-corrected over the 3 factor(s)" in text
    assert not re.search(r"\b[0-9a-f]{12}\b", text)  # names, never config hashes


# -- ablate --dry-run --------------------------------------------------------------------
def test_ablate_dry_run_lists_the_plan_and_starts_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["ablate", DEMO, "--dry-run", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "variants (5):" in text and "  full: no overrides" in text
    assert "  no_gmm: params.loss.gmm_weight=0" in text
    assert "  single_rotation: params.rotations='0', params.loss.rotation_weight=0" in text
    assert "seeds: 0, 1" in text and "2 classes (0, 1)" in text
    assert "5 variants x 2 seeds = 10 trials" in text and "= 20 class runs" in text
    assert not out.exists()
    code = ("import sys; from raysearch.cli import main; "
            f"assert main(['ablate', {DEMO!r}, '--dry-run']) == 0; "
            "bad = [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
