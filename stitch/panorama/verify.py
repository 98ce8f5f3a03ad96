"""Verification of the view graph: pair matches that disagree with the rest are removed before and after the model.

Repeated structure (look-alike buildings, a wall of identical windows) makes pairs that match strongly and
score well, but place one photo on top of another copy of the same thing. Such an edge disagrees with the
chain of its neighbours: going round a cycle of the graph through it does not come back to the start.

``verify_edges`` (before the camera model) finds the placement of the images that the most pair evidence agrees
with, and keeps only the edges that agree with it:

1. each edge gives a relative placement (a homography H_ij, or for a rotating camera the rotation fitted to its
   inlier rays, camera.relative_rotation); an image placement G_k maps its pixels to world rays (rotation
   model: R_k^T K_k^-1) or to the reference plane (homographies), and edge (i, j) agrees with a placement when
   the median transfer error of its inliers under G_j^-1 G_i is at most ``tolerance`` px at the working
   resolution;
2. the placement grows from a seed image one image at a time, always adding the image whose placement through
   one edge is confirmed by the most other edges to the images already placed (the pair quality scores weight
   that evidence), less ``CONFLICT_COST`` for each placed image it would lie on without a pair match between
   them. A look-alike match is confirmed by few others, so the chains of true neighbours, which confirm each
   other round every short cycle, are placed first, and the look-alike edge is then found to disagree with
   them. A placement is judged by the same measure over the whole graph (``Placer.judge``: the score of the
   agreeing edges, less the conflicts). The growth runs from up to ``DEFAULT_SEEDS`` seeds (the images with
   the most evidence first), then again through the strongest edges the best placement rejects
   (``IMPROVE_EDGES``), then from ``DEFAULT_RESTARTS`` random seeds with shaken evidence; the best wins. A
   growth is given up as soon as the edges found to disagree between its placed images leave it less evidence
   than the best so far holds (the judge could only count less), so it changes nothing but the time;
3. edges that disagree with it are removed, each with its transfer error as the reason.

For a rotating camera each edge's evidence is its score times how well its inliers fit a rotation
(``rotation_evidence``): a look-alike stands elsewhere in the scene, so a match between two copies pairs rays that no
rotation maps onto each other as closely as a true match's; an edge far above the set's typical rotation residual
weighs less in the growth and the objective.

Each connected part of the graph is verified on its own. The pipeline runs this only when the camera model
solved on every pair misses some of them (stitch.panorama.pipeline.Solved.agrees): a consistent graph is
kept whole.

``robust_edges`` (after the model) removes, one at a time and solving again, an edge whose residual is far
above the rest (``EDGE_FACTOR`` times the median edge, and above ``EDGE_MIN_PX`` px at the working
resolution), as Hugin's cpclean does with control points. Both keep every edge on a consistent graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from stitch.geometry import frame_points, transfer_errors
from stitch.panorama.camera import relative_rotation
from stitch.panorama.viewgraph import PairEdge, components_of

#: An edge agrees with a placement when its inliers' median transfer error is at most this (px, working
#: resolution). Wrong matches of repeated structure miss by a copy's spacing, tens to hundreds of px.
DEFAULT_TOLERANCE_PX = 12.0
#: Seeds the placement grows from at most (the images with the largest total edge score first).
DEFAULT_SEEDS = 16
#: Random restarts of the growth (seed image and shaken evidence from a generator seeded by ``seed_rng``) when
#: the best placement so far rejects an edge.
DEFAULT_RESTARTS = 8
#: Inliers per edge used to measure its agreement (evenly spaced).
CHECK_POINTS = 48
#: robust_edges: an edge is removed when its median residual exceeds this multiple of the median edge's and
#: this many px at the working resolution.
EDGE_FACTOR = 4.0
#: Two images that the placement lays on top of each other (``overlaps``) without a pair match between them
#: cost as much as one agreeing edge of this score: repeated structure that glues a turn onto itself
#: piles different views on each other, which the true placement does not.
CONFLICT_COST = 1.0
#: After the seeds, the placement grows again from each of the IMPROVE_EDGES strongest edges the best one
#: rejects (that edge placed first), for at most IMPROVE_ROUNDS rounds while the objective rises: a chain of
#: true neighbours that the greedy growth glued wrongly at one place gets its chance from that place.
IMPROVE_EDGES = 8
IMPROVE_ROUNDS = 4
#: ``overlaps``: the centre of one image must land this far inside the other's frame (fraction of each side).
OVERLAP_MARGIN = 0.0
#: ``Placer.grow`` stops a placement that cannot reach the best so far counting only the edges that miss the tolerance
#: by more than this (px): the edge errors of the growth and of ``Placer.judge`` are the same computation, and the
#: slack keeps the bound an upper one even if they differed in the last bits.
BOUND_SLACK_PX = 1e-6
EDGE_MIN_PX = 6.0
#: ``weak_bridges``: a pair match that alone links two groups of at least BRIDGE_MIN_SIDE photos each (a bridge of
#: the view graph) has no cycle that could show it wrong, and a wrong one misplaces a whole group; it is kept only
#: with a quality score of at least BRIDGE_MIN_SCORE: on a rendered 500-view sweep the wrong pair matches scored
#: 0.51-0.61 and the one wrong bridge 0.51, the true bridges 0.67-0.93; every truly overlapping pair of the
#: real sets measured for DEFAULT_MIN_PAIR_SCORE scored 0.675 or more (docs/measurements.md, "placement and verify").
BRIDGE_MIN_SCORE = 0.65
BRIDGE_MIN_SIDE = 2
#: ``rotation_evidence``: an edge keeps its whole score up to RESIDUAL_FACTOR times the median edge's rotation residual
#: (at least RESIDUAL_FLOOR_PX, working px), and (bound / residual)^2 of it above. On a rendered 200-view world of
#: look-alike scenes the true edges fit a rotation within 0.20 px (p95), the look-alike ones at 0.21-5.35 px (p5-p95),
#: median 1.15 (docs/measurements.md, "placement and verify").
RESIDUAL_FACTOR = 2.0
RESIDUAL_FLOOR_PX = 0.25


@dataclass(frozen=True)
class RejectedEdge:
    """A pair match removed from the graph: its edge, its error (px, working resolution) and why."""

    edge: PairEdge
    error_px: float
    reason: str


def placement_step(G_a: np.ndarray, e: PairEdge, a: int, K: dict[int, np.ndarray] | None,
                   R_ab: np.ndarray | None = None) -> np.ndarray:
    """G_b (3, 3) of the other image b of edge ``e`` from image a's placement G_a (pixels -> rays or plane).

    K: intrinsics (3, 3) per image for a rotating camera (G = R^T K^-1), None for homographies (G = H to a plane).
    R_ab: the edge's relative rotation a -> b when already known (default: camera.relative_rotation).
    """
    b = e.other(a)
    if K is None:
        return G_a @ np.linalg.inv(e.H_from(a))
    R_a = (G_a @ K[a]).T
    R_b = (relative_rotation(e, a, K[a], K[b]) if R_ab is None else R_ab) @ R_a
    return R_b.T @ np.linalg.inv(K[b])


def check_points(e: PairEdge, points: int = CHECK_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """The (k, 2) inliers of e, evenly spaced, at most ``points`` of them, that ``edge_error`` measures on."""
    n = len(e.pts_i)
    idx = np.unique(np.linspace(0, n - 1, min(n, points)).round().astype(int))
    return e.pts_i[idx], e.pts_j[idx]


def edge_error(e: PairEdge, G_i: np.ndarray, G_j: np.ndarray, scale: float, points: int = CHECK_POINTS) -> float:
    """Median symmetric transfer error (px, times ``scale``) of e's inliers under the placements G_i, G_j (3, 3)."""
    if len(e.pts_i) == 0:
        return float("inf")
    H = np.linalg.solve(G_j, G_i)
    return float(np.median(transfer_errors(H, *check_points(e, points)))) * scale


def edge_errors_many(edges: Sequence[PairEdge], G_i: np.ndarray, G_j: np.ndarray, scales: np.ndarray,
                     points: int = CHECK_POINTS, pts: Sequence[tuple[np.ndarray, np.ndarray]] | None = None
                     ) -> np.ndarray:
    """``edge_error`` of m edges at once (m,): placements G_i, G_j (m, 3, 3), scales (m,); the edges with the same
    number of check points go through one batched solve and ``transfer_errors`` (a placement's every edge).
    ``pts``: the edges' ``check_points`` when already known."""
    out = np.empty(len(edges))
    pts = [check_points(e, points) for e in edges] if pts is None else pts
    sizes = [len(a) for a, _ in pts]
    counts = sorted(set(sizes))
    for k in counts:
        at = np.arange(len(sizes)) if len(counts) == 1 else np.flatnonzero(np.asarray(sizes) == k)
        if k == 0:
            out[at] = np.inf
            continue
        src = np.stack([pts[m][0] for m in at])
        dst = np.stack([pts[m][1] for m in at])
        try:
            H = np.linalg.solve(G_j[at], G_i[at])
        except np.linalg.LinAlgError:  # a singular placement: edge by edge, as edge_error does it
            out[at] = [edge_error(edges[m], G_i[m], G_j[m], scales[m], points) for m in at]
            continue
        out[at] = _median_rows(transfer_errors(H, src, dst)) * scales[at]
    return out


def _median_rows(x: np.ndarray) -> np.ndarray:
    """``np.median(x, axis=1)`` of (m, k) values without NaN, value for value (the middle one, or the mean of the
    middle two)."""
    k = x.shape[1]
    half = k // 2
    if k % 2:
        return np.partition(x, half, axis=1)[:, half]
    part = np.partition(x, [half - 1, half], axis=1)
    return (part[:, half - 1] + part[:, half]) / 2.0


def overlaps_many(G_a: np.ndarray, G_b: np.ndarray, size_a: np.ndarray, size_b: np.ndarray,
                  margin: float = OVERLAP_MARGIN) -> np.ndarray:
    """(m,) bool, per pair: image b's centre, placed by G_b, lands in front of image a and inside its central
    part (the frame less ``margin`` of each side), placed by G_a: the two would overlap by about half of b or
    more. G_a, G_b (m, 3, 3) or (3, 3); sizes (m, 2) or (2,) (w, h)."""
    m = max(len(x) if np.ndim(x) == 3 else 1 for x in (G_a, G_b))
    G_a, G_b = (np.broadcast_to(np.asarray(x, np.float64), (m, 3, 3)) for x in (G_a, G_b))
    s_a, s_b = (np.broadcast_to(np.asarray(x, np.float64), (m, 2)) for x in (size_a, size_b))
    c_a = np.concatenate([(s_a - 1) / 2.0, np.ones((m, 1))], 1)
    c_b = np.concatenate([(s_b - 1) / 2.0, np.ones((m, 1))], 1)
    ray_a, ray_b = np.einsum("mij,mj->mi", G_a, c_a), np.einsum("mij,mj->mi", G_b, c_b)
    p = np.linalg.solve(G_a, ray_b[..., None])[..., 0]
    front = (p[:, 2] > 1e-12) & (np.einsum("mi,mi->m", ray_a, ray_b) > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = p[:, 0] / p[:, 2], p[:, 1] / p[:, 2]
    w, h = s_a[:, 0], s_a[:, 1]
    return front & (margin * w <= x) & (x <= (1 - margin) * w) & (margin * h <= y) & (y <= (1 - margin) * h)


def frame_cones(G: np.ndarray, sizes: np.ndarray | None = None, pts: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(unit centre rays (m, 3), cos of the widest angle between a frame's corner rays and its centre ray (m,)) of
    frames (w, h) ``sizes`` (m, 2) placed by G (m, 3, 3); the cos is -2 where that angle reaches 90 degrees. An
    image's centre lies in another's frame (``overlaps_many``) only within that angle of its centre ray: the frame's
    rays form a convex cone inside the circular one through its corners. ``pts``: the frames' ``frame_points``
    when already known (instead of ``sizes``)."""
    G = np.asarray(G, np.float64).reshape(-1, 3, 3)
    pts = frame_points(sizes) if pts is None else pts
    rays = pts @ np.swapaxes(G, 1, 2)  # (m, 5, 3): the centre, then the corners
    with np.errstate(divide="ignore", invalid="ignore"):
        rays = rays / np.linalg.norm(rays, axis=2, keepdims=True)
        cos = np.einsum("mki,mi->mk", rays[:, 1:], rays[:, 0]).min(axis=1)
    return rays[:, 0], np.where(cos > 0, cos, -2.0)


def near_frames(dir_a: np.ndarray, cos_a: np.ndarray, dir_b: np.ndarray, cos_b: np.ndarray) -> np.ndarray:
    """Pairs (broadcast) whose centre rays (``frame_cones``) are close enough for either centre to lie in the other's
    frame, with a slack for rounding; True where a ray is not finite (the exact test decides)."""
    dot = np.sum(dir_a * dir_b, axis=-1)
    return ~(dot < np.minimum(cos_a, cos_b) - 1e-6)


def rotation_residual(e: PairEdge, K: dict[int, np.ndarray], scale: dict[int, float]) -> float:
    """Median transfer error (px, working resolution) of e's inliers under its own relative rotation
    (camera.relative_rotation at the intrinsics K (3, 3) per image)."""
    if len(e.pts_i) == 0:
        return float("inf")
    H = K[e.j] @ relative_rotation(e, e.i, K[e.i], K[e.j]) @ np.linalg.inv(K[e.i])
    return float(np.median(transfer_errors(H, e.pts_i, e.pts_j))) * 0.5 * (scale[e.i] + scale[e.j])


def rotation_evidence(edges: Sequence[PairEdge], K: dict[int, np.ndarray], scale: dict[int, float],
                      factor: float = RESIDUAL_FACTOR, floor_px: float = RESIDUAL_FLOOR_PX) -> dict[int, float]:
    """Evidence per edge (by ``id``): its score, times (bound / r)^2 where its rotation residual r
    (``rotation_residual``) exceeds bound = ``factor`` times the median edge's (at least ``floor_px``)."""
    res = np.array([rotation_residual(e, K, scale) for e in edges])
    finite = res[np.isfinite(res)]
    bound = factor * max(float(np.median(finite)) if len(finite) else 0.0, floor_px)
    keep = np.minimum(1.0, (bound / np.maximum(res, 1e-12)) ** 2)
    return {id(e): float(e.score * k) for e, k in zip(edges, keep)}


@dataclass
class Placer:
    """What placements are judged on: the graph, intrinsics (or None), scales and sizes per image, tolerance, and
    each edge's evidence by ``id`` (default: its score)."""

    nodes: Sequence[int]
    edges: Sequence[PairEdge]
    K: dict[int, np.ndarray] | None
    scale: dict[int, float]
    sizes: dict[int, tuple[int, int]]
    tolerance: float
    evidence: dict[int, float] | None = None

    def __post_init__(self) -> None:
        self.adj: dict[int, list[PairEdge]] = {k: [] for k in self.nodes}
        for e in self.edges:
            self.adj[e.i].append(e)
            self.adj[e.j].append(e)
        self.between: dict[tuple[int, int], PairEdge] = {}  # (a, b) -> the first edge of adj[a] to b
        for a, es in self.adj.items():
            for e in es:
                self.between.setdefault((a, e.other(a)), e)
        self.index = {k: p for p, k in enumerate(self.nodes)}  # node -> position in the arrays below
        self.link_mat = np.zeros((len(self.nodes), len(self.nodes)), bool)  # a pair match between, by position
        for e in self.edges:
            if e.i in self.index and e.j in self.index:
                self.link_mat[self.index[e.i], self.index[e.j]] = self.link_mat[self.index[e.j], self.index[e.i]] = True
        self.size_arr = np.array([self.sizes[k] for k in self.nodes], np.float64).reshape(-1, 2)
        self.frame_pts = frame_points(self.size_arr)  # (n, 5, 3), by position
        self._rotations: dict[int, np.ndarray] = {}  # edge id -> R_ij (i -> j), fitted once
        self._checks: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # edge id -> check_points, taken once
        if self.evidence is None:
            self.evidence = {id(e): e.score for e in self.edges}

    def step(self, G_a: np.ndarray, e: PairEdge, a: int) -> np.ndarray:
        """placement_step through edge e from image a, the edge's relative rotation fitted once per Placer."""
        if self.K is None:
            return placement_step(G_a, e, a, None)
        R = self._rotations.get(id(e))
        if R is None:
            R = self._rotations[id(e)] = relative_rotation(e, e.i, self.K[e.i], self.K[e.j])
        return placement_step(G_a, e, a, self.K, R if a == e.i else R.T)

    def errors_many(self, checks: Sequence[tuple[PairEdge, int, np.ndarray, np.ndarray]]) -> np.ndarray:
        """(k,) errors (px, working resolution) of each edge f, between image a (placed by G_a) and its other image
        (by G_b): one ``edge_errors_many`` call on the edges' check points, taken once per Placer (the errors of
        ``edge_error``), for all (f, a, G_a, G_b) of ``checks``. An edge agrees when its error <= ``tolerance``."""
        if not checks:
            return np.zeros(0)
        fs = [f for f, _, _, _ in checks]
        G_i = np.array([G_a if a == f.i else G_b for f, a, G_a, G_b in checks]).reshape(-1, 3, 3)
        G_j = np.array([G_b if a == f.i else G_a for f, a, G_a, G_b in checks]).reshape(-1, 3, 3)
        scales = np.array([0.5 * (self.scale[f.i] + self.scale[f.j]) for f in fs])
        return edge_errors_many(fs, G_i, G_j, scales, pts=[self.points(f) for f in fs])

    def points(self, e: PairEdge) -> tuple[np.ndarray, np.ndarray]:
        """``check_points`` of edge e, taken once per Placer."""
        got = self._checks.get(id(e))
        if got is None:
            got = self._checks[id(e)] = check_points(e)
        return got

    def conflicts(self, b: int, G_b: np.ndarray, G: dict[int, np.ndarray]) -> int:
        """How many images of G image b, placed by G_b, would clash with: lie on each other (``overlaps`` either
        way, ``overlaps_many``) without a pair match; all of them at once."""
        placed = list(G)
        at = np.array([self.index[c] for c in placed], np.int64)
        Gs = np.array([G[c] for c in placed]).reshape(-1, 3, 3)
        return self.conflicts_at(b, G_b, at, Gs, *frame_cones(Gs, pts=self.frame_pts[at].reshape(-1, 5, 3)))

    def cone(self, b: int, G_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``frame_cones`` of image b placed by G_b: ((1, 3), (1,))."""
        return frame_cones(G_b[None], pts=self.frame_pts[self.index[b]][None])

    def conflicts_at(self, b: int, G_b: np.ndarray, at: np.ndarray, Gs: np.ndarray, dirs: np.ndarray,
                     cos: np.ndarray, cone: tuple[np.ndarray, np.ndarray] | None = None) -> int:
        """``conflicts`` against the placed images at positions ``at`` (m,) of ``nodes``, placed by Gs (m, 3, 3),
        with their ``frame_cones`` (dirs, cos): only the images near b's frame (its ``cone`` when known) are tested
        exactly."""
        p = self.index[b]
        dir_b, cos_b = self.cone(b, G_b) if cone is None else cone
        free = (at != p) & ~self.link_mat[p, at] & near_frames(dirs, cos, dir_b, cos_b)
        if not free.any():
            return 0
        G_c, s_c = Gs[free], self.size_arr[at[free]]
        m = len(G_c)
        G_b, s_b = np.broadcast_to(G_b, (m, 3, 3)), np.broadcast_to(self.size_arr[p], (m, 2))
        both = overlaps_many(np.concatenate([G_c, G_b]), np.concatenate([G_b, G_c]),  # either way, in one call
                             np.concatenate([s_c, s_b]), np.concatenate([s_b, s_c]))
        return int(np.count_nonzero(both[:m] | both[m:]))

    def grow(self, seed: int, first: PairEdge | None = None, weight: dict[int, float] | None = None,
             bar: float | None = None) -> dict[int, np.ndarray] | None:
        """Placements G (3, 3) of the images reachable from ``seed``, the best-confirmed first (step 2); ``first``,
        an edge of ``seed``, places its other image before anything else; ``weight`` (by edge id) replaces the
        edges' evidence as what orders the growth. ``bar``: None (no placement) as soon as the placement cannot
        be judged at ``bar`` or above: the evidence of every edge, less that of the edges between placed images
        found to disagree (by more than BOUND_SLACK_PX), is below it (``judge`` can only count less)."""
        w = weight or self.evidence
        ev = self.evidence
        bound = sum(ev.values())
        G = {seed: np.eye(3) if self.K is None else np.linalg.inv(self.K[seed])}
        if first is not None:
            G[first.other(seed)] = self.step(G[seed], first, seed)
        at = np.zeros(len(self.nodes), np.int64)  # the placed images' positions, placements and frame_cones, in order
        Gs = np.zeros((len(self.nodes), 3, 3))
        dirs, cos = np.zeros((len(self.nodes), 3)), np.zeros(len(self.nodes))

        def place(m: int, k: int, G_k: np.ndarray, cone: tuple[np.ndarray, np.ndarray] | None = None) -> None:
            at[m], Gs[m] = self.index[k], G_k
            d, c = self.cone(k, G_k) if cone is None else cone
            dirs[m], cos[m] = d[0], c[0]

        def off(err: float) -> bool:  # surely judged to disagree
            return err > self.tolerance + BOUND_SLACK_PX

        for m, k in enumerate(G):
            place(m, k, G[k])
        # (edge id, new image) -> [G_new, support, conflicts known, score, evidence of its disagreeing edges,
        # its frame cone or None]
        cands: dict[tuple[int, int], list] = {}

        def add_candidates(a: int) -> None:
            new = [(e, b, self.step(G[a], e, a)) for e in self.adj[a] if (b := e.other(a)) not in G]
            checks = [(k, f, c) for k, (e, b, _) in enumerate(new) for f in self.adj[b]
                      if f is not e and (c := f.other(b)) in G]
            errs = self.errors_many([(f, c, G[c], new[k][2]) for k, f, c in checks])
            confirmed: list[list[float]] = [[] for _ in new]
            lost = [0.0] * len(new)
            for (k, f, _), err in zip(checks, errs):
                if err <= self.tolerance:
                    confirmed[k].append(w[id(f)])
                elif off(err):
                    lost[k] += ev[id(f)]
            for (e, b, Gb), ws, gone in zip(new, confirmed, lost):
                cands[(id(e), b)] = [Gb, w[id(e)] + sum(ws), 0, w[id(e)], gone, None]

        for a in list(G):
            add_candidates(a)
        while cands:
            while True:  # conflicts only grow as images are placed: re-count the leader's until it stays ahead
                key, cand = max(cands.items(), key=lambda kv: (kv[1][1] - CONFLICT_COST * kv[1][2], kv[1][3]))
                m = len(G)
                if cand[5] is None:
                    cand[5] = self.cone(key[1], cand[0])
                n = self.conflicts_at(key[1], cand[0], at[:m], Gs[:m], dirs[:m], cos[:m], cand[5])
                if n == cand[2]:
                    break
                cand[2] = n
            b = key[1]
            bound -= cand[4]
            if bar is not None and bound < bar:
                return None
            place(len(G), b, cand[0], cand[5])
            G[b] = cand[0]
            for k in [k for k in cands if k[1] == b]:
                del cands[k]
            pending = [(c, f) for k, c in cands.items()  # the new image confirms (or not) the pending ones next to it
                       if (f := self.between.get((b, k[1]))) is not None and id(f) != k[0]]
            for (c, f), err in zip(pending, self.errors_many([(f, b, G[b], c[0]) for c, f in pending])):
                if err <= self.tolerance:
                    c[1] += w[id(f)]
                elif off(err):
                    c[4] += ev[id(f)]
            add_candidates(b)
        return G

    def judge(self, G: dict[int, np.ndarray]) -> tuple[float, list[float]]:
        """(objective, error per edge): the evidence of the agreeing edges less CONFLICT_COST per overlapping
        pair of images without a match; errors (px, working resolution) are 0 for edges outside the placement."""
        inside = [e for e in self.edges if e.i in G and e.j in G]
        many = edge_errors_many(inside, np.array([G[e.i] for e in inside]).reshape(-1, 3, 3),
                                np.array([G[e.j] for e in inside]).reshape(-1, 3, 3),
                                np.array([0.5 * (self.scale[e.i] + self.scale[e.j]) for e in inside]),
                                pts=[self.points(e) for e in inside])
        at = {id(e): float(x) for e, x in zip(inside, many)}
        errs = [at.get(id(e), 0.0) for e in self.edges]
        total = sum(self.evidence[id(e)] for e, x in zip(self.edges, errs) if x <= self.tolerance)
        return total - CONFLICT_COST * self.clashes(G), errs

    def clashes(self, G: dict[int, np.ndarray], chunk: int = 65536) -> int:
        """How many pairs of images of G clash (``conflicts``: they lie on each other without a pair match), every
        pair tested in batches of ``chunk`` (one ``overlaps_many`` call per batch, not one per image)."""
        placed = sorted(G)
        first, second = np.triu_indices(len(placed), 1)
        pos = np.array([self.index[k] for k in placed], np.int64)
        Gs = np.stack([G[k] for k in placed]) if placed else np.zeros((0, 3, 3))
        sizes = self.size_arr[pos].reshape(-1, 2)
        dirs, cos = frame_cones(Gs, sizes)
        free = ~self.link_mat[pos[first], pos[second]] & near_frames(dirs[first], cos[first], dirs[second], cos[second])
        first, second = first[free], second[free]
        count = 0
        for lo in range(0, len(first), chunk):
            a, b = first[lo:lo + chunk], second[lo:lo + chunk]
            count += int(np.count_nonzero(overlaps_many(Gs[b], Gs[a], sizes[b], sizes[a])
                                          | overlaps_many(Gs[a], Gs[b], sizes[a], sizes[b])))
        return count


def verify_edges(nodes: Sequence[int], edges: Sequence[PairEdge], K: dict[int, np.ndarray] | None,
                 scale: dict[int, float], sizes: dict[int, tuple[int, int]], tolerance: float = DEFAULT_TOLERANCE_PX,
                 seeds: int = DEFAULT_SEEDS, restarts: int = DEFAULT_RESTARTS, seed_rng: int = 0,
                 evidence: dict[int, float] | None = None, bar: float | None = None
                 ) -> tuple[list[PairEdge], list[RejectedEdge], float] | None:
    """(kept, rejected, objective): the edges that agree with the best-supported placement (module docstring,
    1-3), and that placement's objective (``Placer.judge``).

    ``bar``: an objective to beat (another try's): growths that cannot reach it are given up, and None is
    returned when no seed's can; without it, every growth that could beat the best so far runs to its end.

    K: intrinsics (3, 3) per node for a rotating camera (relative rotations), or None (homographies); scale:
    working px per full-resolution px, and sizes (w, h) px, per node (errors and ``tolerance`` are at the working
    resolution); evidence: per edge (by ``id``, e.g. ``rotation_evidence``), default its score.
    """
    evidence = evidence or {id(e): e.score for e in edges}
    kept: list[PairEdge] = []
    rejected: list[RejectedEdge] = []
    objective = 0.0
    upper = sum(evidence[id(e)] for e in edges)  # no placement of any part is judged above its edges' evidence
    for part, sub in connected_parts(nodes, edges):
        if len(sub) < 3:
            kept += sub
            objective += sum(evidence[id(e)] for e in sub)
            continue
        placer = Placer(part, sub, K, scale, sizes, tolerance, {id(e): evidence[id(e)] for e in sub})
        weight = dict.fromkeys(part, 0.0)
        for e in sub:
            weight[e.i] += evidence[id(e)]
            weight[e.j] += evidence[id(e)]
        order = sorted(part, key=lambda k: (-round(weight[k], 6), k))
        # each growth is stopped as soon as it cannot win (Placer.grow's bar; the first best one is kept), or
        # cannot bring the objective to ``bar`` (``floor``: what this part must reach when every other part
        # kept all its evidence)
        floor = -np.inf if bar is None else bar - (upper - sum(evidence[id(e)] for e in sub)) - 1e-6
        best: tuple[float, list[float]] | None = None
        for seed in order[:seeds]:
            grown = placer.grow(seed, bar=floor if best is None else max(floor, best[0]))
            if best is None:
                best = None if grown is None else placer.judge(grown)
            else:
                best = _better(placer, grown, best, 0.0)
        if best is None:
            return None
        for _ in range(IMPROVE_ROUNDS):  # grow again through the strongest edges the best placement rejects
            off = sorted((e for e, x in zip(sub, best[1]) if x > tolerance),
                         key=lambda e: -evidence[id(e)])[:IMPROVE_EDGES]
            better = best
            for e in off:  # the first of the best, if it beats ``best`` by more than 1e-9
                grown = placer.grow(e.i, e, bar=max(floor, _bar(better, best)))
                better = _better(placer, grown, better, 1e-9 * (better is best))
            if better is best:
                break
            best = better
        rng = np.random.default_rng(seed_rng)
        for _ in range(restarts if best[1] and any(x > tolerance for x in best[1]) else 0):
            # random restarts: another seed, and the evidence shaken (times U(0.5, 1))
            shaken = {id(e): evidence[id(e)] * rng.uniform(0.5, 1.0) for e in sub}
            grown = placer.grow(part[int(rng.integers(len(part)))], weight=shaken, bar=max(floor, best[0] + 1e-9))
            best = _better(placer, grown, best, 1e-9)
        objective += best[0]
        for e, x in zip(sub, best[1]):
            if x <= tolerance:
                kept.append(e)
            else:
                rejected.append(RejectedEdge(e, x, f"inconsistent with the rest: misses by {x:.0f} px"))
    return kept, rejected, objective


def _bar(current: tuple[float, list[float]], best: tuple[float, list[float]]) -> float:
    """What a growth must reach to replace ``current``: more than ``best`` by 1e-9 while it is ``best``, else its
    objective (a tie keeps the first)."""
    return best[0] + 1e-9 if current is best else current[0]


def _better(placer: Placer, G: dict[int, np.ndarray] | None, current: tuple[float, list[float]], margin: float
            ) -> tuple[float, list[float]]:
    """``placer.judge(G)`` when G (None: stopped by its bar) is judged above ``current`` by more than ``margin``,
    else ``current``."""
    if G is None:
        return current
    got = placer.judge(G)
    return got if got[0] > current[0] + margin else current


def weak_bridges(nodes: Sequence[int], edges: Sequence[PairEdge], min_score: float = BRIDGE_MIN_SCORE,
                 min_side: int = BRIDGE_MIN_SIDE) -> list[RejectedEdge]:
    """The edges scoring below ``min_score`` whose removal splits their part of the graph into two parts of at least
    ``min_side`` nodes each, with the reason (see BRIDGE_MIN_SCORE)."""
    out = []
    for e in edges:
        if e.score >= min_score:
            continue
        parts = components_of(nodes, [f for f in edges if f is not e])
        side_i = next(c for c in parts if e.i in c)
        if e.j in side_i:
            continue
        side_j = next(c for c in parts if e.j in c)
        if min(len(side_i), len(side_j)) >= min_side:
            out.append(RejectedEdge(e, float("nan"), f"the only link between {len(side_i)} and {len(side_j)} photos, "
                                    f"too weak to trust alone (score {e.score:.2f}, below {min_score})"))
    return out


def connected_parts(nodes: Sequence[int], edges: Sequence[PairEdge]) -> list[tuple[list[int], list[PairEdge]]]:
    """(nodes, edges) of each connected part of the graph that has an edge."""
    out = []
    for part in components_of(nodes, edges):
        members = set(part)
        sub = [e for e in edges if e.i in members]
        if sub:
            out.append((part, sub))
    return out


def robust_edges(edges: Sequence[PairEdge], solve: Callable[[list[PairEdge]], dict[int, float] | None],
                 factor: float = EDGE_FACTOR, min_px: float = EDGE_MIN_PX, max_rounds: int = 10
                 ) -> tuple[list[PairEdge], list[RejectedEdge]]:
    """Remove the worst edge while it is far above the rest, solving again each time (step after the model).

    solve(edges) returns the residual (px, working resolution) of each edge it solved, by its position in
    ``edges`` (an edge left out of the model, e.g. outside the largest component once a removal splits the
    graph, has none), or None when the model cannot be solved; the edges solved last are returned with the
    removed ones.
    """
    edges = list(edges)
    rejected: list[RejectedEdge] = []
    for _ in range(max_rounds):
        res = solve(edges)
        if not res or len(res) < 2:
            break
        keys = sorted(res)
        vals = np.array([res[k] for k in keys])
        at = int(np.argmax(vals))
        bound = max(min_px, factor * float(np.median(vals)))
        if vals[at] <= bound:
            break
        worst = keys[at]
        rejected.append(RejectedEdge(edges[worst], float(vals[at]),
                                     f"inconsistent with the adjusted model: residual {vals[at]:.1f} px "
                                     f"(median edge {np.median(vals):.1f} px)"))
        del edges[worst]
    return edges, rejected
