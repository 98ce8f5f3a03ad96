"""stitch.find_homography: the robust core on given correspondences (known answers, planted outliers, bad input)."""

from __future__ import annotations

import numpy as np
import pytest

import stitch
from stitch.errors import ConfigError
from stitch.geometry import corner_error, project
from stitch.homography.select import HomographyResult

H_TRUE = np.array([[1.1, 0.05, 20.0], [-0.03, 0.95, -10.0], [1e-4, -5e-5, 1.0]])


@pytest.fixture
def points() -> tuple[np.ndarray, np.ndarray]:
    src = np.random.default_rng(0).uniform(0, 640, (100, 2))
    return src, project(H_TRUE, src)


def test_smoke(points):
    r = stitch.find_homography(*points)
    assert isinstance(r, HomographyResult) and r.H.shape == (3, 3) and r.H[2, 2] == 1.0
    assert r.inliers.shape == (100,) and r.best.source == "points" and r.levels_tried == ["points"]
    assert set(r.parts) == {"support", "inlier_mass", "inlier_rms"}  # no images: no photometric part


@pytest.mark.parametrize("n", [4, 5, 8, 100])
def test_shift(points, n):
    """Clean points: H to 1e-9 relative (kornia/scikit-image style known answer)."""
    src, dst = points
    H = stitch.find_homography(src[:n], dst[:n]).H
    assert np.abs(H - H_TRUE).max() / np.abs(H_TRUE).max() < 1e-9


AFFINE = np.array([[1.02, 0.05, 30.0], [-0.03, 0.98, -12.0], [0.0, 0.0, 1.0]])
PROJECTIVE = np.array([[1.02, 0.05, 30.0], [-0.03, 0.98, -12.0], [2e-4, -1e-4, 1.0]])


def exact_with_outliers(H_true: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n exact correspondences of H_true in a 640 x 480 src image, 3 of them (returned, sorted) moved 40-80 px."""
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, [640, 480], (n, 2))
    dst = project(H_true, src)
    bad = np.sort(rng.choice(n, 3, replace=False))
    dst[bad] += rng.uniform(40, 80, (3, 2)) * rng.choice([-1, 1], (3, 2))
    return src, dst, bad


@pytest.mark.parametrize("H_true", [AFFINE, PROJECTIVE], ids=["affine", "projective"])
@pytest.mark.parametrize("n", [20, 50, 200])
def test_exact_points_exact_fit(H_true, n):
    """Exact points + 3 planted outliers: the outliers flagged and H exact to 1e-9 in every entry (the final
    fit on the inliers is a float64 DLT + LM; cv2.findHomography's float32 refit left 1.6e-6). Measured:
    at most 6e-14, where scikit-image's ransac + ProjectiveTransform gets 7e-14 to 3e-13 on the same points."""
    src, dst, bad = exact_with_outliers(H_true, n)
    r = stitch.find_homography(src, dst)
    assert np.array_equal(np.flatnonzero(~r.inliers), bad)
    assert np.abs(r.H - H_true).max() < 1e-9 and r.H[2, 2] == 1.0
    skimage = pytest.importorskip("skimage")
    model, inl = skimage.measure.ransac((src, dst), skimage.transform.ProjectiveTransform, 4, 1.0, max_trials=1000,
                                        rng=0)
    assert np.array_equal(np.flatnonzero(~inl), bad)
    assert np.abs(r.H - H_true).max() <= max(np.abs(model.params / model.params[2, 2] - H_true).max(), 1e-12)


@pytest.mark.parametrize("scale", [1.0, 2.0, 0.5])
def test_scaled_fixed_points(points, scale):
    """dst = scale * src: H = diag(scale, scale, 1); scale 1 (fixed points): the identity."""
    src = points[0]
    H = stitch.find_homography(src, scale * src).H
    np.testing.assert_allclose(H, np.diag([scale, scale, 1.0]), atol=1e-9)


def test_planted_outliers(points):
    """Outliers planted at known indices are exactly the ones flagged; H stays within 1e-3 px."""
    src, dst = points
    rng = np.random.default_rng(1)
    bad = np.array([3, 17, 42, 77, 90])
    noisy = dst.copy()
    noisy[bad] += rng.uniform(30, 80, (len(bad), 2)) * rng.choice([-1, 1], (len(bad), 2))
    r = stitch.find_homography(src, noisy, seed=3)
    assert np.array_equal(np.flatnonzero(~r.inliers), bad)
    assert corner_error(r.H, H_TRUE, 640, 640) < 1e-3


def test_with_images(sample_pair):
    """Images passed: the full quality score (photometric part) and the ECC refiner."""
    src, dst, H_gt = sample_pair("perspective")
    pts = np.random.default_rng(0).uniform(50, 400, (60, 2))
    r = stitch.find_homography(pts, project(H_gt, pts), src=src, dst=dst)
    assert "photometric" in r.parts and r.score > 0.55
    assert corner_error(r.H, H_gt, src.shape[1], src.shape[0]) < 0.05


@pytest.mark.parametrize("args, kwargs, match", [
    ((np.full((6, 2), np.nan), np.zeros((6, 2))), {}, "src_pts: row 0 is not finite"),
    ((np.zeros((6, 2)), np.zeros((5, 2))), {}, "6 rows but dst_pts has 5"),
    ((np.zeros((3, 2)), np.zeros((3, 2))), {}, "at least 4"),
    ((np.zeros((6, 3)), np.zeros((6, 3))), {}, r"\(N, 2\)"),
    ((np.zeros((6, 2)), np.zeros((6, 2))), {"refiner": "ecc"}, "pass src= and dst="),
    ((np.zeros((6, 2)), np.zeros((6, 2))), {"src": np.zeros((8, 8, 3), np.uint8)}, "both src= and dst="),
    ((np.zeros((6, 2)), np.zeros((6, 2))), {"estimators": ["bogus"]}, "'bogus'"),
])
def test_exception(args, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        stitch.find_homography(*args, **kwargs)


def test_degenerate_points():
    """All points on one spot: no plausible homography, an EstimationError (not a crash)."""
    with pytest.raises(stitch.EstimationError, match="no plausible homography from 10"):
        stitch.find_homography(np.ones((10, 2)), np.ones((10, 2)))
