"""stitch.quality: plausibility gate, photometric agreement, support term and the combined score."""

from __future__ import annotations

import math
from itertools import pairwise

import cv2
import numpy as np
import pytest
from helpers import texture

from stitch.errors import ConfigError
from stitch.geometry import image_corners, project
from stitch.homography import quality
from stitch.homography.features import FeatureConfig, detect
from stitch.homography.matching import Matches, match
from stitch.homography.quality import ScoreConfig, make_context, photometric, plausibility, score, support

SIZE = (640, 480)
PAIRS = ("rotation_scale", "perspective", "illumination", "translation")


def shift(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def move_corner(H: np.ndarray, k: int, delta: tuple[float, float]) -> np.ndarray:
    """H with the image of src corner k (TL, TR, BR, BL of 640x480) moved by delta px."""
    c = image_corners(*SIZE)
    q = project(H, c)
    q[k] += delta
    return cv2.getPerspectiveTransform(c.astype(np.float32), q.astype(np.float32)).astype(np.float64)


@pytest.fixture(scope="module")
def scored_pair(sample_pair):
    """Factory with a cache: name -> (src, dst, H_gt, ScoringContext, Matches)."""
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            src, dst, H = sample_pair(name)
            cfg = FeatureConfig("sift", max_keypoints=1500)
            cache[name] = (src, dst, H, make_context(src, dst), match(detect(src, cfg), detect(dst, cfg)))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def image(sample_pair) -> np.ndarray:
    return sample_pair("rotation_scale")[0]


# --- plausibility ----------------------------------------------------------------------------------


@pytest.mark.parametrize("H, reason", [
    (np.array([[-1.0, 0.0, 640.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), "mirror"),
    (np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 480.0], [0.0, 0.0, 1.0]]), "mirror"),
    (np.array([[20.0, 0.0, 0.0], [0.0, 20.0, 0.0], [-1.0 / 20, 0.0, 1.0]]),
     "area change"),  # the horizon crosses the image at x = 20; the part in front still grows ~20000x
    (np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), "singular matrix"),
    (np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), "singular matrix"),
    (np.diag([20.0, 20.0, 1.0]), "area change x400"),
    (np.diag([0.05, 0.05, 1.0]), "area change x0.0025"),
    (np.diag([6.0, 0.15, 1.0]), "ill-conditioned: local anisotropy 40"),  # area x0.9, singular values 6 / 0.15
    (shift(2000.0, 0.0), "no overlap"),
    (shift(0.0, -481.0), "no overlap"),
    (shift(630.0, 0.0), "no overlap"),  # 10 px strip = 1.6 % < min_overlap 2 %
    (None, "no finite matrix"),
    (np.full((3, 3), np.nan), "no finite matrix"),
])
def test_plausibility_rejects_with_reason(H, reason):
    why = plausibility(H, SIZE, SIZE)
    assert why is not None and why.startswith(reason), why


#: A view whose horizon crosses the src image: w = 1 - x / 400, so src points right of x = 400 are behind.
TILT = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0 / 400, 0.0, 1.0]])


def test_visible_outline_cut_at_the_horizon():
    """Known answer: the image is cut where w = HORIZON_MARGIN * max w (x = 360 for TILT); uncut otherwise."""
    poly, cut = quality.visible_outline(TILT, SIZE, SIZE)
    assert cut and np.allclose(poly, [[0, 0], [360, 0], [360, 480], [0, 480]])
    poly, cut = quality.visible_outline(-3.0 * TILT, SIZE, SIZE)  # the same homography up to sign and scale
    assert cut and np.allclose(poly, [[0, 0], [360, 0], [360, 480], [0, 480]])
    edge = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0 / 640, 0.0, 1.0]])  # w == 0 at the right corners
    poly, cut = quality.visible_outline(edge, SIZE, SIZE)
    assert cut and np.allclose(poly[:, 0].max(), 576.0)
    poly, cut = quality.visible_outline(np.eye(3), SIZE, SIZE)
    assert not cut and np.array_equal(poly, image_corners(*SIZE))
    # a view cut at the horizon is judged on its visible part: plausible (area x55 there), not a fold-over
    assert plausibility(TILT, SIZE, SIZE) is None and plausibility(edge, SIZE, SIZE) is None


def test_photometric_leaves_out_pixels_behind_the_horizon():
    """dst pixels whose preimage lies behind the horizon (ghosts of the src's far side) are not overlap."""
    src = np.dstack([texture(1, SIZE)[:, :, 0]] * 3)
    H = shift(1200.0, 0.0) @ TILT  # the visible part lands at x' >= 1200; src x > ~545 would ghost into x' < 134
    ctx = make_context(src, np.zeros((480, 1800, 3), np.uint8), ScoreConfig(work_max_side=2048))
    _, _, overlap = photometric(H, ctx)
    # only dst x' in [1200, 1800) maps to src points in front (x in [0, 240]): 600 of src's 640 columns
    assert overlap == pytest.approx(600 * 480 / (640 * 480), abs=0.03)


def test_visible_outline_side_from_front_points():
    """Points both views see pick the side: on TILT's far side the outline is x >= 424 (w <= -0.06)."""
    far = np.array([[500.0, 100.0], [600.0, 300.0], [550.0, 400.0]])
    assert quality.front_sign(TILT, SIZE, far) == -1.0 and quality.front_sign(TILT, SIZE) == 1.0
    poly, cut = quality.visible_outline(TILT, SIZE, SIZE, far)
    assert cut and np.isclose(poly[:, 0].min(), 424.0) and np.isclose(poly[:, 0].max(), 640.0)


def test_horizon_cut_can_be_refused():
    """ScoreConfig(horizon_cut=False), as the panorama's pair screening uses: the old fold-over verdict."""
    why = plausibility(TILT, SIZE, SIZE, ScoreConfig(horizon_cut=False))
    assert why == "fold-over: a src corner maps through the line at infinity"
    assert plausibility(np.eye(3), SIZE, SIZE, ScoreConfig(horizon_cut=False)) is None


def test_photometric_unchanged_when_only_the_dst_side_horizon_crosses_dst():
    """H's horizon misses src (w = 1 + x / 700 > 0) while its image line crosses a wide dst: no pixel is masked."""
    src = np.dstack([texture(2, SIZE)[:, :, 0]] * 3)
    H = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0 / 700, 0.0, 1.0]])
    dst = cv2.warpPerspective(src, H, (1600, 480), flags=cv2.INTER_LINEAR)
    assert not quality.visible_outline(H, SIZE, (1600, 480))[1]
    ncc, gc, overlap = photometric(H, make_context(src, dst, ScoreConfig(work_max_side=2048)))
    assert ncc > 0.95 and gc > 0.8 and overlap > 0.3  # the src columns land on x' in [0, 335]


def test_smoke():
    assert plausibility(np.eye(3), SIZE, SIZE) is None
    assert plausibility(-2.0 * np.eye(3), SIZE, SIZE) is None  # the same homography up to scale
    assert plausibility(shift(620.0, 0.0), SIZE, SIZE) is None  # 20 px strip = 3.1 % overlap


@pytest.mark.parametrize("name", PAIRS)
def test_plausibility_accepts_sample_ground_truth(sample_pair, name):
    src, dst, H = sample_pair(name)
    assert plausibility(H, (src.shape[1], src.shape[0]), (dst.shape[1], dst.shape[0])) is None
    assert plausibility(np.linalg.inv(H), SIZE, SIZE) is None


def test_plausibility_limits_follow_config():
    H2 = np.diag([2.0, 2.0, 1.0])  # area x4, inside the default limit of x100
    assert plausibility(H2, SIZE, SIZE) is None
    assert plausibility(H2, SIZE, SIZE, ScoreConfig(max_area_change=3.0)).startswith("area change x4")
    aniso = np.diag([2.0, 0.5, 1.0])  # anisotropy 4
    assert plausibility(aniso, SIZE, SIZE) is None
    assert plausibility(aniso, SIZE, SIZE, ScoreConfig(max_anisotropy=3.0)).startswith("ill-conditioned")
    assert plausibility(shift(620.0, 0.0), SIZE, SIZE, ScoreConfig(min_overlap=0.05)).startswith("no overlap")


# --- photometric -----------------------------------------------------------------------------------


def test_photometric_identical_images(image):
    ctx = make_context(image, image)
    ncc, gc, overlap = photometric(np.eye(3), ctx)
    assert ncc == pytest.approx(1.0, abs=1e-6)
    assert gc == pytest.approx(1.0, abs=1e-6)
    assert overlap > 0.95


def test_photometric_invariant_to_gain_and_offset(image):
    ref = photometric(np.eye(3), make_context(image, image))
    for gain, offset in [(0.8, 20.0), (0.5, 0.0), (0.6, 60.0)]:  # no clipping
        dst = np.clip(np.round(image.astype(np.float64) * gain + offset), 0, 255).astype(np.uint8)
        ncc, gc, overlap = photometric(np.eye(3), make_context(image, dst))
        # uint8 rounding is the only change
        assert ncc == pytest.approx(ref[0], abs=5e-3)
        assert gc == pytest.approx(ref[1], abs=5e-3)
        assert overlap == pytest.approx(ref[2])


def test_photometric_exact_gain_invariance_in_float(image):
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    a = photometric(np.eye(3), make_context(gray, gray))
    b = photometric(np.eye(3), make_context(gray, 0.37 * gray + 55.0))
    np.testing.assert_allclose(b, a, atol=1e-5)


def test_photometric_drops_when_misaligned(image):
    ctx = make_context(image, image)
    aligned = photometric(np.eye(3), ctx)
    off = photometric(shift(4.0, 0.0), ctx)
    assert off[0] < aligned[0] and off[1] < aligned[1] - 0.2  # gradients decorrelate fastest


def test_photometric_tiny_overlap_is_zero(image):
    ctx = make_context(image, image)
    ncc, gc, overlap = photometric(shift(639.0, 0.0), ctx)
    assert (ncc, gc) == (0.0, 0.0) and overlap < 0.01


# --- support ---------------------------------------------------------------------------------------


def exact_matches(n: int, error_px: float = 0.0) -> Matches:
    """n matches of the identity, each dst displaced by error_px along x (symmetric transfer error = error_px)."""
    rng = np.random.default_rng(0)
    src = rng.uniform([0, 0], SIZE, (n, 2))
    return Matches(src, src + [error_px, 0.0], np.arange(n), np.arange(n), np.full(n, 0.5))


def test_support_known_answer():
    sup, mass, rms = support(np.eye(3), exact_matches(30))
    assert mass == pytest.approx(30.0)
    assert sup == pytest.approx(1.0 - math.exp(-1.0))
    assert rms == pytest.approx(0.0)
    sup, mass, rms = support(np.eye(3), exact_matches(40, error_px=1.5))  # weight 1 - (1.5 / 3)^2 = 0.75
    assert mass == pytest.approx(30.0)
    assert sup == pytest.approx(1.0 - math.exp(-1.0))
    assert rms == pytest.approx(1.5)
    sup, mass, rms = support(np.eye(3), exact_matches(40, error_px=3.5))  # outside tau: no support at all
    assert (sup, mass, rms) == (0.0, 0.0, float("inf"))
    assert support(np.eye(3), None) == (0.0, 0.0, float("inf"))


def test_support_grows_and_saturates():
    values = [support(np.eye(3), exact_matches(n))[0] for n in (1, 5, 10, 30, 60, 120, 300)]
    assert all(b > a for a, b in pairwise(values))
    assert values[0] == pytest.approx(1.0 - math.exp(-1.0 / 30.0))
    assert values[-1] > 0.9999  # saturated: 300 more inliers barely matter
    assert values[-1] - values[-2] < 0.02


def test_support_prefers_tight_matches():
    loose = support(np.eye(3), exact_matches(50, error_px=2.0))[0]
    tight = support(np.eye(3), exact_matches(50, error_px=0.5))[0]
    assert tight > loose


# --- the combined score ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAIRS)
def test_shift(scored_pair, name):
    """The ground truth scores best: beats every 3 px corner perturbation and a 15 px wrong translation."""
    _, _, H, ctx, m = scored_pair(name)
    gt, parts, reason = score(H, ctx, m)
    assert reason is None and gt > 0.99
    assert parts["support"] > 0.99 and parts["photometric"] > 0.98
    for k in range(4):
        for delta in ((3.0, 0.0), (0.0, -3.0), (-2.0, 2.0)):
            worse, _, why = score(move_corner(H, k, delta), ctx, m)
            assert why is None
            assert worse < gt, (k, delta)
    wrong, wparts, _ = score(shift(15.0, -10.0) @ H, ctx, m)
    assert wrong < gt - 0.5
    assert wparts["support"] < 0.05  # no match agrees with the wrong translation


def test_score_formula(scored_pair):
    _, _, H, ctx, m = scored_pair("perspective")
    total, parts, _ = score(H, ctx, m)
    assert parts["photometric"] == pytest.approx(0.5 * (parts["ncc"] + parts["gc"]))
    assert total == pytest.approx(quality.W_PHOTO * parts["photometric"] + quality.W_SUPPORT * parts["support"])
    no_matches, p0, _ = score(H, ctx, None)
    assert p0["support"] == 0.0 and no_matches == pytest.approx(quality.W_PHOTO * parts["photometric"])


def test_score_rejects_implausible(scored_pair):
    _, _, H, ctx, m = scored_pair("perspective")
    mirror = np.array([[-1.0, 0.0, 640.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ H
    total, parts, reason = score(mirror, ctx, m)
    assert total == float("-inf") and parts == {} and reason.startswith("mirror")


@pytest.mark.parametrize("kwargs, text", [
    ({"work_max_side": 16}, "work_max_side=16"),
    ({"support_tau": 0.0}, "support_tau"),
    ({"support_saturation": -1.0}, "support_saturation"),
    ({"max_area_change": 1.0}, "max_area_change"),
    ({"max_anisotropy": 0.5}, "max_anisotropy"),
])
def test_exception(kwargs, text):
    with pytest.raises(ConfigError, match=text):
        ScoreConfig(**kwargs)
