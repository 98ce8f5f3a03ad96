"""The rotating-camera model: per image a rotation and a focal length, solved by bundle adjustment.

Convention: ``Camera.R`` (3, 3) maps world directions to the camera's frame (x right, y down, z forward),
K = [[f, 0, cx], [0, f, cy], [0, 0, 1]] with (cx, cy) the principal point in px (default: the image centre,
((w - 1) / 2, (h - 1) / 2)). A pixel p of image k sees the world ray R_k^T K_k^-1 p, so the homography from
image a to image b is H_ab = K_b R_b R_a^T K_a^-1, and the homography to the panorama's virtual camera
(K_v, identity rotation, after wave correction) is H_k = K_v R_k^T K_k^-1.

Steps (``solve_rotations``):

1. focal: the median of the focal lengths that the pairwise homographies determine, each pair taken in
   both directions (so the value does not depend on which image came first), set so that the rotations
   chained at it close the full turns the pairs make, if they make one (``loop_focal``), or the EXIF focal length
   when every image has one (``stitch.exif.exif_focal_px``); one focal shared by all images when they have the same
   size and the same EXIF focal, else one per image (as OpenCV's bundle adjusters; photos without EXIF
   may be zoomed differently);
2. rotations: chained from the reference along the maximum spanning tree of the pair graph (keys break
   ties, see stitch.panorama.graph), each step the rotation fitted to the pair's inlier rays
   (``relative_rotation``);
3. bundle adjustment (``bundle_adjust``): robust nonlinear least squares (adjust.robust_least_squares:
   Levenberg-Marquardt on the small normal equations, or scipy.optimize.least_squares) over the inliers of
   every accepted pair (at most ``max_points_per_edge`` per pair), residuals = reprojection errors in px in both
   directions, robust loss, analytic sparse Jacobian (each residual depends on two rotations and their
   focal); the reference rotation is held fixed. With EXIF focals it runs twice: free, and with the EXIF
   values as a prior (a plain-square residual per focal, ``EXIF_FOCAL_SIGMA``); the prior's solution is kept
   unless it fits clearly worse (``EXIF_MAX_RMS_RATIO``): a scene with parallax does not fix the focal, and
   the EXIF value is then the better one; a cropped photo's EXIF is wrong, and the data overrule it;
4. wave correction (``wave_correct``; horizontal, vertical, auto or none), after OpenCV's waveCorrect: the
   horizontal kind finds the up vector as the direction most perpendicular to every camera's x axis, and
   turns the world so that it is vertical, which straightens the horizon;
5. a full turn is detected when a cycle of the pair graph winds once around the vertical axis
   (``is_full_turn``): a loop-closing pair was found; the panorama is then exactly 360 degrees wide.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stitch.errors import ConfigError, StitchError, check_choice
from stitch.geometry import normalize_h_oriented
from stitch.panorama.adjust import (
    ADJUST_MAX_STEPS,
    DEFAULT_LOSS,
    DEFAULT_MAX_POINTS_PER_EDGE,
    DEFAULT_SOLVER,
    LOSS_CHOICES,
    rms,
    robust_least_squares,
    subsample_edges,
)
from stitch.panorama.viewgraph import PairEdge, PairMatches, maximum_spanning_tree, tree_walk
from stitch.panorama.warp import pair_focals

WAVE_CHOICES = ("auto", "horizontal", "vertical", "none")
#: Relative standard deviation of an EXIF focal length (the bundle adjustment's prior, see bundle_adjust). Its
#: residual, f_scale * (f / f_exif - 1) / sigma, is weighted by sqrt(2M) (M correspondences), so a deviation of
#: sigma costs what every correspondence moving by f_scale would.
EXIF_FOCAL_SIGMA = 0.05
#: The EXIF prior's solution is kept when its RMS reprojection error is at most this multiple of the free
#: solution's (why this value: docs/measurements.md, "camera").
EXIF_MAX_RMS_RATIO = 1.25
#: OpenCV's stitcher and OpenStitching straighten horizontally by default; 'auto' does so too unless the
#: cameras sweep more up and down than sideways (then 'vertical').
DEFAULT_WAVE = "auto"
#: The x axes fix the up vector only when they spread: below this second eigenvalue of sum x x^T (per camera;
#: about 3.6 degrees of spread) the up vector is the cameras' mean y axis made perpendicular to their x axes.
WAVE_MIN_SPREAD = 1e-3
#: BundleProblem.jacobian_rows writes its rows this many correspondences at a time (bounds its temporaries: a few
#: hundred bytes per correspondence; docs/measurements.md, "camera").
JACOBIAN_CHUNK = 16384
#: The adjustment's normal equations J^T W J are summed over this many correspondences at a time (BundleJacobian):
#: the Jacobian of hundreds of photos is never whole in memory; an adjustment with at most this many (every shared
#: set) sums them from the whole matrix, as before (docs/measurements.md, "camera").
NORMAL_CHUNK = 65536


def pinhole(focal: float, center: tuple[float, float]) -> np.ndarray:
    """K (3, 3) = [[f, 0, cx], [0, f, cy], [0, 0, 1]] of a pinhole camera with principal point ``center`` px."""
    return np.array([[focal, 0.0, center[0]], [0.0, focal, center[1]], [0.0, 0.0, 1.0]])


def image_center(size: tuple[int, int]) -> tuple[float, float]:
    """The centre ((w - 1) / 2, (h - 1) / 2) px of a (w, h) image, pixel centres at integers."""
    return ((size[0] - 1) / 2.0, (size[1] - 1) / 2.0)


@dataclass
class Camera:
    """One image's camera: name, size (w, h) px, focal px, R (3, 3) world -> camera, principal point (cx, cy) px.

    Edit freely (e.g. R or focal) and pass it back through ``stitch.compose``; ``check`` validates it.
    """

    name: str
    size: tuple[int, int]
    focal: float
    R: np.ndarray
    principal: tuple[float, float] | None = None
    H: np.ndarray | None = None  # homography models only: (3, 3) image px -> reference plane

    @property
    def center(self) -> tuple[float, float]:
        """Principal point (cx, cy) px: ``principal`` or the image centre."""
        if self.principal is not None:
            return (float(self.principal[0]), float(self.principal[1]))
        return image_center(self.size)

    @property
    def K(self) -> np.ndarray:
        """Intrinsics (3, 3)."""
        cx, cy = self.center
        return pinhole(self.focal, (cx, cy))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (R as nested lists)."""
        return {"name": self.name, "size": [int(self.size[0]), int(self.size[1])], "focal": float(self.focal),
                "R": np.asarray(self.R, np.float64).tolist(),
                "principal": None if self.principal is None else [float(v) for v in self.principal],
                **({} if self.H is None else {"H": np.asarray(self.H, np.float64).tolist()})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Camera:
        """The camera of ``to_dict``; ConfigError names a missing or malformed field."""
        try:
            R = np.asarray(d["R"], np.float64)
            cam = cls(str(d["name"]), (int(d["size"][0]), int(d["size"][1])), float(d["focal"]), R,
                      None if d.get("principal") is None else (float(d["principal"][0]), float(d["principal"][1])),
                      None if d.get("H") is None else np.asarray(d["H"], np.float64).reshape(3, 3))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigError(f"camera {d.get('name', '?') if isinstance(d, dict) else d!r}: malformed ({exc})") from None
        cam.check()
        return cam

    def check(self) -> None:
        """ConfigError unless focal > 0, size positive and R a rotation (orthonormal, det +1, within 1e-6)."""
        if not (math.isfinite(self.focal) and self.focal > 0):
            raise ConfigError(f"camera {self.name}: focal={self.focal} must be a positive number of px")
        if self.size[0] < 1 or self.size[1] < 1:
            raise ConfigError(f"camera {self.name}: size={self.size} must be positive")
        R = np.asarray(self.R, np.float64)
        if R.shape != (3, 3) or not np.allclose(R @ R.T, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0:
            raise ConfigError(f"camera {self.name}: R must be a 3 x 3 rotation matrix")


# --- initial values ---------------------------------------------------------------------------------


def both_directions(edges: Sequence[PairEdge], sizes: dict[int, tuple[int, int]]
                    ) -> list[tuple[np.ndarray, tuple[int, int], tuple[int, int]]]:
    """(H src -> dst (3, 3), src (w, h), dst (w, h)) of every edge in both directions (order-free)."""
    both = []
    for e in edges:
        both.append((e.H, sizes[e.i], sizes[e.j]))
        both.append((np.linalg.inv(e.H), sizes[e.j], sizes[e.i]))
    return both


def pair_focal_estimates(edges: Sequence[PairEdge], sizes: dict[int, tuple[int, int]]) -> list[float]:
    """Focal lengths (px) the edges' homographies determine, each pair in both directions (order-free)."""
    return pair_focals(both_directions(edges, sizes))


def nearest_rotation(M: np.ndarray) -> np.ndarray:
    """The rotation (3, 3) nearest to M (3, 3) in the Frobenius norm, after scaling M to a positive determinant."""
    d = float(np.linalg.det(M))
    if d < 0:
        M = -M
    U, _, Vt = np.linalg.svd(M)
    R = U @ Vt
    if np.linalg.det(R) < 0:
        U[:, -1] *= -1
        R = U @ Vt
    return R


def _unit_rays(pts: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 3) unit rays K^-1 p in the camera's frame of the pixels ``pts`` (N, 2)."""
    d = np.hstack([np.asarray(pts, np.float64), np.ones((len(pts), 1))]) @ np.linalg.inv(K).T
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def ray_rotation(pts_a: np.ndarray, pts_b: np.ndarray, K_a: np.ndarray, K_b: np.ndarray) -> np.ndarray:
    """The rotation R_ab (3, 3) that best turns the rays of pixels ``pts_a`` (N, 2) of image a onto the rays of
    the matching ``pts_b`` (N, 2) of image b (Kabsch: argmin sum |R d_a - d_b|^2 over unit rays d = K^-1 p).

    Convention: R_ab = R_b R_a^T (world -> camera rotations), the relative rotation of a rotating camera.
    At a narrow field of view this is what the matches fix well; the rotation nearest to K_b^-1 H_ab K_a is not:
    it mixes in H's perspective terms, which hardly any pair determines (at 8 degrees, 1-60 degrees off on
    5-degree steps, docs/measurements.md "camera")."""
    d_a, d_b = _unit_rays(pts_a, K_a), _unit_rays(pts_b, K_b)
    U, _, Vt = np.linalg.svd(d_b.T @ d_a)
    D = np.diag([1.0, 1.0, float(np.sign(np.linalg.det(U @ Vt))) or 1.0])
    return U @ D @ Vt


#: ``relative_rotation`` fits the rotation to an edge's inlier rays when it has at least this many inliers.
MIN_RAY_POINTS = 3


def relative_rotation(e: PairEdge, a: int, K_a: np.ndarray, K_b: np.ndarray) -> np.ndarray:
    """R_ab (3, 3) from image ``a`` of edge ``e`` to its other image b: fitted to the edge's inlier rays
    (``ray_rotation``), or, with fewer than MIN_RAY_POINTS inliers, the rotation nearest to K_b^-1 H_ab K_a."""
    pts_a, pts_b = (e.pts_i, e.pts_j) if a == e.i else (e.pts_j, e.pts_i)
    if len(pts_a) >= MIN_RAY_POINTS:
        return ray_rotation(pts_a, pts_b, K_a, K_b)
    return nearest_rotation(np.linalg.inv(K_b) @ e.H_from(a) @ K_a)


def initial_rotations(nodes: Sequence[int], edges: Sequence[PairEdge], ref: int, K: dict[int, np.ndarray],
                      keys: Sequence[str] | None = None) -> dict[int, np.ndarray]:
    """R (3, 3) per node, chained from R_ref = I along the maximum spanning tree: R_b = R_ab R_a, R_ab each
    edge's ``relative_rotation``."""
    Rs = {ref: np.eye(3)}
    for a, b, e in tree_walk(nodes, maximum_spanning_tree(nodes, edges, keys), ref):
        Rs[b] = relative_rotation(e, a, K[a], K[b]) @ Rs[a]
    return Rs


# --- bundle adjustment ------------------------------------------------------------------------------


def _rotvec_to_matrix(w: np.ndarray) -> np.ndarray:
    """Rodrigues: rotation vectors (n, 3) -> matrices (n, 3, 3)."""
    th = np.linalg.norm(w, axis=1)
    small = th < 1e-12
    k = np.where(small[:, None], 0.0, w / np.where(small, 1.0, th)[:, None])
    Kx = _skew(k)
    s, c = np.sin(th)[:, None, None], np.cos(th)[:, None, None]
    return np.eye(3)[None] + s * Kx + (1 - c) * (Kx @ Kx)


def _skew(v: np.ndarray) -> np.ndarray:
    """Cross-product matrices (n, 3, 3) of vectors (n, 3)."""
    S = np.zeros((len(v), 3, 3))
    S[:, 0, 1], S[:, 0, 2], S[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    S[:, 1, 0], S[:, 2, 0], S[:, 2, 1] = v[:, 2], -v[:, 1], v[:, 0]
    return S


def _left_jacobian(w: np.ndarray) -> np.ndarray:
    """SO(3) left Jacobians (n, 3, 3) of rotation vectors (n, 3): d exp(w) = [J_l(w) dw]x exp(w)."""
    th = np.linalg.norm(w, axis=1)
    W = _skew(w)
    safe = np.where(th < 1e-8, 1.0, th)
    a = np.where(th < 1e-8, 0.5, (1 - np.cos(th)) / safe**2)[:, None, None]
    b = np.where(th < 1e-8, 1.0 / 6.0, (th - np.sin(th)) / safe**3)[:, None, None]
    return np.eye(3)[None] + a * W + b * (W @ W)


@dataclass
class BundleProblem:
    """The stacked correspondences: image a's px pa (M, 2) should map to image b's px pb (M, 2); a, b (M,) ints."""

    a: np.ndarray
    b: np.ndarray
    pa: np.ndarray
    pb: np.ndarray
    centers: np.ndarray  # (n_images, 2) principal points, by node position
    focal_of: np.ndarray  # (n_images,) index of each image's focal parameter
    free_of: np.ndarray  # (n_images,) index of each image's rotation block among the free ones, -1 = fixed
    R0: np.ndarray  # (n_images, 3, 3) rotations the rotation vectors are applied to (left)
    n_free: int
    n_focal: int
    extra: dict[str, Any] = field(default_factory=dict)
    #: focal prior (EXIF): (n_focal,) px the focals are pulled towards, or None; ``prior_weight`` px of
    #: residual per unit of relative deviation (f / prior - 1)
    focal_prior: np.ndarray | None = None
    prior_weight: float = 0.0

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(R (n, 3, 3), f (n,), w (n, 3) rotation vectors; zero for the fixed image) from parameters x."""
        n = len(self.R0)
        w = np.zeros((n, 3))
        free = self.free_of >= 0
        w[free] = x[: 3 * self.n_free].reshape(-1, 3)[self.free_of[free]]
        f = x[3 * self.n_free:][self.focal_of]
        return _rotvec_to_matrix(w) @ self.R0, f, w

    def residuals(self, x: np.ndarray, want_jac: bool = False) -> Any:
        """Reprojection residuals (2M,) px, x and y interleaved; with want_jac also the sparse Jacobian."""
        R, f, w = self.unpack(x)
        a, b = self.a, self.b
        c = self.centers
        s = np.stack([(self.pa[:, 0] - c[a, 0]) / f[a], (self.pa[:, 1] - c[a, 1]) / f[a], np.ones(len(a))], 1)
        ray = np.einsum("nji,nj->ni", R[a], s)  # R_a^T s
        cb = np.einsum("nij,nj->ni", R[b], ray)  # camera b coordinates
        z = np.where(np.abs(cb[:, 2]) < 1e-9, 1e-9, cb[:, 2])
        u = f[b] * cb[:, 0] / z + c[b, 0]
        v = f[b] * cb[:, 1] / z + c[b, 1]
        res = np.stack([u - self.pb[:, 0], v - self.pb[:, 1]], 1).ravel()
        fx = x[3 * self.n_free:]
        if self.focal_prior is not None:  # one row per focal parameter, after the 2M reprojection rows
            res = np.concatenate([res, self.prior_weight * (fx / self.focal_prior - 1.0)])
        if not want_jac:
            return res
        return res, BundleJacobian(self, R, f, _left_jacobian(w), s, cb, z)

    def jacobian_rows(self, R: np.ndarray, f: np.ndarray, Jl: np.ndarray, s: np.ndarray, cb: np.ndarray,
                      z: np.ndarray, lo: int, hi: int) -> Any:
        """The rows of correspondences lo..hi (and, when hi is the last, the focal prior's) of the sparse
        (rows, 3 n_free + n_focal) Jacobian of ``residuals`` at R, f (``unpack``) and the left Jacobians Jl (n, 3, 3)
        of its rotation vectors, from its normalized rays s (M, 3), camera-b points cb (M, 3) and depths z (M,):
        built row by row in CSR order, each correspondence's two rows holding its images' rotation blocks (the
        smaller block first) and its focals (one entry, their sum, when the two share a focal: the values of a COO
        build, without its conversion). Written JACOBIAN_CHUNK correspondences at a time into arrays of the final
        size: the per-correspondence temporaries stay bounded."""
        from scipy.sparse import csr_matrix

        a, b = self.a[lo:hi], self.b[lo:hi]
        off = 3 * self.n_free
        prior = self.focal_prior is not None and hi == len(self.a)
        blk_a, blk_b = self.free_of[a], self.free_of[b]
        fa, fb = off + self.focal_of[a], off + self.focal_of[b]
        per = 3 * (blk_a >= 0) + 3 * (blk_b >= 0) + 1 + (fa != fb)  # entries in each of the correspondence's 2 rows
        counts = np.repeat(per, 2)
        if prior:  # one row per focal parameter, after the 2M reprojection rows
            counts = np.concatenate([counts, np.ones(self.n_focal, np.int64)])
        indptr = np.concatenate([[0], np.cumsum(counts)])
        data = np.empty(int(indptr[-1]), np.float64)
        indices = np.empty(int(indptr[-1]), np.int32)
        k3 = np.arange(3)
        for c0 in range(lo, hi, JACOBIAN_CHUNK):
            c = slice(c0, min(hi, c0 + JACOBIAN_CHUNK))
            span = slice(int(indptr[2 * (c.start - lo)]), int(indptr[2 * (c.stop - lo)]))
            data[span], indices[span] = self._jacobian_rows(R, f, Jl, s[c], cb[c], z[c], self.a[c], self.b[c], k3)
        if prior:
            data[int(indptr[2 * (hi - lo)]):] = self.prior_weight / self.focal_prior
            indices[int(indptr[2 * (hi - lo)]):] = off + np.arange(self.n_focal)
        return csr_matrix((data, indices, indptr), shape=(len(counts), off + self.n_focal))

    def _jacobian_rows(self, R: np.ndarray, f: np.ndarray, Jl: np.ndarray, s: np.ndarray, cb: np.ndarray,
                       z: np.ndarray, a: np.ndarray, b: np.ndarray, k3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The CSR values and column indices of ``jacobian``'s rows of correspondences a, b (m,) (rays s, camera-b
        points cb (m, 3), depths z (m,); Jl: each image's left Jacobian (n, 3, 3))."""
        m = len(a)
        # d(u, v)/d cb: (m, 2, 3)
        D = np.zeros((m, 2, 3))
        D[:, 0, 0] = D[:, 1, 1] = f[b] / z
        D[:, 0, 2] = -f[b] * cb[:, 0] / z**2
        D[:, 1, 2] = -f[b] * cb[:, 1] / z**2
        # d cb / d w_b = -[cb]x J_l(w_b); d cb / d w_a = R_b R_a^T [s]x J_l(w_a)
        Jb = np.einsum("nij,njk->nik", D, -_skew(cb) @ Jl[b])
        DRba = D @ np.einsum("nij,nkj->nik", R[b], R[a])
        Ja = np.einsum("nij,njk->nik", DRba, _skew(s) @ Jl[a])
        # focal of b: u = f_b cb_x / z + cx; focal of a: s depends on 1 / f_a
        dfb = np.stack([cb[:, 0] / z, cb[:, 1] / z], 1)
        dfa = np.einsum("nij,nj->ni", DRba, np.stack([-(s[:, 0]) / f[a], -(s[:, 1]) / f[a], np.zeros(m)], 1))
        blk_a, blk_b = self.free_of[a], self.free_of[b]
        off = 3 * self.n_free
        fa, fb = off + self.focal_of[a], off + self.focal_of[b]
        same = fa == fb
        first = np.where(blk_a <= blk_b, blk_a, blk_b)  # -1 (fixed) sorts first, and is dropped
        second = np.where(blk_a <= blk_b, blk_b, blk_a)
        J1 = np.where((blk_a <= blk_b)[:, None, None], Ja, Jb)
        J2 = np.where((blk_a <= blk_b)[:, None, None], Jb, Ja)
        lo_f, hi_f = np.minimum(fa, fb), np.maximum(fa, fb)
        v_lo = np.where(same[:, None], dfa + dfb, np.where((fa < fb)[:, None], dfa, dfb))
        v_hi = np.where((fa < fb)[:, None], dfb, dfa)
        cols = np.concatenate([3 * first[:, None] + k3, 3 * second[:, None] + k3, lo_f[:, None], hi_f[:, None]], 1)
        valid = np.concatenate([np.repeat((first >= 0)[:, None], 3, 1), np.repeat((second >= 0)[:, None], 3, 1),
                                np.ones((m, 1), bool), ~same[:, None]], 1)
        vals = np.concatenate([J1, J2, v_lo[:, :, None], v_hi[:, :, None]], 2)  # (m, 2 rows, 8)
        keep = np.broadcast_to(valid[:, None, :], vals.shape)
        return vals[keep], np.broadcast_to(cols[:, None, :], vals.shape)[keep]


@dataclass
class BundleJacobian:
    """The Jacobian of BundleProblem.residuals at one x, built when asked: whole (``tocsr``), or NORMAL_CHUNK
    correspondences at a time for the normal equations (``weighted_normal``), so the whole matrix of hundreds of
    photos never exists at once. R, f, Jl, s, cb, z: see BundleProblem.jacobian_rows."""

    prob: BundleProblem
    R: np.ndarray
    f: np.ndarray
    Jl: np.ndarray
    s: np.ndarray
    cb: np.ndarray
    z: np.ndarray

    def rows(self, lo: int, hi: int) -> Any:
        """CSR rows of correspondences lo..hi (BundleProblem.jacobian_rows)."""
        return self.prob.jacobian_rows(self.R, self.f, self.Jl, self.s, self.cb, self.z, lo, hi)

    def tocsr(self) -> Any:
        """The whole sparse (rows, parameters) Jacobian."""
        return self.rows(0, len(self.prob.a))

    def weighted_normal(self, w: np.ndarray, r: np.ndarray, dense: bool) -> tuple[Any, np.ndarray]:
        """(J^T W J, as a dense array when ``dense`` else CSC; J^T W r (n,)) for row weights w and residuals r (rows,),
        summed over NORMAL_CHUNK correspondences at a time: with one chunk, the products of the whole matrix,
        value for value (adjust.robust_least_squares' own)."""
        from scipy.sparse import diags

        m = len(self.prob.a)
        A: Any = None
        g: Any = None
        for lo in range(0, m, NORMAL_CHUNK):
            hi = min(m, lo + NORMAL_CHUNK)
            rows = slice(2 * lo, 2 * hi if hi < m else len(r))
            J = self.rows(lo, hi)
            JW = diags(w[rows]) @ J
            part, g_part = J.T @ JW, np.asarray(JW.T @ r[rows]).ravel()
            A, g = (part, g_part) if A is None else (A + part, g + g_part)
        return (np.asarray(A.todense()) if dense else A.tocsc()), g


def build_problem(nodes: Sequence[int], edges: Sequence[PairEdge], ref: int, R0: dict[int, np.ndarray],
                  centers: dict[int, tuple[float, float]], focal_groups: dict[int, int]) -> BundleProblem:
    """The BundleProblem of ``edges`` (both directions of every inlier) over ``nodes`` (positions = sorted nodes)."""
    order = sorted(nodes)
    pos = {k: p for p, k in enumerate(order)}
    a, b, pa, pb = [], [], [], []
    for e in edges:
        for i, j, pi, pj in ((e.i, e.j, e.pts_i, e.pts_j), (e.j, e.i, e.pts_j, e.pts_i)):
            a.append(np.full(len(pi), pos[i]))
            b.append(np.full(len(pi), pos[j]))
            pa.append(np.asarray(pi, np.float64))
            pb.append(np.asarray(pj, np.float64))
    free = [k for k in order if k != ref]
    free_of = np.array([free.index(k) if k != ref else -1 for k in order])
    return BundleProblem(np.concatenate(a), np.concatenate(b), np.concatenate(pa), np.concatenate(pb),
                         np.array([centers[k] for k in order], np.float64),
                         np.array([focal_groups[k] for k in order]), free_of,
                         np.stack([R0[k] for k in order]), len(free), max(focal_groups.values()) + 1)


def bundle_adjust(nodes: Sequence[int], edges: Sequence[PairEdge], ref: int, R0: dict[int, np.ndarray],
                  focals: dict[int, float], centers: dict[int, tuple[float, float]], shared_focal: bool,
                  loss: str = DEFAULT_LOSS, f_scale: float = 2.0,
                  max_points_per_edge: int = DEFAULT_MAX_POINTS_PER_EDGE, seed: int = 0,
                  solver: str = DEFAULT_SOLVER, focal_prior: dict[int, float] | None = None,
                  prior_sigma: float = EXIF_FOCAL_SIGMA, max_steps: int = ADJUST_MAX_STEPS,
                  ) -> tuple[dict[int, np.ndarray], dict[int, float], float, float, bool]:
    """Refine rotations R (3, 3) and focals (px) over the edges' inliers; R_ref stays fixed.

    ``solver``: 'lm' or 'trf' (scipy.optimize.least_squares), see adjust.robust_least_squares.
    ``focal_prior``: focal px per node (EXIF) the focals are pulled towards, with a relative standard deviation
    ``prior_sigma``, weighted like every reprojection residual together (see EXIF_FOCAL_SIGMA).

    Returns (R per node, focal per node, RMS reprojection error before, after in px, converged: False when the
    ``max_steps`` evaluations of the residuals ran out first); the input comes back when the solution is not finite
    or not better.
    """
    check_choice("loss", loss, LOSS_CHOICES)
    order = sorted(nodes)
    groups = {k: 0 if shared_focal else p for p, k in enumerate(order)}
    prob = build_problem(order, subsample_edges(edges, max_points_per_edge, seed), ref, R0, centers, groups)
    f0 = np.zeros(prob.n_focal)
    for k in order:
        f0[groups[k]] = focals[k]
    if shared_focal:
        f0[0] = float(np.median([focals[k] for k in order]))
    x0 = np.concatenate([np.zeros(3 * prob.n_free), f0])
    m2 = 2 * len(prob.a)
    if not m2:
        return dict(R0), {k: float(f0[groups[k]]) for k in order}, 0.0, 0.0, True
    if focal_prior is not None:
        prior = np.zeros(prob.n_focal)
        for k in order:
            prior[groups[k]] = focal_prior[k]
        if shared_focal:
            prior[0] = float(np.median([focal_prior[k] for k in order]))
        prob.focal_prior, prob.prior_weight = prior, f_scale * math.sqrt(m2) / prior_sigma
    x1, done = robust_least_squares(prob.residuals, x0, loss, f_scale, max_steps, solver,
                                    plain=0 if prob.focal_prior is None else prob.n_focal)
    r0, r1 = prob.residuals(x0)[:m2], prob.residuals(x1)[:m2]  # the reprojection rows
    if not np.all(np.isfinite(x1)) or not np.isfinite(rms(r1)) or rms(r1) > rms(r0) or np.any(x1[3 * prob.n_free:] <= 0):
        return dict(R0), {k: float(f0[groups[k]]) for k in order}, rms(r0), rms(r0), done
    R, f, _ = prob.unpack(x1)
    return ({k: nearest_rotation(R[p]) for p, k in enumerate(order)}, {k: float(f[p]) for p, k in enumerate(order)},
            rms(r0), rms(r1), done)


# --- wave correction and full turns -------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray | None:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else None


def _forward(Z: np.ndarray, axis: np.ndarray, z_ref: np.ndarray) -> np.ndarray | None:
    """The mean viewing direction of Z (n, 3) made perpendicular to ``axis``; the reference's (z_ref) when the
    directions cancel out (a full turn)."""
    zsum = Z.sum(0)
    z = _unit(zsum - (zsum @ axis) * axis)
    if z is None or np.linalg.norm(zsum) < 0.2 * len(Z):
        z = _unit(z_ref - (z_ref @ axis) * axis)
    return z


def wave_kind(Rs: Sequence[np.ndarray]) -> str:
    """'vertical' when the cameras' viewing directions spread more up and down than sideways, else 'horizontal'."""
    Z = np.array([R[2] for R in Rs])
    Y = np.array([R[1] for R in Rs])
    up = _unit(Y.sum(0))
    if up is None or len(Rs) < 2:
        return "horizontal"
    pitch = np.arcsin(np.clip(Z @ up, -1, 1))
    side = _unit(np.cross(up, Z.sum(0)))
    if side is None:
        return "horizontal"
    yaw = np.arcsin(np.clip(Z @ side, -1, 1))
    return "vertical" if np.ptp(pitch) > np.ptp(yaw) else "horizontal"


def wave_correct(Rs: dict[int, np.ndarray], kind: str, ref: int) -> dict[int, np.ndarray]:
    """Rotations R_k W^T after turning the world by W (3, 3) so the horizon (or the vertical sweep) is straight.

    horizontal: W's y axis (down) is the direction most perpendicular to every camera's x axis (the smallest
    eigenvector of sum x x^T; the mean y axis when the x axes hardly spread), its z axis the mean viewing
    direction made horizontal (the reference's, when those cancel out, as in a full turn). vertical: W's x
    axis is the cameras' common x axis. none: the rotations unchanged. 'auto': see ``wave_kind``.
    """
    check_choice("wave_correct", kind, WAVE_CHOICES)
    if kind == "none" or len(Rs) < 2:
        return dict(Rs)
    keys = sorted(Rs)
    X = np.array([Rs[k][0] for k in keys])
    Y = np.array([Rs[k][1] for k in keys])
    Z = np.array([Rs[k][2] for k in keys])
    if kind == "auto":
        kind = wave_kind([Rs[k] for k in keys])
    ybar, xbar = _unit(Y.sum(0)), _unit(X.sum(0))
    if ybar is None or xbar is None:
        return dict(Rs)
    n = len(keys)
    if kind == "horizontal":
        vals, vecs = np.linalg.eigh(X.T @ X)
        y = vecs[:, 0] if vals[1] >= WAVE_MIN_SPREAD * n else _unit(ybar - (ybar @ xbar) * xbar)
        if y is None:
            return dict(Rs)
        y = y if y @ ybar >= 0 else -y
        z = _forward(Z, y, Rs[ref][2])
        if z is None:
            return dict(Rs)
        x = np.cross(y, z)
    else:
        M = X.T @ X
        x = np.linalg.eigh(M)[1][:, -1]
        x = x if x @ xbar >= 0 else -x
        z = _forward(Z, x, Rs[ref][2])
        if z is None:
            return dict(Rs)
        y = np.cross(z, x)
    W = np.stack([x, y, z])
    return {k: R @ W.T for k, R in Rs.items()}


def _wrap(a: float) -> float:
    """An angle (radians) wrapped to [-pi, pi)."""
    return (a + math.pi) % (2 * math.pi) - math.pi


def yaw(R: np.ndarray) -> float:
    """Heading (radians) of a camera's viewing direction about the world's vertical (y) axis."""
    return float(math.atan2(R[2, 0], R[2, 2]))


def unwrapped_headings(nodes: Sequence[int], edges: Sequence[PairEdge], Rs: dict[int, np.ndarray],
                       keys: Sequence[str] | None = None) -> tuple[dict[int, float], list[PairEdge]]:
    """(heading per node (radians) of the rotations ``Rs``, unwrapped along the maximum spanning tree from its
    first node, the edges off the tree between unwrapped nodes: those that close a cycle)."""
    root = min(nodes, key=lambda k: keys[k] if keys is not None else k)
    tree = maximum_spanning_tree(nodes, edges, keys)
    unwrapped = {root: yaw(Rs[root])}
    for a, b, _ in tree_walk(nodes, tree, root):
        unwrapped[b] = unwrapped[a] + _wrap(yaw(Rs[b]) - yaw(Rs[a]))
    in_tree = {id(e) for e in tree}
    return unwrapped, [e for e in edges if id(e) not in in_tree and e.i in unwrapped and e.j in unwrapped]


def is_full_turn(nodes: Sequence[int], edges: Sequence[PairEdge], Rs: dict[int, np.ndarray],
                 keys: Sequence[str] | None = None) -> bool:
    """True when some cycle of the pair graph winds once around the vertical axis (a loop-closing pair).

    Headings are unwrapped along the maximum spanning tree; a non-tree edge whose wrapped heading change
    disagrees with the tree path by about 2 pi closes the turn.
    """
    if not edges:
        return False
    unwrapped, closing = unwrapped_headings(nodes, edges, Rs, keys)
    for e in closing:
        path = unwrapped[e.j] - unwrapped[e.i]
        if abs(path - _wrap(yaw(Rs[e.j]) - yaw(Rs[e.i]))) > math.pi:
            return True
    return False


def loop_turns(nodes: Sequence[int], edges: Sequence[PairEdge], Rs: dict[int, np.ndarray], K: dict[int, np.ndarray],
               keys: Sequence[str] | None = None) -> list[float]:
    """How far (radians, > pi) each cycle that a non-tree edge closes turns about the vertical (y) axis, for the
    cycles that wind about it: the headings of the levelled rotations ``Rs`` unwrapped along the maximum spanning
    tree from one end of the edge to the other, less the heading change of the edge's own ``relative_rotation``
    (K: intrinsics (3, 3) per node). 2 pi when ``Rs`` were chained at the true focal; about 2 pi f_true / f at
    another focal f, since each step turns by its matches' shift over f."""
    if not edges:
        return []
    unwrapped, closing = unwrapped_headings(nodes, edges, Rs, keys)
    turns = []
    for e in closing:
        step = _wrap(yaw(relative_rotation(e, e.i, K[e.i], K[e.j]) @ Rs[e.i]) - yaw(Rs[e.i]))
        turn = abs(unwrapped[e.j] - unwrapped[e.i] - step)
        if turn > math.pi:
            turns.append(turn)
    return turns


#: ``loop_focal``: rounds of the fixed point, the most it may change the starting focal (factor either way), and
#: how close to one full turn (fraction) the loops must come for it to have converged.
LOOP_FOCAL_ROUNDS = 5
LOOP_FOCAL_MAX_FACTOR = 2.0
LOOP_FOCAL_TOLERANCE = 2e-3


def loop_focal(nodes: Sequence[int], edges: Sequence[PairEdge], ref: int, sizes: dict[int, tuple[int, int]],
               focal: float, keys: Sequence[str] | None = None) -> float | None:
    """The focal (px) at which the rotations chained along the spanning tree (``initial_rotations``) close the
    full turns the pairs make (``loop_turns``: 2 pi each), from ``focal``; None when the levelled chain makes no
    horizontal full turn, or no focal within LOOP_FOCAL_MAX_FACTOR of ``focal`` closes it (a camera that shifts
    along a wall of look-alike windows makes a "turn" at some focal, which no focal closes).

    A narrow field of view hardly fixes the focal in any one pair (H's perspective terms), and a turn chained at a
    focal 2 % off misses its loop-closing pair by 7 degrees; a full turn fixes it: f = f' * turn(f') / (2 pi),
    iterated (the median over the loop-closing pairs)."""
    f = focal
    for _ in range(LOOP_FOCAL_ROUNDS):
        K = {k: pinhole(f, image_center(sizes[k])) for k in nodes}
        R0 = initial_rotations(nodes, edges, ref, K, keys)
        kind = wave_kind([R0[k] for k in sorted(R0)])
        if kind != "horizontal":
            return None
        turns = loop_turns(nodes, edges, wave_correct(R0, kind, ref), K, keys)
        if not turns:
            return None
        ratio = float(np.median(turns)) / (2 * math.pi)
        if abs(ratio - 1) <= LOOP_FOCAL_TOLERANCE:
            return f
        f *= ratio
        if not 1 / LOOP_FOCAL_MAX_FACTOR <= f / focal <= LOOP_FOCAL_MAX_FACTOR:
            return None
    return None


def chain_focal(nodes: Sequence[int], edges: Sequence[PairEdge], ref: int, sizes: dict[int, tuple[int, int]],
                keys: Sequence[str] | None = None) -> float | None:
    """The focal (px) to chain the pairs' rotations at: the median pair estimate (``pair_focal_estimates``),
    corrected by the full turns the pairs close (``loop_focal``); None when no pair determines a focal."""
    estimates = pair_focal_estimates(edges, sizes)
    if not estimates:
        return None
    f = float(np.median(estimates))
    return loop_focal(nodes, edges, ref, sizes, f, keys) or f


def levelled_turn(nodes: Sequence[int], edges: Sequence[PairEdge], Rs: dict[int, np.ndarray], ref: int,
                  keys: Sequence[str] | None = None, wave: str = DEFAULT_WAVE
                  ) -> tuple[str, dict[int, np.ndarray], bool]:
    """(wave kind, the rotations (3, 3) wave-corrected, whether they make a full turn): a full turn is found
    about the levelled vertical, so only for a horizontal sweep ('auto': ``wave_kind``)."""
    kind = wave_kind([Rs[k] for k in sorted(Rs)]) if wave == "auto" else wave
    Rs = wave_correct(Rs, kind, ref)
    return kind, Rs, kind == "horizontal" and is_full_turn(nodes, edges, Rs, keys)


def pairs_close_turn(nodes: Sequence[int], edges: Sequence[PairEdge], ref: int, sizes: dict[int, tuple[int, int]],
                     keys: Sequence[str] | None = None) -> bool:
    """True when the pairs alone make a full 360-degree turn: their rotations chained at the focal that closes it
    (``loop_focal`` from the median pair focal; ``initial_rotations``, no adjustment), levelled, then
    ``is_full_turn``. A check that costs milliseconds, for what cannot hold a turn (projection 'plane'); False
    when no pair fixes a focal or no focal closes a turn."""
    estimates = pair_focal_estimates(edges, sizes)
    if not estimates:
        return False
    f = loop_focal(nodes, edges, ref, sizes, float(np.median(estimates)), keys)
    if f is None:
        return False
    R0 = initial_rotations(nodes, edges, ref, {k: pinhole(f, image_center(sizes[k])) for k in nodes}, keys)
    return levelled_turn(nodes, edges, R0, ref, keys, "auto")[2]


# --- the whole registration ---------------------------------------------------------------------------


@dataclass
class Geometry:
    """Registered images (by index): H (3, 3) image -> the virtual reference plane, and the model behind them.

    model: 'rotation' (cameras hold R and focal; the plane is the virtual camera K_v = [[focal, 0, cx],
    [0, focal, cy], [0, 0, 1]] with (cx, cy) = ``center``, identity rotation), 'homography' or 'scans'
    (cameras hold no rotation: the Hs are the model). focal: the projection's focal (px) or None.
    full_turn: a loop-closing pair makes the images a 360-degree turn (focal is then period / (2 pi) with
    an integer period). converged: False when the adjustment's budget of steps ran out first.
    """

    model: str
    homographies: dict[int, np.ndarray]
    cameras: dict[int, Camera]
    focal: float | None
    center: tuple[float, float]
    full_turn: bool = False
    rms_before: float | None = None
    rms_after: float | None = None
    wave: str = "none"
    converged: bool = True


def virtual_camera(focal: float, center: tuple[float, float]) -> np.ndarray:
    """K_v (3, 3) of the panorama's virtual camera."""
    return pinhole(focal, center)


def camera_homographies(cameras: dict[int, Camera], focal: float, center: tuple[float, float]) -> dict[int, np.ndarray]:
    """H_k = K_v R_k^T K_k^-1 (3, 3): each camera's pixels -> the virtual camera's plane (det > 0, H[2, 2] free)."""
    Kv = virtual_camera(focal, center)
    return {k: Kv @ c.R.T @ np.linalg.inv(c.K) for k, c in cameras.items()}


def turn_focal(focal: float) -> float:
    """The focal (px) nearest to ``focal`` whose full turn 2 pi f is a whole number of pixels."""
    return round(2.0 * math.pi * focal) / (2.0 * math.pi)


def solve_rotations(nodes: Sequence[int], edges: Sequence[PairEdge], ref: int, sizes: dict[int, tuple[int, int]],
                    names: Sequence[str], keys: Sequence[str] | None = None,
                    exif: dict[int, float] | None = None, loss: str = DEFAULT_LOSS, f_scale: float = 2.0,
                    max_points_per_edge: int = DEFAULT_MAX_POINTS_PER_EDGE, seed: int = 0,
                    wave: str = DEFAULT_WAVE, adjust: bool = True, max_steps: int = ADJUST_MAX_STEPS) -> Geometry | None:
    """The rotating-camera model of the graph (steps 1-5 of the module docstring); None when no focal is known.

    exif: focal px per node from EXIF (only used when every node has one). max_steps: the adjustment's budget
    (``bundle_adjust``); Geometry.converged says whether it ran out.
    """
    exif = {k: v for k, v in (exif or {}).items() if k in nodes and v}
    have_exif = len(exif) == len(nodes)
    if have_exif:
        focals = {k: exif[k] for k in nodes}
    elif (f0 := chain_focal(nodes, edges, ref, sizes, keys)) is not None:
        focals = dict.fromkeys(nodes, f0)
    else:
        return None
    same_size = len({sizes[k] for k in nodes}) == 1
    # one focal only when EXIF says so: without it, same-size photos may still be zoomed differently
    # (docs/measurements.md, "camera")
    shared = same_size and have_exif and len({round(exif[k], 3) for k in nodes}) == 1
    centers = {k: image_center(sizes[k]) for k in nodes}

    R0 = initial_rotations(nodes, edges, ref, {k: pinhole(focals[k], centers[k]) for k in nodes}, keys)
    if adjust and edges:
        Rs, free_focals, r0, r1, done = bundle_adjust(nodes, edges, ref, R0, focals, centers, shared, loss, f_scale,
                                                      max_points_per_edge, seed, max_steps=max_steps)
        if have_exif and EXIF_FOCAL_SIGMA > 0:
            # EXIF as a prior, kept only when the fit allows it (a cropped or resized photo's EXIF does not)
            Rp, fp, r0p, r1p, done_p = bundle_adjust(nodes, edges, ref, R0, focals, centers, shared, loss, f_scale,
                                                     max_points_per_edge, seed, focal_prior=exif, max_steps=max_steps)
            if r1p <= EXIF_MAX_RMS_RATIO * r1:
                Rs, free_focals, r0, r1, done = Rp, fp, r0p, r1p, done_p
        focals = free_focals
    else:
        Rs, r0, r1, done = R0, None, None, True
    kind, Rs, turn = levelled_turn(nodes, edges, Rs, ref, keys, wave)
    cams = {k: Camera(names[k], sizes[k], float(focals[k]), Rs[k]) for k in nodes}
    focal = float(np.median([focals[k] for k in nodes]))
    if turn:
        focal = turn_focal(focal)
    return Geometry("rotation", camera_homographies(cams, focal, centers[ref]), cams, focal, centers[ref], turn,
                    r0, r1, kind, done)


#: What a Registration's ``model`` may be (see Registration).
REGISTRATION_MODELS = ("rotation", "rotation+homography", "homography", "scans")


@dataclass
class Registration:
    """What ``stitch.register`` returns: one Camera per kept image (input order) and the panorama's frame.

    model: 'rotation' (cameras: R and focal; the panorama's virtual camera has focal ``focal`` and principal
    point ``center``, identity rotation; edit R or focal to change the render), 'rotation+homography' (the
    same cameras, each with its refined ``H`` (3, 3) pixels -> the virtual camera's plane, which renders; set
    model='rotation' to render from R and focal instead) or 'homography' / 'scans' (only H; R is the
    identity). full_turn: a loop-closing pair closed a 360-degree turn.
    ``save`` / ``load`` round-trip it through JSON exactly (floats as repr), so ``stitch.compose`` renders the
    same pixels as ``stitch_images``.
    """

    cameras: list[Camera]
    model: str
    focal: float | None
    center: tuple[float, float]
    reference: str
    full_turn: bool = False
    rotating: bool = False
    wave: str = "none"
    rms_before: float | None = None
    rms_after: float | None = None
    edges: list[tuple[str, str, float, int]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: per edge (same order as ``edges``): its inliers' median transfer error (px, working resolution)
    edge_errors: list[float] = field(default_factory=list)
    #: per image name: the photometric agreement with its neighbours on the final placement (None: no neighbour
    #: to compare with), see stitch.panorama.placement
    placement: dict[str, float | None] = field(default_factory=dict)
    #: pair matches removed as inconsistent with the rest: (image a, image b, reason)
    rejected: list[tuple[str, str, str]] = field(default_factory=list)
    #: the images of each other panorama in the inputs (a component of the pair graph apart from this one)
    others: list[list[str]] = field(default_factory=list)
    #: per edge (same order as ``edges``): its matches, what the local warp aligns (stitch.panorama.localwarp)
    matches: list[PairMatches] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """The cameras' image names, in order."""
        return [c.name for c in self.cameras]

    def homographies(self) -> list[np.ndarray]:
        """H (3, 3) per camera: its pixels -> the reference plane of the virtual camera (see the class docstring).

        Cameras that carry H (refined homographies, or the homography models) use it; else K_v R^T K^-1. Each is
        scaled to H[2, 2] == 1, or, for an image facing away from the reference view (H[2, 2] <= 0, a full turn),
        to |det| == 1 (geometry.normalize_h_oriented: the sign stays).
        """
        if self.model == "rotation":
            if self.focal is None:
                raise ConfigError("registration: the rotation model needs a focal")
            Hs = camera_homographies(dict(enumerate(self.cameras)), self.focal, self.center)
            return [normalize_h_oriented(Hs[k]) for k in range(len(self.cameras))]
        missing = [c.name for c in self.cameras if c.H is None]
        if missing:
            raise ConfigError(f"registration: model {self.model!r} needs H on every camera (missing: {', '.join(missing)})")
        return [normalize_h_oriented(c.H) for c in self.cameras]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"model": self.model, "focal": self.focal, "center": list(self.center), "reference": self.reference,
                "full_turn": self.full_turn, "rotating": self.rotating, "wave": self.wave,
                "rms_before": self.rms_before, "rms_after": self.rms_after,
                "cameras": [c.to_dict() for c in self.cameras],
                "edges": [list(e) for e in self.edges], "dropped": [list(d) for d in self.dropped],
                "edge_errors": list(self.edge_errors), "placement": dict(self.placement),
                "rejected": [list(r) for r in self.rejected], "others": [list(o) for o in self.others],
                "matches": [m.to_dict() for m in self.matches]}

    def save(self, path: str | Path) -> Path:
        """Write as JSON, atomically."""
        from stitch.io import write_text_atomic

        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Registration:
        """The registration of ``to_dict``; ConfigError names what is wrong."""
        if not isinstance(d, dict) or not isinstance(d.get("cameras"), list) or not d["cameras"]:
            raise ConfigError("registration: expected a JSON object with a non-empty 'cameras' list")
        model = d.get("model", "rotation")
        if model not in REGISTRATION_MODELS:
            raise ConfigError(f"registration: model={model!r}: choose one of {', '.join(REGISTRATION_MODELS)}")
        cams = [Camera.from_dict(c) for c in d["cameras"]]
        focal = d.get("focal")
        center = d.get("center") or list(cams[0].center)
        return cls(cams, model, None if focal is None else float(focal), (float(center[0]), float(center[1])),
                   str(d.get("reference", cams[0].name)), bool(d.get("full_turn", False)),
                   bool(d.get("rotating", model == "rotation")), str(d.get("wave", "none")),
                   d.get("rms_before"), d.get("rms_after"),
                   [(str(a), str(b), float(s), int(n)) for a, b, s, n in d.get("edges", [])],
                   [(str(a), str(b)) for a, b in d.get("dropped", [])],
                   edge_errors=[float(x) for x in d.get("edge_errors", [])],
                   placement={str(k): None if v is None else float(v) for k, v in d.get("placement", {}).items()},
                   rejected=[(str(a), str(b), str(r)) for a, b, r in d.get("rejected", [])],
                   others=[[str(x) for x in o] for o in d.get("others", [])],
                   matches=[PairMatches.from_dict(m) for m in d.get("matches", [])])

    @classmethod
    def load(cls, path: str | Path) -> Registration:
        """Read a ``save`` file; StitchError names an unreadable file."""
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise StitchError(f"{path}: cannot read cameras ({exc})") from None
        return cls.from_dict(doc)
