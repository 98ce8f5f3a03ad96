"""`stitch compare`: compare the pipeline, its candidates, the refiners and the OpenCV baselines on a pair.

Writes one self-contained HTML report (and optionally JSON; schema in ``stitch.report.compare``). Progress goes
to stderr, a short summary to stdout; errors are one line (exit code 1).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from stitch.cli.console import emit_json, fmt_num, is_stdout, one_line, results_console, stderr_console
from stitch.cli.options import json_option, preset_option, seed_option

from stitch.errors import StitchError
from stitch.io import check_writable
from stitch.report.compare import (
    COMPARE_METHOD_CHOICES,
    DEFAULT_METHODS,
    CompareReport,
    compare_folder,
    compare_homographies,
    parse_methods,
    report_document,
    write_html,
)


@contextmanager
def status_line(description: str) -> Iterator[Callable[[str], None]]:
    """A transient rich spinner on stderr (only on a terminal); yields ``say(message)`` to update its text."""
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[msg]}"),
    )
    con = stderr_console()
    with Progress(*columns, console=con, transient=True, disable=not con.is_terminal) as bar:
        task = bar.add_task(description, total=None, msg="")
        yield lambda msg: bar.update(task, msg=escape(msg))


#: File endings accepted for --report.
HTML_SUFFIXES = (".html", ".htm")


def _check_report_path(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    """Refuse a --report path that is not an .html file, before any work."""
    if value.suffix.lower() not in HTML_SUFFIXES:
        raise click.BadParameter(f"{value}: the report is an HTML page; give a name ending in .html")
    try:
        return check_writable(value)
    except StitchError as exc:
        raise click.BadParameter(str(exc)) from None


def _print_warning(message: Warning | str, *_args: object, **_kwargs: object) -> None:
    """A warning (e.g. a file the folder listing skipped) as one ``warning:`` line on stderr."""
    stderr_console().print(f"warning: {one_line(message)}", markup=False, highlight=False, soft_wrap=True)


def _print_summary(report: CompareReport, con) -> None:
    w = report.winner_row
    head = f"{escape(report.src_name)} -> {escape(report.dst_name)}:"
    if w is None:
        con.print(
            f"{head} no winner ({escape(report.pipeline_error or 'the pipeline failed')}); "
            f"{len(report.rows)} rows"
        )
        return
    line = (
        f"{head} winner #{w.id} {escape(str(w.params.get('from')))} refined by {w.params.get('refined_by')}, "
        f"score {fmt_num(w.score, 4)}, {w.inliers}/{w.matches} inliers; {len(report.rows)} rows"
    )
    gs = report.gt_summary()
    if gs is not None:
        verdict = "best or within" if gs["winner_is_best"] else "NOT within"
        line += (
            f"; {gs['error_kind']} error {fmt_num(gs['winner_error'], 3)} px "
            f"(smallest {fmt_num(gs['best_error'], 3)} px: {verdict} {gs['winner_within_px']:g} px)"
        )
    con.print(line)


@click.command(
    "compare",
    help="Compare homographies on SRC DST, or on every overlapping pair of a FOLDER, and write an HTML "
    "report (one self-contained file) and optionally JSON.\n\n"
    "Rows: the full pipeline, every candidate it scored (estimator x threshold x seed x feature level), "
    "the refiners applied to the winning candidate, and the OpenCV baselines SIFT+RANSAC and SIFT+MAGSAC, "
    "all scored with the same quality score. With --gt each row gets its error against the ground truth.",
)
@click.argument(
    "inputs", nargs=-1, required=True, metavar="SRC DST | FOLDER", type=click.Path(path_type=Path)
)
@click.option(
    "--report",
    "report_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    callback=_check_report_path,
    help="Write the HTML report here (.html).",
)
@json_option("Also write the numbers as JSON to this file ('-': stdout; schema_version 1, documented in "
             "stitch/report/compare.py).")
@click.option(
    "--gt",
    "gt_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Ground-truth 3x3 matrix file (src -> dst px); adds the error column.",
)
@click.option(
    "--gt-points",
    "gt_points",
    type=click.Path(path_type=Path),
    default=None,
    help="Annotated points (N x 6: xA yA wA xB yB wB, as homogr's *_vpts.txt); the error becomes "
    "the mean error on these points instead of the corner error. Needs --gt.",
)
@click.option(
    "--methods",
    "methods",
    multiple=True,
    metavar="LIST",
    help=f"Comma-separated rows to add (repeatable): {', '.join(COMPARE_METHOD_CHOICES)}. "
    f"Estimator names keep only their candidates; 'all-levels' also runs the feature levels the "
    f"pipeline did not escalate to. Default: {','.join(DEFAULT_METHODS)}.",
)
@preset_option(help="Pipeline preset.")
@seed_option("Seed of the robust estimators.")
@click.option(
    "--deep",
    "include_deep",
    is_flag=True,
    help="Add the deep refiner row (skipped with a note when stitch.deep is unavailable).",
)
def compare(
    inputs: tuple[Path, ...],
    report_path: Path,
    json_path: Path | None,
    gt_path: Path | None,
    gt_points: Path | None,
    methods: tuple[str, ...],
    preset: str,
    seed: int,
    include_deep: bool,
) -> None:
    """The `stitch compare` command."""
    try:
        meths = parse_methods(methods or None, include_deep)
        if len(inputs) == 1:
            if not inputs[0].is_dir():
                raise click.ClickException(f"{inputs[0]}: expected SRC DST (two images) or a FOLDER")
            if gt_path is not None or gt_points is not None:
                raise click.ClickException("--gt/--gt-points need SRC DST (one pair), not a folder")
            with status_line("compare") as say, warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.showwarning = _print_warning
                result = compare_folder(inputs[0], methods=meths, preset=preset, seed=seed, progress=say)
                say("writing the report")
                write_html(
                    result.reports, report_path, result.screening, title=f"stitch compare: {inputs[0]}"
                )
                emit_json(json_path, lambda: report_document(result.reports, result.screening), quiet=True)
            con = results_console(json_path)
            for r in result.reports:
                _print_summary(r, con)
            skipped = sum(not s["accepted"] for s in result.screening)
            con.print(
                f"{len(result.reports)} overlapping pair(s) compared, {skipped} pair(s) screened out"
            )
        elif len(inputs) == 2:
            with status_line("compare") as say:
                report = compare_homographies(
                    inputs[0],
                    inputs[1],
                    gt=gt_path,
                    gt_points=gt_points,
                    methods=meths,
                    preset=preset,
                    seed=seed,
                    progress=say,
                )
                say("writing the report")
                report.to_html(report_path)
                emit_json(json_path, lambda: report_document([report]), quiet=True)
            _print_summary(report, results_console(json_path))
        else:
            raise click.ClickException(f"expected SRC DST or one FOLDER, got {len(inputs)} paths")
    except StitchError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(str(exc)) from None
    err = stderr_console()
    also = f" and {escape(str(json_path))}" if json_path is not None and not is_stdout(json_path) else ""
    err.print(f"wrote {escape(str(report_path))}" + also)
