"""Error measures and summaries of the homography benchmarks: ok@t, AUC@t, medians, per-method summaries."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from stitch.bench.datasets import GTPair
from stitch.errors import ConfigError
from stitch.geometry import corner_error, point_error

#: Error thresholds (px) for ok@t and AUC@t.
DEFAULT_THRESHOLDS = (3.0, 5.0, 10.0)


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
    """Error (px) of ``H_est`` (3, 3) on ``pair`` (corner error, or the annotated points' error); inf when H_est is None or degenerate.

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
