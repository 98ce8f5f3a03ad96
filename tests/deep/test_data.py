"""stitch.deep.data and stitch.deep.pairs: exact ground truth, determinism, splits, samplers."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="needs torch (pip install 'stitch-toolkit[deep]')")
pytest.importorskip("kornia", reason="needs kornia (pip install 'stitch-toolkit[deep]')")

import cv2
import numpy as np
import torch
from helpers import texture, write_sets

from stitch.deep.data import (
    DataConfig,
    EpochSampler,
    ImageBank,
    PairDataset,
    build_loader,
    make_example,
    make_val_set,
    split_files,
)
from stitch.deep.pairs import Photometric, corner_h, detone_pair, photometric, residual_deltas
from stitch.errors import ConfigError
from stitch.geometry import image_corners, project


def aligned_error(a: np.ndarray, b: np.ndarray, R: np.ndarray, mask: np.ndarray) -> float:
    """Mean |A(u) - B(R u)| where A is valid and R u falls inside B (A(u) ~ B(R u) expected)."""
    size = (b.shape[1], b.shape[0])
    warped = cv2.warpPerspective(b.astype(np.float32), R, size, flags=cv2.WARP_INVERSE_MAP)
    in_b = cv2.warpPerspective(np.ones(b.shape[:2], np.uint8), R, size, flags=cv2.WARP_INVERSE_MAP)
    valid = cv2.erode(((mask > 0) & (in_b > 0)).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    valid[:6], valid[-6:], valid[:, :6], valid[:, -6:] = False, False, False, False
    return float(np.abs(a.astype(np.float32) - warped)[valid].mean())


def test_detone_pair_known_answer():
    """H_gt moves the patch corners by up to rho, and src(v) = dst(H_gt v) on the overlap."""
    img = texture(0)
    pr = detone_pair(img, np.random.default_rng(3))
    c = image_corners(128, 128)
    d = project(pr.H_gt, c) - c
    assert np.all(np.abs(d) <= 32.0 + 1e-6) and np.abs(d).max() > 5
    np.testing.assert_allclose(pr.H_start, np.eye(3))
    g = lambda x: cv2.cvtColor(x, cv2.COLOR_BGR2GRAY)
    ones = np.ones((128, 128), np.uint8)
    after = aligned_error(g(pr.src), g(pr.dst), pr.H_gt, ones)
    assert after < 3.0  # of 255: interpolation only
    assert aligned_error(g(pr.src), g(pr.dst), np.eye(3), ones) > 4 * after


def test_refiner_pair_start():
    pr = detone_pair(texture(1), np.random.default_rng(5), start_rho=8.0, photo=Photometric(p=1.0))
    c = image_corners(128, 128)
    off = np.linalg.norm(project(pr.H_start, c) - project(pr.H_gt, c), axis=1)
    assert np.all(off <= 8.0 + 1e-6) and pr.regime == "refiner"


@pytest.mark.parametrize("regime", [0, 1])
def test_example_target(tmp_path, regime):
    """A(u) ~ B(R u) with R from the target offsets: aligning by R removes most of the difference."""
    root = write_sets(tmp_path, {"a": 2})
    cfg = DataConfig(root=str(root), val_fraction=0.5, detone_photometric=0.0, refine_photometric=0.0)
    bank = ImageBank(sorted(root.rglob("*.png")), cfg.max_side)
    for k in range(3):
        ex = make_example(bank, np.random.default_rng([0, k]), cfg, regime)
        R = corner_h(128, ex.target.astype(np.float64))
        assert ex.regime == regime and ex.a.shape == ex.b.shape == (128, 128)
        before = aligned_error(ex.a, ex.b, np.eye(3), ex.mask_a)
        after = aligned_error(ex.a, ex.b, R, ex.mask_a)
        assert after < 0.02, (k, before, after)
        if np.abs(ex.target).max() > 3:
            assert after < 0.5 * before


def test_residual_deltas():
    H = corner_h(128, np.array([[3.0, 1], [-2, 4], [0, 0], [5, -5]]))
    np.testing.assert_allclose(residual_deltas(H, np.eye(3), 128), [[3, 1], [-2, 4], [0, 0], [5, -5]], atol=1e-9)
    np.testing.assert_allclose(residual_deltas(H, H, 128), np.zeros((4, 2)), atol=1e-9)


def test_photometric_changes_and_is_seeded():
    img = texture(2)
    a = photometric(img, np.random.default_rng(1), Photometric(p=1.0))
    b = photometric(img, np.random.default_rng(1), Photometric(p=1.0))
    assert np.array_equal(a, b) and not np.array_equal(a, img) and a.dtype == np.uint8
    assert np.array_equal(photometric(img, np.random.default_rng(1), Photometric(p=0.0)), img)


def test_dataset_deterministic_across_workers(tmp_path):
    """Sample k is the same whichever worker draws it, in whichever epoch."""
    root = write_sets(tmp_path, {"a": 2, "b": 1})
    cfg = DataConfig(root=str(root), val_sets=("b",), patch=64, max_side=160, detone_rho=8, refine_true_rho=8,
                     refine_rho=4, persistent_workers=False, prefetch_factor=2)
    split = split_files(cfg)
    ds = PairDataset(split.train, cfg, seed=7, length=100)
    batches = {}
    for workers in (0, 2):
        sampler = EpochSampler(8)
        sampler.set_epoch(1, skip=4)
        loader = build_loader(ds, sampler, 2, DataConfig(**{**cfg.__dict__, "num_workers": workers}), 0,
                              torch.device("cpu"))
        batches[workers] = list(loader)
    assert len(batches[0]) == 2
    for x, y in zip(batches[0], batches[2]):
        for key in x:
            assert torch.equal(x[key], y[key])
    assert torch.equal(batches[0][0]["a"][0], ds[12]["a"])  # epoch 1, skip 4: first index 8 + 4


def test_sampler():
    s = EpochSampler(5)
    assert list(s) == [0, 1, 2, 3, 4]
    s.set_epoch(2, skip=3)
    assert list(s) == [13, 14] and len(s) == 2
    with pytest.raises(ValueError, match="skip"):
        s.set_epoch(0, skip=6)


def test_split(tmp_path):
    root = write_sets(tmp_path, {"a": 2, "b": 1, "c": 1}, size=(160, 120))
    sp = split_files(DataConfig(root=str(root), train_sets=("a", "b"), val_sets=("c",)))
    assert [p.parent.name for p in sp.train] == ["a", "a", "b"] and [p.parent.name for p in sp.val] == ["c"]
    sp = split_files(DataConfig(root=str(root), val_sets=("c",), exclude_sets=("b",)))
    assert {p.parent.name for p in sp.train} == {"a"}
    sp = split_files(DataConfig(root=str(root), val_fraction=0.5))
    assert len(sp.train) + len(sp.val) == 4 and sp.val and "hash" in sp.how
    assert split_files(DataConfig(root=str(root), val_fraction=0.5)).val == sp.val  # stable


def test_val_set(tmp_path):
    root = write_sets(tmp_path, {"a": 1, "b": 1})
    cfg = DataConfig(root=str(root), val_sets=("b",), val_samples=3, patch=64, max_side=160, detone_rho=8,
                     refine_true_rho=8)
    v = make_val_set(split_files(cfg).val, cfg, seed=0)
    assert v["a"].shape == (6, 1, 64, 64) and v["regime"].tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(make_val_set(split_files(cfg).val, cfg, seed=0)["target"], v["target"])


def test_exception(tmp_path):
    root = write_sets(tmp_path, {"a": 1, "b": 1}, size=(160, 120))
    with pytest.raises(ConfigError, match="not found"):
        split_files(DataConfig(root=str(root), val_sets=("zzz",)))
    with pytest.raises(ConfigError, match="both"):
        split_files(DataConfig(root=str(root), train_sets=("a",), val_sets=("a",)))
    with pytest.raises(ConfigError, match="data.root"):
        split_files(DataConfig(root=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="data.patch"):
        DataConfig(patch=100)
    with pytest.raises(ConfigError, match="unknown key"):
        DataConfig.from_dict({"roots": "x"})


def test_window_masks(tmp_path):
    """window_mask: B seen through a square window that sticks out of its image (bands at two opposite sides,
    masked pixels zero), the pair and its target unchanged; window_mask=0 draws nothing (old samples unchanged)."""
    root = write_sets(tmp_path, {"a": 2})
    bank = ImageBank(sorted(root.rglob("*.png")), 640)
    plain, masked = DataConfig(root=str(root)), DataConfig(root=str(root), window_mask=1.0, window_mask_max=0.4)
    shares = []
    for k in range(12):
        ex0 = make_example(bank, np.random.default_rng([0, k]), plain)
        ex1 = make_example(bank, np.random.default_rng([0, k]), masked)
        assert ex0.mask_b is None and ex1.mask_b is not None
        np.testing.assert_array_equal(ex0.target, ex1.target)
        mb = ex1.mask_b
        assert set(np.unique(mb)) <= {0.0, 1.0} and np.all(ex1.b[mb == 0] == 0)
        np.testing.assert_array_equal(ex1.b[mb == 1], ex0.b[mb == 1])
        rows, cols = mb.max(1), mb.max(0)  # bands: whole rows or whole columns are masked
        assert rows.all() or cols.all()
        shares.append(1.0 - mb.mean())
    assert 0.03 < min(shares) and max(shares) < 0.4 + 0.05
    tensors = PairDataset(sorted(root.rglob("*.png")), masked, 0, 4)[0]
    assert tensors["mask_b"].shape == (1, 128, 128) and float(tensors["mask_b"].min()) == 0.0
    assert float(PairDataset(sorted(root.rglob("*.png")), plain, 0, 4)[0]["mask_b"].min()) == 1.0
    with pytest.raises(ConfigError, match="window_mask"):
        DataConfig(root=str(root), window_mask=1.5)


def test_lowtex_pair_known_answer():
    """The low-texture split: the least textured usable place of the candidates, and H_gt still exact (after the
    exposure change, the aligned views agree up to a gain)."""
    from stitch.deep.pairs import LOWTEX_FLOOR, lowtex_pair
    from stitch.imaging import gradient_energy

    img = texture(2)
    pr = lowtex_pair(img, np.random.default_rng(4))
    assert pr.extra["energy"] >= LOWTEX_FLOOR and pr.regime == "detone"
    assert pr.extra["energy"] == pytest.approx(gradient_energy(cv2.cvtColor(
        cv2.resize(img, (320, 240), interpolation=cv2.INTER_AREA)[pr.extra["y"]:pr.extra["y"] + 128,
                                                                   pr.extra["x"]:pr.extra["x"] + 128],
        cv2.COLOR_BGR2GRAY)))
    g = lambda x: cv2.cvtColor(x, cv2.COLOR_BGR2GRAY).astype(np.float32)
    a, b = g(pr.src), g(pr.dst)
    warped = cv2.warpPerspective(b, pr.H_gt, (128, 128), flags=cv2.WARP_INVERSE_MAP)
    inner = (slice(40, 88), slice(40, 88))
    assert np.corrcoef(a[inner].ravel(), warped[inner].ravel())[0, 1] > 0.9
    started = lowtex_pair(img, np.random.default_rng(4), start_rho=8.0)
    assert started.regime == "refiner" and not np.allclose(started.H_start, np.eye(3))
    np.testing.assert_allclose(started.H_gt, pr.H_gt)
