"""Stage 8: plain compositing of warped images onto the canvas (feathered or plain average).

This is the swappable last step: exposure compensation, seam finding and multi-band blending (exposure.py,
seams.py, blend.py) replace it later. Memory stays bounded: the canvas is filled in horizontal strips of at
most ``strip_pixels`` pixels, and each strip warps only the images that touch it, one at a time, so no
full-canvas float buffer or list of full-canvas images is ever held.

feather: each image contributes with weight (distance to its nearest border + 1) / max, evaluated at the
source position of every canvas pixel, so seams fade linearly across the overlap; average: every covering
image counts equally.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .warp import Canvas, warp_image

COMPOSITE_CHOICES = ("feather", "average")
DEFAULT_COMPOSITE = "feather"
#: Canvas pixels per strip (bounds the float accumulators to ~16 bytes per strip pixel).
DEFAULT_STRIP_PIXELS = 4_000_000

ProgressFn = Callable[[int, int, str], None]


@dataclass
class Composite:
    """The composited canvas: image (H, W, 3) uint8 BGR (black where empty) and mask (H, W) bool."""

    image: np.ndarray
    mask: np.ndarray


def composite(images: Sequence[np.ndarray], homographies: Sequence[np.ndarray], canvas: Canvas,
              method: str = DEFAULT_COMPOSITE, strip_pixels: int = DEFAULT_STRIP_PIXELS,
              progress: ProgressFn | None = None) -> Composite:
    """Blend images (h, w, 3) uint8 warped by H (3, 3, image -> reference) onto canvas, strip by strip."""
    if method not in COMPOSITE_CHOICES:
        raise ConfigError(f"composite={method!r}: choose one of {', '.join(COMPOSITE_CHOICES)}")
    if strip_pixels < 1:
        raise ConfigError(f"strip_pixels={strip_pixels}: must be positive")
    if len(images) != len(homographies) or len(images) != len(canvas.boxes):
        raise ConfigError(f"composite: {len(images)} images, {len(homographies)} homographies and "
                          f"{len(canvas.boxes)} canvas boxes must match")
    width, height = canvas.size
    out = np.zeros((height, width, 3), np.uint8)
    mask = np.zeros((height, width), bool)
    rows = max(1, min(height, strip_pixels // max(width, 1)))
    n_strips = -(-height // rows)
    for k, y0 in enumerate(range(0, height, rows)):
        y1 = min(height, y0 + rows)
        acc = np.zeros((y1 - y0, width, 3), np.float32)
        wsum = np.zeros((y1 - y0, width), np.float32)
        for i, (img, H) in enumerate(zip(images, homographies)):
            wi = warp_image(img, H, canvas, i, region=(0, y0, width, y1), feather=method == "feather")
            if wi is None:
                continue
            w = wi.weight if wi.weight is not None else wi.mask.astype(np.float32)
            ys, xs = wi.offset[1] - y0, wi.offset[0]
            h_, w_ = wi.mask.shape
            acc[ys:ys + h_, xs:xs + w_] += wi.image.astype(np.float32) * w[:, :, None]
            wsum[ys:ys + h_, xs:xs + w_] += w
        covered = wsum > 0
        blended = acc / np.maximum(wsum, 1e-12)[:, :, None]
        out[y0:y1][covered] = np.clip(np.rint(blended[covered]), 0, 255).astype(np.uint8)
        mask[y0:y1] = covered
        if progress is not None:
            progress(k + 1, n_strips, f"compositing rows {y0}-{y1} of {height}")
    return Composite(out, mask)
