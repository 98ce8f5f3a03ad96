"""What a user sees on a panorama, measured the same way for every method (stitch.bench.panorama's child).

Inputs, from each method: its panorama P (H, W, 3) uint8 BGR and valid mask (H, W) bool, its *registered
images* (each input warped into P's frame: ``Registered``; stitch.bench.panorama says how each method's are
obtained) and, per input, the method's own mapping ``to_output`` from input pixels to P's pixels. Parts of a
registered image outside P's frame are ignored. Distances are px at the output resolution (every method
composites at the inputs' full resolution); Convention: pixel centres at integer coordinates, (x, y) order.

* Pairs and scale. For every pair of registered images whose overlap O (both masks eroded by OVERLAP_ERODE
  px, inside P's frame and mask) holds at least MIN_PAIR_PIXELS px, the work happens on R, O's bounding box
  padded by PAD px, downscaled by s = min(1, sqrt(FLOW_MAX_PIXELS / area(R))) (a pair's flow costs at most
  ~1 MP). Distances measured at scale s are divided by s; an area sample at scale s stands for 1/s^2 output
  pixels and a seam sample for 1/s output pixels of seam (the weights of the pooled percentiles below).
* Overlap misalignment (``flow_p50``, ``flow_p95``): dense optical flow (OpenCV DIS, preset MEDIUM) from a to
  b, on gray images (b gain-matched to a over O; outside its own mask each image takes the other's pixels, so
  the masks' borders make no edges), magnitude / s, on the *textured* pixels of O eroded by FLOW_BORDER px
  (at scale s): where the local gradient energy (Gaussian sigma 2 of the Sobel magnitude, levels per px, of
  the sigma-1-blurred gray) is at least TEXTURE_GRADIENT in both images. Pooled over the set's pairs: the
  weighted p50 / p95 of the textured overlap *area* (pooling rather than the worst pair, so a small, dim
  overlap cannot decide a set alone; the worst places and each pair's figures are kept for that).
* Seams, derived from the output alone, the same for every method: each pixel of R takes the label of the
  registered image that best explains P there. Image k's cost is the Gaussian-blurred (sigma LABEL_SIGMA px
  at scale s) residual |grad L(P) - grad L(I_k)|, L = log(gray + 8) (the seam-visibility residual:
  gain-invariant, so exposure compensation is no difference). A pixel is decided when its best cost is under
  LABEL_RATIO x the second and LABEL_MARGIN below it; the others take the label of the nearest decided pixel
  (where the images agree the seam then falls halfway across the undecided area, where it costs nothing). A
  pair's seam: its pixels of O labelled a next to (4-neighbour) one labelled b, and vice versa.
* Seam-band ghosting (``ghost_p50``, ``ghost_p95``): the same flow samples within SEAM_BAND px of the pair's
  seam, pooled the same way.
* Mixed content (``mixed_pct``): the share, in percent, of a pair's overlap pixels (eroded by FLOW_BORDER, shown
  by P as a or b: its label) where the two registered images show different things (a moving person,
  parallax, water, leaves in the wind: their local normalised cross-correlation over MIX_WINDOW px, variance
  floored at MIX_FLOOR so flat patches agree, below MIX_DIFFER) and P correlates with neither (both NCCs below
  MIX_COPY): there the output blends two contents, a ghost or a half-transparent object, whatever the flow
  says (a hard cut through water that the flow calls misaligned is not a mix; a 50/50 blend of unrelated
  content correlates about 0.71 with each, a 65/35 one 0.88 with the stronger). A seam through such an area
  counts on a band about MIX_WINDOW wide. Pooled over the pairs with weights 1/s^2; per pair also
  ``differ_pct``, the share where the two differ (the denominator a method's alignment sets).
* Colour step across seams (``colour_step_p95``, ``colour_step_mean``), at every seam pixel x of a pair
  (a, b), in CIE Lab (OpenCV's float conversion, D65, L in 0..100), with means over the box of half-side
  COLOUR_WINDOW px around x:  step(x) = mean_O(I_a - I_b) + mean_{labelled a}(P - I_a) - mean_{labelled b}(P - I_b),
  photo a as P presents it on a's side minus photo b as P presents it on b's side, compared at the same
  place: the scene cancels (a seam along an edge costs nothing), the method's exposure compensation and
  blending enter through the two offsets, and a step blended over much more than COLOUR_WINDOW px counts in
  part. The figure is CIE76 Delta E*ab (the Euclidean norm of step: step is a difference of mean colours, a
  vector, which CIEDE2000, defined on two colours, does not take; about 2.3 is just noticeable), p95 and
  mean over the seam pixels.
* Invented / empty pixels (``invented_pct``, ``empty_pct``): pixels of P covered by no registered image
  (masks not eroded): invented where P shows something (a channel > 0: stitch's ``fill`` crop inpaints
  them), empty where P is black; percent of P's pixels.
* Line straightness (``bend_max``, ``bend_p95``, ``segments``): segments of each kept input (OpenCV LSD on a
  copy of longer side LSD_MAX_SIDE px; the SEGMENTS_PER_IMAGE longest of at least MIN_SEGMENT x the longer
  side, less the photo's own frame: segments within FRAME_MARGIN px of one of its edges), SEGMENT_SAMPLES points along each, mapped by ``to_output``; samples off P's frame or mask are dropped
  and the longest run of consecutive kept ones (at least half) is the segment. Its bend: the largest distance
  of the run's points from the chord through its ends, in px per 100 px of chord (output px); a 360-degree
  wrap is unwrapped. Homographies keep lines straight (0); cylindrical and spherical projections bend lines
  away from the horizon and the vertical through the centre.
* ``map_check``: per input, the median |gray I_k(p) - gray R_k(to_output(p) - corner_k)| over a grid of its
  points (both blurred, sigma 1; R_k sampled bilinearly), in gray levels; the largest over the inputs. Small when every mapping agrees with its registered
  image (so the straightness is of the same warp as the other figures).
* Worst places: the panorama pixel with the highest local seam-band ghosting (mean flow over the textured
  band pixels in a WORST_WINDOW px box, at least 5 % of it), the largest colour step, and a pixel PLACE_DEPTH
  px inside the largest invented (else empty) area (the frame's edge does not count as the area's edge);
  stitch.bench.visual_sheet crops them at 100 %.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from stitch.geometry import Box, box_intersection, box_slices, placed_box
from stitch.imaging import resize_max_side, to_gray
from stitch.panorama.disagree import TEXTURE_GRADIENT, dis_flow, local_ncc, texture_energy

MIN_PAIR_PIXELS = 1000
MIX_WINDOW = 7
MIX_FLOOR = 25.0
MIX_DIFFER = 0.3
MIX_COPY = 0.9
OVERLAP_ERODE = 2
FLOW_MAX_PIXELS = 1_000_000
FLOW_BORDER = 4
SEAM_BAND = 16
COLOUR_WINDOW = 16
PAD = SEAM_BAND + COLOUR_WINDOW
LABEL_SIGMA = 2.0
LABEL_RATIO = 0.5
LABEL_MARGIN = 0.02
LOG_OFFSET = 8.0
LSD_MAX_SIDE = 1200
MIN_SEGMENT = 0.05
FRAME_MARGIN = 3.0
SEGMENTS_PER_IMAGE = 40
SEGMENT_SAMPLES = 21
MAP_CHECK_GRID = 24
WORST_WINDOW = 48
PLACE_DEPTH = 40.0
#: Kinds of worst place, in the order of the sheet's crops.
PLACE_KINDS = ("ghost", "colour", "invented")
#: The set's scalar figures (VisualFigures' float fields; the bench averages them in its totals).
FIGURES = ("flow_p50", "flow_p95", "ghost_p50", "ghost_p95", "mixed_pct", "colour_step_p95", "colour_step_mean",
           "invented_pct", "empty_pct", "bend_max", "bend_p95", "map_check")

PointMap = Callable[[np.ndarray], np.ndarray]


@dataclass
class Registered:
    """One input warped into a method's frame: image (h, w, 3) uint8, mask (h, w) bool, corner (x, y) px.

    to_output: the method's mapping of the input's full-resolution pixels (N, 2) to output pixels (N, 2), NaN
    where unmapped (None: not known); wrap: the output's period in x on a 360-degree turn (0: none).
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    corner: tuple[int, int]
    to_output: PointMap | None = None
    wrap: float = 0.0

    @property
    def box(self) -> Box:
        return placed_box(self.corner, self.mask.shape)


@dataclass
class Place:
    """A worst place: kind (PLACE_KINDS, or 'empty'), output pixel (x, y), the figure there."""

    kind: str
    x: int
    y: int
    value: float


@dataclass
class PairVisual:
    """One pair's samples: flow px of textured overlap / seam-band pixels and their weights (1/s^2), colour
    steps (Delta E76) at its seam pixels and their weights (1/s), per overlap pixel whether the two show different
    content and whether the output mixes them there (bool, weights 1/s^2), and its worst places."""

    a: str
    b: str
    scale: float
    overlap: np.ndarray
    band: np.ndarray
    steps: np.ndarray
    places: list[Place] = field(default_factory=list)
    mixed: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    differ: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    def summary(self) -> dict[str, Any]:
        """Per-pair figures (JSON-ready): p50 / p95 of each kind of sample, None where there is none."""
        out: dict[str, Any] = {"a": self.a, "b": self.b, "scale": round(self.scale, 4)}
        for key, v in (("flow", self.overlap), ("ghost", self.band), ("colour_step", self.steps)):
            out[f"{key}_p50"], out[f"{key}_p95"] = (None, None) if v.size == 0 else (
                float(np.percentile(v, 50)), float(np.percentile(v, 95)))
        for key in ("mixed", "differ"):
            v = getattr(self, key)
            out[f"{key}_pct"] = None if v.size == 0 else 100.0 * float(v.mean())
        return out


@dataclass
class VisualFigures:
    """The set's figures (module docstring); None where not measurable."""

    flow_p50: float | None = None
    flow_p95: float | None = None
    ghost_p50: float | None = None
    ghost_p95: float | None = None
    mixed_pct: float | None = None
    colour_step_p95: float | None = None
    colour_step_mean: float | None = None
    invented_pct: float | None = None
    empty_pct: float | None = None
    bend_max: float | None = None
    bend_p95: float | None = None
    segments: int = 0
    map_check: float | None = None
    seam_px: int = 0
    pairs: list[dict[str, Any]] = field(default_factory=list)
    places: list[Place] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field but the places (the bench writes those with their crops)."""
        out = asdict(self)
        del out["places"]
        return out


# --- small helpers ----------------------------------------------------------------------------------------


def erode(mask: np.ndarray, px: int) -> np.ndarray:
    """(h, w) bool eroded by a (2 px + 1)^2 square; outside the array counts as False."""
    if px <= 0:
        return mask.astype(bool)
    k = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.erode(mask.astype(np.uint8), k, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: Sequence[float]) -> list[float | None]:
    """Quantiles qs (0..1) of values (N,) where sample i counts weights[i] times (inverted CDF); None if empty."""
    if values.size == 0:
        return [None] * len(qs)
    order = np.argsort(values, kind="stable")
    v, cw = values[order].astype(np.float64), np.cumsum(weights[order].astype(np.float64))
    return [float(v[min(len(v) - 1, int(np.searchsorted(cw, q * cw[-1], side="left")))]) for q in qs]


def local_mean(values: np.ndarray, mask: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean of values (h, w[, C]) over the mask's pixels in the (2 half + 1)^2 box, share of the box masked)."""
    k = (2 * half + 1, 2 * half + 1)
    m = mask.astype(np.float32)
    share = cv2.blur(m, k, borderType=cv2.BORDER_CONSTANT)
    mv = values * (m[:, :, None] if values.ndim == 3 else m)
    total = cv2.blur(mv.astype(np.float32), k, borderType=cv2.BORDER_CONSTANT)
    den = np.maximum(share, 1e-9)
    return total / (den[:, :, None] if total.ndim == 3 else den), share


def log_gradients(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward differences (x, y) of log(gray + LOG_OFFSET), float32 (h, w), 0 on the last column / row."""
    lg = np.log(gray.astype(np.float32) + np.float32(LOG_OFFSET))
    gx, gy = np.zeros_like(lg), np.zeros_like(lg)
    gx[:, :-1], gy[:-1] = np.diff(lg, axis=1), np.diff(lg, axis=0)
    return gx, gy


# --- flow -------------------------------------------------------------------------------------------------


def pair_flow(a: np.ndarray, b: np.ndarray, mask_a: np.ndarray, mask_b: np.ndarray,
              overlap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flow (h, w, 2) px, textured (h, w) bool) of gray a -> gray b (h, w) uint8 on the same grid.

    b is gain-matched to a over ``overlap``; outside its own mask each image takes the other's pixels (the
    mean where neither covers), so the masks' borders make no edges. Textured: TEXTURE_GRADIENT in both.
    """
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    if overlap.any():
        fb *= float(fa[overlap].mean()) / max(float(fb[overlap].mean()), 1e-3)
    both = mask_a | mask_b
    fill = float(fa[mask_a].mean()) if mask_a.any() else 128.0
    ga = np.where(mask_a, fa, np.where(mask_b, fb, fill))
    gb = np.where(mask_b, fb, np.where(mask_a, fa, fill))
    ga[~both], gb[~both] = fill, fill
    ua, ub = (np.clip(x, 0, 255).astype(np.uint8) for x in (ga, gb))
    flow = dis_flow(ua, ub)
    textured = (texture_energy(ua) >= TEXTURE_GRADIENT) & (texture_energy(ub) >= TEXTURE_GRADIENT)
    return flow, textured


def follow_flow(img: np.ndarray, mask: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(img (h, w, C) sampled at x + flow(x) (bilinear), where that lands inside mask (h, w) bool)."""
    h, w = mask.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + flow[..., 0], gy + flow[..., 1]
    out = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.remap(mask.astype(np.uint8), mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT) > 0
    return out, inside


# --- seams from the output --------------------------------------------------------------------------------


def label_map(pano_gray: np.ndarray, grays: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> np.ndarray:
    """(h, w) int32: index of the image (grays (h, w) uint8, masks (h, w) bool) that best explains the panorama
    gray (h, w) uint8 at each pixel, -1 where none covers; see the module docstring (decided, then nearest)."""
    h, w = pano_gray.shape
    costs = np.full((max(len(grays), 2), h, w), np.inf, np.float32)
    gxp, gyp = log_gradients(pano_gray)
    for k, (g, m) in enumerate(zip(grays, masks)):
        if not m.any():
            continue
        gx, gy = log_gradients(g)
        ok = erode(m, 1).astype(np.float32)
        r = np.sqrt((gxp - gx) ** 2 + (gyp - gy) ** 2) * ok
        num = cv2.GaussianBlur(r, (0, 0), LABEL_SIGMA)
        den = cv2.GaussianBlur(ok, (0, 0), LABEL_SIGMA)
        costs[k] = np.where(m, num / np.maximum(den, 1e-6), np.inf)
    part = np.partition(costs, 1, axis=0)
    best, second = part[0], part[1]
    labels = np.argmin(costs, axis=0).astype(np.int32)
    covered = np.isfinite(best)
    decided = covered & ((~np.isfinite(second)) | ((best < LABEL_RATIO * second) & (second - best > LABEL_MARGIN)))
    labels[~covered] = -1
    if decided.any() and not decided[covered].all():
        labels = _nearest_decided(labels, decided, covered, costs)
    return labels


def _nearest_decided(labels: np.ndarray, decided: np.ndarray, covered: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Undecided covered pixels take the label of the nearest decided pixel, if that image covers them."""
    src = np.where(decided, 0, 255).astype(np.uint8)
    _, idx = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    lut = np.concatenate([[-1], labels[decided]]).astype(np.int32)  # zero pixels are numbered in raster order
    near = lut[idx]
    rows, cols = np.indices(labels.shape)
    fits = (near >= 0) & np.isfinite(costs[np.maximum(near, 0), rows, cols])
    out = np.where(covered & ~decided & fits, near, labels)
    out[~covered] = -1
    return out


def seam_between(labels: np.ndarray, a: int, b: int, within: np.ndarray) -> np.ndarray:
    """(h, w) bool: pixels of ``within`` labelled a with a 4-neighbour labelled b, and vice versa."""
    la, lb = labels == a, labels == b
    out = np.zeros_like(la)
    for dy, dx in ((0, 1), (1, 0)):
        p = (slice(0, labels.shape[0] - dy), slice(0, labels.shape[1] - dx))
        q = (slice(dy, None), slice(dx, None))
        step = (la[p] & lb[q]) | (lb[p] & la[q])
        out[p] |= step
        out[q] |= step
    return out & within


def near(mask: np.ndarray, radius: float) -> np.ndarray:
    """(h, w) bool: pixels within ``radius`` px (Euclidean) of a True pixel of mask."""
    if not mask.any():
        return np.zeros_like(mask, bool)
    d = cv2.distanceTransform(np.where(mask, 0, 255).astype(np.uint8), cv2.DIST_L2, 5)
    return d <= radius


def mixed_map(pano_gray: np.ndarray, ga: np.ndarray, gb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(differ, mixed) (h, w) bool for the gray panorama and registered images a, b (h, w) uint8 on one grid: where
    a and b show different content, and where the panorama there correlates with neither (module docstring)."""
    differ = local_ncc(ga, gb, MIX_WINDOW, MIX_FLOOR) < MIX_DIFFER
    copy = np.maximum(local_ncc(pano_gray, ga, MIX_WINDOW, MIX_FLOOR), local_ncc(pano_gray, gb, MIX_WINDOW, MIX_FLOOR))
    return differ, differ & (copy < MIX_COPY)


# --- colour -----------------------------------------------------------------------------------------------


def to_lab(img: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 BGR -> (h, w, 3) float32 CIE Lab (D65; L 0..100)."""
    return cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)


def colour_step_map(pano: np.ndarray, img_a: np.ndarray, img_b: np.ndarray, label_a: np.ndarray,
                    label_b: np.ndarray, both: np.ndarray, half: int, b_on_a: np.ndarray | None = None) -> np.ndarray:
    """(h, w) float32 CIE76 Delta E of step(x) (module docstring) at every pixel, NaN where a window holds
    under 10 % of its pixels of label a, label b or the overlap ``both``. Images (h, w, 3) uint8 BGR;
    b_on_a: img_b aligned to img_a (follow_flow) for the I_a - I_b term (None: img_b as it is)."""
    P, A, B = to_lab(pano), to_lab(img_a), to_lab(img_b)
    d, sd = local_mean(A - (B if b_on_a is None else to_lab(b_on_a)), both, half)
    oa, sa = local_mean(P - A, label_a, half)
    ob, sb = local_mean(P - B, label_b, half)
    de = np.linalg.norm(d + oa - ob, axis=2)
    de[(sd < 0.1) | (sa < 0.1) | (sb < 0.1)] = np.nan
    return de.astype(np.float32)


# --- one pair ---------------------------------------------------------------------------------------------


@dataclass
class Region:
    """A pair's work region: box in output pixels, scale s, and every registered image covering it, sampled
    at s: images (h, w, 3) uint8, masks (h, w) bool (pixels wholly inside), their indices into the regs."""

    box: Box
    scale: float
    index: list[int]
    images: list[np.ndarray]
    masks: list[np.ndarray]
    pano: np.ndarray
    pano_mask: np.ndarray

    def to_output(self, y: int, x: int) -> tuple[int, int]:
        """Output pixel (x, y) of region pixel (row y, column x)."""
        return round(self.box[0] + x / self.scale), round(self.box[1] + y / self.scale)


def _scaled(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return img if img.shape[1::-1] == size else cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def sample_region(pano: np.ndarray, pano_mask: np.ndarray, regs: Sequence[Registered], box: Box) -> Region:
    """The Region of ``box`` (inside the output frame), at s = min(1, sqrt(FLOW_MAX_PIXELS / area))."""
    w, h = box[2] - box[0], box[3] - box[1]
    s = min(1.0, math.sqrt(FLOW_MAX_PIXELS / float(w * h)))
    size = (max(1, round(w * s)), max(1, round(h * s)))
    s = size[0] / float(w)
    index, images, masks = [], [], []
    for k, r in enumerate(regs):
        c = box_intersection(r.box, box)
        if c is None:
            continue
        img = np.zeros((h, w, 3), np.uint8)
        m = np.zeros((h, w), np.float32)
        img[box_slices(c, box[:2])] = r.image[box_slices(c, r.corner)]
        m[box_slices(c, box[:2])] = r.mask[box_slices(c, r.corner)]
        index.append(k)
        images.append(_scaled(img, size))
        masks.append(_scaled(m, size) >= 0.999)
    sl = box_slices(box, (0, 0))
    pm = _scaled(pano_mask[sl].astype(np.float32), size) >= 0.999
    return Region(box, s, index, images, masks, _scaled(pano[sl], size), pm)


def pair_box(regs: Sequence[Registered], i: int, j: int, pano_mask: np.ndarray) -> Box | None:
    """PAD-padded bounding box (output px, clipped to the frame) of the overlap O of regs i and j, None when O
    holds under MIN_PAIR_PIXELS px."""
    H, W = pano_mask.shape
    c = box_intersection(box_intersection(regs[i].box, regs[j].box) or (0, 0, 0, 0), (0, 0, W, H))
    if c is None:
        return None
    o = (erode(regs[i].mask[box_slices(c, regs[i].corner)], OVERLAP_ERODE)
         & erode(regs[j].mask[box_slices(c, regs[j].corner)], OVERLAP_ERODE) & pano_mask[box_slices(c, (0, 0))])
    if int(o.sum()) < MIN_PAIR_PIXELS:
        return None
    ys, xs = np.nonzero(o)
    return (max(0, c[0] + int(xs.min()) - PAD), max(0, c[1] + int(ys.min()) - PAD),
            min(W, c[0] + int(xs.max()) + 1 + PAD), min(H, c[1] + int(ys.max()) + 1 + PAD))


def _worst(score: np.ndarray, kind: str, region: Region) -> Place | None:
    """The Place of the largest finite value of score (h, w) (NaN: not measured), None if none."""
    if not np.isfinite(score).any():
        return None
    y, x = np.unravel_index(int(np.nanargmax(score)), score.shape)
    ox, oy = region.to_output(int(y), int(x))
    return Place(kind, ox, oy, float(score[y, x]))


def pair_visual(region: Region, a: int, b: int, names: tuple[str, str]) -> PairVisual:
    """Flow, seam-band and colour-step samples of the pair (a, b) (indices into region's lists) in its region."""
    s = region.scale
    ma, mb = region.masks[a], region.masks[b]
    overlap = erode(ma & mb & region.pano_mask, max(1, round(OVERLAP_ERODE * s)))
    ga, gb = to_gray(region.images[a]), to_gray(region.images[b])
    flow, textured = pair_flow(ga, gb, ma, mb, overlap)
    mag = np.hypot(flow[..., 0], flow[..., 1]) / s
    b_on_a, landed = follow_flow(region.images[b], mb, flow)
    labels = label_map(to_gray(region.pano), [to_gray(x) for x in region.images], region.masks)
    seam = seam_between(labels, a, b, overlap)
    sample = erode(overlap, FLOW_BORDER) & textured
    band = sample & near(seam, SEAM_BAND * s)
    half = max(1, round(COLOUR_WINDOW * s))
    de = colour_step_map(region.pano, region.images[a], region.images[b], (labels == a) & ma & region.pano_mask,
                         (labels == b) & mb & region.pano_mask, overlap & landed, half, b_on_a)
    steps = de[seam & np.isfinite(de)]
    differ, mixed = mixed_map(to_gray(region.pano), ga, gb)
    shown = erode(overlap, FLOW_BORDER) & ((labels == a) | (labels == b))
    win = max(1, round(WORST_WINDOW * s / 2))
    ghost, share = local_mean(mag, band, win)
    ghost[share < 0.05] = np.nan
    places = [p for p in (_worst(ghost, "ghost", region), _worst(np.where(seam, de, np.nan), "colour", region))
              if p is not None]
    return PairVisual(names[0], names[1], s, mag[sample], mag[band], steps, places, mixed[shown], differ[shown])


# --- invented / empty pixels --------------------------------------------------------------------------------


def coverage(shape: tuple[int, int], regs: Sequence[Registered]) -> np.ndarray:
    """(H, W) bool: output pixels covered by a registered image's mask (not eroded)."""
    H, W = shape
    out = np.zeros((H, W), bool)
    for r in regs:
        c = box_intersection(r.box, (0, 0, W, H))
        if c is not None:
            out[box_slices(c, (0, 0))] |= r.mask[box_slices(c, r.corner)]
    return out


def area_place(mask: np.ndarray, kind: str) -> Place | None:
    """A pixel of the largest connected area of mask (H, W) bool at depth min(its deepest, PLACE_DEPTH) px from
    the area's edge inside the frame (a crop there shows the area and what borders it); value: the area, px."""
    if not mask.any():
        return None
    _, comp, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    inside = comp == k
    d = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 5)
    target = min(float(d.max()), PLACE_DEPTH)
    y, x = np.unravel_index(int(np.argmin(np.where(inside, np.abs(d - target), np.inf))), d.shape)
    return Place(kind, int(x), int(y), float(stats[k, cv2.CC_STAT_AREA]))


def invented_empty(pano: np.ndarray, regs: Sequence[Registered]) -> tuple[float, float, Place | None]:
    """(invented %, empty % of the output's pixels, the worst invented, else empty, area) (module docstring)."""
    uncovered = ~coverage(pano.shape[:2], regs)
    shown = pano.max(axis=2) > 0
    invented, empty = uncovered & shown, uncovered & ~shown
    n = float(pano.shape[0] * pano.shape[1])
    place = area_place(invented, "invented") or area_place(empty, "empty")
    return 100.0 * int(invented.sum()) / n, 100.0 * int(empty.sum()) / n, place


# --- line straightness --------------------------------------------------------------------------------------


def detect_segments(img: np.ndarray) -> np.ndarray:
    """(N, 4) float64 segments (x0, y0, x1, y1) in img's (h, w[, 3]) pixels: OpenCV LSD on a copy of longer
    side LSD_MAX_SIDE, less those along the frame (within FRAME_MARGIN px of one edge there), the
    SEGMENTS_PER_IMAGE longest of at least MIN_SEGMENT x the longer side."""
    small, s = resize_max_side(to_gray(img), LSD_MAX_SIDE)
    found = cv2.createLineSegmentDetector().detect(small)[0]
    if found is None:
        return np.zeros((0, 4))
    seg = found.reshape(-1, 4).astype(np.float64)
    h, w = small.shape
    xs, ys = seg[:, 0::2], seg[:, 1::2]
    edge = ((xs < FRAME_MARGIN).all(1) | (xs > w - 1 - FRAME_MARGIN).all(1) | (ys < FRAME_MARGIN).all(1)
            | (ys > h - 1 - FRAME_MARGIN).all(1))
    seg = seg[~edge] / s
    length = np.hypot(seg[:, 2] - seg[:, 0], seg[:, 3] - seg[:, 1])
    keep = np.argsort(-length)[:SEGMENTS_PER_IMAGE]
    keep = keep[length[keep] >= MIN_SEGMENT * max(img.shape[:2])]
    return seg[keep]


def bend_per_100(pts: np.ndarray) -> float:
    """Largest distance of pts (N, 2) from the chord through the first and last, in px per 100 px of chord."""
    d = pts[-1] - pts[0]
    length = float(np.hypot(*d))
    if length < 1e-9:
        return float("nan")
    dist = np.abs(d[0] * (pts[:, 1] - pts[0, 1]) - d[1] * (pts[:, 0] - pts[0, 0])) / length
    return 100.0 * float(dist.max()) / length


def longest_run(keep: np.ndarray) -> slice:
    """The slice of the longest run of True in keep (N,) bool (an empty slice if none)."""
    best, start, run = slice(0, 0), 0, 0
    for k, v in enumerate(keep):
        start, run = (start, run + 1) if v else (k + 1, 0)
        if run > best.stop - best.start:
            best = slice(start, k + 1)
    return best


def segment_bends(segments: np.ndarray, to_output: PointMap, pano_mask: np.ndarray, wrap: float = 0.0) -> np.ndarray:
    """(M,) bends (px per 100 px) of segments (N, 4) mapped by to_output into an output with mask (H, W) bool;
    segments with under half their SEGMENT_SAMPLES inside it are skipped (module docstring)."""
    H, W = pano_mask.shape
    t = np.linspace(0.0, 1.0, SEGMENT_SAMPLES)[:, None]
    out = []
    for x0, y0, x1, y1 in segments:
        p = np.asarray(to_output(np.hstack([x0 + t * (x1 - x0), y0 + t * (y1 - y0)])), np.float64)
        ok = np.isfinite(p).all(axis=1)
        xi, yi = np.round(np.nan_to_num(p[:, 0], nan=-1)).astype(int), np.round(np.nan_to_num(p[:, 1], nan=-1)).astype(int)
        ok &= (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
        ok[ok] = pano_mask[yi[ok], xi[ok]]
        run = longest_run(ok)
        if run.stop - run.start < (SEGMENT_SAMPLES + 1) // 2:
            continue
        q = p[run].copy()
        if wrap > 0:
            q[:, 0] = np.concatenate([[q[0, 0]], q[0, 0] + np.cumsum((np.diff(q[:, 0]) + wrap / 2) % wrap - wrap / 2)])
        out.append(bend_per_100(q))
    return np.asarray([b for b in out if math.isfinite(b)])


def soft_gray(img: np.ndarray) -> np.ndarray:
    """(h, w) float32 gray of img (h, w, 3) uint8, Gaussian sigma 1 (so resampling blur is no difference)."""
    return cv2.GaussianBlur(to_gray(img).astype(np.float32), (0, 0), 1.0)


def map_check(regs: Sequence[Registered], inputs: Mapping[str, np.ndarray]) -> float | None:
    """Largest over the inputs of the median |soft_gray input - soft_gray registered image (bilinear) at the mapped
    point| (gray levels) over a grid of the input's pixels (those mapped inside its registered image's mask)."""
    diffs = []
    for r in regs:
        img = inputs.get(r.name)
        if img is None or r.to_output is None:
            continue
        h, w = img.shape[:2]
        xs, ys = np.meshgrid(np.linspace(0.05 * w, 0.95 * w, MAP_CHECK_GRID),
                             np.linspace(0.05 * h, 0.95 * h, MAP_CHECK_GRID))
        pts = np.round(np.stack([xs.ravel(), ys.ravel()], 1))
        q = np.asarray(r.to_output(pts), np.float64) - np.asarray(r.corner, np.float64)
        q = np.nan_to_num(q, nan=-10.0).astype(np.float32)
        col = (q[:, 0:1].copy(), q[:, 1:2].copy())
        inside = cv2.remap(erode(r.mask, 1).astype(np.uint8), *col, cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_CONSTANT)[:, 0] > 0
        if inside.any():
            b = cv2.remap(soft_gray(r.image), *col, cv2.INTER_LINEAR)[:, 0]
            a = soft_gray(img)[pts[:, 1].astype(int), pts[:, 0].astype(int)]
            diffs.append(float(np.median(np.abs(a - b)[inside])))
    return max(diffs) if diffs else None


# --- the set's figures --------------------------------------------------------------------------------------


def straightness(regs: Sequence[Registered], inputs: Mapping[str, np.ndarray], pano_mask: np.ndarray) -> np.ndarray:
    """Bends (px per 100 px) of every kept input's segments on the output, each input once."""
    seen, bends = set(), []
    for r in regs:
        if r.name in seen or r.to_output is None or r.name not in inputs:
            continue
        seen.add(r.name)
        bends.append(segment_bends(detect_segments(inputs[r.name]), r.to_output, pano_mask, r.wrap))
    return np.concatenate(bends) if bends else np.zeros(0)


def pairs_visual(pano: np.ndarray, pano_mask: np.ndarray, regs: Sequence[Registered]) -> list[PairVisual]:
    """PairVisual of every pair of registered images with an overlap of at least MIN_PAIR_PIXELS in the frame."""
    out = []
    for i in range(len(regs)):
        for j in range(i + 1, len(regs)):
            box = pair_box(regs, i, j, pano_mask)
            if box is None:
                continue
            region = sample_region(pano, pano_mask, regs, box)
            a, b = region.index.index(i), region.index.index(j)
            out.append(pair_visual(region, a, b, (regs[i].name, regs[j].name)))
    return out


def pooled(pairs: Sequence[PairVisual], key: str, power: int, qs: Sequence[float]) -> list[float | None]:
    """Weighted quantiles of one kind of sample over the pairs, each weighted 1 / scale^power."""
    v = [getattr(p, key) for p in pairs]
    w = [np.full(x.size, p.scale ** -power, np.float32) for x, p in zip(v, pairs)]
    return weighted_quantiles(np.concatenate(v) if v else np.zeros(0), np.concatenate(w) if w else np.zeros(0), qs)


def visual_figures(pano: np.ndarray, pano_mask: np.ndarray, regs: Sequence[Registered],
                   inputs: Mapping[str, np.ndarray]) -> VisualFigures:
    """Every figure of the module docstring for one method's output: panorama (H, W, 3) uint8, mask (H, W)
    bool, its registered images, and the kept inputs by name ((h, w, 3) uint8, full resolution)."""
    pairs = pairs_visual(pano, pano_mask, regs)
    f = VisualFigures(pairs=[p.summary() for p in pairs])
    f.flow_p50, f.flow_p95 = pooled(pairs, "overlap", 2, (0.5, 0.95))
    f.ghost_p50, f.ghost_p95 = pooled(pairs, "band", 2, (0.5, 0.95))
    (f.colour_step_p95,) = pooled(pairs, "steps", 1, (0.95,))
    area = sum(p.mixed.size / p.scale ** 2 for p in pairs)
    if area > 0:
        f.mixed_pct = 100.0 * sum(float(p.mixed.sum()) / p.scale ** 2 for p in pairs) / area
    steps = [(p.steps.astype(np.float64), p.scale) for p in pairs if p.steps.size]
    if steps:
        f.colour_step_mean = float(sum(v.sum() / s for v, s in steps) / sum(v.size / s for v, s in steps))
    f.seam_px = round(sum(p.steps.size / p.scale for p in pairs))
    f.invented_pct, f.empty_pct, hole = invented_empty(pano, regs)
    bends = straightness(regs, inputs, pano_mask)
    f.segments = int(bends.size)
    if bends.size:
        f.bend_max, f.bend_p95 = float(bends.max()), float(np.percentile(bends, 95))
    f.map_check = map_check(regs, inputs)
    for kind in ("ghost", "colour"):
        cands = [pl for p in pairs for pl in p.places if pl.kind == kind]
        if cands:
            f.places.append(max(cands, key=lambda pl: pl.value))
    if hole is not None:
        f.places.append(hole)
    return f
