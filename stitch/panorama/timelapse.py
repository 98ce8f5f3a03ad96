"""Timelapse output: every input warped alone onto the panorama's (cropped) frame, one file per image.

Frame k is what image k contributes to the panorama: the same projection, canvas and crop (under the 'warp' crop,
the same mesh warp), with its
exposure gain (the mean gain for block gains) and no blending, black where the image does not reach. All
frames have the panorama's size, so they overlay it pixel for pixel (OpenStitching's ``timelapse`` option).
Files are ``<folder>/<k:04d>_<input stem>.png`` (k = the image's place among the kept images, in input
order), PNG (lossless, 16-bit for 16-bit inputs; the black margins compress well), each written atomically and tagged as a stitch
output (stitch.io.is_stitch_output) so that a later run on that folder does not read it as a photo.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stitch.geometry import box_slices, placed_box
from stitch.io import write_image_atomic
from stitch.panorama.rectangle import Mesh
from stitch.panorama.warp import Canvas, warp_image


def frame_name(k: int, name: str) -> str:
    """File name of image k's frame: '<k:04d>_<stem>.png'."""
    return f"{k:04d}_{Path(name).stem}.png"


def timelapse_frame(img: np.ndarray, H: np.ndarray, canvas: Canvas, k: int, box: tuple[int, int, int, int],
                    gain: Sequence[float] = (1.0,), valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(frame (h, w, 3) of img's dtype, covered (h, w) bool) of image k (H (3, 3) image -> reference) on canvas box;
    valid: its valid mask (h, w) uint8 (255: data) or None."""
    x0, y0, x1, y1 = box
    frame = np.zeros((y1 - y0, x1 - x0, 3), img.dtype)
    covered = np.zeros((y1 - y0, x1 - x0), bool)
    wi = warp_image(img, H, canvas, k, region=box, valid=valid)
    if wi is None:
        return frame, covered
    sl = box_slices(placed_box(wi.offset, wi.mask.shape), (x0, y0))
    g = np.asarray(gain, np.float32).reshape(1, 1, -1)
    pix = np.clip(np.rint(wi.image.astype(np.float32) * g), 0, np.iinfo(img.dtype).max).astype(img.dtype)
    frame[sl][wi.mask] = pix[wi.mask]
    covered[sl] = wi.mask
    return frame, covered


def write_timelapse(folder: str | os.PathLike, images: Sequence[np.ndarray], homographies: Sequence[np.ndarray],
                    canvas: Canvas, box: tuple[int, int, int, int], names: Sequence[str],
                    gains: Sequence[Sequence[float]] | None = None,
                    valid: Sequence[np.ndarray | None] | None = None, mesh: Mesh | None = None) -> list[str]:
    """Write one frame per image (see the module docstring); returns the paths written, in image order.

    mesh: the 'warp' crop's (box is then the canvas part it samples): each frame goes through it as the panorama did.

    images/homographies/names/gains/valid (masks (h, w) uint8 or None) are per canvas box: on a full turn the
    image crossing the wrap has two boxes (``canvas.source``), drawn into its one frame."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    frames: dict[int, tuple[np.ndarray, str]] = {}
    for k, (img, H, name) in enumerate(zip(images, homographies, names)):
        frame, covered = timelapse_frame(img, H, canvas, k, box, gains[k] if gains is not None else (1.0,),
                                         None if valid is None else valid[k])
        src = canvas.source(k)
        if src in frames:  # the second piece of an image crossing a 360-degree wrap
            frames[src][0][covered] = frame[covered]
        else:
            frames[src] = (frame, name)
    warp = None if mesh is None else mesh.moved((box[0], box[1]))
    return [str(write_image_atomic(out / frame_name(src, name), frame if warp is None else warp.render(frame), tag=True))
            for src, (frame, name) in sorted(frames.items())]
