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

from raysearch.config.schema import SpecError, param
from raysearch.methods.common import BackboneParams

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
    hidden: int = param(512, help="width of each hidden layer", ge=1)
    layers: int = param(
        1, help="hidden Linear-ReLU layers before the classifier (0 = linear classifier)", ge=0, le=8
    )


@dataclass(frozen=True)
class SaliencyParams:
    layers: str = param(
        "all", help="LayerCAM levels joined by '+' (e.g. layer1+layer2+layer3+layer4), or all"
    )
    shallow: str = param(
        "layer1+layer2", help="levels that get the tanh rescaling (paper eq. 9); none = no level"
    )
    gamma: float = param(2.0, help="tanh rescaling factor of shallow levels (paper: 2)", gt=0)
    renormalize_shallow: bool = param(True, help="ours: min-max again after the tanh")
    # How the per-level maps make the map a pair is picked from: random_level (ours: each
    # swap uses the map of one level drawn uniformly, "on each map" of the abstract),
    # max or mean (one fused map).
    fusion: Literal["random_level", "max", "mean"] = param(
        "random_level", help="how the per-level maps give the map a pair is picked from (random_level: ours)"
    )
    # The logit LayerCAM explains (ours): normal (the classifier's normal logit),
    # anomalous (logsumexp of the other logits), embedding_norm (squared norm of the
    # pooled embedding: class-free, for a frozen pretrained backbone).
    target: Literal["normal", "anomalous", "embedding_norm"] = param(
        "normal", help="the logit LayerCAM explains (ours)"
    )
    # online: the network being trained gives the saliency; frozen: a copy of it, taken at
    # build time and refreshed every ``refresh_every`` epochs (0 = never: the initial,
    # e.g. pretrained, network).
    source: Literal["online", "frozen"] = param(
        "online", help="network that gives the saliency: the one being trained, or a frozen copy"
    )
    refresh_every: int = param(
        1, help="epochs between refreshes of the frozen copy (source = frozen; 0 = never)", ge=0
    )

    def validate(self) -> None:
        parse_levels(self.layers, key="layers")
        self.shallow_levels()

    def shallow_levels(self) -> list[str]:
        """The tanh-rescaled levels; "none" (or empty) = no level is rescaled."""
        if self.shallow in ("", "none"):
            return []
        return parse_levels(self.shallow, key="shallow", allow_all=False) or []


@dataclass(frozen=True)
class ClusterParams:
    k: int = param(3, help="clusters per saliency map", ge=1, le=16)
    with_coords: bool = param(False, help="cluster on (saliency, row, column) instead of saliency alone")
    coord_weight: float = param(1.0, help="scale of the [0, 1] coordinates against saliency in [0, 1]", ge=0)
    iters: int = param(10, help="Lloyd iterations", ge=1)
    init: Literal["kmeans++", "random"] = param("kmeans++", help="how the cluster centres start")
    grid: int = param(
        32, help="ours: maps are clustered at grid x grid (0 = image size), cluster ids upsampled", ge=4, also=(0,)
    )


@dataclass(frozen=True)
class PatchParams:
    locations: Literal["saliency", "random"] = param(
        "saliency", help="where patches come from; random = the CutPaste-like baseline"
    )
    mode: Literal["swap", "paste"] = param("swap", help="paste: copy patch A over patch B only (ablation)")
    area_min: float = param(
        0.02, help="patch area as a fraction of the image (CutPaste: 0.02..0.15)", gt=0, lt=1
    )
    area_max: float = param(0.15, help="largest patch area fraction (>= area_min)", gt=0, lt=1)
    aspect_min: float = param(0.3, help="width / height, log-uniform (CutPaste: 0.3..3.3)", gt=0)
    aspect_max: float = param(3.3, help="largest width / height (>= aspect_min)", gt=0)
    # Patch centres at least this many patch sides apart along one axis; 1 = the two boxes
    # touch at most, so a swap is a permutation of pixels (the paper: "one patch apart").
    min_distance: float = param(
        1.0, help="patch centres at least this many patch sides apart (1 = touching, no overlap)", ge=1
    )
    swaps: int = param(
        1, help="swaps per negative image, applied in turn (pairs drawn independently)", ge=1, le=8
    )

    def validate(self) -> None:
        if not self.area_min <= self.area_max:
            raise SpecError(f"expected area_min <= area_max, got {self.area_min}, {self.area_max}", key="area_min")
        if not self.aspect_min <= self.aspect_max:
            raise SpecError(f"expected aspect_min <= aspect_max, got {self.aspect_min}, {self.aspect_max}", key="aspect_min")


@dataclass(frozen=True)
class TaskParams:
    classes: Literal["binary", "three_way"] = param(
        "three_way", help="binary: normal vs CutSwap; three_way: normal / CutSwap / a CutPaste-style class"
    )
    third: Literal["cutpaste", "scar"] = param("cutpaste", help="the third class (three_way)")
    third_jitter: float = param(
        0.1, help="colour jitter of the pasted patch of the third class (CutPaste: 0.1)", ge=0
    )

    @property
    def num_classes(self) -> int:
        return 2 if self.classes == "binary" else 3


@dataclass(frozen=True)
class AugmentParams:
    # Colour jitter of every training image before synthesis (CutPaste: 0.1 each).
    jitter: float = param(0.1, help="brightness, contrast and saturation strength (0 = off)", ge=0)
    hue: float = param(
        0.0, help="ours: no hue jitter by default (colour defects exist in MVTec AD)", ge=0, le=0.5
    )


@dataclass(frozen=True)
class ScoreParams:
    # Image score: Mahalanobis distance to a Gaussian (Ledoit-Wolf covariance) of the
    # training-normal embeddings. backbone = pooled backbone features (CutPaste);
    # head = the last hidden layer of the MLP head (needs head.layers >= 1).
    embedding: Literal["backbone", "head"] = param(
        "backbone", help="embedding of the image Gaussian: pooled backbone features or the head's last hidden layer"
    )
    l2_normalize: bool = param(False, help="L2-normalise embeddings before the Gaussian")
    # Pixel maps: patch_gde (Mahalanobis distance of every position of ``map_level`` to
    # one Gaussian over all training positions, upsampled), layercam (LayerCAM of the
    # anomalous logit on the saliency levels, times P(not normal)), or none.
    maps: Literal["patch_gde", "layercam", "none"] = param("patch_gde", help="how pixel maps are made")
    map_level: str = param("layer2", help="backbone level of patch_gde")
    map_samples: int = param(20000, help="training positions (evenly strided) for the patch Gaussian", ge=16)
    batch_size: int = param(256, help="images per scoring forward pass", ge=1)

    def validate(self) -> None:
        parse_levels(self.map_level, key="map_level", allow_all=False)
        if "+" in self.map_level:
            raise SpecError(f"expected a single level, got {self.map_level!r}", key="map_level")


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

    def makes_maps(self) -> bool:
        """True: scoring gives a pixel anomaly map (the saliency-weighted patch scores), so pixel metrics exist
        wherever the validation anomalies have masks (raysearch.config.selection.objective_note)."""
        return True

    def trained_families(self) -> frozenset[str]:
        """Synthetic anomaly families this configuration trains on (raysearch.config.selection):
        patch swaps (a paste of one patch over another is CutPaste without the jitter),
        and the third class of the three-way task."""
        out = {"patchswap" if self.patch.mode == "swap" else "cutpaste"}
        if self.task.classes == "three_way":
            out.add(self.task.third)
        return frozenset(out)

    def validate(self) -> None:
        if self.score.embedding == "head" and self.head.layers == 0:
            raise SpecError("score embedding 'head' needs a hidden head layer (head.layers >= 1)", key="score.embedding")

