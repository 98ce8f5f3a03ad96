"""The synthetic benchmark: MACE on pairs generated from the images of a folder.

Two regimes, P x P = 128 x 128 patches, fixed seed (``stitch.deep.pairs`` builds the pairs):

- ``detone``: the DeTone et al. (2016) protocol. Each photograph is resized to 320 x 240, a 128 x 128
  patch is cut at a random position, its corners are each moved by up to rho = 32 px, and src is the
  moved quadrilateral warped to 128 x 128 (no photometric change). Methods: SIFT+RANSAC (OpenCV SIFT,
  ratio 0.8, RANSAC 3 px), ECC from identity, classical (our pipeline with refiner="lsq"),
  classical+ECC (refiner="ecc", the default), deep from identity (``refine_deep(I, ...,
  coarse=True)``: all stages), classical+deep (refiner="deep": lsq, ECC, then the deep refiner, each
  kept only when it raises the quality score).
- ``refiner``: the same pairs with a photometric change of src (``Photometric(p=0.6)``) and a start
  matrix whose corners are each off the truth by up to 8 px (uniform in the disk). Methods, all from the
  start matrix: start (no refinement), ECC, deep (``refine_deep(..., coarse=False)``: the learned
  Lucas-Kanade stage, the refiner's mode for a start within a few px), deep with all stages,
  deep+ECC (ECC from deep's result), and ECC+ECC (ECC run again from its own result: a control that
  measures how far ECC's end point moves with its start alone, the yardstick for "deep+ECC never
  worse than ECC").

Pair k of a regime uses ``np.random.default_rng([seed, regime, k])`` and image ``k % n_images``, so a
run is reproducible and every image gets the same number of pairs.

Error: MACE, the mean over the 4 patch corners (0, 0), (P, 0), (P, P), (0, P) of the distance between
the corner mapped by H_est and by H_gt (``stitch.geometry.corner_error``). A method that returns no
matrix (a failed fit, the pipeline finding no plausible candidate) keeps its start matrix (identity,
or the refiner regime's start), so every row is a finite error and means are comparable. Failures are
errors above 3 px. Times are wall seconds per pair, pair generation excluded.

``classical+deep`` is ``estimate_homography(src, dst, refiner="deep")``; where the pipeline finds no
plausible matrix at all it falls back to deep from identity (counted in its ``fallbacks``).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stitch.bench.baselines import METHOD_SIFT_RANSAC, run_sift_baselines
from stitch.deep.pairs import (
    REFINE_START_RHO,
    REGIME_CHOICES,
    Photometric,
    SyntheticPair,
    detone_pair,
    lowtex_pair,
)
from stitch.errors import ConfigError, StitchError
from stitch.geometry import corner_error
from stitch.io import jsonable, read_image
from stitch.types import ProgressFn

REGIME_DETONE, REGIME_REFINER = REGIME_CHOICES

METHOD_ECC_IDENTITY = "ECC from identity"
METHOD_CLASSICAL = "classical"
METHOD_CLASSICAL_ECC = "classical+ECC"
METHOD_DEEP_IDENTITY = "deep from identity"
METHOD_CLASSICAL_DEEP = "classical+deep"
METHOD_START = "start"
METHOD_ECC = "ECC"
METHOD_DEEP = "deep"
METHOD_DEEP_ALL = "deep, all stages"
METHOD_DEEP_ECC = "deep+ECC"
METHOD_ECC_ECC = "ECC+ECC"

DEFAULT_PAIRS = 100


def _standard_pair(image: np.ndarray, rng: np.random.Generator, regime: str, name: str) -> SyntheticPair:
    if regime == REGIME_DETONE:
        return detone_pair(image, rng, name=name)
    return detone_pair(image, rng, photo=Photometric(p=REFINER_PHOTOMETRIC_P), start_rho=REFINE_START_RHO, name=name)


def _lowtex_pair(image: np.ndarray, rng: np.random.Generator, regime: str, name: str) -> SyntheticPair:
    return lowtex_pair(image, rng, start_rho=REFINE_START_RHO if regime == REGIME_REFINER else 0.0, name=name)


#: The one table of pair splits: name -> pair k of a regime from an image (``stitch.deep.pairs``).
#: ``standard``: the DeTone protocol at a random place; ``lowtex``: the least textured of 12 places that still
#: holds some texture, half of them hazed, with an exposure change between the views (``lowtex_pair``).
SPLITS: dict[str, Callable[[np.ndarray, np.random.Generator, str, str], SyntheticPair]] = {
    "standard": _standard_pair, "lowtex": _lowtex_pair}
SPLIT_CHOICES = tuple(SPLITS)
FAIL_THRESHOLD = 3.0
REFINER_PHOTOMETRIC_P = 0.6


@dataclass
class SyntheticRow:
    """One method on one pair: MACE (px), wall seconds, whether it produced a matrix, a short note."""

    regime: str
    pair: int
    image: str
    method: str
    error: float
    seconds: float
    produced: bool = True
    detail: str = ""


@dataclass
class SyntheticSummary:
    """One method over one regime's pairs (errors in px)."""

    regime: str
    method: str
    pairs: int
    mean: float
    median: float
    p90: float
    ok1: float           # fraction <= 1 px
    failures: float      # fraction > FAIL_THRESHOLD px
    no_result: int       # pairs where the method gave no matrix (start kept)
    mean_seconds: float
    median_seconds: float


def summarize_synthetic(regime: str, method: str, rows: Sequence[SyntheticRow]) -> SyntheticSummary:
    e = np.array([r.error for r in rows], dtype=np.float64)
    s = np.array([r.seconds for r in rows], dtype=np.float64)
    return SyntheticSummary(
        regime=regime, method=method, pairs=len(rows),
        mean=float(e.mean()) if len(e) else math.nan, median=float(np.median(e)) if len(e) else math.nan,
        p90=float(np.percentile(e, 90)) if len(e) else math.nan,
        ok1=float(np.mean(e <= 1.0)) if len(e) else math.nan,
        failures=float(np.mean(e > FAIL_THRESHOLD)) if len(e) else math.nan,
        no_result=sum(not r.produced for r in rows),
        mean_seconds=float(s.mean()) if len(s) else math.nan, median_seconds=float(np.median(s)) if len(s) else math.nan,
    )


def worse_than_ecc(rows: Sequence[SyntheticRow], method: str, tol: float = 0.05) -> int:
    """Refiner-regime pairs where ``method``'s error exceeds ECC's by more than ``tol`` px."""
    ecc = {r.pair: r.error for r in rows if r.regime == REGIME_REFINER and r.method == METHOD_ECC}
    return sum(1 for r in rows if r.regime == REGIME_REFINER and r.method == method and r.error > ecc[r.pair] + tol)


@dataclass
class SyntheticResult:
    """Rows, per-regime summaries (table order) and the settings of one run."""

    root: str
    images: list[str]
    seed: int
    pairs: int
    weights: str | None
    rows: list[SyntheticRow]
    summaries: dict[str, list[SyntheticSummary]]
    seconds: float
    notes: list[str] = field(default_factory=list)
    split: str = "standard"

    def to_json(self) -> dict[str, Any]:
        return jsonable({
            "benchmark": "synthetic", "split": self.split, "root": self.root, "images": self.images, "seed": self.seed,
            "pairs_per_regime": self.pairs, "weights": self.weights, "seconds": self.seconds, "notes": self.notes,
            "fail_threshold_px": FAIL_THRESHOLD,
            "summaries": {k: [vars(s) for s in v] for k, v in self.summaries.items()},
            "rows": [vars(r) for r in self.rows],
        })


def synthetic_images(directory: str | os.PathLike, sets: Sequence[str] | None = None) -> list[Path]:
    """Image files under ``directory`` (recursive), optionally only the sets (first folders) named."""
    from stitch.deep.pairs import list_image_files, set_name

    root = Path(directory)
    files = list_image_files(root)
    if sets:
        found = {set_name(p, root) for p in files}
        missing = sorted(set(sets) - found)
        if missing:
            raise ConfigError(f"sets: {', '.join(missing)} not found under {root} (found: {', '.join(sorted(found))})")
        files = [p for p in files if set_name(p, root) in set(sets)]
    return files


#: A method's output on one pair: (H (3, 3) or None, wall seconds, note).
Timed = tuple[np.ndarray | None, float, str]


def _timed(fn: Callable[..., np.ndarray | None], *args: Any) -> Timed:
    """(fn(*args) or None, wall seconds, a note naming the StitchError if one was raised)."""
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            H = fn(*args)
        note = ""
    except StitchError as exc:
        H, note = None, f"{type(exc).__name__}: {exc}"
    secs = time.perf_counter() - t0
    if H is not None and (np.asarray(H).shape != (3, 3) or not np.all(np.isfinite(H))):
        H, note = None, "non-finite matrix"
    return H, secs, note


def _sift_ransac(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    return run_sift_baselines(src, dst, (METHOD_SIFT_RANSAC,))[METHOD_SIFT_RANSAC].H


@dataclass(frozen=True)
class _Tools:
    """The estimators the methods call, bound to one run's settings (``deep_kw`` goes to ``refine_deep``)."""

    ecc: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray | None]  # refine_ecc(H, src, dst)
    estimate: Callable[..., Any]  # estimate_homography
    preset: str
    seed: int
    deep_kw: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)  # more estimate_homography options

    def deep(self, H: np.ndarray, a: np.ndarray, b: np.ndarray, coarse: bool) -> np.ndarray | None:
        from stitch.deep import refine_deep

        return refine_deep(H, a, b, coarse=coarse, **self.deep_kw)

    def pipeline(self, refiner: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.estimate(a, b, preset=self.preset, seed=self.seed, refiner=refiner,
                             deep_weights=self.deep_kw.get("weights"), **self.options).H


@dataclass
class _Trial:
    """One pair as the methods see it: src, dst (P, P, 3) uint8 read-only, start H0 (3, 3), outputs so far."""

    tools: _Tools
    src: np.ndarray
    dst: np.ndarray
    H0: np.ndarray
    outputs: dict[str, Timed] = field(default_factory=dict)


def _classical_deep(t: _Trial) -> Timed:
    """The pipeline with refiner="deep"; deep from identity where it finds no plausible matrix."""
    H, secs, note = _timed(t.tools.pipeline, "deep", t.src, t.dst)
    if H is None:
        H, s2, note2 = _timed(t.tools.deep, np.eye(3), t.src, t.dst, True)
        secs, note = secs + s2, f"fallback: deep from identity ({note}{'; ' + note2 if note2 else ''})"
    return H, secs, note


def _deep_ecc(t: _Trial) -> Timed:
    """ECC from deep's result (deep's own row reused when it ran); deep's matrix where ECC gives none."""
    Hd, sd, nd = (t.outputs[METHOD_DEEP] if METHOD_DEEP in t.outputs
                  else _timed(t.tools.deep, t.H0, t.src, t.dst, False))
    He, se, ne = _timed(t.tools.ecc, Hd if Hd is not None else t.H0, t.src, t.dst)
    return He if He is not None else Hd, sd + se, "; ".join(x for x in (nd, ne) if x)


def _ecc_ecc(t: _Trial) -> Timed:
    """ECC again from ECC's result (ECC's own row reused when it ran); the first result where the second fails."""
    He, se, ne = t.outputs[METHOD_ECC] if METHOD_ECC in t.outputs else _timed(t.tools.ecc, t.H0, t.src, t.dst)
    H2, s2, n2 = _timed(t.tools.ecc, He if He is not None else t.H0, t.src, t.dst)
    return H2 if H2 is not None else He, se + s2, "; ".join(x for x in (ne, n2) if x)


@dataclass(frozen=True)
class SyntheticMethod:
    """One method of the synthetic bench: its regime, whether it needs the deep refiner, and its run on a pair."""

    name: str
    regime: str
    run: Callable[[_Trial], Timed]
    deep: bool = False


#: The one table of synthetic-bench methods, in table order (see the module docstring).
SYNTHETIC_METHODS: dict[str, SyntheticMethod] = {m.name: m for m in (
    SyntheticMethod(METHOD_SIFT_RANSAC, REGIME_DETONE, lambda t: _timed(_sift_ransac, t.src, t.dst)),
    SyntheticMethod(METHOD_ECC_IDENTITY, REGIME_DETONE, lambda t: _timed(t.tools.ecc, np.eye(3), t.src, t.dst)),
    SyntheticMethod(METHOD_CLASSICAL, REGIME_DETONE, lambda t: _timed(t.tools.pipeline, "lsq", t.src, t.dst)),
    SyntheticMethod(METHOD_CLASSICAL_ECC, REGIME_DETONE, lambda t: _timed(t.tools.pipeline, "ecc", t.src, t.dst)),
    SyntheticMethod(METHOD_DEEP_IDENTITY, REGIME_DETONE,
                    lambda t: _timed(t.tools.deep, np.eye(3), t.src, t.dst, True), deep=True),
    SyntheticMethod(METHOD_CLASSICAL_DEEP, REGIME_DETONE, _classical_deep, deep=True),
    SyntheticMethod(METHOD_START, REGIME_REFINER, lambda t: (t.H0, 0.0, "")),
    SyntheticMethod(METHOD_ECC, REGIME_REFINER, lambda t: _timed(t.tools.ecc, t.H0, t.src, t.dst)),
    SyntheticMethod(METHOD_DEEP, REGIME_REFINER, lambda t: _timed(t.tools.deep, t.H0, t.src, t.dst, False), deep=True),
    SyntheticMethod(METHOD_DEEP_ALL, REGIME_REFINER, lambda t: _timed(t.tools.deep, t.H0, t.src, t.dst, True),
                    deep=True),
    SyntheticMethod(METHOD_DEEP_ECC, REGIME_REFINER, _deep_ecc, deep=True),
    SyntheticMethod(METHOD_ECC_ECC, REGIME_REFINER, _ecc_ecc),
)}
SYNTHETIC_METHOD_CHOICES = tuple(SYNTHETIC_METHODS)
#: Methods of each regime, in table order.
REGIME_METHODS = {r: tuple(m for m in SYNTHETIC_METHODS if SYNTHETIC_METHODS[m].regime == r) for r in REGIME_CHOICES}
DEEP_METHODS = tuple(m for m in SYNTHETIC_METHODS if SYNTHETIC_METHODS[m].deep)


def _plan(pairs: int, regimes: Sequence[str], methods: Sequence[str] | None) -> dict[str, list[str]]:
    """Regime -> the methods to run there, in table order; ConfigError names a bad argument."""
    if pairs < 1:
        raise ConfigError(f"pairs={pairs}: must be >= 1")
    bad = [r for r in regimes if r not in REGIME_CHOICES]
    if bad or not regimes:
        raise ConfigError(f"regimes: unknown or empty {bad or list(regimes)}; choose from {list(REGIME_CHOICES)}")
    chosen = list(methods) if methods else list(SYNTHETIC_METHOD_CHOICES)
    bad = [m for m in chosen if m not in SYNTHETIC_METHOD_CHOICES]
    if bad:
        raise ConfigError(f"methods: unknown {bad}; choose from {list(SYNTHETIC_METHOD_CHOICES)}")
    plan = {r: [m for m in REGIME_METHODS[r] if m in chosen] for r in regimes}
    if not any(plan.values()):
        raise ConfigError(f"methods {chosen} belong to none of the regimes {list(regimes)}")
    return plan


def _deep_options(plan: dict[str, list[str]], weights: str | os.PathLike | None,
                  iterations: int | None) -> dict[str, Any]:
    """``refine_deep``'s keyword arguments when the plan has a deep method ({} otherwise); loads the weights once."""
    if not any(m in DEEP_METHODS for ms in plan.values() for m in ms):
        return {}
    from stitch.deep import DEFAULT_WEIGHTS, require_torch

    require_torch()
    from stitch.deep.infer import load_refiner

    deep_kw: dict[str, Any] = {"weights": weights if weights is not None else DEFAULT_WEIGHTS}
    load_refiner(str(deep_kw["weights"]))  # an unreadable weights file: one ConfigError now, not a failed row each
    if iterations is not None:
        deep_kw["iterations"] = int(iterations)
    return deep_kw


def _pair_rows(tools: _Tools, regime: str, rid: int, k: int, image: np.ndarray, name: str,
               methods: Sequence[str], split: str = "standard") -> list[SyntheticRow]:
    """Pair k of a regime (``rng([seed, rid, k])``, drawn by ``SPLITS[split]``) through ``methods``: one row
    each, in that order."""
    rng = np.random.default_rng([tools.seed, rid, k])
    pr = SPLITS[split](image, rng, regime, name)
    pr.src.setflags(write=False)
    pr.dst.setflags(write=False)
    trial = _Trial(tools, pr.src, pr.dst, pr.H_start)
    for m in methods:
        trial.outputs[m] = SYNTHETIC_METHODS[m].run(trial)
    rows = []
    for m in methods:
        H, secs, note = trial.outputs[m]
        produced = H is not None
        err = corner_error(H if produced else pr.H_start, pr.H_gt, pr.size, pr.size)
        rows.append(SyntheticRow(regime, k, name, m, err if math.isfinite(err) else 1e9, secs, produced, note))
    return rows


def run_synthetic_bench(directory: str | os.PathLike, pairs: int = DEFAULT_PAIRS, seed: int = 0,
                        regimes: Sequence[str] = REGIME_CHOICES, methods: Sequence[str] | None = None,
                        sets: Sequence[str] | None = None, weights: str | os.PathLike | None = None,
                        iterations: int | None = None, preset: str | None = None,
                        progress: ProgressFn | None = None, split: str = "standard",
                        options: dict[str, Any] | None = None) -> SyntheticResult:
    """Run the synthetic benchmark on the images of ``directory`` (see the module docstring).

    ``methods`` filters the methods of each regime (default: all); ``weights`` / ``iterations`` go to
    ``refine_deep``; ``preset`` and ``options`` (e.g. ``{"challenge_below": 0}``) to ``estimate_homography``;
    ``split`` names how pairs are drawn (``SPLITS``).
    Deep methods need torch and kornia (ConfigError otherwise: leave them out with ``methods``).
    """
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}: choose from {', '.join(SPLIT_CHOICES)}")
    from stitch.homography.config import DEFAULT_PRESET, SelectConfig
    from stitch.homography.refine import refine_ecc
    from stitch.homography.select import estimate_homography

    plan = _plan(pairs, regimes, methods)
    files = synthetic_images(directory, sets)  # the arguments are checked before the optional torch is
    deep_kw = _deep_options(plan, weights, iterations)
    SelectConfig.from_options(**(options or {}))  # a bad option: one ConfigError now, not a failed row each
    tools = _Tools(refine_ecc, estimate_homography, preset or DEFAULT_PRESET, seed, deep_kw, dict(options or {}))
    images = [read_image(p) for p in files[:pairs]]  # pair k uses image k % len(files)
    names = [p.relative_to(Path(directory)).as_posix() for p in files]
    run = [(rid, r) for rid, r in enumerate(REGIME_CHOICES) if r in regimes and plan[r]]
    rows: list[SyntheticRow] = []
    total, done = pairs * len([r for r in regimes if plan[r]]), 0
    t_start = time.perf_counter()
    if progress:
        progress(0, total, "")
    for rid, regime in run:
        for k in range(pairs):
            i = k % len(files)
            rows += _pair_rows(tools, regime, rid, k, images[i], names[i], plan[regime], split)
            done += 1
            if progress:
                progress(done, total, f"{regime} {k + 1}/{pairs}")
    summaries = {regime: [summarize_synthetic(regime, m, [r for r in rows if r.regime == regime and r.method == m])
                          for m in plan[regime]] for _, regime in run}
    notes = []
    fb = sum(1 for r in rows if r.method == METHOD_CLASSICAL_DEEP and r.detail.startswith("fallback"))
    if any(METHOD_CLASSICAL_DEEP in ms for ms in plan.values()):
        notes.append(f"classical+deep fell back to deep from identity on {fb} pair(s) (no plausible pipeline matrix)")
    return SyntheticResult(str(directory), names, seed, pairs, str(deep_kw.get("weights")) if deep_kw else None,
                           rows, summaries, time.perf_counter() - t_start, notes, split)
