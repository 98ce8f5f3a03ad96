"""The view graph's primitives: pair edges, connected components, spanning trees and walks over them.

Nodes are image indices; an edge i < j carries the pair's homography and inliers. Ties are broken by the
images' content keys where given (see stitch.panorama.graph), so nothing here depends on the input order.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stitch.errors import ConfigError


@dataclass
class PairEdge:
    """An accepted pair i < j: H (3, 3) maps image i to image j, full-res px; pts_i/pts_j (N, 2) inliers."""

    i: int
    j: int
    H: np.ndarray
    score: float
    n_inliers: int
    pts_i: np.ndarray
    pts_j: np.ndarray
    #: the pair's other tentative matches (not inliers of H), (M, 2) full-res px each: what a local warp may use
    more_i: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    more_j: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    def H_from(self, a: int) -> np.ndarray:
        """H (3, 3) mapping image ``a`` (one of the edge's two images) to the other one."""
        return self.H if a == self.i else np.linalg.inv(self.H)

    def other(self, a: int) -> int:
        """The edge's image that is not ``a``."""
        return self.j if a == self.i else self.i


@dataclass
class PairMatches:
    """One accepted pair's matches as the local warp reads them: pts_a / pts_b (N, 2) full-res px of images ``a`` and
    ``b`` (names), row by row; the first ``inliers`` rows are inliers of the pair's homography, the rest its other
    tentative matches."""

    a: str
    b: str
    pts_a: np.ndarray
    pts_b: np.ndarray
    inliers: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; the points as one string each, "x y x y ..." to 0.01 px (a saved Registration stays
        compact; the local warp keeps its matches to that precision, so the round trip is exact)."""
        return {"a": self.a, "b": self.b, "inliers": self.inliers,
                "pts_a": " ".join(f"{v:.2f}" for v in np.ravel(self.pts_a)),
                "pts_b": " ".join(f"{v:.2f}" for v in np.ravel(self.pts_b))}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PairMatches:
        """The matches of ``to_dict`` (points as its strings, or as [x, y] lists); ConfigError names what is
        malformed."""
        try:
            a, b = (np.asarray(d[k].split() if isinstance(d[k], str) else d[k], np.float64).reshape(-1, 2)
                    for k in ("pts_a", "pts_b"))
            out = cls(str(d["a"]), str(d["b"]), a, b, int(d["inliers"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"registration: malformed pair matches ({exc})") from None
        if len(a) != len(b) or not 0 <= out.inliers <= len(a) or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise ConfigError(f"registration: pair matches {out.a}-{out.b}: {len(a)} and {len(b)} points, "
                              f"{out.inliers} inliers (need as many points on both sides, finite)")
        return out


class UnionFind:
    """Disjoint sets over hashable nodes, with path halving."""

    def __init__(self, nodes: Iterable[Hashable]) -> None:
        self.parent = {k: k for k in nodes}

    def find(self, a: Hashable) -> Hashable:
        """The representative of ``a``'s set."""
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(self, a: Hashable, b: Hashable) -> bool:
        """Join the sets of a and b; False when they were already one."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[ra] = rb
        return True


def components(n: int, pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected components of nodes 0..n-1 under pairs (i, j): sorted index lists, by smallest node."""
    uf = UnionFind(range(n))
    for i, j in pairs:
        uf.union(i, j)
    groups: dict[Hashable, list[int]] = {}
    for k in range(n):
        groups.setdefault(uf.find(k), []).append(k)
    return sorted(groups.values(), key=lambda g: g[0])


def components_of(nodes: Iterable[int], edges: Sequence[PairEdge]) -> list[list[int]]:
    """Connected components of ``nodes`` under the edges between them: sorted node lists, by smallest node."""
    uf = UnionFind(nodes)
    for e in edges:
        if e.i in uf.parent and e.j in uf.parent:
            uf.union(e.i, e.j)
    groups: dict[Hashable, list[int]] = {}
    for k in sorted(uf.parent):
        groups.setdefault(uf.find(k), []).append(k)
    return sorted(groups.values(), key=lambda g: g[0])


def maximum_spanning_tree(nodes: Sequence[int], edges: Sequence[PairEdge], keys: Sequence[str] | None = None,
                          weight: Callable[[PairEdge], Any] | None = None) -> list[PairEdge]:
    """Edges of the maximum spanning tree/forest (weight: score, then inliers; ties by the images' keys)."""

    def key(k: int) -> Any:
        return keys[k] if keys is not None else k

    def order(e: PairEdge) -> Any:
        w = (-round(e.score, 6), -e.n_inliers) if weight is None else (-weight(e),)
        return (*w, sorted((key(e.i), key(e.j))))

    uf = UnionFind(nodes)
    return [e for e in sorted(edges, key=order) if uf.union(e.i, e.j)]


def tree_walk(nodes: Sequence[int], tree: Sequence[PairEdge], ref: int) -> list[tuple[int, int, PairEdge]]:
    """(parent, child, edge) in breadth-first order from ``ref`` over the tree edges."""
    adj: dict[int, list[PairEdge]] = {k: [] for k in nodes}
    for e in tree:
        adj[e.i].append(e)
        adj[e.j].append(e)
    seen, order, frontier = {ref}, [], [ref]
    while frontier:
        nxt = []
        for a in frontier:
            for e in adj[a]:
                b = e.other(a)
                if b not in seen:
                    seen.add(b)
                    order.append((a, b, e))
                    nxt.append(b)
        frontier = nxt
    return order
