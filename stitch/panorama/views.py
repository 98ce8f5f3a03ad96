"""Images placed on a canvas: the low-resolution views that exposure, seams and blending share."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from stitch.geometry import Box, box_intersection, placed_box


@dataclass
class LowView:
    """One image warped onto the low-resolution canvas: image (h, w, 3) uint8 BGR, mask (h, w) bool.

    offset (x, y): low-canvas pixel of the crop's top-left corner.
    """

    image: np.ndarray
    mask: np.ndarray
    offset: tuple[int, int]

    @property
    def box(self) -> Box:
        """(x0, y0, x1, y1) on the low canvas, x1/y1 exclusive."""
        return placed_box(self.offset, self.mask.shape)


class Placed(Protocol):
    """Anything placed on a canvas by its ``box`` (``LowView``, ``stitch.bench.visual.Registered``)."""

    @property
    def box(self) -> Box: ...


def overlapping_pairs(views: Sequence[Placed]) -> Iterator[tuple[int, int, Box]]:
    """(i, j, the intersection of their boxes) for every pair i < j of views whose boxes overlap."""
    for i in range(len(views)):
        for j in range(i + 1, len(views)):
            r = box_intersection(views[i].box, views[j].box)
            if r is not None:
                yield i, j, r
