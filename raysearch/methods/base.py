"""The Method interface: what every anomaly detection method implements.

One :class:`Method` instance lives per trial, class and Ray Train worker. The training
loop (``raysearch.train.worker``) calls its hooks in this order::

    model = method.build()                      # once per class, on every worker
    for epoch in range(epochs):
        for images in batches:                  # uint8 (B, C, H, W) on the device
            losses = method.training_step(model, images, epoch)   # every step
            losses["loss"].backward(); optimizer.step()
        method.on_epoch_end(model, train_images, epoch)           # every epoch
        if evaluation epoch:                    # rank 0 only, under torch.no_grad()
            method.fit_scorer(model, train_images)
            scores = method.score(model, val_images)
    (best checkpoint restored) fit_scorer + score on the test split, rank 0

``model`` is the module returned by ``build`` (wrapped in DDP during training when there
are several workers: call ``method.unwrap(model)`` to reach attributes). Images are
always uint8 tensors already on the device; a method normalises and augments them with
batched tensor code itself. Scores follow one convention in the whole project:
higher means more anomalous.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

__all__ = ["DataInfo", "Scores", "Method"]


@dataclass(frozen=True)
class DataInfo:
    """What a method may know about its data before it builds a model."""

    channels: int  # always 3: grayscale datasets are replicated to RGB
    image_size: int  # square side in pixels
    num_train: int  # training normals of this class (all workers together)
    has_masks: bool  # the test split carries pixel ground truth


class Scores(NamedTuple):
    image: torch.Tensor  # (N,) float, higher = more anomalous
    maps: torch.Tensor | None = None  # (N, H, W) float anomaly maps at image size, or None


class Method(abc.ABC):
    """Base class of the methods. Subclasses set ``name`` and ``Params``.

    Every tunable number is a field of ``Params`` (a frozen dataclass with defaults);
    nothing numeric hides in the hooks.
    """

    name: ClassVar[str]
    Params: ClassVar[type]

    def __init__(self, params: Any, info: DataInfo, device: torch.device, seed: int = 0):
        self.params = params
        self.info = info
        self.device = torch.device(device)
        self.seed = seed
        # A generator on the method's device for its augmentations and synthesis,
        # so that runs with the same seed draw the same random numbers. The loop keeps
        # its state in every checkpoint, so a restored run draws on where it stopped.
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    # -- hooks ------------------------------------------------------------------
    @abc.abstractmethod
    def build(self) -> nn.Module:
        """A fresh model on ``self.device``. Called once per class on every worker."""

    def trainable_parameters(self, model: nn.Module) -> Iterator[nn.Parameter]:
        """Parameters the optimizer updates (default: every one that requires grad)."""
        return (p for p in model.parameters() if p.requires_grad)

    @abc.abstractmethod
    def training_step(self, model: nn.Module, images: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        """Losses of one batch of normal uint8 images (B, C, H, W): ``{"loss": total, ...}``.

        Called every step on every worker inside autocast; ``model`` may be DDP-wrapped.
        Extra entries are logged (detached) as loss terms.
        """

    def on_epoch_end(self, model: nn.Module, train_images: torch.Tensor, epoch: int) -> None:
        """Once per epoch on every worker after the last step (e.g. an EM refit)."""

    @abc.abstractmethod
    def fit_scorer(self, model: nn.Module, train_images: torch.Tensor) -> None:
        """Fit the statistics used for scoring on the training normals (rank 0, no grad)."""

    @abc.abstractmethod
    def score(self, model: nn.Module, images: torch.Tensor) -> Scores:
        """Anomaly scores of uint8 images (N, C, H, W); higher = more anomalous (no grad)."""

    def extra_state(self) -> dict[str, Any]:
        """Method state that is not in the model, saved in every checkpoint (rank 0, after
        each evaluation): whatever a restored run needs to continue exactly as the
        uninterrupted one (a frozen network, a flag of a first fit). Tensors and plain
        dicts, lists, numbers and strings only: checkpoints load with ``weights_only=True``.
        ``self.generator`` and torch's, numpy's and Python's global random streams are
        saved by the loop; a method's further generators belong here.
        """
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned, after :meth:`build`, on every rank.
        A checkpoint from an older version may lack keys: choose defaults that continue."""

    def describe(self) -> dict[str, Any]:
        """Facts for the result row (e.g. which backbone weights were loaded)."""
        return {}

    @classmethod
    def notes(cls, params: Any, searched: Mapping[str, Sequence[Any]]) -> list[str]:
        """Lines the CLI prints before a run starts: facts a user must not miss (e.g. a
        fallback to random weights). ``searched`` maps the search space's ``params.*``
        choice keys to their values. Runs on the driver, before Ray starts."""
        return []

    # -- helpers ----------------------------------------------------------------
    @staticmethod
    def unwrap(model: nn.Module) -> nn.Module:
        """The plain module inside a DDP wrapper (or the module itself)."""
        return model.module if hasattr(model, "module") else model

    def count_parameters(self, model: nn.Module) -> int:
        """Trainable parameter count, reported with every result."""
        return sum(p.numel() for p in self.trainable_parameters(self.unwrap(model)))

    @torch.no_grad()
    def score_batched(self, model: nn.Module, images: torch.Tensor, batch_size: int) -> Scores:
        """:meth:`score` over ``images`` in chunks of ``batch_size``."""
        parts = [self.score(model, images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        image = torch.cat([p.image.float() for p in parts])
        maps = None if parts[0].maps is None else torch.cat([p.maps.float() for p in parts])
        return Scores(image, maps)
