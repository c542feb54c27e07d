"""Gaussian density estimation (GDE) of normal embeddings; score = Mahalanobis distance.

As in CutPaste (Li et al. 2021, Sec. 3.3, following Rippel et al. 2020): a single
Gaussian N(mu, Sigma) is fitted to the embeddings of the training normals, Sigma with
Ledoit-Wolf shrinkage (Ledoit & Wolf 2004, scikit-learn's ``LedoitWolf``) because the
embedding dimension is close to (or above) the number of training images. The anomaly
score is the Mahalanobis distance sqrt((x - mu)^T Sigma^-1 (x - mu)).

The fit runs once per evaluation on the CPU in float64 (scikit-learn); mean and
precision matrix then live on the device in float64 (a shrunk covariance can still be
ill-conditioned) and scoring is torch code.

Example:
    >>> x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    >>> g = GaussianDensity.fit(x)
    >>> d = g.mahalanobis(torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]]))
    >>> bool(d[1] > 5 * d[0])
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["GaussianDensity"]


@dataclass
class GaussianDensity:
    mean: torch.Tensor  # (D,)
    precision: torch.Tensor  # (D, D) inverse of the shrunk covariance
    shrinkage: float  # Ledoit-Wolf's shrinkage coefficient in [0, 1]

    @classmethod
    def fit(cls, x: torch.Tensor) -> GaussianDensity:
        """Fit on (N, D) samples (N >= 2); returned tensors on ``x``'s device, float64."""
        from sklearn.covariance import LedoitWolf  # local: keep import-time light

        if x.dim() != 2 or x.shape[0] < 2:
            raise ValueError(f"x must be (N >= 2, D), but got shape {tuple(x.shape)}.")
        data = x.detach().double().cpu().numpy()
        lw = LedoitWolf(assume_centered=False).fit(data)
        # Ledoit-Wolf covariance is positive definite whenever the data are not constant;
        # pinvh guards the degenerate case (all-equal embeddings) without an exception.
        precision = np.linalg.pinv(lw.covariance_, hermitian=True)
        return cls(
            mean=torch.from_numpy(lw.location_).to(x.device, torch.float64),
            precision=torch.from_numpy(precision).to(x.device, torch.float64),
            shrinkage=float(lw.shrinkage_),
        )

    def mahalanobis(self, x: torch.Tensor) -> torch.Tensor:
        """Distances (N,) float32 of (N, D) samples (computed in float64)."""
        d = x.double() - self.mean  # (N, D)
        sq = ((d @ self.precision) * d).sum(dim=1)  # (N,) = d^T P d per row
        return sq.clamp_min(0).sqrt().float()

    def to(self, device: torch.device | str) -> GaussianDensity:
        return GaussianDensity(self.mean.to(device), self.precision.to(device), self.shrinkage)
