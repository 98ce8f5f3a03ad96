"""Stage 5: choose the best homography. Bottom-up search over the candidate sources (stitch.homography.sources).

The search starts with the cheapest feature/matching level, runs every estimator setting of that level on
its matches (one Candidate each), scores all of them with the stitching-quality score, and escalates to a
costlier step (more features, a looser ratio, affine-simulated SIFT, then the other sources: learned
matchers, view synthesis, direct estimators) only while the best score stays below ``accept_score``. The
winner is then refined (least squares, ECC; the REFINERS table) and a refinement is kept only when it
raises the score.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stitch.errors import ConfigError, NoOverlapError
from stitch.homography import quality
from stitch.homography.candidates import Candidate
from stitch.homography.config import DEFAULT_PRESET, OPTION_NAMES, SelectConfig, harder_search
from stitch.homography.matching import Matches
from stitch.homography.refine import corner_shift, refine_chain
from stitch.homography.search import (
    FeatureCache,
    Level,
    SearchState,
    empty_matches,
    level_candidates,
    score_candidates,
    transfer_inliers,
)
from stitch.homography.sources import run_sources
from stitch.io import ImageLike, image_name, load_image


@dataclass
class HomographyResult:
    """The chosen homography. H (3, 3) float64 maps src px to dst px; candidates are every scored try, best first."""

    H: np.ndarray
    score: float
    parts: dict[str, float]
    candidates: list[Candidate]
    matches: Matches
    inliers: np.ndarray
    refined_by: str
    levels_tried: list[str]
    seconds: float
    src_size: tuple[int, int]
    dst_size: tuple[int, int]
    warnings: list[str] = field(default_factory=list)
    refinements: list[dict[str, Any]] = field(default_factory=list)  # per refiner step: refiner, kept, reason

    @property
    def best(self) -> Candidate:
        """The winning (unrefined) candidate."""
        return self.candidates[0]

    @property
    def n_inliers(self) -> int:
        """Matches within the support threshold of the final H."""
        return int(np.count_nonzero(self.inliers))

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary of the result (the matrix, score parts, and every candidate)."""
        return {
            "H": self.H.tolist(),
            "score": round(float(self.score), 6),
            "parts": {k: round(float(v), 6) for k, v in self.parts.items()},
            "refined_by": self.refined_by,
            "inliers": self.n_inliers,
            "matches": len(self.matches),
            "source": self.best.source,
            "levels_tried": self.levels_tried,
            "seconds": round(self.seconds, 4),
            "warnings": list(self.warnings),
            "refinements": list(self.refinements),
            "candidates": [c.summary() for c in self.candidates],
        }


#: A refinement may move a src corner by at most this share of the src diagonal (and at least
#: MIN_REFINE_SHIFT_PX): a larger move is a different alignment, not a refinement of the chosen one.
MAX_REFINE_SHIFT = 0.03
MIN_REFINE_SHIFT_PX = 10.0


def max_refine_shift(src_size: tuple[int, int]) -> float:
    """Largest corner move (px) a refinement may make: MAX_REFINE_SHIFT of the src diagonal, at least 10 px."""
    return max(MIN_REFINE_SHIFT_PX, MAX_REFINE_SHIFT * float(np.hypot(*src_size)))


def refinement_verdict(H: np.ndarray, H2: np.ndarray | None, score: float, ctx: quality.ScoringContext,
                       support: Matches | None) -> tuple[bool, str, float, dict[str, float]]:
    """Whether the search keeps refinement H2 (3, 3) of H (scoring ``score``): (kept, why, H2's score, parts)."""
    if H2 is None:
        return False, "did not converge", float("-inf"), {}
    shift, cap = corner_shift(H, H2, *ctx.src_size, ctx.dst_size), max_refine_shift(ctx.src_size)
    if shift > cap:
        return False, (f"moves a src corner {shift:.1f} px, more than the refinement cap {cap:.1f} px "
                       f"({MAX_REFINE_SHIFT:.0%} of the src diagonal)"), float("-inf"), {}
    s2, p2, r2 = quality.score(H2, ctx, support)
    if r2 is not None:
        return False, f"implausible: {r2}", s2, p2
    if s2 <= score:
        return False, f"score {s2:.4f} is not above {score:.4f}", s2, p2
    return True, f"score {score:.4f} -> {s2:.4f}", s2, p2


def run_level(level: Level, src_img: np.ndarray, dst_img: np.ndarray, cfg: SelectConfig,
              ctx: quality.ScoringContext, src_cache: FeatureCache, dst_cache: FeatureCache) -> list[Candidate]:
    """Every estimator run of one level on its matches, each scored; seconds include a share of detect+match."""
    new = level_candidates(level, src_img, dst_img, cfg.seed, src_cache, dst_cache)
    return score_candidates(new, ctx, cfg.min_inliers)


def _sort_key(c: Candidate) -> tuple:
    return (not c.ok, -c.score if c.ok else 0.0, -c.n_inliers)


def estimate_pair(src_img: np.ndarray, dst_img: np.ndarray, config: SelectConfig | None = None,
                  src_cache: FeatureCache | None = None, dst_cache: FeatureCache | None = None,
                  names: tuple[str, str] = ("src", "dst"),
                  progress: Callable[[str], None] | None = None) -> HomographyResult:
    """Bottom-up candidate search between (H, W, 3) uint8 images; raises NoOverlapError if nothing is plausible."""
    cfg = config or SelectConfig.from_options()
    t0 = time.perf_counter()
    src_cache = FeatureCache() if src_cache is None else src_cache  # levels share one detection per image
    dst_cache = FeatureCache() if dst_cache is None else dst_cache
    ctx = quality.make_context(src_img, dst_img, cfg.score)
    state = SearchState(src_img, dst_img, ctx, cfg, src_cache, dst_cache)
    tried = run_sources(state, progress=(lambda step: progress(f"{names[0]} -> {names[1]}: {step}")) if progress
                        else None, accept=lambda best: best >= cfg.accept_score and not cfg.exhaustive)
    cands = state.candidates
    cands.sort(key=_sort_key)
    if not cands or not cands[0].ok:
        why = cands[0].rejected if cands else "no candidates"
        also = f"; {state.warnings[0]}" if state.warnings else ""  # e.g. a source that failed
        advice = harder_search(cfg.exhaustive, any(lv.features.detector == "asift" for lv in cfg.levels))
        raise NoOverlapError(f"no plausible homography from {names[0]} to {names[1]} (best try: {why}{also}); "
                             "the images may not overlap" + (f" - {advice}" if advice else ""))
    win = cands[0]
    H, sc, parts, how = win.H, win.score, win.parts, "none"
    matches = win.matches
    support = matches if matches is not None else next((c.matches for c in cands if c.ok and c.matches is not None),
                                                      None)
    steps: list[dict[str, Any]] = []
    for name, fn in refine_chain(cfg.refiner, src_img, dst_img, matches, {"deep": {"weights": cfg.deep_weights}}):
        H2 = fn(H)
        kept, why, s2, p2 = refinement_verdict(H, H2, sc, ctx, support)
        steps.append({"refiner": name, "kept": kept, "reason": why})
        if kept:
            H, sc, parts, how = H2, s2, p2, name if how == "none" else f"{how}+{name}"
    final = matches if matches is not None else (support if support is not None else empty_matches())
    inl = transfer_inliers(H, final, cfg.score.support_tau)
    res = HomographyResult(H, sc, parts, cands, final, inl, how, tried, time.perf_counter() - t0,
                           ctx.src_size, ctx.dst_size, warnings=list(dict.fromkeys(state.warnings)), refinements=steps)
    if sc < cfg.accept_score:
        res.warnings.append(f"low quality score {sc:.3f} < {cfg.accept_score}: check the alignment")
    return res


def estimate_homography(src: ImageLike, dst: ImageLike, *, preset: str = DEFAULT_PRESET, seed: int = 0,
                        config: SelectConfig | None = None, progress: Callable[[str], None] | None = None,
                        **options: Any) -> HomographyResult:
    """Estimate H (3, 3) mapping src pixels to dst pixels; src/dst are paths or (H, W[, C]) arrays.

    ``options`` override the preset: detector, max_keypoints, refiner, accept_score, estimators,
    thresholds, ratio, score_max_side, min_inliers, deep_weights, challenge_below, sources (names of
    stitch.homography.sources.SOURCES, a list or a comma list; see SelectConfig.from_options).
    """
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(OPTION_NAMES)}")
    if config is not None and options:
        raise ConfigError(f"pass either config= or options ({', '.join(sorted(options))}), not both")
    cfg = config or SelectConfig.from_options(preset=preset, seed=seed, **options)
    a, b = load_image(src, "src"), load_image(dst, "dst")
    res = estimate_pair(a, b, cfg, names=(image_name(src, 0) if not isinstance(src, np.ndarray) else "src",
                                          image_name(dst, 1) if not isinstance(dst, np.ndarray) else "dst"),
                        progress=progress)
    for w in res.warnings:
        warnings.warn(w, stacklevel=2)
    return res
