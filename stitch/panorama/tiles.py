"""Stage 8d: tiled compositing, for canvases larger than ``tile_megapix`` (stitch.panorama.compose).

Exposure gains and seams are decided once on the seam-resolution canvas, as for any panorama; only the
full-resolution work is split:

1. coverage: the canvas is cut into square tiles of ``tile_side`` px; on each, every image whose canvas box meets
   it computes its inverse maps there (stitch.panorama.warp.tile_maps) and marks the pixels it sees. The result is
   the blend's mask, 1 byte per canvas pixel, on a disk-backed array (``disk_array``);
2. crop: the crop mode's box (stitch.panorama.crop.CROP_MODES) is found on that mask, so it is known before any
   pixel is blended;
3. blend: the crop box is cut into tiles of ``tile_side`` px (``tile_boxes``); each tile is
   blended alone (stitch.panorama.blend.blend on a window of the canvas, ``window_canvas``) over the tile grown by
   ``blend_margin``: 2 * 2^bands px for multi-band (the pyramid's filters, so the blend is seamless across tile
   borders: on a test mosaic with 4 and 6 bands and 256-px tiles, at most 1 gray level from the whole-canvas blend,
   where 1 * 2^bands leaves up to 8; the window's origin is a multiple of 2^bands, so every level sits on the whole
   canvas's grid), 0 for feather and hard seams (a per-pixel weighting), plus FILL_MARGIN px for the 'fill'
   crop's inpainting;
   only the images whose box meets the window are warped, and only there. Its core is written to the result,
   itself a disk-backed array.

So the memory held is a tile's (the blend's float buffers over the tile and its margin, times ``workers``
tiles at once, on a thread pool) plus the seam-resolution maps; the canvas-size mask and result are pages of
temporary files, which the system writes out when memory runs short. Writing the result as .tif
(stitch.panorama.output) reads it back tile by tile. The 'warp' crop needs the whole image in memory: with it
the canvas is composited untiled (a note says so).

Convention: boxes are (x0, y0, x1, y1) canvas px, x1 and y1 exclusive.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from stitch.errors import ConfigError
from stitch.geometry import box_intersection
from stitch.panorama.blend import BLENDERS, LowGrid, blend, prepare_blend
from stitch.panorama.crop import CROP_MODES, Box, crop_mode, fill_empty
from stitch.panorama.disagree import ViewDisagreement
from stitch.panorama.exposure import Gains
from stitch.panorama.threads import in_order, thread_pool
from stitch.panorama.views import LowView
from stitch.panorama.warp import Canvas, tile_maps
from stitch.types import ProgressFn

#: Canvases above this many megapixels are composited tile by tile (0: never); under the 80 MP canvas cap
#: (stitch.panorama.warp.DEFAULT_MAX_CANVAS_PIXELS), above the sets we bench (26 MP at most).
DEFAULT_TILE_MEGAPIX = 64.0
#: Side (px) of a tile's core: the unit of work and of the .tif file's tiles (a multiple of TILE_ALIGN).
DEFAULT_TILE_SIDE = 4096
#: TIFF tiles are multiples of 16 px a side.
TILE_ALIGN = 16
#: Context (px) around a tile for the 'fill' crop's inpainting (its radius, rim and padding are a few px).
FILL_MARGIN = 64


def check_tiles(tile_megapix: float, tile_side: int) -> None:
    """ConfigError unless tile_megapix >= 0 (0: never tile) and tile_side is a multiple of TILE_ALIGN >= 64."""
    if isinstance(tile_megapix, bool) or not (isinstance(tile_megapix, (int, float)) and tile_megapix >= 0):
        raise ConfigError(f"tile_megapix={tile_megapix!r}: must be a number >= 0 (0: never tile)")
    if isinstance(tile_side, bool) or not (isinstance(tile_side, int) and tile_side >= 64 and tile_side % TILE_ALIGN == 0):
        raise ConfigError(f"tile_side={tile_side!r}: must be an integer >= 64, a multiple of {TILE_ALIGN}")


def tiled(pixels: int, tile_megapix: float) -> bool:
    """Whether a canvas of ``pixels`` is composited tile by tile."""
    return tile_megapix > 0 and pixels > tile_megapix * 1e6


def tile_boxes(box: Box, side: int) -> list[Box]:
    """The tiles of ``side`` px covering box, in row-major order (the last ones of a row or column smaller)."""
    x0, y0, x1, y1 = box
    return [(x, y, min(x + side, x1), min(y + side, y1)) for y in range(y0, y1, side) for x in range(x0, x1, side)]


def blend_margin(method: str, levels: int) -> int:
    """Context (px) a tile's blend needs on every side: 2 * 2^levels for multi-band, 0 for a per-pixel weighting."""
    return (2 << levels) if BLENDERS[method].multiband and levels > 0 else 0


def window_canvas(canvas: Canvas, grid: LowGrid, window: Box) -> tuple[Canvas, LowGrid]:
    """The canvas restricted to window: (its Canvas, window pixel (0, 0) at canvas pixel (x0, y0); boxes clipped
    to it, shifted, and (0, 0, 0, 0) for an image that does not meet it), and the LowGrid of its pixels."""
    x0, y0, x1, y1 = window
    boxes = []
    for b in canvas.boxes:
        r = box_intersection(b, window)
        boxes.append((0, 0, 0, 0) if r is None else (r[0] - x0, r[1] - y0, r[2] - x0, r[3] - y0))
    sub = replace(canvas, offset=(canvas.offset[0] + x0, canvas.offset[1] + y0), size=(x1 - x0, y1 - y0),
                  boxes=tuple(boxes))
    return sub, LowGrid(grid.scale, grid.tx + grid.scale * x0, grid.ty + grid.scale * y0)


def disk_array(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A zeroed array on an anonymous temporary file (np.memmap; the system's temp folder, TMPDIR): its pages
    leave memory when it runs short, and the file goes when the array does."""
    return np.memmap(tempfile.TemporaryFile(prefix="stitch-tiles-"), dtype=dtype, mode="w+", shape=shape)


@dataclass
class TiledResult:
    """compose_tiles' result: image (h, w, 3) and mask (h, w) bool over ``box`` (disk-backed arrays), the pixels the
    'fill' crop invented, the tiles blended and the multi-band levels used."""

    image: np.ndarray
    mask: np.ndarray
    box: Box
    filled: int
    tiles: int
    levels: int


def _grow(box: Box, margin: int, bound: Box, align: int = 1) -> Box:
    """box grown by margin, its origin rounded down to a multiple of align, clipped to bound."""
    return (max(bound[0], (box[0] - margin) // align * align), max(bound[1], (box[1] - margin) // align * align),
            min(bound[2], box[2] + margin), min(bound[3], box[3] + margin))


def coverage(images: Sequence[np.ndarray], homographies: Sequence[np.ndarray], canvas: Canvas,
             valid: Sequence[np.ndarray | None], side: int, run: Callable) -> np.ndarray:
    """(H, W) bool disk-backed: the canvas pixels some image sees (the blend's mask), tile by tile via ``run``."""
    W, H = canvas.size
    mask = disk_array((H, W), bool)

    def one(tile: Box) -> None:
        for k, (img, Hk) in enumerate(zip(images, homographies)):
            r = box_intersection(canvas.boxes[k], tile)
            if r is None:
                continue
            out = mask[r[1]:r[3], r[0]:r[2]]
            for sl, inside, _, _ in tile_maps(Hk, canvas, r, (img.shape[1], img.shape[0]), valid[k],
                                              canvas.displacement(k)):
                out[sl] |= inside

    run(one, tile_boxes((0, 0, W, H), side), "coverage")
    return mask


def compose_tiles(images: Sequence[np.ndarray], homographies: Sequence[np.ndarray], canvas: Canvas, grid: LowGrid,
                  views: Sequence[LowView], seam_masks: Sequence[np.ndarray], gains: Gains, method: str,
                  bands: int | None,
                  crop: str | bool, max_empty: float, side: int, strip_pixels: int,
                  valid: Sequence[np.ndarray | None], disagree: Sequence[ViewDisagreement | None] | None,
                  workers: int = 1, progress: ProgressFn | None = None) -> TiledResult:
    """Steps 1-3 of the module docstring: images (h, w, 3) uint8 or uint16 with H (3, 3, image -> reference) on
    canvas, blended by ``method`` with ``bands`` levels (None: from the overlap width; fixed for the whole canvas),
    cropped by ``crop`` (not 'warp'), ``workers`` tiles at a time; ``levels`` of the result: the bands used.

    views / seam_masks / gains / disagree: the seam-resolution inputs of stitch.panorama.blend.blend; valid: per
    image its valid mask (h, w) uint8 (255: data) or None.
    """
    spec = CROP_MODES[crop_mode(crop)]
    if spec.warp:
        raise ConfigError("crop='warp' needs the whole image in memory: it cannot be composited tile by tile")
    valid = list(valid)
    n = len(images)
    prep = prepare_blend(views, seam_masks, method, bands, grid.scale, canvas.size,
                         [None] * n if disagree is None else disagree)
    levels = prep.levels
    with thread_pool(workers) as pool:
        def run(fn: Callable, tiles: list[Box], what: str) -> list:
            out = []
            for k, res in enumerate(in_order(lambda i: fn(tiles[i]), len(tiles), pool, workers)):
                out.append(res)
                if progress is not None:
                    progress(k + 1, len(tiles), f"compositing tiles: {what}, {k + 1} of {len(tiles)}")
            return out

        W, H = canvas.size
        cover = coverage(images, homographies, canvas, valid, side, run)
        box = spec.box(cover, max_empty)
        if box[2] <= box[0] or box[3] <= box[1]:
            box = (0, 0, W, H)
        del cover
        bw, bh = box[2] - box[0], box[3] - box[1]
        image = disk_array((bh, bw, 3), images[0].dtype)
        mask = disk_array((bh, bw), bool)
        margin = blend_margin(method, levels)
        context = FILL_MARGIN if spec.fill else 0

        def one(core: Box) -> int:
            ctx = _grow(core, context, box)
            win = _grow(ctx, margin, (0, 0, W, H), 1 << levels)
            sub, sub_grid = window_canvas(canvas, grid, win)
            out = blend(images, homographies, sub, sub_grid, views, seam_masks, gains, method, levels, strip_pixels,
                        None, valid, disagree, prep=prep)
            sl = (slice(ctx[1] - win[1], ctx[3] - win[1]), slice(ctx[0] - win[0], ctx[2] - win[0]))
            img, seen = out.image[sl], out.mask[sl]
            del out
            filled = np.zeros(seen.shape, bool)
            if spec.fill and not seen.all():
                img, filled = fill_empty(img, seen)
                seen = seen & ~filled
            cs = (slice(core[1] - ctx[1], core[3] - ctx[1]), slice(core[0] - ctx[0], core[2] - ctx[0]))
            ds = (slice(core[1] - box[1], core[3] - box[1]), slice(core[0] - box[0], core[2] - box[0]))
            image[ds] = img[cs]
            mask[ds] = seen[cs]
            return int(np.count_nonzero(filled[cs]))

        cores = tile_boxes(box, side)
        filled = sum(run(one, cores, "blend"))
    return TiledResult(image, mask, box, filled, len(cores), levels)
