"""Small image helpers shared by every stage: gray conversion and bounded downscaling."""

from __future__ import annotations

import cv2
import numpy as np


def to_gray(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) BGR or (H, W) uint8 -> (H, W) uint8 gray."""
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def resize_max_side(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downscale so that max(H, W) <= max_side (never upscale); returns (image, scale = new / old)."""
    h, w = img.shape[:2]
    s = min(1.0, max_side / float(max(h, w)))
    if s >= 1.0:
        return img, 1.0
    out = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return out, s


def gradient_energy(gray: np.ndarray) -> float:
    """Mean gradient magnitude of a (h, w) uint8 patch, in gray levels per px (Sobel / 8)."""
    g = gray.astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    return float(np.sqrt(gx * gx + gy * gy).mean())


def haze_and_exposure(img: np.ndarray, rng: np.random.Generator, haze: float, gain: float,
                      gamma: float) -> np.ndarray:
    """uint8 ``img`` seen through haze (blend toward a pale airlight, transmission 1 - ``haze``), then an
    exposure change (``gain``, ``gamma``, clipped as a sensor clips), plus slight sensor noise."""
    x = img.astype(np.float32) / 255.0
    airlight = float(rng.uniform(0.75, 0.95))
    x = x * (1.0 - haze) + airlight * haze
    x = np.power(np.clip(x * gain, 0.0, 1.0), gamma)
    x = x + rng.normal(0.0, float(rng.uniform(0.004, 0.012)), x.shape).astype(np.float32)
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
