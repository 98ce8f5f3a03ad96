"""stitch.panorama.options: the one mapping from the options users name (CLI flags, stitch.toml keys) to
stitch_images options, and the option lists derived from the config types."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from stitch.cli.batch_cmd import batch
from stitch.cli.console import cli_wording
from stitch.cli.main import run_cmd
from stitch.cli.panorama_options import PANORAMA_OPTION_NAMES

from stitch.errors import ConfigError
from stitch.homography.config import OPTION_NAMES, SelectConfig
from stitch.homography.select import estimate_homography
from stitch.panorama.compose import ComposeConfig
from stitch.panorama.config import PANORAMA_SELECT_OPTIONS, STITCH_OPTION_NAMES, PanoramaConfig
from stitch.panorama.options import RENAMED, USER_OPTION_NAMES, stitch_options


def test_smoke():
    """Same-named options pass through, renamed ones convert, unset (None) and false flags are left out."""
    got = stitch_options({"projection": "plane", "max_canvas_mp": 2.5, "no_crop": False, "bands": None,
                          "wave-correct": "none", "max_keypoints": 500})
    assert got == {"projection": "plane", "max_canvas_pixels": 2_500_000, "wave_correct": "none", "max_keypoints": 500}
    assert stitch_options({"no_crop": True}) == {"crop": "none"}
    assert stitch_options({"no_crop": True, "crop": "none"}) == {"crop": "none"}  # agreeing: no contradiction


def test_lists_are_derived_from_the_config_types():
    """A config field or from_options keyword is an option: the API's, the CLI mapping's and stitch.toml's."""
    select_keywords = set(inspect.signature(SelectConfig.from_options).parameters) - {"preset", "seed"}
    assert set(OPTION_NAMES) == select_keywords
    fields = set(PanoramaConfig.__dataclass_fields__) - {"select", "compose"} | set(ComposeConfig.__dataclass_fields__)
    assert fields | set(PANORAMA_SELECT_OPTIONS) | {"detector", "refiner", "seed"} == set(STITCH_OPTION_NAMES)
    assert len(STITCH_OPTION_NAMES) == 46 and set(USER_OPTION_NAMES) == set(STITCH_OPTION_NAMES) | {"max_canvas_mp", "no_crop"}
    # every CLI panorama option maps (run and batch share them), and each renamed one sets a real option
    assert set(PANORAMA_OPTION_NAMES) <= set(USER_OPTION_NAMES)
    assert {r.target for r in RENAMED.values()} <= set(STITCH_OPTION_NAMES)
    assert set(PANORAMA_OPTION_NAMES) <= {p.name for p in run_cmd.params} & {p.name for p in batch.params}
    # every name is accepted by PanoramaConfig.from_options with its default value
    cfg = PanoramaConfig.from_options()
    defaults = {p.name: p.default for p in inspect.signature(PanoramaConfig.from_options).parameters.values()
                if p.default is not p.empty}
    defaults |= {f: getattr(cfg, f) for f in fields if f in PanoramaConfig.__dataclass_fields__}
    defaults |= {f: getattr(cfg.compose, f) for f in ComposeConfig.__dataclass_fields__}
    defaults |= {"max_keypoints": cfg.select.levels[0].features.max_keypoints, "accept_score": cfg.select.accept_score,
                 "min_inliers": cfg.select.min_inliers}
    given = {k: v for k, v in defaults.items() if v is not None}
    assert len(given) == 36 and set(given) <= set(STITCH_OPTION_NAMES)
    assert PanoramaConfig.from_options(**given) == cfg


def test_exception():
    """Unknown names are named, with the nearest valid one and the valid ones; contradictions name both options."""
    with pytest.raises(ConfigError, match=r"unknown option 'projecton' \(did you mean 'projection'\?\); valid: "
                                          r"preset, detector, projection, "):
        stitch_options({"projecton": "plane"})
    with pytest.raises(ConfigError, match=r"no_crop=True contradicts crop='rect'"):
        stitch_options({"crop": "rect", "no_crop": True})
    with pytest.raises(ConfigError, match=r"max_canvas_mp=-1: must be a positive number of megapixels"):
        stitch_options({"max_canvas_mp": -1})
    with pytest.raises(ConfigError, match=r"unknown option\(s\) projecton for stitch_images; valid: preset, .*, "
                                          r"deep_weights$"):
        PanoramaConfig.from_options(projecton="plane")
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) projection; valid: detector, max_keypoints, .*sources, challenge_below$"):
        estimate_homography(img, img, projection="plane")


def test_cli_wording_reads_the_mapping():
    """Library messages name the CLI's flags, in the CLI's units."""
    assert cli_wording("no_crop=True contradicts crop='rect'") == "--no-crop contradicts --crop rect"
    assert cli_wording("raise max_canvas_pixels=2500000") == "raise --max-canvas-mp 2.5"
    assert cli_wording("wave_correct='none' and range_width=2") == "--wave-correct none and --range-width 2"
