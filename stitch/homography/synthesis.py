"""View synthesis, MODS-style (Mishkin, Matas and Perdoch 2015): match simulated affine views of both images.

Each round simulates ASIFT views (``features.affine_views``: tilt t with in-plane rotations every 72/t
degrees, the image squeezed by t across after an anti-aliasing blur) of *both* images, detects on every
view with any detector of the DETECTORS table (learned ones too), matches every simulated view of each
image against the other image's original view (ratio test and mutual check; so a view pair costs linear,
not quadratic, time in the views, and the relative tilt is covered up to the round's largest), maps the matches back to the original pixels and merges the
duplicates (the same physical match found in several view pairs). Rounds go from a few views to many:
the search runs the next round only while the best score stays below the acceptance score.

Each round is bounded: images are shrunk to ``max_side`` before the views are simulated, every view keeps
at most ``view_keypoints`` keypoints, and each image's views stop (after the first) past half of
``time_budget_s``; the views simulated so far are matched (cheap beside the detection). Its
seconds, peak traced memory (tracemalloc: numpy and OpenCV buffers allocated through Python), views and
matches are reported in every candidate's params.
"""

from __future__ import annotations

import time
import tracemalloc
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from stitch.errors import ConfigError
from stitch.homography.candidates import Candidate, generate
from stitch.homography.features import DETECTORS, affine_views, detect_view, simulate_view, view_to_original
from stitch.homography.matching import Matches, merge_duplicates, ratio_matches
from stitch.homography.search import SearchState, level_specs
from stitch.imaging import resize_max_side, to_gray

MAX_TILT = 8.0


@dataclass(frozen=True)
class SynthesisRound:
    """One round: ``tilts`` (besides the original view, tilt 1) simulated on both images, at ``max_side`` px."""

    tilts: tuple[float, ...]
    detector: str = "sift"
    max_side: int = 640
    view_keypoints: int = 800
    ratio: float = 0.85
    time_budget_s: float = 10.0

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS or DETECTORS[self.detector].affine_views:
            raise ConfigError(f"detector={self.detector!r}: choose a single-view detector of the DETECTORS table")
        if any(not 1.0 < t <= MAX_TILT for t in self.tilts):
            raise ConfigError(f"tilts={self.tilts}: each tilt must be in (1, {MAX_TILT:g}]")
        if self.max_side < 64 or self.view_keypoints < 8 or self.time_budget_s <= 0:
            raise ConfigError("max_side >= 64, view_keypoints >= 8 and time_budget_s > 0 are required")


#: The rounds of the search: a few moderate tilts, then the strong ones up to MAX_TILT (tilts 2^(k/2), as ASIFT).
DEFAULT_ROUNDS = (
    SynthesisRound((2.0,)),
    SynthesisRound((2.0 ** 1.5, 4.0)),
    SynthesisRound((2.0 ** 2.5, 8.0), max_side=560),
)


@dataclass
class ViewSet:
    """Keypoints of every simulated view of one image: pts (N, 2) float64 original px, desc (N, D), view (N,)."""

    pts: np.ndarray
    desc: np.ndarray
    view: np.ndarray
    n_views: int


def view_set(gray: np.ndarray, tilts: tuple[float, ...], rnd: SynthesisRound, with_original: bool,
             deadline: float = float("inf")) -> ViewSet:
    """Detect on the simulated views (and the original if ``with_original``) of a (H, W) uint8 image; no view
    is started after ``deadline`` (perf_counter s) except the first."""
    small, s = resize_max_side(gray, rnd.max_side)
    h, w = small.shape
    kind = DETECTORS[rnd.detector].raw
    pts, desc, vid = [], [], []
    views: list[tuple[np.ndarray, np.ndarray]] = []
    if with_original:
        views.append((small, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])))
    specs = affine_views(w, h, tilts)
    n_views = len(views) + len(specs)
    done = 0
    for i in range(n_views):
        if done and time.perf_counter() > deadline:
            break
        img, A = views[i] if i < len(views) else simulate_view(small, *specs[i - len(views)])
        done += 1
        p, d = detect_view(img, kind, rnd.view_keypoints, 4)
        if len(p) == 0:
            continue
        back, inside = view_to_original(p, A, w, h)
        pts.append((back[inside] + 0.5) / s - 0.5)  # working px -> original px (cv2.resize centre convention)
        desc.append(d[inside])
        vid.append(np.full(int(inside.sum()), i, np.int32))
    if not pts:
        return ViewSet(np.zeros((0, 2)), np.zeros((0, 1), np.float32), np.zeros(0, np.int32), done)
    return ViewSet(np.concatenate(pts), np.concatenate(desc), np.concatenate(vid), done)


def match_view_sets(a: ViewSet, b: ViewSet, norm: int, ratio: float) -> tuple[Matches, int]:
    """Ratio + mutual matches of each simulated view of one image against the other's original view (view 0),
    both ways, merged; (matches, view pairs run)."""
    src, dst, ia, ib, rr = [], [], [], [], []
    pairs = [(va, 0) for va in np.unique(a.view)] + [(0, vb) for vb in np.unique(b.view) if vb != 0]
    done = 0
    for va, vb in pairs:
        sel_a, sel_b = np.flatnonzero(a.view == va), np.flatnonzero(b.view == vb)
        q, t, r = ratio_matches(a.desc[sel_a], b.desc[sel_b], norm, ratio, mutual=True)
        src.append(a.pts[sel_a[q]])
        dst.append(b.pts[sel_b[t]])
        ia.append(sel_a[q])
        ib.append(sel_b[t])
        rr.append(r)
        done += 1
    if not src:
        z = np.zeros((0, 2))
        return Matches(z, z.copy(), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)), done
    sp, dp = np.concatenate(src), np.concatenate(dst)
    si, di, ra = np.concatenate(ia), np.concatenate(ib), np.concatenate(rr)
    keep = merge_duplicates(sp, dp, ra)  # the same physical match from several view pairs
    return Matches(sp[keep], dp[keep], si[keep], di[keep], ra[keep]), done


def synthesize_matches(src_img: np.ndarray, dst_img: np.ndarray, rnd: SynthesisRound) -> tuple[Matches, dict[str, Any]]:
    """Matches between simulated views of two (H, W[, 3]) images for one round; (matches, round stats)."""
    t0 = time.perf_counter()
    tracing = not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        ga, gb = to_gray(src_img), to_gray(dst_img)
        # each image's views get half the round's time budget (the matching after is cheap beside detection)
        a = view_set(ga, rnd.tilts, rnd, with_original=True, deadline=t0 + 0.5 * rnd.time_budget_s)
        b = view_set(gb, rnd.tilts, rnd, with_original=True, deadline=time.perf_counter() + 0.5 * rnd.time_budget_s)
        norm = cv2.NORM_HAMMING if DETECTORS[rnd.detector].raw == "orb" else cv2.NORM_L2
        m, pairs = match_view_sets(a, b, norm, rnd.ratio)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if tracing:
            tracemalloc.stop()
    stats = {"tilts": list(rnd.tilts), "detector": rnd.detector, "views": [a.n_views, b.n_views],
             "view_pairs": pairs, "matches": len(m), "round_seconds": round(time.perf_counter() - t0, 3),
             "round_peak_mb": round(peak / 2 ** 20, 1), "time_budget_s": rnd.time_budget_s}
    return m, stats


def synthesis_candidates(state: SearchState, rnd: SynthesisRound, index: int) -> list[Candidate]:
    """Candidates of one synthesis round under the first level's estimator grid (unscored)."""
    t0 = time.perf_counter()
    m, stats = synthesize_matches(state.src_img, state.dst_img, rnd)
    cfg = state.config
    specs = level_specs(cfg.levels[0], cfg.seed)
    tags = {"level": f"synthesis-{index}", "features": f"{rnd.detector}-views", "matching": f"r{rnd.ratio:.2f}+mutual",
            **stats}
    new = generate(m, specs, tags)
    overhead = (time.perf_counter() - t0 - sum(c.seconds for c in new)) / max(len(new), 1)
    for c in new:
        c.seconds += overhead
    return new
