"""Image input/output: read files or arrays into BGR, list folders, write outputs atomically.

Reading: ``read_image`` / ``load_image`` give (H, W, 3) uint8 BGR, EXIF orientation applied (what registration
and the pair tools use). ``read_pixels`` / ``load_pixels`` give what a panorama composites (``Pixels``): 16-bit
files keep 16 bits (uint16), and an alpha channel is a mask of the pixels with data: alpha 0 is no data, such
pixels hold their nearest valid pixel's colour (``fill_no_data``), never the file's. The alpha turns with the
EXIF orientation like the colours.

Writing: ``write_image_atomic`` encodes by the extension (uint16 kept in PNG, TIFF and PPM, rounded to 8 bits
elsewhere) through a temporary file and a rename; it can carry an EXIF block and an ICC profile into JPEG and
PNG files (``embed_metadata``) and tag the file as a stitch output (below).

Folder listing (``scan_folder``, ``list_images``, ``collect_inputs``) reads the files with an image
extension, sorted by name, not recursive, and skips with a reason (a warning where listed):

* broken symlinks (dangling, or looping) with an image extension;
* files named like feature masks: a stem that starts with ``mask`` or ends with ``_mask``, ``-mask`` or
  ``.mask`` (any case), e.g. ``mask.png``, ``mask_01.png``, ``img3_mask.png`` (``is_mask_name``); pass
  masks with ``--mask-dir`` / ``masks=`` instead (with --mask-dir, `stitch run` skips them without a warning);
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from stitch.errors import ImageReadError, ImageTooSmallError, StitchError, one_line
from stitch.exif import read_meta

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
#: Output extensions whose encoder keeps 16 bits per channel (write_image_atomic rounds others to 8 bits).
DEPTH16_EXTENSIONS = (".png", ".tif", ".tiff", ".ppm", ".pnm")
UNSUPPORTED_PHOTO_EXTENSIONS = (".heic", ".heif", ".avif", ".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf",
                                ".rw2", ".pef", ".srw", ".x3f", ".raw")


def _bgr_channels(img: np.ndarray, name: str) -> np.ndarray:
    """An (H, W) or (H, W, 1|3|4) array as (H, W, 3) BGR of the same dtype (gray replicated, alpha dropped)."""
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    channels = img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    if channels == 3:
        return np.ascontiguousarray(img)
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    raise ImageReadError(f"{name}: unsupported channel count {channels}")


def _check_array(img: object, name: str) -> np.ndarray:
    """img itself when it is an (H, W) or (H, W, C) numpy array; ImageReadError naming ``name`` otherwise."""
    if not isinstance(img, np.ndarray):
        raise ImageReadError(f"{name}: expected a numpy array, got {type(img).__name__}")
    if img.ndim not in (2, 3) or img.size == 0 or min(img.shape[:2]) < 1:
        raise ImageReadError(f"{name}: expected an (H, W) or (H, W, C) image, got shape {img.shape}")
    return img


def to_bgr8(img: np.ndarray, name: str = "array") -> np.ndarray:
    """Convert an (H, W), (H, W, 1|3|4) array of uint8/uint16/float to (H, W, 3) uint8 BGR."""
    img = _check_array(img, name)
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
    return _bgr_channels(out, name)


def to_bgr(img: np.ndarray, name: str = "array") -> np.ndarray:
    """(H, W, 3) BGR at the depth stitch composites in: uint16 stays uint16, everything else is to_bgr8's uint8."""
    img = _check_array(img, name)
    return _bgr_channels(img, name) if img.dtype == np.uint16 else to_bgr8(img, name)


def to_8bit(img: np.ndarray) -> np.ndarray:
    """A uint16 array rounded to uint8 (v / 257, the inverse of 8-bit * 257); uint8 unchanged."""
    if img.dtype == np.uint8:
        return img
    return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _file_bytes(p: Path) -> np.ndarray:
    """The bytes of image file p; ImageReadError naming it when it is missing, a folder or empty."""
    if not p.exists():
        raise ImageReadError(f"{p}: file not found")
    if p.is_dir():
        raise ImageReadError(f"{p}: is a folder, expected an image file")
    if p.stat().st_size == 0:
        raise ImageReadError(f"{p}: file is empty (0 bytes)")
    return np.fromfile(str(p), dtype=np.uint8)


def _decode(p: Path, data: np.ndarray, flags: int) -> np.ndarray:
    """cv2.imdecode of file p's bytes; ImageReadError naming p when OpenCV cannot decode them."""
    try:
        img = cv2.imdecode(data, flags)
    except cv2.error as exc:  # OpenCV refuses an image above CV_IO_MAX_IMAGE_PIXELS (2^30) from its header
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc) or "pixels <=" in str(exc):
            raise ImageReadError(f"{p}: too large to read (over {2 ** 30 / 1e6:.0f} megapixels); downscale it "
                                 "first") from None
        raise ImageReadError(f"{p}: not a readable image ({one_line(str(exc))[:120]})") from None
    if img is None:
        raise ImageReadError(f"{p}: not a readable image (corrupt or unsupported format)")
    return img


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 BGR, EXIF orientation applied; gray, RGBA and 16-bit accepted."""
    p = Path(path)
    return to_bgr8(_decode(p, _file_bytes(p), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH), str(p))


# --- full depth and alpha (what a panorama composites) ----------------------------------------------------


@dataclass
class Pixels:
    """An image as a panorama composites it: image (H, W, 3) BGR, uint16 for 16-bit inputs, else uint8; valid
    (H, W) bool from the alpha channel (False where alpha is 0: no data), or None when every pixel has data.
    Pixels without data hold their nearest valid pixel's colour (fill_no_data), never the file's."""

    image: np.ndarray
    valid: np.ndarray | None = None


#: EXIF orientation (1-8) -> the transform that turns the stored pixels upright (what OpenCV's decoder applies).
ORIENTATIONS: dict[int, Any] = {
    1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def _upright_alpha(raw: np.ndarray, color: np.ndarray, orientation: int) -> np.ndarray:
    """The alpha (H, W) of ``raw`` (h, w, 2|4, decoded as stored) turned like ``color`` (H, W, 3, decoded upright).

    OpenCV turns some formats upright even when asked for the pixels unchanged (TIFF) and others not (PNG, WebP),
    so the transform is the first of (EXIF orientation, none) whose colours match the upright decode."""
    target = to_bgr8(color)
    tries = [ORIENTATIONS[orientation](raw) for orientation in dict.fromkeys((orientation, 1))]
    fits = [t for t in tries if t.shape[:2] == color.shape[:2]]
    for t in fits:
        if np.abs(to_bgr8(t[:, :, :-1]).astype(np.int16) - target).mean() <= 1.0:
            return np.ascontiguousarray(t[:, :, -1])
    return np.ascontiguousarray((fits or tries)[0][:, :, -1])


def fill_no_data(img: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A copy of img (H, W, C) whose pixels outside valid (H, W) bool hold their nearest valid pixel's value."""
    holes = (~valid).astype(np.uint8)
    # every valid pixel (a zero of holes) gets its own label; a hole pixel gets the label of its nearest one
    _, labels = cv2.distanceTransformWithLabels(holes, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
    labels = labels.ravel()
    at_valid = np.flatnonzero(valid)
    source = np.zeros(int(labels.max()) + 1, np.int64)
    source[labels[at_valid]] = at_valid
    at_holes = np.flatnonzero(holes)
    out = img.copy()
    flat = out.reshape(len(labels), -1)
    flat[at_holes] = img.reshape(len(labels), -1)[source[labels[at_holes]]]
    return out


def _pixels(color: np.ndarray, alpha: np.ndarray | None, name: str) -> Pixels:
    """Pixels of a colour array (to_bgr) and its alpha (H, W) or None; ImageReadError when all of it is transparent."""
    image = to_bgr(color, name)
    if alpha is None or (valid := alpha > 0).all():
        return Pixels(image)
    if not valid.any():
        raise ImageReadError(f"{name}: every pixel is transparent (alpha 0): no image data")
    return Pixels(fill_no_data(image, valid), valid)


def read_pixels(path: str | os.PathLike) -> Pixels:
    """Read an image file as Pixels: 16-bit files keep 16 bits, the alpha channel (if any) is the valid mask."""
    p = Path(path)
    data = _file_bytes(p)
    color = _decode(p, data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    meta = read_meta(p)
    alpha = None
    if meta.has_alpha:
        raw = _decode(p, data, cv2.IMREAD_UNCHANGED)
        if raw.ndim == 3 and raw.shape[2] in (2, 4):
            alpha = _upright_alpha(raw, color, meta.orientation)
    return _pixels(color, alpha, str(p))


def load_pixels(src: ImageLike, name: str = "image") -> Pixels:
    """Pixels from a path (read_pixels) or an array (H, W[, C]): uint16 kept, a 2nd (of 2) or 4th channel is alpha."""
    if isinstance(src, np.ndarray):
        arr = _check_array(src, name)
        if arr.ndim == 3 and arr.shape[2] in (2, 4):
            return _pixels(arr[:, :, :-1], arr[:, :, -1], name)
        return _pixels(arr, None, name)
    if isinstance(src, (str, os.PathLike)):
        return read_pixels(src)
    raise ImageReadError(f"{name}: expected a path or a numpy array, got {type(src).__name__}")


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
    """Images read from a list of inputs; unreadable files are skipped and recorded in ``skipped``.

    ``valid``: per image, its alpha channel's valid mask (H, W) bool, or None (Pixels.valid)."""

    images: list[Any]  # (H, W, 3) arrays, or what load_images' keep made of each
    names: list[str]
    skipped: list[Skipped] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    valid: list[np.ndarray | None] = field(default_factory=list)


def load_images(inputs: Sequence[ImageLike], skip_unreadable: bool = True, min_side: int = 1,
                depth: bool = False, keep: Callable[[int, str, Pixels], Any] | None = None,
                ordered_map: Callable[[Callable[[int], Any], int], Iterable[Any]] | None = None) -> LoadedImages:
    """Read every input as Pixels (load_pixels): images (H, W, 3) BGR, uint8, or uint16 for 16-bit inputs with
    ``depth``; unreadable files (or ones below min_side px) warn and are skipped (arrays, or with
    skip_unreadable=False: raise). ``indices``: each image's place in inputs. ``keep``: what ``images`` holds of
    each one instead, keep(index in inputs, name, Pixels), called as each is read (so only the images being read
    need to be in memory; ``valid`` then holds None). ``ordered_map(fn, n)``: how the reads run, fn(0), ...,
    fn(n - 1) returned in order (e.g. a few at a time on threads: stitch.panorama.threads.in_order); keep then
    runs on those threads and must not depend on the other inputs. The result, warnings and errors are those of
    reading one input after the other."""

    def read(i: int) -> tuple[str, Any, np.ndarray | None, ImageReadError | None]:
        src = inputs[i]
        name = image_name(src, i)
        try:
            px = load_pixels(src, name)
            check_min_side(px.image, name if isinstance(src, np.ndarray) else str(src), min_side)
        except ImageReadError as exc:
            if not skip_unreadable or isinstance(src, np.ndarray):
                raise
            return name, None, None, exc
        if keep is not None:
            return name, keep(i, name, px), None, None  # keep's result carries what it needs of the valid mask
        return name, px.image if depth else to_bgr8(px.image, name), px.valid, None

    out = LoadedImages([], [])
    reads = ordered_map(read, len(inputs)) if ordered_map is not None else map(read, range(len(inputs)))
    for i, (name, kept, valid, exc) in enumerate(reads):
        if exc is not None:
            warnings.warn(f"skipping {exc}", stacklevel=2)
            out.skipped.append(Skipped(name, str(exc).removeprefix(f"{inputs[i]}: "), isinstance(exc, ImageTooSmallError)))
            continue
        out.images.append(kept)
        out.names.append(name)
        out.indices.append(i)
        out.valid.append(valid)
    return out


JPEG_SOI = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Largest payload of one JPEG segment (its 2-byte length counts itself).
JPEG_SEGMENT_MAX = 65533
#: An ICC profile in JPEG: APP2 segments of 'ICC_PROFILE\0', sequence number, count, then a piece of the profile.
ICC_JPEG_HEADER = b"ICC_PROFILE\x00"


def _jpeg_segment(marker: bytes, payload: bytes) -> bytes:
    return b"\xff" + marker + (len(payload) + 2).to_bytes(2, "big") + payload


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def _insert_at(data: bytes) -> int:
    """Where segments go in encoded JPEG bytes (after SOI and JFIF's APP0) or PNG bytes (after IHDR); -1 otherwise."""
    if data[:2] == JPEG_SOI:
        return 4 + int.from_bytes(data[4:6], "big") if data[2:4] == b"\xff\xe0" else 2
    if data[:8] == PNG_SIGNATURE:
        return 33  # the signature (8) and IHDR (25)
    return -1


def tag_output(data: bytes) -> bytes:
    """Encoded JPEG or PNG bytes with OUTPUT_TAG added (a COM segment after SOI/APP0, a tEXt chunk after
    IHDR); other formats unchanged. The pixels are untouched."""
    at = _insert_at(data)
    if at < 0:
        return data
    seg = (_jpeg_segment(b"\xfe", OUTPUT_TAG) if data[:2] == JPEG_SOI
           else _png_chunk(b"tEXt", b"Software\x00" + OUTPUT_TAG))
    return data[:at] + seg + data[at:]


def embed_metadata(data: bytes, exif: bytes | None = None, icc: bytes | None = None) -> bytes:
    """Encoded JPEG or PNG bytes carrying an EXIF block (TIFF structure, stitch.exif.output_exif) and an ICC
    profile: JPEG APP1 'Exif' and APP2 'ICC_PROFILE' segments, PNG eXIf and iCCP chunks. Other formats, and an
    EXIF block too large for one JPEG segment, are left out. The pixels are untouched."""
    at = _insert_at(data)
    if at < 0:
        return data
    parts = []
    if data[:2] == JPEG_SOI:
        if exif and len(exif) + 6 <= JPEG_SEGMENT_MAX:
            parts.append(_jpeg_segment(b"\xe1", b"Exif\x00\x00" + exif))
        if icc:
            size = JPEG_SEGMENT_MAX - len(ICC_JPEG_HEADER) - 2
            pieces = [icc[k:k + size] for k in range(0, len(icc), size)]
            if len(pieces) <= 255:
                parts += [_jpeg_segment(b"\xe2", ICC_JPEG_HEADER + bytes((k + 1, len(pieces))) + piece)
                          for k, piece in enumerate(pieces)]
    else:
        if exif:
            parts.append(_png_chunk(b"eXIf", exif))
        if icc:
            parts.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    return data[:at] + b"".join(parts) + data[at:]


def write_image_atomic(path: str | os.PathLike, img: np.ndarray, params: Sequence[int] = (),
                       tag: bool = False, exif: bytes | None = None, icc: bytes | None = None) -> Path:
    """Encode ``img`` (H, W[, C]) uint8 or uint16 by the file extension and write it atomically (temp file + rename).

    uint16 pixels keep 16 bits in DEPTH16_EXTENSIONS (PNG, TIFF, PPM) and are rounded to 8 bits (to_8bit) in the
    other formats. ``tag``: mark the file as a stitch output (tag_output), so that folder listings skip it;
    ``exif`` / ``icc``: metadata carried in JPEG and PNG files (embed_metadata). The tag comes first, so it stays
    within the TAG_SEARCH_BYTES that is_stitch_output reads.
    """
    out = Path(path)
    ext = out.suffix.lower() or ".png"
    if img.dtype == np.uint16 and ext not in DEPTH16_EXTENSIONS:
        img = to_8bit(img)
    try:
        ok, buf = cv2.imencode(ext, img, list(params))
    except cv2.error:
        ok = False
    if not ok:
        raise StitchError(f"{out}: cannot encode an image as '{ext}'")
    data = embed_metadata(buf.tobytes(), exif, icc)
    return write_bytes_atomic(out, tag_output(data) if tag else data)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to ``path`` through a temporary file in the same folder and an atomic rename."""
    return write_chunks_atomic(path, (data,))


def write_chunks_atomic(path: str | os.PathLike, chunks: Iterable[bytes]) -> Path:
    """Write the chunks one after another to ``path`` through a temporary file and an atomic rename (a
    streamed output, such as a long HTML index, never sits whole in memory)."""
    with atomic_file(path) as fh:
        for chunk in chunks:
            fh.write(chunk)
    return Path(path)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file handle (seekable) on a temporary file in ``path``'s folder, renamed to ``path`` when the block
    ends without an error (removed on one): the output appears whole or not at all."""
    out = Path(path)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=str(out.parent or "."))
    os.close(fd)
    try:
        with open(tmp, "w+b") as fh:  # by name: writers such as tifffile read fh.name
            yield fh
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the output the usual permissions
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
