"""clflow's hyperparameters: one frozen dataclass, every number with a default.

Spec files override them with dotted names under ``params`` (``flow.steps: 8``,
``loss.con_weight: 0.5``). This module imports nothing heavy, so specs validate
without torch. Which choices come from FastFlow / DRAEM / CutPaste and which are ours
is said field by field; the method itself is described in
:mod:`raysearch.methods.clflow.method`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from raysearch.schema import SpecError

__all__ = [
    "BackboneParams",
    "FlowParams",
    "SynthesisParams",
    "ClassificationParams",
    "ContrastiveParams",
    "LossParams",
    "ScoreParams",
    "CLFlowParams",
    "LEVELS",
    "SYNTHESIS_KINDS",
    "parse_levels",
    "parse_kinds",
]

LEVELS = ("layer1", "layer2", "layer3", "layer4")  # ResNet stages; small_cnn has layer1..layer3
SYNTHESIS_KINDS = ("perlin", "cutpaste", "scar")


def _parse_joined(text: str, known: tuple[str, ...], key: str, example: str) -> list[str]:
    parts = [t for t in str(text).split("+") if t]
    if not parts or any(p not in known for p in parts) or len(set(parts)) != len(parts):
        raise SpecError(
            f"expected distinct names from {', '.join(known)} joined by '+' (e.g. {example!r}), got {text!r}",
            key=key,
        )
    return parts


def parse_levels(text: str) -> list[str]:
    """A level string -> level names, in the given order.

    >>> parse_levels("layer1+layer2+layer3")
    ['layer1', 'layer2', 'layer3']
    """
    return _parse_joined(text, LEVELS, "levels", "layer1+layer2+layer3")


def parse_kinds(text: str) -> list[str]:
    """A synthesis-kind string -> kind names.

    >>> parse_kinds("perlin+cutpaste")
    ['perlin', 'cutpaste']
    """
    return _parse_joined(text, SYNTHESIS_KINDS, "kinds", "perlin+cutpaste")


@dataclass(frozen=True)
class BackboneParams:
    # The frozen feature extractor. CL-Flow / FastFlow: ResNet-18 or Wide-ResNet-50-2
    # with ImageNet weights; small_cnn exists for CPU demos and tests.
    name: Literal["small_cnn", "resnet18", "wide_resnet50_2"] = "wide_resnet50_2"
    # auto: torchvision's ImageNet file if it is in the local torch hub cache, random
    # init otherwise (the result row's `weights` says which); random; imagenet (the
    # cached file, an error if missing); or the path of a state dict.
    weights: str = "auto"
    width: int = 32  # channels of small_cnn's first block (ignored by the ResNets)
    levels: str = "layer1+layer2+layer3"  # feature levels read, joined by '+' (FastFlow: layer1..3)

    def parsed_levels(self) -> list[str]:
        return parse_levels(self.levels)

    def validate(self) -> None:
        levels = self.parsed_levels()
        if self.name == "small_cnn" and "layer4" in levels:
            raise SpecError("small_cnn has levels layer1..layer3 only", key="levels")
        if self.width < 1:
            raise SpecError(f"expected >= 1, got {self.width}", key="width")
        if not self.weights:
            raise SpecError("expected auto, random, imagenet or a file path, got ''", key="weights")


@dataclass(frozen=True)
class FlowParams:
    # One FastFlow 2D flow per level (raysearch.components.flow.Flow2D).
    steps: int = 8  # coupling steps per level (FastFlow: 8 for CNNs, 20 for ViTs)
    hidden_ratio: float = 1.0  # subnet hidden channels / its input channels (FastFlow: 1.0 CNN, 0.16 ViT)
    conv3x3_only: bool = False  # all subnets 3x3; else 3x3 and 1x1 alternate (FastFlow wide_resnet50_2)
    clamp: float = 2.0  # soft clamp of the coupling log-scales (FastFlow / FrEIA: 2.0)
    zero_init: bool = True  # ours: each coupling starts as the identity (Glow); FastFlow uses the default init
    # Feature normalisation before each flow: chw = LayerNorm over (C, H, W) with an
    # elementwise affine (FastFlow); channel = LayerNorm over C at every position (ours,
    # independent of the image size); none.
    norm: Literal["chw", "channel", "none"] = "chw"

    def validate(self) -> None:
        if not 1 <= self.steps <= 64:
            raise SpecError(f"expected 1..64, got {self.steps}", key="steps")
        if self.hidden_ratio <= 0:
            raise SpecError(f"expected > 0, got {self.hidden_ratio}", key="hidden_ratio")
        if self.clamp <= 0:
            raise SpecError(f"expected > 0, got {self.clamp}", key="clamp")


@dataclass(frozen=True)
class SynthesisParams:
    # Surrogate anomalies for the proxy tasks (mode clflow). Each synthetic copy draws one
    # kind uniformly from `kinds`: perlin = a DRAEM Perlin mask filled with a texture
    # (a random image of `texture_dir`, else another training image of the batch) at
    # opacity beta; cutpaste / scar = CutPaste patches of the image itself.
    kinds: str = "perlin"  # joined by '+', from perlin, cutpaste, scar
    prob: float = 1.0  # chance that a copy gets an anomaly; the clean originals are always in the batch, so at 1.0 half of it is clean
    texture_dir: str | None = None  # folder of texture images (any size, e.g. DTD) for perlin; None = other training images
    beta_min: float = 0.2  # opacity range of the perlin fill; DRAEM: 1 - U[0, 0.8)
    beta_max: float = 1.0
    perlin_threshold: float = 0.5  # noise > threshold is the mask (DRAEM: 0.5)
    perlin_min_scale: int = 0  # lattice 2^e cells per axis, e in [min_scale, max_scale) (DRAEM: [0, 6))
    perlin_max_scale: int = 6
    cutpaste_area_min: float = 0.02  # CutPaste box area, fraction of the image (CutPaste: 0.02..0.15)
    cutpaste_area_max: float = 0.15
    cutpaste_aspect_min: float = 0.3  # box aspect w / h, log-uniform (CutPaste: 0.3..3.3)
    cutpaste_aspect_max: float = 3.3
    patch_jitter: float = 0.1  # colour jitter of cutpaste / scar patches (0 = off)

    def parsed_kinds(self) -> list[str]:
        return parse_kinds(self.kinds)

    def validate(self) -> None:
        self.parsed_kinds()
        if not 0 < self.prob <= 1:
            raise SpecError(f"expected a probability in (0, 1], got {self.prob}", key="prob")
        if not 0 <= self.beta_min <= self.beta_max <= 1:
            raise SpecError(f"expected 0 <= beta_min <= beta_max <= 1, got {self.beta_min}, {self.beta_max}", key="beta_min")
        if not 0 <= self.perlin_min_scale < self.perlin_max_scale <= 10:
            raise SpecError(
                f"expected 0 <= perlin_min_scale < perlin_max_scale <= 10, got {self.perlin_min_scale}, {self.perlin_max_scale}",
                key="perlin_min_scale",
            )
        if not 0 < self.cutpaste_area_min <= self.cutpaste_area_max < 1:
            raise SpecError("expected 0 < cutpaste_area_min <= cutpaste_area_max < 1", key="cutpaste_area_min")
        if not 0 < self.cutpaste_aspect_min <= self.cutpaste_aspect_max:
            raise SpecError("expected 0 < cutpaste_aspect_min <= cutpaste_aspect_max", key="cutpaste_aspect_min")
        if self.patch_jitter < 0:
            raise SpecError(f"expected >= 0, got {self.patch_jitter}", key="patch_jitter")


@dataclass(frozen=True)
class ClassificationParams:
    # The proxy classifier: one small conv head per level on log(1 + s), s the flow's
    # per-position score 0.5 * mean_c z^2; it predicts normal vs synthetic.
    target: Literal["image", "pixel"] = "image"  # image: one label per image; pixel: the downsampled mask
    hidden: int = 16  # hidden channels of each head (3x3 conv -> ReLU -> 1x1 conv)
    label_smoothing: float = 0.1  # binary targets become eps/2 and 1 - eps/2
    topk_fraction: float = 0.1  # image target: image logit = mean of this top fraction of pixel logits (>= 1)

    def validate(self) -> None:
        if self.hidden < 1:
            raise SpecError(f"expected >= 1, got {self.hidden}", key="hidden")
        if not 0 <= self.label_smoothing < 1:
            raise SpecError(f"expected 0 <= eps < 1, got {self.label_smoothing}", key="label_smoothing")
        if not 0 < self.topk_fraction <= 1:
            raise SpecError(f"expected a fraction in (0, 1], got {self.topk_fraction}", key="topk_fraction")


@dataclass(frozen=True)
class ContrastiveParams:
    # Region contrast: the synthetic region's scores (positives) against every position
    # of its clean source (negatives), InfoNCE over positions at this temperature.
    temperature: float = 0.5
    # Pull: flow outputs of the synthetic copy's untouched positions (more than one cell
    # away from the mask) towards those of the clean source, weight within L_con.
    pull_weight: float = 0.1

    def validate(self) -> None:
        if self.temperature <= 0:
            raise SpecError(f"expected a positive number, got {self.temperature}", key="temperature")
        if self.pull_weight < 0:
            raise SpecError(f"expected >= 0, got {self.pull_weight}", key="pull_weight")


@dataclass(frozen=True)
class LossParams:
    # Loss = L_nll(clean normals) + cls_weight * L_cls + con_weight * L_con (mode clflow).
    cls_weight: float = 0.5  # lambda_cls; the heads exist only when > 0
    con_weight: float = 0.5  # lambda_con
    per_dim: bool = True  # NLL in nats per dimension (ours: keeps the lambdas independent of feature sizes)
    proxy_start_epoch: int = 0  # epochs of NLL alone before the proxy tasks start (ours; 0 = from the start)

    def validate(self) -> None:
        for key in ("cls_weight", "con_weight"):
            if getattr(self, key) < 0:
                raise SpecError(f"expected >= 0, got {getattr(self, key)}", key=key)
        if self.proxy_start_epoch < 0:
            raise SpecError(f"expected >= 0, got {self.proxy_start_epoch}", key="proxy_start_epoch")


@dataclass(frozen=True)
class ScoreParams:
    # Inference is the flow alone. Per level: likelihood = 1 - exp(-s) (FastFlow's
    # -exp(-s) shifted to be positive; every level bounded in [0, 1)) or nll = s itself,
    # s = 0.5 * mean_c z^2; upsampled bilinearly to the image and averaged over levels.
    level_map: Literal["likelihood", "nll"] = "likelihood"
    reduce: Literal["max", "topk_mean"] = "max"  # image score from the map (CL-Flow: max)
    topk_fraction: float = 0.01  # reduce = topk_mean: mean of this top fraction of pixels
    batch_size: int = 64  # images per scoring forward pass

    def validate(self) -> None:
        if not 0 < self.topk_fraction <= 1:
            raise SpecError(f"expected a fraction in (0, 1], got {self.topk_fraction}", key="topk_fraction")
        if self.batch_size < 1:
            raise SpecError(f"expected >= 1, got {self.batch_size}", key="batch_size")


@dataclass(frozen=True)
class CLFlowParams:
    # clflow: NLL + classification and region-contrastive proxy tasks on synthetic
    # anomalies; plain_fastflow: the ablation baseline, no synthesis, NLL only.
    mode: Literal["clflow", "plain_fastflow"] = "clflow"
    backbone: BackboneParams = field(default_factory=BackboneParams)
    flow: FlowParams = field(default_factory=FlowParams)
    synthesis: SynthesisParams = field(default_factory=SynthesisParams)
    classification: ClassificationParams = field(default_factory=ClassificationParams)
    contrastive: ContrastiveParams = field(default_factory=ContrastiveParams)
    loss: LossParams = field(default_factory=LossParams)
    score: ScoreParams = field(default_factory=ScoreParams)

    def trained_families(self) -> frozenset[str]:
        """Synthetic anomaly families this configuration trains on (raysearch.selection):
        the synthesis kinds of the proxy tasks; none for plain_fastflow."""
        return frozenset(self.synthesis.parsed_kinds()) if self.uses_proxy_tasks() else frozenset()

    def uses_proxy_tasks(self) -> bool:
        """True when training synthesises anomalies (mode clflow with a proxy weight > 0)."""
        return self.mode == "clflow" and (self.loss.cls_weight > 0 or self.loss.con_weight > 0)

    def has_heads(self) -> bool:
        """True when the model carries classification heads."""
        return self.mode == "clflow" and self.loss.cls_weight > 0
