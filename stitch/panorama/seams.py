"""Stage 8b: seam finding in the overlaps, on the low-resolution (seam-resolution) canvas.

Input: the gain-compensated warped views (stitch.exposure.LowView). Output: one seam mask per view (bool,
over the view's low box); every canvas pixel covered by some view ends in exactly one mask. The blender
upsamples the masks to full resolution, so a seam costs what the seam resolution costs, not the photos'.

Methods (``SEAM_CHOICES``):

* ``graphcut``: minimum cut per overlapping pair (Boykov & Jolly; the pairwise scheme of OpenCV's
  PairwiseSeamFinder), solved by max-flow (OR-Tools with the 'fast' extra, else scipy's Dinic: the same cut,
  ``SOURCE_SIDE``). Nodes are the overlap's pixels; the pixels next to the part only image i covers are tied
  to i, those next to j's own part to j. The edge between 4-neighbours p, q costs (e(p) + e(q)) / 2 with
  the pixel cost

      e(p) = |I_i(p) - I_j(p)|_1 / 3 + beta * |grad I_i(p) - grad I_j(p)|_1 / 2 + c0

  (colors in 0..255; Sobel gradients of the gray level / 8): a seam crosses where the two images agree in
  color *and* in structure, so it avoids a moving object (the colors differ) and an edge that does not line
  up exactly (the gradients differ), and c0 keeps it short where everything agrees. With ``gamma`` > 0
  (``SeamCost``) the misalignment m(p) the warp left there (stitch.panorama.disagree: the optical flow between
  the two views, seam px, clipped at 4) adds gamma * m(p), so a seam runs around parallax and moving people
  even where their colours happen to match.
* ``dp``: dynamic programming (Efros & Freeman): the cheapest 8-connected path across each overlap, top to
  bottom when the two images sit side by side (left to right when one is above the other), with the same
  pixel cost e; the overlap's pixels on each side of the path go to the image on that side.
* ``voronoi``: each overlap pixel goes to the image whose own part (the pixels only it covers) is
  nearest (OpenCV's VoronoiSeamFinder): the cheap fallback, no image content involved.
* ``none``: no seams: every view keeps its whole mask (the blender then averages the overlaps).
* ``opencv_graphcut`` / ``opencv_dp``: OpenCV's cv2.detail GraphCutSeamFinder (COST_COLOR_GRAD) and
  DpSeamFinder (COLOR_GRAD) on the same views, for comparison (see ``seam_cost`` and docs/benchmarks/panorama.md,
  "Seam finders").

Pairs are processed in index order on the masks left by the earlier pairs, as OpenCV does.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from stitch.errors import ConfigError
from stitch.geometry import box_slices
from stitch.panorama.disagree import Disagreement, padded, pair_region
from stitch.panorama.views import LowView, overlapping_pairs

DEFAULT_SEAM = "graphcut"
#: Weight of the gradient difference in the pixel cost e.
DEFAULT_BETA = 1.0
#: Constant per-pixel cost c0 (keeps seams short where the images agree).
DEFAULT_C0 = 1.0
#: Weight of the misalignment term (cost per seam-canvas px of misalignment; 0 leaves it out).
DEFAULT_GAMMA = 20.0
#: Integer scale of the max-flow capacities (scipy's maximum_flow needs integers).
CAPACITY_SCALE = 16
#: Capacity of the edges that tie a pixel to its image (effectively infinite, well inside int32).
TIE_CAPACITY = 1 << 24
#: Overlaps with more pixels than this are cut in a band around the dynamic-programming seam.
DEFAULT_FULL_CUT_PIXELS = 12_000
#: Half-width (seam-canvas px) of that band.
DEFAULT_BAND_PX = 12


def pixel_cost(a: np.ndarray, b: np.ndarray, beta: float = DEFAULT_BETA, c0: float = DEFAULT_C0) -> np.ndarray:
    """e (h, w) float32 for two aligned (h, w, 3) uint8 crops (see the module docstring)."""
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    color = np.abs(fa - fb).sum(axis=2) / 3.0
    ga, gb = (cv2.cvtColor(x, cv2.COLOR_BGR2GRAY).astype(np.float32) for x in (a, b))
    grad = np.zeros_like(color)
    for dx, dy in ((1, 0), (0, 1)):
        grad += np.abs(cv2.Sobel(ga, cv2.CV_32F, dx, dy, ksize=3) - cv2.Sobel(gb, cv2.CV_32F, dx, dy, ksize=3)) / 8.0
    return color + beta * grad / 2.0 + c0


@dataclass(frozen=True)
class SeamCost:
    """The weights of the pixel cost e (beta, c0, gamma) and the misalignment the gamma term reads (or None)."""

    beta: float = DEFAULT_BETA
    c0: float = DEFAULT_C0
    gamma: float = 0.0
    disagreement: Disagreement | None = None

    def pair(self, views: Sequence[LowView], i: int, j: int, r: tuple[int, int, int, int]) -> np.ndarray:
        """e (h, w) float32 of views i, j over region r (x0, y0, x1, y1): pixel_cost plus gamma * misalignment."""
        e = pixel_cost(padded(views[i].image, views[i], r), padded(views[j].image, views[j], r), self.beta, self.c0)
        m = self.disagreement.misalign(i, j) if self.gamma > 0 and self.disagreement is not None else None
        if m is not None and m.shape == e.shape:
            e += np.float32(self.gamma) * m
        return e


def _touching(region: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Pixels of ``region`` with a 4-neighbour in ``other`` (both (h, w) bool)."""
    grown = cv2.dilate(other.astype(np.uint8), np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)) > 0
    return region & grown


def _source_side_scipy(tails: np.ndarray, heads: np.ndarray, caps: np.ndarray, n_nodes: int, src: int,
                       snk: int) -> np.ndarray:
    """(n_nodes,) bool: the nodes reachable from src in the residual graph of a maximum flow (scipy's Dinic)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow

    graph = csr_matrix((caps.astype(np.int32), (tails, heads)), shape=(n_nodes, n_nodes))
    graph.sum_duplicates()
    flow = maximum_flow(graph, src, snk, method="dinic").flow
    residual = (graph - flow).tocsr()
    residual.data = np.where(residual.data > 0, 1, 0).astype(np.int32)
    residual.eliminate_zeros()
    side = np.zeros(n_nodes, bool)
    side[breadth_first_order(residual, src, directed=True, return_predecessors=False)] = True
    return side


@functools.cache
def _ortools_max_flow() -> Any:
    """OR-Tools' max_flow module, imported on the first cut, or None when it does not import (tried once)."""
    try:
        from ortools.graph.python import max_flow
    except ImportError:
        return None
    return max_flow


def _source_side_ortools(tails: np.ndarray, heads: np.ndarray, caps: np.ndarray, n_nodes: int, src: int,
                         snk: int) -> np.ndarray:
    """The same set from OR-Tools' push-relabel max flow (the 'fast' extra): about 4x faster on seam graphs."""
    max_flow = _ortools_max_flow()
    if max_flow is None:  # installed but unusable (e.g. a clashing protobuf): scipy cuts the same pixels
        return _source_side_scipy(tails, heads, caps, n_nodes, src, snk)
    solver = max_flow.SimpleMaxFlow()
    solver.add_arcs_with_capacity(tails, heads, caps)
    if solver.solve(src, snk) != solver.OPTIMAL:
        return _source_side_scipy(tails, heads, caps, n_nodes, src, snk)
    side = np.zeros(n_nodes, bool)
    side[np.asarray(solver.get_source_side_min_cut(), np.int64)] = True
    return side


#: The minimum cut's source side (the smallest one: the nodes reachable from the source in the residual
#: graph, which every maximum flow gives alike, so both solvers cut the same pixels). OR-Tools when the
#: 'fast' extra is installed (pip install 'stitch-toolkit[fast]'), else scipy.
SOURCE_SIDE = _source_side_ortools if importlib.util.find_spec("ortools") else _source_side_scipy


def _graphcut_pair(cost: np.ndarray, overlap: np.ndarray, tie_i: np.ndarray, tie_j: np.ndarray) -> np.ndarray:
    """Bool (h, w): overlap pixels on image i's side of the minimum cut (the rest of the overlap goes to j)."""
    h, w = overlap.shape
    idx = -np.ones((h, w), np.int64)
    n = int(overlap.sum())
    idx[overlap] = np.arange(n)
    src, snk = n, n + 1
    rows, cols, caps = [], [], []
    for dy, dx in ((0, 1), (1, 0)):
        a = overlap[:h - dy, :w - dx] & overlap[dy:, dx:]
        ia, ib = idx[:h - dy, :w - dx][a], idx[dy:, dx:][a]
        c = (cost[:h - dy, :w - dx][a] + cost[dy:, dx:][a]) / 2.0
        c = np.clip(np.rint(c * CAPACITY_SCALE), 1, 1 << 16).astype(np.int64)
        rows += [ia, ib]
        cols += [ib, ia]
        caps += [c, c]
    ti, tj = idx[tie_i], idx[tie_j]
    rows += [np.full(len(ti), src), tj]
    cols += [ti, np.full(len(tj), snk)]
    caps += [np.full(len(ti), TIE_CAPACITY), np.full(len(tj), TIE_CAPACITY)]
    side = SOURCE_SIDE(np.concatenate(rows), np.concatenate(cols), np.concatenate(caps), n + 2, src, snk)
    out = np.zeros((h, w), bool)
    out[overlap] = side[:n]
    return out


def _dp_pair(cost: np.ndarray, overlap: np.ndarray, i_left: bool) -> np.ndarray:
    """Bool (h, w): overlap pixels left of the cheapest top-to-bottom path (image i's side when i_left)."""
    h, w = overlap.shape
    big = float(cost[overlap].max(initial=1.0)) * 4.0 + 10.0
    e = np.where(overlap, cost, big).astype(np.float64)
    acc = np.empty((h, w))
    back = np.zeros((h, w), np.int64)
    acc[0] = e[0]
    cols = np.arange(w)
    for r in range(1, h):
        prev = acc[r - 1]
        left = np.concatenate([[np.inf], prev[:-1]])
        right = np.concatenate([prev[1:], [np.inf]])
        stack = np.stack([left, prev, right])
        k = np.argmin(stack, axis=0)
        acc[r] = e[r] + stack[k, cols]
        back[r] = cols + k - 1
    path = np.empty(h, np.int64)
    path[-1] = int(np.argmin(acc[-1]))
    for r in range(h - 1, 0, -1):
        path[r - 1] = back[r, path[r]]
    left_of = cols[None, :] < path[:, None]
    side = left_of if i_left else ~left_of
    return overlap & side


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()]) if len(xs) else np.array([mask.shape[1] / 2.0, mask.shape[0] / 2.0])


def _dp_split(views: Sequence[LowView], i: int, j: int, cost: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """Image i's side of the dynamic-programming seam; the path runs across the line joining the images."""
    ci = _centroid(views[i].mask)[::-1] + (views[i].offset[1], views[i].offset[0])
    cj = _centroid(views[j].mask)[::-1] + (views[j].offset[1], views[j].offset[0])
    dy, dx = cj - ci
    if abs(dx) >= abs(dy):
        return _dp_pair(cost, overlap, i_left=dx > 0)
    return _dp_pair(cost.T, overlap.T, i_left=dy > 0).T


def _banded_cut(cost: np.ndarray, overlap: np.ndarray, only_i: np.ndarray, only_j: np.ndarray,
                first: np.ndarray, band_px: int = DEFAULT_BAND_PX) -> np.ndarray:
    """The minimum cut restricted to a band of +-band_px around the seam of ``first`` (image i's side).

    Outside the band the pixels keep their side of ``first``; band pixels next to them (or to an image's own
    part) are tied to that side. Same cost, a fraction of the nodes of a cut over the whole overlap.
    """
    edge = overlap & (first != cv2.erode(first.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)) & first
    edge |= overlap & ~first & (cv2.dilate(first.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    if not edge.any():
        return first
    dist = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, 3)
    band = overlap & (dist <= band_px)
    side_i = (overlap & ~band & first) | only_i
    side_j = (overlap & ~band & ~first) | only_j
    keep = _graphcut_pair(cost, band, _touching(band, side_i), _touching(band, side_j))
    return (overlap & ~band & first) | keep


def _voronoi_keep(views: Sequence[LowView], i: int, j: int, r: tuple[int, int, int, int], overlap: np.ndarray,
                  only_i: np.ndarray, only_j: np.ndarray, cost: SeamCost) -> np.ndarray | None:
    """``voronoi``: overlap pixels nearer to image i's own part (a (h, w) bool 'keep in i' mask)."""
    return _voronoi_pair(overlap, only_i, only_j)


def _dp_keep(views: Sequence[LowView], i: int, j: int, r: tuple[int, int, int, int], overlap: np.ndarray,
             only_i: np.ndarray, only_j: np.ndarray, cost: SeamCost) -> np.ndarray | None:
    """``dp``: the dynamic-programming seam on the pixel cost."""
    return _dp_split(views, i, j, cost.pair(views, i, j, r), overlap)


def _graphcut_keep(views: Sequence[LowView], i: int, j: int, r: tuple[int, int, int, int], overlap: np.ndarray,
                   only_i: np.ndarray, only_j: np.ndarray, cost: SeamCost) -> np.ndarray | None:
    """``graphcut``: a minimum cut, in a band around the DP seam when the overlap is large (None: leave it)."""
    e = cost.pair(views, i, j, r)
    tie_i, tie_j = _touching(overlap, only_i), _touching(overlap, only_j)
    if not tie_i.any() and not tie_j.any():
        return None  # an island of overlap: leave it to both (the blender averages it)
    if overlap.sum() <= DEFAULT_FULL_CUT_PIXELS:
        return _graphcut_pair(e, overlap, tie_i, tie_j)
    return _banded_cut(e, overlap, only_i, only_j, _dp_split(views, i, j, e, overlap))


PairCut = Callable[..., "np.ndarray | None"]


def _pairwise(views: Sequence[LowView], cut: PairCut, cost: SeamCost) -> list[np.ndarray]:
    """Cut every overlapping pair in index order with ``cut``; returns the seam masks.

    Each pair is cut on the intersection of the two boxes grown by one pixel, so the pixels next to each
    image's own part (which lies outside the intersection) are seen.
    """
    masks = [v.mask.copy() for v in views]
    for i, j, inter in overlapping_pairs(views):
        r = pair_region(inter)
        mi, mj = padded(masks[i], views[i], r), padded(masks[j], views[j], r)
        overlap = mi & mj
        if overlap.sum() < 2:
            continue
        keep_i = cut(views, i, j, r, overlap, mi & ~mj, mj & ~mi, cost)
        if keep_i is None:
            continue
        inner = (slice(1, -1), slice(1, -1))
        si, sj = box_slices(inter, views[i].offset), box_slices(inter, views[j].offset)
        masks[i][si] &= ~(overlap & ~keep_i)[inner]
        masks[j][sj] &= ~(overlap & keep_i)[inner]
    return masks


def _voronoi_pair(overlap: np.ndarray, only_i: np.ndarray, only_j: np.ndarray) -> np.ndarray:
    """Overlap pixels nearer to image i's own part than to image j's (ties: i)."""
    big = float(overlap.shape[0] + overlap.shape[1])
    di = cv2.distanceTransform((~only_i).astype(np.uint8), cv2.DIST_L2, 3) if only_i.any() else np.full(overlap.shape, big)
    dj = cv2.distanceTransform((~only_j).astype(np.uint8), cv2.DIST_L2, 3) if only_j.any() else np.full(overlap.shape, big)
    return overlap & (di <= dj)


def _opencv(views: Sequence[LowView], method: str) -> list[np.ndarray]:
    finder = (cv2.detail_GraphCutSeamFinder("COST_COLOR_GRAD") if method == "opencv_graphcut"
              else cv2.detail_DpSeamFinder("COLOR_GRAD"))
    imgs = [v.image.astype(np.float32) for v in views]
    masks = [v.mask.astype(np.uint8) * 255 for v in views]
    out = finder.find(imgs, [tuple(int(c) for c in v.offset) for v in views], masks)
    return [np.asarray(cv2.UMat.get(m) if isinstance(m, cv2.UMat) else m) > 0 for m in out]


Finder = Callable[[Sequence[LowView], SeamCost], "list[np.ndarray]"]


def _opencv_finder(method: str) -> Finder:
    """cv2.detail's finder ``method`` ('opencv_graphcut' / 'opencv_dp'), falling back to ours when it fails."""
    def find(views: Sequence[LowView], cost: SeamCost) -> list[np.ndarray]:
        try:
            return _opencv(views, method)
        except cv2.error as exc:  # e.g. OpenCV 5's DpSeamFinder asserts on some rectangular overlaps
            own = method.removeprefix("opencv_")
            warnings.warn(f"seam={method!r} failed in OpenCV ({' '.join(str(exc).split())[-120:]}); "
                          f"using seam='{own}' instead", stacklevel=3)
            return SEAM_FINDERS[own](views, cost)
    return find


def _pairwise_finder(cut: PairCut) -> Finder:
    """A seam finder that cuts every overlapping pair with ``cut``."""
    return lambda views, cost: _pairwise(views, cut, cost)


#: The seam finders: name -> finder(views, SeamCost) -> seam masks (OpenCV's ignore the cost's weights). The CLI,
#: the API and the benches read it.
SEAM_FINDERS: dict[str, Finder] = {
    "graphcut": _pairwise_finder(_graphcut_keep),
    "dp": _pairwise_finder(_dp_keep),
    "voronoi": _pairwise_finder(_voronoi_keep),
    "none": lambda views, cost: [v.mask.copy() for v in views],
    "opencv_graphcut": _opencv_finder("opencv_graphcut"),
    "opencv_dp": _opencv_finder("opencv_dp"),
}
SEAM_CHOICES = tuple(SEAM_FINDERS)


def check_gamma(gamma: float) -> None:
    """ConfigError unless ``gamma`` (the misalignment weight) is a finite number >= 0."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= gamma < float("inf"):
        raise ConfigError(f"seam_misalign_weight={gamma!r}: must be a number >= 0 (0: no misalignment term)")


def find_seams(views: Sequence[LowView], method: str = DEFAULT_SEAM, beta: float = DEFAULT_BETA,
               c0: float = DEFAULT_C0, gamma: float = 0.0,
               disagreement: Disagreement | None = None) -> list[np.ndarray]:
    """Seam masks (h_k, w_k) bool, one per view (see the module docstring); the views are not modified.

    gamma: weight of the misalignment term, read from ``disagreement`` (stitch.panorama.disagree) when given."""
    if method not in SEAM_FINDERS:
        raise ConfigError(f"seam={method!r}: choose one of {', '.join(SEAM_CHOICES)}")
    if beta < 0 or c0 < 0:
        raise ConfigError(f"beta={beta}, c0={c0}: must be >= 0")
    check_gamma(gamma)
    if len(views) < 2:
        return [v.mask.copy() for v in views]
    return SEAM_FINDERS[method](views, SeamCost(beta, c0, float(gamma), disagreement))


def seam_cost(views: Sequence[LowView], masks: Sequence[np.ndarray], beta: float = DEFAULT_BETA,
              c0: float = 0.0) -> float:
    """Total pixel cost e along the seams of ``masks``: sum over 4-neighbour pairs (p in mask i, q in mask j,
    both covered by i and j) of (e_ij(p) + e_ij(q)) / 2. Lower is better; compares seam finders."""
    total = 0.0
    for i, j, r in overlapping_pairs(views):
        si, sj = box_slices(r, views[i].offset), box_slices(r, views[j].offset)
        both = views[i].mask[si] & views[j].mask[sj]
        if not both.any():
            continue
        cost = pixel_cost(views[i].image[si], views[j].image[sj], beta, c0)
        li, lj = masks[i][si] & both, masks[j][sj] & both
        for dy, dx in ((0, 1), (1, 0)):
            h, w = both.shape
            a = slice(0, h - dy), slice(0, w - dx)
            b = slice(dy, h), slice(dx, w)
            cut = (li[a] & lj[b]) | (lj[a] & li[b])
            total += float(((cost[a] + cost[b]) / 2.0)[cut].sum())
    return total
