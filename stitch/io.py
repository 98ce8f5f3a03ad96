"""Image input/output: read files or arrays into 8-bit BGR, list folders, write outputs atomically."""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stitch.errors import ImageReadError, StitchError

ImageLike = str | os.PathLike | np.ndarray

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".jp2", ".pgm", ".ppm", ".pnm")


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
    img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if img is None:
        raise ImageReadError(f"{p}: not a readable image (corrupt or unsupported format)")
    return to_bgr8(img, str(p))


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


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files in ``folder`` (by extension, sorted by name, not recursive)."""
    d = Path(folder)
    if not d.exists():
        raise ImageReadError(f"{d}: folder not found")
    if not d.is_dir():
        raise ImageReadError(f"{d}: not a folder")
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ImageReadError(f"{d}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


@dataclass
class LoadedImages:
    """Images read from a list of inputs; unreadable files are skipped and named in ``skipped``."""

    images: list[np.ndarray]
    names: list[str]
    skipped: list[str] = field(default_factory=list)


def load_images(inputs: Sequence[ImageLike], skip_unreadable: bool = True) -> LoadedImages:
    """Read every input as (H, W, 3) uint8 BGR; unreadable files warn and are skipped (or raise)."""
    images, names, skipped = [], [], []
    for i, src in enumerate(inputs):
        name = image_name(src, i)
        try:
            images.append(load_image(src, name))
            names.append(name)
        except ImageReadError as exc:
            if not skip_unreadable or isinstance(src, np.ndarray):
                raise
            warnings.warn(f"skipping {exc}", stacklevel=2)
            skipped.append(f"{name}: {exc}")
    return LoadedImages(images, names, skipped)


def write_image_atomic(path: str | os.PathLike, img: np.ndarray, params: Sequence[int] = ()) -> Path:
    """Encode ``img`` by the file extension and write it atomically (temp file + rename)."""
    out = Path(path)
    ext = out.suffix.lower() or ".png"
    try:
        ok, buf = cv2.imencode(ext, img, list(params))
    except cv2.error:
        ok = False
    if not ok:
        raise StitchError(f"{out}: cannot encode an image as '{ext}'")
    return write_bytes_atomic(out, buf.tobytes())


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
        raise StitchError(f"{out}: cannot write there ({parent}: {exc.strerror or exc})") from None
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
