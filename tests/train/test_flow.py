"""Flow2D: exact inverse, log-determinant against autograd's Jacobian, trainable NLL."""

from __future__ import annotations

import pytest
import torch

from raysearch.components.flow import Flow2D, FlowStep, anomaly_map, nll


def _randomised_flow(conv3x3_only: bool, dtype=torch.float64) -> Flow2D:
    """A flow whose every part is non-trivial (no zero-init coupling, non-identity affine)."""
    g = torch.Generator().manual_seed(1)
    flow = Flow2D(
        4,
        steps=3,
        hidden_ratio=1.0,
        conv3x3_only=conv3x3_only,
        clamp=1.5,
        zero_init=False,
        generator=g,
    )
    with torch.no_grad():
        for step in flow.steps:
            step.log_scale.copy_(0.3 * torch.randn(4, generator=g))
            step.offset.copy_(0.3 * torch.randn(4, generator=g))
    return flow.to(dtype)


@pytest.mark.parametrize("conv3x3_only", [True, False])
def test_inverse_recovers_input(conv3x3_only):
    flow = _randomised_flow(conv3x3_only)
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    z, _ = flow(x)
    assert z.shape == x.shape
    torch.testing.assert_close(flow.inverse(z), x, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("conv3x3_only", [True, False])
def test_logdet_matches_autograd_jacobian(conv3x3_only):
    flow = _randomised_flow(conv3x3_only)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    _, logdet = flow(x)
    assert logdet.shape == (2,)
    for b in range(2):
        jac = torch.autograd.functional.jacobian(
            lambda v: flow(v[None])[0][0], x[b]
        )  # (4,3,3,4,3,3)
        sign, logabs = torch.linalg.slogdet(jac.reshape(36, 36))
        assert sign != 0
        torch.testing.assert_close(logdet[b], logabs, atol=1e-9, rtol=1e-9)
    assert logdet[0] != logdet[1]  # the coupling log-det depends on the input


def test_step_kernels_and_validation():
    flow = Flow2D(6, steps=4, conv3x3_only=False)
    assert [s.subnet[0].kernel_size[0] for s in flow.steps] == [3, 1, 3, 1]
    flow = Flow2D(6, steps=2, conv3x3_only=True)
    assert [s.subnet[0].kernel_size[0] for s in flow.steps] == [3, 3]
    with pytest.raises(ValueError, match="channels"):
        FlowStep(1)
    with pytest.raises(ValueError, match="clamp"):
        FlowStep(4, clamp=0.0)
    # zero-init couplings start as the identity map
    x = torch.randn(2, 6, 3, 3)
    z, logdet = Flow2D(6, steps=3)(x)
    assert torch.equal(z.sort(dim=1).values, x.sort(dim=1).values)
    assert torch.all(logdet == 0)


def test_deterministic_construction():
    a = Flow2D(4, steps=2, zero_init=False, generator=torch.Generator().manual_seed(5))
    b = Flow2D(4, steps=2, zero_init=False, generator=torch.Generator().manual_seed(5))
    for (na, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), na


def test_nll_and_anomaly_map():
    z = torch.full((2, 3, 4, 4), 2.0)
    logdet = torch.tensor([1.0, 3.0])
    # 0.5 * 48 * 4 = 96 per sample, minus the log-dets, mean over the batch
    assert nll(z, logdet).item() == pytest.approx(94.0)
    assert nll(z, logdet, per_dim=True).item() == pytest.approx(94.0 / 48)
    amap = anomaly_map(z)
    assert amap.shape == (2, 4, 4) and torch.all(amap == 2.0)


def test_training_lowers_nll():
    g = torch.Generator().manual_seed(0)
    x = 3.0 + 2.0 * torch.randn(16, 4, 4, 4, generator=g)  # far from N(0, 1)
    flow = Flow2D(4, steps=2, hidden_ratio=0.5, generator=g)
    opt = torch.optim.Adam(flow.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        loss = nll(*flow(x), per_dim=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0
