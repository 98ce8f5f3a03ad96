"""Stage 6: panoramas. Pair graph, reference choice, joint homography adjustment, warp and composite.

Pipeline of ``stitch_images``:

1. read the inputs (unreadable files are skipped with a warning) and drop exact duplicates (same pixels);
2. register at a working resolution (about ``work_megapix`` MP per image); every homography is then
   re-expressed in full-resolution pixels;
3. screen every unordered pair with the first feature level of the preset (``estimate_pair``); an edge is
   accepted when the pair's quality score is >= ``min_pair_score`` and it has >= ``min_pair_inliers``
   inliers. When the accepted graph falls apart, the pairs between its parts are retried with the
   preset's costlier levels (affine-simulated SIFT only with preset 'exhaustive' or detector 'asift');
4. keep the largest connected component (other images are dropped with a warning and a reason);
5. reference = the graph centre (fewest hops to every image; ties: largest total edge score); chain the
   pairwise homographies to it along a maximum spanning tree (weight = score);
6. jointly refine every homography to the reference with ``scipy.optimize.least_squares`` over the inlier
   correspondences of all accepted edges: 8 parameters per non-reference image (the reference is the
   identity), symmetric transfer residuals in pixels, robust loss (soft_l1 by default);
7. project (plane, cylindrical or spherical; 'auto', the default, picks spherical for a rotating camera,
   else the plane unless it stretches too much or a matrix sends part of an image through infinity),
   bound the canvas (a canvas above ``max_canvas_pixels`` is refused with CanvasTooLargeError naming the
   image whose matrix blows it up: it is never allocated);
8. composite at full resolution, one image and one strip at a time (stitch.compose.compose_panorama):
   exposure compensation (stitch.exposure), seam finding (stitch.seams), multi-band or feather blending
   (stitch.blend), and the crop to the largest rectangle inside the valid region (stitch.crop).

``hooks`` (a stitch.debug.PipelineHooks, e.g. stitch.debug.DebugDir) receives the accepted matches and every
compositing stage's output as the pipeline makes them; the CLI's ``--debug-dir`` is that.

Why 0.5 for ``DEFAULT_MIN_PAIR_SCORE``: measured with preset 'accurate' (first level, refiner lsq, work
0.6 MP) on data/samples/pano3 and ../shared/data/panoramas (weir, hill, vlfeat_roofs, vlfeat_river,
budapest), every truly overlapping pair scored 0.675..0.999 (the lowest: budapest1-budapest4, 1092
inliers), while every non-overlapping pair (weir_noise.jpg against the weir, budapest 1-3, pano3 1-3, and
8 pairs across sets) found no plausible homography at all, at the first and at the second level.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from stitch.errors import CanvasTooLargeError, ConfigError, NoOverlapError, StitchError
from stitch.geometry import normalize_h, project, work_scale_matrix
from stitch.homography.select import (
    DEFAULT_PRESET,
    PRESET_CHOICES,
    FeatureCache,
    SelectConfig,
    estimate_pair,
    estimator_grid,
    image_features,
)
from stitch.io import ImageLike, load_images
from stitch.panorama.compose import ComposeConfig, compose_panorama
from stitch.panorama.inputs import (
    MIN_IMAGE_SIDE,
    MaskLike,
    check_mask,
    check_timelapse_dir,
    load_masks,
    sequence_pairs,
    work_mask,
)
from stitch.panorama.warp import (
    DEFAULT_MAX_CANVAS_PIXELS,
    PROJECTION_CHOICES,
    Canvas,
    Projection,
    canvas_bounds,
    estimate_focal,
    pair_focals,
)
from stitch.types import ProgressFn

#: Projections accepted by stitch_images: the warp stage's ones plus 'auto'.
PANORAMA_PROJECTION_CHOICES = ("auto",) + PROJECTION_CHOICES
#: 'auto': spherical when a pair's homography determines a focal length (a rotating camera, as in most
#: panoramas), else the plane (e.g. scans: translations over a flat scene), switching to cylindrical when the
#: plane stretches too much. Why spherical: on the 18 sets of ../shared/data/panoramas the overlap PSNR of
#: the registered images rose on 17 (mean +0.5 dB, up to +2.1 dB on prague_maps) and the SSIM on 16 against
#: the plane, at the same matrices, because the plane magnifies the periphery; OpenCV's stitcher and
#: OpenStitching default to it too. Pass projection='plane' for straight lines or a flat document.
DEFAULT_PANORAMA_PROJECTION = "auto"
DEFAULT_WORK_MEGAPIX = 0.6
DEFAULT_MIN_PAIR_SCORE = 0.5
DEFAULT_MIN_PAIR_INLIERS = 16
DEFAULT_PAIR_REFINER = "lsq"
LOSS_CHOICES = ("linear", "huber", "soft_l1", "cauchy")
DEFAULT_LOSS = "soft_l1"
#: Robust loss scale at the working resolution (px); scaled to full resolution per panorama.
DEFAULT_LOSS_SCALE_PX = 1.5
DEFAULT_MAX_POINTS_PER_EDGE = 200
#: Above this many images the screening (and the retry of pairs between parts of the graph) runs the 'fast'
#: estimator grid. Measured
#: with ``stitch bench panorama`` (weir, budapest, opencv_a): the fast grid kept the overlap PSNR within
#: 0.06 dB and the SSIM within 0.01 of the full grid's, at 10-25 % less time; a lone pair keeps the full grid.
DEFAULT_FULL_GRID_MAX_IMAGES = 2
#: Keypoints per image for panoramas (the presets' own default is 4000). Matching cost grows with its
#: square: on budapest (6 images, 15 pairs) 2000 halved the time at the same overlap PSNR (20.35 dB), but
#: weir's small-overlap pair 1-3 fell from 51 inliers (score 0.77) to 26 (0.65); 3000 keeps 44 (0.74).
DEFAULT_PANORAMA_MAX_KEYPOINTS = 3000
#: 'auto' uses the plane unless its canvas exceeds this multiple of the summed image areas.
DEFAULT_AUTO_MAX_STRETCH = 4.0



@dataclass(frozen=True)
class PanoramaConfig:
    """Settings of stitch_images (see the module docstring); build it with ``PanoramaConfig.from_options``."""

    select: SelectConfig
    preset: str = DEFAULT_PRESET
    projection: str = DEFAULT_PANORAMA_PROJECTION
    work_megapix: float = DEFAULT_WORK_MEGAPIX
    max_canvas_pixels: int = DEFAULT_MAX_CANVAS_PIXELS
    min_pair_score: float = DEFAULT_MIN_PAIR_SCORE
    min_pair_inliers: int = DEFAULT_MIN_PAIR_INLIERS
    loss: str = DEFAULT_LOSS
    loss_scale_px: float = DEFAULT_LOSS_SCALE_PX
    max_points_per_edge: int = DEFAULT_MAX_POINTS_PER_EDGE
    full_grid_max_images: int = DEFAULT_FULL_GRID_MAX_IMAGES
    adjust: bool = True
    workers: int = 0
    range_width: int = 0
    compose: ComposeConfig = field(default_factory=ComposeConfig)

    @property
    def seed(self) -> int:
        """The one seed of a run: the pair search's (``select.seed``), also used to subsample the adjustment."""
        return self.select.seed

    @classmethod
    def from_options(cls, preset: str = DEFAULT_PRESET, detector: str | None = None,
                     projection: str = DEFAULT_PANORAMA_PROJECTION, seed: int = 0,
                     work_megapix: float = DEFAULT_WORK_MEGAPIX,
                     max_canvas_pixels: int = DEFAULT_MAX_CANVAS_PIXELS, refiner: str = DEFAULT_PAIR_REFINER,
                     **options: Any) -> PanoramaConfig:
        """Config from a preset plus overrides; unknown option names raise ConfigError naming them.

        Panorama options: min_pair_score, min_pair_inliers, loss, loss_scale_px, max_points_per_edge,
        full_grid_max_images, adjust, workers (pair-matching threads; 0 = the CPU count, at most 8, the
        result does not depend on it), range_width (match only images at most this far apart in input
        order; 0 = every pair; stitch.panorama.inputs); compositing: exposure, seam, blend, crop,
        crop_max_empty, scale, megapixels, timelapse, seam_megapix, bands, block_size
        (stitch.panorama.compose.ComposeConfig). Anything else goes to SelectConfig.from_options
        (max_keypoints, ratio, estimators, thresholds, accept_score, score_max_side, min_inliers).
        """
        compose = ComposeConfig(**{k: options.pop(k) for k in list(options) if k in ComposeConfig.__dataclass_fields__})
        own = {k: options.pop(k) for k in list(options) if k in cls.__dataclass_fields__}
        select_keys = ("max_keypoints", "ratio", "estimators", "thresholds", "accept_score", "score_max_side",
                       "min_inliers")
        unknown = sorted(k for k in options if k not in select_keys)
        if unknown or "select" in own or "compose" in own:
            bad = unknown or [k for k in ("select", "compose") if k in own]
            raise ConfigError(f"unknown option(s) {', '.join(bad)} for stitch_images")
        if preset not in PRESET_CHOICES:
            raise ConfigError(f"preset={preset!r}: choose one of {', '.join(PRESET_CHOICES)}")
        if projection not in PANORAMA_PROJECTION_CHOICES:
            raise ConfigError(f"projection={projection!r}: choose one of {', '.join(PANORAMA_PROJECTION_CHOICES)}")
        if not (isinstance(work_megapix, (int, float)) and 0.01 <= work_megapix <= 100):
            raise ConfigError(f"work_megapix={work_megapix}: must be between 0.01 and 100")
        if not (isinstance(max_canvas_pixels, int) and max_canvas_pixels > 0):
            raise ConfigError(f"max_canvas_pixels={max_canvas_pixels}: must be a positive integer")
        if preset != "fast":  # the fast preset keeps its own, smaller count
            options.setdefault("max_keypoints", DEFAULT_PANORAMA_MAX_KEYPOINTS)
        sel = SelectConfig.from_options(preset=preset, detector=detector, refiner=refiner, seed=seed, **options)
        cfg = cls(select=sel, preset=preset, projection=projection, work_megapix=float(work_megapix),
                  max_canvas_pixels=max_canvas_pixels, compose=compose, **own)
        cfg.check()
        return cfg

    def check(self) -> None:
        """Validate the panorama-level fields; ConfigError names the offending one."""
        if self.loss not in LOSS_CHOICES:
            raise ConfigError(f"loss={self.loss!r}: choose one of {', '.join(LOSS_CHOICES)}")
        self.compose.check()
        if not -1.0 <= self.min_pair_score <= 1.0:
            raise ConfigError(f"min_pair_score={self.min_pair_score}: must be in [-1, 1]")
        if self.min_pair_inliers < 4:
            raise ConfigError(f"min_pair_inliers={self.min_pair_inliers}: must be at least 4")
        if self.loss_scale_px <= 0:
            raise ConfigError(f"loss_scale_px={self.loss_scale_px}: must be > 0")
        if not (isinstance(self.workers, int) and 0 <= self.workers <= 64):
            raise ConfigError(f"workers={self.workers}: must be an integer in 0..64 (0 = the CPU count)")
        sequence_pairs(0, self.range_width)  # checks range_width
        if self.max_points_per_edge < 4:
            raise ConfigError(f"max_points_per_edge={self.max_points_per_edge}: must be at least 4")


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


@dataclass
class Panorama:
    """A stitched panorama.

    image (H, W, 3) uint8 BGR, black outside ``mask`` (H, W) bool. ``homographies[k]`` (3, 3) float64 maps
    full-resolution pixels of image ``names[k]`` to the *reference* image's pixel frame (the reference
    has the identity). Pixel (c, r) of ``image`` sits at projected coordinates (c + offset[0], r + offset[1])
    (the crop included: ``canvas`` is the uncropped frame, ``crop`` the image's box on it);
    for projection 'plane' the projected coordinates are reference pixels, so image -> canvas is
    ``translate(-offset) @ homographies[k]`` (see ``canvas_homography``); for cylindrical/spherical they
    are ``focal`` * angles (see stitch.warp). With an output ``scale`` s < 1 (``scale=`` / ``megapixels=``)
    the canvas is the full-resolution one scaled by s: projected coordinates are s times the above, and
    ``focal`` stays the full-resolution focal. ``filled``: pixels the 'fill' crop invented (False in
    ``mask``); ``timelapse``: the frame files written, one per kept image.
    """

    image: np.ndarray
    mask: np.ndarray
    homographies: list[np.ndarray]
    names: list[str]
    dropped: list[tuple[str, str]]
    reference: str
    projection: str
    offset: tuple[float, float]
    focal: float | None
    edges: list[tuple[str, str, float, int]]
    seconds: float
    warnings: list[str] = field(default_factory=list)
    rms_before: float | None = None
    rms_after: float | None = None
    canvas: Canvas | None = None
    crop: tuple[int, int, int, int] | None = None
    gains: list[list[float]] = field(default_factory=list)
    bands: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    scale: float = 1.0
    filled: int = 0
    timelapse: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the panorama in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])

    def canvas_homography(self, k: int) -> np.ndarray:
        """H (3, 3) mapping image k's full-res pixels to canvas pixels (projection 'plane' only)."""
        if self.projection != "plane":
            raise ConfigError(f"canvas_homography: projection is {self.projection!r}, not a homography")
        T = np.array([[1.0, 0, -self.offset[0]], [0, 1.0, -self.offset[1]], [0, 0, 1.0]])
        return normalize_h(T @ np.diag([self.scale, self.scale, 1.0]) @ self.homographies[k])

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (no pixel data)."""
        return {
            "size": list(self.size),
            "kept": list(self.names),
            "dropped": [{"name": n, "reason": r} for n, r in self.dropped],
            "reference": self.reference,
            "projection": self.projection,
            "offset": [round(self.offset[0], 3), round(self.offset[1], 3)],
            "focal": None if self.focal is None else round(self.focal, 3),
            "edges": [{"a": a, "b": b, "score": round(s, 4), "inliers": n} for a, b, s, n in self.edges],
            "homographies": {n: H.tolist() for n, H in zip(self.names, self.homographies)},
            "rms_before": None if self.rms_before is None else round(self.rms_before, 4),
            "rms_after": None if self.rms_after is None else round(self.rms_after, 4),
            "crop": None if self.crop is None else list(self.crop),
            "gains": {n: g for n, g in zip(self.names, self.gains)},
            "bands": self.bands,
            "scale": round(self.scale, 6),
            "filled": self.filled,
            "timelapse": list(self.timelapse),
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
        }


# --- working resolution ------------------------------------------------------------------------------


def to_work(img: np.ndarray, megapix: float) -> np.ndarray:
    """(H, W, 3) image downscaled (INTER_AREA) to about ``megapix`` MP; never upscaled."""
    h, w = img.shape[:2]
    s = min(1.0, math.sqrt(megapix * 1e6 / float(h * w)))
    if s >= 1.0:
        return img
    return cv2.resize(img, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA)


def _to_full_pts(pts: np.ndarray, A: np.ndarray) -> np.ndarray:
    return project(np.linalg.inv(A), pts)


# --- pair graph --------------------------------------------------------------------------------------


def _pair_edge(res: Any, i: int, j: int, A_i: np.ndarray, A_j: np.ndarray) -> PairEdge:
    H = normalize_h(np.linalg.inv(A_j) @ res.H @ A_i)
    inl = np.asarray(res.inliers, bool)
    return PairEdge(i, j, H, float(res.score), int(inl.sum()),
                    _to_full_pts(res.matches.src_pts[inl], A_i), _to_full_pts(res.matches.dst_pts[inl], A_j))


def _components(n: int, pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected components of nodes 0..n-1 under pairs (i, j): sorted index lists, by smallest node."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in pairs:
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for k in range(n):
        groups.setdefault(find(k), []).append(k)
    return sorted(groups.values(), key=lambda g: g[0])


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``; elsewhere a no-op).

    The pair-matching threads allocate from their own malloc arenas, whose free pages would otherwise
    stay resident and add to the peak of the full-resolution compositing that follows (opencv_boat:
    976 MB without this, 698 MB with it).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def resolve_workers(workers: int) -> int:
    """Threads for pair matching: ``workers``, or for 0 the CPU count (at most 8)."""
    return int(workers) if workers > 0 else max(1, min(8, os.cpu_count() or 1))


def match_graph(works: Sequence[np.ndarray], names: Sequence[str], config: PanoramaConfig,
                progress: ProgressFn | None = None, masks: Sequence[np.ndarray | None] | None = None
                ) -> tuple[list[tuple[int, int, Any]], dict[tuple[int, int], Any]]:
    """Screen the pairs of working images (h, w, 3) (every pair, or those within ``config.range_width``);
    returns ([(i, j, HomographyResult)] accepted, reasons). masks: (h, w) bool feature masks or None.

    The results' H and points are in working px (the caller converts them); reasons[(i, j)] says why a
    rejected pair was rejected, as (score or -inf, text).
    """
    n = len(works)
    caches = [FeatureCache(mask=None if masks is None else masks[k]) for k in range(n)]
    levels = config.select.levels
    first = levels[0]
    if n > config.full_grid_max_images:
        first = replace(first, specs=estimator_grid("fast"))
    screen = replace(config.select, levels=(first,), exhaustive=False)
    repair_levels = tuple(lv for lv in levels[1:]
                          if lv.features.detector != "asift" or config.preset == "exhaustive")
    if n > config.full_grid_max_images:
        repair_levels = tuple(replace(lv, specs=estimator_grid("fast")) for lv in repair_levels)
    repair = replace(config.select, levels=repair_levels) if repair_levels else None
    pairs = sequence_pairs(n, config.range_width)
    results: dict[tuple[int, int], Any] = {}
    why: dict[tuple[int, int], tuple[float, str]] = {}

    def attempt(i: int, j: int, cfg: SelectConfig) -> None:
        try:
            res = estimate_pair(works[i], works[j], cfg, caches[i], caches[j], names=(names[i], names[j]))
        except NoOverlapError:
            why.setdefault((i, j), (float("-inf"), "no plausible homography"))
            return
        if res.score < config.min_pair_score:
            why[(i, j)] = (res.score, f"score {res.score:.3f} < min_pair_score={config.min_pair_score}")
        elif res.n_inliers < config.min_pair_inliers:
            why[(i, j)] = (res.score, f"{res.n_inliers} inliers < min_pair_inliers={config.min_pair_inliers}")
        else:
            results[(i, j)] = res
            why.pop((i, j), None)

    workers = resolve_workers(config.workers)
    total = len(pairs)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # features first (one detection per image, shared by every pair), then the pairs; the threads
        # overlap OpenCV's and numpy's GIL-free work, and every result is independent of the order
        done = 0
        for _ in pool.map(lambda k: image_features(works[k], first.features, caches[k]), range(n)):
            pass

        def run_all(todo: list[tuple[int, int]], cfg: SelectConfig, what: str) -> None:
            nonlocal done
            futures = {pool.submit(attempt, i, j, cfg): (i, j) for i, j in todo}
            for fut in as_completed(futures):
                fut.result()
                i, j = futures[fut]
                done += 1
                if progress is not None:
                    progress(done, total, f"{what} {names[i]} - {names[j]}")

        run_all(pairs, screen, "matched")
        if repair is not None:
            comp_of = {}
            for c, g in enumerate(_components(n, list(results))):
                comp_of.update({k: c for k in g})
            retry = [(i, j) for i, j in pairs if comp_of[i] != comp_of[j]]
            if len(set(comp_of.values())) > 1 and retry:
                total += len(retry)
                run_all(retry, repair, "matched harder")
    if progress is not None:
        progress(total, total, "matching done")
    return [(i, j, results[(i, j)]) for i, j in sorted(results)], why


# --- reference and spanning tree ----------------------------------------------------------------------


def choose_reference(nodes: Sequence[int], edges: Sequence[PairEdge]) -> int:
    """The graph centre: fewest hops to the farthest image; ties -> largest total edge score, lowest index."""
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

    return min(nodes, key=lambda k: (eccentricity(k), -round(weight[k], 9), k))


def spanning_tree_homographies(nodes: Sequence[int], edges: Sequence[PairEdge], ref: int) -> dict[int, np.ndarray]:
    """H (3, 3) image -> reference for each node, chained along the maximum spanning tree (weight = score)."""
    parent = {k: k for k in nodes}

    def find(a: int) -> int:
        while parent[a] != a:
            a = parent[a]
        return a

    tree: dict[int, list[tuple[int, np.ndarray]]] = {k: [] for k in nodes}
    for e in sorted(edges, key=lambda e: (-e.score, -e.n_inliers, e.i, e.j)):
        a, b = find(e.i), find(e.j)
        if a != b:
            parent[a] = b
            tree[e.i].append((e.j, e.H))  # maps i -> j
            tree[e.j].append((e.i, np.linalg.inv(e.H)))  # maps j -> i
    Hs = {ref: np.eye(3)}
    stack = [ref]
    while stack:
        a = stack.pop()
        for b, H_ab in tree[a]:
            if b not in Hs:
                # H_ab maps a -> b; so b -> ref is H_a->ref @ inv(H_ab)
                Hs[b] = normalize_h(Hs[a] @ np.linalg.inv(H_ab))
                stack.append(b)
    return Hs


# --- joint adjustment ----------------------------------------------------------------------------------


def _norm_matrix(size: tuple[int, int]) -> np.ndarray:
    """T (3, 3): pixels of a (w, h) image -> coordinates centred on the image, about [-1, 1]."""
    w, h = size
    s = 2.0 / max(w, h)
    return np.array([[s, 0.0, -s * (w - 1) / 2.0], [0.0, s, -s * (h - 1) / 2.0], [0.0, 0.0, 1.0]])


def edge_residuals(Hs: dict[int, np.ndarray], edges: Sequence[PairEdge]) -> np.ndarray:
    """Symmetric transfer residuals (4 * sum N,) px of every edge's inliers under image -> reference Hs.

    Per edge: (H_j^-1 H_i pts_i - pts_j) then (H_i^-1 H_j pts_j - pts_i), x and y interleaved.
    """
    return _residuals(Hs, edges, {}, {}, np.eye(3))[0]


def _residuals(Hs: dict[int, np.ndarray], edges: Sequence[PairEdge], col: dict[int, int], T: dict[int, np.ndarray],
               Tref_inv: np.ndarray, want_jac: bool = False) -> tuple[np.ndarray, list]:
    """Residuals (see edge_residuals) and, if asked, Jacobian blocks (row0, param column, (2n, 8) block).

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
                        J = sign * np.einsum("nkr,nc->nkrc", W, v).reshape(n, 2, 9)[:, :, :8]
                        blocks.append((row, col[k], J.reshape(2 * n, 8)))
            row += 2 * n
    return (np.concatenate(res) if res else np.zeros(0)), blocks


def _rms(r: np.ndarray) -> float:
    return float(np.sqrt(np.mean(r * r) * 2.0)) if len(r) else 0.0  # per point (x and y together)


def adjust_homographies(Hs: dict[int, np.ndarray], ref: int, edges: Sequence[PairEdge],
                        sizes: dict[int, tuple[int, int]], loss: str = DEFAULT_LOSS, f_scale: float = 2.0,
                        max_points_per_edge: int = DEFAULT_MAX_POINTS_PER_EDGE,
                        seed: int = 0) -> tuple[dict[int, np.ndarray], float, float]:
    """Jointly refine image -> reference Hs (3, 3) over all edges' inliers; the reference stays identity.

    8 parameters per non-reference image (G = Tref H T^-1 with G[2, 2] == 1, T normalising pixel
    coordinates, for conditioning); residuals: symmetric transfer errors in px (edge_residuals); robust
    ``loss`` with scale ``f_scale`` px; analytic sparse Jacobian; trust-region steps by LSMR (sparse
    matrix-vector products: no dense SVD of the tall Jacobian, slow when BLAS threads compete).
    Returns (refined Hs, RMS transfer error before, after) in px over the (subsampled, ``seed``) inliers;
    keeps the input when it does not improve.
    """
    from scipy.optimize import least_squares  # scipy loads only when a panorama is adjusted
    from scipy.sparse import csr_matrix

    if loss not in LOSS_CHOICES:
        raise ConfigError(f"loss={loss!r}: choose one of {', '.join(LOSS_CHOICES)}")
    rng = np.random.default_rng(seed)
    sub = []
    for e in edges:
        n = len(e.pts_i)
        keep = np.sort(rng.choice(n, max_points_per_edge, replace=False)) if n > max_points_per_edge else slice(None)
        sub.append(replace(e, pts_i=np.asarray(e.pts_i[keep], np.float64), pts_j=np.asarray(e.pts_j[keep], np.float64)))
    free = [k for k in sorted(Hs) if k != ref]
    col = {k: m for m, k in enumerate(free)}
    T = {k: _norm_matrix(sizes[k]) for k in Hs}
    Tref_inv = np.linalg.inv(T[ref])

    def unpack(x: np.ndarray) -> dict[int, np.ndarray]:
        out = {ref: np.eye(3)}
        for m, k in enumerate(free):
            out[k] = Tref_inv @ np.append(x[8 * m:8 * m + 8], 1.0).reshape(3, 3) @ T[k]
        return out

    x0 = np.concatenate([((G := T[ref] @ Hs[k] @ np.linalg.inv(T[k])) / G[2, 2]).ravel()[:8] for k in free]
                        or [np.zeros(0)])
    r0 = edge_residuals(unpack(x0), sub)
    if not free or not sub:
        return dict(Hs), _rms(r0), _rms(r0)
    n_rows, n_cols = len(r0), 8 * len(free)

    def jac(x: np.ndarray) -> Any:
        """Sparse (n_rows, n_cols) Jacobian: each residual depends on at most two images' 8 parameters."""
        blocks = _residuals(unpack(x), sub, col, T, Tref_inv, want_jac=True)[1]
        rows = np.concatenate([np.repeat(np.arange(r, r + len(B)), 8) for r, _, B in blocks])
        cols = np.concatenate([np.tile(np.arange(8 * c, 8 * c + 8), len(B)) for _, c, B in blocks])
        return csr_matrix((np.concatenate([B.ravel() for _, _, B in blocks]), (rows, cols)), shape=(n_rows, n_cols))

    sol = least_squares(lambda x: edge_residuals(unpack(x), sub), x0, jac=jac, loss=loss, f_scale=f_scale,
                        method="trf", tr_solver="lsmr", x_scale="jac", max_nfev=100)
    refined = unpack(sol.x)
    r1 = edge_residuals(refined, sub)
    if not np.all(np.isfinite(sol.x)) or not np.isfinite(_rms(r1)) or _rms(r1) > _rms(r0):
        return dict(Hs), _rms(r0), _rms(r0)
    return {k: normalize_h(H) for k, H in refined.items()}, _rms(r0), _rms(r1)


# --- projection choice -------------------------------------------------------------------------------


def _make_canvas(kind: str, Hs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], names: Sequence[str],
                 ref_size: tuple[int, int], focal: float | None, max_pixels: int) -> Canvas:
    proj = (Projection("plane") if kind == "plane" else
            Projection(kind, float(focal), ((ref_size[0] - 1) / 2.0, (ref_size[1] - 1) / 2.0)))
    return canvas_bounds(Hs, sizes, proj, names, max_pixels)


def choose_canvas(kind: str, Hs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], names: Sequence[str],
                  ref_size: tuple[int, int], focal: float | None, max_pixels: int,
                  max_stretch: float = DEFAULT_AUTO_MAX_STRETCH, rotating: bool = False) -> Canvas:
    """The canvas for ``kind``; for 'auto' see ``DEFAULT_PANORAMA_PROJECTION`` (``rotating``: a pair fixes a focal)."""
    if kind != "auto":
        return _make_canvas(kind, Hs, sizes, names, ref_size, focal, max_pixels)
    if rotating and len(sizes) > 1:
        try:
            return _make_canvas("spherical", Hs, sizes, names, ref_size, focal, max_pixels)
        except CanvasTooLargeError:
            pass  # the plane rule below decides, and names the image if it fails too
    area = float(sum(w * h for w, h in sizes))
    try:
        plane = _make_canvas("plane", Hs, sizes, names, ref_size, focal, max_pixels)
    except CanvasTooLargeError:
        plane = None
    if plane is not None and (plane.pixels <= max_stretch * area or len(sizes) < 2):
        return plane
    return _make_canvas("cylindrical", Hs, sizes, names, ref_size, focal, max_pixels)


# --- the pipeline --------------------------------------------------------------------------------------


def _warn(msg: str, sink: list[str]) -> None:
    sink.append(msg)
    warnings.warn(msg, stacklevel=3)


def read_inputs(inputs: Sequence[ImageLike], notes: list[str]) -> tuple[list[np.ndarray], list[str], list, list[int]]:
    """(images (H, W, 3) uint8, names, dropped [(name, reason)], each image's index in inputs) of the readable
    inputs with each side >= MIN_IMAGE_SIDE px; needs >= 2 of them."""
    if isinstance(inputs, (str, bytes, np.ndarray)) or not hasattr(inputs, "__len__"):
        raise ConfigError("paths_or_arrays: expected a list of image paths or arrays")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_images(list(inputs), min_side=MIN_IMAGE_SIDE)
    for w in caught:
        _warn(str(w.message), notes)
    dropped = []
    for s in loaded.skipped:
        name, _, reason = s.partition(": ")
        small = "too small" in reason
        dropped.append((name, reason.split(": ", 1)[-1] if small else f"unreadable: {reason}"))
    if len(loaded.images) < 2:
        got = f"got {len(loaded.images)}" + (f": {', '.join(loaded.names)}" if loaded.names else "")
        small = [n for n, r in dropped if r.startswith("too small")]
        bad = [n for n, r in dropped if not r.startswith("too small")]
        parts = [f"{len(bad)} unreadable: {', '.join(bad)}"] if bad else []
        if small:
            parts.append(f"{len(small)} too small, each side must be at least {MIN_IMAGE_SIDE} px: {', '.join(small)}")
        skipped = "; ".join(parts)
        raise StitchError(f"need at least 2 images, {got}" + (f" ({skipped})" if skipped else ""))
    return loaded.images, loaded.names, dropped, loaded.indices


def drop_duplicates(images: list[np.ndarray], names: list[str], dropped: list,
                    notes: list[str]) -> tuple[list[np.ndarray], list[str], list[int]]:
    """Images and names without exact duplicates (same shape and pixels), and the kept indices; each dropped
    one is recorded."""
    seen: dict[str, int] = {}
    keep: list[int] = []
    for k, img in enumerate(images):
        digest = hashlib.sha1(repr(img.shape).encode() + img.tobytes()).hexdigest()
        if digest in seen:
            reason = f"identical to {names[seen[digest]]}"
            dropped.append((names[k], reason))
            _warn(f"dropped {names[k]}: {reason}", notes)
        else:
            seen[digest] = k
            keep.append(k)
    return [images[k] for k in keep], [names[k] for k in keep], keep


def largest_component(n: int, edges: Sequence[PairEdge], names: Sequence[str],
                      why: dict[tuple[int, int], tuple[float, str]], dropped: list, notes: list[str]) -> list[int]:
    """Nodes of the largest connected component (ties: the one with the first image); others are dropped."""
    comps = _components(n, [(e.i, e.j) for e in edges])
    main = max(comps, key=len)
    for c in comps:
        if c is main:
            continue
        for k in c:
            tries = [(why[p][0], why[p][1], names[m]) for m in main if (p := (min(k, m), max(k, m))) in why]
            best = max(tries, default=(float("-inf"), "", ""))
            reason = "no reliable overlap with the rest of the panorama" + (
                f" (best pair: {best[1]} with {best[2]})" if math.isfinite(best[0]) else "")
            dropped.append((names[k], reason))
            _warn(f"dropped {names[k]}: {reason}", notes)
    return main


def stitch_images(paths_or_arrays: Sequence[ImageLike], *, preset: str = DEFAULT_PRESET, detector: str | None = None,
                  projection: str = DEFAULT_PANORAMA_PROJECTION, seed: int = 0,
                  work_megapix: float = DEFAULT_WORK_MEGAPIX, max_canvas_pixels: int = DEFAULT_MAX_CANVAS_PIXELS,
                  progress: ProgressFn | None = None, hooks: Any = None, masks: Sequence[MaskLike] | None = None,
                  **options: Any) -> Panorama:
    """Stitch paths or (H, W[, C]) arrays into a Panorama (see the module docstring for the pipeline).

    progress(done, total, label) is called as pairs are matched and strips composited; hooks (a
    stitch.debug.PipelineHooks) receives the intermediate results; masks: one feature mask per input (an
    (H, W) bool/uint8 array, a path, or None; see stitch.panorama.inputs). Other ``options`` (exposure, seam,
    blend, crop, scale, megapixels, timelapse, range_width, ...): see PanoramaConfig.from_options. Raises
    StitchError with < 2 readable images, NoOverlapError when no two images overlap, CanvasTooLargeError when
    the canvas would exceed ``max_canvas_pixels``.
    """
    t0 = time.perf_counter()
    cfg = PanoramaConfig.from_options(preset=preset, detector=detector, projection=projection, seed=seed,
                                      work_megapix=work_megapix, max_canvas_pixels=max_canvas_pixels, **options)
    notes: list[str] = []
    if cfg.compose.timelapse is not None:
        check_timelapse_dir(cfg.compose.timelapse, paths_or_arrays if isinstance(paths_or_arrays, (list, tuple)) else ())
    mask_list = load_masks(masks, len(paths_or_arrays) if hasattr(paths_or_arrays, "__len__") else 0)
    images, names, dropped, index = read_inputs(paths_or_arrays, notes)
    images, names, keep = drop_duplicates(images, names, dropped, notes)
    feature_masks = [check_mask(mask_list[index[k]], img.shape, name) for k, img, name in zip(keep, images, names)]
    n = len(images)
    sizes = [(img.shape[1], img.shape[0]) for img in images]

    # pairwise registration at the working resolution
    works = [to_work(img, cfg.work_megapix) for img in images]
    A = [work_scale_matrix(sizes[k], (w.shape[1], w.shape[0])) for k, w in enumerate(works)]
    work_masks = [work_mask(m, (w.shape[1], w.shape[0])) for m, w in zip(feature_masks, works)]
    raw, why = match_graph(works, names, cfg, progress, work_masks) if n > 1 else ([], {})
    release_free_memory()
    edges = [_pair_edge(res, i, j, A[i], A[j]) for i, j, res in raw]
    if hooks is not None:
        for i, j, res in raw:
            inl = np.asarray(res.inliers, bool)
            hooks.matches(names[i], names[j], works[i], works[j], res.matches.src_pts[inl], res.matches.dst_pts[inl])
    if n > 1 and not edges:
        raise NoOverlapError(f"no two images overlap: {', '.join(names)} (try preset='exhaustive' or "
                             "detector='asift', or check that the images show the same scene)")

    main = largest_component(n, edges, names, why, dropped, notes)
    edges = [e for e in edges if e.i in main and e.j in main]
    ref = choose_reference(main, edges)
    Hs = spanning_tree_homographies(main, edges, ref)
    rms0 = rms1 = None
    if edges and cfg.adjust:
        if progress is not None:
            progress(0, 1, f"adjusting {len(main) - 1} homographies over {len(edges)} pairs")
        scale = float(np.mean([A[k][0, 0] for k in main]))
        Hs, rms0, rms1 = adjust_homographies(Hs, ref, edges, {k: sizes[k] for k in main}, cfg.loss,
                                             cfg.loss_scale_px / scale, cfg.max_points_per_edge, cfg.seed)
    order = sorted(main)
    H_list = [Hs[k] for k in order]
    focal, rotating = None, False
    if cfg.projection != "plane" and edges:
        pair_hs = [(np.linalg.solve(Hs[e.j], Hs[e.i]), sizes[e.i], sizes[e.j]) for e in edges]
        focals = pair_focals(pair_hs)  # none: no pair behaves like a rotation (e.g. pure shifts)
        focal, rotating = estimate_focal(pair_hs, focals), bool(focals)
    elif cfg.projection != "plane":
        focal = float(sum(sizes[ref]))
    canvas = choose_canvas(cfg.projection, H_list, [sizes[k] for k in order], [names[k] for k in order],
                           sizes[ref], focal, cfg.max_canvas_pixels, rotating=rotating)
    del works
    kept = [images[k] for k in order]
    images.clear()  # only the kept images stay referenced while compositing
    comp = compose_panorama(kept, H_list, canvas, cfg.compose, [names[k] for k in order], hooks, progress)
    canvas = comp.canvas or canvas  # scaled for the output resolution
    offset = (canvas.offset[0] + comp.crop[0], canvas.offset[1] + comp.crop[1])
    return Panorama(
        image=comp.image, mask=comp.mask, homographies=H_list, names=[names[k] for k in order],
        dropped=dropped, reference=names[ref], projection=canvas.projection.kind, offset=offset,
        focal=focal if canvas.projection.kind != "plane" else None,
        edges=[(names[e.i], names[e.j], e.score, e.n_inliers) for e in edges],
        seconds=time.perf_counter() - t0, warnings=notes, rms_before=rms0, rms_after=rms1, canvas=canvas,
        crop=comp.crop, gains=comp.gains, bands=comp.bands, stage_seconds=comp.seconds, scale=comp.scale,
        filled=comp.filled, timelapse=comp.timelapse)
