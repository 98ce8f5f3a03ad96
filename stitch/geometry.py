"""Small homography helpers. Convention: H maps src pixels to dst pixels, x_dst ~ H @ [x, y, 1]."""

from __future__ import annotations

from collections.abc import Iterable

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
    """Map (N, 2) pixel points through H (3, 3); returns (N, 2) float64 (inf where w ~ 0)."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    ph = np.hstack([pts, np.ones((len(pts), 1))]) @ np.asarray(H, dtype=np.float64).T
    w = ph[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = ph[:, :2] / w
    out[np.abs(w[:, 0]) < 1e-12] = np.inf
    return out


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
    """Symmetric transfer error per match (N,) in px: sqrt(mean of the squared forward and backward errors)."""
    src = np.asarray(src_pts, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_pts, dtype=np.float64).reshape(-1, 2)
    if len(src) == 0:
        return np.zeros(0)
    try:
        Hinv = np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return np.full(len(src), np.inf)
    fwd = np.sum((project(H, src) - dst) ** 2, axis=1)
    bwd = np.sum((project(Hinv, dst) - src) ** 2, axis=1)
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


def fit_homography_dlt(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray | None:
    """Normalised DLT (Hartley): H (3, 3) from (N, 2) src/dst px, N >= 4, in float64; None if degenerate."""
    def norm(p: np.ndarray) -> np.ndarray:
        c = p.mean(axis=0)
        d = np.sqrt(((p - c) ** 2).sum(axis=1)).mean()
        s = np.sqrt(2.0) / d if d > 0 else 1.0
        return np.array([[s, 0.0, -s * c[0]], [0.0, s, -s * c[1]], [0.0, 0.0, 1.0]])

    a, b = np.asarray(src_pts, np.float64), np.asarray(dst_pts, np.float64)
    Ta, Tb = norm(a), norm(b)
    pa, pb = project(Ta, a), project(Tb, b)
    x, y, u, v = pa[:, 0], pa[:, 1], pb[:, 0], pb[:, 1]
    z, o = np.zeros_like(x), np.ones_like(x)
    A = np.concatenate([np.stack([-x, -y, -o, z, z, z, u * x, u * y, u], 1),
                        np.stack([z, z, z, -x, -y, -o, v * x, v * y, v], 1)])
    Hn = np.linalg.svd(A)[2][-1].reshape(3, 3)
    H = np.linalg.inv(Tb) @ Hn @ Ta
    if not np.all(np.isfinite(H)) or abs(H[2, 2]) < 1e-12:
        return None
    return H / H[2, 2]
