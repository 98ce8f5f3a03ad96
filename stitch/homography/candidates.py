"""Stage 3: repeated robust estimation. Every (estimator, threshold, seed) run on a match set is one Candidate."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from stitch.errors import ConfigError
from stitch.geometry import normalize_h
from stitch.homography.matching import Matches
from stitch.profile import profiled

ESTIMATORS: dict[str, int] = {
    "RANSAC": cv2.RANSAC,
    "USAC_MAGSAC": cv2.USAC_MAGSAC,
    "USAC_ACCURATE": cv2.USAC_ACCURATE,
    "USAC_DEFAULT": cv2.USAC_DEFAULT,
    "USAC_PROSAC": cv2.USAC_PROSAC,
    "LMEDS": cv2.LMEDS,
    "RHO": cv2.RHO,
}
ESTIMATOR_CHOICES = tuple(ESTIMATORS)
DEFAULT_MAX_ITERS = 5000
DEFAULT_CONFIDENCE = 0.999


@dataclass(frozen=True)
class EstimatorSpec:
    """One robust-estimation run: ``method`` from ESTIMATOR_CHOICES, reprojection ``threshold`` px, ``seed``."""

    method: str
    threshold: float = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ESTIMATORS:
            raise ConfigError(f"estimator {self.method!r}: choose one of {', '.join(ESTIMATOR_CHOICES)}")
        if not self.threshold > 0:
            raise ConfigError(f"threshold={self.threshold}: must be > 0 px")


@dataclass
class Candidate:
    """A scored homography hypothesis. H (3, 3) maps src px to dst px; inliers (N,) bool over the match set."""

    method: str
    params: dict[str, Any]
    H: np.ndarray | None
    inliers: np.ndarray
    matches: Matches | None = field(default=None, repr=False)
    score: float = float("-inf")
    parts: dict[str, float] = field(default_factory=dict)
    rejected: str | None = None
    seconds: float = 0.0
    source: str = "features"  # the candidate source that produced it (stitch.homography.sources.SOURCES)

    @property
    def n_inliers(self) -> int:
        """Inliers reported by the estimator."""
        return int(np.count_nonzero(self.inliers))

    @property
    def ok(self) -> bool:
        """True when the candidate has a matrix and passed the plausibility checks."""
        return self.H is not None and self.rejected is None

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no arrays except H as nested lists)."""
        return {
            "method": self.method,
            "source": self.source,
            "params": dict(self.params),
            "H": None if self.H is None else self.H.tolist(),
            "inliers": self.n_inliers,
            "matches": 0 if self.matches is None else len(self.matches),
            "score": None if not np.isfinite(self.score) else round(float(self.score), 6),
            "parts": {k: round(float(v), 6) for k, v in self.parts.items()},
            "rejected": self.rejected,
            "seconds": round(self.seconds, 4),
        }


@profiled("pair: estimation")
def estimate(matches: Matches, spec: EstimatorSpec, max_iters: int = DEFAULT_MAX_ITERS,
             confidence: float = DEFAULT_CONFIDENCE) -> tuple[np.ndarray | None, np.ndarray]:
    """Run one robust estimator on the matches; returns (H (3, 3) or None, inlier mask (N,) bool)."""
    n = len(matches)
    if n < 4:
        return None, np.zeros(n, bool)
    if spec.method == "USAC_PROSAC":
        order = np.argsort(matches.ratio, kind="stable")  # PROSAC samples the most distinctive matches first
    elif spec.seed:
        order = np.random.default_rng(spec.seed).permutation(n)  # a local seed: reorders what the sampler sees
    else:
        order = np.arange(n)
    src = matches.src_pts[order].astype(np.float32)
    dst = matches.dst_pts[order].astype(np.float32)
    try:
        H, mask = cv2.findHomography(src, dst, ESTIMATORS[spec.method], spec.threshold,
                                     maxIters=max_iters, confidence=confidence)
    except cv2.error:
        return None, np.zeros(n, bool)
    if H is None or mask is None or not np.all(np.isfinite(H)):
        return None, np.zeros(n, bool)
    inl = np.zeros(n, bool)
    inl[order] = mask.ravel().astype(bool)
    return normalize_h(H), inl


def generate(matches: Matches, specs: list[EstimatorSpec], tags: dict[str, Any] | None = None,
             max_iters: int = DEFAULT_MAX_ITERS, confidence: float = DEFAULT_CONFIDENCE) -> list[Candidate]:
    """One Candidate per spec on the same matches; ``tags`` (feature/matching settings) go into each params."""
    out = []
    for spec in specs:
        t0 = time.perf_counter()
        H, inl = estimate(matches, spec, max_iters, confidence)
        params = dict(tags or {})
        params.update(threshold=spec.threshold, seed=spec.seed)
        cand = Candidate(spec.method, params, H, inl, matches, seconds=time.perf_counter() - t0)
        if H is None:
            cand.rejected = "estimator found no model" if len(matches) >= 4 else f"only {len(matches)} matches (< 4)"
        out.append(cand)
    return out
