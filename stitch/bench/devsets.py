"""Rendered dev sets with known geometry and repeated structure: where a wrong panorama is easy to make.

Two kinds of set, both built from any photographs you give (tiles):

- ``repeated_turn``: a rotating camera inside a spherical world (an equirectangular image) whose band of
  photographs holds several identical copies of one facade at different azimuths; two rows of views make a
  full turn, plus distractor views of an unrelated world. Truth: each view's rotation R (world -> camera,
  x right, y down, z forward) and focal.
- ``window_wall``: a moving camera in front of a flat wall of identical windows above a row of unique shop
  fronts. Truth: each view's homography view px -> wall px.

``placement_errors`` compares a Registration (stitch.register) with a set's truth: the angle (degrees) or
the distance (px at work resolution) by which each kept view is misplaced, up to the gauge (a global rotation,
or the reference view's frame).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stitch.geometry import normalize_h, project
from stitch.io import write_image_atomic, write_text_atomic
from stitch.panorama.camera import image_center, pinhole

#: (width, height) of every rendered view, and the horizontal field of view (degrees) of the turns.
VIEW_SIZE = (640, 480)
TURN_HFOV = 60.0
#: Equirectangular world: width px (360 degrees), tile grid of the photo band (columns x rows, +-45 degrees).
WORLD_WIDTH = 4096
TURN_COLUMNS, TURN_ROWS, BAND_DEG = 12, 2, 45.0
#: Columns holding the same facade (identical tiles), at 0, 120 and 240 degrees.
FACADE_COLUMNS = (0, 4, 8)
JPEG_QUALITY = 92


def rotation(yaw_deg: float, pitch_deg: float, roll_deg: float = 0.0) -> np.ndarray:
    """R (3, 3) world -> camera of a camera turned by yaw (about the vertical y, down), then pitch (up > 0), roll."""
    y, p, r = np.deg2rad([yaw_deg, pitch_deg, roll_deg])
    Ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    Rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    Rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return (Ry @ Rx @ Rz).T


def intrinsics(focal: float, size: tuple[int, int] = VIEW_SIZE) -> np.ndarray:
    """K (3, 3) with the principal point at the centre of a (w, h) image."""
    return pinhole(focal, image_center(size))


def render_sphere_view(world: np.ndarray, R: np.ndarray, focal: float, size: tuple[int, int] = VIEW_SIZE) -> np.ndarray:
    """The (h, w, 3) pinhole view of an equirectangular ``world`` (H, 2H, 3) by a camera R (world -> camera)."""
    w, h = size
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(intrinsics(focal, size)).T @ R  # R^T K^-1 p
    lon = np.arctan2(rays[..., 0], rays[..., 2])
    lat = np.arctan2(-rays[..., 1], np.hypot(rays[..., 0], rays[..., 2]))
    W, H = world.shape[1], world.shape[0]
    mx = ((lon + math.pi) / (2 * math.pi) * W - 0.5).astype(np.float32)
    my = ((math.pi / 2 - lat) / math.pi * H - 0.5).astype(np.float32)
    return cv2.remap(world, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def tile_crop(img: np.ndarray, size: tuple[int, int], where: float = 0.5) -> np.ndarray:
    """A (h, w, 3) tile of ``size`` (w, h) cut from ``img`` at the aspect ratio of size (``where``: 0 left .. 1 right)."""
    w, h = size
    ih, iw = img.shape[:2]
    cw, ch = min(iw, round(ih * w / h)), min(ih, round(iw * h / w))
    x0, y0 = round((iw - cw) * where), (ih - ch) // 2
    crop = img[y0:y0 + ch, x0:x0 + cw]
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if cw > w else cv2.INTER_CUBIC)


def sphere_world(tiles: Sequence[np.ndarray], facade: Sequence[np.ndarray], rng: np.random.Generator,
                 width: int = WORLD_WIDTH) -> np.ndarray:
    """An equirectangular world (width / 2, width, 3): a band of tiles, ``facade`` (one tile per row) repeated at
    FACADE_COLUMNS, a plain sky above and ground below; ``tiles``: TURN_ROWS * (TURN_COLUMNS - 3) of (th, tw, 3)."""
    H = width // 2
    world = np.zeros((H, width, 3), np.uint8)
    world[: H // 2] = (200, 170, 140)
    world[H // 2:] = (70, 90, 100)
    world = cv2.add(world, rng.normal(0, 3, world.shape).clip(-10, 10).astype(np.int8), dtype=cv2.CV_8U)
    band = round(BAND_DEG / 180.0 * H)  # px from the horizon to either edge of the band
    tw, th = tile_size(width)
    y0 = H // 2 - band
    queue = list(tiles)
    for c in range(TURN_COLUMNS):
        for r in range(TURN_ROWS):
            tile = facade[r] if c in FACADE_COLUMNS else queue.pop(0)
            world[y0 + r * th: y0 + (r + 1) * th, c * tw:(c + 1) * tw] = cv2.resize(tile, (tw, th))
    return world


def tile_size(width: int = WORLD_WIDTH) -> tuple[int, int]:
    """(w, h) px of one tile of the band of a ``width`` px equirectangular world."""
    return width // TURN_COLUMNS, 2 * round(BAND_DEG / 180.0 * width / 2) // TURN_ROWS


@dataclass(frozen=True)
class DevSet:
    """A rendered set on disk: its folder, kind ('rotation' or 'plane') and truth per file name."""

    folder: Path
    kind: str
    truth: dict[str, Any]
    distractors: tuple[str, ...] = ()


def _photometric(img: np.ndarray, rng: np.random.Generator, noise: float = 2.0) -> np.ndarray:
    """(h, w, 3) uint8 with a random gain (0.85..1.15) and Gaussian noise of ``noise``."""
    out = img.astype(np.float32) * rng.uniform(0.85, 1.15) + rng.normal(0, noise, img.shape).astype(np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


#: Photographs a turn's world needs: the facade (one per row) and every other tile of the band.
TURN_TILES = TURN_ROWS * (TURN_COLUMNS - len(FACADE_COLUMNS)) + TURN_ROWS


def make_repeated_turn(out: Path, tiles: Sequence[np.ndarray], other_tiles: Sequence[np.ndarray], seed: int = 0,
                       rows: Sequence[float] = (-14.0, 14.0), step_deg: float = 30.0, distractors: int = 2) -> DevSet:
    """Write a two-row full turn of a world with three identical facades (see the module docstring) to ``out``.

    tiles: TURN_TILES (h, w, 3) photographs of different scenes (cropped to fit; the first two make the
    facade), other_tiles: as many of other scenes, for the distractors' world.
    """
    rng = np.random.default_rng(seed)
    worlds = []
    for name, group in (("tiles", tiles), ("other_tiles", other_tiles)):
        if len(group) < TURN_TILES:
            raise ValueError(f"{name}: need at least {TURN_TILES} photographs, got {len(group)}")
        crops = [tile_crop(t, tile_size(), where=float(rng.uniform(0.2, 0.8))) for t in group[:TURN_TILES]]
        worlds.append(sphere_world(crops[TURN_ROWS:], crops[:TURN_ROWS], rng))
    world, other = worlds
    focal = (VIEW_SIZE[0] / 2) / math.tan(math.radians(TURN_HFOV / 2))
    truth: dict[str, Any] = {}
    k = 0
    for pitch in rows:
        for yaw in np.arange(0.0, 360.0, step_deg):
            R = rotation(yaw + rng.uniform(-3, 3), pitch + rng.uniform(-2, 2), rng.uniform(-2, 2))
            k += 1
            name = f"view_{k:02d}.jpg"
            write_image_atomic(out / name, _photometric(render_sphere_view(world, R, focal), rng),
                               (cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY))
            truth[name] = {"R": R.tolist(), "focal": focal}
    names = []
    for d in range(distractors):
        R = rotation(rng.uniform(0, 360), rng.uniform(-10, 10))
        name = f"distractor_{d + 1}.jpg"
        write_image_atomic(out / name, _photometric(render_sphere_view(other, R, focal), rng),
                           (cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY))
        names.append(name)
    doc = {"kind": "rotation", "convention": "R world -> camera (x right, y down, z forward); focal px; "
           "principal point at the image centre", "views": truth, "distractors": names}
    write_text_atomic(out / "truth.json", json.dumps(doc, indent=1))
    return DevSet(out, "rotation", truth, tuple(names))


#: The window wall: wall size (w, h) px, one window's cell (w, h) px, and the shop row's height px.
WALL_SIZE = (4200, 1500)
WINDOW_CELL = (300, 330)
SHOP_HEIGHT = 510


def window_wall(window: np.ndarray, shops: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A (h, w, 3) wall: identical windows (``window`` cut to a cell) in a grid above unique ``shops``."""
    W, H = WALL_SIZE
    wall = np.full((H, W, 3), (150, 160, 175), np.uint8)
    wall = cv2.add(wall, rng.normal(0, 4, wall.shape).clip(-12, 12).astype(np.int8), dtype=cv2.CV_8U)
    cw, ch = WINDOW_CELL
    pane = tile_crop(window, (cw - 60, ch - 70))
    for y in range(30, H - SHOP_HEIGHT - ch + 31, ch):
        for x in range(0, W - cw + 1, cw):
            wall[y + 20:y + 20 + pane.shape[0], x + 30:x + 30 + pane.shape[1]] = pane
    x, k = 0, 0
    while x < W:
        shop = shops[k % len(shops)]
        w = min(W - x, int(rng.integers(380, 560)))
        wall[H - SHOP_HEIGHT:, x:x + w] = tile_crop(shop, (w, SHOP_HEIGHT), where=float(rng.uniform(0, 1)))
        x, k = x + w, k + 1
    return wall


def make_window_wall(out: Path, tiles: Sequence[np.ndarray], seed: int = 0, views: int = 8) -> DevSet:
    """Write ``views`` views of a window wall (see the module docstring) taken along it to ``out``.

    tiles: the first is the window, the rest the shop fronts (at least 4 of them).
    """
    if len(tiles) < 5:
        raise ValueError(f"tiles: need at least 5 photographs, got {len(tiles)}")
    rng = np.random.default_rng(seed)
    wall = window_wall(tiles[0], tiles[1:], rng)
    W, H = WALL_SIZE
    w, h = VIEW_SIZE
    truth: dict[str, Any] = {}
    tall = 0.6 * H  # wall px a view's height covers: windows above, the lower half of the shop row below
    wide = tall * w / h
    step = (W - 1.1 * wide) / (views - 1)
    for k in range(views):
        cx, cy = 0.55 * wide + k * step + rng.uniform(-30, 30), H - 0.5 * tall - rng.uniform(0, 60)
        s = tall / h * rng.uniform(0.95, 1.05)
        a = math.radians(rng.uniform(-3, 3))
        P = np.array([[1, 0, 0], [0, 1, 0], [rng.uniform(-0.15, 0.15) / (w / 2), rng.uniform(-0.08, 0.08) / (h / 2), 1]])
        C = np.array([[1, 0, -(w - 1) / 2], [0, 1, -(h - 1) / 2], [0, 0, 1]])
        M = np.array([[s * math.cos(a), -s * math.sin(a), cx], [s * math.sin(a), s * math.cos(a), cy], [0, 0, 1]])
        G = normalize_h(M @ P @ C)  # view px -> wall px
        view = cv2.warpPerspective(wall, G, (w, h), flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP)
        name = f"wall_{k + 1:02d}.jpg"
        write_image_atomic(out / name, _photometric(view, rng), (cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY))
        truth[name] = {"H_view_to_wall": G.tolist()}
    doc = {"kind": "plane", "convention": "H maps view px to wall px", "views": truth, "distractors": []}
    write_text_atomic(out / "truth.json", json.dumps(doc, indent=1))
    return DevSet(out, "plane", truth)


def load_devset(folder: str | Path) -> DevSet:
    """The DevSet written in ``folder`` (its truth.json)."""
    folder = Path(folder)
    doc = json.loads((folder / "truth.json").read_text())
    return DevSet(folder, doc["kind"], doc["views"], tuple(doc.get("distractors", ())))


def _kabsch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rotation G (3, 3) minimising sum |G a_i - b_i|^2 over unit vectors a, b (N, 3)."""
    U, _, Vt = np.linalg.svd(b.T @ a)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def _probe_points(size: tuple[int, int]) -> np.ndarray:
    w, h = size
    return np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1], [(w - 1) / 2, (h - 1) / 2]], np.float64)


def placement_errors(reg: Any, dev: DevSet, work_scale: float = 1.0) -> dict[str, float]:
    """Per kept view of ``dev`` (by name): how far the Registration ``reg`` places it from the truth.

    rotation sets: the largest angle (degrees) between the true and the registered ray through a corner or the
    centre, after the best global rotation (fitted to the views within 2 degrees, twice); plane sets: the largest
    corner distance (px, times ``work_scale``) in the reference view's frame. Distractors score +inf when kept.
    """
    names = [n for n in reg.names if n in dev.truth]
    Hs = dict(zip(reg.names, reg.homographies()))
    out = {n: math.inf for n in reg.names if n in dev.distractors}
    if dev.kind == "plane":
        G = {n: np.asarray(dev.truth[n]["H_view_to_wall"]) for n in names}
        ref = reg.reference
        for n in names:
            true = normalize_h(np.linalg.inv(G[ref]) @ G[n])
            pts = _probe_points(VIEW_SIZE)
            out[n] = float(np.max(np.linalg.norm(project(Hs[n], pts) - project(true, pts), axis=1))) * work_scale
        return out
    Kv_inv = np.linalg.inv(pinhole(reg.focal, reg.center))
    est = {}
    for n in names:
        e = _probe_rays(dev.truth[n]) @ Hs[n].T @ Kv_inv.T
        est[n] = e / np.linalg.norm(e, axis=1, keepdims=True)
    out.update(ray_errors(est, dev))
    return out


def _probe_rays(t: dict[str, Any]) -> np.ndarray:
    """(5, 3) homogeneous probe pixels (corners and centre) of a view of truth entry ``t``."""
    return np.hstack([_probe_points(tuple(t.get("size", VIEW_SIZE))), np.ones((5, 1))])


def ray_errors(est: dict[str, np.ndarray], dev: DevSet) -> dict[str, float]:
    """Per view of a rotation DevSet: the largest angle (degrees) between the true and the estimated unit rays
    (5, 3) through its probe pixels (corners, centre), after the best global rotation (fitted to the views within
    2 degrees, twice)."""
    true = {}
    for n in est:
        t = dev.truth[n]
        r = _probe_rays(t) @ np.linalg.inv(intrinsics(t["focal"], tuple(t.get("size", VIEW_SIZE)))).T @ np.asarray(t["R"])
        true[n] = r / np.linalg.norm(r, axis=1, keepdims=True)
    names = list(est)
    use, err = list(names), {}
    for _ in range(3):
        G = _kabsch(np.vstack([true[n] for n in use]), np.vstack([est[n] for n in use]))
        err = {n: float(np.degrees(np.arccos(np.clip(np.sum((true[n] @ G.T) * est[n], 1), -1, 1))).max())
               for n in names}
        use = [n for n in names if err[n] < 2.0] or use
    return err


def camera_errors(cameras: dict[str, tuple[np.ndarray, np.ndarray]], dev: DevSet) -> dict[str, float]:
    """``ray_errors`` of cameras given as (K (3, 3), R (3, 3)) per view, a pixel's ray being R K^-1 x (OpenCV's
    detail.CameraParams convention, e.g. a peer's cameras)."""
    est = {}
    for n, (K, R) in cameras.items():
        e = _probe_rays(dev.truth[n]) @ np.linalg.inv(np.asarray(K, float)).T @ np.asarray(R, float).T
        est[n] = e / np.linalg.norm(e, axis=1, keepdims=True)
    return ray_errors(est, dev)
