"""Known answers for distcon's numerical parts: the GMM clustering loss and NT-Xent."""

import math

import pytest
import torch
import torch.nn.functional as F

from raysearch.components.gmm import RotationGMM, em_fit, gmm_clustering_loss
from raysearch.components.ntxent import nt_xent


def test_k1_fixed_isotropic_gmm_loss_is_goad():
    # GOAD: p(r | z) = softmax_r(-||z - c_r||^2); a K=1 mixture with fixed variance 1/2
    # has log p_r(z) = -||z - c_r||^2 + const, so the clustering loss at T=1 is GOAD's.
    g = torch.Generator().manual_seed(0)
    gmm = RotationGMM(rotations=4, components=1, dim=6, covariance="fixed", fixed_variance=0.5, generator=g)
    with torch.no_grad():
        gmm.means.copy_(torch.randn(4, 1, 6, generator=g))
    z = torch.randn(10, 6, generator=g)
    targets = torch.randint(4, (10,), generator=g)
    centres = gmm.means[:, 0]  # (R, D)
    goad_logits = -torch.cdist(z, centres).pow(2)
    expected = F.cross_entropy(goad_logits, targets)
    got = gmm_clustering_loss(gmm.log_prob(z), targets, temperature=1.0)
    assert torch.allclose(got, expected, atol=1e-5)


def test_log_prob_matches_closed_form_diag_gaussian():
    gmm = RotationGMM(rotations=1, components=1, dim=3, covariance="diag")
    with torch.no_grad():
        gmm.means.copy_(torch.tensor([[[1.0, -1.0, 0.5]]]))
        gmm.log_vars.copy_(torch.log(torch.tensor([[[0.5, 2.0, 1.0]]])))
    z = torch.tensor([[0.0, 0.0, 0.0]])
    dist = torch.distributions.MultivariateNormal(
        torch.tensor([1.0, -1.0, 0.5]), covariance_matrix=torch.diag(torch.tensor([0.5, 2.0, 1.0]))
    )
    assert torch.allclose(gmm.log_prob(z)[0, 0], dist.log_prob(z[0]), atol=1e-5)


def test_mixture_logsumexp_over_components():
    gmm = RotationGMM(rotations=1, components=2, dim=1, covariance="fixed", fixed_variance=1.0)
    with torch.no_grad():
        gmm.means.copy_(torch.tensor([[[-3.0], [3.0]]]))
    z = torch.tensor([[3.0]])
    n = torch.distributions.Normal
    expected = math.log(0.5 * n(-3.0, 1.0).log_prob(torch.tensor(3.0)).exp() + 0.5 * n(3.0, 1.0).log_prob(torch.tensor(3.0)).exp())
    assert abs(float(gmm.log_prob(z)[0, 0]) - expected) < 1e-5


def test_em_recovers_two_separated_blobs():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(200, 2, generator=g) * 0.3 + torch.tensor([5.0, 5.0])
    b = torch.randn(100, 2, generator=g) * 0.3 + torch.tensor([-5.0, -5.0])
    means, log_vars, log_pi = em_fit(torch.cat([a, b]), 2, covariance="diag", iters=20, generator=g)
    order = means[:, 0].argsort()
    assert torch.allclose(means[order], torch.tensor([[-5.0, -5.0], [5.0, 5.0]]), atol=0.15)
    assert torch.allclose(log_pi[order].exp(), torch.tensor([1 / 3, 2 / 3]), atol=0.02)
    assert torch.allclose(log_vars.exp(), torch.full((2, 2), 0.09), atol=0.04)


def test_gmm_loss_prefers_own_rotation():
    # Two rotations whose mixtures sit at separated blobs: features near blob r get low
    # loss for target r and high loss for the other target.
    gmm = RotationGMM(rotations=2, components=2, dim=2, covariance="spherical")
    with torch.no_grad():
        gmm.means.copy_(torch.tensor([[[4.0, 0.0], [4.0, 1.0]], [[-4.0, 0.0], [-4.0, 1.0]]]))
        gmm.log_vars.zero_()
    z = torch.tensor([[4.0, 0.5], [-4.0, 0.5]])
    right = gmm_clustering_loss(gmm.log_prob(z), torch.tensor([0, 1]), 1.0)
    wrong = gmm_clustering_loss(gmm.log_prob(z), torch.tensor([1, 0]), 1.0)
    assert right < 1e-3 < 10 < wrong


def test_refit_overwrites_buffers_per_rotation():
    g = torch.Generator().manual_seed(0)
    gmm = RotationGMM(rotations=2, components=1, dim=2, learnable=False)
    feats = torch.stack([torch.randn(50, 2, generator=g) + 3, torch.randn(50, 2, generator=g) - 3])
    gmm.refit(feats, iters=5, generator=g)
    assert torch.allclose(gmm.means[:, 0], feats.mean(1), atol=1e-4)
    assert not any(p.requires_grad for p in gmm.parameters())


def _hand_ntxent(z1, z2, tau):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        sims = [(z[i] @ z[j]).item() / tau for j in range(2 * n) if j != i]
        logits = torch.tensor(sims)
        idx = pos if pos < i else pos - 1
        total += -(logits[idx] - torch.logsumexp(logits, 0)).item()
    return total / (2 * n)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_ntxent_matches_hand_computation(tau):
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    assert abs(float(nt_xent(z1, z2, tau)) - _hand_ntxent(z1, z2, tau)) < 1e-4


def test_ntxent_positive_pairs_and_rotated_negatives():
    # Orthogonal instances: identical views give the minimum loss log(1 + (2N-2) e^{-1/tau}) with
    # positives at similarity 1 and every negative (other instances = other rotations) at 0.
    eye = torch.eye(4)
    tau = 0.5
    expected = math.log(1 + 6 * math.exp(-1 / tau))
    assert abs(float(nt_xent(eye, eye, tau)) - expected) < 1e-5
    # Making "same image, other rotation" identical to the anchor raises the loss: it is a negative.
    collapsed = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    assert float(nt_xent(collapsed, collapsed, tau)) > expected + 0.1
