"""Batched k-means: planted clusters, top cluster, empty clusters, determinism."""

from __future__ import annotations

import pytest
import torch

from raysearch.components.kmeans import batched_kmeans, saliency_clusters


def _planted(b: int = 5, per: int = 30, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.stack(
        [torch.randperm(3, generator=g).float() * 0.4 + 0.1 for _ in range(b)]
    )  # (B, 3)
    labels = torch.arange(3).repeat_interleave(per).expand(b, -1)  # (B, 3*per)
    labels = torch.stack([lab[torch.randperm(3 * per, generator=g)] for lab in labels])
    x = centres.gather(1, labels) + 0.02 * torch.randn(b, 3 * per, generator=g)  # (B, N)
    return x, labels, centres


def _is_bijection(assign: torch.Tensor, labels: torch.Tensor, k: int) -> bool:
    table = torch.zeros(k, k, dtype=torch.long)
    table.index_put_((labels, assign), torch.ones_like(labels), accumulate=True)
    return bool(((table > 0).sum(0) == 1).all() and ((table > 0).sum(1) == 1).all())


def test_planted_clusters_recovered():
    x, labels, centres = _planted()
    c, assign = batched_kmeans(
        x[..., None], k=3, iters=10, generator=torch.Generator().manual_seed(1)
    )
    assert c.shape == (5, 3, 1) and assign.shape == (5, 90)
    for b in range(5):
        assert _is_bijection(assign[b], labels[b], 3), b
        torch.testing.assert_close(
            c[b, :, 0].sort().values, centres[b].sort().values, atol=0.02, rtol=0
        )


def test_random_init_picks_distinct_points():
    # With k = N and no iterations, the centroids are the points themselves, each once.
    x = torch.rand(4, 6, 2, generator=torch.Generator().manual_seed(0))
    c, assign = batched_kmeans(
        x, k=6, iters=0, generator=torch.Generator().manual_seed(1), init="random"
    )
    assert torch.equal(assign.sort(dim=1).values, torch.arange(6).expand(4, -1))
    assert torch.equal(c.gather(1, assign[..., None].expand(-1, -1, 2)), x)


def test_saliency_clusters_top_is_most_salient():
    x, labels, centres = _planted(b=4, per=12)  # 36 pixels = 6 x 6 maps
    maps = x.reshape(4, 6, 6)
    for with_coords in (False, True):
        assign, top = saliency_clusters(
            maps,
            k=3,
            with_coords=with_coords,
            coord_weight=0.05,
            generator=torch.Generator().manual_seed(0),
        )
        assert assign.shape == (4, 6, 6) and top.shape == (4,)
        for b in range(4):
            hottest = labels[b].reshape(6, 6) == centres[b].argmax()
            assert torch.equal(assign[b] == top[b], hottest)


def test_empty_clusters_and_determinism():
    # Two distinct values but k = 4: clusters must stay finite data points.
    x = torch.tensor([0.0] * 10 + [1.0] * 10).repeat(3, 1)[..., None]  # (3, 20, 1)
    c, assign = batched_kmeans(x, k=4, iters=5, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(c).all()
    assert set(c.flatten().tolist()) <= {0.0, 1.0}
    assert torch.all(assign[:, :10] != assign[:, 10:])  # the two values never share a cluster
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    y = torch.rand(2, 50, 3, generator=torch.Generator().manual_seed(3))
    a1, a2 = batched_kmeans(y, 5, generator=g1), batched_kmeans(y, 5, generator=g2)
    assert torch.equal(a1[0], a2[0]) and torch.equal(a1[1], a2[1])
    with pytest.raises(ValueError, match="k must be"):
        batched_kmeans(y, 51)
