"""Validation anomaly families: raysearch.data.synthesis.synthesize_family."""

from __future__ import annotations

import pytest
import torch

from raysearch.data.synthesis import FAMILY_NAMES, _patchswap, synthesize_family


def _images(b: int = 8, size: int = 32) -> torch.Tensor:
    """Textured uint8 images: a colour gradient plus random noise (every pixel distinct-ish)."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 160, size)
    grad = torch.stack(
        [
            ramp.view(1, -1).expand(size, size),
            ramp.view(-1, 1).expand(size, size),
            ramp.flip(0).view(1, -1).expand(size, size),
        ]
    )
    noise = torch.randint(0, 96, (b, 3, size, size), generator=g)
    return (grad + noise).clamp(0, 255).to(torch.uint8)


def _run(family: str, x: torch.Tensor, seed: int):
    return synthesize_family(family, x, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_contract(family):
    x = _images()
    out, masks = _run(family, x, 0)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert masks.shape == (8, 32, 32) and masks.dtype == torch.uint8
    assert set(masks.unique().tolist()) <= {0, 1}
    assert masks.flatten(1).any(1).all()  # every image got a region
    outside = ~masks.bool().unsqueeze(1).expand_as(x)
    assert torch.equal(out[outside], x[outside])  # nothing changes outside the mask
    changed = (out != x).any(1)  # (B, H, W)
    assert changed.flatten(1).any(1).all()  # every image is actually changed
    assert changed[masks.bool()].float().mean() > 0.5  # mostly, inside the mask
    # Deterministic for a seed, different for another one.
    again, masks_again = _run(family, x, 0)
    assert torch.equal(out, again) and torch.equal(masks, masks_again)
    other, masks_other = _run(family, x, 1)
    assert not torch.equal(out, other) and not torch.equal(masks, masks_other)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_single_image_and_small_size(family):
    out, masks = _run(family, _images(1, 12), 2)
    assert masks.flatten(1).any(1).all() and not torch.equal(out, _images(1, 12))


def test_patchswap_permutes_pixels_within_the_mask():
    x = _images()
    out, masks = _run("patchswap", x, 3)
    for i in range(len(x)):  # each mask is two disjoint boxes of equal size
        inside = masks[i].bool()
        before = x[i][:, inside].T.tolist()  # (N, C) pixels
        after = out[i][:, inside].T.tolist()
        assert sorted(map(tuple, before)) == sorted(map(tuple, after))
        assert before != after  # and something actually moved
        assert int(inside.sum()) % 2 == 0  # two boxes of one size


def test_patchswap_boxes_never_overlap():
    # Large square boxes, round(sqrt(0.2 * 32 * 32)) = 14 px: two fit side by side in 32 px
    # and, never overlapping, the mask is exactly twice the box area in every image.
    x = _images(64)
    out, masks = _patchswap(x, torch.Generator().manual_seed(4), area=(0.2, 0.2), aspect=(1.0, 1.0))
    assert (masks.flatten(1).sum(1) == 2 * 14 * 14).all()
    outside = ~masks.bool().unsqueeze(1).expand_as(x)
    assert torch.equal(out[outside], x[outside])


def test_unknown_family_names_it_and_lists_the_known_ones():
    with pytest.raises(ValueError, match="'wobble'") as info:
        synthesize_family("wobble", _images(2))
    assert all(name in str(info.value) for name in FAMILY_NAMES)
