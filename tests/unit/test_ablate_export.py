"""`raysearch ablate` and `raysearch export`: spec checks (fast) and real runs (slow)."""

import pytest
import yaml

from raysearch.config.schema import SpecError
from raysearch.config.spec import load_spec, spec_from_dict
from raysearch.run.ablation import parse_ablations, resolve_base

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


