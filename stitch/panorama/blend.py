"""Stage 8c: blending at full resolution with bounded memory: multi-band (Laplacian pyramid) or feather.

Inputs: the full-resolution images with their homographies and canvas (stitch.warp), and, from the
seam-resolution stages, each image's seam mask and gain map (stitch.seams, stitch.exposure) together with
the affine map between the two canvases (``LowGrid``). Each image is warped at full resolution a strip at a
time (``strip_pixels`` canvas pixels), never as a whole canvas.

Weights. Image k's weight at a full-resolution canvas pixel is

    M_k = valid_k * (seam_k + eps)

where valid_k marks the pixels that see the image, seam_k is its seam mask sampled bilinearly from the seam
canvas (a transition of about one seam pixel), and eps (``EPS_WEIGHT``) lets a pixel that no seam mask
claims (the seam canvas is coarser than the valid region's edge) still take any image that sees it.

* ``multiband`` (Burt & Adelson 1983; the scheme of OpenCV's MultiBandBlender): the Laplacian pyramid of
  every image is blended band by band, band l with the weights G_l(M_k) (the Gaussian pyramid of the
  weights) normalised by their sum, and the blended pyramid is collapsed. Low frequencies (exposure, sky)
  mix over a wide zone, fine detail over a few pixels, so the seam neither shows a step nor ghosts.
  The number of bands follows the overlap width w (the median over overlapping pairs of overlap area /
  its longer bounding-box side, in full-resolution px): bands = clip(floor(log2 w) - 2, 1, MAX_BANDS), so
  that the coarsest band spans about the overlap.

  Memory: the pyramid is split at level c = min(bands, FINE_LEVELS), and the canvas is processed in one
  pass over horizontal strips (``strip_pixels``), each extended by a margin of 4 * 2^c rows so the
  pyramid's filters see the same pixels as on the whole canvas. A strip warps every image that touches it
  once, one image at a time; from that warp come the image's Gaussian level c (kept per image at 1 / 2^c
  resolution) and its bands 0..c-1 on the columns where its weight matters (its seam mask, grown by the
  filters' reach). The strip's blended fine bands are collapsed and stored as int16 (1/32 gray level).
  Then the coarse bands (levels >= c) are blended on the whole 1 / 2^c canvas, and every output strip is
  the upsampled coarse result plus its stored fine part. Strip origins are multiples of 2^c and each
  image's coarse region a multiple of 2^bands, so every level's sampling grid is the global one: the
  result equals a whole-canvas multi-band blend up to rounding (tests/test_blend.py compares strips of
  20 000 px with one strip), while the float buffers hold one strip and one image at a time (plus the
  int16 fine part, 6 bytes per canvas pixel, and the uint8 result; for 16-bit images a float32 fine part
  and a uint16 result; the peak memory this gives: docs/measurements.md, "blend").

* ``feather``: one level; weights valid_k * (blurred seam_k + eps), the seam mask blurred on the seam
  canvas with sigma = w / 4 (full-resolution px): a linear-like cross-fade of about w / 2 px around each seam
  (with seam 'none', a cross-fade over the whole overlap, like the plain compositor).
* ``none``: one level, hard seams: weights valid_k * ([seam_k >= 0.5] + eps).

Where the photos disagree (``disagree``: per image, a 0/1 map on the seam canvas, stitch.panorama.disagree: a
moving person, parallax), every blender takes each pixel from its seam side alone: before its pyramid (or
average) is formed, image k's pixels there that lie off its own side (sampled seam_k < 0.5) are replaced by
those of the image that owns them, weighted by the sampled map D_k:

    I_k <- (1 - a) I_k + a (I_owner + O_k),   a = D_k [claim_k < 0.5] [the owner sees the pixel, or image k does not]

with O_k the smooth photometric difference of image k minus the other there (ViewDisagreement.offset, sampled),
so the images agree in content while the light's difference still blends across the seam.

claim_k is image k's seam mask extended to the seam-canvas pixels no seam mask holds (the canvas's outer rim,
coarser than the full-resolution valid region) by the nearest held pixel's owner, sampled bilinearly; the
owner is the image whose claim is largest (at least 0.5), its pixels gain-compensated and warped over just
that area.

Only the areas the seams leave whole count (an area whose second owner holds more than MAX_CUT_SHARE of it is
crossed by a seam, as drifting water or a glare are: a hard cut through it would show, and the blend hides it
better). So inside a disagreement area all images show the owner's content, every band of the blend returns it and the
transition at the seam is a hard cut of content: a person seen in one photo only comes whole from it or is left
out, never half-transparent, and no low-frequency halo of it leaks across the seam. Outside the areas (grown until
the photos agree again) the images are untouched and the blend is the usual one.

Images are extended beyond their borders by replicating the edge pixels (cv2.remap BORDER_REPLICATE), so
a Laplacian band near an image border does not pull the blend towards black.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import cv2
import numpy as np

from stitch.errors import ConfigError
from stitch.geometry import box_intersection, box_slices, union_box
from stitch.panorama.disagree import ViewDisagreement
from stitch.panorama.displacement import Displacement
from stitch.panorama.exposure import Gains
from stitch.panorama.threads import in_order, release_free_memory, thread_pool
from stitch.panorama.views import LowView, overlapping_pairs
from stitch.panorama.warp import MAX_TILE_SIDE, Canvas, remap_replicate, tile_maps
from stitch.types import ProgressFn


@dataclass(frozen=True)
class BlendMode:
    """How a blender weighs the images at the seams: blurred seam masks, Laplacian bands, or hard 0/1 weights."""

    feather: bool = False
    multiband: bool = False
    hard: bool = False


#: The blenders: name -> BlendMode, read by ``blend``, the CLI and the API.
BLENDERS: dict[str, BlendMode] = {
    "multiband": BlendMode(multiband=True),
    "feather": BlendMode(feather=True),
    "none": BlendMode(hard=True),
}
BLEND_CHOICES = tuple(BLENDERS)
DEFAULT_BLEND = "multiband"
#: Take each pixel of a disagreement area from its seam side alone (see the module docstring; docs/panoramas.md,
#: "Blending"): a person seen in one photo only is never half-transparent.
DEFAULT_SHARP_BLEND = True
MAX_BANDS = 10
#: Pyramid levels blended strip by strip at full resolution; coarser ones on the 1 / 2^c canvas.
FINE_LEVELS = 3
#: Canvas pixels per strip (the float buffers take roughly 100 bytes per strip pixel).
DEFAULT_STRIP_PIXELS = 2_000_000
EPS_WEIGHT = 1e-4



@dataclass(frozen=True)
class LowGrid:
    """Affine map from full-resolution canvas pixels (c, r) to seam-canvas pixels: (s c + tx, s r + ty)."""

    scale: float
    tx: float
    ty: float

    def region_matrix(self, region_origin: tuple[int, int], low_origin: tuple[int, int]) -> np.ndarray:
        """M (2, 3) for cv2.warpAffine(..., WARP_INVERSE_MAP): region pixel -> low-map pixel."""
        s = self.scale
        return np.array([[s, 0.0, s * region_origin[0] + self.tx - low_origin[0]],
                         [0.0, s, s * region_origin[1] + self.ty - low_origin[1]]])


def sample_low(low_map: np.ndarray, low_origin: tuple[int, int], grid: LowGrid,
               region: tuple[int, int, int, int], replicate: bool = False) -> np.ndarray:
    """A low-resolution (h', w'[, C]) float32 map over a low box, sampled bilinearly at a full-res region.

    Returns (h, w[, C]) float32 for region (x0, y0, x1, y1); outside the low box: 0, or the nearest edge
    value when ``replicate``.
    """
    x0, y0, x1, y1 = region
    M = grid.region_matrix((x0, y0), low_origin)
    src = np.ascontiguousarray(low_map, dtype=np.float32)
    out = np.empty((y1 - y0, x1 - x0) + src.shape[2:], np.float32)
    border = cv2.BORDER_REPLICATE if replicate else cv2.BORDER_CONSTANT
    for tx in range(0, x1 - x0, MAX_TILE_SIDE):  # warpAffine's destination limit, as for remap
        tw = min(MAX_TILE_SIDE, x1 - x0 - tx)
        Mt = M.copy()
        Mt[:, 2] += M[:, 0] * tx
        res = cv2.warpAffine(src, Mt, (tw, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=border, borderValue=0)
        out[:, tx:tx + tw] = res.reshape(out[:, tx:tx + tw].shape)
    return out


def warp_region(img: np.ndarray, H: np.ndarray, canvas: Canvas, region: tuple[int, int, int, int],
                valid: np.ndarray | None = None, local: Displacement | None = None) -> tuple[np.ndarray, np.ndarray]:
    """img (h, w, 3) warped onto canvas region (x0, y0, x1, y1): (pixels (rh, rw, 3) of img's dtype, seen (rh, rw) bool).

    Beyond the image's border the values are its edge pixels replicated (the extension the pyramid needs);
    ``seen`` marks the pixels that really see the image (and, given its valid mask (h, w) uint8, its data).
    ``local``: the image's local warp (warp.inverse_maps).
    """
    x0, y0, x1, y1 = region
    out = np.empty((y1 - y0, x1 - x0, 3), img.dtype)
    seen = np.zeros((y1 - y0, x1 - x0), bool)
    for sl, inside, mx, my in tile_maps(H, canvas, region, (img.shape[1], img.shape[0]), valid, local):
        seen[sl] = inside
        out[sl] = remap_replicate(img, mx, my)
    return out, seen


def bands_for_overlap(width_px: float, canvas_size: tuple[int, int]) -> int:
    """Number of multi-band levels for an overlap ``width_px`` wide (see the module docstring)."""
    if not (width_px > 0 and math.isfinite(width_px)):
        return 1
    bands = math.floor(math.log2(max(width_px, 2.0))) - 2
    limit = math.floor(math.log2(max(min(canvas_size), 8) / 4.0))
    return int(np.clip(bands, 1, max(1, min(MAX_BANDS, limit))))


def overlap_width(views: Sequence[LowView], scale: float) -> float:
    """Median overlap width (full-res px) over the overlapping pairs of low views; 0 when none overlap."""
    widths = []
    for i, j, r in overlapping_pairs(views):
        both = views[i].mask[box_slices(r, views[i].offset)] & views[j].mask[box_slices(r, views[j].offset)]
        area = int(both.sum())
        if area < 4:
            continue
        ys, xs = np.nonzero(both)
        widths.append(area / max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1))
    return float(np.median(widths)) / scale if widths else 0.0


@dataclass
class Blended:
    """The blended canvas: image (H, W, 3) of the images' dtype (black where empty), mask (H, W) bool, bands used."""

    image: np.ndarray
    mask: np.ndarray
    bands: int


def _align_down(x: int, a: int) -> int:
    return (x // a) * a


def _align_up(x: int, a: int) -> int:
    return -(-x // a) * a


#: Per image, its warp over a strip: (region (x0, y0, x1, y1), pixels (h, w, 3) of the image's dtype, valid (h, w)).
_Warps = dict["_Source", tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]]


class _Source:
    """One image's full-resolution inputs: pixels, homography, canvas box, seam/gain maps on the low canvas, and
    its valid mask (h, w) uint8 or None."""

    def __init__(self, img: np.ndarray, H: np.ndarray, box: tuple[int, int, int, int], seam: np.ndarray,
                 low_origin: tuple[int, int], gain: np.ndarray, gain_uniform: bool, relevant: np.ndarray,
                 valid: np.ndarray | None = None, local: Displacement | None = None,
                 differ: ViewDisagreement | None = None, claim: np.ndarray | None = None) -> None:
        self.img, self.H, self.box, self.valid, self.local = img, H, box, valid, local
        self.seam, self.low_origin = seam, low_origin
        self.gain, self.gain_uniform = gain, gain_uniform
        self.relevant = relevant
        self.differ = differ if differ is not None and differ.differ.any() else None
        self.claim = claim  # (h', w') float32 0/1 on the low box: the seam mask, extended to the unheld rim
        self.others: list[_Source] = []  # the images that may own this one's disagreement areas

    def compensated(self, canvas: Canvas, grid: LowGrid, region: tuple[int, int, int, int],
                    cache: _Warps | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Over region: gain-compensated pixels (h, w, 3) float32 (a new array) and valid (h, w) bool; the warp is
        read from ``cache`` when that holds this image over the region (valid is then a view of it: read-only)."""
        held = None if cache is None else cache.get(self)
        if held is not None and box_intersection(held[0], region) == tuple(region):
            sl = box_slices(region, (held[0][0], held[0][1]))
            raw, valid = held[1][sl], held[2][sl]
        else:
            raw, valid = warp_region(self.img, self.H, canvas, region, self.valid, self.local)
        if self.gain_uniform:
            return np.multiply(raw, self.gain[0, 0].reshape(1, 1, -1), dtype=np.float32), valid
        g = sample_low(self.gain, self.low_origin, grid, region, replicate=True)
        return np.multiply(raw, g.reshape(g.shape[0], g.shape[1], -1), dtype=np.float32), valid

    def columns(self, grid: LowGrid, y0: int, y1: int) -> tuple[int, int] | None:
        """Full-res canvas columns [x0, x1) where this image matters within rows [y0, y1); None if nowhere."""
        s, ox, oy = grid.scale, self.low_origin[0], self.low_origin[1]
        h = self.relevant.shape[0]
        r0 = max(0, math.floor(s * y0 + grid.ty - oy) - 1)
        r1 = min(h, math.ceil(s * y1 + grid.ty - oy) + 2)
        if r1 <= r0:
            return None
        cols = np.flatnonzero(self.relevant[r0:r1].any(axis=0))
        if len(cols) == 0:
            return None
        x0 = math.floor((cols[0] + ox - grid.tx) / s) - 1
        x1 = math.ceil((cols[-1] + 1 + ox - grid.tx) / s) + 1
        return max(x0, self.box[0]), min(x1, self.box[2])

    def weighted(self, canvas: Canvas, grid: LowGrid, region: tuple[int, int, int, int], method: str,
                 cache: _Warps | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Over region: gain-compensated pixels (h, w, 3) float32, weight M_k (h, w) float32, valid (h, w) bool;
        ``cache``: the images' warps over the strip (``_strip_warps``), read for this image and its owners."""
        img, valid = self.compensated(canvas, grid, region, cache)
        weight = sample_low(self.seam, self.low_origin, grid, region)
        if self.differ is not None:
            _take_from_owners(self, img, valid, canvas, grid, region, cache)
        if BLENDERS[method].hard:
            weight = (weight >= 0.5).astype(np.float32)
        weight += np.float32(EPS_WEIGHT)
        weight *= valid
        return img, weight, valid


#: A disagreement area whose second owner holds more than this share of it is cut by a seam: left to the blend.
MAX_CUT_SHARE = 0.2
#: Smallest replacement weight that counts (below it a pixel keeps its own image's value).
MIN_TAKE = 1e-3
#: Side (canvas px) of the tiles a disagreement area's replacement works in: only tiles holding some of the area
#: warp the owners' pixels, over the area's extent within the tile (bounds the memory and the warped area).
TAKE_TILE = 128


def _take_from_owners(src: _Source, img: np.ndarray, valid: np.ndarray, canvas: Canvas, grid: LowGrid,
                      region: tuple[int, int, int, int], cache: _Warps | None = None) -> None:
    """In place: img (h, w, 3) float32 over region, where src's disagreement map covers pixels off its seam side
    (its claim < 0.5), blended towards the owning image's pixels (see the module docstring).

    valid (h, w) bool: where src sees the region; where it does not (the extension its pyramid needs), the owner's
    extension is taken too, so no band of src carries what the owner's side leaves out. ``cache``: warps of the
    owners to read instead of warping them again."""
    alpha = sample_low(src.differ.differ, src.low_origin, grid, region, replicate=True)  # the box's edge row counts
    alpha[sample_low(src.claim, src.low_origin, grid, region, replicate=True) >= 0.5] = 0.0
    ys, xs = np.nonzero(alpha > MIN_TAKE)
    if len(ys) == 0:
        return
    x0, y0 = region[0], region[1]
    key = (ys // TAKE_TILE) * (alpha.shape[1] // TAKE_TILE + 1) + xs // TAKE_TILE
    order = np.argsort(key, kind="stable")
    ys, xs, key = ys[order], xs[order], key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    bounds = [np.minimum.reduceat(ys, starts), np.minimum.reduceat(xs, starts),
              np.maximum.reduceat(ys, starts), np.maximum.reduceat(xs, starts)]
    for ty0, tx0, ty1, tx1 in zip(*bounds):  # tiles bound the memory and the warped area
        _take_block(src, img, valid, canvas, grid, region, alpha,
                    (x0 + int(tx0), y0 + int(ty0), x0 + int(tx1) + 1, y0 + int(ty1) + 1), cache)


def _take_block(src: _Source, img: np.ndarray, valid: np.ndarray, canvas: Canvas, grid: LowGrid,
                region: tuple[int, int, int, int], alpha: np.ndarray, sub: tuple[int, int, int, int],
                cache: _Warps | None = None) -> None:
    """``_take_from_owners`` on the block sub (x0, y0, x1, y1) of region (canvas px): alpha (h, w) float32 is the
    replacement weight over region."""
    x0, y0 = region[0], region[1]
    a = alpha[sub[1] - y0:sub[3] - y0, sub[0] - x0:sub[2] - x0]
    best = np.full(a.shape, 0.5, np.float32)  # an owner claims at least half of the pixel
    taken = np.zeros(a.shape + (3,), np.float32)
    have = np.zeros(a.shape, bool)
    for o in src.others:
        if box_intersection(o.box, sub) is None:
            continue
        q, sl = sub, (slice(None), slice(None))  # the whole area: beyond o's box its extension (see above)
        claim = sample_low(o.claim, o.low_origin, grid, q, replicate=True)
        better = (claim >= best[sl]) & (a[sl] > MIN_TAKE)
        if not better.any():
            continue
        pix, seen = o.compensated(canvas, grid, q, cache)
        better &= seen | ~valid[q[1] - y0:q[3] - y0, q[0] - x0:q[2] - x0]
        taken[sl][better] = pix[better]
        best[sl][better] = claim[better]
        have[sl] |= better
    a = np.where(have, a, 0.0)[:, :, None]
    unit = 257.0 if src.img.dtype == np.uint16 else 1.0  # the offset is in 8-bit levels
    taken += sample_low(src.differ.offset, src.low_origin, grid, sub, replicate=True) * np.float32(unit)
    part = img[sub[1] - y0:sub[3] - y0, sub[0] - x0:sub[2] - x0]
    part += a * (taken - part)


def _gauss(x: np.ndarray, levels: int) -> list[np.ndarray]:
    pyr = [x]
    for _ in range(levels):
        pyr.append(cv2.pyrDown(pyr[-1]))
    return pyr


def _up(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    up = cv2.pyrUp(x, dstsize=(shape[1], shape[0]))
    return up.reshape(shape[:2] + x.shape[2:]) if up.ndim < x.ndim else up


@dataclass
class BlendPrep:
    """The seam-resolution side of a blend, the same for every strip or tile: levels (bands), per view its seam
    weight map (blurred for feather), where its weight matters (``_relevant``), its claim and disagreement map."""

    levels: int
    seams: list[np.ndarray]
    relevant: list[np.ndarray]
    claims: list[np.ndarray | None]
    disagree: list[ViewDisagreement | None]


def prepare_blend(views: Sequence[LowView], seam_masks: Sequence[np.ndarray], method: str, bands: int | None,
                  scale: float, canvas_size: tuple[int, int],
                  disagree: Sequence[ViewDisagreement | None]) -> BlendPrep:
    """``blend``'s seam-resolution work (see the module docstring): bands from the overlap width (unless given), seam
    weights, relevant areas, claims and the disagreement areas the seams leave whole; ``scale``: the LowGrid's."""
    mode = BLENDERS[method]
    n = len(views)
    width_px = overlap_width(views, scale)
    seams = [m.astype(np.float32) for m in seam_masks]
    levels = 0
    if mode.feather:
        feather_px = max(width_px / 4.0, 2.0)  # the seam blur's sigma, full-res px
        if feather_px * scale > 0.3:
            seams = [cv2.GaussianBlur(np.pad(s, 1), (0, 0), feather_px * scale)[1:-1, 1:-1] for s in seams]
        reach = int(3 * feather_px)
    else:
        if mode.multiband:
            levels = bands if bands is not None else bands_for_overlap(width_px, canvas_size)
        reach = (6 << min(levels, FINE_LEVELS)) if levels else 0  # full-res px a fine level's weights reach
    relevant = _relevant(views, seam_masks, math.ceil(reach * scale) + 2)
    claims: list[np.ndarray | None] = [None] * n
    disagree = list(disagree)
    if any(d is not None for d in disagree):
        claims, label = _claims(views, seam_masks)
        disagree = _uncut(views, disagree, label)
    return BlendPrep(levels, seams, relevant, claims, disagree)


def blend(images: Sequence[np.ndarray], homographies: Sequence[np.ndarray], canvas: Canvas, grid: LowGrid,
          views: Sequence[LowView], seam_masks: Sequence[np.ndarray], gains: Gains, method: str = DEFAULT_BLEND,
          bands: int | None = None, strip_pixels: int = DEFAULT_STRIP_PIXELS,
          progress: ProgressFn | None = None, valid: Sequence[np.ndarray | None] | None = None,
          disagree: Sequence[ViewDisagreement | None] | None = None, workers: int = 1,
          prep: BlendPrep | None = None) -> Blended:
    """Blend the images (h, w, 3), all uint8 or all uint16, onto ``canvas`` (see the module docstring).

    views / seam_masks / gains: per image, on the seam canvas (``grid`` maps full-res canvas px to it).
    bands: multi-band levels (None: from the overlap width). valid: per image, its valid mask (h, w) uint8
    (255: data) or None. disagree: per image, where the photos disagree on its seam-canvas box
    (stitch.panorama.disagree.Disagreement.views), or None: there each pixel's content comes from its seam side
    alone. workers: threads warping and filtering the images of a strip (1: one by one; the result does not depend
    on it). An image whose canvas box is empty is left out (a tile's canvas, stitch.panorama.tiles). prep: what
    ``prepare_blend`` makes of the seam-resolution inputs (made here when None; the tiles of a canvas share one).
    Returns the canvas-size image (the images' dtype) and mask.
    """
    if method not in BLENDERS:
        raise ConfigError(f"blend={method!r}: choose one of {', '.join(BLEND_CHOICES)}")
    if strip_pixels < 1:
        raise ConfigError(f"strip_pixels={strip_pixels}: must be positive")
    n = len(images)
    if not (n == len(homographies) == len(canvas.boxes) == len(views) == len(seam_masks) == len(gains.maps)):
        raise ConfigError("blend: images, homographies, canvas boxes, views, seam masks and gains must match")
    disagree = [None] * n if disagree is None else list(disagree)
    if len(disagree) != n or any(d is not None and (d.differ.shape != v.mask.shape or d.offset.shape[:2] != v.mask.shape)
                                 for d, v in zip(disagree, views)):
        raise ConfigError("blend: disagree needs one map per image, each of its view's (h, w) shape (or None)")
    if bands is not None and not (isinstance(bands, int) and 0 <= bands <= MAX_BANDS):
        raise ConfigError(f"bands={bands}: must be an integer in 0..{MAX_BANDS} (or None for automatic)")
    prep = prep if prep is not None else prepare_blend(views, seam_masks, method, bands, grid.scale, canvas.size,
                                                       disagree)
    levels, seams, relevant, claims, disagree = prep.levels, prep.seams, prep.relevant, prep.claims, prep.disagree
    c = min(levels, FINE_LEVELS)
    valid = [None] * n if valid is None else valid
    fields = [canvas.displacement(k) for k in range(n)]
    sources = [_Source(img, H, box, seam, v.offset, g, u, rel, ok, d, dis, cl)
               for img, H, box, seam, v, g, u, rel, ok, d, dis, cl in
               zip(images, homographies, canvas.boxes, seams, views, gains.maps, gains.uniform, relevant, valid, fields,
                   disagree, claims)]
    for k, src in enumerate(sources):
        if src.differ is not None:
            src.others = [o for m, o in enumerate(sources) if m != k and box_intersection(o.box, src.box) is not None]
    W, Hc = canvas.size
    step = 1 << levels
    Wp, Hp = _align_up(W, step), _align_up(Hc, step)
    live = [src for src in sources if src.box[2] > src.box[0] and src.box[3] > src.box[1]]  # a tile's canvas
    if not live:
        dtype = sources[0].img.dtype if sources else np.uint8
        return Blended(np.zeros((Hc, W, 3), dtype), np.zeros((Hc, W), bool), levels)
    with thread_pool(workers, len(live)) as pool:
        if levels == 0:
            image, mask = _single_level(live, canvas, grid, method, W, Hc, Wp, Hp, strip_pixels, progress, pool,
                                        workers)
        else:
            image, mask = _multiband(live, canvas, grid, method, levels, c, W, Hc, Wp, Hp, strip_pixels, progress,
                                     pool, workers)
    return Blended(image, mask, levels)


def _claims(views: Sequence[LowView], seam_masks: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """(per view, (h_k, w_k) float32 0/1 on its box: its seam mask, plus the pixels of its box that no seam mask
    holds and whose nearest held pixel is its own; the owner label (H', W') int32 over the views' union box)."""
    x0, y0, x1, y1 = union_box(v.box for v in views)
    label = np.full((y1 - y0, x1 - x0), -1, np.int32)
    for k, (v, m) in enumerate(zip(views, seam_masks)):
        label[box_slices(v.box, (x0, y0))][m] = k
    held = label >= 0
    if held.any() and not held.all():
        _, idx = cv2.distanceTransformWithLabels(np.where(held, 0, 255).astype(np.uint8), cv2.DIST_L2, 5,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
        seeds = np.zeros(int(idx.max()) + 1, np.int32)
        seeds[idx[held]] = label[held]
        label = np.where(held, label, seeds[idx])
    return [(label[box_slices(v.box, (x0, y0))] == k).astype(np.float32) for k, v in enumerate(views)], label


def _uncut(views: Sequence[LowView], disagree: Sequence[ViewDisagreement | None], label: np.ndarray,
           max_share: float = MAX_CUT_SHARE) -> list[ViewDisagreement | None]:
    """The disagreement areas the seams leave whole: each connected area of the union of the views' ``differ``
    (the union box of ``label``, the owner per pixel) is dropped when its second owner holds more than
    ``max_share`` of it (a seam runs through it, as through drifting water or a glare: a hard cut there would
    show, the blend hides it better)."""
    x0, y0, _, _ = union_box(v.box for v in views)
    union = np.zeros(label.shape, np.uint8)
    for v, d in zip(views, disagree):
        if d is not None:
            union[box_slices(v.box, (x0, y0))] |= (d.differ > 0).astype(np.uint8)
    n, comp = cv2.connectedComponents(union, connectivity=8)
    if n <= 1:
        return list(disagree)
    held = label >= 0
    counts = np.zeros((n, int(label.max()) + 1), np.int64)
    np.add.at(counts, (comp[held], label[held]), 1)
    counts[0] = 0
    ranked = np.sort(counts, axis=1)
    second = ranked[:, -2] if counts.shape[1] > 1 else np.zeros(n, np.int64)
    cut = second > max_share * np.maximum(counts.sum(axis=1), 1)
    if not cut.any():
        return list(disagree)
    drop = cut[comp]
    out: list[ViewDisagreement | None] = []
    for v, d in zip(views, disagree):
        if d is None:
            out.append(None)
            continue
        differ = d.differ * ~drop[box_slices(v.box, (x0, y0))]
        out.append(ViewDisagreement(differ, d.offset) if differ.any() else None)  # offset read only where differ
    return out


def _relevant(views: Sequence[LowView], seam_masks: Sequence[np.ndarray], grow: int) -> list[np.ndarray]:
    """Per view (low box, bool): where its full-res weight matters at the fine levels.

    Its seam mask, plus its valid pixels near the outer edge of the union of all views (there the seam canvas
    is too coarse to say which image covers a full-res pixel), dilated by ``grow`` seam px.
    """
    x0, y0, x1, y1 = union_box(v.box for v in views)
    union = np.zeros((y1 - y0 + 2, x1 - x0 + 2), np.uint8)  # a 1 px empty border
    for v in views:
        union[box_slices(v.box, (x0 - 1, y0 - 1))] |= v.mask.astype(np.uint8)
    inner = cv2.erode(union, np.ones((5, 5), np.uint8))[1:-1, 1:-1] > 0
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    out = []
    for v, m in zip(views, seam_masks):
        edge = v.mask & ~inner[box_slices(v.box, (x0, y0))]
        keep = (m | edge).astype(np.uint8)
        out.append(dilate_by_rows(np.pad(keep, grow), kernel)[grow:-grow or None, grow:-grow or None] > 0)
    return out


def dilate_by_rows(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.dilate(img, kernel) of a (h, w) uint8 image, pixel for pixel, for an odd kernel (an ellipse) whose
    non-zero entries form one centred run per row (others: cv2.dilate itself).

    The horizontal dilations by runs of half-width 0, 1, 2, ... come one from the last (two shifted maxima each),
    and each kernel row adds its run's dilation shifted by its row: a few passes per row instead of one per
    kernel entry (a 73 x 73 ellipse over a 430 x 350 view: 7.8 -> 2.7 ms)."""
    ay, ax = kernel.shape[0] // 2, kernel.shape[1] // 2
    rows = []  # (half-width, row offset)
    for i, row in enumerate(kernel):
        cols = np.flatnonzero(row)
        if len(cols) == 0:
            continue
        if cols[-1] - cols[0] + 1 != len(cols) or cols[0] + cols[-1] != 2 * ax:
            return cv2.dilate(img, kernel)
        rows.append((ax - int(cols[0]), i - ay))
    h = img.shape[0]
    out = np.zeros_like(img)
    run, reach = img, 0  # run: img dilated horizontally by [-reach, reach]
    for half, dy in sorted(rows):
        while reach < half:
            wider = run.copy() if reach == 0 else np.zeros_like(run)
            np.maximum(wider[:, 1:], run[:, :-1], out=wider[:, 1:])
            np.maximum(wider[:, :-1], run[:, 1:], out=wider[:, :-1])
            run, reach = wider, reach + 1
        if dy >= 0:  # out[y] takes run[y + dy]
            np.maximum(out[:h - dy], run[dy:], out=out[:h - dy])
        else:
            np.maximum(out[-dy:], run[:h + dy], out=out[-dy:])
    return out


def _expanded(box: tuple[int, int, int, int], margin: int, align: int, Wp: int, Hp: int) -> tuple[int, int, int, int]:
    return (max(0, _align_down(box[0] - margin, align)), max(0, _align_down(box[1] - margin, align)),
            min(Wp, _align_up(box[2] + margin, align)), min(Hp, _align_up(box[3] + margin, align)))


#: Fixed-point scale of the stored fine bands (int16): 1/32 gray level, range +-1023.
FINE_SCALE = 32.0
#: Output rows ``_add_coarse`` finishes at a time (its float temporaries: 12 bytes per pixel of them).
ADD_ROWS = 32


@dataclass(frozen=True)
class _Layout:
    """The multi-band strips: c fine levels, ``rows`` per strip (a multiple of 2^c), canvas W x Hc padded to Wp x Hp."""

    c: int
    rows: int
    W: int
    Hc: int
    Wp: int
    Hp: int

    @property
    def margin(self) -> int:
        """Rows (and columns) of context each strip adds on either side for the pyramid's filters: 4 * 2^c."""
        return 4 * (1 << self.c)

    def strips(self) -> Iterator[tuple[int, int, int, int]]:
        """(y0, y1, Y0, Y1) per strip: its own rows [y0, y1) and the rows [Y0, Y1) it filters, margins included."""
        for y0 in range(0, self.Hp, self.rows):
            y1 = min(self.Hp, y0 + self.rows)
            yield y0, y1, max(0, y0 - self.margin), min(self.Hp, y1 + self.margin)


def _multiband(sources: Sequence[_Source], canvas: Canvas, grid: LowGrid, method: str, levels: int, c: int,
               W: int, Hc: int, Wp: int, Hp: int, strip_pixels: int, progress: ProgressFn | None,
               pool: Executor | None = None, ahead: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Multi-band blend in one pass over strips (see the module docstring); image (the sources' dtype) and mask (Hc, W).

    Each strip warps every image that touches it once. From that warp come (a) the image's Gaussian level c
    rows of the strip (kept per image, at 1 / 2^c resolution, for the coarse bands) and (b) the fine bands
    0..c-1 on the columns where the image's weight matters; the strip's blended fine bands are collapsed and
    stored as int16 (FINE_SCALE; float32 for 16-bit images, whose bands exceed int16). Then the coarse bands are
    blended on the whole 1 / 2^c canvas, and each strip of the output is the upsampled coarse result plus the
    stored fine part. ``pool``: the images of a strip are warped and filtered on it, ``ahead`` at a time, and added
    in image order (the same sums as one by one).
    """
    step_c = 1 << c
    lay = _Layout(c, max(step_c, _align_down(max(1, strip_pixels // max(1, Wp)), step_c)), W, Hc, Wp, Hp)
    dtype = sources[0].img.dtype
    fine = np.zeros((Hp, Wp, 3), np.int16 if dtype == np.uint8 else np.float32)
    mask = np.zeros((Hc, W), bool)
    inner = [_expanded(src.box, lay.margin, step_c, Wp, Hp) for src in sources]
    gc_img = [np.zeros(((r[3] - r[1]) >> c, (r[2] - r[0]) >> c, 3), np.float32) for r in inner]
    gc_w = [np.zeros(((r[3] - r[1]) >> c, (r[2] - r[0]) >> c), np.float32) for r in inner]
    n_strips = -(-Hp // lay.rows)
    sharp = any(src.differ is not None for src in sources)
    for s_idx, strip in enumerate(lay.strips()):
        y0, y1, Y0, Y1 = strip
        acc = [np.zeros(((Y1 - Y0) >> lv, Wp >> lv, 3), np.float32) for lv in range(c)]
        wsum = [np.zeros(((Y1 - Y0) >> lv, Wp >> lv), np.float32) for lv in range(c)]
        cache = _strip_warps(sources, inner, canvas, grid, strip, pool, ahead) if sharp else None
        parts = in_order(lambda k, strip=strip, cache=cache: _strip_part(sources[k], inner[k], canvas, grid, method,
                                                                         lay, strip, cache), len(sources), pool, ahead)
        for k, part in enumerate(parts):
            _add_part(part, (gc_img[k], gc_w[k]), (acc, wsum), mask)
            del part  # not held while the next one is awaited
        cache = parts = None  # the strip's warps are not held while the next strip's are made
        fine[y0:y1] = _collapse_fine(acc, wsum, y0 - Y0, y1 - Y0, fine.dtype == np.int16)  # int16: an exact cast
        if progress is not None:
            progress(s_idx + 1, n_strips + 1, f"blending rows {y0}-{min(y1, Hc)} of {Hc}")
    coarse = _coarse_bands(sources, inner, gc_img, gc_w, levels, c, Wp, Hp)
    del gc_img, gc_w
    release_free_memory()  # the strips' arrays, freed on the threads, before the output's
    if progress is not None:
        progress(n_strips, n_strips + 1, "blending: low bands")
    out = _add_coarse(fine, coarse, mask, lay, dtype, pool, ahead)
    if progress is not None:
        progress(n_strips + 1, n_strips + 1, "blending done")
    return out, mask


@dataclass
class _StripPart:
    """One image's share of one strip (``_strip_part``): where it sees the canvas, its Gaussian level c rows, its
    weighted fine bands."""

    seen: tuple[int, int, int, int, np.ndarray] | None  # (vy0, vy1, xs0, xs1, valid rows) or None
    coarse: tuple[slice, np.ndarray, np.ndarray] | None  # (rows of the image's level-c region, image, weight)
    fine: list[tuple[int, int, int, np.ndarray, np.ndarray]]  # (level, row, column, weighted band, weight)


def _strip_region(rk: tuple[int, int, int, int], strip: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    """The part of an image's region ``rk`` a strip (y0, y1, Y0, Y1) filters, or None."""
    ry0, ry1 = max(rk[1], strip[2]), min(rk[3], strip[3])
    return (rk[0], ry0, rk[2], ry1) if ry1 > ry0 else None


def _strip_warps(sources: Sequence[_Source], inner: Sequence[tuple[int, int, int, int]], canvas: Canvas,
                 grid: LowGrid, strip: tuple[int, int, int, int], pool: Executor | None, ahead: int) -> _Warps:
    """Every image's warp over its part of the strip (on ``pool``), before its gains (a quarter of the float
    pixels' memory): with disagreement areas, an image's pixels are read by itself and by the images whose areas it
    owns, and are warped once."""
    regions = [_strip_region(rk, strip) for rk in inner]
    warps = in_order(lambda k: None if regions[k] is None else warp_region(
        sources[k].img, sources[k].H, canvas, regions[k], sources[k].valid, sources[k].local), len(sources), pool,
        ahead)
    return {src: (r, *w) for src, r, w in zip(sources, regions, warps) if w is not None and r is not None}


def _strip_part(src: _Source, rk: tuple[int, int, int, int], canvas: Canvas, grid: LowGrid, method: str,
                lay: _Layout, strip: tuple[int, int, int, int], cache: _Warps | None = None) -> _StripPart | None:
    """One image over one strip (y0, y1, Y0, Y1), warped once within its region ``rk`` (aligned to 2^c): the rows
    where it sees the canvas, its Gaussian level c rows of [y0, y1) (for the coarse bands), and its weighted fine
    bands 0..c-1 on the columns where its weight matters; None when it does not reach the strip. Pure: the
    images of a strip can run on threads, their parts added in image order (``_add_part``).
    """
    y0, y1, Y0, Y1 = strip
    c = lay.c
    reg = _strip_region(rk, strip)
    if reg is None:
        return None
    ry0, ry1 = reg[1], reg[3]
    img, wgt, valid = src.weighted(canvas, grid, reg, method, cache)
    vy0, vy1 = max(y0, ry0), min(y1, ry1, lay.Hc)
    seen = None
    if vy1 > vy0:
        xs0, xs1 = rk[0], min(rk[2], lay.W)
        seen = (vy0, vy1, xs0, xs1, valid[vy0 - ry0:vy1 - ry0, :xs1 - xs0].copy())
    del valid
    gi, gw = _gauss(img, c), _gauss(wgt, c)
    del img, wgt
    coarse = None
    cy0, cy1 = max(y0, rk[1]), min(y1, rk[3])
    if cy1 > cy0:
        srcs = slice((cy0 - ry0) >> c, (cy1 - ry0) >> c)
        coarse = (slice((cy0 - rk[1]) >> c, (cy1 - rk[1]) >> c), gi[c][srcs], gw[c][srcs])
    part = _StripPart(seen, coarse, [])
    cols = src.columns(grid, Y0, Y1)
    if cols is None:
        return part
    fx0 = max(rk[0], _align_down(cols[0] - lay.margin, 1 << c))
    fx1 = min(rk[2], _align_up(cols[1] + lay.margin, 1 << c))
    oy = ry0 - Y0
    for lv in range(c if fx1 > fx0 else 0):
        a, b = (fx0 - rk[0]) >> lv, (fx1 - rk[0]) >> lv
        g_here = gi[lv][:, a:b]
        nxt = gi[lv + 1][:, (fx0 - rk[0]) >> (lv + 1):(fx1 - rk[0]) >> (lv + 1)]
        lap = _up(np.ascontiguousarray(nxt), g_here.shape)
        np.subtract(g_here, lap, out=lap)
        w_here = gw[lv][:, a:b]
        lap *= w_here[:, :, None]
        part.fine.append((lv, oy >> lv, fx0 >> lv, lap, w_here))
    return part


def _add_part(part: _StripPart | None, coarse_k: tuple[np.ndarray, np.ndarray],
              fine_acc: tuple[list[np.ndarray], list[np.ndarray]], mask: np.ndarray) -> None:
    """Add one image's ``_StripPart`` to the strip: ``mask`` (|=), its level-c rows (``coarse_k``: image, weight),
    and its fine bands to ``fine_acc`` (sums, weight sums per level)."""
    if part is None:
        return
    if part.seen is not None:
        vy0, vy1, xs0, xs1, valid = part.seen
        mask[vy0:vy1, xs0:xs1] |= valid
    if part.coarse is not None:
        rows, gi, gw = part.coarse
        coarse_k[0][rows] = gi
        coarse_k[1][rows] = gw
    acc, wsum = fine_acc
    for lv, sy, sx, lap, w_here in part.fine:
        h, w = w_here.shape
        acc[lv][sy:sy + h, sx:sx + w] += lap
        wsum[lv][sy:sy + h, sx:sx + w] += w_here


def _collapse_fine(acc: list[np.ndarray], wsum: list[np.ndarray], r0: int, r1: int, fixed: bool = True) -> np.ndarray:
    """A strip's fine bands normalised and collapsed, rows [r0, r1), (r1 - r0, Wp, 3) float32.

    ``fixed``: in FINE_SCALE units, rounded and clipped to int16's range (else in pixel units, as they are);
    consumes ``acc`` and ``wsum`` (their levels are freed on the way).
    """
    res = None
    for lv in range(len(acc) - 1, -1, -1):  # in place: the strips are large, temporaries cost more than the maths
        blended = acc[lv]
        blended /= np.maximum(wsum[lv], 1e-12, out=wsum[lv])[:, :, None]
        if res is not None:
            blended += _up(np.ascontiguousarray(res), blended.shape)
        res = blended
        acc[lv] = wsum[lv] = None
    part = res[r0:r1]
    if fixed:
        part *= np.float32(FINE_SCALE)
        np.clip(np.rint(part, out=part), -32767, 32767, out=part)
    return part


def _add_coarse(fine: np.ndarray, coarse: np.ndarray, mask: np.ndarray, lay: _Layout,
                dtype: type = np.uint8, pool: Executor | None = None, ahead: int = 1) -> np.ndarray:
    """The output (Hc, W, 3) of ``dtype`` (uint8 or uint16): per strip, the coarse result upsampled c times plus the
    stored fine part (the strips on ``pool``, ``ahead`` at a time: each writes its own rows).

    fine (Hp, Wp, 3) int16 in FINE_SCALE units (or float32 in pixel units); coarse (Hp >> c, Wp >> c, 3) float32;
    black where ``mask`` is False.
    """
    c, W, Hc = lay.c, lay.W, lay.Hc
    unit = FINE_SCALE if fine.dtype == np.int16 else 1.0
    out = np.zeros((Hc, W, 3), dtype)
    strips = [strip for strip in lay.strips() if min(strip[1], Hc) > strip[0]]

    def one(i: int) -> None:
        y0, y1, Y0, Y1 = strips[i]
        up = np.ascontiguousarray(coarse[Y0 >> c:Y1 >> c])
        for lv in range(c - 1, -1, -1):
            up = _up(up, (((Y1 - Y0) >> lv), lay.Wp >> lv, 3))
        for r0 in range(y0, min(y1, Hc), ADD_ROWS):  # a few rows at a time: no strip-size temporaries
            r1 = min(r0 + ADD_ROWS, y1, Hc)
            vals = fine[r0:r1, :W].astype(np.float32)
            vals *= np.float32(1.0 / unit)
            vals += up[r0 - Y0:r1 - Y0, :W]
            np.clip(np.rint(vals, out=vals), 0, np.iinfo(dtype).max, out=vals)
            keep = mask[r0:r1].view(np.uint8)  # the pixels no image covers stay black
            px = vals.astype(dtype)
            out[r0:r1] = cv2.bitwise_and(px, px, mask=keep)

    for _ in in_order(one, len(strips), pool, ahead):
        pass
    return out


def _coarse_bands(sources: Sequence[_Source], inner: Sequence[tuple[int, int, int, int]],
                  gc_img: Sequence[np.ndarray], gc_w: Sequence[np.ndarray], levels: int, c: int, Wp: int,
                  Hp: int) -> np.ndarray:
    """The collapsed blend of levels >= c on the 1 / 2^c canvas, (Hp >> c, Wp >> c, 3) float32.

    Each image's level-c Gaussian (over ``inner``, aligned to 2^c) is padded to a region aligned to
    2^levels (replicated pixels, zero weight) so every coarser level sits on the global grid.
    """
    rel = levels - c  # Laplacian levels blended at the coarse resolution (the last one is the residual)
    step_c, step_l = 1 << c, 1 << levels
    acc = [np.zeros((Hp >> (c + j), Wp >> (c + j), 3), np.float32) for j in range(rel + 1)]
    wsum = [np.zeros((Hp >> (c + j), Wp >> (c + j)), np.float32) for j in range(rel + 1)]
    for src, rin, g_img, g_w in zip(sources, inner, gc_img, gc_w):
        outer = _expanded(src.box, max(2 * step_l, 4 * step_c), step_l, Wp, Hp)
        pad = [(rin[1] - outer[1]) >> c, (outer[3] - rin[3]) >> c, (rin[0] - outer[0]) >> c,
               (outer[2] - rin[2]) >> c]
        img = cv2.copyMakeBorder(g_img, *pad, cv2.BORDER_REPLICATE)
        wgt = cv2.copyMakeBorder(g_w, *pad, cv2.BORDER_CONSTANT, value=0)
        gi, gw = _gauss(img, rel), _gauss(wgt, rel)
        ox, oy = outer[0] >> c, outer[1] >> c
        for j in range(rel + 1):
            lap = gi[j] - _up(gi[j + 1], gi[j].shape) if j < rel else gi[j]
            h, w = gw[j].shape
            sy, sx = oy >> j, ox >> j
            acc[j][sy:sy + h, sx:sx + w] += lap * gw[j][:, :, None]
            wsum[j][sy:sy + h, sx:sx + w] += gw[j]
    result = None
    for j in range(rel, -1, -1):
        blended = acc[j] / np.maximum(wsum[j], 1e-12)[:, :, None]
        result = blended if result is None else _up(result, blended.shape) + blended
        acc[j] = wsum[j] = None
    return result


def _single_level(sources: Sequence[_Source], canvas: Canvas, grid: LowGrid, method: str, W: int, Hc: int,
                  Wp: int, Hp: int, strip_pixels: int, progress: ProgressFn | None, pool: Executor | None = None,
                  ahead: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Feather / hard seams: one weighted average per strip, on the columns where each image matters (the images
    of a strip on ``pool``, added in image order, as ``_multiband``)."""
    dtype = sources[0].img.dtype
    out = np.zeros((Hc, W, 3), dtype)
    mask = np.zeros((Hc, W), bool)
    rows = max(1, strip_pixels // max(1, Wp))
    n_strips = -(-Hp // rows)
    for s_idx, y0 in enumerate(range(0, Hp, rows)):
        y1 = min(Hp, y0 + rows)
        acc = np.zeros((y1 - y0, Wp, 3), np.float32)
        wsum = np.zeros((y1 - y0, Wp), np.float32)
        valid_any = np.zeros((y1 - y0, Wp), bool)

        def weighted(k: int, y0: int = y0, y1: int = y1) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray,
                                                                   np.ndarray] | None:
            src = sources[k]
            cols = src.columns(grid, y0, y1)
            if cols is None:
                return None
            region = (max(cols[0], 0), max(src.box[1], y0), min(cols[1], Wp), min(src.box[3], y1))
            if region[3] <= region[1] or region[2] <= region[0]:
                return None
            img, wgt, valid = src.weighted(canvas, grid, region, method)
            img *= wgt[:, :, None]
            return (slice(region[1] - y0, region[3] - y0), slice(region[0], region[2])), img, wgt, valid

        for part in in_order(weighted, len(sources), pool, ahead):
            if part is None:
                continue
            sl, img, wgt, valid = part
            valid_any[sl] |= valid
            acc[sl] += img
            wsum[sl] += wgt
            del part, img, wgt, valid  # not held while the next one is awaited
        res = acc / np.maximum(wsum, 1e-12)[:, :, None]
        hh = min(y1, Hc) - y0
        if hh > 0:
            keep = valid_any[:hh, :W]
            block = out[y0:y0 + hh]
            block[keep] = np.clip(np.rint(res[:hh, :W][keep]), 0, np.iinfo(dtype).max).astype(dtype)
            mask[y0:y0 + hh] = keep
        if progress is not None:
            progress(s_idx + 1, n_strips, f"blending rows {y0}-{min(y1, Hc)} of {Hc}")
    return out, mask
