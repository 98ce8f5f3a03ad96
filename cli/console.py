"""Console helpers of every command: consoles, the progress bar, number formatting, tables, JSON output.

Results go to stdout and progress and notes to stderr, so ``stitch ... --json - | jq`` gets only JSON.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from stitch.cli.panorama_options import cli_flags

from stitch.errors import one_line
from stitch.io import write_text_atomic

__all__ = ["one_line"]  # re-exported: the CLI's modules take their console helpers from here
from stitch.types import ProgressFn

#: Wide enough for the metric tables when stdout is not a terminal (pipes, CI logs).
NON_TTY_WIDTH = 200
#: The ``--json`` value that means standard output.
STDOUT = "-"



def stdout_console() -> Console:
    """Console for results (stdout); a fixed wide width when stdout is not a terminal."""
    con = Console(highlight=False)
    return con if con.is_terminal else Console(highlight=False, width=NON_TTY_WIDTH)


def stderr_console() -> Console:
    """Console for progress and notes (stderr), so stdout carries only results."""
    return Console(stderr=True, highlight=False)


def results_console(json_path: Path | None) -> Console:
    """Where the tables go: stdout, or stderr when ``--json -`` takes stdout."""
    return stderr_console() if is_stdout(json_path) else stdout_console()


#: Library keyword -> (CLI option, value converter): how a library message's advice reads on the command line,
#: read from the panorama options (and their mapping, stitch.panorama.options) plus --workers.
CLI_WORDING: dict[str, tuple[str, Callable[[str], str]]] = {**cli_flags(), "workers": ("--workers", str)}
_KEYWORD = re.compile(r"\b(" + "|".join(CLI_WORDING) + r")(?:=('([^']*)'|\"([^\"]*)\"|[^\s,;:)]+))?(?![\w(])")


def cli_wording(message: str) -> str:
    """A library message as a CLI user reads it: ``projection='cylindrical'`` -> ``--projection cylindrical``,
    ``raise max_canvas_pixels`` -> ``raise --max-canvas-mp`` (pixel counts become megapixels)."""
    def swap(m: re.Match) -> str:
        flag, convert = CLI_WORDING[m.group(1)]
        if m.group(2) is None:  # a bare keyword: only identifiers (with "_") are never prose
            return flag if "_" in m.group(1) else m.group(0)
        value = convert(next(g for g in (m.group(3), m.group(4), m.group(2)) if g is not None))
        return f"{flag} {value}" if value else flag
    return _KEYWORD.sub(swap, message)


@contextmanager
def progress_bar(description: str, console: Console | None = None) -> Iterator[ProgressFn]:
    """A rich progress bar on stderr with the elapsed time and the ETA of the current phase; yields a
    ``progress(done, total, label)`` callback (a count that goes back starts a new phase)."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[label]}"),
    )
    with Progress(*columns, console=console or stderr_console(), transient=True) as bar:
        task = bar.add_task(description, total=None, label="starting")
        last = [0]

        def update(done: int, total: int, label: str) -> None:
            if done < last[0]:  # a new phase (pairs, then strips): its own rate, so its own ETA
                bar.reset(task, total=total, completed=done, label=label)
            else:
                bar.update(task, completed=done, total=total, label=label)
            last[0] = done

        yield update


def fmt_num(x: float | None, digits: int = 2) -> str:
    """Fixed-point number; "inf" for failures, "—" for not measured (None / NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def fmt_threshold(t: float) -> str:
    """A threshold as its shortest form (3.0 -> "3")."""
    return f"{t:g}"


def make_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], left_columns: int = 1
) -> Table:
    """A rich table; the first ``left_columns`` columns are left-aligned, the rest right-aligned."""
    table = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i < left_columns else "right", no_wrap=i < left_columns)
    for r in rows:
        table.add_row(*r)
    return table


def is_stdout(path: Path | str | None) -> bool:
    """True for the ``--json -`` value (standard output)."""
    return path is not None and str(path) == STDOUT


def emit_json(path: Path | None, data: dict[str, Any] | Callable[[], dict[str, Any]], quiet: bool = False) -> None:
    """Every command's ``--json PATH``: '-' prints to stdout, a path is written atomically (nothing for None)."""
    if path is None:
        return
    doc = data() if callable(data) else data
    text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
    if is_stdout(path):
        click.echo(text, nl=False)
        return
    write_text_atomic(path, text)
    if not quiet:
        stderr_console().print(f"wrote {path}", markup=False, highlight=False)


def show_profile(profile: dict[str, Any], path: Path, quiet: bool) -> None:
    """``stitch run --profile``: the profile (stitch.profile.Profile.to_dict) as JSON to ``path``, and as tables
    on stderr unless ``quiet``."""
    emit_json(path, profile, quiet=True)
    if quiet:
        return
    console = stderr_console()

    def rows(items: list[dict[str, Any]]) -> list[list[str]]:
        return [[r["name"], f"{r['seconds']:.2f}", f"{100 * r['share']:.0f} %", str(r["calls"])] for r in items]

    console.print(make_table(f"where the {profile['wall_s']:.1f} s went (main thread, wall seconds)",
                             ["stage", "s", "share", "calls"], rows(profile["stages"])))
    console.print(make_table("inside the pair search (thread-seconds, all --workers threads)",
                             ["step", "s", "share", "calls"], rows(profile["pair_search"])))
    comp = profile.get("compositing") or {}
    console.print(make_table("inside the compositing (s)", ["stage", "s"],
                             [[k, f"{v:.2f}"] for k, v in comp.items()]))
