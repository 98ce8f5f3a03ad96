"""stitch.panorama.crop: each crop mode's kept area and empty share on synthetic masks with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from stitch.errors import ConfigError
from stitch.panorama.crop import (
    CROP_CHOICES,
    CROP_MODES,
    DEFAULT_CROP,
    crop_mode,
    crop_panorama,
    fill_box,
)


def area(box: tuple[int, int, int, int]) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def empty_share(mask: np.ndarray, box: tuple[int, int, int, int]) -> float:
    return float((~mask[box[1]:box[3], box[0]:box[2]]).mean())


def brute_force_fill(mask: np.ndarray, max_empty: float) -> int:
    """The largest area of a rectangle with at most max_empty of it empty, by trying every rectangle."""
    h, w = mask.shape
    S = np.zeros((h + 1, w + 1), np.int64)
    S[1:, 1:] = np.cumsum(np.cumsum(~mask, 0), 1)
    best = 0
    for y0 in range(h):
        for y1 in range(y0 + 1, h + 1):
            row = S[y1] - S[y0]  # empty pixels left of each column in the band
            e = row[None, :] - row[:, None]  # e[x0, x1]
            width = np.arange(w + 1)[None, :] - np.arange(w + 1)[:, None]
            ok = (width > 0) & (e <= max_empty * width * (y1 - y0))
            if ok.any():
                best = max(best, int((width * (y1 - y0))[ok].max()))
    return best


@pytest.fixture
def corner_mask() -> np.ndarray:
    """100 x 100 frame whose 20 x 20 top-left corner is empty (4 % of it)."""
    m = np.ones((100, 100), bool)
    m[:20, :20] = False
    return m


def test_shift(corner_mask):
    """Known answers: none keeps all (4 % empty), rect 80 x 100, fill the brute-force optimum counting the 2-px rim
    it inpaints too (1.97 % filled)."""
    boxes = {k: CROP_MODES[k].box(corner_mask, 0.02) for k in CROP_CHOICES}
    assert boxes["none"] == (0, 0, 100, 100) and empty_share(corner_mask, boxes["none"]) == pytest.approx(0.04)
    assert area(boxes["rect"]) == 8000 and empty_share(corner_mask, boxes["rect"]) == 0.0
    rimmed = np.ones((100, 100), bool)
    rimmed[:22, :22] = False  # the empty corner and the FILL_RIM = 2 px rim inpainted with it
    assert area(boxes["fill"]) == brute_force_fill(rimmed, 0.02) == 8514  # (14, 1, 100, 100): 8 x 21 filled
    assert empty_share(rimmed, boxes["fill"]) == pytest.approx(168 / 8514) and 168 / 8514 <= 0.02
    assert area(fill_box(corner_mask, 0.02, rim=0)) == brute_force_fill(corner_mask, 0.02) == 8811
    # 2 % empty in a strip along the left border: without the rim fill keeps the whole frame, rect loses the strip;
    # with it the strip and its rim would be 4 %, so fill cuts the strip as rect does
    strip = np.ones((100, 100), bool)
    strip[:, :2] = False
    assert fill_box(strip, 0.02, rim=0) == (0, 0, 100, 100) and area(CROP_MODES["rect"].box(strip, 0.02)) == 9800
    assert fill_box(strip, 0.02) == (2, 0, 100, 100)


def test_fill_matches_brute_force_on_a_mosaic():
    """A staircase of offset rectangles (a mosaic's valid region): the search finds the true optimum."""
    m = np.zeros((30, 40), bool)
    m[0:12, 5:30] = m[8:22, 0:36] = m[18:30, 9:40] = True
    for max_empty in (0.0, 0.02, 0.1):
        box = fill_box(m, max_empty, rim=0)
        assert empty_share(m, box) <= max_empty + 1e-12
        assert area(box) == brute_force_fill(m, max_empty), max_empty
    assert area(fill_box(m, 0.1, rim=0)) > area(CROP_MODES["rect"].box(m, 0.1)) == area(fill_box(m, 0.0))


def test_fill_on_a_large_mask_stays_within_the_share():
    """A 1500 x 2400 mask (searched on the coarse grid): the exact share is within the bound, and the area
    beats the largest valid rectangle."""
    h, w = 1500, 2400
    yy, xx = np.mgrid[0:h, 0:w]
    m = (yy > 40 + 0.05 * xx) & (yy < h - 30 - 0.03 * (w - xx)) & (xx > 20 + 0.02 * yy)
    box = fill_box(m, 0.02)
    assert empty_share(m, box) <= 0.02
    rect = CROP_MODES["rect"].box(m, 0.02)
    assert area(box) > 1.05 * area(rect)


def test_crop_panorama_fills_and_flags(corner_mask):
    img = np.full((100, 100, 3), 120, np.uint8)
    img[~corner_mask] = 0
    c = crop_panorama(img, corner_mask, "fill", 0.02)
    assert c.box == (14, 1, 100, 100)
    # the 6 x 19 empty corner and a 2-px rim around it are filled (1.97 % <= 2 %), and False in the mask
    assert c.filled == 8 * 21 and int((~c.mask).sum()) == 8 * 21 and not c.mask[:21, :8].any()
    assert (c.image[c.mask] == 120).all()  # real pixels untouched
    assert np.abs(c.image.astype(int) - 120).max() <= 5  # empty ones inpainted from their uniform neighbours
    r = crop_panorama(img, corner_mask, "rect")
    assert r.mask.all() and r.filled == 0 and r.image.shape[:2] == (80, 100)
    n = crop_panorama(img, corner_mask, "none")
    assert n.box == (0, 0, 100, 100) and n.image is img and (n.image[:20, :20] == 0).all()
    # nothing valid: the whole frame, untouched
    z = crop_panorama(img, np.zeros((100, 100), bool), "rect")
    assert z.box == (0, 0, 100, 100)


def test_exception():
    assert DEFAULT_CROP in CROP_CHOICES and crop_mode(True) == "rect" and crop_mode(False) == "none"
    with pytest.raises(ConfigError, match="crop='square': choose one of fill, rect, none, warp"):
        crop_mode("square")
    with pytest.raises(ConfigError, match="crop_max_empty=1.5"):
        fill_box(np.ones((10, 10), bool), 1.5)


@pytest.mark.parametrize("max_empty", [0.005, 0.02, 0.05])
def test_fill_never_exceeds_max_empty(max_empty):
    """The share of pixels 'fill' inpaints (empty ones and their rim) never exceeds crop_max_empty."""
    rng = np.random.default_rng(3)
    for _ in range(4):
        h, w = rng.integers(120, 260, 2)
        yy, xx = np.mgrid[0:h, 0:w]
        a, b, c = rng.uniform(-0.15, 0.15, 3)
        m = (yy > 10 + a * xx + 4 * np.sin(xx / 9.0)) & (xx > 8 + b * yy) & (yy < h - 12 + c * xx)
        img = np.full((h, w, 3), 100, np.uint8)
        out = crop_panorama(img, m, "fill", max_empty)
        assert out.filled <= max_empty * out.mask.size
        assert out.filled == int((~out.mask).sum())
