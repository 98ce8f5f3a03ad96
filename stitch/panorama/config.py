"""Settings of a panorama run: PanoramaConfig, its defaults, and the pair-search configs it implies.

Every stage module of stitch.panorama reads its options from here (or owns them and is read from here);
the orchestrator (stitch.panorama.pipeline) and the CLI build one with ``PanoramaConfig.from_options``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any

from stitch.errors import ConfigError, check_choice
from stitch.homography.config import (
    DEFAULT_PRESET,
    OPTION_NAMES,
    PRESET_CHOICES,
    SelectConfig,
    estimator_grid,
    harder_search,
)
from stitch.panorama.adjust import DEFAULT_LOSS, DEFAULT_MAX_POINTS_PER_EDGE, LOSS_CHOICES
from stitch.panorama.camera import DEFAULT_WAVE, WAVE_CHOICES
from stitch.panorama.compose import ComposeConfig
from stitch.panorama.inputs import sequence_pairs
from stitch.panorama.localwarp import DEFAULT_LOCAL_WARP
from stitch.panorama.output import DEFAULT_JPEG_QUALITY, check_jpeg_quality
from stitch.panorama.warp import DEFAULT_MAX_CANVAS_PIXELS, PROJECTION_CHOICES

#: Projections accepted by stitch_images: the warp stage's ones plus 'auto'.
PANORAMA_PROJECTION_CHOICES = ("auto",) + PROJECTION_CHOICES
#: 'auto': spherical when a pair's homography determines a focal length (a rotating camera, as in most
#: panoramas), else the plane (e.g. scans: translations over a flat scene), switching to cylindrical when the
#: plane stretches too much. Why spherical: the plane magnifies the periphery (docs/measurements.md,
#: "config"); OpenCV's stitcher and OpenStitching default to it too. Pass projection='plane' for straight
#: lines or a flat document.
DEFAULT_PANORAMA_PROJECTION = "auto"
DEFAULT_WORK_MEGAPIX = 0.6
#: Screening: an edge needs a quality score at least this (why this value: docs/measurements.md, "pipeline").
DEFAULT_MIN_PAIR_SCORE = 0.5
DEFAULT_MIN_PAIR_INLIERS = 16
DEFAULT_PAIR_REFINER = "lsq"
#: Camera models (step 6 of the module docstring); 'scans' is OpenCV's SCANS mode (affine maps, the plane).
MODEL_CHOICES = ("auto", "rotation", "homography", "scans")
DEFAULT_MODEL = "auto"
#: Robust loss scale at the working resolution (px); scaled to full resolution per panorama.
DEFAULT_LOSS_SCALE_PX = 1.5
#: Above this many images the screening (and the retry of pairs between parts of the graph) runs the 'fast'
#: estimator grid; a lone pair keeps the full grid (why this value: docs/measurements.md, "config").
DEFAULT_FULL_GRID_MAX_IMAGES = 2
#: Keypoints per image for panoramas (the presets' own default is 4000). Matching cost grows with its
#: square (why this value: docs/measurements.md, "config").
DEFAULT_PANORAMA_MAX_KEYPOINTS = 3000
#: 'auto' uses the plane unless its canvas exceeds this multiple of the summed image areas.
DEFAULT_AUTO_MAX_STRETCH = 4.0
#: The pair-search options (SelectConfig.from_options) a panorama passes on, besides detector and refiner, which
#: PanoramaConfig.from_options takes itself: not 'sources' nor 'challenge_below' (the screening searches the feature
#: levels only).
PANORAMA_SELECT_OPTIONS = tuple(n for n in OPTION_NAMES if n not in ("detector", "refiner", "sources", "challenge_below"))


@dataclass(frozen=True)
class PanoramaConfig:
    """Settings of stitch_images (see the module docstring); build it with ``PanoramaConfig.from_options``."""

    select: SelectConfig
    preset: str = DEFAULT_PRESET
    projection: str = DEFAULT_PANORAMA_PROJECTION
    work_megapix: float = DEFAULT_WORK_MEGAPIX
    max_canvas_pixels: int = DEFAULT_MAX_CANVAS_PIXELS
    min_pair_score: float = DEFAULT_MIN_PAIR_SCORE
    min_pair_inliers: int = DEFAULT_MIN_PAIR_INLIERS
    loss: str = DEFAULT_LOSS
    loss_scale_px: float = DEFAULT_LOSS_SCALE_PX
    max_points_per_edge: int = DEFAULT_MAX_POINTS_PER_EDGE
    full_grid_max_images: int = DEFAULT_FULL_GRID_MAX_IMAGES
    adjust: bool = True
    model: str = DEFAULT_MODEL
    wave_correct: str = DEFAULT_WAVE
    workers: int = 0
    range_width: int = 0
    verify: bool = True
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    local_warp: bool = DEFAULT_LOCAL_WARP
    compose: ComposeConfig = field(default_factory=ComposeConfig)

    @property
    def seed(self) -> int:
        """The one seed of a run: the pair search's (``select.seed``), also used to subsample the adjustment."""
        return self.select.seed

    @classmethod
    def from_options(cls, preset: str = DEFAULT_PRESET, detector: str | None = None,
                     projection: str = DEFAULT_PANORAMA_PROJECTION, seed: int = 0,
                     work_megapix: float = DEFAULT_WORK_MEGAPIX,
                     max_canvas_pixels: int = DEFAULT_MAX_CANVAS_PIXELS, refiner: str = DEFAULT_PAIR_REFINER,
                     **options: Any) -> PanoramaConfig:
        """Config from a preset plus overrides; unknown option names raise ConfigError naming them.

        Panorama options: min_pair_score, min_pair_inliers, loss, loss_scale_px, max_points_per_edge,
        full_grid_max_images, adjust, verify (the checks of stitch.panorama.verify and .placement: pair matches
        inconsistent with the rest removed, misplaced images dropped; default True), model (MODEL_CHOICES),
        wave_correct (WAVE_CHOICES), local_warp (after the camera model, a smooth displacement field per image
        aligns what depth leaves misaligned: stitch.panorama.localwarp; default off), workers
        (pair-matching threads; 0 = the CPU count, at most 8, the result does not depend on it), range_width
        (match only images at most this far apart in input order; 0 = every pair; stitch.panorama.inputs),
        jpeg_quality (1-100, of the JPEG file Panorama.save writes; stitch.panorama.output);
        compositing: exposure, seam, blend, crop, crop_max_empty, scale, megapixels, timelapse, seam_megapix,
        bands, block_size (stitch.panorama.compose.ComposeConfig). PANORAMA_SELECT_OPTIONS go to
        SelectConfig.from_options (max_keypoints, ratio, estimators, ...). STITCH_OPTION_NAMES lists them all.
        """
        compose = ComposeConfig(**{k: options.pop(k) for k in list(options) if k in ComposeConfig.__dataclass_fields__})
        own = {k: options.pop(k) for k in list(options) if k in cls.__dataclass_fields__}
        unknown = sorted(k for k in options if k not in PANORAMA_SELECT_OPTIONS)
        if unknown or "select" in own or "compose" in own:
            bad = unknown or [k for k in ("select", "compose") if k in own]
            raise ConfigError(f"unknown option(s) {', '.join(bad)} for stitch_images; valid: "
                              f"{', '.join(STITCH_OPTION_NAMES)}")
        check_choice("preset", preset, PRESET_CHOICES)
        check_choice("projection", projection, PANORAMA_PROJECTION_CHOICES)
        if not (isinstance(work_megapix, (int, float)) and 0.01 <= work_megapix <= 100):
            raise ConfigError(f"work_megapix={work_megapix}: must be between 0.01 and 100")
        if not (isinstance(max_canvas_pixels, int) and max_canvas_pixels > 0):
            raise ConfigError(f"max_canvas_pixels={max_canvas_pixels}: must be a positive integer")
        if preset != "fast":  # the fast preset keeps its own, smaller count
            options.setdefault("max_keypoints", DEFAULT_PANORAMA_MAX_KEYPOINTS)
        sel = SelectConfig.from_options(preset=preset, detector=detector, refiner=refiner, seed=seed, **options)
        cfg = cls(select=sel, preset=preset, projection=projection, work_megapix=float(work_megapix),
                  max_canvas_pixels=max_canvas_pixels, compose=compose, **own)
        cfg.check()
        return cfg

    def screening(self, n: int) -> tuple[SelectConfig, SelectConfig | None]:
        """(screen, repair): the pair searches of a panorama of ``n`` images (stitch.panorama.graph.match_graph).

        screen: the preset's first feature level (the 'fast' estimator grid above ``full_grid_max_images``
        images); repair, for pairs between parts of a graph that fell apart: its costlier levels (ASIFT only
        with preset 'exhaustive'), or None. Both search the feature levels only (the other candidate sources
        are for hard single pairs) and refuse a matrix whose horizon crosses an image: the canvas needs every
        corner of every photo in front.
        """
        levels = self.select.levels
        first = levels[0]
        repair_levels = tuple(lv for lv in levels[1:] if lv.features.detector != "asift" or self.preset == "exhaustive")
        if n > self.full_grid_max_images:
            first = replace(first, specs=estimator_grid("fast"))
            repair_levels = tuple(replace(lv, specs=estimator_grid("fast")) for lv in repair_levels)
        whole = replace(self.select.score, horizon_cut=False)
        screen = replace(self.select, levels=(first,), exhaustive=False, sources=("features",), score=whole)
        repair = (replace(self.select, levels=repair_levels, sources=("features",), score=whole) if repair_levels
                  else None)
        return screen, repair

    def advice(self) -> str:
        """What to try when no two images overlap: the harder searches this config did not run ('' if none)."""
        exhaustive = self.preset == "exhaustive"
        return harder_search(exhaustive, exhaustive or self.select.levels[0].features.detector == "asift")

    def check(self) -> None:
        """Validate the panorama-level fields; ConfigError names the offending one."""
        check_choice("model", self.model, MODEL_CHOICES)
        check_choice("wave_correct", self.wave_correct, WAVE_CHOICES)
        check_choice("loss", self.loss, LOSS_CHOICES)
        if not isinstance(self.local_warp, bool):
            raise ConfigError(f"local_warp={self.local_warp!r}: must be True or False")
        self.compose.check()
        if not -1.0 <= self.min_pair_score <= 1.0:
            raise ConfigError(f"min_pair_score={self.min_pair_score}: must be in [-1, 1]")
        if self.min_pair_inliers < 4:
            raise ConfigError(f"min_pair_inliers={self.min_pair_inliers}: must be at least 4")
        if self.loss_scale_px <= 0:
            raise ConfigError(f"loss_scale_px={self.loss_scale_px}: must be > 0")
        if not (isinstance(self.workers, int) and 0 <= self.workers <= 64):
            raise ConfigError(f"workers={self.workers}: must be an integer in 0..64 (0 = the CPU count)")
        sequence_pairs(0, self.range_width)  # checks range_width
        check_jpeg_quality(self.jpeg_quality)
        if self.max_points_per_edge < 4:
            raise ConfigError(f"max_points_per_edge={self.max_points_per_edge}: must be at least 4")


def stitch_option_names() -> tuple[str, ...]:
    """Every option PanoramaConfig.from_options takes (stitch_images' options): its keywords, the fields of
    PanoramaConfig and ComposeConfig, and PANORAMA_SELECT_OPTIONS."""
    explicit = [p for p in inspect.signature(PanoramaConfig.from_options).parameters if p != "options"]
    own = [f for f in PanoramaConfig.__dataclass_fields__ if f not in ("select", "compose")]
    return tuple(dict.fromkeys(explicit + own + list(ComposeConfig.__dataclass_fields__) + list(PANORAMA_SELECT_OPTIONS)))


#: stitch_images' options, derived from the config types: a new field is a new option (API, CLI mapping, stitch.toml).
STITCH_OPTION_NAMES = stitch_option_names()
