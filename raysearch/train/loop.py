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


ObserveFn = Callable[[int, dict[str, np.ndarray], dict[str, float]], None]
EpochFn = Callable[[int, dict[str, float]], None]


@dataclass
class _Hooks:
    """What the caller of :func:`train_class` hangs on the loop (see its arguments)."""

    report: ReportFn | None
    observe: ObserveFn | None
    on_epoch: EpochFn | None
    class_offset: float

    def epoch_done(self, epoch: int, values: dict[str, float]) -> None:
        """The epoch's curves (1-based ``epoch``) to ``on_epoch``, when there is one."""
        if self.on_epoch is not None:
            self.on_epoch(epoch, values)


@dataclass
class _ClassRun:
    """One class's training as it goes: what its steps share (method, model, optimizer,
    data on the device) and what they update (step counters, best epoch, last loss)."""

    spec: Spec
    task: OneClassTask
    method: Method
    device: torch.device
    rank: int
    world: int
    model: nn.Module  # DDP's wrapper once wrapped; scoring and the epoch hooks use it
    optimizer: torch.optim.Optimizer
    num_params: int
    on_device: bool  # the training images live on the device; otherwise each step copies its batch
    train_images: torch.Tensor
    val: Split
    test: Split
    per_worker: int  # images of each training step on this rank
    steps_per_epoch: int
    order_gen: torch.Generator  # the order of the training images; the same on every rank
    select: str  # the metric that picks the best epoch
    with_aupro: bool  # every validation pass computes AUPRO (aupro_each_evaluation)
    step_model: nn.Module | None = None  # what the training steps run through (compiled or ``model``)
    start_epoch: int = 0  # epochs done before this process took the class over
    step: int = 0  # optimizer steps done
    best_value: float = -math.inf
    best_epoch: int = -1  # 0-based
    best_state: dict[str, torch.Tensor] | None = None
    last_loss: float = float("nan")
    # The last evaluation's validation scores: the final pass reuses them when that epoch is the best.
    last_scored: dict[str, Scores] = field(default_factory=dict)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.spec.train.epochs

    def all_train_images(self) -> torch.Tensor:
        """The whole training set on the device, for the hooks that take it (a copy for
        the call's duration when the steps stream their batches)."""
        return self.train_images if self.on_device else self.train_images.to(self.device)


def _prepare(spec: Spec, task: OneClassTask, method_cls: type[Method], device: torch.device, rank: int,
             world: int) -> _ClassRun:
    """Seed, build the method, its model and optimizer, and place the data: a class's
    training before its first epoch."""
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
    per_worker = max(1, t.batch_size // world)
    return _ClassRun(
        spec=spec, task=task, method=method, device=device, rank=rank, world=world, model=model,
        optimizer=optimizer, num_params=num_params, on_device=on_device, train_images=train_images,
        val=task.val.to(device), test=task.test.to(device), per_worker=per_worker,
        steps_per_epoch=max(1, len(train_images) // (per_worker * world)),
        select=selection_metric(spec), with_aupro=aupro_each_evaluation(spec),
        order_gen=torch.Generator(device="cpu").manual_seed(t.seed),
    )


def _restore(run: _ClassRun, resume: dict[str, Any]) -> None:
    """Continue from a state that an earlier ``report`` of this class received."""
    Method.unwrap(run.model).load_state_dict(_without_compile_prefix(resume["model"]))
    run.optimizer.load_state_dict(resume["optimizer"])
    run.method.load_extra_state(resume.get("method", {}))
    run.order_gen.set_state(resume["order_gen"])
    # Checkpoints written before the random streams were saved lack "rng": such a run
    # continues from freshly seeded streams (the same as it always did).
    rngs = resume.get("rng") or []
    if run.rank < len(rngs):
        _load_rng_state(run.method, run.device, rngs[run.rank])
    run.start_epoch, run.best_value, run.best_epoch = resume["epoch"] + 1, resume["best_value"], resume["best_epoch"]
    best_state = resume["best_state"]
    run.best_state = None if best_state is None else _without_compile_prefix(best_state)


def _wrap(run: _ClassRun, wrap_model: Callable[[nn.Module], nn.Module] | None) -> None:
    """The distributed form of the model, and the module the training steps run through."""
    t = run.spec.train
    if wrap_model is not None:
        run.model = wrap_model(run.model)
    # The training steps run through the compiled module; scoring and the epoch hooks use
    # ``model`` itself (no recompilation for evaluation shapes); checkpoints hold the plain
    # module's state either way (_cpu_state), so compiled and plain runs resume each other.
    run.step_model = torch.compile(run.model, backend=t.compile_backend) if t.compile else run.model


def _train_step(run: _ClassRun, idx: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
    """One optimizer step on the training images ``idx``; the step's loss terms."""
    t = run.spec.train
    for group in run.optimizer.param_groups:
        group["lr"] = t.lr * _lr_factor(run.step, run.total_steps, t.warmup_epochs * run.steps_per_epoch)
    batch = _batch(run.train_images, idx, run.device, run.on_device, t.channels_last)
    with _autocast(run.spec, run.device):
        losses = run.method.training_step(run.step_model, batch, epoch)
    run.optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    run.optimizer.step()
    run.step += 1
    return losses


def _train_epoch(run: _ClassRun, epoch: int) -> dict[str, torch.Tensor]:
    """This rank's steps of one epoch (its shard, rank::world, of every batch); sets
    ``last_loss`` (one device sync) and returns each loss term's sum over the steps."""
    run.model.train()
    perm = torch.randperm(len(run.train_images), generator=run.order_gen).to(run.train_images.device)
    loss_sum, loss_terms = torch.zeros((), device=run.device), {}
    span = run.per_worker * run.world
    for s in range(run.steps_per_epoch):
        losses = _train_step(run, perm[s * span : (s + 1) * span][run.rank :: run.world], epoch)
        loss_sum += losses["loss"].detach()
        for k, v in losses.items():
            loss_terms[k] = loss_terms.get(k, 0.0) + v.detach()
    run.last_loss = float(loss_sum) / run.steps_per_epoch
    return loss_terms


def _curve(run: _ClassRun, loss_terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """The epoch's values for ``on_epoch``: each loss term's mean and the last step's
    learning rate (one device sync)."""
    names = list(loss_terms)
    means = torch.stack([loss_terms[k].float() for k in names]).tolist() if names else []
    return {**{f"loss_{k}": v / run.steps_per_epoch for k, v in zip(names, means, strict=True)},
            "lr": run.optimizer.param_groups[0]["lr"]}


def _score_validation(run: _ClassRun, epoch: int, metrics: dict[str, Any], last: bool,
                      observe: ObserveFn | None) -> None:
    """Rank 0: fit the scorer and add the validation metrics (and, for ``observe``, the
    test split's) to ``metrics``."""
    t = run.spec.train
    run.method.fit_scorer(run.model, run.all_train_images())
    kept: dict[str, np.ndarray] = {}
    metrics.update(_evaluate_split(run.method, run.model, run.val, "val_", t.batch_size, kept, fast=True,
                                   with_aupro=run.with_aupro, scored=run.last_scored if last else None))
    if observe is not None:
        metrics.update(_evaluate_split(run.method, run.model, run.test, "test_", t.batch_size, kept))
        observe(epoch + 1, kept, dict(metrics))


def _keep_best(run: _ClassRun, epoch: int, value: float) -> None:
    """Rank 0: keep this epoch's model when its selection ``value`` is the best so far.

    Ties go to the later epoch: an equal score after more training is no reason to keep
    the under-trained model.
    """
    if run.best_state is None or (math.isfinite(value) and not value < run.best_value):
        run.best_value, run.best_epoch, run.best_state = value, epoch, _cpu_state(run.model)


def _resumable(run: _ClassRun, epoch: int, rngs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rank 0: the state a restarted run continues from after ``epoch`` (``rngs``: every
    rank's random streams; rank 0's own are read now)."""
    return {
        "epoch": epoch,
        "model": _cpu_state(run.model),
        "optimizer": copy.deepcopy(run.optimizer.state_dict()),
        "method": run.method.extra_state(),
        "order_gen": run.order_gen.get_state(),
        "rng": [_rng_state(run.method, run.device), *rngs[1:]],
        "best_value": run.best_value,
        "best_epoch": run.best_epoch,
        "best_state": run.best_state,
    }


def _evaluate(run: _ClassRun, epoch: int, loss_terms: dict[str, torch.Tensor], last: bool,
              observe: ObserveFn | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """An evaluation after ``epoch``: its metrics and, on rank 0 with checkpoints on, the
    resumable state (None elsewhere)."""
    t = run.spec.train
    metrics: dict[str, Any] = {f"loss_{k}": float(v) / run.steps_per_epoch for k, v in loss_terms.items()}
    # Every rank's random streams as they are after this epoch's training (rank 0's own
    # are read again in _resumable, after its scoring, which may draw from them too).
    rngs = _all_rng_states(run.method, run.device, run.world) if t.checkpoint and run.world > 1 and not last else []
    if run.rank != 0:
        return metrics, None
    _score_validation(run, epoch, metrics, last, observe)
    _keep_best(run, epoch, metrics.get(run.select, float("nan")))
    return metrics, _resumable(run, epoch, rngs) if t.checkpoint else None


def _epoch(run: _ClassRun, epoch: int, hooks: _Hooks) -> None:
    """One epoch: training, then (every ``train.eval_every`` epochs and after the last)
    evaluation, best-epoch selection and a report; the epoch's curves to ``on_epoch``."""
    t = run.spec.train
    loss_terms = _train_epoch(run, epoch)
    curve = _curve(run, loss_terms) if hooks.on_epoch is not None else {}
    if not math.isfinite(run.last_loss):
        hooks.epoch_done(epoch + 1, curve)  # a diverged epoch shows in the curves
        raise TrainingDiverged(f"loss became {run.last_loss} in epoch {epoch + 1} of class {run.task.normal_class}")
    run.method.on_epoch_end(run.model, run.all_train_images(), epoch)
    last = epoch + 1 == t.epochs
    if (epoch + 1) % t.eval_every and not last:
        hooks.epoch_done(epoch + 1, curve)
        return
    metrics, state = _evaluate(run, epoch, loss_terms, last, hooks.observe)
    # The evaluation's validation metrics join the epoch's curves.
    hooks.epoch_done(epoch + 1, {**curve, **{k: v for k, v in metrics.items() if k.startswith("val_")}})
    metrics.update(
        epoch=epoch + 1,
        normal_class=run.task.normal_class,
        progress=run_progress(hooks.class_offset, epoch + 1, t.epochs),
        best_class_value=run.best_value,
    )
    if hooks.report is not None and not last:
        hooks.report(metrics, state)


def _final_test(run: _ClassRun) -> tuple[dict[str, float], float, dict[str, dict[str, torch.Tensor]]]:
    """Rank 0: the selected model's exact validation and test metrics, its scoring
    latency, and the best and last model states."""
    t = run.spec.train
    net = Method.unwrap(run.model)
    states = {"last": _cpu_state(net), "best": run.best_state}
    # The best epoch is the last one (always so with one evaluation): the model, its
    # fitted scorer and its validation scores are those of the last evaluation, so
    # the split is not scored twice. Otherwise restore the best state and score again.
    if not (run.best_epoch == t.epochs - 1 and run.last_scored):
        run.last_scored.clear()
        if run.best_state is not None:
            net.load_state_dict(run.best_state)
        run.method.fit_scorer(net, run.all_train_images())
    metrics: dict[str, float] = {}
    metrics.update(_evaluate_split(run.method, net, run.val, "val_", t.batch_size, scored=run.last_scored))
    metrics.update(_evaluate_split(run.method, net, run.test, "test_", t.batch_size))
    return metrics, _latency_ms(run.method, net, run.test.images), states


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
    observe: ObserveFn | None = None,
    on_epoch: EpochFn | None = None,
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
    run = _prepare(spec, task, method_cls, device, rank, world)
    if resume is not None:
        _restore(run, resume)
    _wrap(run, wrap_model)
    hooks = _Hooks(report, observe, on_epoch, class_offset)
    started = time.perf_counter()
    run.step = run.start_epoch * run.steps_per_epoch
    for epoch in range(run.start_epoch, spec.train.epochs):
        _epoch(run, epoch, hooks)
    train_time = time.perf_counter() - started
    metrics, latency, states = _final_test(run) if rank == 0 else ({}, float("nan"), {})
    return ClassResult(
        normal_class=task.normal_class,
        metrics=metrics,
        best_epoch=run.best_epoch + 1,
        epochs_run=spec.train.epochs,
        train_time_s=train_time,
        num_params=run.num_params,
        latency_ms=latency,
        final_loss=run.last_loss,
        facts=run.method.describe(),
        states=states,
        resumed_epoch=run.start_epoch if resume is not None else None,
        val_counts=(int((task.val.labels == 0).sum()), int((task.val.labels == 1).sum())),
    )
