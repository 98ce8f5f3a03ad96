"""Candidate sources: each recovers a known H on data/samples; the search order, warnings, and the tables."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

import stitch
from stitch.errors import ConfigError
from stitch.geometry import corner_error, project
from stitch.homography import search, sources
from stitch.homography.config import SelectConfig
from stitch.homography.features import DETECTOR_CHOICES, DETECTORS
from stitch.homography.learned import INSTALL_HINT, LEARNED_CHOICES, unavailable
from stitch.homography.refine import REFINER_CHOICES, REFINERS
from stitch.homography.sources import SOURCE_CHOICES, SOURCES, check_sources

NEVER = 1.0  # the unreachable bar (a score is at most 1): every step of the named sources runs


def err(r, H_gt, img) -> float:
    return corner_error(r.H, H_gt, img.shape[1], img.shape[0])


def first_level_only(names: str) -> SelectConfig:
    """Sources ``names``, no acceptance (every step runs), the features source cut to its first level."""
    cfg = SelectConfig.from_options(sources=names, accept_score=NEVER, refiner="none")
    return replace(cfg, levels=cfg.levels[:1])


def test_tables():
    assert SOURCE_CHOICES == ("features", "synthesis", "learned", "direct")  # cheapest first
    assert [SOURCES[n].cost for n in SOURCE_CHOICES] == sorted(SOURCES[n].cost for n in SOURCE_CHOICES)
    assert REFINER_CHOICES == ("none", "lsq", "ecc", "deep") and REFINERS["deep"].chain == ("lsq", "ecc", "deep")
    assert set(LEARNED_CHOICES) <= set(DETECTOR_CHOICES) and DETECTORS["asift"].affine_views
    assert check_sources("direct, features") == ("features", "direct")
    assert SelectConfig.from_options(sources=["learned", "synthesis"]).sources == ("synthesis", "learned")
    with pytest.raises(ConfigError, match="'bogus'"):
        check_sources("features,bogus")
    with pytest.raises(ConfigError, match="sources='nope'|'nope'"):
        stitch.estimate_homography(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), sources="nope")
    assert SelectConfig.from_options(preset="fast").sources == ("features",)
    assert SelectConfig.from_options().sources == SOURCE_CHOICES


@pytest.mark.parametrize("name", ["perspective", "rotation_scale"])
def test_first_level_unchanged(sample_pair, name):
    """A pair accepted at the first level: the same H and score with every source as with features alone."""
    src, dst, _ = sample_pair(name)
    a = stitch.estimate_homography(src, dst)
    b = stitch.estimate_homography(src, dst, sources="features")
    assert a.levels_tried == ["sift-4000"] == b.levels_tried
    assert np.array_equal(a.H, b.H) and a.score == b.score
    assert {c.source for c in a.candidates} == {"features"} and a.summary()["source"] == "features"
    assert a.summary()["candidates"][0]["source"] == "features"


@pytest.mark.parametrize("source, pair, tol", [
    ("features", "perspective", 0.5),
    ("synthesis", "perspective", 1.0),
    ("direct", "translation", 1.0),
])
def test_shift(sample_pair, source, pair, tol):
    """Each source alone recovers the sample pair's known H (mean corner error in px)."""
    src, dst, H_gt = sample_pair(pair)
    r = stitch.estimate_homography(src, dst, sources=source, refiner="none")
    assert err(r, H_gt, src) < tol
    assert r.best.source == source and all(c.source == source for c in r.candidates)


@pytest.mark.parametrize("name", LEARNED_CHOICES)
def test_shift_learned(sample_pair, name):
    """The learned matchers (optional extra 'learned'): known H within 2 px, under ~2 s per pair."""
    if unavailable(name):
        pytest.skip(unavailable(name))
    src, dst, H_gt = sample_pair("perspective")
    cfg = SelectConfig.from_options(sources="learned", refiner="none", accept_score=NEVER)
    state = search.SearchState(src, dst, stitch.homography.quality.make_context(src, dst), cfg,
                               search.FeatureCache(), search.FeatureCache())
    steps = [s for s in sources.learned_source(state) if s.name.startswith(name)]
    cands = search.score_candidates(steps[0].run(), state.ctx, cfg.min_inliers)
    best = max((c for c in cands if c.ok), key=lambda c: c.score)
    assert corner_error(best.H, H_gt, src.shape[1], src.shape[0]) < 2.0
    assert best.params["matching"] == "lightglue" and best.n_inliers >= 30


def test_failing_source_is_a_warning(sample_pair, monkeypatch):
    """A source that raises becomes one warning; the other sources still run and give the answer."""
    def broken(state):
        raise RuntimeError("boom")
        yield  # pragma: no cover

    monkeypatch.setitem(SOURCES, "learned", sources.Source("learned", broken, 1))
    src, dst, H_gt = sample_pair("translation")
    with pytest.warns(UserWarning):  # the failure, and the low score of the unreachable bar
        r = stitch.estimate_homography(src, dst, config=first_level_only("features,learned"))
    assert any("source 'learned' failed: RuntimeError: boom" in w for w in r.warnings)
    assert err(r, H_gt, src) < 0.5


def test_missing_extra_is_a_warning(sample_pair, monkeypatch):
    """The 'learned' extra missing: a one-line warning with the install hint, and the search goes on."""
    monkeypatch.setattr(stitch.homography.learned.importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else object())
    assert unavailable("xfeat") == f"torch is missing; {INSTALL_HINT}"
    src, dst, H_gt = sample_pair("translation")
    with pytest.warns(UserWarning):  # the install hints, and the low score of the unreachable bar
        r = stitch.estimate_homography(src, dst, config=first_level_only("features,learned"))
    hints = [w for w in r.warnings if "pip install 'stitch-toolkit[learned]'" in w]
    assert len(hints) == len(LEARNED_CHOICES) and all("\n" not in w for w in hints)
    assert err(r, H_gt, src) < 0.5


def test_exception():
    """A learned detector asked for directly without its extra: ConfigError with the install hint."""
    from stitch.homography import learned

    with pytest.raises(ConfigError, match="not one of|choose one of"):
        learned.require("superpoint")
    with pytest.raises(ConfigError, match="is not installed"):
        learned.weight_file("no-such-distribution-xyz", "x.pt")


def test_challenge_beats_a_slightly_wrong_winner(sample_pair, monkeypatch):
    """A winner accepted below challenge_below still meets the direct source's challenge (the learned coarse mode
    from the identity and from the winner) on equal terms: on a 160 x 120 pair a winner 3 px off loses to it. On
    the same pair at 640 x 480 (an overlap too large for the network's window) the challenge does not run."""
    pytest.importorskip("torch")
    from stitch.geometry import image_corners, scale_h
    from stitch.homography.candidates import Candidate

    big_src, big_dst, big_H = sample_pair("translation")

    def off_by_3px(H_gt: np.ndarray, w: int, h: int) -> np.ndarray:
        c = image_corners(w, h)
        moved = project(H_gt, c) + [[3, -2], [-3, 2], [2, 3], [-2, -3]]
        return cv2.getPerspectiveTransform(c.astype(np.float32), moved.astype(np.float32)).astype(np.float64)

    def search(src, dst, H_off, **over):
        fake = lambda state: iter([sources.Step("fake", lambda: [Candidate("fake", {}, H_off, np.zeros(0, bool))])])
        monkeypatch.setitem(SOURCES, "features", sources.Source("features", fake, 0))
        cfg = SelectConfig.from_options(sources="features,direct", refiner="none", accept_score=0.3, **over)
        return stitch.estimate_homography(src, dst, config=cfg)

    shrink = lambda img: cv2.resize(img, (160, 120), interpolation=cv2.INTER_AREA)
    src, dst, H_gt = shrink(big_src), shrink(big_dst), scale_h(big_H, 0.25, 0.25)
    H_off = off_by_3px(H_gt, 160, 120)
    r = search(src, dst, H_off)
    assert r.levels_tried == ["fake", "direct-challenge"]
    assert sorted((c.method, c.params["from"]) for c in r.candidates if c.source == "direct") == [
        ("deep-coarse", "best"), ("deep-coarse", "identity")]
    fake = next(c for c in r.candidates if c.method == "fake")
    assert r.best.source == "direct" and r.score > fake.score
    assert err(r, H_gt, src) < 0.5 * corner_error(H_off, H_gt, 160, 120)
    quiet = search(src, dst, H_off, challenge_below=0.0)
    assert quiet.levels_tried == ["fake"] and np.array_equal(quiet.H, H_off)
    big = search(big_src, big_dst, off_by_3px(big_H, 640, 480))
    assert big.score < SelectConfig.from_options().challenge_below and big.levels_tried == ["fake"]
    with pytest.raises(ConfigError, match="challenge_below=1.5"):
        SelectConfig.from_options(challenge_below=1.5)


def test_a_matrix_is_scored_once(sample_pair, monkeypatch):
    """Estimators that return the very same matrix share one quality score (a grid often does); the scores, parts
    and the min_inliers rule are those of scoring each."""
    from stitch.homography import quality
    from stitch.homography.candidates import Candidate

    src, dst, H_gt = sample_pair("translation")
    m = stitch.estimate_homography(src, dst, sources="features").matches
    calls = []
    real = quality.score
    monkeypatch.setattr(quality, "score", lambda *a: calls.append(1) or real(*a))
    inl = np.ones(len(m), bool)
    new = [Candidate("a", {}, H_gt.copy(), inl, m), Candidate("b", {}, H_gt.copy(), inl, m),
           Candidate("c", {}, H_gt.copy(), np.zeros(len(m), bool), m), Candidate("d", {}, H_gt * 1.0001, inl, m)]
    search.score_candidates(new, quality.make_context(src, dst), min_inliers=8)
    assert len(calls) == 2  # a (b shares it), d; c is rejected before scoring
    assert new[0].score == new[1].score == real(H_gt, quality.make_context(src, dst), m)[0]
    assert new[0].parts == new[1].parts and new[0].parts is not new[1].parts
    assert new[2].rejected == "0 inliers < min_inliers=8" and new[2].score == float("-inf")
