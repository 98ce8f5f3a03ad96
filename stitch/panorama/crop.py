"""Stage 9: crop a panorama to the largest axis-aligned rectangle inside its valid region.

The rectangle is searched on a shrunken mask whose pixel is valid only when every full-resolution pixel it
covers is valid (a min-pool, ``DEFAULT_CROP_MAX_SIDE`` px on the longer side), with the row-by-row
"maximal rectangle" dynamic programme (heights, and for every column the left and right limits of the
tallest run through it; O(rows * cols), vectorised per row). The rectangle found there lies inside the valid
region at full resolution too; each side is then pushed outwards at full resolution while the added row or
column stays entirely valid, which recovers the pixels the shrinking lost.

Convention: boxes are (x0, y0, x1, y1) in pixels, x1 and y1 exclusive.
"""

from __future__ import annotations

import cv2
import numpy as np

from stitch.errors import ConfigError

DEFAULT_CROP = True
#: Longer side of the shrunken mask the rectangle is searched on.
DEFAULT_CROP_MAX_SIDE = 1024


def largest_rectangle(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The largest axis-aligned all-True rectangle of mask (H, W) bool, as (x0, y0, x1, y1); (0, 0, 0, 0) if none."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ConfigError(f"mask: expected an (H, W) array, got shape {mask.shape}")
    h, w = mask.shape
    heights = np.zeros(w, np.int64)
    left = np.zeros(w, np.int64)
    right = np.full(w, w, np.int64)
    cols = np.arange(w)
    best, best_box = 0, (0, 0, 0, 0)
    for r in range(h):
        row = mask[r]
        heights = np.where(row, heights + 1, 0)
        cur_left = np.maximum.accumulate(np.where(row, 0, cols + 1))
        left = np.where(row, np.maximum(left, cur_left), 0)
        cur_right = np.minimum.accumulate(np.where(row, w, cols)[::-1])[::-1]
        right = np.where(row, np.minimum(right, cur_right), w)
        area = (right - left) * heights
        c = int(np.argmax(area))
        if area[c] > best:
            best = int(area[c])
            best_box = (int(left[c]), r - int(heights[c]) + 1, int(right[c]), r + 1)
    return best_box


def _grow(mask: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Push each side of box outwards while the new row / column is entirely valid."""
    x0, y0, x1, y1 = box
    h, w = mask.shape
    moved = True
    while moved:
        moved = False
        if y0 > 0 and mask[y0 - 1, x0:x1].all():
            y0, moved = y0 - 1, True
        if y1 < h and mask[y1, x0:x1].all():
            y1, moved = y1 + 1, True
        if x0 > 0 and mask[y0:y1, x0 - 1].all():
            x0, moved = x0 - 1, True
        if x1 < w and mask[y0:y1, x1].all():
            x1, moved = x1 + 1, True
    return x0, y0, x1, y1


def crop_box(mask: np.ndarray, max_side: int = DEFAULT_CROP_MAX_SIDE) -> tuple[int, int, int, int]:
    """The crop rectangle (x0, y0, x1, y1) of a full-resolution valid mask (H, W) bool (see the module docstring).

    Every pixel of the returned box is valid. Returns the whole frame when the mask is all valid, and
    (0, 0, 0, 0) when nothing is.
    """
    mask = np.asarray(mask, bool)
    if max_side < 8:
        raise ConfigError(f"max_side={max_side}: must be at least 8")
    h, w = mask.shape
    if mask.all():
        return 0, 0, w, h
    f = max(1, -(-max(h, w) // max_side))
    if f > 1:
        hs, ws = -(-h // f), -(-w // f)
        padded = np.zeros((hs * f, ws * f), np.uint8)
        padded[:h, :w] = mask
        small = cv2.erode(padded, np.ones((f, f), np.uint8), anchor=(0, 0), borderType=cv2.BORDER_CONSTANT,
                          borderValue=0)[::f, ::f] > 0
    else:
        small = mask
    x0, y0, x1, y1 = largest_rectangle(small)
    if x1 <= x0 or y1 <= y0:
        return 0, 0, 0, 0
    box = (x0 * f, y0 * f, min(w, x1 * f), min(h, y1 * f))
    return _grow(mask, box)
