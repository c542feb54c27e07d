"""The search block: validation against the spec and define-by-run sampling."""

import glob
import math

import optuna
import pytest

from raysearch.schema import SpecError
from raysearch.space import parse_search, suggest
from raysearch.spec import load_spec, spec_from_dict

BASE = {"name": "s", "method": "distcon", "train": {"epochs": 2}}


def spec_with(search):
    return spec_from_dict({**BASE, "search": search}, source="s.yaml")


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


def test_tpe_start_up_trials_are_a_search_setting():
    from raysearch.searcher import make_sampler

    search = parse_search(spec_with({"startup_trials": 4, "space": {"train.lr": {"float": [1e-4, 1e-2], "log": True}}}))
    assert search.startup_trials == 4

    def draws(sampler) -> list[float]:
        study = optuna.create_study(direction="maximize", sampler=sampler)
        out = []
        for _ in range(6):
            trial = study.ask()
            out.append(suggest(trial, search, {})["train.lr"])
            study.tell(trial, -abs(out[-1] - 1e-3))
        return out

    tpe, random = draws(make_sampler(search)), draws(optuna.samplers.RandomSampler(seed=search.seed))
    assert tpe[:4] == random[:4] and tpe[4:] != random[4:]  # random start-up trials, then the model
    assert parse_search(spec_with({})).startup_trials == 10  # Optuna's default when unset
    with pytest.raises(SpecError, match="search.startup_trials: expected startup_trials >= 0"):
        parse_search(spec_with({"startup_trials": -1}))


def test_asha_stops_a_trial_at_its_rungs_and_lets_the_last_report_end_it():
    """Rungs at `grace` evaluations of the first class times powers of the reduction
    factor (progress counted in classes); a trial below the rung's top 1/rf stops there."""
    import types

    from ray.tune.schedulers import TrialScheduler

    from raysearch.progress import progress
    from raysearch.tuning import asha_scheduler

    spec = spec_from_dict({**BASE, "data": {"dataset": "digits", "classes": [0, 1]},
                           "train": {"epochs": 4, "eval_every": 1},
                           "search": {"scheduler": {"kind": "asha", "grace": 1, "reduction_factor": 2}}}, source="s.yaml")
    search = parse_search(spec)
    scheduler = asha_scheduler(spec, search)

    def run(name: str, value: float) -> float:
        """The progress at which ASHA ends a trial that reports ``value`` at every epoch."""
        trial = types.SimpleNamespace(trial_id=name)
        scheduler.on_trial_add(None, trial)
        for ci in range(2):
            for epoch in range(1, 5):
                at = progress(ci, epoch, 4)
                if scheduler.on_trial_result(None, trial, {"progress": at, "mean_val_image_auroc": value}) \
                        == TrialScheduler.STOP:
                    return at
        return math.inf

    assert run("good", 0.9) == 2.0  # nothing recorded before it: it runs to max_t (the two classes)
    assert run("better", 0.95) == 2.0
    assert run("bad", 0.5) == 0.25  # below the top half at the first rung (one evaluation of four)
    assert run("middling", 0.92) == 0.5  # passes 0.25 (above the median of 0.9, 0.95, 0.5), stops at 0.5
