"""The check of every output: does each image agree with what the final model lays it on?

``placement_scores`` warps every pair of registered images that overlap on the final model onto each other, at
a small size, and measures their agreement with the quality score's photometric part (stitch.homography.quality:
(NCC + gradient correlation) / 2, blind to gain and offset). An image's placement score is the mean over its
overlapping neighbours, weighted by the overlap. A photo placed on the wrong copy of a repeated building, or
glued through a look-alike match, disagrees with whatever it covers and scores near 0; a right placement scores
as its pair matches did (0.6-1, lower with parallax or moving things).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stitch.geometry import frame_points
from stitch.homography.quality import ScoreConfig, make_context, photometric
from stitch.profile import profiled

#: Longer side (px) of the images the placement check compares.
PLACEMENT_SIDE = 384
#: An image whose placement score is below this is dropped (and the model solved again without it).
MIN_PLACEMENT_SCORE = 0.3
#: Pairs that share less than this fraction of the smaller image are not compared.
MIN_SHARED = 0.08


def _lattice(size: tuple[int, int], grid: int) -> np.ndarray:
    """(grid * grid, 3) homogeneous pixels: a grid x grid lattice over an image of (w, h) px."""
    w, h = size
    xs, ys = np.meshgrid(np.linspace(0, w - 1, grid), np.linspace(0, h - 1, grid))
    return np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], 1)


def _inside(H: np.ndarray, pts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(m,) fraction of the points (m, k, 3) or (k, 3) that H (m, 3, 3) puts in front of and inside (w, h) (m, 2)."""
    q = np.einsum("mij,kj->mki" if pts.ndim == 2 else "mij,mkj->mki", H, pts)
    w = q[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = q[..., 0] / w, q[..., 1] / w
    ok = (w > 0) & (np.abs(w) >= 1e-12)
    ok &= (x >= 0) & (x <= sizes[:, None, 0] - 1) & (y >= 0) & (y <= sizes[:, None, 1] - 1)
    return ok.mean(axis=1)


def frame_boxes(H: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (n, 4): x0, y0, x1, y1 of each image's corners mapped by H (n, 3, 3) into the frame, widened by
    BOX_SLACK of their extent (at least 1 px); bounded (n,) bool: every corner has w of the same sign, away from 0,
    so the whole image maps to the convex quadrilateral inside its box) for (w, h) sizes (n, 2)."""
    q = frame_points(sizes)[:, 1:] @ np.swapaxes(H, 1, 2)  # (n, 4, 3): the corners in the frame
    wq = q[..., 2]
    bounded = (np.all(wq > 1e-12, axis=1) | np.all(wq < -1e-12, axis=1))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # unbounded ones: any value, unused
        xy = q[..., :2] / wq[..., None]
        lo, hi = xy.min(axis=1), xy.max(axis=1)
        pad = np.maximum(1.0, BOX_SLACK * (hi - lo).max(axis=1))[:, None]
        boxes = np.concatenate([lo - pad, hi + pad], 1)
    return np.where(bounded[:, None], boxes, 0.0), bounded


#: ``frame_boxes``' widening, as a fraction of a box's extent: far beyond the rounding of the exact test.
BOX_SLACK = 1e-6


@dataclass(frozen=True)
class ModelOverlaps:
    """A model's images ready for overlap tests: H (n, 3, 3) image -> frame, their inverses, each image's
    ``grid`` x ``grid`` lattice of pixels (n, grid^2, 3, homogeneous), sizes (n, 2) (w, h) and ``frame_boxes``."""

    H: np.ndarray
    H_inv: np.ndarray
    lattice: np.ndarray
    sizes: np.ndarray
    boxes: np.ndarray
    bounded: np.ndarray

    @classmethod
    def of(cls, Hs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], grid: int = 9) -> ModelOverlaps:
        """Inverses, lattices and frame boxes computed once for every pair test of the model."""
        H = np.asarray(Hs, np.float64)
        size_arr = np.asarray(sizes, np.float64).reshape(-1, 2)
        return cls(H, np.linalg.inv(H), np.stack([_lattice(s, grid) for s in sizes]), size_arr,
                   *frame_boxes(H, size_arr))

    def later(self, a: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image a against every later image b: (H_b^-1 H_a (m, 3, 3), a -> b, scaled to a positive determinant so
        that w > 0 means in front of camera b; the fraction of a's lattice that H puts in front of and inside b
        (m,); the same of b's lattice inside a (m,)), m = n - a - 1. Two images that both map to bounded
        quadrilaterals whose boxes miss each other share no point: their fractions are 0 without the lattice test."""
        rel = self.H_inv[a + 1:] @ self.H[a]
        sign = np.where(np.linalg.det(rel) > 0, 1.0, -1.0)[:, None, None]
        rel = rel * sign
        back = self.H_inv[a] @ self.H[a + 1:] * sign  # the inverse of each rel
        box, others = self.boxes[a], self.boxes[a + 1:]
        miss = ((others[:, 0] > box[2]) | (others[:, 2] < box[0])
                | (others[:, 1] > box[3]) | (others[:, 3] < box[1]))
        apart = self.bounded[a] & self.bounded[a + 1:] & miss
        near = np.flatnonzero(~apart)
        fa, fb = np.zeros(len(rel)), np.zeros(len(rel))
        fa[near] = _inside(rel[near], self.lattice[a], self.sizes[a + 1:][near])
        fb[near] = _inside(back[near], self.lattice[a + 1:][near], np.repeat(self.sizes[a][None], len(near), 0))
        return rel, fa, fb


@profiled("placement check")
def placement_scores(reg: Any, thumbs: Sequence[np.ndarray]) -> dict[str, float | None]:
    """Per camera name of the Registration ``reg``: its photometric agreement with its overlapping neighbours.

    thumbs: the cameras' images (h, w, 3) uint8, in ``reg.cameras``' order, at any size (the cameras' sizes are
    the full ones). None for an image that overlaps no other one.
    """
    Hs = reg.homographies()
    sizes = [c.size for c in reg.cameras]
    n = len(Hs)
    S = [np.diag([t.shape[1] / s[0], t.shape[0] / s[1], 1.0]) for t, s in zip(thumbs, sizes)]
    cfg = ScoreConfig(work_max_side=max(max(t.shape[:2]) for t in thumbs))
    total, weight = np.zeros(n), np.zeros(n)
    model = ModelOverlaps.of(Hs, sizes)
    for a in range(n - 1):
        rel, fas, fbs = model.later(a)  # every later image at once: n^2 pairs stay cheap
        for k in np.flatnonzero(np.maximum(fas, fbs) >= MIN_SHARED):
            b, H, fa, fb = a + 1 + int(k), rel[k], float(fas[k]), float(fbs[k])
            share = max(fa, fb)
            src, dst, Ht = (a, b, S[b] @ H @ np.linalg.inv(S[a]))
            if fa < fb:
                src, dst, Ht = b, a, np.linalg.inv(Ht)  # warp the one that lies more inside the other
            ncc, gc, overlap = photometric(Ht, make_context(thumbs[src], thumbs[dst], cfg))
            if overlap <= 0:
                continue
            agree = 0.5 * (ncc + gc)
            for k in (a, b):
                total[k] += share * agree
                weight[k] += share
    return {c.name: (float(total[k] / weight[k]) if weight[k] > 0 else None) for k, c in enumerate(reg.cameras)}
