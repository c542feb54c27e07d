"""Method name -> method class, imported lazily.

Each method folder has a torch-free ``params.py`` (its frozen parameter dataclass) and a
``method.py`` (the :class:`~raysearch.methods.base.Method` subclass). The registry maps
names to both as import strings, so ``raysearch methods`` and spec validation never
import torch.

Example:
    >>> params_class("distcon").__name__
    'DistConParams'
"""

from __future__ import annotations

import importlib
from typing import Any

from raysearch.config.schema import SpecError

__all__ = ["METHODS", "params_class", "method_class", "method_names"]

# name -> (parameter dataclass, method class, one-line description)
METHODS: dict[str, tuple[str, str, str]] = {
    "distcon": (
        "raysearch.methods.distcon.params:DistConParams",
        "raysearch.methods.distcon.method:DistCon",
        "per-rotation Gaussian mixtures + rotation-aware contrastive learning (KBS 2025)",
    ),
    "cutswap": (
        "raysearch.methods.cutswap.params:CutSwapParams",
        "raysearch.methods.cutswap.method:CutSwap",
        "LayerCAM multilevel saliency picks two similar patches that are swapped (SIViP 2024)",
    ),
    "clflow": (
        "raysearch.methods.clflow.params:CLFlowParams",
        "raysearch.methods.clflow.method:CLFlow",
        "FastFlow-style 2D flow + synthetic anomalies + contrastive proxy tasks (SPIE ISPP 2024)",
    ),
}


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def method_names() -> list[str]:
    return sorted(METHODS)


def _entry(name: str) -> tuple[str, str, str]:
    try:
        return METHODS[name]
    except KeyError:
        raise SpecError(
            f"unknown method {name!r}; known methods: {', '.join(method_names())}", key="method"
        ) from None


def params_class(name: str) -> type:
    """The frozen parameter dataclass of method ``name`` (no torch import)."""
    return _load(_entry(name)[0])


def method_class(name: str) -> type:
    """The :class:`~raysearch.methods.base.Method` subclass of method ``name``."""
    return _load(_entry(name)[1])


def describe(name: str) -> str:
    return _entry(name)[2]
