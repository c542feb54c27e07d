"""Parameter records shared by several methods (torch-free, like every ``params.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["BackboneParams"]


@dataclass(frozen=True)
class BackboneParams:
    name: Literal["small_cnn", "resnet18", "wide_resnet50_2"] = "resnet18"
    weights: str = "random"  # random | imagenet (from the local torch cache) | a file path
    width: int = 32  # channels of small_cnn's first block (ignored by ResNets)
