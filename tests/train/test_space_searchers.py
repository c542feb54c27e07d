"""The search block: validation against the spec and define-by-run sampling."""

import math

import optuna
import pytest
from helpers.specs import spec_with

from raysearch.config.schema import SpecError
from raysearch.config.space import parse_search, suggest
from raysearch.config.spec import spec_from_dict

BASE = {"name": "s", "method": "distcon", "train": {"epochs": 2}}


def test_tpe_start_up_trials_are_a_search_setting():
    from raysearch.run.searcher import make_sampler

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

    from raysearch.run.tuning import asha_scheduler
    from raysearch.train.progress import progress

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
