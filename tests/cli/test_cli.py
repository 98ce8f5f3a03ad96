"""The `stitch` command line: `run` on real and odd inputs, one-line errors, atomic output, help and version."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import one_line_error
from stitch.cli.main import cli, main

from stitch.geometry import image_corners, project

REPO_ROOT = Path(__file__).resolve().parents[2]
STITCH_BIN = Path(sys.executable).parent / "stitch"


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file in folder (to check that inputs are left untouched)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def write(path: Path, img: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), img), path
    return path


@pytest.fixture(scope="module")
def crops(samples_dir: Path) -> list[np.ndarray]:
    """Three overlapping 360 x 400 crops of pano3/view_2.jpg (left to right, slightly shifted down)."""
    img = cv2.imread(str(samples_dir / "pano3" / "view_2.jpg"))
    return [img[0:400, 0:360].copy(), img[30:430, 140:500].copy(), img[60:460, 280:640].copy()]


def noise(seed: int) -> np.ndarray:
    small = np.random.default_rng(seed).integers(0, 256, (25, 20, 3), dtype=np.uint8)
    return cv2.resize(small, (320, 400), interpolation=cv2.INTER_CUBIC)


def run(args: list[str]):
    """Invoke the click group in-process; stderr is kept apart from stdout."""
    return CliRunner().invoke(cli, args, catch_exceptions=False)


# --- help and version ------------------------------------------------------------------------------------


def test_help_lists_run_and_bench():
    res = run(["--help"])
    assert res.exit_code == 0
    assert "stitch: image stitching and homography tuning" in res.output
    assert "run " in res.output and "bench " in res.output
    res = run(["run", "--help"])
    assert res.exit_code == 0
    for text in ("--preset", "accurate", "--projection", "cylindrical", "--detector", "asift", "--json", "--quiet"):
        assert text in res.output
    res = run(["--version"])
    assert res.exit_code == 0 and "0.1.0" in res.output


# --- the real entry point ---------------------------------------------------------------------------------


def expected_pano3_size(samples_dir: Path) -> tuple[int, int]:
    """Bounds of all three views in view_2's frame, from ground_truth.json."""
    gt = json.loads((samples_dir / "pano3" / "ground_truth.json").read_text())
    to_scene = {v["file"]: np.array(v["H_view_to_scene"]) for v in gt["views"]}
    ref_inv = np.linalg.inv(to_scene["view_2.jpg"])
    pts = np.vstack([project(ref_inv @ H, image_corners(639, 479)) for H in to_scene.values()])
    return (math.floor(pts[:, 0].max()) - math.floor(pts[:, 0].min()) + 1,
            math.floor(pts[:, 1].max()) - math.floor(pts[:, 1].min()) + 1)


def test_subprocess_run_pano3(tmp_path, samples_dir):
    """`stitch run data/samples/pano3 ... --projection plane`: exit 0, the GT plane's size, inputs unchanged."""
    if not STITCH_BIN.exists():
        pytest.skip(f"{STITCH_BIN} not installed (pip install -e .)")
    before = digest(samples_dir / "pano3")
    out = tmp_path / "tmp" / "pano.jpg"
    proc = subprocess.run([str(STITCH_BIN), "run", "data/samples/pano3", "-o", str(out), "--json", "-", "--no-crop",
                           "--projection", "plane"],
                          check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout)
    img = cv2.imread(str(out))
    assert img is not None and [img.shape[1], img.shape[0]] == summary["size"]
    ew, eh = expected_pano3_size(samples_dir)
    assert abs(img.shape[1] - ew) <= 3 and abs(img.shape[0] - eh) <= 3
    assert summary["kept"] == ["view_1.jpg", "view_2.jpg", "view_3.jpg"] and summary["dropped"] == []
    assert summary["reference"] == "view_2.jpg" and len(summary["edges"]) == 2
    assert summary["output"] == str(out) and summary["seconds"] > 0
    assert digest(samples_dir / "pano3") == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["pano.jpg"]  # no temp file left


def test_subprocess_error_is_one_line(tmp_path):
    if not STITCH_BIN.exists():
        pytest.skip(f"{STITCH_BIN} not installed (pip install -e .)")
    proc = subprocess.run([str(STITCH_BIN), "run", str(tmp_path / "nope"), "-o", str(tmp_path / "o.jpg")],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    one_line_error(proc.stderr, "nope", "not found")


# --- bad inputs (main(): the exact messages and exit codes) -------------------------------------------------


def test_missing_empty_and_single(tmp_path, crops, capsys):
    assert main(["run", str(tmp_path / "missing"), "-o", str(tmp_path / "o.jpg")]) == 1
    one_line_error(capsys.readouterr().err, "missing", "folder not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["run", str(empty), "-o", str(tmp_path / "o.jpg")]) == 1
    one_line_error(capsys.readouterr().err, "no images found")
    single = tmp_path / "single"
    single.mkdir()
    write(single / "a.png", crops[0])
    assert main(["run", str(single), "-o", str(tmp_path / "o.jpg")]) == 1
    one_line_error(capsys.readouterr().err, "need at least 2 images, got 1: a.png")
    assert not (tmp_path / "o.jpg").exists()


def test_broken_files_skipped_or_fatal(tmp_path, crops, capsys):
    """A zero-byte .jpg and a text file named .jpg are skipped with warnings; fatal when < 2 images remain."""
    d = tmp_path / "in"
    d.mkdir()
    write(d / "a.png", crops[0])
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.jpg").write_text("not an image\n")
    assert main(["run", str(d), "-o", str(tmp_path / "o.jpg"), "-q"]) == 1
    err = capsys.readouterr().err
    one_line_error(err, "need at least 2 images, got 1: a.png", "empty.jpg", "notes.jpg")

    write(d / "b.png", crops[1])
    before = digest(d)
    out = tmp_path / "out" / "pano.png"
    assert main(["run", str(d), "-o", str(out), "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    warns = [ln for ln in captured.err.splitlines() if ln.startswith("warning:")]
    assert any("empty.jpg" in w and "empty" in w for w in warns) and any("notes.jpg" in w for w in warns)
    summary = json.loads(captured.out)
    assert summary["kept"] == ["a.png", "b.png"]
    assert {d["name"] for d in summary["dropped"]} == {"empty.jpg", "notes.jpg"}
    assert cv2.imread(str(out)) is not None
    assert digest(d) == before
    assert [p.name for p in out.parent.iterdir()] == ["pano.png"]


def test_gray_rgba_16bit_inputs(tmp_path, crops):
    d = tmp_path / "formats"
    d.mkdir()
    write(d / "1_gray.png", cv2.cvtColor(crops[0], cv2.COLOR_BGR2GRAY))
    write(d / "2_rgba.png", cv2.cvtColor(crops[1], cv2.COLOR_BGR2BGRA))
    write(d / "3_16bit.png", crops[2].astype(np.uint16) * 257)
    res = run(["run", str(d), "-o", str(tmp_path / "pano.jpg"), "--json", "-", "--no-crop"])
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["kept"] == ["1_gray.png", "2_rgba.png", "3_16bit.png"]
    assert summary["reference"] == "2_rgba.png"
    img = cv2.imread(str(tmp_path / "pano.jpg"))
    # three crops spanning 640 x 460 px of the view, pure shifts
    assert abs(img.shape[1] - 640) <= 2 and abs(img.shape[0] - 460) <= 2


def test_non_overlapping_images_fail(tmp_path, capsys):
    d = tmp_path / "unrelated"
    d.mkdir()
    for k in range(3):
        write(d / f"n{k}.png", noise(k))
    assert main(["run", str(d), "-o", str(tmp_path / "o.jpg"), "-q"]) == 1
    err = capsys.readouterr().err
    one_line_error(err, "no two images overlap: n0.png, n1.png, n2.png")
    assert "try --preset exhaustive or --detector asift" in err
    assert not (tmp_path / "o.jpg").exists()
    # the advice never repeats what was tried
    assert main(["run", str(d), "-o", str(tmp_path / "o.jpg"), "-q", "--preset", "exhaustive"]) == 1
    err = capsys.readouterr().err
    one_line_error(err, "no two images overlap: n0.png, n1.png, n2.png (check that the images show the same scene)")
    assert "exhaustive" not in err and "asift" not in err


def test_unrelated_image_dropped_with_warning(tmp_path, crops):
    d = tmp_path / "mixed"
    d.mkdir()
    write(d / "a.png", crops[0])
    write(d / "b.png", crops[1])
    write(d / "z_noise.png", noise(5))
    res = run(["run", str(d), "-o", str(tmp_path / "pano.png"), "--json", "-"])
    assert res.exit_code == 0, res.stderr
    assert any(ln.startswith("warning: dropped z_noise.png") for ln in res.stderr.splitlines())
    summary = json.loads(res.stdout)
    assert summary["kept"] == ["a.png", "b.png"]
    assert summary["dropped"][0]["name"] == "z_noise.png" and "overlap" in summary["dropped"][0]["reason"]
    # one summary: Panorama.summary() (batch's summary.json) plus the output path
    assert {"output", "homographies", "cameras", "placement", "edge_errors", "rejected"} <= set(summary)


def test_identical_images_work_with_warning(tmp_path, crops):
    d = tmp_path / "dups"
    d.mkdir()
    write(d / "a.png", crops[0])
    write(d / "a_copy.png", crops[0])
    write(d / "b.png", crops[1])
    res = run(["run", str(d), "-o", str(tmp_path / "pano.png")])
    assert res.exit_code == 0, res.stderr
    assert "warning: dropped a_copy.png: identical to a.png" in res.stderr
    assert "wrote" in res.stdout and (tmp_path / "pano.png").exists()


def test_refuses_to_overwrite_an_input(tmp_path, crops, capsys):
    d = tmp_path / "in"
    d.mkdir()
    write(d / "a.png", crops[0])
    write(d / "b.png", crops[1])
    before = digest(d)
    assert main(["run", str(d), "-o", str(d / "b.png")]) == 1
    one_line_error(capsys.readouterr().err, "b.png", "refusing to overwrite an input")
    assert main(["run", str(d), "-o", str(tmp_path / "pano.xyz")]) == 1
    one_line_error(capsys.readouterr().err, "unsupported output extension")
    assert digest(d) == before


def test_usage_errors_interrupt_and_memory(tmp_path, crops, capsys, monkeypatch):
    assert main(["run", str(tmp_path), "-o", str(tmp_path / "o.jpg"), "--projection", "mercator"]) == 2
    one_line_error(capsys.readouterr().err, "mercator", "stitch run --help")
    assert main(["run", str(tmp_path)]) == 2
    one_line_error(capsys.readouterr().err, "--output")
    assert main(["frobnicate"]) == 2
    one_line_error(capsys.readouterr().err, "frobnicate")

    d = tmp_path / "in"
    d.mkdir()
    write(d / "a.png", crops[0])
    write(d / "b.png", crops[1])
    import stitch.panorama.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(stitch.panorama.pipeline, "stitch_images", interrupted)
    assert main(["run", str(d), "-o", str(tmp_path / "o.jpg")]) == 130
    one_line_error(capsys.readouterr().err, "interrupted")
    monkeypatch.setattr(stitch.panorama.pipeline, "stitch_images", no_memory)
    assert main(["run", str(d), "-o", str(tmp_path / "o.jpg")]) == 1
    one_line_error(capsys.readouterr().err, "out of memory")
    assert not (tmp_path / "o.jpg").exists()


# --- compositing options, the debug folder, the installed script, bench panorama ------------------------


def test_installed_stitch_is_ours():
    """`stitch --help` on PATH (the venv's script) is this project's, not OpenStitching's `stitch`."""
    if not STITCH_BIN.exists():
        pytest.skip(f"{STITCH_BIN} not installed (pip install -e .)")
    proc = subprocess.run([str(STITCH_BIN), "--help"], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "stitch: image stitching and homography tuning" in proc.stdout
    assert "run " in proc.stdout and "bench " in proc.stdout
    assert "cli.main" in STITCH_BIN.read_text()


def test_run_help_lists_compositing_options():
    from stitch.panorama.blend import BLEND_CHOICES, DEFAULT_BLEND
    from stitch.panorama.exposure import DEFAULT_EXPOSURE, EXPOSURE_CHOICES
    from stitch.panorama.seams import DEFAULT_SEAM, SEAM_CHOICES

    res = run(["run", "--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    for opt in ("--exposure", "--seam", "--blend", "--bands", "--seam-megapix", "--no-crop", "--debug-dir"):
        assert opt in text, opt
    for choice in EXPOSURE_CHOICES + SEAM_CHOICES + BLEND_CHOICES:
        assert choice in text, choice
    for default in (DEFAULT_EXPOSURE, DEFAULT_SEAM, DEFAULT_BLEND, "rect"):
        assert f"default: {default}" in text, default
    assert "(rect)" not in text


def test_run_compositing_options_and_debug_dir(tmp_path, crops):
    """Each compositing option reaches the pipeline from the CLI; --debug-dir holds every stage's images."""
    d = tmp_path / "in"
    d.mkdir()
    write(d / "a.png", crops[0])
    write(d / "b.png", crops[1])
    dbg = tmp_path / "debug"
    res = run(["run", str(d), "-o", str(tmp_path / "pano.png"), "--json", "-", "--exposure", "gain", "--seam", "dp",
               "--blend", "feather", "--seam-megapix", "0.05", "--no-crop", "--debug-dir", str(dbg)])
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    img = cv2.imread(str(tmp_path / "pano.png"))
    assert summary["crop"] == [0, 0, img.shape[1], img.shape[0]]  # --no-crop: the whole canvas
    assert set(summary["gains"]) == {"a.png", "b.png"} and summary["bands"] == 0  # feather: one level
    names = {str(p.relative_to(dbg)) for p in dbg.rglob("*") if p.is_file()}
    for expected in ("matches/a--b.jpg", "warped/0_a.jpg", "masks/1_b.png", "compensated/0_a.jpg", "seams/1_b.png",
                     "seams.png", "result_seams.jpg", "gains.json"):
        assert expected in names, (expected, sorted(names))
    res = run(["run", str(d), "-o", str(tmp_path / "cropped.png"), "--json", "-", "--bands", "2", "--blend", "multiband",
               "--projection", "plane", "--crop", "rect"])
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["bands"] == 2 and summary["crop"][3] - summary["crop"][1] == 370  # rows both crops cover
    assert main(["run", str(d), "-o", str(tmp_path / "x.png"), "--seam", "bogus"]) == 2
    (tmp_path / "afile").write_text("")
    assert main(["run", str(d), "-o", str(tmp_path / "y.png"), "--debug-dir", str(tmp_path / "afile")]) == 2


def test_bench_panorama_cli(tmp_path, crops):
    d = tmp_path / "sets" / "tiny"
    d.mkdir(parents=True)
    write(d / "a.png", crops[0])
    write(d / "b.png", crops[1])
    write(d / "mask1.png", np.zeros((10, 10, 3), np.uint8))  # a feature mask beside the photos: not an input
    out = tmp_path / "json" / "bench.json"
    res = run(["bench", "panorama", str(tmp_path / "sets"), "--method", "stitch", "--out", str(tmp_path / "bp"),
               "--json", str(out)])
    assert res.exit_code == 0, res.stderr
    assert "panorama: tiny" in res.stdout and "goals" in res.stdout
    data = json.loads(out.read_text())
    assert data["goals"][0]["name"].startswith("success on every set") and data["goals"][0]["reached"] is True
    assert data["rows"][0]["ok"] and data["rows"][0]["given"] == 2 and data["rows"][0]["kept"] == 2
    assert Path(data["contact_sheet"]).exists()
    res = run(["bench", "panorama", str(tmp_path / "sets"), "--method", "bogus"])
    assert res.exit_code == 2


def test_unsupported_photos_are_named(tmp_path, crops):
    """HEIC/RAW files are named in a warning (not passed over). (A gigapixel PNG beside photos: the reliability
    corpus, test_reliability.py::test_gigapixel_png_is_refused_and_the_run_goes_on.)"""
    d = tmp_path / "mixed"
    d.mkdir()
    write(d / "a.png", crops[0])
    (d / "b.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (d / "c.CR2").write_bytes(b"II*\x00")
    res = run(["run", str(d), "-o", str(tmp_path / "p.jpg")])
    assert res.exit_code == 1
    assert "warning: skipping b.HEIC: HEIC photos are not read; convert them to JPEG, TIFF or PNG first" in res.stderr
    assert "warning: skipping c.CR2: CR2 photos are not read" in res.stderr
    assert "need at least 2 images" in res.stderr and "Traceback" not in res.stderr


def test_run_loads_no_other_command():
    code = ("import sys; from click.testing import CliRunner; from stitch.cli.main import cli; "
            "r = CliRunner().invoke(cli, ['run', '--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in sys.modules if m.startswith('stitch.cli.') and m.endswith('_cmd')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # bench, batch, compare and train load only when they run


def test_lazy_commands_resolve():
    from stitch.cli.main import LAZY_COMMANDS, cli

    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0
    for name in LAZY_COMMANDS:
        assert f"  {name} " in r.output
        assert CliRunner().invoke(cli, [name, "--help"]).exit_code == 0
