"""stitch.features: SIFT / ORB / ASIFT detection, keypoint budget, full-resolution coordinates, grid spreading."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.spatial import cKDTree

from stitch.errors import ConfigError
from stitch.homography.features import DETECTOR_CHOICES, FeatureConfig, Features, detect, spread_keypoints
from stitch.imaging import resize_max_side


@pytest.fixture(scope="module")
def image(sample_pair) -> np.ndarray:
    """The 640x480 src image of the `perspective` sample pair, (480, 640, 3) uint8 BGR."""
    return sample_pair("perspective")[0]


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    """(480, 640) uint8 blurred noise: texture everywhere, so every grid cell has keypoints."""
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.uniform(0, 255, (480, 640)).astype(np.float32), (0, 0), 2.0)
    return cv2.normalize(tex, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def cell_counts(pts: np.ndarray, width: int, height: int, grid: int) -> np.ndarray:
    """Number of points (N, 2) in each of the grid x grid cells of a width x height image."""
    cx = np.clip((pts[:, 0] * grid / width).astype(int), 0, grid - 1)
    cy = np.clip((pts[:, 1] * grid / height).astype(int), 0, grid - 1)
    return np.bincount(cy * grid + cx, minlength=grid * grid)


def assert_inside(f: Features, width: int, height: int) -> None:
    assert np.all(np.isfinite(f.pts))
    assert np.all(f.pts >= 0.0)
    assert np.all(f.pts[:, 0] < width) and np.all(f.pts[:, 1] < height)


# --- smoke -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("detector, dim, dtype, norm", [("sift", 128, np.float32, cv2.NORM_L2),
                                                        ("orb", 32, np.uint8, cv2.NORM_HAMMING)])
def test_smoke(image, detector, dim, dtype, norm):
    f = detect(image, FeatureConfig(detector, max_keypoints=500))
    assert 100 <= len(f) <= 500
    assert f.pts.shape == (len(f), 2) and f.pts.dtype == np.float32
    assert f.desc.shape == (len(f), dim) and f.desc.dtype == dtype
    assert f.norm == norm
    assert f.image_size == (640, 480)
    np.testing.assert_array_equal(f.view, np.zeros(len(f), np.int32))
    assert_inside(f, 640, 480)


def test_rootsift_descriptors_have_unit_norm(image):
    f = detect(image, FeatureConfig("sift", max_keypoints=200))
    # RootSIFT: sqrt of an L1-normalised non-negative vector has unit L2 norm
    np.testing.assert_allclose(np.linalg.norm(f.desc, axis=1), 1.0, atol=1e-3)


def test_gray_and_bgr_give_the_same_features(image):
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    a, b = detect(image, FeatureConfig("sift", 300)), detect(gray, FeatureConfig("sift", 300))
    np.testing.assert_array_equal(a.pts, b.pts)
    np.testing.assert_array_equal(a.desc, b.desc)


def test_blank_image_has_no_features():
    for det in ("sift", "orb"):
        f = detect(np.full((240, 320, 3), 128, np.uint8), FeatureConfig(det))
        assert len(f) == 0 and f.desc.shape[0] == 0 and f.view.shape == (0,)


# --- keypoint budget -------------------------------------------------------------------------------


@pytest.mark.parametrize("detector", ["sift", "orb"])
@pytest.mark.parametrize("max_keypoints", [8, 100, 1000])
def test_count_bounded_by_max_keypoints(image, detector, max_keypoints):
    f = detect(image, FeatureConfig(detector, max_keypoints=max_keypoints))
    assert len(f) <= max_keypoints
    assert len(f) >= min(max_keypoints, 100)  # a textured photo has plenty; the cap is what limits


def test_asift_views_are_bounded_and_inside(image):
    cfg = FeatureConfig("asift", max_keypoints=300, asift_tilts=(2.0,), asift_view_keypoints=150)
    f = detect(image, cfg)
    per_view = np.bincount(f.view)
    assert per_view[0] <= 300  # the original view obeys max_keypoints
    # tilt 2 simulates 180 / (72 / 2) = 5 rotations, each capped at asift_view_keypoints
    assert len(per_view) == 6
    assert np.all(per_view[1:] <= 150) and np.all(per_view[1:] > 0)
    assert len(f) == f.desc.shape[0] == len(f.view)
    assert f.desc.shape[1] == 128 and f.norm == cv2.NORM_L2
    assert_inside(f, 640, 480)


# --- full-resolution coordinates when work_max_side downsamples -------------------------------------


def test_resize_max_side_known_answer():
    img = np.zeros((480, 640), np.uint8)
    small, s = resize_max_side(img, 320)
    assert s == pytest.approx(0.5) and small.shape == (240, 320)
    same, s1 = resize_max_side(img, 2000)  # never upscale
    assert s1 == 1.0 and same is img


@pytest.mark.parametrize("detector, max_median_px", [("sift", 1.0), ("orb", 3.0)])
def test_shift(image, detector, max_median_px):
    """Detecting at half resolution returns full-resolution px: points land on the full-res detections."""
    full = detect(image, FeatureConfig(detector, max_keypoints=4000))
    half = detect(image, FeatureConfig(detector, max_keypoints=4000, work_max_side=320))
    assert half.image_size == (640, 480)
    assert_inside(half, 640, 480)
    assert np.max(half.pts[:, 0]) > 500 and np.max(half.pts[:, 1]) > 380  # not left in 320x240 px
    d, _ = cKDTree(full.pts).query(half.pts)
    d_unscaled, _ = cKDTree(full.pts).query(half.pts * 0.5)
    assert np.median(d) < max_median_px
    assert np.median(d) < 0.25 * np.median(d_unscaled)


def test_upscaled_image_points_scale_by_two(image):
    """A 2x upscaled image detected at work_max_side=640 finds the original's points, times two."""
    big = cv2.resize(image, (1280, 960), interpolation=cv2.INTER_CUBIC)
    small = detect(image, FeatureConfig("sift", 2000))
    f = detect(big, FeatureConfig("sift", 2000, work_max_side=640))
    assert f.image_size == (1280, 960)
    assert_inside(f, 1280, 960)
    d, _ = cKDTree(2.0 * small.pts).query(f.pts)
    assert np.mean(d < 1.5) > 0.8


def test_downsampled_points_follow_pixel_centre_convention(image):
    big = cv2.resize(image, (1280, 960), interpolation=cv2.INTER_CUBIC)  # big px (2x + 0.5) shows src px x
    small = detect(image, FeatureConfig("sift", 2000))
    f = detect(big, FeatureConfig("sift", 2000, work_max_side=640))
    d, j = cKDTree(2.0 * small.pts + 0.5).query(f.pts)
    ok = d < 1.5
    assert ok.sum() > 500
    offset = np.median(f.pts[ok] - (2.0 * small.pts[j[ok]] + 0.5), axis=0)
    np.testing.assert_allclose(offset, [0.0, 0.0], atol=0.15)


# --- grid spreading --------------------------------------------------------------------------------


def test_grid_spreading_covers_every_cell(texture):
    f = detect(texture, FeatureConfig("sift", max_keypoints=64, grid=8))
    assert len(f) == 64
    np.testing.assert_array_equal(cell_counts(f.pts, 640, 480, 8), np.ones(64, int))  # one per cell
    # without spreading the strongest 64 points cluster in fewer cells
    f1 = detect(texture, FeatureConfig("sift", max_keypoints=64, grid=1))
    assert np.count_nonzero(cell_counts(f1.pts, 640, 480, 8)) < 64


def test_grid_spreading_orb(texture):
    f = detect(texture, FeatureConfig("orb", max_keypoints=16, grid=4))
    np.testing.assert_array_equal(cell_counts(f.pts, 640, 480, 4), np.ones(16, int))


def test_spread_keypoints_known_answer():
    rng = np.random.default_rng(1)
    cluster = rng.uniform(0, 20, (100, 2))  # 100 strong points in the top-left cell of a 4x4 grid
    centres = np.array([[(i + 0.5) * 25, (j + 0.5) * 25] for j in range(4) for i in range(4)])[1:]
    xy = np.vstack([cluster, centres])  # plus one weak point in each of the 15 other cells
    resp = np.r_[10.0 + rng.uniform(0, 1, 100), np.full(15, 0.1)]
    keep = spread_keypoints(xy, resp, 100, 100, 16, 4)
    assert len(keep) == 16
    np.testing.assert_array_equal(np.sort(keep)[1:], np.arange(100, 115))  # every weak lone point kept
    assert keep[0] == int(np.argmax(resp[:100]))  # the cluster contributes its strongest point
    np.testing.assert_array_equal(spread_keypoints(xy, resp, 100, 100, 500, 4), np.arange(115))  # under budget


# --- exceptions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, option", [
    ({"detector": "surf"}, "detector='surf'"),
    ({"max_keypoints": 4}, "max_keypoints=4"),
    ({"work_max_side": 10}, "work_max_side=10"),
    ({"grid": 0}, "grid=0"),
    ({"asift_tilts": (1.0, 2.0)}, "asift_tilts"),
])
def test_exception(kwargs, option):
    with pytest.raises(ConfigError) as info:
        FeatureConfig(**kwargs)
    assert option in str(info.value)
    assert isinstance(info.value, ValueError)


def test_detector_choices_message_lists_choices():
    with pytest.raises(ConfigError) as info:
        FeatureConfig(detector="SIFT")
    for name in DETECTOR_CHOICES:
        assert name in str(info.value)


def test_raw_cache_reselects_without_redetecting(image, monkeypatch):
    """A second keypoint cap on the same image reuses the cached detection and equals a fresh detect."""
    from stitch.homography import features

    cache: dict = {}
    small = detect(image, FeatureConfig("sift", 300), cache)
    calls = []
    real = features._raw_view
    monkeypatch.setattr(features, "_raw_view", lambda *a: calls.append(1) or real(*a))
    big = detect(image, FeatureConfig("sift", 600), cache)
    assert calls == [] and len(small) == 300 and len(big) == 600
    fresh = detect(image, FeatureConfig("sift", 600))
    assert calls == [1] and np.array_equal(big.pts, fresh.pts) and np.array_equal(big.desc, fresh.desc)
