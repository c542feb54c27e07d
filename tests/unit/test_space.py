"""The search block: validation against the spec and define-by-run sampling."""

import glob

import optuna
import pytest
from helpers.specs import spec_with

from raysearch.config.schema import SpecError
from raysearch.config.space import parse_search, suggest
from raysearch.config.spec import load_spec


def test_shipped_search_blocks_parse():
    paths = sorted(glob.glob("search_spaces/*.yaml") + glob.glob("search_spaces/demo/*.yaml"))
    assert "search_spaces/demo/distcon.yaml" in paths
    for path in paths:
        search = parse_search(load_spec(path))
        assert search.trials >= 1 and search.space, path


def test_conditional_space_gives_only_valid_configs():
    spec = spec_with({
        "trials": 30,
        "space": {
            "params.gmm.update": {"choice": ["gradient", "em"]},
            "params.gmm.refit_every": {"int": [1, 5], "when": {"params.gmm.update": "em"}},
            "params.rotations": {"choice": [[0, 90, 180, 270], "0-180"]},
            "params.gmm.temperature": {"float": [0.1, 1.0], "step": 0.1},
            "train.lr": {"float": [1e-4, 1e-2], "log": True},
        },
    })
    search = parse_search(spec)
    assert search.space[2].choices == ("0-90-180-270", "0-180")  # list choices become strings
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_updates = set()
    for _ in range(30):
        trial = study.ask()
        config = suggest(trial, search, spec.flat_config())
        seen_updates.add(config["params.gmm.update"])
        assert ("params.gmm.refit_every" in config) == (config["params.gmm.update"] == "em")
        resolved = spec.with_overrides(config)  # every sampled config is a valid spec
        assert 1e-4 <= resolved.train.lr <= 1e-2
        study.tell(trial, 0.5)
    assert seen_updates == {"gradient", "em"}


@pytest.mark.parametrize(
    "search, fragment",
    [
        ({"space": {"params.nope": {"int": [1, 2]}}}, "search.space.params.nope: value 1 is refused: unknown key"),
        ({"space": {"train.lr": {"float": [1e-4, 1e-2], "log": True, "step": 1e-4}}}, "log and step cannot be combined"),
        ({"space": {"params.gmm.components": {"int": [8, 1]}}}, "expected [low, high] with low < high"),
        ({"space": {"params.gmm.covariance": {"choice": ["diag", "full"]}}}, "value 'full' is refused"),
        ({"space": {"params.gmm.components": {"range": [1, 2]}}}, "expected exactly one of float, int, choice"),
        ({"metric": "accuracy"}, "search.metric: unknown metric 'accuracy'"),
        ({"metric": "test_image_auroc"}, "test metrics select nothing unless selection.split is test"),
        ({"sampler": "hyperband"}, "search.sampler: expected one of"),
        ({"scheduler": {"kind": "asha", "grace": 0}}, "expected grace >= 1"),
        ({"space": {"params.gmm.refit_every": {"int": [1, 3], "when": {"params.gmm.nope": "em"}}}},
         "when: unknown key 'params.gmm.nope'"),
    ],
)
def test_search_errors_name_the_key(search, fragment):
    with pytest.raises(SpecError) as info:
        parse_search(spec_with(search))
    assert str(info.value).startswith("s.yaml: search"), str(info.value)
    assert fragment in str(info.value)


def test_multi_objective_modes_default_from_metrics():
    search = parse_search(spec_with({"metric": ["val_image_auroc", "latency_ms"], "sampler": "nsga2"}))
    assert search.modes == ("max", "min") and search.multi_objective and not search.uses_asha


