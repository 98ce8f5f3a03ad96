"""`stitch bench batch DIR`: batch stitching at scale on a generated tree of sets (DESIGN §4, issue 15).

The tree (``make_tree``): from the panorama sets in DIR (e.g. ../shared/data/panoramas), ``sets`` sets of
2-3 consecutive images each, cropped (rows kept: 100/85/70 %) and downscaled (longest side 320/288/256 px) so
that a set takes about 0.5-2 s, plus the bad sets of ``BAD_SETS``: an empty folder, one image, two images of
different scenes (no overlap), and a corrupt file beside a good one. Every file is written once, as JPEG.

Figures:
- scaling: sets per second with 1 and 2 workers, for each backend (``BACKENDS``), on the same tree; the
  speed-up is throughput(2) / throughput(1). Times exclude the backend's start (Ray's ``init`` and the worker
  warm-up), reported apart as ``setup_s``.
- Ray overhead per set: (time with Ray - time with local) / time with local, at the same worker count.
- crash and resume: the CLI is killed with SIGKILL at ``kills`` random moments (each after a restart: once
  the manifest holds a random number of sets, plus a random part of a set's time), then run to the end. Checked: each set has exactly one manifest record (none finished twice, none lost), the
  panoramas and thumbnails are byte-identical to the uninterrupted run (summaries too, but for timings and
  paths), and no temporary or stray file is left in OUT.
- coordinator memory: peak RSS of the CLI process alone (its ``getrusage(RUSAGE_SELF)``, in its --json; the
  jobs and the fork server are other processes) on ``MEMORY_SETS`` sets, the larger tree made of folders of symbolic links to the files of a
  tree of small (128 px) sets.
- bad sets: each is recorded as failed with a one-line reason, and the batch runs every other set.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stitch.batch.backends import BACKENDS
from stitch.batch.jobs import LOG_NAME, PANORAMA_STEM, STATUS_FAILED, STATUS_OK, SUMMARY_NAME, THUMB_NAME
from stitch.batch.manifest import LOCK_NAME, MANIFEST_NAME, latest_records, read_records
from stitch.batch.run import BatchSummary, run_batch
from stitch.bench.panorama import is_distractor, set_inputs
from stitch.errors import StitchError
from stitch.imaging import resize_max_side
from stitch.io import read_image
from stitch.types import ProgressFn

DEFAULT_SETS = 200
#: Coordinator memory is measured at these tree sizes.
MEMORY_SETS = (200, 2000)
DEFAULT_KILLS = 3
WORKER_COUNTS = (1, 2)
#: Rows kept by the crops and longest sides of the downscaled images (cycled over the variants).
CROPS = (1.0, 0.85, 0.7)
MAX_SIDES = (320, 288, 256)
#: Longest side of the small sets the memory tree is made of.
SMALL_SIDE = 128
JPEG_QUALITY = 90
#: The bad sets: folder name -> what its reason must contain.
BAD_SETS = {"bad/empty": "no images", "bad/one_image": "got 1", "bad/no_overlap": "no two images overlap",
            "bad/corrupt": "unreadable"}
#: Summary fields that legitimately differ between two runs of the same set.
RUN_DEPENDENT = ("seconds", "stage_seconds", "output")


# --- the tree ------------------------------------------------------------------------------------------------


def source_sets(directory: Path) -> list[tuple[str, list[Path]]]:
    """(name, photos) of each panorama set in DIRECTORY with >= 2 photos (distractors left out)."""
    if not directory.is_dir():
        raise StitchError(f"{directory}: not a folder (give the panoramas folder, e.g. ../shared/data/panoramas)")
    found = []
    for d in sorted(p for p in directory.iterdir() if p.is_dir()):
        photos = [p for p in set_inputs(d) if not is_distractor(p.name)]
        if len(photos) >= 2:
            found.append((d.name, photos))
    if not found:
        raise StitchError(f"{directory}: no sets of 2 or more images in its subfolders")
    return found


def variants(sources: Sequence[tuple[str, list[Path]]], n: int) -> list[tuple[str, list[Path], float, int]]:
    """``n`` (name, photos, crop, max side): windows of 2 then 3 consecutive photos, cycled over crops and sizes."""
    windows = [(name, photos[k:k + size]) for size in (2, 3) for name, photos in sources
               for k in range(len(photos) - size + 1)]
    out = []
    for v in range(n):
        name, photos = windows[v % len(windows)]
        round_ = v // len(windows)
        out.append((name, photos, CROPS[round_ % len(CROPS)], MAX_SIDES[(round_ // len(CROPS)) % len(MAX_SIDES)]))
    return out


def _prepare(path: Path, crop: float, max_side: int, offset: float, cache: dict[Any, np.ndarray]) -> np.ndarray:
    """The photo at ``path``: keep ``crop`` of its rows (starting at ``offset`` of the rest), then downscale."""
    key = (path, crop, max_side, offset)
    if key not in cache:
        img = read_image(path)
        h = img.shape[0]
        keep = max(16, round(h * crop))
        top = round((h - keep) * offset)
        cache[key] = resize_max_side(img[top:top + keep], max_side)[0]
    return cache[key]


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise StitchError(f"{path}: cannot encode")
    path.write_bytes(buf.tobytes())


def make_tree(directory: str | os.PathLike, dst: str | os.PathLike, sets: int = DEFAULT_SETS,
              max_side: int | None = None, bad: bool = True) -> list[str]:
    """Write ``sets`` sets (the BAD_SETS among them when ``bad``) into ``dst``; returns the set names.

    Good sets are ``good/NNNN_<source>``; ``max_side`` forces one image size (the small sets of the memory tree).
    """
    sources = source_sets(Path(directory))
    root = Path(dst)
    n_bad = len(BAD_SETS) if bad else 0
    if sets < n_bad + 1:
        raise StitchError(f"sets={sets}: need at least {n_bad + 1}")
    cache: dict[Any, np.ndarray] = {}
    names = []
    for v, (src, photos, crop, side) in enumerate(variants(sources, sets - n_bad)):
        name = f"good/{v:04d}_{src}"
        offset = (v % 3) / 2.0
        for k, p in enumerate(photos):
            _write(root / name / f"{k}_{p.stem}.jpg", _prepare(p, crop, max_side or side, offset, cache))
        names.append(name)
    if bad:
        a, b = sources[0][1], sources[-1][1]
        small = max_side or MAX_SIDES[0]
        (root / "bad/empty").mkdir(parents=True, exist_ok=True)
        _write(root / "bad/one_image/0.jpg", _prepare(a[0], 1.0, small, 0.0, cache))
        _write(root / "bad/no_overlap/0.jpg", _prepare(a[0], 1.0, small, 0.0, cache))
        _write(root / "bad/no_overlap/1.jpg", _prepare(b[-1], 1.0, small, 0.0, cache))
        _write(root / "bad/corrupt/0.jpg", _prepare(a[0], 1.0, small, 0.0, cache))
        good = (root / "bad/corrupt/0.jpg").read_bytes()
        (root / "bad/corrupt/1.jpg").write_bytes(good[:100])  # truncated in its headers (mid-scan decodes, grey)
        (root / "bad/corrupt/2.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)  # garbage
        names += list(BAD_SETS)
    return sorted(names)


def link_tree(small: Path, dst: Path, sets: int) -> int:
    """``sets`` folders under ``dst``, each holding symbolic links to the files of one set of ``small`` (cycled)."""
    folders = sorted({p.parent for p in small.rglob("*") if p.is_file()})
    if not folders:
        raise StitchError(f"{small}: no sets to link to")
    for k in range(sets):
        target = dst / f"{k:05d}"
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted(folders[k % len(folders)].iterdir()):
            (target / f.name).symlink_to(f.resolve())
    return sets


# --- checks on an OUT folder --------------------------------------------------------------------------------


def output_files(out: Path) -> dict[str, bytes]:
    """Every panorama and thumbnail under OUT: relative path -> bytes."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and (p.stem == PANORAMA_STEM or p.name == THUMB_NAME)}


def partial_files(out: Path) -> list[str]:
    """Temporary files of interrupted writes under OUT (there must be none after a batch ends)."""
    return sorted(p.relative_to(out).as_posix() for p in out.rglob(".*.tmp"))


def stray_files(out: Path) -> list[str]:
    """Files under OUT that no finished set accounts for: a failed set keeps only its log."""
    expected = {MANIFEST_NAME, LOCK_NAME, "index.html"}
    for r in latest_records(out / MANIFEST_NAME):
        expected.add(f"{r['name']}/{LOG_NAME}")
        if r.get("status") == STATUS_OK:
            expected |= {r["panorama"], r["thumbnail"], f"{r['name']}/{SUMMARY_NAME}"}
    return sorted(p for p in (q.relative_to(out).as_posix() for q in out.rglob("*") if q.is_file())
                  if p not in expected)


def comparable_summaries(out: Path) -> dict[str, dict[str, Any]]:
    """Each set's summary.json without the run-dependent fields (timings, output path)."""
    found = {}
    for p in sorted(out.rglob(SUMMARY_NAME)):
        data = json.loads(p.read_text())
        found[p.parent.relative_to(out).as_posix()] = {k: v for k, v in data.items() if k not in RUN_DEPENDENT}
    return found


# --- runs ----------------------------------------------------------------------------------------------------


@dataclass
class ScalingRow:
    """One backend at one worker count on the whole tree."""

    backend: str
    workers: int
    sets: int
    ok: int
    failed: int
    seconds: float
    setup_s: float
    sets_per_s: float
    job_seconds: float


@dataclass
class CrashCheck:
    """Kill -9 at ``kill_after_s`` (one per restart), then a run to the end; what was found."""

    kill_after_s: list[float]
    finished_before_kill: list[int]
    sets: int
    records: int
    duplicates: list[str]
    missing: list[str]
    different_outputs: list[str]
    different_summaries: list[str]
    partial_files: list[str]
    stray_files: list[str]

    @property
    def passed(self) -> bool:
        return (self.records == self.sets and not self.duplicates and not self.missing
                and not self.different_outputs and not self.different_summaries and not self.partial_files
                and not self.stray_files)


@dataclass
class BatchBenchResult:
    """Everything ``stitch bench batch`` measured (see the module docstring)."""

    tree: str
    sets: int
    scaling: list[ScalingRow] = field(default_factory=list)
    crash: CrashCheck | None = None
    memory_mb: dict[int, float] = field(default_factory=dict)
    memory_seconds: dict[int, float] = field(default_factory=dict)
    bad_sets: dict[str, str] = field(default_factory=dict)
    bad_ok: bool = False
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def row(self, backend: str, workers: int) -> ScalingRow | None:
        return next((r for r in self.scaling if r.backend == backend and r.workers == workers), None)

    def speedup(self, backend: str) -> float | None:
        one, two = self.row(backend, 1), self.row(backend, 2)
        return None if one is None or two is None or not one.sets_per_s else two.sets_per_s / one.sets_per_s

    def ray_overhead(self, workers: int) -> float | None:
        """Per-set time with Ray over local at ``workers``, minus 1 (0.05: 5 % slower)."""
        loc, ray = self.row("local", workers), self.row("ray", workers)
        return None if loc is None or ray is None or not ray.sets_per_s else loc.sets_per_s / ray.sets_per_s - 1.0

    def to_json(self) -> dict[str, Any]:
        return {"tree": self.tree, "sets": self.sets, "scaling": [asdict(r) for r in self.scaling],
                "speedup": {b: self.speedup(b) for b in BACKENDS},
                "ray_overhead": {w: self.ray_overhead(w) for w in WORKER_COUNTS},
                "crash": None if self.crash is None else {**asdict(self.crash), "passed": self.crash.passed},
                "memory_mb": self.memory_mb, "memory_seconds": self.memory_seconds, "bad_sets": self.bad_sets,
                "bad_ok": self.bad_ok, "skipped": self.skipped, "notes": self.notes}


def cli_command(root: Path, out: Path, workers: int, extra: Sequence[str] = ()) -> list[str]:
    """The `stitch batch` command line the bench runs in a subprocess (this interpreter, this checkout)."""
    return [sys.executable, "-m", "stitch.cli.main", "batch", str(root), "-o", str(out), "--workers", str(workers),
            "-q", *extra]


def _env() -> dict[str, str]:
    here = str(Path(__file__).resolve().parents[2])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))


def scaling_run(root: Path, out: Path, backend: str, workers: int) -> ScalingRow:
    """One batch over the whole tree, in this process; times without the backend's start."""
    s: BatchSummary = run_batch(root, out, backend=backend, workers=workers)
    busy = max(s.seconds - s.setup_seconds, 1e-9)
    return ScalingRow(backend, workers, s.ran, s.counts.get(STATUS_OK, 0), s.failed, round(busy, 3),
                      round(s.setup_seconds, 3), round(s.ran / busy, 4), round(s.job_seconds, 3))


def crash_and_resume(root: Path, out: Path, reference: Path, kills: int, set_s: float, workers: int,
                     rng: np.random.Generator) -> CrashCheck:
    """Kill the CLI ``kills`` times, then let it finish; compare OUT with the uninterrupted ``reference``.

    Kill k comes after the manifest reached a random count of sets (increasing, between 1 and all but one)
    plus a random delay of up to one set's time ``set_s``, so that it lands anywhere within a job.
    """
    cmd = cli_command(root, out, workers)
    manifest = out / MANIFEST_NAME
    expected = {r["name"] for r in latest_records(reference / MANIFEST_NAME)}
    marks = sorted(int(m) for m in rng.choice(np.arange(1, max(2, len(expected))), size=kills, replace=True))
    delays = [float(d) for d in rng.uniform(0.0, set_s, size=kills)]
    times, finished = [], []
    for mark, delay in zip(marks, delays):
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        while proc.poll() is None and sum(1 for _ in read_records(manifest)) < mark:
            time.sleep(0.05)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        times.append(round(time.monotonic() - t0, 2))
        finished.append(sum(1 for _ in read_records(manifest)))
    subprocess.run(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    names = [r["name"] for r in read_records(manifest)]
    dups = sorted(n for n, c in Counter(names).items() if c > 1)
    got, ref = output_files(out), output_files(reference)
    summaries, ref_summaries = comparable_summaries(out), comparable_summaries(reference)
    return CrashCheck(times, finished, len(expected), len(names), dups, sorted(expected - set(names)),
                      sorted(k for k in ref.keys() | got.keys() if ref.get(k) != got.get(k)),
                      sorted(k for k in ref_summaries.keys() | summaries.keys()
                             if ref_summaries.get(k) != summaries.get(k)),
                      partial_files(out), stray_files(out))


def coordinator_peak_mb(root: Path, out: Path, workers: int) -> tuple[float, float]:
    """(peak RSS in MB of the `stitch batch` process alone, as its --json reports it; seconds) for one run."""
    t0 = time.perf_counter()
    report = out.parent / f"{out.name}.json"
    subprocess.run(cli_command(root, out, workers, ["--json", str(report)]), env=_env(), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    seconds = time.perf_counter() - t0
    if not report.is_file():
        raise StitchError(f"stitch batch on {root} wrote no summary (see {out})")
    return float(json.loads(report.read_text())["peak_rss_mb"]), seconds


def bad_set_reasons(out: Path) -> tuple[dict[str, str], bool]:
    """(bad set -> its recorded reason, whether each failed with a one-line reason naming its cause)."""
    records = {r["name"]: r for r in latest_records(out / MANIFEST_NAME)}
    reasons, ok = {}, True
    for name, word in BAD_SETS.items():
        r = records.get(name)
        reason = "" if r is None else str(r.get("reason", ""))
        reasons[name] = reason or "(no record)"
        ok &= r is not None and r.get("status") == STATUS_FAILED and word in reason and "\n" not in reason
    return reasons, ok


def run_batch_bench(directory: str | os.PathLike, work: str | os.PathLike | None = None, sets: int = DEFAULT_SETS,
                    backends: Sequence[str] = tuple(BACKENDS), kills: int = DEFAULT_KILLS,
                    memory_sets: Sequence[int] = MEMORY_SETS, seed: int = 0,
                    progress: ProgressFn | None = None) -> BatchBenchResult:
    """Generate the tree in ``work`` (a temporary folder, removed afterwards, when None) and measure it all."""
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise StitchError(f"backend {', '.join(unknown)}: choose from {', '.join(BACKENDS)}")
    if kills < 0:
        raise StitchError(f"kills={kills}: must be >= 0")
    temp = None
    if work is None:
        temp = tempfile.mkdtemp(prefix="stitch-bench-batch-")
        work = temp
    base = Path(work)
    if base.exists() and any(base.iterdir()):
        raise StitchError(f"{base}: not empty (the bench writes its tree and outputs there)")
    rng = np.random.default_rng(seed)
    steps = 1 + len(backends) * len(WORKER_COUNTS) + (1 if kills else 0) + len(memory_sets)
    step = 0

    def tick(label: str) -> None:
        nonlocal step
        if progress is not None:
            progress(step, steps, label)
        step += 1

    try:
        tick("tree")
        tree = base / "tree"
        make_tree(directory, tree, sets)
        result = BatchBenchResult(str(tree), sets)
        for backend in backends:
            for w in WORKER_COUNTS:
                tick(f"{backend} x{w}")
                if backend == "ray" and "ray" in result.skipped:
                    continue
                try:
                    result.scaling.append(scaling_run(tree, base / f"out_{backend}_{w}", backend, w))
                except StitchError as exc:  # Ray not installed: a row missing with the reason
                    result.skipped[backend] = str(exc)
        reference = next((base / f"out_{r.backend}_{r.workers}" for r in result.scaling if r.backend == "local"), None)
        if reference is None and result.scaling:
            reference = base / f"out_{result.scaling[0].backend}_{result.scaling[0].workers}"
        if reference is not None:
            result.bad_sets, result.bad_ok = bad_set_reasons(reference)
        if kills and reference is not None:
            tick("crash and resume")
            w = max(WORKER_COUNTS)
            ref_row = result.row("local", w) or result.scaling[0]
            result.crash = crash_and_resume(tree, base / "out_crash", reference, kills,
                                            ref_row.job_seconds / max(ref_row.sets, 1), w, rng)
        if memory_sets:
            small = base / "small"
            make_tree(directory, small, min(max(memory_sets), 200), max_side=SMALL_SIDE, bad=False)
            for n in sorted(memory_sets):
                tick(f"memory {n}")
                linked = base / f"linked_{n}"
                link_tree(small, linked, n)
                mb, secs = coordinator_peak_mb(linked, base / f"out_memory_{n}", max(WORKER_COUNTS))
                result.memory_mb[n], result.memory_seconds[n] = round(mb, 1), round(secs, 1)
        tick("done")
        result.notes.append(f"{os.cpu_count()} CPUs; the time of each run excludes the backend's start (setup_s)")
        return result
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
