"""Compare-homography reports: every method and candidate matrix on one pair, side by side (HTML + JSON).

``compare_homographies(src, dst)`` runs, on one pair:

* the project's full pipeline (``select.estimate_pair``): one row, kind ``pipeline``, method ``stitch``;
* every candidate the pipeline scored (estimator x threshold x seed x feature setting), kind ``candidate``;
  with the method ``all-levels`` the feature levels the pipeline did not escalate to are run too;
* the refiners applied to the winning (unrefined) candidate: ``lsq``, ``ecc`` and, when ``stitch.deep``
  can be imported, ``deep`` (kind ``refined``);
* the OpenCV baselines of ``stitch.bench`` (SIFT + ratio 0.8 + RANSAC / USAC_MAGSAC at 3 px), kind
  ``baseline``.

Every row is scored with the same ``quality.ScoringContext`` (same images, same working scale, same
``ScoreConfig``), so scores are comparable across rows. Candidate rows are measured on the match set of
their own feature level (as the pipeline scored them); pipeline, refined and baseline rows on the winning
candidate's match set, so their inliers, transfer error and support term compare directly.

Column definitions (all errors in full-resolution px):

* ``inliers``: matches whose symmetric transfer error (``geometry.transfer_errors``) is below the score's
  ``support_tau``; ``inlier_ratio`` = inliers / matches; ``estimator_inliers``: what the robust
  estimator's own mask said (candidates only).
* ``transfer_rms``: RMS symmetric transfer error over those inliers (``quality.support``).
* ``score`` and ``parts``: ``quality.score`` (see its docstring); rejected rows score -inf with a reason.
* ``error``: with ground truth, ``metrics.homography_error``: the mean error on the annotated points when
  they are given (``homogr``), else the mean corner error of the src image.

JSON schema (``SCHEMA_VERSION`` 1), written by ``CompareReport.to_json`` / ``write_json``. Floats are
plain numbers except +-infinity, written as the strings ``"inf"`` / ``"-inf"``; NaN (not measured) is
``null``. The file is strict JSON (no NaN/Infinity literals)::

    {
      "schema_version": 1,
      "kind": "stitch.compare",
      "stitch_version": str, "opencv_version": str,
      "pairs": [                                   # one per compared pair (one for SRC DST)
        {
          "src": {"name": str, "path": str | null, "width": int, "height": int},
          "dst": {...same...},
          "preset": str, "seed": int, "methods": [str],
          "score_config": {ScoreConfig fields},
          "pipeline": {"ok": bool, "error": str | null, "refined_by": str | null,
                       "levels_tried": [str], "warnings": [str]},
          "winner": int | null,                    # row id of the pipeline's matrix
          "runner_up": int | null,                 # the best row other than the pipeline's and its winning candidate's
          "ground_truth": null | {"H": 3x3, "error_kind": "points" | "corner", "points": int | null,
                                  "winner_error": float, "best_error": float, "best_row": int | null,
                                  "winner_within_px": float, "winner_is_best": bool},
          "notes": [str],
          "timings": {"pipeline": s, "candidates": s, "refiners": s, "baselines": s, "total": s},
          "rows": [                                # best score first; "id" is the index in this list
            {"id": int, "kind": "pipeline" | "candidate" | "refined" | "baseline",
             "method": str, "source": str, "family": str, "params": {str: any}, "trial": int | null,
             "H": 3x3 | null, "matches": int, "inliers": int, "inlier_ratio": float | null,
             "estimator_inliers": int | null, "transfer_rms": float | "inf" | null,
             "score": float | "-inf", "parts": {"photometric", "ncc", "gc", "overlap", "support",
             "inlier_mass", "inlier_rms": float}, "rejected": str | null, "seconds": float,
             "error": float | "inf" | null, "note": str}
          ],
          "families": [                            # candidate rows grouped by estimator x feature setting
            {"family": str, "trials": int, "rejected": int, "best_score": float | "-inf",
             "best_row": int | null, "best_error": float | "inf" | null, "seconds": float}
          ]
        }
      ],
      "screening": null | [{"src": str, "dst": str, "accepted": bool, "reason": str}]   # folder mode
    }

Convention: every H (3, 3) maps src pixels to dst pixels, ``x_dst ~ H @ [x, y, 1]``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stitch import __version__
from stitch.bench import baselines, datasets, metrics
from stitch.bench import homography as bench
from stitch.errors import ConfigError, NoOverlapError, StitchError
from stitch.geometry import corner_error, normalize_h, transfer_errors
from stitch.homography import quality
from stitch.homography.candidates import ESTIMATOR_CHOICES, Candidate
from stitch.homography.config import DEFAULT_PRESET, SelectConfig
from stitch.homography.matching import Matches
from stitch.homography.refine import REFINER_STEPS, REFINERS, corner_shift
from stitch.homography.search import FeatureCache, level_specs
from stitch.homography.select import (
    MAX_REFINE_SHIFT,
    HomographyResult,
    estimate_pair,
    max_refine_shift,
    run_level,
)
from stitch.io import ImageLike, image_name, jsonable, list_images, load_image, read_matrix, write_text_atomic

SCHEMA_VERSION = 1
#: Two rows whose matrices move the src image's corners less than this (mean, px) hold the same matrix: the
#: runner-up is the best row with another one (not the winner's own refinement that changed nothing).
SAME_MATRIX_PX = 0.05

METHOD_PIPELINE = bench.METHOD_STITCH
METHOD_CANDIDATES = "candidates"
METHOD_ALL_LEVELS = "all-levels"
METHOD_LSQ, METHOD_ECC, METHOD_DEEP = REFINER_STEPS  # the refiners table (stitch.homography.refine.REFINERS)
REFINER_METHODS = REFINER_STEPS
#: What ``methods=`` / ``--methods`` accepts (case-insensitive). The pipeline row is always there.
#: Estimator names keep only those estimators' candidate rows.
COMPARE_METHOD_CHOICES = (
    (METHOD_CANDIDATES, METHOD_ALL_LEVELS) + REFINER_METHODS + baselines.BASELINE_METHODS + ESTIMATOR_CHOICES
)
DEFAULT_METHODS = (METHOD_CANDIDATES, METHOD_LSQ, METHOD_ECC) + baselines.BASELINE_METHODS

KIND_PIPELINE, KIND_CANDIDATE, KIND_REFINED, KIND_BASELINE = "pipeline", "candidate", "refined", "baseline"

#: "The winner is the best matrix in the table" allows this much error (px) above the smallest one.
DEFAULT_GT_TOLERANCE = 1.0

ProgressFn = Callable[[str], None]


# --- rows and the report -----------------------------------------------------------------------------


@dataclass
class Row:
    """One matrix in the comparison (see the module docstring for the columns). H (3, 3) src -> dst px."""

    kind: str
    method: str
    family: str
    params: dict[str, Any]
    H: np.ndarray | None
    matches: int = 0
    inliers: int = 0
    inlier_ratio: float = math.nan
    estimator_inliers: int | None = None
    transfer_rms: float = math.nan
    score: float = -math.inf
    parts: dict[str, float] = field(default_factory=dict)
    rejected: str | None = None
    seconds: float = 0.0
    error: float = math.nan
    trial: int | None = None
    note: str = ""
    id: int = -1
    source: str = ""  # candidate source (stitch.homography.sources), "refiner" or "baseline"
    match_set: Matches | None = field(default=None, repr=False)
    residuals: np.ndarray | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when the row has a matrix that passed the plausibility gate."""
        return self.H is not None and self.rejected is None

    @property
    def label(self) -> str:
        """Short name for captions, e.g. '#3 RANSAC t=2 s1 (sift-4000)'."""
        p = self.params
        bits = [self.method]
        if "threshold" in p:
            bits.append(f"t={p['threshold']:g}")
        if p.get("seed"):
            bits.append(f"seed {p['seed']}")
        if "features" in p:
            bits.append(f"({p['features']} {p.get('matching', '')})".replace(" )", ")"))
        return f"#{self.id} " + " ".join(bits)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (numbers still raw: pass through ``jsonable``)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "method": self.method,
            "source": self.source,
            "family": self.family,
            "params": dict(self.params),
            "trial": self.trial,
            "H": None if self.H is None else self.H.tolist(),
            "matches": self.matches,
            "inliers": self.inliers,
            "inlier_ratio": self.inlier_ratio,
            "estimator_inliers": self.estimator_inliers,
            "transfer_rms": self.transfer_rms,
            "score": self.score,
            "parts": dict(self.parts),
            "rejected": self.rejected,
            "seconds": self.seconds,
            "error": self.error,
            "note": self.note,
        }


@dataclass
class GroundTruth:
    """H (3, 3) src -> dst px; optional annotated src_pts/dst_pts (N, 2), which select the point error."""

    H: np.ndarray
    src_pts: np.ndarray | None = None
    dst_pts: np.ndarray | None = None

    @property
    def error_kind(self) -> str:
        return "points" if self.src_pts is not None else "corner"


@dataclass
class CompareReport:
    """Every compared matrix for one pair, best score first. Write it with ``to_html`` / ``to_json``."""

    src_name: str
    dst_name: str
    src_path: str | None
    dst_path: str | None
    src_image: np.ndarray = field(repr=False)
    dst_image: np.ndarray = field(repr=False)
    preset: str
    seed: int
    methods: list[str]
    score_config: quality.ScoreConfig
    rows: list[Row]
    winner: int | None
    runner_up: int | None
    pipeline_error: str | None = None
    refined_by: str | None = None
    levels_tried: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    gt: GroundTruth | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def winner_row(self) -> Row | None:
        """The pipeline's matrix (None when the pipeline found no plausible homography)."""
        return None if self.winner is None else self.rows[self.winner]

    @property
    def runner_up_row(self) -> Row | None:
        """The best-scoring row that is not the winning candidate or a refinement of it."""
        return None if self.runner_up is None else self.rows[self.runner_up]

    def gt_summary(self, tolerance: float = DEFAULT_GT_TOLERANCE) -> dict[str, Any] | None:
        """With ground truth: the winner's error, the smallest error in the table, and whether the winner is
        within ``tolerance`` px of it; None without ground truth."""
        if self.gt is None:
            return None
        errs = [(r.error, r.id) for r in self.rows if r.H is not None and not math.isnan(r.error)]
        best_err, best_id = min(errs, default=(math.inf, None))
        w = self.winner_row
        w_err = w.error if w is not None else math.inf
        return {
            "H": self.gt.H.tolist(),
            "error_kind": self.gt.error_kind,
            "points": None if self.gt.src_pts is None else len(self.gt.src_pts),
            "winner_error": w_err,
            "best_error": best_err,
            "best_row": best_id,
            "winner_within_px": tolerance,
            "winner_is_best": bool(math.isfinite(w_err) and w_err <= best_err + tolerance),
        }

    def families(self) -> list[dict[str, Any]]:
        """Candidate rows by family (estimator x feature setting): trials, best score and error, seconds."""
        groups: dict[str, list[Row]] = {}
        for r in self.rows:
            if r.kind == KIND_CANDIDATE:
                groups.setdefault(r.family, []).append(r)
        out = []
        for fam, rs in groups.items():
            ok = [r for r in rs if r.ok]
            best = max(ok, key=lambda r: r.score, default=None)
            errs = [r.error for r in rs if r.H is not None and not math.isnan(r.error)]
            out.append(
                {
                    "family": fam,
                    "trials": len(rs),
                    "rejected": len(rs) - len(ok),
                    "best_score": -math.inf if best is None else best.score,
                    "best_row": None if best is None else best.id,
                    "best_error": min(errs) if errs else math.nan,
                    "seconds": sum(r.seconds for r in rs),
                }
            )
        return sorted(out, key=lambda f: -f["best_score"])

    def to_dict(self) -> dict[str, Any]:
        """The pair object of the JSON schema (module docstring), numbers raw."""

        def img(name: str, path: str | None, im: np.ndarray) -> dict[str, Any]:
            return {"name": name, "path": path, "width": int(im.shape[1]), "height": int(im.shape[0])}

        return {
            "src": img(self.src_name, self.src_path, self.src_image),
            "dst": img(self.dst_name, self.dst_path, self.dst_image),
            "preset": self.preset,
            "seed": self.seed,
            "methods": list(self.methods),
            "score_config": asdict(self.score_config),
            "pipeline": {
                "ok": self.pipeline_error is None,
                "error": self.pipeline_error,
                "refined_by": self.refined_by,
                "levels_tried": list(self.levels_tried),
                "warnings": list(self.warnings),
            },
            "winner": self.winner,
            "runner_up": self.runner_up,
            "ground_truth": self.gt_summary(),
            "notes": list(self.notes),
            "timings": dict(self.timings),
            "rows": [r.to_dict() for r in self.rows],
            "families": self.families(),
        }

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the JSON report (schema in the module docstring) atomically; returns the path."""
        return write_json([self], path)

    def to_html(self, path: str | os.PathLike) -> Path:
        """Write the self-contained HTML report (images inline, no external request) atomically."""
        return write_html([self], path)


def report_document(reports: Sequence[CompareReport], screening: list[dict[str, Any]] | None = None) -> dict:
    """The whole JSON document (schema in the module docstring) for one or more pair reports."""
    return jsonable(
        {
            "schema_version": SCHEMA_VERSION,
            "kind": "stitch.compare",
            "stitch_version": __version__,
            "opencv_version": cv2.__version__,
            "pairs": [r.to_dict() for r in reports],
            "screening": screening,
        }
    )


def write_json(
    reports: Sequence[CompareReport], path: str | os.PathLike, screening: list[dict[str, Any]] | None = None
) -> Path:
    """Write one JSON document for ``reports`` atomically (strict JSON: no NaN/Infinity literals)."""
    text = json.dumps(report_document(reports, screening), indent=1, allow_nan=False)
    return write_text_atomic(path, text + "\n")


def write_html(
    reports: Sequence[CompareReport],
    path: str | os.PathLike,
    screening: list[dict[str, Any]] | None = None,
    title: str | None = None,
) -> Path:
    """Write one self-contained HTML page with a section per report, atomically."""
    from stitch.report.html import render_page

    return write_text_atomic(path, render_page(reports, screening=screening, title=title))


# --- inputs ------------------------------------------------------------------------------------------


def parse_methods(methods: Sequence[str] | str | None, include_deep: bool = False) -> list[str]:
    """Canonical method names (case-insensitive, comma lists allowed); ConfigError names unknown ones."""
    if methods is None:
        out = list(DEFAULT_METHODS)
    else:
        items = [methods] if isinstance(methods, str) else list(methods)
        tokens = [t.strip() for item in items for t in str(item).split(",") if t.strip()]
        canon = {c.lower(): c for c in COMPARE_METHOD_CHOICES}
        bad = [t for t in tokens if t.lower() not in canon]
        if bad or not tokens:
            raise ConfigError(
                f"methods: unknown or empty {bad or tokens}; choose from {', '.join(COMPARE_METHOD_CHOICES)}"
            )
        out = list(dict.fromkeys(canon[t.lower()] for t in tokens))
    if include_deep and METHOD_DEEP not in out:
        out.append(METHOD_DEEP)
    return out


def _as_gt(gt: Any, gt_points: Any) -> GroundTruth | None:
    """GroundTruth from a (3, 3) array, matrix file or datasets.GTPair; points from (A, B) or an N x 6 file."""
    if gt is None:
        if gt_points is not None:
            raise ConfigError("gt_points: needs gt (the ground-truth matrix) too")
        return None
    pa = pb = None
    if isinstance(gt, datasets.GTPair):
        H, pa, pb = gt.H_gt, gt.eval_src_pts, gt.eval_dst_pts
    elif isinstance(gt, (str, os.PathLike)):
        H = read_matrix(gt)
    else:
        H = np.asarray(gt, dtype=np.float64)
        if H.shape != (3, 3):
            raise ConfigError(f"gt: expected a 3x3 matrix, got shape {H.shape}")
    if not np.all(np.isfinite(H)) or abs(np.linalg.det(H)) < 1e-12 * max(np.abs(H).max(), 1e-300) ** 3:
        raise ConfigError("gt: the ground-truth matrix is singular or not finite")
    if gt_points is not None:
        if isinstance(gt_points, (str, os.PathLike)):
            p = Path(gt_points)
            if not p.is_file():
                raise StitchError(f"{p}: ground-truth point file not found")
            pa, pb = datasets.read_vpts(p)
        else:
            pa, pb = (np.asarray(x, dtype=np.float64).reshape(-1, 2) for x in gt_points)
            if len(pa) != len(pb) or len(pa) == 0:
                raise ConfigError(
                    f"gt_points: expected two (N, 2) arrays of equal N > 0, got {len(pa)} and {len(pb)}"
                )
    return GroundTruth(normalize_h(H), pa, pb)


# --- running the methods -----------------------------------------------------------------------------


def _measure(row: Row, ctx: quality.ScoringContext, m: Matches | None, rescore: bool = True) -> Row:
    """Fill inliers, ratio, transfer RMS, residuals (and the score unless not ``rescore``) on matches m."""
    row.match_set = m
    row.matches = 0 if m is None else len(m)
    if row.H is None:
        return row
    if rescore:
        row.score, row.parts, reason = quality.score(row.H, ctx, m)
        row.rejected = row.rejected or reason
    if m is not None and len(m):
        e = transfer_errors(row.H, m.src_pts, m.dst_pts)
        row.residuals = e
        row.inliers = int(np.count_nonzero(e < ctx.config.support_tau))
        row.inlier_ratio = row.inliers / len(m)
        row.transfer_rms = quality.support(row.H, m, ctx.config)[2]
    return row


def _candidate_row(c: Candidate, trial: int | None, forced: bool) -> Row:
    p = dict(c.params)
    family = f"{c.method} · {p.get('features', '?')} {p.get('matching', '')}".strip()
    note = "forced level (the pipeline stopped before it)" if forced else ""
    return Row(
        KIND_CANDIDATE,
        c.method,
        family,
        p,
        c.H,
        estimator_inliers=c.n_inliers,
        score=c.score,
        parts=dict(c.parts),
        rejected=c.rejected,
        seconds=c.seconds,
        trial=trial,
        note=note,
        source=c.source,
    )


def _trial_index(cfg: SelectConfig) -> dict[tuple, int]:
    """(level, method, threshold, seed) -> generation order over every level of ``cfg`` (the trial index)."""
    out: dict[tuple, int] = {}
    for level in cfg.levels:
        for s in level_specs(level, cfg.seed):
            out.setdefault((level.name, s.method, float(s.threshold), s.seed), len(out))
    return out


def _trial_of(c: Candidate, index: dict[tuple, int]) -> int | None:
    p = c.params
    return index.get((p.get("level"), c.method, float(p.get("threshold", 0.0)), p.get("seed")))


def _deep_refiner() -> tuple[Callable[..., Any] | None, str | None]:
    """``stitch.deep.refine_deep``, or (None, why it is unavailable: no torch/kornia, module or function)."""
    try:
        from stitch.deep import refine_deep
    except ImportError as exc:
        return None, f"deep refiner skipped: stitch.deep.refine_deep is not available ({exc})"
    return refine_deep, None


def _refined_row(name: str, fn: Callable[[], np.ndarray | None], base: Row, src_size: tuple[int, int],
                 dst_size: tuple[int, int]) -> Row:
    t0 = time.perf_counter()
    why = None
    try:
        H = fn()
    except StitchError as exc:  # e.g. the deep refiner's weights are missing: a failed row, not a crash
        H, why = None, f"{name} refinement failed: {exc}"
    secs = time.perf_counter() - t0
    row = Row(
        KIND_REFINED,
        f"winner+{name.upper() if name != 'deep' else name}",
        f"refiner · {name}",
        {"refiner": name, "from": base.label.split(" ", 1)[1]},
        None if H is None else normalize_h(H),
        seconds=secs,
        source="refiner",
    )
    if H is None:
        row.rejected = why or f"{name} refinement did not converge"
    elif base.H is not None:
        row.note = f"moves the src corners by up to {corner_shift(base.H, row.H, *src_size, dst_size):.2f} px"
    return row


def _rank(rows: list[Row]) -> list[Row]:
    """Best score first (rejected last, then by inliers); ids become positions."""
    rows.sort(key=lambda r: (not r.ok, -r.score if r.ok else 0.0, -r.inliers))
    for i, r in enumerate(rows):
        r.id = i
    return rows


@dataclass
class _Stage:
    """What the stages of ``compare_homographies`` share: the images, names, config, scoring context, notes."""

    a: np.ndarray
    b: np.ndarray
    names: tuple[str, str]
    cfg: SelectConfig
    caches: tuple[FeatureCache, FeatureCache]
    say: Callable[[str], None]
    notes: list[str]
    ctx: Any = None

    def tell(self, what: str) -> None:
        self.say(f"{self.names[0]} -> {self.names[1]}: {what}")


def _run_pipeline(st: _Stage) -> tuple[HomographyResult | None, str | None]:
    """1. The full pipeline; a failure is recorded, not raised. Sets the scoring context."""
    res, error = None, None
    try:
        res = estimate_pair(st.a, st.b, st.cfg, st.caches[0], st.caches[1], names=st.names, progress=st.say)
    except NoOverlapError as exc:
        error = str(exc)
        st.notes.append(f"the pipeline failed: {exc}")
    st.ctx = quality.make_context(st.a, st.b, st.cfg.score)  # identical to the pipeline's: same images and config
    return res, error


def _candidate_rows(st: _Stage, res: HomographyResult | None,
                    meths: Sequence[str]) -> tuple[list[Row], Row | None, Matches | None]:
    """2. A row per candidate (grouped by family in the table); levels the pipeline skipped only when asked.

    Returns (rows, the winning candidate's row, the match set the baselines are measured on)."""
    trials = _trial_index(st.cfg)
    cands: list[Candidate] = list(res.candidates) if res is not None else []
    tried = list(res.levels_tried) if res is not None else []
    forced: list[Candidate] = []
    want_all = METHOD_ALL_LEVELS in meths or res is None
    for level in st.cfg.levels:
        if level.name in tried or not want_all:
            continue
        st.tell(f"forced level {level.name}")
        forced += run_level(level, st.a, st.b, st.cfg, st.ctx, st.caches[0], st.caches[1])
    if res is None and forced:
        st.notes.append("every level was re-run to show the rejected candidates")
    elif forced:
        st.notes.append(f"forced levels: {', '.join(sorted({c.params['level'] for c in forced}))}")
    est_filter = [m for m in meths if m in ESTIMATOR_CHOICES]
    show_cands = bool(est_filter) or METHOD_CANDIDATES in meths or METHOD_ALL_LEVELS in meths
    rows: list[Row] = []
    win_row: Row | None = None
    forced_ids = {id(c) for c in forced}
    for c in cands + forced:
        r = _measure(_candidate_row(c, _trial_of(c, trials), id(c) in forced_ids), st.ctx, c.matches, rescore=False)
        is_win = res is not None and c is res.best
        if is_win:
            win_row = r
            r.note = "winning candidate" + (f", refined by {res.refined_by}" if res.refined_by != "none" else "")
        if is_win or (show_cands and (not est_filter or c.method in est_filter)):
            rows.append(r)
    eval_m = res.matches if res is not None else next((c.matches for c in forced if c.matches is not None), None)
    return rows, win_row, eval_m


def _refiner_rows(st: _Stage, res: HomographyResult, win_row: Row, meths: Sequence[str],
                  preset: str) -> tuple[Row, list[Row]]:
    """3. The pipeline's row, and a row per refiner applied to the winning candidate."""
    wp = win_row.params
    pipe_row = Row(KIND_PIPELINE, METHOD_PIPELINE, "pipeline",
                   {"preset": preset, "refined_by": res.refined_by, "levels_tried": list(res.levels_tried),
                    "from": f"{res.best.method} t={wp.get('threshold', 0):g} {wp.get('features', '')}"},
                   res.H, seconds=res.seconds, note="the project's matrix", source=res.best.source)
    rows = [_measure(pipe_row, st.ctx, res.matches)]
    steps: list[tuple[str, Callable[[], np.ndarray | None]]] = []
    H0, m0, a, b = res.best.H, res.best.matches, st.a, st.b
    for name in (n for n in REFINER_STEPS if n in meths):  # the REFINERS table, in its order
        ref = REFINERS[name]
        if ref.extra == "deep":
            deep, why = _deep_refiner()
            if deep is None:
                st.notes.append(why)
                continue
        if ref.needs_matches and m0 is None:
            st.notes.append(f"{name} skipped: the winning candidate ({res.best.source}) has no matches")
            continue
        steps.append((name, lambda ref=ref: ref.step(H0, a, b, m0)))
    verdicts = {v["refiner"]: v for v in res.refinements}
    for name, fn in steps:
        st.tell(f"{name} refinement")
        row = _measure(_refined_row(name, fn, win_row, st.ctx.src_size, st.ctx.dst_size), st.ctx, res.matches)
        if row.H is not None and corner_shift(H0, row.H, *st.ctx.src_size, st.ctx.dst_size) > max_refine_shift(st.ctx.src_size):
            row.note += (f"; the pipeline would not keep it: more than its refinement cap of "
                         f"{max_refine_shift(st.ctx.src_size):.1f} px ({MAX_REFINE_SHIFT:.0%} of the src diagonal)")
        if name in verdicts:  # what the pipeline's own chain did with this refiner, and why
            v = verdicts[name]
            row.note += f"; in the pipeline's chain: {'kept' if v['kept'] else 'not kept'} ({v['reason']})"
        rows.append(row)
    return pipe_row, rows


def _baseline_rows(st: _Stage, meths: Sequence[str], eval_m: Matches | None) -> list[Row]:
    """4. The OpenCV baselines (stitch.bench.baselines), measured on the pipeline's match set."""
    rows: list[Row] = []
    base = [m for m in baselines.BASELINE_METHODS if m in meths]
    if base:
        st.tell("OpenCV baselines")
        for m, out in baselines.run_sift_baselines(st.a, st.b, base, fast=True).items():
            row = Row(KIND_BASELINE, m, "OpenCV baseline",
                      {"ratio": baselines.SIFT_RATIO, "threshold": baselines.BASELINE_REPROJ_THRESHOLD},
                      None if out.H is None else normalize_h(out.H), seconds=out.seconds,
                      note=f"own SIFT matching: {out.detail}", source=KIND_BASELINE)
            if out.H is None:
                row.rejected = "no homography found"
            rows.append(_measure(row, st.ctx, eval_m))
    return rows


def _rank_rows(st: _Stage, rows: list[Row], truth: GroundTruth | None, pipe_row: Row | None,
               win_row: Row | None) -> tuple[int | None, int | None]:
    """5. Ground-truth errors, the ranking, and (winner id, runner-up id); notes rows that beat the pipeline."""
    if truth is not None:
        nm = st.names
        pair = datasets.GTPair("compare", f"{nm[0]} -> {nm[1]}", Path(nm[0]), Path(nm[1]), truth.H, truth.src_pts,
                               truth.dst_pts)
        for r in rows:
            r.error = metrics.homography_error(pair, r.H, st.ctx.src_size)
    _rank(rows)
    winner = None if pipe_row is None else pipe_row.id
    derived = {id(pipe_row), id(win_row)}  # the runner-up: the best other row, refined rows included,
    w, h = st.ctx.src_size  # whose matrix differs from the winner's (a refinement that changed nothing is no rival)

    def rival(r: Row) -> bool:
        return pipe_row is None or corner_error(r.H, pipe_row.H, w, h) > SAME_MATRIX_PX

    runner = next((r.id for r in rows if r.ok and id(r) not in derived and rival(r)), None)
    if pipe_row is not None:
        for r in rows:
            if r.ok and r.score > pipe_row.score + 1e-9 and r.kind != KIND_CANDIDATE:
                st.notes.append(f"{r.method} scores higher ({r.score:.4f}) than the pipeline's matrix "
                                f"({pipe_row.score:.4f})")
    return winner, runner


def compare_homographies(
    src: ImageLike,
    dst: ImageLike,
    *,
    gt: Any = None,
    gt_points: Any = None,
    methods: Sequence[str] | str | None = None,
    preset: str = DEFAULT_PRESET,
    seed: int = 0,
    include_deep: bool = False,
    progress: ProgressFn | None = None,
    names: tuple[str, str] | None = None,
) -> CompareReport:
    """Compare the pipeline, its candidates, the refiners and the OpenCV baselines on one pair.

    src/dst: paths or (H, W[, C]) arrays. ``gt``: the ground-truth H (3, 3) src -> dst (array, matrix
    file or ``datasets.GTPair``); ``gt_points``: annotated points as (A (N, 2), B (N, 2)) or an N x 6 file
    (xA yA wA xB yB wB), which switch the error from the corner error to the point error. ``methods``:
    from COMPARE_METHOD_CHOICES (default DEFAULT_METHODS); ``include_deep`` adds 'deep'. ``progress``
    gets short stage messages. A pipeline failure is reported (``pipeline_error``), not raised.
    """
    t_start = time.perf_counter()
    meths = parse_methods(methods, include_deep)
    truth = _as_gt(gt, gt_points)
    cfg = SelectConfig.from_options(preset=preset, seed=seed)
    a, b = load_image(src, "src"), load_image(dst, "dst")
    nm = names or (image_name(src, 0) if not isinstance(src, np.ndarray) else "src",
                   image_name(dst, 1) if not isinstance(dst, np.ndarray) else "dst")
    st = _Stage(a, b, nm, cfg, (FeatureCache(), FeatureCache()), progress or (lambda _msg: None), [])
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    res, pipeline_error = _run_pipeline(st)
    timings["pipeline"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows, win_row, eval_m = _candidate_rows(st, res, meths)
    timings["candidates"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pipe_row = None
    if res is not None and win_row is not None:
        pipe_row, refined = _refiner_rows(st, res, win_row, meths, preset)
        rows += refined
    timings["refiners"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows += _baseline_rows(st, meths, eval_m)
    timings["baselines"] = time.perf_counter() - t0

    winner, runner = _rank_rows(st, rows, truth, pipe_row, win_row)
    timings["total"] = time.perf_counter() - t_start
    return CompareReport(
        src_name=nm[0], dst_name=nm[1],
        src_path=None if isinstance(src, np.ndarray) else str(src),
        dst_path=None if isinstance(dst, np.ndarray) else str(dst),
        src_image=a, dst_image=b, preset=preset, seed=int(seed), methods=meths, score_config=cfg.score,
        rows=rows, winner=winner, runner_up=runner, pipeline_error=pipeline_error,
        refined_by=None if res is None else res.refined_by,
        levels_tried=list(res.levels_tried) if res is not None else [],
        warnings=[] if res is None else list(res.warnings), gt=truth, notes=st.notes, timings=timings,
    )


# --- folders -----------------------------------------------------------------------------------------


@dataclass
class FolderComparison:
    """``compare_folder``'s result: a report per overlapping pair plus the screening verdict of every pair."""

    reports: list[CompareReport]
    screening: list[dict[str, Any]]

    def to_html(self, path: str | os.PathLike, title: str | None = None) -> Path:
        return write_html(self.reports, path, self.screening, title)

    def to_json(self, path: str | os.PathLike) -> Path:
        return write_json(self.reports, path, self.screening)


def compare_folder(
    folder: str | os.PathLike,
    *,
    methods: Sequence[str] | str | None = None,
    preset: str = DEFAULT_PRESET,
    seed: int = 0,
    include_deep: bool = False,
    progress: ProgressFn | None = None,
) -> FolderComparison:
    """``compare_homographies`` on every overlapping pair of a panorama folder.

    Pairs are screened by ``stitch_images``' own registration stage (``panorama.pipeline.screen_pairs``: its
    duplicate removal, shortlist and screening at the working resolution); each accepted pair (i < j,
    src = i) is then compared at full resolution. The screening lists every pair of the kept images, and each
    dropped duplicate against the image it repeats. Raises NoOverlapError when no pair overlaps.
    """
    from stitch.panorama.config import PanoramaConfig
    from stitch.panorama.pipeline import screen_pairs

    meths = parse_methods(methods, include_deep)  # check before the slow part
    paths = list_images(folder)
    if len(paths) < 2:
        raise StitchError(f"{folder}: need at least 2 images, found {len(paths)}")
    say = progress or (lambda _msg: None)
    pcfg = PanoramaConfig.from_options(preset=preset, seed=seed)
    sc = screen_pairs(paths, pcfg, lambda done, total, label: say(f"screening {done}/{total}: {label}"),
                      lazy=False)  # the report shows the photos: keep them
    accepted = [(e.i, e.j) for e in sc.edges]
    screened = set(sc.pairs)
    names = sc.names
    screening = [{"src": first, "dst": name, "accepted": False, "reason": f"identical images: {name} is a duplicate "
                  f"of {first} (dropped)"} for name, first in sc.duplicates]
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            ok = (i, j) in accepted
            reason = ("overlapping" if ok else why[1] if (why := sc.why.get((i, j))) is not None
                      else "not accepted" if (i, j) in screened else "not shortlisted (few matches in the first pass)")
            screening.append({"src": names[i], "dst": names[j], "accepted": ok, "reason": reason})
    if not accepted:
        raise NoOverlapError(
            f"{folder}: no two images overlap ({len(paths)} images screened)"
            + (f"; {pcfg.advice()}" if pcfg.advice() else "")
        )
    reports = []
    for k, (i, j) in enumerate(accepted):

        def pair_say(msg: str, k: int = k) -> None:
            say(f"pair {k + 1}/{len(accepted)}: {msg}")

        reports.append(
            compare_homographies(
                sc.images[i],
                sc.images[j],
                methods=meths,
                preset=preset,
                seed=seed,
                progress=pair_say,
                names=(names[i], names[j]),
            )
        )
        reports[-1].src_path, reports[-1].dst_path = str(paths[sc.source[i]]), str(paths[sc.source[j]])
    return FolderComparison(reports, screening)


# --- checking the winner against ground truth ----------------------------------------------------------


def check_winners(
    pairs: Sequence[datasets.GTPair],
    *,
    tolerance: float = DEFAULT_GT_TOLERANCE,
    progress: Callable[[int, int, str], None] | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """``compare_homographies`` on ground-truth pairs (``datasets.load_homography_gt``): is the winner the best?

    Returns one dict per pair: name, winner_error, best_error, best_method, winner_is_best (within
    ``tolerance`` px of the smallest error in the table) and seconds. ``options`` go to compare_homographies.
    """
    out = []
    for k, pair in enumerate(pairs):
        if progress is not None:
            progress(k, len(pairs), pair.label)
        rep = compare_homographies(pair.src, pair.dst, gt=pair, **options)
        gs = rep.gt_summary(tolerance)
        best = rep.rows[gs["best_row"]] if gs["best_row"] is not None else None
        out.append(
            {
                "name": pair.label,
                "winner_error": gs["winner_error"],
                "best_error": gs["best_error"],
                "best_method": None if best is None else f"{best.kind}: {best.label}",
                "winner_is_best": gs["winner_is_best"],
                "seconds": rep.timings["total"],
            }
        )
    if progress is not None:
        progress(len(pairs), len(pairs), "")
    return out
