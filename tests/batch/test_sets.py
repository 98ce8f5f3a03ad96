"""Set discovery: folders, grouping by count and capture-time gap (EXIF or mtime), stitch.toml overrides."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from stitch.batch.sets import OVERRIDE_FILE, count_sets, discover_sets, exif_datetime
from stitch.errors import ConfigError


def _touch_image(path: Path, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8, 3), 128, np.uint8))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def _jpeg_with_exif(path: Path, stamp: str) -> Path:
    """A JPEG whose APP1 segment holds IFD0 -> Exif IFD -> DateTimeOriginal (big-endian TIFF)."""
    _ok, buf = cv2.imencode(".jpg", np.full((8, 8, 3), 100, np.uint8))
    value = stamp.encode() + b"\0"  # 20 bytes
    # TIFF header (8) + IFD0 with 1 entry (2 + 12 + 4) at 8 -> Exif IFD at 26 with 1 entry -> value at 44
    tiff = b"MM\0*" + struct.pack(">I", 8)
    tiff += struct.pack(">H", 1) + struct.pack(">HHII", 0x8769, 4, 1, 26) + struct.pack(">I", 0)
    tiff += struct.pack(">H", 1) + struct.pack(">HHII", 0x9003, 2, len(value), 44) + struct.pack(">I", 0)
    tiff += value
    app1 = b"Exif\0\0" + tiff
    data = buf.tobytes()
    path.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:])
    return path


def test_smoke_folders(tmp_path: Path) -> None:
    """Each folder with images is a set; an empty leaf is a (failing) set; hidden folders are skipped."""
    _touch_image(tmp_path / "a" / "1.jpg")
    _touch_image(tmp_path / "a" / "2.png")
    _touch_image(tmp_path / "b" / "c" / "1.jpg")
    (tmp_path / "b" / "c" / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    _touch_image(tmp_path / ".hidden" / "1.jpg")
    sets = list(discover_sets(tmp_path))
    assert [s.name for s in sets] == ["a", "b/c", "empty"]
    assert [len(s.files) for s in sets] == [2, 1, 0]
    assert count_sets(tmp_path) == 3
    assert [s.name for s in discover_sets(tmp_path, exclude=[tmp_path / "a"])] == ["b/c", "empty"]


def test_group_by_count(tmp_path: Path) -> None:
    for k in range(7):
        _touch_image(tmp_path / f"img{k}.jpg")
    sets = list(discover_sets(tmp_path, group_by="count", count=3))
    assert [s.name for s in sets] == ["set0001", "set0002", "set0003"]
    assert [[p.name for p in s.files] for s in sets][2] == ["img6.jpg"]
    assert [len(s.files) for s in sets] == [3, 3, 1]


def test_group_by_time_gap_mtime(tmp_path: Path) -> None:
    """Gaps above the threshold start a new set; order follows the capture time, not the name."""
    t0 = time.time() - 1000
    for name, dt in (("z.jpg", 0), ("a.jpg", 5), ("m.jpg", 100), ("b.jpg", 104), ("c.jpg", 300)):
        _touch_image(tmp_path / "shoot" / name, t0 + dt)
    sets = list(discover_sets(tmp_path, group_by="time-gap", gap_s=30))
    assert [s.name for s in sets] == ["shoot/set0001", "shoot/set0002", "shoot/set0003"]
    assert [[p.name for p in s.files] for s in sets] == [["z.jpg", "a.jpg"], ["m.jpg", "b.jpg"], ["c.jpg"]]


def test_exif_datetime_wins_over_mtime(tmp_path: Path) -> None:
    a = _jpeg_with_exif(tmp_path / "a.jpg", "2024:05:01 10:00:00")
    b = _jpeg_with_exif(tmp_path / "b.jpg", "2024:05:01 10:00:20")
    c = _jpeg_with_exif(tmp_path / "c.jpg", "2024:05:01 11:00:00")
    assert exif_datetime(b) - exif_datetime(a) == pytest.approx(20.0)
    assert exif_datetime(_touch_image(tmp_path / "plain.png")) is None
    now = time.time()
    for p in (a, b, c):  # equal mtimes: only EXIF separates c
        os.utime(p, (now, now))
    (tmp_path / "plain.png").unlink()
    sets = list(discover_sets(tmp_path, group_by="time-gap", gap_s=60))
    assert [[p.name for p in s.files] for s in sets] == [["a.jpg", "b.jpg"], ["c.jpg"]]


def test_overrides(tmp_path: Path) -> None:
    _touch_image(tmp_path / "good" / "1.jpg")
    (tmp_path / "good" / OVERRIDE_FILE).write_text('preset = "fast"\nprojection = "plane"\n')
    _touch_image(tmp_path / "broken" / "1.jpg")
    (tmp_path / "broken" / OVERRIDE_FILE).write_text("preset = \n")
    by = {s.name: s for s in discover_sets(tmp_path)}
    assert by["good"].overrides == {"preset": "fast", "projection": "plane"} and by["good"].error is None
    assert by["broken"].overrides == {} and OVERRIDE_FILE in by["broken"].error


def test_exception(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="group_by='day'"):
        list(discover_sets(tmp_path, group_by="day"))
    with pytest.raises(ConfigError, match="count=0"):
        list(discover_sets(tmp_path, group_by="count", count=0))
    with pytest.raises(ConfigError, match="not a folder"):
        list(discover_sets(tmp_path / "missing"))


def test_masks_and_stitch_outputs_are_not_inputs(tmp_path: Path) -> None:
    """A set's files follow `stitch run FOLDER`'s rules: mask-named files and tagged panoramas are skipped."""
    from stitch.io import write_image_atomic

    _touch_image(tmp_path / "a" / "1.jpg")
    _touch_image(tmp_path / "a" / "2.jpg")
    _touch_image(tmp_path / "a" / "mask_1.png")
    write_image_atomic(tmp_path / "a" / "panorama.jpg", np.full((8, 8, 3), 90, np.uint8), tag=True)
    (spec,) = discover_sets(tmp_path)
    assert sorted(p.name for p in spec.files) == ["1.jpg", "2.jpg"]
