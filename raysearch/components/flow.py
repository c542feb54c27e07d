"""FastFlow-style 2D normalizing flow over feature maps.

Paper: Yu et al. 2021, "FastFlow: Unsupervised Anomaly Detection and Localization via
2D Normalizing Flows" (arXiv 2111.07677). Written here after anomalib's FastFlow, which
stacks FrEIA ``AllInOneBlock``\\ s; no FrEIA dependency. clflow (CL-Flow, SPIE 2024)
uses one :class:`Flow2D` per feature level.

One :class:`FlowStep` (an affine coupling block, RealNVP / Glow family):

1. split channels: x = [x1, x2] with C1 = C // 2 and C2 = C - C1;
2. a conv subnet on x1: conv(k) -> ReLU -> conv(k) gives (a_s, t), each C2 channels;
3. soft clamp: s = clamp * tanh(a_s / clamp)  (bounded log-scale, keeps exp(s) finite);
4. y2 = x2 * exp(s) + t, y1 = x1              log|det| = sum(s);
5. per-channel affine y <- y * exp(log_scale_c) + offset_c (ActNorm-like, FrEIA's
   "global affine")                           log|det| = H * W * sum_c log_scale_c;
6. a fixed channel permutation (a buffer)     log|det| = 0.

Example:
    >>> flow = Flow2D(channels=8, steps=4)
    >>> x = torch.randn(2, 8, 5, 5)
    >>> z, logdet = flow(x)
    >>> z.shape, logdet.shape
    (torch.Size([2, 8, 5, 5]), torch.Size([2]))
    >>> torch.allclose(flow.inverse(z), x, atol=1e-5)
    True
    >>> anomaly_map(z).shape
    torch.Size([2, 5, 5])
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["FlowStep", "Flow2D", "nll", "anomaly_map"]


def _check(name: str, value: float, ok: bool, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}, but got {name}={value!r}.")


def _init_conv(conv: nn.Conv2d, generator: torch.Generator, zero: bool) -> None:
    """PyTorch's default Conv2d init (kaiming-uniform, a=sqrt(5)) drawn from ``generator``."""
    with torch.no_grad():
        if zero:
            conv.weight.zero_()
            conv.bias.zero_()
            return
        nn.init.kaiming_uniform_(conv.weight, a=math.sqrt(5), generator=generator)
        bound = 1.0 / math.sqrt(conv.weight[0].numel())  # 1 / sqrt(fan_in)
        conv.bias.uniform_(-bound, bound, generator=generator)


class FlowStep(nn.Module):
    """One affine coupling step + per-channel affine + fixed channel permutation.

    Args:
        channels: C, feature channels (>= 2).
        hidden_ratio: hidden channels of the subnet = max(1, int(hidden_ratio * C1)),
            C1 = C // 2 its input channels (anomalib's ``subnet_conv_func``).
        kernel_size: odd kernel of both subnet convs (FastFlow: 3, or 1 every other step).
        clamp: soft-clamp bound of the log-scale, s = clamp * tanh(a_s / clamp).
        zero_init: start the subnet's last conv at zero, so the coupling starts as the
            identity (Glow's trick; our choice, FastFlow / FrEIA use the default init).
        generator: source of the initial weights and of the permutation; None means a
            fresh generator seeded with 0, so construction is always deterministic.

    Example:
        >>> step = FlowStep(4, kernel_size=1, zero_init=False)
        >>> x = torch.randn(3, 4, 2, 2)
        >>> y, logdet = step(x)
        >>> torch.allclose(step.inverse(y), x, atol=1e-5), logdet.shape
        (True, torch.Size([3]))
    """

    def __init__(
        self,
        channels: int,
        hidden_ratio: float = 1.0,
        kernel_size: int = 3,
        clamp: float = 2.0,
        zero_init: bool = True,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        _check("channels", channels, isinstance(channels, int) and channels >= 2, "an int >= 2")
        _check("hidden_ratio", hidden_ratio, hidden_ratio > 0, "> 0")
        _check(
            "kernel_size",
            kernel_size,
            kernel_size >= 1 and kernel_size % 2 == 1,
            "a positive odd int",
        )
        _check("clamp", clamp, clamp > 0, "> 0")
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        self.channels, self.clamp = channels, float(clamp)
        self.c1 = channels // 2
        self.c2 = channels - self.c1
        hidden = max(1, int(hidden_ratio * self.c1))
        pad = kernel_size // 2  # "same" padding keeps H, W
        # skip_init: no draw from the global RNG; weights come from `generator` below.
        conv_in = nn.utils.skip_init(nn.Conv2d, self.c1, hidden, kernel_size, padding=pad)
        conv_out = nn.utils.skip_init(nn.Conv2d, hidden, 2 * self.c2, kernel_size, padding=pad)
        _init_conv(conv_in, generator, zero=False)
        _init_conv(conv_out, generator, zero=zero_init)
        self.subnet = nn.Sequential(conv_in, nn.ReLU(), conv_out)
        # Per-channel affine, identity at init; exp() keeps the scale positive.
        self.log_scale = nn.Parameter(torch.zeros(channels))  # (C,)
        self.offset = nn.Parameter(torch.zeros(channels))  # (C,)
        perm = torch.randperm(channels, generator=generator)  # (C,)
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def _scale_shift(self, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.subnet(x1)  # (B, 2*C2, H, W)
        a_s, t = a[:, : self.c2], a[:, self.c2 :]  # (B, C2, H, W) each
        s = self.clamp * torch.tanh(a_s / self.clamp)  # soft clamp, |s| < clamp
        return s, t

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) -> (y (B, C, H, W), log|det dy/dx| (B,))."""
        x1, x2 = x[:, : self.c1], x[:, self.c1 :]  # (B, C1, H, W), (B, C2, H, W)
        s, t = self._scale_shift(x1)
        y2 = x2 * torch.exp(s) + t  # coupling, triangular Jacobian with diag exp(s)
        logdet = s.flatten(1).sum(1)  # (B,)
        y = torch.cat([x1, y2], dim=1)  # (B, C, H, W)
        y = y * torch.exp(self.log_scale).view(1, -1, 1, 1) + self.offset.view(1, -1, 1, 1)
        logdet = logdet + x.shape[2] * x.shape[3] * self.log_scale.sum()  # H*W per channel
        return y[:, self.perm], logdet  # a permutation has |det| = 1

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """y (B, C, H, W) -> x with forward(x)[0] == y."""
        y = y[:, self.inv_perm]
        y = (y - self.offset.view(1, -1, 1, 1)) * torch.exp(-self.log_scale).view(1, -1, 1, 1)
        y1, y2 = y[:, : self.c1], y[:, self.c1 :]
        s, t = self._scale_shift(y1)  # x1 == y1, so the subnet sees the same input
        return torch.cat([y1, (y2 - t) * torch.exp(-s)], dim=1)


class Flow2D(nn.Module):
    """A stack of :class:`FlowStep`\\ s over a (B, C, H, W) feature map (FastFlow).

    Args:
        channels: C of the feature map.
        steps: number of flow steps (FastFlow: 8 for CNN backbones, 20 for ViTs).
        hidden_ratio: subnet width relative to its input channels (FastFlow: 1.0 or 0.16).
        conv3x3_only: all subnets 3x3; else 3x3 and 1x1 alternate (step 0 is 3x3).
        clamp: soft clamp of the coupling log-scales.
        zero_init, generator: as in :class:`FlowStep`; one generator feeds all steps.

    Example:
        >>> flow = Flow2D(4, steps=2, hidden_ratio=0.5, conv3x3_only=True)
        >>> z, logdet = flow(torch.randn(1, 4, 3, 3))
        >>> bool(nll(z, logdet) > 0)
        True
    """

    def __init__(
        self,
        channels: int,
        steps: int = 8,
        hidden_ratio: float = 1.0,
        conv3x3_only: bool = False,
        clamp: float = 2.0,
        zero_init: bool = True,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        _check("steps", steps, isinstance(steps, int) and steps >= 1, "an int >= 1")
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        self.steps = nn.ModuleList(
            FlowStep(
                channels,
                hidden_ratio=hidden_ratio,
                kernel_size=3 if conv3x3_only or i % 2 == 0 else 1,
                clamp=clamp,
                zero_init=zero_init,
                generator=generator,
            )
            for i in range(steps)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) -> (z (B, C, H, W), log|det dz/dx| (B,))."""
        logdet = x.new_zeros(x.shape[0])  # (B,)
        for step in self.steps:
            x, ld = step(x)
            logdet = logdet + ld  # chain rule: log-dets of composed maps add
        return x, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, C, H, W) -> x with forward(x)[0] == z."""
        for step in reversed(self.steps):
            z = step.inverse(z)
        return z


def nll(z: torch.Tensor, logdet: torch.Tensor, per_dim: bool = False) -> torch.Tensor:
    """Negative log-likelihood under a standard normal base, mean over the batch.

    Per sample: 0.5 * ||z||^2 - log|det J| (FastFlow's loss; the constant
    0.5 * D * log(2 pi) is dropped). With ``per_dim`` it is divided by D = C * H * W,
    i.e. nats per dimension, so the loss scale (and a good learning rate) does not
    depend on the feature map size.

    Args:
        z: (B, C, H, W) flow output.
        logdet: (B,) log-determinants from :meth:`Flow2D.forward`.
        per_dim: divide by the number of dimensions D.

    Example:
        >>> z, ld = torch.zeros(2, 3, 4, 4), torch.full((2,), 4.8)
        >>> float(nll(z, ld)), float(nll(z, ld, per_dim=True))
        (-4.800000190734863, -0.10000000149011612)
    """
    per_sample = 0.5 * z.flatten(1).pow(2).sum(1) - logdet  # (B,)
    if per_dim:
        per_sample = per_sample / z[0].numel()
    return per_sample.mean()


def anomaly_map(z: torch.Tensor) -> torch.Tensor:
    """Per-pixel anomaly score 0.5 * mean_c z^2, higher = more anomalous: (B, C, H, W) -> (B, H, W).

    FastFlow's map is -exp(-0.5 * mean_c z^2), a monotone transform of this one
    (same ranking); the positive form follows this project's convention.

    Example:
        >>> anomaly_map(torch.full((1, 2, 1, 1), 2.0))
        tensor([[[2.]]])
    """
    return 0.5 * z.pow(2).mean(dim=1)  # (B, H, W)
