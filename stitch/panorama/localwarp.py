"""Stage 7b: parallax-tolerant local alignment after the camera model: one smooth displacement field per image.

The global model (rotations + focal, or homographies) cannot align a scene with depth. After the projection, each
image k gets a displacement field f_k on the panorama's projected frame (stitch.panorama.displacement: the point
the global model draws at p is drawn at p + f_k(p)), solved for all images at once (after APAP's moving DLT,
Zaragoza et al. 2013, and ELA's robust elastic warp, Li et al. 2017, as a mesh warp solved by sparse least squares):

* data: both ends of every match (x_a, x_b) of every accepted pair, projected by the global model to p and q, land
  on the same point: p + f_a(p) = q + f_b(q), one linear equation per match and axis. The matches are the pair's
  homography inliers and its other tentative matches (what lies off that homography: other depths), screened for
  coherence (``screen_gaps``): a match whose gap q - p differs from the median gap of its nearest matches is
  wrong (parallax varies smoothly), and where that median gap is below the noise the gap to fit is 0;
* model: each f_k is a mesh, a regular grid of GRID_CELLS cells along the longer side of the image's footprint
  (fewer with many images, MAX_VERTICES in all), bilinear between vertices; the x and y components decouple and
  share one sparse normal matrix;
* regulariser (per image, over its grid): the thin-plate bending energy (second differences,
  f_xx^2 + 2 f_xy^2 + f_yy^2; its null space is the affine maps, so lines stay straight and shapes similar), a
  membrane term (first differences: limits stretching, and damps the decay so it does not overshoot), and a weak
  pull of every vertex to 0: away from the matches the field relaxes to 0 (the global model) over a few cells,
  and since every image is pulled alike the panorama does not drift (the average stays anchored);
* lines (``lines=``, from ``image_lines``): at samples along each straight segment of an image, its field equals
  the field's linear interpolation between the segment's ends (LINE_WEIGHT), so a straight segment is moved by an
  affine map along it and stays straight (the bending energy alone lets a field curve a line near a parallax step);
* robust (ELA's): solve, drop the matches whose residual |p + f_a(p) - q - f_b(q)| stays above RESIDUAL_FRACTION
  of the image diagonal (a wrong match, a depth edge the smooth field cannot follow; the first passes only drop
  several times that), solve again, until none is dropped (at most ROBUST_ITERATIONS);
* solver: sparse LU of the normal equations (minimum-degree order) in each pass; the inverse field (what the
  renderer samples) is found per vertex by fixed-point iteration (displacement.invert_field).

Each match's weight is the share of the pair's grid cells it covers, so an edge with many matches does not
outweigh one with few in the same area; the regulariser weights are per vertex, relative to that. Nothing is
random: the same inputs give the same fields.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # scipy loads when a mesh is solved, not with the CLI
    import scipy.sparse as sp

from stitch.errors import ConfigError
from stitch.panorama.displacement import Displacement, invert_field
from stitch.panorama.threads import in_order, thread_pool
from stitch.panorama.viewgraph import PairEdge, PairMatches
from stitch.panorama.warp import Projection, border_points

#: The option's default (PanoramaConfig.local_warp): on (docs/benchmarks/panorama.md, issue 21's run).
DEFAULT_LOCAL_WARP = True
#: Mesh cells along the longer side of each image's footprint, and cells of margin around it; with many images
#: fewer cells (not below MIN_GRID_CELLS) keep the vertices of all meshes under MAX_VERTICES (the solve's cost).
GRID_CELLS = 32
GRID_MARGIN = 3
MIN_GRID_CELLS = 12
MAX_VERTICES = 12000
#: Regulariser weights per vertex (a data weight of about 1 per covered cell): bending, membrane, pull to 0.
BENDING = 1.0
MEMBRANE = 0.2
ANCHOR = 0.01
#: A match is coherent when its gap differs from the median gap of its NEIGHBOURS nearest matches by less than this
#: fraction of the image diagonal (parallax varies smoothly; a wrong match stands alone).
COHERENCE_FRACTION = 0.004
NEIGHBOURS = 8
#: ... plus this many px per px of distance to those neighbours (parallax changes that fast on a receding plane).
MAX_GRADIENT = 0.2
#: Where the median gap of a match and its NEIGHBOURS nearest matches is below this fraction of the image diagonal
#: (about half a pixel at the working resolution), the images agree: the gap is noise, and the field stays 0.
NOISE_FRACTION = 0.0005
#: An image whose field stays below this (px) everywhere keeps the global model alone (no field: nothing to sample;
#: a quarter of a pixel, about the noise of the matches, changes nothing a viewer sees, and the canvas keeps its size).
MIN_FIELD_PX = 0.25
#: Robust loop: a match whose residual after the fit exceeds this fraction of the image diagonal is dropped.
RESIDUAL_FRACTION = 0.008
ROBUST_ITERATIONS = 5
#: The first pass drops only residuals above ROBUST_START times the threshold, each next pass half as many times.
ROBUST_START = 4.0
#: Line term: segments found by cv2's line segment detector on each image at up to LINE_SIDE px on its longer side,
#: the LINES_PER_IMAGE longest of at least MIN_LINE_FRACTION of that side, each sampled every half grid step; at
#: each sample the displacement is held to its linear interpolation between the segment's ends with weight
#: LINE_WEIGHT (against a match's weight of about one per covered cell), so the field moves a straight segment by an
#: affine map along it rather than bending it.
LINE_SIDE = 800
LINES_PER_IMAGE = 150
MIN_LINE_FRACTION = 0.03
LINE_WEIGHT = 5.0
#: Matches kept per pair in a Registration (spread over image a), and their precision (decimals of a px).
MAX_MATCHES_PER_PAIR = 600
MATCH_DECIMALS = 2


@dataclass
class LocalWarp:
    """The local warp of a panorama: ``fields`` per image (its Displacement; None where it stays below MIN_FIELD_PX);
    matches ``used``, ``removed`` as outliers by the robust loop and dropped as ``incoherent`` before it; the used
    matches' residual |p + f_a(p) - q - f_b(q)| (px, projected frame) under the global model (``before``) and with
    the fields (``after``), as (median, p95); ``seconds`` it took."""

    fields: list[Displacement | None]
    used: int
    removed: int
    before: tuple[float, float]
    after: tuple[float, float]
    incoherent: int = 0
    seconds: float = 0.0


# --- the matches ----------------------------------------------------------------------------------------


def _spread(pts: np.ndarray, cap: int, bins: int = 16) -> np.ndarray:
    """Indices of at most ``cap`` of pts (N, 2), spread over the points' box: round-robin over a bins x bins grid."""
    if len(pts) <= cap:
        return np.arange(len(pts))
    if cap <= 0:
        return np.zeros(0, int)
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
    """The PairMatches of an accepted edge: its inliers, then its other tentative matches (where the parallax shows),
    at most ``cap`` in all, each part spread over image i (the other matches get up to half, and whatever the
    inliers leave), rounded to MATCH_DECIMALS (what a saved Registration holds exactly)."""
    n_in, n_more = len(edge.pts_i), len(edge.more_i)
    take_in = min(n_in, cap - min(n_more, cap // 2))
    keep_in, keep_more = _spread(edge.pts_i, take_in), _spread(edge.more_i, cap - take_in)
    a = np.vstack([np.reshape(edge.pts_i, (-1, 2))[keep_in], np.reshape(edge.more_i, (-1, 2))[keep_more]])
    b = np.vstack([np.reshape(edge.pts_j, (-1, 2))[keep_in], np.reshape(edge.more_j, (-1, 2))[keep_more]])
    return PairMatches(names[edge.i], names[edge.j], np.round(a.astype(np.float64), MATCH_DECIMALS),
                       np.round(b.astype(np.float64), MATCH_DECIMALS), len(keep_in))


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


def make_grids(outlines: Sequence[np.ndarray | None], period: float = 0.0) -> dict[int, Grid]:
    """A mesh per image with an outline (make_grid), stacked; GRID_CELLS cells along each one's longer side, fewer
    (down to MIN_GRID_CELLS) when the panorama would have more than MAX_VERTICES vertices in all."""
    cells = GRID_CELLS
    while True:
        grids, start = {}, 0
        for k, outline in enumerate(outlines):
            if outline is not None:
                grids[k] = make_grid(outline, start, period, cells)
                start += grids[k].size
        if start <= MAX_VERTICES or cells <= MIN_GRID_CELLS:
            return grids
        cells = max(MIN_GRID_CELLS, min(cells - 1, int(cells * math.sqrt(MAX_VERTICES / start))))


@functools.lru_cache(maxsize=64)
def regulariser(shape: tuple[int, int]) -> sp.csr_matrix:
    """(V, V) quadratic form of one grid: BENDING * thin-plate energy + MEMBRANE * gradient energy + ANCHOR * |f|^2
    (cached by shape: photos of one size make grids of a few shapes; callers do not modify it)."""
    import scipy.sparse as sp
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
    import scipy.sparse as sp
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


def image_lines(image: np.ndarray) -> np.ndarray:
    """(M, 4) float64 segments (x0, y0, x1, y1) in the pixels of image (h, w[, C]) uint8/uint16: cv2's line segment
    detector at up to LINE_SIDE px on the longer side, the LINES_PER_IMAGE longest of at least MIN_LINE_FRACTION
    of that side."""
    img = image if image.dtype == np.uint8 else (image >> 8).astype(np.uint8)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    h, w = gray.shape
    s = min(1.0, LINE_SIDE / max(h, w))
    small = gray if s >= 1.0 else cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))),
                                             interpolation=cv2.INTER_AREA)
    found = cv2.createLineSegmentDetector().detect(small)[0]
    if found is None:
        return np.zeros((0, 4))
    seg = (found.reshape(-1, 4).astype(np.float64) + 0.5) / s - 0.5
    length = np.hypot(seg[:, 2] - seg[:, 0], seg[:, 3] - seg[:, 1])
    keep = np.argsort(-length)[:LINES_PER_IMAGE]
    return seg[keep[length[keep] >= MIN_LINE_FRACTION * max(h, w)]]


def line_rows(grid: Grid, H: np.ndarray, segments: np.ndarray, projection: Projection, total: int) -> sp.csr_matrix:
    """Rows (R, total) of the line term of one image placed by H (3, 3): per segment (x0, y0, x1, y1) of
    ``segments`` (M, 4) (image pixels), at points along its projection every half grid step (at least 3), the field
    minus its linear interpolation between the segment's ends (what would bend the segment), times
    sqrt(LINE_WEIGHT); segments that leave the projection are skipped."""
    import scipy.sparse as sp
    segments = np.reshape(segments, (-1, 4))
    ends, ok = project_points(H, segments.reshape(-1, 2), projection)
    ends, ok = ends.reshape(-1, 2, 2), ok.reshape(-1, 2).all(axis=1)
    length = np.hypot(*(ends[:, 1] - ends[:, 0]).T)
    if grid.period > 0:
        length = np.minimum(length, grid.period - length)
    n = np.where(ok, np.maximum(3, np.ceil(2.0 * np.nan_to_num(length) / grid.step).astype(np.int64) + 1), 0)
    n[n > 4 * max(grid.shape)] = 0  # a segment whose projection runs off (near a pole): no term
    if not n.any():
        return sp.csr_matrix((0, total))
    which = np.repeat(np.arange(len(segments)), n)
    first = np.repeat(np.cumsum(n) - n, n)
    t = ((np.arange(len(which)) - first) / (n[which] - 1.0))[:, None]
    seg = segments[which]
    uv, valid = project_points(H, np.hstack([seg[:, 0:1] + t * (seg[:, 2:3] - seg[:, 0:1]),
                                             seg[:, 1:2] + t * (seg[:, 3:4] - seg[:, 1:2])]), projection)
    if grid.period > 0:  # each segment's samples on the side of the wrap its first one is on
        uv[:, 0] = uv[first, 0] + (uv[:, 0] - uv[first, 0] + grid.period / 2.0) % grid.period - grid.period / 2.0
    bad = np.zeros(len(segments), bool)
    np.logical_or.at(bad, which, ~valid)
    uv = np.where(valid[:, None], uv, 0.0)
    W = interpolation(grid, uv, total)
    at = np.arange(len(which))
    last = first + n[which] - 1
    mid = np.flatnonzero((at > first) & (at < last) & ~bad[which])
    tm = t[mid, 0]
    D = sp.csr_matrix((np.stack([np.ones(len(mid)), tm - 1.0, -tm], 1).ravel(),
                       (np.repeat(np.arange(len(mid)), 3), np.stack([mid, first[mid], last[mid]], 1).ravel())),
                      shape=(len(mid), len(which)))
    return (D @ W).tocsr() * math.sqrt(LINE_WEIGHT)


# --- the solve -----------------------------------------------------------------------------------------


@dataclass
class MatchSystem:
    """Every used match, stacked: the interpolation rows A (N, V) (+ at p in image a's grid, - at q in b's), the
    gap d = q - p (N, 2) px (u wrapped on a turn) the fit aims at (``screen_gaps``) and as measured (``raw``),
    each match's weight (N,), its residual threshold (N,) px, and how many matches screen_gaps dropped."""

    A: sp.csr_matrix
    gap: np.ndarray
    raw: np.ndarray
    weight: np.ndarray
    threshold: np.ndarray
    incoherent: int = 0


def project_points(H: np.ndarray, pts: np.ndarray, projection: Projection) -> tuple[np.ndarray, np.ndarray]:
    """Full-res pixels (N, 2) through H (3, 3, image -> reference) and the projection: (uv (N, 2), valid (N,))."""
    ph = np.hstack([pts, np.ones((len(pts), 1))]) @ np.asarray(H, np.float64).T
    uv, valid = projection.forward(ph)
    return uv, valid & np.all(np.isfinite(uv), 1)


def _covered_cells(grid: Grid, uv: np.ndarray) -> int:
    gx, gy = grid.coords(uv)
    return len(np.unique(np.floor(gy).astype(np.int64) * grid.shape[1] + np.floor(gx).astype(np.int64)))


def screen_gaps(p: np.ndarray, gap: np.ndarray, tolerance: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """(keep (N,) bool, gaps (N, 2) px to fit) of one pair's matches at projected p (N, 2) with gaps q - p (N, 2).

    Against the median gap of each match's NEIGHBOURS nearest matches: a match farther than ``tolerance`` px plus
    MAX_GRADIENT times their median distance from it is incoherent (dropped); where that median is shorter than
    ``noise`` px the images agree, and the gap to fit is 0 (a lone gap there is noise, which the field does not
    follow).
    """
    from scipy.spatial import cKDTree
    if len(p) < 3:
        return np.zeros(len(p), bool), gap
    dist, nn = cKDTree(p).query(p, k=min(NEIGHBOURS + 1, len(p)))
    local = np.median(gap[np.asarray(nn)[:, 1:]], axis=1)
    keep = np.linalg.norm(gap - local, axis=1) < tolerance + MAX_GRADIENT * np.median(dist[:, 1:], axis=1)
    fit = gap.copy()
    fit[np.linalg.norm(local, axis=1) < noise] = 0.0
    return keep, fit


def match_system(grids: dict[int, Grid], total: int, pairs: Sequence[tuple[int, int]],
                 uvs: Sequence[tuple[np.ndarray, np.ndarray]], diagonals: Sequence[float],
                 period: float) -> MatchSystem | None:
    """The MatchSystem of the coherent matches (screen_gaps) of pairs (a, b) projected to uvs (p (N, 2), q (N, 2));
    None when no pair has any."""
    import scipy.sparse as sp
    rows, gaps, raws, weights, thresholds, dropped = [], [], [], [], [], 0
    for (a, b), (p, q) in zip(pairs, uvs):
        gap = q - p
        if period > 0:
            gap[:, 0] = (gap[:, 0] + period / 2.0) % period - period / 2.0
        diagonal = 0.5 * (diagonals[a] + diagonals[b])
        keep, fit = screen_gaps(p, gap, COHERENCE_FRACTION * diagonal, NOISE_FRACTION * diagonal)
        dropped += int((~keep).sum())
        if not keep.any():
            continue
        p, q = p[keep], q[keep]
        rows.append(interpolation(grids[a], p, total) - interpolation(grids[b], q, total))
        raws.append(gap[keep])
        gaps.append(fit[keep])
        weights.append(np.full(len(p), _covered_cells(grids[a], p) / len(p)))
        thresholds.append(np.full(len(p), RESIDUAL_FRACTION * diagonal))
    if not rows:
        return None
    return MatchSystem(sp.vstack(rows).tocsr(), np.vstack(gaps), np.vstack(raws), np.concatenate(weights),
                       np.concatenate(thresholds), dropped)


def solve_fields(system: MatchSystem, reg: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(f (V, 2) px at every vertex, kept (N,) bool: the matches not dropped as outliers) by the robust loop; each
    pass factorises the normal equations (sparse LU in minimum-degree order on their symmetric pattern; cheaper here
    than conjugate gradients preconditioned by the first pass's factors) and solves for both axes."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import splu
    keep = np.ones(len(system.gap), bool)
    f = np.zeros((reg.shape[0], 2))
    for it in range(ROBUST_ITERATIONS):
        A = system.A[keep]
        normal = (A.T @ sp.diags(system.weight[keep]) @ A + reg).tocsc()
        rhs = A.T @ (system.weight[keep, None] * system.gap[keep])
        f = splu(normal, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True}).solve(np.asarray(rhs))
        if it == ROBUST_ITERATIONS - 1:
            break
        resid = np.linalg.norm(system.A @ f - system.gap, axis=1)
        bad = keep & (resid > system.threshold * max(1.0, ROBUST_START / 2.0 ** it))
        if not bad.any() or bad.sum() >= keep.sum() - 4:
            break
        keep &= ~bad
    return f, keep


def _percentiles(x: np.ndarray) -> tuple[float, float]:
    return (float(np.median(x)), float(np.percentile(x, 95))) if len(x) else (0.0, 0.0)


def local_warp(homographies: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], projection: Projection,
               names: Sequence[str], matches: Sequence[PairMatches],
               lines: Sequence[np.ndarray] | Callable[[int], np.ndarray] | None = None, workers: int = 1) -> LocalWarp:
    """The local warp (see the module docstring) of images (w, h) ``sizes`` placed by H (3, 3, image -> reference)
    and ``projection``, from the pair ``matches`` (by image name; pairs naming other images are ignored); ``lines``:
    per image, its straight segments (M, 4) (``image_lines``), kept straight (none: no line term), or a function of
    the image's index returning them (called only when a field is solved, for the images that have a grid, on
    ``workers`` threads; the result does not depend on it)."""
    import scipy.sparse as sp
    t0 = time.perf_counter()
    listed = lines is not None and not callable(lines)
    if len(homographies) != len(sizes) or len(names) != len(sizes) or (listed and len(lines) != len(sizes)):
        raise ConfigError(f"local_warp: {len(homographies)} homographies, {len(sizes)} sizes, {len(names)} names"
                          + (f" and {len(lines)} line sets" if listed else "") + " must match")
    index = {nm: k for k, nm in enumerate(names)}
    period = projection.period if projection.turn else 0.0
    grids = make_grids([footprint(H, size, projection) for H, size in zip(homographies, sizes)], period)
    total = sum(g.size for g in grids.values())
    diagonals = [math.hypot(w, h) for w, h in sizes]
    pairs, uvs = [], []
    for pm in matches:
        a, b = index.get(pm.a), index.get(pm.b)
        if a is None or b is None or a not in grids or b not in grids:
            continue
        p, ok_p = project_points(homographies[a], pm.pts_a, projection)
        q, ok_q = project_points(homographies[b], pm.pts_b, projection)
        pairs.append((a, b))
        uvs.append((p[ok_p & ok_q], q[ok_p & ok_q]))
    system = match_system(grids, total, pairs, uvs, diagonals, period)
    fields: list[Displacement | None] = [None] * len(sizes)
    if system is None:
        return LocalWarp(fields, 0, 0, (0.0, 0.0), (0.0, 0.0), seconds=time.perf_counter() - t0)
    if not system.gap.any():  # every match agrees with its neighbours to the noise: the global model stands
        before = _percentiles(np.linalg.norm(system.raw, axis=1))
        return LocalWarp(fields, len(system.gap), 0, before, before, system.incoherent, time.perf_counter() - t0)
    reg = sp.block_diag([regulariser(grids[k].shape) for k in sorted(grids)], format="csr")
    if lines is not None:
        segments = lines if callable(lines) else lines.__getitem__
        ks = sorted(grids)
        with thread_pool(workers, len(ks)) as pool:
            found = list(in_order(lambda i: segments(ks[i]), len(ks), pool, workers))
        L = sp.vstack([line_rows(grids[k], homographies[k], np.reshape(seg, (-1, 4)), projection, total)
                       for k, seg in zip(ks, found)]).tocsr()
        reg = (reg + L.T @ L).tocsr()
    f, keep = solve_fields(system, reg)
    for k, g in grids.items():
        fk = f[g.start:g.start + g.size].reshape(g.shape + (2,))
        if np.abs(fk).max() >= MIN_FIELD_PX:
            fields[k] = invert_field(fk, g.origin, g.step, period)
    before = np.linalg.norm(system.raw[keep], axis=1)
    after = np.linalg.norm(system.A[keep] @ f - system.raw[keep], axis=1)
    return LocalWarp(fields, int(keep.sum()), int((~keep).sum()), _percentiles(before), _percentiles(after),
                     system.incoherent, time.perf_counter() - t0)
