"""The panorama options of `stitch run`, written once: `stitch batch` takes the same ones, and one mapping
(stitch.panorama.options, which a batch set's stitch.toml reads too) turns their values into the options of
stitch.stitch_images for both commands.

Choices and defaults come from the library's own constants, so ``--help`` never drifts from the code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from stitch.cli.options import preset_option, seed_option

from stitch.errors import ConfigError, one_line
from stitch.homography.features import DETECTOR_CHOICES
from stitch.panorama.blend import BLEND_CHOICES, DEFAULT_BLEND, DEFAULT_SHARP_BLEND, MAX_BANDS
from stitch.panorama.camera import DEFAULT_WAVE, WAVE_CHOICES
from stitch.panorama.compose import DEFAULT_SEAM_MEGAPIX
from stitch.panorama.config import (
    DEFAULT_MODEL,
    DEFAULT_PANORAMA_PROJECTION,
    DEFAULT_WORK_MEGAPIX,
    MODEL_CHOICES,
    PANORAMA_PROJECTION_CHOICES,
    PanoramaConfig,
)
from stitch.panorama.crop import CROP_CHOICES, CROP_MODES, DEFAULT_CROP, DEFAULT_CROP_MAX_EMPTY
from stitch.panorama.disagree import DEFAULT_MISALIGN, MISALIGN_CHOICES
from stitch.panorama.exposure import DEFAULT_EXPOSURE, EXPOSURE_CHOICES
from stitch.panorama.localwarp import DEFAULT_LOCAL_WARP
from stitch.panorama.options import RENAMED
from stitch.panorama.options import stitch_options as user_stitch_options
from stitch.panorama.output import DEFAULT_JPEG_QUALITY
from stitch.panorama.seams import DEFAULT_GAMMA, DEFAULT_SEAM, SEAM_CHOICES
from stitch.panorama.tiles import DEFAULT_TILE_MEGAPIX
from stitch.panorama.warp import DEFAULT_MAX_CANVAS_PIXELS

F = TypeVar("F", bound=Callable[..., Any])

#: The options, in the order --help shows them.
PANORAMA_OPTIONS = (
    preset_option(help="Pairwise estimation preset."),
    click.option("--detector", type=click.Choice(DETECTOR_CHOICES), default=None,
                 help="Feature detector of the first search level (default: the preset's)."),
    click.option("--projection", type=click.Choice(PANORAMA_PROJECTION_CHOICES), default=DEFAULT_PANORAMA_PROJECTION,
                 show_default=True, help="Output projection; 'auto': spherical for a rotating camera, else the plane (cylindrical if the plane stretches too much)."),
    click.option("--model", type=click.Choice(MODEL_CHOICES), default=DEFAULT_MODEL, show_default=True,
                 help="Camera model: rotation (rotations + focal by bundle adjustment; closes 360-degree turns), "
                 "homography (flat scenes), scans (affine, for documents and maps); auto: the rotation model, "
                 "its homographies refined unless the images make a full turn (the homographies alone with "
                 "--projection plane)."),
    click.option("--wave-correct", type=click.Choice(WAVE_CHOICES), default=DEFAULT_WAVE, show_default=True,
                 help="Straighten the horizon (rotation model): horizontal, vertical, auto or none."),
    click.option("--local-warp/--no-local-warp", default=DEFAULT_LOCAL_WARP, show_default=True,
                 help="After the camera model, move each photo by a smooth displacement field that aligns what "
                 "depth (parallax) leaves misaligned in the overlaps, relaxing to the camera model away from them."),
    seed_option(),
    click.option("--work-megapix", type=click.FloatRange(0.01, 100), default=DEFAULT_WORK_MEGAPIX, show_default=True,
                 help="Registration resolution per image (megapixels); compositing is at full resolution."),
    click.option("--max-canvas-mp", type=click.FloatRange(0.001), default=DEFAULT_MAX_CANVAS_PIXELS / 1e6,
                 show_default=True, help="Refuse canvases larger than this many megapixels (a canvas enlarged to "
                 "the median photo's resolution is drawn smaller instead)."),
    click.option("--exposure", type=click.Choice(EXPOSURE_CHOICES), default=DEFAULT_EXPOSURE, show_default=True,
                 help="Exposure compensation: per-image gain, per-channel gains, block gains, colour (gain, colour balance and per-channel blocks, for a colour cast), or none."),
    click.option("--seam", type=click.Choice(SEAM_CHOICES), default=DEFAULT_SEAM, show_default=True,
                 help="Seam finder in the overlaps (graph cut, dynamic programming, Voronoi, none, or OpenCV's)."),
    click.option("--seam-misalign", type=click.Choice(MISALIGN_CHOICES), default=DEFAULT_MISALIGN, show_default=True,
                 help="Misalignment term of the seam cost, so seams run around parallax and moving people: optical "
                 "flow between the photos, local structure disagreement (ncc), or none."),
    click.option("--seam-misalign-weight", type=click.FloatRange(0.0), default=DEFAULT_GAMMA, show_default=True,
                 help="Seam cost per seam-resolution px of misalignment (0: no misalignment term)."),
    click.option("--blend", type=click.Choice(BLEND_CHOICES), default=DEFAULT_BLEND, show_default=True,
                 help="Blending across the seams: multi-band (Laplacian pyramid), feather, or none (hard seams)."),
    click.option("--sharp-blend/--no-sharp-blend", default=DEFAULT_SHARP_BLEND, show_default=True,
                 help="Where the photos disagree (a moving person, parallax), take each pixel from its seam side "
                 "alone: a hard cut there, no half-transparent people; the blend stays where they agree."),
    click.option("--bands", type=click.IntRange(0, MAX_BANDS), default=None,
                 help="Multi-band levels (default: from the overlap width)."),
    click.option("--seam-megapix", type=click.FloatRange(0.001, 10), default=DEFAULT_SEAM_MEGAPIX, show_default=True,
                 help="Resolution (megapixels per image) at which exposure gains and seams are computed."),
    click.option("--tile-megapix", type=click.FloatRange(0.0), default=DEFAULT_TILE_MEGAPIX, show_default=True,
                 help="Composite a canvas larger than this many megapixels tile by tile, in bounded memory (write it "
                      "as .tif to keep it out of memory whole); 0: never."),
    click.option("--crop", type=click.Choice(CROP_CHOICES), default=None,  # None: not given (see --no-crop)
                 help="Crop: " + "; ".join(f"'{k}': {m.help}" for k, m in CROP_MODES.items())
                 + f".  [default: {DEFAULT_CROP}]"),
    click.option("--no-crop", is_flag=True, help="Same as --crop none."),
    click.option("--crop-max-empty", type=click.FloatRange(0.0, 0.5, max_open=True), default=DEFAULT_CROP_MAX_EMPTY,
                 show_default=True, help="Largest share of filled (inpainted) pixels in a '--crop fill' rectangle: the empty "
                 "ones and the rim filled with them."),
    click.option("--scale", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
                 help="Output resolution as a fraction of the native one, the median photo's (compositing only; "
                 "e.g. 0.5)."),
    click.option("--megapixels", type=click.FloatRange(0.0, min_open=True), default=None,
                 help="Output resolution: scale the canvas (before the crop) down to at most this many megapixels."),
    click.option("--range-width", type=click.IntRange(0), default=0, show_default=True,
                 help="Ordered sequence: match only the images at most K places apart in input order "
                 "(0: every pair)."),
    click.option("--jpeg-quality", type=click.IntRange(1, 100), default=DEFAULT_JPEG_QUALITY, show_default=True,
                 help="Quality of a JPEG panorama (1-100)."),
)
#: Their click parameters, and the parameter names (what a command receives).
PANORAMA_PARAMS = tuple(o(lambda: None).__click_params__[0] for o in PANORAMA_OPTIONS)
PANORAMA_OPTION_NAMES = tuple(p.name for p in PANORAMA_PARAMS)


def folder_option(flag: str, help: str) -> Callable[[F], F]:
    """An optional folder (``--mask-dir``, ``--timelapse``, ``--debug-dir``), whose help says how a command uses it."""
    return click.option(flag, type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR", help=help)


def panorama_options(f: F) -> F:
    """Decorate a click command with every panorama option (PANORAMA_OPTIONS)."""
    for option in reversed(PANORAMA_OPTIONS):
        f = option(f)
    return f


def stitch_options(params: dict[str, Any]) -> dict[str, Any]:
    """stitch_images options from the panorama options' values (stitch.panorama.options.stitch_options: unset
    ones keep the library's defaults), checked whole before any work: a bad combination is a UsageError."""
    try:
        opts = user_stitch_options({k: params.get(k) for k in PANORAMA_OPTION_NAMES})
        PanoramaConfig.from_options(**opts)
    except ConfigError as exc:
        raise click.UsageError(one_line(exc)) from None
    return opts


def cli_flags() -> dict[str, tuple[str, Callable[[str], str]]]:
    """Library keyword -> (flag, value wording) for every panorama option: its own name, and the option a
    RENAMED one sets when no flag of that name exists (max_canvas_pixels -> --max-canvas-mp, in megapixels)."""
    flags: dict[str, tuple[str, Callable[[str], str]]] = {}
    for p in PANORAMA_PARAMS:
        long = max(p.opts, key=len)
        flags[p.name] = (long, (lambda _text: "") if p.is_flag else str)
        renamed = RENAMED.get(p.name)
        if renamed is not None and renamed.target not in PANORAMA_OPTION_NAMES:
            flags[renamed.target] = (long, renamed.wording)
    return flags
