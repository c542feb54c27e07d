"""distcon's hyperparameters: one frozen dataclass, every number with a default.

Spec files override them with dotted names under ``params`` (``gmm.components: 8``).
This module imports nothing heavy, so specs validate without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from raysearch.config.schema import SpecError, param
from raysearch.methods.common import BackboneParams

__all__ = [
    "BackboneParams",
    "GMMParams",
    "ContrastiveParams",
    "LossParams",
    "ScoreParams",
    "AugmentParams",
    "DistConParams",
    "parse_rotations",
    "SCORE_COMPONENTS",
]

# Transformation tokens of a rotation set: quarter turns, plus "hflip" which adds the
# horizontally flipped twin of every rotation ("0-90-180-270-hflip" = 8 transformations).
_TURNS = {"0": 0, "90": 1, "180": 2, "270": 3}
SCORE_COMPONENTS = ("gmm", "cosine", "rotation")


def parse_rotations(text: str) -> list[tuple[int, bool]]:
    """A rotation set string -> [(quarter turns, flipped), ...].

    >>> parse_rotations("0-180-hflip")
    [(0, False), (2, False), (0, True), (2, True)]
    """
    tokens = [t for t in str(text).split("-") if t]
    flips = tokens.count("hflip")
    turns = [t for t in tokens if t != "hflip"]
    bad = [t for t in turns if t not in _TURNS]
    if bad or not turns or flips > 1 or len(set(turns)) != len(turns):
        raise SpecError(
            f"expected distinct angles from 0, 90, 180, 270 joined by '-', optionally with "
            f"'-hflip' (e.g. '0-90-180-270'), got {text!r}",
            key="params.rotations",
        )
    base = [(_TURNS[t], False) for t in turns]
    return base + [(k, True) for k, _ in base] if flips else base


@dataclass(frozen=True)
class GMMParams:
    components: int = param(
        4, help="K Gaussians per rotation; K=1 with covariance=fixed is GOAD", ge=1, le=64
    )
    covariance: Literal["diag", "spherical", "fixed"] = param(
        "diag", help="shape of each Gaussian's covariance"
    )
    fixed_variance: float = param(0.5, help="variance used by covariance=fixed", gt=0)
    temperature: float = param(1.0, help="T_gmm of the clustering loss softmax over rotations", gt=0)
    update: Literal["gradient", "em", "kmeans"] = param("gradient", help="how mixture parameters learn")
    refit_every: int = param(1, help="epochs between EM / k-means refits (update = em | kmeans)", ge=1)
    em_iters: int = param(10, help="EM / k-means iterations per refit", ge=1)
    min_log_var: float = param(-6.0, help="floor on log-variances")


@dataclass(frozen=True)
class ContrastiveParams:
    temperature: float = param(0.5, help="tau of NT-Xent (CSI default)", gt=0)


@dataclass(frozen=True)
class LossParams:
    # Loss = contrastive_weight * L_con + gmm_weight * L_gmm + rotation_weight * L_rot
    contrastive_weight: float = param(1.0, help="weight of the contrastive loss L_con", ge=0)
    gmm_weight: float = param(0.1, help="lambda_gmm, weight of the clustering loss L_gmm", ge=0)
    rotation_weight: float = param(
        0.5, help="lambda_rot, weight of L_rot; the rotation head exists only when > 0", ge=0
    )


@dataclass(frozen=True)
class ScoreParams:
    # Which normalised scores are summed, joined by '+': gmm (negative log-likelihood
    # under the own rotation's mixture), cosine (negative max cosine similarity to the
    # training features of the same rotation), rotation (negative log-probability of
    # the applied rotation from the rotation head).
    components: str = param(
        "gmm+cosine", help="normalised scores summed, joined by '+', from gmm, cosine, rotation"
    )
    refit_gmm: bool = param(False, help="ours: refit the scoring mixtures by EM on training features")
    batch_size: int = param(256, help="images per scoring forward pass", ge=1)

    def parsed(self) -> list[str]:
        return [c for c in self.components.split("+") if c]

    def validate(self) -> None:
        parts = self.parsed()
        if not parts or any(p not in SCORE_COMPONENTS for p in parts) or len(set(parts)) != len(parts):
            raise SpecError(
                f"expected distinct names from {', '.join(SCORE_COMPONENTS)} joined by '+', "
                f"got {self.components!r}",
                key="components",
            )


@dataclass(frozen=True)
class AugmentParams:
    crop_scale: float = param(0.08, help="lower bound of the random resized crop's area fraction")
    jitter: float = param(0.4, help="brightness, contrast and saturation jitter strength")
    hue: float = param(0.1, help="hue jitter")
    jitter_p: float = param(0.8, help="probability of colour jitter")
    gray_p: float = param(0.2, help="probability of grayscale")


@dataclass(frozen=True)
class DistConParams:
    rotations: str = param(
        "0-90-180-270", help="the transformation set: angles joined by '-', optionally '-hflip'"
    )
    backbone: BackboneParams = field(default_factory=BackboneParams)
    projection_dim: int = param(128, help="dimension of the L2-normalised embedding z", ge=2)
    projection_hidden: int = param(512, help="hidden width of the projection MLP", ge=2)
    gmm: GMMParams = field(default_factory=GMMParams)
    contrastive: ContrastiveParams = field(default_factory=ContrastiveParams)
    loss: LossParams = field(default_factory=LossParams)
    score: ScoreParams = field(default_factory=ScoreParams)
    augment: AugmentParams = field(default_factory=AugmentParams)

    def makes_maps(self) -> bool:
        """False: distcon scores whole images; its objective is the image AUROC mean."""
        return False

    def trained_families(self) -> frozenset[str]:
        """Synthetic anomaly families this configuration trains on (raysearch.config.selection):
        none; distcon learns from rotations and views of normal images only."""
        return frozenset()

    def flips_rotations(self) -> bool:
        """True when the rotation set holds flipped twins: the random horizontal flip of the
        views is then off, since a flipped view would be another rotation class."""
        return any(flipped for _, flipped in parse_rotations(self.rotations))

    def validate(self) -> None:
        parse_rotations(self.rotations)
        if "rotation" in self.score.parsed() and self.loss.rotation_weight <= 0:
            raise SpecError(
                "score component 'rotation' needs a trained rotation head (loss.rotation_weight > 0)",
                key="score.components",
            )
