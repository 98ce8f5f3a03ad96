"""stitch.panorama.rectangle and the 'warp' crop: a wavy valid region is warped to a full rectangle, nothing invented."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stitch.panorama.crop import crop_panorama
from stitch.panorama.rectangle import Mesh, rectangle_mesh

LINE = ((60.0, 110.0), (420.0, 250.0))


@pytest.fixture(scope="module")
def wavy() -> tuple[np.ndarray, np.ndarray]:
    """A 360 x 480 textured canvas whose valid region has wavy borders, with a dark straight line planted in it."""
    h, w = 360, 480
    rng = np.random.default_rng(7)
    img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (0, 0), 2.0)
    img = cv2.addWeighted(img, 0.5, np.full_like(img, 128), 0.5, 0)
    cv2.line(img, (60, 110), (420, 250), (0, 0, 0), 3, cv2.LINE_AA)
    yy, xx = np.mgrid[0:h, 0:w]
    mask = ((yy > 25 + 14 * np.sin(xx / 40.0)) & (yy < h - 30 + 12 * np.sin(xx / 33.0 + 1))
            & (xx > 20 + 12 * np.sin(yy / 27.0)) & (xx < w - 25 - 15 * np.sin(yy / 45.0)))
    img[~mask] = 0
    return img, mask


def test_smoke(wavy):
    """The result is a full rectangle: every pixel samples the valid region, none is invented, and it keeps more
    than the largest valid rectangle (and at least 93 % of the region's area)."""
    img, mask = wavy
    c = crop_panorama(img, mask, "warp")
    assert c.mesh is not None and c.filled == 0 and c.mask.all()
    assert c.image.shape[:2] == (c.mesh.size[1], c.mesh.size[0]) and np.array_equal(c.mesh.render(img), c.image)
    assert (c.mesh.render(mask.astype(np.uint8) * np.uint8(255)) == 255).all()  # all four neighbours valid
    rect = crop_panorama(img, mask, "rect")
    assert c.mask.size > 1.12 * rect.mask.size  # 427 x 305 against 409 x 280
    assert c.mask.size >= 0.93 * mask.sum()
    assert c.box == (int(np.nonzero(mask.any(0))[0][0]), int(np.nonzero(mask.any(1))[0][0]),
                     int(np.nonzero(mask.any(0))[0][-1]) + 1, int(np.nonzero(mask.any(1))[0][-1]) + 1)


def test_line_stays_straight(wavy):
    """The planted line's image deviates from its chord by at most 1 px per 100 px."""
    img, mask = wavy
    c = crop_panorama(img, mask, "warp")
    t = np.linspace(0.0, 1.0, 41)[:, None]
    p = np.asarray(LINE[0]) + t * (np.asarray(LINE[1]) - np.asarray(LINE[0]))
    q = c.mesh.forward(p)
    assert not np.isnan(q).any()
    d = q[-1] - q[0]
    length = float(np.hypot(*d))
    dev = np.abs((q[:, 0] - q[0, 0]) * d[1] - (q[:, 1] - q[0, 1]) * d[0]) / length
    assert dev.max() / length * 100 <= 1.0


def test_shift(wavy):
    """forward and sample are inverse: a canvas point sampled by an output pixel maps back to that pixel."""
    img, mask = wavy
    c = crop_panorama(img, mask, "warp")
    ys, xs = np.mgrid[0:c.mesh.size[1]:37, 0:c.mesh.size[0]:41]
    p = c.mesh.sample(xs.ravel().astype(float), ys.ravel().astype(float))
    back = c.mesh.forward(p)
    assert np.abs(back - np.stack([xs.ravel(), ys.ravel()], 1)).max() < 1e-6
    # an all-valid frame is left alone; a tiny region falls back to 'rect'
    full = crop_panorama(img, np.ones(mask.shape, bool), "warp")
    assert full.mesh is None and full.box == (0, 0, 480, 360)
    tiny = np.zeros(mask.shape, bool)
    tiny[10:14, 10:16] = True
    t = crop_panorama(img, tiny, "warp")
    assert t.mesh is None and t.box == (10, 10, 16, 14)


def test_deterministic(wavy):
    img, mask = wavy
    a, b = rectangle_mesh(img, mask), rectangle_mesh(img, mask)
    assert a is not None and b is not None and np.array_equal(a.src, b.src) and a.size == b.size


def test_render_map_agrees_with_sample(wavy):
    """The render's map (strip_map) is Mesh.sample at every output pixel: exactly (float32) with small cells, and
    within 0.2 px when it is upsampled (cells of 60 px, a smoothly perturbed grid), the last, shorter strip and the
    output's edges included."""
    img, mask = wavy
    small = crop_panorama(img, mask, "warp").mesh
    gy, gx = np.mgrid[0:21, 0:31].astype(np.float64)
    rng = np.random.default_rng(3)
    bumps = cv2.resize(rng.normal(0, 6, (5, 7, 2)), (31, 21), interpolation=cv2.INTER_CUBIC)
    large = Mesh(np.stack([gx * 62.0, gy * 58.0], -1) + bumps + 40.0, (60.0, 60.0), (1800, 1200))
    for mesh, tol in ((small, 1e-3), (large, 0.2)):
        w, h = mesh.size
        for y0 in range(0, h, 256):
            y1 = min(h, y0 + 256)
            X, Y = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
            exact = mesh.sample(X.ravel(), Y.ravel()).reshape(y1 - y0, w, 2)
            assert np.abs(mesh.strip_map(y0, y1) - exact).max() < tol
