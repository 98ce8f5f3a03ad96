"""stitch.geometry: projection, normalisation, rescaling and error measures on matrices with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stitch.geometry import (
    box_intersection,
    box_slices,
    corner_error,
    fit_homography,
    image_corners,
    normalize_h,
    point_error,
    project,
    resize_matrix,
    scale_h,
    transfer_errors,
)

W, H = 640, 480


def shift(tx: float, ty: float) -> np.ndarray:
    """(3, 3) pure translation by (tx, ty) px."""
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def rotation_about(angle_deg: float, cx: float, cy: float, scale: float = 1.0) -> np.ndarray:
    """(3, 3) similarity: rotate by angle_deg and scale about (cx, cy)."""
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return shift(cx, cy) @ R @ shift(-cx, -cy)


PROJECTIVE = np.array([[0.95, -0.08, 12.0], [0.06, 1.02, -7.5], [2e-4, -1e-4, 1.0]])


# --- project ---------------------------------------------------------------------------------------


def test_smoke():
    pts = project(np.eye(3), [[1.0, 2.0], [3.0, 4.0]])
    assert pts.shape == (2, 2) and pts.dtype == np.float64
    np.testing.assert_array_equal(pts, [[1.0, 2.0], [3.0, 4.0]])


def test_shift():
    pts = np.array([[0.0, 0.0], [10.5, -3.0], [639.0, 479.0]])
    np.testing.assert_allclose(project(shift(-37, 23), pts), pts + [-37, 23], atol=1e-12)


def test_project_perspective_division():
    Hp = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.001, 0.0, 1.0]])  # w = 1 + x / 1000
    np.testing.assert_allclose(project(Hp, [[100.0, 50.0]]), [[100.0 / 1.1, 50.0 / 1.1]], rtol=1e-12)
    # the same homography up to scale (even a negative one) maps points identically
    np.testing.assert_allclose(project(-3.0 * PROJECTIVE, [[5.0, 7.0]]), project(PROJECTIVE, [[5.0, 7.0]]),
                               rtol=1e-12)


def test_project_line_at_infinity_gives_inf():
    Hp = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.001, 0.0, 1.0]])  # w = 0 on x = -1000
    out = project(Hp, [[-1000.0, 5.0], [0.0, 0.0]])
    assert np.all(np.isinf(out[0]))
    np.testing.assert_array_equal(out[1], [0.0, 0.0])


def test_project_accepts_flat_input():
    np.testing.assert_array_equal(project(shift(1, 2), np.array([3.0, 4.0])), [[4.0, 6.0]])


# --- normalize_h -----------------------------------------------------------------------------------


def test_normalize_h_scale_invariant():
    out = normalize_h(-2.5 * PROJECTIVE)
    assert out[2, 2] == 1.0
    np.testing.assert_allclose(out, PROJECTIVE, rtol=1e-12)
    np.testing.assert_allclose(normalize_h(PROJECTIVE.ravel().tolist()), PROJECTIVE, rtol=1e-12)


def test_normalize_h_zero_corner_uses_frobenius_norm():
    Hz = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])  # H[2, 2] == 0
    out = normalize_h(5.0 * Hz)
    assert np.linalg.norm(out) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(out, Hz / np.linalg.norm(Hz), rtol=1e-12)


# --- scale_h ---------------------------------------------------------------------------------------


def test_scale_h_shift_known_answer():
    # both images halved (cv2.resize: x' = (x + 0.5) / 2 - 0.5): a 40 px shift becomes 20 px
    np.testing.assert_allclose(scale_h(shift(40, -10), 0.5, 0.5), shift(20, -5), atol=1e-12)
    # only dst scaled by 2: x_dst' = 2 (x + 40) + 0.5
    np.testing.assert_allclose(scale_h(shift(40, 0), 1.0, 2.0), shift(0.5, 0.5) @ np.diag([2.0, 2.0, 1.0]) @ shift(40, 0),
                               atol=1e-12)


def test_scale_h_maps_scaled_points():
    rng = np.random.default_rng(0)
    pts = rng.uniform([0, 0], [W, H], (50, 2))
    for s_src, s_dst in [(0.5, 0.5), (0.25, 0.8), (2.0, 1.0)]:
        Hs = scale_h(PROJECTIVE, s_src, s_dst)
        np.testing.assert_allclose(project(Hs, project(resize_matrix(s_src), pts)),
                                   project(resize_matrix(s_dst), project(PROJECTIVE, pts)), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(resize_matrix(s_src)[0], [s_src, 0.0, 0.5 * (s_src - 1)])


def test_scale_h_round_trip():
    Hs = scale_h(PROJECTIVE, 0.37, 0.61)
    np.testing.assert_allclose(scale_h(Hs, 1 / 0.37, 1 / 0.61), normalize_h(PROJECTIVE), rtol=1e-9, atol=1e-12)


# --- transfer_errors -------------------------------------------------------------------------------


def test_transfer_errors_shift_known_answer():
    src = np.array([[10.0, 10.0], [20.0, 30.0], [100.0, 5.0], [300.0, 200.0]])
    offsets = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    dst = src + [5.0, -7.0] + offsets
    np.testing.assert_allclose(transfer_errors(shift(5, -7), src, dst), [0.0, 1.0, 2.0, 5.0], atol=1e-12)


def test_transfer_errors_is_symmetric_rms():
    # H doubles coordinates: a 2 px error in dst is a 1 px error back in src -> sqrt((4 + 1) / 2)
    H2 = np.diag([2.0, 2.0, 1.0])
    src = np.array([[10.0, 10.0]])
    dst = 2.0 * src + [2.0, 0.0]
    np.testing.assert_allclose(transfer_errors(H2, src, dst), [math.sqrt(2.5)], rtol=1e-12)


def test_transfer_errors_empty_and_singular():
    assert transfer_errors(np.eye(3), np.zeros((0, 2)), np.zeros((0, 2))).shape == (0,)
    singular = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    e = transfer_errors(singular, [[1.0, 2.0], [3.0, 4.0]], [[1.0, 0.0], [3.0, 0.0]])
    assert e.shape == (2,) and np.all(np.isinf(e))


# --- corner_error / point_error --------------------------------------------------------------------


def test_image_corners_order():
    np.testing.assert_array_equal(image_corners(W, H), [[0, 0], [W, 0], [W, H], [0, H]])


def test_corner_error_of_shift_is_shift_length():
    assert corner_error(shift(3, 4), np.eye(3), W, H) == pytest.approx(5.0, abs=1e-12)
    assert corner_error(shift(-37, 23) @ shift(3, 4), shift(-37, 23), W, H) == pytest.approx(5.0, abs=1e-9)
    assert corner_error(PROJECTIVE, 7.0 * PROJECTIVE, W, H) == pytest.approx(0.0, abs=1e-9)


def test_corner_error_half_turn_is_diagonal():
    # a 180 degree turn about the centre sends every corner to the opposite one: error = diagonal = 800 px
    assert corner_error(rotation_about(180, W / 2, H / 2), np.eye(3), W, H) == pytest.approx(800.0, rel=1e-12)


def test_corner_error_none_and_infinite():
    assert corner_error(None, np.eye(3), W, H) == float("inf")
    through_infinity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0 / W, 0.0, 1.0]])  # w = 0 at x = W
    assert corner_error(through_infinity, np.eye(3), W, H) == float("inf")


def test_point_error_known_answer():
    src = np.array([[0.0, 0.0], [10.0, 0.0]])
    dst = np.array([[1.0, 0.0], [10.0, 3.0]])
    assert point_error(np.eye(3), src, dst) == pytest.approx(2.0)  # (1 + 3) / 2
    assert point_error(None, src, dst) == float("inf")


def test_exception():
    with pytest.raises(ValueError):
        normalize_h(np.ones(8))  # not 9 numbers


# --- fit_homography --------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [4, 5, 30, 2000])
def test_fit_homography_exact_points(n):
    """Exact points: every entry to 1e-11 (cv2.findHomography(src, dst, 0) rounds to float32: ~1e-6)."""
    src = np.random.default_rng(n).uniform(0, [W, H], (n, 2))
    out = fit_homography(src, project(PROJECTIVE, src))
    assert out[2, 2] == 1.0 and np.abs(out - PROJECTIVE).max() < 1e-11


def test_fit_homography_noisy_points_least_squares():
    """1 px noise: the forward-error least squares, i.e. cv2.findHomography(src, dst, 0)'s minimum, to ~1e-9
    relative in the cost (OpenCV's float32 points cost it the last digits), and the cost is no larger."""
    import cv2

    rng = np.random.default_rng(7)
    src = rng.uniform(0, [W, H], (300, 2))
    dst = project(PROJECTIVE, src) + rng.normal(0.0, 1.0, (300, 2))
    ours, ref = fit_homography(src, dst), normalize_h(cv2.findHomography(src, dst, 0)[0])

    def cost(M: np.ndarray) -> float:
        return float(np.sum((project(M, src) - dst) ** 2))

    assert cost(ours) <= cost(ref) and cost(ours) == pytest.approx(cost(ref), rel=1e-9)
    assert cost(ours) == pytest.approx(566.61, abs=0.01)  # its expectation: 2 (N - 4) sigma^2 = 592


def test_fit_homography_degenerate_is_none():
    """Coincident or collinear points fix no homography: None (not a matrix that fits by accident)."""
    x = np.linspace(0.0, 100.0, 10)
    line = np.stack([x, 2.0 * x + 1.0], 1)
    assert fit_homography(np.ones((10, 2)), np.ones((10, 2))) is None
    assert fit_homography(line, line + 5.0) is None
    assert fit_homography(line[:3], line[:3]) is None  # fewer than 4


def test_box_intersection_and_slices_known_answer():
    """Overlap of two boxes, none for touching boxes, and the slices of a box inside an offset array."""
    assert box_intersection((0, 0, 10, 8), (6, 5, 20, 20)) == (6, 5, 10, 8)
    assert box_intersection((0, 0, 10, 8), (10, 0, 20, 8)) is None  # x1 is exclusive: they only touch
    arr = np.arange(100).reshape(10, 10)  # pixel (0, 0) of arr sits at canvas (4, 3)
    rows, cols = box_slices((6, 5, 9, 7), (4, 3))
    assert (rows, cols) == (slice(2, 4), slice(2, 5)) and arr[rows, cols].shape == (2, 3)



def test_clip_halfplane():
    """Known answers: a cut square, a vertex on the line kept once, nothing kept, everything kept."""
    from stitch.geometry import clip_halfplane

    sq = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]])
    np.testing.assert_allclose(clip_halfplane(sq, np.array([-1.0, 0.0, 3.0])), [[0, 0], [3, 0], [3, 4], [0, 4]])
    diag = clip_halfplane(sq, np.array([-1.0, -1.0, 4.0]))  # x + y <= 4: corners (4, 0) and (0, 4) on the line
    np.testing.assert_allclose(diag, [[0, 0], [4, 0], [0, 4]])
    assert clip_halfplane(sq, np.array([0.0, 0.0, -1.0])).shape == (0, 2)
    np.testing.assert_allclose(clip_halfplane(sq, np.array([1.0, 0.0, 0.0])), sq)
    np.testing.assert_allclose(clip_halfplane(sq, np.array([-1.0, 0.0, 4.0]), tau=1.0)[:, 0].max(), 3.0)


def test_stacked_project_and_transfer_errors_equal_one_at_a_time():
    """A stack of homographies maps each point set as one call per H would, to the bit; a singular H in the stack
    gives inf for its own matches only."""
    rng = np.random.default_rng(7)
    H = np.stack([np.eye(3) + rng.normal(0, 0.05, (3, 3)) for _ in range(4)])
    H[2] = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 0]])  # singular
    src = rng.uniform(0, 500, (4, 30, 2))
    dst = src + rng.normal(0, 2, src.shape)
    assert np.array_equal(project(H, src), np.stack([project(h, s) for h, s in zip(H, src)]))
    many = transfer_errors(H, src, dst)
    one = np.stack([transfer_errors(h, s, d) for h, s, d in zip(H, src, dst)])
    assert many.shape == (4, 30) and np.array_equal(many, one)
    assert np.isinf(many[2]).all() and np.isfinite(many[[0, 1, 3]]).all()
