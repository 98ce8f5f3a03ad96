"""Image input/output: read files or arrays into 8-bit BGR, list folders, write outputs atomically.

Folder listing (``scan_folder``, ``list_images``, ``collect_inputs``) reads the files with an image
extension, sorted by name, not recursive, and skips with a reason (a warning where listed):

* broken symlinks (dangling, or looping) with an image extension;
* files named like feature masks: a stem that starts with ``mask`` or ends with ``_mask``, ``-mask`` or
  ``.mask`` (any case), e.g. ``mask.png``, ``mask_01.png``, ``img3_mask.png`` (``is_mask_name``); pass
  masks with ``--mask-dir`` / ``masks=`` instead;
* stitch's own outputs: panoramas and timelapse frames written as JPEG or PNG carry a tag (a JPEG comment
  or a PNG text chunk holding ``OUTPUT_TAG``, no pixel changes), so a panorama written into the input
  folder is not read as a photo by the next run. Other formats (TIFF, WebP, ...) carry no tag.

Files named explicitly (``collect_inputs`` with a file) are always read.
"""

from __future__ import annotations

import errno
import math
import os
import tempfile
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stitch.errors import ImageReadError, ImageTooSmallError, StitchError, one_line

ImageLike = str | os.PathLike | np.ndarray

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".jp2", ".pgm", ".ppm", ".pnm")
#: Written into stitch's JPEG and PNG outputs (see the module docstring); searched in a file's first bytes.
OUTPUT_TAG = b"stitch-output: written by stitch"
#: How many leading bytes of a file are searched for OUTPUT_TAG (it sits right after the header).
TAG_SEARCH_BYTES = 4096
#: Stem endings that mark a feature mask (besides a ``mask`` prefix).
MASK_SUFFIXES = ("_mask", "-mask", ".mask")
#: The skip reason of a file named like a feature mask (``FolderScan.skipped``); the CLI leaves its warning out
#: when masks are given with --mask-dir.
MASK_NAME_REASON = "named like a feature mask (mask*, *_mask); pass masks with --mask-dir"
#: Photo formats a camera or phone writes that stitch does not read: a folder scan names them in a warning
#: instead of passing over them (convert them to JPEG, TIFF or PNG first).
UNSUPPORTED_PHOTO_EXTENSIONS = (".heic", ".heif", ".avif", ".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf",
                                ".rw2", ".pef", ".srw", ".x3f", ".raw")


def to_bgr8(img: np.ndarray, name: str = "array") -> np.ndarray:
    """Convert an (H, W), (H, W, 1|3|4) array of uint8/uint16/float to (H, W, 3) uint8 BGR."""
    if not isinstance(img, np.ndarray):
        raise ImageReadError(f"{name}: expected a numpy array, got {type(img).__name__}")
    if img.ndim not in (2, 3) or img.size == 0 or min(img.shape[:2]) < 1:
        raise ImageReadError(f"{name}: expected an (H, W) or (H, W, C) image, got shape {img.shape}")
    if img.dtype == np.uint8:
        out = img
    elif img.dtype == np.uint16:
        out = (img >> 8).astype(np.uint8)
    elif img.dtype == bool:
        out = img.astype(np.uint8) * 255
    elif np.issubdtype(img.dtype, np.floating):
        hi = 1.0 if float(np.nanmax(img)) <= 1.0 else 255.0
        out = np.clip(np.nan_to_num(img) * (255.0 / hi), 0, 255).astype(np.uint8)
    elif np.issubdtype(img.dtype, np.integer):
        out = np.clip(img, 0, 255).astype(np.uint8)
    else:
        raise ImageReadError(f"{name}: unsupported dtype {img.dtype}")
    if out.ndim == 2:
        return cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
    channels = out.shape[2]
    if channels == 1:
        return cv2.cvtColor(out[:, :, 0], cv2.COLOR_GRAY2BGR)
    if channels == 3:
        return np.ascontiguousarray(out)
    if channels == 4:
        return cv2.cvtColor(out, cv2.COLOR_BGRA2BGR)
    raise ImageReadError(f"{name}: unsupported channel count {channels}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 BGR, EXIF orientation applied; gray, RGBA and 16-bit accepted."""
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: file not found")
    if p.is_dir():
        raise ImageReadError(f"{p}: is a folder, expected an image file")
    if p.stat().st_size == 0:
        raise ImageReadError(f"{p}: file is empty (0 bytes)")
    data = np.fromfile(str(p), dtype=np.uint8)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error as exc:  # OpenCV refuses an image above CV_IO_MAX_IMAGE_PIXELS (2^30) from its header
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc) or "pixels <=" in str(exc):
            raise ImageReadError(f"{p}: too large to read (over {2 ** 30 / 1e6:.0f} megapixels); downscale it "
                                 "first") from None
        raise ImageReadError(f"{p}: not a readable image ({one_line(str(exc))[:120]})") from None
    if img is None:
        raise ImageReadError(f"{p}: not a readable image (corrupt or unsupported format)")
    return to_bgr8(img, str(p))


def check_min_side(img: np.ndarray, name: str, min_side: int) -> np.ndarray:
    """img itself, or ImageReadError when its shorter side is below min_side px."""
    h, w = img.shape[:2]
    if min(h, w) < min_side:
        raise ImageTooSmallError(f"{name}: too small ({w} x {h} px; each side must be at least {min_side} px)")
    return img


def load_image(src: ImageLike, name: str = "image") -> np.ndarray:
    """Return (H, W, 3) uint8 BGR from a path or an array (arrays are converted, never modified)."""
    if isinstance(src, np.ndarray):
        return to_bgr8(src, name)
    if isinstance(src, (str, os.PathLike)):
        return read_image(src)
    raise ImageReadError(f"{name}: expected a path or a numpy array, got {type(src).__name__}")


def image_name(src: ImageLike, index: int) -> str:
    """A display name for an input: the file name for paths, ``image<index>`` for arrays."""
    return Path(src).name if isinstance(src, (str, os.PathLike)) else f"image{index}"


def is_mask_name(path: str | os.PathLike) -> bool:
    """True when the file name marks a feature mask (see the module docstring), e.g. 'mask_01.png'."""
    stem = Path(path).stem.lower()
    return stem.startswith("mask") or stem.endswith(MASK_SUFFIXES)


def is_stitch_output(path: str | os.PathLike) -> bool:
    """True when the file carries OUTPUT_TAG near its start (a panorama or frame stitch wrote)."""
    try:
        with open(path, "rb") as fh:
            return OUTPUT_TAG in fh.read(TAG_SEARCH_BYTES)
    except OSError:
        return False


def broken_link_reason(path: Path) -> str | None:
    """'dangling symlink ...' or 'symlink loop' for a broken symlink, else None."""
    if not path.is_symlink():
        return None
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        return f"dangling symlink (its target {os.readlink(path)} does not exist)"
    return None


@dataclass
class FolderScan:
    """Image files of a listing, in order, and the files skipped as (name, reason)."""

    paths: list[Path]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def scan_folder(folder: str | os.PathLike) -> FolderScan:
    """Image files in ``folder`` and the skipped ones (see the module docstring); raises if it is no folder."""
    d = Path(folder)
    if not d.exists():
        raise ImageReadError(f"{d}: folder not found")
    if not d.is_dir():
        raise ImageReadError(f"{d}: not a folder")
    paths, skipped = [], []
    for p in sorted(d.iterdir()):
        if p.suffix.lower() in UNSUPPORTED_PHOTO_EXTENSIONS:
            kind = p.suffix.lstrip(".").upper()
            skipped.append((p.name, f"{kind} photos are not read; convert them to JPEG, TIFF or PNG first"))
            continue
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if (why := broken_link_reason(p)) is not None:
            skipped.append((p.name, why))
        elif not p.is_file():
            continue
        elif is_mask_name(p):
            skipped.append((p.name, MASK_NAME_REASON))
        elif is_stitch_output(p):
            skipped.append((p.name, "written by stitch (a panorama or timelapse frame), not a photo"))
        else:
            paths.append(p)
    return FolderScan(paths, skipped)


def collect_inputs(items: Sequence[str | os.PathLike]) -> FolderScan:
    """The image files of folders and files, in the order given (each folder's files sorted by name).

    Files are taken as given (ImageReadError if one is missing); folders are scanned (scan_folder).
    """
    if not items:
        raise ImageReadError("no inputs given: name a folder or image files")
    out = FolderScan([])
    for item in items:
        p = Path(item)
        if p.is_dir():
            scan = scan_folder(p)
            out.paths += scan.paths
            out.skipped += scan.skipped
        elif p.is_file():
            out.paths.append(p)
        elif (why := broken_link_reason(p)) is not None:
            raise ImageReadError(f"{p}: {why}")
        else:
            raise ImageReadError(f"{p}: file or folder not found")
    if not out.paths:
        skipped = f"; skipped {', '.join(n for n, _ in out.skipped)}" if out.skipped else ""
        raise ImageReadError(f"{', '.join(map(str, items))}: no images found "
                             f"(looked for {', '.join(IMAGE_EXTENSIONS)}{skipped})")
    return out


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files in ``folder`` (scan_folder; each skipped file is a warning); raises if there are none."""
    scan = scan_folder(folder)
    for name, why in scan.skipped:
        warnings.warn(f"skipping {name}: {why}", stacklevel=2)
    if not scan.paths:
        skipped = f"; skipped {', '.join(n for n, _ in scan.skipped)}" if scan.skipped else ""
        raise ImageReadError(f"{folder}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)}{skipped})")
    return scan.paths


@dataclass(frozen=True)
class Skipped:
    """An input that was not read: its name, why (without the path), and whether it read but was too small."""

    name: str
    reason: str
    too_small: bool = False


@dataclass
class LoadedImages:
    """Images read from a list of inputs; unreadable files are skipped and recorded in ``skipped``."""

    images: list[np.ndarray]
    names: list[str]
    skipped: list[Skipped] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)


def load_images(inputs: Sequence[ImageLike], skip_unreadable: bool = True, min_side: int = 1) -> LoadedImages:
    """Read every input as (H, W, 3) uint8 BGR; unreadable files (or ones below min_side px) warn and are
    skipped (arrays, or with skip_unreadable=False: raise). ``indices``: each image's place in inputs."""
    images, names, skipped, indices = [], [], [], []
    for i, src in enumerate(inputs):
        name = image_name(src, i)
        try:
            images.append(check_min_side(load_image(src, name), name if isinstance(src, np.ndarray) else str(src),
                                         min_side))
            names.append(name)
            indices.append(i)
        except ImageReadError as exc:
            if not skip_unreadable or isinstance(src, np.ndarray):
                raise
            warnings.warn(f"skipping {exc}", stacklevel=2)
            skipped.append(Skipped(name, str(exc).removeprefix(f"{src}: "), isinstance(exc, ImageTooSmallError)))
    return LoadedImages(images, names, skipped, indices)


def tag_output(data: bytes) -> bytes:
    """Encoded JPEG or PNG bytes with OUTPUT_TAG added (a COM segment after SOI/APP0, a tEXt chunk after
    IHDR); other formats unchanged. The pixels are untouched."""
    if data[:2] == b"\xff\xd8":
        at = 2
        if data[2:4] == b"\xff\xe0":  # keep JFIF's APP0 first
            at = 4 + int.from_bytes(data[4:6], "big")
        seg = b"\xff\xfe" + (len(OUTPUT_TAG) + 2).to_bytes(2, "big") + OUTPUT_TAG
        return data[:at] + seg + data[at:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        body = b"tEXt" + b"Software\x00" + OUTPUT_TAG
        chunk = (len(body) - 4).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
        return data[:33] + chunk + data[33:]  # after the signature (8) and IHDR (25)
    return data


def write_image_atomic(path: str | os.PathLike, img: np.ndarray, params: Sequence[int] = (),
                       tag: bool = False) -> Path:
    """Encode ``img`` by the file extension and write it atomically (temp file + rename).

    ``tag``: mark the file as a stitch output (tag_output), so that folder listings skip it.
    """
    out = Path(path)
    ext = out.suffix.lower() or ".png"
    try:
        ok, buf = cv2.imencode(ext, img, list(params))
    except cv2.error:
        ok = False
    if not ok:
        raise StitchError(f"{out}: cannot encode an image as '{ext}'")
    data = buf.tobytes()
    return write_bytes_atomic(out, tag_output(data) if tag else data)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to ``path`` through a temporary file in the same folder and an atomic rename."""
    return write_chunks_atomic(path, (data,))


def write_chunks_atomic(path: str | os.PathLike, chunks: Iterable[bytes]) -> Path:
    """Write the chunks one after another to ``path`` through a temporary file and an atomic rename (a
    streamed output, such as a long HTML index, never sits whole in memory)."""
    out = Path(path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=str(out.parent or "."))
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the output the usual permissions
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out


def check_writable(path: str | os.PathLike) -> Path:
    """Refuse, before any work, an output path that cannot be written: a folder, a path under a file, or a
    folder where no file can be created (probed with a temporary file, so it holds for root and read-only
    mounts too). Returns the path; raises StitchError naming it."""
    out = Path(path)
    if out.is_dir():
        raise StitchError(f"{out}: is a folder; give a file name")
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise StitchError(f"{out}: cannot write there ({parent} is not a folder)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".stitch-probe.", dir=str(parent))
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise StitchError(f"{out}: cannot write there: {parent} does not accept new files "
                          f"({exc.strerror or exc})") from None
    return out


def check_image_output(path: str | os.PathLike) -> Path:
    """``check_writable`` plus an extension OpenCV can encode (.jpg, .png, .tif, ...)."""
    out = Path(path)
    ext = out.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise StitchError(f"{out}: unsupported output extension '{out.suffix}' (use one of {', '.join(IMAGE_EXTENSIONS)})")
    try:
        ok = cv2.imencode(ext, np.zeros((2, 2, 3), np.uint8))[0]
    except cv2.error:
        ok = False
    if not ok:
        raise StitchError(f"{out}: this OpenCV build cannot write '{ext}' files; use .jpg, .png or .tif")
    return check_writable(out)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def read_matrix(path: str | os.PathLike) -> np.ndarray:
    """Read a 3x3 matrix from a whitespace/comma separated text file ('#' comments allowed)."""
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"{p}: matrix file not found")
    try:
        rows = [ln.split("#")[0].replace(",", " ").split() for ln in p.read_text().splitlines()]
        vals = [float(v) for r in rows for v in r]
    except ValueError as exc:
        raise StitchError(f"{p}: not a numeric 3x3 matrix ({exc})") from None
    if len(vals) != 9:
        raise StitchError(f"{p}: expected 9 numbers for a 3x3 matrix, found {len(vals)}")
    return np.asarray(vals, dtype=np.float64).reshape(3, 3)


def jsonable(x: Any) -> Any:
    """Recursively convert to JSON types: numpy -> python, Path -> str, inf -> "inf", NaN -> None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if x is None or isinstance(x, str):
        return x
    return str(x)
