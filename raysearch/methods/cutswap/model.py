"""cutswap's network: backbone -> pooled embedding h -> MLP head e -> class logits (normal first)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from raysearch.components.backbones import build_backbone
from raysearch.methods.cutswap.params import CutSwapParams

__all__ = ["CutSwapNet", "NetOutput", "NORMAL"]

NORMAL = 0  # index of the normal class; 1 = CutSwap, 2 = the third (CutPaste / scar) class


class NetOutput(NamedTuple):
    h: torch.Tensor  # (B, D) pooled backbone embedding
    e: torch.Tensor  # (B, hidden) last hidden layer of the head (h itself without hidden layers)
    logits: torch.Tensor  # (B, num_classes)
    level: torch.Tensor | None  # (B, C_l, H_l, W_l) one extra feature level when asked for


class CutSwapNet(nn.Module):
    """The CutPaste classifier shape: encoder f, MLP g (Linear-ReLU blocks), linear classifier.

    Example:
        >>> from raysearch.methods.cutswap.params import BackboneParams
        >>> net = CutSwapNet(CutSwapParams(backbone=BackboneParams("small_cnn", width=8)), 32)
        >>> net(torch.randn(2, 3, 32, 32)).logits.shape
        torch.Size([2, 3])
    """

    def __init__(self, params: CutSwapParams, image_size: int):
        super().__init__()
        bb = params.backbone
        self.backbone = build_backbone(bb.name, weights=bb.weights, image_size=image_size, width=bb.width)
        dim = self.backbone.out_dim
        blocks: list[nn.Module] = []
        for _ in range(params.head.layers):
            blocks += [nn.Linear(dim, params.head.hidden), nn.ReLU(inplace=True)]
            dim = params.head.hidden
        self.head = nn.Sequential(*blocks)  # empty = identity
        self.classifier = nn.Linear(dim, params.task.num_classes)

    def forward(self, x: torch.Tensor, level: str | None = None) -> NetOutput:
        """x (B, 3, H, W) normalised; ``level`` also returns that backbone level's features."""
        last = self.backbone.level_names[-1]
        wanted = [last] if level is None or level == last else [level, last]
        feats = self.backbone.features(x, levels=wanted)
        h = feats[last].mean(dim=(2, 3))  # (B, D): global average pooling
        e = self.head(h)
        return NetOutput(h, e, self.classifier(e), None if level is None else feats[level])
