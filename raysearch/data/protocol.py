"""The one-class protocol: training normals, a leakage-free validation split, the test set.

- Training: the normal class's training images, shuffled with the run's seed and capped
  at ``data.max_train`` (before the hold-out, so the validation split shrinks with it).
- Validation (``selection.split: validation``, the default): a ``selection.holdout``
  fraction of those normals (at least 2), removed from training, plus as many anomalies:
  synthetic ones (CutPaste and scar on copies of the held-out normals, with their masks)
  or held-out training images of the other classes (``selection.anomalies:
  other_classes``). Nothing of the test set is used.
- Test: the dataset's official test set for this class, capped at ``data.max_test``
  with the normal / anomalous ratio kept (at least 2 of each).
- ``selection.split: test`` is the paper-style protocol: no hold-out, and the validation
  split *is* the test set; every result row records the choice.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from raysearch.data.base import OneClassTask, Split
from raysearch.data.readers import RawClass
from raysearch.data.synthesis import synthesize
from raysearch.schema import SpecError

__all__ = ["make_task", "stratified_subset"]


def _rng(seed: int, normal_class: str, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(normal_class.encode()), stream])


def stratified_subset(labels: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ``limit`` items keeping the label ratio (>= 2 per label)."""
    if limit >= len(labels):
        return np.arange(len(labels))
    picked = []
    values, counts = np.unique(labels, return_counts=True)
    for value, count in zip(values, counts):
        want = min(count, max(2, int(round(limit * count / len(labels)))))
        picked.append(rng.choice(np.flatnonzero(labels == value), size=want, replace=False))
    return np.sort(np.concatenate(picked))


def make_task(raw: RawClass, data, selection, seed: int, normal_class: str, dataset: str) -> OneClassTask:
    order = _rng(seed, normal_class, 0).permutation(raw.train.size)
    if data.max_train is not None:
        order = order[: data.max_train]

    test_idx = np.arange(raw.test.size)
    if data.max_test is not None:
        test_idx = stratified_subset(raw.test_labels, data.max_test, _rng(seed, normal_class, 1))
    test = Split(
        images=raw.test.read(test_idx),
        labels=torch.from_numpy(raw.test_labels[test_idx]),
        masks=None if raw.test_masks is None else raw.test_masks.read(test_idx),
    )

    if selection.split == "test":
        return OneClassTask(dataset, normal_class, raw.train.read(np.sort(order)), test, test)

    n_val = max(2, int(round(selection.holdout * len(order))))
    if len(order) - n_val < 2:
        raise SpecError(
            f"class {normal_class!r} has {len(order)} training images: too few to hold out "
            f"{n_val} for validation and train on the rest",
            key="data.max_train",
        )
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    normals = raw.train.read(val_idx)
    if selection.anomalies == "synthetic":
        generator = torch.Generator().manual_seed(int(_rng(seed, normal_class, 2).integers(2**62)))
        anomalies, anomaly_masks = synthesize(normals, generator)
        masks = torch.cat([torch.zeros_like(anomaly_masks), anomaly_masks])
    else:
        if raw.others is None or raw.others.size < n_val:
            raise SpecError(f"{dataset} has no other classes to draw anomalies from", key="selection.anomalies")
        pick = np.sort(_rng(seed, normal_class, 3).choice(raw.others.size, size=n_val, replace=False))
        anomalies, masks = raw.others.read(pick), None
    val = Split(
        images=torch.cat([normals, anomalies]),
        labels=torch.cat([torch.zeros(n_val, dtype=torch.int64), torch.ones(len(anomalies), dtype=torch.int64)]),
        masks=masks,
    )
    return OneClassTask(dataset, normal_class, raw.train.read(train_idx), val, test)
