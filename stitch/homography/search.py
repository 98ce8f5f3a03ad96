"""The bottom-up search's state and its feature levels: what every candidate source works from.

A ``Level`` is one rung of the feature search (detector, matcher, estimator grid); ``FeatureCache`` keeps one
image's detections for every level and pair; ``SearchState`` is what a source sees (the pair, the scoring
context, the config, the candidates so far). The config is any object with the fields of ``SearchConfig``
(stitch.homography.config.SelectConfig is the one the search builds).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from stitch.geometry import transfer_errors
from stitch.homography import quality
from stitch.homography.candidates import Candidate, EstimatorSpec, generate
from stitch.homography.features import FeatureConfig, Features, detect
from stitch.homography.matching import MatchConfig, Matches, match


@dataclass(frozen=True)
class Level:
    """One rung of the bottom-up search: feature and matching settings plus the estimator grid run on them."""

    name: str
    features: FeatureConfig
    matching: MatchConfig
    specs: tuple[EstimatorSpec, ...]


class SearchConfig(Protocol):
    """The settings a candidate source reads (stitch.homography.config.SelectConfig has them all)."""

    levels: Sequence[Level]
    seed: int
    min_inliers: int
    deep_weights: str | None
    sources: tuple[str, ...]


@dataclass
class FeatureCache:
    """One image's detections: Features per FeatureConfig, and the uncapped detections they are cut from
    (stitch.features.detect's raw_cache), so levels that differ only in the keypoint cap detect once. Threads
    that share a cache detect each image once (``lock``)."""

    features: dict[FeatureConfig, Features] = field(default_factory=dict)
    raw: dict = field(default_factory=dict)
    mask: np.ndarray | None = None  # (H, W) bool: features only where True (stitch.homography.features.detect)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def clear(self) -> None:
        """Forget the detections (the mask stays): a later image_features detects again, with the same result."""
        with self.lock:
            self.features.clear()
            self.raw.clear()


def image_features(img: np.ndarray, cfg: FeatureConfig, cache: FeatureCache) -> Features:
    """Features of img under cfg, from/into the image's FeatureCache."""
    with cache.lock:
        if cfg not in cache.features:
            cache.features[cfg] = detect(img, cfg, cache.raw, cache.mask)
        return cache.features[cfg]


def empty_matches() -> Matches:
    """A match set with no matches (the support evidence of a candidate that has none)."""
    z = np.zeros((0, 2))
    return Matches(z, z.copy(), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))


@dataclass
class SearchState:
    """What a source sees: the pair (H, W, 3) uint8, the scoring context, the config, the candidates so far."""

    src_img: np.ndarray
    dst_img: np.ndarray
    ctx: quality.ScoringContext
    config: SearchConfig
    src_cache: FeatureCache
    dst_cache: FeatureCache
    candidates: list[Candidate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def best(self) -> Candidate | None:
        """The best-scoring plausible candidate so far, or None."""
        ok = [c for c in self.candidates if c.ok]
        return max(ok, key=lambda c: c.score) if ok else None

    def best_score(self) -> float:
        """Score of ``best()`` (-inf when there is none)."""
        b = self.best()
        return float("-inf") if b is None else b.score

    def support_matches(self) -> Matches | None:
        """The match set direct candidates are scored against: the best candidate's (None when there is none)."""
        b = self.best()
        return None if b is None else b.matches


def score_candidates(new: list[Candidate], ctx: quality.ScoringContext, min_inliers: int,
                     support: Matches | None = None) -> list[Candidate]:
    """Score each candidate in place (quality score + plausibility gate) and return them.

    A candidate with matches of its own needs ``min_inliers`` estimator inliers; one without (a direct
    estimator) is scored on ``support`` (the best match set so far) for the support term. Estimators of a grid
    often return the very same matrix: it is scored once (docs/measurements.md, "search").
    """
    done: dict[tuple[bytes, int], tuple[float, dict[str, float], str | None]] = {}
    for c in new:
        t1 = time.perf_counter()
        own = c.matches is not None
        if own and c.ok and c.n_inliers < min_inliers:
            c.rejected = f"{c.n_inliers} inliers < min_inliers={min_inliers}"
        if c.ok:
            used = c.matches if own else support
            key = (np.ascontiguousarray(c.H, np.float64).tobytes(), id(used))
            if key not in done:
                done[key] = quality.score(c.H, ctx, used)
            score, parts, c.rejected = done[key]
            c.score, c.parts = score, dict(parts)
        c.seconds += time.perf_counter() - t1
    return new


def level_specs(level: Level, seed: int) -> list[EstimatorSpec]:
    """The level's estimator runs as the search makes them: each spec's own seed plus the search ``seed``."""
    return [replace(s, seed=s.seed + seed) for s in level.specs]


def level_candidates(level: Level, src_img: np.ndarray, dst_img: np.ndarray, seed: int,
                     src_cache: FeatureCache, dst_cache: FeatureCache) -> list[Candidate]:
    """Every estimator run of one feature level on its matches (unscored); seconds include a share of
    detect+match."""
    t0 = time.perf_counter()
    fa = image_features(src_img, level.features, src_cache)
    fb = image_features(dst_img, level.features, dst_cache)
    m = match(fa, fb, level.matching)
    specs = level_specs(level, seed)
    tags = {"level": level.name, "features": level.features.label(), "matching": level.matching.label()}
    new = generate(m, specs, tags)
    overhead = (time.perf_counter() - t0 - sum(c.seconds for c in new)) / max(len(new), 1)
    for c in new:
        c.seconds += overhead
    return new


def transfer_inliers(H: np.ndarray, matches: Matches | None, tau: float) -> np.ndarray:
    """(N,) bool: matches within ``tau`` px symmetric transfer error of H (empty when there are no matches)."""
    if matches is None or len(matches) == 0:
        return np.zeros(0, bool)
    return transfer_errors(H, matches.src_pts, matches.dst_pts) < tau
