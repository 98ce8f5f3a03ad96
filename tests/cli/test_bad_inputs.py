"""The bad-input corpus: every case through the CLI (a subprocess) or the API.

Each case must end with its documented exit code (README.md, "Exit codes": 1 for an error, 2 for a usage error),
print no traceback, print exactly one ``error:`` line that names the offending file or option, and leave the
inputs byte-identical with no stray file beside them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

import stitch
from stitch.errors import ConfigError, ImageReadError, StitchError

REPO_ROOT = Path(__file__).resolve().parents[2]
USAGE, ERROR = 2, 1


@dataclass(frozen=True)
class Case:
    """A CLI call (``{w}`` is the world folder) with its exit code and what the error line must name."""

    name: str
    argv: tuple[str, ...]
    code: int
    needles: tuple[str, ...]


CLI_CASES = [
    Case("run: missing folder", ("run", "{w}/nowhere", "-o", "{w}/out/p.jpg"), ERROR, ("nowhere",)),
    Case("run: empty folder", ("run", "{w}/empty", "-o", "{w}/out/p.jpg"), ERROR, ("empty",)),
    Case("run: one image", ("run", "{w}/one", "-o", "{w}/out/p.jpg"), ERROR, ("a.png", "2 images")),
    Case("run: no image files", ("run", "{w}/text", "-o", "{w}/out/p.jpg"), ERROR, ("text",)),
    Case("run: a corrupt file beside one image", ("run", "{w}/corrupt", "-o", "{w}/out/p.jpg"), ERROR, ("bad.jpg",)),
    Case("run: unsupported output extension", ("run", "{w}/pair", "-o", "{w}/out/p.gif"), ERROR, ("p.gif",)),
    Case("run: output is a folder", ("run", "{w}/pair", "-o", "{w}/pair"), ERROR, ("pair", "folder")),
    Case("run: output under a file", ("run", "{w}/pair", "-o", "{w}/afile/p.jpg"), ERROR, ("afile",)),
    Case("run: output is an input", ("run", "{w}/pair", "-o", "{w}/pair/a.png"), ERROR, ("a.png", "input")),
    Case("run: output where no file can be created", ("run", "{w}/pair", "-o", "/proc/x.jpg"), ERROR,
         ("/proc/x.jpg", "/proc does not accept new files")),
    Case("run: negative seed", ("run", "{w}/pair", "-o", "{w}/out/p.jpg", "--seed", "-3"), USAGE, ("--seed",)),
    Case("run: unknown projection", ("run", "{w}/pair", "-o", "{w}/out/p.jpg", "--projection", "fisheye2"), USAGE,
         ("--projection", "fisheye2")),
    Case("run: unknown exposure", ("run", "{w}/pair", "-o", "{w}/out/p.jpg", "--exposure", "hdr"), USAGE,
         ("--exposure",)),
    Case("run: work megapixels out of range", ("run", "{w}/pair", "-o", "{w}/out/p.jpg", "--work-megapix", "0"),
         USAGE, ("--work-megapix",)),
    Case("run: canvas cap too small", ("run", "{w}/pair", "-o", "{w}/out/p.jpg", "--max-canvas-mp", "0.001"), ERROR,
         ("--max-canvas-mp",)),
    Case("run: --json under a file", ("run", "{w}/pair", "-o", "{w}/out/p.jpg", "--json", "{w}/afile/s.json"), USAGE,
         ("--json", "afile")),
    Case("run: two 16 x 16 images", ("run", "{w}/tiny", "-o", "{w}/out/p.jpg"), ERROR, ("too small", "a.png")),
    Case("run: unknown option", ("run", "{w}/pair", "-o", "{w}/out/p.jpg", "--colour"), USAGE, ("--colour",)),
    Case("compare: report not .html", ("compare", "{w}/pair/a.png", "{w}/pair/b.png", "--report", "{w}/out/r.gif"),
         USAGE, ("--report", "r.gif")),
    Case("compare: missing image", ("compare", "{w}/pair/a.png", "{w}/pair/zz.png", "--report", "{w}/out/r.html"),
         ERROR, ("zz.png",)),
    Case("compare: missing --gt", ("compare", "{w}/pair/a.png", "{w}/pair/b.png", "--report", "{w}/out/r.html",
                                   "--gt", "{w}/nogt.txt"), ERROR, ("nogt.txt",)),
    Case("compare: malformed --gt", ("compare", "{w}/pair/a.png", "{w}/pair/b.png", "--report", "{w}/out/r.html",
                                     "--gt", "{w}/gt_2x2.txt"), ERROR, ("gt_2x2.txt",)),
    Case("compare: three paths", ("compare", "{w}/pair/a.png", "{w}/pair/b.png", "{w}/pair/a.png", "--report",
                                  "{w}/out/r.html"), ERROR, ("SRC DST",)),
    Case("compare: --gt with a folder", ("compare", "{w}/pair", "--report", "{w}/out/r.html", "--gt",
                                         "{w}/gt_2x2.txt"), ERROR, ("--gt",)),
    Case("bench homography: missing folder", ("bench", "homography", "{w}/nowhere"), ERROR, ("nowhere",)),
    Case("bench synthetic: zero pairs", ("bench", "synthetic", "{w}/pair", "--pairs", "0"), USAGE, ("--pairs",)),
    Case("bench synthetic: unknown method", ("bench", "synthetic", "{w}/pair", "--method", "magic"), ERROR,
         ("magic",)),
    Case("bench panorama: missing folder", ("bench", "panorama", "{w}/nowhere", "--out", "{w}/out/bp"), ERROR,
         ("nowhere",)),
    Case("train: missing config", ("train", "{w}/nocfg.toml", "--dry-run"), ERROR, ("nocfg.toml",)),
    Case("train: a value of the wrong type", ("train", "{w}/cfg.toml", "--dry-run", "-s", "train.max_steps=abc"),
         ERROR, ("train.max_steps",)),
    Case("train: an override without '='", ("train", "{w}/cfg.toml", "--dry-run", "-s", "train.max_steps"), ERROR,
         ("train.max_steps",)),
    Case("train: unknown section", ("train", "{w}/cfg_bad.toml", "--dry-run"), ERROR, ("nonsense",)),
    Case("unknown command", ("stitchify",), USAGE, ("stitchify",)),
]


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root (links by their target text)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = "link:" + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, samples_dir: Path) -> Path:
    """The inputs every case reads: folders of images (good and bad), matrices and configs."""
    w = tmp_path_factory.mktemp("world")
    view = cv2.imread(str(samples_dir / "pano3" / "view_2.jpg"))
    for d in ("pair", "one", "empty", "text", "corrupt", "tiny"):
        (w / d).mkdir()
    cv2.imwrite(str(w / "pair" / "a.png"), view[:, :400])
    cv2.imwrite(str(w / "pair" / "b.png"), view[:, 240:])
    cv2.imwrite(str(w / "one" / "a.png"), view)
    (w / "text" / "notes.txt").write_text("not an image\n")
    (w / "corrupt" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    cv2.imwrite(str(w / "corrupt" / "a.png"), view)
    cv2.imwrite(str(w / "tiny" / "a.png"), view[:16, :16])
    cv2.imwrite(str(w / "tiny" / "b.png"), view[:16, 8:24])
    (w / "afile").write_text("a file, not a folder\n")
    (w / "gt_2x2.txt").write_text("1 0\n0 1\n")
    cfg = (REPO_ROOT / "configs" / "refiner_cpu.toml").read_text()
    (w / "cfg.toml").write_text(cfg)
    (w / "cfg_bad.toml").write_text(cfg + "\n[nonsense]\nx = 1\n")
    return w


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.name for c in CLI_CASES])
def test_cli_case(case: Case, world: Path):
    before = snapshot(world)
    argv = [a.replace("{w}", str(world)) for a in case.argv]
    p = subprocess.run([sys.executable, "-m", "stitch.cli.main", *argv], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=300, check=False, env={**os.environ, "COLUMNS": "200"})
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    assert p.returncode == case.code, (p.returncode, p.stderr)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, p.stderr
    others = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith(("error:", "warning:"))]
    assert others == [], p.stderr
    for needle in case.needles:
        assert needle in errors[0], (needle, errors[0])
    assert snapshot(world) == before  # inputs untouched, no stray or partial file


def _api(fn: Callable[[], object], exc: type[Exception], needle: str) -> None:
    with pytest.raises(exc) as info:
        fn()
    assert needle in str(info.value) and "\n" not in str(info.value).strip(), str(info.value)


def test_api_cases(world: Path):
    """The same inputs through the Python API: the right exception type, naming the file or the argument."""
    a, b = str(world / "pair" / "a.png"), str(world / "pair" / "b.png")
    _api(lambda: stitch.estimate_homography(str(world / "zz.png"), b), ImageReadError, "zz.png")
    _api(lambda: stitch.estimate_homography(np.zeros(5), b), StitchError, "src")
    _api(lambda: stitch.estimate_homography(a, b, accept_score=7), ConfigError, "accept_score")
    _api(lambda: stitch.estimate_homography(a, b, preset="turbo"), ConfigError, "turbo")
    _api(lambda: stitch.estimate_homography(a, b, seed=-1), ConfigError, "seed")
    _api(lambda: stitch.estimate_homography(a, b, refiner="magic"), ConfigError, "magic")
    _api(lambda: stitch.stitch_images([]), StitchError, "image")
    _api(lambda: stitch.stitch_images([a]), StitchError, "a.png")
    _api(lambda: stitch.stitch_images([a, b], projection="fisheye2"), ConfigError, "fisheye2")
    _api(lambda: stitch.stitch_images([a, b], seam="magic"), ConfigError, "magic")
    _api(lambda: stitch.refine_homography(a, b, np.eye(3), method="magic"), ConfigError, "magic")
    _api(lambda: stitch.refine_homography(a, b, np.eye(2)), ConfigError, "H")
    _api(lambda: stitch.compare_homographies(a, b, methods="magic"), ConfigError, "magic")
    _api(lambda: stitch.compare_homographies(a, b, gt=str(world / "gt_2x2.txt")), StitchError, "gt_2x2.txt")
