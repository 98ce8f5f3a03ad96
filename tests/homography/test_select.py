"""stitch.estimate_homography: accuracy on the sample pairs, candidate bookkeeping, options, odd inputs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import stitch
from stitch.errors import ConfigError, NoOverlapError
from stitch.geometry import corner_error
from stitch.homography.config import PRESET_CHOICES, SelectConfig, preset_levels

PAIRS = ("rotation_scale", "perspective", "illumination", "translation")
# measured (accurate preset, seed 0): 0.015, 0.022, 0.033, 0.00001 px mean corner error; fast: <= 0.40 px
TOL_ACCURATE = 0.2
TOL_FAST = 1.0


def err(H_est: np.ndarray, H_gt: np.ndarray, img: np.ndarray) -> float:
    return corner_error(H_est, H_gt, img.shape[1], img.shape[0])


@pytest.fixture(scope="module")
def results(sample_pair) -> dict:
    """name -> (src, dst, H_gt, HomographyResult) with the default (accurate) preset; computed once."""
    return {name: (*sample_pair(name), stitch.estimate_homography(*sample_pair(name)[:2])) for name in PAIRS}


# --- accuracy --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAIRS)
def test_shift(results, name):
    """Every sample pair: H within TOL_ACCURATE px mean corner error of the ground truth."""
    src, _, H_gt, r = results[name]
    assert err(r.H, H_gt, src) < TOL_ACCURATE
    assert err(r.best.H, H_gt, src) < 1.0  # the unrefined winner is already close
    assert r.H.shape == (3, 3) and r.H.dtype == np.float64 and r.H[2, 2] == pytest.approx(1.0)
    assert r.score > 0.9 and r.warnings == []
    assert r.refined_by in ("none", "lsq", "ecc", "lsq+ecc")
    assert r.levels_tried == ["sift-4000"]  # the first level is good enough on clean pairs
    assert r.n_inliers > 100 and r.inliers.shape == (len(r.matches),)
    assert r.src_size == (640, 480) and r.dst_size == (640, 480)


def test_smoke(results):
    _, _, _, r = results["perspective"]
    cands = r.candidates
    assert r.best is cands[0]
    assert len(cands) == len(preset_levels("accurate")[0].specs)
    ok = [c for c in cands if c.ok]
    scores = [c.score for c in ok]
    assert scores == sorted(scores, reverse=True)  # best first
    assert r.score >= cands[0].score  # refinement is only kept when it raises the score
    for c in cands:
        assert set(c.params) >= {"level", "features", "matching", "threshold", "seed"}
        assert c.seconds > 0.0


def test_candidates_rejected_last(sample_pair):
    src, dst, H_gt = sample_pair("perspective")
    opts = {"estimators": ["USAC_MAGSAC", "RANSAC"], "thresholds": [0.3, 4.0], "refiner": "none"}
    first = stitch.estimate_homography(src, dst, **opts)
    tight = max(c.n_inliers for c in first.candidates if c.params["threshold"] == 0.3)
    loose = min(c.n_inliers for c in first.candidates if c.params["threshold"] == 4.0)
    assert tight + 20 < loose  # a 0.3 px threshold keeps clearly fewer inliers than 4 px
    cut = (tight + loose) // 2  # min_inliers between the two: the tight runs are rejected
    r = stitch.estimate_homography(src, dst, min_inliers=cut, **opts)
    flags = [c.ok for c in r.candidates]
    assert flags == [True, True, False, False]  # every accepted candidate before every rejected one
    for c in r.candidates[2:]:
        assert c.rejected == f"{c.n_inliers} inliers < min_inliers={cut}"
        assert c.score == float("-inf") and c.params["threshold"] == 0.3
    assert r.candidates[0].score >= r.candidates[1].score
    assert r.best.params["threshold"] == 4.0
    assert r.refined_by == "none" and np.array_equal(r.H, r.best.H)
    assert err(r.H, H_gt, src) < 1.0


def test_summary_is_json(results):
    _, _, _, r = results["illumination"]
    s = json.loads(json.dumps(r.summary()))
    np.testing.assert_allclose(np.array(s["H"]), r.H)
    assert s["refined_by"] == r.refined_by and s["inliers"] == r.n_inliers and s["matches"] == len(r.matches)
    assert len(s["candidates"]) == len(r.candidates)
    assert s["candidates"][0]["method"] == r.best.method
    assert s["score"] == pytest.approx(r.score, abs=1e-6)


def test_same_seed_same_h(sample_pair, results):
    src, dst, _ = sample_pair("rotation_scale")
    again = stitch.estimate_homography(src, dst)  # seed 0, as in the fixture
    np.testing.assert_array_equal(again.H, results["rotation_scale"][3].H)
    a = stitch.estimate_homography(src, dst, preset="fast", seed=7)
    b = stitch.estimate_homography(src, dst, preset="fast", seed=7)
    np.testing.assert_array_equal(a.H, b.H)
    assert [c.params["seed"] for c in a.candidates] == [c.params["seed"] for c in b.candidates]
    assert {c.params["seed"] for c in a.candidates} == {7}  # the run seed offsets every spec's local seed


@pytest.mark.parametrize("name", ["perspective", "illumination"])
def test_preset_fast(sample_pair, name):
    src, dst, H_gt = sample_pair(name)
    r = stitch.estimate_homography(src, dst, preset="fast")
    assert err(r.H, H_gt, src) < TOL_FAST
    assert r.levels_tried == ["orb-2000"]
    assert len(r.candidates) == 3
    assert r.refined_by in ("none", "lsq")  # fast never runs ECC


def test_escalates_and_warns_when_score_stays_low(sample_pair):
    src, dst, H_gt = sample_pair("rotation_scale")
    with pytest.warns(UserWarning, match="low quality score"):
        r = stitch.estimate_homography(src, dst, preset="fast", accept_score=1.0)
    assert r.levels_tried == ["orb-2000", "sift-2000"]  # 1.0 is never reached (support < 1): every level is tried
    assert len(r.candidates) == 6 and len(r.warnings) == 1
    assert err(r.H, H_gt, src) < TOL_FAST


def test_identical_images_give_identity(sample_pair):
    src = sample_pair("perspective")[0]
    r = stitch.estimate_homography(src, src.copy())
    assert err(r.H, np.eye(3), src) < 0.1


# --- inputs ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast_reference(sample_pair):
    """(src, dst, H_gt, H from uint8 BGR arrays with preset 'fast')."""
    src, dst, H_gt = sample_pair("rotation_scale")
    return src, dst, H_gt, stitch.estimate_homography(src, dst, preset="fast").H


def test_rgba_and_uint16_accepted(fast_reference):
    src, dst, _, H_ref = fast_reference
    rgba = [cv2.cvtColor(x, cv2.COLOR_BGR2BGRA) for x in (src, dst)]
    r = stitch.estimate_homography(*rgba, preset="fast")
    np.testing.assert_array_equal(r.H, H_ref)  # alpha dropped: the very same pixels
    u16 = [x.astype(np.uint16) * 257 for x in (src, dst)]  # 8-bit values stretched to 16 bit
    r = stitch.estimate_homography(*u16, preset="fast")
    np.testing.assert_array_equal(r.H, H_ref)


def test_grayscale_accepted(fast_reference):
    src, dst, H_gt, _ = fast_reference
    gray = [cv2.cvtColor(x, cv2.COLOR_BGR2GRAY) for x in (src, dst)]
    r = stitch.estimate_homography(*gray, preset="fast")
    assert err(r.H, H_gt, src) < TOL_FAST
    r1 = stitch.estimate_homography(gray[0][:, :, None], gray[1][:, :, None], preset="fast")  # (H, W, 1)
    np.testing.assert_array_equal(r1.H, r.H)


def test_inputs_not_modified(sample_pair):
    src, dst, _ = sample_pair("illumination")
    gray = cv2.cvtColor(src, cv2.COLOR_BGR2GRAY)
    a, b = gray.copy(), dst.copy()
    before = (a.copy(), b.copy(), a.flags.writeable, b.flags.writeable)
    stitch.estimate_homography(a, b, preset="fast")
    np.testing.assert_array_equal(a, before[0])
    np.testing.assert_array_equal(b, before[1])
    assert (a.flags.writeable, b.flags.writeable) == before[2:]


def test_paths_accepted(samples_dir, sample_pair):
    folder = samples_dir / "pairs" / "translation"
    H_gt = sample_pair("translation")[2]
    r = stitch.estimate_homography(folder / "src.png", str(folder / "dst.png"), preset="fast")
    assert corner_error(r.H, H_gt, 640, 480) < TOL_FAST


# --- failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize("options, text", [
    ({"preset": "turbo"}, "preset='turbo'"),
    ({"estimators": ["FOO"]}, "'FOO'"),
    ({"estimators": ["RANSAC"], "thresholds": [-1.0]}, "threshold=-1.0"),
    ({"ratio": 1.5}, "ratio=1.5"),
    ({"ratio": 0.0}, "ratio=0.0"),
    ({"detector": "surf"}, "detector='surf'"),
    ({"refiner": "magic"}, "refiner='magic'"),
    ({"max_keypoints": 3}, "max_keypoints=3"),
    ({"score_max_side": 8}, "=8"),
])
def test_exception(options, text):
    with pytest.raises(ConfigError) as info:
        stitch.estimate_homography(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), **options)
    assert text in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("options", [{"max_keypoints": 0}, {"score_max_side": 0}, {"min_inliers": -3}],
                         ids=["max_keypoints=0", "score_max_side=0", "min_inliers=-3"])
def test_invalid_zero_or_negative_options_raise(options):
    with pytest.raises(ConfigError, match=next(iter(options))):
        SelectConfig.from_options(**options)


def test_score_max_side_error_names_the_option():
    with pytest.raises(ConfigError, match="score_max_side"):
        SelectConfig.from_options(score_max_side=8)


def test_preset_choices_listed():
    with pytest.raises(ConfigError) as info:
        SelectConfig.from_options(preset="turbo")
    for name in PRESET_CHOICES:
        assert name in str(info.value)


def test_unrelated_images_raise_no_overlap(sample_pair):
    src = sample_pair("perspective")[0]
    noise = np.random.default_rng(0).integers(0, 256, src.shape, dtype=np.uint8)
    with pytest.raises(NoOverlapError, match="no plausible homography"):
        stitch.estimate_homography(noise, src, preset="fast")


def test_blank_images_raise_no_overlap():
    blank = np.full((240, 320, 3), 90, np.uint8)
    with pytest.raises(NoOverlapError, match="no plausible homography"):
        stitch.estimate_homography(blank, blank.copy(), preset="fast")


def test_refinements_carry_their_reasons(sample_pair):
    """Every refinement step of the search is recorded with whether it was kept and why, also the cap's rejections."""
    from stitch.homography import quality
    from stitch.homography.select import max_refine_shift, refinement_verdict

    src, dst, _ = sample_pair("perspective")
    r = stitch.estimate_homography(src, dst)
    assert [s["refiner"] for s in r.refinements] == ["lsq", "ecc"]
    assert all(set(s) == {"refiner", "kept", "reason"} and s["reason"] for s in r.refinements)
    assert r.summary()["refinements"] == r.refinements
    ctx = quality.make_context(src, dst)
    far = np.array([[1.0, 0.0, 60.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ r.H  # 60 px: beyond the 24 px cap
    kept, why, _, _ = refinement_verdict(r.H, far, r.score, ctx, r.matches)
    assert not kept and "refinement cap" in why and f"{max_refine_shift((640, 480)):.1f} px" in why
    assert refinement_verdict(r.H, None, r.score, ctx, r.matches)[:2] == (False, "did not converge")


def test_view_beyond_the_horizon(sample_pair):
    """A view so tilted that the right third of src lies behind it (H's horizon crosses src at x = 500): the
    matrix is accepted on the visible part and recovered there, instead of being rejected as a fold-over."""
    from stitch.geometry import project

    src = sample_pair("perspective")[0]
    H = np.diag([0.64, 0.64, 1.0]) @ np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0 / 500, 0.0, 1.0]])
    dst = cv2.warpPerspective(src, H, (640, 480), flags=cv2.INTER_CUBIC)
    r = stitch.estimate_homography(src, dst)
    visible = np.array([[x, y] for x in np.linspace(20, 290, 6) for y in np.linspace(20, 460, 6)])
    assert np.linalg.norm(project(r.H, visible) - project(H, visible), axis=1).mean() < 1.0
    assert r.levels_tried == ["sift-4000"]  # accepted at the first level
