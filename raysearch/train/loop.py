"""The per-class training loop, free of Ray so that it runs anywhere.

``raysearch.train.worker`` calls :func:`train_class` inside each Ray Train worker (and hands
it a DDP wrapper and a report function); tests and benchmarks call it directly. The
loop owns everything common to the methods: seeding, the optimizer and its schedule,
sharding of the device-resident data between workers, bf16 autocast, NaN detection,
evaluation every ``train.eval_every`` epochs, best-epoch selection on the validation
split (or on test when a spec asks for paper-style selection), and the final test
evaluation of the selected model with a latency measurement.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from raysearch.config.selection import selection_metric
from raysearch.config.spec import Spec
from raysearch.data.base import OneClassTask, Split
from raysearch.fast_metrics import evaluate_fast
from raysearch.methods.base import DataInfo, Method, Scores
from raysearch.metrics import evaluate, family_aurocs
from raysearch.train.progress import progress as run_progress

__all__ = ["ClassResult", "TrainingDiverged", "train_class", "seed_everything", "selection_metric",
           "aupro_each_evaluation"]

ReportFn = Callable[[dict[str, Any], "dict[str, Any] | None"], None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the trial fails with this reason."""


@dataclass
class ClassResult:
    normal_class: str
    metrics: dict[str, float]  # val_* and test_* of the selected epoch
    best_epoch: int
    epochs_run: int
    train_time_s: float
    num_params: int
    latency_ms: float  # per image, scoring alone, after training
    final_loss: float
    facts: dict[str, Any] = field(default_factory=dict)  # method.describe()
    resumed_epoch: int | None = None  # epochs already done when a restarted run resumed this class
    val_counts: tuple[int, int] = (0, 0)  # normal and anomalous images of the validation split
    states: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # best / last (rank 0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _autocast(spec: Spec, device: torch.device) -> contextlib.AbstractContextManager:
    use_bf16 = spec.train.precision == "bf16" or (spec.train.precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _optimizer(spec: Spec, params) -> torch.optim.Optimizer:
    t = spec.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=t.lr, weight_decay=t.weight_decay)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to zero, per optimizer step."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _evaluate_split(method: Method, model: nn.Module, split: Split, prefix: str, batch_size: int,
                    keep: dict[str, np.ndarray] | None = None, *, fast: bool = False, with_aupro: bool = True,
                    scored: dict[str, Scores] | None = None) -> dict[str, float]:
    """Metrics of one split; a split with families gets one image AUROC per family and
    ``image_auroc`` = their unweighted mean. ``keep`` receives the image scores (key
    ``val`` / ``test``) and, where the split has masks, the anomaly maps (``val_maps``).

    ``fast`` (the per-evaluation validation pass): the pixel AUROC is binned on the
    model's device (:func:`raysearch.fast_metrics.evaluate_fast`, within
    ``fast_metrics.DEFAULT_TOL`` of the exact value) and AUPRO is computed only
    ``with_aupro``; otherwise every metric is exact (:func:`raysearch.metrics.evaluate`).
    ``scored`` caches the split's scores by ``prefix``: scores found there are used
    instead of scoring again, and scores computed here are put there.
    """
    scores = None if scored is None else scored.get(prefix)
    if scores is None:
        scores = method.score_batched(model, split.images, batch_size)
        if scored is not None:
            scored[prefix] = scores
    maps = scores.maps if split.masks is not None else None
    image = scores.image.float().cpu().numpy()
    if keep is not None:
        keep[prefix.rstrip("_")] = image
        if maps is not None:
            keep[prefix + "maps"] = maps.float().cpu().numpy()
    labels = split.labels.cpu().numpy()
    if fast:
        out = evaluate_fast(labels, image, masks=None if maps is None else split.masks, maps=maps,
                            prefix=prefix, with_aupro=with_aupro)
    else:
        out = evaluate(
            labels,
            image,
            masks=None if maps is None else split.masks.cpu().numpy(),
            maps=None if maps is None else maps.float().cpu().numpy(),
            prefix=prefix,
        )
    if split.family is not None:
        out.update(family_aurocs(split.family.cpu().numpy(), image, split.family_names, prefix=prefix))
    return out


def aupro_each_evaluation(spec: Spec) -> bool:
    """Whether every validation pass computes AUPRO: only when something reads it there,
    the selection metric or an objective of the spec's search (AUPRO labels every mask's
    regions and sorts every normal pixel on the host). The final evaluation of a class
    always computes it."""
    metric = (spec.search or {}).get("metric") or ()
    wanted = [selection_metric(spec), *([metric] if isinstance(metric, str) else metric)]
    return any(isinstance(m, str) and m.endswith("aupro") for m in wanted)


@torch.no_grad()
def _latency_ms(method: Method, model: nn.Module, images: torch.Tensor, repeats: int = 3) -> float:
    """Per-image scoring latency, timed alone after training (best of ``repeats``)."""
    batch = images[: min(len(images), 32)]
    method.score(model, batch)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if batch.device.type == "cuda":
            torch.cuda.synchronize(batch.device)
        start = time.perf_counter()
        method.score(model, batch)
        if batch.device.type == "cuda":
            torch.cuda.synchronize(batch.device)
        best = min(best, time.perf_counter() - start)
    return 1000.0 * best / len(batch)


def _plain(model: nn.Module) -> nn.Module:
    """The module inside torch.compile's wrapper (``_orig_mod``; torch has no public accessor)
    and DDP's, so that state dicts never carry ``_orig_mod.`` or ``module.`` in their keys."""
    return Method.unwrap(getattr(model, "_orig_mod", model))


def _without_compile_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A model state as the plain module names it (a state saved from a compiled module
    elsewhere carries ``_orig_mod.`` in every key)."""
    state = dict(state)
    torch.nn.modules.utils.consume_prefix_in_state_dict_if_present(state, "_orig_mod.")
    return state


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in _plain(model).state_dict().items()}


def _data_on_device(spec: Spec, images: torch.Tensor, device: torch.device) -> bool:
    """Whether the training images live on the device for the whole run (``train.data_on_device``).

    ``auto``: on a GPU when they take at most ``train.data_on_device_fraction`` of its free
    memory (several trials may share it); elsewhere always (on the CPU they are in memory
    already). Otherwise every step copies its batch from host memory (:func:`_batch`).
    """
    t = spec.train
    if t.data_on_device != "auto":
        return bool(t.data_on_device)
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return images.numel() * images.element_size() <= t.data_on_device_fraction * free


def _batch(images: torch.Tensor, idx: torch.Tensor, device: torch.device, on_device: bool,
           channels_last: bool) -> torch.Tensor:
    """The training images ``idx`` on ``device``; from host memory through a pinned buffer
    (an asynchronous copy) when the images are not on the device."""
    if on_device:
        batch = images[idx]
    else:
        pinned = device.type == "cuda"  # pinned memory needs CUDA; the caching host allocator reuses it
        buf = torch.empty((len(idx), *images.shape[1:]), dtype=images.dtype, pin_memory=pinned)
        batch = torch.index_select(images, 0, idx, out=buf).to(device, non_blocking=pinned)
    if channels_last and batch.dim() == 4:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def _rng_state(method: Method, device: torch.device) -> dict[str, Any]:
    """Every random stream a worker's training may draw from: the method's generator, torch's
    global generators (CPU, and this CUDA device), numpy's and Python's.

    Tensors and plain lists and numbers only: checkpoints load with ``weights_only=True``.
    """
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "method": method.generator.get_state(),
        "torch": torch.get_rng_state(),
        # MT19937: 624 uint32 words (as int64: torch.load has no uint32 arrays) and a position.
        "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached_gaussian)],
        "python": [int(version), list(internal), gauss_next],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _load_rng_state(method: Method, device: torch.device, state: dict[str, Any]) -> None:
    """Restore what :func:`_rng_state` returned."""
    method.generator.set_state(state["method"])
    torch.set_rng_state(state["torch"])
    keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached_gaussian))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _all_rng_states(method: Method, device: torch.device, world: int) -> list[dict[str, Any]]:
    """The random streams of every rank, in rank order (a collective when ``world`` > 1).

    Each rank draws its own augmentations (the method's generator is seeded per rank), so
    a checkpoint that rank 0 writes carries every rank's streams, and each rank restores
    its own: a restored run draws what the uninterrupted one would have drawn.
    """
    own = _rng_state(method, device)
    if world == 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [own]
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, own)
    return gathered


def train_class(
    spec: Spec,
    task: OneClassTask,
    method_cls: type[Method],
    device: torch.device | str = "cpu",
    *,
    rank: int = 0,
    world: int = 1,
    wrap_model: Callable[[nn.Module], nn.Module] | None = None,
    report: ReportFn | None = None,
    resume: dict[str, Any] | None = None,
    class_offset: float = 0.0,
    observe: Callable[[int, dict[str, np.ndarray], dict[str, float]], None] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> ClassResult:
    """Train and evaluate one class of a spec; see the module docstring.

    Args:
        wrap_model: turns the built model into its distributed form (DDP), or None.
        report: called after every evaluation but the last on every rank with the
            metrics and, on rank 0, the resumable state (None elsewhere and when
            checkpoints are off). The caller reports the class's end itself, after it has
            stored the class's result, so that a run stopped at that report loses nothing.
        resume: a state produced by an earlier ``report`` for this class.
        class_offset: classes done before this one, so reports carry the run's progress
            (``class_offset + epochs done / train.epochs``).
        observe: for diagnostics and benchmarks: called on rank 0 after every evaluation
            with the epoch and ``{"val": image scores, "test": image scores}`` (plus
            ``val_maps`` / ``test_maps``, the anomaly maps, for methods and splits that
            have them) and the evaluation's metrics; the test
            split is scored at every evaluation only when it is given. Never selects.
        on_epoch: for live curves: called on this rank once per epoch, after its training
            (and its evaluation, when it has one), with the epoch (1-based) and
            ``{"loss_<term>": this rank's mean over the epoch's steps, ..., "lr": the
            learning rate of its last step}`` plus, on rank 0 after an evaluation, its
            ``val_*`` metrics (the names reports use). A diverged epoch is passed before
            the run fails. Costs one device sync per epoch; reports stay per evaluation.
            :mod:`raysearch.train.worker` passes a TensorBoard writer on rank 0.

    Example:
        >>> result = train_class(spec, load_task(spec.data, spec.selection, "0", 0), DistCon)  # doctest: +SKIP
    """
    device = torch.device(device)
    t = spec.train
    seed_everything(t.seed)
    info = DataInfo(
        channels=int(task.train.shape[1]),
        image_size=int(task.train.shape[-1]),
        num_train=len(task.train),
        has_masks=task.test.masks is not None,
    )
    method = method_cls(spec.params, info, device, seed=t.seed + 7919 * rank)
    model = method.build()
    if t.channels_last:  # 4D weights (convolutions) only; the optimizer sees the same parameters
        model = model.to(memory_format=torch.channels_last)
    num_params = method.count_parameters(model)
    optimizer = _optimizer(spec, list(method.trainable_parameters(model)))
    on_device = _data_on_device(spec, task.train, device)
    train_images = task.train.to(device) if on_device else task.train

    def all_train_images() -> torch.Tensor:
        """The whole training set on the device, for the hooks that take it (a copy for
        the call's duration when the steps stream their batches)."""
        return train_images if on_device else train_images.to(device)

    val = task.val.to(device)
    test = task.test.to(device)
    per_worker = max(1, t.batch_size // world)
    steps_per_epoch = max(1, len(train_images) // (per_worker * world))
    total_steps = steps_per_epoch * t.epochs
    select = selection_metric(spec)
    with_aupro = aupro_each_evaluation(spec)
    # The last evaluation's validation scores: the final pass reuses them when that epoch is the best.
    last_scored: dict[str, Scores] = {}
    order_gen = torch.Generator(device="cpu").manual_seed(t.seed)  # same on every rank

    start_epoch, best_value, best_epoch, best_state, last_loss = 0, -math.inf, -1, None, float("nan")
    if resume is not None:
        Method.unwrap(model).load_state_dict(_without_compile_prefix(resume["model"]))
        optimizer.load_state_dict(resume["optimizer"])
        method.load_extra_state(resume.get("method", {}))
        order_gen.set_state(resume["order_gen"])
        # Checkpoints written before the random streams were saved lack "rng": such a run
        # continues from freshly seeded streams (the same as it always did).
        rngs = resume.get("rng") or []
        if rank < len(rngs):
            _load_rng_state(method, device, rngs[rank])
        start_epoch, best_value, best_epoch = resume["epoch"] + 1, resume["best_value"], resume["best_epoch"]
        best_state = resume["best_state"]
        if best_state is not None:
            best_state = _without_compile_prefix(best_state)
    if wrap_model is not None:
        model = wrap_model(model)
    # The training steps run through the compiled module; scoring and the epoch hooks use
    # ``model`` itself (no recompilation for evaluation shapes); checkpoints hold the plain
    # module's state either way (_cpu_state), so compiled and plain runs resume each other.
    step_model = torch.compile(model, backend=t.compile_backend) if t.compile else model

    started = time.perf_counter()
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, t.epochs):
        model.train()
        perm = torch.randperm(len(train_images), generator=order_gen).to(train_images.device)
        loss_sum, loss_terms = torch.zeros((), device=device), {}
        for s in range(steps_per_epoch):
            idx = perm[s * per_worker * world : (s + 1) * per_worker * world][rank::world]
            for group in optimizer.param_groups:
                group["lr"] = t.lr * _lr_factor(step, total_steps, t.warmup_epochs * steps_per_epoch)
            batch = _batch(train_images, idx, device, on_device, t.channels_last)
            with _autocast(spec, device):
                losses = method.training_step(step_model, batch, epoch)
            loss = losses["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += loss.detach()
            for k, v in losses.items():
                loss_terms[k] = loss_terms.get(k, 0.0) + v.detach()
        last_loss = float(loss_sum) / steps_per_epoch  # one device sync per epoch
        curve: dict[str, float] = {}
        if on_epoch is not None:
            names = list(loss_terms)
            means = torch.stack([loss_terms[k].float() for k in names]).tolist() if names else []  # one sync
            curve = {**{f"loss_{k}": v / steps_per_epoch for k, v in zip(names, means, strict=True)},
                     "lr": optimizer.param_groups[0]["lr"]}
        if not math.isfinite(last_loss):
            if on_epoch is not None:  # a diverged epoch shows in the curves
                on_epoch(epoch + 1, curve)
            raise TrainingDiverged(f"loss became {last_loss} in epoch {epoch + 1} of class {task.normal_class}")
        method.on_epoch_end(model, all_train_images(), epoch)

        last = epoch + 1 == t.epochs
        if (epoch + 1) % t.eval_every and not last:
            if on_epoch is not None:
                on_epoch(epoch + 1, curve)
            continue
        metrics: dict[str, Any] = {f"loss_{k}": float(v) / steps_per_epoch for k, v in loss_terms.items()}
        state = None
        # Every rank's random streams as they are after this epoch's training (rank 0's own
        # are read again below, after its scoring, which may draw from them too).
        rngs = _all_rng_states(method, device, world) if t.checkpoint and world > 1 and not last else []
        if rank == 0:
            method.fit_scorer(model, all_train_images())
            kept: dict[str, np.ndarray] = {}
            metrics.update(_evaluate_split(method, model, val, "val_", t.batch_size, kept, fast=True,
                                           with_aupro=with_aupro, scored=last_scored if last else None))
            if observe is not None:
                metrics.update(_evaluate_split(method, model, test, "test_", t.batch_size, kept))
                observe(epoch + 1, kept, dict(metrics))
            value = metrics.get(select, float("nan"))
            # Ties go to the later epoch: an equal score after more training is no reason
            # to keep the under-trained model.
            if best_state is None or (math.isfinite(value) and not value < best_value):
                best_value, best_epoch, best_state = value, epoch, _cpu_state(model)
            if t.checkpoint:
                state = {
                    "epoch": epoch,
                    "model": _cpu_state(model),
                    "optimizer": copy.deepcopy(optimizer.state_dict()),
                    "method": method.extra_state(),
                    "order_gen": order_gen.get_state(),
                    "rng": [_rng_state(method, device), *rngs[1:]],
                    "best_value": best_value,
                    "best_epoch": best_epoch,
                    "best_state": best_state,
                }
        if on_epoch is not None:  # the evaluation's validation metrics join the epoch's curves
            on_epoch(epoch + 1, {**curve, **{k: v for k, v in metrics.items() if k.startswith("val_")}})
        metrics.update(
            epoch=epoch + 1,
            normal_class=task.normal_class,
            progress=run_progress(class_offset, epoch + 1, t.epochs),
            best_class_value=best_value,
        )
        if report is not None and not last:
            report(metrics, state)

    train_time = time.perf_counter() - started
    metrics = {}
    latency = float("nan")
    states: dict[str, dict[str, torch.Tensor]] = {}
    if rank == 0:
        net = Method.unwrap(model)
        states = {"last": _cpu_state(net), "best": best_state}
        # The best epoch is the last one (always so with one evaluation): the model, its
        # fitted scorer and its validation scores are those of the last evaluation, so
        # the split is not scored twice. Otherwise restore the best state and score again.
        if not (best_epoch == t.epochs - 1 and last_scored):
            last_scored.clear()
            if best_state is not None:
                net.load_state_dict(best_state)
            method.fit_scorer(net, all_train_images())
        metrics.update(_evaluate_split(method, net, val, "val_", t.batch_size, scored=last_scored))
        metrics.update(_evaluate_split(method, net, test, "test_", t.batch_size))
        latency = _latency_ms(method, net, test.images)
    return ClassResult(
        normal_class=task.normal_class,
        metrics=metrics,
        best_epoch=best_epoch + 1,
        epochs_run=t.epochs,
        train_time_s=train_time,
        num_params=num_params,
        latency_ms=latency,
        final_loss=last_loss,
        facts=method.describe(),
        states=states,
        resumed_epoch=start_epoch if resume is not None else None,
        val_counts=(int((task.val.labels == 0).sum()), int((task.val.labels == 1).sum())),
    )
