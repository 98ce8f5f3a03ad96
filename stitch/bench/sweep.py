"""A rendered multi-row sweep of many views with known rotations: the growth bench's data (issue 23).

A rotating camera inside a spherical world: an equirectangular image (``mosaic_world``) whose band between
+-``band_deg`` of latitude is a grid of photographs (any you give, cropped to fit), with a sky above and ground
below. ``sweep_rotations`` places ``n`` views in ``rows`` full turns; the horizontal field of view follows from
the count so that neighbours in a row overlap by ``overlap`` of the width, and the rows overlap as much. Each
view gets an exposure change (gain and gamma) and sensor noise, and is written as a JPEG with its truth (R world
-> camera, x right, y down, z forward; focal px; principal point at the centre), which
``stitch.bench.devsets.placement_errors`` compares with a registration.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stitch.bench.devsets import DevSet, render_sphere_view, rotation, tile_crop
from stitch.errors import ConfigError
from stitch.imaging import haze_and_exposure
from stitch.io import write_image_atomic, write_text_atomic

#: Rendered view size (w, h) px, the overlap of row neighbours, and the latitude half-span of the photo band.
SWEEP_VIEW_SIZE = (480, 360)
SWEEP_OVERLAP = 0.4
SWEEP_BAND_DEG = 50.0
#: make_sweep's default world: tiles about this many world px wide (a photograph enlarged as little as the photos
#: allow), in a band that reaches this many degrees of latitude beyond the views' highest and lowest corners.
SWEEP_TILE_PX = 600
SWEEP_BAND_MARGIN_DEG = 2.0
#: Exposure change per view: gain (log-uniform) and gamma ranges (``stitch.imaging.haze_and_exposure``).
SWEEP_GAIN = (0.75, 1.33)
SWEEP_GAMMA = (0.85, 1.15)
JPEG_QUALITY = 90


def mosaic_world(photos: Sequence[np.ndarray], width: int, rng: np.random.Generator, columns: int = 16,
                 band_deg: float = SWEEP_BAND_DEG, allow_repeats: bool = False) -> np.ndarray:
    """An equirectangular world (width / 2, width, 3) uint8: a ``columns``-wide grid of the photos (each crop at a
    random place, none used twice) between +-``band_deg`` of latitude, a sky above and ground below. ConfigError
    when there are fewer photos than tiles, unless ``allow_repeats``: then the photos are cycled, and photos of
    one scene (or one photo's crops) show it in several places: the repeated-structure test world."""
    H = width // 2
    band = round(band_deg / 180.0 * H)
    rows = max(1, round(2 * band / (width / columns * 0.75)))
    if not photos or (len(photos) < rows * columns and not allow_repeats):
        raise ConfigError(f"mosaic_world: {len(photos)} photographs for {rows * columns} tiles; a scene would repeat "
                          "(allow_repeats=True builds the repeated-structure world)")
    world = np.empty((H, width, 3), np.uint8)
    world[: H // 2] = (205, 175, 140)
    world[H // 2:] = (70, 85, 95)
    xs = [round(c * width / columns) for c in range(columns + 1)]  # the tiles span the whole turn
    ys = [H // 2 - band + round(r * 2 * band / rows) for r in range(rows + 1)]
    k = 0
    for r in range(rows):
        for c in range(columns):
            size = (xs[c + 1] - xs[c], ys[r + 1] - ys[r])
            world[ys[r]:ys[r + 1], xs[c]:xs[c + 1]] = tile_crop(photos[k % len(photos)], size,
                                                                 where=float(rng.uniform(0.1, 0.9)))
            k += 1
    return world


def sweep_rotations(n: int, rows: int, rng: np.random.Generator, overlap: float = SWEEP_OVERLAP,
                    size: tuple[int, int] = SWEEP_VIEW_SIZE) -> tuple[list[np.ndarray], float]:
    """(R (3, 3) per view, focal px): ``rows`` full turns of ``n`` views in all, neighbours overlapping by
    ``overlap``; yaw, pitch and roll jittered by a tenth of a step."""
    if n < 2 * rows or rows < 1:
        raise ConfigError(f"sweep of {n} views in {rows} rows: need rows >= 1 and at least 2 views per row")
    per_row = [n // rows + (1 if r < n % rows else 0) for r in range(rows)]
    step = 360.0 / min(per_row)
    hfov = step / (1.0 - overlap)
    if hfov >= 150:
        raise ConfigError(f"sweep of {n} views in {rows} rows: each view would need a {hfov:.0f} degree field of view")
    focal = (size[0] / 2) / math.tan(math.radians(hfov / 2))
    vfov = 2 * math.degrees(math.atan((size[1] / 2) / focal))
    pitch_step = vfov * (1.0 - overlap)
    out = []
    for r, count in enumerate(per_row):
        pitch = (r - (rows - 1) / 2) * pitch_step
        for k in range(count):
            yaw = 360.0 * k / count + 0.5 * r * step  # rows staggered
            jitter = rng.uniform(-0.1, 0.1, 3) * step
            out.append(rotation(yaw + jitter[0], pitch + jitter[1], jitter[2]))
    return out, focal


def view_latitude(Rs: Sequence[np.ndarray], focal: float, size: tuple[int, int]) -> float:
    """The largest |latitude| (degrees) of any view's image border, for views R (3, 3) world -> camera, y down."""
    w, h = size
    xs = np.concatenate([np.linspace(0, w, 17), np.linspace(0, w, 17), np.zeros(13), np.full(13, w)])
    ys = np.concatenate([np.zeros(17), np.full(17, h), np.linspace(0, h, 13), np.linspace(0, h, 13)])
    pts = np.stack([(xs - w / 2) / focal, (ys - h / 2) / focal, np.ones_like(xs)], 1)  # K^-1 p, (n, 3)
    rays = np.concatenate([pts @ R for R in Rs])  # R^T K^-1 p per view
    return float(np.degrees(np.max(np.arcsin(np.abs(rays[:, 1]) / np.linalg.norm(rays, axis=1)))))


def exposed(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) uint8 with a random exposure (gain, gamma, clipped) and sensor noise (no haze)."""
    gain = math.exp(rng.uniform(math.log(SWEEP_GAIN[0]), math.log(SWEEP_GAIN[1])))
    return haze_and_exposure(img, rng, 0.0, gain, float(rng.uniform(*SWEEP_GAMMA)))


def make_sweep(out: Path, photos: Sequence[np.ndarray], n: int, rows: int, seed: int = 0,
               size: tuple[int, int] = SWEEP_VIEW_SIZE, world_width: int | None = None, columns: int | None = None,
               allow_repeats: bool = False, band_deg: float | None = None) -> DevSet:
    """Render ``n`` views of a sweep (see the module docstring) into ``out`` with truth.json; a DevSet of kind
    'rotation'. ``world_width`` defaults to about one world px per view px at the views' focal; ``columns``,
    ``band_deg`` and ``allow_repeats``: the world's tile grid, the latitude its photos reach and whether a scene
    may repeat in it (``mosaic_world``). By default the tiles are about SWEEP_TILE_PX wide and the band reaches
    SWEEP_BAND_MARGIN_DEG beyond the views (``view_latitude``), so no tile lies where no view looks."""
    rng = np.random.default_rng(seed)
    Rs, focal = sweep_rotations(n, rows, rng, size=size)
    width = world_width or int(min(32768, 2 * round(math.pi * focal)))  # 2 pi f px: one px per view px
    columns = columns or max(4, round(width / SWEEP_TILE_PX))
    band_deg = band_deg or min(90.0, view_latitude(Rs, focal, size) + SWEEP_BAND_MARGIN_DEG)
    world = mosaic_world(photos, width, rng, columns, band_deg, allow_repeats=allow_repeats)
    out.mkdir(parents=True, exist_ok=True)
    truth: dict[str, Any] = {}
    digits = len(str(n))
    for k, R in enumerate(Rs):
        name = f"view_{k + 1:0{digits}d}.jpg"
        write_image_atomic(out / name, exposed(render_sphere_view(world, R, focal, size), rng),
                           (cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY))
        truth[name] = {"R": R.tolist(), "focal": focal, "size": list(size)}
    doc = {"kind": "rotation", "convention": "R world -> camera (x right, y down, z forward); focal px; "
           "principal point at the image centre", "views": truth, "distractors": [],
           "sweep": {"views": n, "rows": rows, "seed": seed, "world_width": width, "columns": columns,
                     "band_deg": round(band_deg, 3), "repeats": allow_repeats}}
    write_text_atomic(out / "truth.json", json.dumps(doc, indent=1))
    return DevSet(out, "rotation", truth)
