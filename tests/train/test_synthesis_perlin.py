"""Perlin masks and the DRAEM blend."""

from __future__ import annotations

import pytest
import torch

from raysearch.data.perlin import draem_blend, perlin_masks, perlin_noise


def test_noise_range_and_shape():
    n = perlin_noise(16, (24, 40), generator=torch.Generator().manual_seed(0))
    assert n.shape == (16, 24, 40) and n.dtype == torch.float32
    assert n.abs().max() <= 1.0 + 1e-5
    assert n.std() > 0.1
    with pytest.raises(ValueError, match="scale_range"):
        perlin_noise(1, 8, scale_range=(3, 3))


def test_masks_non_empty_binary_and_deterministic():
    a = perlin_masks(32, 32, generator=torch.Generator().manual_seed(0))
    b = perlin_masks(32, 32, generator=torch.Generator().manual_seed(0))
    assert a.shape == (32, 32, 32) and a.dtype == torch.uint8
    assert set(a.unique().tolist()) <= {0, 1}
    assert a.flatten(1).any(1).all()
    assert torch.equal(a, b)
    # threshold above the noise range: every mask comes from the fallback, still non-empty
    c = perlin_masks(
        4,
        20,
        generator=torch.Generator().manual_seed(0),
        threshold=5.0,
        retries=1,
        fallback_area=0.1,
    )
    assert c.flatten(1).sum(1).tolist() == [40] * 4


def test_draem_blend_changes_only_masked_pixels():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g)
    srcs = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g)
    masks = perlin_masks(8, 32, generator=g)
    out, m = draem_blend(imgs, srcs, masks, generator=g)
    assert out.dtype == torch.uint8 and torch.equal(m, masks)
    outside = (masks == 0)[:, None].expand_as(imgs)
    assert torch.equal(out[outside], imgs[outside])
    assert (out[~outside] != imgs[~outside]).float().mean() > 0.5
    # full opacity copies the source inside the mask
    full, _ = draem_blend(imgs, srcs, masks, generator=g, beta_range=(1.0, 1.0))
    assert torch.equal(full[~outside], srcs[~outside])
    with pytest.raises(ValueError, match="uint8"):
        draem_blend(imgs.float(), srcs, masks)
