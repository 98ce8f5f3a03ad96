"""One job per set: ``run_set(spec, options, out)`` stitches one set into ``out/<set>/``, a pure function.

Outputs of a set, each written atomically (a temporary file and a rename): the panorama
(``panorama.jpg``, or the extension of ``JobOptions.image_ext``), ``thumb.jpg`` (for the index),
``summary.json`` (``stitch run --json``'s summary: ``Panorama.summary()`` plus the output path) and
``log.txt`` (inputs, options, warnings, the outcome); with ``JobOptions.timelapse`` / ``debug_dir`` also the
set's timelapse frames / intermediate images in ``<that folder>/<set>/``. Before it writes, a job removes what
an earlier, interrupted or superseded run of the same set left in its folder (and its frames), so the folder
never mixes two runs.

Determinism: the pair matcher, OpenCV and the BLAS library each run on one thread (``workers=1``,
``cv2.setNumThreads(1)``, stitch.batch.backends.JOB_THREAD_ENV), so that parallel jobs do not oversubscribe
the cores; the panorama is then a function of the images and the options alone
(byte-identical across runs, backends and machines with the same library versions). The summary's
timings (``seconds``, ``stage_seconds``) naturally differ between runs.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
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
#: Options a set's stitch.toml may not change, and why. Its other keys are `stitch run`'s options, mapped to
#: stitch_images options as the command line's are (stitch.panorama.options).
FIXED_OPTIONS = {"workers": "each set runs on one thread",
                 "timelapse": "stitch batch --timelapse DIR writes every set's frames to DIR/<set>/"}
#: A timelapse frame's file name (stitch.panorama.timelapse.frame_name): what a re-run of a set removes.
FRAME_PATTERN = re.compile(r"\d{4}_.+\.png")


@dataclass(frozen=True)
class JobOptions:
    """What every set of a batch shares: stitch_images options (``stitch run``'s), output format, thumbnail size,
    and the folders of the per-set extras.

    ``mask_dir``: a folder laid out like ROOT: the feature masks of the photos in ROOT/<folder>/ are
    ``mask_dir/<folder>/<photo stem>.<image ext>`` (stitch.panorama.inputs.masks_from_dir); a set without
    that folder uses whole images. ``timelapse`` / ``debug_dir``: set S writes its timelapse frames /
    intermediate images into ``<folder>/S/``.
    """

    stitch: dict[str, Any] = field(default_factory=dict)
    image_ext: str = DEFAULT_IMAGE_EXT
    thumb_side: int = DEFAULT_THUMB_SIDE
    mask_dir: str | None = None
    timelapse: str | None = None
    debug_dir: str | None = None

    def absolute(self) -> JobOptions:
        """The same options with absolute folders (a job may run in another working folder: a Ray worker's)."""
        return replace(self, **{k: str(Path(v).absolute()) for k in ("mask_dir", "timelapse", "debug_dir")
                                if (v := getattr(self, k)) is not None})


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
    from stitch.panorama.options import stitch_options

    where = spec.folder / OVERRIDE_FILE
    for key in spec.overrides:
        if (why := FIXED_OPTIONS.get(key.replace("-", "_"))) is not None:
            raise ConfigError(f"{where}: '{key}' cannot be set per set ({why})")
    try:
        overrides = stitch_options(spec.overrides)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {one_line(exc)}") from None
    merged = {**options.stitch, **overrides, "workers": 1}
    if options.timelapse is not None:
        merged["timelapse"] = str(Path(options.timelapse) / spec.name)
    return merged


def set_masks(spec: SetSpec, options: JobOptions) -> tuple[list[Path | None] | None, list[str]]:
    """(feature mask file or None per photo, or None for no masks; mask files matching no photo) of one set,
    from ``options.mask_dir/<the set's folder under ROOT>/`` (see JobOptions)."""
    if options.mask_dir is None:
        return None, []
    folder = Path(options.mask_dir) / spec.rel
    if not folder.is_dir():
        return None, []
    from stitch.panorama.inputs import masks_from_dir

    masks, unused = masks_from_dir(spec.files, folder)
    return (masks if any(m is not None for m in masks) else None), unused


def check_set_options(spec: SetSpec, stitch_options: dict[str, Any]) -> None:
    """Validate merged options up front (PanoramaConfig.from_options); the error names the override file."""
    from stitch.panorama.config import PanoramaConfig

    try:
        PanoramaConfig.from_options(**stitch_options)
    except (ConfigError, TypeError) as exc:
        where = f"{spec.folder / OVERRIDE_FILE}: " if spec.overrides else ""
        raise ConfigError(f"{where}{one_line(exc)}") from None


def remove_stale(folder: Path, frames: Path | None = None) -> None:
    """Remove what an earlier run of this set left: its outputs and any temporary file of an interrupted write,
    and the timelapse frames it wrote into ``frames`` (tagged files named like frames: never a photo)."""
    from stitch.io import is_stitch_output

    for p in folder.iterdir() if folder.is_dir() else ():
        if p.is_file() and (p.name.startswith(".") and p.name.endswith(".tmp")
                            or p.stem == PANORAMA_STEM or p.name in (THUMB_NAME, SUMMARY_NAME, LOG_NAME)):
            p.unlink()
    for p in frames.iterdir() if frames is not None and frames.is_dir() else ():
        if p.is_file() and FRAME_PATTERN.fullmatch(p.name) and is_stitch_output(p):
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
    from stitch.panorama.debug import DebugDir
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
        masks, unused = set_masks(spec, options)
    except StitchError as exc:  # the log says why; an earlier run's panorama, thumbnail and summary stay
        result.reason = one_line(exc)
        result.seconds = round(time.perf_counter() - t0, 3)
        folder.mkdir(parents=True, exist_ok=True)
        write_log(folder, spec, result)
        return result
    frames = stitch_options.get("timelapse")
    remove_stale(folder, None if frames is None else Path(frames))
    folder.mkdir(parents=True, exist_ok=True)
    hooks = None if options.debug_dir is None else DebugDir(Path(options.debug_dir) / spec.name)
    caught: list[warnings.WarningMessage] = []
    try:
        cv2.setNumThreads(1)
        name = PANORAMA_STEM + options.image_ext
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if unused:
                warnings.warn(f"{options.mask_dir}: no photo of set {spec.name} matches the mask file(s) "
                              f"{', '.join(unused)} (the mask of a.jpg is a.png)", stacklevel=1)
            pano = stitch_images(list(spec.files), masks=masks, hooks=hooks, **stitch_options)
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
