"""SimCLR-style projection head: the MLP between a backbone's embedding and the contrastive space.

SimCLR (Chen et al., 2020) and CSI put a two-layer MLP ``Linear -> ReLU -> Linear`` on
the pooled features and compute the contrastive loss on its (L2-normalised) output. The
head returns raw outputs; normalise them with :func:`l2_normalize` where a loss needs
unit vectors.

Example:
    >>> head = ProjectionHead(in_dim=512, hidden_dim=512, out_dim=128)
    >>> l2_normalize(head(torch.randn(4, 512))).norm(dim=1)
    tensor([1.0000, 1.0000, 1.0000, 1.0000], grad_fn=<LinalgVectorNormBackward0>)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProjectionHead", "l2_normalize"]


class ProjectionHead(nn.Sequential):
    """``Linear(in, hidden) [-> BatchNorm] -> ReLU -> Linear(hidden, out)``; (B, in) -> (B, out).

    Args:
        in_dim: input features (the backbone's ``out_dim``).
        hidden_dim: hidden width.
        out_dim: output dimension (the contrastive embedding size).
        batch_norm: BatchNorm after the hidden layer (SimCLR v2); off in SimCLR v1 / CSI.

    Example:
        >>> ProjectionHead(64, 32, 16)(torch.randn(2, 64)).shape
        torch.Size([2, 16])
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = False):
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, but got {name}={value}")
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)]
        super().__init__(*layers)
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim


def l2_normalize(x: torch.Tensor, dim: int = 1, eps: float = 1e-12) -> torch.Tensor:
    """``x / max(||x||, eps)`` along ``dim`` (computed in float32 at least, for bf16 inputs).

    Example:
        >>> l2_normalize(torch.tensor([[3.0, 4.0]]))
        tensor([[0.6000, 0.8000]])
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return F.normalize(x, dim=dim, eps=eps)
