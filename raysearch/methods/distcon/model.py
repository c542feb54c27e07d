"""distcon's network: backbone -> projection z (L2-normalised), rotation head, per-rotation GMM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raysearch.components.backbones import build_backbone
from raysearch.components.gmm import RotationGMM
from raysearch.methods.distcon.params import DistConParams, parse_rotations

__all__ = ["DistConNet"]


class DistConNet(nn.Module):
    """Encoder h = f(x), embedding z = normalize(g(h)), rotation logits = w(h), GMMs on z."""

    def __init__(self, params: DistConParams, image_size: int, generator: torch.Generator | None = None):
        super().__init__()
        bb = params.backbone
        self.backbone = build_backbone(bb.name, weights=bb.weights, image_size=image_size, width=bb.width)
        dim = self.backbone.out_dim
        self.projection = nn.Sequential(
            nn.Linear(dim, params.projection_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(params.projection_hidden, params.projection_dim),
        )
        n_rot = len(parse_rotations(params.rotations))
        self.rotation_head = nn.Linear(dim, n_rot) if params.loss.rotation_weight > 0 else None
        g = params.gmm
        self.gmm = RotationGMM(
            rotations=n_rot,
            components=g.components,
            dim=params.projection_dim,
            covariance=g.covariance,
            # Learned by gradient only when the clustering loss trains it; otherwise the
            # mixtures are buffers refit from features (EM / k-means).
            learnable=g.update == "gradient" and params.loss.gmm_weight > 0,
            fixed_variance=g.fixed_variance,
            min_log_var=g.min_log_var,
            generator=generator,
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """x (B, 3, H, W) normalised -> h (B, D_h), z (B, D_z) unit norm, rotation logits (B, R) | None."""
        h = self.backbone(x)
        z = F.normalize(self.projection(h).float(), dim=1)
        logits = self.rotation_head(h).float() if self.rotation_head is not None else None
        return h, z, logits
