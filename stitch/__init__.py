"""stitch: image stitching and homography tuning. Public API only; heavy modules load on first use."""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "estimate_homography": "stitch.homography.select",
    "estimate_pair": "stitch.homography.select",
    "HomographyResult": "stitch.homography.select",
    "Candidate": "stitch.homography.candidates",
    "refine_homography": "stitch.homography.refine",
    "find_homography": "stitch.homography.points",
    "stitch_images": "stitch.panorama.pipeline",
    "Panorama": "stitch.panorama.pipeline",
    "register": "stitch.panorama.pipeline",
    "compose": "stitch.panorama.pipeline",
    "Registration": "stitch.panorama.camera",
    "Camera": "stitch.panorama.camera",
    "StitchError": "stitch.errors",
    "ImageReadError": "stitch.errors",
    "ImageTooSmallError": "stitch.errors",
    "NoOverlapError": "stitch.errors",
    "EstimationError": "stitch.errors",
    "ConfigError": "stitch.errors",
    "CanvasTooLargeError": "stitch.errors",
    "compare_homographies": "stitch.report.compare",
    "CompareReport": "stitch.report.compare",
}

__all__ = [
    "Camera",
    "Candidate",
    "CanvasTooLargeError",
    "CompareReport",
    "ConfigError",
    "EstimationError",
    "HomographyResult",
    "ImageReadError",
    "ImageTooSmallError",
    "NoOverlapError",
    "Panorama",
    "Registration",
    "StitchError",
    "compare_homographies",
    "compose",
    "estimate_homography",
    "estimate_pair",
    "find_homography",
    "refine_homography",
    "register",
    "stitch_images",
]  # the names of _EXPORTS (tests/test_layout.py checks)


def __getattr__(name: str) -> Any:
    """Resolve public names lazily so ``import stitch`` stays fast (PEP 562)."""
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stitch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__ + ["__version__"]
