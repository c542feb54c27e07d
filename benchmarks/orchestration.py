"""What Ray Tune + Ray Train cost on top of the training itself, for short trials.

Part ``sweep`` (one process):

1. ``raysearch tune`` in-process (:func:`raysearch.run.tuning.run_tune`) on a local Ray with
   2 CPUs: N trials (default 4) of the digits demo spec shrunk like the end-to-end tests
   (one class, 2 epochs, 48 training images, a width-8 CNN), one trial at a time, no
   scheduler, three times: ``train.launcher=auto`` (trials train in Tune trial processes
   that are reused from trial to trial), ``fresh`` (a new process per trial) and
   ``train`` (each trial runs a TorchTrainer). Ray's start-up is timed on its own
   (``init_ray``) before the sweeps.
2. The same N configurations (read back from the result rows) trained one after another
   in this plain Python process with ``load_task`` + :func:`raysearch.train.loop.train_class`,
   as a Train worker does, without Ray.

Part ``breakdown`` (one process): where the per-trial start-up goes. Ray's start-up, a
Tune trial running a no-op function, a TorchTrainer with a no-op train loop (worker
group start and teardown), the imports a fresh worker process pays (torch, ray.train,
raysearch) and data loading, each timed on its own.

Part ``health`` (two child processes, because the variable must be set before Ray
starts): one :func:`raysearch.run.runner.run_train` of the tiny spec with 6 epochs and an
evaluation (hence a ``ray.train.report``) every epoch, with
``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` = 2.0 (Ray's default) and 0.2 (raysearch's).

Run:  python benchmarks/orchestration.py [--part sweep|breakdown|health|all] [--trials 4]
(each part takes 1-3 minutes on a quiet 2-core machine; run_all.py runs them one by one)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile

import _bench

SPEC = os.path.join(_bench.DEMO, "distcon.yaml")
# The tiny run of the end-to-end tests (tests/helpers/tiny.py), repeated here so the benchmark
# does not depend on the test folder.
TINY = [
    "data.classes=[3]",
    "data.max_train=48",
    "data.max_test=40",
    "train.epochs=2",
    "train.eval_every=1",
    "train.batch_size=16",
    "params.backbone.width=8",
]
IMPORTS = (
    "import time, json; t0 = time.perf_counter(); import torch; t1 = time.perf_counter(); "
    "import ray.train.torch; t2 = time.perf_counter(); import raysearch.train.worker, raysearch.train.loop, "
    "raysearch.methods.distcon; t3 = time.perf_counter(); "
    "print(json.dumps({'torch': t1 - t0, 'ray_train': t2 - t1, 'raysearch': t3 - t2}))"
)


def fresh_imports() -> dict[str, float]:
    """Import seconds of the worker-side stack in a fresh interpreter (median of 2)."""
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True, check=True,
                             cwd=_bench.REPO)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {k: _bench.median([r[k] for r in runs]) for k in runs[0]}


def noop_train_loop(config: dict) -> None:
    """A Train loop that only notes its thread settings: the rest is worker-group start and teardown."""
    import torch

    with open(config["path"], "w") as f:
        json.dump({"torch_threads": torch.get_num_threads(),
                   "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset")}, f)


def noop_trial(config: dict) -> dict:
    return {"x": 1.0}


def breakdown_part(repeats: int) -> dict:
    """Ray start-up, a no-op Tune trial, a no-op TorchTrainer.fit(), fresh-process imports, data loading."""
    import ray
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer

    from raysearch.config.spec import load_spec
    from raysearch.data import load_task
    from raysearch.run.ray_setup import init_ray

    # Tune's own CSV/JSON/TensorBoard loggers off, as when the recorded figures were taken
    # (raysearch now leaves the CSV and JSON ones on: about 0.1 s on a 4-trial sweep, within the noise).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)  # no result.json: by design
    tmp = tempfile.mkdtemp(prefix="raysearch-bench-")
    imports = fresh_imports()
    spec = load_spec(SPEC, TINY)
    data = []
    for _ in range(3):
        with _bench.Timer() as t:
            load_task(spec.data, spec.selection, spec.classes()[0], spec.train.seed)
        data.append(t.s)
    with _bench.Timer() as t_init:
        init_ray(num_cpus=2)
    out: dict = {"ray_init_s": t_init.s, "fresh_imports_s": imports, "load_task_s": data,
                 "tune_noop_trial_s": [], "torchtrainer_noop_fit_s": []}
    for i in range(repeats):
        with _bench.Timer() as t:
            tune.Tuner(noop_trial, tune_config=tune.TuneConfig(num_samples=1),
                       run_config=tune.RunConfig(name=f"noop{i}", storage_path=tmp, verbose=0)).fit()
        out["tune_noop_trial_s"].append(t.s)
        with _bench.Timer() as t:
            TorchTrainer(noop_train_loop, train_loop_config={"path": os.path.join(tmp, "threads.json")},
                         scaling_config=ray.train.ScalingConfig(num_workers=1),
                         run_config=ray.train.RunConfig(name=f"noop-train{i}", storage_path=tmp)).fit()
        out["torchtrainer_noop_fit_s"].append(t.s)
    with open(os.path.join(tmp, "threads.json")) as f:
        out["worker_threads"] = json.load(f)
    ray.shutdown()
    return out


# Trials in reused Tune processes (the default), a new process per trial, a TorchTrainer per trial.
LAUNCHERS = ("auto", "fresh", "train")


def sweep_part(n_trials: int) -> dict:
    import ray

    from raysearch.config import registry
    from raysearch.config.space import parse_search
    from raysearch.config.spec import load_spec
    from raysearch.data import load_task
    from raysearch.run.ray_setup import init_ray
    from raysearch.run.tuning import run_tune
    from raysearch.store import results
    from raysearch.train.loop import train_class

    spec = load_spec(SPEC, TINY + [f"search.trials={n_trials}", "search.concurrent=1",
                                   "search.scheduler={kind: none}"])
    tmp = tempfile.mkdtemp(prefix="raysearch-bench-")

    with _bench.Timer() as t_init:
        init_ray(num_cpus=2)
    sweeps: dict[str, dict] = {}
    rows_by: dict[str, list[dict]] = {}
    for launcher in LAUNCHERS:  # one after the other on the same Ray
        out = os.path.join(tmp, f"sweep-{launcher}")
        with _bench.Timer() as t_sweep:
            code = run_tune(spec.with_overrides({"train.launcher": launcher}), out, quiet=True)
        assert code == 0, f"run_tune ({launcher}) exited with {code}"
        rows = [r for r in results.read_results(out).to_pylist() if r["kind"] == "tune"]
        rows.sort(key=lambda r: r["optuna_trial"])
        assert len(rows) == n_trials and all(r["status"] == "completed" for r in rows), [r["status"] for r in rows]
        rows_by[launcher] = rows
        sweeps[launcher] = {"sweep_wall_s": t_sweep.s, "per_trial_wall_s": t_sweep.s / n_trials,
                            "rows_train_time_s": [r["train_time_s"] for r in rows],
                            "rows_wall_time_s": [r["wall_time_s"] for r in rows],
                            "rows_host_rss_mb": [r["host_rss_mb"] for r in rows]}
    ray.shutdown()

    # The same configurations, one after another, in this process without Ray.
    keys = [p.key for p in parse_search(spec).space]
    method_cls = registry.method_class(spec.method)
    # A trial runs torch with as many threads as it holds CPUs (train.threads); the plain
    # process does the same, so only the orchestration differs.
    import torch

    torch.set_num_threads(spec.train.worker_threads(spec.train.worker_cpus()))
    plain = []
    for r in rows_by[LAUNCHERS[0]]:
        config = json.loads(r["config_json"])
        trial_spec = spec.with_overrides({k: config[k] for k in keys if k in config})
        with _bench.Timer() as t_total:
            with _bench.Timer() as t_data:
                task = load_task(trial_spec.data, trial_spec.selection, trial_spec.classes()[0], trial_spec.train.seed)
            res = train_class(trial_spec, task, method_cls, "cpu")
        plain.append({"data_s": t_data.s, "train_time_s": res.train_time_s, "total_s": t_total.s,
                      "val_image_auroc": res.metrics.get("val_image_auroc")})
    plain_sum = sum(p["total_s"] for p in plain)
    for s in sweeps.values():
        s["ratio_sweep_over_plain"] = s["sweep_wall_s"] / plain_sum
        s["ratio_with_init_over_plain"] = (s["sweep_wall_s"] + t_init.s) / plain_sum
        s["startup_vs_train_time_s"] = s["per_trial_wall_s"] - _bench.median(s["rows_train_time_s"])
        s["startup_vs_wall_time_s"] = s["per_trial_wall_s"] - _bench.median(s["rows_wall_time_s"])
    return {"trials": n_trials, "ray_init_s": t_init.s, "launchers": sweeps, "plain": plain,
            "plain_sum_s": plain_sum, "torch_threads": torch.get_num_threads()}


def health_child(interval: str, epochs: int) -> None:
    """One run_train in this fresh process with the health-check interval set before Ray starts."""
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = interval
    import ray

    from raysearch.config.spec import load_spec
    from raysearch.run.ray_setup import init_ray
    from raysearch.run.runner import run_train

    spec = load_spec(SPEC, TINY + [f"train.epochs={epochs}", "train.eval_every=1"])
    out = tempfile.mkdtemp(prefix="raysearch-bench-health-")
    with _bench.Timer() as t_init:
        init_ray(num_cpus=2)
    with _bench.Timer() as t_run:
        code, rows = run_train(spec, out, quiet=True)
    ray.shutdown()
    assert code == 0 and rows, f"run_train exited with {code}"
    print("RESULT " + json.dumps({"interval": float(interval), "epochs": epochs, "reports": epochs,
                                  "ray_init_s": t_init.s, "run_train_s": t_run.s,
                                  "train_time_s": rows[0]["train_time_s"], "wall_time_s": rows[0]["wall_time_s"]}))


def health_part(epochs: int) -> dict:
    runs = []
    for interval in ("2.0", "0.2"):
        env = {k: v for k, v in os.environ.items() if k != "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"}
        with _bench.Timer() as t:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--health-child", interval,
                                   "--health-epochs", str(epochs)], capture_output=True, text=True, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"health child {interval} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        r = json.loads(lines[-1][len("RESULT "):])
        r["process_s"] = t.s
        r["orchestration_s"] = r["run_train_s"] - r["wall_time_s"]
        runs.append(r)
    slow, fast = runs
    return {"runs": runs, "saved_s": slow["run_train_s"] - fast["run_train_s"],
            "saved_per_report_s": (slow["run_train_s"] - fast["run_train_s"]) / epochs}


def print_sweep(s: dict) -> None:
    n = s["trials"]
    print(f"sweep: {n} trials x 1 class x 2 epochs (tiny digits distcon), concurrent 1, no scheduler")
    print(f"  Ray start-up (init_ray, once):             {s['ray_init_s']:.1f} s")
    print(f"  plain process, same {n} configs: sum {s['plain_sum_s']:.1f} s "
          f"(data loading median {_bench.median([p['data_s'] for p in s['plain']]):.2f} s, "
          f"train_time_s median {_bench.median([p['train_time_s'] for p in s['plain']]):.2f} s; "
          f"torch with {s['torch_threads']} thread, as in a 1-CPU trial)")
    for launcher, x in s["launchers"].items():
        where = {"auto": "trials in reused Tune processes", "fresh": "a new Tune process per trial",
                 "train": "a TorchTrainer per trial"}[launcher]
        print(f"  train.launcher={launcher} ({where}):")
        print(f"    sweep wall time {x['sweep_wall_s']:.1f} s ({x['per_trial_wall_s']:.1f} s per trial); inside the "
              f"trial: train_time_s median {_bench.median(x['rows_train_time_s']):.2f} s, wall_time_s median "
              f"{_bench.median(x['rows_wall_time_s']):.2f} s")
        print(f"    sweep / plain: {x['ratio_sweep_over_plain']:.1f}x (with Ray start-up: "
              f"{x['ratio_with_init_over_plain']:.1f}x); per-trial start-up {x['startup_vs_train_time_s']:.1f} s "
              f"over train_time_s, {x['startup_vs_wall_time_s']:.1f} s over wall_time_s")
        print("    training process RSS after each trial (MiB): "
              + ", ".join(f"{v:.0f}" for v in x["rows_host_rss_mb"]))


def print_breakdown(b: dict) -> None:
    imp = b["fresh_imports_s"]
    print("where a trial's start-up goes (measured one at a time on a local Ray of 2 CPUs):")
    print(f"  Ray start-up (init_ray, once per sweep):   {b['ray_init_s']:.1f} s")
    print(f"  no-op Tune trial (Tuner.fit, 1 sample):    {_bench.spread(b['tune_noop_trial_s'])} s")
    print(f"  no-op TorchTrainer.fit (1 worker):         {_bench.spread(b['torchtrainer_noop_fit_s'])} s")
    print(f"  fresh-process imports: torch {imp['torch']:.2f} s, ray.train.torch {imp['ray_train']:.2f} s, "
          f"raysearch {imp['raysearch']:.2f} s")
    print(f"  data loading (load_task, tiny digits class): first call in the process {b['load_task_s'][0]:.2f} s "
          f"(as in a fresh worker), then {_bench.median(b['load_task_s'][1:]):.3f} s (cached)")
    print(f"  threads in a 1-CPU Train worker: {b.get('worker_threads')}")


def print_health(h: dict) -> None:
    print("health-check interval, one run_train (1 class, 6 epochs, a report every epoch), separate processes:")
    for r in h["runs"]:
        print(f"  RAY_TRAIN_HEALTH_CHECK_INTERVAL_S={r['interval']}: run_train {r['run_train_s']:.1f} s "
              f"(class wall_time_s {r['wall_time_s']:.1f} s, train_time_s {r['train_time_s']:.1f} s, "
              f"orchestration {r['orchestration_s']:.1f} s; Ray start-up {r['ray_init_s']:.1f} s; "
              f"process {r['process_s']:.1f} s)")
    print(f"  2.0 -> 0.2 saves {h['saved_s']:.1f} s per run, {h['saved_per_report_s']:.2f} s per report")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("sweep", "breakdown", "health", "all"), default="all")
    ap.add_argument("--repeats", type=int, default=2, help="no-op trials / trainers in the breakdown")
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--health-epochs", type=int, default=6)
    ap.add_argument("--health-child", metavar="INTERVAL", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.health_child:
        health_child(args.health_child, args.health_epochs)
        return

    print(_bench.machine_line(_bench.machine()), flush=True)
    path = os.path.join(_bench.RESULTS, "orchestration.json")
    payload: dict = {}
    if os.path.exists(path):  # keep the other part's figures when one part is rerun
        with open(path) as f:
            old = json.load(f)
        payload = {k: old[k] for k in ("sweep", "breakdown", "health") if k in old}
    parts = {"sweep": (lambda: sweep_part(args.trials), print_sweep),
             "breakdown": (lambda: breakdown_part(args.repeats), print_breakdown),
             "health": (lambda: health_part(args.health_epochs), print_health)}
    for name, (run, show) in parts.items():
        if args.part not in (name, "all"):
            continue
        before = _bench.machine()  # date and load when the part started
        payload[name] = run()
        payload[name]["date"] = before["date"]
        payload[name]["load_avg_1m"] = [before.get("load_avg_1m"), _bench.machine().get("load_avg_1m")]
        show(payload[name])
    _bench.save("orchestration", payload)
    print(f"wrote {os.path.relpath(path, _bench.REPO)}")


if __name__ == "__main__":
    main()
