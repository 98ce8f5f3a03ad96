"""The real-homography benchmark: the pipeline and the OpenCV baselines on pairs with ground truth.

Real homography accuracy (``run_homography_bench``) on ``homography_gt``:

- ``oxford_affine/<seq>/img1..6`` with ``H1to{k}p`` (img1 -> img{k}): 8 sequences x 5 pairs.
  Error = mean distance between image 1's four corners mapped by H_est and by H_gt.
- ``homogr/<name>A|B`` with ``derived_H_A_to_B/<name>.txt`` (A -> B; the original ``<name>_model.txt``
  maps B -> A) and ``<name>_vpts.txt`` (N x 6: xA yA wA xB yB wB): 16 pairs.
  Error = mean distance between H_est applied to the annotated A points and the annotated B points.

Convention: every H maps src pixels to dst pixels, ``x_dst ~ H @ [x, y, 1]``, origin at the top-left
corner of the top-left pixel (the same convention as the ground-truth files and ``stitch.geometry``).

With ``control=True`` (``--exact-gt``) each pair also runs as an exact-ground-truth twin rendered from its
src image (``control_pair``), summarised apart: the estimators' own error, apart from the published matrix's.

Each image is read once per pair and the same (read-only) arrays go to every method; image reading
is excluded from all timings. The two OpenCV baselines share SIFT detection and matching: each one's
time is the shared detection + matching time plus its own ``cv2.findHomography`` time.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from stitch.bench.baselines import (
    BASELINE_METHODS,
    METHOD_SIFT_MAGSAC,
    METHOD_SIFT_RANSAC,
    MethodOutput,
    run_sift_baselines,
    sift_ratio_matches,
)
from stitch.bench.datasets import SUBSETS, GTPair, limit_pairs, load_homography_gt
from stitch.bench.metrics import DEFAULT_THRESHOLDS, MethodSummary, homography_error, median_or_nan, summarize
from stitch.errors import ConfigError, StitchError
from stitch.geometry import project
from stitch.io import jsonable, read_image
from stitch.types import ProgressFn

# --- names and defaults ------------------------------------------------------------------------------


OVERALL = "overall"
#: Oxford pairs whose published matrix leaves 2-4x the residual of a matrix fitted to the same matches
#: (``--check-gt``; DESIGN section 4): summarised apart, and the Oxford figures judged on the others.
GT_CAVEAT_SEQUENCES = ("wall", "bark")
GT_CAVEAT_PAIRS = ("boat 1->6",)
OXFORD_CAVEAT = "oxford: GT caveat (wall, bark, boat 1->6)"
OXFORD_RELIABLE = "oxford: other pairs"
#: Every pair but the GT-caveat ones: the overall figures the issue judges (issue 12's Oxford note).
OVERALL_RELIABLE = "overall: GT caveat pairs aside"


#: ``control=True``: each pair also runs as an exact-ground-truth twin, in the subset "<subset>: exact-GT
#: control". Both twin images are rendered from the pair's src image, src by CONTROL_PRE_WARP and dst by H_gt
#: (bicubic, so both are resampled once), and dst gets a gain, an offset and Gaussian noise. The twin's
#: H_gt @ inv(CONTROL_PRE_WARP) is then exact, so its errors are the estimators' own, apart from how well the
#: published matrix and a single homography describe the real photos.
CONTROL = "exact-GT control"
CONTROL_PRE_WARP = np.array([[1.03 * math.cos(math.radians(3)), -1.03 * math.sin(math.radians(3)), 10.0],
                             [1.03 * math.sin(math.radians(3)), 1.03 * math.cos(math.radians(3)), -5.0],
                             [1e-5, 0.0, 1.0]])
CONTROL_GAIN, CONTROL_OFFSET, CONTROL_NOISE = 0.9, 10.0, 2.0


def gt_caveat(subset: str, name: str) -> bool:
    """True for an Oxford pair of the GT caveat (wall, bark, boat 1->6)."""
    return subset == "oxford" and (name.split(" ")[0] in GT_CAVEAT_SEQUENCES or name in GT_CAVEAT_PAIRS)


def control_subset(subset: str) -> str:
    """The subset name of ``subset``'s exact-GT control twins, e.g. "oxford: exact-GT control"."""
    return f"{subset}: {CONTROL}"


def is_control(subset: str) -> bool:
    """True for the subset of an exact-GT control twin (``control_pair``)."""
    return subset.endswith(control_subset(""))


def control_pair(pair: GTPair, src_bgr: np.ndarray, dst_size: tuple[int, int],
                 rng: np.random.Generator) -> tuple[GTPair, np.ndarray, np.ndarray]:
    """The exact-GT twin of ``pair``: (twin pair, src (H, W, 3) uint8, dst of ``dst_size`` (width, height)).

    Both images come from ``src_bgr`` (see CONTROL); the twin's H_gt maps its src pixels to its dst pixels
    exactly, and its error is the corner error (no annotated points).
    """
    h, w = src_bgr.shape[:2]
    src = cv2.warpPerspective(src_bgr, CONTROL_PRE_WARP, (w, h), flags=cv2.INTER_CUBIC)
    dst = cv2.warpPerspective(src_bgr, pair.H_gt, tuple(dst_size), flags=cv2.INTER_CUBIC).astype(np.float32)
    dst = dst * CONTROL_GAIN + CONTROL_OFFSET + rng.normal(0.0, CONTROL_NOISE, dst.shape).astype(np.float32)
    H = pair.H_gt @ np.linalg.inv(CONTROL_PRE_WARP)
    twin = GTPair(control_subset(pair.subset), pair.name, pair.src, pair.dst, H)
    return twin, _readonly(src), _readonly(np.clip(np.rint(dst), 0, 255).astype(np.uint8))


METHOD_STITCH = "stitch"
METHOD_SELECT_SCORE = "stitch: select by score (raw)"
METHOD_SELECT_INLIERS = "stitch: select by inliers (raw)"

#: The pipeline with the learned refiner (``refiner="deep"``; needs torch and kornia), beside ``stitch``.
METHOD_STITCH_DEEP = "stitch+deep"
#: Methods ``run_homography_bench`` can run (``methods=``); ``stitch`` also yields the two selector rows.
HOMOGRAPHY_METHOD_CHOICES = (METHOD_STITCH, METHOD_STITCH_DEEP, METHOD_SIFT_RANSAC, METHOD_SIFT_MAGSAC)
#: What runs when no method is named: everything but the optional learned refiner.
DEFAULT_HOMOGRAPHY_METHODS = (METHOD_STITCH, METHOD_SIFT_RANSAC, METHOD_SIFT_MAGSAC)
#: Every row a homography benchmark can report, in table order.
HOMOGRAPHY_ROW_ORDER = (
    METHOD_STITCH,
    METHOD_STITCH_DEEP,
    METHOD_SELECT_SCORE,
    METHOD_SELECT_INLIERS,
    METHOD_SIFT_RANSAC,
    METHOD_SIFT_MAGSAC,
)

#: A pair is a regression when a baseline is at or below this error (px) and the project is not.
REGRESSION_THRESHOLD = 3.0

#: ``estimator(src_bgr, dst_bgr, seed=..., **options)`` -> object with ``.H`` and ``.candidates``.
EstimatorFn = Callable[..., Any]


# --- methods -----------------------------------------------------------------------------------------


def _eligible(c: Any) -> bool:
    return getattr(c, "rejected", None) is None and getattr(c, "H", None) is not None


def select_by_score(candidates: Sequence[Any]) -> Any | None:
    """The first candidate (the list is best-first by score) that is not rejected and has an H."""
    return next((c for c in candidates if _eligible(c)), None)


def select_by_inliers(candidates: Sequence[Any]) -> Any | None:
    """The non-rejected candidate with the most inliers (ties: the earlier one in the list)."""
    best = None
    for c in candidates:
        if _eligible(c) and (best is None or int(c.n_inliers) > int(best.n_inliers)):
            best = c
    return best


def _candidate_note(c: Any | None) -> str:
    if c is None:
        return "no eligible candidate"
    return (f"{getattr(c, 'method', '?')} [{getattr(c, 'source', '?')}] {getattr(c, 'params', {})} "
            f"inliers={getattr(c, 'n_inliers', '?')}")


def default_estimator() -> EstimatorFn:
    """``stitch.estimate_homography`` (imported lazily, so this module loads without it)."""
    import stitch

    return stitch.estimate_homography


def run_project(
    estimator: EstimatorFn,
    src_bgr: np.ndarray,
    dst_bgr: np.ndarray,
    seed: int,
    options: Mapping[str, Any],
) -> dict[str, MethodOutput]:
    """The project on one pair: its final H, plus the raw H picked by score and by inlier count.

    A StitchError from the estimator (e.g. no plausible homography) is a failure (H None), not a crash.
    """
    t0 = time.perf_counter()
    try:
        r = estimator(src_bgr, dst_bgr, seed=seed, **options)
    except StitchError as exc:
        secs = time.perf_counter() - t0
        note = f"{type(exc).__name__}: {exc}"
        return {
            METHOD_STITCH: MethodOutput(None, secs, note),
            METHOD_SELECT_SCORE: MethodOutput(None, math.nan, note),
            METHOD_SELECT_INLIERS: MethodOutput(None, math.nan, note),
        }
    secs = time.perf_counter() - t0
    cands = list(getattr(r, "candidates", None) or [])
    by_score, by_inl = select_by_score(cands), select_by_inliers(cands)
    H = getattr(r, "H", None)
    score = getattr(r, "score", None)
    note = f"score={score:.4g}, {len(cands)} candidates" if isinstance(score, (int, float)) else ""
    if cands:  # which candidate source won, and the search steps run (stitch.homography.sources)
        note += f", source={getattr(cands[0], 'source', '?')}, steps={','.join(getattr(r, 'levels_tried', []))}"
    return {
        METHOD_STITCH: MethodOutput(None if H is None else np.asarray(H, np.float64), secs, note,
                                    float(score) if isinstance(score, (int, float)) else None),
        METHOD_SELECT_SCORE: MethodOutput(
            None if by_score is None else by_score.H, math.nan, _candidate_note(by_score)
        ),
        METHOD_SELECT_INLIERS: MethodOutput(
            None if by_inl is None else by_inl.H, math.nan, _candidate_note(by_inl)
        ),
    }


# --- ground-truth consistency ------------------------------------------------------------------------


@dataclass
class GTCheck:
    """How well H_gt explains the images: median residual (px) of H_gt vs of a homography fitted to the same matches."""

    subset: str
    name: str
    matches: int
    gt_residual: float
    fit_residual: float

    @property
    def inconsistent(self) -> bool:
        """True when H_gt leaves clearly more residual than the best-fitting homography (a biased GT)."""
        return self.gt_residual > max(1.0, 2.0 * self.fit_residual)


def gt_consistency(pair: GTPair, src_bgr: np.ndarray, dst_bgr: np.ndarray, radius: float = 5.0) -> GTCheck:
    """Residuals of H_gt and of a least-squares H on the SIFT matches within ``radius`` px of H_gt (diagnostic)."""
    src, dst = sift_ratio_matches(src_bgr, dst_bgr, fast=True)
    e = np.linalg.norm(project(pair.H_gt, src) - dst, axis=1) if len(src) else np.zeros(0)
    inl = e < radius
    if inl.sum() < 8:
        return GTCheck(pair.subset, pair.name, int(inl.sum()), math.nan, math.nan)
    H, _ = cv2.findHomography(src[inl].astype(np.float64), dst[inl].astype(np.float64), 0)
    fit = np.linalg.norm(project(H, src[inl]) - dst[inl], axis=1) if H is not None else np.full(1, math.nan)
    return GTCheck(pair.subset, pair.name, int(inl.sum()), float(np.median(e[inl])), float(np.median(fit)))


# --- the benchmark -----------------------------------------------------------------------------------


@dataclass
class PairRow:
    """One method on one pair. ``seconds`` is NaN for the selector rows (they reuse the project run)."""

    subset: str
    name: str
    method: str
    error: float
    seconds: float
    detail: str = ""
    score: float | None = None


@dataclass
class Regression:
    """A pair a baseline solved (error <= REGRESSION_THRESHOLD) and the project did not."""

    subset: str
    name: str
    project_error: float
    baseline_errors: dict[str, float]


@dataclass
class BenchResult:
    """Per-pair rows, summaries per subset and overall, the regression list and the time ratio."""

    root: str
    seed: int
    options: dict[str, Any]
    methods: list[str]
    thresholds: tuple[float, ...]
    rows: list[PairRow]
    summaries: dict[str, list[MethodSummary]]
    regressions: list[Regression]
    time_ratio_vs_magsac: float | None
    seconds: float = 0.0
    gt_checks: list[GTCheck] = field(default_factory=list)

    def errors_by_pair(self) -> dict[tuple[str, str], dict[str, float]]:
        """{(subset, name): {method: error}} in row order."""
        out: dict[tuple[str, str], dict[str, float]] = {}
        for r in self.rows:
            out.setdefault((r.subset, r.name), {})[r.method] = r.error
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict. inf -> the string "inf"; NaN (not measured) -> None."""
        return jsonable(
            {
                "benchmark": "homography",
                "root": self.root,
                "seed": self.seed,
                "options": self.options,
                "methods": self.methods,
                "thresholds": list(self.thresholds),
                "versions": {"opencv": cv2.__version__, "numpy": np.__version__},
                "seconds": self.seconds,
                "summaries": {k: [_summary_json(s) for s in v] for k, v in self.summaries.items()},
                "regressions": [vars(r) for r in self.regressions],
                "median_time_ratio_vs_sift_magsac": self.time_ratio_vs_magsac,
                "gt_checks": [dict(vars(c), inconsistent=c.inconsistent) for c in self.gt_checks],
                "refiner_check": None if (chk := refiner_check(self.rows)) is None else vars(chk),
                "rows": [vars(r) for r in self.rows],
            }
        )


def _fmt_t(t: float) -> str:
    return f"{t:g}"


def _summary_json(s: MethodSummary) -> dict[str, Any]:
    d: dict[str, Any] = {"method": s.method, "pairs": s.pairs}
    d.update({f"ok@{_fmt_t(t)}": v for t, v in s.ok.items()})
    d.update({f"auc@{_fmt_t(t)}": v for t, v in s.auc.items()})
    d.update(median_error=s.median_error, median_seconds=s.median_seconds, total_seconds=s.total_seconds)
    return d


def summarize_rows(
    rows: Sequence[PairRow], thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> dict[str, list[MethodSummary]]:
    """Summaries per subset present (oxford, homogr, in that order), the Oxford GT-caveat pairs and the other
    Oxford pairs apart, ``overall``, and (with caveat pairs) ``overall`` without them; rows in table order.
    Exact-GT control rows (``is_control``) are summarised apart: per subset and overall, after the others."""
    control = [r for r in rows if is_control(r.subset)]
    rows = [r for r in rows if not is_control(r.subset)]
    groups: dict[str, list[PairRow]] = {}
    for s in SUBSETS:
        sub = [r for r in rows if r.subset == s]
        if sub:
            groups[s] = sub
    if "oxford" in groups:  # the GT caveat pairs apart from the others
        caveat = [r for r in groups["oxford"] if gt_caveat(r.subset, r.name)]
        if caveat:
            groups[OXFORD_RELIABLE] = [r for r in groups["oxford"] if not gt_caveat(r.subset, r.name)]
            groups[OXFORD_CAVEAT] = caveat
    groups[OVERALL] = list(rows)
    if OXFORD_CAVEAT in groups:
        groups[OVERALL_RELIABLE] = [r for r in rows if not gt_caveat(r.subset, r.name)]
    if control:
        for s in SUBSETS:
            if sub := [r for r in control if r.subset == control_subset(s)]:
                groups[control_subset(s)] = sub
        groups[control_subset(OVERALL)] = control
    if not rows:
        del groups[OVERALL]
    out: dict[str, list[MethodSummary]] = {}
    for key, rs in groups.items():
        present = [m for m in HOMOGRAPHY_ROW_ORDER if any(r.method == m for r in rs)]
        present += [m for m in dict.fromkeys(r.method for r in rs) if m not in present]
        out[key] = [
            summarize(
                m,
                [r.error for r in rs if r.method == m],
                [r.seconds for r in rs if r.method == m],
                thresholds,
            )
            for m in present
        ]
    return out


def find_regressions(rows: Sequence[PairRow], threshold: float = REGRESSION_THRESHOLD) -> list[Regression]:
    """Pairs where some baseline error <= threshold but the project's (``stitch``) error is > threshold."""
    by_pair: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:  # the exact-GT control twins count too: a regression there is the estimator's own
        by_pair.setdefault((r.subset, r.name), {})[r.method] = r.error
    out = []
    for (subset, name), errs in by_pair.items():
        if METHOD_STITCH not in errs or errs[METHOD_STITCH] <= threshold:
            continue
        solved = {m: errs[m] for m in BASELINE_METHODS if m in errs and errs[m] <= threshold}
        if solved:
            out.append(Regression(subset, name, errs[METHOD_STITCH], solved))
    return out


@dataclass
class RefinerCheck:
    """stitch+deep against stitch on the same pairs: counts of lower/higher quality scores and errors."""

    pairs: int
    score_lower: list[str]
    score_higher: list[str]
    error_worse: list[str]
    error_better: list[str]


def refiner_check(rows: Sequence[PairRow], tol_px: float = 0.01) -> RefinerCheck | None:
    """Compare the stitch+deep rows with the stitch rows pair by pair (error changes above ``tol_px``)."""
    base = {(r.subset, r.name): r for r in rows if r.method == METHOD_STITCH}
    deep = {(r.subset, r.name): r for r in rows if r.method == METHOD_STITCH_DEEP}
    keys = [k for k in base if k in deep]
    if not keys:
        return None
    out = RefinerCheck(len(keys), [], [], [], [])
    for k in keys:
        a, b, label = base[k], deep[k], "/".join(k)
        if a.score is not None and b.score is not None and b.score != a.score:
            (out.score_lower if b.score < a.score else out.score_higher).append(label)
        if b.error > a.error + tol_px:
            out.error_worse.append(label)
        elif b.error < a.error - tol_px:
            out.error_better.append(label)
    return out


def median_time_ratio(
    rows: Sequence[PairRow], method: str = METHOD_STITCH, reference: str = METHOD_SIFT_MAGSAC
) -> float | None:
    """median seconds of ``method`` / median seconds of ``reference`` over all pairs; None if absent."""
    a = median_or_nan(r.seconds for r in rows if r.method == method)
    b = median_or_nan(r.seconds for r in rows if r.method == reference)
    if math.isnan(a) or math.isnan(b) or b <= 0:
        return None
    return a / b


def _readonly(img: np.ndarray) -> np.ndarray:
    img.setflags(write=False)
    return img


def _check_methods(methods: Sequence[str], thresholds: Sequence[float]) -> list[str]:
    """The methods without repeats, in the order given; ConfigError for an unknown one or a bad threshold."""
    methods = list(dict.fromkeys(methods))
    bad = [m for m in methods if m not in HOMOGRAPHY_METHOD_CHOICES]
    if bad or not methods:
        raise ConfigError(
            f"methods: unknown or empty {bad or methods}; choose from {list(HOMOGRAPHY_METHOD_CHOICES)}"
        )
    if not thresholds or any(t <= 0 for t in thresholds):
        raise ConfigError(f"thresholds: must be positive, got {list(thresholds)}")
    return methods


def _pair_rows(pair: GTPair, src: np.ndarray, dst: np.ndarray, methods: Sequence[str],
               estimator: EstimatorFn | None, seed: int, opts: Mapping[str, Any]) -> list[PairRow]:
    """One pair (src, dst (H, W, 3) uint8, read-only) through ``methods``: its rows in table order."""
    size = (src.shape[1], src.shape[0])
    outputs: dict[str, MethodOutput] = {}
    if METHOD_STITCH in methods:
        outputs.update(run_project(estimator, src, dst, seed, opts))
    if METHOD_STITCH_DEEP in methods:
        outputs[METHOD_STITCH_DEEP] = run_project(estimator, src, dst, seed, {**opts, "refiner": "deep"})[
            METHOD_STITCH]
    baselines = [m for m in methods if m in BASELINE_METHODS]
    if baselines:
        outputs.update(run_sift_baselines(src, dst, baselines))
    rows = []
    for m in (m for m in HOMOGRAPHY_ROW_ORDER if m in outputs):
        o = outputs[m]
        rows.append(PairRow(pair.subset, pair.name, m, homography_error(pair, o.H, size), o.seconds, o.detail, o.score))
    return rows


def run_homography_bench(
    root: str | os.PathLike,
    methods: Sequence[str] = DEFAULT_HOMOGRAPHY_METHODS,
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    limit: int | None = None,
    estimator: EstimatorFn | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    check_gt: bool = False,
    control: bool = False,
) -> BenchResult:
    """Run the real-homography benchmark (the protocol in docs/benchmarks/homography.md) on ``root`` (see ``load_homography_gt``).

    ``methods``: any of HOMOGRAPHY_METHOD_CHOICES; ``stitch`` also reports the two raw selector rows;
    ``stitch+deep`` is the same estimator with ``refiner="deep"`` (its detail holds the quality score).
    ``options`` go to the estimator as keyword arguments (e.g. ``preset``); ``seed`` too.
    ``limit``: only the first N pairs of each subset. ``estimator`` defaults to
    ``stitch.estimate_homography``. Each pair's images are read once; reading is not timed.
    ``check_gt``: also run the untimed ground-truth consistency diagnostic (``gt_consistency``) per pair.
    ``control``: also run every pair's exact-GT twin (``control_pair``, seeded by ``seed`` and the pair's
    index), summarised apart; the time ratio is taken on the real pairs only.
    """
    methods = _check_methods(methods, thresholds)
    opts = dict(options or {})
    pairs = limit_pairs(load_homography_gt(root), limit)
    if (METHOD_STITCH in methods or METHOD_STITCH_DEEP in methods) and estimator is None:
        estimator = default_estimator()
    if METHOD_STITCH_DEEP in methods:
        from stitch.deep import require_torch

        require_torch()

    t_start = time.perf_counter()
    rows: list[PairRow] = []
    checks: list[GTCheck] = []
    total = len(pairs) * (2 if control else 1)
    if progress:
        progress(0, total, "")
    jobs = ((i, pair, None) for i, pair in enumerate(pairs))
    if control:
        jobs = itertools.chain(jobs, ((i, pair, np.random.default_rng(seed + i)) for i, pair in enumerate(pairs)))
    for done, (i, pair, rng) in enumerate(jobs, 1):
        src = _readonly(read_image(pair.src))
        dst = _readonly(read_image(pair.dst))
        if rng is not None:
            pair, src, dst = control_pair(pair, src, (dst.shape[1], dst.shape[0]), rng)
        rows += _pair_rows(pair, src, dst, methods, estimator, seed, opts)
        if check_gt and rng is None:
            checks.append(gt_consistency(pair, src, dst))
        if progress:
            progress(done, total, pair.label)

    return BenchResult(
        root=str(root),
        seed=seed,
        options=opts,
        methods=methods,
        thresholds=tuple(float(t) for t in thresholds),
        rows=rows,
        summaries=summarize_rows(rows, thresholds),
        regressions=find_regressions(rows),
        time_ratio_vs_magsac=median_time_ratio([r for r in rows if not is_control(r.subset)]),
        seconds=time.perf_counter() - t_start,
        gt_checks=checks,
    )
