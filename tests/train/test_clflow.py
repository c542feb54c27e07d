"""clflow: known-answer tests of the model, the loss, the synthesis and the scoring (CPU, fast)."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from raysearch.config.schema import SpecError, build
from raysearch.data.augment import normalize, to_float
from raysearch.methods.base import DataInfo
from raysearch.methods.clflow.loss import contrastive_loss, downsample_masks
from raysearch.methods.clflow.method import CLFlow
from raysearch.methods.clflow.model import CLFlowNet, CLFlowOutput, resolve_weights
from raysearch.methods.clflow.params import CLFlowParams

SIZE = 32


def make_params(**flat) -> CLFlowParams:
    base = {"backbone.name": "small_cnn", "backbone.width": 8, "flow.steps": 2}
    base.update(flat)
    return build(CLFlowParams, base, prefix="params")


def make_method(seed: int = 0, **flat) -> CLFlow:
    info = DataInfo(channels=3, image_size=SIZE, num_train=16, has_masks=True)
    return CLFlow(make_params(**flat), info, torch.device("cpu"), seed=seed)


def normals(n: int, seed: int = 0) -> torch.Tensor:
    """Grey images with mild pixel noise: uint8 (n, 3, SIZE, SIZE)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(-15, 16, (n, 3, SIZE, SIZE), generator=g)
    return (120 + noise).clamp(0, 255).to(torch.uint8)


def test_likelihood_map_lower_on_planted_anomaly_after_fitting():
    torch.manual_seed(0)
    method = make_method(mode="plain_fastflow")
    model = method.build()
    clean = normals(1, seed=1)  # held out: not among the training images
    defect = clean.clone()
    defect[:, :, 8:20, 8:20] = 255  # a bright square
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, 8:20, 8:20] = 1

    @torch.no_grad()
    def level_scores():
        model.eval()
        out = model(normalize(to_float(torch.cat([clean, defect]))))
        model.train()
        ratios, normal_nll = [], []
        for s, z, ld in zip(out.score, out.z, out.logdet):
            inside = downsample_masks(mask, tuple(s.shape[-2:]))[0] >= 0.99  # cells fully inside
            assert inside.any()
            ratios.append(float(s[1][inside].mean() / s[0][inside].mean()))
            normal_nll.append(float(0.5 * z[0].pow(2).sum() - ld[0]) / z[0].numel())
        return ratios, normal_nll

    ratios_before, nll_before = level_scores()
    opt = torch.optim.Adam(method.trainable_parameters(model), lr=3e-3)
    train = normals(8)
    for _ in range(8):
        loss = method.training_step(model, train, 0)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    ratios, nll_after = level_scores()
    # Every level: the square's cells are far less likely than the same cells of the clean image.
    assert all(r > 2 for r in ratios), ratios
    # Fitting helped: the held-out normal got more likely, the contrast grew.
    assert all(a < b for a, b in zip(nll_after, nll_before)), (nll_before, nll_after)
    assert np.mean(ratios) > np.mean(ratios_before) + 1, (ratios_before, ratios)
    scores = method.score(model, torch.cat([clean, defect]))
    assert scores.image[1] > scores.image[0]
    inside = mask[0].bool()
    assert scores.maps[1][inside].mean() > scores.maps[0][inside].mean()


def test_frozen_backbone_no_grad_and_eval_after_train():
    method = make_method()
    model = method.build()
    model.train()
    assert model.training and not model.backbone.training
    assert all(not m.training for m in model.backbone.modules())
    assert not any(p.requires_grad for p in model.backbone.parameters())
    method.training_step(model, normals(4), 0)["loss"].backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.flows.parameters() if p.requires_grad)
    running = [b.clone() for b in model.backbone.buffers()]
    method.training_step(model, normals(4, seed=3), 0)  # BatchNorm statistics do not move
    assert all(torch.equal(a, b) for a, b in zip(running, model.backbone.buffers()))


@pytest.mark.parametrize("mode,heads", [("clflow", True), ("plain_fastflow", False)])
def test_trainable_count_is_norms_flows_heads(mode, heads):
    method = make_method(mode=mode)
    model = method.build()
    parts = [model.norms, model.flows] + ([model.heads] if heads else [])
    expected = sum(p.numel() for part in parts for p in part.parameters())
    assert (model.heads is not None) == heads
    assert method.count_parameters(model) == expected
    backbone = sum(p.numel() for p in model.backbone.parameters())
    assert sum(p.numel() for p in model.parameters()) == expected + backbone


def test_plain_fastflow_makes_no_synthesis_call(monkeypatch):
    method = make_method(mode="plain_fastflow")
    model = method.build()

    def boom(*args, **kwargs):
        raise AssertionError("plain_fastflow must not synthesise")

    monkeypatch.setattr(method, "synthesize", boom)
    losses = method.training_step(model, normals(4), 0)
    assert set(losses) == {"nll", "loss"}
    assert torch.equal(losses["loss"], losses["nll"])


def test_clflow_loss_terms_and_proxy_start_epoch():
    method = make_method(**{"loss.proxy_start_epoch": 1})
    model = method.build()
    assert set(method.training_step(model, normals(4), 0)) == {"nll", "loss"}  # NLL alone first
    losses = method.training_step(model, normals(4), 1)
    assert set(losses) == {"nll", "cls", "contrastive", "loss"}
    w = method.params.loss
    expected = losses["nll"] + w.cls_weight * losses["cls"] + w.con_weight * losses["contrastive"]
    assert torch.allclose(losses["loss"], expected)
    no_con = make_method(**{"loss.con_weight": 0.0})
    assert set(no_con.training_step(no_con.build(), normals(4), 0)) == {"nll", "cls", "loss"}
    no_cls = make_method(**{"loss.cls_weight": 0.0})
    assert no_cls.build().heads is None


@pytest.mark.parametrize("target", ["image", "pixel"])
def test_classification_targets_backprop_into_flows(target):
    method = make_method(**{"classification.target": target, "loss.con_weight": 0.0})
    model = method.build()
    model.zero_grad()
    method.training_step(model, normals(4), 0)["cls"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.heads.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.flows.parameters())


def test_contrastive_known_answers_and_finite_without_region():
    params = make_params(**{"contrastive.pull_weight": 0.0, "contrastive.temperature": 1.0})
    b, h, w = 2, 4, 4
    masks = torch.zeros(b, 8, 8, dtype=torch.uint8)
    masks[0, :4, :4] = 1  # image 0: region = the top-left 2x2 cells; image 1: no region
    z = torch.zeros(2 * b, 2, h, w)

    def out_for(score):
        return CLFlowOutput([z], [torch.zeros(2 * b)], [score], None)

    flat = torch.zeros(2 * b, h, w, requires_grad=True)  # equal scores everywhere
    loss = contrastive_loss(params, out_for(flat), masks)
    # pos = log(4 e^0), neg = log(16 e^0): softplus(log 16 - log 4) = log(1 + 4)
    assert float(loss.detach()) == pytest.approx(np.log(5.0), rel=1e-5)
    loss.backward()
    assert torch.isfinite(flat.grad).all()
    assert flat.grad[1].abs().sum() == 0 and flat.grad[3].abs().sum() == 0  # no region: no gradient
    assert flat.grad[2, :2, :2].sum() < 0  # the region's scores are pushed up
    separated = torch.zeros(2 * b, h, w)
    separated[2, :2, :2] = 40.0
    assert float(contrastive_loss(params, out_for(separated), masks)) < 1e-6


def test_synthesis_changes_only_masked_pixels_and_prob():
    method = make_method(**{"synthesis.kinds": "perlin+cutpaste+scar", "synthesis.patch_jitter": 0.0})
    images = normals(12)
    out, masks = method.synthesize(images)
    assert out.dtype == torch.uint8 and masks.shape == (12, SIZE, SIZE)
    assert masks.flatten(1).any(1).all()  # prob 1: every copy has a region
    outside = ~masks.bool()[:, None].expand_as(out)
    assert torch.equal(out[outside], images[outside])
    half = make_method(**{"synthesis.prob": 0.5})
    _, m = half.synthesize(normals(64))
    has = m.flatten(1).any(1).float().mean()
    assert 0.2 < float(has) < 0.8


def test_texture_dir_fills_perlin_regions(tmp_path):
    for i, colour in enumerate([(255, 0, 0), (250, 5, 0)]):
        Image.fromarray(np.full((20, 24, 3), colour, dtype=np.uint8)).save(tmp_path / f"t{i}.png")
    method = make_method(**{"synthesis.texture_dir": str(tmp_path), "synthesis.beta_min": 1.0})
    method.build()
    out, masks = method.synthesize(normals(4))
    inside = masks.bool()
    assert (out[:, 0][inside] >= 250).all() and (out[:, 2][inside] == 0).all()
    with pytest.raises(SpecError, match="texture_dir"):
        make_method(**{"synthesis.texture_dir": str(tmp_path / "none")}).build()


def test_maps_have_image_size_and_image_score_is_their_max():
    method = make_method()
    model = method.build()
    images = normals(5)
    s = method.score(model, images)
    assert s.maps.shape == (5, SIZE, SIZE) and s.maps.dtype == torch.float32
    assert torch.allclose(s.image, s.maps.flatten(1).amax(1))
    topk = make_method(**{"score.reduce": "topk_mean", "score.topk_fraction": 0.25})
    t = topk.score(model, images)
    k = SIZE * SIZE // 4
    assert torch.allclose(t.image, t.maps.flatten(1).topk(k, dim=1).values.mean(1))
    assert model.training is True  # scoring restores the mode it found


def test_same_seed_same_run_other_seed_differs():
    def run(seed):
        torch.manual_seed(0)
        method = make_method(seed=seed)
        model = method.build()
        synthetic, masks = method.synthesize(normals(4))
        losses = method.training_step(model, normals(4), 0)
        return synthetic, masks, float(losses["loss"].detach()), method.score(model, normals(3)).image

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[2] == b[2] and torch.equal(a[3], b[3])
    assert not torch.equal(a[1], c[1])


def test_params_validation_names_the_key():
    with pytest.raises(SpecError, match="params.backbone.levels"):
        make_params(**{"backbone.levels": "layer1+layer4"})  # small_cnn has no layer4
    with pytest.raises(SpecError, match="params.synthesis.kinds"):
        make_params(**{"synthesis.kinds": "perlin+draem"})
    with pytest.raises(SpecError, match="params.synthesis.beta_min"):
        make_params(**{"synthesis.beta_min": 0.9, "synthesis.beta_max": 0.5})
    with pytest.raises(SpecError, match="params.mode"):
        make_params(mode="fastflow")
    assert dataclasses.asdict(CLFlowParams())["mode"] == "clflow"


def test_auto_weights_fall_back_to_random_and_describe_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty torch cache
    assert resolve_weights("resnet18", "auto") == "random"
    assert resolve_weights("resnet18", "imagenet") == "imagenet"
    method = make_method()
    method.build()
    assert method.describe()["weights"] == "random"
    net = CLFlowNet(make_params(**{"backbone.name": "resnet18", "backbone.levels": "layer1+layer2"}), SIZE)
    assert net.backbone.weights_loaded == "random" and len(net.flows) == 2
