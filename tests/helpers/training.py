"""A tiny in-memory one-class task and spec for in-process training, and the exact
comparisons of trained runs (torch: the train and Ray tiers only)."""

from __future__ import annotations

import dataclasses
import math

import torch

from raysearch.config import registry
from raysearch.config.spec import spec_from_dict
from raysearch.data.base import OneClassTask, Split

SIZE = 32


def tiny_task(with_masks: bool, seed: int = 0) -> OneClassTask:
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(90, 150, (1, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)

    def normals(n):
        noise = torch.randint(-20, 20, (n, 3, SIZE, SIZE), generator=g)
        return (base.int() + noise).clamp(0, 255).to(torch.uint8)

    def split(n_norm, n_anom):
        imgs = normals(n_norm + n_anom)
        masks = torch.zeros(n_norm + n_anom, SIZE, SIZE, dtype=torch.uint8)
        imgs[n_norm:, :, 8:18, 10:20] = 255  # a bright square: an obvious defect
        masks[n_norm:, 8:18, 10:20] = 1
        labels = torch.tensor([0] * n_norm + [1] * n_anom)
        return Split(imgs, labels, masks if with_masks else None)

    return OneClassTask("synthetic", "x", normals(24), split(6, 6), split(6, 6))


def tiny_spec(method: str, **train):
    params = {"backbone.name": "small_cnn", "backbone.width": 8}
    params_cls = registry.params_class(method)
    names = {f.name for f in dataclasses.fields(params_cls)}
    if "backbone" not in names:
        params = {}
    return spec_from_dict({
        "name": f"contract-{method}",
        "method": method,
        "params": params,
        "data": {"dataset": "digits", "image_size": SIZE},
        "train": {"epochs": 2, "batch_size": 8, "eval_every": 1, "lr": 1e-3, **train},
    })


def same_number(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def assert_same_states(a: dict, b: dict, what: str) -> None:
    assert set(a) == set(b), what
    differ = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert not differ, f"{what}: tensors differ: {differ}"
