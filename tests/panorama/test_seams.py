"""stitch.seams: every covered pixel in exactly one mask; seams go around a moving object."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from stitch.errors import ConfigError
from stitch.panorama.seams import SEAM_CHOICES, find_seams, pixel_cost, seam_cost
from stitch.panorama.views import LowView

OBJECT = (slice(20, 60), slice(112, 128))  # rows, columns of the "moving object" in canvas pixels


def scene(seed: int = 1, size: tuple[int, int] = (300, 120)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(60, 190, (size[1] // 6, size[0] // 6, 3), dtype=np.uint8)
    return cv2.resize(small, size, interpolation=cv2.INTER_CUBIC)


def views_with_object() -> list[LowView]:
    """Two 180 x 120 views (canvas x 0..180 and 120..300... overlapping on 60..180): the first sees a bright
    object at OBJECT that the second does not (it moved between the shots)."""
    s = scene()
    a = s[:, :180].copy()
    a[OBJECT] = (250, 250, 250)
    b = s[:, 60:].copy()
    m = np.ones((120, 180), bool)
    return [LowView(a, m, (0, 0)), LowView(b, m.copy(), (60, 0))]


def coverage(views, masks) -> np.ndarray:
    """Per canvas pixel: how many seam masks claim it (-1 where no view covers it)."""
    x1 = max(v.box[2] for v in views)
    y1 = max(v.box[3] for v in views)
    count = np.zeros((y1, x1), int)
    covered = np.zeros((y1, x1), bool)
    for v, m in zip(views, masks):
        count[v.box[1]:v.box[3], v.box[0]:v.box[2]] += m
        covered[v.box[1]:v.box[3], v.box[0]:v.box[2]] |= v.mask
    count[~covered] = -1
    return count


def test_smoke():
    views = views_with_object()
    for method in SEAM_CHOICES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # OpenCV 5's DpSeamFinder asserts here: falls back with a warning
            masks = find_seams(views, method)
        assert len(masks) == 2 and all(m.shape == v.mask.shape and m.dtype == bool for m, v in zip(masks, views))
        cov = coverage(views, masks)
        if method == "none":
            assert cov.max() == 2  # no seams: the overlap stays shared
        elif method.startswith("opencv_"):
            assert np.mean(cov[cov >= 0] == 1) > 0.97, method
        else:
            assert np.all(cov[cov >= 0] == 1), method  # a partition of the covered pixels


def test_shift():
    """The object (only in view 0) is never cut: its pixels go wholly to one view. Graph cut and DP beat
    Voronoi, which cuts through the middle of the overlap (column 120, across the object)."""
    views = views_with_object()
    for method in ("graphcut", "dp"):
        masks = find_seams(views, method)
        in_a = masks[0][OBJECT]
        assert in_a.all() or not in_a.any(), method
    costs = {m: seam_cost(views, find_seams(views, m)) for m in ("graphcut", "dp", "voronoi")}
    assert costs["graphcut"] <= costs["dp"] + 1e-6 and costs["graphcut"] < 0.5 * costs["voronoi"], costs
    vor = find_seams(views, "voronoi")[0]
    assert vor[:, :118].all() and not vor[:, 122:].any()  # the middle of the overlap (view 0 columns 60..180)


def test_three_views_partition():
    """Three views in a row with a vertical offset: still a partition (pairs cut in order)."""
    s = scene(4, (400, 160))
    views = [LowView(s[0:120, 0:180].copy(), np.ones((120, 180), bool), (0, 0)),
             LowView(s[20:140, 110:290].copy(), np.ones((120, 180), bool), (110, 20)),
             LowView(s[40:160, 220:400].copy(), np.ones((120, 180), bool), (220, 40))]
    for method in ("graphcut", "dp", "voronoi"):
        cov = coverage(views, find_seams(views, method))
        assert np.all(cov[cov >= 0] == 1), method


def test_pixel_cost():
    a = scene()[:, :100]
    e = pixel_cost(a, a, beta=1.0, c0=1.0)
    np.testing.assert_allclose(e, 1.0)  # identical images: only the constant remains
    assert pixel_cost(a, 255 - a).mean() > 20


def test_exception():
    views = views_with_object()
    with pytest.raises(ConfigError, match="seam='bogus'"):
        find_seams(views, "bogus")
    with pytest.raises(ConfigError, match="beta"):
        find_seams(views, "graphcut", beta=-1)
    single = find_seams(views[:1], "graphcut")
    assert single[0].all()


def test_both_max_flow_solvers_cut_the_same_seams(monkeypatch):
    """OR-Tools (the 'fast' extra) and scipy give the same source side, so the graph-cut seams do not depend on it."""
    pytest.importorskip("ortools", reason="the 'fast' extra is not installed")
    import stitch.panorama.seams as S

    rng = np.random.default_rng(0)
    n = 60  # a random sparse graph with ties to both terminals, capacities as the seam graphs have them
    tails, heads = rng.integers(0, n, 400), rng.integers(0, n, 400)
    keep = tails != heads
    tails = np.concatenate([tails[keep], np.full(5, n), np.arange(5, 10)])
    heads = np.concatenate([heads[keep], np.arange(5), np.full(5, n + 1)])
    caps = np.concatenate([rng.integers(1, 40, keep.sum()), np.full(10, S.TIE_CAPACITY)]).astype(np.int64)
    a = S._source_side_scipy(tails, heads, caps, n + 2, n, n + 1)
    b = S._source_side_ortools(tails, heads, caps, n + 2, n, n + 1)
    assert np.array_equal(a, b) and a[n] and not a[n + 1] and a[:5].all() and not a[5:10].any()
    views = views_with_object()
    fast = find_seams(views, "graphcut")
    monkeypatch.setattr(S, "SOURCE_SIDE", S._source_side_scipy)
    slow = find_seams(views, "graphcut")
    assert all(np.array_equal(f, s) for f, s in zip(fast, slow))


def test_unusable_ortools_falls_back_to_scipy(monkeypatch):
    """An OR-Tools that fails to import (e.g. a clashing protobuf) leaves the cut to scipy, with the same result."""
    import sys

    import stitch.panorama.seams as S

    monkeypatch.setitem(sys.modules, "ortools.graph.python", None)  # makes the import raise ImportError
    S._ortools_max_flow.cache_clear()  # the import is tried once per process: try it again here
    try:
        tails, heads = np.array([2, 0, 1]), np.array([0, 1, 3])
        caps = np.array([S.TIE_CAPACITY, 5, S.TIE_CAPACITY], np.int64)
        side = S._source_side_ortools(tails, heads, caps, 4, 2, 3)
        assert S._ortools_max_flow() is None
    finally:
        S._ortools_max_flow.cache_clear()
    assert side.tolist() == [True, False, True, False]  # the cut is the 0 -> 1 edge: {source, 0} | {1, sink}
