"""Rectangling by warping (the ``warp`` crop mode): a mesh warp stretches the valid region out to a rectangle.

After He, Chang and Sun, "Rectangling panoramic images via warping" (SIGGRAPH 2013; Lightroom's "Boundary
Warp"), in the inverse direction: a regular grid of cells over the *output* rectangle, and for each of its
vertices the canvas point it samples (``Mesh.src``), solved at a working resolution (``DEFAULT_RECT_WORK_PIXELS``)
and applied at full resolution. Every pixel shown is real content, nothing is invented, nothing is cut off but a
pixel or two of border.

1. Target: the rectangle with the valid region's area and its bounding box's aspect ratio (He et al.); cells of
   about ``DEFAULT_RECT_CELL`` px at the working resolution.
2. Boundary: the valid region's outer contour (its largest component, eroded by one working pixel) is cut at the
   four points nearest the bounding box's corners; the output border's vertices are placed on the four pieces
   at equal arc length (a fixed correspondence, so the output border samples the region's border).
3. Shape: each cell's map output -> canvas is kept close to a similarity (the as-similar-as-possible term of
   content-preserving warps); the border vertices are fixed, the others solved by sparse least squares.
4. Lines: segments found by cv2's line segment detector (at up to ``LINE_PIXELS``, finer than the mesh on large
   panoramas) inside the region are kept straight: the straight output segment between the images of a
   segment's ends must map onto the segment's line (linear in the unknowns). Inside: every 1 / ``SAMPLES`` of a
   cell, an output point whose canvas point falls outside the region (near a concave corner, where a smooth map
   cuts across) is pulled to its nearest region pixel. ``PASSES`` solves, each linearised at the previous one.
5. Render: each cell is split into two triangles, mapped affinely (cv2.remap, strip by strip); the same
   triangles map canvas points forwards (``Mesh.forward``), so points and pixels agree exactly.

Convention: points are (x, y) pixels with pixel (c, r)'s centre at (c, r); output vertex (i, j) (row, column) sits
at (j * step[0] - 0.5, i * step[1] - 0.5), so the grid spans the output's pixel edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # scipy loads when a mesh is solved, not with the CLI
    import scipy.sparse as sp

#: Pixels of the working resolution the mesh is solved at.
DEFAULT_RECT_WORK_PIXELS = 1_000_000
#: Cell side (px at the working resolution).
DEFAULT_RECT_CELL = 12
#: Weight of the line term against the shape term (both normalised by their counts). He et al. use 100; 1e5 keeps
#: the segments measured on real sets within about 1 px per 100 px (docs/panoramas.md).
LINE_WEIGHT = 1e5
#: Solves after the first (lines linearised at the previous solution, vertices outside the region pulled in).
PASSES = 8
#: Weight of the pull on a point that fell outside the region (against the normalised shape term).
INSIDE_WEIGHT = 1000.0
#: Inside-check points per cell side.
SAMPLES = 8
#: Shortest segment kept (px at the line-detection resolution).
MIN_LINE = 10.0
#: Pixels of the resolution segments are detected at (finer than the mesh's on large panoramas).
LINE_PIXELS = 4_000_000
#: Rows per remap strip at full resolution (a multiple of MAP_STEP).
STRIP_ROWS = 256
#: Output px between the samples of the render's map (``Mesh.strip_map``) when the cells are at least MAP_MIN_CELL px.
MAP_STEP = 2
MAP_MIN_CELL = 40.0


@dataclass(frozen=True)
class Mesh:
    """The warp: ``src`` (rows+1, cols+1, 2) float64 canvas points (x, y) sampled by the output grid's vertices,
    ``step`` (sx, sy) output px per cell, ``size`` (w, h) of the output, ``origin`` (x0, y0): output pixel (0, 0)
    is grid pixel origin (a trim after the warp)."""

    src: np.ndarray
    step: tuple[float, float]
    size: tuple[int, int]
    origin: tuple[int, int] = (0, 0)

    def sample(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Canvas points (N, 2) sampled by output points xs, ys (N,) (continuous output pixel coordinates)."""
        return barycentric(self.src, (np.asarray(xs, np.float64) + self.origin[0] + 0.5) / self.step[0],
                           (np.asarray(ys, np.float64) + self.origin[1] + 0.5) / self.step[1])

    def forward(self, pts: np.ndarray) -> np.ndarray:
        """Canvas points (N, 2) -> output pixels (N, 2) through the mesh's triangles (NaN outside them)."""
        g = grid_coords(self.src, np.asarray(pts, np.float64).reshape(-1, 2))
        return g * np.asarray(self.step) - 0.5 - np.asarray(self.origin)

    def render(self, image: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """image (H, W[, C]) on the canvas -> the output (h, w[, C]) (cv2.remap, black outside the canvas)."""
        return self.render_all([image], interpolation)[0]

    def render_all(self, images: list[np.ndarray], interpolation: int = cv2.INTER_LINEAR) -> list[np.ndarray]:
        """``render`` of each of images (H, W[, C]), the map computed once, strip by strip (``strip_map``)."""
        w, h = self.size
        outs = [np.zeros((h, w) + im.shape[2:], im.dtype) for im in images]
        for y0 in range(0, h, STRIP_ROWS):
            p = self.strip_map(y0, min(h, y0 + STRIP_ROWS))
            for im, out in zip(images, outs):
                band = out[y0:y0 + p.shape[0]]
                band[...] = cv2.remap(im, p[..., 0], p[..., 1], interpolation, borderMode=cv2.BORDER_CONSTANT,
                                      borderValue=0).reshape(band.shape)
        return outs

    def strip_map(self, y0: int, y1: int) -> np.ndarray:
        """(y1 - y0, w, 2) float32 canvas points sampled by output rows y0..y1 (y0 a multiple of MAP_STEP): ``sample``
        at every pixel when the cells are under MAP_MIN_CELL px; otherwise on a grid every MAP_STEP px, one sample
        beyond each edge, bilinearly upsampled (cv2.resize): exact inside a triangle, where the map is affine, and a
        blend of two affine maps within MAP_STEP px of a triangle's edge (under 0.2 px from ``sample``)."""
        w, S = self.size[0], (MAP_STEP if min(self.step) >= MAP_MIN_CELL else 1)
        if S == 1:
            X, Y = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(y0, y1, dtype=np.float64))
            return self.sample(X.ravel(), Y.ravel()).astype(np.float32).reshape(y1 - y0, w, 2)
        cols, rows = -(-w // S) + 2, -(-(y1 - y0) // S) + 2
        X, Y = np.meshgrid(S * (np.arange(cols) - 1.0) + (S - 1) / 2.0, y0 + S * (np.arange(rows) - 1.0) + (S - 1) / 2.0)
        coarse = self.sample(X.ravel(), Y.ravel()).astype(np.float32).reshape(rows, cols, 2)
        fine = cv2.resize(coarse, (cols * S, rows * S), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(fine[S:S + y1 - y0, S:S + w])

    def moved(self, origin: tuple[int, int]) -> Mesh:
        """This mesh sampling a crop of the canvas whose pixel (0, 0) is canvas pixel origin (x0, y0)."""
        return Mesh(self.src - np.asarray(origin, np.float64), self.step, self.size, self.origin)

    def trimmed(self, box: tuple[int, int, int, int]) -> Mesh:
        """This mesh's output cut to box (x0, y0, x1, y1) of its output pixels."""
        return Mesh(self.src, self.step, (box[2] - box[0], box[3] - box[1]),
                    (self.origin[0] + box[0], self.origin[1] + box[1]))


def barycentric(src: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Points (N, 2) of the mesh src (R+1, C+1, 2) at grid coordinates gx, gy (N,) (cell units), affine per triangle:
    a cell's lower-left triangle (s + t <= 1, s, t its local coordinates) and its upper-right one."""
    R, C = src.shape[0] - 1, src.shape[1] - 1
    c = np.clip(np.floor(gx).astype(np.int64), 0, C - 1)
    r = np.clip(np.floor(gy).astype(np.int64), 0, R - 1)
    s, t = (gx - c)[:, None], (gy - r)[:, None]
    p00, p10, p01, p11 = src[r, c], src[r, c + 1], src[r + 1, c], src[r + 1, c + 1]
    low = p00 + s * (p10 - p00) + t * (p01 - p00)
    high = p11 + (1 - s) * (p01 - p11) + (1 - t) * (p10 - p11)
    return np.where(s + t <= 1.0, low, high)


def triangle_weights(R: int, C: int, gx: np.ndarray, gy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vertex indices (N, 3) (flat, r * (C + 1) + c), weights (N, 3)) of grid points gx, gy (N,) in
    ``barycentric``'s triangles."""
    c = np.clip(np.floor(gx).astype(np.int64), 0, C - 1)
    r = np.clip(np.floor(gy).astype(np.int64), 0, R - 1)
    s, t = gx - c, gy - r
    i00 = r * (C + 1) + c
    i10, i01, i11 = i00 + 1, i00 + C + 1, i00 + C + 2
    low = s + t <= 1.0
    idx = np.where(low[:, None], np.stack([i00, i10, i01], 1), np.stack([i11, i01, i10], 1))
    wts = np.where(low[:, None], np.stack([1 - s - t, s, t], 1), np.stack([s + t - 1, 1 - s, 1 - t], 1))
    return idx, wts


def point_rows(idx: np.ndarray, wts: np.ndarray, dirs: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """Rows dirs[k] . (sum_j wts[k, j] * U[idx[k, j]]), one per point (idx, wts (N, 3), dirs (N, 2)), on the
    unknowns (x, y interleaved per vertex)."""
    import scipy.sparse as sp
    n = len(idx)
    rows = np.repeat(np.arange(n), 6)
    cols = np.stack([2 * idx, 2 * idx + 1], axis=2).reshape(-1)
    vals = (wts[:, :, None] * dirs[:, None, :]).reshape(-1)
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, 2 * n_vertices))


def mesh_triangles(src: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``barycentric``'s triangles of src (R+1, C+1, 2): corners a, b, d (T, 2) each (the point is
    a + s (b - a) + t (d - a)), and per triangle its grid origin and direction (T, 3): gx0, gy0, sign."""
    R, C = src.shape[0] - 1, src.shape[1] - 1
    r, c = np.mgrid[0:R, 0:C]
    r, c = r.ravel(), c.ravel()
    a = np.concatenate([src[r, c], src[r + 1, c + 1]])
    b = np.concatenate([src[r, c + 1], src[r + 1, c]])
    d = np.concatenate([src[r + 1, c], src[r, c + 1]])
    one = np.ones(len(r))
    grid = np.concatenate([np.stack([c, r, one], 1), np.stack([c + 1, r + 1, -one], 1)]).astype(np.float64)
    return a, b, d, grid


def locate(pts: np.ndarray, tris: tuple[np.ndarray, ...], cand: np.ndarray) -> np.ndarray:
    """Grid coordinates (N, 2) of pts (N, 2) in the first of their candidate triangles cand (N, k) holding them
    (NaN if none); tris: ``mesh_triangles``."""
    a, b, d, grid = (x[cand] for x in tris)  # (N, k, 2) / (N, k, 3)
    e1, e2, q = b - a, d - a, pts[:, None, :] - a
    det = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    det = np.where(np.abs(det) < 1e-12, np.nan, det)
    s = (q[..., 0] * e2[..., 1] - q[..., 1] * e2[..., 0]) / det
    t = (e1[..., 0] * q[..., 1] - e1[..., 1] * q[..., 0]) / det
    inside = (s >= -1e-9) & (t >= -1e-9) & (s + t <= 1 + 1e-9)
    j = np.argmax(inside, axis=1)
    n = np.arange(len(pts))
    g = grid[n, j]
    out = np.stack([g[:, 0] + g[:, 2] * s[n, j], g[:, 1] + g[:, 2] * t[n, j]], axis=1)
    out[~inside.any(axis=1)] = np.nan
    return out


def grid_coords(src: np.ndarray, pts: np.ndarray, k: int = 12, chunk: int = 256) -> np.ndarray:
    """Grid coordinates (N, 2) (gx, gy, cell units) of canvas points pts (N, 2) in the triangles of src (R+1, C+1, 2);
    NaN for a point in no triangle (the first triangle holding it where they overlap). The k triangles with the
    nearest centroids are tried first, then all of them."""
    from scipy.spatial import cKDTree
    tris = mesh_triangles(src)
    n_tri = len(tris[0])
    near = cKDTree((tris[0] + tris[1] + tris[2]) / 3.0).query(pts, k=min(k, n_tri))[1].reshape(len(pts), -1)
    out = locate(pts, tris, near)
    miss = np.flatnonzero(np.isnan(out[:, 0]))
    every = np.arange(n_tri)
    for i in range(0, len(miss), chunk):
        idx = miss[i:i + chunk]
        out[idx] = locate(pts[idx], tris, np.broadcast_to(every, (len(idx), n_tri)))
    return out


def work_mask(mask: np.ndarray, work_pixels: int) -> tuple[np.ndarray, int]:
    """(region (h, w) uint8 at the working resolution, factor F): a working pixel covers F x F canvas pixels and
    is 1 when all of them are valid; the largest component, holes filled, eroded by one pixel."""
    H, W = mask.shape
    F = max(1, int(np.ceil(np.sqrt(H * W / work_pixels))))
    hs, ws = -(-H // F), -(-W // F)
    padded = np.zeros((hs * F, ws * F), np.uint8)
    padded[:H, :W] = mask
    small = padded.reshape(hs, F, ws, F).min(axis=(1, 3))
    contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    region = np.zeros_like(small)
    if contours:
        cv2.drawContours(region, [max(contours, key=cv2.contourArea)], -1, 1, thickness=cv2.FILLED)
    region &= small  # holes stay out: the trim after the warp removes what they leave
    return cv2.erode(region, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0), F


def resample(points: np.ndarray, m: int) -> np.ndarray:
    """m points (m, 2) at equal arc length along the polyline points (n, 2), both ends included."""
    seg = np.hypot(*np.diff(points, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    at = np.linspace(0.0, s[-1], m)
    return np.stack([np.interp(at, s, points[:, 0]), np.interp(at, s, points[:, 1])], axis=1)


def border_points(region: np.ndarray, R: int, C: int) -> np.ndarray | None:
    """(R+1, C+1, 2) array with the output border's vertices set on the region's (h, w) uint8 outer contour (NaN
    inside); None when the contour does not run round the four corners in order."""
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    cont = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)
    if len(cont) < 8:
        return None
    x0, y0 = cont.min(axis=0)
    x1, y1 = cont.max(axis=0)
    for attempt in range(2):
        corners = [int(np.argmin(np.hypot(cont[:, 0] - cx, cont[:, 1] - cy)))
                   for cx, cy in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
        d = [(i - corners[0]) % len(cont) for i in corners]
        if d[1] < d[2] < d[3]:
            break
        cont = cont[::-1].copy()
    else:
        return None
    n = len(cont)

    def piece(a: int, b: int, m: int) -> np.ndarray:
        return resample(cont[(a + np.arange((b - a) % n + 1)) % n], m)

    out = np.full((R + 1, C + 1, 2), np.nan)
    out[0, :] = piece(corners[0], corners[1], C + 1)
    out[:, C] = piece(corners[1], corners[2], R + 1)
    out[R, :] = piece(corners[2], corners[3], C + 1)[::-1]
    out[:, 0] = piece(corners[3], corners[0], R + 1)[::-1]
    return out


def shape_matrix(R: int, C: int, cw: float, ch: float) -> sp.csr_matrix:
    """Rows (8 per cell) of the as-similar-as-possible term on the unknowns (x, y interleaved per vertex): each
    cell's four canvas points minus their best similarity image of the output cell cw x ch."""
    import scipy.sparse as sp
    V = np.array([[0, 0], [cw, 0], [0, ch], [cw, ch]], np.float64)
    A = np.zeros((8, 4))
    A[0::2] = np.stack([V[:, 0], -V[:, 1], np.ones(4), np.zeros(4)], axis=1)
    A[1::2] = np.stack([V[:, 1], V[:, 0], np.zeros(4), np.ones(4)], axis=1)
    P = A @ np.linalg.pinv(A) - np.eye(8)
    r, c = np.mgrid[0:R, 0:C]
    base = (r * (C + 1) + c).ravel()
    verts = np.stack([base, base + 1, base + C + 1, base + C + 2], axis=1)  # (cells, 4): 00, 10, 01, 11
    cols = np.stack([2 * verts, 2 * verts + 1], axis=2).reshape(-1, 8)  # (cells, 8)
    n = len(base)
    rows = np.arange(8 * n).reshape(n, 8)
    data = np.broadcast_to(P, (n, 8, 8))
    return sp.csr_matrix((data.ravel(), (np.repeat(rows, 8, axis=1).ravel(), np.tile(cols, (1, 8)).ravel())),
                         shape=(8 * n, 2 * (R + 1) * (C + 1))) / np.sqrt(n)


def detect_lines(gray: np.ndarray, region: np.ndarray, F: int, limit: int = 2000) -> np.ndarray:
    """Segments (N, 4) x0, y0, x1, y1 in working pixels (region (h, w) uint8, F canvas px each) of gray (H, W) uint8,
    found by cv2's line segment detector at up to ``LINE_PIXELS``, at least ``MIN_LINE`` px long there, inside the
    region eroded by 2 px; the ``limit`` longest."""
    H, W = gray.shape
    D = max(1, int(np.ceil(np.sqrt(H * W / LINE_PIXELS))))
    small = gray if D == 1 else cv2.resize(gray, (-(-W // D), -(-H // D)), interpolation=cv2.INTER_AREA)
    found = cv2.createLineSegmentDetector().detect(small)[0]
    if found is None:
        return np.zeros((0, 4))
    seg = found.reshape(-1, 4).astype(np.float64)
    seg = seg[np.hypot(seg[:, 2] - seg[:, 0], seg[:, 3] - seg[:, 1]) >= MIN_LINE]
    seg = ((seg + 0.5) * D - 0.5 - (F - 1) / 2.0) / F  # detection px -> canvas px -> working px
    inner = cv2.erode(region, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    t = np.linspace(0.0, 1.0, 9)
    xs = np.rint(seg[:, 0:1] + t * (seg[:, 2:3] - seg[:, 0:1])).astype(int)
    ys = np.rint(seg[:, 1:2] + t * (seg[:, 3:4] - seg[:, 1:2])).astype(int)
    h, w = region.shape
    ok = ((xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)).all(axis=1)
    ok[ok] = inner[ys[ok], xs[ok]].all(axis=1)
    seg = seg[ok]
    return seg[np.argsort(-np.hypot(seg[:, 2] - seg[:, 0], seg[:, 3] - seg[:, 1]))[:limit]]


def line_matrix(seg: np.ndarray, src: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """(rows, right-hand side) of the line term: points along the straight output segment between the images of
    a segment's ends (under the current mesh src (R+1, C+1, 2)) must map onto the segment's line, two per cell."""
    import scipy.sparse as sp
    R, C = src.shape[0] - 1, src.shape[1] - 1
    ends = grid_coords(src, seg.reshape(-1, 2)).reshape(-1, 2, 2)
    ok = ~np.isnan(ends).any(axis=(1, 2))
    seg, ends = seg[ok].reshape(-1, 2, 2), ends[ok]
    if not len(seg):
        return sp.csr_matrix((0, 2 * (R + 1) * (C + 1))), np.zeros(0)
    d = seg[:, 1] - seg[:, 0]
    nrm = np.stack([-d[:, 1], d[:, 0]], axis=1) / np.hypot(d[:, 0], d[:, 1])[:, None]
    n = np.maximum(2, np.ceil(2 * np.hypot(*(ends[:, 1] - ends[:, 0]).T)).astype(np.int64) + 1)
    which = np.repeat(np.arange(len(seg)), n)
    a = (np.arange(len(which)) - np.repeat(np.cumsum(n) - n, n)) / (n[which] - 1.0)
    g = ends[which, 0] + a[:, None] * (ends[which, 1] - ends[which, 0])
    idx, wts = triangle_weights(R, C, g[:, 0], g[:, 1])
    wt = np.sqrt(LINE_WEIGHT / len(g))
    rhs = np.einsum("ij,ij->i", nrm, seg[:, 0])[which]
    return point_rows(idx, wts, nrm[which], (R + 1) * (C + 1)) * wt, rhs * wt


def solve_free(A: sp.csr_matrix, b: np.ndarray, fixed: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least squares of A x = b (A (m, n), b (m,)) with x[fixed] (n,) bool held at values (n,); returns x (n,)."""
    from scipy.sparse.linalg import spsolve
    x = np.where(fixed, values, 0.0)
    Af = A[:, ~fixed]
    rhs = b - A[:, fixed] @ values[fixed]
    x[~fixed] = spsolve((Af.T @ Af).tocsc(), Af.T @ rhs)
    return x


def nearest_inside(region: np.ndarray) -> np.ndarray:
    """(h, w, 2) float64: for every pixel of region (h, w) uint8, the nearest region pixel (x, y) (itself inside)."""
    lab = cv2.distanceTransformWithLabels((region == 0).astype(np.uint8), cv2.DIST_L2, 5,
                                          labelType=cv2.DIST_LABEL_PIXEL)[1]
    ys, xs = np.nonzero(region)
    table = np.zeros((int(lab.max()) + 1, 2))
    table[lab[ys, xs]] = np.stack([xs, ys], axis=1)
    return table[lab]


def inside_matrix(src: np.ndarray, pulls: np.ndarray, near: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """(rows, rhs) pulling each sample point of the mesh src (R+1, C+1, 2) (every 1 / ``SAMPLES`` of a cell) that lies outside
    the region to its nearest region pixel (``near``, (h, w, 2)); ``pulls`` (samples, 2), NaN where none, keeps the
    pulls of earlier passes and gains the new ones (in place)."""
    R, C = src.shape[0] - 1, src.shape[1] - 1
    gy, gx = np.mgrid[0:SAMPLES * R + 1, 0:SAMPLES * C + 1] / float(SAMPLES)
    gx, gy = gx.ravel(), gy.ravel()
    p = barycentric(src, gx, gy)
    h, w = near.shape[:2]
    xi = np.clip(np.rint(p[:, 0]).astype(int), 0, w - 1)
    yi = np.clip(np.rint(p[:, 1]).astype(int), 0, h - 1)
    target = near[yi, xi]
    new = np.hypot(target[:, 0] - p[:, 0], target[:, 1] - p[:, 1]) > 0.5
    pulls[new] = target[new]
    keys = np.flatnonzero(~np.isnan(pulls[:, 0]))
    idx, wts = triangle_weights(R, C, gx[keys], gy[keys])
    idx, wts = np.repeat(idx, 2, axis=0), np.repeat(wts, 2, axis=0)
    dirs = np.tile(np.eye(2), (len(keys), 1))
    wt = np.sqrt(INSIDE_WEIGHT / src.shape[0] / src.shape[1])
    return point_rows(idx, wts, dirs, (R + 1) * (C + 1)) * wt, pulls[keys].reshape(-1) * wt


def solve_mesh(border: np.ndarray, shape: sp.csr_matrix, seg: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The mesh (R+1, C+1, 2) in working pixels: ``border`` (R+1, C+1, 2) fixes the border vertices (NaN inside),
    the shape rows place the others, then ``PASSES`` solves add the line and inside terms."""
    import scipy.sparse as sp
    fixed = ~np.isnan(border.reshape(-1))
    values = np.nan_to_num(border.reshape(-1))
    x = solve_free(shape, np.zeros(shape.shape[0]), fixed, values)
    near = nearest_inside(cv2.erode(region, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                                    borderValue=0))
    R, C = border.shape[0] - 1, border.shape[1] - 1
    pulls = np.full(((SAMPLES * R + 1) * (SAMPLES * C + 1), 2), np.nan)
    for _ in range(PASSES):
        L, rhs = line_matrix(seg, x.reshape(border.shape)) if len(seg) else (sp.csr_matrix((0, len(x))), np.zeros(0))
        P, prhs = inside_matrix(x.reshape(border.shape), pulls, near)
        if L.shape[0] + P.shape[0] == 0:
            break
        x = solve_free(sp.vstack([shape, L, P]).tocsr(), np.concatenate([np.zeros(shape.shape[0]), rhs, prhs]),
                       fixed, values)
    return x.reshape(border.shape)


def rectangle_mesh(image: np.ndarray, mask: np.ndarray, work_pixels: int = DEFAULT_RECT_WORK_PIXELS,
                   cell: int = DEFAULT_RECT_CELL) -> Mesh | None:
    """The rectangling mesh of image (H, W, C) with valid mask (H, W) bool (see the module docstring); None when
    the region is too small or its contour does not run round four corners."""
    region, F = work_mask(np.asarray(mask, np.uint8), work_pixels)
    ys, xs = np.nonzero(region)
    if len(xs) < 64:
        return None
    bw, bh = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    area = float(len(xs))
    tw, th = np.sqrt(area * bw / bh), np.sqrt(area * bh / bw)  # working px: the region's area, the box's aspect
    C, R = max(2, round(float(tw) / cell)), max(2, round(float(th) / cell))
    border = border_points(region, R, C)
    if border is None:
        return None
    gray = cv2.cvtColor(image if image.dtype == np.uint8 else (image >> 8).astype(np.uint8), cv2.COLOR_BGR2GRAY)
    src = solve_mesh(border, shape_matrix(R, C, tw / C, th / R), detect_lines(gray, region, F), region)
    size = (round(float(tw) * F), round(float(th) * F))
    return Mesh(src * F + (F - 1) / 2.0, (size[0] / C, size[1] / R), size)
