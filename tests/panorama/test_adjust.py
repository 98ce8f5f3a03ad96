"""stitch.panorama.adjust: the robust solver, the scans (affine) model and the frame-preserving refinement."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from stitch.errors import ConfigError
from stitch.panorama.adjust import adjust_homographies, adjust_in_frame, affine_edges, robust_least_squares
from stitch.panorama.viewgraph import PairEdge


def line_fit(x: np.ndarray, t: np.ndarray, y: np.ndarray, want_jac: bool = False):
    r = x[0] * t + x[1] - y
    return (r, csr_matrix(np.stack([t, np.ones_like(t)], 1))) if want_jac else r


@pytest.mark.parametrize("loss", ["linear", "soft_l1", "huber", "cauchy"])
def test_lm_matches_trf(loss):
    """A line through points with 10 planted outliers: 'lm' and 'trf' agree, and robust losses ignore them."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 10, 200)
    y = 2.0 * t - 1.0 + rng.normal(0, 0.05, t.size)
    y[:10] += 30.0
    a, done_a = robust_least_squares(lambda x, j=False: line_fit(x, t, y, j), np.zeros(2), loss, 0.2, solver="lm")
    b, done_b = robust_least_squares(lambda x, j=False: line_fit(x, t, y, j), np.zeros(2), loss, 0.2, solver="trf")
    assert done_a and done_b
    np.testing.assert_allclose(a, b, atol=2e-3)
    if loss != "linear":
        np.testing.assert_allclose(a, [2.0, -1.0], atol=0.02 if loss == "cauchy" else 0.1)
    with pytest.raises(ConfigError, match="solver='newton'"):
        robust_least_squares(lambda x, j=False: line_fit(x, t, y, j), np.zeros(2), solver="newton")


def test_lm_says_when_its_steps_ran_out():
    """A cauchy fit far from its start needs several steps: with 2 it stops early, flagged, at a worse point than the
    converged one, which the same call with the default budget reaches (flagged converged)."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 10, 200)
    y = 2.0 * t - 1.0 + rng.normal(0, 0.05, t.size)
    full, done = robust_least_squares(lambda x, j=False: line_fit(x, t, y, j), np.array([-5.0, 40.0]), "cauchy", 0.2)
    cut, done_cut = robust_least_squares(lambda x, j=False: line_fit(x, t, y, j), np.array([-5.0, 40.0]), "cauchy",
                                         0.2, max_nfev=2)
    assert done and not done_cut
    np.testing.assert_allclose(full, [2.0, -1.0], atol=0.02)
    assert np.abs(cut - [2.0, -1.0]).max() > 0.05


def shifted_edges(n: int = 40):
    """Three 200 x 100 images shifted by 120 px with a small rotation: exact affine correspondences."""
    rng = np.random.default_rng(1)
    A = {0: np.eye(3), 1: np.array([[0.999, -0.02, 120.0], [0.02, 0.999, 3.0], [0, 0, 1.0]]),
         2: np.array([[0.998, 0.03, 241.0], [-0.03, 0.998, -2.0], [0, 0, 1.0]])}
    edges = []
    for i, j in ((0, 1), (1, 2), (0, 2)):
        H = np.linalg.solve(A[j], A[i])
        p = rng.uniform([0, 0], [199, 99], (400, 2))
        q = np.hstack([p, np.ones((400, 1))]) @ H.T
        ok = (q[:, 0] >= 0) & (q[:, 0] < 200)
        edges.append(PairEdge(i, j, H, 0.9, int(ok.sum()), p[ok][:n], q[ok][:n, :2]))
    return A, edges


def test_scans_model_stays_affine():
    A, edges = shifted_edges()
    aff = affine_edges(edges)
    assert all(np.allclose(e.H[2], [0, 0, 1]) for e in aff)
    init = {k: A[k] @ np.array([[1, 0, 3.0], [0, 1, -2.0], [0, 0, 1]]) if k else A[k] for k in A}
    out, before, after = adjust_homographies(init, 0, edges, dict.fromkeys(A, (200, 100)), affine=True)
    assert after < 1e-6 < before
    for k in A:
        np.testing.assert_allclose(out[k][2], [0, 0, 1], atol=1e-12)
        np.testing.assert_allclose(out[k], A[k], atol=1e-6)


def test_adjust_in_frame_keeps_the_frame():
    """Refined in a frame F (the truth composed with F): the result stays in F; an image behind it is refused."""
    A, edges = shifted_edges()
    F = np.array([[1.1, 0.05, 30.0], [0.0, 0.95, 10.0], [1e-4, 0, 1.0]])
    Hs = {k: F @ A[k] @ np.array([[1, 0, 2.0 * k], [0, 1, 0], [0, 0, 1]]) for k in A}
    out, _, after = adjust_in_frame(Hs, 0, edges, dict.fromkeys(A, (200, 100)))
    assert after < 1e-6
    for k in A:
        np.testing.assert_allclose(out[k] / out[k][2, 2], (F @ A[k]) / (F @ A[k])[2, 2], atol=1e-6)
    behind = dict(Hs)
    behind[2] = F @ np.array([[1, 0, 0], [0, 1, 0], [-0.02, 0, 1.0]])  # the horizon crosses image 2
    assert adjust_in_frame(behind, 0, edges, dict.fromkeys(A, (200, 100))) is None


def test_lm_sparse_steps_match_dense(monkeypatch):
    """Above DENSE_MAX_PARAMS the normal equations are solved as a sparse system: on a chain of 900 offsets
    (x_k - x_{k-1} and x_k - x_{k-2} observed, x_0 = 0; 20 planted outliers, at most one of the three
    observations across any cut) the sparse and the dense steps reach the same answer, and the robust loss
    recovers the offsets despite the outliers."""
    from stitch.panorama import adjust

    n = 900
    rng = np.random.default_rng(2)
    truth = np.cumsum(rng.normal(0, 1, n))
    truth -= truth[0]
    rows = [(k, k - 1) for k in range(1, n)] + [(k, k - 2) for k in range(2, n)]
    obs = np.array([truth[a] - truth[b] for a, b in rows]) + rng.normal(0, 0.01, len(rows))
    obs[np.arange(20) * 40 + 10] += 40.0  # on (k, k-1) links 40 apart
    data, ri, ci = [], [], []
    for m, (a, b) in enumerate(rows):
        ri += [m, m]
        ci += [a, b]
        data += [1.0, -1.0]
    ri.append(len(rows))
    ci.append(0)
    data.append(1.0)  # x_0 = 0 fixes the offset
    J = csr_matrix((data, (ri, ci)), shape=(len(rows) + 1, n))
    b = np.r_[obs, 0.0]

    def fun(x, want_jac=False):
        r = J @ x - b
        return (r, J) if want_jac else r

    assert n > adjust.DENSE_MAX_PARAMS
    start = truth + rng.normal(0, 0.3, n)  # a good start, as the chained pair matrices give
    sparse = robust_least_squares(fun, start, "soft_l1", 0.1)[0]
    monkeypatch.setattr(adjust, "DENSE_MAX_PARAMS", 10 ** 6)
    dense = robust_least_squares(fun, start, "soft_l1", 0.1)[0]
    np.testing.assert_allclose(sparse, dense, atol=1e-6)
    assert np.abs(sparse - truth).max() < 1.0  # 20 outliers of 40 each: a plain fit drifts by hundreds


def test_points_per_edge_budget():
    """Up to MAX_POINTS_TOTAL / max_points_per_edge edges keep max_points_per_edge inliers each; more edges share
    MAX_POINTS_TOTAL, down to MIN_POINTS_PER_EDGE; subsample_edges keeps that many of a longer edge's inliers."""
    from stitch.panorama.adjust import MAX_POINTS_TOTAL, MIN_POINTS_PER_EDGE, points_per_edge, subsample_edges

    assert points_per_edge(12, 200) == 200 and points_per_edge(MAX_POINTS_TOTAL // 200, 200) == 200
    assert points_per_edge(1299, 200) == MAX_POINTS_TOTAL // 1299 == 115
    assert points_per_edge(10 ** 6, 200) == MIN_POINTS_PER_EDGE and points_per_edge(10 ** 6, 20) == 20
    pts = np.random.default_rng(0).uniform(0, 100, (300, 2))
    edges = [PairEdge(k, k + 1, np.eye(3), 0.9, 300, pts, pts + 1.0) for k in range(1299)]
    sub = subsample_edges(edges, 200, 0)
    assert {len(e.pts_i) for e in sub} == {115} and np.allclose(sub[0].pts_j - sub[0].pts_i, 1.0)
