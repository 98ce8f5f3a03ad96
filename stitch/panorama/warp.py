"""Stage 7: canvas bounds and projections (plane, cylindrical, spherical); warp one image at a time.

Convention: every image i comes with H_i (3, 3) float64 mapping its full-resolution pixels to the
*reference plane* (the pixel frame of the reference image), x_ref ~ H_i @ [x, y, 1]; pixel centres at
integer coordinates (OpenCV). A projection maps reference-plane points to *projected* coordinates
(u, v), and the canvas is the axis-aligned box of projected coordinates that holds every warped image:
canvas pixel (c, r) sits at projected (u, v) = (c + offset[0], r + offset[1]).

* plane: (u, v) = reference-plane pixels (a homography per image; straight lines stay straight).
* cylindrical / spherical: a virtual camera K = [[f, 0, cx], [0, f, cy], [0, 0, 1]] at the reference
  image (f from the homographies, (cx, cy) its centre); a reference-plane point p is the ray
  d = K^-1 p, and u = f * atan2(d_x, d_z), v = f * d_y / hypot(d_x, d_z) (cylinder) or
  v = f * atan2(d_y, hypot(d_x, d_z)) (sphere). Homogeneous points keep their sign (each H_i is scaled
  to det > 0), so rays more than 90 degrees from the reference camera stay valid.

Warping maps every canvas pixel of the requested region back into the image (inverse_maps: the
projections are separable in canvas row and column, so this is a few multiply-adds per pixel) and
samples it with cv2.remap (bilinear), for the plane too: the same result as cv2.warpPerspective, and the
mask and the feather weight come from the same maps instead of two more warps. With a local warp
(stitch.panorama.localwarp) the canvas carries a displacement field per box, and canvas pixel q shows what the
global maps show at q + g(q) (inverse_maps): every stage that warps (seams, blending, timelapse) sees it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from stitch.errors import CanvasTooLargeError, ConfigError
from stitch.geometry import box_intersection
from stitch.panorama.displacement import Displacement

DEFAULT_PROJECTION = "plane"
#: Canvas size cap (pixels); a bigger canvas is almost always a wrong matrix, not a real panorama.
DEFAULT_MAX_CANVAS_PIXELS = 80_000_000
#: Points sampled on each side of an image border to bound its warped outline (curved projections).
DEFAULT_BORDER_SAMPLES = 64
#: Largest tile side used when warping (OpenCV's remap/warp limit is 32767 px per side).
MAX_TILE_SIDE = 8192


def _positive_det(H: np.ndarray) -> np.ndarray:
    """H (3, 3) scaled by +-1/|det|^(1/3) so that det(H) == 1: a sign-consistent homogeneous map."""
    H = np.asarray(H, dtype=np.float64).reshape(3, 3)
    d = float(np.linalg.det(H))
    if not math.isfinite(d) or abs(d) < 1e-300:
        return H
    return H / (math.copysign(abs(d) ** (1.0 / 3.0), d))


class PlaneMap:
    """plane: (u, v) = reference-plane pixels (straight lines stay straight)."""

    curved = False

    @staticmethod
    def forward(p: np.ndarray, f: float, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
        """Homogeneous points (N, 3) -> (uv (N, 2), valid (N,))."""
        valid = p[:, 2] > 1e-12
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = p[:, :2] / p[:, 2:3]
        return uv, valid

    @staticmethod
    def inverse(uv: np.ndarray, f: float, cx: float, cy: float) -> np.ndarray:
        """Projected (N, 2) -> homogeneous points (N, 3)."""
        return np.hstack([uv, np.ones((len(uv), 1))])

    @staticmethod
    def separable(u: np.ndarray, v: np.ndarray, f: float, cx: float, cy: float):
        """p[r, c] = alpha[r] A[c] + beta[r] B for canvas columns u (w,) and rows v (h,)."""
        return np.ones_like(v), np.stack([u, np.zeros_like(u), np.ones_like(u)], 1), v, np.array([0.0, 1.0, 0.0])


class CylinderMap:
    """cylindrical: u = f atan2(d_x, d_z), v = f d_y / hypot(d_x, d_z) of the ray d = K^-1 p."""

    curved = True

    @staticmethod
    def angles(dx: np.ndarray, dy: np.ndarray, rho: np.ndarray) -> np.ndarray:
        """v / f of rays (dx, dy, dz) with rho = hypot(dx, dz)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return dy / rho

    @staticmethod
    def ray(theta: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ray (dx, dy, dz) at u / f = theta, v / f = t."""
        return np.sin(theta), t, np.cos(theta)

    @staticmethod
    def rows(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(alpha, beta) of the separable form at v / f = t: p = alpha A(u) + beta B."""
        return np.ones_like(t), t


class SphereMap(CylinderMap):
    """spherical: u = f atan2(d_x, d_z), v = f atan2(d_y, hypot(d_x, d_z))."""

    @staticmethod
    def angles(dx: np.ndarray, dy: np.ndarray, rho: np.ndarray) -> np.ndarray:
        """v / f of rays (dx, dy, dz) with rho = hypot(dx, dz)."""
        return np.arctan2(dy, rho)

    @staticmethod
    def ray(theta: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ray (dx, dy, dz) at u / f = theta, v / f = t."""
        return np.sin(theta) * np.cos(t), np.sin(t), np.cos(theta) * np.cos(t)

    @staticmethod
    def rows(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(alpha, beta) of the separable form at v / f = t: p = alpha A(u) + beta B."""
        return np.cos(t), np.sin(t)


#: THE table of projections: name -> implementation. The CLI's choices, the API's checks and the benches
#: read it (PROJECTION_CHOICES); curved ones (``curved``) can hold a full 360-degree turn.
PROJECTIONS: dict[str, type] = {"plane": PlaneMap, "cylindrical": CylinderMap, "spherical": SphereMap}
PROJECTION_CHOICES = tuple(PROJECTIONS)


def check_turn(kind: str) -> None:
    """ConfigError unless projection ``kind`` can hold a full 360-degree turn (a curved one of PROJECTIONS)."""
    if not PROJECTIONS[kind].curved:
        use = " or ".join(f"projection={k!r}" for k, m in PROJECTIONS.items() if m.curved)
        raise ConfigError(f"projection={kind!r} cannot hold a full 360-degree turn (the photos close a loop); "
                          f"use {use}")


@dataclass(frozen=True)
class Projection:
    """How reference-plane points map to projected (u, v) coordinates (see the module docstring).

    ``turn``: a full 360-degree panorama (curved projections only): u is periodic with period 2 pi focal,
    and the canvas spans exactly one period, u in [-pi focal, pi focal).
    """

    kind: str = DEFAULT_PROJECTION
    focal: float = 1.0  # px; cylindrical / spherical only
    center: tuple[float, float] = (0.0, 0.0)  # reference principal point (cx, cy) px
    turn: bool = False

    def __post_init__(self) -> None:
        if self.kind not in PROJECTIONS:
            raise ConfigError(f"projection={self.kind!r}: choose one of {', '.join(PROJECTION_CHOICES)}")
        if not (math.isfinite(self.focal) and self.focal > 0):
            raise ConfigError(f"focal={self.focal}: must be a positive finite number of pixels")
        if self.turn:
            check_turn(self.kind)

    @property
    def period(self) -> float:
        """Width of a full turn in projected units (2 pi focal)."""
        return 2.0 * math.pi * self.focal

    def forward(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Homogeneous reference-plane points p (N, 3) -> (uv (N, 2) float64, valid (N,) bool)."""
        p = np.asarray(p, dtype=np.float64).reshape(-1, 3)
        impl = PROJECTIONS[self.kind]
        f, (cx, cy) = self.focal, self.center
        if not impl.curved:
            uv, valid = impl.forward(p, f, cx, cy)
            uv[~valid] = np.nan
            return uv, valid
        dx, dy, dz = p[:, 0] - cx * p[:, 2], p[:, 1] - cy * p[:, 2], f * p[:, 2]
        rho = np.hypot(dx, dz)
        valid = rho > 1e-12 * (np.abs(dy) + 1.0)
        uv = np.stack([f * np.arctan2(dx, dz), f * impl.angles(dx, dy, rho)], axis=1)
        uv[~valid] = np.nan
        return uv, valid

    def inverse(self, uv: np.ndarray) -> np.ndarray:
        """Projected (N, 2) -> homogeneous reference-plane points (N, 3) (rays behind the camera: z < 0)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        impl = PROJECTIONS[self.kind]
        f, (cx, cy) = self.focal, self.center
        if not impl.curved:
            return impl.inverse(uv, f, cx, cy)
        dx, dy, dz = impl.ray(uv[:, 0] / f, uv[:, 1] / f)
        return np.stack([f * dx + cx * dz, f * dy + cy * dz, dz], axis=1)


def focals_from_homography(H: np.ndarray) -> tuple[float | None, float | None]:
    """Focal lengths (f_src, f_dst) px implied by a rotation-only H (3, 3) in *centred* pixel coordinates.

    The formulas of OpenCV's detail::focalsFromHomography (Szeliski & Shum); None where undetermined.
    """
    h = (np.asarray(H, dtype=np.float64) / H[2, 2]).ravel()

    def solve(d1: float, d2: float, v1: float, v2: float) -> float | None:
        if v1 < v2:
            v1, v2 = v2, v1
        if v1 > 0 and v2 > 0:
            return math.sqrt(v1 if abs(d1) > abs(d2) else v2)
        return math.sqrt(v1) if v1 > 0 else None

    with np.errstate(divide="ignore", invalid="ignore"):
        d1, d2 = h[6] * h[7], (h[7] - h[6]) * (h[7] + h[6])
        f_dst = solve(d1, d2, -(h[0] * h[1] + h[3] * h[4]) / d1,
                      (h[0] ** 2 + h[3] ** 2 - h[1] ** 2 - h[4] ** 2) / d2)
        d1, d2 = h[0] * h[3] + h[1] * h[4], h[0] ** 2 + h[1] ** 2 - h[3] ** 2 - h[4] ** 2
        f_src = solve(d1, d2, -h[2] * h[5] / d1, (h[5] ** 2 - h[2] ** 2) / d2)
    ok = [f if f is not None and math.isfinite(f) and f > 0 else None for f in (f_src, f_dst)]
    return ok[0], ok[1]


def pair_focals(pair_homographies: Sequence[tuple[np.ndarray, tuple[int, int], tuple[int, int]]]) -> list[float]:
    """Focal lengths (px) determined by pairwise (H src->dst (3, 3), src (w, h), dst (w, h)); [] if none is."""
    focals = []
    for H, (ws, hs), (wd, hd) in pair_homographies:
        Ts = np.array([[1.0, 0, ws / 2.0], [0, 1.0, hs / 2.0], [0, 0, 1.0]])
        Td = np.array([[1.0, 0, -wd / 2.0], [0, 1.0, -hd / 2.0], [0, 0, 1.0]])
        f_src, f_dst = focals_from_homography(Td @ np.asarray(H, dtype=np.float64) @ Ts)
        if f_src is not None and f_dst is not None:
            focals.append(math.sqrt(f_src * f_dst))
    return focals


def estimate_focal(pair_homographies: Sequence[tuple[np.ndarray, tuple[int, int], tuple[int, int]]],
                   focals: Sequence[float] | None = None) -> float:
    """Median focal length (px) from pairwise (H src->dst (3, 3), src (w, h), dst (w, h)), like OpenCV.

    ``focals``: their ``pair_focals`` when already computed. Falls back to the mean (w + h) of the images
    when no pair determines it (e.g. pure translations).
    """
    focals = pair_focals(pair_homographies) if focals is None else focals
    if focals:
        return float(np.median(focals))
    sizes = [ws + hs for _, (ws, hs), _ in pair_homographies] + [wd + hd for _, _, (wd, hd) in pair_homographies]
    if not sizes:
        raise ConfigError("estimate_focal: no homographies given")
    return float(np.mean(sizes))


def border_points(width: int, height: int, samples: int = DEFAULT_BORDER_SAMPLES) -> np.ndarray:
    """(4 * samples, 2) points along the border of a W x H image (corners included), px."""
    t = np.linspace(0.0, 1.0, samples, endpoint=False)
    x1, y1 = width - 1.0, height - 1.0
    return np.concatenate([
        np.stack([t * x1, np.zeros_like(t)], 1), np.stack([np.full_like(t, x1), t * y1], 1),
        np.stack([x1 - t * x1, np.full_like(t, y1)], 1), np.stack([np.zeros_like(t), y1 - t * y1], 1),
    ])


def warped_outline(H: np.ndarray, size: tuple[int, int], projection: Projection, name: str = "image",
                   samples: int = DEFAULT_BORDER_SAMPLES) -> np.ndarray:
    """Projected (M, 2) outline of a (w, h) image through H (3, 3, image -> reference); raises if unbounded."""
    w, h = size
    pts = (np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float64)
           if projection.kind == "plane" else border_points(w, h, samples))
    ph = np.hstack([pts, np.ones((len(pts), 1))]) @ _positive_det(H).T
    uv, valid = projection.forward(ph)
    if not np.all(valid) or not np.all(np.isfinite(uv)):
        hint = ("try projection='cylindrical'" if projection.kind == "plane" else "check the matches")
        raise CanvasTooLargeError(f"{name}: its homography maps part of the image through infinity (more than 90 "
                                  f"degrees from the reference view); {hint}, or check the matches")
    return uv


@dataclass(frozen=True)
class Canvas:
    """The output frame. size (W, H) px; offset: projected (u, v) of canvas pixel (0, 0); boxes per image."""

    projection: Projection
    offset: tuple[float, float]
    size: tuple[int, int]
    boxes: tuple[tuple[int, int, int, int], ...]  # per image (x0, y0, x1, y1) canvas px, x1/y1 exclusive
    #: full turns only: per box, the image it shows (an image crossing the wrap has two boxes) and the turns
    #: added to its unwrapped outline to place it; empty otherwise (box k shows image k)
    sources: tuple[int, ...] = ()
    shifts: tuple[int, ...] = ()
    #: per box, the local warp's displacement field of the image it shows (stitch.panorama.localwarp), or None;
    #: empty: no local warp (every image placed by its H alone)
    local: tuple[Displacement | None, ...] = ()

    def source(self, k: int) -> int:
        """The image (index into the canvas_bounds inputs) that box k shows."""
        return self.sources[k] if self.sources else k

    def displacement(self, k: int) -> Displacement | None:
        """The displacement field of box k's image (None: placed by its H alone)."""
        return self.local[k] if self.local else None

    @property
    def pixels(self) -> int:
        """Canvas area in pixels."""
        return self.size[0] * self.size[1]


def _box(uv: np.ndarray, margin: float) -> tuple[float, float, float, float]:
    return (float(uv[:, 0].min()) - margin, float(uv[:, 1].min()) - margin,
            float(uv[:, 0].max()) + margin, float(uv[:, 1].max()) + margin)


def _union_pixels(boxes: Sequence[tuple[float, float, float, float]]) -> float:
    if not boxes:
        return 0.0
    b = np.asarray(boxes)
    return float((b[:, 2].max() - b[:, 0].min() + 1) * (b[:, 3].max() - b[:, 1].min() + 1))


def pixel_count(n: int, unit_of: int | None = None) -> str:
    """n pixels in words: '80 MP', '0.313 MP' (3 significant digits), or '1,000 px' below 0.1 MP.

    ``unit_of``: pick the unit by this count instead, so that two counts compared side by side share it.
    """
    if (n if unit_of is None else unit_of) >= 100_000:
        return f"{n / 1e6:.3g} MP"
    return f"{n:,} px"


def _turn_extent(H: np.ndarray, size: tuple[int, int], projection: Projection, name: str,
                 samples: int = DEFAULT_BORDER_SAMPLES) -> tuple[float, float, float, float, bool]:
    """(u0, u1, v0, v1, pole) of an image on a full turn: u unwrapped around the image centre's u.

    pole: the image holds a pole (its outline winds around it), so it spans every u.
    """
    w, h = size
    pts = np.vstack([border_points(w, h, samples), [[(w - 1) / 2.0, (h - 1) / 2.0]]])
    ph = np.hstack([pts, np.ones((len(pts), 1))]) @ _positive_det(H).T
    uv, valid = projection.forward(ph)
    if not np.all(valid) or not np.all(np.isfinite(uv)):
        raise CanvasTooLargeError(f"{name}: part of the image looks straight up or down; check the matches")
    period = projection.period
    rel = (uv[:-1, 0] - uv[-1, 0] + period / 2.0) % period - period / 2.0
    steps = np.diff(np.append(rel, rel[0]))
    winding = np.sum((steps + period / 2.0) % period - period / 2.0)
    v0, v1 = float(uv[:, 1].min()), float(uv[:, 1].max())
    if abs(winding) > period / 2.0:  # a pole inside: spherical v reaches +-pi/2 f on that side
        pole_v = math.copysign(math.pi / 2.0 * projection.focal, float(np.mean(uv[:-1, 1])))
        return -period / 2.0, period / 2.0, min(v0, pole_v), max(v1, pole_v), True
    return float(uv[-1, 0] + rel.min()), float(uv[-1, 0] + rel.max()), v0, v1, False


def pieces_of(extents: Sequence[tuple[float, float, float, float, bool]], period: float) -> list[tuple[int, int]]:
    """(image index, shift in turns) of each piece of a full-turn canvas, from each image's extent (u0, u1, v0,
    v1, pole) on a turn of ``period`` px: an image crossing the wrap gives two pieces."""
    pieces = []
    for k, (a, b, _, _, pole) in enumerate(extents):
        if pole:
            pieces.append((k, 0))
            continue
        for m in (-1, 0, 1):
            if a + m * period < period / 2.0 and b + m * period >= -period / 2.0:
                pieces.append((k, m))
    return pieces


def _grown(extent: tuple[float, float, float, float, bool], margin: float) -> tuple[float, float, float, float, bool]:
    a, b, lo, hi, pole = extent
    return (a if pole else a - margin), (b if pole else b + margin), lo - margin, hi + margin, pole


def _turn_canvas(homographies: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], projection: Projection,
                 names: list[str], shifts: Sequence[int] | None, max_canvas_pixels: int,
                 margins: Sequence[float]) -> Canvas:
    """canvas_bounds of a full turn: width round(2 pi focal), one box per piece (see pieces_of)."""
    period = projection.period
    ext = dict(enumerate(_grown(_turn_extent(H, sz, projection, nm), m)
                         for H, sz, nm, m in zip(homographies, sizes, names, margins)))
    pieces = pieces_of([ext[k] for k in range(len(sizes))], period) if shifts is None \
        else list(zip(range(len(sizes)), shifts))
    u0 = -period / 2.0
    width = max(1, round(period))
    v0 = math.floor(min(e[2] for e in ext.values()) - 1.0)
    height = math.floor(max(e[3] for e in ext.values()) + 1.0) - v0 + 1
    if width * height > max_canvas_pixels:
        raise CanvasTooLargeError(f"the 360-degree canvas would be {width} x {height} px ({width * height / 1e6:.0f} MP "
                                  f"> cap {max_canvas_pixels / 1e6:.0f} MP); raise max_canvas_pixels or lower the scale")
    boxes = []
    for k, m in pieces:
        a, b, lo, hi, pole = ext[k]
        x0 = 0 if pole else max(0, math.floor(a + m * period - 1.0 - u0))
        x1 = width if pole else min(width, math.floor(b + m * period + 1.0 - u0) + 1)
        boxes.append((x0, max(0, math.floor(lo - 1.0) - v0), max(x0 + 1, x1), min(height, math.floor(hi + 1.0) - v0 + 1)))
    return Canvas(projection, (u0, float(v0)), (int(width), int(height)), tuple(boxes),
                  tuple(k for k, _ in pieces) if shifts is None else (), tuple(m for _, m in pieces))


def canvas_bounds(homographies: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], projection: Projection,
                  names: Sequence[str] | None = None,
                  max_canvas_pixels: int = DEFAULT_MAX_CANVAS_PIXELS, shifts: Sequence[int] | None = None,
                  local: Sequence[Displacement | None] | None = None) -> Canvas:
    """The canvas holding every (w, h) image warped by its H (3, 3, image -> reference) and projected.

    A full turn (``projection.turn``) is exactly one period wide and has a box per *piece*: an image crossing
    the wrap is warped in both parts (``Canvas.sources``); ``shifts`` (per input, in turns) places each input
    as one given piece instead (what the seam-resolution canvas does with the pieces of the full one).
    ``local``: per input, its local warp's displacement field (or None); each box grows by how far it moves the
    image's outline.
    Raises CanvasTooLargeError (naming the image whose matrix blows the canvas up) above max_canvas_pixels.
    """
    if len(homographies) != len(sizes) or not homographies:
        raise ConfigError(f"canvas_bounds: need one size per homography, got {len(homographies)} and {len(sizes)}")
    if max_canvas_pixels < 1:
        raise ConfigError(f"max_canvas_pixels={max_canvas_pixels}: must be positive")
    if local is not None and len(local) != len(sizes):
        raise ConfigError(f"canvas_bounds: need one displacement field (or None) per image, got {len(local)}")
    names = list(names) if names is not None else [f"image{i}" for i in range(len(sizes))]
    grow = [0.0 if d is None else _reach(H, size, projection, d)
            for H, size, d in zip(homographies, sizes, local or [None] * len(sizes))]
    canvas = (_turn_canvas(homographies, sizes, projection, names, shifts, max_canvas_pixels, grow)
              if projection.turn else _flat_canvas(homographies, sizes, projection, names, max_canvas_pixels, grow))
    if local is None or all(d is None for d in local):
        return canvas
    return replace(canvas, local=tuple(local[canvas.source(k)] for k in range(len(canvas.boxes))))


def _reach(H: np.ndarray, size: tuple[int, int], projection: Projection, field: Displacement) -> float:
    """How far (px, rounded up, plus 1) a displacement field moves the outline of a (w, h) image placed by H: what
    its canvas box grows by."""
    ph = np.hstack([border_points(*size), np.ones((4 * DEFAULT_BORDER_SAMPLES, 1))]) @ _positive_det(H).T
    uv, valid = projection.forward(ph)
    moved = np.hypot(*field.at(uv[valid]).T) if valid.any() else np.zeros(1)
    return math.ceil(float(moved.max(initial=0.0))) + 1.0


def _flat_canvas(homographies: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]], projection: Projection,
                 names: list[str], max_canvas_pixels: int, grow: Sequence[float]) -> Canvas:
    """canvas_bounds of a panorama that is no full turn: the box of every image's outline, grown by ``grow`` px."""
    margin = 0.0 if projection.kind == "plane" else 1.0
    fboxes = [_box(warped_outline(H, s, projection, n), margin + g)
              for H, s, n, g in zip(homographies, sizes, names, grow)]
    u0 = math.floor(min(b[0] for b in fboxes))
    v0 = math.floor(min(b[1] for b in fboxes))
    width = math.floor(max(b[2] for b in fboxes)) - u0 + 1
    height = math.floor(max(b[3] for b in fboxes)) - v0 + 1
    if width * height > max_canvas_pixels:
        total = _union_pixels(fboxes)
        shrink = [total - _union_pixels(fboxes[:i] + fboxes[i + 1:]) for i in range(len(fboxes))]
        worst = int(np.argmax(shrink))
        bw, bh = fboxes[worst][2] - fboxes[worst][0], fboxes[worst][3] - fboxes[worst][1]
        raise CanvasTooLargeError(
            f"the canvas would be {width} x {height} px ({pixel_count(width * height, max_canvas_pixels)} > cap "
            f"{pixel_count(max_canvas_pixels)}); the matrix of {names[worst]} blows it up "
            f"(its warped box is {bw:.0f} x {bh:.0f} px)"
            + ("; try projection='cylindrical', or check the matches" if projection.kind == "plane"
               else "; check the matches, or raise max_canvas_pixels"))
    boxes = tuple((max(0, math.floor(b[0]) - u0), max(0, math.floor(b[1]) - v0),
                   min(width, math.floor(b[2]) - u0 + 1), min(height, math.floor(b[3]) - v0 + 1)) for b in fboxes)
    return Canvas(projection, (float(u0), float(v0)), (int(width), int(height)), boxes)


@dataclass
class WarpedImage:
    """One image warped onto part of the canvas: image (h, w, C) of its dtype, mask (h, w) bool, weight (h, w) float32.

    offset (x, y): canvas pixel of the crop's top-left corner; weight is None unless feathering was asked.
    """

    image: np.ndarray
    mask: np.ndarray
    weight: np.ndarray | None
    offset: tuple[int, int]


def _separable_points(canvas: Canvas, region: tuple[int, int, int, int]):
    """Reference-plane points of region's canvas pixels as p[r, c] = alpha[r] * A[c] + beta[r] * B.

    Returns alpha (h,), A (w, 3), beta (h,), B (3,): every projection here is separable in (column, row),
    which keeps the per-pixel work to a few multiply-adds (same points as Projection.inverse).
    """
    x0, y0, x1, y1 = region
    u = np.arange(x0, x1, dtype=np.float64) + canvas.offset[0]
    v = np.arange(y0, y1, dtype=np.float64) + canvas.offset[1]
    proj = canvas.projection
    impl = PROJECTIONS[proj.kind]
    f, (cx, cy) = proj.focal, proj.center
    if not impl.curved:
        return impl.separable(u, v, f, cx, cy)
    s, c = np.sin(u / f), np.cos(u / f)
    alpha, beta = impl.rows(v / f)
    return alpha, np.stack([f * s + cx * c, cy * c, c], 1), beta, np.array([0.0, f, 0.0])


#: A local warp's displacement below this (px) over a whole tile is not applied there (the global maps stand).
MIN_DISPLACEMENT_PX = 1e-3


def inverse_maps(H: np.ndarray, canvas: Canvas, region: tuple[int, int, int, int],
                 local: Displacement | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(map_x, map_y, valid) (h, w): the image pixel seen at each canvas pixel of region (x0, y0, x1, y1).

    map_x/map_y float32 image px for cv2.remap; valid (h, w) bool is False where the canvas ray is behind
    the image's camera (there the maps hold -1). ``local``: the image's displacement field; canvas pixel q then
    shows what the global map shows at q + g(q): the global maps, on the region grown by the field's reach, are
    sampled there (bilinear: they are smooth, so this costs no precision worth counting).
    """
    if local is None:
        return _global_maps(H, canvas, region)
    g = local.on_region(canvas.offset, region)
    reach = float(np.abs(g).max(initial=0.0))
    if reach < MIN_DISPLACEMENT_PX:
        return _global_maps(H, canvas, region)
    m = math.ceil(reach) + 1
    x0, y0, x1, y1 = region
    gx, gy, gvalid = _global_maps(H, canvas, (x0 - m, y0 - m, x1 + m, y1 + m))
    g[:, :, 0] += np.arange(x1 - x0, dtype=np.float32) + np.float32(m)  # where q + g(q) sits in the grown region
    g[:, :, 1] += (np.arange(y1 - y0, dtype=np.float32) + np.float32(m))[:, None]
    mx, my = (cv2.remap(c, g, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for c in (gx, gy))
    if gvalid.all():
        return mx, my, np.ones(mx.shape, bool)
    return mx, my, cv2.remap(gvalid.view(np.uint8), g, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE) > 0


def _global_maps(H: np.ndarray, canvas: Canvas,
                 region: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """inverse_maps of the global model alone (H and the projection, separable in canvas row and column)."""
    alpha, A, beta, B = _separable_points(canvas, region)
    Hinv = np.linalg.inv(_positive_det(H))
    Ah, Bh = A @ Hinv.T, Hinv @ B
    a, b = alpha[:, None].astype(np.float32), beta[:, None].astype(np.float32)
    q = [a * Ah[None, :, k].astype(np.float32) + b * np.float32(Bh[k]) for k in range(3)]
    valid = q[2] > 1e-9
    z = np.where(valid, q[2], np.float32(1.0))
    mx = np.where(valid, q[0] / z, np.float32(-1.0))
    my = np.where(valid, q[1] / z, np.float32(-1.0))
    return mx.astype(np.float32), my.astype(np.float32), valid


def _border_weight(mx: np.ndarray, my: np.ndarray, width: int, height: int) -> np.ndarray:
    """Feather weight at image coordinates: (distance to the nearest border + 1) / its maximum, float32."""
    d = np.minimum(np.minimum(mx + 1.0, width - mx), np.minimum(my + 1.0, height - my))
    return np.clip(d / ((min(width, height) + 1) / 2.0), 0.0, 1.0).astype(np.float32)


def feather_weight(width: int, height: int) -> np.ndarray:
    """(height, width) float32 feather weight of an unwarped image (what warp_image uses, at pixel centres)."""
    mx, my = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return _border_weight(mx, my, width, height)


def tile_maps(H: np.ndarray, canvas: Canvas, region: tuple[int, int, int, int], size: tuple[int, int],
              valid: np.ndarray | None = None, local: Displacement | None = None
              ) -> Iterator[tuple[tuple[slice, slice], np.ndarray, np.ndarray, np.ndarray]]:
    """Tile by tile (at most MAX_TILE_SIDE a side) over canvas region (x0, y0, x1, y1): (slices of the tile in
    the region, inside (th, tw) bool: the pixel sees the (w, h) ``size`` image, then its inverse maps mx, my).

    valid: the image's valid mask (h, w) uint8 (255: data), or None; a pixel is inside only where it samples
    (bilinearly) at least half data. ``local``: the image's displacement field (inverse_maps)."""
    w, h = size
    x0, y0, x1, y1 = region
    for ty in range(y0, y1, MAX_TILE_SIDE):
        for tx in range(x0, x1, MAX_TILE_SIDE):
            tile = (tx, ty, min(tx + MAX_TILE_SIDE, x1), min(ty + MAX_TILE_SIDE, y1))
            mx, my, ok = inverse_maps(H, canvas, tile, local)
            inside = ok & (mx > -0.5) & (mx < w - 0.5) & (my > -0.5) & (my < h - 0.5)
            if valid is not None:
                inside &= cv2.remap(valid, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0) >= 128
            yield (slice(tile[1] - y0, tile[3] - y0), slice(tile[0] - x0, tile[2] - x0)), inside, mx, my


def remap_replicate(img: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    """cv2.remap, bilinear, with the image's edge pixels replicated beyond its border (maps clipped in place)."""
    h, w = img.shape[:2]
    np.clip(mx, -1.0, float(w), out=mx)
    np.clip(my, -1.0, float(h), out=my)
    return cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def warp_image(img: np.ndarray, H: np.ndarray, canvas: Canvas, index: int,
               region: tuple[int, int, int, int] | None = None, feather: bool = False,
               valid: np.ndarray | None = None) -> WarpedImage | None:
    """Warp img (h, w, C) (image ``index`` of the canvas, H (3, 3) image -> reference) onto its canvas box.

    With the canvas's displacement field of box ``index`` (a local warp) the image moves by it. Only the part
    inside region (x0, y0, x1, y1) is warped (None if that is empty), tile by tile (cv2.remap, bilinear). mask
    marks the canvas pixels that see the image (and, with valid (h, w) uint8, its pixels with data: tile_maps);
    feather adds its weight.
    """
    box = canvas.boxes[index]
    r = box_intersection(box, region if region is not None else box)
    if r is None:
        return None
    h, w = img.shape[:2]
    x0, y0, x1, y1 = r
    out = np.zeros((y1 - y0, x1 - x0) + img.shape[2:], dtype=img.dtype)
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    weight = np.zeros((y1 - y0, x1 - x0), np.float32) if feather else None
    for sl, inside, mx, my in tile_maps(H, canvas, r, (w, h), valid, canvas.displacement(index)):
        if not inside.any():
            continue
        mask[sl] = inside
        if weight is not None:
            weight[sl] = np.where(inside, _border_weight(mx, my, w, h), np.float32(0.0))
        out[sl] = remap_replicate(img, mx, my)
    if not mask.any():
        return None
    out[~mask] = 0
    return WarpedImage(out, mask, weight, (x0, y0))
