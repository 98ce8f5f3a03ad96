"""stitch.warp and stitch.compose: canvas bounds, projections, warping, the canvas cap, compositing."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from stitch.errors import CanvasTooLargeError, ConfigError
from stitch.panorama.compose import composite
from stitch.panorama.warp import (
    PROJECTION_CHOICES,
    Projection,
    canvas_bounds,
    estimate_focal,
    feather_weight,
    inverse_maps,
    warp_image,
)


def translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0, tx], [0, 1.0, ty], [0, 0, 1.0]])


def rotation_homography(f: float, yaw_deg: float, pitch_deg: float, size: tuple[int, int]) -> np.ndarray:
    """H = K R K^-1 (3, 3): image of a camera rotated by yaw/pitch -> reference image, same K."""
    w, h = size
    K = np.array([[f, 0, (w - 1) / 2.0], [0, f, (h - 1) / 2.0], [0, 0, 1.0]])
    a, b = math.radians(yaw_deg), math.radians(pitch_deg)
    Ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    Rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    H = K @ Ry @ Rx @ np.linalg.inv(K)
    return H / H[2, 2]


def test_smoke():
    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    canvas = canvas_bounds([np.eye(3)], [(50, 40)], Projection("plane"))
    assert canvas.size == (50, 40) and canvas.offset == (0.0, 0.0)
    wi = warp_image(img, np.eye(3), canvas, 0)
    assert wi is not None and wi.offset == (0, 0) and wi.mask.all()
    np.testing.assert_array_equal(wi.image, img)


def test_shift():
    """Plane canvas of two 100 x 80 images, the second shifted by (60, 10): 160 x 90 px, known boxes."""
    Hs = [np.eye(3), translation(60, 10)]
    canvas = canvas_bounds(Hs, [(100, 80), (100, 80)], Projection("plane"), ["a", "b"])
    assert canvas.size == (160, 90)
    assert canvas.offset == (0.0, 0.0)
    assert canvas.boxes == ((0, 0, 100, 80), (60, 10, 160, 90))
    # negative shift moves the offset, not the size
    canvas = canvas_bounds([np.eye(3), translation(-30, -5)], [(100, 80), (100, 80)], Projection("plane"))
    assert canvas.size == (130, 85) and canvas.offset == (-30.0, -5.0)
    img = np.full((80, 100, 3), 200, np.uint8)
    wi = warp_image(img, translation(-30, -5), canvas, 1)
    assert wi.offset == (0, 0) and wi.mask.shape == (80, 100) and wi.mask.all()


@pytest.mark.parametrize("kind", ["cylindrical", "spherical"])
def test_projection_inverse_consistent(kind):
    """forward(inverse(uv)) == uv, and the remap grid maps back to the canvas pixels it came from."""
    proj = Projection(kind, focal=500.0, center=(319.5, 239.5))
    uv = np.stack(np.meshgrid(np.linspace(-900, 900, 13), np.linspace(-300, 300, 7)), -1).reshape(-1, 2)
    back, valid = proj.forward(proj.inverse(uv))
    assert valid.all()
    np.testing.assert_allclose(back, uv, atol=1e-6)

    H = rotation_homography(500.0, 25.0, 5.0, (640, 480))
    canvas = canvas_bounds([np.eye(3), H], [(640, 480), (640, 480)], proj)
    x0, y0, x1, y1 = canvas.boxes[1]
    region = (x0, y0, min(x1, x0 + 60), min(y1, y0 + 50))
    mx, my, valid = inverse_maps(H, canvas, region)
    inside = valid & (mx >= 0) & (mx <= 639) & (my >= 0) & (my <= 479)
    assert inside.sum() > 100
    pts = np.stack([mx[inside], my[inside], np.ones(inside.sum())], 1).astype(np.float64)
    uv_back, ok = proj.forward(pts @ (H / np.cbrt(np.linalg.det(H))).T)
    assert ok.all()
    cols, rows = np.meshgrid(np.arange(region[0], region[2]), np.arange(region[1], region[3]))
    expect = np.stack([cols[inside] + canvas.offset[0], rows[inside] + canvas.offset[1]], 1)
    np.testing.assert_allclose(uv_back, expect, atol=1e-2)  # float32 maps


def test_cylinder_handles_wide_rotation():
    """An image 100 degrees from the reference is unbounded on the plane but fine on a cylinder."""
    H = rotation_homography(400.0, 100.0, 0.0, (320, 240))
    with pytest.raises(CanvasTooLargeError, match="b.jpg.*cylindrical"):
        canvas_bounds([np.eye(3), H], [(320, 240)] * 2, Projection("plane"), ["a.jpg", "b.jpg"])
    canvas = canvas_bounds([np.eye(3), H], [(320, 240)] * 2, Projection("cylindrical", 400.0, (159.5, 119.5)))
    # about 100 degrees + one image width (~43 degrees at f = 400) of arc, in pixels of f
    assert abs(canvas.size[0] - 400.0 * math.radians(100.0) - 320 * 0.97) < 40
    img = np.full((240, 320, 3), 255, np.uint8)
    wi = warp_image(img, H, canvas, 1)
    assert wi is not None and wi.mask.mean() > 0.8 and (wi.image[wi.mask] == 255).all()


def test_focal_from_rotations():
    """estimate_focal recovers f from pure-rotation homographies (known answer), else falls back to w + h."""
    size = (640, 480)
    pairs = [(rotation_homography(700.0, yaw, pitch, size), size, size) for yaw, pitch in ((20, 3), (-15, -4), (30, 8))]
    assert estimate_focal(pairs) == pytest.approx(700.0, rel=0.02)
    assert estimate_focal([(translation(50, 0), size, size)]) == pytest.approx(640 + 480)


def test_exception():
    with pytest.raises(ConfigError, match="projection='mercator'"):
        Projection("mercator")
    with pytest.raises(ConfigError, match="focal"):
        Projection("cylindrical", focal=0.0)
    assert PROJECTION_CHOICES == ("plane", "cylindrical", "spherical")


def test_canvas_cap_names_the_image():
    """A wild matrix (100x zoom) blows the canvas past the cap; the error names that image and a fix."""
    Hs = [np.eye(3), translation(500, 0), np.diag([100.0, 100.0, 1.0])]
    sizes = [(640, 480)] * 3
    with pytest.raises(CanvasTooLargeError, match=r"c\.jpg.*cylindrical") as info:
        canvas_bounds(Hs, sizes, Projection("plane"), ["a.jpg", "b.jpg", "c.jpg"], max_canvas_pixels=20_000_000)
    assert "a.jpg" not in str(info.value) and "MP" in str(info.value)
    # the same set under a generous cap is fine, and the cap is configurable
    assert canvas_bounds(Hs[:2], sizes[:2], Projection("plane"), max_canvas_pixels=1_000_000).size == (1140, 480)
    with pytest.raises(CanvasTooLargeError):
        canvas_bounds(Hs[:2], sizes[:2], Projection("plane"), max_canvas_pixels=500_000)


def test_composite_average_and_feather():
    """Two flat images overlapping by 40 px: average gives the mean there, feather a ramp; mask covers both."""
    a = np.full((50, 100, 3), 100, np.uint8)
    b = np.full((50, 100, 3), 200, np.uint8)
    Hs = [np.eye(3), translation(60, 0)]
    canvas = canvas_bounds(Hs, [(100, 50)] * 2, Projection("plane"))
    avg = composite([a, b], Hs, canvas, method="average", strip_pixels=1000)  # several strips
    assert avg.mask.all() and avg.image.shape == (50, 160, 3)
    assert (avg.image[:, :60] == 100).all() and (avg.image[:, 100:] == 200).all()
    assert (avg.image[:, 60:100] == 150).all()
    fea = composite([a, b], Hs, canvas, method="feather")
    row = fea.image[25, 60:100, 0].astype(int)
    assert row[0] < 120 and row[-1] > 180 and np.all(np.diff(row) >= 0)
    with pytest.raises(ConfigError, match="composite='bogus'"):
        composite([a, b], Hs, canvas, method="bogus")


def test_feather_weight():
    w = feather_weight(7, 5)
    assert w.shape == (5, 7) and w.max() == 1.0 and w.min() > 0
    assert w[2, 3] == 1.0 and w[0, 0] == w[4, 6]


def test_plane_warp_matches_opencv():
    """warp_image on the plane agrees with cv2.warpPerspective (interior pixels, up to rounding)."""
    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (0, 0), 2.0)
    H = np.array([[0.9, 0.1, 30.0], [-0.05, 1.05, 12.0], [2e-4, -1e-4, 1.0]])
    canvas = canvas_bounds([H], [(160, 120)], Projection("plane"))
    wi = warp_image(img, H, canvas, 0)
    T = np.array([[1.0, 0, -canvas.offset[0]], [0, 1.0, -canvas.offset[1]], [0, 0, 1.0]])
    ref = cv2.warpPerspective(img, T @ H, canvas.size, flags=cv2.INTER_LINEAR)
    inner = cv2.erode(wi.mask.astype(np.uint8), np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT,
                      borderValue=0).astype(bool)  # OpenCV blends with black within a pixel of the border
    assert wi.offset == (0, 0) and inner.mean() > 0.6
    assert np.abs(wi.image[inner].astype(int) - ref[inner].astype(int)).max() <= 2
    assert (wi.image[~wi.mask] == 0).all()
