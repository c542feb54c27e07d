"""LayerCAM against a hand computation, and batch == per-sample."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from raysearch.components.layercam import capture_activations, combine, layercam


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 5, 3, stride=2, padding=1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        a1 = F.relu(self.c1(x))  # (B, 4, 8, 8)
        a2 = F.relu(self.c2(a1))  # (B, 5, 4, 4)
        return self.fc(a2.mean(dim=(2, 3))), {"l1": a1, "l2": a2}


def _by_hand(
    net: TinyNet, x: torch.Tensor, cls: int, size: int, gamma: float
) -> dict[str, torch.Tensor]:
    """One sample (1, 3, H, W), written out element by element from the LayerCAM paper."""
    logits, acts = net(x)
    y = logits[0, cls]
    out = {}
    for name in ("l1", "l2"):
        a = acts[name]
        (g,) = torch.autograd.grad(y, a, retain_graph=True)
        a, g = a[0].detach(), g[0]  # (C, h, w)
        cam = torch.zeros(a.shape[1:], dtype=a.dtype)
        for c in range(a.shape[0]):
            cam += torch.clamp(g[c], min=0) * a[c]
        cam = torch.clamp(cam, min=0)
        cam = (cam - cam.min()) / (cam.max() - cam.min())
        if name == "l1":  # shallow layer: tanh(gamma * M / max M), then [0, 1] again
            cam = torch.tanh(gamma * cam / cam.max())
            cam = (cam - cam.min()) / (cam.max() - cam.min())
        out[name] = F.interpolate(
            cam[None, None], size=(size, size), mode="bilinear", align_corners=False
        )[0, 0]
    return out


def test_matches_hand_computation_and_per_sample():
    net = TinyNet().double()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cls = torch.tensor([0, 2, 1, 0])
    logits, acts = net(x)
    maps = layercam(
        acts, logits.gather(1, cls[:, None])[:, 0], image_size=12, shallow=("l1",), gamma=2.0
    )
    assert set(maps) == {"l1", "l2"}
    for b in range(4):
        hand = _by_hand(net, x[b : b + 1], int(cls[b]), 12, 2.0)
        single_logits, single_acts = net(x[b : b + 1])
        single = layercam(single_acts, single_logits[:, cls[b]], image_size=12, shallow=("l1",))
        for name in ("l1", "l2"):
            assert maps[name].shape == (4, 12, 12)
            torch.testing.assert_close(maps[name][b], hand[name], atol=1e-10, rtol=1e-8)
            torch.testing.assert_close(maps[name][b], single[name][0], atol=1e-10, rtol=1e-8)
            assert maps[name].min() >= 0 and maps[name].max() <= 1


def test_capture_activations_on_frozen_net_and_errors():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    ).requires_grad_(False)
    x = torch.randn(3, 3, 6, 6)
    with capture_activations(net, ["1", "3"]) as acts:
        logits = net(x)
    maps = layercam(acts, logits[:, 1], image_size=(6, 9), shallow=("1",))
    assert maps["1"].shape == (3, 6, 9) and maps["3"].shape == (3, 6, 9)
    assert all(p.grad is None for p in net.parameters())
    with pytest.raises(ValueError, match="unknown layers"):
        with capture_activations(net, ["layer9"]):
            pass
    with pytest.raises(ValueError, match="does not require grad"):
        layercam({"a": torch.rand(3, 2, 2, 2)}, torch.rand(3), 4)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        layercam({"a": torch.rand(3, 2, 2, 2, requires_grad=True)}, torch.rand(3, 1), 4)


def test_combine():
    a = torch.zeros(2, 3, 3)
    b = torch.ones(2, 3, 3)
    assert torch.allclose(combine({"a": a, "b": b}), torch.full((2, 3, 3), 0.5))
    assert torch.equal(combine([a, b], how="max"), b)
    assert torch.allclose(combine([a, b], weights=[1.0, 3.0]), torch.full((2, 3, 3), 0.75))
    with pytest.raises(ValueError, match="how"):
        combine([a], how="median")
