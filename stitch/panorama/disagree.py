"""Stage 8b (before the seams): where two warped photos still show different things, on the seam canvas.

Input: the gain-compensated warped views (stitch.panorama.views.LowView). For every overlapping pair (i, j),
on the pair's region (the intersection of the two boxes grown by one pixel, the region the seam finder cuts):

* ``misalign`` (h, w) float32, in seam-canvas px, clipped to MISALIGN_CLIP: how far the two photos are from
  showing the same thing there, by the term ``MISALIGN_TERMS[name]``:

  - ``flow``: the magnitude of the dense optical flow (OpenCV DIS, preset MEDIUM, as stitch.bench.visual
    measures ghosting) from view i's gray level to view j's (j's gain-matched to i's over the overlap), less
    FLOW_FLOOR (DIS's noise where the photos are aligned, which would otherwise steer seams at random), each
    view filled with the other's pixels outside its own mask so the masks' borders make no edges: the
    misalignment left after warping (parallax, a moving object), counted only on *textured* pixels (the
    structure-tensor energy of either view at least TEXTURE_GRADIENT levels per px, as the bench's), where
    flow is determined and a misaligned seam would show;
  - ``ncc``: a structure disagreement, MISALIGN_CLIP * (1 - NCC) / 2 with the local normalised cross-correlation
    of the gray levels over NCC_WINDOW px (variance floored at NCC_FLOOR, so flat areas agree);
  - ``none``: zero.

  The seam finder adds gamma * misalign to its pixel cost (stitch.panorama.seams.SeamCost), so seams run around
  what does not line up.
* ``differ`` (h, w) bool: the photos disagree, i.e. their colours differ by more than DIFFER_COLOUR gray levels
  or the flow exceeds DIFFER_FLOW. The colour difference (``colour_difference``, then Gaussian-blurred, sigma 1
  px) is of view i minus view j scaled per channel by the median ratio of the two over the overlap, less its
  own median over LOCAL_WINDOW px: what the light does (an exposure step the gains left, a gloss, vignetting)
  varies smoothly and is no disagreement; an object in one photo only, up to about half the window across, is
  caught whole (a larger one by its rim). The map is opened by a 3 x 3 square (lone pixels are noise) and grown
  by DIFFER_GROW px so its border falls where the photos agree again.

``Disagreement.views`` holds, per view k, a ViewDisagreement on its box (None where it has no disagreement area,
so photos that agree cost no full-size map): ``differ``, the union of its pairs'
(float32 0/1), and ``offset`` (h, w, 3) float32, in the 8-bit levels of the compensated views, there: the
smooth photometric difference I_k - I_other (``local_offset``: a normalised Gaussian average, sigma OFFSET_SIGMA
px, of the difference where the two agree, so what disagrees never enters it). The blender (stitch.panorama.blend) takes
each pixel of ``differ`` from its seam side alone, the other images' copy of it shifted by their offset: the
content comes from one photo, never a mix, and only the light's smooth difference is blended, so a cut through
a disagreement area shows no exposure step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from stitch.errors import ConfigError
from stitch.geometry import Box, box_intersection, box_slices
from stitch.panorama.threads import in_order, thread_pool
from stitch.panorama.views import LowView, overlapping_pairs

#: Largest misalignment the seam cost counts (seam-canvas px): beyond it, any seam through the place ghosts alike.
MISALIGN_CLIP = 4.0
#: Flow (seam-canvas px) the ``flow`` term leaves out: DIS's noise on well-aligned photos (p95 0.15-0.24 on hill).
FLOW_FLOOR = 0.25
#: Local NCC window (seam-canvas px) and variance floor (gray levels squared) of the ``ncc`` term.
NCC_WINDOW = 5
NCC_FLOOR = 25.0
#: Colour difference (gray levels, after gain compensation) above which two photos disagree.
DIFFER_COLOUR = 24.0
#: Window (seam-canvas px, odd) of the local median a colour difference is measured against.
LOCAL_WINDOW = 21
#: Every how many overlap pixels the per-channel ratio of two photos is sampled (its median: a few thousand suffice).
RATIO_STEP = 4
#: Smallest side (seam-canvas px) of a region whose local median is taken on a 2x coarser grid.
MEDIAN_MIN_SIDE = 32
#: Gaussian sigma (seam-canvas px) of the smooth photometric difference in a disagreement area.
OFFSET_SIGMA = 8.0
#: Coarsening factor of the grid local_offset averages on (at most sigma / 2).
OFFSET_SHRINK = 2
#: Flow (seam-canvas px) above which two photos disagree.
DIFFER_FLOW = 2.0
#: Growth (seam-canvas px) of a disagreement area.
DIFFER_GROW = 2
#: Structure-tensor energy (gray levels per px) from which a pixel is textured (stitch.bench.visual's too).
TEXTURE_GRADIENT = 1.0
#: Smallest side (seam-canvas px) of a region on which the flow is computed (DIS needs a few patches).
MIN_FLOW_SIDE = 16


@dataclass
class PairDisagreement:
    """One overlapping pair on its region (x0, y0, x1, y1) of the seam canvas: misalign (h, w) float32 (seam px,
    clipped) of the chosen term, flow (h, w) float32 (seam px, zeros when not computed), differ (h, w) bool."""

    region: Box
    misalign: np.ndarray
    flow: np.ndarray
    differ: np.ndarray


@dataclass
class ViewDisagreement:
    """One view's disagreement areas on its box: differ (h, w) float32 0/1 and offset (h, w, 3) float32 (8-bit levels,
    the smooth difference of this view minus the other there; 0 elsewhere)."""

    differ: np.ndarray
    offset: np.ndarray


@dataclass
class Disagreement:
    """Per overlapping pair (i, j), i < j: its PairDisagreement; per view: its ViewDisagreement, or None where it
    has no disagreement area."""

    pairs: dict[tuple[int, int], PairDisagreement] = field(default_factory=dict)
    views: list[ViewDisagreement | None] = field(default_factory=list)

    def misalign(self, i: int, j: int) -> np.ndarray | None:
        """Pair (i, j)'s misalign map (h, w) float32 over its region (either order), or None when none was measured."""
        p = self.pairs.get((min(i, j), max(i, j)))
        return None if p is None else p.misalign


def pair_region(inter: Box) -> Box:
    """The region a pair is measured (and cut) on: the intersection of the two boxes grown by one pixel."""
    return (inter[0] - 1, inter[1] - 1, inter[2] + 1, inter[3] + 1)


def padded(arr: np.ndarray, view: LowView, r: Box) -> np.ndarray:
    """arr (over view's box) cropped to region r (x0, y0, x1, y1), zero (False) where r leaves the box."""
    out = np.zeros((r[3] - r[1], r[2] - r[0]) + arr.shape[2:], arr.dtype)
    q = box_intersection(view.box, r)
    if q is not None:
        out[box_slices(q, (r[0], r[1]))] = arr[box_slices(q, view.offset)]
    return out


def filled_grays(a: np.ndarray, b: np.ndarray, ma: np.ndarray, mb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gray levels (h, w) uint8 of two (h, w, 3) uint8 crops, each taking the other's pixels outside its mask
    (ma, mb (h, w) bool) and their mean where neither covers, so the masks' borders make no edges."""
    ga, gb = (cv2.cvtColor(x, cv2.COLOR_BGR2GRAY) for x in (a, b))
    both = ma | mb
    fill = np.uint8(np.mean(ga[ma]) if ma.any() else 128)
    gb = gb.astype(np.float32)
    overlap = ma & mb
    if overlap.any():
        gb *= float(ga[overlap].mean()) / max(float(gb[overlap].mean()), 1e-3)
    gb = np.clip(gb, 0, 255).astype(np.uint8)
    fa = np.where(ma, ga, np.where(mb, gb, fill)).astype(np.uint8)
    fb = np.where(mb, gb, np.where(ma, ga, fill)).astype(np.uint8)
    fa[~both], fb[~both] = fill, fill
    return fa, fb


def texture_energy(gray: np.ndarray) -> np.ndarray:
    """Local 2-D structure (h, w) float32, levels per px: sqrt of the structure tensor's smaller eigenvalue
    (Sobel gradients / 8 of the sigma-1-blurred gray, products averaged by a Gaussian of sigma 2)."""
    g = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), 1.0)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    jxx, jxy, jyy = (cv2.GaussianBlur(z, (0, 0), 2.0) for z in (gx * gx, gx * gy, gy * gy))
    lam = 0.5 * (jxx + jyy) - np.sqrt(0.25 * (jxx - jyy) ** 2 + jxy ** 2)
    return np.sqrt(np.maximum(lam, 0.0))


def dis_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """DIS flow (h, w, 2) float32 from gray a to gray b (h, w) uint8: a(x) ~ b(x + flow(x)), px (preset MEDIUM)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(np.ascontiguousarray(a), np.ascontiguousarray(b), None)


def flow_magnitude(ga: np.ndarray, gb: np.ndarray) -> np.ndarray:
    """|DIS flow| (h, w) float32 (px, every pixel) from gray ga to gray gb (h, w) uint8; zeros below MIN_FLOW_SIDE px."""
    if min(ga.shape) < MIN_FLOW_SIDE:
        return np.zeros(ga.shape, np.float32)
    return np.sqrt((dis_flow(ga, gb) ** 2).sum(axis=2)).astype(np.float32)


def local_ncc(ga: np.ndarray, gb: np.ndarray, window: int = NCC_WINDOW, floor: float = NCC_FLOOR) -> np.ndarray:
    """Local normalised cross-correlation (h, w) float32 in [-1, 1] of gray ga, gb (h, w) over window x window px."""
    fa, fb = ga.astype(np.float32), gb.astype(np.float32)
    k = (window, window)
    ma, mb = cv2.blur(fa, k), cv2.blur(fb, k)
    va = np.maximum(cv2.blur(fa * fa, k) - ma * ma, 0) + floor
    vb = np.maximum(cv2.blur(fb * fb, k) - mb * mb, 0) + floor
    cov = cv2.blur(fa * fb, k) - ma * mb + floor  # the floor makes two flat patches agree (NCC 1)
    return np.clip(cov / np.sqrt(va * vb), -1.0, 1.0).astype(np.float32)


def colour_difference(a: np.ndarray, b: np.ndarray, overlap: np.ndarray, window: int = LOCAL_WINDOW) -> np.ndarray:
    """Mean over B, G, R of |r - median_window(r)| (h, w) float32 for (h, w, 3) uint8 crops, r = a - g b per channel,
    g the median of a / b over ``overlap`` (h, w) bool (every RATIO_STEP-th pixel of it), r = 0 off the overlap: what
    differs between the two beyond a smooth photometric difference (light, vignetting, a gain the compensation
    left), e.g. an object in one only."""
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    if overlap.any():
        va, vb = fa[overlap][::RATIO_STEP], fb[overlap][::RATIO_STEP]
        ok = (va > 8) & (vb > 8) & (va < 247) & (vb < 247)
        for ch in range(3):
            sel = ok[:, ch]
            if sel.sum() >= 16:
                fb[:, :, ch] *= float(np.median(va[sel, ch] / vb[sel, ch]))
    r = np.where(overlap[:, :, None], fa - fb, 0.0).astype(np.float32)
    return np.abs(r - local_median(r, window)).mean(axis=2).astype(np.float32)


def local_median(r: np.ndarray, window: int = LOCAL_WINDOW) -> np.ndarray:
    """Per channel, the median of r (h, w, 3) float32 (a difference, -510..510) over about window x window px, to 2
    levels: on a grid 2x coarser (area averages, a window of half the side), upsampled bilinearly, as the light's
    difference it stands for is smooth; at full resolution below MEDIAN_MIN_SIDE px."""
    h, w = r.shape[:2]
    coarse = min(h, w) >= MEDIAN_MIN_SIDE
    src = cv2.resize(r, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA) if coarse else r
    shifted = np.clip(np.rint(src / 2.0 + 128.0), 0, 255).astype(np.uint8)  # medianBlur's large windows take uint8
    med = (cv2.medianBlur(shifted, (window // 2 if coarse else window) | 1).astype(np.float32) - 128.0) * 2.0
    return cv2.resize(med, (w, h), interpolation=cv2.INTER_LINEAR) if coarse else med


def local_offset(a: np.ndarray, b: np.ndarray, agree: np.ndarray, sigma: float = OFFSET_SIGMA,
                 shrink: int = OFFSET_SHRINK) -> np.ndarray:
    """The smooth photometric difference a - b (h, w, 3) float32 of two (h, w, 3) uint8 crops, from the pixels where
    they agree (``agree`` (h, w) bool): a normalised Gaussian average of sigma px, then of 4 sigma where too few
    agreeing pixels are near, else 0. What disagrees (an object in one photo only) never enters it. It is formed
    on a grid ``shrink`` times coarser (area averages, then sigma / shrink) and upsampled bilinearly: the average
    is smooth at sigma px, so this moves it by a fraction of a gray level (tested) for shrink^2 less work."""
    h, w = agree.shape
    f = max(1, min(int(shrink), int(sigma // 2), h, w))
    size = (-(-w // f), -(-h // f))
    wt = agree.astype(np.float32)
    num0 = cv2.resize((a.astype(np.float32) - b.astype(np.float32)) * wt[:, :, None], size,
                      interpolation=cv2.INTER_AREA)
    den0 = cv2.resize(wt, size, interpolation=cv2.INTER_AREA)
    out = np.zeros(num0.shape, np.float32)
    todo = np.ones(den0.shape, bool)
    for s in (sigma / f, 4.0 * sigma / f):
        den = cv2.GaussianBlur(den0, (0, 0), s)
        ok = todo & (den > 0.05)
        if ok.any():
            num = cv2.GaussianBlur(num0, (0, 0), s)
            out[ok] = num[ok] / den[ok][:, None]
            todo &= ~ok
        if not todo.any():
            break
    return out if f == 1 else cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)


def _term_none(ga: np.ndarray, gb: np.ndarray, flow: np.ndarray) -> np.ndarray:
    return np.zeros(ga.shape, np.float32)


def _term_flow(ga: np.ndarray, gb: np.ndarray, flow: np.ndarray) -> np.ndarray:
    return np.clip(flow - FLOW_FLOOR, 0.0, MISALIGN_CLIP)


def _term_ncc(ga: np.ndarray, gb: np.ndarray, flow: np.ndarray) -> np.ndarray:
    return (MISALIGN_CLIP * (1.0 - local_ncc(ga, gb)) / 2.0).astype(np.float32)


#: The misalignment terms of the seam cost: name -> term(gray a, gray b, flow magnitude) -> (h, w) float32 seam px.
MISALIGN_TERMS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "flow": _term_flow,
    "ncc": _term_ncc,
    "none": _term_none,
}
MISALIGN_CHOICES = tuple(MISALIGN_TERMS)
DEFAULT_MISALIGN = "flow"


def pair_disagreement(a: np.ndarray, b: np.ndarray, ma: np.ndarray, mb: np.ndarray, region: Box,
                      term: str = DEFAULT_MISALIGN, flow: bool = True, areas: bool = True) -> PairDisagreement:
    """The PairDisagreement of two aligned (h, w, 3) uint8 crops with masks ma, mb (h, w) bool (see the module
    docstring; its ``flow``: on textured pixels, else 0); ``flow``: measure the optical flow (else zeros, and
    ``differ`` from the colours alone, unless the term is 'flow'); ``areas``: find the ``differ`` map (else all
    False: only the seam cost's misalignment is wanted)."""
    if term not in MISALIGN_TERMS:
        raise ConfigError(f"misalign={term!r}: choose one of {', '.join(MISALIGN_CHOICES)}")
    ga, gb = filled_grays(a, b, ma, mb)
    mag = flow_magnitude(ga, gb) if flow or term == "flow" else np.zeros(ga.shape, np.float32)
    mag[np.maximum(texture_energy(ga), texture_energy(gb)) < TEXTURE_GRADIENT] = 0.0
    both = ma & mb
    misalign = np.where(both, MISALIGN_TERMS[term](ga, gb, mag), 0.0).astype(np.float32)
    if not areas:
        return PairDisagreement(region, misalign, mag, np.zeros(both.shape, bool))
    colour = cv2.GaussianBlur(colour_difference(a, b, both), (0, 0), 1.0)
    differ = both & ((colour > DIFFER_COLOUR) | (mag > DIFFER_FLOW))
    square = np.ones((3, 3), np.uint8)
    differ = cv2.morphologyEx(differ.astype(np.uint8), cv2.MORPH_OPEN, square)
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * DIFFER_GROW + 1, 2 * DIFFER_GROW + 1))
    differ = (cv2.dilate(differ, grow) > 0) & both
    return PairDisagreement(region, misalign, mag, differ)


def disagreement(views: Sequence[LowView], term: str = DEFAULT_MISALIGN, flow: bool = True,
                 areas: bool = True, workers: int = 1) -> Disagreement:
    """The Disagreement of the (gain-compensated) views: every overlapping pair measured on its region; without
    ``areas`` only the misalignment (no ``differ`` maps nor offsets: what the seam cost alone needs). workers: the
    pairs are measured on that many threads (stitch.panorama.threads.in_order; the result does not depend on it)."""
    if term not in MISALIGN_TERMS:
        raise ConfigError(f"misalign={term!r}: choose one of {', '.join(MISALIGN_CHOICES)}")
    out = Disagreement(views=[None] * len(views))
    pairs = []
    for i, j, inter in overlapping_pairs(views):
        r = pair_region(inter)
        ma, mb = padded(views[i].mask, views[i], r), padded(views[j].mask, views[j], r)
        if (ma & mb).sum() >= 2:
            pairs.append((i, j, r, ma, mb))

    def measure(k: int) -> tuple[PairDisagreement, np.ndarray | None]:
        i, j, r, ma, mb = pairs[k]
        a, b = padded(views[i].image, views[i], r), padded(views[j].image, views[j], r)
        p = pair_disagreement(a, b, ma, mb, r, term, flow, areas)
        return p, (local_offset(a, b, ma & mb & ~p.differ) if p.differ.any() else None)

    with thread_pool(workers, len(pairs)) as pool:
        for (i, j, r, _, _), (p, offset) in zip(pairs, in_order(measure, len(pairs), pool, workers)):
            out.pairs[(i, j)] = p
            if offset is None:
                continue
            for k, sign in ((i, 1.0), (j, -1.0)):
                q = box_intersection(views[k].box, r)
                if q is None:
                    continue
                vs, rs = box_slices(q, views[k].offset), box_slices(q, (r[0], r[1]))
                here = p.differ[rs]
                if here.any():
                    vd = out.views[k] = out.views[k] or ViewDisagreement(
                        np.zeros(views[k].mask.shape, np.float32), np.zeros(views[k].mask.shape + (3,), np.float32))
                    vd.differ[vs][here] = 1.0
                    vd.offset[vs][here] = sign * offset[rs][here]
    return out
