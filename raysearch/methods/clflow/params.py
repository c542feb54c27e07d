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

from raysearch.config.schema import SpecError, param

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
    name: Literal["small_cnn", "resnet18", "wide_resnet50_2"] = param(
        "wide_resnet50_2", help="the frozen feature extractor (small_cnn for CPU demos and tests)"
    )
    # auto: torchvision's ImageNet file if it is in the local torch hub cache, random
    # init otherwise (the result row's `weights` says which); random; imagenet (the
    # cached file, an error if missing); or the path of a state dict.
    weights: str = param(
        "auto", help="auto (imagenet if cached, else random), random, imagenet or a file path"
    )
    width: int = param(32, help="channels of small_cnn's first block (ignored by the ResNets)", ge=1)
    levels: str = param(
        "layer1+layer2+layer3", help="feature levels read, joined by '+' (FastFlow: layer1..3)"
    )

    def parsed_levels(self) -> list[str]:
        return parse_levels(self.levels)

    def validate(self) -> None:
        levels = self.parsed_levels()
        if self.name == "small_cnn" and "layer4" in levels:
            raise SpecError("small_cnn has levels layer1..layer3 only", key="levels")
        if not self.weights:
            raise SpecError("expected auto, random, imagenet or a file path, got ''", key="weights")


@dataclass(frozen=True)
class FlowParams:
    # One FastFlow 2D flow per level (raysearch.components.flow.Flow2D).
    steps: int = param(8, help="coupling steps per level (FastFlow: 8 for CNNs, 20 for ViTs)", ge=1, le=64)
    hidden_ratio: float = param(
        1.0, help="subnet hidden channels / its input channels (FastFlow: 1.0 CNN, 0.16 ViT)", gt=0
    )
    conv3x3_only: bool = param(
        False, help="all subnets 3x3; else 3x3 and 1x1 alternate (FastFlow wide_resnet50_2)"
    )
    clamp: float = param(2.0, help="soft clamp of the coupling log-scales (FastFlow / FrEIA: 2.0)", gt=0)
    zero_init: bool = param(
        True, help="ours: each coupling starts as the identity (Glow); FastFlow uses the default init"
    )
    # Feature normalisation before each flow: chw = LayerNorm over (C, H, W) with an
    # elementwise affine (FastFlow); channel = LayerNorm over C at every position (ours,
    # independent of the image size); none.
    norm: Literal["chw", "channel", "none"] = param(
        "chw", help="LayerNorm of the features before each flow: over (C, H, W), over C, or none"
    )


@dataclass(frozen=True)
class SynthesisParams:
    # Surrogate anomalies for the proxy tasks (mode clflow). Each synthetic copy draws one
    # kind uniformly from `kinds`: perlin = a DRAEM Perlin mask filled with a texture
    # (a random image of `texture_dir`, else another training image of the batch) at
    # opacity beta; cutpaste / scar = CutPaste patches of the image itself.
    kinds: str = param("perlin", help="anomaly kinds joined by '+', from perlin, cutpaste, scar")
    # The clean originals are always in the batch, so at 1.0 half of it is clean.
    prob: float = param(1.0, help="chance that a copy gets an anomaly", gt=0, le=1)
    texture_dir: str | None = param(
        None, help="folder of texture images (any size, e.g. DTD) for perlin; None = other training images"
    )
    beta_min: float = param(0.2, help="opacity range of the perlin fill; DRAEM: 1 - U[0, 0.8)", ge=0, le=1)
    beta_max: float = param(1.0, help="upper end of the perlin fill's opacity (>= beta_min)", ge=0, le=1)
    perlin_threshold: float = param(0.5, help="noise > threshold is the mask (DRAEM: 0.5)")
    perlin_min_scale: int = param(
        0, help="lattice 2^e cells per axis, e in [min_scale, max_scale) (DRAEM: [0, 6))", ge=0, le=9
    )
    perlin_max_scale: int = param(
        6, help="upper end of the lattice exponent (> perlin_min_scale)", ge=1, le=10
    )
    cutpaste_area_min: float = param(
        0.02, help="CutPaste box area, fraction of the image (CutPaste: 0.02..0.15)", gt=0, lt=1
    )
    cutpaste_area_max: float = param(
        0.15, help="largest CutPaste box area (>= cutpaste_area_min)", gt=0, lt=1
    )
    cutpaste_aspect_min: float = param(0.3, help="box aspect w / h, log-uniform (CutPaste: 0.3..3.3)", gt=0)
    cutpaste_aspect_max: float = param(3.3, help="largest box aspect (>= cutpaste_aspect_min)", gt=0)
    patch_jitter: float = param(0.1, help="colour jitter of cutpaste / scar patches (0 = off)", ge=0)

    def parsed_kinds(self) -> list[str]:
        return parse_kinds(self.kinds)

    def validate(self) -> None:
        self.parsed_kinds()
        if not self.beta_min <= self.beta_max:
            raise SpecError(f"expected beta_min <= beta_max, got {self.beta_min}, {self.beta_max}", key="beta_min")
        if not self.perlin_min_scale < self.perlin_max_scale:
            raise SpecError(
                f"expected perlin_min_scale < perlin_max_scale, got {self.perlin_min_scale}, {self.perlin_max_scale}",
                key="perlin_min_scale",
            )
        if not self.cutpaste_area_min <= self.cutpaste_area_max:
            raise SpecError(
                f"expected cutpaste_area_min <= cutpaste_area_max, got {self.cutpaste_area_min}, {self.cutpaste_area_max}",
                key="cutpaste_area_min",
            )
        if not self.cutpaste_aspect_min <= self.cutpaste_aspect_max:
            raise SpecError(
                f"expected cutpaste_aspect_min <= cutpaste_aspect_max, got {self.cutpaste_aspect_min}, {self.cutpaste_aspect_max}",
                key="cutpaste_aspect_min",
            )


@dataclass(frozen=True)
class ClassificationParams:
    # The proxy classifier: one small conv head per level on log(1 + s), s the flow's
    # per-position score 0.5 * mean_c z^2; it predicts normal vs synthetic.
    target: Literal["image", "pixel"] = param(
        "image", help="image: one label per image; pixel: the downsampled mask"
    )
    hidden: int = param(16, help="hidden channels of each head (3x3 conv -> ReLU -> 1x1 conv)", ge=1)
    label_smoothing: float = param(0.1, help="binary targets become eps/2 and 1 - eps/2", ge=0, lt=1)
    topk_fraction: float = param(
        0.1, help="image target: image logit = mean of this top fraction of pixel logits (>= 1)", gt=0, le=1
    )


@dataclass(frozen=True)
class ContrastiveParams:
    # Region contrast: the synthetic region's scores (positives) against every position
    # of its clean source (negatives), InfoNCE over positions at this temperature.
    temperature: float = param(0.5, help="InfoNCE temperature of the region contrast", gt=0)
    # Pull: flow outputs of the synthetic copy's untouched positions (more than one cell
    # away from the mask) towards those of the clean source, weight within L_con.
    pull_weight: float = param(
        0.1, help="weight within L_con of pulling untouched positions towards the clean source", ge=0
    )


@dataclass(frozen=True)
class LossParams:
    # Loss = L_nll(clean normals) + cls_weight * L_cls + con_weight * L_con (mode clflow).
    cls_weight: float = param(0.5, help="lambda_cls; the heads exist only when > 0", ge=0)
    con_weight: float = param(0.5, help="lambda_con", ge=0)
    per_dim: bool = param(
        True, help="NLL in nats per dimension (ours: keeps the lambdas independent of feature sizes)"
    )
    proxy_start_epoch: int = param(
        0, help="epochs of NLL alone before the proxy tasks start (ours; 0 = from the start)", ge=0
    )


@dataclass(frozen=True)
class ScoreParams:
    # Inference is the flow alone. Per level: likelihood = 1 - exp(-s) (FastFlow's
    # -exp(-s) shifted to be positive; every level bounded in [0, 1)) or nll = s itself,
    # s = 0.5 * mean_c z^2; upsampled bilinearly to the image and averaged over levels.
    level_map: Literal["likelihood", "nll"] = param(
        "likelihood", help="per-level map from the flow score s: 1 - exp(-s), or s itself"
    )
    reduce: Literal["max", "topk_mean"] = param("max", help="image score from the map (CL-Flow: max)")
    topk_fraction: float = param(
        0.01, help="reduce = topk_mean: mean of this top fraction of pixels", gt=0, le=1
    )
    batch_size: int = param(64, help="images per scoring forward pass", ge=1)


@dataclass(frozen=True)
class CLFlowParams:
    # clflow: NLL + classification and region-contrastive proxy tasks on synthetic
    # anomalies; plain_fastflow: the ablation baseline, no synthesis, NLL only.
    mode: Literal["clflow", "plain_fastflow"] = param(
        "clflow", help="clflow: NLL + proxy tasks on synthetic anomalies; plain_fastflow: NLL only"
    )
    backbone: BackboneParams = field(default_factory=BackboneParams)
    flow: FlowParams = field(default_factory=FlowParams)
    synthesis: SynthesisParams = field(default_factory=SynthesisParams)
    classification: ClassificationParams = field(default_factory=ClassificationParams)
    contrastive: ContrastiveParams = field(default_factory=ContrastiveParams)
    loss: LossParams = field(default_factory=LossParams)
    score: ScoreParams = field(default_factory=ScoreParams)

    def makes_maps(self) -> bool:
        """True: scoring gives a pixel anomaly map (the flow's likelihood map), so pixel metrics exist
        wherever the validation anomalies have masks (raysearch.config.selection.objective_note)."""
        return True

    def trained_families(self) -> frozenset[str]:
        """Synthetic anomaly families this configuration trains on (raysearch.config.selection):
        the synthesis kinds of the proxy tasks; none for plain_fastflow."""
        return frozenset(self.synthesis.parsed_kinds()) if self.uses_proxy_tasks() else frozenset()

    def uses_proxy_tasks(self) -> bool:
        """True when training synthesises anomalies (mode clflow with a proxy weight > 0)."""
        return self.mode == "clflow" and (self.loss.cls_weight > 0 or self.loss.con_weight > 0)

    def has_heads(self) -> bool:
        """True when the model carries classification heads."""
        return self.mode == "clflow" and self.loss.cls_weight > 0
