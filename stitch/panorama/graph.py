"""The pair graph of a panorama: which pairs are matched, which are accepted, the reference and the spanning tree.

Order invariance: every choice here depends on the images' contents, never on their input order. Each
image has a *key* (``image_key``: a digest of its pixels); a pair is always matched in the direction of
increasing key (the result is flipped when the caller's pair runs the other way), and ties in the
reference choice and in the spanning tree are broken by keys, not by indices.

Pair selection (``shortlist``): with up to ``DEFAULT_SHORTLIST_MIN_IMAGES`` images every pair is
screened. Above that a cheap first pass matches a few hundred SIFT features of small thumbnails between
every pair (a few ms a pair) and keeps, for each image, its ``shortlist_k`` best-matched partners among
those above chance (``MIN_SHORTLIST_VOTES``; a pair stays when it is in either image's list): the full
candidate search then runs on O(N k) pairs instead of O(N^2). A loop-closing pair (the last image of a
full turn against the first) matches as well as any other neighbouring pair at low resolution, so it is
kept like them. When the accepted graph falls apart, the skipped pairs between its parts are screened
too, and then the pairs between its parts are retried with the preset's costlier levels.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from stitch.errors import NoOverlapError
from stitch.geometry import normalize_h
from stitch.homography.config import SelectConfig
from stitch.homography.matching import Matches
from stitch.homography.search import FeatureCache, image_features
from stitch.homography.select import HomographyResult, estimate_pair
from stitch.imaging import resize_max_side, to_gray
from stitch.panorama.config import PanoramaConfig
from stitch.panorama.threads import one_blas_thread
from stitch.panorama.viewgraph import PairEdge, components, maximum_spanning_tree, tree_walk
from stitch.profile import profiled
from stitch.types import ProgressFn

#: Up to this many images every pair gets the full candidate search; above, the cheap first pass selects.
DEFAULT_SHORTLIST_MIN_IMAGES = 8
#: Partners kept per image by the first pass (a pair is kept when either image lists the other).
DEFAULT_SHORTLIST_K = 6
#: First pass: SIFT features per thumbnail, and the thumbnail's longer side (px).
SHORTLIST_FEATURES = 300
SHORTLIST_SIDE = 320
#: First pass above PREFILTER_MIN_IMAGES images: the thumbnail's features are spread over SHORTLIST_GRID x
#: SHORTLIST_GRID cells (``spread_order``), so that one high-contrast object (a QR code, a sign) cannot take them all
#: and leave the rest of the view, which its neighbours share, without votes: the pairs screened between the parts
#: the shortlist leaves are then chosen by votes (up to that many images every skipped pair is; why:
#: docs/measurements.md, "graph").
SHORTLIST_GRID = 3
#: Above this many images the first pass counts its votes only between each image and the PREFILTER_PARTNERS
#: images that a vote on each thumbnail's PREFILTER_FEATURES first features (spread) ranks first (``prefilter_partners``,
#: (100 / 300)^2 of the cost per pair): the exact votes between every pair would grow as N^2 with a large
#: constant (why these values: docs/measurements.md, "graph").
PREFILTER_MIN_IMAGES = 60
PREFILTER_PARTNERS = 30
PREFILTER_FEATURES = 100
#: With the prefilter, a photo's partners beyond the shortlist's k, by votes, up to this rank, are the pairs
#: screened when the shortlist leaves the graph in parts.
FALLBACK_PARTNERS = 18
#: Above this many images the pair search forgets an image's features after its last pair of a phase (about 2.3 MB
#: each); up to it they are kept for the later phases, which would detect them again (docs/measurements.md, "graph").
FREE_FEATURES_MIN_IMAGES = 60
#: A partner needs at least this many first-pass matches (both directions summed), about what two unrelated
#: thumbnails reach by chance (why this value: docs/measurements.md, "graph").
MIN_SHORTLIST_VOTES = 10


def image_key(img: np.ndarray) -> str:
    """Content digest (hex) of an image array: the same pixels and shape give the same key, whatever the order."""
    digest = hashlib.sha1(repr(img.shape).encode())
    digest.update(np.ascontiguousarray(img).data)  # the buffer itself: no copy of the pixels
    return digest.hexdigest()


def flip_result(res: HomographyResult) -> HomographyResult:
    """The dst -> src view of a pair result: H inverted, matches and sizes swapped (candidates left as they are)."""
    m = res.matches
    return replace(res, H=normalize_h(np.linalg.inv(res.H)), src_size=res.dst_size, dst_size=res.src_size,
                   matches=Matches(m.dst_pts, m.src_pts, m.dst_idx, m.src_idx, m.ratio))


def resolve_workers(workers: int) -> int:
    """Threads for pair matching: ``workers``, or for 0 the CPU count (at most 8)."""
    return int(workers) if workers > 0 else max(1, min(8, os.cpu_count() or 1))


class WorkImages(Sequence[np.ndarray]):
    """The pair search's working images (h, w, 3) uint8: every one held in memory, or (with ``load``: k -> image
    k's) only those ``hold`` keeps, the others made again by ``load`` each time they are asked for."""

    def __init__(self, images: Sequence[np.ndarray | None], load: Callable[[int], np.ndarray] | None = None):
        if load is None and any(img is None for img in images):
            raise ValueError("WorkImages: an image that is not held needs a load function")
        self._images = list(images)
        self._load = load

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, k: int) -> np.ndarray:  # type: ignore[override]
        img = self._images[k]
        return img if img is not None else self._load(k)  # type: ignore[misc]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[k] for k in range(len(self)))

    def hold(self, k: int) -> None:
        """Keep image k in memory until ``release``."""
        if self._images[k] is None:
            self._images[k] = self._load(k)  # type: ignore[misc]

    def release(self, k: int) -> None:
        """Forget image k when it can be made again (with ``load``); otherwise it stays."""
        if self._load is not None:
            self._images[k] = None


# --- pair selection -----------------------------------------------------------------------------------


def spread_order(xy: np.ndarray, response: np.ndarray, size: tuple[int, int], grid: int = SHORTLIST_GRID
                 ) -> np.ndarray:
    """(m,) indices of keypoints at xy (m, 2) px in a (w, h) image: each grid x grid cell's strongest first, then
    every cell's second strongest, and so on (ties by response, then index), so that every prefix of the order is
    spread over the image as far as its keypoints allow."""
    w, h = size
    cx = np.clip((xy[:, 0] * grid / max(w, 1)).astype(int), 0, grid - 1)
    cy = np.clip((xy[:, 1] * grid / max(h, 1)).astype(int), 0, grid - 1)
    cell = cy * grid + cx
    by_strength = np.lexsort((np.arange(len(xy)), -response, cell))  # per cell, strongest first
    rank = np.empty(len(xy), np.int64)
    starts = np.searchsorted(cell[by_strength], np.arange(grid * grid))
    rank[by_strength] = np.arange(len(xy)) - np.repeat(starts, np.diff(np.append(starts, len(xy))))
    return np.lexsort((np.arange(len(xy)), -response, rank))


def _thumb_features(img: np.ndarray, spread: bool = False, count: int = SHORTLIST_FEATURES) -> np.ndarray | None:
    """SIFT descriptors (m <= count, 128) float32 of the image's thumbnail, strongest response first, or with
    ``spread`` in ``spread_order`` (every keypoint found, the ``count`` first of that order described); None: no
    keypoint."""
    small, _ = resize_max_side(img, SHORTLIST_SIDE)  # the colour thumbnail, then gray (as measured)
    gray = to_gray(small)
    if not spread:
        kps, desc = cv2.SIFT_create(nfeatures=count).detectAndCompute(gray, None)
        return None if desc is None else desc[np.argsort([-k.response for k in kps], kind="stable")]
    sift = cv2.SIFT_create()
    kps = sift.detect(gray, None)
    if not kps:
        return None
    xy = np.array([k.pt for k in kps], np.float64).reshape(-1, 2)
    order = spread_order(xy, np.array([k.response for k in kps], np.float64), (gray.shape[1], gray.shape[0]))
    _, desc = sift.compute(gray, [kps[i] for i in order[:count]])  # SIFT describes every keypoint, in order
    return desc


def pair_votes(desc: Sequence[np.ndarray | None], ratio: float = 0.7, block: int = 64,
               partners: Sequence[Sequence[int]] | None = None, workers: int = 1) -> np.ndarray:
    """(n, n) symmetric: ratio-test matches i -> j plus j -> i between descriptor sets (m_k, D) float32.

    Brute-force L2 nearest and second-nearest neighbours from one distance matrix per pair, both directions
    at once, in blocks of ``block`` partner images; a set with fewer than 2 descriptors (or None) matches nothing.
    ``partners[a]``: the images b > a whose pair (a, b) is counted (default: every pair); the others stay 0.
    ``workers`` threads take the images a in turn, each with one BLAS thread (``threads.one_blas_thread``): the
    same votes, bit for bit, for any number of threads.
    """
    n = len(desc)
    votes = np.zeros((n, n))
    ok = [k for k in range(n) if desc[k] is not None and len(desc[k]) >= 2]
    if len(ok) < 2:
        return votes
    m, dim = max(len(desc[k]) for k in ok), desc[ok[0]].shape[1]
    stack = np.zeros((len(ok), m, dim), np.float32)
    sq = np.full((len(ok), m), np.inf, np.float32)  # padding rows: infinitely far from everything
    for a, k in enumerate(ok):
        d = np.asarray(desc[k], np.float32)
        stack[a, :len(d)] = d
        sq[a, :len(d)] = (d * d).sum(axis=1)
    pos = {k: a for a, k in enumerate(ok)}
    r2 = np.float32(ratio * ratio)

    def row(a: int) -> None:  # the pairs (a, b > a): cells no other row writes
        later = (np.arange(a + 1, len(ok)) if partners is None
                 else np.array(sorted(pos[b] for b in partners[ok[a]] if b in pos and pos[b] > a), np.int64))
        minus2 = -2.0 * stack[a].T  # exact: the product below is -2 times the Gram matrix, bit for bit
        for lo in range(0, len(later), block):
            bs = later[lo:lo + block]
            d2 = (stack[bs].reshape(-1, dim) @ minus2).reshape(len(bs), m, m)
            # (b, j, i): squared distances of partner b's descriptor j to a's descriptor i
            d2 += sq[bs, :, None]
            d2 += sq[a][None, None, :]
            np.maximum(d2, 0, out=d2)
            scaled = d2 * r2  # once for both directions
            count = ratio_passes(d2, r2, 1, scaled).sum(axis=1) + ratio_passes(d2, r2, 2, scaled).sum(axis=1)
            for b, c in zip(bs, count):
                votes[ok[a], ok[b]] = votes[ok[b], ok[a]] = float(c)

    if workers < 2:
        for a in range(len(ok) - 1):
            row(a)
        return votes
    with one_blas_thread(), ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(row, range(len(ok) - 1)):
            pass
    return votes


def ratio_passes(d2: np.ndarray, r2: np.float32, axis: int, scaled: np.ndarray | None = None) -> np.ndarray:
    """Per row along ``axis`` of the squared distances d2 (b, m, m) float32: does its nearest pass the ratio test
    d_1 < r2 * d_2 against its second nearest (a tie fails)? The nearest d_1 passes exactly when no other entry x
    has r2 * x <= d_1 (r2 < 1, so the nearest itself always has one): the same answers as sorting the two
    nearest out, without the sort (docs/measurements.md, "graph"). ``scaled``: d2 * r2 when already made."""
    nearest = d2.min(axis=axis, keepdims=True)
    return ((d2 * r2 if scaled is None else scaled) <= nearest).sum(axis=axis, dtype=np.int32) == 1


def prefilter_partners(desc: Sequence[np.ndarray | None], keys: Sequence[str], count: int = PREFILTER_PARTNERS,
                       features: int = PREFILTER_FEATURES, workers: int = 1) -> list[list[int]]:
    """Per image, the ``count`` images with the most first-pass votes on the ``features`` first descriptors
    of each set ((m_k, D) float32, in ``spread_order``): the pairs worth the exact votes when there are many
    images. Ties by key, so the partners do not depend on the input order; ``workers`` threads count the votes."""
    votes = pair_votes([None if d is None else d[:features] for d in desc], workers=workers)
    n = len(desc)
    return [sorted((j for j in range(n) if j != i), key=lambda j: (-votes[i, j], keys[j]))[:count] for i in range(n)]


@dataclass(frozen=True)
class Shortlist:
    """The pairs worth the full search (i < j), and ``fallback``: the pairs to screen between the parts the
    shortlist leaves, most likely first (None: every skipped pair, as for a few images)."""

    pairs: list[tuple[int, int]]
    fallback: list[tuple[int, int]] | None = None


@profiled("first pass")
def shortlist(works: Sequence[np.ndarray], keys: Sequence[str], k: int = DEFAULT_SHORTLIST_K,
              min_images: int = DEFAULT_SHORTLIST_MIN_IMAGES, workers: int = 1) -> Shortlist:
    """Pairs (i < j) worth the full search: all of them up to ``min_images`` images, else each image's k best.

    The first pass matches SHORTLIST_FEATURES SIFT features of SHORTLIST_SIDE px thumbnails of the (h, w, 3)
    working images, spread over each thumbnail above PREFILTER_MIN_IMAGES images (SHORTLIST_GRID; ``pair_votes``:
    ratio 0.7, both directions summed; a partner needs MIN_SHORTLIST_VOTES);
    ties between partners are broken by ``keys``, so the selection does not depend on the input order.
    Above PREFILTER_MIN_IMAGES images the exact votes are counted only between each image and its
    PREFILTER_PARTNERS best partners by a cheaper vote (``prefilter_partners``), and the pairs screened between
    the parts the shortlist leaves are each image's next partners by votes, up to FALLBACK_PARTNERS in all (an
    unmatchable photo would otherwise be searched against every other one). ``workers`` threads detect the
    thumbnails' features and count the votes. Memory: N small descriptor sets.
    """
    n = len(works)
    every = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if n <= max(min_images, k + 1):
        return Shortlist(every)
    spread = n > PREFILTER_MIN_IMAGES  # the fallback then relies on the votes, not on every skipped pair
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # one SIFT object per call: no shared state
        # by index: a WorkImages makes each image on its thread, one at a time
        desc = list(pool.map(lambda m: _thumb_features(works[m], spread), range(n)))
    partners = None
    if n > PREFILTER_MIN_IMAGES:  # many images: exact votes only between the images a cheaper vote finds alike
        near = prefilter_partners(desc, keys, workers=workers)
        both: list[set[int]] = [set() for _ in range(n)]
        for i, js in enumerate(near):
            for j in js:
                both[min(i, j)].add(max(i, j))
        partners = [sorted(b) for b in both]
    votes = pair_votes(desc, partners=partners, workers=workers)
    keep: set[tuple[int, int]] = set()
    later: list[tuple[int, int]] = []
    for i in range(n):
        order = sorted((j for j in range(n) if j != i and votes[i, j] >= MIN_SHORTLIST_VOTES),
                       key=lambda j: (-votes[i, j], keys[j]))
        keep.update((min(i, j), max(i, j)) for j in order[:k])
        if partners is not None:  # a few dozen images: every skipped pair stays a fallback (cheap enough)
            later += [(min(i, j), max(i, j)) for j in order[k:FALLBACK_PARTNERS]]
    if partners is None:
        return Shortlist(sorted(keep))
    return Shortlist(sorted(keep), [p for p in dict.fromkeys(later) if p not in keep])


# --- matching ------------------------------------------------------------------------------------------


@dataclass
class PairScreen:
    """The pair screening's state: the working images, their keys and feature caches, what is kept of the
    accepted pairs' results (``keep``) and the rejected pairs' reasons, and the progress count."""

    works: WorkImages
    names: Sequence[str]
    keys: list[str]
    caches: list[FeatureCache]
    config: PanoramaConfig
    progress: ProgressFn | None
    keep: Callable[[int, int, HomographyResult], Any] | None = None
    results: dict[tuple[int, int], Any] = field(default_factory=dict)
    why: dict[tuple[int, int], tuple[float, str]] = field(default_factory=dict)
    done: int = 0
    total: int = 0

    @profiled("pair: other")
    def attempt(self, i: int, j: int, cfg: SelectConfig) -> None:
        """Match pair (i, j) from the smaller content key to the larger; keep it or record why not."""
        a, b = (i, j) if self.keys[i] <= self.keys[j] else (j, i)
        try:
            res = estimate_pair(self.works[a], self.works[b], cfg, self.caches[a], self.caches[b],
                                names=(self.names[a], self.names[b]))
        except NoOverlapError:
            self.why.setdefault((i, j), (float("-inf"), "no plausible homography"))
            return
        if a != i:
            res = flip_result(res)
        pano = self.config
        if res.score < pano.min_pair_score:
            self.why[(i, j)] = (res.score, f"pair score {res.score:.3f}, below the {pano.min_pair_score} a match needs")
        elif res.n_inliers < pano.min_pair_inliers:
            reason = f"{res.n_inliers} inliers, fewer than the {pano.min_pair_inliers} a match needs"
            self.why[(i, j)] = (res.score, reason)
        else:
            self.results[(i, j)] = res if self.keep is None else self.keep(i, j, res)
            self.why.pop((i, j), None)

    def detect(self, k: int, cfg: SelectConfig) -> None:
        """Hold image k (WorkImages.hold) and detect its features of cfg's first level into its cache (the future
        holds no reference to them)."""
        self.works.hold(k)
        image_features(self.works[k], cfg.levels[0].features, self.caches[k])

    def run(self, pool: ThreadPoolExecutor, todo: list[tuple[int, int]], cfg: SelectConfig, what: str) -> None:
        """Attempt every pair of ``todo`` on the pool (any order: each result is independent of it). An image's
        features (the first level's) are detected on the pool just before its first pair, so the threads detect
        side by side; above FREE_FEATURES_MIN_IMAGES images they, and the image when it can be made again
        (WorkImages), are forgotten after its last pair (``pair_schedule``), and a later phase makes them again
        (the same features)."""
        self.total += len(todo)
        todo = pair_schedule(len(self.works), todo)
        left = np.bincount(np.asarray(todo, np.int64).ravel(), minlength=len(self.works)) if todo else None
        futures, detections = {}, {}
        for i, j in todo:
            for k in (i, j):
                if k not in detections:  # queued before every pair of k: they wait on its cache's lock, never redo it
                    detections[k] = pool.submit(self.detect, k, cfg)
            futures[pool.submit(self.attempt, i, j, cfg)] = (i, j)
        for fut in as_completed(futures):
            fut.result()
            i, j = futures[fut]
            for k in (i, j):
                left[k] -= 1
                if not left[k] and len(self.works) > FREE_FEATURES_MIN_IMAGES:
                    detections[k].result()  # started before k's pairs: what it holds is released after it
                    self.caches[k].clear()
                    self.works.release(k)
            self.done += 1
            if self.progress is not None:
                self.progress(self.done, self.total, f"{what} {self.names[i]} - {self.names[j]}")
        for det in detections.values():  # each ran before its image's pairs finished; an error surfaces here
            det.result()

    def parts(self) -> dict[int, int]:
        """Image -> the index of its connected part under the pairs accepted so far."""
        return {k: c for c, g in enumerate(components(len(self.works), list(self.results))) for k in g}


def _hops(left: list[set[int]], start: int) -> dict[int, int]:
    """Breadth-first hop counts from ``start`` over the adjacency sets ``left``."""
    hops, ring = {start: 0}, [start]
    while ring:
        nxt = []
        for u in ring:
            for w in sorted(left[u]):
                if w not in hops:
                    hops[w] = hops[u] + 1
                    nxt.append(w)
        ring = nxt
    return hops


def pair_schedule(n: int, pairs: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The pairs (i, j) of n images in the order they are screened, so that few images hold their features at once.

    Sloan's profile reduction, part by part of the graph: from one end of the part (a pseudo-peripheral image)
    towards the other, image by image, the open image (one with pairs done and pairs left) that lies farthest
    from the far end in hops, less twice its partners not yet opened, takes all its pairs left. Ties go to the
    smaller index.
    """
    left: list[set[int]] = [set() for _ in range(n)]
    for i, j in pairs:
        left[i].add(j)
        left[j].add(i)
    fresh = [len(s) for s in left]  # partners with pairs left that are not open yet
    opened = [False] * n
    order: list[tuple[int, int]] = []

    def open_(u: int) -> None:
        if not opened[u]:
            opened[u] = True
            for w in left[u]:
                fresh[w] -= 1

    for start in range(n):
        if not left[start]:
            continue
        far = start
        for _ in range(3):  # the ends of a long path through the part
            hops = _hops(left, far)
            near, far = far, max(hops, key=lambda u: (hops[u], -u))
        dist = _hops(left, far)  # hops to the far end
        live = {near}
        while live:
            v = max(live, key=lambda u: (dist[u] - 2 * fresh[u], -u))
            open_(v)
            for u in sorted(left[v]):
                order.append((min(u, v), max(u, v)))
                left[u].discard(v)
                open_(u)
                (live.add if left[u] else live.discard)(u)
            left[v].clear()
            live.discard(v)
    return order


@profiled("pair search")
def match_graph(works: Sequence[np.ndarray], names: Sequence[str], config: PanoramaConfig,
                progress: ProgressFn | None = None, keys: Sequence[str] | None = None,
                pairs: Sequence[tuple[int, int]] | None = None, masks: Sequence[np.ndarray | None] | None = None,
                fallback: Sequence[tuple[int, int]] | None = None,
                keep: Callable[[int, int, HomographyResult], Any] | None = None,
                ) -> tuple[list[tuple[int, int, Any]], dict[tuple[int, int], Any]]:
    """Screen pairs of working images (h, w, 3); returns ([(i, j, HomographyResult)] accepted, reasons).

    ``pairs`` (i < j): the pairs to screen (default: every pair); ``keys``: the images' content keys (default:
    ``image_key``): each pair is matched from the smaller key to the larger, and the result flipped to i -> j
    when needed, so it does not depend on the input order. The results' H and points are in working px (the
    caller converts them); reasons[(i, j)] says why a rejected pair was rejected, as (score or -inf, text).
    ``masks``: (h, w) bool feature masks at the working resolution, or None (no keypoint where False).
    ``fallback`` (i < j): the pairs screened between the parts ``pairs`` leaves (default: every skipped pair).
    ``keep(i, j, result)``: what is kept of each accepted result, made as it is accepted, in its place in the
    list (default: the result, with every candidate and tentative match). Phases: the pairs; the skipped pairs
    between the parts the shortlist left; the harder search on the pairs still between parts. Memory: above FREE_FEATURES_MIN_IMAGES images, an image's
    features live from its first pair of a phase to its last (``pair_schedule`` orders the pairs so that few images
    hold theirs at once), not all at once.
    """
    n = len(works)
    works = works if isinstance(works, WorkImages) else WorkImages(works)
    state = PairScreen(works, names, list(keys) if keys is not None else [image_key(w) for w in works],
                       [FeatureCache(mask=None if masks is None else masks[k]) for k in range(n)], config, progress,
                       keep)
    screen, repair = config.screening(n)
    every = [(i, j) for i in range(n) for j in range(i + 1, n)]
    pairs = every if pairs is None else sorted((min(i, j), max(i, j)) for i, j in pairs)
    with ThreadPoolExecutor(max_workers=resolve_workers(config.workers)) as pool:
        # the threads overlap OpenCV's and numpy's GIL-free work
        state.run(pool, list(pairs), screen, "matched")
        part = state.parts()
        if len(set(part.values())) > 1 and len(pairs) < len(every):
            # the shortlist left the graph in parts: screen the skipped pairs between them first
            tried = set(pairs)
            more = [(i, j) for i, j in (every if fallback is None else fallback)
                    if part[i] != part[j] and (i, j) not in tried]
            state.run(pool, more, screen, "matched")
            pairs = sorted(tried | set(more))
            part = state.parts()
        retry = [(i, j) for i, j in pairs if part[i] != part[j]]
        if repair is not None and len(set(part.values())) > 1 and retry:
            state.run(pool, retry, repair, "matched harder")
    if progress is not None:
        progress(state.total, state.total, "matching done")
    return [(i, j, state.results[(i, j)]) for i, j in sorted(state.results)], state.why


# --- reference and spanning tree ----------------------------------------------------------------------


def choose_reference(nodes: Sequence[int], edges: Sequence[PairEdge], keys: Sequence[str] | None = None) -> int:
    """The graph centre: fewest hops to the farthest image; ties -> most edges, largest total edge score, smallest key.

    ``keys`` (per image index; default: the index) make the last tie-break independent of the input order.
    """
    adj: dict[int, list[int]] = {k: [] for k in nodes}
    weight = dict.fromkeys(nodes, 0.0)
    for e in edges:
        adj[e.i].append(e.j)
        adj[e.j].append(e.i)
        weight[e.i] += e.score
        weight[e.j] += e.score

    def eccentricity(s: int) -> int:
        dist, frontier = {s: 0}, [s]
        while frontier:
            nxt = []
            for a in frontier:
                for b in adj[a]:
                    if b not in dist:
                        dist[b] = dist[a] + 1
                        nxt.append(b)
            frontier = nxt
        return max(dist.values())

    def key(k: int) -> Any:
        return keys[k] if keys is not None else k

    return min(nodes, key=lambda k: (eccentricity(k), -len(adj[k]), -round(weight[k], 6), key(k)))


def spanning_tree_homographies(nodes: Sequence[int], edges: Sequence[PairEdge], ref: int,
                               keys: Sequence[str] | None = None) -> dict[int, np.ndarray]:
    """H (3, 3) image -> reference for each node, chained along the maximum spanning tree (weight = score)."""
    Hs = {ref: np.eye(3)}
    for a, b, e in tree_walk(nodes, maximum_spanning_tree(nodes, edges, keys), ref):
        H_ab = e.H if e.i == a else np.linalg.inv(e.H)  # maps a -> b
        Hs[b] = normalize_h(Hs[a] @ np.linalg.inv(H_ab))
    return Hs
