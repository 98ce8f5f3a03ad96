"""Stage 6: panoramas. Pair graph, camera model, projection, warp and composite.

Pipeline of ``stitch_images`` (= ``register_images`` then ``render``; the public ``register`` and ``compose``
run the two halves apart, so cameras can be saved, edited and re-rendered without matching again):

1. read the inputs (unreadable files are skipped with a warning) and drop exact duplicates (same pixels);
2. register at a working resolution (about ``work_megapix`` MP per image); every homography is then
   re-expressed in full-resolution pixels;
3. choose the pairs (stitch.panorama.graph.shortlist: every pair for a few images, else a cheap
   first pass picks each image's likely neighbours) and screen them with the first feature level of the
   preset (``estimate_pair``, always from the image with the smaller content key, so the result does not
   depend on the input order); an edge is accepted when the pair's quality score is >= ``min_pair_score``
   and it has >= ``min_pair_inliers`` inliers. When the accepted graph falls apart, the pairs between its
   parts are retried with the preset's costlier levels (affine-simulated SIFT only with preset
   'exhaustive' or detector 'asift');
4. verify the graph (``verified_registration``, stitch.panorama.verify): the camera model is solved on every
   accepted pair; when it misses some of them, the pair matches that disagree with the placement most pair
   evidence agrees with are removed (repeated structure). Keep the largest connected component (another
   component of two or more images is another panorama, ``Registration.others``; lone images are dropped
   with a warning and a reason);
5. reference = the graph centre (fewest hops to every image; ties: most edges, largest total edge score,
   smallest content key);
6. the camera model (``model``, MODEL_CHOICES): 'rotation' (stitch.panorama.camera: a rotation and focal per
   image by bundle adjustment, wave correction, full 360-degree turns), 'homography' (free homographies
   chained along the maximum spanning tree and jointly refined, stitch.panorama.adjust) or 'scans' (the
   same with affine maps, for flat documents and maps). 'auto' takes the rotation model when the pairs
   determine a focal length (a rotating camera) and the projection is not 'plane', else the homographies;
   then, unless the images make a full turn, it refines one homography per image jointly in the rotation
   model's frame ('rotation+homography': the frame, focal, horizon and order invariance of the cameras,
   the fit of free homographies, which absorb lens distortion and a little parallax; why:
   docs/measurements.md, "pipeline"). A pair far off the solved
   model is removed and the model solved again; each image's placement is checked photometrically on the
   final model (stitch.panorama.placement), and one that disagrees with its neighbours is dropped and the
   model solved again; a model that still misses its pairs, or images that all disagree, is an error;
7. project (plane, cylindrical or spherical; 'auto', the default, picks spherical for a rotating camera,
   else the plane unless it stretches too much or a matrix sends part of an image through infinity),
   bound the canvas (a canvas above ``max_canvas_pixels`` is refused with CanvasTooLargeError naming the
   image whose matrix blows it up: it is never allocated). A full turn gets a canvas exactly 2 pi f wide
   whose wrap has no seam: the image crossing it is warped in both parts;
8. composite at the output resolution (stitch.panorama.resolution: the median photo keeps its own resolution,
   whichever image is the reference; ``scale`` / ``megapixels`` lower it, the canvas cap bounds it), one image
   and one strip at a time (stitch.compose.compose_panorama): exposure compensation (stitch.exposure), seam
   finding (stitch.seams), multi-band or feather blending (stitch.blend), and the crop to the largest rectangle
   inside the valid region (stitch.crop). Registration runs on 8-bit copies; compositing uses the inputs' full
   depth (a 16-bit panorama from 16-bit inputs), and an alpha channel's transparent pixels are no data (step 1
   reads them as a mask, stitch.io.Pixels). ``Panorama.save`` writes the file (stitch.panorama.output).

``hooks`` (a stitch.debug.PipelineHooks, e.g. stitch.debug.DebugDir) receives the accepted matches and every
compositing stage's output as the pipeline makes them; the CLI's ``--debug-dir`` is that.
"""

from __future__ import annotations

import gc
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from stitch.errors import CanvasTooLargeError, ConfigError, NoOverlapError, StitchError
from stitch.exif import ImageMeta, exif_focal_px, read_meta
from stitch.geometry import normalize_h, project, work_scale_matrix
from stitch.homography.config import DEFAULT_PRESET
from stitch.io import ImageLike, Pixels, image_name, load_images, load_pixels
from stitch.panorama.adjust import (
    ADJUST_MAX_STEPS,
    adjust_homographies,
    adjust_in_frame,
    affine_edges,
    refinement_pays,
)
from stitch.panorama.camera import (
    Camera,
    Registration,
    both_directions,
    image_center,
    loop_focal,
    pair_focal_estimates,
    pairs_close_turn,
    pinhole,
    solve_rotations,
)
from stitch.panorama.compose import compose_panorama
from stitch.panorama.config import (
    DEFAULT_AUTO_MAX_STRETCH,
    DEFAULT_PANORAMA_PROJECTION,
    DEFAULT_WORK_MEGAPIX,
    PanoramaConfig,
)
from stitch.panorama.graph import (
    Shortlist,
    WorkImages,
    choose_reference,
    match_graph,
    resolve_workers,
    shortlist,
    spanning_tree_homographies,
)
from stitch.panorama.inputs import (
    MIN_IMAGE_SIDE,
    MaskLike,
    check_timelapse_dir,
    load_masks,
    sequence_pairs,
)
from stitch.panorama.localwarp import LocalWarp, image_lines, local_warp, pair_matches
from stitch.panorama.output import DEFAULT_JPEG_QUALITY, write_panorama
from stitch.panorama.placement import MIN_PLACEMENT_SCORE, placement_scores
from stitch.panorama.rectangle import Mesh
from stitch.panorama.resolution import native_scales, typical_scale
from stitch.panorama.threads import in_order, keep_freed_memory, release_free_memory, thread_pool
from stitch.panorama.verify import (
    EDGE_FACTOR,
    EDGE_MIN_PX,
    RejectedEdge,
    edge_error,
    robust_edges,
    rotation_evidence,
    verify_edges,
    weak_bridges,
)
from stitch.panorama.viewgraph import PairEdge, components, components_of
from stitch.panorama.warp import (
    DEFAULT_MAX_CANVAS_PIXELS,
    Canvas,
    Projection,
    canvas_bounds,
    check_turn,
    estimate_focal,
    pair_focals,
)
from stitch.panorama.workset import InputScanner, Scan, lazy_inputs, work_loader
from stitch.profile import profiled
from stitch.types import ProgressFn


@dataclass
class Panorama:
    """A stitched panorama.

    image (H, W, 3) BGR, uint8 (uint16 when an input is 16-bit), black outside ``mask`` (H, W) bool (both disk-backed
    np.memmap arrays when the canvas was composited tile by tile, stitch.panorama.tiles). ``cameras`` (a camera.Registration: one
    Camera per image, plus the model and the virtual camera) is what ``stitch.compose`` re-renders.
    ``homographies[k]`` (3, 3) float64 maps full-resolution pixels of image ``names[k]`` to the *reference
    plane*: the pixel frame of the panorama's virtual camera (model 'rotation': focal ``cameras.focal``,
    principal point ``cameras.center``, after wave correction), or of the reference image (homography
    models). They map into the panorama itself only for projection 'plane' (``canvas_homography``); in
    every projection ``to_panorama(k, pts)`` maps image pixels to panorama pixels. Pixel (c, r) of ``image``
    sits at projected coordinates (c + offset[0], r + offset[1]) (the crop included: ``canvas`` is the
    uncropped frame, ``crop`` the image's box on it); for cylindrical/spherical they are ``focal`` * angles
    (see stitch.panorama.warp). full_turn: a 360-degree panorama, exactly 2 pi focal wide. ``scale`` s: the
    canvas is the reference plane's scaled by s (stitch.panorama.resolution: the median photo's resolution,
    times ``scale=`` or lowered by ``megapixels=``): projected coordinates are s times the above, and ``focal``
    stays the reference plane's focal. ``filled``: pixels the 'fill' crop invented (False in ``mask``);
    ``timelapse``: the frame files written, one per kept image; ``metadata``: the reference photo's (None for
    an array), carried into the file with ``jpeg_quality`` by ``save``. ``mesh``: under crop 'warp' (rectangling),
    the mesh from uncropped canvas pixels to panorama pixels; then ``crop`` is the valid region's box on the canvas,
    the pixel-position rule above holds only on the canvas, and ``to_panorama`` goes through the mesh. ``local_warp`` (option
    local_warp): the displacement fields that moved each image after the global model (stitch.panorama.localwarp;
    also on ``canvas.local``), which ``to_panorama`` applies and ``canvas_homography`` (the global model alone)
    does not.
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
    cameras: Registration | None = None
    full_turn: bool = False
    model: str = "homography"
    metadata: ImageMeta | None = None
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    mesh: Mesh | None = None
    local_warp: LocalWarp | None = None

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``image`` to path (stitch.panorama.output.write_panorama: tagged, the reference photo's
        metadata, JPEG at ``jpeg_quality``, 16 bits where the format holds them); returns the path."""
        return write_panorama(path, self.image, self.metadata, self.jpeg_quality)

    @property
    def placement(self) -> dict[str, float | None]:
        """Per kept image: its photometric agreement with its neighbours on the final model (Registration.placement)."""
        return {} if self.cameras is None else dict(self.cameras.placement)

    @property
    def rejected(self) -> list[tuple[str, str, str]]:
        """Pair matches removed as inconsistent with the rest: (image a, image b, reason)."""
        return [] if self.cameras is None else list(self.cameras.rejected)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the panorama in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])

    def canvas_homography(self, k: int) -> np.ndarray:
        """H (3, 3) mapping image k's full-res pixels to canvas pixels (projection 'plane' only; the global model: a
        local warp's displacement is not in it, see to_panorama)."""
        if self.projection != "plane":
            raise ConfigError(f"canvas_homography: projection is {self.projection!r}, not a homography")
        T = np.array([[1.0, 0, -self.offset[0]], [0, 1.0, -self.offset[1]], [0, 0, 1.0]])
        return normalize_h(T @ np.diag([self.scale, self.scale, 1.0]) @ self.homographies[k])

    def to_panorama(self, k: int | str, pts: np.ndarray) -> np.ndarray:
        """Full-res pixels (N, 2) of image k (index or name) -> panorama pixels (N, 2) (NaN where unmapped).

        Works in every projection and output scale: H_k to the reference plane (scaled by ``scale``), the
        projection, the local warp's displacement (``local_warp``), then the canvas offset (a full turn wraps u
        into the canvas width before the crop), then the 'warp' crop's mesh when there is one.
        """
        k = self.names.index(k) if isinstance(k, str) else int(k)
        pts = np.asarray(pts, np.float64).reshape(-1, 2)
        proj = self.canvas.projection if self.canvas is not None else Projection("plane")
        H = np.diag([self.scale, self.scale, 1.0]) @ self.homographies[k]  # the canvas's plane: scaled by s
        uv, valid = proj.forward(np.hstack([pts, np.ones((len(pts), 1))]) @ H.T)
        field = self.canvas.displacement(self.canvas.sources.index(k) if self.canvas.sources else k) \
            if self.canvas is not None else None
        if field is not None:  # the local warp moves the point, in the canvas's (scaled) projected frame
            uv[valid] = field.moved(uv[valid])
        if proj.turn and self.canvas is not None:
            c0 = self.canvas.offset[0]
            uv[:, 0] = (uv[:, 0] - c0) % self.canvas.size[0] + c0
        out = uv - np.asarray(self.offset)
        if self.mesh is not None and self.canvas is not None:
            out = self.mesh.forward(uv - np.asarray(self.canvas.offset))
        out[~valid] = np.nan
        return out

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
            "model": self.model,
            "full_turn": self.full_turn,
            "cameras": None if self.cameras is None else [c.to_dict() for c in self.cameras.cameras],
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
            "edge_errors": [] if self.cameras is None else list(self.cameras.edge_errors),
            "placement": {} if self.cameras is None else {k: None if v is None else round(v, 4)
                                                          for k, v in self.cameras.placement.items()},
            "rejected": [] if self.cameras is None else [{"a": a, "b": b, "reason": r}
                                                         for a, b, r in self.cameras.rejected],
            "other_panoramas": [] if self.cameras is None else [list(o) for o in self.cameras.others],
            "local_warp": None if self.local_warp is None else local_warp_summary(self.local_warp),
        }


def local_warp_summary(lw: LocalWarp) -> dict[str, Any]:
    """JSON-ready figures of a local warp: matches used / dropped, residual (median, p95) px before and after, the
    largest displacement of each image."""
    return {"matches": lw.used, "removed": lw.removed, "incoherent": lw.incoherent,
            "residual_before": [round(x, 3) for x in lw.before], "residual_after": [round(x, 3) for x in lw.after],
            "max_displacement": [None if f is None else round(float(np.abs(f.forward).max()), 3) for f in lw.fields]}


# --- working resolution ------------------------------------------------------------------------------


def _to_full_pts(pts: np.ndarray, A: np.ndarray) -> np.ndarray:
    return project(np.linalg.inv(A), pts)


# --- pair graph --------------------------------------------------------------------------------------


def pair_edge(res: Any, i: int, j: int, A_i: np.ndarray, A_j: np.ndarray) -> PairEdge:
    """The PairEdge of a working-resolution pair result, in full-res px (A_k: full -> working, (3, 3))."""
    H = normalize_h(np.linalg.inv(A_j) @ res.H @ A_i)
    inl = np.asarray(res.inliers, bool)
    return PairEdge(i, j, H, float(res.score), int(inl.sum()),
                    _to_full_pts(res.matches.src_pts[inl], A_i), _to_full_pts(res.matches.dst_pts[inl], A_j),
                    _to_full_pts(res.matches.src_pts[~inl], A_i), _to_full_pts(res.matches.dst_pts[~inl], A_j))


# --- joint adjustment ----------------------------------------------------------------------------------


# --- projection choice -------------------------------------------------------------------------------


def _make_canvas(kind: str, Hs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], names: Sequence[str],
                 center: tuple[float, float], focal: float | None, max_pixels: int, turn: bool = False) -> Canvas:
    proj = (Projection("plane") if kind == "plane" else Projection(kind, float(focal), center, turn))
    return canvas_bounds(Hs, sizes, proj, names, max_pixels)


def choose_canvas(kind: str, Hs: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], names: Sequence[str],
                  ref_size: tuple[int, int], focal: float | None, max_pixels: int,
                  max_stretch: float = DEFAULT_AUTO_MAX_STRETCH, rotating: bool = False, turn: bool = False,
                  center: tuple[float, float] | None = None) -> Canvas:
    """The canvas for ``kind``; for 'auto' see ``DEFAULT_PANORAMA_PROJECTION`` (``rotating``: a pair fixes a focal).

    ``turn``: a full 360-degree turn (curved projections get a periodic canvas; 'auto' takes spherical);
    ``center``: the curved projections' principal point (default: the centre of a ``ref_size`` image).
    """
    center = center if center is not None else image_center(ref_size)
    if kind != "auto":
        return _make_canvas(kind, Hs, sizes, names, center, focal, max_pixels, turn and kind != "plane")
    if turn:
        return _make_canvas("spherical", Hs, sizes, names, center, focal, max_pixels, True)
    if rotating and len(sizes) > 1:
        try:
            return _make_canvas("spherical", Hs, sizes, names, center, focal, max_pixels)
        except CanvasTooLargeError:
            pass  # the plane rule below decides, and names the image if it fails too
    area = float(sum(w * h for w, h in sizes))
    try:
        plane = _make_canvas("plane", Hs, sizes, names, center, focal, max_pixels)
    except CanvasTooLargeError:
        plane = None
    if plane is not None and (plane.pixels <= max_stretch * area or len(sizes) < 2):
        return plane
    return _make_canvas("cylindrical", Hs, sizes, names, center, focal, max_pixels)


# --- the pipeline --------------------------------------------------------------------------------------


def _warn(msg: str, sink: list[str]) -> None:
    sink.append(msg)
    warnings.warn(msg, stacklevel=3)


@profiled("read")
def read_inputs(inputs: Sequence[ImageLike], notes: list[str], keep: Callable[[int, str, Pixels], Any] | None = None,
                workers: int = 1) -> tuple[list[Any], list[str], list, list[int]]:
    """(images as io.Pixels: (H, W, 3) uint8, or uint16 from 16-bit inputs, and the alpha's valid mask; names,
    dropped [(name, reason)], each image's index in inputs) of the readable inputs with each side >=
    MIN_IMAGE_SIDE px; needs >= 2 of them. ``keep``: what is kept of each image instead of its Pixels
    (stitch.io.load_images), run on the ``workers`` threads that decode the files, at most that many files at a
    time (the result does not depend on it)."""
    if isinstance(inputs, (str, bytes, np.ndarray)) or not hasattr(inputs, "__len__"):
        raise ConfigError("paths_or_arrays: expected a list of image paths or arrays")
    inputs = list(inputs)
    with warnings.catch_warnings(record=True) as caught, thread_pool(workers, len(inputs)) as pool:
        warnings.simplefilter("always")
        loaded = load_images(inputs, min_side=MIN_IMAGE_SIDE, depth=True, keep=keep,
                             ordered_map=lambda fn, n: in_order(fn, n, pool, workers))
    for w in caught:
        _warn(str(w.message), notes)
    dropped = [(s.name, s.reason if s.too_small else f"unreadable: {s.reason}") for s in loaded.skipped]
    if len(loaded.images) < 2:
        got = f"got {len(loaded.images)}" + (f": {', '.join(loaded.names)}" if loaded.names else "")
        small = [s.name for s in loaded.skipped if s.too_small]
        bad = [s.name for s in loaded.skipped if not s.too_small]
        parts = [f"{len(bad)} unreadable: {', '.join(bad)}"] if bad else []
        if small:
            parts.append(f"{len(small)} too small, each side must be at least {MIN_IMAGE_SIDE} px: {', '.join(small)}")
        skipped = "; ".join(parts)
        raise StitchError(f"need at least 2 images, {got}" + (f" ({skipped})" if skipped else ""))
    kept = loaded.images if keep is not None else [Pixels(img, ok) for img, ok in zip(loaded.images, loaded.valid)]
    return kept, loaded.names, dropped, loaded.indices


def drop_duplicates(scans: list[Scan], names: list[str], dropped: list, notes: list[str]
                    ) -> tuple[list[int], list[tuple[str, str]]]:
    """The indices of the scans (workset.Scan) that repeat no earlier image (the same content key), and each
    duplicate's (name, the kept image it repeats); each dropped one is recorded."""
    keep, same, first = [], [], {}
    for k, sc in enumerate(scans):
        if sc.key not in first:
            first[sc.key] = names[k]
            keep.append(k)
            continue
        earlier = first[sc.key]
        reason = "given twice (the same image)" if earlier == names[k] else f"identical to {earlier}"
        same.append((names[k], earlier))
        dropped.append((names[k], reason))
        _warn(f"dropped {names[k]}: {reason}", notes)
    return keep, same


#: The first camera model (on every accepted pair) stops its adjustment after this many steps when its model then
#: misses an edge by more than FIRST_SOLVE_MISFIT times what agreement allows (Solved.misfit): the graph is then
#: verified, and the model solved again, in any case; a model that misses by less is solved in full (why these
#: values: docs/measurements.md, "pipeline").
FIRST_SOLVE_STEPS = 15
FIRST_SOLVE_MISFIT = 10.0
#: How the warnings name the panoramas after the first (the folder's other scenes).
ORDINALS = ("second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "next")


def _drop(name: str, reason: str, dropped: list, notes: list[str]) -> None:
    """Record an image dropped from the panorama, with a warning in the one format of every drop."""
    dropped.append((name, reason))
    _warn(f"dropped {name}: {reason}", notes)


def largest_component_nodes(nodes: Sequence[int], edges: Sequence[PairEdge]) -> list[int]:
    """The nodes of the largest connected component of ``nodes`` under ``edges`` (ties: the smallest node)."""
    return max(components_of(nodes, edges), key=len)


def lost_link_reason(k: int, rejected: Sequence[RejectedEdge], names: Sequence[str]) -> str:
    """Why image k lost its place: the rejected pair matches that linked it to the rest."""
    own = [r for r in rejected if k in (r.edge.i, r.edge.j)]
    if not own:
        return "no reliable overlap with the rest of the panorama"
    links = "; ".join(f"{names[r.edge.other(k)]} ({r.reason})" for r in own[:3])
    return f"its only pair match{'es' if len(own) > 1 else ''} with the rest, {links}, disagreed with the panorama"


def largest_component(n: int, edges: Sequence[PairEdge], names: Sequence[str],
                      why: dict[tuple[int, int], tuple[float, str]], dropped: list, notes: list[str],
                      rejected: Sequence[RejectedEdge] = (), others: list[list[str]] | None = None) -> list[int]:
    """Nodes of the largest connected component (ties: the one with the first image); others are dropped, and
    the names of each other component of two or more images are appended to ``others`` (another panorama)."""
    comps = components(n, [(e.i, e.j) for e in edges])
    main = max(comps, key=len)
    for c in comps:
        if c is main:
            continue
        if len(c) > 1 and others is not None:
            group = [names[k] for k in c]
            others.append(group)
            nth = ORDINALS[min(len(others), len(ORDINALS)) - 1]
            _warn(f"{len(c)} photos form a {nth} panorama, not stitched with the first: {', '.join(group)} "
                  "(--all writes it too)", notes)
            for k in c:
                dropped.append((names[k], f"in the {nth} panorama"))
            continue
        for k in c:
            if any(k in (r.edge.i, r.edge.j) for r in rejected):
                _drop(names[k], lost_link_reason(k, rejected, names), dropped, notes)
                continue
            tries = [(why[p][0], why[p][1], names[m]) for m in main if (p := (min(k, m), max(k, m))) in why]
            best = max(tries, default=(float("-inf"), "", ""))
            reason = "no reliable overlap with the rest of the panorama" + (
                f" (best pair: {best[1]} with {best[2]})" if math.isfinite(best[0]) else "")
            _drop(names[k], reason, dropped, notes)
    return main


def _exif_focals(inputs: Sequence[ImageLike], source: Sequence[int], sizes: Sequence[tuple[int, int]],
                 nodes: Sequence[int]) -> dict[int, float]:
    """EXIF focal (px) per image k in ``nodes`` whose input (``inputs[source[k]]``) is a path that has one."""
    out = {}
    for k in nodes:
        src = inputs[source[k]]
        if not isinstance(src, np.ndarray) and (f := exif_focal_px(src, sizes[k])) is not None:
            out[k] = f
    return out


def _homography_model(main: list[int], edges: list[PairEdge], ref: int, sizes: list[tuple[int, int]],
                      keys: list[str], cfg: PanoramaConfig, A: list[np.ndarray], affine: bool
                      ) -> tuple[dict[int, np.ndarray], float | None, float | None]:
    """Image -> reference Hs of the homography (or, ``affine``, scans) model, with RMS before/after."""
    tree_edges = affine_edges(edges) if affine else edges
    Hs = spanning_tree_homographies(main, tree_edges, ref, keys)
    if not (edges and cfg.adjust):
        return Hs, None, None
    scale = float(np.mean([A[k][0, 0] for k in main]))
    return adjust_homographies(Hs, ref, edges, {k: sizes[k] for k in main}, cfg.loss, cfg.loss_scale_px / scale,
                               cfg.max_points_per_edge, cfg.seed, affine=affine)


def verify_graph(edges: list[PairEdge], n: int, sizes: list[tuple[int, int]], A: list[np.ndarray],
                 cfg: PanoramaConfig, focal: float | None = None, keys: Sequence[str] | None = None
                 ) -> tuple[list[PairEdge], list[RejectedEdge]]:
    """verify_edges on the accepted pairs, with relative rotations when the camera model may be rotations and
    the pairs determine a focal, and with homographies; the placement that more pair evidence agrees with wins
    (a camera that shifts is no rotation, and homographies chained round a full turn pass through infinity).

    ``focal``: px, the rotations' focal (the adjusted model's on every pair); default the median pair estimate;
    either corrected by the full turns the pairs of the largest component close (camera.loop_focal). A placement
    chained round a turn of many photos turns each step by an angle as wrong as its focal: 2 % off over 40 steps
    of 9 degrees is 7 degrees, and the true loop-closing matches would miss; the model solved on every pair
    is itself pulled off by the wrong pairs that make verification necessary. ``keys``: content keys (ties).
    With a focal, both weigh each pair by its ``rotation_evidence`` (look-alikes fit no rotation as well), so their
    objectives compare."""
    if not cfg.verify or len(edges) < 3:
        return edges, []
    scale = {k: float(A[k][0, 0]) for k in range(n)}
    tries = []
    evidence = None
    if cfg.model in ("auto", "rotation") and cfg.projection != "plane":
        focals = pair_focal_estimates(edges, dict(enumerate(sizes)))
        if focals:
            f = focal or float(np.median(focals))
            main = largest_component_nodes(range(n), edges)
            sub = [e for e in edges if e.i in main and e.j in main]
            f = loop_focal(main, sub, choose_reference(main, sub, keys), dict(enumerate(sizes)), f, keys) or f
            K = {k: pinhole(f, image_center(size)) for k, size in enumerate(sizes)}
            evidence = rotation_evidence(edges, K, scale)
            tries.append(verify_edges(range(n), edges, K, scale, dict(enumerate(sizes)), seed_rng=cfg.seed,
                                      evidence=evidence))
    if not tries or tries[0][1]:  # followed only as far as it could match the rotations' objective
        homographies = verify_edges(range(n), edges, None, scale, dict(enumerate(sizes)), seed_rng=cfg.seed,
                                    evidence=evidence, bar=tries[0][2] if tries else None)
        tries += [homographies] if homographies is not None else []
    kept, rejected, _ = max(tries, key=lambda t: (t[2], -len(t[1])))
    return kept, rejected


@dataclass
class GraphInputs:
    """What the camera model is solved from, besides the edges: per image its name, size (w, h), content key and
    full -> working scale A (3, 3); the config, the warning sink, the EXIF focals of a node list, progress."""

    names: list[str]
    sizes: list[tuple[int, int]]
    keys: list[str]
    A: list[np.ndarray]
    cfg: PanoramaConfig
    notes: list[str]
    exif: Callable[[Sequence[int]], dict[int, float]]
    progress: ProgressFn | None = None

    def scale(self, nodes: Sequence[int]) -> float:
        """Mean working px per full-resolution px over ``nodes``."""
        return float(np.mean([self.A[k][0, 0] for k in nodes]))


def rotation_registration(g: GraphInputs, main: list[int], edges: list[PairEdge], ref: int,
                          max_steps: int = ADJUST_MAX_STEPS) -> tuple[Registration, bool] | None:
    """(the rotating-camera model of ``main`` (camera.solve_rotations; 'auto' refines homographies in its frame
    unless the images make a full turn), final: False when a ``max_steps`` below ADJUST_MAX_STEPS ran out before
    the adjustment converged, and the refinement was not tried), or None when no pair determines a focal length."""
    cfg, order = g.cfg, sorted(main)
    scale = g.scale(main)
    if g.progress is not None:
        g.progress(0, 1, f"adjusting {len(main)} cameras over {len(edges)} pairs")
    geo = solve_rotations(main, edges, ref, {k: g.sizes[k] for k in main}, g.names, g.keys, g.exif(main), cfg.loss,
                          cfg.loss_scale_px / scale, cfg.max_points_per_edge, cfg.seed, cfg.wave_correct, cfg.adjust,
                          max_steps)
    if geo is None:
        return None
    cams = [geo.cameras[k] for k in order]
    reg = Registration(cams, "rotation", geo.focal, geo.center, g.names[ref], geo.full_turn, True, geo.wave,
                       geo.rms_before, geo.rms_after)
    if not geo.converged and max_steps < ADJUST_MAX_STEPS:
        return reg, False
    if cfg.model == "auto" and cfg.adjust and not geo.full_turn:
        # the homographies of the camera model refined jointly, in its (wave-corrected) frame: 8 parameters
        # per image absorb what rotations cannot (lens distortion, a little parallax), as before the
        # camera model; a full turn keeps the pure rotations (no plane holds it), and so does a refinement that
        # moves images far for little gain (adjust.refinement_pays: a narrow open sweep drifts)
        sizes = {k: g.sizes[k] for k in main}
        refined = adjust_in_frame(geo.homographies, ref, edges, sizes, cfg.loss, cfg.loss_scale_px / scale,
                                  cfg.max_points_per_edge, cfg.seed)
        if refined is not None and refinement_pays(geo.homographies, refined[0], sizes, refined[1], refined[2]):
            for c, k in zip(cams, order):
                c.H = refined[0][k]
            reg.model, reg.rms_after = "rotation+homography", refined[2]
    return reg, True


def homography_registration(g: GraphInputs, main: list[int], edges: list[PairEdge], ref: int,
                            affine: bool) -> Registration:
    """The homography model of ``main`` (or, ``affine``, the scans model), with a focal for curved projections."""
    cfg, order, sizes = g.cfg, sorted(main), g.sizes
    Hs, rms0, rms1 = _homography_model(main, edges, ref, sizes, g.keys, cfg, g.A, affine)
    focal, rotating = None, False
    if cfg.projection != "plane" and edges and not affine:
        rel = [replace(e, H=np.linalg.solve(Hs[e.j], Hs[e.i])) for e in edges]
        pairs = both_directions(rel, {k: sizes[k] for k in main})
        focals = pair_focals(pairs)  # none: no pair behaves like a rotation (e.g. shifts)
        focal, rotating = estimate_focal(pairs, focals), bool(focals)
    elif cfg.projection != "plane":
        focal = float(sum(sizes[ref]))
    cams = [Camera(g.names[k], sizes[k], focal or float(sum(sizes[k])), np.eye(3), H=Hs[k]) for k in order]
    return Registration(cams, "scans" if affine else "homography", focal,
                        image_center(sizes[ref]), g.names[ref],
                        rotating=rotating, rms_before=rms0, rms_after=rms1)


def solve_model(g: GraphInputs, main: list[int], edges: list[PairEdge],
                max_steps: int = ADJUST_MAX_STEPS) -> tuple[Registration, bool]:
    """Step 6 of the module docstring on the images ``main`` and their ``edges``: (the Registration, final: False
    when the rotations' adjustment ran out of a ``max_steps`` below ADJUST_MAX_STEPS; the homography model always
    is)."""
    ref = choose_reference(main, edges, g.keys)
    model = g.cfg.model
    if model == "auto":
        model = "homography" if g.cfg.projection == "plane" else "rotation"
    if model == "rotation" and edges:
        got = rotation_registration(g, main, edges, ref, max_steps)
        if got is not None:
            return got
        if g.cfg.model == "rotation" and not any("no pair determines a focal" in w for w in g.notes):
            _warn("model='rotation': no pair determines a focal length (the images look shifted, not turned); "
                  "used the homography model", g.notes)
    return homography_registration(g, main, edges, ref, affine=model == "scans"), True


def edge_errors(reg: Registration, g: GraphInputs, edges: Sequence[PairEdge]) -> list[float]:
    """Each edge's median transfer error (px, working resolution) under the registration's homographies."""
    Hs = dict(zip(reg.names, reg.homographies()))
    return [edge_error(e, Hs[g.names[e.i]], Hs[g.names[e.j]], 0.5 * (g.A[e.i][0, 0] + g.A[e.j][0, 0])) for e in edges]


@dataclass
class Solved:
    """A solved model: the images (``nodes``) and ``edges`` it was solved on, the Registration and each edge's
    error (px, working resolution)."""

    nodes: list[int]
    edges: list[PairEdge]
    reg: Registration
    errors: list[float]
    final: bool = True  # False: solved with fewer steps than the adjustment needed (a draft, never reused)

    def misfit(self) -> float:
        """The largest edge error over what ``agrees`` allows (0 without edges): at most 1 when the model agrees."""
        errs = np.asarray(self.errors)
        if len(errs) == 0:
            return 0.0
        return float(errs.max()) / max(EDGE_MIN_PX, EDGE_FACTOR * min(float(np.median(errs)), EDGE_MIN_PX))

    def agrees(self) -> bool:
        """True when the model fits each of its edges: none above EDGE_MIN_PX px at the working resolution and
        EDGE_FACTOR times the median edge, nor above EDGE_FACTOR * EDGE_MIN_PX."""
        return self.misfit() <= 1.0


def solve_component(g: GraphInputs, nodes: Sequence[int], edges: Sequence[PairEdge],
                    last: Solved | None = None, max_steps: int = ADJUST_MAX_STEPS) -> Solved:
    """The model of the largest connected component of ``nodes`` under ``edges`` (``last`` when it was solved on
    the same images and edges, and final); ``max_steps``: the adjustment's budget (solve_model)."""
    keep = largest_component_nodes(nodes, edges)
    sub = [e for e in edges if e.i in keep and e.j in keep]
    if (last is not None and last.final and last.nodes == keep
            and [id(e) for e in last.edges] == [id(e) for e in sub]):
        return last
    reg, done = solve_model(g, keep, sub, max_steps)
    return Solved(keep, sub, reg, edge_errors(reg, g, sub), done)


@profiled("camera model")
def verified_registration(g: GraphInputs, edges: list[PairEdge], why: dict, dropped: list,
                          thumbs: list[np.ndarray]) -> Registration:
    """Steps 4-6 with the checks of stitch.panorama.verify: the view graph verified, the largest component
    solved, edges far off the solved model removed (solving again), and every image's placement checked
    photometrically (an image that disagrees is dropped, solving again)."""
    n, names, cfg = len(g.names), g.names, g.cfg
    # the camera model on every pair first: when it fits each of them, no pair match disagrees with the rest and
    # the graph is kept whole (a full turn's loop-closing pair fixes its focal, which no chain of pairs does).
    # A look-alike pair that the model misses by hundreds of px makes its adjustment crawl, and the graph is
    # verified either way: that draft stops after FIRST_SOLVE_STEPS
    checked = cfg.verify and len(edges) >= 3
    last = solve_component(g, range(n), edges, max_steps=FIRST_SOLVE_STEPS if checked else ADJUST_MAX_STEPS)
    if not last.final and last.misfit() <= FIRST_SOLVE_MISFIT:
        last = solve_component(g, range(n), edges)
    rejected: list[RejectedEdge] = []
    if checked and not last.agrees():
        focal = last.reg.focal if last.reg.model.startswith("rotation") else None
        edges, rejected = verify_graph(edges, n, g.sizes, g.A, cfg, focal, g.keys)
    if cfg.verify and (weak := weak_bridges(range(n), edges)):
        cut = {id(r.edge) for r in weak}
        edges = [e for e in edges if id(e) not in cut]
        rejected += weak
    others: list[list[str]] = []
    main = largest_component(n, edges, names, why, dropped, g.notes, rejected, others)
    edges = [e for e in edges if e.i in main and e.j in main]

    def solve(sub: list[PairEdge]) -> dict[int, float]:
        """Residual per position in ``sub`` of the edges the model of its largest component holds."""
        nonlocal last
        last = solve_component(g, main, sub, last)
        at = {id(e): k for k, e in enumerate(sub)}
        return {at[id(e)]: x for e, x in zip(last.edges, last.errors)}

    for _ in range(len(main)):
        if cfg.verify and len(edges) > 1:
            removed = robust_edges(edges, solve)[1]
        else:
            solve(edges)
            removed = []
        rejected += removed
        reg, edges, nodes = last.reg, last.edges, last.nodes
        for k in sorted(set(main) - set(nodes)):
            _drop(names[k], lost_link_reason(k, rejected, names), dropped, g.notes)
        main = nodes
        scores = placement_scores(reg, [thumbs[k] for k in sorted(main)]) if cfg.verify else {}
        bad = [nm for nm, v in scores.items() if v is not None and v < MIN_PLACEMENT_SCORE]
        reg.placement = scores
        if not bad:
            break
        if len(main) - len(bad) < 2:
            raise StitchError("no consistent panorama: the photos disagree with each other where the model lays "
                              f"them (placement scores {', '.join(f'{nm} {scores[nm]:.2f}' for nm in bad)}; "
                              "repeated structure?)")
        worst = min(bad, key=lambda nm: scores[nm])
        k = names.index(worst)
        _drop(worst, f"placed where it disagrees with its neighbours (placement score {scores[worst]:.2f}, "
              f"below {MIN_PLACEMENT_SCORE})", dropped, g.notes)
        rest = largest_component_nodes([m for m in main if m != k], [e for e in edges if k not in (e.i, e.j)])
        edges = [e for e in edges if e.i in rest and e.j in rest]
        for m in sorted(set(main) - set(rest) - {k}):
            _drop(names[m], f"its only link to the rest was {worst}, which was dropped", dropped, g.notes)
        main = rest
    errs = last.errors
    worst_edges = sorted(zip(errs, edges), key=lambda t: -t[0])
    if cfg.verify and worst_edges and worst_edges[0][0] > EDGE_FACTOR * EDGE_MIN_PX:
        off = ", ".join(f"{names[e.i]}-{names[e.j]} by {x:.0f} px" for x, e in worst_edges[:3])
        raise StitchError(f"no consistent panorama: the camera model misses pair matches ({off} at the working "
                          "resolution; repeated structure?)")
    reg.edges = [(names[e.i], names[e.j], e.score, e.n_inliers) for e in edges]
    reg.edge_errors = [round(float(x), 3) for x in errs]
    reg.rejected = [(names[r.edge.i], names[r.edge.j], r.reason) for r in rejected]
    reg.others = others
    reg.matches = [pair_matches(e, names) for e in edges]
    if rejected:
        pairs = ", ".join(f"{names[r.edge.i]}-{names[r.edge.j]}" for r in rejected[:8])
        more = f" and {len(rejected) - 8} more" if len(rejected) > 8 else ""
        _warn(f"{len(rejected)} pair match{'es' if len(rejected) > 1 else ''} rejected as inconsistent with the "
              f"rest (repeated structure?): {pairs}{more}", g.notes)
    return reg


@dataclass
class Screening:
    """Steps 1-3 of the module docstring: the kept inputs and the view graph of their accepted pairs, unverified.

    ``images`` (H, W, 3) uint8, or uint16 from 16-bit inputs, at full resolution (exact duplicates dropped; none
    when ``lazy``: stitch.panorama.workset), each with its alpha's ``valid`` mask (H, W) bool or None
    (io.Pixels; None when ``lazy``), their ``names``, content ``keys``, ``sizes`` (w, h), full -> working scales ``A`` (3, 3),
    ``thumbs`` (gray, for the placement check) and ``source`` (each one's index in the inputs); ``pairs``: the
    pairs screened (i < j); ``edges``: the accepted ones (full-resolution px); ``why``: a rejected pair's (score
    or -inf, reason); ``dropped``: the inputs left out, (name, reason); ``duplicates``: (name, the kept image it
    repeats); ``notes``: the warnings.
    """

    images: list[np.ndarray]
    valid: list[np.ndarray | None]
    names: list[str]
    keys: list[str]
    sizes: list[tuple[int, int]]
    A: list[np.ndarray]
    source: list[int]
    thumbs: list[np.ndarray]
    pairs: list[tuple[int, int]]
    edges: list[PairEdge]
    why: dict[tuple[int, int], tuple[float, str]]
    dropped: list[tuple[str, str]]
    duplicates: list[tuple[str, str]]
    notes: list[str]
    lazy: bool = False


def screen_pairs(paths_or_arrays: Sequence[ImageLike], cfg: PanoramaConfig, progress: ProgressFn | None = None,
                 hooks: Any = None, masks: Sequence[MaskLike] | None = None, lazy: bool | None = None) -> Screening:
    """Steps 1-3 of the module docstring (read, drop duplicates, choose and screen the pairs): the view graph
    the camera model is solved from. masks: one feature mask per input (see stitch_images), combined with the
    image's alpha (its valid mask). ``lazy``: keep no image, reading the working images again from their files
    (stitch.panorama.workset; default: workset.lazy_inputs)."""
    notes: list[str] = []
    mask_list = load_masks(masks, len(paths_or_arrays) if hasattr(paths_or_arrays, "__len__") else 0)
    lazy = lazy_inputs(paths_or_arrays) if lazy is None else lazy
    scans, names, dropped, index = read_inputs(paths_or_arrays, notes,
                                               keep=InputScanner(cfg.work_megapix, mask_list, lazy),
                                               workers=resolve_workers(cfg.workers))
    keep, same = drop_duplicates(scans, names, dropped, notes)
    scans, names, source = [scans[k] for k in keep], [names[k] for k in keep], [index[k] for k in keep]
    if len(scans) < 2:
        again = "; ".join(f"{nm} is {why}" for nm, why in dropped if why.startswith(("given twice", "identical")))
        raise StitchError(f"need at least 2 different images, got 1: {again}")
    keys = [sc.key for sc in scans]
    sizes = [sc.size for sc in scans]
    # pairwise registration at the working resolution
    works = WorkImages([sc.work for sc in scans],
                       work_loader(paths_or_arrays, source, names, sizes, cfg.work_megapix) if lazy else None)
    A = [work_scale_matrix(sizes[k], sc.work_size) for k, sc in enumerate(scans)]
    short = (Shortlist(sequence_pairs(len(scans), cfg.range_width)) if cfg.range_width
             else shortlist(works, keys, workers=resolve_workers(cfg.workers)))
    pairs = short.pairs

    def edge(i: int, j: int, res: Any) -> PairEdge:
        return pair_edge(res, i, j, A[i], A[j])

    # each accepted result becomes its PairEdge at once (its candidates and match indices are dropped), unless
    # the hooks see its matches at working resolution
    raw, why = match_graph(works, names, cfg, progress, keys=keys, pairs=pairs, masks=[sc.work_mask for sc in scans],
                           fallback=short.fallback, keep=None if hooks is not None else edge)
    release_free_memory()
    if hooks is not None:
        for i, j, res in raw:
            inl = np.asarray(res.inliers, bool)
            hooks.matches(names[i], names[j], works[i], works[j], res.matches.src_pts[inl], res.matches.dst_pts[inl])
        raw = [(i, j, edge(i, j, res)) for i, j, res in raw]
    edges = [e for _, _, e in raw]
    return Screening([] if lazy else [sc.image for sc in scans], [sc.valid for sc in scans], names, keys, sizes, A,
                     source, [sc.thumb for sc in scans], list(pairs), edges, why, dropped, same, notes, lazy)


def check_plane_turn(sc: Screening, cfg: PanoramaConfig) -> None:
    """ConfigError (warp.check_turn) as soon as the accepted pairs make a full 360-degree turn and the projection is
    the plane, which cannot hold one: before the camera model's adjustments (camera.pairs_close_turn)."""
    if cfg.projection != "plane" or cfg.model == "scans":
        return
    main = largest_component_nodes(range(len(sc.names)), sc.edges)
    sub = [e for e in sc.edges if e.i in main and e.j in main]
    if pairs_close_turn(main, sub, choose_reference(main, sub, sc.keys), dict(enumerate(sc.sizes)), sc.keys):
        check_turn(cfg.projection)


def register_images(paths_or_arrays: Sequence[ImageLike], cfg: PanoramaConfig, progress: ProgressFn | None = None,
                    hooks: Any = None, masks: Sequence[MaskLike] | None = None, keep_images: bool = True
                    ) -> tuple[Registration, list[Pixels]]:
    """Steps 1-6 of the module docstring: (the Registration, the kept images (io.Pixels) in its order; none
    without ``keep_images``, which frees them before the camera model).

    masks: one feature mask per input (see stitch_images), combined with the image's alpha (its valid mask)."""
    sc = screen_pairs(paths_or_arrays, cfg, progress, hooks, masks)
    if not keep_images:
        sc.images.clear()
    gc.collect()
    release_free_memory()  # the pair results (every candidate and match) are gone: hand their pages back
    if not sc.edges:
        advice = cfg.advice()
        raise NoOverlapError(f"no two images overlap: {', '.join(sc.names)} ({advice + ', or ' if advice else ''}"
                             "check that the images show the same scene)")
    check_plane_turn(sc, cfg)
    graph = GraphInputs(sc.names, sc.sizes, sc.keys, sc.A, cfg, sc.notes,
                        lambda nodes: _exif_focals(paths_or_arrays, sc.source, sc.sizes, nodes), progress)
    reg = verified_registration(graph, sc.edges, sc.why, sc.dropped, sc.thumbs)
    reg.dropped = sc.dropped
    reg.warnings = sc.notes
    order = list(map(sc.names.index, reg.names))
    if not keep_images:
        kept = []
    elif sc.lazy:  # read again, now that registration no longer holds any image (ImageReadError if it cannot be)
        kept = [load_pixels(paths_or_arrays[sc.source[k]], sc.names[k]) for k in order]
    else:
        kept = [Pixels(sc.images[k], sc.valid[k]) for k in order]
    sc.images.clear()
    return reg, kept


@profiled("compositing")
def render(images: list[Pixels], reg: Registration, cfg: PanoramaConfig, progress: ProgressFn | None = None,
           hooks: Any = None, t0: float | None = None, metadata: ImageMeta | None = None) -> Panorama:
    """Steps 7-8: project and composite ``images`` (io.Pixels, one per camera of ``reg``, same order) at the
    output resolution of stitch.panorama.resolution; the panorama is uint16 when an image is.

    ``images`` is emptied as it is consumed (only the kept images stay referenced while compositing);
    ``metadata``: the reference photo's, which Panorama.save carries into the file.
    """
    t0 = time.perf_counter() if t0 is None else t0
    keep_freed_memory()  # the process's malloc keeps the stages' freed arrays for reuse, handed back below
    names = reg.names
    H_list = reg.homographies()
    sizes = [c.size for c in reg.cameras]
    bad = [f"{nm} ({px.image.shape[1]} x {px.image.shape[0]}, camera {sz[0]} x {sz[1]})"
           for nm, px, sz in zip(names, images, sizes) if (px.image.shape[1], px.image.shape[0]) != sz]
    if bad or len(images) != len(sizes):
        raise ConfigError(f"cameras do not match the images: {', '.join(bad) or 'different counts'}")
    ref_size = sizes[names.index(reg.reference)] if reg.reference in names else sizes[0]
    projection = cfg.projection
    if reg.model == "scans" and projection == "auto":
        projection = "plane"
    focal = reg.focal if reg.focal is not None else float(sum(ref_size))  # registered for the plane: a stand-in
    natives = native_scales(H_list, sizes, reg.center if reg.center is not None else image_center(ref_size))
    native = typical_scale(natives)  # the cap holds at the output's scale when that is below the reference plane's
    cap = cfg.max_canvas_pixels if native >= 1.0 else max(1, int(cfg.max_canvas_pixels / native ** 2))
    canvas = choose_canvas(projection, H_list, sizes, names, ref_size, focal, cap,
                           rotating=reg.rotating, turn=reg.full_turn and projection != "plane", center=reg.center)
    notes = list(reg.warnings)
    canvas, local = local_canvas(canvas, H_list, sizes, reg, cap, notes, images,
                                 resolve_workers(cfg.workers)) if cfg.local_warp else (canvas, None)
    pieces = [canvas.source(k) for k in range(len(canvas.boxes))]
    kept = [images[k] for k in pieces]
    images.clear()
    comp = compose_panorama([px.image for px in kept], [H_list[k] for k in pieces], canvas, cfg.compose,
                            [names[k] for k in pieces], hooks, progress, valid=[px.valid for px in kept],
                            natives=[natives[k] for k in pieces], max_pixels=cfg.max_canvas_pixels,
                            workers=resolve_workers(cfg.workers))
    del kept
    release_free_memory()  # what the stages kept for reuse
    for msg in comp.notes:
        _warn(msg, notes)
    canvas = comp.canvas or canvas  # scaled for the output resolution
    gains = {}
    for k, g in zip(pieces, comp.gains):
        gains.setdefault(k, g)
    offset = (canvas.offset[0] + comp.crop[0], canvas.offset[1] + comp.crop[1])
    return Panorama(
        image=comp.image, mask=comp.mask, homographies=H_list, names=list(names), dropped=list(reg.dropped),
        reference=reg.reference, projection=canvas.projection.kind, offset=offset,
        focal=focal if canvas.projection.kind != "plane" else None, edges=list(reg.edges),
        seconds=time.perf_counter() - t0, warnings=notes, rms_before=reg.rms_before,
        rms_after=reg.rms_after, canvas=canvas, crop=comp.crop, gains=[gains[k] for k in range(len(names))],
        bands=comp.bands, stage_seconds=comp.seconds | ({"local_warp": local.seconds} if local else {}), cameras=reg,
        full_turn=canvas.projection.turn, model=reg.model, scale=comp.scale, filled=comp.filled,
        timelapse=comp.timelapse, metadata=metadata, jpeg_quality=cfg.jpeg_quality, mesh=comp.mesh, local_warp=local)


def reference_meta(inputs: Sequence[ImageLike], reference: str) -> ImageMeta | None:
    """The metadata (stitch.exif.read_meta) of the input file named ``reference``; None for an array."""
    for i, src in enumerate(inputs):
        if not isinstance(src, np.ndarray) and image_name(src, i) == reference:
            return read_meta(src)
    return None


def local_canvas(canvas: Canvas, H_list: list[np.ndarray], sizes: list[tuple[int, int]], reg: Registration,
                 cap: int, notes: list[str], images: Sequence[Pixels], workers: int = 1
                 ) -> tuple[Canvas, LocalWarp | None]:
    """Step 7b (option local_warp): the canvas again, carrying each image's displacement field
    (stitch.panorama.localwarp) solved from the registration's pair matches, the straight segments of ``images``
    kept straight, and the LocalWarp (None without
    matches, e.g. cameras saved before the option existed: then a warning, and the global model alone). ``cap``:
    the canvas's pixel cap, as choose_canvas had it; ``workers``: threads finding the segments."""
    if not reg.matches:
        _warn("local_warp: the cameras carry no pair matches (saved by an older version?); rendered with the "
              "global model alone", notes)
        return canvas, None
    local = local_warp(H_list, sizes, canvas.projection, reg.names, reg.matches,
                       lambda k: image_lines(images[k].image),  # segments found only when a field is solved
                       workers=workers)
    warped = canvas_bounds(H_list, sizes, canvas.projection, reg.names, cap, local=local.fields)
    return warped, local


def stitch_images(paths_or_arrays: Sequence[ImageLike], *, preset: str = DEFAULT_PRESET, detector: str | None = None,
                  projection: str = DEFAULT_PANORAMA_PROJECTION, seed: int = 0,
                  work_megapix: float = DEFAULT_WORK_MEGAPIX, max_canvas_pixels: int = DEFAULT_MAX_CANVAS_PIXELS,
                  progress: ProgressFn | None = None, hooks: Any = None, masks: Sequence[MaskLike] | None = None,
                  **options: Any) -> Panorama:
    """Stitch paths or (H, W[, C]) arrays into a Panorama (see the module docstring for the pipeline).

    progress(done, total, label) is called as pairs are matched and strips composited; hooks (a
    stitch.debug.PipelineHooks) receives the intermediate results; masks: one feature mask per input (an
    (H, W) bool/uint8 array, a path, or None; see stitch.panorama.inputs). Other ``options`` (model,
    wave_correct, exposure, seam, blend, crop, scale, megapixels, timelapse, range_width, ...): see
    PanoramaConfig.from_options. Raises StitchError with < 2 readable images, NoOverlapError when no two
    images overlap, CanvasTooLargeError when the canvas would exceed ``max_canvas_pixels``.
    """
    t0 = time.perf_counter()
    cfg = PanoramaConfig.from_options(preset=preset, detector=detector, projection=projection, seed=seed,
                                      work_megapix=work_megapix, max_canvas_pixels=max_canvas_pixels, **options)
    if cfg.compose.timelapse is not None:
        check_timelapse_dir(cfg.compose.timelapse, paths_or_arrays if isinstance(paths_or_arrays, (list, tuple)) else ())
    reg, kept = register_images(paths_or_arrays, cfg, progress, hooks, masks)
    return render(kept, reg, cfg, progress, hooks, t0, reference_meta(paths_or_arrays, reg.reference))


def register(paths_or_arrays: Sequence[ImageLike], **options: Any) -> Registration:
    """Registration alone (matching, camera model, wave correction): a Registration you can save, edit, compose.

    Takes stitch_images' options (the compositing ones are accepted and ignored).
    """
    cfg = PanoramaConfig.from_options(**options)
    return register_images(paths_or_arrays, cfg, keep_images=False)[0]


def compose(paths_or_arrays: Sequence[ImageLike], cameras: Registration | str | Any, *,
            progress: ProgressFn | None = None, hooks: Any = None, **options: Any) -> Panorama:
    """Re-render registered images without matching again: the same pixels as stitch_images with the same options.

    cameras: a Registration (from ``register`` or ``Panorama.cameras``, possibly edited) or the path of its
    saved JSON. Inputs whose names have no camera are ignored; a camera without an input is a ConfigError.
    ``options``: projection, max_canvas_pixels and the compositing options of stitch_images.
    """
    t0 = time.perf_counter()
    reg = Registration.load(cameras) if isinstance(cameras, (str, bytes)) or hasattr(cameras, "__fspath__") else cameras
    if not isinstance(reg, Registration):
        raise ConfigError("compose: cameras must be a Registration (stitch.register) or the path of a saved one")
    for c in reg.cameras:
        c.check()
    cfg = PanoramaConfig.from_options(**options)
    notes: list[str] = []
    if cfg.compose.timelapse is not None:
        check_timelapse_dir(cfg.compose.timelapse, paths_or_arrays if isinstance(paths_or_arrays, (list, tuple)) else ())
    images, names, _, _ = read_inputs(paths_or_arrays, notes, workers=resolve_workers(cfg.workers))
    by_name = dict(zip(names, images))
    missing = [c.name for c in reg.cameras if c.name not in by_name]
    if missing:
        raise ConfigError(f"compose: no input image for camera(s) {', '.join(missing)}")
    kept = [by_name[c.name] for c in reg.cameras]
    images.clear()
    by_name.clear()
    return render(kept, reg, cfg, progress, hooks, t0, reference_meta(paths_or_arrays, reg.reference))
