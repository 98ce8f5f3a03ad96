"""Command-line timing beside the peers: each method's own command on each set, as a user would type it.

``stitch bench panorama DIR --cli``. Every run is one command in its own process group (killed whole at the
timeout); its seconds run from spawn to exit, so they include the interpreter's start, the imports, reading
and writing. ``CLI_COMMANDS`` is the one table of the commands (the in-process timing is the bench's own).
No quality figures: ``stitch bench panorama`` without ``--cli`` measures those.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stitch.bench.panorama import (
    DEFAULT_TIMEOUT_S,
    METHOD_OS,
    METHOD_OS_SIFT,
    METHOD_STITCH,
    bench_setup,
    run_group,
)
from stitch.errors import StitchError
from stitch.types import ProgressFn


def _stitch_cmd(paths: Sequence[Path], out: Path) -> list[str]:
    return [sys.executable, "-m", "stitch.cli.main", "run", *map(str, paths), "-o", str(out), "--quiet"]


def _openstitching_cmd(detector: str | None) -> Callable[[Sequence[Path], Path], list[str]]:
    def cmd(paths: Sequence[Path], out: Path) -> list[str]:
        extra = ["--detector", detector] if detector else []
        return [sys.executable, "-m", "stitching.cli.stitch", *extra, "--output", str(out), *map(str, paths)]
    return cmd


#: method -> its command line for (input photos, output file): `stitch run` and OpenStitching's own CLI.
CLI_COMMANDS: dict[str, Callable[[Sequence[Path], Path], list[str]]] = {
    METHOD_STITCH: _stitch_cmd,
    METHOD_OS: _openstitching_cmd(None),
    METHOD_OS_SIFT: _openstitching_cmd("sift"),
}
CLI_METHOD_CHOICES = tuple(CLI_COMMANDS)


@dataclass(frozen=True)
class CliRow:
    """One (set, method) command: ok (exit 0 and an output file), wall seconds, peak resident MB, why not ok."""

    set: str
    method: str
    ok: bool
    seconds: float
    peak_mb: float | None
    error: str | None = None


def run_cli_timing(directory: str | os.PathLike, methods: Sequence[str] = CLI_METHOD_CHOICES, sets: Sequence[str] = (),
                   timeout: float = DEFAULT_TIMEOUT_S, out_dir: str | os.PathLike | None = None,
                   progress: ProgressFn | None = None) -> tuple[list[CliRow], dict[str, str]]:
    """Each method's command on each set of ``directory``: (rows, skipped methods -> why)."""
    bad = [m for m in methods if m not in CLI_COMMANDS]
    if bad:
        raise StitchError(f"--cli times the methods with a command line ({', '.join(CLI_METHOD_CHOICES)}), "
                          f"not {', '.join(bad)}")
    found, out, skipped, run = bench_setup(directory, sets, methods, timeout, out_dir, "stitch-bench-cli-")
    rows, total = [], len(found) * len(run)
    for k, (name, m) in enumerate((n, m) for n, _ in found for m in run):
        if progress is not None:
            progress(k, total, f"{name}: {m} (command line)")
        paths = dict(found)[name]
        d = out / name / f"{m}-cli"
        d.mkdir(parents=True, exist_ok=True)
        result = d / "panorama.jpg"
        result.unlink(missing_ok=True)
        r = run_group(CLI_COMMANDS[m](paths, result), d / "log.txt", timeout)
        ok = r.returncode == 0 and result.is_file()
        error = (f"timed out after {timeout:g} s (killed)" if r.timed_out else None if ok
                 else f"exit {r.returncode}: " + (d / "log.txt").read_text(errors="replace").strip()[-200:])
        rows.append(CliRow(name, m, ok, r.seconds, r.peak_mb, error))
    if progress is not None:
        progress(total, total, "done")
    return rows, skipped

