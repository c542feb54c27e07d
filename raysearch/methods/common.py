"""Parameter records shared by several methods (torch-free, like every ``params.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from raysearch.config.schema import param

__all__ = ["BackboneParams"]


@dataclass(frozen=True)
class BackboneParams:
    name: Literal["small_cnn", "resnet18", "wide_resnet50_2"] = param(
        "resnet18", help="the feature extractor (small_cnn for CPU demos and tests)"
    )
    weights: str = param("random", help="random, imagenet (from the local torch cache) or a file path")
    width: int = param(32, help="channels of small_cnn's first block (ignored by ResNets)")
