"""Backbones: shapes of every registered name, offline weight loading, freezing; projection head."""

from __future__ import annotations

import pytest
import torch
from torchvision import models

from raysearch.components.backbones import (
    BACKBONES,
    Backbone,
    build_backbone,
    imagenet_weights_path,
    set_frozen,
)
from raysearch.components.projection import ProjectionHead, l2_normalize
from raysearch.config.schema import SpecError

# name, image size, {level: (channels, spatial size)}
SHAPES = [
    ("small_cnn", 32, {"layer1": (32, 16), "layer2": (64, 8), "layer3": (128, 4)}),
    ("resnet18", 32, {"layer1": (64, 32), "layer2": (128, 16), "layer3": (256, 8), "layer4": (512, 4)}),
    ("resnet18", 128, {"layer1": (64, 32), "layer2": (128, 16), "layer3": (256, 8), "layer4": (512, 4)}),
    ("wide_resnet50_2", 64, {"layer1": (256, 16), "layer2": (512, 8), "layer3": (1024, 4), "layer4": (2048, 2)}),
]


@pytest.mark.parametrize("name, size, levels", SHAPES, ids=[f"{n}-{s}" for n, s, _ in SHAPES])
def test_shapes(name, size, levels):
    torch.manual_seed(0)
    bb = build_backbone(name, image_size=size)
    assert isinstance(bb, Backbone) and bb.weights_loaded == "random"
    assert bb.level_names == list(levels)
    assert bb.level_channels == {k: c for k, (c, _) in levels.items()}
    x = torch.randn(2, 3, size, size)
    feats = bb.features(x)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {k: (2, c, s, s) for k, (c, s) in levels.items()}
    emb = bb(x)
    assert emb.shape == (2, bb.out_dim) and bb.out_dim == levels[bb.level_names[-1]][0]
    assert torch.isfinite(emb).all()


def test_features_stop_at_the_deepest_requested_level():
    bb = build_backbone("resnet18", image_size=32)
    called = []
    bb.layer4.register_forward_hook(lambda *a: called.append(1))
    feats = bb.features(torch.randn(1, 3, 32, 32), levels=["layer2", "layer1"])
    assert set(feats) == {"layer1", "layer2"} and not called
    with pytest.raises(ValueError, match="layer9"):
        bb.features(torch.randn(1, 3, 32, 32), levels=["layer9"])


def test_unknown_name_lists_known_names():
    with pytest.raises(SpecError) as info:
        build_backbone("vgg16")
    assert info.value.key == "params.backbone.name"
    assert all(name in str(info.value) for name in BACKBONES)


def test_imagenet_missing_from_cache_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(SpecError) as info:
        build_backbone("resnet18", weights="imagenet", image_size=224)
    expected = tmp_path / "checkpoints" / "resnet18-f37072fd.pth"
    assert info.value.key == "params.backbone.weights"
    assert str(expected) in str(info.value)
    assert models.ResNet18_Weights.IMAGENET1K_V1.url in str(info.value)
    assert not expected.exists()  # nothing was downloaded
    with pytest.raises(SpecError, match="no ImageNet weights"):
        build_backbone("small_cnn", weights="imagenet")


def test_imagenet_from_cache_and_cifar_stem_skips_conv1(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    torch.manual_seed(1)
    reference = models.resnet18().state_dict()  # stands in for the real file, with its fc.*
    path, _ = imagenet_weights_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(reference, path)

    standard = build_backbone("resnet18", weights="imagenet", image_size=224)
    assert standard.weights_loaded == "imagenet:resnet18-f37072fd.pth"
    assert standard.weights_skipped == ()
    for k, v in standard.state_dict().items():
        assert torch.equal(v, reference[k]), k

    cifar = build_backbone("resnet18", weights="imagenet", image_size=32)
    assert cifar.weights_skipped == ("conv1.weight",)
    assert cifar.conv1.weight.shape == (64, 3, 3, 3)
    assert torch.equal(cifar.layer3[0].conv1.weight, reference["layer3.0.conv1.weight"])


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "model", "module_prefix"])
def test_state_dict_file_round_trip(tmp_path, wrap):
    torch.manual_seed(2)
    src = build_backbone("small_cnn", width=8).eval()
    state = src.state_dict()
    obj = {
        "raw": state,
        "state_dict": {"state_dict": state, "epoch": 3},
        "model": {"model": state},
        "module_prefix": {"module." + k: v for k, v in state.items()},
    }[wrap]
    path = tmp_path / "bb.pt"
    torch.save(obj, path)
    torch.manual_seed(3)  # a different random init, overwritten by the file
    dst = build_backbone("small_cnn", weights=str(path), width=8).eval()
    assert dst.weights_loaded == str(path)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_resnet_round_trip_from_a_method_checkpoint(tmp_path):
    src = build_backbone("resnet18", image_size=32).eval()
    model = torch.nn.ModuleDict({"backbone": src, "head": torch.nn.Linear(512, 4)})
    torch.save({"model": model.state_dict()}, tmp_path / "ckpt.pt")
    dst = build_backbone("resnet18", weights=str(tmp_path / "ckpt.pt"), image_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_bad_weight_files(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(SpecError, match="nope.pt") as info:
        build_backbone("small_cnn", weights=str(missing))
    assert info.value.key == "params.backbone.weights"
    torch.save(build_backbone("small_cnn", width=8).state_dict(), tmp_path / "w8.pt")
    with pytest.raises(SpecError, match="shape mismatch"):
        build_backbone("small_cnn", weights=str(tmp_path / "w8.pt"), width=16)


def test_set_frozen_keeps_eval_mode_and_statistics():
    bb = build_backbone("small_cnn", width=8)
    parent = torch.nn.ModuleDict({"extractor": set_frozen(bb), "head": torch.nn.BatchNorm1d(4)})
    parent.train()
    assert not bb.training and parent["head"].training
    assert not any(p.requires_grad for p in bb.parameters())
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    bb(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert all(torch.equal(v, before[k]) for k, v in bb.state_dict().items())
    set_frozen(bb, False)
    assert bb.training and all(p.requires_grad for p in bb.parameters())


def test_projection_head():
    head = ProjectionHead(in_dim=32, hidden_dim=16, out_dim=8)
    out = head(torch.randn(5, 32))
    assert out.shape == (5, 8)
    z = l2_normalize(out.to(torch.bfloat16))
    assert z.dtype == torch.float32
    assert torch.allclose(z.norm(dim=1), torch.ones(5), atol=1e-2)
    assert ProjectionHead(32, 16, 8, batch_norm=True)(torch.randn(5, 32)).shape == (5, 8)
    with pytest.raises(ValueError, match="out_dim"):
        ProjectionHead(32, 16, 0)
