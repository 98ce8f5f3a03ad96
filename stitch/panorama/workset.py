"""The working set of registration: each input read once and reduced to what the pair search needs.

``InputScanner`` sees every readable input (stitch.io.load_images' ``keep``, on the reading threads) and keeps a
``Scan``: the image's content key (graph.image_key), its size, its valid mask (alpha), the working image
(``to_work``: about work_megapix MP, uint8) with its feature mask at that size, and the gray thumbnail the placement
check reads. The pipeline drops an exact duplicate of an earlier image by its key.

Many photos: with more than LAZY_MIN_IMAGES file inputs (``lazy_inputs``), a Scan keeps neither the
full-resolution image nor the working image. The pair search's graph.WorkImages makes an image's working image
again from its file (``work_loader``) when its pairs are screened and forgets it after its last one
(graph.PairScreen), so registration holds the images of a few dozen photos at a time, not of all of them, for
one more decode of each file per phase of the pair search (docs/measurements.md, "workset").
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from stitch.errors import ImageReadError
from stitch.imaging import resize_max_side, to_gray
from stitch.io import ImageLike, Pixels, load_pixels, to_bgr8
from stitch.panorama.graph import image_key
from stitch.panorama.inputs import check_mask, feature_mask, work_mask
from stitch.panorama.placement import PLACEMENT_SIDE

#: Above this many inputs, all of them files, registration reads each working image again from its file when its
#: pairs are screened instead of holding every one (why this value: docs/measurements.md, "workset").
LAZY_MIN_IMAGES = 60


def to_work(img: np.ndarray, megapix: float) -> np.ndarray:
    """(H, W, 3) uint8 or uint16 image downscaled (INTER_AREA) to about ``megapix`` MP, as uint8; never upscaled."""
    h, w = img.shape[:2]
    s = min(1.0, math.sqrt(megapix * 1e6 / float(h * w)))
    if s < 1.0:
        img = cv2.resize(img, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA)
    return to_bgr8(img)


def lazy_inputs(inputs: Sequence[ImageLike]) -> bool:
    """Whether registration reads the working images again from their files: more than LAZY_MIN_IMAGES inputs,
    every one a path (arrays are in memory anyway)."""
    return len(inputs) > LAZY_MIN_IMAGES and all(isinstance(s, (str, os.PathLike)) for s in inputs)


@dataclass
class Scan:
    """One readable input, reduced: content ``key``, ``size`` (w, h), its ``valid`` mask (H, W) bool or None, the
    full-resolution ``image`` and the working image ``work`` (all three None when the scan is lazy), ``work_size``
    (w, h), the feature mask at that size ``work_mask`` (h, w) bool or None, and ``thumb``: the gray working image at
    most PLACEMENT_SIDE px."""

    key: str
    size: tuple[int, int]
    valid: np.ndarray | None = None
    image: np.ndarray | None = None
    work: np.ndarray | None = None
    work_size: tuple[int, int] = (0, 0)
    work_mask: np.ndarray | None = None
    thumb: np.ndarray | None = None


class InputScanner:
    """stitch.io.load_images' ``keep``: (index in the inputs, name, Pixels) -> Scan, of each input alone (so any
    thread may scan any input).

    masks: the user's feature mask per input (None: the whole image), checked against the image
    (inputs.check_mask); ``lazy``: keep neither image (see the module docstring)."""

    def __init__(self, megapix: float, masks: Sequence[np.ndarray | None], lazy: bool):
        self.megapix, self.masks, self.lazy = megapix, masks, lazy

    def __call__(self, index: int, name: str, px: Pixels) -> Scan:
        key = image_key(px.image)
        size = (px.image.shape[1], px.image.shape[0])
        work = to_work(px.image, self.megapix)
        work_size = (work.shape[1], work.shape[0])
        mask = work_mask(feature_mask(check_mask(self.masks[index], px.image.shape, name), px.valid), work_size)
        thumb = to_gray(resize_max_side(work, PLACEMENT_SIDE)[0])
        if self.lazy:  # the valid mask too: it is read again with the photo for compositing
            return Scan(key, size, None, None, None, work_size, mask, thumb)
        return Scan(key, size, px.valid, px.image, work, work_size, mask, thumb)


def work_loader(inputs: Sequence[ImageLike], source: Sequence[int], names: Sequence[str],
                sizes: Sequence[tuple[int, int]], megapix: float) -> Callable[[int], np.ndarray]:
    """k -> the working image of kept image k (``source[k]``: its index in ``inputs``), read again from its file;
    ImageReadError naming the file when it no longer has the ``sizes[k]`` (w, h) it had."""

    def load(k: int) -> np.ndarray:
        img = load_pixels(inputs[source[k]], names[k]).image
        if (img.shape[1], img.shape[0]) != tuple(sizes[k]):
            raise ImageReadError(f"{inputs[source[k]]}: changed while being stitched ({img.shape[1]} x "
                                 f"{img.shape[0]} px, was {sizes[k][0]} x {sizes[k][1]})")
        return to_work(img, megapix)

    return load
