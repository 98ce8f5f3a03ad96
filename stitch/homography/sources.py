"""Candidate sources: where the bottom-up search gets its homography candidates. ``SOURCES`` is the one table.

A source looks at the pair and at what the search has found so far (a ``SearchState``) and yields *steps*,
cheapest first; each step is a name and a thunk that returns new, unscored candidates. The search
(``stitch.homography.select.estimate_pair``) runs the sources in the order of their ``cost``, scores
every candidate with the same quality score and plausibility gate (``score_candidates``), and stops as
soon as a score is accepted, so a pair accepted at the first step pays nothing for the later sources.

* ``features``: the preset's detector+matcher levels (SIFT, denser SIFT with a looser ratio, ASIFT);
* ``synthesis``: MODS-style view synthesis (``stitch.homography.synthesis``), in rounds of more views;
* ``learned``: learned detectors with their LightGlue matchers (XFeat+LighterGlue, DISK+LightGlue; the
  optional extra ``learned``);
* ``direct``: matrices with no matches of their own: the learned refiner's coarse mode
  (``stitch.deep.refine_deep(H, coarse=True)``) from the identity and from the best candidate so far,
  and ECC started from those starts and from the learned refiner's results. Its *challenge* (the coarse
  mode from the identity and from the winner) also runs when an earlier source was accepted with a score
  below ``SelectConfig.challenge_below``, on an overlap small enough for the network's working window.

Every candidate records its ``source``. A source whose optional extra is missing, or that fails,
becomes one warning on the result; the other sources still run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from stitch.errors import ConfigError
from stitch.geometry import overlap_box
from stitch.homography.candidates import Candidate, generate
from stitch.homography.features import FeatureConfig
from stitch.homography.matching import Matches
from stitch.homography.search import (
    SearchState,
    image_features,
    level_candidates,
    level_specs,
    score_candidates,
)

# --- the sources ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One unit of a source's work: ``run()`` returns new, unscored candidates (their ``source`` is set after)."""

    name: str
    run: Callable[[], list[Candidate]]


def features_source(state: SearchState) -> Iterator[Step]:
    """The preset's detector+matcher levels, cheapest first (today's search)."""
    cfg = state.config
    for level in cfg.levels:
        yield Step(level.name, lambda level=level: level_candidates(level, state.src_img, state.dst_img, cfg.seed,
                                                                   state.src_cache, state.dst_cache))


def learned_source(state: SearchState) -> Iterator[Step]:
    """Each learned detector with its LightGlue matcher, under the first level's estimator grid."""
    from stitch.homography.learned import LEARNED_CHOICES, unavailable

    for name in LEARNED_CHOICES:
        why = unavailable(name)
        if why is not None:
            state.warnings.append(f"source 'learned' ({name}) skipped: {why}")
            continue
        yield Step(f"{name}+lightglue", lambda name=name: learned_candidates(name, state))


def learned_candidates(name: str, state: SearchState) -> list[Candidate]:
    """Candidates of one learned detector + its LightGlue matcher (the estimator grid of the first level)."""
    from stitch.homography.learned import DEFAULT_MAX_KEYPOINTS, match_learned

    t0 = time.perf_counter()
    fcfg = FeatureConfig(detector=name, max_keypoints=DEFAULT_MAX_KEYPOINTS)
    fa = image_features(state.src_img, fcfg, state.src_cache)
    fb = image_features(state.dst_img, fcfg, state.dst_cache)
    pairs, conf = match_learned(name, fa.pts, fa.desc, fa.image_size, fb.pts, fb.desc, fb.image_size)
    m = Matches(fa.pts[pairs[:, 0]].astype(np.float64), fb.pts[pairs[:, 1]].astype(np.float64), pairs[:, 0],
                pairs[:, 1], (1.0 - conf).astype(np.float64))  # "ratio": lower is more distinctive (PROSAC order)
    cfg = state.config
    new = generate(m, level_specs(cfg.levels[0], cfg.seed), {"level": f"{name}+lightglue", "features": fcfg.label(), "matching": "lightglue"})
    overhead = (time.perf_counter() - t0 - sum(c.seconds for c in new)) / max(len(new), 1)
    for c in new:
        c.seconds += overhead
    return new


def synthesis_source(state: SearchState) -> Iterator[Step]:
    """MODS-style view synthesis in rounds (stitch.homography.synthesis); a round runs only while not accepted."""
    from stitch.homography.synthesis import DEFAULT_ROUNDS, synthesis_candidates

    for i, rnd in enumerate(DEFAULT_ROUNDS):
        yield Step(f"synthesis-{i + 1}", lambda i=i, rnd=rnd: synthesis_candidates(state, rnd, i + 1))


def direct_source(state: SearchState) -> Iterator[Step]:
    """Matrices without matches: deep coarse mode and ECC, from the identity and from the best candidate so far."""
    best = state.best()  # before the identity's candidates join the pool
    yield Step("direct-identity", lambda: direct_candidates(state, "identity", np.eye(3)))
    if best is not None:
        yield Step("direct-best", lambda: direct_candidates(state, "best", best.H))


#: The challenge runs only where the overlap (under the winner) spans at most this many dst px: twice the
#: shipped network's 128 px working window. A larger overlap is shrunk by more than 2x into the window, so the
#: coarse estimate is coarser than a feature fit (why this value: docs/measurements.md, "sources").
CHALLENGE_MAX_OVERLAP_PX = 256
#: Network passes of the challenge from the winner (from the identity: the coarse mode's own 3); more passes from
#: a winner already within a few px changed no result on the dev split (docs/measurements.md, "sources").
CHALLENGE_BEST_PASSES = 1


def direct_challenge(state: SearchState) -> Iterator[Step]:
    """The learned coarse estimate from the identity and from the winner, after a search accepted early; only
    where the overlap is small enough for the network's working window (``CHALLENGE_MAX_OVERLAP_PX``)."""
    best = state.best()
    if best is None:
        return
    box = overlap_box(best.H, state.ctx.src_size, state.ctx.dst_size)
    if box is None or max(box[2] - box[0], box[3] - box[1]) > CHALLENGE_MAX_OVERLAP_PX:
        return
    starts = [("identity", np.eye(3), None), ("best", best.H, CHALLENGE_BEST_PASSES)]
    yield Step("direct-challenge", lambda: [c for name, H, n in starts for c in deep_coarse_candidates(state, name, H, n)])


def deep_coarse_candidates(state: SearchState, start_name: str, start: np.ndarray,
                           passes: int | None = None) -> list[Candidate]:
    """The learned refiner's coarse mode from ``start`` (3, 3), ``passes`` network passes (None: its default):
    one candidate (none without torch: a warning)."""
    try:
        from stitch.deep import refine_deep, require_torch

        require_torch()
    except (ImportError, ConfigError) as exc:
        state.warnings.append(f"source 'direct': learned refiner skipped ({exc})")
        return []
    kw: dict[str, Any] = {"coarse": True, "iterations": passes}
    if state.config.deep_weights is not None:
        kw["weights"] = state.config.deep_weights
    t0 = time.perf_counter()
    H = refine_deep(start, state.src_img, state.dst_img, **kw)
    c = Candidate("deep-coarse", {"level": f"direct-{start_name}", "from": start_name}, H, np.zeros(0, bool),
                  seconds=time.perf_counter() - t0)
    if H is None:
        c.rejected = f"deep-coarse from the {start_name} did not converge"
    return [c]


def direct_candidates(state: SearchState, start_name: str, start: np.ndarray) -> list[Candidate]:
    """deep(coarse) and ECC from ``start`` (3, 3), and ECC from the deep result; the deep refiner missing is a
    warning (ECC still runs)."""
    from stitch.homography.refine import REFINERS

    ecc = REFINERS["ecc"].step
    a, b = state.src_img, state.dst_img
    out: list[Candidate] = []

    def add(method: str, fn: Callable[[], np.ndarray | None]) -> np.ndarray | None:
        t0 = time.perf_counter()
        H = fn()
        c = Candidate(method, {"level": f"direct-{start_name}", "from": start_name}, H, np.zeros(0, bool),
                      seconds=time.perf_counter() - t0)
        if H is None:
            c.rejected = f"{method} from the {start_name} did not converge"
        out.append(c)
        return H

    add("ecc", lambda: ecc(start, a, b, None))
    deep = deep_coarse_candidates(state, start_name, start)
    out += deep
    if deep and deep[0].H is not None:
        add("deep-coarse+ecc", lambda: ecc(deep[0].H, a, b, None))
    return out


@dataclass(frozen=True)
class Source:
    """A candidate source: ``steps(state)`` yields its work cheapest first; ``cost`` orders the sources."""

    name: str
    steps: Callable[[SearchState], Iterator[Step]]
    cost: int
    extra: str | None = None  # an optional extra some of its steps need (missing: a warning, not an error)
    help: str = ""
    #: steps that still compete when an earlier source's winner was accepted below ``SelectConfig.challenge_below``
    challenge: Callable[[SearchState], Iterator[Step]] | None = None


#: The one table of candidate sources, in search order (cheapest first).
SOURCES: dict[str, Source] = {s.name: s for s in sorted((
    Source("features", features_source, 0, help="detector+matcher levels of the preset (SIFT, dense SIFT, ASIFT)"),
    Source("synthesis", synthesis_source, 1, help="MODS-style affine view synthesis, in rounds"),
    Source("learned", learned_source, 2, extra="learned", help="XFeat+LighterGlue and DISK+LightGlue"),
    Source("direct", direct_source, 3, extra="deep",
           help="learned refiner (coarse) and ECC from the identity and from the best candidate",
           challenge=direct_challenge),
), key=lambda s: s.cost)}
SOURCE_CHOICES = tuple(SOURCES)
DEFAULT_SOURCES = SOURCE_CHOICES


def check_sources(names: Any) -> tuple[str, ...]:
    """Source names (a sequence or a comma list) in search order; ConfigError names an unknown one."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = tuple(names)
    if not names:
        raise ConfigError(f"sources: name at least one of {', '.join(SOURCE_CHOICES)}")
    for n in names:
        if n not in SOURCES:
            raise ConfigError(f"sources: {n!r} is not one of {', '.join(SOURCE_CHOICES)}")
    return tuple(n for n in SOURCE_CHOICES if n in names)


def run_sources(state: SearchState, progress: Callable[[str], None] | None = None,
                accept: Callable[[float], bool] | None = None) -> list[str]:
    """Run the configured sources' steps in order into ``state``; stop once ``accept(best score)``.

    Returns the names of the steps run. A step that raises becomes a warning and ends its source only. When
    a winner is accepted below ``config.challenge_below``, the later sources' ``challenge`` steps still compete
    (scored the same way): the learned coarse estimate catches what a feature winner got slightly wrong.
    """
    tried: list[str] = []
    names = state.config.sources
    for i, name in enumerate(names):
        if _run_steps(state, name, SOURCES[name].steps(state), tried, progress, accept):
            for later in names[i + 1:]:
                ch = SOURCES[later].challenge
                if ch is not None and state.best_score() < state.config.challenge_below:
                    _run_steps(state, later, ch(state), tried, progress, None)
            return tried
    return tried


def _run_steps(state: SearchState, name: str, steps: Iterator[Step], tried: list[str],
               progress: Callable[[str], None] | None, accept: Callable[[float], bool] | None) -> bool:
    """Run one source's steps into ``state`` (appending their names to ``tried``); True once ``accept``."""
    while True:
        try:
            step = next(steps)
        except StopIteration:
            return False
        except Exception as exc:  # noqa: BLE001 - a failing source is a warning; the others still run
            state.warnings.append(f"source {name!r} failed: {type(exc).__name__}: {exc}")
            return False
        if progress:
            progress(step.name)
        try:
            new = step.run()
        except Exception as exc:  # noqa: BLE001 - as above
            state.warnings.append(f"source {name!r} ({step.name}) failed: {type(exc).__name__}: {exc}")
            return False
        support = state.support_matches()
        for c in new:
            c.source = name
            c.params.setdefault("level", step.name)
        score_candidates(new, state.ctx, state.config.min_inliers, support)
        for c in new:  # a direct candidate: its support evidence and the matches of it
            if c.matches is None and support is not None and c.ok:
                c.params["support_from"] = "best candidate so far"
        state.candidates += new
        tried.append(step.name)
        if accept is not None and accept(state.best_score()):
            return True
