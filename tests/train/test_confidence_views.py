"""The selection-confidence line in the tune summary, the report and export (a store built by hand, no Ray)."""

import optuna  # noqa: F401  (raysearch.run.tuning imports the searcher)
import yaml

from raysearch.config.space import parse_search
from raysearch.config.spec import load_spec
from raysearch.store import results
from raysearch.store.results import RunInfo, base_row, config_schema

# Four configurations whose every family sits at chance: validation cannot rank them.
AT_CHANCE = {"a": (0.50, 0.51), "b": (0.52, 0.49), "c": (0.48, 0.50), "d": (0.51, 0.53)}
LINE = "validation cannot rank these 4 configurations: spread 0.0300, noise +-0.1326"


def _sweep(tmp_path, folder="exp"):
    spec = load_spec("search_spaces/demo/distcon.yaml", ["data.classes=[3]", "selection.anomalies=synthetic",
                                                          "selection.synthesis=[blur, noise]"])
    out = str(tmp_path / folder)
    results.write_resolved_spec(spec, out)
    for n, (tid, (blur, noise)) in enumerate(AT_CHANCE.items()):
        run = RunInfo(experiment=spec.name, kind="tune", trial_id=tid, storage=out, optuna_trial=n)
        trial_spec = spec.with_overrides({"train.lr": 0.001 * (n + 1)})
        row = dict(base_row(trial_spec, run), status="completed", normal_class="3", class_index=0,
                   val_image_auroc=(blur + noise) / 2, val_image_auroc_blur=blur, val_image_auroc_noise=noise,
                   val_normals=20, val_anomalies=200, test_image_auroc=0.9)
        results.write_rows(results.results_dir(out), config_schema(spec), [row], f"{tid}--0")
    return spec, out


def test_the_summary_report_and_export_say_validation_cannot_rank(tmp_path):
    from analysis import write_report
    from analysis.export import export_best
    from raysearch.run.tuning import sweep_summary

    spec, out = _sweep(tmp_path)
    summary = sweep_summary(out, parse_search(spec), n_classes=1)
    [line] = [ln for ln in summary.splitlines() if ln.startswith("validation ")]
    assert line.startswith(LINE) and line.endswith("; every family is at chance (semantic anomalies? validate on other classes: "
                                                         "selection.anomalies: other_classes)")
    # Label-free: it comes before the test-label diagnostic.
    assert summary.index(line) < summary.index("selection fidelity")

    notes: list[str] = []
    [path] = export_best(out, top=1, to=str(tmp_path / "best"), notes=notes)
    assert notes == [line]
    assert yaml.safe_load(path.read_text())["provenance"]["exported_from"]["selection_confidence"] == line

    report = (write_report(out, out=str(tmp_path / "report")) / "report.md").read_text()
    assert f"**Warning**: {line}." in report


def test_the_next_commands_can_be_pasted_for_a_folder_with_a_space(tmp_path):
    import shlex

    from raysearch.run.tuning import sweep_summary

    spec, out = _sweep(tmp_path, "my sweep")
    [line] = [ln for ln in sweep_summary(out, parse_search(spec), n_classes=1).splitlines() if ln.startswith("next:")]
    report, export = line.removeprefix("next: ").split("    ")
    assert shlex.split(report) == ["raysearch", "report", out]
    assert shlex.split(export) == ["raysearch", "export", out, "--top", "3"]
