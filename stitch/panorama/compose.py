"""Stage 8: compositing the warped images onto the canvas.

``compose_panorama`` (what stitch_images runs) chains the compositing stages, each in its own module:

1. every image is warped onto a *seam-resolution* canvas (``seam_megapix`` per image; the same projection
   with its scale multiplied by s, so full-resolution canvas pixel (c, r) sits at (s c + tx, s r + ty) there,
   see ``low_canvas``);
2. exposure compensation solves gains on those views (stitch.exposure);
3. where the compensated views still disagree is measured (stitch.panorama.disagree: optical flow, colour
   difference), and seams are found on them around it (stitch.seams, ``seam_misalign``);
4. the full-resolution images are blended strip by strip with the seam masks and gains (stitch.blend), each pixel
   of a disagreement area from its seam side alone (``sharp_blend``);
5. the result is cropped by the ``crop`` mode (stitch.crop.CROP_MODES; default 'rect');
   a canvas above ``tile_megapix`` does 4-5 tile by tile instead (stitch.panorama.tiles: the crop decided first on
   the coverage mask, each tile of ``tile_side`` px blended alone on a disk-backed result; its seconds all count
   as 'blend');
6. with ``timelapse`` set, every image is also warped alone onto the cropped frame and written as its own
   file there (stitch.panorama.timelapse).

Output resolution (stitch.panorama.resolution): the canvas is scaled before step 1 by the scale at which the
median photo keeps its resolution, times ``scale`` (0 < s <= 1), or lowered to ``megapixels`` (the canvas,
before the crop): the projection is scaled by s as for the seam canvas (``low_canvas``), and each image drawn
smaller than its own resolution is downscaled first (INTER_AREA). No image is upscaled.

Depth and no-data: 16-bit images (uint16) are composited at 16 bits (the seam-resolution views that exposure and
seams work on are 8-bit); a valid mask per image (its alpha channel) leaves its pixels without data out of the
views, the seams, the blend and the timelapse frames, as if the image did not reach there.

Hooks (stitch.debug.PipelineHooks) receive the views, gains, seam masks and the result as they are made.

``composite`` is the plain compositor (no exposure, no seams): feather = each image weighted by
(distance to its nearest border + 1) / max at the source position of every canvas pixel, so overlaps fade
linearly; average = every covering image counts equally. It fills the canvas in horizontal strips of at most
``strip_pixels`` pixels, warping only the images that touch a strip, one at a time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from stitch.errors import ConfigError, check_choice
from stitch.geometry import box_slices, union_box, work_scale_matrix
from stitch.io import to_8bit
from stitch.panorama.blend import (
    BLEND_CHOICES,
    DEFAULT_BLEND,
    DEFAULT_SHARP_BLEND,
    DEFAULT_STRIP_PIXELS,
    MAX_BANDS,
    LowGrid,
    blend,
)
from stitch.panorama.crop import DEFAULT_CROP, DEFAULT_CROP_MAX_EMPTY, Cropped, crop_mode, crop_panorama
from stitch.panorama.disagree import DEFAULT_MISALIGN, MISALIGN_CHOICES, Disagreement, disagreement
from stitch.panorama.exposure import DEFAULT_BLOCK_SIZE, DEFAULT_EXPOSURE, EXPOSURE_CHOICES, Gains, compensate
from stitch.panorama.inputs import check_timelapse_dir
from stitch.panorama.rectangle import Mesh
from stitch.panorama.resolution import OutputScale, check_output_size, choose_output_scale, resolution_notes
from stitch.panorama.seams import DEFAULT_GAMMA, DEFAULT_SEAM, SEAM_CHOICES, check_gamma, find_seams
from stitch.panorama.threads import release_free_memory
from stitch.panorama.tiles import DEFAULT_TILE_MEGAPIX, DEFAULT_TILE_SIDE, check_tiles, compose_tiles, tiled
from stitch.panorama.views import LowView
from stitch.panorama.warp import Canvas, canvas_bounds, warp_image
from stitch.types import ProgressFn

COMPOSITE_CHOICES = ("feather", "average")
DEFAULT_COMPOSITE = "feather"
#: Canvas pixels per strip of the plain compositor (its float accumulators take ~16 bytes per pixel).
PLAIN_STRIP_PIXELS = 4_000_000
#: Megapixels per image on the seam-resolution canvas (exposure and seams work there).
DEFAULT_SEAM_MEGAPIX = 0.1



@dataclass
class Composite:
    """The composited canvas: image (H, W, 3) uint8 BGR (black where empty) and mask (H, W) bool."""

    image: np.ndarray
    mask: np.ndarray


def composite(images: Sequence[np.ndarray], homographies: Sequence[np.ndarray], canvas: Canvas,
              method: str = DEFAULT_COMPOSITE, strip_pixels: int = PLAIN_STRIP_PIXELS,
              progress: ProgressFn | None = None) -> Composite:
    """Blend images (h, w, 3) uint8 warped by H (3, 3, image -> reference) onto canvas, strip by strip."""
    check_choice("composite", method, COMPOSITE_CHOICES)
    if strip_pixels < 1:
        raise ConfigError(f"strip_pixels={strip_pixels}: must be positive")
    if len(images) != len(homographies) or len(images) != len(canvas.boxes):
        raise ConfigError(f"composite: {len(images)} images, {len(homographies)} homographies and "
                          f"{len(canvas.boxes)} canvas boxes must match")
    width, height = canvas.size
    out = np.zeros((height, width, 3), np.uint8)
    mask = np.zeros((height, width), bool)
    rows = max(1, min(height, strip_pixels // max(width, 1)))
    n_strips = -(-height // rows)
    for k, y0 in enumerate(range(0, height, rows)):
        y1 = min(height, y0 + rows)
        acc = np.zeros((y1 - y0, width, 3), np.float32)
        wsum = np.zeros((y1 - y0, width), np.float32)
        for i, (img, H) in enumerate(zip(images, homographies)):
            wi = warp_image(img, H, canvas, i, region=(0, y0, width, y1), feather=method == "feather")
            if wi is None:
                continue
            w = wi.weight if wi.weight is not None else wi.mask.astype(np.float32)
            ys, xs = wi.offset[1] - y0, wi.offset[0]
            h_, w_ = wi.mask.shape
            acc[ys:ys + h_, xs:xs + w_] += wi.image.astype(np.float32) * w[:, :, None]
            wsum[ys:ys + h_, xs:xs + w_] += w
        covered = wsum > 0
        blended = acc / np.maximum(wsum, 1e-12)[:, :, None]
        out[y0:y1][covered] = np.clip(np.rint(blended[covered]), 0, 255).astype(np.uint8)
        mask[y0:y1] = covered
        if progress is not None:
            progress(k + 1, n_strips, f"compositing rows {y0}-{y1} of {height}")
    return Composite(out, mask)


# --- the staged compositor ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ComposeConfig:
    """Settings of compose_panorama; every field's default is its stage's DEFAULT_* constant."""

    exposure: str = DEFAULT_EXPOSURE
    seam: str = DEFAULT_SEAM
    blend: str = DEFAULT_BLEND
    seam_misalign: str = DEFAULT_MISALIGN
    seam_misalign_weight: float = DEFAULT_GAMMA
    sharp_blend: bool = DEFAULT_SHARP_BLEND
    crop: str | bool = DEFAULT_CROP
    crop_max_empty: float = DEFAULT_CROP_MAX_EMPTY
    scale: float | None = None
    megapixels: float | None = None
    timelapse: str | None = None
    seam_megapix: float = DEFAULT_SEAM_MEGAPIX
    bands: int | None = None
    block_size: int = DEFAULT_BLOCK_SIZE
    strip_pixels: int = DEFAULT_STRIP_PIXELS
    tile_megapix: float = DEFAULT_TILE_MEGAPIX
    tile_side: int = DEFAULT_TILE_SIDE

    def check(self) -> None:
        """ConfigError naming the first invalid field."""
        check_choice("exposure", self.exposure, EXPOSURE_CHOICES)
        check_choice("seam", self.seam, SEAM_CHOICES)
        check_choice("blend", self.blend, BLEND_CHOICES)
        check_choice("seam_misalign", self.seam_misalign, MISALIGN_CHOICES)
        check_gamma(self.seam_misalign_weight)
        if not isinstance(self.sharp_blend, bool):
            raise ConfigError(f"sharp_blend={self.sharp_blend!r}: must be True or False")
        crop_mode(self.crop)
        if not (isinstance(self.crop_max_empty, (int, float)) and 0.0 <= self.crop_max_empty < 0.5):
            raise ConfigError(f"crop_max_empty={self.crop_max_empty}: must be in [0, 0.5)")
        check_output_size(self.scale, self.megapixels)
        if self.timelapse is not None:
            check_timelapse_dir(self.timelapse)  # stitch_images also checks it against the input files
        if not (isinstance(self.seam_megapix, (int, float)) and 0.001 <= self.seam_megapix <= 10):
            raise ConfigError(f"seam_megapix={self.seam_megapix}: must be between 0.001 and 10")
        if self.bands is not None and not (isinstance(self.bands, int) and 0 <= self.bands <= MAX_BANDS):
            raise ConfigError(f"bands={self.bands}: must be an integer in 0..{MAX_BANDS}, or None (automatic)")
        if not (isinstance(self.block_size, int) and self.block_size >= 2):
            raise ConfigError(f"block_size={self.block_size}: must be an integer >= 2 (px at the seam resolution)")
        if not (isinstance(self.strip_pixels, int) and self.strip_pixels >= 1000):
            raise ConfigError(f"strip_pixels={self.strip_pixels}: must be an integer >= 1000")
        check_tiles(self.tile_megapix, self.tile_side)


@dataclass
class Composed:
    """compose_panorama's result: image (H, W, 3) uint8 or uint16 and mask (H, W) bool after the crop.

    crop: (x0, y0, x1, y1) of the result in pixels of ``canvas`` (the canvas composited on: the input's, scaled
    by ``scale`` for the output resolution, stitch.panorama.resolution); gains: mean gain per image (list of 1 or
    3 floats); bands: multi-band levels used; seconds: per stage; filled: pixels invented by the 'fill' crop
    (False in mask); timelapse: the files written, one per image; notes: warnings on the output resolution;
    mesh: the 'warp' crop's map from canvas pixels to result pixels (None for a plain cut, where ``crop`` is it);
    tiles: the tiles composited (stitch.panorama.tiles; 0: the canvas in one piece, and then image and mask are
    in memory, else disk-backed arrays).
    """

    image: np.ndarray
    mask: np.ndarray
    crop: tuple[int, int, int, int]
    gains: list[list[float]]
    bands: int
    seconds: dict[str, float] = field(default_factory=dict)
    canvas: Canvas | None = None
    scale: float = 1.0
    filled: int = 0
    timelapse: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    mesh: Mesh | None = None
    tiles: int = 0


def scaled_output(images: Sequence[np.ndarray], homographies: Sequence[np.ndarray], canvas: Canvas,
                  plan: OutputScale, valid: Sequence[np.ndarray | None]
                  ) -> tuple[list[np.ndarray], list[np.ndarray], Canvas, list[np.ndarray | None]]:
    """The canvas scaled by ``plan.scale``: images (h, w, C) each downscaled by its ``plan.shrink`` (INTER_AREA),
    their H (3, 3) onto that canvas, the canvas, and the valid masks (h, w) uint8 downscaled with them."""
    sizes = [(img.shape[1], img.shape[0]) for img in images]
    small = [(max(2, round(w * f)), max(2, round(h * f))) for (w, h), f in zip(sizes, plan.shrink)]
    out_canvas, Hs, _, _ = low_canvas(canvas, homographies, sizes, plan.scale, small)
    out_images = [cv2.resize(img, sm, interpolation=cv2.INTER_AREA) if (img.shape[1], img.shape[0]) != sm else img
                  for img, sm in zip(images, small)]
    return out_images, Hs, out_canvas, [_resized_valid(v, sm) for v, sm in zip(valid, small)]


def _resized_valid(valid: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    """A valid mask (h, w) uint8 (255: data) at another (w, h) size: a pixel keeps data when most of it has."""
    if valid is None or (valid.shape[1], valid.shape[0]) == tuple(size):
        return valid
    return np.where(cv2.resize(valid, size, interpolation=cv2.INTER_AREA) >= 128, np.uint8(255), np.uint8(0))


def seam_scale(sizes: Sequence[tuple[int, int]], seam_megapix: float) -> float:
    """s <= 1 such that the median image has about seam_megapix MP on the seam canvas."""
    area = float(np.median([w * h for w, h in sizes]))
    return min(1.0, math.sqrt(seam_megapix * 1e6 / max(area, 1.0)))


def low_canvas(canvas: Canvas, homographies: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]],
               scale: float, small: Sequence[tuple[int, int]] | None = None
               ) -> tuple[Canvas, list[np.ndarray], list[tuple[int, int]], LowGrid]:
    """The canvas scaled by s: (canvas, H per downscaled image (3, 3), downscaled sizes (w, h), LowGrid).

    The reference plane is scaled by D = diag(s, s, 1) (curved projections: focal and centre times s), so a
    projected coordinate u becomes s u and canvas pixel c maps to s (c + offset) - offset_low. ``small``: each
    image's downscaled size (default: its size times s, the seam canvas's images). A local
    warp's displacement fields (``canvas.local``) are scaled with it.
    """
    D = np.diag([scale, scale, 1.0])
    if small is None:
        small = [(max(2, round(w * scale)), max(2, round(h * scale))) for w, h in sizes]
    Hs = [D @ np.asarray(H, np.float64) @ np.linalg.inv(work_scale_matrix(sz, sm))
          for H, sz, sm in zip(homographies, sizes, small)]
    p = canvas.projection
    proj = p if p.kind == "plane" else replace(p, focal=p.focal * scale, center=(p.center[0] * scale, p.center[1] * scale))
    cap = max(canvas.pixels, 1) * 4 * max(scale, 1.0) ** 2 + 1_000_000
    local = [d.scaled(scale) if d is not None else None for d in canvas.local] if canvas.local else None
    low = canvas_bounds(Hs, list(small), proj, max_canvas_pixels=int(cap), shifts=canvas.shifts if proj.turn else None,
                        local=local)
    grid = LowGrid(scale, scale * canvas.offset[0] - low.offset[0], scale * canvas.offset[1] - low.offset[1])
    return low, Hs, list(small), grid


def low_views(images: Sequence[np.ndarray], low: Canvas, Hs: Sequence[np.ndarray],
              small: Sequence[tuple[int, int]], valid: Sequence[np.ndarray | None] | None = None) -> list[LowView]:
    """Every image downscaled (INTER_AREA), as 8 bits, and warped onto the seam canvas: a LowView on its box.

    valid: per image, its valid mask (h, w) uint8 (255: data) or None; a view's mask leaves out the rest."""
    views = []
    for k, (img, H, sm) in enumerate(zip(images, Hs, small)):
        src = cv2.resize(img, sm, interpolation=cv2.INTER_AREA) if (img.shape[1], img.shape[0]) != sm else img
        ok = None if valid is None else _resized_valid(valid[k], sm)
        wi = warp_image(to_8bit(src), H, low, k, valid=ok)
        if wi is None:  # too small to cover a seam pixel: an empty view on its box
            x0, y0, x1, y1 = low.boxes[k]
            h, w = max(1, y1 - y0), max(1, x1 - x0)
            views.append(LowView(np.zeros((h, w, 3), np.uint8), np.zeros((h, w), bool), (x0, y0)))
        else:
            views.append(LowView(wi.image, wi.mask, wi.offset))
    return views


def _seam_lines(views: Sequence[LowView], masks: Sequence[np.ndarray], grid: LowGrid,
                crop: tuple[int, int, int, int], valid: np.ndarray) -> np.ndarray:
    """(H, W) bool: result pixels where the owning image (nearest seam-canvas label) changes."""
    x0, y0, x1, y1 = union_box(v.box for v in views)
    label = np.full((y1 - y0, x1 - x0), -1.0, np.float32)
    for k, (v, m) in enumerate(zip(views, masks)):
        label[box_slices(v.box, (x0, y0))][m] = k
    M = grid.region_matrix((crop[0], crop[1]), (x0, y0))
    h, w = valid.shape
    full = cv2.warpAffine(label, M, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=-1)
    lines = np.zeros((h, w), bool)
    dx = (full[:, 1:] != full[:, :-1]) & (full[:, 1:] >= 0) & (full[:, :-1] >= 0)
    dy = (full[1:] != full[:-1]) & (full[1:] >= 0) & (full[:-1] >= 0)
    lines[:, 1:] |= dx
    lines[1:] |= dy
    return lines & valid


def _result_seams(views: Sequence[LowView], masks: Sequence[np.ndarray], grid: LowGrid,
                  box: tuple[int, int, int, int], cropped: Cropped) -> np.ndarray:
    """``_seam_lines`` on the result: on the crop box, then through the 'warp' crop's mesh when there is one."""
    if cropped.mesh is None:
        return _seam_lines(views, masks, grid, box, cropped.mask)
    lines = _seam_lines(views, masks, grid, box, np.ones((box[3] - box[1], box[2] - box[0]), bool))
    return cropped.mesh.moved((box[0], box[1])).render(lines.astype(np.uint8), cv2.INTER_NEAREST) > 0


def _same_depth(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The images at one depth: uint16 when any is (uint8 ones scaled by 257, exactly), else as given."""
    if not any(img.dtype == np.uint16 for img in images):
        return list(images)
    return [img if img.dtype == np.uint16 else img.astype(np.uint16) * np.uint16(257) for img in images]


def _valid_u8(valid: Sequence[np.ndarray | None] | None, images: Sequence[np.ndarray],
              names: Sequence[str]) -> list[np.ndarray | None]:
    """Per image its valid mask (h, w) bool as uint8 (255: data), or None; ConfigError naming a mismatched one."""
    if valid is None:
        return [None] * len(images)
    out = []
    for v, img, name in zip(valid, images, names):
        if v is not None and v.shape != img.shape[:2]:
            raise ConfigError(f"valid mask of {name}: {v.shape[1]} x {v.shape[0]} px, but the image is "
                              f"{img.shape[1]} x {img.shape[0]} px")
        out.append(None if v is None else v.astype(np.uint8) * np.uint8(255))
    return out


def _gains_and_seams(views: list[LowView], canvas: Canvas, cfg: ComposeConfig, names: list[str], hooks: Any,
                     progress: ProgressFn | None, seconds: dict[str, float], workers: int = 1
                     ) -> tuple[Gains, list[np.ndarray], Disagreement | None]:
    """Steps 2-3 of the module docstring on the seam-resolution views: (gains, seam masks, disagreement or None);
    the disagreement's pairs on ``workers`` threads."""
    t = time.perf_counter()
    pieces = [canvas.source(k) for k in range(len(canvas.boxes))]
    same = [(u, v) for u in range(len(pieces)) for v in range(u + 1, len(pieces)) if pieces[u] == pieces[v]]
    gains: Gains = compensate(views, cfg.exposure, cfg.block_size, same=same)
    comp = [gains.apply_low(k, v) for k, v in enumerate(views)]
    if hooks is not None:
        hooks.compensated(names, comp, gains)
    seconds["exposure"] = time.perf_counter() - t
    t = time.perf_counter()
    if progress is not None:
        progress(0, 1, f"finding seams ({cfg.seam})")
    dis = None
    if cfg.sharp_blend or (cfg.seam_misalign != "none" and cfg.seam_misalign_weight > 0):
        dis = disagreement(comp, cfg.seam_misalign, flow=cfg.sharp_blend, areas=cfg.sharp_blend, workers=workers)
        seconds["disagreement"] = time.perf_counter() - t
    masks = find_seams(comp, cfg.seam, gamma=cfg.seam_misalign_weight if cfg.seam_misalign != "none" else 0.0,
                       disagreement=dis)
    if hooks is not None:
        hooks.seams(names, comp, masks)
    seconds["seams"] = time.perf_counter() - t
    return gains, masks, dis


def compose_panorama(images: Sequence[np.ndarray], homographies: Sequence[np.ndarray], canvas: Canvas,
                     config: ComposeConfig | None = None, names: Sequence[str] | None = None, hooks: Any = None,
                     progress: ProgressFn | None = None, valid: Sequence[np.ndarray | None] | None = None,
                     natives: Sequence[float] | None = None, max_pixels: int | None = None,
                     workers: int = 1) -> Composed:
    """Exposure, seams, blending and crop of images (h, w, 3) uint8 or uint16 with H (3, 3, image -> reference)
    on canvas; the result has the images' depth (uint16 when any image is).

    hooks: a stitch.debug.PipelineHooks (or None); names label the images for it. valid: per image, a mask
    (h, w) bool of the pixels with data (an alpha channel; False: never drawn), or None. natives: per image, its
    native scale (stitch.panorama.resolution; default 1: the canvas keeps its scale); max_pixels: the canvas cap.
    workers: threads of the disagreement's pairs and of the full-resolution blend (the images of a strip, or the
    tiles of a tiled canvas; the result does not depend on it). A canvas above ``tile_megapix`` is composited tile by tile (stitch.panorama.tiles).
    """
    cfg = config or ComposeConfig()
    cfg.check()
    n = len(images)
    if not (len(homographies) == len(canvas.boxes) == n) or any(x is not None and len(x) != n for x in (valid, natives)):
        raise ConfigError(f"compose_panorama: {n} images, {len(homographies)} homographies and "
                          f"{len(canvas.boxes)} canvas boxes (and valid masks, native scales) must match")
    names = list(names) if names is not None else [f"image{k}" for k in range(n)]
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    images, valid8 = _same_depth(images), _valid_u8(valid, images, names)
    natives = [1.0] * n if natives is None else list(natives)
    plan = choose_output_scale(canvas.pixels, natives, cfg.scale, cfg.megapixels, max_pixels)
    notes = resolution_notes(plan, natives, names, [(im.shape[1], im.shape[0]) for im in images], canvas.pixels,
                             max_pixels)
    if plan.scale != 1.0 or min(plan.shrink, default=1.0) < 1.0:
        images, homographies, canvas, valid8 = scaled_output(images, homographies, canvas, plan, valid8)
    sizes = [(img.shape[1], img.shape[0]) for img in images]
    low, Hs_low, small, grid = low_canvas(canvas, homographies, sizes, seam_scale(sizes, cfg.seam_megapix))
    views = low_views(images, low, Hs_low, small, valid8)
    if hooks is not None:
        hooks.warped(names, views)
    seconds["warp_seam_res"] = time.perf_counter() - t
    gains, masks, dis = _gains_and_seams(views, canvas, cfg, names, hooks, progress, seconds, workers)

    t = time.perf_counter()
    disagree = dis.views if dis is not None and cfg.sharp_blend else None
    n_tiles = 0
    if tiled(canvas.pixels, cfg.tile_megapix) and crop_mode(cfg.crop) == "warp":
        notes.append(f"crop 'warp' needs the whole image in memory: the {canvas.pixels / 1e6:.0f} MP canvas is "
                     f"composited in one piece (above tile_megapix={cfg.tile_megapix:g})")
    if tiled(canvas.pixels, cfg.tile_megapix) and crop_mode(cfg.crop) != "warp":
        res = compose_tiles(images, homographies, canvas, grid, views, masks, gains, cfg.blend, cfg.bands, cfg.crop,
                            cfg.crop_max_empty, cfg.tile_side, cfg.strip_pixels, valid8, disagree, workers, progress)
        cropped = Cropped(res.image, res.mask, res.box, res.filled)
        n_tiles, bands = res.tiles, res.levels
        seconds["blend"] = time.perf_counter() - t
        seconds["crop"] = 0.0
    else:
        out = blend(images, homographies, canvas, grid, views, masks, gains, cfg.blend, cfg.bands, cfg.strip_pixels,
                    progress, valid8, disagree, workers)
        seconds["blend"] = time.perf_counter() - t
        t = time.perf_counter()
        bands = out.bands
        release_free_memory()  # the blend's strips, before the crop's arrays
        cropped = crop_panorama(out.image, out.mask, cfg.crop, cfg.crop_max_empty)
        del out
        seconds["crop"] = time.perf_counter() - t
    image, mask, box = cropped.image, cropped.mask, cropped.box
    if hooks is not None:
        hooks.result(image, lambda: _result_seams(views, masks, grid, box, cropped))
    scalar_gains = [[round(float(g), 5) for g in gains.scalar(k)] for k in range(len(images))]
    written: list[str] = []
    if cfg.timelapse is not None:
        from stitch.panorama.timelapse import write_timelapse

        t = time.perf_counter()
        written = write_timelapse(cfg.timelapse, images, homographies, canvas, box, names, scalar_gains, valid8,
                                  cropped.mesh)
        seconds["timelapse"] = time.perf_counter() - t
    return Composed(image, mask, box, scalar_gains, bands, seconds, canvas, plan.scale, cropped.filled, written,
                    notes, cropped.mesh, n_tiles)
