"""Stage 9: the panorama file.

``write_panorama`` encodes the panorama by the file extension and writes it atomically (stitch.io), tagged as a
stitch output (so a later run on that folder skips it), carrying the reference photo's metadata in JPEG and PNG
files: its camera make and model, its dates (stitch.exif.output_exif) and its ICC colour profile. TIFF and the
other formats carry neither (OpenCV's encoders cannot). JPEG files are written at ``jpeg_quality`` (1-100).

TIFF (.tif, .tiff) files are written by ``write_tiff`` with tifffile: BigTIFF (no 4 GB limit), deflate, in
tiles of TIFF_TILE px read from the image one at a time, so a panorama composited tile by tile
(stitch.panorama.tiles: a disk-backed array) is written without ever being held whole in memory. The other
formats are encoded from the whole image in memory: write huge panoramas as .tif.

Depth: a 16-bit panorama (from 16-bit inputs) keeps 16 bits per channel in PNG, TIFF and PPM; any other format
(JPEG, WebP, ...) holds 8, so it is written rounded to 8 bits, with a warning naming the file.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np

from stitch.errors import ConfigError
from stitch.exif import ImageMeta, output_exif
from stitch.io import DEPTH16_EXTENSIONS, OUTPUT_TAG, atomic_file, write_image_atomic

#: JPEG quality of panoramas (1-100), OpenCV's default too.
DEFAULT_JPEG_QUALITY = 95
JPEG_EXTENSIONS = (".jpg", ".jpeg")
TIFF_EXTENSIONS = (".tif", ".tiff")
#: Side (px) of the tiles of a .tif panorama (a multiple of 16, as TIFF requires).
TIFF_TILE = 512
#: Deflate level of .tif panoramas (with the horizontal predictor): level 1 writes opencv_boat's 26 MP in 1.3 s
#: (24 MB; level 6: 6.8 s, 19 MB; uncompressed: 82 MB).
TIFF_DEFLATE_LEVEL = 1
#: Threads compressing the tiles of a .tif panorama.
TIFF_THREADS = 2


def check_jpeg_quality(quality: int) -> None:
    """ConfigError unless quality is an integer in 1..100."""
    if isinstance(quality, bool) or not (isinstance(quality, (int, np.integer)) and 1 <= quality <= 100):
        raise ConfigError(f"jpeg_quality={quality!r}: must be an integer in 1..100")


def write_panorama(path: str | os.PathLike, image: np.ndarray, meta: ImageMeta | None = None,
                   jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> Path:
    """Write image (H, W, 3) uint8 or uint16 to ``path`` as the module docstring says; returns the path."""
    check_jpeg_quality(jpeg_quality)
    out = Path(path)
    ext = out.suffix.lower()
    if image.dtype == np.uint16 and ext not in DEPTH16_EXTENSIONS:
        warnings.warn(f"{out}: a {ext} file holds 8 bits per channel, so the 16-bit panorama is written with 8 "
                      "(write .png or .tif to keep 16)", stacklevel=2)
    if ext in TIFF_EXTENSIONS:
        return write_tiff(out, image)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext in JPEG_EXTENSIONS else []
    meta = meta or ImageMeta()
    return write_image_atomic(out, image, params, tag=True, exif=output_exif(meta), icc=meta.icc_profile)


def write_tiff(path: str | os.PathLike, image: np.ndarray, tile: int = TIFF_TILE) -> Path:
    """Write image (H, W, 3) BGR uint8 or uint16 (an array or a disk-backed np.memmap) to ``path`` as a tiled
    BigTIFF (RGB, deflate, tagged as a stitch output), tile by tile, atomically; returns the path."""
    try:
        import tifffile
    except ImportError:
        raise ConfigError(f"{path}: writing .tif panoramas needs tifffile (pip install tifffile)") from None
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype not in (np.uint8, np.uint16):
        raise ConfigError(f"{path}: expected an (H, W, 3) uint8 or uint16 image, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]

    def tiles():
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                yield np.ascontiguousarray(image[y:y + tile, x:x + tile, ::-1])  # BGR -> RGB

    with atomic_file(path) as fh, tifffile.TiffWriter(fh, bigtiff=True) as tw:
        tw.write(tiles(), shape=image.shape, dtype=image.dtype, tile=(tile, tile), photometric="rgb",
                 compression="adobe_deflate", compressionargs={"level": TIFF_DEFLATE_LEVEL}, predictor="horizontal",
                 maxworkers=TIFF_THREADS, software=OUTPUT_TAG.decode(), metadata=None)
    return Path(path)
