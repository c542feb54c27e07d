"""clflow's network: frozen backbone -> per-level norm -> per-level 2D flow (-> score heads).

Only the norms, the flows and the heads train (:meth:`CLFlowNet.trainable_parameters`);
the backbone is frozen with :func:`~raysearch.components.backbones.set_frozen`, gets no
gradient (its features are computed under ``no_grad``) and stays in eval mode when the
loop calls ``model.train()``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from raysearch.components.backbones import build_backbone, imagenet_weights_path, set_frozen
from raysearch.components.flow import Flow2D, anomaly_map
from raysearch.methods.clflow.params import CLFlowParams

__all__ = ["CLFlowNet", "CLFlowOutput", "ChannelNorm", "ScoreHead", "resolve_weights"]


def resolve_weights(name: str, weights: str) -> str:
    """``auto`` -> ``imagenet`` when torchvision's file is in the local torch cache, else ``random``.

    Every other value is returned as is (``build_backbone`` checks it).

    Example:
        >>> resolve_weights("small_cnn", "auto")
        'random'
    """
    if weights != "auto":
        return weights
    if name == "small_cnn":
        return "random"  # no pretrained weights exist for the demo CNN
    path, _ = imagenet_weights_path(name)
    return "imagenet" if path.is_file() else "random"


def _init_conv(conv: nn.Conv2d, generator: torch.Generator) -> None:
    """PyTorch's default Conv2d init (kaiming-uniform, a=sqrt(5)) drawn from ``generator``."""
    with torch.no_grad():
        nn.init.kaiming_uniform_(conv.weight, a=math.sqrt(5), generator=generator)
        bound = 1.0 / math.sqrt(conv.weight[0].numel())
        conv.bias.uniform_(-bound, bound, generator=generator)


class ChannelNorm(nn.Module):
    """LayerNorm over the channels at every position of a (B, C, H, W) map, with a per-channel affine."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C, H, W)


class ScoreHead(nn.Module):
    """Pixel logits from a per-position flow score: (B, H, W) -> (B, H, W).

    conv3x3(1 -> hidden) -> ReLU -> conv1x1(hidden -> 1) on log(1 + s); the log keeps the
    input O(1) while anomalous scores grow by orders of magnitude.
    """

    def __init__(self, hidden: int, generator: torch.Generator):
        super().__init__()
        conv_in = nn.utils.skip_init(nn.Conv2d, 1, hidden, 3, padding=1)
        conv_out = nn.utils.skip_init(nn.Conv2d, hidden, 1, 1)
        _init_conv(conv_in, generator)
        _init_conv(conv_out, generator)
        self.net = nn.Sequential(conv_in, nn.ReLU(), conv_out)

    def forward(self, score: torch.Tensor) -> torch.Tensor:
        return self.net(torch.log1p(score)[:, None])[:, 0]


class CLFlowOutput(NamedTuple):
    """Per level (lists in level order)."""

    z: list[torch.Tensor]  # (B, C_l, H_l, W_l) flow outputs
    logdet: list[torch.Tensor]  # (B,) log|det dz/dx|
    score: list[torch.Tensor]  # (B, H_l, W_l) 0.5 * mean_c z^2, higher = more anomalous
    logits: list[torch.Tensor] | None  # (B, H_l, W_l) head pixel logits, or None


class CLFlowNet(nn.Module):
    """The frozen extractor, one norm and one :class:`Flow2D` per level, optional heads.

    Args:
        params: the method's parameters.
        image_size: input side in pixels (the ``chw`` LayerNorms are sized from it).
        generator: source of every trainable initial weight (flows, heads).
    """

    def __init__(self, params: CLFlowParams, image_size: int, generator: torch.Generator | None = None):
        super().__init__()
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        bb = params.backbone
        weights = resolve_weights(bb.name, bb.weights)
        self.backbone = set_frozen(build_backbone(bb.name, weights=weights, image_size=image_size, width=bb.width))
        self.levels = bb.parsed_levels()
        with torch.no_grad():  # probe the level shapes once
            probe = self.backbone.features(torch.zeros(1, 3, image_size, image_size), self.levels)
        shapes = [tuple(probe[name].shape[1:]) for name in self.levels]  # (C, H, W) per level
        f = params.flow
        norms: list[nn.Module] = []
        for c, h, w in shapes:
            if f.norm == "chw":
                norms.append(nn.LayerNorm([c, h, w], elementwise_affine=True))  # FastFlow
            elif f.norm == "channel":
                norms.append(ChannelNorm(c))
            else:
                norms.append(nn.Identity())
        self.norms = nn.ModuleList(norms)
        self.flows = nn.ModuleList(
            Flow2D(
                c,
                steps=f.steps,
                hidden_ratio=f.hidden_ratio,
                conv3x3_only=f.conv3x3_only,
                clamp=f.clamp,
                zero_init=f.zero_init,
                generator=generator,
            )
            for c, _, _ in shapes
        )
        self.heads = (
            nn.ModuleList(ScoreHead(params.classification.hidden, generator) for _ in shapes)
            if params.has_heads()
            else None
        )

    def trainable_modules(self) -> list[nn.Module]:
        """The parts the optimizer updates: norms, flows and (if any) heads."""
        return [m for m in (self.norms, self.flows, self.heads) if m is not None]

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        for module in self.trainable_modules():
            yield from (p for p in module.parameters() if p.requires_grad)

    def train(self, mode: bool = True) -> CLFlowNet:
        super().train(mode)
        self.backbone.train(False)  # frozen extractor: BatchNorm statistics never move
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Frozen features of normalised images (B, 3, H, W): one (B, C_l, H_l, W_l) per level, float32."""
        with torch.no_grad():
            feats = self.backbone.features(x, self.levels)
        return [feats[name].float() for name in self.levels]

    def forward(self, x: torch.Tensor, heads: bool = True) -> CLFlowOutput:
        """Normalised images (B, 3, H, W) -> per-level flow outputs, scores and head logits."""
        feats = self.features(x)
        zs, logdets, scores = [], [], []
        # The flows run in float32 even under bf16 autocast: exp(s) and the accumulated
        # log-determinant lose too much in bf16 (our choice).
        with torch.autocast(device_type=x.device.type, enabled=False):
            for h, norm, flow in zip(feats, self.norms, self.flows):
                z, logdet = flow(norm(h))
                zs.append(z)
                logdets.append(logdet)
                scores.append(anomaly_map(z))  # (B, H_l, W_l)
            logits = None
            if heads and self.heads is not None:
                logits = [head(s) for head, s in zip(self.heads, scores)]
        return CLFlowOutput(zs, logdets, scores, logits)

    @torch.no_grad()
    def anomaly_maps(self, x: torch.Tensor, level_map: str = "likelihood") -> torch.Tensor:
        """Image-size anomaly maps (B, H, W) of normalised images: per-level maps upsampled, averaged."""
        out = self.forward(x, heads=False)
        maps = []
        for s in out.score:
            m = -torch.expm1(-s) if level_map == "likelihood" else s  # 1 - exp(-s), or s
            maps.append(F.interpolate(m[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0])
        return torch.stack(maps).mean(0)  # (B, H, W)
