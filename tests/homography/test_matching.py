"""stitch.matching: ratio test, mutual check, the BLAS kNN, on an image and its shifted copy."""

from __future__ import annotations

from itertools import pairwise

import cv2
import numpy as np
import pytest

from stitch.errors import ConfigError
from stitch.homography.features import FeatureConfig, Features, detect
from stitch.homography.matching import MatchConfig, Matches, knn, match

SHIFT = np.array([29.0, 17.0])  # a scene point at src px (x, y) is at dst px (x + 29, y + 17)


@pytest.fixture(scope="module")
def shifted(sample_pair) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst): two 560x420 crops of a sample image, src starting 29 px right and 17 px below dst."""
    img = sample_pair("rotation_scale")[0]
    dx, dy = int(SHIFT[0]), int(SHIFT[1])
    src = np.ascontiguousarray(img[dy:dy + 420, dx:dx + 560])
    dst = np.ascontiguousarray(img[0:420, 0:560])
    np.testing.assert_array_equal(dst[dy:, dx:], src[:420 - dy, :560 - dx])  # dst[y + 17, x + 29] == src[y, x]
    return src, dst


@pytest.fixture(scope="module")
def sift_features(shifted) -> tuple[Features, Features]:
    src, dst = shifted
    cfg = FeatureConfig("sift", max_keypoints=1500)
    return detect(src, cfg), detect(dst, cfg)


def shift_error(m: Matches) -> np.ndarray:
    """(N,) distance of each match from the planted shift, px."""
    return np.linalg.norm(m.dst_pts - (m.src_pts + SHIFT), axis=1)


def pairs(m: Matches) -> set[tuple[int, int]]:
    return set(zip(m.src_idx.tolist(), m.dst_idx.tolist()))


# --- known answer ----------------------------------------------------------------------------------


def test_smoke(sift_features):
    fa, fb = sift_features
    m = match(fa, fb)
    assert len(m) > 200
    assert m.src_pts.shape == m.dst_pts.shape == (len(m), 2) and m.src_pts.dtype == np.float64
    np.testing.assert_array_equal(m.src_pts, fa.pts[m.src_idx].astype(np.float64))
    np.testing.assert_array_equal(m.dst_pts, fb.pts[m.dst_idx].astype(np.float64))
    assert np.all((m.ratio >= 0) & (m.ratio <= MatchConfig().ratio))
    assert len(set(m.src_idx.tolist())) == len(m)  # mutual: one match per src keypoint


@pytest.mark.parametrize("detector", ["sift", "orb"])
def test_shift(shifted, detector):
    src, dst = shifted
    cfg = FeatureConfig(detector, max_keypoints=1500)
    m = match(detect(src, cfg), detect(dst, cfg))
    err = shift_error(m)
    assert len(m) > 150
    assert np.mean(err < 1.5) > 0.95
    assert np.median(err) < 0.3


def test_shift_sample_pair(sample_pair):
    """The `translation` sample: dst is the scene shifted by (-37, +23) px, losslessly."""
    src, dst, H = sample_pair("translation")
    cfg = FeatureConfig("sift", max_keypoints=1000)
    m = match(detect(src, cfg), detect(dst, cfg))
    err = np.linalg.norm(m.dst_pts - (m.src_pts + H[:2, 2]), axis=1)
    assert len(m) > 300 and np.mean(err < 1.0) > 0.97


def test_asift_matches_a_strong_tilt(sample_pair):
    """dst squeezes src to 0.45x horizontally (a strong tilt): ASIFT's simulated views find what SIFT misses."""
    img = sample_pair("rotation_scale")[0]
    A = np.array([[0.45, 0.0, 20.0], [0.0, 1.0, 0.0]])  # src px -> dst px
    dst = cv2.warpAffine(img, A, (340, 480), flags=cv2.INTER_AREA)
    correct = {}
    for det in ("sift", "asift"):
        cfg = FeatureConfig(det, max_keypoints=800, asift_tilts=(2.0,), asift_view_keypoints=400)
        fa, fb = detect(img, cfg), detect(dst, cfg)
        m = match(fa, fb)
        err = np.linalg.norm(m.dst_pts - (m.src_pts @ A[:, :2].T + A[:, 2]), axis=1)
        correct[det] = int(np.sum(err < 3.0))
        if det == "asift":
            tilt_x = fa.view[m.src_idx] == 1  # src view 1: tilt 2 along x, the simulation of this very warp
            assert tilt_x.sum() > 50
            assert np.mean(err[tilt_x] < 3.0) > 0.85
            assert np.median(err[tilt_x]) < 1.0  # points come back to src px accurately
            key = np.round(np.hstack([m.src_pts, m.dst_pts]) / 2.0)
            assert len(np.unique(key, axis=0)) == len(m)  # duplicates across views removed
    assert correct["asift"] > 3 * correct["sift"]


# --- ratio test and mutual check -------------------------------------------------------------------


def test_ratio_is_monotonic(sift_features):
    fa, fb = sift_features
    for mutual in (False, True):
        sets = [pairs(match(fa, fb, MatchConfig(r, mutual))) for r in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)]
        sizes = [len(s) for s in sets]
        assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
        for stricter, looser in pairwise(sets):
            assert stricter <= looser  # a stricter ratio only drops matches


def test_ratio_values_respect_threshold(sift_features):
    fa, fb = sift_features
    m = match(fa, fb, MatchConfig(0.6, False))
    assert np.all(m.ratio <= 0.6)
    assert np.mean(shift_error(m) < 1.5) > 0.98  # distinctive matches are almost all correct


def test_mutual_only_removes(sift_features):
    fa, fb = sift_features
    one_way = match(fa, fb, MatchConfig(0.9, False))
    mutual = match(fa, fb, MatchConfig(0.9, True))
    assert pairs(mutual) <= pairs(one_way)
    assert len(mutual) < len(one_way)
    # each kept match is the nearest src descriptor of its dst keypoint
    back, _ = knn(fb.desc[mutual.dst_idx], fa.desc, fa.norm, 1)
    np.testing.assert_array_equal(back[:, 0], mutual.src_idx)
    # the mutual check drops wrong matches more than right ones
    assert np.mean(shift_error(mutual) < 1.5) >= np.mean(shift_error(one_way) < 1.5)


# --- the BLAS kNN ----------------------------------------------------------------------------------


def _bf(query: np.ndarray, train: np.ndarray, norm: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    rows = cv2.BFMatcher(norm).knnMatch(query, train, k=k)
    return (np.array([[m.trainIdx for m in r] for r in rows]), np.array([[m.distance for m in r] for r in rows]))


def test_knn_agrees_with_bfmatcher_l2():
    rng = np.random.default_rng(1)
    q = rng.random((300, 128), dtype=np.float32)
    t = rng.random((500, 128), dtype=np.float32)
    idx, dist = knn(q, t, cv2.NORM_L2, 2)
    bi, bd = _bf(q, t, cv2.NORM_L2, 2)
    np.testing.assert_array_equal(idx, bi)
    np.testing.assert_allclose(dist, bd, rtol=1e-5)
    assert np.all(dist[:, 0] <= dist[:, 1])


def test_knn_agrees_with_bfmatcher_hamming():
    rng = np.random.default_rng(2)
    q = rng.integers(0, 256, (200, 32), dtype=np.uint8)
    t = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    idx, dist = knn(q, t, cv2.NORM_HAMMING, 2)
    bi, bd = _bf(q, t, cv2.NORM_HAMMING, 2)
    np.testing.assert_array_equal(dist, bd)
    # ties in integer distances may pick either neighbour; the distances say the same
    np.testing.assert_array_equal(idx[bd[:, 0] < bd[:, 1]], bi[bd[:, 0] < bd[:, 1]])


def test_knn_chunked_and_edge_cases():
    rng = np.random.default_rng(3)
    t = rng.random((4, 8), dtype=np.float32)
    q = t[[2, 0, 3]] + 1e-3  # each query next to a known train row
    idx, dist = knn(q, t, cv2.NORM_L2, 1)
    np.testing.assert_array_equal(idx[:, 0], [2, 0, 3])
    np.testing.assert_allclose(dist[:, 0], np.sqrt(8) * 1e-3, rtol=0.1)  # float32 |q|^2 + |t|^2 - 2qt
    idx, dist = knn(q, t[:1], cv2.NORM_L2, 2)  # one train row: the second neighbour is missing
    np.testing.assert_array_equal(idx[:, 1], [-1, -1, -1])
    assert np.all(np.isinf(dist[:, 1]))
    idx, dist = knn(np.zeros((0, 8), np.float32), t, cv2.NORM_L2, 2)
    assert idx.shape == (0, 2) and dist.shape == (0, 2)


def test_match_identity_on_random_descriptors():
    rng = np.random.default_rng(4)
    n = 60
    desc = rng.random((n, 128), dtype=np.float32)
    pts = rng.uniform(0, 100, (n, 2)).astype(np.float32)
    f = Features(pts, desc, cv2.NORM_L2, (100, 100), view=np.zeros(n, np.int32))
    m = match(f, f)
    assert len(m) == n
    np.testing.assert_array_equal(m.src_idx, m.dst_idx)
    np.testing.assert_allclose(m.ratio, 0.0, atol=5e-3)  # self-distance ~0 (float32 rounding)


def test_features_default_view_matches():
    rng = np.random.default_rng(4)
    n = 60
    f = Features(rng.uniform(0, 100, (n, 2)).astype(np.float32), rng.random((n, 128), dtype=np.float32),
                 cv2.NORM_L2, (100, 100))
    assert len(match(f, f)) == n


def test_empty_features_match_nothing():
    empty = Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), cv2.NORM_L2, (10, 10),
                     view=np.zeros(0, np.int32))
    assert len(match(empty, empty)) == 0


# --- exceptions ------------------------------------------------------------------------------------


def test_exception(shifted):
    src, dst = shifted
    fa = detect(src, FeatureConfig("orb", max_keypoints=200))
    fb = detect(dst, FeatureConfig("sift", max_keypoints=200))
    with pytest.raises(ConfigError, match="ORB"):
        match(fa, fb)
    with pytest.raises(ConfigError, match="ORB"):
        match(fb, fa)


@pytest.mark.parametrize("ratio", [0.0, -0.5, 1.01, 2.0])
def test_bad_ratio(ratio):
    with pytest.raises(ConfigError, match=f"ratio={ratio}"):
        MatchConfig(ratio=ratio)
