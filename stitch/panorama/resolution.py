"""Output resolution: the scale of a panorama's canvas, chosen from the input photos' own resolutions.

The canvas is laid out on the *reference plane* (stitch.panorama.warp): the reference image's pixels (homography
models) or the virtual camera's pixels at its focal (rotation model). Its scale s (canvas px per reference-plane
px; ``Panorama.scale``) follows this rule:

1. each photo's *native scale* s_k is the canvas scale at which its pixels map one to one onto the panorama:
   1 / m_k, with m_k the linear magnification (sqrt |det J|) of its homography H_k to the reference plane, the
   geometric mean of m at the photo's centre and at the point H_k maps to the reference plane's centre (equal
   for an affine map; for a turned camera the product cancels the perspective stretch and leaves the focal
   ratio f_ref / f_k). Native scales within ``NATIVE_TOLERANCE`` of 1 count as 1, so photos from one camera
   keep the reference plane's pixels exactly, whatever small differences the estimated matrices have;
2. the panorama's native scale is the median of the s_k, the larger middle one for an even count (of two
   photos, the sharper one keeps its pixels): the typical photo keeps its resolution, as OpenCV's stitcher
   renders at the median focal. Not the largest photo: one 12000 x 9000 photo among 400 x 300 ones would blow
   the others up 30 times, into a canvas of interpolated pixels far above the cap;
3. ``scale`` (0 < scale <= 1) multiplies it; ``megapixels`` lowers it to fit that many MP (never raises it);
4. above 1 (the reference plane upscaled) it is lowered to keep the canvas within ``max_pixels`` (the canvas
   cap, --max-canvas-mp). The canvas at the native scale, when below 1, or at the reference plane's scale is
   still refused above the cap (CanvasTooLargeError: almost always a wrong matrix).

Before warping, photo k is downscaled (INTER_AREA) by min(1, s / s_k), so a photo drawn below its native
resolution is averaged rather than aliased; no photo is upscaled (the warp interpolates). A photo that rule 2
draws at under ``UNDERSAMPLED`` of its native resolution is named in a warning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stitch.errors import ConfigError
from stitch.panorama.warp import pixel_count

#: Native scales within this relative distance of 1 count as 1 (rule 1 of the module docstring).
NATIVE_TOLERANCE = 0.15
#: A photo drawn below this share of its native resolution by rule 2 is named in a warning.
UNDERSAMPLED = 0.5


def check_output_size(scale: float | None, megapixels: float | None) -> None:
    """ConfigError unless at most one of scale (0 < s <= 1) and megapixels (> 0) is given."""
    if scale is not None and megapixels is not None:
        raise ConfigError(f"scale={scale} and megapixels={megapixels}: give one or the other, not both")
    if scale is not None and not (isinstance(scale, (int, float)) and 0.0 < scale <= 1.0):
        raise ConfigError(f"scale={scale}: must be in (0, 1] (a fraction of the native resolution)")
    if megapixels is not None and not (isinstance(megapixels, (int, float)) and megapixels > 0):
        raise ConfigError(f"megapixels={megapixels}: must be a positive number of megapixels")


def magnification(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Linear magnification sqrt |det J| (N,) of the homography H (3, 3) at image points pts (N, 2) px.

    For x' = (H p)_xy / (H p)_z, det J = det H / (H p)_z ^ 3 (any scale of H cancels); NaN at the horizon.
    """
    H = np.asarray(H, np.float64)
    w = np.hstack([np.asarray(pts, np.float64).reshape(-1, 2), np.ones((len(pts), 1))]) @ H[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(np.abs(np.linalg.det(H) / w ** 3))


def native_scale(H: np.ndarray, size: tuple[int, int], center: tuple[float, float]) -> float:
    """Canvas scale at which a (w, h) photo with H (3, 3, photo px -> reference plane) is drawn at its own
    resolution (rule 1 of the module docstring; ``center``: the reference plane's centre, px)."""
    H = np.asarray(H, np.float64)
    pts = [((size[0] - 1) / 2.0, (size[1] - 1) / 2.0)]
    q = np.linalg.solve(H, [center[0], center[1], 1.0])
    if (q[2] > 0) == (np.linalg.det(H) > 0) and abs(q[2]) > 1e-12:  # the reference's centre is in front of it
        pts.append((q[0] / q[2], q[1] / q[2]))
    m = magnification(H, np.array(pts))
    m = m[np.isfinite(m) & (m > 0)]
    return 1.0 if len(m) == 0 else float(1.0 / math.exp(np.log(m).mean()))


def native_scales(homographies: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]],
                  center: tuple[float, float], tolerance: float = NATIVE_TOLERANCE) -> list[float]:
    """native_scale of every photo, those within ``tolerance`` of 1 set to exactly 1."""
    out = [native_scale(H, size, center) for H, size in zip(homographies, sizes)]
    return [1.0 if abs(s - 1.0) <= tolerance else s for s in out]


def typical_scale(natives: Sequence[float]) -> float:
    """The median native scale, the larger middle one for an even count; 1.0 for none."""
    return float(sorted(natives)[len(natives) // 2]) if len(natives) else 1.0


@dataclass(frozen=True)
class OutputScale:
    """The chosen canvas scale (canvas px per reference-plane px), the rule's native scale before ``scale`` /
    ``megapixels`` / the cap, each photo's downscale before warping (<= 1), and whether the cap lowered it."""

    scale: float
    native: float
    shrink: tuple[float, ...]
    capped: bool = False


def choose_output_scale(canvas_pixels: int, natives: Sequence[float] = (), scale: float | None = None,
                        megapixels: float | None = None, max_pixels: int | None = None) -> OutputScale:
    """The output scale of a canvas of ``canvas_pixels`` px at the reference plane's scale (module docstring).

    natives: per photo, its native scale (native_scales); none: every photo at 1 (the reference plane kept).
    """
    check_output_size(scale, megapixels)
    native = typical_scale(natives)
    s = native
    if scale is not None:
        s = native * float(scale)
    elif megapixels is not None:
        s = min(native, math.sqrt(megapixels * 1e6 / max(canvas_pixels, 1)))
    capped = False
    if max_pixels is not None and s > 1.0 and canvas_pixels * s * s > max_pixels:
        s, capped = max(1.0, math.sqrt(max_pixels / max(canvas_pixels, 1))), True
    return OutputScale(s, native, tuple(min(1.0, s / n) for n in natives), capped)


def resolution_notes(plan: OutputScale, natives: Sequence[float], names: Sequence[str],
                     sizes: Sequence[tuple[int, int]], canvas_pixels: int, max_pixels: int | None) -> list[str]:
    """Warnings on the rule's outcome: each photo drawn under UNDERSAMPLED of its resolution, and the cap."""
    notes = []
    for name, size, n in dict.fromkeys(zip(names, sizes, natives)):
        share = plan.native / n
        if share < UNDERSAMPLED:
            notes.append(f"{name} ({size[0]} x {size[1]} px) is drawn at {100 * share:.0f} % of its resolution: the "
                         "panorama takes the resolution of the median photo")
    if plan.capped and max_pixels is not None:
        full = round(canvas_pixels * plan.native ** 2)
        notes.append(f"the panorama at the median photo's resolution would be {pixel_count(full, max_pixels)}, over "
                     f"the canvas cap of {pixel_count(max_pixels)} (--max-canvas-mp): drawn at "
                     f"{100 * plan.scale / plan.native:.0f} % of that resolution")
    return notes
