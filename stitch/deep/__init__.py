"""Optional learned refiner (needs torch and kornia: ``pip install 'stitch-toolkit[deep]'``).

``refine_deep(H, src_img, dst_img)`` polishes a homography that already roughly aligns the pair: a
small correlation network (``stitch.deep.model``) predicts the remaining 4-corner correction at a
working resolution, applied ``iterations`` times with a kornia re-warp in between, and the correction
is mapped back to full-resolution pixels (``stitch.deep.infer``).

This package imports neither torch nor kornia until ``refine_deep`` is called, so the classical
pipeline runs without them; calling it without them raises ConfigError with the install hint.
Training: ``stitch.deep.train`` (``stitch train CONFIG.toml``).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from stitch.errors import ConfigError, install_hint

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The shipped weights (trained by this project; see weights/README.md for the config and command).
DEFAULT_WEIGHTS = WEIGHTS_DIR / "refiner.pt"
INSTALL_HINT = f"refiner 'deep' needs torch and kornia: {install_hint('deep')}"


def require_torch() -> tuple[Any, Any]:
    """(torch, kornia) modules, or ConfigError with the install hint when either is missing."""
    try:
        torch = importlib.import_module("torch")
        kornia = importlib.import_module("kornia")
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return torch, kornia


def refine_deep(H: np.ndarray, src_img: np.ndarray, dst_img: np.ndarray, weights: str | os.PathLike | None = None,
                iterations: int | None = None, device: str = "cpu", coarse: bool = False,
                threads: int | None = 1) -> np.ndarray | None:
    """Refine H (3, 3, src px -> dst px) with the learned refiner; None when the pair has no usable overlap.

    Args:
        H: (3, 3) start matrix, x_dst ~ H @ [x, y, 1] (pixel centres at integers, as OpenCV).
        src_img, dst_img: (H, W, 3) uint8 BGR or (H, W) gray images, any size.
        weights: a weights file from ``stitch train`` (default: the shipped ``DEFAULT_WEIGHTS``).
        iterations: network passes (>= 1), src re-warped (kornia) by the estimate between passes;
            default 1, or 3 with ``coarse`` (``stitch.deep.infer``, chosen on validation data).
        device: torch device for the network ("cpu" or "cuda").
        coarse: also run the correlation stages, for a start tens of px off (e.g. the identity);
            the default (False) runs only the Lucas-Kanade stage on learned features: the refiner's
            mode for a start within a few px, as after the classical selection, and faster.
        threads: torch CPU threads during the call (restored afterwards); 1 is fastest for one pair
            and never oversubscribes a busy machine; None leaves torch's setting.

    Returns:
        The refined (3, 3) float64 matrix with H[2, 2] = 1, or None.

    Raises:
        ConfigError: torch/kornia are missing, the weights file is unreadable, or an argument is invalid.
    """
    H = np.asarray(H, dtype=np.float64)
    if H.shape != (3, 3) or not np.all(np.isfinite(H)):
        raise ConfigError(f"H: expected a finite (3, 3) matrix, got shape {H.shape}")
    if iterations is not None and int(iterations) < 1:
        raise ConfigError(f"iterations={iterations}: must be >= 1")
    for name, img in (("src_img", src_img), ("dst_img", dst_img)):
        if not isinstance(img, np.ndarray) or img.ndim not in (2, 3) or min(img.shape[:2]) < 8:
            raise ConfigError(f"{name}: expected an (H, W) or (H, W, 3) image of at least 8 x 8 px")
    require_torch()
    from stitch.deep.infer import refine_pair

    if abs(np.linalg.det(H)) < 1e-12:
        return None
    return refine_pair(H, src_img, dst_img, weights if weights is not None else DEFAULT_WEIGHTS,
                       iterations=None if iterations is None else int(iterations), device=device,
                       coarse=bool(coarse), threads=threads)


__all__ = ["DEFAULT_WEIGHTS", "INSTALL_HINT", "refine_deep", "require_torch"]
