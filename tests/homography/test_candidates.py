"""stitch.candidates: every robust estimator on matches with planted outliers at known indices."""

from __future__ import annotations

import numpy as np
import pytest

from stitch.errors import ConfigError
from stitch.geometry import corner_error, project
from stitch.homography.candidates import ESTIMATOR_CHOICES, Candidate, EstimatorSpec, estimate, generate
from stitch.homography.matching import Matches

W, H = 640, 480
H_TRUE = np.array([[0.95, -0.08, 12.0], [0.06, 1.02, -7.5], [2e-5, -4e-5, 1.0]])
N_IN, N_OUT, NOISE = 200, 60, 0.3


def make_matches(n_in: int = N_IN, n_out: int = N_OUT, noise: float = NOISE,
                 seed: int = 7) -> tuple[Matches, np.ndarray]:
    """Matches from H_TRUE: n_in inliers with Gaussian noise (px) and n_out outliers; returns (matches, outlier idx)."""
    rng = np.random.default_rng(seed)
    n = n_in + n_out
    src = rng.uniform([0, 0], [W, H], (n, 2))
    dst = project(H_TRUE, src) + rng.normal(0.0, noise, (n, 2))
    out = np.sort(rng.choice(n, n_out, replace=False))
    # outliers land 30..200 px off in each axis, far beyond any threshold
    dst[out] = project(H_TRUE, src[out]) + rng.uniform(30, 200, (n_out, 2)) * rng.choice([-1, 1], (n_out, 2))
    ratio = rng.uniform(0.3, 0.8, n)
    return Matches(src, dst, np.arange(n), np.arange(n), ratio), out


@pytest.fixture(scope="module")
def planted() -> tuple[Matches, np.ndarray]:
    return make_matches()


def test_smoke(planted):
    m, _ = planted
    Hh, inl = estimate(m, EstimatorSpec("RANSAC"))
    assert Hh.shape == (3, 3) and Hh.dtype == np.float64 and Hh[2, 2] == pytest.approx(1.0)
    assert inl.shape == (len(m),) and inl.dtype == bool


@pytest.mark.parametrize("method", ESTIMATOR_CHOICES)
def test_planted_outliers(planted, method):
    m, out = planted
    is_out = np.zeros(len(m), bool)
    is_out[out] = True
    Hh, inl = estimate(m, EstimatorSpec(method, threshold=3.0))
    assert corner_error(Hh, H_TRUE, W, H) < 1.0
    assert np.mean(~inl[out]) >= 0.95  # planted outliers are flagged
    assert np.mean(inl[~is_out]) >= 0.95  # true inliers are kept


@pytest.mark.parametrize("method", ESTIMATOR_CHOICES)
def test_shift(method):
    """Noise-free matches of a pure shift: every estimator returns the shift exactly and keeps every match."""
    rng = np.random.default_rng(3)
    src = rng.uniform([0, 0], [W, H], (80, 2))
    m = Matches(src, src + [-37.0, 23.0], np.arange(80), np.arange(80), rng.uniform(0.3, 0.8, 80))
    Hh, inl = estimate(m, EstimatorSpec(method, threshold=2.0))
    np.testing.assert_allclose(Hh, [[1, 0, -37], [0, 1, 23], [0, 0, 1]], atol=1e-4)  # float32 points inside
    assert corner_error(Hh, np.array([[1, 0, -37], [0, 1, 23], [0, 0, 1]]), W, H) < 1e-3
    assert inl.all()


@pytest.mark.parametrize("method", ESTIMATOR_CHOICES)
def test_seeds_agree_on_a_clean_problem(method):
    m, _ = make_matches(n_out=0)
    Hs = [estimate(m, EstimatorSpec(method, 3.0, seed))[0] for seed in (0, 1, 2, 3)]
    for Hh in Hs:
        assert corner_error(Hh, H_TRUE, W, H) < 0.3
        assert corner_error(Hh, Hs[0], W, H) < 0.2


@pytest.mark.parametrize("method", ESTIMATOR_CHOICES)
def test_same_seed_is_reproducible(planted, method):
    m, _ = planted
    for seed in (0, 5):
        H1, inl1 = estimate(m, EstimatorSpec(method, 3.0, seed))
        H2, inl2 = estimate(m, EstimatorSpec(method, 3.0, seed))
        np.testing.assert_array_equal(H1, H2)
        np.testing.assert_array_equal(inl1, inl2)


def test_seed_maps_inlier_mask_back_to_match_order(planted):
    """A non-zero seed permutes the matches; the mask must still refer to the caller's order."""
    m, out = planted
    for seed in (1, 2, 3):
        _, inl = estimate(m, EstimatorSpec("RANSAC", 3.0, seed))
        assert not inl[out].any()
        assert inl.sum() >= 0.95 * N_IN


def test_lmeds_near_its_breakdown():
    """LMEDS tolerates up to 50 % outliers: 200 inliers, 150 outliers (43 %)."""
    m, out = make_matches(n_in=200, n_out=150, seed=11)
    is_out = np.zeros(len(m), bool)
    is_out[out] = True
    Hh, inl = estimate(m, EstimatorSpec("LMEDS"))
    assert corner_error(Hh, H_TRUE, W, H) < 1.0
    assert np.mean(~inl[out]) >= 0.95 and np.mean(inl[~is_out]) >= 0.95


def test_generate_tags_params(planted):
    m, _ = planted
    specs = [EstimatorSpec("USAC_MAGSAC", 2.0), EstimatorSpec("RANSAC", 4.0, 3), EstimatorSpec("LMEDS")]
    tags = {"level": "test", "features": "sift-100"}
    cands = generate(m, specs, tags)
    assert [c.method for c in cands] == ["USAC_MAGSAC", "RANSAC", "LMEDS"]
    assert [c.params for c in cands] == [
        {"level": "test", "features": "sift-100", "threshold": 2.0, "seed": 0},
        {"level": "test", "features": "sift-100", "threshold": 4.0, "seed": 3},
        {"level": "test", "features": "sift-100", "threshold": 3.0, "seed": 0},
    ]
    assert tags == {"level": "test", "features": "sift-100"}  # the caller's dict is not modified
    for c in cands:
        assert isinstance(c, Candidate) and c.ok and c.rejected is None
        assert c.matches is m and c.seconds >= 0.0
        assert corner_error(c.H, H_TRUE, W, H) < 1.0
        assert N_IN * 0.95 <= c.n_inliers <= N_IN + 3
        s = c.summary()
        assert s["inliers"] == c.n_inliers and s["matches"] == len(m) and s["score"] is None


@pytest.mark.parametrize("n", [0, 1, 3])
def test_too_few_matches_rejected(n):
    m, _ = make_matches(n_in=n, n_out=0)
    Hh, inl = estimate(m, EstimatorSpec("RANSAC"))
    assert Hh is None and inl.shape == (n,) and not inl.any()
    (c,) = generate(m, [EstimatorSpec("RANSAC")])
    assert c.H is None and not c.ok
    assert c.rejected == f"only {n} matches (< 4)"
    assert c.summary()["H"] is None and c.summary()["inliers"] == 0


@pytest.mark.parametrize("method", ESTIMATOR_CHOICES)
def test_degenerate_matches_rejected(method):
    """Five matches on one line admit no homography: a rejected candidate with a reason, not a crash."""
    src = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    m = Matches(src, src + 5.0, np.arange(5), np.arange(5), np.full(5, 0.5))
    (c,) = generate(m, [EstimatorSpec(method)])
    assert c.H is None and c.n_inliers == 0
    assert c.rejected == "estimator found no model"


@pytest.mark.parametrize("kwargs, text", [
    ({"method": "MAGSAC"}, "'MAGSAC'"),
    ({"method": "ransac"}, "'ransac'"),
    ({"method": "RANSAC", "threshold": 0.0}, "threshold=0.0"),
    ({"method": "RANSAC", "threshold": -1.0}, "threshold=-1.0"),
])
def test_exception(kwargs, text):
    with pytest.raises(ConfigError) as info:
        EstimatorSpec(**kwargs)
    assert text in str(info.value)
