"""Evaluation cost: a validation pass next to a training epoch, before and after, and a bare FastFlow loop.

Settings (``--settings``): the three demo specs as they are (toy-mvtec or digits,
small CNNs, 32-64 px), and ``peer``: clflow ``mode: plain_fastflow`` (FastFlow itself)
with a randomly initialised ResNet-18 at 128 px, batch 16, on a toy-mvtec texture of 110
training normals with a validation split of 20 held-out normals + 40 anomalies of each
of the 7 synthetic families (300 images, 3.3x the 90 training images, as MVTec AD's
~250 training images against 20 + 100 per family), the shape of anomalib's Fastflow
example scaled to a 2-core CPU.

Parts (``--parts``):

* ``breakdown``: one training epoch (the second of a ``train_class`` run, from
  ``on_epoch_end`` to ``on_epoch_end``) and one validation pass of the trained model,
  split into ``fit_scorer``, scoring, image metrics, pixel AUROC and AUPRO, per image.
  *before*: every metric exact (``raysearch.metrics.evaluate``, the pixel AUROC and AUPRO
  sharing one sort of the normal pixels on the host), as every evaluation computed
  them; *after*: the per-evaluation path (``raysearch.fast_metrics``: pixel AUROC from
  histograms on the device, AUPRO only when the selection metric or a search objective
  reads it). At each ``--threads`` count (a Ray worker ran one thread before
  ``train.threads``; it now runs as many as it holds CPUs).
* ``every``: ``train_class`` wall time with an evaluation every epoch against one
  evaluation at the end, *before* (the loop as it was: exact metrics at every
  evaluation, and the final pass scoring the validation split again) and *after*.
* ``bare``: ``plain_fastflow`` through ``train_class`` (one evaluation, at the end) against
  a bare PyTorch loop of the same model (the method's ``CLFlowNet`` and
  ``training_step``, Adam, the same batches and learning rate) that then scores the test
  split once and computes its exact metrics, both at the last ``--threads`` count; and
  once the loop as it was, on one thread.

Times are medians over ``--repeats``; the runs of the variants alternate so that a
change in machine load hits all of them. The figures go to
``benchmarks/results/eval_cost.json``.

Run:  python benchmarks/eval_cost.py [--settings clflow cutswap distcon peer] [--threads 1 2]
          [--parts breakdown every bare] [--repeats 2] [--epochs 5]
"""

from __future__ import annotations

import argparse
import os
import time

import _bench
import torch

from raysearch.config import registry
from raysearch.config.spec import load_spec
from raysearch.data import load_task
from raysearch.fast_metrics import binned_pixel_auroc
from raysearch.methods.base import DataInfo
from raysearch.metrics import aupro, evaluate, family_aurocs, pixel_auroc
from raysearch.train import loop
from raysearch.train.loop import _lr_factor, aupro_each_evaluation, seed_everything, train_class

PEER_TOY = {"size": 128, "n_train": 110, "n_test_good": 12, "n_test_defect": 8, "categories": ("stripes",)}
PEER = [
    "data.dataset=folder", "data.classes=[stripes]", "data.image_size=128",
    "params.mode=plain_fastflow", "params.backbone.name=resnet18", "params.backbone.weights=random",
    "params.flow.steps=8", "params.score.batch_size=16",
    "selection.min_anomalies=40", "train.batch_size=16", "search=null", "ablations=null",
]


def peer_root() -> str:
    """The peer setting's toy textures in the MVTec layout, generated once into the temp folder."""
    import tempfile

    from raysearch.data.toy import make_toy_mvtec

    return _bench.generated(os.path.join(tempfile.gettempdir(), "raysearch-bench-toy-peer"), PEER_TOY,
                            lambda root: make_toy_mvtec(root, seed=11, **PEER_TOY))


def setting(name: str, epochs: int, extra: tuple[str, ...] = ()):
    """(spec, task, method class) of a setting with ``epochs`` and no checkpoints."""
    common = [f"train.epochs={epochs}", "train.checkpoint=false", *extra]
    if name == "peer":
        spec = load_spec(os.path.join(_bench.DEMO, "clflow.yaml"), [*PEER, f"data.root={peer_root()}", *common])
    else:
        spec = load_spec(os.path.join(_bench.DEMO, f"{name}.yaml"), common)
    task = load_task(spec.data, spec.selection, spec.classes()[0], spec.train.seed)
    return spec, task, registry.method_class(spec.method)


def instrumented(method_cls: type, marks: list[float], captured: dict) -> type:
    """``method_cls`` timestamping the end of every ``on_epoch_end`` and keeping the method
    and model of the last ``fit_scorer`` call."""

    class Instrumented(method_cls):  # type: ignore[misc, valid-type]
        def on_epoch_end(self, model, train_images, epoch):
            super().on_epoch_end(model, train_images, epoch)
            marks.append(time.perf_counter())

        def fit_scorer(self, model, train_images):
            captured.update(method=self, model=model)
            super().fit_scorer(model, train_images)

    return Instrumented


def timed(fn, repeats: int):
    """(median seconds, last result) of ``fn()`` over ``repeats`` calls."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return _bench.median(times), out


def breakdown(name: str, threads: int, repeats: int) -> dict:
    """One training epoch and one validation pass split into its parts, before and after."""
    torch.set_num_threads(threads)
    spec, task, method_cls = setting(name, 2, ("train.eval_every=2",))
    marks: list[float] = []
    captured: dict = {}
    train_class(spec, task, instrumented(method_cls, marks, captured), "cpu")
    epoch_s = marks[1] - marks[0]
    method, model, val = captured["method"], captured["model"], task.val
    n = len(val.labels)
    fit_s, _ = timed(lambda: method.fit_scorer(model, task.train), repeats)
    score_s, scores = timed(lambda: method.score_batched(model, val.images, spec.train.batch_size), repeats)
    image = scores.image.float().cpu().numpy()
    labels = val.labels.numpy()

    def image_metrics():
        out = evaluate(labels, image)
        if val.family is not None:
            out.update(family_aurocs(val.family.numpy(), image, val.family_names))
        return out

    image_s, _ = timed(image_metrics, repeats)
    row = {"setting": name, "threads": threads, "val_images": n, "train_images": len(task.train),
           "epoch_s": epoch_s, "fit_scorer_s": fit_s, "score_s": score_s, "image_metrics_s": image_s,
           "aupro_each_evaluation": aupro_each_evaluation(spec)}
    pixel_before = aupro_before = pixel_after = aupro_after = 0.0
    if val.masks is not None and scores.maps is not None:
        masks_np, maps_np = val.masks.numpy(), scores.maps.float().numpy()
        both_s, _ = timed(lambda: evaluate(labels, image, masks_np, maps_np), repeats)
        exact_s, exact = timed(lambda: pixel_auroc(masks_np, maps_np), repeats)
        pixel_before = exact_s
        aupro_before = max(0.0, both_s - image_s - exact_s)  # evaluate shares one sort between the two
        pixel_after, binned = timed(lambda: binned_pixel_auroc(val.masks, scores.maps), repeats)
        aupro_exact_s, _ = timed(lambda: aupro(masks_np, maps_np), 1)
        aupro_after = aupro_exact_s if row["aupro_each_evaluation"] else 0.0
        row.update(pixel_auroc_exact=exact, pixel_auroc_binned=binned.value, binned_bound=binned.bound,
                   binned_error=abs(binned.value - exact), aupro_when_read_s=aupro_exact_s,
                   pixels=int(val.masks.numel()))
    row.update(pixel_auroc_before_s=pixel_before, aupro_before_s=aupro_before, pixel_auroc_after_s=pixel_after,
               aupro_after_s=aupro_after)
    common = fit_s + score_s + image_s
    row["eval_before_s"] = common + pixel_before + aupro_before
    row["eval_after_s"] = common + pixel_after + aupro_after
    row["eval_over_epoch_before"] = row["eval_before_s"] / epoch_s
    row["eval_over_epoch_after"] = row["eval_after_s"] / epoch_s
    return row


def as_before(monkeypatch_target=loop):
    """Patch the loop back to what it did before: exact metrics at every evaluation and no
    reuse of the last evaluation's scores in the final pass. Returns the undo function."""
    real = monkeypatch_target._evaluate_split

    def exact(method, model, split, prefix, batch_size, keep=None, **_ignored):
        return real(method, model, split, prefix, batch_size, keep)

    monkeypatch_target._evaluate_split = exact
    return lambda: setattr(monkeypatch_target, "_evaluate_split", real)


def every_vs_end(name: str, epochs: int, threads: int, repeats: int) -> dict:
    """train_class wall time with an evaluation every epoch and only at the end, before and after."""
    torch.set_num_threads(threads)
    walls: dict[str, list[float]] = {}
    for r in range(repeats):
        variants = [(v, e) for v in ("before", "after") for e in ("every", "end")]
        for version, when in variants if r % 2 == 0 else variants[::-1]:
            spec, task, method_cls = setting(name, epochs, (f"train.eval_every={1 if when == 'every' else epochs}",))
            undo = as_before() if version == "before" else (lambda: None)
            try:
                start = time.perf_counter()
                train_class(spec, task, method_cls, "cpu")
                walls.setdefault(f"{version}_{when}", []).append(time.perf_counter() - start)
            finally:
                undo()
    out = {"setting": name, "epochs": epochs, "threads": threads,
           **{f"{k}_s": _bench.median(v) for k, v in walls.items()}, "walls": walls}
    for version in ("before", "after"):
        out[f"{version}_every_over_end"] = out[f"{version}_every_s"] / out[f"{version}_end_s"]
    return out


def bare_fastflow(spec, task, method_cls) -> tuple[float, dict]:
    """A bare PyTorch loop of the same model and budget: train, then score the test split once.

    Returns (last epoch's mean loss, exact test metrics)."""
    t = spec.train
    seed_everything(t.seed)
    dev = torch.device("cpu")
    info = DataInfo(channels=3, image_size=int(task.train.shape[-1]), num_train=len(task.train), has_masks=True)
    method = method_cls(spec.params, info, dev, seed=t.seed)
    model = method.build()
    opt = torch.optim.Adam(list(method.trainable_parameters(model)), lr=t.lr, weight_decay=t.weight_decay)
    order = torch.Generator().manual_seed(t.seed)
    steps = len(task.train) // t.batch_size
    step, loss_sum = 0, torch.zeros(())
    for epoch in range(t.epochs):
        model.train()
        perm = torch.randperm(len(task.train), generator=order)
        loss_sum = torch.zeros(())
        for s in range(steps):
            for group in opt.param_groups:
                group["lr"] = t.lr * _lr_factor(step, steps * t.epochs, 0)
            loss = method.training_step(model, task.train[perm[s * t.batch_size : (s + 1) * t.batch_size]], epoch)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += loss.detach()
    with torch.no_grad():
        scores = method.score_batched(model, task.test.images, t.batch_size)
    metrics = evaluate(task.test.labels.numpy(), scores.image.numpy(), task.test.masks.numpy(), scores.maps.numpy())
    return float(loss_sum) / steps, metrics


def timing_loop_parts(parts: dict[str, list[float]]):
    """Patch the loop so that every validation and test evaluation and the latency
    measurement record their seconds in ``parts``. Returns the undo function."""
    real_eval, real_latency = loop._evaluate_split, loop._latency_ms

    def evaluate_split(method, model, split, prefix, *args, **kwargs):
        start = time.perf_counter()
        try:
            return real_eval(method, model, split, prefix, *args, **kwargs)
        finally:
            parts.setdefault(prefix.rstrip("_"), []).append(time.perf_counter() - start)

    def latency_ms(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real_latency(*args, **kwargs)
        finally:
            parts.setdefault("latency", []).append(time.perf_counter() - start)

    loop._evaluate_split, loop._latency_ms = evaluate_split, latency_ms

    def undo() -> None:
        loop._evaluate_split, loop._latency_ms = real_eval, real_latency

    return undo


def raysearch_vs_bare(epochs: int, threads: int, repeats: int) -> dict:
    """plain_fastflow through train_class (one evaluation, at the end) against the bare loop."""
    torch.set_num_threads(threads)
    spec, task, method_cls = setting("peer", epochs, (f"train.eval_every={epochs}",))
    walls: dict[str, list[float]] = {"raysearch": [], "bare": []}
    parts: dict[str, list[float]] = {}
    losses: dict[str, float] = {}
    for r in range(repeats):
        for which in ("raysearch", "bare") if r % 2 == 0 else ("bare", "raysearch"):
            start = time.perf_counter()
            if which == "raysearch":
                run_parts: dict[str, list[float]] = {}
                undo = timing_loop_parts(run_parts)
                try:
                    result = train_class(spec, task, method_cls, "cpu")
                finally:
                    undo()
                for k, v in run_parts.items():
                    parts.setdefault(k, []).append(sum(v))
                losses[which], test_auroc = result.final_loss, result.metrics["test_image_auroc"]
            else:
                losses[which], metrics = bare_fastflow(spec, task, method_cls)
                bare_auroc = metrics["image_auroc"]
            walls[which].append(time.perf_counter() - start)
    out = {"epochs": epochs, "threads": threads, "train_images": len(task.train), "val_images": len(task.val.labels),
           "test_images": len(task.test.labels), "walls": walls,
           "raysearch_s": _bench.median(walls["raysearch"]), "bare_s": _bench.median(walls["bare"]),
           # seconds of one raysearch run in its validation passes, test pass and latency measurement
           "raysearch_parts_s": {k: _bench.median(v) for k, v in parts.items()},
           "final_loss": losses, "test_image_auroc": {"raysearch": test_auroc, "bare": bare_auroc}}
    out["ratio"] = out["raysearch_s"] / out["bare_s"]
    # Once, the loop as it was, on one thread as a Ray worker ran it: exact metrics and
    # the validation split scored twice (the evaluation and the final pass).
    torch.set_num_threads(1)
    undo = as_before()
    try:
        start = time.perf_counter()
        train_class(spec, task, method_cls, "cpu")
        out["before_raysearch_1_thread_s"] = time.perf_counter() - start
    finally:
        undo()
        torch.set_num_threads(threads)
    out["before_ratio"] = out["before_raysearch_1_thread_s"] / out["bare_s"]
    # What the bare loop does not do: the leakage-free validation split and the latency row.
    extra = out["raysearch_parts_s"].get("val", 0.0) + out["raysearch_parts_s"].get("latency", 0.0)
    out["ratio_without_validation_and_latency"] = (out["raysearch_s"] - extra) / out["bare_s"]
    return out


def print_breakdown(rows: list[dict]) -> None:
    print("\nEvaluation pass per validation image (ms) and against one training epoch")
    print(f"{'setting':<8} {'thr':>3} {'val':>4} {'train':>5} {'epoch s':>8} {'fit':>6} {'score':>6} {'image':>6} "
          f"{'pixAUROC b/a':>13} {'AUPRO b/a':>11} {'eval s b/a':>13} {'eval/epoch b/a':>15} {'|err|':>8}")
    for r in rows:
        per = 1000.0 / r["val_images"]
        print(f"{r['setting']:<8} {r['threads']:>3} {r['val_images']:>4} {r['train_images']:>5} {r['epoch_s']:>8.2f} "
              f"{r['fit_scorer_s'] * per:>6.2f} {r['score_s'] * per:>6.2f} {r['image_metrics_s'] * per:>6.3f} "
              f"{r['pixel_auroc_before_s'] * per:>6.2f}/{r['pixel_auroc_after_s'] * per:<6.2f} "
              f"{r['aupro_before_s'] * per:>5.2f}/{r['aupro_after_s'] * per:<5.2f} "
              f"{r['eval_before_s']:>6.2f}/{r['eval_after_s']:<6.2f} "
              f"{r['eval_over_epoch_before']:>7.2f}/{r['eval_over_epoch_after']:<7.2f} "
              f"{r.get('binned_error', float('nan')):>8.1e}")


def markdown(payload: dict) -> str:
    """The tables of BENCHMARKS.md's evaluation-cost section from a saved result."""
    lines = ["| setting | threads | val / train images | epoch s | per val image ms: fit, score, image metrics | "
             "pixel AUROC ms/img before / after | AUPRO ms/img before / after | pass s before / after | "
             "pass / epoch before / after | binned - exact |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in payload.get("breakdown", []):
        per = 1000.0 / r["val_images"]
        err = f"{r['binned_error']:.1e} (bound {r['binned_bound']:.1e})" if "binned_error" in r else "-"
        lines.append(f"| {r['setting']} | {r['threads']} | {r['val_images']} / {r['train_images']} | {r['epoch_s']:.2f} | "
                     f"{r['fit_scorer_s'] * per:.2f}, {r['score_s'] * per:.2f}, {r['image_metrics_s'] * per:.3f} | "
                     f"{r['pixel_auroc_before_s'] * per:.2f} / {r['pixel_auroc_after_s'] * per:.2f} | "
                     f"{r['aupro_before_s'] * per:.2f} / {r['aupro_after_s'] * per:.2f} | "
                     f"{r['eval_before_s']:.2f} / {r['eval_after_s']:.2f} | "
                     f"{r['eval_over_epoch_before']:.2f} / {r['eval_over_epoch_after']:.2f} | {err} |")
    if payload.get("every"):
        lines += ["", "| setting | epochs | threads | before: every epoch / at the end | after: every epoch / at the end |",
                  "|---|---|---|---|---|"]
        for e in payload["every"]:
            lines.append(f"| {e['setting']} | {e['epochs']} | {e['threads']} | {e['before_every_s']:.1f} s / "
                         f"{e['before_end_s']:.1f} s = {e['before_every_over_end']:.2f}x | {e['after_every_s']:.1f} s / "
                         f"{e['after_end_s']:.1f} s = {e['after_every_over_end']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true", help="print the saved result's tables for BENCHMARKS.md and stop")
    ap.add_argument("--settings", nargs="+", default=["clflow", "cutswap", "distcon", "peer"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, os.cpu_count() or 1])
    ap.add_argument("--parts", nargs="+", default=["breakdown", "every", "bare"], choices=["breakdown", "every", "bare"])
    ap.add_argument("--every-settings", nargs="+", default=["clflow", "peer"], help="settings of the every part")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5, help="epochs of the every and bare parts (anomalib's Fastflow example: 5)")
    ap.add_argument("--tag", default="", help="suffix of the result file name")
    args = ap.parse_args()
    name = "eval_cost" + (f"_{args.tag}" if args.tag else "")
    if args.markdown:
        import json

        with open(os.path.join(_bench.RESULTS, f"{name}.json")) as f:
            print(markdown(json.load(f)))
        return
    info = _bench.machine()
    print(_bench.machine_line(info))
    payload: dict = {"args": vars(args)}
    if "breakdown" in args.parts:
        rows = [breakdown(s, th, args.repeats) for th in args.threads for s in args.settings]
        payload["breakdown"] = rows
        print_breakdown(rows)
        _bench.save(name, payload)
    threads = args.threads[-1]
    if "every" in args.parts:
        payload["every"] = []
        for s in args.every_settings:
            e = every_vs_end(s, args.epochs, threads, args.repeats)
            payload["every"].append(e)
            print(f"\n{s}: train_class wall, {args.epochs} epochs, {threads} thread(s): every epoch / only at the end")
            for version in ("before", "after"):
                print(f"  {version}: {e[f'{version}_every_s']:.1f} s / {e[f'{version}_end_s']:.1f} s = "
                      f"{e[f'{version}_every_over_end']:.2f}x")
            _bench.save(name, payload)
    if "bare" in args.parts:
        b = raysearch_vs_bare(args.epochs, threads, args.repeats)
        payload["bare"] = b
        print(f"\npeer plain_fastflow, {args.epochs} epochs, {threads} thread(s): raysearch train_class "
              f"{b['raysearch_s']:.1f} s vs bare loop {b['bare_s']:.1f} s = {b['ratio']:.2f}x "
              f"(losses {b['final_loss']['raysearch']:.4f} / {b['final_loss']['bare']:.4f}; test image AUROC "
              f"{b['test_image_auroc']['raysearch']:.3f} / {b['test_image_auroc']['bare']:.3f}; raysearch also "
              f"scores its {b['val_images']} validation images, the bare loop only the {b['test_images']} test images)")
        print("  raysearch's evaluation parts (s): " + ", ".join(f"{k} {v:.1f}" for k, v in b["raysearch_parts_s"].items())
              + f"; without the validation pass and the latency measurement {b['ratio_without_validation_and_latency']:.2f}x")
        print(f"before (the loop as it was, one thread as in a Ray worker): raysearch train_class "
              f"{b['before_raysearch_1_thread_s']:.1f} s = {b['before_ratio']:.2f}x the bare loop on {threads} threads")
        _bench.save(name, payload)
    print(f"wrote benchmarks/results/{name}.json")


if __name__ == "__main__":
    main()
