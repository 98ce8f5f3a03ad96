"""Stage 2: descriptor matching with Lowe's ratio test and a mutual nearest-neighbour check."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stitch.errors import ConfigError
from stitch.homography.features import Features
from stitch.profile import profiled

DEFAULT_RATIO = 0.8
DEFAULT_MUTUAL = True


@dataclass(frozen=True)
class MatchConfig:
    """Matcher settings: ``ratio`` for Lowe's test (lower = stricter), ``mutual`` for cross-checking."""

    ratio: float = DEFAULT_RATIO
    mutual: bool = DEFAULT_MUTUAL

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio <= 1.0:
            raise ConfigError(f"ratio={self.ratio}: must be in (0, 1]")

    def label(self) -> str:
        """Short tag, e.g. 'r0.80+mutual'."""
        return f"r{self.ratio:.2f}" + ("+mutual" if self.mutual else "")


@dataclass
class Matches:
    """Putative correspondences. src_pts/dst_pts (N, 2) float64 full-res px; ratio (N,) best/second distance."""

    src_pts: np.ndarray
    dst_pts: np.ndarray
    src_idx: np.ndarray
    dst_idx: np.ndarray
    ratio: np.ndarray

    def __len__(self) -> int:
        return len(self.src_pts)

    def take(self, keep: np.ndarray) -> Matches:
        """Matches restricted to a boolean mask or index array."""
        return Matches(self.src_pts[keep], self.dst_pts[keep], self.src_idx[keep], self.dst_idx[keep], self.ratio[keep])


def knn(query: np.ndarray, train: np.ndarray, norm: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k nearest train descriptors for each query: (idx (Nq, k), dist (Nq, k)); missing neighbours get inf."""
    nq = len(query)
    idx = np.full((nq, k), -1, np.int64)
    dist = np.full((nq, k), np.inf)
    if nq == 0 or len(train) == 0:
        return idx, dist
    kk = min(k, len(train))
    if norm != cv2.NORM_L2:
        for i, row in enumerate(cv2.BFMatcher(norm).knnMatch(query, train, k=kk)):
            for j, m in enumerate(row):
                idx[i, j] = m.trainIdx
                dist[i, j] = m.distance
        return idx, dist
    # exact L2 search as one BLAS product per chunk: |q - t|^2 - |q|^2 = [q, 1] . [-2 t, |t|^2], so the product
    # itself ranks each query's neighbours (no pass over the distance matrix to add the norms)
    q = np.ascontiguousarray(query, dtype=np.float32)
    t = np.ascontiguousarray(train, dtype=np.float32)
    ta = np.empty((len(t), t.shape[1] + 1), np.float32)
    np.multiply(t, -2.0, out=ta[:, :-1])
    ta[:, -1] = np.einsum("ij,ij->i", t, t)
    chunk = max(1, int(2e7 // max(len(t), 1)))
    for lo in range(0, nq, chunk):
        qc = q[lo:lo + chunk]
        qa = np.empty((len(qc), qc.shape[1] + 1), np.float32)
        qa[:, :-1] = qc
        qa[:, -1] = 1.0
        d2 = qa @ ta.T
        rows = np.arange(len(qc))
        q2 = np.einsum("ij,ij->i", qc, qc)
        for j in range(kk):  # k is 1 or 2 here: repeated argmin beats a partial sort
            best = np.argmin(d2, axis=1)
            idx[lo:lo + chunk, j] = best
            dist[lo:lo + chunk, j] = np.sqrt(np.maximum(d2[rows, best] + q2, 0.0))
            if j + 1 < kk:
                d2[rows, best] = np.inf
    return idx, dist


def _ratio_matches(qa: np.ndarray, tb: np.ndarray, norm: int, ratio: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query->train matches passing the ratio test: (query idx, train idx, ratio)."""
    idx, dist = knn(qa, tb, norm, 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(dist[:, 1] > 0, dist[:, 0] / dist[:, 1], 1.0)
    r[~np.isfinite(dist[:, 1])] = 0.0  # a single train descriptor: no second neighbour to compare
    ok = (idx[:, 0] >= 0) & (r <= ratio)
    q = np.flatnonzero(ok)
    return q, idx[ok, 0], r[ok]


def ratio_matches(qa: np.ndarray, tb: np.ndarray, norm: int, ratio: float,
                  mutual: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matches of query descriptors qa (N, D) to train tb (M, D) passing Lowe's ratio test and, if ``mutual``,
    the backward nearest-neighbour check: (query idx (K,), train idx (K,), ratio (K,))."""
    q, t, r = _ratio_matches(qa, tb, norm, ratio)
    if mutual and len(q):
        # backward nearest neighbour, only for the train descriptors that the ratio test kept
        uniq, inv = np.unique(t, return_inverse=True)
        back, _ = knn(tb[uniq], qa, norm, 1)
        keep = back[inv.ravel(), 0] == q
        q, t, r = q[keep], t[keep], r[keep]
    return q, t, r


def merge_duplicates(src_pts: np.ndarray, dst_pts: np.ndarray, ratio: np.ndarray, cell: float = 2.0) -> np.ndarray:
    """Sorted indices keeping one match per (src, dst) position pair rounded to ``cell`` px: the most distinctive.

    The same physical match found in several simulated views lands on (nearly) the same pixels.
    """
    key = np.round(np.hstack([src_pts, dst_pts]) / cell).astype(np.int64)
    order = np.argsort(ratio, kind="stable")
    _, first = np.unique(key[order], axis=0, return_index=True)
    return np.sort(order[first])


@profiled("pair: matching")
def match(fa: Features, fb: Features, config: MatchConfig | None = None) -> Matches:
    """Match src features ``fa`` to dst features ``fb``; simulated (ASIFT) views are matched to the other original."""
    cfg = config or MatchConfig()
    if fa.norm != fb.norm:
        raise ConfigError("cannot match binary (ORB) descriptors against float (SIFT) descriptors")
    base_a, base_b = np.flatnonzero(fa.view == 0), np.flatnonzero(fb.view == 0)
    qa, tb, r = ratio_matches(fa.desc[base_a], fb.desc[base_b], fa.norm, cfg.ratio, cfg.mutual)
    qa, tb = base_a[qa], base_b[tb]
    src_idx, dst_idx, ratios = [qa], [tb], [r]
    # ASIFT: each image's simulated views against the other image's original view (ratio test on the original side)
    sim_a, sim_b = np.flatnonzero(fa.view > 0), np.flatnonzero(fb.view > 0)
    if len(sim_a):
        q, t, rr = _ratio_matches(fa.desc[sim_a], fb.desc[base_b], fa.norm, cfg.ratio)
        src_idx.append(sim_a[q])
        dst_idx.append(base_b[t])
        ratios.append(rr)
    if len(sim_b):
        q, t, rr = _ratio_matches(fb.desc[sim_b], fa.desc[base_a], fa.norm, cfg.ratio)
        src_idx.append(base_a[t])
        dst_idx.append(sim_b[q])
        ratios.append(rr)
    si, di, ra = np.concatenate(src_idx), np.concatenate(dst_idx), np.concatenate(ratios)
    sp, dp = fa.pts[si].astype(np.float64), fb.pts[di].astype(np.float64)
    if len(sim_a) or len(sim_b):
        keep = merge_duplicates(sp, dp, ra)
        si, di, ra, sp, dp = si[keep], di[keep], ra[keep], sp[keep], dp[keep]
    return Matches(sp, dp, si, di, ra)

