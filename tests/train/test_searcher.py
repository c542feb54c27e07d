"""The Optuna searcher of `raysearch tune`, without Ray: what reaches the study."""

import optuna


def test_searcher_tells_stopped_trials_pruned_and_bad_objectives_failed():
    """The searcher alone (no Ray): what reaches the Optuna study for each way a trial ends."""
    from raysearch.config.space import parse_search
    from raysearch.config.spec import spec_from_dict
    from raysearch.run.searcher import OPTUNA_KEY, PruningOptunaSearch, SpaceFunction

    spec = spec_from_dict({"name": "s", "method": "distcon", "train": {"epochs": 4},
                           "search": {"space": {"train.lr": {"float": [1e-4, 1e-2], "log": True}}}})
    search = parse_search(spec)
    searcher = PruningOptunaSearch(space=SpaceFunction(search, spec.flat_config()), metric="mean_val_image_auroc",
                                   mode="max", n_classes=4, objective_keys=["mean_val_image_auroc"],
                                   sampler=optuna.samplers.RandomSampler(seed=0))
    ends = {
        "a": [{"progress": 1, "mean_val_image_auroc": 0.6}, {"progress": 4, "mean_val_image_auroc": 0.8}],
        "b": [{"progress": 1, "mean_val_image_auroc": 0.5}],  # stopped by the scheduler
        "c": [{"progress": 1, "mean_val_image_auroc": float("nan")},
              {"progress": 4, "mean_val_image_auroc": float("nan")}],
    }
    for tid, reports in ends.items():
        config = searcher.suggest(tid)
        assert 1e-4 <= config["train.lr"] <= 1e-2 and config[OPTUNA_KEY] == "abc".index(tid)
        for i, r in enumerate(reports):
            searcher.on_trial_result(tid, dict(r, training_iteration=i + 1))
        searcher.on_trial_complete(tid, dict(reports[-1], training_iteration=len(reports)))
    searcher.suggest("d")
    searcher.on_trial_complete("d", error=True)
    searcher.suggest("e")  # stopped on its first report: Tune sends that result to on_trial_complete only
    searcher.on_trial_complete("e", {"progress": 2, "mean_val_image_auroc": 0.4, "training_iteration": 1})
    trials = searcher.study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "FAIL", "FAIL", "PRUNED"]
    assert trials[4].intermediate_values == {2000: 0.4}  # steps: thousandths of a class
    assert trials[0].value == 0.8
    assert trials[1].intermediate_values == {1000: 0.5}  # kept, never posing as a final value


def test_restored_searcher_counts_trials_that_ran_after_tunes_last_snapshot(tmp_path):
    """A driver killed between Tune's snapshots: the restored searcher opens this machine's
    study, adopts a trial that finished unrecorded (told COMPLETE from its rows), replaces
    one that left no row, and stops at the sweep's budget."""
    from ray.tune.search import Searcher

    from raysearch.config.space import parse_search
    from raysearch.config.spec import spec_from_dict
    from raysearch.run.searcher import PruningOptunaSearch, SpaceFunction, study_url
    from raysearch.store import results
    from raysearch.store.results import config_schema

    spec = spec_from_dict({"name": "s", "method": "distcon", "train": {"epochs": 2},
                           "search": {"space": {"train.lr": {"float": [1e-4, 1e-2], "log": True}}}})
    out = str(tmp_path)

    def searcher():
        return PruningOptunaSearch(
            space=SpaceFunction(parse_search(spec), spec.flat_config()), metric="mean_val_image_auroc", mode="max",
            n_classes=1, objective_keys=["mean_val_image_auroc"], output=out, budget=4,
            storage=study_url(out), study_name="s",
            sampler=optuna.samplers.RandomSampler(seed=0))

    first = searcher()
    for tid in ("a", "b"):
        first.suggest(tid)
    first.on_trial_complete("a", {"progress": 2, "mean_val_image_auroc": 0.9})
    first.save(str(tmp_path / "searcher.pkl"))  # Tune's last snapshot: trials a and b
    # Two more trials start after it; one writes its row, then the driver is killed.
    late = [first.study.ask() for _ in range(2)]
    row = {"experiment": "s", "kind": "tune", "trial_id": "c", "optuna_trial": late[0].number, "status": "completed",
           "normal_class": "0", "class_index": 0, "val_image_auroc": 0.7}
    results.write_rows(results.join(out, "results"), config_schema(spec), [row], "c--000-0")

    restored = searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    trials = {t.number: t for t in restored.study.get_trials()}
    assert trials[late[0].number].state.name == "COMPLETE" and trials[late[0].number].value == 0.7
    assert trials[late[1].number].state.name == "RUNNING"  # no row: replaced, closed at the end
    assert restored.asked == 3
    assert isinstance(restored.suggest("d"), dict)  # the one trial still missing
    assert restored.suggest("e") == Searcher.FINISHED


def test_the_searcher_keeps_tunes_searcher_contract():
    """Tune calls these methods by name and compares suggest's answer with Searcher.FINISHED;
    this fails as soon as an upgrade of Ray changes the contract the searcher implements."""
    import inspect

    from ray.tune.search import Searcher

    from raysearch.run.searcher import PruningOptunaSearch

    assert Searcher.FINISHED == "FINISHED"
    for name in ("suggest", "on_trial_result", "on_trial_complete", "save", "restore"):
        ours = list(inspect.signature(getattr(PruningOptunaSearch, name)).parameters)
        theirs = list(inspect.signature(getattr(Searcher, name)).parameters)
        assert ours == theirs, (name, theirs)


def test_a_pickled_searcher_leaves_its_study_in_the_storage_and_reopens_it(tmp_path):
    """Tune pickles the searcher with the experiment: the pickle holds no database connection,
    and the unpickled searcher tells the same study."""
    import pickle

    from raysearch.run.searcher import OPTUNA_KEY, study_url

    searcher = _searcher(str(tmp_path), _lr_spec())
    searcher.suggest("t0")
    blob = pickle.dumps(searcher)
    assert b"sqlalchemy" not in blob
    copy = pickle.loads(blob)
    copy.on_trial_result("t0", {"mean_val_image_auroc": 0.4, "progress": 1})  # the study reopens here
    copy.on_trial_complete("t0", {"mean_val_image_auroc": 0.5, "progress": 2})
    trial = optuna.load_study(study_name="s", storage=study_url(str(tmp_path))).trials[0]
    assert trial.value == 0.5 and trial.intermediate_values == {1000: 0.4}
    assert copy.suggest("t1")[OPTUNA_KEY] == 1


def test_a_grid_search_is_told_to_its_last_point():
    """Optuna's grid sampler stops Study.optimize after the last grid point and raises when
    that point is told through ask and tell; the spec's grid sampler is told every point."""
    from raysearch.config.space import parse_search
    from raysearch.config.spec import spec_from_dict
    from raysearch.run.searcher import PruningOptunaSearch, SpaceFunction, make_sampler

    spec = spec_from_dict({"name": "s", "method": "distcon", "train": {"epochs": 2},
                           "search": {"sampler": "grid", "space": {"train.lr": {"choice": [0.1, 0.2]}}}})
    search = parse_search(spec)
    searcher = PruningOptunaSearch(space=SpaceFunction(search, spec.flat_config()), metric="mean_val_image_auroc",
                                   mode="max", n_classes=1, objective_keys=["mean_val_image_auroc"], budget=2,
                                   sampler=make_sampler(search))
    lrs = []
    for tid in ("a", "b"):
        lrs.append(searcher.suggest(tid)["train.lr"])
        searcher.on_trial_complete(tid, {"progress": 1, "mean_val_image_auroc": 0.5})
    assert sorted(lrs) == [0.1, 0.2] and [t.state.name for t in searcher.study.trials] == ["COMPLETE", "COMPLETE"]


def test_a_resumed_searcher_reports_each_step_once(tmp_path):
    """Steps the study already holds (told before a kill) are not told again after a restore."""
    from raysearch.run.searcher import PruningOptunaSearch

    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    searcher = PruningOptunaSearch(space=lambda trial: {"x": trial.suggest_float("x", 0, 1)}, metric="m",
                                   mode="max", n_classes=2, objective_keys=["m"], study_name="s",
                                   storage=f"sqlite:///{tmp_path / 's.db'}",
                                   sampler=optuna.samplers.RandomSampler(seed=0))
    searcher.suggest("t0")
    searcher.on_trial_result("t0", {"m": 0.3, "progress": 0.5})
    searcher.reported.clear()  # as after a restore that read the study: the step is in the study
    searcher.reported[0] = set(study.trials[0].intermediate_values)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns when a step is reported twice
        searcher.on_trial_result("t0", {"m": 0.9, "progress": 0.5})
        searcher.on_trial_result("t0", {"m": 0.4, "progress": 1.0})
    assert optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}").trials[0].intermediate_values \
        == {500: 0.3, 1000: 0.4}


def test_the_study_names_its_objectives_and_trials_name_their_rows(tmp_path):
    from raysearch.run.searcher import PruningOptunaSearch, study_url

    out = str(tmp_path / "exp")
    (tmp_path / "exp").mkdir()
    searcher = PruningOptunaSearch(space=lambda trial: {"x": trial.suggest_float("x", 0, 1)},
                                   metric=["mean_val_image_auroc", "mean_latency_ms"], mode=["max", "min"],
                                   n_classes=1, objective_keys=["mean_val_image_auroc", "mean_latency_ms"],
                                   output=out, study_name="s", storage=study_url(out))
    searcher.suggest("abc_00000")
    study = optuna.load_study(study_name="s", storage=study_url(out))
    assert study.metric_names == ["val_image_auroc", "latency_ms"]
    attrs = study.trials[0].user_attrs
    assert attrs["trial_id"] == "abc_00000" and attrs["rows"].endswith("results/abc_00000--*.parquet")


def test_a_trials_config_hash_attribute_is_its_rows_config_hash(tmp_path):
    """The hash optuna-dashboard shows is the one the trial's result rows carry."""
    from raysearch.config.space import parse_search
    from raysearch.config.spec import load_spec
    from raysearch.run.experiment import TrialPlan
    from raysearch.run.searcher import PruningOptunaSearch, SpaceFunction
    from raysearch.store.results import RunInfo, base_row

    spec = load_spec("search_spaces/demo/distcon.yaml", ["data.classes=[3]"])
    search = parse_search(spec)
    searcher = PruningOptunaSearch(space=SpaceFunction(search, spec.flat_config()), metric="mean_val_image_auroc",
                                   mode="max", n_classes=1, objective_keys=["mean_val_image_auroc"],
                                   sampler=optuna.samplers.RandomSampler(seed=1))
    plan = TrialPlan(spec, str(tmp_path), "tune")
    for tid in ("t0", "t1", "t2"):
        config = searcher.suggest(tid)
        row = base_row(plan.trial_spec(config), RunInfo(spec.name, "tune", tid, str(tmp_path)))
        assert searcher.study.trials[searcher.trials[tid]].user_attrs["config_hash"] == row["config_hash"]


def test_a_suggested_config_that_was_trained_before_is_told_its_value_not_trained_again():
    """On a space of two configs: after the first completes, each suggestion of it is told
    its value (and marked) and the searcher asks again, so Tune gets the other config; a
    repeat of a pruned config is trained (it could end otherwise under new rung cutoffs).
    The study's counts and history leave the repeats out."""
    from analysis.importance import completed_trials, trial_counts
    from analysis.rank import history_table
    from raysearch.config.space import REPEAT_ATTR, is_repeat, parse_search
    from raysearch.config.spec import spec_from_dict
    from raysearch.run.searcher import PruningOptunaSearch, SpaceFunction

    spec = spec_from_dict({"name": "s", "method": "distcon", "train": {"epochs": 2},
                           "search": {"space": {"params.rotations": {"choice": ["0-180", "0-90-180-270"]}}}})
    searcher = PruningOptunaSearch(space=SpaceFunction(parse_search(spec), spec.flat_config()),
                                   metric="mean_val_image_auroc", mode="max", n_classes=1,
                                   objective_keys=["mean_val_image_auroc"], budget=3,
                                   sampler=optuna.samplers.RandomSampler(seed=0))
    trained = []
    for tid, end in (("a", 1.0), ("b", 0.5), ("c", 1.0)):  # b is stopped half-way: pruned
        trained.append(searcher.suggest(tid)["params.rotations"])
        searcher.on_trial_complete(tid, {"progress": end, "mean_val_image_auroc": 0.8})
    first, other = trained[0], trained[1]
    assert other != first and trained[2] == other  # the completed config never again; the pruned one again
    study = searcher.study
    repeats = [t for t in study.trials if is_repeat(t)]
    assert repeats  # this seed's third and fourth draws repeat the first config
    for t in repeats:
        twin = study.trials[t.user_attrs[REPEAT_ATTR]]
        assert twin.number == 0 and t.params == twin.params and t.value == twin.value == 0.8
    assert searcher.asked == 3 and len(study.trials) == 3 + len(repeats)
    counts = trial_counts(study)
    assert counts == {"completed": 1 + 1, "pruned": 1, "failed": 0, "unfinished": 0, "repeats": len(repeats)}
    assert len(completed_trials(study)) == 2
    assert len(history_table(study, "val_image_auroc", "max")) == 3


def _searcher(out, spec, budget=4):
    from raysearch.config.space import parse_search
    from raysearch.run.searcher import PruningOptunaSearch, SpaceFunction, study_url

    return PruningOptunaSearch(
        space=SpaceFunction(parse_search(spec), spec.flat_config()), metric="mean_val_image_auroc", mode="max",
        n_classes=2, objective_keys=["mean_val_image_auroc"], output=out, budget=budget,
        storage=study_url(out), study_name="s",
        sampler=optuna.samplers.RandomSampler(seed=0))


def _lr_spec():
    from raysearch.config.spec import spec_from_dict

    return spec_from_dict({"name": "s", "method": "distcon", "train": {"epochs": 2},
                           "search": {"space": {"train.lr": {"float": [1e-4, 1e-2], "log": True}}}})


def test_a_trial_pruned_after_tunes_last_snapshot_stays_pruned_when_tune_resumes_it(tmp_path):
    """The driver is killed after the searcher told a trial PRUNED but before Tune saved
    that: the resumed Tune runs the trial on and ends it. The restored searcher tells the
    study nothing more about it (Optuna refuses to tell a finished trial), so it stays
    PRUNED with its intermediate value, and the other trial completes normally."""
    spec, out = _lr_spec(), str(tmp_path)
    first = _searcher(out, spec)
    first.suggest("a")
    first.suggest("b")
    first.on_trial_result("a", {"progress": 1, "mean_val_image_auroc": 0.6})
    first.save(str(tmp_path / "searcher.pkl"))  # Tune's last snapshot: both trials running
    first.on_trial_complete("a", {"progress": 1, "mean_val_image_auroc": 0.6})  # ASHA stops it: PRUNED

    restored = _searcher(out, spec)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_result("a", {"progress": 1.5, "mean_val_image_auroc": 0.7})  # Tune runs it on
    restored.on_trial_complete("a", {"progress": 2, "mean_val_image_auroc": 0.8})
    restored.on_trial_complete("b", {"progress": 2, "mean_val_image_auroc": 0.9})
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials
    assert [t.state.name for t in trials] == ["PRUNED", "COMPLETE"]
    assert trials[0].intermediate_values == {1000: 0.6} and trials[1].value == 0.9


def test_an_interrupted_sweeps_trials_wait_in_the_study_and_run_again_on_resume(tmp_path):
    """A stopped sweep leaves no trial RUNNING: its running trials wait (marked interrupted),
    the restored searcher turns them RUNNING before it asks for any new trial, and they are
    then told as usual; a trial that was WAITING for another reason stays so."""
    from raysearch.run.searcher import INTERRUPTED_ATTR, pause_running, resume_interrupted

    spec, out = _lr_spec(), str(tmp_path)
    first = _searcher(out, spec)
    first.suggest("a")
    first.suggest("b")
    first.on_trial_complete("a", {"progress": 2, "mean_val_image_auroc": 0.8})
    first.study.enqueue_trial({"train.lr": 1e-3})  # waiting, but not by an interruption
    first.save(str(tmp_path / "searcher.pkl"))
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert pause_running(storage, "s") == 1
    study = optuna.load_study(study_name="s", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "WAITING", "WAITING"]
    assert study.trials[1].user_attrs[INTERRUPTED_ATTR] is True and INTERRUPTED_ATTR not in study.trials[2].user_attrs

    restored = _searcher(out, spec)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING", "WAITING"]
    assert study.trials[1].user_attrs[INTERRUPTED_ATTR] is False
    restored.on_trial_complete("b", {"progress": 2, "mean_val_image_auroc": 0.9})
    assert study.trials[1].state.name == "COMPLETE" and study.trials[1].value == 0.9
    assert resume_interrupted(storage, "s") == 0  # nothing marked is left


def test_a_trial_left_running_at_the_end_fails_and_says_it_never_ran(tmp_path):
    from raysearch.run.searcher import LOST_ATTR, close_running

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    study.tell(study.ask(), 1.0)
    study.ask()  # asked by a driver that was killed before Tune recorded it
    assert close_running(optuna.storages.RDBStorage(url), "s") == 1
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"]
    assert "never run" in trials[1].user_attrs[LOST_ATTR] and LOST_ATTR not in trials[0].user_attrs
