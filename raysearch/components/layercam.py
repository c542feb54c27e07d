"""LayerCAM saliency maps for a whole batch from one backward pass.

Paper: Jiang et al. 2021, "LayerCAM: Exploring Hierarchical Class Activation Maps for
Localization", IEEE TIP 30, 5875-5888. Used by cutswap (multilevel saliency-guided
patch swapping, SIVP 2024) on several layers of a ResNet.

For a target logit y and the activations A (C, h, w) of one layer (paper eq. 4-5):

    M = ReLU( sum_c ReLU(dy/dA_c) * A_c )            # (h, w), element-wise weights

M is min-max normalised per image. Shallow layers have weak but wide responses, so the
paper rescales them (eq. 9) with M <- tanh(gamma * M / max(M)), gamma = 2; after the
min-max step max(M) = 1. We min-max again after the tanh (``renormalize_shallow``;
our choice, it keeps every level in [0, 1] before fusion). Maps are then upsampled
bilinearly to the image size.

Batching: the samples of a batch do not interact in a network without batch-statistics
(eval-mode BatchNorm, or none), so d(sum_b y_b)/dA_b = dy_b/dA_b and one
``torch.autograd.grad`` call of ``target.sum()`` gives every sample's gradients.

Example:
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4, 2))
    >>> x = torch.randn(5, 3, 8, 8)
    >>> with capture_activations(net, ["1"]) as acts:
    ...     logits = net(x)
    >>> maps = layercam(acts, logits[:, 0], image_size=16, shallow=["1"])
    >>> maps["1"].shape
    torch.Size([5, 16, 16])
    >>> combine(maps, how="max").shape
    torch.Size([5, 16, 16])
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["layercam", "combine", "capture_activations", "minmax_normalize"]


def minmax_normalize(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-image min-max normalisation of (B, H, W) maps to [0, 1]; a flat map becomes 0.

    Example:
        >>> minmax_normalize(torch.tensor([[[1.0, 3.0]], [[2.0, 2.0]]]))
        tensor([[[0., 1.]],
        <BLANKLINE>
                [[0., 0.]]])
    """
    lo = maps.amin(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    hi = maps.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    return (maps - lo) / (hi - lo).clamp_min(eps)


def layercam(
    activations: Mapping[str, torch.Tensor],
    target: torch.Tensor,
    image_size: int | tuple[int, int],
    shallow: Collection[str] = ("layer1", "layer2"),
    gamma: float = 2.0,
    renormalize_shallow: bool = True,
    eps: float = 1e-8,
    create_graph: bool = False,
    retain_graph: bool | None = None,
) -> dict[str, torch.Tensor]:
    """LayerCAM maps of every given layer for every sample, from one backward pass.

    Args:
        activations: layer name -> (B, C, h, w) activations that are part of the graph
            of ``target`` (see :func:`capture_activations`).
        target: (B,) the score to explain per sample, e.g. ``logits[:, 0]`` or
            ``logits.gather(1, labels[:, None])[:, 0]``.
        image_size: output (H, W), or one int for square maps.
        shallow: names of the layers that get the tanh rescaling (paper eq. 9).
        gamma: the tanh rescaling factor (paper: 2).
        renormalize_shallow: min-max normalise again after the tanh.
        eps: floor of the min-max range (a flat map becomes all zeros).
        create_graph: keep the graph of the gradients (for a loss through the maps).
        retain_graph: keep the forward graph for a later backward; None = create_graph.

    Returns:
        layer name -> (B, H, W) maps in [0, 1], detached unless ``create_graph``.

    Example:
        >>> a = torch.rand(2, 3, 4, 4, requires_grad=True)
        >>> y = a.mean(dim=(1, 2, 3))
        >>> layercam({"layer1": a}, y, image_size=(8, 8))["layer1"].shape
        torch.Size([2, 8, 8])
    """
    if target.dim() != 1:
        raise ValueError(
            f"target must be a (B,) tensor of per-sample scores, but got shape {tuple(target.shape)}."
        )
    if not activations:
        raise ValueError("activations is empty; expected at least one layer.")
    names = list(activations)
    for name in names:
        act = activations[name]
        if act.dim() != 4 or act.shape[0] != target.shape[0]:
            raise ValueError(
                f"activations[{name!r}] must be (B, C, h, w) with B = {target.shape[0]}, but got shape {tuple(act.shape)}."
            )
        if not act.requires_grad:
            raise ValueError(
                f"activations[{name!r}] does not require grad, so target has no gradient w.r.t. it; "
                "record it with capture_activations(...) or run the model on inputs with requires_grad."
            )
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    retain = create_graph if retain_graph is None else retain_graph
    # One backward pass for all layers and all samples (summing the per-sample scores).
    grads = torch.autograd.grad(
        target.sum(),
        [activations[n] for n in names],
        create_graph=create_graph,
        retain_graph=retain,
    )
    out: dict[str, torch.Tensor] = {}
    for name, grad in zip(names, grads, strict=True):
        act = activations[name]
        if not create_graph:
            act = act.detach()
        # LayerCAM eq. 4-5: element-wise weights ReLU(grad) instead of Grad-CAM's channel means.
        cam = F.relu((F.relu(grad) * act).sum(dim=1))  # (B, h, w)
        cam = minmax_normalize(cam, eps)
        if name in shallow:
            cam = torch.tanh(gamma * cam)  # eq. 9, max(M) = 1 after the min-max step
            if renormalize_shallow:
                cam = minmax_normalize(cam, eps)
        # Bilinear upsampling is a convex combination, so the range stays [0, 1].
        cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[
            :, 0
        ]  # (B, H, W)
        out[name] = cam
    return out


def combine(
    maps: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
    how: Literal["mean", "max"] = "mean",
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Fuse same-size (B, H, W) maps of several levels into one (B, H, W) map.

    ``mean`` is a (weighted) average, ``max`` the pixel-wise maximum (LayerCAM fuses
    levels by the maximum; ``weights`` only apply to ``mean``).

    Example:
        >>> a, b = torch.zeros(1, 2, 2), torch.ones(1, 2, 2)
        >>> combine([a, b]).mean().item(), combine([a, b], how="max").mean().item()
        (0.5, 1.0)
    """
    tensors = list(maps.values()) if isinstance(maps, Mapping) else list(maps)
    if not tensors:
        raise ValueError("maps is empty; expected at least one (B, H, W) map.")
    stacked = torch.stack(tensors)  # (L, B, H, W)
    if how == "max":
        return stacked.amax(dim=0)
    if how != "mean":
        raise ValueError(f"how must be 'mean' or 'max', but got {how=}.")
    if weights is None:
        return stacked.mean(dim=0)
    if len(weights) != len(tensors):
        raise ValueError(
            f"weights must have one entry per map ({len(tensors)}), but got {len(weights)}."
        )
    w = torch.as_tensor(weights, dtype=stacked.dtype, device=stacked.device)  # (L,)
    return (stacked * w.view(-1, 1, 1, 1)).sum(0) / w.sum()


@contextmanager
def capture_activations(
    model: nn.Module, layers: Sequence[str], force_grad: bool = True
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of named submodules during forward passes inside the block.

    Args:
        model: the network (e.g. a torchvision ResNet; layers "layer1".."layer4").
        layers: names as in ``model.named_modules()``.
        force_grad: if an output does not require grad (frozen weights, plain inputs),
            mark it as requiring grad so the rest of the forward builds a graph from it
            and :func:`layercam` can differentiate w.r.t. it. Only under grad mode.

    Yields:
        A dict filled by the hooks: layer name -> its last output.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.ReLU()).requires_grad_(False)
        >>> with capture_activations(net, ["0"]) as acts:
        ...     _ = net(torch.randn(1, 1, 2, 2))
        >>> acts["0"].requires_grad
        True
    """
    modules = dict(model.named_modules())
    missing = [n for n in layers if n not in modules]
    if missing:
        raise ValueError(f"unknown layers {missing}; the model has {[n for n in modules if n]}.")
    store: dict[str, torch.Tensor] = {}

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            if force_grad and torch.is_grad_enabled() and not output.requires_grad:
                output.requires_grad_(True)  # a leaf: later layers now track it
            store[name] = output

        return hook

    handles = [modules[n].register_forward_hook(make_hook(n)) for n in layers]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()
