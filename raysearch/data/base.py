"""Data records shared by every dataset: splits and the one-class task.

All images are uint8 tensors (N, 3, S, S) on the CPU here (grayscale is replicated to
three channels, every image resized to S = ``data.image_size``); the training loop moves
them to the device once per class. Labels: 0 normal, 1 anomalous. Masks: uint8 (N, S, S)
in {0, 1}, or None where the dataset has no pixel ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Split", "OneClassTask"]


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, 3, S, S)
    labels: torch.Tensor  # int64 (N,), 1 = anomalous
    masks: torch.Tensor | None = None  # uint8 (N, S, S) in {0, 1}, or None
    # Validation splits: the anomaly family of each image (int64 (N,), -1 = normal, j =
    # family_names[j]), so each family is scored against all normals. None elsewhere.
    family: torch.Tensor | None = None
    family_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> Split:
        masks = None if self.masks is None else self.masks.to(device)
        family = None if self.family is None else self.family.to(device)
        return Split(self.images.to(device), self.labels.to(device), masks, family, self.family_names)


@dataclass
class OneClassTask:
    """Everything one class of a one-class experiment needs."""

    dataset: str
    normal_class: str  # class name or category, as written in specs and result rows
    train: torch.Tensor  # uint8 (N, 3, S, S): training normals (the held-out part removed)
    val: Split  # from training data only: held-out normals + synthetic / other-class anomalies
    test: Split  # the official test set of this class; never used to select anything
