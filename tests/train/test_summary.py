"""The console summary at the end of a sweep, from a store built by hand (no Ray)."""

import optuna  # noqa: F401  (raysearch.run.tuning imports the searcher)

from raysearch.config.space import parse_search
from raysearch.config.spec import load_spec
from raysearch.store import results
from raysearch.store.results import RunInfo, base_row, config_schema, unfinished_row


def test_summary_ranks_complete_trials_with_their_searched_values_and_says_what_next(tmp_path):
    from raysearch.run.tuning import sweep_summary

    spec = load_spec("search_spaces/demo/distcon.yaml", ["data.classes=[3, 5]"])
    out = str(tmp_path / "exp")
    schema = config_schema(spec)
    values = {"a": (0.0003, [0.9, 0.8]), "b": (0.01, [0.95, 0.99]), "c": (0.002, [0.99])}  # c: one class only
    for n, (tid, (lr, aurocs)) in enumerate(values.items()):
        trial_spec = spec.with_overrides({"train.lr": lr})
        run = RunInfo(experiment=spec.name, kind="tune", trial_id=tid, storage=out, optuna_trial=n)
        for ci, v in enumerate(aurocs):
            row = dict(base_row(trial_spec, run), status="completed", normal_class=str(ci), class_index=ci,
                       val_image_auroc=v, test_image_auroc=v)
            results.write_rows(results.results_dir(out), schema, [row], f"{tid}--{ci}")
    run = RunInfo(experiment=spec.name, kind="tune", trial_id="c", storage=out, optuna_trial=2)
    results.write_rows(results.results_dir(out), schema,
                       [unfinished_row(spec, run, "stopped early", "5", 1, status="pruned")], "c--1")
    text = sweep_summary(out, parse_search(spec), n_classes=2)
    lines = text.splitlines()
    assert lines[0] == "trials: 2 completed, 1 pruned, 0 failed"
    header = lines[1].split()
    assert header[:8] == ["rank", "trial", "optuna", "#", "mean", "val_image_auroc", "config_hash",
                          "params.gmm.components"]
    assert header[-1] == "train.lr"  # every searched key, in the space's order
    assert lines[3].split()[:4] + lines[3].split()[-1:] == ["1", "b", "1", "0.9700", "0.01"]
    assert lines[4].split()[:4] + lines[4].split()[-1:] == ["2", "a", "0", "0.8500", "0.0003"]
    assert f"next: raysearch report {out}" in text and f"raysearch export {out} --top 3" in text


def test_summary_breaks_a_tie_as_the_report_and_export_do(tmp_path):
    from analysis.export import best_trials
    from analysis.load import load_results
    from analysis.rank import rank_configs
    from raysearch.run.tuning import sweep_summary

    spec = load_spec("search_spaces/demo/distcon.yaml", ["data.classes=[3, 5]"])
    out = str(tmp_path / "exp")
    schema = config_schema(spec)
    # z (Optuna #3) and y (#5) tie exactly; the earlier number ranks first, whatever the ids say
    for tid, number, lr, aurocs in (("z", 3, 0.001, [0.9, 0.8]), ("y", 5, 0.002, [0.8, 0.9]),
                                     ("x", 4, 0.003, [0.7, 0.7])):
        trial_spec = spec.with_overrides({"train.lr": lr})
        run = RunInfo(experiment=spec.name, kind="tune", trial_id=tid, storage=out, optuna_trial=number)
        for ci, v in enumerate(aurocs):
            row = dict(base_row(trial_spec, run), status="completed", normal_class=str(ci), class_index=ci,
                       val_image_auroc=v, test_image_auroc=v)
            results.write_rows(results.results_dir(out), schema, [row], f"{tid}--{ci}")
    lines = sweep_summary(out, parse_search(spec), n_classes=2).splitlines()
    console = [ln.split()[1] for ln in lines[3:6]]
    report = rank_configs(load_results(out))["trial_id"].tolist()
    export = [t["trial_id"] for t in best_trials(out, "val_image_auroc")]
    assert console == report == export == ["z", "y", "x"]
    hashes = dict(zip(report, rank_configs(load_results(out))["config_hash"], strict=True))
    assert lines[3].split()[4] == hashes["z"]  # the console names the configuration as the report does
