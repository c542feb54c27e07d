"""cutswap's hyperparameters: one frozen dataclass, every number with a default.

Spec files override them with dotted names under ``params`` (``cluster.k: 4``).
This module imports nothing heavy, so specs validate without torch. Where a default is
our choice rather than the paper's (the paper publishes an abstract only), the comment
says "ours"; "CutPaste" marks values taken from Li et al. 2021.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from raysearch.methods.common import BackboneParams
from raysearch.schema import SpecError

__all__ = [
    "BackboneParams",
    "HeadParams",
    "SaliencyParams",
    "ClusterParams",
    "PatchParams",
    "TaskParams",
    "AugmentParams",
    "ScoreParams",
    "CutSwapParams",
    "parse_levels",
]

_LEVEL = re.compile(r"^layer[1-9]$")


def parse_levels(text: str, key: str, allow_all: bool = True) -> list[str] | None:
    """A level list string -> names; ``"all"`` -> None (every level of the backbone).

    >>> parse_levels("layer1+layer3", key="saliency.layers")
    ['layer1', 'layer3']
    >>> parse_levels("all", key="saliency.layers") is None
    True
    """
    text = str(text).strip()
    if allow_all and text == "all":
        return None
    names = [t for t in text.split("+") if t]
    if not names or len(set(names)) != len(names) or not all(_LEVEL.match(n) for n in names):
        expected = "'all' or " if allow_all else ""
        raise SpecError(
            f"expected {expected}distinct backbone levels joined by '+' (e.g. 'layer1+layer2'), got {text!r}",
            key=key,
        )
    return names


@dataclass(frozen=True)
class HeadParams:
    # CutPaste's head: an MLP on the pooled embedding, then a linear classifier.
    hidden: int = 512  # width of each hidden layer
    layers: int = 1  # hidden Linear-ReLU layers before the classifier (0 = linear classifier)

    def validate(self) -> None:
        if self.hidden < 1 or not 0 <= self.layers <= 8:
            raise SpecError(f"expected hidden >= 1 and layers in 0..8, got {self.hidden}, {self.layers}", key="layers")


@dataclass(frozen=True)
class SaliencyParams:
    layers: str = "all"  # LayerCAM levels joined by '+' (e.g. "layer1+layer2+layer3+layer4"), or all
    shallow: str = "layer1+layer2"  # levels that get the tanh rescaling (paper eq. 9)
    gamma: float = 2.0  # tanh rescaling factor of shallow levels (paper: 2)
    renormalize_shallow: bool = True  # ours: min-max again after the tanh
    # How the per-level maps make the map a pair is picked from: random_level (ours: each
    # swap uses the map of one level drawn uniformly, "on each map" of the abstract),
    # max or mean (one fused map).
    fusion: Literal["random_level", "max", "mean"] = "random_level"
    # The logit LayerCAM explains (ours): normal (the classifier's normal logit),
    # anomalous (logsumexp of the other logits), embedding_norm (squared norm of the
    # pooled embedding: class-free, for a frozen pretrained backbone).
    target: Literal["normal", "anomalous", "embedding_norm"] = "normal"
    # online: the network being trained gives the saliency; frozen: a copy of it, taken at
    # build time and refreshed every ``refresh_every`` epochs (0 = never: the initial,
    # e.g. pretrained, network).
    source: Literal["online", "frozen"] = "online"
    refresh_every: int = 1  # epochs between refreshes of the frozen copy (source = frozen)

    def validate(self) -> None:
        parse_levels(self.layers, key="layers")
        self.shallow_levels()
        if self.gamma <= 0:
            raise SpecError(f"expected a positive number, got {self.gamma}", key="gamma")
        if self.refresh_every < 0:
            raise SpecError(f"expected >= 0 (0 = never refresh), got {self.refresh_every}", key="refresh_every")

    def shallow_levels(self) -> list[str]:
        """The tanh-rescaled levels; "none" (or empty) = no level is rescaled."""
        if self.shallow in ("", "none"):
            return []
        return parse_levels(self.shallow, key="shallow", allow_all=False) or []


@dataclass(frozen=True)
class ClusterParams:
    k: int = 3  # clusters per saliency map
    with_coords: bool = False  # cluster on (saliency, row, column) instead of saliency alone
    coord_weight: float = 1.0  # scale of the [0, 1] coordinates against saliency in [0, 1]
    iters: int = 10  # Lloyd iterations
    init: Literal["kmeans++", "random"] = "kmeans++"
    grid: int = 32  # ours: maps are clustered at grid x grid (0 = image size), cluster ids upsampled

    def validate(self) -> None:
        if not 1 <= self.k <= 16:
            raise SpecError(f"expected 1..16, got {self.k}", key="k")
        if self.iters < 1:
            raise SpecError(f"expected >= 1, got {self.iters}", key="iters")
        if self.coord_weight < 0:
            raise SpecError(f"expected >= 0, got {self.coord_weight}", key="coord_weight")
        if self.grid != 0 and self.grid < 4:
            raise SpecError(f"expected 0 (image size) or >= 4, got {self.grid}", key="grid")


@dataclass(frozen=True)
class PatchParams:
    locations: Literal["saliency", "random"] = "saliency"  # random = the CutPaste-like baseline
    mode: Literal["swap", "paste"] = "swap"  # paste: copy patch A over patch B only (ablation)
    area_min: float = 0.02  # patch area as a fraction of the image (CutPaste: 0.02..0.15)
    area_max: float = 0.15
    aspect_min: float = 0.3  # width / height, log-uniform (CutPaste: 0.3..3.3)
    aspect_max: float = 3.3
    # Patch centres at least this many patch sides apart along one axis; 1 = the two boxes
    # touch at most, so a swap is a permutation of pixels (the paper: "one patch apart").
    min_distance: float = 1.0
    swaps: int = 1  # swaps per negative image, applied in turn (pairs drawn independently)

    def validate(self) -> None:
        if not 0 < self.area_min <= self.area_max < 1:
            raise SpecError(f"expected 0 < area_min <= area_max < 1, got {self.area_min}, {self.area_max}", key="area_min")
        if not 0 < self.aspect_min <= self.aspect_max:
            raise SpecError(f"expected 0 < aspect_min <= aspect_max, got {self.aspect_min}, {self.aspect_max}", key="aspect_min")
        if self.min_distance < 1:
            raise SpecError(f"expected >= 1 (patches must not overlap), got {self.min_distance}", key="min_distance")
        if not 1 <= self.swaps <= 8:
            raise SpecError(f"expected 1..8, got {self.swaps}", key="swaps")


@dataclass(frozen=True)
class TaskParams:
    # binary: normal vs CutSwap; three_way: normal / CutSwap / a CutPaste-style class.
    classes: Literal["binary", "three_way"] = "three_way"
    third: Literal["cutpaste", "scar"] = "cutpaste"  # the third class (three_way)
    third_jitter: float = 0.1  # colour jitter of the pasted patch of the third class (CutPaste: 0.1)

    @property
    def num_classes(self) -> int:
        return 2 if self.classes == "binary" else 3

    def validate(self) -> None:
        if self.third_jitter < 0:
            raise SpecError(f"expected >= 0, got {self.third_jitter}", key="third_jitter")


@dataclass(frozen=True)
class AugmentParams:
    # Colour jitter of every training image before synthesis (CutPaste: 0.1 each).
    jitter: float = 0.1  # brightness, contrast and saturation strength (0 = off)
    hue: float = 0.0  # ours: no hue jitter by default (colour defects exist in MVTec AD)

    def validate(self) -> None:
        if self.jitter < 0 or not 0 <= self.hue <= 0.5:
            raise SpecError(f"expected jitter >= 0 and hue in [0, 0.5], got {self.jitter}, {self.hue}", key="jitter")


@dataclass(frozen=True)
class ScoreParams:
    # Image score: Mahalanobis distance to a Gaussian (Ledoit-Wolf covariance) of the
    # training-normal embeddings. backbone = pooled backbone features (CutPaste);
    # head = the last hidden layer of the MLP head (needs head.layers >= 1).
    embedding: Literal["backbone", "head"] = "backbone"
    l2_normalize: bool = False  # L2-normalise embeddings before the Gaussian
    # Pixel maps: patch_gde (Mahalanobis distance of every position of ``map_level`` to
    # one Gaussian over all training positions, upsampled), layercam (LayerCAM of the
    # anomalous logit on the saliency levels, times P(not normal)), or none.
    maps: Literal["patch_gde", "layercam", "none"] = "patch_gde"
    map_level: str = "layer2"  # backbone level of patch_gde
    map_samples: int = 20000  # training positions (evenly strided) for the patch Gaussian
    batch_size: int = 256  # images per scoring forward pass

    def validate(self) -> None:
        parse_levels(self.map_level, key="map_level", allow_all=False)
        if "+" in self.map_level:
            raise SpecError(f"expected a single level, got {self.map_level!r}", key="map_level")
        if self.map_samples < 16 or self.batch_size < 1:
            raise SpecError(f"expected map_samples >= 16 and batch_size >= 1, got {self.map_samples}, {self.batch_size}", key="map_samples")


@dataclass(frozen=True)
class CutSwapParams:
    backbone: BackboneParams = field(default_factory=BackboneParams)
    head: HeadParams = field(default_factory=HeadParams)
    saliency: SaliencyParams = field(default_factory=SaliencyParams)
    cluster: ClusterParams = field(default_factory=ClusterParams)
    patch: PatchParams = field(default_factory=PatchParams)
    task: TaskParams = field(default_factory=TaskParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    score: ScoreParams = field(default_factory=ScoreParams)

    def trained_families(self) -> frozenset[str]:
        """Synthetic anomaly families this configuration trains on (raysearch.selection):
        patch swaps (a paste of one patch over another is CutPaste without the jitter),
        and the third class of the three-way task."""
        out = {"patchswap" if self.patch.mode == "swap" else "cutpaste"}
        if self.task.classes == "three_way":
            out.add(self.task.third)
        return frozenset(out)

    def validate(self) -> None:
        if self.score.embedding == "head" and self.head.layers == 0:
            raise SpecError("score embedding 'head' needs a hidden head layer (head.layers >= 1)", key="score.embedding")

