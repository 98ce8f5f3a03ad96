"""Small homography helpers. Convention: H maps src pixels to dst pixels, x_dst ~ H @ [x, y, 1]."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from stitch.errors import ConfigError


def as_homography(H: object, name: str = "H") -> np.ndarray:
    """A user's matrix as (3, 3) float64 with H[2, 2] == 1; ConfigError naming ``name`` when it is not a finite,
    non-singular 3 x 3 matrix."""
    try:
        M = np.asarray(H, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a 3 x 3 matrix, got {type(H).__name__}") from None
    if M.shape != (3, 3):
        raise ConfigError(f"{name}: expected a 3 x 3 matrix, got shape {M.shape}")
    if not np.all(np.isfinite(M)) or abs(np.linalg.det(M)) < 1e-12 * max(np.abs(M).max(), 1e-300) ** 3:
        raise ConfigError(f"{name}: the matrix is singular or not finite")
    return normalize_h(M)


def normalize_h(H: np.ndarray) -> np.ndarray:
    """Return H (3, 3) float64 scaled so that H[2, 2] == 1 (or unit Frobenius norm if H[2, 2] ~ 0)."""
    H = np.asarray(H, dtype=np.float64).reshape(3, 3)
    s = H[2, 2] if abs(H[2, 2]) > 1e-12 else np.linalg.norm(H)
    return H / s


def normalize_h_oriented(H: np.ndarray) -> np.ndarray:
    """H (3, 3) scaled by a positive factor: to H[2, 2] == 1 when H[2, 2] > 0, else to |det| == 1. Unlike
    ``normalize_h`` it never flips the sign, which tells a curved projection on which side of the camera a ray
    lies (an image facing away from the reference view has H[2, 2] <= 0)."""
    H = np.asarray(H, dtype=np.float64).reshape(3, 3)
    if H[2, 2] > 1e-12 * max(np.abs(H).max(), 1e-300):
        return H / H[2, 2]
    return H / np.cbrt(abs(np.linalg.det(H)))


def project(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (N, 2) pixel points through H (3, 3), or a stack of m point sets (m, N, 2) through H (m, 3, 3) one by
    one; returns float64 points of the same shape (inf where w ~ 0)."""
    H = np.asarray(H, dtype=np.float64)
    pts = np.asarray(pts, dtype=np.float64)
    pts = pts.reshape(-1, 2) if H.ndim == 2 else pts.reshape(len(H), -1, 2)
    ph = np.concatenate([pts, np.ones(pts.shape[:-1] + (1,))], -1) @ np.swapaxes(H, -1, -2)
    w = ph[..., 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = ph[..., :2] / w
    out[np.abs(w[..., 0]) < 1e-12] = np.inf
    return out


def frame_points(sizes: np.ndarray) -> np.ndarray:
    """(m, 5, 3) homogeneous px of frames (w, h) ``sizes`` (m, 2): the centre, then the corners TL, TR, BR, BL."""
    w, h = sizes[:, 0], sizes[:, 1]
    one, zero = np.ones_like(w), np.zeros_like(w)
    return np.stack([np.stack([(w - 1) / 2.0, (h - 1) / 2.0, one], 1), np.stack([zero, zero, one], 1),
                     np.stack([w, zero, one], 1), np.stack([w, h, one], 1), np.stack([zero, h, one], 1)], 1)


def image_corners(width: int, height: int) -> np.ndarray:
    """The four corners (4, 2) of a W x H image in pixel coordinates: TL, TR, BR, BL."""
    return np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)


def clip_halfplane(poly: np.ndarray, line: np.ndarray, tau: float = 0.0) -> np.ndarray:
    """The part (K, 2) of convex polygon ``poly`` (N, 2) where ``line`` (3,) . [x, y, 1] >= tau, vertex order kept."""
    poly = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    v = np.hstack([poly, np.ones((len(poly), 1))]) @ np.asarray(line, dtype=np.float64) - tau
    out = []
    for i in range(len(poly)):
        j = (i + 1) % len(poly)
        if v[i] >= 0:
            out.append(poly[i])
        if v[i] * v[j] < 0:  # the edge crosses the line: keep the crossing point (a vertex on it is kept once)
            out.append(poly[i] + v[i] / (v[i] - v[j]) * (poly[j] - poly[i]))
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def overlap_box(H: np.ndarray, src_size: tuple[int, int], dst_size: tuple[int, int]) -> tuple[float, ...] | None:
    """(x0, y0, x1, y1) bounding box in dst px of src's outline mapped by H and clipped to dst; None if empty."""
    q = project(H, image_corners(*src_size))
    if not np.all(np.isfinite(q)):
        return None
    dw, dh = dst_size
    area, poly = cv2.intersectConvexConvex(q.astype(np.float32), image_corners(dw, dh).astype(np.float32))
    if poly is None or area <= 1.0:
        return None
    p = poly.reshape(-1, 2)
    return float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max())


def corner_error(H_est: np.ndarray | None, H_gt: np.ndarray, width: int, height: int) -> float:
    """Mean distance (px) between the src image corners mapped by H_est and by H_gt; inf if H_est is None."""
    return point_error(H_est, image_corners(width, height), project(H_gt, image_corners(width, height)))


def point_error(H_est: np.ndarray | None, src_pts: np.ndarray, dst_pts: np.ndarray) -> float:
    """Mean distance (px) between H_est @ src_pts (N, 2) and dst_pts (N, 2); inf if H_est is None."""
    if H_est is None:
        return float("inf")
    d = np.linalg.norm(project(H_est, src_pts) - np.asarray(dst_pts, dtype=np.float64), axis=1)
    return float(np.mean(d)) if np.all(np.isfinite(d)) else float("inf")


def transfer_errors(H: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Symmetric transfer error per match (N,) in px: sqrt(mean of the squared forward and backward errors); for a
    stack H (m, 3, 3) and matches (m, N, 2), each set under its own H, (m, N)."""
    H = np.asarray(H, dtype=np.float64)
    shape = (-1, 2) if H.ndim == 2 else (len(H), -1, 2)
    src = np.asarray(src_pts, dtype=np.float64).reshape(shape)
    dst = np.asarray(dst_pts, dtype=np.float64).reshape(shape)
    if src.shape[-2] == 0:
        return np.zeros(src.shape[:-1])
    try:
        Hinv = np.linalg.inv(H)
    except np.linalg.LinAlgError:
        if H.ndim == 2:
            return np.full(len(src), np.inf)
        return np.stack([transfer_errors(h, a, b) for h, a, b in zip(H, src, dst)])  # the singular ones: inf
    if H.ndim == 3:  # both directions' projections in one batched product: the same values, fewer calls
        sq = np.sum((project(np.concatenate([H, Hinv]), np.concatenate([src, dst])) - np.concatenate([dst, src])) ** 2,
                    axis=-1)
        fwd, bwd = sq[:len(H)], sq[len(H):]
    else:
        fwd = np.sum((project(H, src) - dst) ** 2, axis=-1)
        bwd = np.sum((project(Hinv, dst) - src) ** 2, axis=-1)
    e = np.sqrt(0.5 * (fwd + bwd))
    e[~np.isfinite(e)] = np.inf
    return e


def resize_matrix(s: float) -> np.ndarray:
    """(3, 3) map from original px to px of the image resized by ``s`` (cv2.resize, pixel centres at integers)."""
    return np.array([[s, 0.0, 0.5 * (s - 1.0)], [0.0, s, 0.5 * (s - 1.0)], [0.0, 0.0, 1.0]])


def work_scale_matrix(full_size: tuple[int, int], work_size: tuple[int, int]) -> np.ndarray:
    """A (3, 3): full-res px -> px of the image cv2.resize'd from full_size to work_size, both (w, h)
    (pixel centres: x_w = s (x + .5) - .5, per axis)."""
    sx, sy = work_size[0] / full_size[0], work_size[1] / full_size[1]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def scale_h(H: np.ndarray, s_src: float, s_dst: float) -> np.ndarray:
    """Re-express H between resized images: src resized by s_src, dst by s_dst (cv2.resize convention)."""
    return normalize_h(resize_matrix(s_dst) @ H @ np.linalg.inv(resize_matrix(s_src)))


#: An axis-aligned pixel box (x0, y0, x1, y1), x1 and y1 exclusive.
Box = tuple[int, int, int, int]


def box_intersection(a: Box, b: Box) -> Box | None:
    """The common part of two boxes, or None when they do not overlap."""
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def union_box(boxes: Iterable[Box]) -> Box:
    """The smallest box holding every box given (at least one)."""
    x0, y0, x1, y1 = zip(*boxes)
    return min(x0), min(y0), max(x1), max(y1)


def placed_box(origin: tuple[int, int], shape: tuple[int, ...]) -> Box:
    """The box of an (h, w, ...) array whose pixel (0, 0) sits at ``origin`` (x, y)."""
    h, w = shape[:2]
    return origin[0], origin[1], origin[0] + w, origin[1] + h


def box_slices(r: Box, origin: tuple[int, int]) -> tuple[slice, slice]:
    """(rows, cols) slices of box r in an array whose pixel (0, 0) sits at ``origin`` (x, y)."""
    ox, oy = origin
    return slice(r[1] - oy, r[3] - oy), slice(r[0] - ox, r[2] - ox)


def _hartley(p: np.ndarray) -> np.ndarray:
    """(3, 3) similarity moving (N, 2) points to their centroid and a mean distance of sqrt(2) (Hartley)."""
    c = p.mean(axis=0)
    d = np.sqrt(((p - c) ** 2).sum(axis=1)).mean()
    s = np.sqrt(2.0) / d if d > 0 else 1.0
    return np.array([[s, 0.0, -s * c[0]], [0.0, s, -s * c[1]], [0.0, 0.0, 1.0]])


def _dlt(pa: np.ndarray, pb: np.ndarray) -> np.ndarray | None:
    """Unit-norm (3, 3) M with pb ~ M @ pa from (N, 2) Hartley-normalised points: the DLT's null vector; None
    when the points do not fix one (a second null direction: collinear or coincident points).

    Taken from the 9 x 9 matrix A^T A (eigh), not an SVD of the (2N, 9) A: the same vector on normalised
    points (the polish in ``fit_homography`` takes it the rest of the way), and a tall SVD in a multithreaded
    BLAS on a busy machine is orders of magnitude slower.
    """
    x, y, u, v = pa[:, 0], pa[:, 1], pb[:, 0], pb[:, 1]
    z, o = np.zeros_like(x), np.ones_like(x)
    A = np.concatenate([np.stack([-x, -y, -o, z, z, z, u * x, u * y, u], 1),
                        np.stack([z, z, z, -x, -y, -o, v * x, v * y, v], 1)])
    vals, vecs = np.linalg.eigh(A.T @ A)
    if not np.all(np.isfinite(vals)) or vals[1] <= 1e-14 * vals[-1]:
        return None
    return vecs[:, 0].reshape(3, 3)


def _denormalised(M: np.ndarray, Ta: np.ndarray, Tb: np.ndarray) -> np.ndarray | None:
    """H = Tb^-1 M Ta scaled to H[2, 2] == 1; None when not finite or H[2, 2] ~ 0."""
    H = np.linalg.inv(Tb) @ M @ Ta
    if not np.all(np.isfinite(H)) or abs(H[2, 2]) < 1e-12 * np.abs(H).max():
        return None
    return H / H[2, 2]


def fit_homography(src_pts: np.ndarray, dst_pts: np.ndarray, max_iters: int = 30) -> np.ndarray | None:
    """Least-squares H (3, 3, src px -> dst px, H[2, 2] == 1) from (N, 2) src/dst px, N >= 4; None if degenerate.

    The normalised DLT, then Levenberg-Marquardt on the forward transfer error (sum of |H src - dst|^2 in dst
    px, what cv2.findHomography(src, dst, 0) minimises) to convergence, all in float64: exact points give H
    to ~1e-13 (cv2.findHomography rounds the points to float32 first: ~1e-6 on a 640 px image). The solve
    runs in Hartley-normalised coordinates (a similarity per image, so the error is the px error scaled),
    the largest entry of the normalised matrix held fixed (no gauge freedom, and H[2, 2] may be ~0).
    """
    a, b = np.asarray(src_pts, np.float64), np.asarray(dst_pts, np.float64)
    if len(a) < 4 or len(a) != len(b):
        return None
    Ta, Tb = _hartley(a), _hartley(b)
    pa, pb = project(Ta, a), project(Tb, b)
    M = _dlt(pa, pb)
    return None if M is None else _denormalised(_polish(M, pa, pb, max_iters), Ta, Tb)


def _polish(M: np.ndarray, pa: np.ndarray, pb: np.ndarray, max_iters: int) -> np.ndarray:
    """M (3, 3) refined by Levenberg-Marquardt on the forward error |M pa - pb|^2 of (N, 2) normalised points.

    The largest entry of M is held at 1 and the other 8 move; the loop ends when a step lowers the cost by no
    more than a relative 1e-12, when the cost reaches rounding level (exact points), or after ``max_iters``.
    """
    k = int(np.argmax(np.abs(M)))
    free = np.delete(np.arange(9), k)
    X = np.hstack([pa, np.ones((len(pa), 1))])

    def matrix(p: np.ndarray) -> np.ndarray:
        m = np.ones(9)
        m[free] = p
        return m.reshape(3, 3)

    def residuals(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q = X @ matrix(p).T
        with np.errstate(divide="ignore", invalid="ignore"):  # a point on the horizon: an infinite cost
            uv = q[:, :2] / q[:, 2:3]
        return (uv - pb).ravel(), uv, q[:, 2:3]

    def jacobian(uv: np.ndarray, w: np.ndarray) -> np.ndarray:
        Xw = X / w
        J = np.zeros((len(X), 2, 9))
        J[:, 0, 0:3] = J[:, 1, 3:6] = Xw
        J[:, 0, 6:9] = -uv[:, 0:1] * Xw
        J[:, 1, 6:9] = -uv[:, 1:2] * Xw
        return J.reshape(-1, 9)[:, free]

    p = (M / M.flat[k]).ravel()[free]
    r, uv, w = residuals(p)
    cost, lam, floor = float(r @ r), 1e-3, 1e-32 * len(r)  # floor: rounding level of normalised coordinates
    if not np.isfinite(cost):
        return M
    for _ in range(max_iters):
        if cost <= floor:
            break
        J = jacobian(uv, w)
        A, g = J.T @ J, J.T @ r
        for _ in range(12):  # raise the damping until a step lowers the cost
            try:
                step = np.linalg.solve(A + lam * np.diag(np.diag(A)), -g)
            except np.linalg.LinAlgError:
                return matrix(p)
            r2, uv2, w2 = residuals(p + step)
            cost2 = float(r2 @ r2)
            if np.isfinite(cost2) and cost2 < cost:
                break
            lam *= 10.0
        else:
            break  # no step lowers the cost: converged
        p, r, uv, w, lam, gain, cost = p + step, r2, uv2, w2, max(lam / 10.0, 1e-9), cost - cost2, cost2
        if gain <= 1e-12 * (cost + gain):
            break
    return matrix(p)
