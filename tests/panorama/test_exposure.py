"""stitch.exposure: gains from overlaps by least squares; known gains come back (pano3's ground truth)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from stitch.errors import ConfigError
from stitch.panorama.compose import low_canvas, low_views, seam_scale
from stitch.panorama.exposure import EXPOSURE_CHOICES, compensate, is_monochrome, solve_gains
from stitch.panorama.views import LowView
from stitch.panorama.warp import Projection, canvas_bounds


def textured(seed: int, size: tuple[int, int] = (400, 300)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 200, (size[1] // 10, size[0] // 10, 3), dtype=np.uint8)
    return cv2.resize(small, size, interpolation=cv2.INTER_CUBIC)


def two_views(gain: float, channel_gains: tuple[float, float, float] | None = None) -> list[LowView]:
    """Two 200 x 150 views of one scene overlapping by 100 px; the second scaled by gain (or per channel)."""
    scene = textured(3, (300, 150))
    a = scene[:, :200].copy()
    g = np.array(channel_gains if channel_gains is not None else (gain, gain, gain), np.float32)
    b = np.clip(scene[:, 100:].astype(np.float32) * g, 0, 255).astype(np.uint8)
    m = np.ones((150, 200), bool)
    return [LowView(a, m, (0, 0)), LowView(b, m.copy(), (100, 0))]


@pytest.fixture(scope="module")
def pano3_views(samples_dir: Path) -> tuple[list[LowView], np.ndarray]:
    """pano3's views warped (ground-truth homographies, view_2 the reference) at the seam resolution."""
    gt = json.loads((samples_dir / "pano3" / "ground_truth.json").read_text())
    to_scene = [np.array(v["H_view_to_scene"]) for v in gt["views"]]
    Hs = [np.linalg.solve(to_scene[1], H) for H in to_scene]
    imgs = [cv2.imread(str(samples_dir / "pano3" / v["file"])) for v in gt["views"]]
    sizes = [(640, 480)] * 3
    canvas = canvas_bounds(Hs, sizes, Projection("plane"))
    low, Hs_low, small, _ = low_canvas(canvas, Hs, sizes, seam_scale(sizes, 0.1))
    return low_views(imgs, low, Hs_low, small), np.array([v["gain"] for v in gt["views"]])


def test_smoke():
    views = two_views(1.0)
    for kind in EXPOSURE_CHOICES:
        g = compensate(views, kind)
        assert g.kind == kind and len(g.maps) == 2
        for k, v in enumerate(views):
            assert g.maps[k].shape[:2] == v.mask.shape and g.maps[k].dtype == np.float32
            np.testing.assert_allclose(g.scalar(k), 1.0, atol=0.02)  # equal exposures: gains stay at 1
        out = g.apply_low(1, views[1])
        assert out.image.dtype == np.uint8 and out.image.shape == views[1].image.shape


def test_shift():
    """A 20 % gain step between two views comes back within 1 %; per-channel gains per channel."""
    g = compensate(two_views(1.2), "gain")
    assert abs(g.scalar(0)[0] / g.scalar(1)[0] - 1.2) < 0.012
    g = compensate(two_views(1.0, (1.1, 1.0, 0.85)), "channels")
    ratio = g.scalar(0) / g.scalar(1)
    np.testing.assert_allclose(ratio, [1.1, 1.0, 0.85], rtol=0.01)
    g = compensate(two_views(1.2), "blocks", block_size=16)
    assert not all(g.uniform) and abs(g.scalar(0)[0] / g.scalar(1)[0] - 1.2) < 0.03


def test_pano3_known_gains(pano3_views):
    """pano3's views carry gains 1.052, 1.071, 0.986: compensated, g_k * gain_k is the same for every view."""
    views, truth = pano3_views
    for kind, tol in (("gain", 0.01), ("channels", 0.01), ("blocks", 0.03)):
        g = compensate(views, kind)
        est = np.array([g.scalar(k).mean() for k in range(3)])
        product = est * truth
        np.testing.assert_allclose(product / product.mean(), 1.0, atol=tol, err_msg=kind)
    assert np.all(np.abs(compensate(views, "none").scalar(0) - 1.0) < 1e-6)


def test_solve_gains_isolated_and_prior():
    """A unit in no pair keeps gain 1; a weak prior lets the data decide the ratio."""
    g = solve_gains(3, [(0, 1, 1000.0, 100.0, 125.0)], sigma_g=10.0)
    assert g[2] == 1.0 and abs(g[0] / g[1] - 1.25) < 1e-3
    tight = solve_gains(2, [(0, 1, 1000.0, 100.0, 125.0)], sigma_g=0.01)
    assert abs(tight[0] - 1.0) < 0.01 and abs(tight[1] - 1.0) < 0.01


def test_exception():
    views = two_views(1.0)
    with pytest.raises(ConfigError, match="exposure='bogus'"):
        compensate(views, "bogus")
    with pytest.raises(ConfigError, match="block_size"):
        compensate(views, "blocks", block_size=1)
    with pytest.raises(ConfigError, match="sigma"):
        solve_gains(1, [], sigma_n=0)
    assert compensate(views[:1], "gain").uniform == [True]  # one view: nothing to compensate


def test_color_cast_planted():
    """A colour cast planted on view 2 (B x1.1, R x0.85) comes back from the overlap within 2 %."""
    g = compensate(two_views(1.0, (1.1, 1.0, 0.85)), "color", block_size=16)
    ratio = g.scalar(0) / g.scalar(1)
    np.testing.assert_allclose(ratio, [1.1, 1.0, 0.85], rtol=0.02)


def test_color_cast_that_varies_across_the_frame():
    """A cast on the top half only (a sky): 'color' removes most of the step that 'channels' leaves."""
    views = two_views(1.0)
    top = views[1].image[:75].astype(np.float32) * np.array([1.18, 1.05, 0.9], np.float32)
    views[1].image[:75] = np.clip(top, 0, 255).astype(np.uint8)

    def step(kind: str) -> float:
        g = compensate(views, kind, block_size=16)
        a, b = g.apply_low(0, views[0]).image[:75, 100:], g.apply_low(1, views[1]).image[:75, :100]
        return float(np.abs(a.astype(np.float32).mean((0, 1)) - b.astype(np.float32).mean((0, 1))).max())

    assert step("none") > 15
    assert step("color") < 0.35 * step("channels")


def test_color_leaves_a_gray_photo_alone():
    """Next to a gray photo, a colour photo keeps its colours (no pink snow): only brightness is matched."""
    views = two_views(1.0)
    gray = cv2.cvtColor(cv2.cvtColor(views[1].image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    views[1] = LowView(gray, views[1].mask, views[1].offset)
    assert is_monochrome(views[1]) and not is_monochrome(views[0])
    g = compensate(views, "color")
    for k in range(2):
        s = g.scalar(k)
        assert np.ptp(s) < 0.01, (k, s)  # the same gain on B, G and R
    assert np.ptp(compensate(views, "channels").scalar(0)) > 0.02  # what 'channels' does instead
