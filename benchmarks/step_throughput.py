"""Training-step throughput through raysearch's loop vs a bare PyTorch loop.

For each method (distcon, cutswap, clflow) with its demo config (small_cnn; 32 px for
distcon, 64 px for cutswap and clflow) and synthetic uint8 images on the CPU:

* raysearch: :func:`raysearch.train.loop.train_class` on a synthetic ``OneClassTask``, the
  exact loop every Ray Train worker runs (learning-rate schedule, autocast context,
  per-step index sharding, loss-term bookkeeping, one device sync per epoch);
* bare: a hand-written ``for`` loop over the same model, batch size, optimizer and
  method loss (``Method.training_step`` + backward + ``optimizer.step``) that follows
  the same numerical path (seeds, batch order, cosine learning rate) and nothing else.
  Both loops must reach the same last-epoch loss; the script prints whether they do.

An epoch's step time is measured in both from the start of the epoch's first step to
the end of its last (``on_epoch_end`` and evaluation excluded; in ``train_class`` the
boundaries are taken from a subclass that timestamps ``on_epoch_end``). The first epoch
of every run is a warm-up and is dropped; runs of the two loops alternate (and swap
order every repeat) so that a change in machine load hits both. The figure is the
median epoch; the ratio is raysearch images/s over bare images/s (goal >= 0.95).
Each epoch is timed twice: wall clock, and CPU time of this process
(``time.process_time``). With one torch thread the CPU time is the work done, and it
is far less disturbed than the wall clock when other jobs share the cores (on a GPU the
CPU time means nothing; read the wall clock there).

torch runs with one intra-op thread by default, as in a Ray Train worker that holds one
CPU (Ray sets OMP_NUM_THREADS to the worker's CPUs); on a shared 2-core machine two
threads also suffer badly from oversubscription. ``--device cuda`` and ``--set``
overrides give the paper-scale GPU figures (both loops then use bf16 autocast under
``train.precision: auto``, and each epoch ends with a device sync).

Speed options (``--compile off on``, ``--layouts nchw channels_last``): every
combination runs both loops with the same ``train.compile`` / ``train.channels_last``
(the bare loop compiles its model and converts its batches the same way), so each row is
still raysearch against bare for one setting, and the rows compare the settings with
each other. ``--shared N`` then runs N processes of the raysearch loop at once on the
same device, each capped at ``torch.cuda.set_per_process_memory_fraction(1 / N)`` on a
GPU, against one process alone; the figure is their summed images/s over the alone
figure. Besides images/s every row gives views/s: the images the network's forward sees
per second (distcon: 2 augmented views x 4 rotations of every image).

This script imports torch, numpy, pyarrow, scikit-learn and pyyaml through raysearch's
loop, never Ray or Optuna (the machine line reads their versions from the installed
package metadata).

Run:  python benchmarks/step_throughput.py [--repeats 3 --epochs 4 --images 256 --threads 1]
      python benchmarks/step_throughput.py --methods distcon --device cuda --tag gpu \\
          --compile off on --layouts nchw channels_last --shared 4 --images 10240 \\
          --set params.backbone.name=resnet18 train.batch_size=128 train.precision=bf16
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import time

import _bench
import torch

from raysearch.config import registry
from raysearch.config.spec import load_spec
from raysearch.data.base import OneClassTask, Split
from raysearch.methods.base import DataInfo
from raysearch.train.loop import seed_everything, train_class

METHODS = ("distcon", "cutswap", "clflow")
LAYOUTS = {"nchw": False, "channels_last": True}  # --layouts: name -> train.channels_last
Epoch = tuple[float, float]  # (wall seconds, CPU seconds of this process) of one epoch's steps


def synthetic_task(n_train: int, size: int, with_masks: bool, seed: int = 0) -> OneClassTask:
    """Random uint8 images: ``n_train`` normals, 16 validation and 16 test images (half anomalous)."""
    g = torch.Generator().manual_seed(seed)

    def images(n: int) -> torch.Tensor:
        return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)

    def split(n: int) -> Split:
        labels = torch.arange(n) % 2
        masks = None
        if with_masks:
            masks = torch.zeros(n, size, size, dtype=torch.uint8)
            masks[labels == 1, size // 4 : size // 2, size // 4 : size // 2] = 1
        return Split(images(n), labels, masks)

    return OneClassTask("synthetic", "0", images(n_train), split(16), split(16))


def timed_method(method_cls: type, marks: list[tuple[str, float, float]]) -> type:
    """``method_cls`` with ``on_epoch_end`` bracketed by timestamps."""

    class Timed(method_cls):  # type: ignore[misc, valid-type]
        def on_epoch_end(self, model, train_images, epoch):
            marks.append(("start", time.perf_counter(), time.process_time()))
            super().on_epoch_end(model, train_images, epoch)
            marks.append(("end", time.perf_counter(), time.process_time()))

    Timed.__name__ = f"Timed{method_cls.__name__}"
    return Timed


def raysearch_epochs(spec, task: OneClassTask, method_cls: type, device: str) -> tuple[list[Epoch], float]:
    """(wall s, CPU s) of epochs 2..E of one ``train_class`` run, and its last-epoch mean loss."""
    marks: list[tuple[str, float, float]] = []
    torch.compiler.reset()  # a new model per run: no stale graphs, no recompile limit reached
    result = train_class(spec, task, timed_method(method_cls, marks), device)
    starts = [(w, c) for k, w, c in marks if k == "start"]
    ends = [(w, c) for k, w, c in marks if k == "end"]
    # epoch e's steps run between the end of on_epoch_end(e-1) and the start of on_epoch_end(e)
    return [(starts[e][0] - ends[e - 1][0], starts[e][1] - ends[e - 1][1]) for e in range(1, len(starts))], \
        result.final_loss


def bare_epochs(spec, task: OneClassTask, method_cls: type, device: str) -> tuple[list[Epoch], float]:
    """Step seconds of epochs 2..E of a hand-written loop over the same model and loss.

    It follows the same numerical path as ``train_class`` (seeds, batch order, cosine
    learning rate), so that both loops do identical work and reach the same losses;
    what it leaves out is the loop's machinery.
    """
    t = spec.train
    seed_everything(t.seed)
    dev = torch.device(device)
    images = task.train.to(dev)
    info = DataInfo(channels=3, image_size=int(images.shape[-1]), num_train=len(images),
                    has_masks=task.test.masks is not None)
    method = method_cls(spec.params, info, dev, seed=t.seed)
    # bf16 autocast under the same rule as the raysearch loop (train.precision; auto = bf16 on GPU)
    bf16 = t.precision == "bf16" or (t.precision == "auto" and dev.type == "cuda")
    model = method.build()
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = list(method.trainable_parameters(model))
    if t.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    else:
        opt = (torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam)(params, lr=t.lr, weight_decay=t.weight_decay)
    torch.compiler.reset()
    step_model = torch.compile(model, backend=t.compile_backend) if t.compile else model
    order = torch.Generator().manual_seed(t.seed)
    steps = len(images) // t.batch_size
    total, warmup = steps * t.epochs, t.warmup_epochs * steps
    times, step = [], 0
    for epoch in range(t.epochs):
        start, cpu = time.perf_counter(), time.process_time()
        model.train()
        perm = torch.randperm(len(images), generator=order).to(dev)
        loss_sum = torch.zeros((), device=dev)
        for s in range(steps):
            factor = (step + 1) / warmup if step < warmup else \
                0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
            for group in opt.param_groups:
                group["lr"] = t.lr * factor
            batch = images[perm[s * t.batch_size : (s + 1) * t.batch_size]]
            if t.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16):
                loss = method.training_step(step_model, batch, epoch)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += loss.detach()
        last_loss = float(loss_sum) / steps  # the same single sync per epoch as the raysearch loop
        times.append((time.perf_counter() - start, time.process_time() - cpu))
        method.on_epoch_end(model, images, epoch)
    return times[1:], last_loss


def setup(name: str, epochs: int, n_images: int, overrides: tuple[str, ...] = ()):
    """The demo spec of ``name`` with ``overrides``, a synthetic task of whole batches, the method class."""
    base = load_spec(os.path.join(_bench.DEMO, f"{name}.yaml"))
    spec = load_spec(os.path.join(_bench.DEMO, f"{name}.yaml"), [
        *overrides, f"train.epochs={epochs}", f"train.eval_every={epochs}", "train.checkpoint=false",
    ])
    batch = spec.train.batch_size
    n_train = max(batch, n_images // batch * batch)
    task = synthetic_task(n_train, spec.data.image_size, with_masks=base.data.dataset != "digits")
    return spec, task, registry.method_class(name)


def views_per_image(spec, task: OneClassTask, method_cls: type, device: str) -> float:
    """Rows through the network's forward per training image in one step (distcon: 2 views x R rotations)."""
    dev = torch.device(device)
    info = DataInfo(channels=3, image_size=spec.data.image_size, num_train=len(task.train),
                    has_masks=task.test.masks is not None)
    method = method_cls(spec.params, info, dev, seed=spec.train.seed)
    model = method.build()
    rows: list[int] = []
    hook = model.register_forward_pre_hook(lambda _m, args: rows.append(int(args[0].shape[0]) if args else 0))
    batch = task.train[: spec.train.batch_size].to(dev)
    method.training_step(model, batch, 0)
    hook.remove()
    return sum(rows) / len(batch)


def bench_method(name: str, repeats: int, epochs: int, n_images: int, device: str = "cpu",
                 overrides: tuple[str, ...] = ()) -> dict:
    spec, task, method_cls = setup(name, epochs, n_images, overrides)
    size, batch, n_train = spec.data.image_size, spec.train.batch_size, len(task.train)

    warm = spec.with_overrides({"train.epochs": 2, "train.eval_every": 2})
    raysearch_epochs(warm, task, method_cls, device)
    bare_epochs(warm, task, method_cls, device)

    ours: list[float] = []
    bare: list[float] = []
    losses: list[tuple[float, float]] = []  # (raysearch, bare) last-epoch loss of each repeat
    for r in range(repeats):  # alternate loops and their order, so that load changes hit both
        if r % 2 == 0:
            o, lo = raysearch_epochs(spec, task, method_cls, device)
            b, lb = bare_epochs(spec, task, method_cls, device)
        else:
            b, lb = bare_epochs(spec, task, method_cls, device)
            o, lo = raysearch_epochs(spec, task, method_cls, device)
        ours, bare = ours + o, bare + b
        losses.append((lo, lb))
    ours_wall, ours_cpu = [w for w, _ in ours], [c for _, c in ours]
    bare_wall, bare_cpu = [w for w, _ in bare], [c for _, c in bare]
    ours_ips = n_train / _bench.median(ours_wall)
    bare_ips = n_train / _bench.median(bare_wall)
    views = views_per_image(spec, task, method_cls, device)
    return {
        "method": name, "device": device, "precision": spec.train.precision, "overrides": list(overrides),
        "compile": spec.train.compile, "compile_backend": spec.train.compile_backend,
        "channels_last": spec.train.channels_last, "views_per_image": views,
        "raysearch_views_s": views * ours_ips, "bare_views_s": views * bare_ips,
        "backbone": spec.params.backbone.name, "image_size": size, "batch_size": batch, "images_per_epoch": n_train,
        "steps_per_epoch": n_train // batch, "epochs_measured": len(ours),
        "raysearch_epoch_s": ours_wall, "bare_epoch_s": bare_wall,
        "raysearch_epoch_cpu_s": ours_cpu, "bare_epoch_cpu_s": bare_cpu,
        "raysearch_img_s": ours_ips, "bare_img_s": bare_ips, "ratio": ours_ips / bare_ips,
        "raysearch_img_cpu_s": n_train / _bench.median(ours_cpu), "bare_img_cpu_s": n_train / _bench.median(bare_cpu),
        "cpu_ratio": _bench.median(bare_cpu) / _bench.median(ours_cpu),
        "losses": losses, "same_losses": all(math.isclose(a, b, rel_tol=1e-5) for a, b in losses),
    }


def _shared_worker(name: str, epochs: int, n_images: int, device: str, overrides: tuple[str, ...],
                   fraction: float, threads: int, barrier, results) -> None:
    """One of ``--shared`` processes: warm up, wait for the others, then time one raysearch run."""
    torch.set_num_threads(threads)
    if fraction < 1.0 and torch.device(device).type == "cuda":
        torch.cuda.set_per_process_memory_fraction(fraction, torch.device(device))
    spec, task, method_cls = setup(name, epochs, n_images, overrides)
    raysearch_epochs(spec.with_overrides({"train.epochs": 2, "train.eval_every": 2}), task, method_cls, device)
    barrier.wait()
    times, _ = raysearch_epochs(spec, task, method_cls, device)
    results.put(len(task.train) / _bench.median([w for w, _ in times]))


def shared_throughput(name: str, processes: int, epochs: int, n_images: int, device: str,
                      overrides: tuple[str, ...], threads: int) -> float:
    """Summed images/s of ``processes`` raysearch loops started together on one device."""
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    fraction = 1.0 if processes == 1 else 1.0 / processes
    procs = [ctx.Process(target=_shared_worker, args=(name, epochs, n_images, device, overrides, fraction,
                                                     threads, barrier, results)) for _ in range(processes)]
    for p in procs:
        p.start()
    rates = [results.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"a --shared process exited with {p.exitcode}")
    return sum(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs of each loop (alternating)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is a warm-up")
    ap.add_argument("--images", type=int, default=256, help="synthetic training images per epoch")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1 = what a Ray Train worker with 1 CPU gets)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the paper-scale figures need cuda)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="spec overrides, e.g. params.backbone.name=resnet18 train.precision=fp32")
    ap.add_argument("--tag", default="", help="suffix of the results file (keeps GPU figures apart)")
    ap.add_argument("--compile", nargs="+", default=["off"], choices=["off", "on"],
                    help="train.compile settings to run (both loops compile alike)")
    ap.add_argument("--compile-backend", default="inductor", help="train.compile_backend when compiling")
    ap.add_argument("--layouts", nargs="+", default=["nchw"], choices=list(LAYOUTS),
                    help="memory formats to run (train.channels_last)")
    ap.add_argument("--shared", type=int, default=0, metavar="N",
                    help="also run N raysearch loops at once on the device (GPU memory fraction 1/N each) "
                         "against one alone, for every setting")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = [(c, layout) for c in args.compile for layout in args.layouts]
    speed_run = variants != [("off", "nchw")] or args.shared > 0

    info = _bench.machine()
    print(_bench.machine_line(info))
    print(f"step throughput, {args.device}, {args.threads} torch thread(s), demo configs"
          + (f" with {' '.join(args.set)}" if args.set else "") + f", {args.repeats} runs x {args.epochs - 1} "
          f"measured epochs per loop, {args.images} synthetic images per epoch")
    rows = []
    for name, (compiled, layout) in ((n, v) for n in args.methods for v in variants):
        overrides = (*args.set, f"train.compile={'true' if compiled == 'on' else 'false'}",
                     f"train.compile_backend={args.compile_backend}", f"train.channels_last={str(LAYOUTS[layout]).lower()}")
        before = _bench.machine()
        r = bench_method(name, args.repeats, args.epochs, args.images, args.device, overrides)
        r["date"], r["threads"] = before["date"], args.threads
        r["load_avg_1m"] = [before.get("load_avg_1m"), _bench.machine().get("load_avg_1m")]
        setting = f"compile {compiled}{f' ({args.compile_backend})' if compiled == 'on' else ''}, {layout}"
        r["setting"] = setting
        if args.shared > 0:
            alone = shared_throughput(name, 1, args.epochs, args.images, args.device, overrides, args.threads)
            together = shared_throughput(name, args.shared, args.epochs, args.images, args.device, overrides,
                                         args.threads)
            r.update(shared_processes=args.shared, alone_img_s=alone, shared_img_s=together,
                     shared_ratio=together / alone)
        rows.append(r)
        print(f"{name:8s} [{setting}] {r['backbone']} {r['precision']} {r['image_size']:3d}px batch {r['batch_size']:3d}: "
              f"raysearch {r['raysearch_img_s']:7.1f} img/s = {r['raysearch_views_s']:.0f} views/s "
              f"(epoch s {_bench.spread(r['raysearch_epoch_s'])}), bare {r['bare_img_s']:7.1f} img/s "
              f"(epoch s {_bench.spread(r['bare_epoch_s'])}), ratio {r['ratio']:.3f}; per CPU-second: raysearch "
              f"{r['raysearch_img_cpu_s']:.1f}, bare {r['bare_img_cpu_s']:.1f} img/s, ratio {r['cpu_ratio']:.3f}; "
              "same losses in both loops: "
              f"{'yes' if r['same_losses'] else 'no'} ({r['losses'][0][0]:.6f} vs {r['losses'][0][1]:.6f})", flush=True)
        if args.shared > 0:
            print(f"{'':8s} [{setting}] {args.shared} processes on one {args.device} device: {r['shared_img_s']:.1f} img/s "
                  f"together, {r['alone_img_s']:.1f} img/s alone, ratio {r['shared_ratio']:.2f} (goal >= 2.5)", flush=True)
    worst = min(r["ratio"] for r in rows)
    worst_cpu = min(r["cpu_ratio"] for r in rows)
    print(f"lowest ratio raysearch/bare: wall clock {worst:.3f}, CPU time {worst_cpu:.3f} "
          f"(goal >= 0.95: wall {'met' if worst >= 0.95 else 'not met'}, CPU {'met' if worst_cpu >= 0.95 else 'not met'})")
    # Runs with speed options or --shared go to their own file: step_throughput.json keeps
    # the plain rows that BENCHMARKS.md's section 1 is built from.
    result_name = "step_throughput" + ("_speed" if speed_run else "") + (f"_{args.tag}" if args.tag else "")
    path = os.path.join(_bench.RESULTS, f"{result_name}.json")
    if os.path.exists(path) and not speed_run:  # keep the figures of methods measured in another run
        with open(path) as f:
            kept = [r for r in json.load(f).get("rows", []) if r["method"] not in args.methods]
        rows = sorted(kept + rows, key=lambda r: METHODS.index(r["method"]))
    for r in rows:
        r.setdefault("date", info["date"])
        r.setdefault("threads", args.threads)
    _bench.save(result_name, {"args": vars(args), "rows": rows, "min_ratio": min(r["ratio"] for r in rows),
                              "min_cpu_ratio": min(r.get("cpu_ratio", float("nan")) for r in rows)})
    print(f"wrote {os.path.relpath(path, _bench.REPO)}")


if __name__ == "__main__":
    main()
