"""`stitch run` inputs and options: files as input, skipped folder entries, tiny images, masks, crop modes,
timelapse, output scale, range width and the canvas cap message (exact messages, exit codes, no stray files)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import one_line_error
from stitch.cli.main import main

from stitch.io import is_stitch_output

FAST = ["--preset", "fast", "--seam", "voronoi", "-q"]


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every regular file in folder (symlinks left out)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and not p.is_symlink()}


def warnings_of(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [ln for ln in stderr.splitlines() if ln.startswith("warning:")]


@pytest.fixture
def photos(tmp_path: Path, samples_dir: Path) -> Path:
    """tmp/in/a.png, b.png: two overlapping 360 x 400 crops of pano3/view_2 (b is 140 px right, 30 px down)."""
    img = cv2.imread(str(samples_dir / "pano3" / "view_2.jpg"))
    d = tmp_path / "in"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), img[0:400, 0:360])
    cv2.imwrite(str(d / "b.png"), img[30:430, 140:500])
    return d


def test_files_as_input_equal_folder_input(photos, tmp_path, capsys):
    assert main(["run", str(photos), "-o", str(tmp_path / "folder.png"), "--json", "-", *FAST]) == 0
    by_folder = json.loads(capsys.readouterr().out)
    assert main(["run", str(photos / "a.png"), str(photos / "b.png"), "-o", str(tmp_path / "files.png"), "--json", "-",
                 *FAST]) == 0
    by_files = json.loads(capsys.readouterr().out)
    assert by_files["kept"] == by_folder["kept"] == ["a.png", "b.png"]
    assert by_files["size"] == by_folder["size"]
    assert np.array_equal(cv2.imread(str(tmp_path / "files.png")), cv2.imread(str(tmp_path / "folder.png")))
    assert is_stitch_output(tmp_path / "files.png")  # tagged: a later run on tmp_path skips it
    assert main(["run", str(photos / "a.png"), str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "x.png")]) == 1
    one_line_error(capsys.readouterr().err, "nope.jpg: file or folder not found")
    assert not (tmp_path / "x.png").exists()


def test_folder_skips_links_masks_tiny_images_and_own_outputs(photos, tmp_path, capsys):
    os.symlink(tmp_path / "gone.jpg", photos / "dangling.jpg")
    os.symlink("loop.jpg", photos / "loop.jpg")
    cv2.imwrite(str(photos / "mask_a.png"), np.zeros((400, 360), np.uint8))
    cv2.imwrite(str(photos / "tiny.png"), np.zeros((1, 1, 3), np.uint8))
    before = digest(photos)
    out = photos / "pano.jpg"  # into the input folder
    assert main(["run", str(photos), "-o", str(out), "--json", "-", *FAST]) == 0
    captured = capsys.readouterr()
    warns = warnings_of(captured.err)
    assert "warning: skipping dangling.jpg: dangling symlink" in captured.err
    assert "warning: skipping loop.jpg: symlink loop" in warns
    assert any(w.startswith("warning: skipping mask_a.png: named like a feature mask") for w in warns)
    assert any("tiny.png: too small (1 x 1 px; each side must be at least 32 px)" in w for w in warns)
    assert json.loads(captured.out)["kept"] == ["a.png", "b.png"]
    first = out.read_bytes()
    # the next run skips the panorama it wrote, and may overwrite it
    assert main(["run", str(photos), "-o", str(out), "--json", "-", *FAST]) == 0
    captured = capsys.readouterr()
    assert "warning: skipping pano.jpg: written by stitch (a panorama or timelapse frame), not a photo" in captured.err
    assert json.loads(captured.out)["kept"] == ["a.png", "b.png"] and out.read_bytes() == first
    after = digest(photos)
    assert after.pop("pano.jpg") and after == before  # inputs untouched, no stray file


def test_tiny_images_say_too_small(tmp_path, capsys):
    d = tmp_path / "tiny"
    d.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(d / name), np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    assert main(["run", str(d), "-o", str(tmp_path / "o.jpg"), "-q"]) == 1
    one_line_error(capsys.readouterr().err, "need at least 2 images, got 0",
                   "2 too small, each side must be at least 32 px: a.png, b.png")


def test_mask_dir(tmp_path, samples_dir, capsys):
    """A sticker at the same place in both photos misleads the matching; its masks in --mask-dir fix it."""
    img = cv2.imread(str(samples_dir / "pano3" / "view_2.jpg"))
    a, b = img[0:400, 0:360].copy(), img[30:430, 140:500].copy()
    patch = cv2.resize(np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8), (120, 120),
                       interpolation=cv2.INTER_NEAREST)
    a[100:220, 60:180] = b[100:220, 60:180] = patch
    d, masks = tmp_path / "in", tmp_path / "masks"
    d.mkdir()
    masks.mkdir()
    cv2.imwrite(str(d / "a.jpg"), a, [cv2.IMWRITE_JPEG_QUALITY, 98])
    cv2.imwrite(str(d / "b.jpg"), b, [cv2.IMWRITE_JPEG_QUALITY, 98])
    mask = np.full((400, 360), 255, np.uint8)
    mask[100:220, 60:180] = 0
    cv2.imwrite(str(masks / "a.png"), mask)
    cv2.imwrite(str(masks / "b.png"), mask)
    cv2.imwrite(str(masks / "zzz.png"), mask)
    cv2.imwrite(str(d / "a_mask.png"), mask)  # a mask left beside the photos: skipped either way
    opts = ["-o", str(tmp_path / "o.png"), "--json", "-", "--projection", "plane", "--crop", "none", *FAST]
    assert main(["run", str(d), *opts]) == 0
    captured = capsys.readouterr()
    w, h = json.loads(captured.out)["size"]
    assert abs(w - 360) <= 1 and abs(h - 400) <= 1  # misled: the photos stacked on each other
    assert "warning: skipping a_mask.png: named like a feature mask" in captured.err
    assert main(["run", str(d), "--mask-dir", str(masks), *opts]) == 0
    captured = capsys.readouterr()
    assert "no photo matches the mask file(s) zzz.png" in captured.err
    assert "a_mask.png" not in captured.err  # with --mask-dir a mask file among the photos is no surprise
    assert json.loads(captured.out)["kept"] == ["a.jpg", "b.jpg"]
    w, h = json.loads(captured.out)["size"]
    assert abs(w - 500) <= 1 and abs(h - 430) <= 1  # registered: 140 px right and 30 px down
    assert main(["run", str(d), "-o", str(tmp_path / "o.png"), "--mask-dir", str(d)]) == 1
    one_line_error(capsys.readouterr().err, "--mask-dir must not be a folder of input images")


def test_crop_modes_and_no_crop_alias(photos, tmp_path, capsys):
    sizes = {}
    for flags in (["--crop", "rect"], ["--no-crop"]):
        assert main(["run", str(photos), "-o", str(tmp_path / "o.png"), "--json", "-", "--projection", "plane",
                     *FAST, *flags]) == 0
        s = json.loads(capsys.readouterr().out)
        sizes[flags[-1]] = tuple(s["size"])
    assert s["crop"] == [0, 0, *s["size"]] and abs(sizes["--no-crop"][0] - 500) <= 1  # the whole canvas
    w, h = sizes["rect"]  # rows 30..400 are covered across the whole width
    assert w == sizes["--no-crop"][0] and abs(h - 370) <= 1
    for mode in ("rect", "fill"):
        assert main(["run", str(photos), "-o", str(tmp_path / "o.png"), "--no-crop", "--crop", mode]) == 2
        one_line_error(capsys.readouterr().err, f"--no-crop contradicts --crop {mode}")


def test_timelapse_scale_and_range_width(photos, tmp_path, capsys):
    frames = tmp_path / "frames"
    assert main(["run", str(photos), "-o", str(tmp_path / "o.png"), "--timelapse", str(frames), "--scale", "0.5",
                 "--range-width", "1", "--json", "-", *FAST]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["scale"] == 0.5 and [Path(f).name for f in s["timelapse"]] == ["0000_a.png", "0001_b.png"]
    assert sorted(p.name for p in frames.iterdir()) == ["0000_a.png", "0001_b.png"]
    for f in s["timelapse"]:
        frame = cv2.imread(f)
        assert frame.shape[:2] == (s["size"][1], s["size"][0]) and is_stitch_output(f)
    assert main(["run", str(photos), "-o", str(tmp_path / "o.png"), "--timelapse", str(photos)]) == 1
    one_line_error(capsys.readouterr().err, "the timelapse folder must not hold input images")
    assert main(["run", str(photos), "-o", str(tmp_path / "o.png"), "--scale", "0.5", "--megapixels", "1"]) == 2
    one_line_error(capsys.readouterr().err, "--scale 0.5 and --megapixels 1.0: give one or the other, not both")
    assert main(["run", str(photos), "-o", str(tmp_path / "o.png"), "--scale", "1.5"]) == 2
    one_line_error(capsys.readouterr().err, "--scale")


def test_canvas_cap_message_units(photos, tmp_path, capsys):
    assert main(["run", str(photos), "-o", str(tmp_path / "o.png"), "--max-canvas-mp", "0.001",
                 "--projection", "plane", *FAST]) == 1
    line = one_line_error(capsys.readouterr().err, "> cap 1,000 px")
    assert "0 MP" not in line


def test_jpeg_quality_and_16_bit_output(photos, tmp_path, capsys):
    """--jpeg-quality sets the JPEG's quality; 16-bit inputs keep 16 bits in a PNG, and a .jpg says it holds 8."""
    small, large = tmp_path / "q30.jpg", tmp_path / "q95.jpg"
    assert main(["run", str(photos), "-o", str(small), "--jpeg-quality", "30", *FAST]) == 0
    assert main(["run", str(photos), "-o", str(large), *FAST]) == 0  # the default, 95
    assert small.stat().st_size < 0.5 * large.stat().st_size and not warnings_of(capsys.readouterr().err)
    assert main(["run", str(photos), "-o", str(tmp_path / "x.jpg"), "--jpeg-quality", "0"]) == 2
    one_line_error(capsys.readouterr().err, "--jpeg-quality", "0 is not in the range 1<=x<=100")
    deep = tmp_path / "deep"
    deep.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(deep / name), cv2.imread(str(photos / name)).astype(np.uint16) * 257)
    assert main(["run", str(deep), "-o", str(tmp_path / "d.png"), *FAST]) == 0
    assert cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert main(["run", str(deep), "-o", str(tmp_path / "d.jpg"), *FAST]) == 0
    assert warnings_of(capsys.readouterr().err) == [
        (f"warning: {tmp_path / 'd.jpg'}: a .jpg file holds 8 bits per channel, so the 16-bit panorama is written "
         "with 8 (write .png or .tif to keep 16)")]
