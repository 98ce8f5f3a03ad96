"""What stitch_images takes besides the photos: feature masks, the ordered-sequence hint, the smallest image.

Feature masks (``masks=``, CLI ``--mask-dir``): one entry per input, None where the whole image may be used;
each an (H, W) bool or uint8 array, or the path of an image file (read as grayscale), the size of its
input. True, or >= 128 for uint8 (white in a mask file), marks where features may be detected; no keypoint
is ever kept in a masked-out (black) pixel. Masks steer registration only: the masked parts still appear in
the panorama. Use them to keep features off a static overlay (a watermark, a date stamp, the lens hood, a
tripod leg) or off moving things (water, people), which would otherwise pull the matching towards them.

An image's alpha channel (stitch.io.Pixels.valid) is such a mask and more: its transparent (alpha 0) pixels
are no data, left out of registration (combined with a mask given here: ``feature_mask``) and of the panorama.

The mask folder's naming rule (``masks_from_dir``): the mask of photo ``a.jpg`` is ``DIR/a.png`` or any
other image extension (``DIR/a.<ext>``, the first in IMAGE_EXTENSIONS' order); a photo without one uses
the whole image; a mask file that matches no photo is reported. The mask folder must not be the input
folder (masks and photos would share names).

Ordered sequences (``range_width=k``, CLI ``--range-width K``): only the pairs of images at most k apart in
input order are matched (N k - k (k + 1) / 2 pairs instead of N (N - 1) / 2), for video frames and
sweeps; 0 (the default) matches every pair. OpenCV's and
OpenStitching's ``range_width`` counts the image itself: their range_width r is k = r - 1 here.
The order is the input order after unreadable files and duplicates are dropped.

Smallest image: ``MIN_IMAGE_SIDE`` px on each side. Smaller images are refused as too small (skipped with a
warning, or an error when fewer than two remain): a SIFT descriptor spans 16 x 16 px at its finest scale
and the quality score needs an overlap of some size, so nothing smaller can be registered.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from stitch.errors import ConfigError, ImageReadError, StitchError
from stitch.io import IMAGE_EXTENSIONS, check_writable

#: Each side of an input image must be at least this many pixels.
MIN_IMAGE_SIDE = 32

MaskLike = str | os.PathLike | np.ndarray | None


def read_mask(src: MaskLike, name: str = "mask") -> np.ndarray | None:
    """A mask (H, W) bool from a bool/uint8 array or an image file (>= 128 is True); None stays None."""
    if src is None:
        return None
    if isinstance(src, (str, os.PathLike)):
        p = Path(src)
        if not p.is_file():
            raise ImageReadError(f"{p}: mask file not found")
        img = cv2.imdecode(np.fromfile(str(p), np.uint8), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise ImageReadError(f"{p}: not a readable mask image")
        return img >= 128
    if isinstance(src, np.ndarray):
        if src.ndim != 2 or src.size == 0:
            raise ConfigError(f"{name}: expected an (H, W) bool or uint8 array, got shape {src.shape}")
        if src.dtype == bool:
            return src.copy()
        if src.dtype == np.uint8:
            return src >= 128
        raise ConfigError(f"{name}: expected a bool or uint8 array, got dtype {src.dtype}")
    raise ConfigError(f"{name}: expected a path, an (H, W) array or None, got {type(src).__name__}")


def load_masks(masks: Sequence[MaskLike] | None, n_inputs: int) -> list[np.ndarray | None]:
    """One mask (H, W) bool or None per input (read_mask); ConfigError unless there is one entry per input."""
    if masks is None:
        return [None] * n_inputs
    if isinstance(masks, (str, bytes, np.ndarray)) or not hasattr(masks, "__len__"):
        raise ConfigError("masks: expected a list with one mask (array, path or None) per input")
    if len(masks) != n_inputs:
        raise ConfigError(f"masks: got {len(masks)} masks for {n_inputs} inputs; give one per input (None: no mask)")
    return [read_mask(m, f"masks[{k}]") for k, m in enumerate(masks)]


def check_mask(mask: np.ndarray | None, image_shape: tuple[int, ...], name: str) -> np.ndarray | None:
    """mask itself when it has the image's (H, W) and keeps some pixel; ConfigError naming the image otherwise."""
    if mask is None:
        return None
    h, w = image_shape[:2]
    if mask.shape != (h, w):
        raise ConfigError(f"mask of {name}: {mask.shape[1]} x {mask.shape[0]} px, but the image is {w} x {h} px")
    if not mask.any():
        raise ConfigError(f"mask of {name}: masks out the whole image (white marks where features may be found)")
    return mask


def feature_mask(mask: np.ndarray | None, valid: np.ndarray | None) -> np.ndarray | None:
    """Where features may be found: the user's mask (H, W) bool and the image's valid mask (its alpha), both."""
    if mask is None or valid is None:
        return valid if mask is None else mask
    return mask & valid


def work_mask(mask: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    """mask (H, W) bool at another (w, h) size: a pixel is kept only when all it covers is kept (INTER_AREA)."""
    if mask is None:
        return None
    if (mask.shape[1], mask.shape[0]) == tuple(size):
        return mask
    return cv2.resize(mask.astype(np.uint8) * 255, tuple(size), interpolation=cv2.INTER_AREA) == 255


def masks_from_dir(paths: Sequence[str | os.PathLike], mask_dir: str | os.PathLike) -> tuple[list[Path | None], list[str]]:
    """(mask file or None per photo by the naming rule of the module docstring, mask files matching no photo)."""
    d = Path(mask_dir)
    if not d.is_dir():
        raise ImageReadError(f"{d}: mask folder not found (--mask-dir)")
    if any(Path(p).resolve().parent == d.resolve() for p in paths):
        raise ConfigError(f"{d}: --mask-dir must not be a folder of input images; put the masks in their own folder")
    files = {}
    for f in sorted(d.iterdir()):
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
            files.setdefault(f.stem, []).append(f)
    for v in files.values():
        v.sort(key=lambda f: IMAGE_EXTENSIONS.index(f.suffix.lower()))
    found = [files[Path(p).stem][0] if Path(p).stem in files else None for p in paths]
    stems = {Path(p).stem for p in paths}
    unused = [f.name for stem, fs in files.items() for f in fs if stem not in stems]
    return found, unused


def check_timelapse_dir(folder: str | os.PathLike, inputs: Sequence[object] = ()) -> None:
    """ConfigError when the timelapse ``folder`` is a file, cannot be written, or holds one of the input files
    (a frame must never overwrite an input; arrays among ``inputs`` are ignored)."""
    p = Path(folder)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{p}: the timelapse folder exists and is not a folder")
    try:  # probes with a temporary file (os.access is wrong for root and read-only mounts)
        check_writable(p / ".stitch-timelapse-probe.png")
    except StitchError as exc:
        raise ConfigError(f"{p}: cannot write the timelapse folder there ({exc})") from None
    if any(isinstance(i, (str, os.PathLike)) and Path(i).resolve().parent == p.resolve() for i in inputs):
        raise ConfigError(f"{p}: the timelapse folder must not hold input images; choose another folder")


def sequence_pairs(n: int, range_width: int = 0) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, to match among n images: j - i <= range_width, or every pair for 0."""
    if not (isinstance(range_width, int) and range_width >= 0):
        raise ConfigError(f"range_width={range_width}: must be an integer >= 0 (0: match every pair)")
    return [(i, j) for i in range(n) for j in range(i + 1, n) if range_width == 0 or j - i <= range_width]
