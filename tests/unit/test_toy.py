"""The generated toy MVTec-layout dataset."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from raysearch.data.toy import DEFECTS, ensure_toy_mvtec, make_toy_mvtec, render_sample

SMALL = dict(categories=("stripes", "weave"), n_train=3, n_test_good=2, n_test_defect=2, size=32)


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))


def test_layout_and_masks(tmp_path):
    root = make_toy_mvtec(tmp_path / "toy", seed=3, **SMALL)
    for cat in SMALL["categories"]:
        base = root / cat
        assert len(list((base / "train" / "good").glob("*.png"))) == 3
        assert len(list((base / "test" / "good").glob("*.png"))) == 2
        for defect in DEFECTS:
            for i in range(2):
                img = np.array(Image.open(base / "test" / defect / f"{i:03d}.png"))
                mask = np.array(Image.open(base / "ground_truth" / defect / f"{i:03d}_mask.png"))
                assert img.shape == (32, 32, 3) and img.dtype == np.uint8
                assert mask.shape == (32, 32) and set(np.unique(mask)) == {0, 255}
    assert len(_files(root)) == 2 * (3 + 2 + 2 * 2 * len(DEFECTS))


def test_deterministic_and_seed_dependent(tmp_path):
    a = make_toy_mvtec(tmp_path / "a", seed=1, **SMALL)
    b = make_toy_mvtec(tmp_path / "b", seed=1, **SMALL)
    c = make_toy_mvtec(tmp_path / "c", seed=2, **SMALL)
    assert _files(a) == _files(b) == _files(c)
    same = [(a / f).read_bytes() == (b / f).read_bytes() for f in _files(a)]
    diff = [(a / f).read_bytes() == (c / f).read_bytes() for f in _files(a)]
    assert all(same) and not any(diff)
    # images vary between samples
    train = [
        np.array(Image.open(p)) for p in sorted((a / "stripes" / "train" / "good").glob("*.png"))
    ]
    assert not np.array_equal(train[0], train[1])


@pytest.mark.parametrize("category", ["stripes", "dots", "weave"])
@pytest.mark.parametrize("defect", DEFECTS)
def test_defect_pixels_lie_inside_masks(category, defect):
    rng = np.random.default_rng(0)
    for _ in range(3):
        image, mask, clean = render_sample(category, 48, rng, defect)
        changed = np.abs(image.astype(int) - clean.astype(int)).max(-1) > 0  # (H, W)
        assert mask.sum() >= 4
        assert not np.any(changed & (mask == 0))  # every defect pixel is in the mask
        assert changed[mask == 1].mean() > 0.8  # and the mask is mostly defect
    normal, nmask, nclean = render_sample(category, 48, rng)
    assert nmask.sum() == 0 and np.array_equal(normal, nclean)


def test_ensure_is_cached_and_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSEARCH_CACHE", str(tmp_path))
    path = ensure_toy_mvtec()
    assert path == tmp_path / "toy-mvtec-v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy-mvtec-v1"]  # no temp dir left behind
    stamp = (path / "dots" / "train" / "good" / "000.png").stat().st_mtime_ns
    assert ensure_toy_mvtec() == path
    assert (
        path / "dots" / "train" / "good" / "000.png"
    ).stat().st_mtime_ns == stamp  # not regenerated
    assert len(list((path / "stripes" / "ground_truth").rglob("*_mask.png"))) == 12


@pytest.mark.parametrize("defect", DEFECTS)
def test_defect_opacity_and_scale_make_fainter_smaller_defects(defect):
    def sample(**kw):
        return render_sample("dots", 48, np.random.default_rng(7), defect, **kw)

    def inside_diff(image, mask, clean):
        return np.abs(image.astype(int) - clean.astype(int))[mask == 1].mean()

    full, faint = sample(), sample(defect_opacity=0.3)
    # The same draws: the same texture and defect geometry, hence the same mask.
    assert np.array_equal(full[1], faint[1]) and np.array_equal(full[2], faint[2])
    assert inside_diff(*faint) < 0.5 * inside_diff(*full)
    assert inside_diff(*faint) > 0  # still visible
    for image, mask, clean in (
        faint,
        sample(defect_scale=0.5),
        sample(defect_opacity=0.3, defect_scale=0.5),
    ):
        assert mask.sum() >= 4
        assert np.array_equal(
            image[mask == 0], clean[mask == 0]
        )  # nothing changes outside the mask
    assert sample(defect_scale=0.5)[1].sum() < full[1].sum()
    # The defaults are the original generator: explicit 1.0 equals the default call.
    explicit = sample(defect_opacity=1.0, defect_scale=1.0)
    assert all(np.array_equal(a, b) for a, b in zip(full, explicit, strict=True))


def test_make_toy_mvtec_difficulty_defaults_and_validation(tmp_path):
    kw = dict(SMALL, categories=("dots",), n_train=1, n_test_good=1, n_test_defect=1)
    a = make_toy_mvtec(tmp_path / "a", seed=4, **kw)
    b = make_toy_mvtec(tmp_path / "b", seed=4, defect_opacity=1.0, defect_scale=1.0, **kw)
    c = make_toy_mvtec(tmp_path / "c", seed=4, defect_opacity=0.3, defect_scale=0.5, **kw)
    assert _files(a) == _files(b) == _files(c)
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in _files(a))
    # Normal images do not depend on the difficulty; defective ones do.
    assert all((a / f).read_bytes() == (c / f).read_bytes() for f in _files(a) if "/good/" in f)
    assert not any(
        (a / f).read_bytes() == (c / f).read_bytes() for f in _files(a) if "/good/" not in f
    )
    with pytest.raises(ValueError, match="defect_opacity"):
        make_toy_mvtec(tmp_path / "d", defect_opacity=0.0, **kw)
    with pytest.raises(ValueError, match="defect_scale"):
        render_sample("dots", 16, np.random.default_rng(0), "hole", defect_scale=-1.0)
