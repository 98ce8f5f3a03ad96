"""stitch.exif: the one EXIF reader (Pillow): capture time, focal in px, orientation, alpha, what outputs carry."""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from stitch.exif import (
    DATETIME_ORIGINAL,
    EXIF_IFD,
    MAKE,
    MODEL,
    ImageMeta,
    capture_seconds,
    exif_datetime,
    exif_focal_px,
    focal_px,
    output_exif,
    read_meta,
)


def srgb_profile() -> bytes:
    """Pillow's built-in sRGB ICC profile (bytes)."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def photo_exif(make: str = "Canon", model: str = "EOS 40D", stamp: str = "2024:05:01 10:00:00",
               orientation: int | None = None, focal: dict[int, object] | None = None) -> Image.Exif:
    """A camera-like EXIF: Make, Model, DateTimeOriginal (Exif IFD), and optional orientation / focal tags."""
    exif = Image.Exif()
    exif[MAKE], exif[MODEL] = make, model
    if orientation is not None:
        exif[0x0112] = orientation
    sub = exif.get_ifd(EXIF_IFD)
    sub[DATETIME_ORIGINAL] = stamp
    for tag, value in (focal or {}).items():
        sub[tag] = value
    return exif


def save_photo(path: Path, size: tuple[int, int] = (64, 48), mode: str = "RGB", **save: object) -> Path:
    """A small image saved by Pillow with the given save options (exif=, icc_profile=)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    Image.fromarray(pixels, mode).save(path, **save)
    return path


def tiff_with_exif_ifd(path: Path, stamp: str) -> Path:
    """A little-endian TIFF (Pillow's) whose IFD0 gains a pointer to an Exif IFD holding DateTimeOriginal.

    Pillow's TIFF writer drops the Exif IFD, so the new IFD0 (old entries + 0x8769) and the Exif IFD are appended.
    """
    buf = io.BytesIO()
    Image.new("L", (4, 4), 50).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    assert data[:4] == b"II*\x00"
    (ifd0,) = struct.unpack_from("<I", data, 4)
    (n,) = struct.unpack_from("<H", data, ifd0)
    entries = [bytes(data[ifd0 + 2 + 12 * k:ifd0 + 14 + 12 * k]) for k in range(n)]
    new_ifd0 = len(data) + (len(data) & 1)
    exif_ifd = new_ifd0 + 2 + 12 * (n + 1) + 4
    value_at = exif_ifd + 2 + 12 + 4
    entries.append(struct.pack("<HHII", EXIF_IFD, 4, 1, exif_ifd))
    entries.sort(key=lambda e: struct.unpack_from("<H", e)[0])
    value = stamp.encode() + b"\x00"
    tail = struct.pack("<H", n + 1) + b"".join(entries) + struct.pack("<I", 0)
    tail += struct.pack("<H", 1) + struct.pack("<HHII", DATETIME_ORIGINAL, 2, len(value), value_at) + struct.pack("<I", 0)
    data += b"\x00" * (new_ifd0 - len(data)) + tail + value
    struct.pack_into("<I", data, 4, new_ifd0)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("ext", ["jpg", "png", "tif", "webp"])
def test_smoke_read_meta(tmp_path, ext):
    """Make, model, date, orientation and the ICC profile read back from every format Pillow writes them to
    (Pillow's TIFF writer drops the Exif IFD, so a TIFF's date is checked in test_tiff_capture_time)."""
    icc = srgb_profile()
    path = save_photo(tmp_path / f"a.{ext}", exif=photo_exif(orientation=6), icc_profile=icc)
    meta = read_meta(path)
    assert (meta.make, meta.model) == ("Canon", "EOS 40D")
    assert meta.datetime_original == (None if ext == "tif" else "2024:05:01 10:00:00")
    assert meta.orientation == 6 and meta.icc_profile == icc and not meta.has_alpha


def test_tiff_capture_time(tmp_path):
    a = tiff_with_exif_ifd(tmp_path / "a.tif", "2024:05:01 10:00:00")
    b = tiff_with_exif_ifd(tmp_path / "b.tif", "2024:05:01 10:00:20")
    assert read_meta(a).datetime_original == "2024:05:01 10:00:00"
    assert exif_datetime(b) - exif_datetime(a) == pytest.approx(20.0)


def test_capture_time_differences(tmp_path):
    a = save_photo(tmp_path / "a.jpg", exif=photo_exif(stamp="2024:05:01 10:00:00"))
    b = save_photo(tmp_path / "b.jpg", exif=photo_exif(stamp="2024:05:01 10:01:40"))
    assert exif_datetime(b) - exif_datetime(a) == pytest.approx(100.0)
    assert exif_datetime(save_photo(tmp_path / "plain.png")) is None
    assert capture_seconds(ImageMeta(datetime_original="not a date")) is None


def test_focal_px_known_answers(tmp_path):
    """25 mm at 4438.36 px per inch of focal plane, written for 3888 px: 4368.5 px, halved for a 1944 px copy."""
    canon = {0x920A: 25.0, 0xA20E: 4438.356, 0xA210: 2, 0xA002: 3888, 0xA003: 2592}
    path = save_photo(tmp_path / "c.jpg", exif=photo_exif(focal=canon))
    assert exif_focal_px(path, (3888, 2592)) == pytest.approx(4368.5, rel=1e-4)
    assert exif_focal_px(path, (1944, 1296)) == pytest.approx(4368.5 / 2, rel=1e-4)
    phone = save_photo(tmp_path / "p.jpg", exif=photo_exif(focal={0xA405: 27}))  # 35 mm equivalent only
    assert exif_focal_px(phone, (4000, 3000)) == pytest.approx(27 / 36 * 4000)
    assert focal_px(ImageMeta(), (100, 100)) is None
    assert exif_focal_px(save_photo(tmp_path / "none.png"), (64, 48)) is None


def test_alpha_is_reported(tmp_path):
    assert read_meta(save_photo(tmp_path / "rgba.png", mode="RGBA")).has_alpha
    assert read_meta(save_photo(tmp_path / "la.png", mode="LA")).has_alpha
    assert not read_meta(save_photo(tmp_path / "rgb.png")).has_alpha


def test_output_exif_round_trip():
    """The block a panorama carries: make, model and both dates; never an orientation."""
    meta = ImageMeta(make="NIKON", model="D750", datetime_original="2023:01:02 03:04:05",
                     datetime="2023:01:02 03:04:06", orientation=8)
    block = output_exif(meta)
    exif = Image.Exif()
    exif.load(b"Exif\x00\x00" + block)
    assert (exif[MAKE], exif[MODEL], exif[0x0132]) == ("NIKON", "D750", "2023:01:02 03:04:06")
    assert exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] == "2023:01:02 03:04:05" and 0x0112 not in exif
    assert output_exif(ImageMeta(orientation=3)) is None


def test_exception_unreadable_files_give_empty_meta(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    assert read_meta(tmp_path / "junk.jpg") == ImageMeta()
    assert read_meta(tmp_path / "missing.jpg") == ImageMeta()


def test_decompression_bomb_is_named_or_silent(tmp_path, monkeypatch):
    """Pillow's decompression-bomb warning never leaks (only the header is read); its refusal names the file."""
    path = save_photo(tmp_path / "big.jpg", exif=photo_exif())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 48 - 1)  # the warning's range: above the limit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_meta(path).make == "Canon"
    assert caught == []
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # more than twice the limit: Pillow refuses the file
    with pytest.warns(UserWarning, match=r"big\.jpg: metadata not read"):
        assert read_meta(path) == ImageMeta()


def test_exif_block_is_valid_tiff():
    """The block starts with a TIFF header, so JPEG APP1 and PNG eXIf readers accept it."""
    block = output_exif(ImageMeta(make="A"))
    assert block[:4] in (b"MM\x00*", b"II*\x00")
    im = Image.new("RGB", (8, 8))
    buf = io.BytesIO()
    im.save(buf, "PNG", exif=b"Exif\x00\x00" + block)
    assert Image.open(io.BytesIO(buf.getvalue())).getexif()[MAKE] == "A"
