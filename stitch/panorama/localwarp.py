"""Stage 7b: parallax-tolerant local alignment after the camera model: one smooth displacement field per image.

The global model (rotations + focal, or homographies) cannot align a scene with depth. After the projection, each
image k gets a displacement field f_k on the panorama's projected frame (stitch.panorama.displacement: the point
the global model draws at p is drawn at p + f_k(p)), solved for all images at once:

* data: both ends of every match (x_a, x_b) of every pair, projected by the global model to p and q, land on the
  same point: p + f_a(p) = q + f_b(q). The matches are the pair's homography inliers plus its other tentative
  matches that form groups of their own homographies (sequential RANSAC: another plane, another depth; the
  multi-homography screening of parallax-tolerant stitching);
* model: each f_k is a mesh, a regular grid of GRID_CELLS cells along the longer side of the image's footprint
  (bilinear between vertices), so every match is one linear equation over eight vertices; the x and y
  components decouple and share one sparse normal matrix;
* regulariser (per image, over its grid): the thin-plate bending energy (second differences,
  f_xx^2 + 2 f_xy^2 + f_yy^2; its null space is the affine maps, so lines stay straight and shapes similar),
  a membrane term (first differences: limits stretching, and damps the decay so it does not overshoot), and
  a weak pull of every vertex to 0: away from the matches the field relaxes to 0 (the global model) over a few
  cells, and since every image is pulled alike the panorama does not drift (the average stays anchored);
* robust (after ELA, Li et al. 2017): solve, drop the matches whose residual |p + f_a(p) - q - f_b(q)| stays above
  RESIDUAL_FRACTION of the image diagonal (wrong matches; a depth edge the smooth field cannot follow), solve
  again, until none is dropped (at most ROBUST_ITERATIONS);
* the inverse field (what the renderer samples) is found per vertex by fixed-point iteration
  (displacement.invert_field).

Each match's weight is the share of the pair's grid cells it covers, so an edge with many matches does not
outweigh one with few in the same area, and the regulariser weights are per vertex relative to that.
The result depends on nothing random (cv2.findHomography's RANSAC seeds itself), so the same inputs give
the same fields.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from stitch.errors import ConfigError
from stitch.panorama.displacement import Displacement, invert_field
from stitch.panorama.viewgraph import PairEdge, PairMatches
from stitch.panorama.warp import Projection, border_points

#: The option's default (PanoramaConfig.local_warp): off until the figures hold on more sets.
DEFAULT_LOCAL_WARP = False
#: Mesh cells along the longer side of each image's footprint, and cells of margin around it.
GRID_CELLS = 32
GRID_MARGIN = 3
#: Regulariser weights per vertex (a data weight of about 1 per covered cell): bending, membrane, pull to 0.
BENDING = 20.0
MEMBRANE = 1.0
ANCHOR = 0.02
#: Match groups: RANSAC threshold (fraction of the image diagonal), the smallest group, the most groups per pair.
GROUP_FRACTION = 0.003
MIN_GROUP = 12
MAX_GROUPS = 4
#: Robust loop: a match whose residual after the fit exceeds this fraction of the image diagonal is dropped.
RESIDUAL_FRACTION = 0.004
ROBUST_ITERATIONS = 6
#: The first pass drops only residuals above ROBUST_START times the threshold, each next pass half as many times.
ROBUST_START = 4.0
#: Matches kept per pair in a Registration (spread over image a), and their precision (decimals of a px).
MAX_MATCHES_PER_PAIR = 600
MATCH_DECIMALS = 2


@dataclass
class LocalWarp:
    """The local warp of a panorama: ``fields`` per image (its Displacement, None where it has no matches); matches
    ``used`` and ``removed`` as outliers; the used matches' residual |p + f_a(p) - q - f_b(q)| (px, projected frame)
    under the global model (``before``) and with the fields (``after``), as (median, p95)."""

    fields: list[Displacement | None]
    used: int
    removed: int
    before: tuple[float, float]
    after: tuple[float, float]
    seconds: float = 0.0


# --- the matches ----------------------------------------------------------------------------------------


def _spread(pts: np.ndarray, cap: int, bins: int = 16) -> np.ndarray:
    """Indices of at most ``cap`` of pts (N, 2), spread over the points' box: round-robin over a bins x bins grid."""
    if len(pts) <= cap:
        return np.arange(len(pts))
    lo, hi = pts.min(0), pts.max(0)
    cell = np.floor((pts - lo) / np.maximum(hi - lo, 1e-9) * (bins - 1e-9)).astype(int)
    key = cell[:, 1] * bins + cell[:, 0]
    order = np.argsort(key, kind="stable")
    rank = np.empty(len(pts), int)
    first = np.r_[0, np.flatnonzero(np.diff(key[order])) + 1]
    starts = np.repeat(first, np.diff(np.r_[first, len(pts)]))
    rank[order] = np.arange(len(pts)) - starts
    return np.sort(np.lexsort((np.arange(len(pts)), rank))[:cap])


def pair_matches(edge: PairEdge, names: Sequence[str], cap: int = MAX_MATCHES_PER_PAIR) -> PairMatches:
    """The PairMatches of an accepted edge: its inliers, then its other tentative matches, at most ``cap`` in all
    (spread over image i, inliers first), rounded to MATCH_DECIMALS (what a saved Registration holds exactly)."""
    n_in = len(edge.pts_i)
    keep_in = _spread(edge.pts_i, cap)
    keep_more = _spread(edge.more_i, max(cap - len(keep_in), 0)) if len(edge.more_i) else np.zeros(0, int)
    a = np.vstack([edge.pts_i[keep_in], edge.more_i[keep_more]]) if n_in else edge.more_i[keep_more]
    b = np.vstack([edge.pts_j[keep_in], edge.more_j[keep_more]]) if n_in else edge.more_j[keep_more]
    return PairMatches(names[edge.i], names[edge.j], np.round(np.asarray(a, np.float64).reshape(-1, 2), MATCH_DECIMALS),
                       np.round(np.asarray(b, np.float64).reshape(-1, 2), MATCH_DECIMALS), len(keep_in))


def match_groups(pm: PairMatches, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(pts_a, pts_b) (N, 2): the inliers of ``pm`` plus the groups of its other matches that each fit a homography
    of their own within ``threshold`` px (sequential RANSAC, at most MAX_GROUPS groups of MIN_GROUP or more)."""
    a, b = [pm.pts_a[:pm.inliers]], [pm.pts_b[:pm.inliers]]
    rest_a, rest_b = pm.pts_a[pm.inliers:], pm.pts_b[pm.inliers:]
    for _ in range(MAX_GROUPS):
        if len(rest_a) < MIN_GROUP:
            break
        H, mask = cv2.findHomography(rest_a.astype(np.float32), rest_b.astype(np.float32), cv2.RANSAC, threshold,
                                     maxIters=2000, confidence=0.995)
        if H is None or mask is None or int(mask.sum()) < MIN_GROUP:
            break
        ok = mask.ravel().astype(bool)
        a.append(rest_a[ok])
        b.append(rest_b[ok])
        rest_a, rest_b = rest_a[~ok], rest_b[~ok]
    return np.vstack(a), np.vstack(b)


# --- the grids -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """One image's mesh: vertex (0, 0) at projected ``origin``, ``step`` px apart, ``shape`` (gh, gw); ``start``:
    its first unknown in the stacked system; ``period`` > 0 on a full turn."""

    origin: tuple[float, float]
    step: float
    shape: tuple[int, int]
    start: int
    period: float = 0.0

    @property
    def size(self) -> int:
        """Vertices in the grid."""
        return self.shape[0] * self.shape[1]

    def coords(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Projected points (N, 2) -> fractional vertex coordinates (gx, gy) (u wrapped near the grid on a turn)."""
        d = Displacement(self.origin, self.step, np.zeros(self.shape + (2,), np.float32),
                         np.zeros(self.shape + (2,), np.float32), self.period)
        return d.grid_coords(uv[:, 0], uv[:, 1])


def footprint(H: np.ndarray, size: tuple[int, int], projection: Projection) -> np.ndarray | None:
    """Projected outline (M, 2) of a (w, h) image through H (3, 3, image -> reference); on a full turn u is unwrapped
    around the image centre's u. None when it is unbounded or winds around a pole."""
    w, h = size
    pts = np.vstack([border_points(w, h), [[(w - 1) / 2.0, (h - 1) / 2.0]]])
    uv, valid = projection.forward(np.hstack([pts, np.ones((len(pts), 1))]) @ np.asarray(H, np.float64).T)
    if not np.all(valid) or not np.all(np.isfinite(uv)):
        return None
    if projection.turn:
        period = projection.period
        uv[:-1, 0] = (uv[:-1, 0] - uv[-1, 0] + period / 2.0) % period - period / 2.0 + uv[-1, 0]
        if np.ptp(uv[:-1, 0]) > 0.75 * period:
            return None
    return uv[:-1]


def make_grid(outline: np.ndarray, start: int, period: float = 0.0, cells: int = GRID_CELLS) -> Grid:
    """The mesh over a projected outline (M, 2): ``cells`` cells along its longer side, GRID_MARGIN cells around."""
    lo, hi = outline.min(0), outline.max(0)
    step = max(float((hi - lo).max()) / cells, 1e-6)
    gw, gh = (math.ceil(float((hi - lo)[k]) / step) + 1 + 2 * GRID_MARGIN for k in (0, 1))
    origin = (float(lo[0]) - GRID_MARGIN * step, float(lo[1]) - GRID_MARGIN * step)
    return Grid(origin, step, (gh, gw), start, period)


def regulariser(shape: tuple[int, int]) -> sp.csr_matrix:
    """(V, V) quadratic form of one grid: BENDING * thin-plate energy + MEMBRANE * gradient energy + ANCHOR * |f|^2."""
    gh, gw = shape

    def d1(n: int) -> sp.csr_matrix:
        return sp.diags([-np.ones(n - 1), np.ones(n - 1)], [0, 1], shape=(max(n - 1, 0), n), format="csr")

    def d2(n: int) -> sp.csr_matrix:
        return sp.diags([np.ones(n - 2), -2 * np.ones(n - 2), np.ones(n - 2)], [0, 1, 2], shape=(max(n - 2, 0), n),
                        format="csr")

    Ix, Iy = sp.identity(gw, format="csr"), sp.identity(gh, format="csr")
    Dx, Dy = sp.kron(Iy, d1(gw)), sp.kron(d1(gh), Ix)
    Dxx, Dyy, Dxy = sp.kron(Iy, d2(gw)), sp.kron(d2(gh), Ix), sp.kron(d1(gh), d1(gw))
    bend = Dxx.T @ Dxx + Dyy.T @ Dyy + 2.0 * (Dxy.T @ Dxy)
    membrane = Dx.T @ Dx + Dy.T @ Dy
    return (BENDING * bend + MEMBRANE * membrane + ANCHOR * sp.identity(gh * gw)).tocsr()


def interpolation(grid: Grid, uv: np.ndarray, total: int) -> sp.csr_matrix:
    """(N, total) sparse bilinear weights of the grid's vertices at projected points uv (N, 2) (clamped to the grid)."""
    gh, gw = grid.shape
    gx, gy = grid.coords(uv)
    x = np.clip(gx, 0.0, gw - 1.0)
    y = np.clip(gy, 0.0, gh - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.intp), gw - 2)
    y0 = np.minimum(np.floor(y).astype(np.intp), gh - 2)
    fx, fy = x - x0, y - y0
    rows = np.repeat(np.arange(len(uv)), 4)
    cols = grid.start + np.stack([y0 * gw + x0, y0 * gw + x0 + 1, (y0 + 1) * gw + x0, (y0 + 1) * gw + x0 + 1], 1)
    w = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1)
    return sp.csr_matrix((w.ravel(), (rows, cols.ravel())), shape=(len(uv), total))


# --- the solve -----------------------------------------------------------------------------------------


@dataclass
class MatchSystem:
    """Every used match, stacked: the interpolation rows A (N, V) (+ at p in image a's grid, - at q in b's), the
    gap d = q - p (N, 2) px (u wrapped on a turn), each match's weight (N,) and its residual threshold (N,) px."""

    A: sp.csr_matrix
    gap: np.ndarray
    weight: np.ndarray
    threshold: np.ndarray


def project_points(H: np.ndarray, pts: np.ndarray, projection: Projection) -> tuple[np.ndarray, np.ndarray]:
    """Full-res pixels (N, 2) through H (3, 3, image -> reference) and the projection: (uv (N, 2), valid (N,))."""
    ph = np.hstack([pts, np.ones((len(pts), 1))]) @ np.asarray(H, np.float64).T
    uv, valid = projection.forward(ph)
    return uv, valid & np.all(np.isfinite(uv), 1)


def _covered_cells(grid: Grid, uv: np.ndarray) -> int:
    gx, gy = grid.coords(uv)
    return len(np.unique(np.floor(gy).astype(np.int64) * grid.shape[1] + np.floor(gx).astype(np.int64)))


def match_system(grids: dict[int, Grid], total: int, pairs: Sequence[tuple[int, int, np.ndarray, np.ndarray]],
                 uvs: Sequence[tuple[np.ndarray, np.ndarray]], diagonals: Sequence[float],
                 period: float) -> MatchSystem | None:
    """The MatchSystem of pairs (a, b, pts_a, pts_b) projected to uvs (p (N, 2), q (N, 2)); None when empty."""
    rows, gaps, weights, thresholds = [], [], [], []
    for (a, b, _, _), (p, q) in zip(pairs, uvs):
        if not len(p):
            continue
        gap = q - p
        if period > 0:
            gap[:, 0] = (gap[:, 0] + period / 2.0) % period - period / 2.0
        rows.append(interpolation(grids[a], p, total) - interpolation(grids[b], q, total))
        gaps.append(gap)
        weights.append(np.full(len(p), _covered_cells(grids[a], p) / len(p)))
        thresholds.append(np.full(len(p), RESIDUAL_FRACTION * 0.5 * (diagonals[a] + diagonals[b])))
    if not rows:
        return None
    return MatchSystem(sp.vstack(rows).tocsr(), np.vstack(gaps), np.concatenate(weights), np.concatenate(thresholds))


def solve_fields(system: MatchSystem, reg: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(f (V, 2) px at every vertex, kept (N,) bool: the matches not dropped as outliers) by the robust loop."""
    keep = np.ones(len(system.gap), bool)
    f = np.zeros((reg.shape[0], 2))
    for it in range(ROBUST_ITERATIONS):
        A = system.A[keep]
        W = sp.diags(system.weight[keep])
        lu = splu((A.T @ W @ A + reg).tocsc())
        rhs = A.T @ (system.weight[keep, None] * system.gap[keep])
        f = np.stack([lu.solve(rhs[:, 0]), lu.solve(rhs[:, 1])], 1)
        resid = np.linalg.norm(system.A @ f - system.gap, axis=1)
        bad = keep & (resid > system.threshold * max(1.0, ROBUST_START / 2.0 ** it))
        if not bad.any() or bad.sum() >= keep.sum() - 4:
            break
        keep &= ~bad
    return f, keep


def _percentiles(x: np.ndarray) -> tuple[float, float]:
    return (float(np.median(x)), float(np.percentile(x, 95))) if len(x) else (0.0, 0.0)


def local_warp(homographies: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], projection: Projection,
               names: Sequence[str], matches: Sequence[PairMatches]) -> LocalWarp:
    """The local warp (see the module docstring) of images (w, h) ``sizes`` placed by H (3, 3, image -> reference)
    and ``projection``, from the pair ``matches`` (by image name; pairs naming other images are ignored)."""
    t0 = time.perf_counter()
    if len(homographies) != len(sizes) or len(names) != len(sizes):
        raise ConfigError(f"local_warp: {len(homographies)} homographies, {len(sizes)} sizes and {len(names)} names "
                          "must match")
    index = {nm: k for k, nm in enumerate(names)}
    period = projection.period if projection.turn else 0.0
    grids: dict[int, Grid] = {}
    total = 0
    for k, (H, size) in enumerate(zip(homographies, sizes)):
        outline = footprint(H, size, projection)
        if outline is not None:
            grids[k] = make_grid(outline, total, period)
            total += grids[k].size
    diagonals = [math.hypot(w, h) for w, h in sizes]
    pairs, uvs = [], []
    for pm in matches:
        a, b = index.get(pm.a), index.get(pm.b)
        if a is None or b is None or a not in grids or b not in grids:
            continue
        pa, pb = match_groups(pm, GROUP_FRACTION * diagonals[a])
        p, ok_p = project_points(homographies[a], pa, projection)
        q, ok_q = project_points(homographies[b], pb, projection)
        pairs.append((a, b, pa, pb))
        uvs.append((p[ok_p & ok_q], q[ok_p & ok_q]))
    system = match_system(grids, total, pairs, uvs, diagonals, period)
    fields: list[Displacement | None] = [None] * len(sizes)
    if system is None:
        return LocalWarp(fields, 0, 0, (0.0, 0.0), (0.0, 0.0), time.perf_counter() - t0)
    reg = sp.block_diag([regulariser(grids[k].shape) for k in sorted(grids)], format="csr")
    f, keep = solve_fields(system, reg)
    for k, g in grids.items():
        fk = f[g.start:g.start + g.size].reshape(g.shape + (2,))
        fields[k] = invert_field(fk, g.origin, g.step, period)
    before = np.linalg.norm(system.gap[keep], axis=1)
    after = np.linalg.norm(system.A[keep] @ f - system.gap[keep], axis=1)
    return LocalWarp(fields, int(keep.sum()), int((~keep).sum()), _percentiles(before), _percentiles(after),
                     time.perf_counter() - t0)
