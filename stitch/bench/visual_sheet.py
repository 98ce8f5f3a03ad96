"""The worst places of each panorama at 100 %, for a person to look at (stitch.bench.visual finds them).

Each run's child writes ``worst_<kind>.png``: a CROP_SIDE x CROP_SIDE crop of its panorama at full
resolution around the place (centred, but shifted to stay inside the panorama; grey beyond a smaller one),
with short magenta ticks on its edges at the place's column and row. The parent lays them out in
``worst_places.png``: one row per set, one cell per method, and in each cell a crop per kind
(stitch.bench.visual.PLACE_KINDS: the highest seam-band ghosting, the largest colour step, a pixel inside the
largest invented area, else the largest empty one), captioned with the figure there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stitch.bench.visual import PLACE_KINDS, Place
from stitch.io import write_image_atomic

CROP_SIDE = 160
TICK = 7
LABEL_WIDTH = 150
HEAD = 40
CAPTION = 20
GAP = 16


def crop_origin(x: int, size: int, side: int) -> int:
    """Left (top) edge of a side-px window holding x, centred on it but kept inside 0..size where it fits."""
    return x - side // 2 if size <= side else min(max(0, x - side // 2), size - side)


def crop_at(image: np.ndarray, x: int, y: int, side: int = CROP_SIDE) -> np.ndarray:
    """(side, side, 3) uint8: image (H, W, 3) at 100 % around pixel (x, y) (shifted to stay inside the image,
    grey (128) beyond it when smaller), with magenta ticks on the edges at x's column and y's row."""
    out = np.full((side, side, 3), 128, np.uint8)
    H, W = image.shape[:2]
    x0, y0 = crop_origin(x, W, side), crop_origin(y, H, side)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(W, x0 + side), min(H, y0 + side)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    cx, cy, e = x - x0, y - y0, side - 1
    for p, q in (((cx, 0), (cx, TICK)), ((cx, e), (cx, e - TICK)), ((0, cy), (TICK, cy)), ((e, cy), (e - TICK, cy))):
        cv2.line(out, p, q, (255, 0, 255), 2)
    return out


def caption(place: Mapping[str, Any]) -> str:
    """The figure at a place, short: 'ghost 2.3 px', 'dE 4.1', 'invented 1234 px', 'empty 56 px'."""
    v = float(place["value"])
    kind = place["kind"]
    if kind == "ghost":
        return f"ghost {v:.1f} px"
    if kind == "colour":
        return f"dE {v:.1f}"
    return f"{kind} {v:.0f} px"


def write_place_crops(image: np.ndarray, places: Sequence[Place], outdir: Path) -> list[dict[str, Any]]:
    """Write worst_<kind>.png (crop_at) for every place; their dicts (kind, x, y, value, file)."""
    out = []
    for p in places:
        path = write_image_atomic(Path(outdir) / f"worst_{p.kind}.png", crop_at(image, p.x, p.y))
        out.append({"kind": p.kind, "x": p.x, "y": p.y, "value": p.value, "file": str(path)})
    return out


def _slot(kind: str) -> int:
    return PLACE_KINDS.index("invented" if kind == "empty" else kind)


def _text(sheet: np.ndarray, text: str, at: tuple[int, int], scale: float = 0.45, color=(40, 40, 40)) -> None:
    cv2.putText(sheet, text, at, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def worst_places_sheet(sets: Sequence[str], methods: Sequence[str],
                       cells: Mapping[tuple[str, str], list[dict[str, Any]] | str], path: Path) -> Path:
    """A PNG: a row per set, a cell per method holding its crops (PLACE_KINDS order) or a one-line note.

    cells[(set, method)]: the place dicts of write_place_crops (their files are read), or a note ('failed: ...').
    """
    cell_w = len(PLACE_KINDS) * (CROP_SIDE + 4) + GAP
    row_h = CROP_SIDE + CAPTION + 8
    sheet = np.full((HEAD + len(sets) * row_h, LABEL_WIDTH + len(methods) * cell_w, 3), 255, np.uint8)
    for c, m in enumerate(methods):
        _text(sheet, m + ": " + " / ".join(PLACE_KINDS), (LABEL_WIDTH + c * cell_w + 4, 26), 0.6, (0, 0, 0))
    for r, s in enumerate(sets):
        y = HEAD + r * row_h
        _text(sheet, s, (6, y + CROP_SIDE // 2), 0.5, (0, 0, 0))
        for c, m in enumerate(methods):
            x = LABEL_WIDTH + c * cell_w
            cell = cells.get((s, m), "not run")
            if isinstance(cell, str):
                _text(sheet, cell[:40], (x + 4, y + CROP_SIDE // 2), 0.45, (0, 0, 160))
                continue
            for p in cell:
                img = cv2.imread(str(p["file"]))
                if img is None:
                    continue
                xs = x + _slot(p["kind"]) * (CROP_SIDE + 4)
                sheet[y:y + img.shape[0], xs:xs + img.shape[1]] = img[:CROP_SIDE, :CROP_SIDE]
                _text(sheet, caption(p), (xs + 2, y + CROP_SIDE + 15))
    return write_image_atomic(path, sheet)
