"""stitch.bench.sweep: a rendered multi-row sweep with known rotations, registered back within tolerance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import texture

import stitch
from stitch.bench.devsets import load_devset, placement_errors
from stitch.bench.sweep import make_sweep, sweep_rotations
from stitch.errors import ConfigError


def test_rotations_overlap_as_asked():
    """Neighbours in a row are one step of yaw apart, and the field of view makes them overlap by 40 %."""
    Rs, focal = sweep_rotations(24, 2, np.random.default_rng(0))
    assert len(Rs) == 24 and all(abs(np.linalg.det(R) - 1) < 1e-9 for R in Rs)
    z = np.array([R[2] for R in Rs[:12]])  # optical axes of the first row (world coordinates)
    yaw = np.degrees(np.unwrap(np.arctan2(z[:, 0], z[:, 2])))
    step = float(np.median(np.diff(yaw)))
    hfov = 2 * math.degrees(math.atan(240 / focal))
    assert abs(step - 30) < 4 and abs(hfov - 50) < 0.5  # 360 / 12, and step / (1 - 0.4)
    with pytest.raises(ConfigError, match="field of view"):
        sweep_rotations(4, 2, np.random.default_rng(0))


def test_sweep_registers_back(tmp_path):
    """24 views in 2 rows of a world of distinct random textures (none repeats): every view kept and placed near its
    rotation (median error 0.1 degree; the growth bench's 0.2-degree goal is on real photographs). The world: 16
    columns of tiles about 135 px wide over +-50 degrees, the 320 x 240 textures shrunk about 2.4 times."""
    from stitch.bench.sweep import SWEEP_BAND_DEG

    photos = [texture(k) for k in range(100)]
    dev = make_sweep(tmp_path / "sweep", photos, n=24, rows=2, seed=3, size=(320, 240), columns=16,
                     band_deg=SWEEP_BAND_DEG)
    doc = json.loads((tmp_path / "sweep" / "truth.json").read_text())
    assert len(doc["views"]) == 24 and doc["sweep"]["rows"] == 2 and load_devset(tmp_path / "sweep").kind == "rotation"
    files = sorted(str(p) for p in (tmp_path / "sweep").glob("view_*.jpg"))
    reg = stitch.register(files)
    err = placement_errors(reg, dev)
    assert len(reg.names) == 24 and np.median(list(err.values())) < 0.15 and max(err.values()) < 0.6, err


def test_no_scene_repeats():
    """A world needs a photograph per tile: fewer would repeat a scene (another test), so it is a ConfigError."""
    from stitch.bench.sweep import mosaic_world

    with pytest.raises(ConfigError, match="a scene would repeat"):
        mosaic_world([texture(k) for k in range(10)], 2048, np.random.default_rng(0))


def test_camera_errors_known_answers(tmp_path):
    """A peer's cameras (K, R with rays R K^-1 x): the truth itself scores 0 under any global rotation, and one
    view turned by 5 degrees scores 5 degrees (it is left out of the global fit, which takes views within 2)."""
    from stitch.bench.devsets import camera_errors, intrinsics, rotation

    photos = [texture(k) for k in range(100)]
    dev = make_sweep(tmp_path / "s", photos, n=8, rows=1, seed=1, size=(320, 240))
    G = rotation(30.0, 10.0, 5.0)  # the peer's world frame differs from the truth's
    cams = {n: (intrinsics(t["focal"], tuple(t["size"])), G @ np.asarray(t["R"]).T) for n, t in dev.truth.items()}
    assert max(camera_errors(cams, dev).values()) < 1e-4  # degrees (arccos near 1: float noise)
    first = min(cams)
    K, R = cams[first]
    cams[first] = (K, R @ rotation(5.0, 0.0, 0.0))
    err = camera_errors(cams, dev)
    assert abs(err[first] - 5.0) < 0.2 and max(v for n, v in err.items() if n != first) < 1e-4


def test_repeated_scenes_on_request():
    """allow_repeats cycles the photographs: with 2 smooth photos of the tiles' aspect, tiles 0 and 2 of a row show
    the same picture (mean difference under 8 gray levels: a pixel of resampling) and tiles 0 and 1 do not (over
    30); without photos it still raises."""
    import cv2

    from stitch.bench.sweep import mosaic_world

    rng = np.random.default_rng(0)
    w = 2048  # 16 columns of 128 px
    photos = [cv2.resize(rng.integers(0, 256, (6, 8, 3)).astype(np.uint8), (128, 94), interpolation=cv2.INTER_CUBIC)
              for _ in range(2)]
    world = mosaic_world(photos, w, np.random.default_rng(1), allow_repeats=True).astype(float)
    y0 = w // 4 - round(50 / 180 * (w // 2)) + 2
    tile = [world[y0:y0 + 88, 128 * c + 2:128 * c + 126] for c in range(3)]
    assert np.abs(tile[0] - tile[2]).mean() < 8
    assert np.abs(tile[0] - tile[1]).mean() > 30
    with pytest.raises(ConfigError, match="a scene would repeat"):
        mosaic_world([], w, rng, allow_repeats=True)


def test_view_latitude_known_answer():
    """A view pitched by 10 degrees reaches 10 + half its vertical field of view at the middle of its border."""
    from stitch.bench.devsets import rotation
    from stitch.bench.sweep import view_latitude

    focal, size = 400.0, (320, 240)
    half_v = math.degrees(math.atan(120 / focal))
    for pitch in (10.0, -10.0):
        assert abs(view_latitude([rotation(0.0, pitch, 0.0)], focal, size) - (10 + half_v)) < 1e-6
    assert abs(view_latitude([rotation(30.0, 0.0, 0.0), rotation(90.0, 4.0, 0.0)], focal, size) - (4 + half_v)) < 1e-6


def test_default_world_fits_the_views(tmp_path):
    """By default the photo band reaches SWEEP_BAND_MARGIN_DEG beyond the views and the tiles are about
    SWEEP_TILE_PX wide (truth.json records both), so the world needs far fewer photos than a +-50 degree band."""
    from stitch.bench.sweep import SWEEP_BAND_MARGIN_DEG, SWEEP_TILE_PX, view_latitude

    photos = [texture(k) for k in range(40)]
    make_sweep(tmp_path / "s", photos, n=16, rows=2, seed=2, size=(320, 240))
    truth = json.loads((tmp_path / "s" / "truth.json").read_text())
    doc, views = truth["sweep"], truth["views"]
    Rs, focal = [np.asarray(v["R"]) for v in views.values()], views["view_01.jpg"]["focal"]
    assert abs(doc["band_deg"] - (view_latitude(Rs, focal, (320, 240)) + SWEEP_BAND_MARGIN_DEG)) < 1e-3
    assert doc["columns"] == max(4, round(doc["world_width"] / SWEEP_TILE_PX))
    with pytest.raises(ConfigError, match="a scene would repeat"):
        make_sweep(tmp_path / "t", photos[:5], n=16, rows=2, seed=2, size=(320, 240))
