"""Settings of the pair search: presets, their feature levels and estimator grids, and SelectConfig.

``SelectConfig.from_options(preset=..., ...)`` is the one place options are checked (each names itself on
error); the search (stitch.homography.select), the panorama's pair screening and the CLI read it.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from stitch.errors import ConfigError, check_choice
from stitch.homography import quality
from stitch.homography.candidates import EstimatorSpec
from stitch.homography.features import DETECTOR_CHOICES, FeatureConfig
from stitch.homography.matching import MatchConfig
from stitch.homography.refine import DEFAULT_REFINER, check_refiner
from stitch.homography.search import Level
from stitch.homography.sources import DEFAULT_SOURCES, check_sources

PRESET_CHOICES = ("fast", "accurate", "exhaustive")
DEFAULT_PRESET = "accurate"
DEFAULT_ACCEPT_SCORE = 0.55
#: An accepted winner scoring below this still meets the direct source's challenge (sources.py; only on an overlap
#: small enough for the network). On small or low-texture pairs the scores of right and of slightly wrong feature
#: winners overlap up to about 0.96 (why this value: docs/measurements.md, "sources").
DEFAULT_CHALLENGE_BELOW = 0.98
DEFAULT_MIN_INLIERS = 8


def estimator_grid(preset: str) -> tuple[EstimatorSpec, ...]:
    """The estimator x threshold x seed grid of a preset."""
    if preset == "fast":
        return (EstimatorSpec("USAC_MAGSAC", 2.0), EstimatorSpec("RANSAC", 3.0), EstimatorSpec("USAC_ACCURATE", 2.0))
    grid = [
        EstimatorSpec("USAC_MAGSAC", 1.0), EstimatorSpec("USAC_MAGSAC", 2.0), EstimatorSpec("USAC_MAGSAC", 4.0),
        EstimatorSpec("USAC_ACCURATE", 2.0), EstimatorSpec("USAC_PROSAC", 3.0),
        EstimatorSpec("RANSAC", 2.0, 0), EstimatorSpec("RANSAC", 2.0, 1), EstimatorSpec("RANSAC", 4.0),
        EstimatorSpec("LMEDS", 3.0), EstimatorSpec("RHO", 3.0),
    ]
    if preset == "exhaustive":
        grid += [EstimatorSpec("USAC_MAGSAC", 2.0, s) for s in (1, 2, 3)]
        grid += [EstimatorSpec("RANSAC", t, s) for t in (1.0, 3.0, 6.0) for s in (0, 2)]
    return tuple(grid)


def preset_levels(preset: str, detector: str | None = None, max_keypoints: int | None = None) -> tuple[Level, ...]:
    """The feature/matching levels of a preset, cheapest first; ``detector`` pins the first level's detector."""
    check_choice("preset", preset, PRESET_CHOICES)
    if detector is not None:
        check_choice("detector", detector, DETECTOR_CHOICES)
    grid = estimator_grid(preset)
    n = max_keypoints if max_keypoints is not None else (2000 if preset == "fast" else 4000)
    first = FeatureConfig(detector=detector or ("orb" if preset == "fast" else "sift"), max_keypoints=n)
    levels = [Level(first.label(), first, MatchConfig(0.8, True), grid)]
    if preset == "fast":
        if first.detector != "sift":
            levels.append(Level(f"sift-{n}", FeatureConfig("sift", n), MatchConfig(0.8, True), grid))
        return tuple(levels)
    if first.detector != "asift":
        dense = FeatureConfig("sift", 2 * n)
        levels.append(Level(f"{dense.label()}-loose", dense, MatchConfig(0.9, False), grid))
        levels.append(Level("asift", FeatureConfig("asift", n), MatchConfig(0.8, True), grid))
    return tuple(levels)


@dataclass(frozen=True)
class SelectConfig:
    """Everything estimate_pair needs. Build it with ``SelectConfig.from_options(preset=..., ...)``."""

    levels: tuple[Level, ...]
    accept_score: float = DEFAULT_ACCEPT_SCORE
    refiner: str = DEFAULT_REFINER
    score: quality.ScoreConfig = field(default_factory=quality.ScoreConfig)
    seed: int = 0
    min_inliers: int = DEFAULT_MIN_INLIERS
    exhaustive: bool = False
    deep_weights: str | None = None  # refiner "deep" and the direct source: a weights file (None: the shipped ones)
    sources: tuple[str, ...] = ("features",)  # candidate sources in search order (sources.SOURCES)
    challenge_below: float = DEFAULT_CHALLENGE_BELOW  # an accepted winner below this still meets later challenges

    @classmethod
    def from_options(cls, preset: str = DEFAULT_PRESET, detector: str | None = None, max_keypoints: int | None = None,
                     refiner: str | None = None, seed: int = 0, accept_score: float | None = None,
                     estimators: list[str] | None = None, thresholds: list[float] | None = None,
                     ratio: float | None = None, score_max_side: int | None = None,
                     min_inliers: int = DEFAULT_MIN_INLIERS,
                     deep_weights: str | os.PathLike | None = None,
                     sources: Any = None, challenge_below: float | None = None) -> SelectConfig:
        """Config from a named preset plus overrides (each override is checked and names itself on error)."""
        if max_keypoints is not None and max_keypoints < 8:
            raise ConfigError(f"max_keypoints={max_keypoints}: must be at least 8")
        if score_max_side is not None and score_max_side < 32:
            raise ConfigError(f"score_max_side={score_max_side}: must be at least 32")
        if min_inliers < 4:
            raise ConfigError(f"min_inliers={min_inliers}: a homography needs at least 4")
        if accept_score is not None and not (isinstance(accept_score, (int, float)) and 0.0 <= accept_score <= 1.0):
            raise ConfigError(f"accept_score={accept_score!r}: the quality score lies in [0, 1]; choose a value in "
                              f"that range (default {DEFAULT_ACCEPT_SCORE})")
        if challenge_below is not None and not (isinstance(challenge_below, (int, float))
                                                and 0.0 <= challenge_below <= 1.0):
            raise ConfigError(f"challenge_below={challenge_below!r}: the quality score lies in [0, 1]; 0 turns the "
                              f"direct source's challenge off (default {DEFAULT_CHALLENGE_BELOW})")
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"seed={seed!r}: must be a non-negative integer")
        levels = preset_levels(preset, detector, max_keypoints)
        if estimators or thresholds:
            base = levels[0].specs
            methods = estimators or sorted({s.method for s in base}, key=[s.method for s in base].index)
            ths = thresholds or sorted({s.threshold for s in base})
            specs = tuple(EstimatorSpec(m, t) for m in methods for t in ths)
            levels = tuple(replace(lv, specs=specs) for lv in levels)
        if ratio is not None:
            levels = tuple(replace(lv, matching=MatchConfig(ratio, lv.matching.mutual)) for lv in levels)
        if deep_weights is not None and not isinstance(deep_weights, (str, os.PathLike)):
            raise ConfigError(f"deep_weights={deep_weights!r}: expected the path of a weights file")
        ref = refiner if refiner is not None else ("lsq" if preset == "fast" else DEFAULT_REFINER)
        check_refiner(ref)
        if sources is None:
            srcs = ("features",) if preset == "fast" else DEFAULT_SOURCES
        else:
            srcs = check_sources(sources)
        sc = quality.ScoreConfig() if score_max_side is None else quality.ScoreConfig(work_max_side=score_max_side)
        return cls(levels=levels, accept_score=DEFAULT_ACCEPT_SCORE if accept_score is None else accept_score,
                   refiner=ref, score=sc, seed=int(seed), min_inliers=min_inliers,
                   exhaustive=(preset == "exhaustive"),
                   deep_weights=None if deep_weights is None else os.fspath(deep_weights), sources=srcs,
                   challenge_below=DEFAULT_CHALLENGE_BELOW if challenge_below is None else float(challenge_below))


#: The options of ``SelectConfig.from_options`` besides preset and seed (estimate_homography's ``options``), read
#: from its signature: a new keyword there is an option everywhere.
OPTION_NAMES = tuple(p for p in inspect.signature(SelectConfig.from_options).parameters if p not in ("preset", "seed"))


def harder_search(exhaustive: bool, asift: bool) -> str:
    """Advice for a search that found nothing: "try ..." with what it has not tried yet ('' when it tried all)."""
    tries = [t for t, done in (("preset='exhaustive'", exhaustive), ("detector='asift'", asift)) if not done]
    return "try " + " or ".join(tries) if tries else ""
