"""stitch.panorama.tiles: a canvas composited tile by tile equals the whole-canvas composite, with bounded memory."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
import tifffile

from stitch.errors import ConfigError
from stitch.io import is_stitch_output
from stitch.panorama.compose import ComposeConfig, compose_panorama
from stitch.panorama.output import write_panorama
from stitch.panorama.tiles import blend_margin, tile_boxes
from stitch.panorama.warp import Projection, canvas_bounds

#: Forces tiling of the small test canvases: every canvas is above it, tiles of 128 px.
SMALL_TILES = {"tile_megapix": 0.01, "tile_side": 128}


def shift(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0, tx], [0, 1.0, ty], [0, 0, 1.0]])


def mosaic(width: int = 1400, offsets=((0, 0), (380, 12), (760, 5), (1040, 20)), size=(360, 380)):
    """Photos (h, w, 3) uint8 of a textured scene at known offsets, each brighter by 8 % than the previous one,
    with their homographies (shifts) and canvas (plane)."""
    rng = np.random.default_rng(3)
    h = size[1] + max(y for _, y in offsets) + 10
    base = cv2.resize(rng.uniform(0, 255, (h // 8, width // 8, 3)).astype(np.float32), (width, h),
                      interpolation=cv2.INTER_CUBIC)
    scene = np.clip(base * 0.6 + np.linspace(40, 120, width)[None, :, None], 0, 255)
    imgs = [np.clip(scene[y:y + size[1], x:x + size[0]] * (1 + 0.08 * k), 0, 255).astype(np.uint8)
            for k, (x, y) in enumerate(offsets)]
    Hs = [shift(x, y) for x, y in offsets]
    return imgs, Hs, canvas_bounds(Hs, [size] * len(imgs), Projection("plane"))


@pytest.fixture(scope="module")
def four():
    return mosaic()


def test_smoke(four):
    imgs, Hs, canvas = four
    out = compose_panorama(imgs, Hs, canvas, ComposeConfig(crop="none", **SMALL_TILES))
    assert out.tiles == len(tile_boxes((0, 0) + canvas.size, 128)) == 44
    assert out.image.shape == (canvas.size[1], canvas.size[0], 3) and out.image.dtype == np.uint8
    assert out.mask.mean() > 0.9 and out.bands >= 1
    assert compose_panorama(imgs, Hs, canvas, ComposeConfig(crop="none")).tiles == 0  # default: one piece


@pytest.mark.parametrize("blend", ["multiband", "feather", "none"])
@pytest.mark.parametrize("crop", ["fill", "none"])
def test_tiles_equal_whole_canvas(four, blend, crop):
    """Known answer: the tiled composite (tiles of 128 px, 2 threads) is the whole-canvas one: same crop, same
    mask, pixels within rounding (mean |diff| < 0.5, max <= 3 gray levels)."""
    imgs, Hs, canvas = four
    whole = compose_panorama(imgs, Hs, canvas, ComposeConfig(blend=blend, crop=crop))
    tiles = compose_panorama(imgs, Hs, canvas, ComposeConfig(blend=blend, crop=crop, **SMALL_TILES), workers=2)
    assert tiles.tiles > 10 and tiles.crop == whole.crop and tiles.bands == whole.bands
    assert np.array_equal(np.asarray(tiles.mask), whole.mask) and tiles.filled == whole.filled
    diff = np.abs(np.asarray(tiles.image, np.int16) - whole.image.astype(np.int16))
    assert diff.mean() < 0.5 and diff.max() <= 3


def test_many_bands_across_tiles(four):
    """7 bands (a 128 px coarsest level, as wide as a tile): the margin keeps the tiles seamless."""
    imgs, Hs, canvas = four
    whole = compose_panorama(imgs, Hs, canvas, ComposeConfig(bands=7, crop="none"))
    tiles = compose_panorama(imgs, Hs, canvas, ComposeConfig(bands=7, crop="none", **SMALL_TILES))
    diff = np.abs(np.asarray(tiles.image, np.int16) - whole.image.astype(np.int16))
    assert blend_margin("multiband", 7) == 256 and diff.mean() < 0.5 and diff.max() <= 3


def _numpy_peak(fn) -> int:
    """Peak bytes traced (NumPy and OpenCV arrays report to tracemalloc; disk-backed memmaps do not) while fn runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_bounded_by_tile():
    """On a 4000 x 400 canvas, tiles of 128 px hold a tenth of the whole-canvas blend's arrays (measured: 7 MB vs
    68 MB), and doubling the canvas adds only the seam-resolution maps (measured: +4 MB; untiled it doubles)."""
    def run(width: int, tiles: bool) -> int:
        offsets = [(x, (x // 7) % 20) for x in range(0, width - 360, 300)]
        imgs, Hs, canvas = mosaic(width, offsets)
        cfg = ComposeConfig(crop="none", exposure="none", seam="voronoi", seam_megapix=0.01,
                            **(SMALL_TILES if tiles else {}))
        return _numpy_peak(lambda: compose_panorama(imgs, Hs, canvas, cfg))

    whole, tiled, tiled_wide = run(4000, False), run(4000, True), run(8000, True)
    assert tiled < 0.2 * whole
    assert tiled_wide - tiled < 0.1 * whole


def test_workers_give_the_same_pixels(four):
    """With 2 threads (the images of a strip, the overlapping pairs of the disagreement, in parallel, their results
    taken in order) the composite is the 1-thread one."""
    imgs, Hs, canvas = four
    for cfg in (ComposeConfig(crop="none"), ComposeConfig(blend="feather", crop="none"),
                ComposeConfig(crop="none", sharp_blend=True)):
        one = compose_panorama(imgs, Hs, canvas, cfg, workers=1)
        two = compose_panorama(imgs, Hs, canvas, cfg, workers=2)
        assert np.array_equal(one.image, two.image)


def test_progress_reports_tiles(four):
    imgs, Hs, canvas = four
    calls = []
    compose_panorama(imgs, Hs, canvas, ComposeConfig(crop="none", **SMALL_TILES),
                     progress=lambda d, t, label: calls.append((d, t, label)))
    blended = [c for c in calls if "tiles: blend" in c[2]]
    assert len(blended) == 44 and blended[-1][:2] == (44, 44)


def test_warp_crop_is_composited_whole(four):
    imgs, Hs, canvas = four
    out = compose_panorama(imgs, Hs, canvas, ComposeConfig(crop="warp", **SMALL_TILES))
    assert out.tiles == 0 and any("needs the whole image in memory" in n for n in out.notes)


def test_tiled_result_written_as_tiff(four, tmp_path):
    """The disk-backed result of a tiled composite is written as a tiled BigTIFF, pixel for pixel, tagged."""
    imgs, Hs, canvas = four
    out = compose_panorama(imgs, Hs, canvas, ComposeConfig(**SMALL_TILES))
    path = write_panorama(tmp_path / "pano.tif", out.image)
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        assert tf.is_bigtiff and page.is_tiled and page.tilewidth == 512
        rgb = page.asarray()
    assert np.array_equal(rgb[:, :, ::-1], np.asarray(out.image)) and is_stitch_output(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pano.tif"]  # no temporary file left


def test_exception():
    with pytest.raises(ConfigError, match="tile_side=100"):
        ComposeConfig(tile_side=100).check()
    with pytest.raises(ConfigError, match="tile_megapix=-1"):
        ComposeConfig(tile_megapix=-1).check()
