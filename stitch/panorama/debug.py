"""Pipeline hooks, and the debug folder written through them (``stitch run ... --debug-dir D``).

stitch_images calls the methods of a ``PipelineHooks`` object at fixed points of the one pipeline; the
base class does nothing, so a run without hooks does no extra work. ``DebugDir`` writes what it is handed:

    matches/<a>--<b>.jpg           inlier matches of every accepted pair (working resolution, side by side)
    warped/<k>_<name>.jpg          each image warped onto the seam-resolution canvas (its box)
    masks/<k>_<name>.png           its valid mask there
    compensated/<k>_<name>.jpg     the same after exposure compensation (the gains in gains.json)
    seams/<k>_<name>.png           its seam mask (the pixels it owns after seam finding)
    seams.png                      every pixel coloured by the image that owns it
    result_seams.jpg               the final panorama with the seam lines drawn in red
    gains.json                     the mean gain (B, G, R or gray) of every image

Only hooks receive data: nothing here re-runs a pipeline stage.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from stitch.geometry import box_slices, union_box
from stitch.imaging import resize_max_side
from stitch.io import to_8bit, write_image_atomic, write_text_atomic
from stitch.panorama.exposure import Gains
from stitch.panorama.views import LowView

#: Colours (BGR) of the images in seams.png, cycled.
PALETTE = ((60, 76, 231), (219, 152, 52), (113, 204, 46), (15, 196, 241), (182, 89, 155), (34, 126, 230),
           (160, 160, 160), (94, 73, 52), (156, 188, 26), (0, 84, 211))


class PipelineHooks:
    """Called by stitch_images at each stage; every method is a no-op here. Arrays are the pipeline's own:
    a hook must not modify them."""

    def matches(self, a: str, b: str, img_a: np.ndarray, img_b: np.ndarray, pts_a: np.ndarray,
                pts_b: np.ndarray) -> None:
        """An accepted pair: working-resolution images (h, w, 3) uint8 and their inliers (N, 2) px."""

    def warped(self, names: Sequence[str], views: Sequence[LowView]) -> None:
        """Each image warped onto the seam-resolution canvas (image and valid mask on its box)."""

    def compensated(self, names: Sequence[str], views: Sequence[LowView], gains: Gains) -> None:
        """The warped images after exposure compensation, and the gains."""

    def seams(self, names: Sequence[str], views: Sequence[LowView], masks: Sequence[np.ndarray]) -> None:
        """The seam masks (h_k, w_k) bool on each view's box."""

    def result(self, image: np.ndarray, seam_lines: Callable[[], np.ndarray]) -> None:
        """The final (cropped) panorama (H, W, 3) uint8 or uint16; seam_lines() computes its (H, W) bool seam lines."""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _stem(name: str) -> str:
    return _safe(Path(name).stem)


class DebugDir(PipelineHooks):
    """Writes the intermediate images of a run into ``folder`` (created if missing); see the module docstring."""

    def __init__(self, folder: str | Path, max_side: int = 2000) -> None:
        self.folder = Path(folder)
        self.max_side = max_side
        self.written: list[Path] = []

    def _write(self, rel: str, img: np.ndarray) -> None:
        img, _ = resize_max_side(img, self.max_side)
        self.written.append(write_image_atomic(self.folder / rel, img))

    def matches(self, a, b, img_a, img_b, pts_a, pts_b) -> None:
        h = max(img_a.shape[0], img_b.shape[0])
        canvas = np.zeros((h, img_a.shape[1] + img_b.shape[1], 3), np.uint8)
        canvas[:img_a.shape[0], :img_a.shape[1]] = img_a
        canvas[:img_b.shape[0], img_a.shape[1]:] = img_b
        for k, (p, q) in enumerate(zip(np.asarray(pts_a), np.asarray(pts_b))):
            color = PALETTE[k % len(PALETTE)]
            pa = (round(p[0]), round(p[1]))
            pb = (round(q[0]) + img_a.shape[1], round(q[1]))
            cv2.line(canvas, pa, pb, color, 1, cv2.LINE_AA)
            cv2.circle(canvas, pa, 3, color, 1, cv2.LINE_AA)
            cv2.circle(canvas, pb, 3, color, 1, cv2.LINE_AA)
        self._write(f"matches/{_stem(a)}--{_stem(b)}.jpg", canvas)

    def warped(self, names, views) -> None:
        for k, (n, v) in enumerate(zip(names, views)):
            self._write(f"warped/{k}_{_stem(n)}.jpg", v.image)
            self._write(f"masks/{k}_{_stem(n)}.png", v.mask.astype(np.uint8) * 255)

    def compensated(self, names, views, gains) -> None:
        for k, (n, v) in enumerate(zip(names, views)):
            self._write(f"compensated/{k}_{_stem(n)}.jpg", v.image)
        table = {n: [round(float(g), 4) for g in gains.scalar(k)] for k, n in enumerate(names)}
        path = write_text_atomic(self.folder / "gains.json", json.dumps({"kind": gains.kind, "mean_gain": table},
                                                                        indent=2) + "\n")
        self.written.append(path)

    def seams(self, names, views, masks) -> None:
        x0, y0, x1, y1 = union_box(v.box for v in views)
        colored = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        for k, (n, v, m) in enumerate(zip(names, views, masks)):
            self._write(f"seams/{k}_{_stem(n)}.png", m.astype(np.uint8) * 255)
            colored[box_slices(v.box, (x0, y0))][m] = PALETTE[k % len(PALETTE)]
        self._write("seams.png", colored)

    def result(self, image, seam_lines) -> None:
        lines = seam_lines()
        out = to_8bit(image).copy()
        thick = cv2.dilate(lines.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        out[thick] = (0, 0, 255)
        self.written.append(write_image_atomic(self.folder / "result_seams.jpg", out))
