"""Apply trained refiner weights to an image pair of any size (used by ``stitch.deep.refine_deep``).

The working frame: the bounding box of the overlap (src's outline mapped by H, clipped to dst) is
covered by a square window of dst, shrunk to ``work_size`` px when it is larger (never enlarged). S
(3, 3) maps dst px to working px (the cv2.resize pixel-centre convention, ``stitch.geometry``). B is
dst seen through S and A is src seen through S @ H, both with validity masks; the network predicts
the residual R (A(u) ~ B(R u)) and the refined matrix is

    H' = inv(S) @ R @ S @ H          (src px -> dst px, full resolution)

Images are shrunk with INTER_AREA before the perspective warps when the window is larger than the
working size, so that no aliasing reaches the network.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from stitch.deep.checkpoint import read_weights
from stitch.deep.model import HomographyRefiner, ModelConfig, corners_to_h
from stitch.geometry import normalize_h, overlap_box, resize_matrix

#: Inference settings, chosen on the validation set (ledge; see weights/README.md), never on test images:
#: network passes (src re-warped between passes) and LK iterations per pyramid level.
COARSE_ROUNDS = 3          # all stages: a start tens of px off (e.g. the identity)
FINE_ROUNDS = 1            # LK stage only: a start within a few px
FINE_LK_ITERS = (6, 8)     # iterations of the two finest LK levels in the fine mode (coarser levels: 0)
FINE_LK_STEP = 1.5         # over-relaxed LK steps in the fine mode (the plain Gauss-Newton step falls short)


def default_settings(model: HomographyRefiner, coarse: bool) -> tuple[int, tuple[int, ...], float]:
    """(rounds, lk_iters, lk_step) used when refine_deep gets none."""
    levels = len(model.cfg.lk_strides)
    if coarse:
        return COARSE_ROUNDS, tuple(model.cfg.lk_iters), 1.0
    fine = (0,) * max(0, levels - len(FINE_LK_ITERS)) + FINE_LK_ITERS[-levels:]
    return FINE_ROUNDS, fine, FINE_LK_STEP


@lru_cache(maxsize=4)
def load_refiner(path: str, device: str = "cpu") -> tuple[HomographyRefiner, dict[str, Any]]:
    """The network of a weights file (float32, eval mode) and its meta dict; cached per (path, device)."""
    w = read_weights(path)
    model = HomographyRefiner(ModelConfig.from_dict(w["model_config"]), int(w["work_size"]))
    model.load_state_dict({k: v.float() if v.dtype.is_floating_point else v for k, v in w["state_dict"].items()})
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, dict(w.get("meta", {}))


def _gray_f32(img: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    return g.astype(np.float32) / (65535.0 if g.dtype == np.uint16 else 255.0)


def working_frame(box: tuple[float, ...], dst_size: tuple[int, int], work: int) -> np.ndarray:
    """S (3, 3): dst px -> working px for a square window around ``box``, shrunk to ``work`` px if larger."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0, float(work))
    s = min(1.0, work / side)
    side = work / s
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    dw, dh = dst_size
    ox = min(max(cx - 0.5 * side, 0.0), max(dw - side, 0.0)) if side <= dw else cx - 0.5 * side
    oy = min(max(cy - 0.5 * side, 0.0), max(dh - side, 0.0)) if side <= dh else cy - 0.5 * side
    T = np.array([[1.0, 0.0, -ox], [0.0, 1.0, -oy], [0.0, 0.0, 1.0]])
    return resize_matrix(s) @ T


def _local_scale(M: np.ndarray, size: tuple[int, int]) -> float:
    """sqrt(|det|) of the Jacobian of M (src px -> working px) at the centre of a (w, h) image."""
    (a, b, c), (d, e, f), (g, h, i) = M.tolist()
    cx, cy = 0.5 * size[0], 0.5 * size[1]
    den = g * cx + h * cy + i
    if den == 0.0 or not math.isfinite(den):  # the centre maps to infinity: no usable scale, no pre-shrink
        return 1.0
    px, py = (a * cx + b * cy + c) / den, (d * cx + e * cy + f) / den
    det = ((a - px * g) * (e - py * h) - (b - px * h) * (d - py * g)) / (den * den)
    return math.sqrt(abs(det))


def warp_into(img: np.ndarray, M: np.ndarray, work: int) -> tuple[np.ndarray, np.ndarray]:
    """img (H, W) float32 seen through M (img px -> working px) as work x work, with its 0/1 mask."""
    size = (img.shape[1], img.shape[0])
    s = _local_scale(M, size)
    if s < 0.7:  # shrink first (anti-aliasing), then warp with M re-expressed on the shrunk image
        small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        sx, sy = small.shape[1] / size[0], small.shape[0] / size[1]
        R = np.array([[sx, 0.0, 0.5 * (sx - 1.0)], [0.0, sy, 0.5 * (sy - 1.0)], [0.0, 0.0, 1.0]])
        M, img = M @ np.linalg.inv(R), small
    out = cv2.warpPerspective(img, M, (work, work), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    ones = np.ones(img.shape[:2], np.uint8)
    m = cv2.warpPerspective(ones, M, (work, work), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    return out, cv2.erode(m, np.ones((3, 3), np.uint8)).astype(np.float32)


_threads_lock = threading.Lock()
_threads_users = 0          # torch_threads blocks running now, in any thread
_threads_saved = 0          # torch's setting before the first of them


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (None: leave torch's setting), then restore it.

    The setting is process-wide, so overlapping blocks (the panorama's pair threads) share one: the
    first to enter sets it, the last to leave restores what was there before the first.
    """
    global _threads_users, _threads_saved
    if n is None:
        yield
        return
    with _threads_lock:
        if _threads_users == 0:
            _threads_saved = torch.get_num_threads()
            if int(n) != _threads_saved:
                torch.set_num_threads(int(n))
        _threads_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0 and torch.get_num_threads() != _threads_saved:
                torch.set_num_threads(_threads_saved)


def refine_pair(H: np.ndarray, src_img: np.ndarray, dst_img: np.ndarray, weights: str | Path,
                iterations: int | None = None, device: str = "cpu", min_valid: float = 0.05, coarse: bool = True,
                threads: int | None = 1) -> np.ndarray | None:
    """See ``stitch.deep.refine_deep``; None when the pair has (almost) no overlap under H."""
    with torch_threads(threads if device == "cpu" else None):
        model, _ = load_refiner(str(weights), device)
        rounds, lk_iters, lk_step = default_settings(model, coarse)
        rounds = rounds if iterations is None else int(iterations)
        work = model.work_size
        H = normalize_h(H)
        src_size, dst_size = (src_img.shape[1], src_img.shape[0]), (dst_img.shape[1], dst_img.shape[0])
        box = overlap_box(H, src_size, dst_size)
        if box is None:
            return None
        S = working_frame(box, dst_size, work)
        b, mb = warp_into(_gray_f32(dst_img), S, work)
        a, ma = warp_into(_gray_f32(src_img), S @ H, work)
        if ma.mean() < min_valid or mb.mean() < min_valid:
            return None
        if device == "cpu" and not coarse and rounds == 1:  # the LK stage alone, numpy in and out
            R = model.lk_refine_host(a, ma, b, mb, lk_iters, lk_step)
        else:
            t = [torch.from_numpy(x)[None, None].to(device) for x in (a, ma, b, mb)]
            stages: dict[str, Any] = {} if coarse else {"global_iters": 0, "local_iters": 0}
            delta = model.predict(*t, rounds=rounds, lk_iters=lk_iters, lk_step=lk_step, **stages)
            R = corners_to_h(delta.double().cpu(), work, work)[0].numpy()
        out = np.linalg.inv(S) @ R @ S @ H
        return normalize_h(out) if np.all(np.isfinite(out)) else None
