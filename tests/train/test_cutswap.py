"""Known-answer tests of cutswap: the swap, the pair choice, the Gaussian scorer, determinism."""

import numpy as np
import pytest
import torch

from raysearch.config.schema import SpecError, build
from raysearch.methods.base import DataInfo
from raysearch.methods.cutswap.density import GaussianDensity
from raysearch.methods.cutswap.method import CutSwap
from raysearch.methods.cutswap.params import (
    BackboneParams,
    CutSwapParams,
    PatchParams,
    SaliencyParams,
)
from raysearch.methods.cutswap.swap import cutswap, pick_pairs, sample_patch_sizes, swap_patches

SIZE = 32


def _images(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)


def _apart(centres, sizes, min_distance=1.0):
    d = (centres[:, 0] - centres[:, 1]).abs()  # (B, 2) |dy|, |dx|
    return (d[:, 0] >= min_distance * sizes[:, 0]) | (d[:, 1] >= min_distance * sizes[:, 1])


@pytest.mark.parametrize("locations", ["random", "saliency"])
def test_swap_changes_only_masked_pixels_and_keeps_the_pixel_multiset(locations):
    x = _images()
    maps = torch.rand(len(x), 16, 16, generator=torch.Generator().manual_seed(1))
    res = cutswap(x, torch.Generator().manual_seed(0), maps, locations=locations, area=(0.02, 0.15))
    mask = res.mask.bool()
    assert res.images.dtype == torch.uint8 and res.images.shape == x.shape
    # Outside the mask nothing changed.
    assert torch.equal(res.images.permute(0, 2, 3, 1)[~mask], x.permute(0, 2, 3, 1)[~mask])
    # The mask is exactly two disjoint boxes of the drawn size.
    assert torch.equal(mask.flatten(1).sum(1), 2 * res.sizes[:, 0] * res.sizes[:, 1])
    assert _apart(res.centres, res.sizes).all()
    # A swap is a permutation: every channel keeps its sorted values.
    a = res.images.flatten(2).sort(dim=2).values
    b = x.flatten(2).sort(dim=2).values
    assert torch.equal(a, b)
    # And something did move (random uint8 patches differ almost surely).
    assert (res.images != x).flatten(1).any(1).all()


def test_swap_patches_hand_case_and_paste():
    x = torch.arange(36.0).view(1, 1, 6, 6)
    c1, c2, size = torch.tensor([[1, 1]]), torch.tensor([[4, 4]]), torch.tensor([[2, 2]])
    out, mask = swap_patches(x, c1, c2, size)  # boxes rows/cols 0..1 and 3..4
    assert out[0, 0, 0:2, 0:2].tolist() == x[0, 0, 3:5, 3:5].tolist()
    assert out[0, 0, 3:5, 3:5].tolist() == x[0, 0, 0:2, 0:2].tolist()
    assert int(mask.sum()) == 8
    pasted, pmask = swap_patches(x, c1, c2, size, mode="paste")
    assert pasted[0, 0, 3:5, 3:5].tolist() == x[0, 0, 0:2, 0:2].tolist()
    assert torch.equal(pasted[0, 0, 0:2, 0:2], x[0, 0, 0:2, 0:2])  # the source stays
    assert int(pmask.sum()) == 4 and bool(pmask[0, 3:5, 3:5].all())


def test_pair_lies_in_the_most_salient_cluster_and_one_patch_apart():
    b = 16
    maps = torch.zeros(b, 16, 16)
    maps[:, :, :6] = 1.0  # the most salient cluster: columns 0..5 (0..11 at 32 px)
    maps[:, :, 6:11] = 0.5  # a second level of saliency
    x = _images(b)
    res = cutswap(x, torch.Generator().manual_seed(3), maps, area=(0.02, 0.05), aspect=(0.5, 2.0), k=3)
    up = torch.nn.functional.interpolate(maps[:, None], size=(SIZE, SIZE), mode="nearest")[:, 0]
    for j in range(2):
        y, xx = res.centres[:, j, 0], res.centres[:, j, 1]
        assert (up[torch.arange(b), y, xx] == 1.0).all()
    assert (res.rank == 0).all()
    assert _apart(res.centres, res.sizes).all()


def test_too_small_top_cluster_falls_back_and_stays_apart():
    maps = torch.zeros(4, 32, 32)
    maps[:, 10:12, 10:12] = 1.0  # a 2 x 2 spot cannot hold two 5 px patches one patch apart
    res = cutswap(_images(4), torch.Generator().manual_seed(0), maps, area=(0.03, 0.03), aspect=(1.0, 1.0), k=2)
    assert (res.rank > 0).all() and _apart(res.centres, res.sizes).all()


def test_random_mode_ignores_saliency():
    x = _images()
    m1 = torch.rand(len(x), 16, 16, generator=torch.Generator().manual_seed(1))
    m2 = torch.zeros(len(x), 16, 16)
    m2[:, :4, :4] = 1.0
    r1 = cutswap(x, torch.Generator().manual_seed(5), m1, locations="random")
    r2 = cutswap(x, torch.Generator().manual_seed(5), m2, locations="random")
    r3 = cutswap(x, torch.Generator().manual_seed(5), None, locations="random")
    assert torch.equal(r1.images, r2.images) and torch.equal(r1.images, r3.images)
    s1 = cutswap(x, torch.Generator().manual_seed(5), m1)
    s2 = cutswap(x, torch.Generator().manual_seed(5), m2)
    assert not torch.equal(s1.centres, s2.centres)  # saliency mode does follow the maps


def test_patch_sizes_always_admit_a_pair():
    s = sample_patch_sizes(256, 40, 40, torch.Generator().manual_seed(0), area=(0.3, 0.9), aspect=(0.2, 5.0))
    assert ((s[:, 0] * 2 <= 40) | (s[:, 1] * 2 <= 40)).all()
    c1, c2, rank = pick_pairs(torch.zeros(256, 0, 40, 40, dtype=torch.bool), s, torch.Generator().manual_seed(1))
    assert _apart(torch.stack([c1, c2], 1), s).all()
    # Both boxes inside the image.
    for c in (c1, c2):
        top, left = c[:, 0] - s[:, 0] // 2, c[:, 1] - s[:, 1] // 2
        assert (top >= 0).all() and (left >= 0).all() and (top + s[:, 0] <= 40).all() and (left + s[:, 1] <= 40).all()


def _ledoit_wolf_by_hand(x: np.ndarray) -> np.ndarray:
    """Ledoit & Wolf (2004), as written out in scikit-learn's docs: (1 - d) S + d mu I."""
    n, p = x.shape
    xc = x - x.mean(0)
    s = xc.T @ xc / n
    mu = np.trace(s) / p
    delta = ((s - mu * np.eye(p)) ** 2).sum() / p
    beta = sum((((np.outer(v, v) - s) ** 2).sum()) for v in xc) / (p * n * n)
    shrink = min(beta, delta) / delta
    return (1 - shrink) * s + shrink * mu * np.eye(p)


def test_ledoit_wolf_mahalanobis_matches_hand_computation_and_ranks_outlier_first():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    train = rng.normal(size=(60, 4)) @ a + np.array([1.0, -2.0, 0.5, 3.0])
    gde = GaussianDensity.fit(torch.from_numpy(train).float())
    cov = _ledoit_wolf_by_hand(train.astype(np.float32).astype(np.float64))
    test = np.concatenate([rng.normal(size=(20, 4)) @ a + np.array([1.0, -2.0, 0.5, 3.0]), [[9.0, 9.0, -9.0, 9.0]]])
    d = gde.mahalanobis(torch.from_numpy(test)).numpy()
    diff = test - train.astype(np.float32).astype(np.float64).mean(0)
    hand = np.sqrt(np.einsum("nd,nd->n", diff, np.linalg.solve(cov, diff.T).T))
    np.testing.assert_allclose(d, hand, rtol=1e-4)
    assert d.argmax() == len(test) - 1
    assert 0.0 <= gde.shrinkage <= 1.0


def _method(seed=0, **sections):
    params = build(CutSwapParams, {"backbone": {"name": "small_cnn", "width": 8}, "head": {"hidden": 16}, **sections})
    return CutSwap(params, DataInfo(3, SIZE, 16, True), torch.device("cpu"), seed=seed)


def test_determinism_with_the_same_seed():
    x = _images(8)

    def run(seed):
        torch.manual_seed(0)
        m = _method(seed)
        net = m.build().train()
        neg, mask, _ = m.negatives(net, x.float() / 255)
        loss = m.training_step(net, x, 0)["loss"]
        return neg, mask, float(loss.detach())

    n1, k1, l1 = run(0)
    n2, k2, l2 = run(0)
    n3, _, _ = run(1)
    assert torch.equal(n1, n2) and torch.equal(k1, k2) and l1 == l2
    assert not torch.equal(n1, n3)


def test_saliency_pass_restores_train_mode_and_leaves_no_gradients():
    m = _method()
    net = m.build().train()
    maps = m.saliency_maps(net, torch.randn(4, 3, SIZE, SIZE), 16)
    assert maps.shape == (3, 4, 16, 16) and float(maps.min()) >= 0 and float(maps.max()) <= 1
    assert net.training and all(p.grad is None for p in net.parameters())


def test_frozen_saliency_copy_is_refreshed_every_n_epochs():
    m = _method(saliency={"source": "frozen", "refresh_every": 2})
    net = m.build()
    with torch.no_grad():
        net.classifier.bias.add_(1.0)
    m.on_epoch_end(net, torch.empty(0), 0)  # epoch 1: not yet
    assert not torch.equal(m._frozen.classifier.bias, net.classifier.bias)
    m.on_epoch_end(net, torch.empty(0), 1)  # epoch 2: refreshed
    assert torch.equal(m._frozen.classifier.bias, net.classifier.bias)
    assert not any(p.requires_grad for p in m._frozen.parameters())


def test_unknown_saliency_level_is_a_spec_error():
    with pytest.raises(SpecError, match="saliency.layers"):
        _method(saliency={"layers": "layer4"}).build()  # small_cnn has layer1..layer3
    with pytest.raises(SpecError):
        build(SaliencyParams, {"layers": "layer1+conv"})
    with pytest.raises(SpecError):
        build(PatchParams, {"min_distance": 0.5})
    assert BackboneParams().name == "resnet18"
