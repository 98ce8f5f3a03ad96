"""Image file metadata, read with Pillow from the file's header (no pixel is decoded): stitch's one EXIF reader.

``read_meta(path)`` gives an ``ImageMeta``: what the project uses of a photo's metadata.

* capture time: EXIF DateTimeOriginal (``capture_seconds``; stitch batch's 'time-gap' sets);
* focal length in px (``focal_px``; the rotating-camera model's starting value and prior);
* orientation (EXIF 1-8) and whether the file has an alpha channel (stitch.io reads the alpha as a mask);
* what a panorama carries over from its reference photo (``output_exif``): camera make and model, capture
  date (DateTimeOriginal and DateTime), and the ICC colour profile (``ImageMeta.icc_profile``).

A file Pillow cannot open, or one without EXIF, gives empty fields (None), never an error: metadata is optional.
Pillow's decompression-bomb check guards against decoding huge images; only the header is read here (OpenCV
decodes the pixels, up to its own limit), so its warning above ``PIL.Image.MAX_IMAGE_PIXELS`` is not shown.
Above twice that Pillow refuses to open the file at all: a warning names the file, and its metadata is empty.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: EXIF tags (IFD0): Make, Model, DateTime, Orientation; the pointer to the Exif sub-IFD.
MAKE, MODEL, DATETIME, ORIENTATION, EXIF_IFD = 0x010F, 0x0110, 0x0132, 0x0112, 0x8769
#: Exif sub-IFD tags: DateTimeOriginal, FocalLength (mm), FocalPlaneXResolution, FocalPlaneResolutionUnit,
#: FocalLengthIn35mmFilm, PixelXDimension, PixelYDimension.
DATETIME_ORIGINAL, FOCAL_LENGTH, FOCAL_PLANE_X_RES, FOCAL_PLANE_UNIT = 0x9003, 0x920A, 0xA20E, 0xA210
FOCAL_35MM, PIXEL_X_DIMENSION, PIXEL_Y_DIMENSION = 0xA405, 0xA002, 0xA003
#: The EXIF date format ('2024:05:01 10:00:00').
EXIF_TIME_FORMAT = "%Y:%m:%d %H:%M:%S"
#: FocalPlaneResolutionUnit -> mm per unit (2: inch, 3: cm, 4: mm).
MM_PER_UNIT = {2: 25.4, 3: 10.0, 4: 1.0}
#: Pillow modes (and PNG/GIF 'transparency' entries) that carry an alpha channel.
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


@dataclass(frozen=True)
class ImageMeta:
    """A file's metadata; None where absent. orientation: EXIF 1-8;
    focal_mm / focal_35mm: FocalLength and FocalLengthIn35mmFilm; focal_plane_px_per_mm: FocalPlaneXResolution in
    px per mm; exif_long_side: the longer of PixelX/YDimension (the size the camera wrote)."""

    make: str | None = None
    model: str | None = None
    datetime_original: str | None = None
    datetime: str | None = None
    orientation: int = 1
    focal_mm: float | None = None
    focal_35mm: float | None = None
    focal_plane_px_per_mm: float | None = None
    exif_long_side: int | None = None
    icc_profile: bytes | None = None
    has_alpha: bool = False


def _text(value: object) -> str | None:
    """An EXIF ASCII value as a stripped str (None when absent or empty)."""
    if isinstance(value, bytes):
        value = value.split(b"\0")[0].decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    value = value.split("\0")[0].strip()
    return value or None


def _number(value: object) -> float | None:
    """A positive EXIF number (int or rational) as float, else None."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return v if v > 0 else None


def _exif_of(im: Any) -> Any:
    """The Pillow Exif of an open image; a PNG's only from chunks before its pixels (no decoding)."""
    from PIL import Image

    if im.format == "PNG" and "exif" not in im.info:
        return Image.Exif()  # Pillow would decode the whole PNG looking for an eXIf chunk after the pixels
    return im.getexif()


def _meta_of(im: Any) -> ImageMeta:
    """ImageMeta of an open Pillow image."""
    exif = _exif_of(im)
    sub = exif.get_ifd(EXIF_IFD)
    unit_mm = MM_PER_UNIT.get(int(_number(sub.get(FOCAL_PLANE_UNIT)) or 2))
    res = _number(sub.get(FOCAL_PLANE_X_RES))
    dims = [int(d) for d in (sub.get(PIXEL_X_DIMENSION), sub.get(PIXEL_Y_DIMENSION)) if _number(d)]
    orientation = exif.get(ORIENTATION)
    return ImageMeta(
        make=_text(exif.get(MAKE)), model=_text(exif.get(MODEL)),
        datetime_original=_text(sub.get(DATETIME_ORIGINAL)), datetime=_text(exif.get(DATETIME)),
        orientation=int(orientation) if orientation in range(1, 9) else 1,
        focal_mm=_number(sub.get(FOCAL_LENGTH)), focal_35mm=_number(sub.get(FOCAL_35MM)),
        focal_plane_px_per_mm=res / unit_mm if res is not None and unit_mm is not None else None,
        exif_long_side=max(dims) if dims else None, icc_profile=im.info.get("icc_profile") or None,
        has_alpha=im.mode in ALPHA_MODES or "transparency" in im.info)


def read_meta(path: str | os.PathLike) -> ImageMeta:
    """The metadata of an image file (see the module docstring); empty when Pillow cannot read it."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # header only: nothing is decoded
            with Image.open(path) as im:
                return _meta_of(im)
    except Image.DecompressionBombError as exc:
        warnings.warn(f"{path}: metadata not read (Pillow refuses to open it: {exc})", stacklevel=2)
    except (OSError, ValueError, SyntaxError, TypeError, KeyError, IndexError):  # not an image, or broken EXIF
        pass
    return ImageMeta()


def capture_seconds(meta: ImageMeta) -> float | None:
    """DateTimeOriginal as seconds on the local clock (for differences between captures); None if absent."""
    if meta.datetime_original is None:
        return None
    try:
        return time.mktime(time.strptime(meta.datetime_original, EXIF_TIME_FORMAT))
    except (ValueError, OverflowError):
        return None


def exif_datetime(path: str | os.PathLike) -> float | None:
    """EXIF DateTimeOriginal of an image file as seconds (capture_seconds); None if absent."""
    return capture_seconds(read_meta(path))


def focal_px(meta: ImageMeta, size: tuple[int, int]) -> float | None:
    """Focal length in px of a (w, h) image from its EXIF, or None (too little data).

    FocalLength (mm) times FocalPlaneXResolution (px per mm) when present, else the 35 mm equivalent scaled to
    the image's long side over 36 mm; the first corrected for a resize since the camera wrote it (the longer
    PixelX/YDimension against the image's long side).
    """
    long_side = float(max(size))
    if meta.focal_mm is not None and meta.focal_plane_px_per_mm is not None:
        written = float(meta.exif_long_side or long_side)
        return meta.focal_mm * meta.focal_plane_px_per_mm * long_side / written
    if meta.focal_35mm is not None:
        return meta.focal_35mm / 36.0 * long_side
    return None


def exif_focal_px(path: str | Path, size: tuple[int, int]) -> float | None:
    """Focal length in px of the (w, h) image in file ``path`` (focal_px of read_meta); None without EXIF."""
    return focal_px(read_meta(path), size)


def output_exif(meta: ImageMeta) -> bytes | None:
    """The EXIF block (TIFF structure, without the 'Exif\\0\\0' prefix) a panorama carries from ``meta``: Make,
    Model, DateTime and DateTimeOriginal; no orientation (the panorama's pixels are upright). None if none is set."""
    from PIL import Image

    top = {tag: v for tag, v in ((MAKE, meta.make), (MODEL, meta.model), (DATETIME, meta.datetime)) if v is not None}
    if not top and meta.datetime_original is None:
        return None
    exif = Image.Exif()
    for tag, value in top.items():
        exif[tag] = value
    if meta.datetime_original is not None:
        exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] = meta.datetime_original
    return exif.tobytes().removeprefix(b"Exif\x00\x00")
