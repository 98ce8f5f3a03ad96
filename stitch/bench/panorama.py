"""The panorama benchmark: stitch, OpenStitching and cv2.Stitcher on real photo sets.

Protocol. Every method runs on every set in its own subprocess (``python -m stitch.bench_panorama``), one
at a time, with a wall-clock ``timeout`` (120 s by default; a run past it is killed and counts as a
failure). The child reads the images itself and reports:

* ``seconds``: wall time of the stitch call, image reading included (cv2.Stitcher gets the images read
  inside the timed section too), interpreter start and imports excluded;
* ``peak_mb``: the child's peak resident memory (``VmHWM`` of /proc/self/status) read right after the
  stitch, imports included; a killed run reports the last value the parent polled, as a lower bound;
* ``kept`` / ``given``: the images in the panorama / the images handed to the method. The inputs of a
  set are its image files, less feature masks (files named ``mask*``, e.g. barcode/mask1.png, which are
  not photos); files whose stem ends in ``_noise`` (weir_noise.jpg) are deliberate distractors that a
  method should drop.

Quality, computed after the timing from each method's *registered images* (each input warped into the
method's own output frame, at the resolution it composites at):

* for every pair of registered images whose overlap O (both masks, each eroded by 2 px to drop the
  interpolated border) holds at least ``MIN_PAIR_OVERLAP`` of the smaller image and 1000 px:
  - overlap-only: PSNR over the pixels of O (B, G, R together, peak 255); SSIM (Wang et al. 2004: 11 x 11
    Gaussian window, sigma 1.5, C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, mean of the per-channel maps)
    computed on the pair with everything outside O set to 0 and averaged over O eroded by 5 px (so no
    window reaches outside O);
  - UDIS variant (Nie et al.): both images multiplied by the mask of O and compared over the whole frame
    of the pair (the bounding box of the two warped images): PSNR and mean SSIM over that frame, where the
    zeroed pixels agree by construction;
  the set's figure is the mean over its pairs. The pixels are the raw inputs (no exposure compensation),
  so these figures measure the registration of each method.
* seam visibility: the gradient-domain difference along the seams after blending. With
  L(X) = log(gray(X) + 8) and forward-difference gradients, at every pixel x of the panorama covered by
  at least two registered images (masks eroded by 2 px),

      r(x) = min_k | grad L(P)(x) - grad L(I_k)(x) |_2     over the registered images I_k covering x,

  the part of the panorama's gradient that no input explains; the figure is 100 * sqrt(mean r^2) over
  those pixels. Every seam lies in such an overlap, and elsewhere the panorama is one image (r = 0). A
  hard seam across different content or an exposure step puts a spike in r, ghosting puts the gradients of
  two shifted images in it, while a seam through agreeing content (or a step spread by multi-band
  blending over many pixels, whose squared contributions shrink with the spread) costs little. The log
  makes a global gain per image drop out, so exposure compensation itself is not counted as a difference.

How each method's registered images are obtained (also written to the JSON, ``registration``):

* ``stitch``: every kept image warped by its homography onto the panorama's canvas (stitch.warp, the same
  warp the blender uses), shifted by the crop; on a 360-degree turn the image crossing the wrap counts as
  its two pieces.
* ``openstitching`` / ``openstitching-sift``: ``stitching.Stitcher()`` / ``Stitcher(detector="sift")``;
  the cameras are captured from its ``estimate_scale`` step (a subclass that records them), then its own
  ``resize_final_resolution``, ``warp_final_resolution`` and cropper give the warped images and masks the
  blender was fed (uncropped for the pair figures; placed by the cropper's rectangles in the panorama).
* ``opencv``: ``cv2.Stitcher_create(cv2.Stitcher_PANORAMA)``; its ``cameras()`` (registration scale,
  ``workScale()``) rescaled to the full resolution it composites at, warped with
  ``cv2.PyRotationWarper('spherical', median focal)`` as its composePanorama does, placed at the corners'
  minimum (it does not crop).

Placement (the check that every photo is placed right), two figures per row:

* ``placement_px`` (stitch only): the largest edge residual after the adjustment: the median transfer error of
  one pair match's inliers under the final model, px at the working resolution (Registration.edge_errors);
  the peers do not expose their matches;
* ``placement_min`` (every method, from its registered images): each image's photometric agreement with the
  images it overlaps in the output ((NCC + GC) / 2 of the blurred gray pixels of each pair overlap O,
  stitch.homography.quality.agreement, weighted by the overlap's pixels), and the lowest over the images: a
  photo placed where it does not belong scores near 0, a right one as its overlaps agree (parallax, moving
  things and exposure steps lower it; NCC and GC ignore gain and offset).

``frame_check`` (JSON) is the median absolute difference between the panorama and the registered image
that alone covers a pixel (over such pixels): a few gray levels when the reconstructed frame is right.

``focal`` (per row): stitch's projection focal (px, full resolution); cv2.Stitcher's median camera focal
divided by its work scale; not read from OpenStitching.

Order invariance (``orders``): stitch runs again on the same set in each input order of ORDER_CHOICES
other than 'sorted' (reversed; shuffled = a permutation seeded by ORDER_SEED), timed, without the quality
figures; ``order_runs`` and ``order_spread`` hold each order's canvas size and focal and the largest
relative difference across orders (the goal: ORDER_TOLERANCE, 0.5 %).

Time as N grows (``run_growth``): stitch alone on the first n photos (sorted by name) of one set, n in
GROWTH_COUNTS, one subprocess per n: seconds, peak memory, images kept.

What a user sees (issue 21; definitions in stitch.bench.visual), from the same registered images, each carrying
the method's own point mapping (``Registered.to_output``: stitch's ``Panorama.to_panorama``; the peers'
``cv2.detail`` warpers' ``warpPoint`` with the cameras and offsets their registered images were warped with):
``flow_p50`` / ``flow_p95`` (overlap misalignment, DIS optical flow on textured pixels, px), ``ghost_p50`` /
``ghost_p95`` (the same within 16 px of the seams, derived from each output the same way), ``invented_pct`` /
``empty_pct``, ``colour_step_p95`` / ``colour_step_mean`` (CIE76 Delta E across the seams), ``bend_max`` /
``bend_p95`` (px per 100 px of input segments mapped into the output), ``map_check``, and per run the worst
places' 100 % crops (``worst_<kind>.png``), laid out by the parent in ``worst_places.png``.

Output: the rows (set x method), totals, a contact sheet (every panorama side by
side, downscaled), the worst-places sheet and ``to_json()``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stitch.bench.homography import METHOD_STITCH
from stitch.bench.visual import FIGURES as VISUAL_FIGURES
from stitch.bench.visual import PointMap, Registered, VisualFigures, erode, visual_figures
from stitch.bench.visual_sheet import worst_places_sheet, write_place_crops
from stitch.errors import ConfigError, StitchError, one_line
from stitch.geometry import box_intersection, box_slices, union_box
from stitch.homography.quality import agreement
from stitch.imaging import resize_max_side, to_gray
from stitch.io import IMAGE_EXTENSIONS, write_image_atomic, write_text_atomic
from stitch.panorama.rectangle import Mesh
from stitch.panorama.views import overlapping_pairs
from stitch.types import ProgressFn

METHOD_OS = "openstitching"
METHOD_OS_SIFT = "openstitching-sift"
METHOD_OPENCV = "opencv"
PANORAMA_METHOD_CHOICES = (METHOD_STITCH, METHOD_OS, METHOD_OS_SIFT, METHOD_OPENCV)
PEER_METHODS = (METHOD_OS, METHOD_OS_SIFT, METHOD_OPENCV)
DEFAULT_TIMEOUT_S = 120.0
#: A pair counts when its overlap holds at least this fraction of the smaller image (and 1000 px).
MIN_PAIR_OVERLAP = 0.01
MIN_PAIR_PIXELS = 1000
#: Longer side of each panorama on the contact sheet, and of the saved thumbnails.
THUMB_SIDE = 1600
SHEET_CELL = (560, 220)
LOG_OFFSET = 8.0
#: Input orders of the order-invariance check (``orders=``); 'shuffled' is a seeded permutation.
ORDER_CHOICES = ("sorted", "reversed", "shuffled")
ORDER_SEED = 0
#: Canvas size and focal must agree within this fraction across the orders (issue 13).
ORDER_TOLERANCE = 0.005
#: Image counts of the time-as-N-grows run (``run_growth``), capped at the set's size.
GROWTH_COUNTS = (5, 10, 15, 20, 25, 30, 35)
#: First argument of the child that skips the quality figures (order and growth runs time the stitch only).
NO_METRICS_FLAG = "--no-metrics"
#: The child's flag before a JSON object of stitch_images options for method stitch.
OPTIONS_FLAG = "--stitch-options"

REGISTRATION_NOTES = {
    METHOD_STITCH: "each kept image warped by its homography onto the panorama canvas (stitch.warp), shifted by "
                   "the crop (the image crossing a 360-degree wrap: both pieces)",
    METHOD_OS: "Stitcher() cameras captured at estimate_scale; its own final-resolution warps and masks (the "
               "images its blender was fed), placed by its cropper's rectangles",
    METHOD_OS_SIFT: "Stitcher(detector='sift') cameras captured at estimate_scale; its own final-resolution "
                    "warps and masks, placed by its cropper's rectangles",
    METHOD_OPENCV: "cv2.Stitcher cameras() rescaled by 1/workScale(), warped with PyRotationWarper('spherical', "
                   "median focal) as composePanorama does; placed at the corners' minimum (no crop)",
}



# --- inputs ---------------------------------------------------------------------------------------------


def is_feature_mask(path: Path) -> bool:
    """A feature-mask file that sits beside the photos (name starts with 'mask'), not an input."""
    return path.name.lower().startswith("mask")


def is_distractor(name: str) -> bool:
    """A deliberately unrelated image (stem ending in '_noise'): the bench expects it dropped."""
    return Path(name).stem.lower().endswith("_noise")


def set_inputs(folder: Path) -> list[Path]:
    """The photos of one set: image files by extension, sorted, without feature masks."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not is_feature_mask(p))


def discover_sets(directory: str | os.PathLike, only: Sequence[str] = ()) -> list[tuple[str, list[Path]]]:
    """(name, photos) of every set: DIRECTORY's subfolders with >= 2 photos, or DIRECTORY itself."""
    d = Path(directory)
    if not d.is_dir():
        raise StitchError(f"{d}: folder not found (expected a folder of panorama sets, such as "
                          "../shared/data/panoramas)")
    sets = [(sub.name, set_inputs(sub)) for sub in sorted(p for p in d.iterdir() if p.is_dir())]
    sets = [(n, ps) for n, ps in sets if len(ps) >= 2]
    if not sets and len(set_inputs(d)) >= 2:
        sets = [(d.name, set_inputs(d))]
    if only:
        unknown = sorted(set(only) - {n for n, _ in sets})
        if unknown:
            raise StitchError(f"unknown set(s) {', '.join(unknown)} in {d} (have: {', '.join(n for n, _ in sets)})")
        sets = [(n, ps) for n, ps in sets if n in only]
    if not sets:
        raise StitchError(f"{d}: no panorama sets found (subfolders with at least 2 images)")
    return sets


# --- registered images and metrics -----------------------------------------------------------------------


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean over channels of the SSIM map of two (h, w[, C]) uint8 images (Gaussian 11x11, sigma 1.5): (h, w)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x, y = a.astype(np.float32), b.astype(np.float32)

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return m.mean(axis=2) if m.ndim == 3 else m


@dataclass
class PairMetric:
    """Overlap metrics of one pair of registered images (see the module docstring)."""

    a: str
    b: str
    overlap_px: int
    psnr: float
    ssim: float
    psnr_udis: float
    ssim_udis: float
    agreement: float = float("nan")


def _psnr(mse: float) -> float:
    return 99.0 if mse <= 1e-10 else float(10.0 * math.log10(255.0 ** 2 / mse))


def pair_metrics(regs: Sequence[Registered]) -> list[PairMetric]:
    """PairMetric for every pair with a large enough overlap."""
    out = []
    eroded = [erode(r.mask, 2) for r in regs]
    areas = [int(r.mask.sum()) for r in regs]
    for i, j, r in overlapping_pairs(regs):
        a, b = regs[i].box, regs[j].box
        sa, sb = box_slices(r, regs[i].corner), box_slices(r, regs[j].corner)
        O = eroded[i][sa] & eroded[j][sb]
        n = int(O.sum())
        if n < max(MIN_PAIR_PIXELS, MIN_PAIR_OVERLAP * min(areas[i], areas[j])):
            continue
        ys, xs = np.nonzero(O)
        # the overlap's bounding box, padded by the SSIM window radius (clipped to the intersection)
        by0, by1 = max(0, ys.min() - 6), min(O.shape[0], ys.max() + 7)
        bx0, bx1 = max(0, xs.min() - 6), min(O.shape[1], xs.max() + 7)
        Ob = O[by0:by1, bx0:bx1]
        A = regs[i].image[sa][by0:by1, bx0:bx1] * Ob[:, :, None]
        B = regs[j].image[sb][by0:by1, bx0:bx1] * Ob[:, :, None]
        diff = A[Ob].astype(np.float64) - B[Ob].astype(np.float64)
        mse = float(np.mean(diff * diff))
        smap = ssim_map(A, B)
        inner = erode(Ob, 5)
        ssim_o = float(smap[inner].mean()) if inner.any() else float(smap[Ob].mean())
        frame = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
        ssim_u = float((smap.sum() + (frame - smap.size)) / frame)
        ga, gb = (cv2.GaussianBlur(to_gray(X).astype(np.float32), (0, 0), 1.0) for X in (A, B))
        agree = 0.5 * sum(agreement(ga, gb, Ob.astype(np.uint8)))
        out.append(PairMetric(regs[i].name, regs[j].name, n, _psnr(mse), ssim_o, _psnr(mse * n / frame), ssim_u,
                              agree))
    return out


def output_placement(pairs: Sequence[PairMetric]) -> float | None:
    """The lowest placement score of any image on a method's output: per image, the overlap-weighted mean of its
    pairs' photometric agreement ((NCC + GC) / 2, stitch.homography.quality.agreement) with the images it
    overlaps there. A photo placed where it does not belong disagrees with what it covers (near 0)."""
    total: dict[str, float] = {}
    weight: dict[str, float] = {}
    for p in pairs:
        for name in (p.a, p.b):
            total[name] = total.get(name, 0.0) + p.overlap_px * p.agreement
            weight[name] = weight.get(name, 0.0) + p.overlap_px
    return min((total[k] / weight[k] for k in total), default=None)


def _log_gradients(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward differences (x, y) of log(gray + LOG_OFFSET), float32, 0 on the last column / row."""
    lg = np.log(to_gray(img).astype(np.float32) + np.float32(LOG_OFFSET))
    gx, gy = np.zeros_like(lg), np.zeros_like(lg)
    gx[:, :-1], gy[:-1] = np.diff(lg, axis=1), np.diff(lg, axis=0)
    return gx, gy


def _in_frame(r: Registered, width: int, height: int) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """(slices into r's arrays, slices into the frame) of the part of r inside a width x height frame."""
    c = box_intersection(r.box, (0, 0, width, height))
    return None if c is None else (box_slices(c, r.corner), box_slices(c, (0, 0)))


def seam_visibility(pano: np.ndarray, pano_mask: np.ndarray, regs: Sequence[Registered]) -> tuple[float, int]:
    """(100 * RMS gradient residual over the overlaps, number of overlap pixels); see the module docstring.

    regs are placed in the panorama's frame (corner = panorama pixel of their top-left); parts outside it
    are ignored. Returns (nan, 0) when no pixel is covered twice.
    """
    H, W = pano_mask.shape
    best = np.full((H, W), np.inf, np.float32)
    count = np.zeros((H, W), np.uint8)
    pmask = erode(pano_mask, 1)
    gx_pano, gy_pano = _log_gradients(pano)  # at a slice's last column / row: masked out below by ``ok``
    for r in regs:
        inside = _in_frame(r, W, H)
        if inside is None:
            continue
        sl_r, sl_p = inside
        m = erode(r.mask, 2)[sl_r]
        if min(m.shape) < 2:
            continue
        gxi, gyi = _log_gradients(r.image[sl_r])
        gxp, gyp = gx_pano[sl_p], gy_pano[sl_p]
        ok = m.copy()
        ok[:, :-1] &= m[:, 1:]
        ok[:-1] &= m[1:]
        ok[:, -1] = False
        ok[-1] = False
        res = np.sqrt((gxp - gxi) ** 2 + (gyp - gyi) ** 2)
        view = best[sl_p]
        np.minimum(view, np.where(ok, res, np.inf), out=view)
        count[sl_p] += ok
    sel = (count >= 2) & pmask
    n = int(sel.sum())
    if n == 0:
        return float("nan"), 0
    return float(100.0 * math.sqrt(float(np.mean(best[sel].astype(np.float64) ** 2)))), n


def frame_check(pano: np.ndarray, pano_mask: np.ndarray, regs: Sequence[Registered]) -> float:
    """Median |panorama - g * registered image| (gray levels) where exactly one registered image covers a pixel.

    g is the image's median panorama / image ratio there, so a method's exposure gain does not count: a few
    gray levels mean the registered images sit where the panorama shows them.
    """
    H, W = pano_mask.shape
    count = np.zeros((H, W), np.uint8)
    placed = [(r, inside, erode(r.mask, 3)[inside[0]]) for r in regs if (inside := _in_frame(r, W, H))]
    for _, (_, sl_p), m in placed:
        count[sl_p] += m
    gray = to_gray(pano)
    diffs = []
    for r, (sl_r, sl_p), m in placed:
        m = m & (count[sl_p] == 1) & pano_mask[sl_p]
        if m.any():
            a = to_gray(r.image[sl_r])[m].astype(np.float32)
            b = gray[sl_p][m].astype(np.float32)
            lit = a > 20
            g = float(np.median(b[lit] / a[lit])) if lit.any() else 1.0
            diffs.append(np.abs(b - g * a)[:: max(1, len(a) // 200_000)])
    return float(np.median(np.concatenate(diffs))) if diffs else float("nan")


# --- the methods (run inside the child) ------------------------------------------------------------------


def _peak_mb() -> float:
    """VmHWM (peak resident set) of this process in MB, from /proc; ru_maxrss where /proc is missing."""
    peak = _vmhwm("self")
    if peak is not None:
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _run_stitch(paths: list[Path], options: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, list[str],
                                                                        Callable[[], list[Registered]], dict[str, Any]]:
    from stitch.panorama.pipeline import stitch_images
    from stitch.panorama.warp import warp_image

    pano = stitch_images(paths, seed=0, **options)
    by_name = {p.name: p for p in paths}

    def registered() -> list[Registered]:
        from stitch.io import read_image

        out = []
        cx, cy = pano.crop[0], pano.crop[1]
        wrap = float(pano.canvas.size[0]) if pano.full_turn else 0.0
        for k in range(len(pano.canvas.boxes)):  # a full turn warps the image crossing the wrap in two pieces
            src = pano.canvas.source(k)
            H = np.diag([pano.scale, pano.scale, 1.0]) @ pano.homographies[src]  # onto the (scaled) canvas
            wi = warp_image(read_image(by_name[pano.names[src]]), H, pano.canvas, k)
            if wi is None:
                continue
            image, mask, corner = wi.image, wi.mask, (wi.offset[0] - cx, wi.offset[1] - cy)
            if pano.mesh is not None:  # the 'warp' crop: through its mesh, as the panorama's pixels went
                image, mask, corner = through_mesh(image, mask, corner, pano.mesh.moved((cx, cy)),
                                                   (pano.crop[2] - cx, pano.crop[3] - cy))
            if mask.any():
                out.append(Registered(pano.names[src], image, mask, corner, partial(pano.to_panorama, src), wrap))
        return out

    errors = pano.cameras.edge_errors if pano.cameras is not None else []
    info = {"focal": pano.focal, "full_turn": pano.full_turn, "model": pano.model, "projection": pano.projection,
            "filled": pano.filled,
            "placement_px": max(errors) if errors else None}
    return pano.image, pano.mask, list(pano.names), registered, info


def through_mesh(image: np.ndarray, mask: np.ndarray, corner: tuple[int, int], mesh: Mesh,
                 size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """A warped image (h, w, 3) with mask (h, w) bool at corner (x, y) of a (w, h) ``size`` frame, rendered through
    ``mesh`` (frame pixels -> its output): (image, mask, corner) on the output, cut
    to the mask's box (a pixel is valid where all four bilinear neighbours are)."""
    frame = np.zeros((size[1], size[0], 3), image.dtype)
    valid = np.zeros((size[1], size[0]), np.uint8)
    x0, y0 = max(0, corner[0]), max(0, corner[1])
    x1, y1 = min(size[0], corner[0] + image.shape[1]), min(size[1], corner[1] + image.shape[0])
    if x1 > x0 and y1 > y0:
        part = (slice(y0 - corner[1], y1 - corner[1]), slice(x0 - corner[0], x1 - corner[0]))
        frame[y0:y1, x0:x1] = image[part]
        valid[y0:y1, x0:x1] = mask[part].astype(np.uint8) * 255
    out, out_valid = mesh.render_all([frame, valid])
    ok = out_valid == 255
    if not ok.any():
        return out[:0, :0], ok[:0, :0], (0, 0)
    ys, xs = np.nonzero(ok.any(axis=1))[0], np.nonzero(ok.any(axis=0))[0]
    cut = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
    return np.ascontiguousarray(out[cut]), np.ascontiguousarray(ok[cut]), (int(xs[0]), int(ys[0]))


def warper_map(warper: Any, K: np.ndarray, R: np.ndarray, shift: tuple[float, float], scale: float = 1.0) -> PointMap:
    """Input pixels (N, 2) -> output pixels (N, 2): a cv2.detail rotation warper's warpPoint of (input px x scale),
    minus ``shift`` (the output's origin in the warper's coordinates)."""

    def to_output(pts: np.ndarray) -> np.ndarray:
        p = np.asarray(pts, np.float64).reshape(-1, 2) * scale
        out = np.array([warper.warpPoint((float(x), float(y)), K, R) for x, y in p], np.float64).reshape(-1, 2)
        return out - np.asarray(shift, np.float64)

    return to_output


def _openstitching_maps(st: Any, corners: Sequence[tuple[int, int]], place: Sequence[tuple[int, int]]) -> list[PointMap]:
    """Per kept image, OpenStitching's own final-resolution warp as a point map onto its cropped output."""
    from stitching.images import Images
    from stitching.warper import Warper

    aspect = st.images.get_ratio(Images.Resolution.MEDIUM, Images.Resolution.FINAL)
    warper = cv2.PyRotationWarper(st.warper.warper_type, st.warper.scale * aspect)
    finals = st.images.get_scaled_img_sizes(Images.Resolution.FINAL)
    out = []
    for cam, c, pl, fs, size in zip(st.bench_cameras, corners, place, finals, st.images.sizes):
        K = Warper.get_K(cam, aspect)
        out.append(warper_map(warper, K, np.asarray(cam.R, np.float32), (c[0] - pl[0], c[1] - pl[1]),
                              fs[0] / float(size[0])))
    return out


def _run_openstitching(paths: list[Path], detector: str | None):
    from stitching import Stitcher
    from stitching.images import Images

    class Capture(Stitcher):
        def estimate_scale(self, cameras):  # OpenStitching's signature
            self.bench_cameras = cameras
            return super().estimate_scale(cameras)

    st = Capture() if detector is None else Capture(detector=detector)
    image = st.stitch([str(p) for p in paths])
    names = [Path(n).name for n in st.images.names]
    mask = image.max(axis=2) > 0

    def registered() -> list[Registered]:
        imgs = st.resize_final_resolution()
        wimgs, wmasks, corners, sizes = st.warp_final_resolution(imgs, st.bench_cameras)
        corners = list(corners)
        wimgs, wmasks = list(wimgs), list(wmasks)
        if st.cropper.do_crop:
            aspect = st.images.get_ratio(Images.Resolution.LOW, Images.Resolution.FINAL)
            cc, _ = st.cropper.crop_rois(corners, sizes, aspect)
            ir = [r.times(aspect) for r in st.cropper.intersection_rectangles]
            place = [(int(c[0]) - int(r.x), int(c[1]) - int(r.y)) for c, r in zip(cc, ir)]
        else:
            mx, my = min(c[0] for c in corners), min(c[1] for c in corners)
            place = [(int(c[0]) - mx, int(c[1]) - my) for c in corners]
        maps = _openstitching_maps(st, corners, place)
        return [Registered(n, np.asarray(cv2.UMat.get(i) if isinstance(i, cv2.UMat) else i),
                           np.asarray(cv2.UMat.get(m) if isinstance(m, cv2.UMat) else m) > 0, pl, f)
                for n, i, m, pl, f in zip(names, wimgs, wmasks, place, maps)]

    return image, mask, names, registered, {}


def _run_opencv(paths: list[Path]):
    imgs = [cv2.imread(str(p)) for p in paths]
    st = cv2.Stitcher_create(cv2.Stitcher_PANORAMA)
    status, image = st.stitch(imgs)
    if status != cv2.Stitcher_OK or image is None:
        raise RuntimeError(f"cv2.Stitcher status {status}")
    comp = [int(i) for i in np.asarray(st.component()).ravel()]
    names = [paths[i].name for i in comp]
    mask = image.max(axis=2) > 0

    def registered() -> list[Registered]:
        cams = st.cameras()
        ws = float(st.workScale())
        med = float(np.median([c.focal for c in cams]))
        warper = cv2.PyRotationWarper("spherical", med / ws)
        out, corners, Ks = [], [], []
        for idx, cam in zip(comp, cams):
            K = np.asarray(cam.K(), np.float32).copy()
            K[0, 0] /= ws
            K[1, 1] /= ws
            K[0, 2] /= ws
            K[1, 2] /= ws
            R = np.asarray(cam.R, np.float32)
            img = imgs[idx]
            corner, warped = warper.warp(img, K, R, cv2.INTER_LINEAR, cv2.BORDER_REFLECT)
            _, wmask = warper.warp(np.full(img.shape[:2], 255, np.uint8), K, R, cv2.INTER_NEAREST,
                                   cv2.BORDER_CONSTANT)
            out.append((paths[idx].name, warped, wmask > 0))
            corners.append(corner)
            Ks.append((K, R))
        mx, my = min(c[0] for c in corners), min(c[1] for c in corners)
        return [Registered(nm, w, m, (int(c[0]) - mx, int(c[1]) - my), warper_map(warper, K, R, (mx, my)))
                for (nm, w, m), c, (K, R) in zip(out, corners, Ks)]

    ws = float(st.workScale())
    focal = float(np.median([c.focal for c in st.cameras()])) / ws if ws > 0 else None
    return image, mask, names, registered, {"focal": focal}


def _preload(method: str) -> None:
    """Import the method's modules before the clock starts (imports are not part of a stitch's time)."""
    import importlib

    names = {METHOD_STITCH: ("stitch.panorama.pipeline", "scipy.optimize", "scipy.sparse.csgraph"),
             METHOD_OS: ("stitching",), METHOD_OS_SIFT: ("stitching",)}.get(method, ())
    for name in names:
        importlib.import_module(name)


def rect_crop_size(regs: Sequence[Registered]) -> list[int] | None:
    """[w, h] of the largest rectangle inside the union of the warped inputs (OpenStitching's crop rule)."""
    from stitch.panorama.crop import crop_box

    if not regs:
        return None
    x0, y0, x1, y1 = union_box(r.box for r in regs)
    union = np.zeros((y1 - y0, x1 - x0), bool)
    for r in regs:
        union[box_slices(r.box, (x0, y0))] |= r.mask
    b = crop_box(union)
    return [int(b[2] - b[0]), int(b[3] - b[1])]


def _result(method: str, paths: Sequence[Path], **fields: Any) -> dict[str, Any]:
    """A run's result dict: not ok until a field says so."""
    return {"method": method, "given": [p.name for p in paths], "ok": False,
            "registration": REGISTRATION_NOTES[method], **fields}


def _one_line(exc: BaseException) -> str:
    return one_line(f"{type(exc).__name__}: {exc}")[:300]


def run_child(method: str, paths: list[Path], outdir: Path, metrics: bool = True,
              stitch_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run one method on one set in this process: time, peak memory, then (``metrics``) the quality figures.

    ``stitch_options``: stitch_images options for method stitch besides the seed (default: none, its defaults)."""
    result = _result(method, paths)
    _preload(method)
    t0 = time.perf_counter()
    try:
        if method == METHOD_STITCH:
            image, mask, kept, registered, info = _run_stitch(paths, stitch_options or {})
        elif method in (METHOD_OS, METHOD_OS_SIFT):
            image, mask, kept, registered, info = _run_openstitching(paths, None if method == METHOD_OS else "sift")
        elif method == METHOD_OPENCV:
            image, mask, kept, registered, info = _run_opencv(paths)
        else:
            raise ValueError(f"method={method!r}: choose one of {', '.join(PANORAMA_METHOD_CHOICES)}")
    except Exception as exc:  # noqa: BLE001 (any failure of the method is a result, not a crash of the bench)
        result.update(seconds=time.perf_counter() - t0, peak_mb=_peak_mb(), error=_one_line(exc))
        return result
    result.update(ok=True, seconds=time.perf_counter() - t0, peak_mb=_peak_mb(), kept=kept,
                  size=[int(image.shape[1]), int(image.shape[0])], **info)
    thumb, _ = resize_max_side(image, THUMB_SIDE)
    write_image_atomic(outdir / "panorama.jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not metrics:
        return result
    try:
        regs = registered()
        pairs = pair_metrics(regs)
        result["pairs"] = [asdict(p) for p in pairs]
        for key in ("psnr", "ssim", "psnr_udis", "ssim_udis"):
            result[key] = float(np.mean([getattr(p, key) for p in pairs])) if pairs else None
        vis, n = seam_visibility(image, mask, regs)
        result["seam_visibility"] = None if math.isnan(vis) else vis
        result["seam_pixels"] = n
        result["placement_min"] = output_placement(pairs)
        fc = frame_check(image, mask, regs)
        result["frame_check"] = None if math.isnan(fc) else fc
        if method == METHOD_STITCH:  # the peers crop to the largest valid rectangle: the same rule on ours
            result["size_rect"] = rect_crop_size(regs)
    except Exception as exc:  # noqa: BLE001 (the panorama stands; its figures are missing, with the reason)
        result["metrics_error"] = _one_line(exc)
        result["metrics_traceback"] = traceback.format_exc()[-2000:]
        return result
    result.update(_visual(image, mask, regs, paths, kept, outdir))
    return result


def _visual(image: np.ndarray, mask: np.ndarray, regs: list[Registered], paths: Sequence[Path], kept: Sequence[str],
            outdir: Path) -> dict[str, Any]:
    """What a user sees (stitch.bench.visual), timed, and the worst places' 100 % crops written to outdir."""
    from stitch.io import read_image

    t0 = time.perf_counter()
    try:
        by_name = {p.name: p for p in paths}
        inputs = {n: read_image(by_name[n]) for n in set(kept) if n in by_name}
        fig = visual_figures(image, mask, regs, inputs)
        out = {"visual": fig.to_dict(), "worst_places": write_place_crops(image, fig.places, outdir)}
    except Exception as exc:  # noqa: BLE001 (the panorama and its other figures stand)
        return {"visual_error": _one_line(exc), "visual_traceback": traceback.format_exc()[-2000:]}
    out["visual_seconds"] = time.perf_counter() - t0
    return out


def _child_main(argv: list[str]) -> int:
    options: dict[str, Any] = {}
    if argv[:1] == [OPTIONS_FLAG]:
        options, argv = json.loads(argv[1]), argv[2:]
    metrics = argv[:1] != [NO_METRICS_FLAG]
    method, outdir, *paths = argv if metrics else argv[1:]
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    result = run_child(method, [Path(p) for p in paths], out, metrics, stitch_options=options)
    write_text_atomic(out / "result.json", json.dumps(result, allow_nan=False, default=float) + "\n")
    return 0


# --- the parent: subprocess per run ---------------------------------------------------------------------


def peer_available(method: str) -> str | None:
    """None when the method can run here, else why not."""
    if method in (METHOD_OS, METHOD_OS_SIFT):
        import importlib.util

        if importlib.util.find_spec("stitching") is None:
            return "OpenStitching is not installed (pip install -e '.[bench]', or make bench-panorama)"
    return None


def _vmhwm(pid: int | str) -> float | None:
    """VmHWM (peak resident set) in MB of process ``pid`` ("self": this one), from /proc; None if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class GroupRun:
    """A command run in its own process group: exit code (None when killed), wall seconds from spawn to exit,
    the peak resident set (MB, sampled every 0.25 s; None when never read) and whether the timeout killed it."""

    returncode: int | None
    seconds: float
    peak_mb: float | None
    timed_out: bool


def run_group(cmd: Sequence[str], log_path: Path, timeout: float, env: Mapping[str, str] | None = None) -> GroupRun:
    """Run ``cmd`` in a new session (its own process group), output to ``log_path``; the whole group is killed
    at ``timeout`` s, so no stray process skews a later figure."""
    env = dict(os.environ, PYTHONWARNINGS="ignore") if env is None else dict(env)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        t0 = time.monotonic()
        peak = 0.0
        while True:
            try:
                proc.wait(timeout=0.25)
                return GroupRun(proc.returncode, time.monotonic() - t0, peak or None, False)
            except subprocess.TimeoutExpired:
                peak = max(peak, _vmhwm(proc.pid) or 0.0)
                if time.monotonic() - t0 > timeout:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return GroupRun(None, time.monotonic() - t0, peak or None, True)


def run_isolated(method: str, paths: Sequence[Path], outdir: Path, timeout: float,
                 metrics: bool = True, stitch_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run one method on one set in a fresh subprocess with a timeout; the child's result dict.

    ``stitch_options``: stitch_images options for method stitch (JSON values)."""
    outdir.mkdir(parents=True, exist_ok=True)
    opts = [OPTIONS_FLAG, json.dumps(dict(stitch_options))] if stitch_options and method == METHOD_STITCH else []
    cmd = ([sys.executable, "-m", "stitch.bench.panorama"] + opts + ([] if metrics else [NO_METRICS_FLAG])
           + [method, str(outdir)] + [str(p) for p in paths])
    run = run_group(cmd, outdir / "log.txt", timeout)
    if run.timed_out:
        return _result(method, paths, timed_out=True, seconds=run.seconds, peak_mb=run.peak_mb,
                       error=f"timed out after {timeout:g} s (killed)")
    res_file = outdir / "result.json"
    if not res_file.exists():
        tail = (outdir / "log.txt").read_text(errors="replace")[-300:]
        return _result(method, paths, seconds=run.seconds, peak_mb=run.peak_mb,
                       error=f"child exited {run.returncode}: {one_line(tail)}")
    return json.loads(res_file.read_text())


@dataclass
class PanoramaRow:
    """One (set, method) run; see the module docstring for every figure."""

    set: str
    method: str
    ok: bool
    given: int
    kept: int
    distractors_dropped: bool
    seconds: float | None
    peak_mb: float | None
    psnr: float | None = None
    ssim: float | None = None
    psnr_udis: float | None = None
    ssim_udis: float | None = None
    seam_visibility: float | None = None
    pairs: int = 0
    size: list[int] | None = None
    frame_check: float | None = None
    placement_px: float | None = None
    placement_min: float | None = None
    focal: float | None = None
    size_rect: list[int] | None = None
    #: what a user sees (stitch.bench.visual; all None when not measured), and its worst places' crops
    visual: VisualFigures = field(default_factory=VisualFigures)
    worst_places: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    timed_out: bool = False
    thumbnail: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def _row(set_name: str, raw: dict[str, Any], outdir: Path) -> PanoramaRow:
    given = raw.get("given", [])
    kept = raw.get("kept", [])
    want = [n for n in given if not is_distractor(n)]
    thumb = outdir / "panorama.jpg"
    return PanoramaRow(
        set=set_name, method=raw["method"], ok=bool(raw.get("ok")), given=len(given), kept=len(kept),
        distractors_dropped=bool(raw.get("ok")) and sorted(kept) == sorted(want),
        seconds=raw.get("seconds"), peak_mb=raw.get("peak_mb"), psnr=raw.get("psnr"), ssim=raw.get("ssim"),
        psnr_udis=raw.get("psnr_udis"), ssim_udis=raw.get("ssim_udis"), seam_visibility=raw.get("seam_visibility"),
        pairs=len(raw.get("pairs", [])), size=raw.get("size"), frame_check=raw.get("frame_check"),
        placement_px=raw.get("placement_px"), placement_min=raw.get("placement_min"),
        focal=raw.get("focal"), size_rect=raw.get("size_rect"),
        error=raw.get("error") or raw.get("metrics_error") or raw.get("visual_error"),
        timed_out=bool(raw.get("timed_out")),
        thumbnail=str(thumb) if raw.get("ok") and thumb.exists() else None,
        detail={k: raw[k] for k in ("pairs", "registration", "kept", "given", "visual_seconds") if k in raw},
        visual=VisualFigures(**raw.get("visual", {})), worst_places=raw.get("worst_places", []))


@dataclass
class PanoramaBenchResult:
    """Rows per (set, method), the methods run, the contact sheet path and totals (goals: stitch.cli.bench_goals)."""

    rows: list[PanoramaRow]
    methods: list[str]
    sets: list[str]
    timeout: float
    contact_sheet: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    #: set -> order -> {ok, size, focal, seconds, kept, error} of stitch on that input order (``orders``)
    order_runs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    worst_places: str | None = None
    stitch_options: dict[str, Any] = field(default_factory=dict)  # stitch_images options of method stitch

    def order_spread(self, set_name: str) -> dict[str, float | None]:
        """Largest relative difference across the orders of one set: width, height, focal (None if not measurable)."""
        runs = [r for r in self.order_runs.get(set_name, {}).values() if r.get("ok")]
        out: dict[str, float | None] = {}
        for key, get in (("width", lambda r: r["size"][0]), ("height", lambda r: r["size"][1]),
                         ("focal", lambda r: r.get("focal"))):
            vals = [get(r) for r in runs if get(r) is not None]
            out[key] = (max(vals) - min(vals)) / min(vals) if len(vals) > 1 and min(vals) > 0 else None
        return out

    def row(self, set_name: str, method: str) -> PanoramaRow | None:
        return next((r for r in self.rows if r.set == set_name and r.method == method), None)

    def totals(self) -> dict[str, dict[str, Any]]:
        """Per method: sets ok, images kept/given, and per peer the sums/means over the sets both succeed on."""
        out: dict[str, dict[str, Any]] = {}
        for m in self.methods:
            rows = [r for r in self.rows if r.method == m]
            t: dict[str, Any] = {
                "sets_ok": sum(r.ok for r in rows), "sets": len(rows),
                "kept": sum(r.kept for r in rows), "given": sum(r.given for r in rows),
                "seconds_all_ok": sum(r.seconds for r in rows if r.ok and r.seconds is not None),
            }
            for key in ("psnr", "ssim", "psnr_udis", "ssim_udis", "seam_visibility"):
                vals = [getattr(r, key) for r in rows if r.ok and getattr(r, key) is not None]
                t[f"mean_{key}"] = float(np.mean(vals)) if vals else None
            for key in VISUAL_FIGURES:
                vals = [getattr(r.visual, key) for r in rows if r.ok and getattr(r.visual, key) is not None]
                t[f"mean_{key}"] = float(np.mean(vals)) if vals else None
            out[m] = t
        if METHOD_STITCH in self.methods:
            for m in self.methods:
                if m == METHOD_STITCH:
                    continue
                common = [s for s in self.sets if (a := self.row(s, METHOD_STITCH)) and (b := self.row(s, m))
                          and a.ok and b.ok]
                both: dict[str, Any] = {"sets": common,
                                        "seconds_stitch": sum(self.row(s, METHOD_STITCH).seconds for s in common),
                                        "seconds_peer": sum(self.row(s, m).seconds for s in common)}
                for key in ("psnr", "ssim", "psnr_udis", "ssim_udis", "seam_visibility"):
                    pa = [getattr(self.row(s, METHOD_STITCH), key) for s in common]
                    pb = [getattr(self.row(s, m), key) for s in common]
                    ok = [(x, y) for x, y in zip(pa, pb) if x is not None and y is not None]
                    both[f"{key}_stitch"] = float(np.mean([x for x, _ in ok])) if ok else None
                    both[f"{key}_peer"] = float(np.mean([y for _, y in ok])) if ok else None
                out[m]["vs_stitch"] = both
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": "stitch.bench.panorama (see its module docstring)",
            "timeout_s": self.timeout,
            "stitch_options": self.stitch_options,
            "methods": self.methods,
            "sets": self.sets,
            "skipped_methods": self.skipped,
            "registration": {m: REGISTRATION_NOTES[m] for m in self.methods},
            "rows": [asdict(r) for r in self.rows],
            "totals": self.totals(),
            "order_runs": self.order_runs,
            "order_spread": {s: self.order_spread(s) for s in self.order_runs},
            "contact_sheet": self.contact_sheet,
            "worst_places": self.worst_places,
            "visual": "stitch.bench.visual (see its module docstring)",
        }


def contact_sheet(result: PanoramaBenchResult, path: Path, cell: tuple[int, int] = SHEET_CELL) -> Path:
    """A PNG grid: one row per set, one column per method, each panorama downscaled to fit its cell."""
    cw, ch = cell
    head, label = 40, 24
    sheet = np.full((head + len(result.sets) * (ch + label), 150 + len(result.methods) * cw, 3), 255, np.uint8)
    for c, m in enumerate(result.methods):
        cv2.putText(sheet, m, (150 + c * cw + 8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2, cv2.LINE_AA)
    for r, s in enumerate(result.sets):
        y = head + r * (ch + label)
        cv2.putText(sheet, s, (6, y + ch // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        for c, m in enumerate(result.methods):
            x = 150 + c * cw
            row = result.row(s, m)
            text = "not run"
            if row is not None and row.ok and row.thumbnail:
                img = cv2.imread(row.thumbnail)
                if img is not None:
                    f = min((cw - 8) / img.shape[1], (ch - 4) / img.shape[0])
                    small = cv2.resize(img, (max(1, int(img.shape[1] * f)), max(1, int(img.shape[0] * f))),
                                       interpolation=cv2.INTER_AREA)
                    sheet[y + 2:y + 2 + small.shape[0], x + 4:x + 4 + small.shape[1]] = small
                vis = "—" if row.seam_visibility is None else f"{row.seam_visibility:.2f}"
                ssim = "—" if row.ssim is None else f"{row.ssim:.3f}"
                text = f"{row.kept}/{row.given} imgs {row.seconds:.1f}s ssim {ssim} seam {vis}"
            elif row is not None:
                text = "FAILED: " + (row.error or "")[:48]
            cv2.putText(sheet, text.replace("—", "-"), (x + 4, y + ch + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (0, 0, 160) if row is not None and not row.ok else (60, 60, 60), 1, cv2.LINE_AA)
    return write_image_atomic(path, sheet)


def ordered(paths: Sequence[Path], order: str) -> list[Path]:
    """The inputs in ``order`` (ORDER_CHOICES): sorted by name, reversed, or a seeded shuffle (ORDER_SEED)."""
    base = sorted(paths, key=lambda p: p.name)
    if order == "reversed":
        return base[::-1]
    if order == "shuffled":
        return [base[i] for i in np.random.default_rng(ORDER_SEED).permutation(len(base))]
    return base


def _order_entry(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: raw.get(k) for k in ("ok", "size", "focal", "seconds", "full_turn", "error")} | {
        "kept": len(raw.get("kept", []))}


def bench_setup(directory: str | os.PathLike, sets: Sequence[str], methods: Sequence[str], timeout: float,
                out_dir: str | os.PathLike | None, prefix: str
                ) -> tuple[list[tuple[str, list[Path]]], Path, dict[str, str], list[str]]:
    """What a panorama bench starts from: (the sets found, the output folder (a new temporary one named
    ``prefix``... when None), the methods skipped -> why, the methods to run); StitchError for a bad timeout."""
    if not timeout > 0:
        raise StitchError(f"timeout={timeout}: must be > 0 seconds")
    found = discover_sets(directory, sets)
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix=prefix))
    skipped = {m: why for m in methods if (why := peer_available(m))}
    return found, out, skipped, [m for m in methods if m not in skipped]


def run_panorama_bench(directory: str | os.PathLike, methods: Sequence[str] = PANORAMA_METHOD_CHOICES,
                       sets: Sequence[str] = (), timeout: float = DEFAULT_TIMEOUT_S,
                       out_dir: str | os.PathLike | None = None,
                       progress: ProgressFn | None = None, orders: Sequence[str] = (),
                       stitch_options: Mapping[str, Any] | None = None) -> PanoramaBenchResult:
    """Every method on every set of DIRECTORY, one subprocess per run (see the module docstring).

    orders: input orders (ORDER_CHOICES) for the order-invariance check: stitch runs again on each order
    other than 'sorted' (timed, no quality figures); the canvas size and focal of every order are reported.
    stitch_options: user options for method stitch (``stitch.panorama.options``: the names of ``stitch run``'s
    flags), checked before any run (ConfigError names a bad one).
    """
    from stitch.panorama.config import PanoramaConfig
    from stitch.panorama.options import stitch_options as to_stitch_options

    opts = to_stitch_options(stitch_options or {})
    if "seed" in opts:
        raise ConfigError("stitch option seed: the bench runs every method with seed 0")
    PanoramaConfig.from_options(**opts)  # a bad value: one error now, not a failed run per set
    unknown = [m for m in methods if m not in PANORAMA_METHOD_CHOICES]
    if unknown:
        raise StitchError(f"method(s) {', '.join(unknown)}: choose from {', '.join(PANORAMA_METHOD_CHOICES)}")
    bad = [o for o in orders if o not in ORDER_CHOICES]
    if bad:
        raise StitchError(f"order(s) {', '.join(bad)}: choose from {', '.join(ORDER_CHOICES)}")
    found, out, skipped, run = bench_setup(directory, sets, methods, timeout, out_dir, "stitch-bench-panorama-")
    rows = []
    extra = [o for o in orders if o != "sorted"]
    total = len(found) * (len(run) + len(extra))
    k = 0
    order_runs: dict[str, dict[str, dict[str, Any]]] = {}
    for name, paths in found:
        for m in run:
            if progress is not None:
                progress(k, total, f"{name}: {m}")
            d = out / name / m
            raw = run_isolated(m, paths, d, timeout, stitch_options=opts)
            rows.append(_row(name, raw, d))
            if m == METHOD_STITCH and orders:
                order_runs.setdefault(name, {})["sorted"] = _order_entry(raw)
            k += 1
        for o in extra:
            if progress is not None:
                progress(k, total, f"{name}: stitch, {o} input")
            raw = run_isolated(METHOD_STITCH, ordered(paths, o), out / name / f"{METHOD_STITCH}-{o}", timeout,
                               metrics=False, stitch_options=opts)
            order_runs.setdefault(name, {})[o] = _order_entry(raw)
            k += 1
    if progress is not None:
        progress(total, total, "done")
    result = PanoramaBenchResult(rows, run, [n for n, _ in found], timeout, skipped=skipped, order_runs=order_runs,
                                 stitch_options=opts)
    result.contact_sheet = str(contact_sheet(result, out / "contact_sheet.png"))
    cells = {(r.set, r.method): r.worst_places if r.ok else "failed: " + (r.error or "") for r in rows}
    result.worst_places = str(worst_places_sheet(result.sets, run, cells, out / "worst_places.png"))
    return result


@dataclass
class GrowthRow:
    """stitch on the first n images of a set (sorted by name): seconds, peak MB, images kept."""

    n: int
    ok: bool
    seconds: float | None
    peak_mb: float | None
    kept: int
    size: list[int] | None = None
    error: str | None = None


def run_growth(set_dir: str | os.PathLike, counts: Sequence[int] = GROWTH_COUNTS, timeout: float = DEFAULT_TIMEOUT_S,
               out_dir: str | os.PathLike | None = None, progress: ProgressFn | None = None) -> list[GrowthRow]:
    """Time as N grows: stitch (own subprocess, no quality figures) on the first n photos of one set, per n."""
    d = Path(set_dir)
    if not d.is_dir():
        raise StitchError(f"{d}: folder not found (expected one panorama set, such as ../shared/data/panoramas_wide/cave_atrium)")
    paths = set_inputs(d)
    ns = sorted({n for c in counts if (n := min(int(c), len(paths))) >= 2})
    if not ns:
        raise StitchError(f"{d}: need counts >= 2 and a set of at least 2 photos")
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="stitch-bench-growth-"))
    rows = []
    for k, n in enumerate(ns):
        if progress is not None:
            progress(k, len(ns), f"{d.name}: first {n} images")
        raw = run_isolated(METHOD_STITCH, paths[:n], out / d.name / f"n{n:03d}", timeout, metrics=False)
        rows.append(GrowthRow(n, bool(raw.get("ok")), raw.get("seconds"), raw.get("peak_mb"),
                              len(raw.get("kept", [])), raw.get("size"), raw.get("error")))
    if progress is not None:
        progress(len(ns), len(ns), "done")
    return rows


if __name__ == "__main__":  # the per-run child: python -m stitch.bench_panorama METHOD OUTDIR IMAGE...
    sys.exit(_child_main(sys.argv[1:]))
