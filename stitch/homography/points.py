"""The robust core on correspondences the caller already has: ``find_homography(src_pts, dst_pts)``.

The same machinery as ``estimate_homography`` minus detection and matching: the preset's estimator grid
(one Candidate each, source ``points``), the plausibility gate, support scoring, selection by score and
the refiners (least squares on the inliers; ECC and the learned refiner only when images are given).
Without images the score is the support term alone, ``w_support * support`` (the photometric part of
the quality score needs the pixels); with images (``src=``/``dst=``) it is the full quality score.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from stitch.errors import ConfigError, EstimationError
from stitch.homography import quality
from stitch.homography.candidates import Candidate, generate
from stitch.homography.config import DEFAULT_PRESET, SelectConfig
from stitch.homography.matching import Matches
from stitch.homography.refine import corner_shift, refine_chain
from stitch.homography.search import level_specs, score_candidates, transfer_inliers
from stitch.homography.select import HomographyResult, max_refine_shift
from stitch.io import ImageLike, load_image

SOURCE_POINTS = "points"


def _points(name: str, pts: Any) -> np.ndarray:
    try:
        a = np.asarray(pts, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected an (N, 2) array of pixel coordinates") from None
    if a.ndim == 3 and a.shape[1] == 1:  # OpenCV's (N, 1, 2)
        a = a[:, 0]
    if a.ndim != 2 or a.shape[1] != 2:
        raise ConfigError(f"{name}: expected an (N, 2) array of pixel coordinates, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        bad = int(np.flatnonzero(~np.isfinite(a).all(axis=1))[0])
        raise ConfigError(f"{name}: row {bad} is not finite (NaN or inf)")
    return a


def _size(name: str, size: Any, pts: np.ndarray) -> tuple[int, int]:
    """(width, height): the given size, or the points' bounding box from the origin."""
    if size is None:
        return int(np.ceil(max(pts[:, 0].max(), 1.0))) + 1, int(np.ceil(max(pts[:, 1].max(), 1.0))) + 1
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={size!r}: expected (width, height)") from None
    if w < 1 or h < 1:
        raise ConfigError(f"{name}={size!r}: width and height must be >= 1")
    return w, h


def _support_only(cands: list[Candidate], sizes: tuple[tuple[int, int], tuple[int, int]],
                  cfg: quality.ScoreConfig, min_inliers: int) -> None:
    """Score candidates in place without images: plausibility gate, then w_support * support."""
    for c in cands:
        t1 = time.perf_counter()
        if c.ok and c.n_inliers < min_inliers:
            c.rejected = f"{c.n_inliers} inliers < min_inliers={min_inliers}"
        if c.ok:
            c.rejected = quality.plausibility(c.H, sizes[0], sizes[1], cfg)
        if c.ok:
            sup, mass, rms = quality.support(c.H, c.matches, cfg)
            c.score, c.parts = cfg.w_support * sup, {"support": sup, "inlier_mass": mass, "inlier_rms": rms}
        c.seconds += time.perf_counter() - t1


def find_homography(src_pts: Any, dst_pts: Any, *, src: ImageLike | None = None, dst: ImageLike | None = None,
                    src_size: tuple[int, int] | None = None, dst_size: tuple[int, int] | None = None,
                    preset: str = DEFAULT_PRESET, seed: int = 0, refiner: str | None = None,
                    estimators: list[str] | None = None, thresholds: list[float] | None = None,
                    min_inliers: int = 4) -> HomographyResult:
    """H (3, 3) mapping src px to dst px from given correspondences, like cv2.findHomography(src_pts, dst_pts).

    Args:
        src_pts, dst_pts: (N, 2) (or OpenCV's (N, 1, 2)) pixel coordinates, N >= 4, row i matching row i.
        src, dst: optional images (paths or arrays): the photometric part of the score, ECC and deep refiners.
        src_size, dst_size: (width, height) for the plausibility gate (default: the images' sizes, else the
            points' bounding boxes).
        preset, estimators, thresholds, seed: the estimator grid, as in ``estimate_homography``.
        refiner: a REFINERS name (default: "ecc" with images, "lsq" without; ecc/deep need images).
        min_inliers: estimator inliers a candidate needs.

    Returns:
        HomographyResult; ``inliers`` (N,) flags the given correspondences within the support threshold of H,
        ``candidates`` every scored estimator run (source "points").

    Raises:
        ConfigError: malformed, non-finite or too few points, or a bad option. EstimationError: no plausible H.
    """
    t0 = time.perf_counter()
    a, b = _points("src_pts", src_pts), _points("dst_pts", dst_pts)
    if len(a) != len(b):
        raise ConfigError(f"src_pts has {len(a)} rows but dst_pts has {len(b)}: they must correspond row by row")
    if len(a) < 4:
        raise ConfigError(f"src_pts: {len(a)} correspondences; a homography needs at least 4")
    if (src is None) != (dst is None):
        raise ConfigError("pass both src= and dst= images, or neither")
    with_images = src is not None
    ref = refiner if refiner is not None else ("ecc" if with_images else "lsq")
    if not with_images and ref not in ("none", "lsq"):
        raise ConfigError(f"refiner={ref!r} aligns pixels: pass src= and dst= images, or use 'lsq' or 'none'")
    cfg = SelectConfig.from_options(preset=preset, seed=seed, refiner=ref, estimators=estimators,
                                    thresholds=thresholds, min_inliers=max(4, int(min_inliers)))
    idx = np.arange(len(a))
    m = Matches(a, b, idx, idx, np.zeros(len(a)))
    specs = level_specs(cfg.levels[0], cfg.seed)
    cands = generate(m, specs, {"level": SOURCE_POINTS, "features": "given", "matching": "given"})
    for c in cands:
        c.source = SOURCE_POINTS
    if with_images:
        img_a, img_b = load_image(src, "src"), load_image(dst, "dst")
        ctx = quality.make_context(img_a, img_b, cfg.score)
        sizes = ctx.src_size, ctx.dst_size
        score_candidates(cands, ctx, cfg.min_inliers)
    else:
        img_a = img_b = None
        sizes = _size("src_size", src_size, a), _size("dst_size", dst_size, b)
        _support_only(cands, sizes, cfg.score, cfg.min_inliers)
    cands.sort(key=lambda c: (not c.ok, -c.score if c.ok else 0.0, -c.n_inliers))
    if not cands[0].ok:
        raise EstimationError(f"no plausible homography from {len(a)} correspondences (best try: {cands[0].rejected})")
    win = cands[0]
    H, sc, parts, how = win.H, win.score, win.parts, "none"
    steps = refine_chain(cfg.refiner, img_a, img_b, m, {"lsq": {"min_points": 4}, "deep": {"weights": cfg.deep_weights}})
    for name, fn in steps:
        H2 = fn(H)
        if H2 is None or corner_shift(H, H2, *sizes[0], sizes[1]) > max_refine_shift(sizes[0]):
            continue
        tmp = [Candidate(name, {}, H2, win.inliers, m)]
        if with_images:
            score_candidates(tmp, ctx, 0)
        else:
            _support_only(tmp, sizes, cfg.score, 0)
        if tmp[0].ok and tmp[0].score >= sc:  # on exact points least squares ties the score and is exact
            H, sc, parts, how = H2, tmp[0].score, tmp[0].parts, name if how == "none" else f"{how}+{name}"
    inl = transfer_inliers(H, m, cfg.score.support_tau)
    return HomographyResult(H, sc, parts, cands, m, inl, how, [SOURCE_POINTS], time.perf_counter() - t0,
                            sizes[0], sizes[1])
