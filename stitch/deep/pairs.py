"""Synthetic image pairs with exact homographies, from real photographs (numpy + OpenCV only, no torch).

Two regimes, both on P x P patches (P = 128):

* **DeTone** (DeTone et al. 2016, "Deep Image Homography Estimation"): the photograph is resized to
  320 x 240, ``dst`` is a P x P patch at a random position, and ``src`` is the quadrilateral whose
  corners are the patch corners each moved by up to rho = 32 px (uniform per coordinate), warped to
  P x P. The start matrix is the identity.
* **refiner**: the same construction (with a random image scale and rotation, and any rho up to 32),
  plus a photometric change of ``src`` and a start matrix whose corners are off the truth by up to
  ``start_rho`` = 8 px: the situation of a classical estimate that a refiner should polish.

Convention: ``H_gt`` (3, 3) maps src pixels to dst pixels, x_dst ~ H @ [x, y, 1], pixel centres at
integer coordinates (OpenCV). The corners used for corner errors (MACE) are ``stitch.geometry.
image_corners(P, P)``: (0, 0), (P, 0), (P, P), (0, P); in the DeTone regime H_gt moves corner k by
exactly delta_k. Every draw comes from the ``rng`` passed in (``np.random.default_rng([seed, k])``), so a
pair is a pure function of (image, seed, index).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from stitch.errors import ConfigError
from stitch.geometry import image_corners
from stitch.imaging import gradient_energy, haze_and_exposure
from stitch.io import IMAGE_EXTENSIONS

DETONE_SIZE = (320, 240)
DETONE_PATCH = 128
DETONE_RHO = 32.0
REFINE_START_RHO = 8.0
REGIME_CHOICES = ("detone", "refiner")


@dataclass(frozen=True)
class Photometric:
    """Random photometric change; each effect is applied with probability ``p`` (0 disables all)."""

    p: float = 0.5
    brightness: float = 0.12            # additive, +-, on [0, 1] intensities
    contrast: tuple[float, float] = (0.7, 1.4)
    gamma: tuple[float, float] = (0.7, 1.5)
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    noise_sigma: tuple[float, float] = (0.005, 0.03)
    jpeg_quality: tuple[int, int] = (30, 90)

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"photometric p={self.p}: must be in [0, 1]")


NO_PHOTOMETRIC = Photometric(p=0.0)


def list_image_files(root: str | os.PathLike) -> list[Path]:
    """Every image file under ``root`` (recursive, sorted by relative path; ``mask*`` files skipped)."""
    base = Path(root)
    if not base.is_dir():
        raise ConfigError(f"{root}: folder not found")
    files = sorted((p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                    and not p.name.startswith(".") and not p.stem.lower().startswith("mask")),
                   key=lambda p: p.relative_to(base).as_posix())
    if not files:
        raise ConfigError(f"{root}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


def set_name(path: Path, root: Path) -> str:
    """The first folder of ``path`` under ``root`` ('' for a file directly in root): its *set*."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else ""


def photometric(img: np.ndarray, rng: np.random.Generator, cfg: Photometric) -> np.ndarray:
    """Apply a random photometric change to a uint8 image (H, W) or (H, W, 3); returns a new uint8 image.

    Order: gamma, contrast, brightness, blur, noise, JPEG; each with probability ``cfg.p``.
    """
    if cfg.p <= 0:
        return img.copy()
    draws = rng.random(6) < cfg.p
    x = img.astype(np.float32) / 255.0
    if draws[0]:
        x = np.power(np.clip(x, 0, 1), rng.uniform(*cfg.gamma)).astype(np.float32)
    if draws[1]:
        m = float(x.mean())
        x = (x - m) * rng.uniform(*cfg.contrast) + m
    if draws[2]:
        x = x + rng.uniform(-cfg.brightness, cfg.brightness)
    if draws[3]:
        x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(*cfg.blur_sigma)))
    if draws[4]:
        x = x + rng.normal(0.0, rng.uniform(*cfg.noise_sigma), x.shape).astype(np.float32)
    out = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if draws[5]:
        q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
            out = dec.reshape(out.shape) if dec is not None else out
    return out


def corner_h(size: int, deltas: np.ndarray) -> np.ndarray:
    """(3, 3) float64 homography moving the corners of a size x size patch by ``deltas`` (4, 2) px."""
    c = image_corners(size, size)
    return cv2.getPerspectiveTransform(c.astype(np.float32), (c + deltas).astype(np.float32)).astype(np.float64)


def uniform_deltas(rng: np.random.Generator, rho: float) -> np.ndarray:
    """(4, 2) corner displacements, each coordinate uniform in [-rho, rho] (DeTone)."""
    return rng.uniform(-rho, rho, (4, 2))


def disk_deltas(rng: np.random.Generator, rho: float) -> np.ndarray:
    """(4, 2) corner displacements, each uniform in the disk of radius ``rho`` ("off by up to rho px")."""
    r = rho * np.sqrt(rng.random(4))
    t = rng.uniform(0, 2 * math.pi, 4)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


@dataclass
class SyntheticPair:
    """One generated pair: src, dst (P, P[, 3]) uint8; H_gt and H_start (3, 3) float64 src -> dst px."""

    src: np.ndarray
    dst: np.ndarray
    H_gt: np.ndarray
    H_start: np.ndarray
    regime: str
    image: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.dst.shape[0])


def _translation(x: float, y: float) -> np.ndarray:
    return np.array([[1.0, 0.0, x], [0.0, 1.0, y], [0.0, 0.0, 1.0]])


def _similarity(scale: float, angle: float) -> np.ndarray:
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _warp(img: np.ndarray, M: np.ndarray, size: int) -> np.ndarray:
    """out(u) = img(M u), u a pixel of the size x size output (bilinear, reflected border)."""
    return cv2.warpPerspective(img, M, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT_101)


def detone_pair(img: np.ndarray, rng: np.random.Generator, patch: int = DETONE_PATCH, rho: float = DETONE_RHO,
                size: tuple[int, int] = DETONE_SIZE, photo: Photometric = NO_PHOTOMETRIC,
                start_rho: float = 0.0, name: str = "") -> SyntheticPair:
    """A pair by the DeTone protocol from ``img`` (H, W[, 3]) uint8; see the module docstring.

    ``start_rho`` > 0 gives a start matrix off by up to that many px at the corners (refiner regime,
    with ``photo`` applied to src); 0 gives the identity start (DeTone regime).
    """
    if patch + 2 * rho > min(size):
        raise ConfigError(f"patch={patch} with rho={rho} does not fit in an image of {size[0]} x {size[1]}")
    small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    x = int(rng.integers(math.ceil(rho), size[0] - patch - math.ceil(rho) + 1))
    y = int(rng.integers(math.ceil(rho), size[1] - patch - math.ceil(rho) + 1))
    H_gt = corner_h(patch, uniform_deltas(rng, rho))
    T = _translation(x, y)
    dst = small[y:y + patch, x:x + patch].copy()
    src = photometric(_warp(small, T @ H_gt, patch), rng, photo)
    regime = "refiner" if start_rho > 0 else "detone"
    return SyntheticPair(src, dst, H_gt, start_matrix(H_gt, rng, patch, start_rho), regime, name, {"x": x, "y": y})


def start_matrix(H_gt: np.ndarray, rng: np.random.Generator, patch: int, start_rho: float) -> np.ndarray:
    """(3, 3) start whose patch corners are each off H_gt's by up to ``start_rho`` px (disk); identity for 0."""
    if start_rho <= 0:
        return np.eye(3)
    c = image_corners(patch, patch)
    q = cv2.perspectiveTransform(c[None].astype(np.float64), H_gt)[0]
    return cv2.getPerspectiveTransform(c.astype(np.float32),
                                       (q + disk_deltas(rng, start_rho)).astype(np.float32)).astype(np.float64)


#: Low-texture split: candidate patch positions drawn per pair, and the texture floor (mean |gradient| of the
#: 0-255 gray patch) below which a patch holds too little to be registered by anything (pure sky, a flat wall).
LOWTEX_CANDIDATES = 12
LOWTEX_FLOOR = 4.0


def lowtex_pair(img: np.ndarray, rng: np.random.Generator, patch: int = DETONE_PATCH, rho: float = DETONE_RHO,
                size: tuple[int, int] = DETONE_SIZE, start_rho: float = 0.0, name: str = "") -> SyntheticPair:
    """A DeTone-protocol pair at a low-texture place, hazed, with an exposure change between the two views.

    Of ``LOWTEX_CANDIDATES`` random patch positions, dst is the one with the least gradient energy that still
    reaches ``LOWTEX_FLOOR`` (the most textured when none does). Half the pairs are hazed (transmission
    0.45-0.8, both views nearly alike); src's exposure differs from dst's (gain 0.6-1.6, gamma 0.8-1.25).
    ``start_rho`` as in ``detone_pair``.
    """
    if patch + 2 * rho > min(size):
        raise ConfigError(f"patch={patch} with rho={rho} does not fit in an image of {size[0]} x {size[1]}")
    small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
    r = math.ceil(rho)
    xs = rng.integers(r, size[0] - patch - r + 1, LOWTEX_CANDIDATES)
    ys = rng.integers(r, size[1] - patch - r + 1, LOWTEX_CANDIDATES)
    energy = np.array([gradient_energy(gray[y:y + patch, x:x + patch]) for x, y in zip(xs, ys)])
    usable = np.flatnonzero(energy >= LOWTEX_FLOOR)
    k = int(usable[np.argmin(energy[usable])]) if usable.size else int(np.argmax(energy))
    x, y = int(xs[k]), int(ys[k])
    H_gt = corner_h(patch, uniform_deltas(rng, rho))
    dst = small[y:y + patch, x:x + patch].copy()
    src = _warp(small, _translation(x, y) @ H_gt, patch)
    haze = float(rng.uniform(0.2, 0.55)) if rng.random() < 0.5 else 0.0
    dst = haze_and_exposure(dst, rng, haze, 1.0, 1.0)
    src = haze_and_exposure(src, rng, min(0.6, max(0.0, haze + float(rng.uniform(-0.05, 0.05)))),
                            float(np.exp(rng.uniform(math.log(0.6), math.log(1.6)))), float(rng.uniform(0.8, 1.25)))
    return SyntheticPair(src, dst, H_gt, start_matrix(H_gt, rng, patch, start_rho),
                         "refiner" if start_rho > 0 else "detone", name,
                         {"x": x, "y": y, "energy": float(energy[k]), "haze": haze})


def random_view_pair(img: np.ndarray, rng: np.random.Generator, patch: int, rho: float,
                     scale_range: tuple[float, float] = (0.5, 1.0), max_angle_deg: float = 15.0,
                     photo: Photometric = NO_PHOTOMETRIC, photo_dst: Photometric = NO_PHOTOMETRIC
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(src, dst, H_gt) from a random similarity view of ``img``: more scales and rotations than DeTone.

    ``scale_range``: patch px per image px of the view, relative to ``img`` (an image pre-shrunk so its
    short side is about 480 px gives patches of 1/2 .. 1/4 of the image). Falls back to the plain
    DeTone view when the rotated view does not fit in the image.
    """
    h, w = img.shape[:2]
    H_gt = corner_h(patch, uniform_deltas(rng, rho))
    for _ in range(4):
        s = float(rng.uniform(*scale_range))
        a = math.radians(float(rng.uniform(-max_angle_deg, max_angle_deg)))
        S = _similarity(1.0 / s, a)  # patch px -> image px, about the patch origin
        quad = np.vstack([image_corners(patch, patch),
                          cv2.perspectiveTransform(image_corners(patch, patch)[None], H_gt)[0]])
        pts = cv2.perspectiveTransform(quad[None], S)[0]
        lo, hi = pts.min(0), pts.max(0)
        span = hi - lo
        if span[0] < w - 2 and span[1] < h - 2:
            ox = rng.uniform(-lo[0], w - 1 - hi[0])
            oy = rng.uniform(-lo[1], h - 1 - hi[1])
            M = _translation(ox, oy) @ S
            dst = photometric(_warp(img, M, patch), rng, photo_dst)
            src = photometric(_warp(img, M @ H_gt, patch), rng, photo)
            return src, dst, H_gt
    rho_fit = min(rho, 0.5 * (min(h, w) - patch) - 1)
    if rho_fit < 0:
        raise ConfigError(f"image of {w} x {h} px is too small for {patch} px patches")
    x = float(rng.uniform(rho_fit, w - patch - rho_fit))
    y = float(rng.uniform(rho_fit, h - patch - rho_fit))
    H_gt = corner_h(patch, uniform_deltas(rng, rho_fit))
    T = _translation(x, y)
    return (photometric(_warp(img, T @ H_gt, patch), rng, photo), photometric(_warp(img, T, patch), rng, photo_dst),
            H_gt)


def warp_with_mask(src: np.ndarray, H: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """src warped by H (src px -> output px) into a size x size frame, and its uint8 validity mask (0/1).

    The mask is eroded by one pixel so that no partly-outside (blended with the zero border) pixel counts.
    """
    out = cv2.warpPerspective(src, H, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    ones = np.ones(src.shape[:2], np.uint8)
    m = cv2.warpPerspective(ones, H, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    return out, cv2.erode(m, np.ones((3, 3), np.uint8))


def residual_deltas(H_gt: np.ndarray, H_start: np.ndarray, size: int) -> np.ndarray:
    """Corner offsets (4, 2) of the residual R = H_gt @ inv(H_start): what a refiner must predict.

    src warped by H_start into the dst frame gives A with A(u) = dst(R u).
    """
    c = image_corners(size, size)
    R = H_gt @ np.linalg.inv(H_start)
    return cv2.perspectiveTransform(c[None], R)[0] - c
