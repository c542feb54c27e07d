"""Known-answer tests for raysearch.metrics: scikit-learn agreement and hand-computed AUPRO."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.sweeps import random_pixels
from sklearn.metrics import roc_auc_score

from raysearch.metrics import image_auroc, pixel_auroc


def test_image_auroc_equals_sklearn_and_accepts_torch():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200) + labels, 1)  # ties
    expected = roc_auc_score(labels, scores)
    assert image_auroc(labels, scores) == pytest.approx(expected)
    got = image_auroc(torch.from_numpy(labels), torch.from_numpy(scores).to(torch.bfloat16))
    assert isinstance(got, float)
    assert got == pytest.approx(roc_auc_score(labels, torch.from_numpy(scores).to(torch.bfloat16).float()))


def test_pixel_auroc_equals_sklearn_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(20):
        masks, maps = random_pixels(rng)
        expected = roc_auc_score(masks.ravel(), maps.ravel())
        assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)
    got = pixel_auroc(torch.from_numpy(masks), torch.from_numpy(maps).unsqueeze(1))  # (N, 1, H, W)
    assert got == pytest.approx(expected, abs=1e-12)
