"""The OpenCV baselines of the benchmarks: SIFT + ratio 0.8 + findHomography (RANSAC / USAC_MAGSAC, 3 px)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from stitch.errors import ConfigError

METHOD_SIFT_RANSAC = "SIFT+RANSAC"
METHOD_SIFT_MAGSAC = "SIFT+MAGSAC"
BASELINE_METHODS = (METHOD_SIFT_RANSAC, METHOD_SIFT_MAGSAC)

#: Baseline settings, as in the benchmark protocol (OpenCV defaults otherwise).
SIFT_RATIO = 0.8
BASELINE_REPROJ_THRESHOLD = 3.0
#: Baseline name -> cv2.findHomography method flag.
BASELINE_FLAGS = {METHOD_SIFT_RANSAC: cv2.RANSAC, METHOD_SIFT_MAGSAC: cv2.USAC_MAGSAC}


@dataclass
class MethodOutput:
    """What one method produced on one pair: H (3, 3) or None, wall seconds, a short note."""

    H: np.ndarray | None
    seconds: float
    detail: str = ""
    score: float | None = None  # the project's quality score of H, where it has one


def sift_ratio_matches(src_bgr: np.ndarray, dst_bgr: np.ndarray, ratio: float = SIFT_RATIO, fast: bool = False):
    """OpenCV SIFT (defaults, grayscale, full resolution) + exact knn k=2 + Lowe ratio test.

    Returns (src_pts (N, 2) float32, dst_pts (N, 2) float32) in pixels. ``fast`` swaps cv2.BFMatcher for
    the project's BLAS search (the same exact neighbours, much faster on large images); the benchmark keeps
    BFMatcher so that the baseline is timed as users run it.
    """
    sift = cv2.SIFT_create()
    g1 = cv2.cvtColor(src_bgr, cv2.COLOR_BGR2GRAY)
    g2 = cv2.cvtColor(dst_bgr, cv2.COLOR_BGR2GRAY)
    kp1, d1 = sift.detectAndCompute(g1, None)
    kp2, d2 = sift.detectAndCompute(g2, None)
    if d1 is None or d2 is None or len(kp1) < 2 or len(kp2) < 2:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    p1 = np.float32([k.pt for k in kp1])
    p2 = np.float32([k.pt for k in kp2])
    if fast:
        from stitch.homography.matching import knn

        idx, dist = knn(d1, d2, cv2.NORM_L2, 2)
        good = np.flatnonzero(dist[:, 0] < ratio * dist[:, 1])
        return p1[good].reshape(-1, 2), p2[idx[good, 0]].reshape(-1, 2)
    knn = cv2.BFMatcher().knnMatch(d1, d2, k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < ratio * m[1].distance]
    q = np.array([m.queryIdx for m in good], dtype=np.int64)
    t = np.array([m.trainIdx for m in good], dtype=np.int64)
    return p1[q].reshape(-1, 2), p2[t].reshape(-1, 2)


def run_sift_baselines(
    src_bgr: np.ndarray,
    dst_bgr: np.ndarray,
    methods: Sequence[str] = BASELINE_METHODS,
    fast: bool = False,
) -> dict[str, MethodOutput]:
    """The OpenCV baselines on one pair: SIFT + ratio 0.8 + findHomography (RANSAC / USAC_MAGSAC, 3 px).

    Detection and matching run once; each method's seconds = that shared time + its own estimation.
    """
    unknown = [m for m in methods if m not in BASELINE_FLAGS]
    if unknown:
        raise ConfigError(f"methods: unknown baseline(s) {unknown}; choose from {list(BASELINE_FLAGS)}")
    t0 = time.perf_counter()
    src, dst = sift_ratio_matches(src_bgr, dst_bgr, fast=fast)
    t_match = time.perf_counter() - t0
    out: dict[str, MethodOutput] = {}
    for m in methods:
        t1 = time.perf_counter()
        H, n_in = None, 0
        if len(src) >= 4:
            H, mask = cv2.findHomography(src, dst, BASELINE_FLAGS[m], BASELINE_REPROJ_THRESHOLD)
            n_in = int(mask.sum()) if mask is not None else 0
        secs = t_match + (time.perf_counter() - t1)
        out[m] = MethodOutput(
            None if H is None else np.asarray(H, np.float64), secs, f"{len(src)} matches, {n_in} inliers"
        )
    return out
