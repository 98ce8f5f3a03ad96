"""Extreme-view benchmark: success within 10 px per candidate source, for the pipeline and two baselines.

Pairs (``DIR`` is the shared data root, holding ``homography_gt/`` and ``panoramas/``):

* synthetic, from one photo of each of the first ``photos`` panorama sets (shrunk to ``SYNTH_MAX_SIDE``):
  ``tilt-<deg>``: the photo's plane turned by 60, 70 or 80 degrees about a random in-plane axis, plus an
  in-plane rotation; ``zoom-<z>``: a 4-8x zoom into a random spot, rotated. The seed fixes everything.
* real (``REAL_PAIRS``): Oxford graf 1->5/6, wall 1->5/6, boat 1->6; homogr graf, adam, ExtremeZoom.
* real+tilt (``real_tilt_pairs``): every homogr pair and the Oxford 1->2 and 1->3 pairs outside the GT
  caveat, shrunk to ``SYNTH_MAX_SIDE``, with the dst photo seen again at a 60 or 70 degree tilt
  (``REAL_TILTS_DEG``, alternating): a real change of light, time and view under an extreme tilt, the kind
  of pair the synthetic views alone leave out. The src photo is often wider than what the tilted view
  sees in front of it (its horizon crosses src).

Error: the mean transfer error on evaluation points (homogr: its annotated points, those still in view for
real+tilt; synthetic and Oxford real+tilt: a 5 x 5 grid over the part of dst that src covers, for real+tilt
where the dst photo shows too; Oxford: the four src corners), as ``stitch bench homography``.
Methods: ``pipeline`` (every source, cheapest first), ``source:<name>`` (the pipeline restricted to one
candidate source), ``SIFT+RANSAC`` (stitch.bench.homography) and ``ASIFT (OpenCV)``: cv2.AffineFeature
over SIFT (1500 points per view) at 800 px, FLANN (kd-trees, as OpenCV's asift.py sample) with ratio
0.8, USAC_MAGSAC 4 px. Each run's seconds and peak
traced memory (tracemalloc: Python and numpy buffers; torch's and OpenCV's internal buffers are not
seen) are recorded, and the pipeline row also has the seconds spent per source.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stitch.bench.baselines import METHOD_SIFT_RANSAC, run_sift_baselines
from stitch.bench.datasets import GTPair, load_homogr_pairs, load_oxford_pairs
from stitch.bench.homography import gt_caveat
from stitch.bench.metrics import homography_error
from stitch.errors import ConfigError, StitchError
from stitch.geometry import project, resize_matrix
from stitch.homography.sources import SOURCE_CHOICES
from stitch.imaging import resize_max_side
from stitch.io import list_images, read_image
from stitch.types import ProgressFn

SUCCESS_PX = 10.0
SYNTH_MAX_SIDE = 800
TILTS_DEG = (60.0, 70.0, 80.0)
REAL_TILTS_DEG = (60.0, 70.0)
#: The pair groups, in table order.
GROUPS = ("tilt", "zoom", "real", "real+tilt")
ZOOM_RANGE = (4.0, 8.0)
DEFAULT_PHOTOS = 4
REAL_PAIRS = (("oxford", "graf 1->5"), ("oxford", "graf 1->6"), ("oxford", "wall 1->5"), ("oxford", "wall 1->6"),
              ("oxford", "boat 1->6"), ("homogr", "graf"), ("homogr", "adam"), ("homogr", "ExtremeZoom"))

METHOD_PIPELINE = "pipeline"
METHOD_ASIFT = "ASIFT (OpenCV)"
SOURCE_METHODS = tuple(f"source:{s}" for s in SOURCE_CHOICES)
EXTREME_METHOD_CHOICES = (METHOD_PIPELINE, *SOURCE_METHODS, METHOD_SIFT_RANSAC, METHOD_ASIFT)
ASIFT_MAX_SIDE, ASIFT_POINTS, ASIFT_THRESHOLD = 800, 1500, 4.0


@dataclass
class ExtremePair:
    """One pair: images (H, W, 3) uint8, H_gt (3, 3) src px -> dst px, and the GTPair used for the error."""

    group: str  # one of GROUPS
    name: str
    src: np.ndarray = field(repr=False)
    dst: np.ndarray = field(repr=False)
    gt: GTPair = field(repr=False)


@dataclass
class ExtremeRow:
    """One method on one pair: error px (inf: failed), seconds, peak traced MiB, and a detail string."""

    group: str
    name: str
    method: str
    error: float
    seconds: float
    peak_mb: float
    detail: str = ""
    source_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error <= SUCCESS_PX


def plane_view(img: np.ndarray, tilt_deg: float, axis_deg: float, roll_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """img's plane turned by ``tilt_deg`` about an in-plane axis at ``axis_deg``, then rolled by ``roll_deg``;
    returns (view (h, w, 3) at most the input's max side, H (3, 3) img px -> view px)."""
    h, w = img.shape[:2]
    f = 1.2 * max(w, h)
    t, ax, ro = (math.radians(v) for v in (tilt_deg, axis_deg, roll_deg))
    u = np.array([math.cos(ax), math.sin(ax), 0.0])  # rotation axis in the image plane (Rodrigues)
    K = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    R = np.eye(3) + math.sin(t) * K + (1 - math.cos(t)) * K @ K
    Rz = np.array([[math.cos(ro), -math.sin(ro), 0], [math.sin(ro), math.cos(ro), 0], [0, 0, 1.0]])
    R = Rz @ R
    M = np.diag([f, f, 1.0]) @ np.column_stack([R[:, 0], R[:, 1], [0.0, 0.0, f]]) @ np.array(
        [[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1.0]])
    return _fit(img, M, max(w, h))


def zoom_view(img: np.ndarray, zoom: float, roll_deg: float, centre: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A ``zoom``x magnified, ``roll_deg`` rotated view of img around ``centre`` px, the input's size."""
    h, w = img.shape[:2]
    a = math.radians(roll_deg)
    R = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])
    H = (np.array([[1, 0, w / 2], [0, 1, h / 2], [0, 0, 1.0]]) @ R @ np.diag([zoom, zoom, 1.0])
         @ np.array([[1, 0, -centre[0]], [0, 1, -centre[1]], [0, 0, 1.0]]))
    return cv2.warpPerspective(img, H, (w, h), flags=cv2.INTER_CUBIC), H


def _fit(img: np.ndarray, M: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    q = project(M, np.array([[0, 0], [w, 0], [w, h], [0, h]], float))
    s = side / float((q.max(0) - q.min(0)).max())
    H = np.array([[s, 0, -s * q.min(0)[0]], [0, s, -s * q.min(0)[1]], [0, 0, 1]]) @ M
    H /= H[2, 2]
    size = np.ceil(project(H, np.array([[0, 0], [w, 0], [w, h], [0, h]], float)).max(0)).astype(int) + 1
    return cv2.warpPerspective(img, H, (int(size[0]), int(size[1])), flags=cv2.INTER_AREA), H


def eval_grid(H: np.ndarray, src_size: tuple[int, int], dst_size: tuple[int, int], n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(src_pts, dst_pts) (K, 2): an n x n grid over dst (5-95 %) whose preimage under H lies inside src."""
    dw, dh = dst_size
    g = np.linspace(0.05, 0.95, n)
    dst = np.array([[x * dw, y * dh] for y in g for x in g])
    src = project(np.linalg.inv(H), dst)
    inside = _inside(src, src_size)
    return src[inside], dst[inside]


def _inside(pts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N,) bool: which points (N, 2) px lie inside an image of (w, h) px."""
    w, h = size
    return (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)


def synthetic_pairs(root: Path, photos: int, seed: int) -> list[ExtremePair]:
    """Tilted and zoomed views of the first image of the first ``photos`` sets under root/panoramas."""
    pano = root / "panoramas"
    if not pano.is_dir():
        raise ConfigError(f"{pano}: not found (expected the shared data root, holding panoramas/)")
    rng = np.random.default_rng(seed)
    out: list[ExtremePair] = []
    for d in sorted(p for p in pano.iterdir() if p.is_dir())[:photos]:
        files = list_images(d)
        if not files:
            continue
        img, _ = resize_max_side(read_image(files[0]), SYNTH_MAX_SIDE)
        size = (img.shape[1], img.shape[0])
        views = [(f"tilt-{t:g}", "tilt", *plane_view(img, t, rng.uniform(0, 180), rng.uniform(-180, 180)))
                 for t in TILTS_DEG]
        z = rng.uniform(*ZOOM_RANGE)
        c = (rng.uniform(0.35, 0.65) * size[0], rng.uniform(0.35, 0.65) * size[1])
        views.append((f"zoom-{z:.1f}", "zoom", *zoom_view(img, z, rng.uniform(-180, 180), c)))
        for name, group, dst, H in views:
            sp, dp = eval_grid(H, size, (dst.shape[1], dst.shape[0]))
            label = f"{d.name} {name}"
            out.append(ExtremePair(group, label, img, dst, GTPair("synthetic", label, files[0], files[0], H, sp, dp)))
    return out


def real_pairs(root: Path) -> list[ExtremePair]:
    """REAL_PAIRS from root/homography_gt (Oxford affine and homogr)."""
    pairs = {(p.subset, p.name): p for p in _gt_pairs(root)}
    out = []
    for key in REAL_PAIRS:
        if key in pairs:
            p = pairs[key]
            out.append(ExtremePair("real", f"{p.subset} {p.name}", read_image(p.src), read_image(p.dst), p))
    return out


def opencv_asift(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray | None, str]:
    """OpenCV's ASIFT baseline: AffineFeature(SIFT 1500/view) at 800 px, FLANN + ratio 0.8, USAC_MAGSAC 4 px."""
    a, sa = resize_max_side(cv2.cvtColor(src, cv2.COLOR_BGR2GRAY), ASIFT_MAX_SIDE)
    b, sb = resize_max_side(cv2.cvtColor(dst, cv2.COLOR_BGR2GRAY), ASIFT_MAX_SIDE)
    det = cv2.AffineFeature_create(cv2.SIFT_create(nfeatures=ASIFT_POINTS))
    k1, d1 = det.detectAndCompute(a, None)
    k2, d2 = det.detectAndCompute(b, None)
    if d1 is None or d2 is None or len(k1) < 4 or len(k2) < 4:
        return None, "too few keypoints"
    flann = cv2.FlannBasedMatcher({"algorithm": 1, "trees": 4}, {"checks": 64})  # as OpenCV's asift.py sample
    good = [m[0] for m in flann.knnMatch(d1, d2, k=2) if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
    if len(good) < 4:
        return None, f"{len(good)} matches"
    p1 = np.float32([k1[m.queryIdx].pt for m in good])
    p2 = np.float32([k2[m.trainIdx].pt for m in good])
    H, mask = cv2.findHomography(p1, p2, cv2.USAC_MAGSAC, ASIFT_THRESHOLD)
    if H is None:
        return None, f"{len(good)} matches, no model"
    S1, S2 = np.diag([sa, sa, 1.0]), np.diag([sb, sb, 1.0])
    return np.linalg.inv(S2) @ H @ S1, f"{len(good)} matches, {int(mask.sum())} inliers"


def _measure(fn: Callable[[], tuple[np.ndarray | None, str, dict[str, float]]]) -> tuple[Any, float, float]:
    tracing = not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    try:
        out = fn()
    finally:
        secs = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
        if tracing:
            tracemalloc.stop()
    return out, secs, peak


def run_method(method: str, pair: ExtremePair, seed: int) -> ExtremeRow:
    """One method on one pair; a StitchError is a failed row (error inf), never a crash."""
    import stitch

    def go() -> tuple[np.ndarray | None, str, dict[str, float]]:
        if method == METHOD_SIFT_RANSAC:
            o = run_sift_baselines(pair.src, pair.dst, (METHOD_SIFT_RANSAC,))[METHOD_SIFT_RANSAC]
            return o.H, o.detail, {}
        if method == METHOD_ASIFT:
            H, why = opencv_asift(pair.src, pair.dst)
            return H, why, {}
        opts = {} if method == METHOD_PIPELINE else {"sources": method.split(":", 1)[1]}
        try:
            r = stitch.estimate_homography(pair.src, pair.dst, seed=seed, **opts)
        except StitchError as exc:
            return None, f"{type(exc).__name__}: {exc}", {}
        per: dict[str, float] = {}
        for c in r.candidates:
            per[c.source] = per.get(c.source, 0.0) + c.seconds
        detail = f"score {r.score:.3f}, source {r.best.source}, steps {','.join(r.levels_tried)}"
        return r.H, detail + ("; " + "; ".join(r.warnings) if r.warnings else ""), per

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (H, detail, per), secs, peak = _measure(go)
    err = homography_error(pair.gt, H, (pair.src.shape[1], pair.src.shape[0]))
    return ExtremeRow(pair.group, pair.name, method, err, secs, peak, detail, per)


@dataclass
class ExtremeResult:
    """Every row, and the summary per (group, method): successes, pairs, median seconds, median peak MiB."""

    rows: list[ExtremeRow]
    methods: list[str]
    seed: int
    seconds: float

    def summary(self) -> list[dict[str, Any]]:
        """One dict per (group incl. 'all', method), in method order."""
        out = []
        groups = [g for g in GROUPS if any(r.group == g for r in self.rows)] + ["all"]
        for g in groups:
            for m in self.methods:
                rs = [r for r in self.rows if r.method == m and (g == "all" or r.group == g)]
                if rs:
                    out.append({"group": g, "method": m, "pairs": len(rs), "ok@10": sum(r.ok for r in rs),
                                "median_seconds": float(np.median([r.seconds for r in rs])),
                                "median_peak_mb": float(np.median([r.peak_mb for r in rs]))})
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (inf errors as the string "inf")."""
        def num(x: float) -> Any:
            return "inf" if math.isinf(x) else round(float(x), 4)

        return {"benchmark": "extreme", "seed": self.seed, "success_px": SUCCESS_PX, "methods": self.methods,
                "seconds": round(self.seconds, 2), "summary": self.summary(),
                "rows": [{"group": r.group, "pair": r.name, "method": r.method, "error": num(r.error),
                          "ok": r.ok, "seconds": round(r.seconds, 3), "peak_mb": round(r.peak_mb, 1),
                          "detail": r.detail, "source_seconds": {k: round(v, 3) for k, v in r.source_seconds.items()}}
                         for r in self.rows]}


def _gt_pairs(root: Path) -> list[GTPair]:
    gt = root / "homography_gt"
    if not gt.is_dir():
        raise ConfigError(f"{gt}: not found (expected the shared data root, holding homography_gt/)")
    return load_oxford_pairs(gt / "oxford_affine") + load_homogr_pairs(gt / "homogr")


def real_tilt_pairs(root: Path, seed: int) -> list[ExtremePair]:
    """The real+tilt group (module docstring): reliable real pairs with dst re-seen at REAL_TILTS_DEG."""
    rng = np.random.default_rng(seed + 1)  # apart from the synthetic views' draws
    out: list[ExtremePair] = []
    keep = [p for p in _gt_pairs(root) if not gt_caveat(p.subset, p.name)
            and (p.subset == "homogr" or p.name.endswith(("1->2", "1->3")))]
    for k, p in enumerate(keep):
        src, s_src = resize_max_side(read_image(p.src), SYNTH_MAX_SIDE)
        dst, s_dst = resize_max_side(read_image(p.dst), SYNTH_MAX_SIDE)
        tilt = REAL_TILTS_DEG[k % len(REAL_TILTS_DEG)]
        view, T = plane_view(dst, tilt, rng.uniform(0, 180), rng.uniform(-180, 180))
        H = T @ resize_matrix(s_dst) @ p.H_gt @ np.linalg.inv(resize_matrix(s_src))
        size, vsize = (src.shape[1], src.shape[0]), (view.shape[1], view.shape[0])
        sp = dp = None
        if p.eval_src_pts is not None:  # the annotated points still in view
            sp = project(resize_matrix(s_src), p.eval_src_pts)
            dp = project(T @ resize_matrix(s_dst), p.eval_dst_pts)
            seen = _inside(dp, vsize)
            sp, dp = (sp[seen], dp[seen]) if seen.sum() >= 4 else (None, None)
        if sp is None:  # a grid over the view, where both photos show the plane
            sp, dp = eval_grid(H, size, vsize)
            shown = _inside(project(np.linalg.inv(T), dp), (dst.shape[1], dst.shape[0]))
            sp, dp = (sp[shown], dp[shown]) if shown.sum() >= 4 else (sp, dp)
        label = f"{p.subset} {p.name} tilt-{tilt:g}"
        out.append(ExtremePair("real+tilt", label, src, view, GTPair("real+tilt", label, p.src, p.dst, H, sp, dp)))
    return out


def run_extreme_bench(root: str | Path, methods: Sequence[str] | None = None, photos: int = DEFAULT_PHOTOS,
                      seed: int = 0, synthetic: bool = True, real: bool = True, real_tilt: bool = True,
                      limit: int | None = None, progress: ProgressFn | None = None) -> ExtremeResult:
    """Run the extreme-view benchmark on the shared data root (see the module docstring); ``synthetic``,
    ``real`` and ``real_tilt`` choose the groups."""
    meths = list(methods or EXTREME_METHOD_CHOICES)
    bad = [m for m in meths if m not in EXTREME_METHOD_CHOICES]
    if bad:
        raise ConfigError(f"methods: {bad} not in {', '.join(EXTREME_METHOD_CHOICES)}")
    root = Path(root)
    t0 = time.perf_counter()
    pairs = ((synthetic_pairs(root, photos, seed) if synthetic else []) + (real_pairs(root) if real else [])
             + (real_tilt_pairs(root, seed) if real_tilt else []))
    pairs = pairs[:limit] if limit else pairs
    if not pairs:
        raise ConfigError(f"{root}: no extreme-view pairs (expected panoramas/ and homography_gt/ there)")
    rows, total = [], len(pairs) * len(meths)
    for i, p in enumerate(pairs):
        for j, m in enumerate(meths):
            if progress:
                progress(i * len(meths) + j, total, f"{p.name}: {m}")
            rows.append(run_method(m, p, seed))
    if progress:
        progress(total, total, "done")
    return ExtremeResult(rows, meths, seed, time.perf_counter() - t0)


__all__ = ["EXTREME_METHOD_CHOICES", "ExtremeResult", "run_extreme_bench"]
