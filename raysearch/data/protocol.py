"""The one-class protocol: training normals, a leakage-free validation split, the test set.

- Training: the normal class's training images, shuffled with ``selection.seed`` and capped
  at ``data.max_train`` (before the hold-out, so the validation split shrinks with it).
- Validation (``selection.split: validation``, the default): a ``selection.holdout``
  fraction of those normals (raised to ``selection.min_normals`` up to half of them), removed
  from training, plus ``max(selection.min_anomalies, held-out normals)`` anomalies of
  every validation family (:mod:`raysearch.config.selection`): synthetic ones made from held-out
  normals drawn with replacement (each family from its own random stream, so adding a
  family leaves the others unchanged), or held-out training images of the other classes.
  The hold-out, the test subset and the synthesis depend on ``selection.seed`` alone, so
  every trial and every training seed of an experiment is ranked on the same split.
  Nothing of the test set is used.
- Test: the dataset's official test set for this class, capped at ``data.max_test``
  with the normal / anomalous ratio kept (at least 2 of each).
- ``selection.split: test`` is the paper-style protocol: no hold-out, and the validation
  split *is* the test set; every result row records the choice.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from raysearch.config.schema import SpecError
from raysearch.config.selection import OTHER_CLASSES, validation_families
from raysearch.data.base import OneClassTask, Split
from raysearch.data.readers import RawClass
from raysearch.data.synthesis import synthesize_family

__all__ = ["make_task", "stratified_subset", "validation_split", "holdout_size"]


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


def _family_stream(family: str) -> int:
    return 16 + zlib.crc32(family.encode()) % 2**20


def _balanced_draw(n_from: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices into ``n_from`` items, with replacement but every item used as evenly as possible."""
    reps = -(-n // n_from)
    return np.concatenate([rng.permutation(n_from) for _ in range(reps)])[:n]


def validation_split(normals: torch.Tensor, families: tuple[str, ...], count: int, raw: RawClass | None,
                     seed: int, normal_class: str, dataset: str) -> Split:
    """Held-out ``normals`` plus ``count`` anomalies of every family, labelled by family
    (other-class anomalies come from ``raw.others``)."""
    images, masks, family_ids = [normals], [torch.zeros(len(normals), *normals.shape[-2:], dtype=torch.uint8)], [
        torch.full((len(normals),), -1, dtype=torch.int64)]
    with_masks = OTHER_CLASSES not in families
    for j, family in enumerate(families):
        rng = _rng(seed, normal_class, _family_stream(family))
        if family == OTHER_CLASSES:
            pool = raw.others if raw is not None else None
            if pool is None or pool.size == 0:
                raise SpecError(f"{dataset} has no other classes (or categories besides {normal_class!r}) to draw "
                                "other_classes anomalies from; use anomalies: synthetic", key="selection.anomalies")
            pick = rng.choice(pool.size, size=count, replace=count > pool.size)
            anomalies = pool.read(np.sort(pick))
            anomaly_masks = torch.zeros(count, *normals.shape[-2:], dtype=torch.uint8)
        else:
            sources = normals[torch.from_numpy(_balanced_draw(len(normals), count, rng))]
            generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
            anomalies, anomaly_masks = synthesize_family(family, sources, generator)
        images.append(anomalies)
        masks.append(anomaly_masks.to(torch.uint8))
        family_ids.append(torch.full((count,), j, dtype=torch.int64))
    family = torch.cat(family_ids)
    return Split(
        images=torch.cat(images),
        labels=(family >= 0).to(torch.int64),
        masks=torch.cat(masks) if with_masks else None,
        family=family,
        family_names=tuple(families),
    )


def holdout_size(n_train: int, selection) -> int:
    """Held-out normals: the ``holdout`` fraction, raised to ``min_normals`` as long as
    that takes at most half of the training normals."""
    return max(int(round(selection.holdout * n_train)), min(selection.min_normals, n_train // 2))


def make_task(raw: RawClass, data, selection, seed: int, normal_class: str, dataset: str) -> OneClassTask:
    """The task of one class. ``seed`` (the run's train.seed) is unused: the split depends
    on ``selection.seed`` only, so all seeds and trials share one validation set."""
    del seed
    split_seed = selection.seed
    order = _rng(split_seed, normal_class, 0).permutation(raw.train.size)
    if data.max_train is not None:
        order = order[: data.max_train]

    test_idx = np.arange(raw.test.size)
    if data.max_test is not None:
        test_idx = stratified_subset(raw.test_labels, data.max_test, _rng(split_seed, normal_class, 1))
    test = Split(
        images=raw.test.read(test_idx),
        labels=torch.from_numpy(raw.test_labels[test_idx]),
        masks=None if raw.test_masks is None else raw.test_masks.read(test_idx),
    )

    if selection.split == "test":
        return OneClassTask(dataset, normal_class, raw.train.read(np.sort(order)), test, test)

    n_val = holdout_size(len(order), selection)
    if n_val < 2 or len(order) - n_val < 2:
        raise SpecError(
            f"class {normal_class!r} has {len(order)} training images: too few to hold out "
            f"{max(n_val, 2)} for validation and train on the rest",
            key="data.max_train",
        )
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    normals = raw.train.read(val_idx)
    count = max(selection.min_anomalies, n_val)
    val = validation_split(normals, validation_families(selection, raw.others is not None), count, raw, split_seed, normal_class, dataset)
    return OneClassTask(dataset, normal_class, raw.train.read(train_idx), val, test)
