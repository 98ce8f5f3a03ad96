"""One job per set: ``run_set(spec, options, out)`` stitches one set into ``out/<set>/``, a pure function.

Outputs of a set, each written atomically (a temporary file and a rename): the panorama
(``panorama.jpg``, or the extension of ``JobOptions.image_ext``), ``thumb.jpg`` (for the index),
``summary.json`` (``stitch run --json``'s summary: ``Panorama.summary()`` plus the output path) and
``log.txt`` (inputs, options, warnings, the outcome). Before it writes, a job removes what an earlier,
interrupted or superseded run of the same set left in its folder, so the folder never mixes two runs.

Determinism: the pair matcher, OpenCV and the BLAS library each run on one thread (``workers=1``,
``cv2.setNumThreads(1)``, stitch.batch.backends.JOB_THREAD_ENV), so that parallel jobs do not oversubscribe
the cores; the panorama is then a function of the images and the options alone
(byte-identical across runs, backends and machines with the same library versions). The summary's
timings (``seconds``, ``stage_seconds``) naturally differ between runs.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stitch.batch.sets import OVERRIDE_FILE, SetSpec
from stitch.errors import ConfigError, StitchError, one_line

STATUS_OK = "ok"
#: The set itself cannot be stitched (too few images, no overlap, bad override file): a one-line reason.
STATUS_FAILED = "failed"
STATUS_TIMEOUT = "timeout"
STATUS_OOM = "oom"
#: The job process died without a result (a signal, a crash in native code).
STATUS_CRASHED = "crashed"
STATUSES = (STATUS_OK, STATUS_FAILED, STATUS_TIMEOUT, STATUS_OOM, STATUS_CRASHED)
#: Outcomes that depend on the limits or the machine rather than on the set: a re-run tries them again.
RETRY_STATUSES = (STATUS_TIMEOUT, STATUS_OOM, STATUS_CRASHED)

PANORAMA_STEM = "panorama"
THUMB_NAME = "thumb.jpg"
SUMMARY_NAME = "summary.json"
LOG_NAME = "log.txt"
DEFAULT_IMAGE_EXT = ".jpg"
#: Longest side of the index thumbnails (px).
DEFAULT_THUMB_SIDE = 320
#: At most this many (distinct) warnings are kept in a set's result and log.
MAX_RESULT_WARNINGS = 20
#: Options a set's stitch.toml may not change: each job runs its matcher on one thread.
FIXED_OPTIONS = ("workers", "hooks", "progress")
#: stitch.toml may give the CLI's --max-canvas-mp; stitch_images takes pixels.
MEGAPIXEL_OPTIONS = {"max_canvas_mp": "max_canvas_pixels"}


@dataclass(frozen=True)
class JobOptions:
    """What every set of a batch shares: stitch_images options (``stitch run``'s), output format, thumbnail size."""

    stitch: dict[str, Any] = field(default_factory=dict)
    image_ext: str = DEFAULT_IMAGE_EXT
    thumb_side: int = DEFAULT_THUMB_SIDE


@dataclass
class SetResult:
    """The outcome of one set (small: it travels back from a worker process or a Ray task).

    ``panorama`` and ``thumbnail`` are paths relative to OUT (None when the set failed); ``reason`` is one line.
    """

    name: str
    status: str
    reason: str = ""
    seconds: float = 0.0
    images: int = 0
    kept: int = 0
    dropped: int = 0
    size: tuple[int, int] | None = None
    warnings: list[str] = field(default_factory=list)
    panorama: str | None = None
    thumbnail: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = None if self.size is None else list(self.size)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SetResult:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if known.get("size") is not None:
            known["size"] = tuple(known["size"])
        return cls(**known)


def set_dir(out: Path, name: str) -> Path:
    """The output folder of set ``name`` under OUT."""
    return Path(out) / name


def set_options(spec: SetSpec, options: JobOptions) -> dict[str, Any]:
    """The stitch_images options of one set: the batch's, then its stitch.toml; ConfigError names a bad key."""
    merged = dict(options.stitch)
    where = spec.folder / OVERRIDE_FILE
    for key, value in spec.overrides.items():
        if key in FIXED_OPTIONS:
            raise ConfigError(f"{where}: '{key}' cannot be set per set (each set runs on one thread)")
        if key in MEGAPIXEL_OPTIONS:
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{where}: {key}={value!r} must be a positive number")
            key, value = MEGAPIXEL_OPTIONS[key], max(1, int(value * 1e6))
        merged[key] = value
    merged["workers"] = 1
    return merged


def check_set_options(spec: SetSpec, stitch_options: dict[str, Any]) -> None:
    """Validate merged options up front (PanoramaConfig.from_options); the error names the override file."""
    from stitch.panorama.config import PanoramaConfig

    try:
        PanoramaConfig.from_options(**stitch_options)
    except (ConfigError, TypeError) as exc:
        where = f"{spec.folder / OVERRIDE_FILE}: " if spec.overrides else ""
        raise ConfigError(f"{where}{one_line(exc)}") from None


def remove_stale(folder: Path) -> None:
    """Remove what an earlier run of this set left: its outputs and any temporary file of an interrupted write."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.is_file() and (p.name.startswith(".") and p.name.endswith(".tmp")
                            or p.stem == PANORAMA_STEM or p.name in (THUMB_NAME, SUMMARY_NAME, LOG_NAME)):
            p.unlink()


def write_log(folder: Path, spec: SetSpec, result: SetResult, options: dict[str, Any] | None = None) -> None:
    """``log.txt`` of a set: its inputs, options, warnings and outcome (atomically)."""
    from stitch.io import write_text_atomic

    lines = [f"set {spec.name}", f"folder {spec.folder}", f"inputs {len(spec.files)}"]
    lines += [f"  {p.name}" for p in spec.files]
    if options is not None:
        lines.append("options " + json.dumps(options, sort_keys=True, default=str))
    lines += [f"warning: {w}" for w in result.warnings]
    if result.status == STATUS_OK:
        w, h = result.size or (0, 0)
        lines.append(f"ok: {w} x {h} px, {result.kept} kept, {result.dropped} dropped, {result.seconds:.2f} s")
    else:
        lines.append(f"{result.status}: {result.reason} ({result.seconds:.2f} s)")
    write_text_atomic(folder / LOG_NAME, "\n".join(lines) + "\n")


def is_memory_error(exc: BaseException) -> bool:
    """MemoryError, or OpenCV's allocation failure (cv2.error 'Insufficient memory' / 'Failed to allocate')."""
    text = str(exc)
    return isinstance(exc, MemoryError) or ("Insufficient memory" in text or "Failed to allocate" in text)


def run_set(spec: SetSpec, options: JobOptions, out: Path) -> SetResult:
    """Stitch one set into ``out/<spec.name>/``; never raises for a bad set (the reason is in the result)."""
    import cv2

    from stitch.imaging import resize_max_side
    from stitch.io import write_image_atomic, write_text_atomic
    from stitch.panorama.pipeline import stitch_images

    t0 = time.perf_counter()
    folder = set_dir(out, spec.name)
    result = SetResult(spec.name, STATUS_FAILED, images=len(spec.files))
    try:  # the set's options are checked before any output is touched: a typo keeps the last good panorama
        if spec.error:
            raise ConfigError(spec.error)
        if not spec.files:
            raise StitchError(f"{spec.folder}: no images")
        stitch_options: dict[str, Any] | None = set_options(spec, options)
        check_set_options(spec, stitch_options)
    except StitchError as exc:  # the log says why; an earlier run's panorama, thumbnail and summary stay
        result.reason = one_line(exc)
        result.seconds = round(time.perf_counter() - t0, 3)
        folder.mkdir(parents=True, exist_ok=True)
        write_log(folder, spec, result)
        return result
    remove_stale(folder)
    folder.mkdir(parents=True, exist_ok=True)
    caught: list[warnings.WarningMessage] = []
    try:
        cv2.setNumThreads(1)
        name = PANORAMA_STEM + options.image_ext
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pano = stitch_images(list(spec.files), **stitch_options)
            pano.save(folder / name)  # tagged: never read back as a photo; the reference photo's metadata
        write_image_atomic(folder / THUMB_NAME, resize_max_side(pano.image, options.thumb_side)[0], tag=True)
        summary = {"output": str(folder / name), **pano.summary()}
        write_text_atomic(folder / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
        result.status = STATUS_OK
        result.kept, result.dropped, result.size = len(pano.names), len(pano.dropped), pano.size
        result.panorama = f"{spec.name}/{name}"
        result.thumbnail = f"{spec.name}/{THUMB_NAME}"
    except StitchError as exc:
        result.reason = one_line(exc)
    except Exception as exc:  # noqa: BLE001 (a memory cap hit, or a bug: recorded, the batch goes on)
        if is_memory_error(exc):
            result.status, result.reason = STATUS_OOM, f"out of memory ({one_line(exc)[:200]})"
        else:
            result.reason = f"internal error ({type(exc).__name__}: {one_line(exc)[:300]})"
    seen: dict[str, None] = {}
    for w in caught:
        seen.setdefault(one_line(w.message), None)
    result.warnings = list(seen)[:MAX_RESULT_WARNINGS]
    result.seconds = round(time.perf_counter() - t0, 3)
    write_log(folder, spec, result, stitch_options)
    return result
