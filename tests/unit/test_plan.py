"""`raysearch train --dry-run`: the resolved spec and the plan, nothing started (no Ray,
no torch, no folder); the resources line that train, tune and ablate dry runs share."""

import os

import yaml

from raysearch.cli import main
from raysearch.config.spec import TrainSpec, load_spec
from raysearch.run.plan import resources_line

DEMO = os.path.join(os.path.dirname(__file__), "..", "..", "search_spaces", "demo", "distcon.yaml")


def test_train_dry_run_prints_the_resolved_spec_and_the_plan_and_starts_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    sets = ["train.epochs=7", "train.eval_every=3", "data.classes=[0,4]"]
    argv = ["train", DEMO, *[a for kv in sets for a in ("--set", kv)], "--num-cpus", "3", "--output", str(out)]
    assert main([*argv, "--dry-run"]) == 0
    text = capsys.readouterr().out
    spec_text, plan = text.split("\n\n", 1)
    assert yaml.safe_load(spec_text) == yaml.safe_load(yaml.safe_dump(load_spec(DEMO, sets).to_dict()))
    assert plan.splitlines() == [
        "train distcon-digits-demo: method distcon, 2 classes (0, 4)",
        plan.splitlines()[1],  # the validation line (selection_summary's own tests)
        "runs: 2 classes, one after another, 7 epochs each, evaluated every 3 epochs and after the last",
        "resources: 1 worker(s) x 3 CPU (no GPU), 3 torch thread(s) each (a local Ray of 3 CPUs)",
        f"output: {out} (results/, checkpoints/, tensorboard/)",
    ]
    assert plan.splitlines()[1].startswith("validation: ")
    assert not out.exists()


def test_train_dry_run_on_a_cluster_holds_what_the_spec_says(tmp_path, capsys):
    sets = ["train.workers=2", "train.gpus_per_worker=0.5", "train.epochs=5", "train.eval_every=5"]
    argv = ["train", DEMO, *[a for kv in sets for a in ("--set", kv)], "--address", "auto",
            "--output", str(tmp_path / "x"), "--dry-run"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "runs: 2 classes, one after another, 5 epochs each, evaluated after the last epoch" in lines
    assert "resources: 2 worker(s) x 0.5 GPU" in lines


def test_resources_line_names_what_each_worker_holds():
    assert resources_line(TrainSpec(workers=2), "per trial") == \
        "resources: 2 worker(s) x 1 CPU per trial (no GPU), 1 torch thread(s) each"
    assert resources_line(TrainSpec(cpus_per_worker=2.5, threads=4), "per trial") == \
        "resources: 1 worker(s) x 2.5 CPU per trial (no GPU), 4 torch thread(s) each"
    assert resources_line(TrainSpec(gpus_per_worker=0.25), "per trial") == "resources: 1 worker(s) x 0.25 GPU per trial"
