"""The `stitch` command line: `stitch run FOLDER|FILES -o OUT` (panoramas) and `stitch bench ...` (benchmarks).

Errors are one line on stderr (``error: ...``) with a non-zero exit, never a traceback; warnings (such as
an image dropped from a panorama) are one line each (``warning: ...``) on stderr. Heavy modules load
inside the commands.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from stitch.cli.console import (
    cli_wording,
    emit_json,
    is_stdout,
    one_line,
    progress_bar,
    show_profile,
    stderr_console,
)
from stitch.cli.options import json_option, quiet_option, workers_option
from stitch.cli.panorama_options import folder_option, panorama_options, stitch_options

from stitch import __version__
from stitch.errors import StitchError
from stitch.io import check_image_output
from stitch.profile import recording, section

#: Exit status after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130
#: Exit status after SIGTERM (128 + SIGTERM), as shells report it.
EXIT_TERMINATED = 143
#: Set this environment variable to see the traceback of an unexpected internal error.
DEBUG_ENV = "STITCH_DEBUG"


#: The commands that live in their own modules: name -> (module, attribute). Each module loads only when its
#: command runs (or a help lists it), so `stitch run` starts without the bench, batch, compare and train code.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "batch": ("stitch.cli.batch_cmd", "batch"),
    "bench": ("stitch.cli.bench_cmd", "bench"),
    "compare": ("stitch.cli.compare_cmd", "compare"),
    "train": ("stitch.cli.train_cmd", "train"),
}


class LazyGroup(click.Group):
    """A click group whose LAZY_COMMANDS are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, sorted (the group's own and the lazy ones)."""
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command ``cmd_name``, importing its module when it is a lazy one."""
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            module, attr = LAZY_COMMANDS[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="stitch: image stitching and homography tuning.\n\n"
    "Many robust homography candidates per image pair, one stitching-quality score to choose between "
    "them, and panoramas built from the chosen pairs.\n\n"
    "Examples:\n\n"
    "  stitch run photos/ -o pano.jpg\n\n"
    "  stitch bench homography ../shared/data/homography_gt",
)
@click.version_option(__version__, "--version", prog_name="stitch")
def cli() -> None:
    """The `stitch` command group."""



def _check_output(output: Path, inputs: list[Path]) -> None:
    """Refuse an output that is a folder, cannot be written or encoded, or is one of the input files."""
    if output.is_dir():
        raise StitchError(f"{output}: is a folder; give an output file name such as {output / 'pano.jpg'}")
    check_image_output(output)
    target = output.resolve()
    for p in inputs:
        if p.resolve() == target or (output.exists() and os.path.samefile(p, output)):
            raise StitchError(f"{output}: refusing to overwrite an input image; choose another output path")


def _summary(out: Path, pano: Any) -> dict[str, Any]:
    """The run's JSON summary: the output path and Panorama.summary() (the same document as batch's summary.json)."""
    return {"output": str(out), **pano.summary()}


@cli.command("run")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="FOLDER|FILES...")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Output image (.jpg, .png, ...); written atomically.")
@panorama_options
@folder_option("--mask-dir", help="Feature masks: DIR/<photo stem>.png (any image extension) is the mask of that "
               "photo, white = features may be found there, black = none. Photos without a mask use the whole image.")
@folder_option("--timelapse", help="Also write every input warped alone onto the panorama's frame into this folder "
               "(NNNN_<stem>.png, one per kept image).")
@folder_option("--debug-dir", help="Write the intermediate images (matches, warped images, masks, compensated images, "
               "seams, the result with seam lines) into this folder.")
@click.option("--all", "all_panoramas", is_flag=True, default=False,
              help="When the photos form several panoramas (separate scenes), write each one: OUTPUT, then "
              "OUTPUT's name with _2, _3, ... (the largest first).")
@workers_option("Threads for pair matching (0: the CPU count, at most 8); the result does not depend on it.")
@json_option("Write a JSON summary of the run to this file ('-': stdout).")
@quiet_option("No progress display (shown on a terminal only) or summary line; warnings still print.")
@click.option("--profile", "profile_path", type=click.Path(path_type=Path), metavar="PATH|-", default=None,
              help="Write where the seconds went (the stages, the pair search's steps, the compositing stages) as "
              "JSON to PATH ('-': stdout), and print it as tables on stderr unless -q.")
def run_cmd(inputs: tuple[Path, ...], output: Path, mask_dir: Path | None, timelapse: Path | None,
            debug_dir: Path | None, all_panoramas: bool, workers: int, json_path: Path | None, quiet: bool,
            profile_path: Path | None, **panorama: Any) -> None:
    """Stitch the images in FOLDER (or the image FILES given, or several folders) into one panorama written
    to OUTPUT.

    A folder's image files are read in name order; broken symlinks, files named like masks (mask*,
    *_mask) and panoramas stitch wrote itself (tagged JPEG/PNG) are skipped with a warning. Unreadable
    files, images under 32 px a side and images that overlap no other are skipped with a warning; fewer
    than two usable images, or no overlap at all, is an error.
    """
    options = {**stitch_options(panorama), "workers": workers,
               "timelapse": None if timelapse is None else str(timelapse)}
    try:
        if profile_path is None:
            _run(list(inputs), output, options, json_path, quiet, debug_dir, mask_dir, all_panoramas)
        else:
            with recording() as prof:
                pano = _run(list(inputs), output, options, json_path, quiet, debug_dir, mask_dir, all_panoramas)
            show_profile(prof.to_dict(pano.stage_seconds), profile_path, quiet)
    except StitchError as exc:
        raise click.ClickException(one_line(str(exc))) from None


def _run(inputs: list[Path], output: Path, options: dict[str, Any], json_path: Path | None, quiet: bool,
         debug_dir: Path | None = None, mask_dir: Path | None = None, all_panoramas: bool = False) -> Any:
    """Stitch and write the panorama (and with ``all_panoramas`` the others); returns the Panorama."""
    from stitch.io import MASK_NAME_REASON, collect_inputs, is_stitch_output
    from stitch.panorama.debug import DebugDir
    from stitch.panorama.inputs import check_timelapse_dir, masks_from_dir
    from stitch.panorama.pipeline import stitch_images

    scan = collect_inputs(inputs)
    paths = scan.paths
    timelapse = options.get("timelapse")
    if timelapse is not None:
        check_timelapse_dir(timelapse, paths)
    console = stderr_console()
    printed: set[str] = set()

    def show(message: Warning | str, *_args: Any, **_kwargs: Any) -> None:
        text = cli_wording(one_line(str(message)))
        if text not in printed:
            printed.add(text)
            console.print(f"warning: {text}", markup=False, highlight=False, soft_wrap=True)

    for name, why in scan.skipped:
        if not (mask_dir is not None and why == MASK_NAME_REASON):  # with --mask-dir, mask files are expected
            show(f"skipping {name}: {why}")
    masks = None
    if mask_dir is not None:
        masks, unused = masks_from_dir(paths, mask_dir)
        if unused:
            show(f"{mask_dir}: no photo matches the mask file(s) {', '.join(unused)} (the mask of a.jpg is a.png)")
    # never overwrite an input, a mask, or a file the folder listing skipped (unless stitch wrote it)
    skipped = [i / n for i in inputs if i.is_dir() for n, _ in scan.skipped]
    _check_output(output, paths + [m for m in masks or [] if m is not None]
                  + [p for p in skipped if p.is_file() and not is_stitch_output(p)])
    if output.suffix.lower() not in (".jpg", ".jpeg", ".png") and any(
            output.resolve().parent == i.resolve() for i in inputs if i.is_dir()):
        show(f"{output} is inside an input folder and a {output.suffix} file carries no stitch tag: a later run on "
            "that folder will read it as an input (write .jpg or .png, or elsewhere)")
    options = dict(options)
    if debug_dir is not None:
        if debug_dir.exists() and not debug_dir.is_dir():
            raise StitchError(f"{debug_dir}: exists and is not a folder (--debug-dir needs a folder)")
        options["hooks"] = DebugDir(debug_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        if quiet or not console.is_terminal:  # a live display only makes sense on a terminal
            pano = stitch_images(paths, masks=masks, **options)
        else:
            with progress_bar("stitch", console) as progress:
                pano = stitch_images(paths, progress=progress, masks=masks, **options)
    save(pano, output, show)
    emit_json(json_path, _summary(output, pano), quiet=quiet)
    if not quiet and not is_stdout(json_path):
        w, h = pano.size
        click.echo(f"wrote {output} ({w} x {h} px, {plural(len(pano.names), 'image')}, reference {pano.reference}, "
                   f"{len(pano.dropped)} dropped, {pano.seconds:.1f} s)")
        if debug_dir is not None:
            click.echo(f"intermediate images in {debug_dir}")
        if pano.timelapse:
            click.echo(f"{len(pano.timelapse)} timelapse frames in {timelapse}")
    if all_panoramas:
        _write_others(pano, paths, masks, options, output, show, quiet or is_stdout(json_path))
    return pano


def _write_others(pano: Any, paths: list[Path], masks: list | None, options: dict[str, Any], output: Path,
                  show: Any, quiet: bool) -> None:
    """``--all``: stitch and write every other panorama the photos form (OUTPUT's name with _2, _3, ...)."""
    from stitch.panorama.pipeline import stitch_images

    others = pano.cameras.others if pano.cameras is not None else []
    for k, group in enumerate(others, start=2):
        picked = [p for p in range(len(paths)) if paths[p].name in group]
        target = output.with_name(f"{output.stem}_{k}{output.suffix}")
        _check_output(target, paths)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            more = stitch_images([paths[p] for p in picked], masks=None if masks is None else [masks[p] for p in picked],
                                 **{**options, "timelapse": None})
        save(more, target, show)
        if not quiet:
            w, h = more.size
            click.echo(f"wrote {target} ({w} x {h} px, {plural(len(more.names), 'image')}: {', '.join(more.names)})")


def save(pano: Any, output: Path, show: Any) -> None:
    """Write the panorama (Panorama.save), its warnings (a 16-bit panorama in an 8-bit format) shown by ``show``."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        try:
            with section("write"):
                pano.save(output)
        except OSError as exc:
            raise StitchError(f"{output}: cannot write the panorama ({exc.strerror or exc})") from None


def plural(n: int, noun: str) -> str:
    """'1 image', '3 images'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _fail(message: str, code: int) -> int:
    click.echo(f"error: {cli_wording(one_line(message))}", err=True)
    return code


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler stopping the job), raised like Ctrl-C so that cleanups run: an atomic
    write removes its temporary file instead of leaving it beside the output."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises Terminated while the block runs (main thread only: signal handlers live there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the group; every expected failure becomes one `error:` line and an exit code."""
    try:
        with _sigterm_raises():
            rv = cli.main(args=argv, prog_name="stitch", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        code = _fail(exc.format_message() + hint, exc.exit_code)
    except click.exceptions.Abort as exc:  # click turns KeyboardInterrupt (Terminated too) into Abort
        code = (_fail("terminated", EXIT_TERMINATED) if isinstance(exc.__cause__, Terminated)
                else _fail("interrupted", EXIT_INTERRUPTED))
    except click.ClickException as exc:
        code = _fail(exc.format_message(), exc.exit_code)
    except StitchError as exc:
        code = _fail(str(exc), 1)
    except Terminated:
        code = _fail("terminated", EXIT_TERMINATED)
    except KeyboardInterrupt:
        code = _fail("interrupted", EXIT_INTERRUPTED)
    except MemoryError:
        code = _fail("out of memory: try a smaller --work-megapix or --max-canvas-mp, or fewer/smaller images", 1)
    except OSError as exc:
        code = _fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), 1)
    except Exception as exc:  # an unexpected bug: still one line, the traceback on request
        if os.environ.get(DEBUG_ENV):
            raise
        code = _fail(f"internal error ({type(exc).__name__}: {exc}); set {DEBUG_ENV}=1 for the traceback", 1)
    else:
        code = rv if isinstance(rv, int) else 0
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
