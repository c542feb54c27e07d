"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020).

Two views ``z1[i]`` and ``z2[i]`` of the same sample are positives; every other of the
2N embeddings is a negative. distcon treats an image under rotation r as its own
sample, so the same image under another rotation is a negative (CSI-style shifted
instances).

Example:
    >>> z = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    >>> float(nt_xent(z, z, temperature=0.5)) > 0
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["nt_xent"]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Mean NT-Xent loss over the 2N anchors.

    Args:
        z1, z2: (N, D) embeddings of two views; row i of each is a positive pair.
            They are L2-normalised here, so cosine similarity is used.
        temperature: tau; lower sharpens the softmax over similarities.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, D)
    sim = z @ z.t() / temperature  # (2N, 2N)
    sim.fill_diagonal_(float("-inf"))  # an anchor is not its own negative
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # (2N,)
    return F.cross_entropy(sim, targets)
