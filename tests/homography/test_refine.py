"""stitch.refine: ECC photometric refinement and least squares on matches, from perturbed ground truth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stitch.errors import ConfigError, EstimationError
from stitch.geometry import corner_error, image_corners, project
from stitch.homography.matching import Matches
from stitch.homography.refine import REFINER_CHOICES, corner_shift, refine_ecc, refine_homography, refine_lsq

W, H = 640, 480
# every corner moved by ~3.6 px, in different directions (not a pure shift)
CORNER_DELTAS = np.array([[3.0, -2.0], [-2.0, -3.0], [-3.0, 2.0], [2.0, 3.0]])


def perturb(H_gt: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """H_gt with the images of the four src corners (TL, TR, BR, BL) moved by deltas (4, 2) px."""
    c = image_corners(W, H)
    q = project(H_gt, c) + deltas
    return cv2.getPerspectiveTransform(c.astype(np.float32), q.astype(np.float32)).astype(np.float64)


def noisy_matches(H_gt: np.ndarray, n: int = 300, noise: float = 0.5, n_out: int = 0, seed: int = 3) -> Matches:
    """n matches of H_gt with Gaussian noise (px); the first n_out are gross outliers (50..150 px off)."""
    rng = np.random.default_rng(seed)
    src = rng.uniform([0, 0], [W, H], (n, 2))
    dst = project(H_gt, src) + rng.normal(0.0, noise, (n, 2))
    dst[:n_out] += rng.uniform(50, 150, (n_out, 2))
    return Matches(src, dst, np.arange(n), np.arange(n), np.full(n, 0.5))


def test_smoke(sample_pair):
    src, dst, H_gt = sample_pair("rotation_scale")
    out = refine_homography(src, dst, 3.0 * H_gt, method="none").H
    np.testing.assert_allclose(out, H_gt, rtol=1e-12, atol=1e-12)  # 'none' only normalises
    assert REFINER_CHOICES[0] == "none"


@pytest.mark.parametrize("name", ["perspective", "illumination"])
def test_shift(sample_pair, name):
    """ECC from a ground truth perturbed by ~3.6 px at every corner comes back to < 0.5 px."""
    src, dst, H_gt = sample_pair(name)
    start = perturb(H_gt, CORNER_DELTAS)
    assert corner_error(start, H_gt, W, H) == pytest.approx(np.sqrt(13.0), abs=1e-3)
    r = refine_homography(src, dst, start, method="ecc")
    out = r.H
    assert r.improved and r.score_after > r.score_before and r.best is r.H and r.corner_shift > 1.0
    assert out.shape == (3, 3) and out[2, 2] == pytest.approx(1.0)
    assert corner_error(out, H_gt, W, H) < 0.5
    assert corner_shift(out, H_gt, W, H) < 1.0


@pytest.mark.parametrize("name", ["rotation_scale", "translation"])
def test_ecc_from_gt_stays(sample_pair, name):
    src, dst, H_gt = sample_pair(name)
    out = refine_ecc(H_gt, src, dst)
    assert corner_error(out, H_gt, W, H) < 0.1


def test_ecc_accepts_paths(samples_dir, sample_pair):
    _, _, H_gt = sample_pair("perspective")
    folder = samples_dir / "pairs" / "perspective"
    out = refine_homography(folder / "src.jpg", str(folder / "dst.jpg"), perturb(H_gt, CORNER_DELTAS), "ecc").H
    assert corner_error(out, H_gt, W, H) < 0.5


def test_ecc_downscaled_keeps_gt(sample_pair):
    src, dst, H_gt = sample_pair("rotation_scale")
    out = refine_ecc(H_gt, src, dst, max_side=320)
    assert corner_error(out, H_gt, W, H) < 0.15


def test_lsq_improves_noisy_start(sample_pair):
    _, _, H_gt = sample_pair("perspective")
    m = noisy_matches(H_gt, n_out=40)
    start = perturb(H_gt, 0.6 * CORNER_DELTAS)  # ~2.2 px: most true matches within tau = 2.5 px
    before = corner_error(start, H_gt, W, H)
    out = refine_lsq(start, m)
    after = corner_error(out, H_gt, W, H)
    assert after < 0.3 and after < 0.2 * before
    via_api = refine_homography(np.zeros((H, W, 3), np.uint8), np.zeros((H, W, 3), np.uint8), start,
                                method="lsq", matches=m).H
    np.testing.assert_allclose(via_api, out, rtol=1e-9, atol=1e-9)


def test_lsq_exact_matches_give_exact_h(sample_pair):
    _, _, H_gt = sample_pair("rotation_scale")
    m = noisy_matches(H_gt, noise=0.0)
    out = refine_lsq(perturb(H_gt, 0.3 * CORNER_DELTAS), m)
    assert corner_error(out, H_gt, W, H) < 1e-4  # cv2.findHomography tolerance


def test_lsq_too_few_inliers_returns_none():
    H_gt = np.eye(3)
    m = noisy_matches(H_gt, n=7, noise=0.0)  # fewer than 8 matches
    assert refine_lsq(H_gt, m) is None
    far = noisy_matches(H_gt, n=50, noise=0.0)
    assert refine_lsq(np.array([[1.0, 0.0, 40.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), far) is None
    with pytest.raises(EstimationError, match="lsq"):
        refine_homography(np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8),
                          np.array([[1.0, 0.0, 40.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), "lsq", matches=far)


def test_exception(sample_pair):
    src, dst, H_gt = sample_pair("translation")
    with pytest.raises(ConfigError, match="method='bogus'"):
        refine_homography(src, dst, H_gt, method="bogus")
    with pytest.raises(ConfigError, match="lsq"):
        refine_homography(src, dst, H_gt, method="lsq")  # no matches given


def test_corner_shift_known_answer():
    assert corner_shift(np.eye(3), np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 4.0], [0.0, 0.0, 1.0]]), W, H) == 5.0


def test_ecc_falls_back_to_the_finest_level_when_the_pyramid_goes_astray(sample_pair, monkeypatch):
    """A coarse-to-fine result that correlates worse than the start is replaced by a fine-only run."""
    from stitch.homography import refine

    src, dst, H_gt = sample_pair("perspective")
    real = refine._ecc_levels
    calls = []

    def astray(H, pyramid, *args):
        calls.append(len(pyramid))
        if len(pyramid) > 1:  # the whole pyramid: pretend the coarse level led it 30 px away
            return np.array([[1.0, 0, 30.0], [0, 1.0, 0], [0, 0, 1.0]]) @ H
        return real(H, pyramid, *args)

    monkeypatch.setattr(refine, "_ecc_levels", astray)
    start = np.array([[1.0, 0, 1.5], [0, 1.0, -1.0], [0, 0, 1.0]]) @ H_gt
    H = refine_ecc(start, src, dst)
    assert calls == [2, 1] and corner_error(H, H_gt, src.shape[1], src.shape[0]) < 0.3


def test_refinement_that_lowers_the_score_is_reported(sample_pair, monkeypatch):
    """A refiner that makes things worse: the scores say so, ``best`` keeps the start, and a warning says it."""
    from dataclasses import replace

    from stitch.homography import refine as refine_mod

    src, dst, H_gt = sample_pair("perspective")
    far = perturb(H_gt, 8.0 * CORNER_DELTAS)  # ~29 px off: what a bad refinement might return
    bad = replace(refine_mod.REFINERS["ecc"], step=lambda H, a, b, m, **kw: far)
    monkeypatch.setitem(refine_mod.REFINERS, "ecc", bad)
    with pytest.warns(UserWarning, match="lowered the quality score"):
        r = refine_homography(src, dst, H_gt, method="ecc")
    assert not r.improved and r.score_after < r.score_before
    np.testing.assert_allclose(r.best, H_gt / H_gt[2, 2], atol=1e-12)
    assert r.corner_shift > 20


def test_corner_shift_on_a_cut_outline():
    """Past the horizon a dst pixel spans many src pixels: a cut outline's shift is measured back in src."""
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0 / 400, 0.0, 1.0]])
    moved = tilt @ np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # src shifted by 2 px
    assert corner_shift(tilt, moved, 640, 480, (640, 480)) == pytest.approx(2.0)
    assert corner_shift(tilt, np.zeros((3, 3)), 640, 480, (640, 480)) == float("inf")  # singular: no way back
    shift = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 4.0], [0.0, 0.0, 1.0]])
    assert corner_shift(np.eye(3), shift, 640, 480) == corner_shift(np.eye(3), shift, 640, 480, (640, 480)) == 5.0
