"""clflow's training loss (CL-Flow, SPIE ISPP 2024): L = L_nll + lambda_cls * L_cls + lambda_con * L_con.

The batch the model saw is ``[clean (B), synthetic copies (B)]`` in mode clflow and
``clean (B)`` alone otherwise; ``masks`` (B, H, W) mark the synthetic regions of the
copies (all zero for copies left clean). ``s`` below is the flow's per-position score
0.5 * mean_c z^2 of a level, the quantity the anomaly map is made of.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raysearch.components.flow import nll
from raysearch.methods.clflow.model import CLFlowOutput
from raysearch.methods.clflow.params import CLFlowParams

__all__ = ["clflow_loss", "nll_loss", "classification_loss", "contrastive_loss", "downsample_masks"]


def downsample_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) {0, 1} -> (B, h, w) float coverage in [0, 1] (area average)."""
    return F.interpolate(masks[:, None].float(), size=size, mode="area")[:, 0]


def nll_loss(out: CLFlowOutput, n_clean: int, per_dim: bool) -> torch.Tensor:
    """FastFlow's 0.5 ||z||^2 - log|det J| on the clean normals, averaged over levels
    (FastFlow sums them: the same up to a factor that the lambdas would absorb)."""
    terms = [nll(z[:n_clean], ld[:n_clean], per_dim=per_dim) for z, ld in zip(out.z, out.logdet)]
    return torch.stack(terms).mean()


def _smooth(target: torch.Tensor, eps: float) -> torch.Tensor:
    """Binary label smoothing: 0 -> eps / 2, 1 -> 1 - eps / 2 (two-class CE's smoothing)."""
    return target * (1 - eps) + 0.5 * eps


def classification_loss(params: CLFlowParams, out: CLFlowOutput, masks: torch.Tensor) -> torch.Tensor:
    """Label-smoothed binary cross-entropy of the heads: clean vs synthetic.

    ``image`` target: per level the image logit is the mean of the top
    ``topk_fraction`` pixel logits; the label is 1 for a copy with a synthetic region.
    ``pixel`` target: per position, against the mask's coverage of that position
    (0 for every clean image). Averaged over the levels.
    """
    c = params.classification
    assert out.logits is not None, "classification needs the heads (loss.cls_weight > 0)"
    b = masks.shape[0]
    losses = []
    for logits in out.logits:  # (2B, h, w)
        if c.target == "image":
            flat = logits.flatten(1)  # (2B, h*w)
            k = max(1, round(c.topk_fraction * flat.shape[1]))
            image_logit = flat.topk(k, dim=1).values.mean(1)  # (2B,)
            labels = torch.cat([masks.new_zeros(b), masks.flatten(1).amax(1)]).float()  # (2B,)
            losses.append(F.binary_cross_entropy_with_logits(image_logit, _smooth(labels, c.label_smoothing)))
        else:
            cover = downsample_masks(masks, tuple(logits.shape[-2:]))  # (B, h, w)
            target = torch.cat([torch.zeros_like(cover), cover])  # (2B, h, w)
            losses.append(F.binary_cross_entropy_with_logits(logits, _smooth(target, c.label_smoothing)))
    return torch.stack(losses).mean()


def contrastive_loss(params: CLFlowParams, out: CLFlowOutput, masks: torch.Tensor) -> torch.Tensor:
    """Region contrast (push) + consistency of untouched positions (pull), averaged over levels.

    Push, per synthetic copy b with region coverage m (downsampled mask, (h, w)): the
    region's scores s1 are the positive and every position of the clean source's
    scores s0 a negative, InfoNCE over positions at temperature tau:

        pos = log sum_p m_p exp(s1_p / tau),   neg = log sum_p exp(s0_p / tau)
        L_push = -log(e^pos / (e^pos + e^neg)) = softplus(neg - pos)

    It lowers the likelihood of the synthetic region below that of the whole clean
    image (and raises the clean image's). Copies without a region at this level are
    skipped. Pull: mean_c (z1 - z0)^2 over positions more than one cell from the
    region (the receptive field blurs the border), weighted by ``pull_weight``.
    """
    c = params.contrastive
    tau = c.temperature
    b = masks.shape[0]
    losses = []
    for z, s in zip(out.z, out.score):
        s0, s1 = s[:b], s[b:]  # (B, h, w) clean source, synthetic copy
        cover = downsample_masks(masks, tuple(s.shape[-2:]))  # (B, h, w)
        has = cover.flatten(1).amax(1) > 0  # (B,) a region reaches this level
        # log(m_p) + s1_p / tau inside the region; a large finite negative outside (not
        # -inf: a row without a region would give NaN gradients through logsumexp).
        logits = (s1 / tau + cover.clamp_min(1e-12).log()).masked_fill(cover <= 0, -1e4)
        pos = torch.logsumexp(logits.flatten(1), dim=1)  # (B,)
        neg = torch.logsumexp((s0 / tau).flatten(1), dim=1)  # (B,)
        push = F.softplus(neg - pos)  # (B,)
        term = (push * has).sum() / has.sum().clamp_min(1)  # rows without a region count 0
        if c.pull_weight > 0:
            near = F.max_pool2d((cover > 0).float()[:, None], 3, stride=1, padding=1)[:, 0]  # (B, h, w)
            far = 1.0 - near
            diff = (z[b:] - z[:b]).pow(2).mean(1)  # (B, h, w)
            term = term + c.pull_weight * (far * diff).sum() / far.sum().clamp_min(1)
        losses.append(term)
    return torch.stack(losses).mean()


def clflow_loss(
    params: CLFlowParams, out: CLFlowOutput, n_clean: int, masks: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """Loss terms of one batch; ``masks`` is None when no synthesis ran (NLL alone)."""
    w = params.loss
    terms: dict[str, torch.Tensor] = {"nll": nll_loss(out, n_clean, w.per_dim)}
    total = terms["nll"]
    if masks is not None:
        if w.cls_weight > 0:
            terms["cls"] = classification_loss(params, out, masks)
            total = total + w.cls_weight * terms["cls"]
        if w.con_weight > 0:
            terms["contrastive"] = contrastive_loss(params, out, masks)
            total = total + w.con_weight * terms["contrastive"]
    terms["loss"] = total
    return terms
