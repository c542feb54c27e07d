"""`raysearch ablate` and `raysearch export`: spec checks (fast) and real runs (slow)."""

import pytest
import yaml
from tiny import TINY

from raysearch import results
from raysearch.ablation import parse_ablations, resolve_base
from raysearch.schema import SpecError
from raysearch.spec import load_spec, spec_from_dict

BASE = {"name": "a", "method": "distcon", "train": {"epochs": 2, "seed": 5}}



def with_ablations(block):
    return spec_from_dict({**BASE, "ablations": block}, source="a.yaml")


def test_ablations_block_parses_and_defaults():
    ab = parse_ablations(with_ablations({"factors": {"no_gmm": {"params.loss.gmm_weight": 0}}}))
    assert ab.seeds == (5,) and ab.variants() == ["full", "no_gmm"] and ab.concurrent == 1
    shipped = parse_ablations(load_spec("search_spaces/demo/distcon.yaml"))
    assert shipped.seeds == (0, 1) and "no_gmm" in shipped.factors


@pytest.mark.parametrize(
    "block, fragment",
    [
        ({"factors": {"x": {"params.nope": 1}}}, "ablations.factors.x.params.nope"),
        ({"factors": {"full": {"train.lr": 0.1}}}, "'full' is the name of the unchanged model"),
        ({"factors": {}}, "ablations.factors: expected a mapping"),
        ({"seeds": [0, 0], "factors": {"x": {"train.lr": 0.1}}}, "seeds repeat"),
        ({"seeds": "0", "factors": {"x": {"train.lr": 0.1}}}, "ablations.seeds: expected a non-empty list"),
        ({"repeats": 2, "factors": {"x": {"train.lr": 0.1}}}, "ablations.repeats: unknown key"),
    ],
)
def test_ablation_errors_name_the_key(block, fragment):
    with pytest.raises(SpecError) as err:
        parse_ablations(with_ablations(block))
    assert fragment in str(err.value)


def test_base_from_exported_file_keeps_this_specs_data(tmp_path):
    spec = load_spec("search_spaces/demo/distcon.yaml", ["data.classes=[3]"])
    other = spec.with_overrides({"params.gmm.components": 7, "data.classes": ["5"], "name": "elsewhere"})
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(other.to_dict()))
    base = resolve_base(spec, str(path))
    assert base.params.gmm.components == 7  # the model comes from the exported config
    assert base.classes() == ["3"] and base.name == spec.name  # the data and name stay this spec's
    assert base.provenance["ablation_base"] == {"config": str(path)}


@pytest.mark.slow
def test_ablate_runs_every_variant_and_refuses_its_base_folder(ray_session, demo_spec_path, tmp_path):
    from raysearch.ablation import run_ablate

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
    from raysearch.runner import run_train

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
