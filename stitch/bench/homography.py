"""Benchmark datasets and metrics (DESIGN §4). Pure functions and small dataclasses; no printing.

Real homography accuracy (``run_homography_bench``) on ``homography_gt``:

- ``oxford_affine/<seq>/img1..6`` with ``H1to{k}p`` (img1 -> img{k}): 8 sequences x 5 pairs.
  Error = mean distance between image 1's four corners mapped by H_est and by H_gt.
- ``homogr/<name>A|B`` with ``derived_H_A_to_B/<name>.txt`` (A -> B; the original ``<name>_model.txt``
  maps B -> A) and ``<name>_vpts.txt`` (N x 6: xA yA wA xB yB wB): 16 pairs.
  Error = mean distance between H_est applied to the annotated A points and the annotated B points.

Convention: every H maps src pixels to dst pixels, ``x_dst ~ H @ [x, y, 1]``, origin at the top-left
corner of the top-left pixel (the same convention as the ground-truth files and ``stitch.geometry``).

Each image is read once per pair and the same (read-only) arrays go to every method; image reading
is excluded from all timings. The two OpenCV baselines share SIFT detection and matching: each one's
time is the shared detection + matching time plus its own ``cv2.findHomography`` time.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stitch.errors import ConfigError, StitchError
from stitch.geometry import corner_error, point_error, project
from stitch.io import IMAGE_EXTENSIONS, read_image, read_matrix

# --- names and defaults ------------------------------------------------------------------------------

SUBSETS = ("oxford", "homogr")
OVERALL = "overall"

METHOD_STITCH = "stitch"
METHOD_SELECT_SCORE = "stitch: select by score (raw)"
METHOD_SELECT_INLIERS = "stitch: select by inliers (raw)"
METHOD_SIFT_RANSAC = "SIFT+RANSAC"
METHOD_SIFT_MAGSAC = "SIFT+MAGSAC"

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
BASELINE_METHODS = (METHOD_SIFT_RANSAC, METHOD_SIFT_MAGSAC)

#: Error thresholds (px) for ok@t and AUC@t.
DEFAULT_THRESHOLDS = (3.0, 5.0, 10.0)
#: A pair is a regression when a baseline is at or below this error (px) and the project is not.
REGRESSION_THRESHOLD = 3.0

#: Baseline settings, as in the benchmark protocol (OpenCV defaults otherwise).
SIFT_RATIO = 0.8
BASELINE_REPROJ_THRESHOLD = 3.0
_BASELINE_FLAGS = {METHOD_SIFT_RANSAC: cv2.RANSAC, METHOD_SIFT_MAGSAC: cv2.USAC_MAGSAC}

#: ``progress(done, total, label)``: called once with ``done=0`` before the first pair, then after each.
ProgressFn = Callable[[int, int, str], None]
#: ``estimator(src_bgr, dst_bgr, seed=..., **options)`` -> object with ``.H`` and ``.candidates``.
EstimatorFn = Callable[..., Any]


# --- ground truth ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GTPair:
    """One benchmark pair with its ground truth.

    ``H_gt`` (3, 3) float64 maps ``src`` pixels to ``dst`` pixels. ``eval_src_pts`` / ``eval_dst_pts``
    (N, 2) are annotated correspondences (``homogr``); None means the corner error is used (``oxford``).
    """

    subset: str
    name: str
    src: Path
    dst: Path
    H_gt: np.ndarray = field(repr=False)
    eval_src_pts: np.ndarray | None = field(default=None, repr=False)
    eval_dst_pts: np.ndarray | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """``<subset>/<name>``, unique within a benchmark."""
        return f"{self.subset}/{self.name}"


def _find_image(folder: Path, stem: str) -> Path | None:
    """The image file ``folder/stem.<ext>`` (any known image extension), or None."""
    for p in sorted(folder.glob(f"{stem}.*")):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            return p
    return None


def _require_image(folder: Path, stem: str) -> Path:
    p = _find_image(folder, stem)
    if p is None:
        raise StitchError(f"{folder / stem}.*: image not found (the ground-truth set is incomplete)")
    return p


def _is_oxford_dir(d: Path) -> bool:
    return d.is_dir() and any((s / "H1to2p").is_file() for s in d.iterdir() if s.is_dir())


def _is_homogr_dir(d: Path) -> bool:
    return d.is_dir() and ((d / "derived_H_A_to_B").is_dir() or any(d.glob("*_model.txt")))


def load_oxford_pairs(folder: str | os.PathLike) -> list[GTPair]:
    """Pairs img1 -> img{k} of every ``<seq>`` folder that has ``H1to{k}p`` (sorted by sequence, k)."""
    root = Path(folder)
    pairs: list[GTPair] = []
    for seq in sorted(p for p in root.iterdir() if p.is_dir()):
        src = _find_image(seq, "img1")
        if src is None:
            continue
        ks = sorted(int(h.name[4:-1]) for h in seq.glob("H1to*p") if h.name[4:-1].isdigit())
        for k in ks:
            dst = _require_image(seq, f"img{k}")
            pairs.append(GTPair("oxford", f"{seq.name} 1->{k}", src, dst, read_matrix(seq / f"H1to{k}p")))
    return pairs


def _read_vpts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``<name>_vpts.txt`` (N x 6: xA yA wA xB yB wB) -> A (N, 2), B (N, 2) in pixels."""
    try:
        v = np.loadtxt(path, comments="#", ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise StitchError(f"{path}: not a numeric N x 6 point table ({exc})") from None
    if v.ndim != 2 or v.shape[1] != 6 or len(v) == 0:
        raise StitchError(f"{path}: expected N x 6 columns (xA yA wA xB yB wB), got shape {v.shape}")
    return v[:, 0:2] / v[:, 2:3], v[:, 3:5] / v[:, 5:6]


def load_homogr_pairs(folder: str | os.PathLike) -> list[GTPair]:
    """Pairs A -> B of the CMP ``homogr`` set (sorted by name).

    The A -> B matrix is ``derived_H_A_to_B/<name>.txt``; without it, ``inv(<name>_model.txt)`` (the
    model file maps B -> A). Evaluation points come from ``<name>_vpts.txt`` when present.
    """
    root = Path(folder)
    derived = root / "derived_H_A_to_B"
    names = {p.stem for p in derived.glob("*.txt")} if derived.is_dir() else set()
    names |= {p.name[: -len("_model.txt")] for p in root.glob("*_model.txt")}
    pairs: list[GTPair] = []
    for name in sorted(names):
        if (derived / f"{name}.txt").is_file():
            H = read_matrix(derived / f"{name}.txt")
        else:
            model = read_matrix(root / f"{name}_model.txt")
            try:
                H = np.linalg.inv(model)
            except np.linalg.LinAlgError:
                raise StitchError(f"{root / name}_model.txt: singular matrix") from None
        H = H / H[2, 2]
        src, dst = _require_image(root, f"{name}A"), _require_image(root, f"{name}B")
        vpts = root / f"{name}_vpts.txt"
        pa, pb = _read_vpts(vpts) if vpts.is_file() else (None, None)
        pairs.append(GTPair("homogr", name, src, dst, H, pa, pb))
    return pairs


def load_homography_gt(root: str | os.PathLike) -> list[GTPair]:
    """All ground-truth pairs under ``root``: oxford first, then homogr.

    ``root`` is the ``homography_gt`` folder (holding ``oxford_affine/`` and/or ``homogr/``) or one of
    those two folders directly. Raises StitchError naming ``root`` when neither subset is found.
    """
    base = Path(root)
    if not base.is_dir():
        raise StitchError(f"{base}: folder not found")
    pairs: list[GTPair] = []
    if (base / "oxford_affine").is_dir() or (base / "homogr").is_dir():
        if _is_oxford_dir(base / "oxford_affine"):
            pairs += load_oxford_pairs(base / "oxford_affine")
        if _is_homogr_dir(base / "homogr"):
            pairs += load_homogr_pairs(base / "homogr")
    elif _is_oxford_dir(base):
        pairs = load_oxford_pairs(base)
    elif _is_homogr_dir(base):
        pairs = load_homogr_pairs(base)
    if not pairs:
        raise StitchError(
            f"{base}: no homography ground truth found (expected oxford_affine/<seq>/H1to2p "
            "or homogr/derived_H_A_to_B/)"
        )
    return pairs


def limit_pairs(pairs: Sequence[GTPair], limit: int | None) -> list[GTPair]:
    """The first ``limit`` pairs of each subset (all pairs when ``limit`` is None), order kept."""
    if limit is None:
        return list(pairs)
    if limit < 1:
        raise ConfigError(f"limit: must be >= 1, got {limit}")
    seen: dict[str, int] = {}
    out = []
    for p in pairs:
        if seen.get(p.subset, 0) < limit:
            out.append(p)
            seen[p.subset] = seen.get(p.subset, 0) + 1
    return out


# --- errors and metrics ------------------------------------------------------------------------------


def is_degenerate(H: np.ndarray | None) -> bool:
    """True when H is None, not (3, 3), has non-finite entries or is (numerically) singular."""
    if H is None:
        return True
    H = np.asarray(H, dtype=np.float64)
    if H.shape != (3, 3) or not np.all(np.isfinite(H)):
        return True
    s = np.linalg.svd(H, compute_uv=False)
    return bool(s[0] == 0 or s[-1] <= 1e-12 * s[0])


def homography_error(pair: GTPair, H_est: np.ndarray | None, src_size: tuple[int, int]) -> float:
    """Error (px) of ``H_est`` (3, 3) on ``pair`` per DESIGN §4; inf when H_est is None or degenerate.

    ``src_size`` is (width, height) of the src image. With annotated points (homogr) it is the mean
    distance between H_est @ A points and the B points; otherwise the mean corner error of the src image.
    """
    if is_degenerate(H_est):
        return math.inf
    if pair.eval_src_pts is not None and pair.eval_dst_pts is not None:
        err = point_error(H_est, pair.eval_src_pts, pair.eval_dst_pts)
    else:
        w, h = src_size
        err = corner_error(H_est, pair.H_gt, w, h)
    return err if math.isfinite(err) else math.inf


def _clean_errors(errors: Iterable[float]) -> np.ndarray:
    """Errors as float64; NaN (and None) count as failures (inf)."""
    e = np.array([math.inf if x is None else float(x) for x in errors], dtype=np.float64)
    e[np.isnan(e)] = math.inf
    return e


def ok_at(errors: Iterable[float], threshold: float) -> float:
    """Fraction of errors <= ``threshold`` (inf counts as a failure); NaN for an empty list."""
    e = _clean_errors(errors)
    return float(np.mean(e <= threshold)) if len(e) else math.nan


def auc_at(errors: Iterable[float], threshold: float) -> float:
    """Area under the recall-vs-error curve on [0, threshold], divided by ``threshold``.

    The SuperGlue/LoFTR definition: errors sorted, recall i/n at the i-th error, the curve starts at
    (0, 0) and is linear between points, and is held flat from the last error below the threshold up
    to the threshold. Failures (inf) lower the recall. NaN for an empty list.
    """
    if threshold <= 0:
        raise ConfigError(f"threshold: must be > 0, got {threshold}")
    e = np.sort(_clean_errors(errors))
    n = len(e)
    if n == 0:
        return math.nan
    errs = np.concatenate([[0.0], e])
    recall = np.concatenate([[0.0], np.arange(1, n + 1) / n])
    last = int(np.searchsorted(errs, threshold))
    x = np.concatenate([errs[:last], [threshold]])
    y = np.concatenate([recall[:last], [recall[last - 1]]])
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) * 0.5))
    return area / threshold


def median_or_nan(values: Iterable[float]) -> float:
    """Median of the non-NaN values (inf kept: it is a failure), NaN when there are none."""
    v = np.array([math.nan if x is None else float(x) for x in values], dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(np.median(v)) if len(v) else math.nan


@dataclass
class MethodSummary:
    """Aggregate of one method over a set of pairs. ``ok`` / ``auc`` are keyed by threshold (px)."""

    method: str
    pairs: int
    ok: dict[float, float]
    auc: dict[float, float]
    median_error: float
    median_seconds: float
    total_seconds: float


def summarize(
    method: str,
    errors: Sequence[float],
    seconds: Sequence[float],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> MethodSummary:
    """ok@t, AUC@t, median error and median/total seconds of one method (NaN seconds = not timed)."""
    secs = np.array([math.nan if s is None else float(s) for s in seconds], dtype=np.float64)
    timed = secs[~np.isnan(secs)]
    return MethodSummary(
        method=method,
        pairs=len(errors),
        ok={float(t): ok_at(errors, t) for t in thresholds},
        auc={float(t): auc_at(errors, t) for t in thresholds},
        median_error=median_or_nan(_clean_errors(errors)),
        median_seconds=float(np.median(timed)) if len(timed) else math.nan,
        total_seconds=float(np.sum(timed)) if len(timed) else math.nan,
    )


# --- methods -----------------------------------------------------------------------------------------


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
        from stitch.homography.matching import _knn

        idx, dist = _knn(d1, d2, cv2.NORM_L2, 2)
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
    unknown = [m for m in methods if m not in _BASELINE_FLAGS]
    if unknown:
        raise ConfigError(f"methods: unknown baseline(s) {unknown}; choose from {list(_BASELINE_FLAGS)}")
    t0 = time.perf_counter()
    src, dst = sift_ratio_matches(src_bgr, dst_bgr, fast=fast)
    t_match = time.perf_counter() - t0
    out: dict[str, MethodOutput] = {}
    for m in methods:
        t1 = time.perf_counter()
        H, n_in = None, 0
        if len(src) >= 4:
            H, mask = cv2.findHomography(src, dst, _BASELINE_FLAGS[m], BASELINE_REPROJ_THRESHOLD)
            n_in = int(mask.sum()) if mask is not None else 0
        secs = t_match + (time.perf_counter() - t1)
        out[m] = MethodOutput(
            None if H is None else np.asarray(H, np.float64), secs, f"{len(src)} matches, {n_in} inliers"
        )
    return out


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
        return _jsonable(
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


def _jsonable(x: Any) -> Any:
    """Recursively convert to JSON types: numpy -> python, Path -> str, inf -> "inf", NaN -> None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if x is None or isinstance(x, str):
        return x
    return str(x)


def summarize_rows(
    rows: Sequence[PairRow], thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> dict[str, list[MethodSummary]]:
    """Summaries per subset present (oxford, homogr, in that order) and ``overall``, rows in table order."""
    groups: dict[str, list[PairRow]] = {}
    for s in SUBSETS:
        sub = [r for r in rows if r.subset == s]
        if sub:
            groups[s] = sub
    groups[OVERALL] = list(rows)
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
    for r in rows:
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
) -> BenchResult:
    """Run the real-homography benchmark (DESIGN §4) on ``root`` (see ``load_homography_gt``).

    ``methods``: any of HOMOGRAPHY_METHOD_CHOICES; ``stitch`` also reports the two raw selector rows;
    ``stitch+deep`` is the same estimator with ``refiner="deep"`` (its detail holds the quality score).
    ``options`` go to the estimator as keyword arguments (e.g. ``preset``); ``seed`` too.
    ``limit``: only the first N pairs of each subset. ``estimator`` defaults to
    ``stitch.estimate_homography``. Each pair's images are read once; reading is not timed.
    ``check_gt``: also run the untimed ground-truth consistency diagnostic (``gt_consistency``) per pair.
    """
    methods = list(dict.fromkeys(methods))
    bad = [m for m in methods if m not in HOMOGRAPHY_METHOD_CHOICES]
    if bad or not methods:
        raise ConfigError(
            f"methods: unknown or empty {bad or methods}; choose from {list(HOMOGRAPHY_METHOD_CHOICES)}"
        )
    if not thresholds or any(t <= 0 for t in thresholds):
        raise ConfigError(f"thresholds: must be positive, got {list(thresholds)}")
    opts = dict(options or {})
    pairs = limit_pairs(load_homography_gt(root), limit)
    if (METHOD_STITCH in methods or METHOD_STITCH_DEEP in methods) and estimator is None:
        estimator = default_estimator()
    if METHOD_STITCH_DEEP in methods:
        from stitch.deep import require_torch

        require_torch()
    baselines = [m for m in methods if m in BASELINE_METHODS]

    t_start = time.perf_counter()
    rows: list[PairRow] = []
    checks: list[GTCheck] = []
    if progress:
        progress(0, len(pairs), "")
    for i, pair in enumerate(pairs):
        src = _readonly(read_image(pair.src))
        dst = _readonly(read_image(pair.dst))
        size = (src.shape[1], src.shape[0])
        outputs: dict[str, MethodOutput] = {}
        if METHOD_STITCH in methods:
            outputs.update(run_project(estimator, src, dst, seed, opts))
        if METHOD_STITCH_DEEP in methods:
            outputs[METHOD_STITCH_DEEP] = run_project(estimator, src, dst, seed, {**opts, "refiner": "deep"})[
                METHOD_STITCH]
        if baselines:
            outputs.update(run_sift_baselines(src, dst, baselines))
        for m in HOMOGRAPHY_ROW_ORDER:
            if m in outputs:
                o = outputs[m]
                rows.append(
                    PairRow(pair.subset, pair.name, m, homography_error(pair, o.H, size), o.seconds, o.detail,
                            o.score)
                )
        if check_gt:
            checks.append(gt_consistency(pair, src, dst))
        if progress:
            progress(i + 1, len(pairs), pair.label)

    return BenchResult(
        root=str(root),
        seed=seed,
        options=opts,
        methods=methods,
        thresholds=tuple(float(t) for t in thresholds),
        rows=rows,
        summaries=summarize_rows(rows, thresholds),
        regressions=find_regressions(rows),
        time_ratio_vs_magsac=median_time_ratio(rows),
        seconds=time.perf_counter() - t_start,
        gt_checks=checks,
    )
