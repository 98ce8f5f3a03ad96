"""`stitch batch ROOT -o OUT`: every set under ROOT, one isolated job each, resumable (stitch.batch).

The stitching options are `stitch run`'s own click options (stitch.cli.panorama_options, so the two never
drift); a set's ``stitch.toml`` overrides them for that set, with the same names and the same mapping to
stitch_images options (stitch.panorama.options). --mask-dir, --timelapse and --debug-dir work per set (see
stitch.batch.jobs.JobOptions).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from stitch.cli.console import (
    cli_wording,
    emit_json,
    fmt_num,
    make_table,
    one_line,
    progress_bar,
    results_console,
    stderr_console,
)
from stitch.cli.options import json_option, quiet_option
from stitch.cli.panorama_options import folder_option, panorama_options, stitch_options

from stitch.batch.backends import (
    BACKEND_CHOICES,
    DEFAULT_BACKEND,
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT_S,
    MAX_MEMORY_MB,
    MAX_TIMEOUT_S,
    Limits,
)
from stitch.batch.jobs import STATUS_OK, STATUSES, JobOptions, SetResult
from stitch.batch.manifest import DEFAULT_KEY_MODE, KEY_MODE_CHOICES
from stitch.batch.sets import DEFAULT_COUNT, DEFAULT_GAP_S, DEFAULT_GROUPING, GROUPING_CHOICES, OVERRIDE_FILE
from stitch.errors import StitchError

#: Output formats of the panoramas.
FORMAT_CHOICES = ("jpg", "png", "tif")


def set_line(name: str, result: SetResult) -> str:
    """One line per finished set: status, name, then images or the reason."""
    if result.status == STATUS_OK:
        w, h = result.size or (0, 0)
        warn = f", {len(result.warnings)} warning(s)" if result.warnings else ""
        return (f"[green]ok[/green]      {escape(name)}: {w} x {h} px, {result.kept} kept, {result.dropped} dropped"
                f"{warn}, {result.seconds:.1f} s")
    return f"[red]{result.status:<7}[/red] {escape(name)}: {escape(cli_wording(result.reason))}"


def print_summary(summary: Any, console: Any) -> None:
    """The status table, the failures (first ones), and where the index and manifest are."""
    rows = [["skipped (done before)", str(summary.skipped)]]
    if summary.failed_before:
        rows.append(["failed before (not redone)", str(summary.failed_before)])
    rows += [[s, str(summary.counts.get(s, 0))] for s in STATUSES if summary.counts.get(s, 0)]
    rows.append(["total", str(summary.total)])
    console.print(make_table("stitch batch", ["status", "sets"], rows))
    console.print(f"{summary.ran} sets run in {fmt_num(summary.seconds, 1)} s on {summary.workers} worker(s) "
                  f"({summary.backend}); {summary.kept} images kept, {summary.dropped} dropped", markup=False,
                  highlight=False, soft_wrap=True)
    if summary.failures:
        more = f" (and {summary.more_failures} more)" if summary.more_failures else ""
        console.print(make_table(f"failures{more}", ["set", "status", "reason"],
                                 [[escape(n), s, escape(cli_wording(r))] for n, s, r in summary.failures],
                                 left_columns=3))
    console.print(f"index: {summary.index}\nmanifest: {summary.manifest}", markup=False, highlight=False)


@click.command("batch")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: OUT/<set>/ (panorama, summary.json, log.txt), OUT/manifest.jsonl, OUT/index.html.")
@click.option("--group-by", type=click.Choice(GROUPING_CHOICES), default=DEFAULT_GROUPING, show_default=True,
              help="Sets: each folder of images; or split each folder by capture-time gaps (EXIF, else mtime) or "
              "into runs of --count images.")
@click.option("--gap", "gap_s", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_GAP_S,
              show_default=True, help="Seconds between captures that start a new set (--group-by time-gap).")
@click.option("--count", type=click.IntRange(min=1), default=DEFAULT_COUNT, show_default=True,
              help="Images per set (--group-by count).")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default=DEFAULT_BACKEND, show_default=True,
              help="local: processes on this machine; ray: Ray tasks (pip install 'stitch-toolkit[ray]').")
@click.option("--address", default=None, help="Ray cluster address (e.g. 'auto' or ray://head:10001); default: "
              "a local Ray instance.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,  # no cap of 64: clusters
              help="Sets at a time (0: one per CPU here, or the Ray cluster's CPUs / --cpus-per-set).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, max=MAX_TIMEOUT_S), default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Seconds per set before it is killed (0: no limit).")
@click.option("--memory-mb", type=click.IntRange(min=0, max=MAX_MEMORY_MB), default=DEFAULT_MEMORY_MB, show_default=True,
              help="Address-space cap per set in MB (0: none); past it the set fails as 'oom'.")
@click.option("--cpus-per-set", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="CPUs each Ray task declares.")
@click.option("--gpus-per-set", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="GPUs a Ray task declares when its set uses a learned stage (refiner = 'deep' in stitch.toml).")
@click.option("--key", "key_mode", type=click.Choice(KEY_MODE_CHOICES), default=DEFAULT_KEY_MODE, show_default=True,
              help="What identifies unchanged inputs on a re-run: file size and mtime (stat) or the bytes (content).")
@click.option("--retry-failed", is_flag=True,
              help="Also redo sets that failed before (timeouts, memory and crashes are always redone).")
@click.option("--format", "image_format", type=click.Choice(FORMAT_CHOICES), default="jpg", show_default=True,
              help="Panorama file format.")
@folder_option("--mask-dir", help="Feature masks, in a folder laid out like ROOT: DIR/<folder>/<photo stem>.png (any "
               "image extension) is the mask of ROOT/<folder>/<photo>, white = features may be found there, black = "
               "none. Sets whose folder has no mask folder, and photos without a mask, use the whole image.")
@folder_option("--timelapse", help="Also write every input of a set warped alone onto its panorama's frame into "
               "DIR/<set>/ (NNNN_<stem>.png, one per kept image); DIR may be -o's folder (the frames beside each "
               "panorama).")
@folder_option("--debug-dir", help="Write each set's intermediate images (matches, warped images, masks, compensated "
               "images, seams, the result with seam lines) into DIR/<set>/.")
@json_option("Write the batch summary as JSON to this file ('-': stdout).")
@quiet_option("No progress, per-set lines or tables; errors still print.")
@panorama_options
def batch(root: Path, out: Path, group_by: str, gap_s: float, count: int, backend: str, address: str | None,
          workers: int, timeout_s: float, memory_mb: int, cpus_per_set: float, gpus_per_set: float, key_mode: str,
          retry_failed: bool, image_format: str, mask_dir: Path | None, timelapse: Path | None,
          debug_dir: Path | None, json_path: Path | None, quiet: bool, **run_options: Any) -> None:
    """Stitch every set of images under ROOT into OUT/<set>/, one isolated job per set; resumable.

    A set is each folder of images under ROOT (or see --group-by). The options of `stitch run` apply to
    every set; a set's folder may hold a stitch.toml overriding them for that set (e.g. preset = "accurate",
    max_canvas_mp = 200, no_crop = true: the options' names, with '_' or '-').
    Re-running the same command skips finished sets and redoes unfinished or changed ones. Each set runs in
    its own process with --timeout and --memory-mb; a failed set is recorded with its reason and the batch
    goes on. The exit status is 1 when any set failed.
    """
    from stitch.batch.run import run_batch

    options = JobOptions(stitch=stitch_options(run_options), image_ext="." + image_format,
                         **{k: None if v is None else str(v) for k, v in
                            (("mask_dir", mask_dir), ("timelapse", timelapse), ("debug_dir", debug_dir))})
    limits = Limits(timeout_s=timeout_s, memory_mb=memory_mb, cpus=cpus_per_set, gpus=gpus_per_set)
    console = stderr_console()
    show = not quiet
    try:
        bar = progress_bar("batch", console) if show and console.is_terminal else nullcontext(lambda *_: None)
        with bar as progress:

            def on_total(total: int) -> None:
                progress(0, total, "")

            def on_set(name: str, result: SetResult | None, done: int, total: int) -> None:
                progress(done, total, name)
                if show and result is not None:
                    console.print(set_line(name, result), highlight=False, soft_wrap=True)

            summary = run_batch(root, out, options, group_by=group_by, gap_s=gap_s, count=count, backend=backend,
                                workers=workers, address=address, limits=limits, key_mode=key_mode,
                                retry_failed=retry_failed, on_total=on_total, on_set=on_set)
    except StitchError as exc:
        raise click.ClickException(one_line(exc)) from None
    if show:
        print_summary(summary, results_console(json_path))
    emit_json(json_path, summary.to_json(), quiet=quiet)
    if summary.failed:
        before = (f", {summary.failed_before} of them before and not redone (--retry-failed redoes them)"
                  if summary.failed_before else "")
        raise click.ClickException(f"{summary.failed} of {summary.total} sets failed{before} (reasons in "
                                   f"{summary.index}; a set's {OVERRIDE_FILE} can change its options)")
