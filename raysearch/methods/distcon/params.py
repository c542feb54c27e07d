"""distcon's hyperparameters: one frozen dataclass, every number with a default.

Spec files override them with dotted names under ``params`` (``gmm.components: 8``).
This module imports nothing heavy, so specs validate without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from raysearch.methods.common import BackboneParams
from raysearch.schema import SpecError

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
    components: int = 4  # K Gaussians per rotation; K=1 with covariance=fixed is GOAD
    covariance: Literal["diag", "spherical", "fixed"] = "diag"
    fixed_variance: float = 0.5  # variance used by covariance=fixed
    temperature: float = 1.0  # T_gmm of the clustering loss softmax over rotations
    update: Literal["gradient", "em", "kmeans"] = "gradient"  # how mixture parameters learn
    refit_every: int = 1  # epochs between EM / k-means refits (update = em | kmeans)
    em_iters: int = 10  # EM / k-means iterations per refit
    min_log_var: float = -6.0  # floor on log-variances

    def validate(self) -> None:
        if not 1 <= self.components <= 64:
            raise SpecError(f"expected 1..64, got {self.components}", key="components")
        if self.temperature <= 0 or self.fixed_variance <= 0:
            raise SpecError("temperature and fixed_variance must be positive", key="temperature")
        if self.refit_every < 1 or self.em_iters < 1:
            raise SpecError("refit_every and em_iters must be >= 1", key="refit_every")


@dataclass(frozen=True)
class ContrastiveParams:
    temperature: float = 0.5  # tau of NT-Xent (CSI default)

    def validate(self) -> None:
        if self.temperature <= 0:
            raise SpecError(f"expected a positive number, got {self.temperature}", key="temperature")


@dataclass(frozen=True)
class LossParams:
    # Loss = contrastive_weight * L_con + gmm_weight * L_gmm + rotation_weight * L_rot
    contrastive_weight: float = 1.0
    gmm_weight: float = 0.1  # lambda_gmm
    rotation_weight: float = 0.5  # lambda_rot; the rotation head exists only when > 0

    def validate(self) -> None:
        for key in ("contrastive_weight", "gmm_weight", "rotation_weight"):
            if getattr(self, key) < 0:
                raise SpecError(f"expected >= 0, got {getattr(self, key)}", key=key)


@dataclass(frozen=True)
class ScoreParams:
    # Which normalised scores are summed, joined by '+': gmm (negative log-likelihood
    # under the own rotation's mixture), cosine (negative max cosine similarity to the
    # training features of the same rotation), rotation (negative log-probability of
    # the applied rotation from the rotation head).
    components: str = "gmm+cosine"
    refit_gmm: bool = False  # ours: refit the scoring mixtures by EM on training features
    batch_size: int = 256  # images per scoring forward pass

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
    crop_scale: float = 0.08  # lower bound of the random resized crop's area fraction
    jitter: float = 0.4  # brightness, contrast and saturation jitter strength
    hue: float = 0.1  # hue jitter
    jitter_p: float = 0.8  # probability of colour jitter
    gray_p: float = 0.2  # probability of grayscale


@dataclass(frozen=True)
class DistConParams:
    rotations: str = "0-90-180-270"  # the transformation set; see parse_rotations
    backbone: BackboneParams = field(default_factory=BackboneParams)
    projection_dim: int = 128  # dimension of the L2-normalised embedding z
    projection_hidden: int = 512  # hidden width of the projection MLP
    gmm: GMMParams = field(default_factory=GMMParams)
    contrastive: ContrastiveParams = field(default_factory=ContrastiveParams)
    loss: LossParams = field(default_factory=LossParams)
    score: ScoreParams = field(default_factory=ScoreParams)
    augment: AugmentParams = field(default_factory=AugmentParams)

    def trained_families(self) -> frozenset[str]:
        """Synthetic anomaly families this configuration trains on (raysearch.selection):
        none; distcon learns from rotations and views of normal images only."""
        return frozenset()

    def flips_rotations(self) -> bool:
        """True when the rotation set holds flipped twins: the random horizontal flip of the
        views is then off, since a flipped view would be another rotation class."""
        return any(flipped for _, flipped in parse_rotations(self.rotations))

    def validate(self) -> None:
        parse_rotations(self.rotations)
        if self.projection_dim < 2 or self.projection_hidden < 2:
            raise SpecError("projection sizes must be >= 2", key="projection_dim")
        if "rotation" in self.score.parsed() and self.loss.rotation_weight <= 0:
            raise SpecError(
                "score component 'rotation' needs a trained rotation head (loss.rotation_weight > 0)",
                key="score.components",
            )
