"""`raysearch ablate` and `raysearch export`: spec checks (fast) and real runs (slow)."""

import pytest
from helpers.tiny import TINY

from raysearch.config.schema import SpecError
from raysearch.config.spec import load_spec
from raysearch.store import results

BASE = {"name": "a", "method": "distcon", "train": {"epochs": 2, "seed": 5}}


@pytest.mark.slow
def test_ablate_runs_every_variant_and_refuses_its_base_folder(ray_session, demo_spec_path, tmp_path):
    from raysearch.run.ablation import run_ablate

    spec = load_spec(demo_spec_path, TINY + [
        "ablations={seeds: [0], concurrent: 1, factors: {no_gmm: {params.loss.gmm_weight: 0}, "
        "single_rotation: {params.rotations: '0', params.loss.rotation_weight: 0}}}",
    ])
    out = str(tmp_path / "ablation")
    assert run_ablate(spec, out, quiet=True) == 0
    rows = results.read_results(out).to_pylist()
    assert sorted(r["variant"] for r in rows) == ["full", "no_gmm", "single_rotation"]
    assert all(r["kind"] == "ablate" and r["status"] == "completed" for r in rows)
    by_variant = {r["variant"]: r for r in rows}
    assert by_variant["no_gmm"]["params.loss.gmm_weight"] == 0
    assert by_variant["single_rotation"]["params.rotations"] == "0"
    assert by_variant["full"]["params.rotations"] == spec.params.rotations
    with pytest.raises(SpecError, match="never into the experiment it reads"):
        run_ablate(spec, out, base=out, quiet=True)


@pytest.mark.slow
def test_export_then_train_reproduces_the_trial(ray_session, demo_spec_path, tmp_path):
    from analysis.export import export_best
    from raysearch.run.runner import run_train

    spec = load_spec(demo_spec_path, TINY + ["params.gmm.components=3"])
    code, rows = run_train(spec, str(tmp_path / "exp"), quiet=True)
    assert code == 0
    first = export_best(str(tmp_path / "exp"), top=1, to=str(tmp_path / "best"))
    again = export_best(str(tmp_path / "exp"), top=1, to=str(tmp_path / "best2"))
    assert first[0].read_bytes() == again[0].read_bytes()  # exporting twice gives the same file
    exported = load_spec(first[0])
    assert exported.name == f"{spec.name}-1" and exported.params.gmm.components == 3
    origin = exported.provenance["exported_from"]
    assert origin["trial_id"] == rows[0]["trial_id"]
    assert origin["checkpoints"]["3"] == f"checkpoints/{rows[0]['trial_id']}/3/best.pt"  # valid in a copy
    assert rows[0]["checkpoint"].endswith(origin["checkpoints"]["3"])
    code, again_rows = run_train(exported, str(tmp_path / "rerun"), quiet=True)
    assert code == 0
    assert again_rows[0]["val_image_auroc"] == pytest.approx(rows[0]["val_image_auroc"], abs=0.005)
