"""Stage 9: crop a panorama; ``CROP_MODES`` maps each ``crop=`` name to its implementation.

* ``none``: the whole canvas, black where no image reaches.
* ``rect`` (the default): the largest axis-aligned rectangle inside the valid region. Every pixel is real (what
  OpenStitching keeps); on a mosaic whose images are offset it throws a good part of the picture away
  (docs/measurements.md, "crop"): ``warp`` keeps it all.
* ``fill``: the largest rectangle with at most ``max_empty`` (``DEFAULT_CROP_MAX_EMPTY``,
  2 %) of its pixels empty or within ``FILL_RIM`` px of an empty one (so the filled share never exceeds it). The
  empty pixels, thin wedges along the borders, are filled by inpainting from
  their neighbours (cv2.inpaint, Telea), together with a ``FILL_RIM`` px rim of the picture around them
  (warped borders carry interpolation fringes, which inpainting would smear into the hole); the filled
  pixels are False in the result's mask, so a caller can tell them apart. It keeps more of the picture at the
  price of a few invented pixels at the edges, which show as smears where the edge holds detail (Photoshop's
  "fill edges"); its area is never below ``rect``'s.
* ``warp``: rectangling by warping (stitch.panorama.rectangle, He et al. 2013, Lightroom's "Boundary Warp"): a
  content-preserving mesh warp stretches the valid region out to a rectangle of its area, keeping lines
  straight; nothing is invented and nothing cut off but the pixel or two of border the warp's discretisation
  leaves empty (trimmed with ``crop_box``). ``Cropped.mesh`` maps canvas points to the result; ``box`` is the
  valid region's bounding box on the canvas (the part the mesh samples), not a plain cut.

``rect`` is searched on a shrunken mask whose pixel is valid only when every full-resolution pixel it
covers is valid (a min-pool, ``DEFAULT_CROP_MAX_SIDE`` px on the longer side), with the row-by-row
"maximal rectangle" dynamic programme (heights, and for every column the left and right limits of the
tallest run through it; O(rows * cols), vectorised per row). The rectangle found there lies inside the valid
region at full resolution too; each side is then pushed outwards at full resolution while the added row or
column stays entirely valid, which recovers the pixels the shrinking lost.

``fill`` is searched on a grid of cells (``DEFAULT_FILL_MAX_SIDE`` on the longer side), each holding its count
of empty pixels. For a band of cell rows of height h, with E[x] the empty pixels left of column x, the
columns [x0, x1) qualify when E[x1] - E[x0] <= max_empty * h * (x1 - x0), i.e. g[x1] <= g[x0] with
g[x] = E[x] - max_empty * h * x; the widest range ending at x1 starts at the first x0 where the running
maximum of g reaches g[x1] (a binary search, vectorised over all bands that start at one row:
O(rows^2 * cols * log cols)). The best box is mapped to full resolution, shrunk one pixel at a time while
its exact empty share exceeds ``max_empty``, then grown while it stays within it.

Convention: boxes are (x0, y0, x1, y1) in pixels, x1 and y1 exclusive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from stitch.errors import ConfigError
from stitch.panorama.rectangle import Mesh, rectangle_mesh

Box = tuple[int, int, int, int]

#: Longer side of the shrunken mask the ``rect`` rectangle is searched on.
DEFAULT_CROP_MAX_SIDE = 1024
#: Longer side of the cell grid the ``fill`` rectangle is searched on.
DEFAULT_FILL_MAX_SIDE = 128
#: Largest share of filled pixels (empty ones and their ``FILL_RIM`` rim) in a ``fill`` crop.
DEFAULT_CROP_MAX_EMPTY = 0.02
#: Inpainting radius (px) of the ``fill`` crop.
FILL_RADIUS = 3
#: Valid pixels within this distance (px) of an empty one are inpainted too (they carry the warp's fringe).
FILL_RIM = 2

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


def whole_frame(mask: np.ndarray, max_empty: float = 0.0) -> Box:
    """The ``none`` crop: the whole (H, W) frame as (0, 0, W, H)."""
    h, w = np.shape(mask)
    return 0, 0, int(w), int(h)


def valid_bounds(mask: np.ndarray, max_empty: float = 0.0) -> Box:
    """The ``warp`` crop's box: the bounding box of mask (H, W) bool's valid pixels; (0, 0, 0, 0) if none."""
    ys, xs = np.nonzero(np.any(mask, axis=1))[0], np.nonzero(np.any(mask, axis=0))[0]
    if len(xs) == 0:
        return 0, 0, 0, 0
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def rect_box(mask: np.ndarray, max_empty: float = 0.0) -> Box:
    """The ``rect`` crop: the largest all-valid rectangle of mask (H, W) bool (``crop_box``)."""
    return crop_box(mask)


def _empty_in(empty: np.ndarray, box: Box) -> int:
    x0, y0, x1, y1 = box
    return int(np.count_nonzero(empty[y0:y1, x0:x1]))


def _fit_share(empty: np.ndarray, box: Box, max_empty: float) -> Box:
    """Shrink box one pixel at a time (the side that lowers the empty share most) until its share of empty
    pixels is <= max_empty, then push each side outwards while the share stays within it."""
    h, w = empty.shape
    x0, y0, x1, y1 = box
    n_empty = _empty_in(empty, box)

    def sides(x0: int, y0: int, x1: int, y1: int, sign: int) -> list[tuple[Box, int]]:
        """(box with one side moved by sign, empty pixels of the moved strip) for the four sides."""
        out = []
        for nb in ((x0 - sign, y0, x1, y1), (x0, y0 - sign, x1, y1), (x0, y0, x1 + sign, y1), (x0, y0, x1, y1 + sign)):
            if not (0 <= nb[0] < nb[2] <= w and 0 <= nb[1] < nb[3] <= h):
                continue
            lo = (min(nb[0], x0), min(nb[1], y0), max(nb[2], x1), max(nb[3], y1))
            hi = (max(nb[0], x0), max(nb[1], y0), min(nb[2], x1), min(nb[3], y1))
            strip = [lo[0], lo[1], lo[2], lo[3]]
            if nb[0] != x0:
                strip[2] = hi[0]
            elif nb[1] != y0:
                strip[3] = hi[1]
            elif nb[2] != x1:
                strip[0] = hi[2]
            else:
                strip[1] = hi[3]
            out.append((nb, _empty_in(empty, (strip[0], strip[1], strip[2], strip[3]))))
        return out

    while n_empty > max_empty * (x1 - x0) * (y1 - y0):
        options = [(nb, n_empty - e) for nb, e in sides(x0, y0, x1, y1, -1)]
        if not options:
            return 0, 0, 0, 0
        (x0, y0, x1, y1), n_empty = min(options, key=lambda o: o[1] / ((o[0][2] - o[0][0]) * (o[0][3] - o[0][1])))
    moved = True
    while moved:
        moved = False
        for nb, e in sides(x0, y0, x1, y1, 1):
            if n_empty + e <= max_empty * (nb[2] - nb[0]) * (nb[3] - nb[1]):
                (x0, y0, x1, y1), n_empty, moved = nb, n_empty + e, True
                break
    return x0, y0, x1, y1


def fill_box(mask: np.ndarray, max_empty: float = DEFAULT_CROP_MAX_EMPTY,
             max_side: int = DEFAULT_FILL_MAX_SIDE, rim: int = FILL_RIM) -> Box:
    """The ``fill`` crop: the largest rectangle of mask (H, W) bool with at most ``max_empty`` of it empty or within
    ``rim`` px of an empty pixel (what ``fill_empty`` replaces), so the filled share never exceeds ``max_empty``.

    See the module docstring; never smaller than ``rect_box``; (0, 0, 0, 0) when nothing is valid.
    """
    mask = np.asarray(mask, bool)
    if not 0.0 <= max_empty < 1.0:
        raise ConfigError(f"crop_max_empty={max_empty}: must be in [0, 1)")
    if max_side < 8:
        raise ConfigError(f"max_side={max_side}: must be at least 8")
    h, w = mask.shape
    if mask.all() or not mask.any():
        return (0, 0, w, h) if mask.all() else (0, 0, 0, 0)
    rect = crop_box(mask)
    if max_empty == 0.0:
        return rect
    f = max(1, -(-max(h, w) // max_side))
    hs, ws = -(-h // f), -(-w // f)
    empty = ~mask
    if rim > 0:
        empty = cv2.dilate(empty.astype(np.uint8), np.ones((2 * rim + 1, 2 * rim + 1), np.uint8)) > 0
    padded = np.ones((hs * f, ws * f), np.float64)  # outside the frame counts as empty
    padded[:h, :w] = empty
    cells = padded.reshape(hs, f, ws, f).sum(axis=(1, 3))
    rows = np.vstack([np.zeros((1, ws)), np.cumsum(cells, axis=0)])  # (hs + 1, ws)
    xs = np.arange(ws + 1, dtype=np.float64)
    best, best_box = 0.0, None
    for y0 in range(hs):
        band = rows[y0 + 1:] - rows[y0]  # (n, ws): empty pixels per column of the bands y0..y1
        n = len(band)
        height = np.arange(1, n + 1, dtype=np.float64)[:, None]
        E = np.hstack([np.zeros((n, 1)), np.cumsum(band, axis=1)])
        g = E - max_empty * f * f * height * xs[None, :]
        run = np.maximum.accumulate(g, axis=1)
        span = float(run.max() - min(run.min(), g.min())) + 1.0
        off = np.arange(n, dtype=np.float64)[:, None] * span
        x0 = np.searchsorted((run + off).ravel(), (g + off).ravel(), side="left").reshape(n, ws + 1)
        x0 -= np.arange(n)[:, None] * (ws + 1)
        area = (xs[None, :] - x0) * height
        k = int(np.argmax(area))
        if area.flat[k] > best:
            b, x1 = divmod(k, ws + 1)
            best, best_box = float(area.flat[k]), (int(x0[b, x1]), y0, x1, y0 + b + 1)
    if best_box is None:
        return rect
    gx0, gy0, gx1, gy1 = best_box
    box = _fit_share(empty, (gx0 * f, gy0 * f, min(w, gx1 * f), min(h, gy1 * f)), max_empty)
    area = (box[2] - box[0]) * (box[3] - box[1])
    return box if area > (rect[2] - rect[0]) * (rect[3] - rect[1]) else rect


def fill_empty(image: np.ndarray, valid: np.ndarray, radius: int = FILL_RADIUS,
               rim: int = FILL_RIM) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W, 3) uint8 or uint16 with its pixels outside valid (H, W) bool, and those within ``rim`` px of them,
    inpainted (Telea) region by region; filled (H, W) bool: the pixels replaced)."""
    holes = (~valid).astype(np.uint8)
    if not holes.any():
        return image, np.zeros(valid.shape, bool)
    if rim > 0:
        holes = cv2.dilate(holes, np.ones((2 * rim + 1, 2 * rim + 1), np.uint8))
    out = image.copy()
    h, w = holes.shape
    n, _, stats, _ = cv2.connectedComponentsWithStats(holes, connectivity=8)
    pad = 2 * radius + 2
    for x, y, bw, bh, _ in stats[1:n]:
        x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(w, x + bw + pad), min(h, y + bh + pad)
        out[y0:y1, x0:x1] = _inpaint(out[y0:y1, x0:x1], holes[y0:y1, x0:x1], radius)
    return out, holes > 0


def _inpaint(image: np.ndarray, holes: np.ndarray, radius: int) -> np.ndarray:
    """cv2.inpaint (Telea) of image (h, w, 3) uint8, or uint16 channel by channel (OpenCV's 16-bit inpaint is 1-channel)."""
    if image.dtype == np.uint8:
        return cv2.inpaint(image, holes, radius, cv2.INPAINT_TELEA)
    return cv2.merge([cv2.inpaint(np.ascontiguousarray(image[:, :, c]), holes, radius, cv2.INPAINT_TELEA)
                      for c in range(image.shape[2])])


@dataclass(frozen=True)
class CropMode:
    """One crop mode: ``box(mask (H, W) bool, max_empty) -> (x0, y0, x1, y1)``; ``fill``: inpaint empty pixels;
    ``warp``: the result is the mesh warp of that box (``warp_crop``) instead of a cut."""

    box: Callable[[np.ndarray, float], Box]
    fill: bool
    help: str
    warp: bool = False


#: Every crop mode by name: the CLI's ``--crop`` choices, the API's check and the docs read this table.
CROP_MODES: dict[str, CropMode] = {
    "fill": CropMode(fill_box, True, "largest rectangle with a small share of empty pixels (at most 2 % by "
                                     "default), those filled by inpainting"),
    "rect": CropMode(rect_box, False, "largest rectangle inside the valid region (no invented pixel)"),
    "none": CropMode(whole_frame, False, "no crop: the whole canvas, black where no image reaches"),
    "warp": CropMode(valid_bounds, False, "rectangling by warping: a mesh warp stretches the valid region out to "
                                          "a rectangle of its area, lines kept straight (no invented pixel)",
                     warp=True),
}
CROP_CHOICES = tuple(CROP_MODES)
DEFAULT_CROP = "rect"


def crop_mode(value: str | bool) -> str:
    """The crop mode name for ``crop=``: a CROP_CHOICES name, or the former booleans (True: 'rect', False: 'none')."""
    if value is True or value is False:
        return "rect" if value else "none"
    if not isinstance(value, str) or value not in CROP_MODES:
        raise ConfigError(f"crop={value!r}: choose one of {', '.join(CROP_CHOICES)}")
    return value


@dataclass
class Cropped:
    """A cropped panorama: image (h, w, 3) uint8, mask (h, w) bool (False where empty or filled), box on the canvas;
    filled: how many pixels the 'fill' mode inpainted; mesh: the 'warp' mode's map canvas -> result (else None)."""

    image: np.ndarray
    mask: np.ndarray
    box: Box
    filled: int = 0
    mesh: Mesh | None = None


def warp_crop(image: np.ndarray, mask: np.ndarray) -> Cropped | None:
    """The ``warp`` crop of image (H, W, C) with valid mask (H, W) bool: the mesh warp, trimmed to its largest
    all-valid rectangle (a bilinear sample counts as valid when all four neighbours are); None when no mesh fits."""
    mesh = rectangle_mesh(image, mask)
    if mesh is None:
        return None
    out, valid = mesh.render_all([image, mask.astype(np.uint8) * np.uint8(255)])
    trim = crop_box(valid == 255)
    if trim[2] <= trim[0] or trim[3] <= trim[1]:
        return None
    out = np.ascontiguousarray(out[trim[1]:trim[3], trim[0]:trim[2]])
    return Cropped(out, np.ones(out.shape[:2], bool), valid_bounds(mask), 0, mesh.trimmed(trim))


def crop_panorama(image: np.ndarray, mask: np.ndarray, mode: str | bool = DEFAULT_CROP,
                  max_empty: float = DEFAULT_CROP_MAX_EMPTY) -> Cropped:
    """Crop image (H, W, 3) uint8 with valid mask (H, W) bool by CROP_MODES[mode]; the whole frame if nothing fits."""
    spec = CROP_MODES[crop_mode(mode)]
    h, w = mask.shape
    if spec.warp and not mask.all():
        warped = warp_crop(image, mask)
        if warped is not None:
            return warped
        spec = CROP_MODES["rect"]
    box = spec.box(mask, max_empty)
    if box[2] <= box[0] or box[3] <= box[1]:
        box = (0, 0, w, h)
    if box != (0, 0, w, h):
        image = np.ascontiguousarray(image[box[1]:box[3], box[0]:box[2]])
        mask = np.ascontiguousarray(mask[box[1]:box[3], box[0]:box[2]])
    filled = 0
    if spec.fill and not mask.all():
        image, replaced = fill_empty(image, mask)
        mask = mask & ~replaced
        filled = int(np.count_nonzero(replaced))
    return Cropped(image, mask, box, filled)
