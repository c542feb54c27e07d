"""distcon's training loss (KBS 2025): L = w_con * L_con + w_gmm * L_gmm + w_rot * L_rot."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raysearch.components.gmm import RotationGMM, gmm_clustering_loss
from raysearch.components.ntxent import nt_xent
from raysearch.methods.distcon.params import DistConParams

__all__ = ["distcon_loss"]


def distcon_loss(
    params: DistConParams,
    z: torch.Tensor,
    rot_logits: torch.Tensor | None,
    rot_targets: torch.Tensor,
    gmm: RotationGMM,
) -> dict[str, torch.Tensor]:
    """Loss terms of one batch.

    Args:
        z: (2, M, D) unit embeddings of two views of M = B x R rotated images; row m of
            view 0 and view 1 is the same image under the same rotation (the positive).
        rot_logits: (2, M, R) rotation-head logits, or None without a head.
        rot_targets: (M,) the rotation index applied to each row.
        gmm: the per-rotation mixtures; log p_r(z) feeds the clustering loss.
    """
    w = params.loss
    terms: dict[str, torch.Tensor] = {}
    total = z.new_zeros(())
    if w.contrastive_weight > 0:
        terms["contrastive"] = nt_xent(z[0], z[1], params.contrastive.temperature)
        total = total + w.contrastive_weight * terms["contrastive"]
    targets = rot_targets.repeat(2)  # (2M,)
    if w.gmm_weight > 0:
        log_p = gmm.log_prob(z.reshape(-1, z.shape[-1]))  # (2M, R)
        terms["gmm"] = gmm_clustering_loss(log_p, targets, params.gmm.temperature)
        total = total + w.gmm_weight * terms["gmm"]
    if w.rotation_weight > 0 and rot_logits is not None:
        terms["rotation"] = F.cross_entropy(rot_logits.reshape(-1, rot_logits.shape[-1]), targets)
        total = total + w.rotation_weight * terms["rotation"]
    terms["loss"] = total
    return terms
