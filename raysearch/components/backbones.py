"""Convolutional feature extractors shared by the methods, behind one small interface.

A :class:`Backbone` gives a pooled embedding (``forward``) and named feature levels
(``features``): distcon and cutswap train one from scratch or fine-tune it, clflow
freezes one (:func:`set_frozen`) and reads several levels. Built by name through
:func:`build_backbone`:

- ``small_cnn``: a tiny CNN for CPU demos and tests (levels layer1..layer3).
- ``resnet18``: torchvision's ResNet-18; with ``image_size <= cifar_stem_max_size``
  (64) the CIFAR stem (3x3 conv, stride 1, no max-pool) replaces the 7x7/2 conv and
  the max-pool, as in SimCLR / CSI for 32 px images; the standard stem otherwise.
- ``wide_resnet50_2``: torchvision's Wide-ResNet-50-2 (always the standard stem), the
  extractor of FastFlow / CL-Flow for 256 px industrial images.

Weights are ``random``, ``imagenet`` (torchvision's file, read only from the local
torch hub cache; nothing is ever downloaded) or a path to a state dict. Every device
choice is the caller's: modules are built on the CPU and move with ``.to(device)``.

Example:
    >>> bb = build_backbone("small_cnn", image_size=32)
    >>> bb(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 128])
    >>> {k: tuple(v.shape) for k, v in bb.features(torch.randn(2, 3, 32, 32)).items()}
    {'layer1': (2, 32, 16, 16), 'layer2': (2, 64, 8, 8), 'layer3': (2, 128, 4, 4)}
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models

from raysearch.config.schema import SpecError

__all__ = [
    "Backbone",
    "SmallCNN",
    "ResNetBackbone",
    "BACKBONES",
    "build_backbone",
    "imagenet_weights_path",
    "load_backbone_weights",
    "set_frozen",
]

_NAME_KEY = "params.backbone.name"
_WEIGHTS_KEY = "params.backbone.weights"


class Backbone(nn.Module):
    """A feature extractor: a stem followed by named stages, one feature level each.

    Subclasses build ``self.stem`` (a module) and one submodule per entry of
    ``level_names`` (registered under that name), then call :meth:`_set_levels`.
    ``features`` runs the stem and the stages in order and stops after the deepest
    level asked for; ``forward`` global-average-pools the last level.

    Attributes:
        level_names: the levels, shallow to deep, e.g. ``["layer1", "layer2", "layer3"]``.
        level_channels: channels of each level.
        out_dim: size of the pooled embedding (channels of the last level).
        weights_loaded: ``"random"``, ``"imagenet:<file>"`` or the state-dict path.
        weights_skipped: parameter names left at their random init when weights were
            loaded (ResNet-18's ``conv1.weight`` under the CIFAR stem with ImageNet weights).
        frozen: set by :func:`set_frozen`; a frozen backbone stays in eval mode even
            when a parent module calls ``.train()``.
    """

    stem: Callable[[torch.Tensor], torch.Tensor]  # a module, or a method in ResNetBackbone
    level_names: list[str]
    level_channels: dict[str, int]
    out_dim: int

    def __init__(self) -> None:
        super().__init__()
        self.weights_loaded = "random"
        self.weights_skipped: tuple[str, ...] = ()
        self.frozen = False

    def _set_levels(self, channels: Mapping[str, int]) -> None:
        self.level_names = list(channels)
        self.level_channels = dict(channels)
        self.out_dim = self.level_channels[self.level_names[-1]]

    def features(self, x: torch.Tensor, levels: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Named feature maps ``{level: (B, C_l, H_l, W_l)}`` of ``x`` (B, 3, H, W).

        Args:
            levels: the levels to return (default all); computation stops after the
                deepest one, so asking for shallow levels only is cheaper.

        Example:
            >>> bb = build_backbone("small_cnn")
            >>> list(bb.features(torch.randn(1, 3, 32, 32), levels=["layer2"]))
            ['layer2']
        """
        wanted = self.level_names if levels is None else list(levels)
        unknown = [name for name in wanted if name not in self.level_channels]
        if unknown:
            raise ValueError(f"unknown feature levels {unknown}; this backbone has {self.level_names}")
        deepest = max(self.level_names.index(name) for name in wanted)
        out: dict[str, torch.Tensor] = {}
        h = self.stem(x)  # (B, C_0, H_0, W_0)
        for name in self.level_names[: deepest + 1]:
            h = self.get_submodule(name)(h)  # (B, C_l, H_l, W_l)
            if name in wanted:
                out[name] = h
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embedding (B, out_dim): global average of the last level."""
        last = self.level_names[-1]
        return self.features(x, levels=[last])[last].mean(dim=(2, 3))  # (B, C)

    def train(self, mode: bool = True) -> Backbone:
        # A frozen extractor keeps its BatchNorm statistics fixed whatever its parent does.
        return super().train(mode and not self.frozen)


def _conv_bn_relu(cin: int, cout: int, stride: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(Backbone):
    """A fast CNN for CPU demos and tests: a 3x3 stem then three stride-2 stages.

    Stage l has ``width * 2**(l-1)`` channels (levels layer1..layer3, at 1/2, 1/4 and 1/8
    of the input size); each stage is a stride-2 conv-BN-ReLU followed by
    ``convs_per_stage - 1`` stride-1 ones.

    Args:
        width: channels of the stem and of layer1.
        convs_per_stage: conv-BN-ReLU blocks per stage.
        in_channels: input channels.

    Example:
        >>> SmallCNN(width=16).out_dim
        64
    """

    def __init__(self, width: int = 32, convs_per_stage: int = 1, in_channels: int = 3):
        super().__init__()
        if width < 1 or convs_per_stage < 1:
            raise ValueError(f"width and convs_per_stage must be >= 1, but got {width=}, {convs_per_stage=}")
        self.stem = _conv_bn_relu(in_channels, width, stride=1)
        channels: dict[str, int] = {}
        cin = width
        for level in range(1, 4):
            cout = width * 2 ** (level - 1)
            blocks = [_conv_bn_relu(cin, cout, stride=2)]
            blocks += [_conv_bn_relu(cout, cout, stride=1) for _ in range(convs_per_stage - 1)]
            name = f"layer{level}"
            self.add_module(name, nn.Sequential(*blocks))
            channels[name] = cout
            cin = cout
        self._set_levels(channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


class ResNetBackbone(Backbone):
    """A torchvision ResNet without its classifier; levels layer1..layer4.

    The submodules keep torchvision's names (``conv1``, ``bn1``, ``layer1`` ...), so the
    state dict of this module is torchvision's minus ``fc.*`` and torchvision files load
    directly.

    Args:
        net: a torchvision ``ResNet`` (its ``fc`` is dropped).
        cifar_stem: replace ``conv1`` by a 3x3 stride-1 conv and drop the max-pool.

    Example:
        >>> bb = ResNetBackbone(models.resnet18(), cifar_stem=True)
        >>> bb(torch.randn(1, 3, 32, 32)).shape
        torch.Size([1, 512])
    """

    def __init__(self, net: models.ResNet, cifar_stem: bool = False):
        super().__init__()
        self.cifar_stem = cifar_stem
        if cifar_stem:
            # SimCLR / CSI for 32 px inputs: keep the spatial resolution in the stem.
            net.conv1 = nn.Conv2d(3, net.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
            net.maxpool = nn.Identity()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self._set_levels({name: _out_channels(self.get_submodule(name)) for name in ("layer1", "layer2", "layer3", "layer4")})

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/s, W/s)


def _out_channels(stage: nn.Sequential) -> int:
    block = stage[-1]  # BasicBlock (conv1, conv2) or Bottleneck (conv1..conv3)
    return (getattr(block, "conv3", None) or block.conv2).out_channels


# name -> (constructor, torchvision weights enum member for "imagenet" or None)
_TORCHVISION: dict[str, tuple[Callable[..., models.ResNet], Any]] = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1),
    "wide_resnet50_2": (models.wide_resnet50_2, models.Wide_ResNet50_2_Weights.IMAGENET1K_V1),
}

#: The registered backbone names (for messages and spec validation).
BACKBONES: tuple[str, ...] = ("small_cnn", *_TORCHVISION)


def imagenet_weights_path(name: str) -> tuple[Path, str]:
    """Where the torchvision ImageNet weights of ``name`` must be, and where to get them.

    The file is torchvision's own (``resnet18-f37072fd.pth``,
    ``wide_resnet50_2-95faca4d.pth``: the IMAGENET1K_V1 weights) in
    ``torch.hub.get_dir()/checkpoints``, the place torchvision itself caches it.

    Example:
        >>> imagenet_weights_path("resnet18")[0].name
        'resnet18-f37072fd.pth'
    """
    if name not in _TORCHVISION:
        raise SpecError(f"no ImageNet weights for backbone {name!r}; known for {sorted(_TORCHVISION)}", key=_WEIGHTS_KEY)
    url = _TORCHVISION[name][1].url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def _unwrap_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SpecError(f"{source} does not hold a state dict (a mapping of tensors, or one under 'state_dict' / 'model')", key=_WEIGHTS_KEY)
    return dict(obj)


# Prefixes under which a backbone may sit in a saved checkpoint (DDP, a method's model).
_PREFIXES = ("", "module.", "backbone.", "module.backbone.", "encoder.", "net.")


def load_backbone_weights(backbone: Backbone, state: Mapping[str, torch.Tensor], source: str) -> tuple[str, ...]:
    """Copy ``state`` into ``backbone``; returns the parameter names left untouched.

    Keys may carry a prefix (``module.``, ``backbone.`` ...); extra keys (a classifier's
    ``fc.*``) are ignored. Every tensor of the backbone must be present with the same
    shape, except the first conv of a CIFAR-stem ResNet, which is skipped (and
    reported) when its shape differs (ImageNet's 7x7 kernel).

    Raises:
        SpecError: missing keys or other shape mismatches; the message names them.
    """
    own = backbone.state_dict()
    best_prefix = max(_PREFIXES, key=lambda p: sum(p + k in state for k in own))
    state = {k[len(best_prefix) :]: v for k, v in state.items() if k.startswith(best_prefix)}
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    skippable = {"conv1.weight"} if getattr(backbone, "cifar_stem", False) else set()
    missing = [k for k in own if k not in state and k not in optional]
    mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
    bad = [k for k in mismatched if k not in skippable]
    if missing or bad:
        details = []
        if missing:
            details.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if bad:
            details.append("shape mismatch for " + ", ".join(f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in bad[:3]))
        raise SpecError(f"{source} does not fit this backbone: " + "; ".join(details), key=_WEIGHTS_KEY)
    skipped = tuple(mismatched)
    backbone.load_state_dict({k: v for k, v in state.items() if k in own and k not in skipped}, strict=False)
    return skipped


def build_backbone(name: str, weights: str = "random", image_size: int = 32, width: int = 32, cifar_stem_max_size: int = 64) -> Backbone:
    """Build a backbone by name and load its weights.

    Args:
        name: ``small_cnn``, ``resnet18`` or ``wide_resnet50_2``.
        weights: ``random``; ``imagenet`` -- torchvision's IMAGENET1K_V1 file, read only
            from ``torch.hub.get_dir()/checkpoints`` (never downloaded; a missing file
            is a :class:`SpecError` saying where to put it and where to get it); or the
            path of a state dict (raw, or under ``state_dict`` / ``model``). For the
            CIFAR-stem ResNet-18 everything loads except ``conv1.weight`` (7x7 in
            ImageNet files, 3x3 here), which stays random and is listed in
            ``weights_skipped``.
        image_size: input size; ResNet-18 uses the CIFAR stem when it is at most
            ``cifar_stem_max_size``.
        width: small_cnn's first-stage channels (ignored by the ResNets).
        cifar_stem_max_size: the largest image size that gets ResNet-18's CIFAR stem.

    Returns:
        The backbone, on the CPU, in training mode, with ``weights_loaded`` set.

    Example:
        >>> bb = build_backbone("resnet18", image_size=32)
        >>> bb.out_dim, bb.level_channels["layer1"], bb.weights_loaded
        (512, 64, 'random')
    """
    if name == "small_cnn":
        backbone: Backbone = SmallCNN(width=width)
    elif name in _TORCHVISION:
        constructor = _TORCHVISION[name][0]
        cifar = name == "resnet18" and image_size <= cifar_stem_max_size
        backbone = ResNetBackbone(constructor(weights=None), cifar_stem=cifar)
    else:
        raise SpecError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}", key=_NAME_KEY)

    if weights == "random":
        return backbone
    if weights == "imagenet":
        path, url = imagenet_weights_path(name)
        if not path.is_file():
            raise SpecError(
                f"weights 'imagenet' for {name} are read only from the local torch cache and {path} does not exist; "
                f"download {url} and put it at {path} (or set TORCH_HOME), or give a file path instead",
                key=_WEIGHTS_KEY,
            )
        label = f"imagenet:{path.name}"
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise SpecError(f"weights file {str(path)!r} does not exist (expected 'random', 'imagenet' or a state-dict path)", key=_WEIGHTS_KEY)
        label = str(weights)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt or non-tensor pickle: say which file
        raise SpecError(f"cannot read weights file {str(path)!r}: {err}", key=_WEIGHTS_KEY) from err
    backbone.weights_skipped = load_backbone_weights(backbone, _unwrap_state_dict(obj, repr(str(path))), repr(str(path)))
    backbone.weights_loaded = label
    return backbone


def set_frozen(module: nn.Module, frozen: bool = True) -> nn.Module:
    """Freeze (or unfreeze) ``module``: no gradients and BatchNorm in eval mode.

    A frozen :class:`Backbone` anywhere inside ``module`` stays in eval mode when a
    parent later calls ``.train()`` (clflow's fixed extractor). Returns ``module``.

    Example:
        >>> bb = set_frozen(build_backbone("small_cnn"))
        >>> bb.train().training, any(p.requires_grad for p in bb.parameters())
        (False, False)
    """
    for sub in module.modules():
        if isinstance(sub, Backbone):
            sub.frozen = frozen
    module.requires_grad_(not frozen)
    module.train(not frozen)
    return module
