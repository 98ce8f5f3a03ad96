"""The reliability corpus (issue 22 item 15): what a run leaves behind when the world misbehaves.

Every case runs the real `stitch` CLI in a subprocess (``python -m stitch.cli.main``) on small images (crops of
data/samples/pano3/view_2.jpg) and asserts the exact outcome: the exit code, the one ``error:`` or
``warning:`` line naming the file, and the output folder's contents: one complete, readable file or nothing,
never a partial or temporary file. Two cases pin the worst moment with a test-only hook in the subprocess
(a SIGTERM right before the atomic rename; two writers held until both temporary files exist); the rest run
the CLI untouched.

Related cases live elsewhere and are not repeated here: bad inputs and usage errors (test_bad_inputs.py),
zero-byte and text-as-JPEG files skipped in-process (test_cli.py::test_broken_files_skipped_or_fatal), HEIC
and RAW files named (test_cli.py::test_unsupported_photos_are_named), Ctrl-C and MemoryError
(test_cli.py::test_usage_errors_interrupt_and_memory), atomic writes through the API
(test_io.py::test_write_image_atomic).
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import one_line_error

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "stitch.cli.main"]
ENV = {**os.environ, "COLUMNS": "200"}
TIMEOUT_S = 180


def stitch_cli(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    """Run `stitch ARGS` in a subprocess from the repository root; text output captured."""
    return subprocess.run([*CLI, *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True, check=False,
                          timeout=TIMEOUT_S, env=ENV, **kwargs)


def with_hook(hook: str, *args: str | Path) -> list[str]:
    """argv running ``hook`` (Python source) in the subprocess, then the CLI's main() on ARGS."""
    return [sys.executable, "-c", f"{hook}\nimport sys\nfrom stitch.cli.main import main\nsys.exit(main(sys.argv[1:]))",
            *map(str, args)]


def listing(folder: Path) -> list[str]:
    """Every name in folder, hidden ones (temporary files) included; [] when it does not exist."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def read_any(path: Path) -> np.ndarray | None:
    """cv2.imread for any path (accents included on every platform)."""
    return cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR)


@pytest.fixture(scope="module")
def view(samples_dir: Path) -> np.ndarray:
    """data/samples/pano3/view_2.jpg, (480, 640, 3) uint8 BGR."""
    return cv2.imread(str(samples_dir / "pano3" / "view_2.jpg"))


def crops(view: np.ndarray) -> list[np.ndarray]:
    """Three overlapping crops of view: columns 0-360, 140-500, 280-640, each 400 rows, shifted down 30 px."""
    return [view[0:400, 0:360].copy(), view[30:430, 140:500].copy(), view[60:460, 280:640].copy()]


def photos(folder: Path, view: np.ndarray, names: tuple[str, ...] = ("a.png", "b.png")) -> Path:
    """folder holding the first len(names) crops of view under those names."""
    folder.mkdir(parents=True)
    for name, img in zip(names, crops(view)):
        ok, buf = cv2.imencode(Path(name).suffix, img)
        assert ok, name
        buf.tofile(str(folder / name))  # cv2.imwrite cannot take an accented path everywhere
    return folder


# --- a run stopped: SIGTERM ------------------------------------------------------------------------------


def test_sigterm_mid_run_leaves_nothing(tmp_path, view):
    """SIGTERM once matching is done (its debug image written): exit 143, one `error: terminated` line, and no
    output, partial or temporary, in the output folder."""
    src, out, dbg = photos(tmp_path / "in", view), tmp_path / "out", tmp_path / "debug"
    out.mkdir()
    proc = subprocess.Popen([*CLI, "run", str(src), "-o", str(out / "p.jpg"), "--debug-dir", str(dbg)],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + TIMEOUT_S
    while proc.poll() is None and not (dbg / "matches").is_dir() and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 143, (proc.returncode, err)  # 0: the run ended before the signal
    assert one_line_error(err) == "error: terminated"
    assert listing(out) == []


def test_sigterm_while_writing_removes_the_temp_file(tmp_path, view):
    """SIGTERM at the worst moment, the panorama complete in its temporary file and not yet renamed: exit
    143 and an empty output folder (before the fix in cli/main.py the temporary file stayed)."""
    src, out = photos(tmp_path / "in", view), tmp_path / "out"
    out.mkdir()
    hook = ("import os, signal\nreal = os.replace\n"
            "def replace(a, b):\n    if str(b).endswith('p.jpg'):\n        os.kill(os.getpid(), signal.SIGTERM)\n"
            "    return real(a, b)\nos.replace = replace")
    proc = subprocess.run(with_hook(hook, "run", src, "-o", out / "p.jpg"), cwd=REPO_ROOT, capture_output=True,
                          text=True, check=False, timeout=TIMEOUT_S, env=ENV)
    assert proc.returncode == 143, proc.stderr
    assert one_line_error(proc.stderr) == "error: terminated"
    assert listing(out) == []


# --- a full disk ------------------------------------------------------------------------------------------


def _file_size_limit() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_write_past_the_file_size_limit(tmp_path, view):
    """RLIMIT_FSIZE of 64 KB (the panorama PNG is larger): the write fails half-way like on a full disk; one
    error line naming the output, exit 1, and no partial or temporary file."""
    src, out = photos(tmp_path / "in", view), tmp_path / "out"
    out.mkdir()
    proc = stitch_cli("run", src, "-o", out / "p.png", preexec_fn=_file_size_limit)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == f"error: {out / 'p.png'}: cannot write the panorama (File too large)"
    assert listing(out) == []


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /tmp"],
                           capture_output=True, check=False, timeout=30)
    return probe.returncode == 0


def test_full_disk(tmp_path, view):
    """A real full disk: a 64 KB tmpfs (a private mount namespace, no root needed) as the output folder. One
    error line (No space left on device), exit 1, the tmpfs left empty."""
    if not _can_mount_tmpfs():
        pytest.skip("no unprivileged mount namespace here (unshare -rm); test_write_past_the_file_size_limit "
                    "covers the same write path")
    src, out = photos(tmp_path / "in", view), tmp_path / "disk"
    out.mkdir()
    q = shlex.quote
    cmd = (f"mount -t tmpfs -o size=64k tmpfs {q(str(out))} && {' '.join(map(q, CLI))} run {q(str(src))} -o "
           f"{q(str(out / 'p.png'))}; echo rc=$?; ls -A {q(str(out))}")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], cwd=REPO_ROOT, capture_output=True, text=True,
                          check=False, timeout=TIMEOUT_S, env=ENV)
    assert proc.stdout.split() == ["rc=1"], proc.stdout  # and ls -A printed nothing: the disk is empty
    assert proc.stderr.strip() == f"error: {out / 'p.png'}: cannot write the panorama (No space left on device)"


# --- two runs, one output ---------------------------------------------------------------------------------


def test_two_runs_writing_the_same_output(tmp_path, view):
    """Two runs (2 and 3 photos) write the same p.png, each held before its rename until both temporary
    files exist: both exit 0 and the folder holds one complete PNG, the
    panorama of one of the runs."""
    two = photos(tmp_path / "two", view)
    three = photos(tmp_path / "three", view, ("a.png", "b.png", "c.png"))
    out = tmp_path / "out"
    out.mkdir()
    sync = tmp_path / "sync"  # each run, its temporary file written, notes the ones it sees here, then waits
    sync.mkdir()
    hook = ("import os, time\nreal = os.replace\n"
            "def replace(a, b):\n    if str(b).endswith('p.png'):\n"
            "        seen = sorted(n for n in os.listdir(os.path.dirname(a)) if n.endswith('.tmp'))\n"
            "        with open(os.path.join(os.environ['SYNC'], str(os.getpid())), 'w') as fh:\n"
            "            fh.write(' '.join(seen))\n"
            "        end = time.monotonic() + 60\n"
            "        while len(os.listdir(os.environ['SYNC'])) < 2 and time.monotonic() < end:\n"
            "            time.sleep(0.01)\n"
            "    return real(a, b)\nos.replace = replace")
    runs = [subprocess.Popen(with_hook(hook, "run", src, "-o", out / "p.png", "--json", tmp_path / f"{src.name}.json"),
                             cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**ENV, "SYNC": str(sync)})
            for src in (two, three)]
    errs = [p.communicate(timeout=TIMEOUT_S)[1] for p in runs]
    assert [p.returncode for p in runs] == [0, 0], errs
    seen = [len(f.read_text().split()) for f in sync.iterdir()]
    assert len(seen) == 2 and max(seen) == 2  # the second to arrive saw both temporary files: the writes overlapped
    assert listing(out) == ["p.png"]
    sizes = [json.loads((tmp_path / f"{n}.json").read_text())["size"] for n in ("two", "three")]
    assert sizes[0] != sizes[1]
    from PIL import Image

    with Image.open(out / "p.png") as im:  # a strict decoder: every chunk's CRC and the whole zlib stream
        im.load()
        assert list(im.size) in sizes


# --- odd files and names in the input folder ------------------------------------------------------------


def test_truncated_jpeg_is_skipped(tmp_path, view):
    """c.jpg cut half-way: skipped with a warning naming it, the panorama made from a.jpg and b.jpg."""
    src = photos(tmp_path / "in", view, ("a.jpg", "b.jpg", "c.jpg"))
    data = (src / "c.jpg").read_bytes()
    (src / "c.jpg").write_bytes(data[: len(data) // 2])
    proc = stitch_cli("run", src, "-o", tmp_path / "p.jpg", "--json", "-")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"warning: skipping {src / 'c.jpg'}: not a readable image (corrupt or unsupported format)"]
    summary = json.loads(proc.stdout)
    assert summary["kept"] == ["a.jpg", "b.jpg"] and summary["dropped"] == [
        {"name": "c.jpg", "reason": "unreadable: not a readable image (corrupt or unsupported format)"}]
    assert read_any(tmp_path / "p.jpg").shape == (summary["size"][1], summary["size"][0], 3)


def test_exif_orientation_is_honoured(tmp_path, view):
    """b.jpg stored turned a quarter (400 x 360 px) with EXIF Orientation 6 reads upright: the panorama of
    a.png and b.jpg is the view's 500 x 430 region, pixel for pixel (JPEG noise aside)."""
    from PIL import Image, ImageOps

    a, b, _ = crops(view)
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), a)
    stored = np.ascontiguousarray(np.rot90(b, 1))  # turned a quarter counter-clockwise: tag 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored[:, :, ::-1]).save(src / "b.jpg", quality=98, exif=exif.tobytes())
    raw = cv2.imread(str(src / "b.jpg"), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert raw.shape == (360, 400, 3)  # the file itself is sideways
    with Image.open(src / "b.jpg") as im:  # and its tag means "upright = b" (PIL's reading of the tag)
        assert np.abs(np.asarray(ImageOps.exif_transpose(im))[:, :, ::-1].astype(int) - b).mean() < 2.0
    proc = stitch_cli("run", src, "-o", tmp_path / "p.png", "--json", "-", "--no-crop", "--projection", "plane")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["kept"] == ["a.png", "b.jpg"] and summary["size"] == [500, 430]
    pano = read_any(tmp_path / "p.png")
    diff = np.abs(pano.astype(int) - view[0:430, 0:500]).mean(axis=2)
    covered = pano.any(axis=2)
    assert covered.mean() == pytest.approx(1 - (140 * 30 * 2) / (500 * 430), abs=0.002)  # two corners uncovered
    assert np.median(diff[covered]) <= 1.0 and diff[covered].mean() < 1.5  # measured: 0 and 0.45 levels


def test_paths_with_spaces_and_accents(tmp_path, view):
    """An input folder, photo names and an output path with spaces and accents: exit 0, the names as given."""
    src = photos(tmp_path / "photos d'été 2024", view, ("vue à gauche.png", "vue à droite.png"))
    out = tmp_path / "sortie finale" / "panorama été.jpg"
    proc = stitch_cli("run", src, "-o", out, "--json", "-")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    summary = json.loads(proc.stdout)
    assert summary["output"] == str(out) and summary["kept"] == ["vue à droite.png", "vue à gauche.png"]
    assert read_any(out).shape == (summary["size"][1], summary["size"][0], 3)
    assert listing(out.parent) == ["panorama été.jpg"]


def flat_png(path: Path, width: int, height: int, bgr: tuple[int, int, int] = (40, 120, 200), block: int = 64) -> None:
    """A valid 8-bit RGB PNG of one flat colour, written without its pixels in memory: ``block`` rows are
    deflated once and repeated (a full flush resets the compressor, so each block's bytes are the same), and
    the zlib checksum (Adler-32) of the repeated rows is computed in closed form."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(bgr[::-1]) * width  # filter byte 0, then RGB
    k, rest = divmod(height, block)
    comp = zlib.compressobj(9)
    head = comp.compress(b"") + comp.flush(zlib.Z_FULL_FLUSH)
    body = comp.compress(row * block) + comp.flush(zlib.Z_FULL_FLUSH)
    tail = comp.compress(row * rest) + comp.flush(zlib.Z_FULL_FLUSH) + comp.flush(zlib.Z_FINISH)[:-4]
    d = np.frombuffer(row * block, np.uint8).astype(np.int64)
    n, s, w = len(d), int(d.sum()), int((d * np.arange(len(d), 0, -1)).sum())  # Adler-32 of k copies:
    adler = ((k * n + k * w + n * s * k * (k - 1) // 2) % 65521) << 16 | (1 + k * s) % 65521
    adler = zlib.adler32(row * rest, adler)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", head + body * k + tail + struct.pack(">I", adler)) + chunk(b"IEND", b""))


def test_flat_png_is_valid(tmp_path):
    """The writer of the gigapixel case, at a size a decoder reads: the colour everywhere, checksums right."""
    from PIL import Image

    flat_png(tmp_path / "f.png", 401, 301)  # 4 blocks of 64 rows and 45 more
    assert np.array_equal(np.unique(cv2.imread(str(tmp_path / "f.png")).reshape(-1, 3), axis=0), [[40, 120, 200]])
    with Image.open(tmp_path / "f.png") as im:
        im.load()
        assert im.size == (401, 301)


def test_gigapixel_png_is_refused_and_the_run_goes_on(tmp_path, view):
    """A valid 40000 x 30000 PNG (1.2 gigapixels of one colour, 3.6 MB) beside two photos: refused from its
    header with a warning naming it, the panorama made from the others."""
    src = photos(tmp_path / "in", view)
    flat_png(src / "huge.png", 40000, 30000)
    proc = stitch_cli("run", src, "-o", tmp_path / "p.jpg", "--json", "-")
    assert proc.returncode == 0, proc.stderr
    warning = f"warning: skipping {src / 'huge.png'}: too large to read (over 1074 megapixels); downscale it first"
    assert proc.stderr.splitlines() == [warning]
    summary = json.loads(proc.stdout)
    assert summary["kept"] == ["a.png", "b.png"] and [d["name"] for d in summary["dropped"]] == ["huge.png"]
    assert read_any(tmp_path / "p.jpg") is not None
