"""Gaussian mixtures over features, one mixture per transformation (rotation).

Used by distcon (KBS 2025): for every rotation r a mixture of K Gaussians with mixing
logits, means and (diagonal, spherical or fixed) variances models the normal features
seen under r. ``log p_r(z) = logsumexp_k [log pi_rk + log N(z | mu_rk, Sigma_rk)]``.

The mixtures can be learned by gradient (their parameters are ``nn.Parameter``\\ s) or
refit from features with EM / k-means under stop-gradient (then they are buffers that
:meth:`RotationGMM.refit` overwrites).

Example:
    >>> gmm = RotationGMM(rotations=4, components=2, dim=8)
    >>> gmm.log_prob(torch.randn(5, 8)).shape
    torch.Size([5, 4])
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RotationGMM", "gmm_clustering_loss", "diag_gaussian_log_prob", "em_fit"]

Covariance = Literal["diag", "spherical", "fixed"]
_LOG_2PI = math.log(2 * math.pi)


def diag_gaussian_log_prob(z: torch.Tensor, means: torch.Tensor, log_vars: torch.Tensor) -> torch.Tensor:
    """log N(z | mu, diag(exp(log_var))) for every sample and component.

    Shapes: z (N, D), means (..., D), log_vars broadcastable to means -> (N, ...).
    """
    diff = z.reshape(z.shape[0], *([1] * (means.dim() - 1)), z.shape[1]) - means  # (N, ..., D)
    log_vars = log_vars.expand_as(means)
    return -0.5 * ((diff.pow(2) * torch.exp(-log_vars)).sum(-1) + log_vars.sum(-1) + z.shape[1] * _LOG_2PI)


class RotationGMM(nn.Module):
    """R independent K-component Gaussian mixtures in a D-dimensional feature space.

    Args:
        rotations: R, the number of transformations (one mixture each).
        components: K, Gaussians per mixture.
        dim: D, feature dimension.
        covariance: ``diag`` (a variance per dimension and component), ``spherical``
            (one per component) or ``fixed`` (``fixed_variance`` everywhere, not learned;
            with K = 1 this is GOAD's centre-distance classifier).
        learnable: parameters learned by gradient; else buffers refit by :meth:`refit`.
        fixed_variance: the variance of the ``fixed`` covariance.
        min_log_var: floor on log-variances, so densities stay bounded.
    """

    def __init__(
        self,
        rotations: int,
        components: int,
        dim: int,
        covariance: Covariance = "diag",
        learnable: bool = True,
        fixed_variance: float = 1.0,
        min_log_var: float = -6.0,
        init_scale: float = 0.1,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.rotations, self.components, self.dim = rotations, components, dim
        self.covariance = covariance
        self.min_log_var = min_log_var
        self.fixed_log_var = math.log(fixed_variance)
        means = torch.randn(rotations, components, dim, generator=generator) * init_scale  # (R, K, D)
        var_dim = {"diag": dim, "spherical": 1, "fixed": 1}[covariance]
        log_vars = torch.full((rotations, components, var_dim), self.fixed_log_var)  # (R, K, 1|D)
        mix = torch.zeros(rotations, components)  # (R, K) mixing logits
        learn_var = learnable and covariance != "fixed"
        self._register("means", means, learnable)
        self._register("log_vars", log_vars, learn_var)
        self._register("mix_logits", mix, learnable)
        self.learnable = learnable

    def _register(self, name: str, value: torch.Tensor, learnable: bool) -> None:
        if learnable:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    def clamped_log_vars(self) -> torch.Tensor:
        return self.log_vars.clamp(min=self.min_log_var)  # (R, K, 1|D)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p_r(z) of every sample under every rotation's mixture: (N, D) -> (N, R)."""
        z = z.float()
        comp = diag_gaussian_log_prob(z, self.means.float(), self.clamped_log_vars().float())  # (N, R, K)
        log_pi = F.log_softmax(self.mix_logits.float(), dim=-1)  # (R, K)
        return torch.logsumexp(comp + log_pi, dim=-1)  # (N, R)

    @torch.no_grad()
    def refit(
        self,
        features: torch.Tensor,
        iters: int = 10,
        method: Literal["em", "kmeans"] = "em",
        generator: torch.Generator | None = None,
    ) -> None:
        """Refit every rotation's mixture on features (R, N, D) under stop-gradient."""
        for r in range(self.rotations):
            means, log_vars, log_pi = em_fit(
                features[r].float(),
                self.components,
                covariance=self.covariance,
                iters=iters,
                hard=(method == "kmeans"),
                fixed_log_var=self.fixed_log_var,
                min_log_var=self.min_log_var,
                generator=generator,
            )
            self.means.data[r] = means
            if self.covariance != "fixed":
                self.log_vars.data[r] = log_vars
            self.mix_logits.data[r] = log_pi


def gmm_clustering_loss(log_probs: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """distcon's GMM clustering loss: cross-entropy of softmax_r(log p_r(z) / T) against r.

    It raises the likelihood under the applied rotation's mixture and lowers it under
    the others. log_probs (N, R), targets (N,) rotation indices.
    """
    return F.cross_entropy(log_probs / temperature, targets)


def em_fit(
    x: torch.Tensor,
    k: int,
    covariance: Covariance = "diag",
    iters: int = 10,
    hard: bool = False,
    fixed_log_var: float = 0.0,
    min_log_var: float = -6.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EM (or hard-assignment k-means when ``hard``) for one mixture on x (N, D).

    Initialised with k-means++-style seeding from ``generator``. Returns
    means (K, D), log-variances (K, 1|D) and log mixing weights (K,).
    """
    n, d = x.shape
    k_eff = min(k, n)
    # k-means++ seeding: each next centre drawn with probability ~ squared distance.
    first = torch.randint(n, (1,), generator=generator, device=x.device)
    centres = [x[first[0]]]
    for _ in range(1, k_eff):
        dist = torch.cdist(x, torch.stack(centres)).min(dim=1).values.pow(2)  # (N,)
        probs = dist / dist.sum().clamp_min(1e-12)
        centres.append(x[torch.multinomial(probs + 1e-12, 1, generator=generator)[0]])
    means = torch.stack(centres)  # (K', D)
    if k_eff < k:  # fewer points than components: duplicate centres
        means = means[torch.arange(k, device=x.device) % k_eff]
    var_dim = d if covariance == "diag" else 1
    log_vars = torch.full((k, var_dim), fixed_log_var, device=x.device)
    log_pi = torch.full((k,), -math.log(k), device=x.device)
    for _ in range(iters):
        # E step: responsibilities (N, K)
        log_r = diag_gaussian_log_prob(x, means, log_vars.clamp(min=min_log_var)) + log_pi
        if hard:
            resp = F.one_hot(log_r.argmax(dim=1), k).float()
        else:
            resp = torch.softmax(log_r, dim=1)
        nk = resp.sum(0) + 1e-6  # (K,)
        # M step
        means = (resp.t() @ x) / nk[:, None]  # (K, D)
        if covariance != "fixed":
            sq = (resp.t() @ x.pow(2)) / nk[:, None] - means.pow(2)  # (K, D)
            sq = sq.clamp_min(math.exp(min_log_var))
            log_vars = sq.log() if covariance == "diag" else sq.mean(1, keepdim=True).log()
        log_pi = (nk / nk.sum()).log()
    return means, log_vars, log_pi
