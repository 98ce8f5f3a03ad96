"""Joint adjustment of the homography models (flat scenes): free homographies, or affine maps for scans.

The rotating-camera model (rotations + focal) is adjusted in stitch.panorama.camera; this module keeps the
homography path for flat scenes: ``projection='plane'`` and ``model='homography'`` or ``'scans'``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from stitch.errors import check_choice
from stitch.geometry import normalize_h, project
from stitch.panorama.viewgraph import PairEdge

LOSS_CHOICES = ("linear", "huber", "soft_l1", "cauchy")
DEFAULT_LOSS = "soft_l1"
DEFAULT_MAX_POINTS_PER_EDGE = 200
#: The adjustments' inliers in all: a graph of more than MAX_POINTS_TOTAL / max_points_per_edge edges (750 at the
#: default; hundreds of photos) keeps MAX_POINTS_TOTAL / edges per edge, at least MIN_POINTS_PER_EDGE. A pair's
#: rotation has 3 unknowns: dozens of inliers fix it, and the solve's cost grows with the inliers (why these
#: values: docs/measurements.md, "adjust").
MAX_POINTS_TOTAL = 150000
MIN_POINTS_PER_EDGE = 40
#: robust_least_squares ('lm') stops when a step lowers the robust cost by less than this fraction (Ceres's
#: default function_tolerance; why this value: docs/measurements.md, "adjust").
FUNCTION_TOLERANCE = 1e-6
#: Evaluations of the residuals an adjustment may spend (robust_least_squares' max_nfev).
ADJUST_MAX_STEPS = 100
#: Solvers of robust_least_squares: 'lm' (Levenberg-Marquardt on the small normal equations, the default)
#: or 'trf' (scipy.optimize.least_squares, trust region with LSMR steps). Same cost function. Why 'lm':
#: the parameters are few (3-8 per image) and the residuals many, so J^T W J is a small dense matrix, built
#: by one sparse product; LSMR instead takes hundreds of long vector operations per step (why this value:
#: docs/measurements.md, "adjust").
SOLVER_CHOICES = ("lm", "trf")
DEFAULT_SOLVER = "lm"
#: 'lm' solves its normal equations densely up to this many parameters, and as a sparse system above (hundreds
#: of photos: J^T W J has one block per overlapping pair, and a dense solve grows with the cube of the count;
#: why this value: docs/measurements.md, "adjust").
DENSE_MAX_PARAMS = 800


def _rho(z: np.ndarray, loss: str) -> tuple[np.ndarray, np.ndarray]:
    """scipy's robust losses: (rho(z), rho'(z)) of z = (r / f_scale)^2."""
    if loss == "linear":
        return z, np.ones_like(z)
    if loss == "soft_l1":
        t = np.sqrt(1.0 + z)
        return 2.0 * (t - 1.0), 1.0 / t
    if loss == "huber":
        big = z > 1.0
        sz = np.sqrt(np.where(big, z, 1.0))
        return np.where(big, 2.0 * sz - 1.0, z), np.where(big, 1.0 / sz, 1.0)
    return np.log1p(z), 1.0 / (1.0 + z)  # cauchy


def _rho_split(z: np.ndarray, loss: str, plain: int) -> tuple[np.ndarray, np.ndarray]:
    """_rho on all but the last ``plain`` entries of z, which keep the linear loss (plain squares)."""
    rho, d1 = _rho(z, loss)
    if plain:
        rho[-plain:], d1[-plain:] = z[-plain:], 1.0
    return rho, d1


def robust_least_squares(fun: Any, x0: np.ndarray, loss: str = DEFAULT_LOSS, f_scale: float = 1.0,
                         max_nfev: int = ADJUST_MAX_STEPS, solver: str = DEFAULT_SOLVER, plain: int = 0,
                         ) -> tuple[np.ndarray, bool]:
    """(x minimising 0.5 f_scale^2 sum rho((r_i / f_scale)^2), r = fun(x), rho: ``loss`` (as least_squares),
    converged: False when ``max_nfev`` evaluations of fun ran out first).

    fun(x, want_jac) returns r (m,) or, with want_jac, (r, J) with J a sparse (m, n) Jacobian, or an object that
    sums the normal equations itself (``J.weighted_normal(w, r, dense)`` and ``J.tocsr()``: camera.BundleJacobian).
    'lm': damped Gauss-Newton with iteratively reweighted normal equations (weights rho'), Marquardt's diagonal
    scaling and a step accepted only when the cost falls; 'trf': scipy.optimize.least_squares (x_scale='jac').
    The last ``plain`` residuals (priors) are plain squares: a robust loss would cap their pull.
    """
    check_choice("solver", solver, SOLVER_CHOICES)
    if solver == "trf":
        from scipy.optimize import least_squares

        def trf_loss(z: np.ndarray) -> np.ndarray:  # rho, rho', rho'' (the last unused by 'trf' with lsmr)
            rho, d1 = _rho_split(z, loss, plain)
            return np.stack([rho, d1, np.zeros_like(z)])

        fit = least_squares(lambda x: fun(x), x0, jac=lambda x: fun(x, True)[1].tocsr(),
                            loss=trf_loss if plain else loss, f_scale=f_scale,
                            method="trf", tr_solver="lsmr", x_scale="jac", max_nfev=max_nfev)
        return fit.x, fit.status != 0
    from scipy.sparse import diags
    from scipy.sparse.linalg import MatrixRankWarning, spsolve

    def cost(r: np.ndarray) -> float:
        return 0.5 * f_scale ** 2 * float(np.sum(_rho_split((r / f_scale) ** 2, loss, plain)[0]))

    x = np.asarray(x0, np.float64).copy()
    sparse = len(x) > DENSE_MAX_PARAMS
    r, J = fun(x, True)
    c, lam, nfev = cost(r), 1e-3, 1
    while nfev < max_nfev:
        w = _rho_split((r / f_scale) ** 2, loss, plain)[1]
        if hasattr(J, "weighted_normal"):  # a Jacobian built in parts (camera.BundleJacobian)
            A, g = J.weighted_normal(w, r, dense=not sparse)
        else:
            JW = diags(w) @ J
            A = (J.T @ JW).tocsc() if sparse else np.asarray((J.T @ JW).todense())
            g = np.asarray(JW.T @ r).ravel()
            del JW
        del J  # the Jacobian is the largest array here: gone before the next one is built
        d = A.diagonal().copy()
        d[d <= 0] = 1.0
        while nfev < max_nfev:
            try:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", MatrixRankWarning)  # a singular step is NaN: rejected below
                    dx = (spsolve((A + diags(lam * d)).tocsc(), -g) if sparse
                          else np.linalg.solve(A + lam * np.diag(d), -g))
            except (np.linalg.LinAlgError, RuntimeError):
                dx = np.full_like(x, np.nan)
            r_new = fun(x + dx) if np.all(np.isfinite(dx)) else None
            nfev += 1
            c_new = cost(r_new) if r_new is not None else np.inf
            if np.isfinite(c_new) and c_new < c:
                break
            lam *= 4.0
            if lam > 1e12:
                return x, True
        else:
            return x, False
        x = x + dx
        gain = (c - c_new) / max(c, 1e-300)
        c, lam = c_new, max(lam / 3.0, 1e-12)
        if gain < FUNCTION_TOLERANCE:
            return x, True
        r, J = fun(x, True)
    return x, False


def norm_matrix(size: tuple[int, int]) -> np.ndarray:
    """T (3, 3): pixels of a (w, h) image -> coordinates centred on the image, about [-1, 1]."""
    w, h = size
    s = 2.0 / max(w, h)
    return np.array([[s, 0.0, -s * (w - 1) / 2.0], [0.0, s, -s * (h - 1) / 2.0], [0.0, 0.0, 1.0]])


def edge_residuals(Hs: dict[int, np.ndarray], edges: Sequence[PairEdge]) -> np.ndarray:
    """Symmetric transfer residuals (4 * sum N,) px of every edge's inliers under image -> reference Hs.

    Per edge: (H_j^-1 H_i pts_i - pts_j) then (H_i^-1 H_j pts_j - pts_i), x and y interleaved.
    """
    return transfer_residuals(Hs, edges, {}, {}, np.eye(3))[0]


def transfer_residuals(Hs: dict[int, np.ndarray], edges: Sequence[PairEdge], col: dict[int, int],
                       T: dict[int, np.ndarray], Tref_inv: np.ndarray, want_jac: bool = False,
                       npar: int = 8) -> tuple[np.ndarray, list]:
    """Residuals (see edge_residuals) and, if asked, Jacobian blocks (row0, param column, (2n, npar) block).

    npar: 8 (a homography: G[2, 2] == 1) or 6 (affine: G's last row is [0, 0, 1]).

    With H_k = Tref^-1 G_k T_k, q = H_b^-1 H_a p: dq/dG_a[r, c] = U[:, r] (T_a p)[c] and
    dq/dG_b[r, c] = -U[:, r] (T_b q)[c], where U = H_b^-1 Tref^-1; then d(q_xy / q_z)/dq by the chain rule.
    """
    res, blocks, row = [], [], 0
    for e in edges:
        for a, b, pa, pb in ((e.i, e.j, e.pts_i, e.pts_j), (e.j, e.i, e.pts_j, e.pts_i)):
            Hb_inv = np.linalg.inv(Hs[b])
            ph = np.hstack([pa, np.ones((len(pa), 1))])
            q = ph @ (Hb_inv @ Hs[a]).T
            z = np.where(np.abs(q[:, 2]) < 1e-12, 1e-12, q[:, 2])
            res.append((q[:, :2] / z[:, None] - pb).ravel())
            n = len(pa)
            if want_jac and (a in col or b in col):
                dedq = np.zeros((n, 2, 3))
                dedq[:, 0, 0] = dedq[:, 1, 1] = 1.0 / z
                dedq[:, :, 2] = -q[:, :2] / (z * z)[:, None]
                W = dedq @ (Hb_inv @ Tref_inv)  # (n, 2, 3)
                for k, v, sign in ((a, ph @ T.get(a, np.eye(3)).T, 1.0), (b, q @ T.get(b, np.eye(3)).T, -1.0)):
                    if k in col:
                        J = sign * np.einsum("nkr,nc->nkrc", W, v).reshape(n, 2, 9)[:, :, :npar]
                        blocks.append((row, col[k], J.reshape(2 * n, npar)))
            row += 2 * n
    return (np.concatenate(res) if res else np.zeros(0)), blocks


def rms(r: np.ndarray) -> float:
    """RMS (px) per point of interleaved x, y residuals."""
    return float(np.sqrt(np.mean(r * r) * 2.0)) if len(r) else 0.0  # per point (x and y together)


def points_per_edge(edges: int, max_points_per_edge: int, total: int = MAX_POINTS_TOTAL,
                    floor: int = MIN_POINTS_PER_EDGE) -> int:
    """The inliers an adjustment keeps per edge of a graph of ``edges`` edges: ``max_points_per_edge``, or fewer
    so that all of them stay within ``total`` (at least ``floor``, and never more than max_points_per_edge)."""
    return min(max_points_per_edge, max(floor, total // max(1, edges)))


def subsample_edges(edges: Sequence[PairEdge], max_points_per_edge: int, seed: int) -> list[PairEdge]:
    """Edges with at most ``points_per_edge`` inliers each (a random subset, kept in order), float64.

    Each edge draws from its own generator, seeded by (``seed``, its inlier count): the subset does not
    depend on the edges' order (so neither on the input order of the images).
    """
    cap = points_per_edge(len(edges), max_points_per_edge)
    sub = []
    for e in edges:
        n = len(e.pts_i)
        if n > cap:
            keep = np.sort(np.random.default_rng([seed, n]).choice(n, cap, replace=False))
        else:
            keep = slice(None)
        sub.append(replace(e, pts_i=np.asarray(e.pts_i[keep], np.float64), pts_j=np.asarray(e.pts_j[keep], np.float64)))
    return sub


def affine_edges(edges: Sequence[PairEdge]) -> list[PairEdge]:
    """Edges whose H (3, 3) is replaced by the least-squares affine map of their inliers (the scans model)."""
    out = []
    for e in edges:
        X = np.hstack([e.pts_i, np.ones((len(e.pts_i), 1))])
        M = np.linalg.lstsq(X, e.pts_j, rcond=None)[0].T  # (2, 3)
        out.append(replace(e, H=np.vstack([M, [0.0, 0.0, 1.0]])))
    return out


def adjust_homographies(Hs: dict[int, np.ndarray], ref: int, edges: Sequence[PairEdge],
                        sizes: dict[int, tuple[int, int]], loss: str = DEFAULT_LOSS, f_scale: float = 2.0,
                        max_points_per_edge: int = DEFAULT_MAX_POINTS_PER_EDGE,
                        seed: int = 0, affine: bool = False,
                        solver: str = DEFAULT_SOLVER) -> tuple[dict[int, np.ndarray], float, float]:
    """Jointly refine image -> reference Hs (3, 3) over all edges' inliers; the reference stays identity.

    8 parameters per non-reference image (G = Tref H T^-1 with G[2, 2] == 1, T normalising pixel
    coordinates, for conditioning); ``affine`` (the scans model, as OpenCV's SCANS): 6, G's last row stays
    [0, 0, 1] (pass affine initial Hs, e.g. chained from ``affine_edges``). Residuals: symmetric transfer
    errors in px (edge_residuals); robust ``loss`` with scale ``f_scale`` px; analytic sparse Jacobian;
    ``solver``: see robust_least_squares. Returns (refined Hs, RMS transfer error before, after) in px over the
    (subsampled, ``seed``) inliers; keeps the input when it does not improve.
    """
    from scipy.sparse import csr_matrix  # scipy loads only when a panorama is adjusted

    check_choice("loss", loss, LOSS_CHOICES)
    sub = subsample_edges(edges, max_points_per_edge, seed)
    npar = 6 if affine else 8
    free = [k for k in sorted(Hs) if k != ref]
    col = {k: m for m, k in enumerate(free)}
    T = {k: norm_matrix(sizes[k]) for k in Hs}
    Tref_inv = np.linalg.inv(T[ref])
    tail = np.array([0.0, 0.0, 1.0]) if affine else np.array([1.0])

    def unpack(x: np.ndarray) -> dict[int, np.ndarray]:
        out = {ref: np.eye(3)}
        for m, k in enumerate(free):
            out[k] = Tref_inv @ np.append(x[npar * m:npar * m + npar], tail).reshape(3, 3) @ T[k]
        return out

    x0 = np.concatenate([((G := T[ref] @ Hs[k] @ np.linalg.inv(T[k])) / G[2, 2]).ravel()[:npar] for k in free]
                        or [np.zeros(0)])
    r0 = edge_residuals(unpack(x0), sub)
    if not free or not sub:
        return dict(Hs), rms(r0), rms(r0)
    n_rows, n_cols = len(r0), npar * len(free)

    def fun(x: np.ndarray, want_jac: bool = False) -> Any:
        """Residuals, and with want_jac the sparse (n_rows, n_cols) Jacobian (each residual depends on at most
        two images' parameters), from one pass over the edges."""
        r, blocks = transfer_residuals(unpack(x), sub, col, T, Tref_inv, want_jac=want_jac, npar=npar)
        if not want_jac:
            return r
        rows = np.concatenate([np.repeat(np.arange(r0, r0 + len(B)), npar) for r0, _, B in blocks])
        cols = np.concatenate([np.tile(np.arange(npar * c, npar * c + npar), len(B)) for _, c, B in blocks])
        return r, csr_matrix((np.concatenate([B.ravel() for _, _, B in blocks]), (rows, cols)),
                             shape=(n_rows, n_cols))

    x1 = robust_least_squares(fun, x0, loss, f_scale, ADJUST_MAX_STEPS, solver)[0]
    refined = unpack(x1)
    r1 = edge_residuals(refined, sub)
    if not np.all(np.isfinite(x1)) or not np.isfinite(rms(r1)) or rms(r1) > rms(r0):
        return dict(Hs), rms(r0), rms(r0)
    return {k: normalize_h(H) for k, H in refined.items()}, rms(r0), rms(r1)


#: adjust_in_frame refuses frames where an image's corners, seen from the reference image, lie behind it or
#: differ in depth by more than this factor (too oblique for one plane).
MAX_DEPTH_RATIO = 10.0


def adjust_in_frame(Hs: dict[int, np.ndarray], ref: int, edges: Sequence[PairEdge],
                    sizes: dict[int, tuple[int, int]], loss: str = DEFAULT_LOSS, f_scale: float = 2.0,
                    max_points_per_edge: int = DEFAULT_MAX_POINTS_PER_EDGE, seed: int = 0,
                    ) -> tuple[dict[int, np.ndarray], float, float] | None:
    """adjust_homographies around a given frame: Hs (3, 3, image -> frame) refined with image ``ref`` held.

    The Hs are re-expressed relative to image ``ref`` (H_ref^-1 H_k), adjusted, and mapped back (H_ref H_k'),
    so the frame (e.g. the camera model's wave-corrected virtual camera) stays. Returns (Hs, RMS before,
    after), or None when some image does not fit on the reference's plane (see MAX_DEPTH_RATIO).
    """
    H_ref = np.asarray(Hs[ref], np.float64)
    rel = {}
    for k, H in Hs.items():
        G = np.linalg.solve(H_ref, H)
        d = float(np.linalg.det(G))
        if not np.isfinite(d) or abs(d) < 1e-300:
            return None
        G = G / np.cbrt(d)
        w, h = sizes[k]
        z = G[2] @ np.array([[0, w - 1, w - 1, 0], [0, 0, h - 1, h - 1], [1.0, 1, 1, 1]])
        if z.min() <= 0 or z.max() > MAX_DEPTH_RATIO * z.min():
            return None
        rel[k] = normalize_h(G)
    out, r0, r1 = adjust_homographies(rel, ref, edges, sizes, loss, f_scale, max_points_per_edge, seed)
    return {k: H_ref @ H for k, H in out.items()}, r0, r1


#: ``refinement_pays``: a refinement may move each image by up to this fraction of its width from the model it
#: refines whatever it gains; an image moved further must buy at least as large a fraction off the RMS error
#: (moved by 20 % of its width: 20 % lower). On the shared real sets the homographies move images by at most 16 %
#: (apap_railtracks' parallax, RMS 29 -> 1.5 px: 95 % lower), cave_atrium's by 6.8 % for 19 %; on a narrow
#: rendered sweep without a full turn (8.5-degree views, rotations at the noise floor) they moved views by up to
#: 52 % of their width for 2 %, and 1-4 degrees off the truth (docs/measurements.md, "adjust").
REFINE_FREE_MOVE = 0.05


def largest_move(H0: dict[int, np.ndarray], H1: dict[int, np.ndarray], sizes: dict[int, tuple[int, int]]) -> float:
    """The largest distance (fraction of the image's width) by which H1 (3, 3 per image, image -> frame) lays an
    image's corner or centre away from where H0 lays it, in that image's own pixels (H0^-1 H1)."""
    worst = 0.0
    for k, H in H1.items():
        w, h = sizes[k]
        pts = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1], [(w - 1) / 2, (h - 1) / 2]], np.float64)
        moved = project(np.linalg.solve(H0[k], H), pts)
        worst = max(worst, float(np.max(np.linalg.norm(moved - pts, axis=1))) / w)
    return worst


def refinement_pays(H0: dict[int, np.ndarray], H1: dict[int, np.ndarray], sizes: dict[int, tuple[int, int]],
                    rms0: float, rms1: float) -> bool:
    """Whether refined Hs H1 (RMS error rms1 px) are worth keeping over H0 (rms0 px): no image moves by more than
    REFINE_FREE_MOVE of its width, or by no larger a fraction of it than the fraction the RMS error drops by. Free
    homographies chained along an open sweep drift along what its pairs leave unfixed when there is little left to
    gain."""
    move = largest_move(H0, H1, sizes)
    return bool(move <= REFINE_FREE_MOVE or (rms0 > 0 and move <= 1.0 - rms1 / rms0))
