"""Set discovery: which images under ROOT make one panorama, streamed in a stable order.

Grouping (``GROUPINGS``): 'folder' (the default) makes every folder that holds images one set, and a leaf
folder without images an (empty, failing) set too; 'time-gap' splits the images of each folder where two
consecutive capture times are more than ``gap_s`` apart (EXIF DateTimeOriginal where present, read by
stitch.exif, else the file's modification time); 'count' cuts each folder's images, sorted by name, into runs
of ``count``.

A set's folder may hold ``stitch.toml`` (``OVERRIDE_FILE``): options of ``stitch run`` that apply to that
folder's sets only, named as the flags are (with '_' or '-'), e.g. ``preset = "accurate"``,
``projection = "plane"`` or ``max_canvas_mp = 200`` (stitch.panorama.options maps them; see stitch.batch.jobs).
Hidden files and folders (a leading '.') are never read; neither is the output folder when it sits in ROOT.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stitch.errors import ConfigError
from stitch.exif import exif_datetime
from stitch.io import IMAGE_EXTENSIONS, is_mask_name, is_stitch_output

#: The per-set override file, read from each set's folder.
OVERRIDE_FILE = "stitch.toml"
DEFAULT_GROUPING = "folder"
#: Seconds between two captures that start a new set ('time-gap').
DEFAULT_GAP_S = 30.0
#: Images per set ('count').
DEFAULT_COUNT = 3


@dataclass(frozen=True)
class SetSpec:
    """One set: ``name`` (relative POSIX path, also its folder under OUT), its images, and its overrides.

    ``overrides`` are the parsed ``stitch.toml`` of ``folder`` (empty without one); ``error`` is a one-line
    reason when that file cannot be read (the set then fails with it, the batch goes on); ``rel``: ``folder``
    relative to ROOT (POSIX, '.' for ROOT itself), where the set's masks lie under a mask folder.
    """

    name: str
    folder: Path
    files: tuple[Path, ...]
    overrides: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    rel: str = "."


def is_image(path: Path) -> bool:
    """An input image: a visible file with an image extension, not named like a feature mask and not a
    panorama stitch wrote (the rules of ``stitch run FOLDER``, stitch.io)."""
    return (not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
            and not is_mask_name(path) and not is_stitch_output(path))


def capture_time(path: Path) -> float:
    """EXIF DateTimeOriginal where present, else the modification time (seconds)."""
    t = exif_datetime(path)
    return t if t is not None else path.stat().st_mtime


def split_time_gap(files: Sequence[Path], gap_s: float) -> list[list[Path]]:
    """Runs of files (by capture time, then name) whose consecutive capture times are <= gap_s apart."""
    stamped = sorted((capture_time(p), p.name, p) for p in files)
    runs: list[list[Path]] = []
    last = None
    for t, _, p in stamped:
        if last is None or t - last > gap_s:
            runs.append([])
        runs[-1].append(p)
        last = t
    return runs


def split_count(files: Sequence[Path], count: int) -> list[list[Path]]:
    """Files sorted by name, cut into runs of ``count`` (the last run may be shorter)."""
    ordered = sorted(files, key=lambda p: p.name)
    return [ordered[k:k + count] for k in range(0, len(ordered), count)]


def read_overrides(folder: Path) -> tuple[dict[str, Any], str | None]:
    """(options, error) from ``folder/stitch.toml``: ({}, None) without one; an unreadable file gives the error."""
    path = folder / OVERRIDE_FILE
    if not path.is_file():
        return {}, None
    from stitch.deep.config import toml_module

    try:
        return dict(toml_module().loads(path.read_text(encoding="utf-8"))), None
    except (OSError, UnicodeDecodeError, ValueError, ConfigError) as exc:  # tomllib raises a ValueError subclass
        return {}, f"{path}: {' '.join(str(exc).split())}"


def _whole(files: Sequence[Path], **_: Any) -> list[list[Path]]:
    return [list(files)]


#: --group-by: name -> how one folder's images split into sets.
GROUPINGS: dict[str, Callable[..., list[list[Path]]]] = {
    "folder": _whole,
    "time-gap": lambda files, gap_s, **_: split_time_gap(files, gap_s),
    "count": lambda files, count, **_: split_count(files, count),
}
GROUPING_CHOICES = tuple(GROUPINGS)


def check_grouping(group_by: str, gap_s: float, count: int) -> None:
    """ConfigError naming the bad value before any work."""
    if group_by not in GROUPINGS:
        raise ConfigError(f"group_by={group_by!r}: choose one of {', '.join(GROUPING_CHOICES)}")
    if not gap_s > 0:
        raise ConfigError(f"gap_s={gap_s}: must be > 0 seconds")
    if not (isinstance(count, int) and count >= 1):
        raise ConfigError(f"count={count}: must be a positive integer")


def discover_sets(root: str | os.PathLike, group_by: str = DEFAULT_GROUPING, gap_s: float = DEFAULT_GAP_S,
                  count: int = DEFAULT_COUNT, exclude: Sequence[Path] = ()) -> Iterator[SetSpec]:
    """Yield the sets under ``root`` one folder at a time (sorted walk; nothing is held beyond one folder).

    Symbolic links to folders are not followed; image files that are links are read. ``exclude``: folders
    to skip (the output folder when it lies inside ``root``).
    """
    check_grouping(group_by, gap_s, count)
    top = Path(root)
    if not top.is_dir():
        raise ConfigError(f"{top}: not a folder (stitch batch needs a folder of sets)")
    skip = {p.resolve() for p in exclude}
    split = GROUPINGS[group_by]
    for here, dirs, names in os.walk(top):
        folder = Path(here)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (folder / d).resolve() not in skip)
        files = [folder / n for n in sorted(names) if is_image(folder / n)]
        if not files and dirs:
            continue
        rel = folder.relative_to(top).as_posix()
        overrides, error = read_overrides(folder)
        groups = split(files, gap_s=gap_s, count=count) if files else [[]]
        for k, group in enumerate(groups):
            if len(groups) == 1 and group_by == "folder":
                name = rel if rel != "." else (top.resolve().name or "root")
            else:
                name = f"{rel}/set{k + 1:04d}" if rel != "." else f"set{k + 1:04d}"
            yield SetSpec(name, folder, tuple(group), overrides, error, rel)


def count_sets(root: str | os.PathLike, **options: Any) -> int:
    """Number of sets ``discover_sets`` yields (a streaming pass, for the progress total)."""
    return sum(1 for _ in discover_sets(root, **options))
