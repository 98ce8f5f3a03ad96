"""stitch.blend / stitch.compose / stitch.crop: no visible step at a seam, strip-independent multi-band, crop inside."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stitch.errors import ConfigError
from stitch.panorama.blend import BLEND_CHOICES, bands_for_overlap, dilate_by_rows
from stitch.panorama.compose import ComposeConfig, compose_panorama
from stitch.panorama.crop import crop_box, largest_rectangle
from stitch.panorama.debug import PipelineHooks
from stitch.panorama.pipeline import stitch_images
from stitch.panorama.warp import Projection, canvas_bounds

GAIN = 1.25


def shift(tx: float, ty: float = 0.0) -> np.ndarray:
    return np.array([[1.0, 0, tx], [0, 1.0, ty], [0, 0, 1.0]])


def smooth_scene(size: tuple[int, int] = (1000, 240), seed: int = 2) -> np.ndarray:
    """A smooth (H, W, 3) uint8 scene: low-contrast blobs on a gentle ramp, values 60..170."""
    rng = np.random.default_rng(seed)
    w, h = size
    blobs = cv2.resize(rng.uniform(-20, 20, (h // 40, w // 40, 3)).astype(np.float32), size,
                       interpolation=cv2.INTER_CUBIC)
    ramp = np.linspace(90, 130, w, dtype=np.float32)[None, :, None]
    return np.clip(ramp + blobs, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def step_pair():
    """Two views of smooth_scene overlapping on columns 400..600; the second 25 % brighter."""
    s = smooth_scene()
    a = s[:, :600].copy()
    b = np.clip(s[:, 400:].astype(np.float32) * GAIN, 0, 255).astype(np.uint8)
    Hs = [np.eye(3), shift(400)]
    canvas = canvas_bounds(Hs, [(600, 240), (600, 240)], Projection("plane"))
    return [a, b], Hs, canvas, s


def column_jump(img: np.ndarray, lo: int, hi: int) -> float:
    """Largest change of the mean gray level between neighbouring columns lo..hi (the seam's step)."""
    prof = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float64)[20:-20].mean(axis=0)
    return float(np.abs(np.diff(prof[lo:hi])).max())


def test_smoke(step_pair):
    imgs, Hs, canvas, _ = step_pair
    for method in BLEND_CHOICES:
        out = compose_panorama(imgs, Hs, canvas, ComposeConfig(blend=method, crop=False))
        assert out.image.shape == (240, 1000, 3) and out.image.dtype == np.uint8 and out.mask.all(), method
        assert out.crop == (0, 0, 1000, 240) and set(out.seconds) >= {"exposure", "seams", "blend", "crop"}


def test_shift(step_pair):
    """A 25 % exposure step: hard seams jump by ~25 gray levels; multi-band spreads it below 2 per column
    (the scene's own ramp is ~0.04 per column); with gain compensation the two halves agree as well."""
    imgs, Hs, canvas, scene = step_pair
    natural = column_jump(scene, 380, 620)
    hard = compose_panorama(imgs, Hs, canvas, ComposeConfig(exposure="none", seam="voronoi", blend="none", crop=False))
    multi = compose_panorama(imgs, Hs, canvas, ComposeConfig(exposure="none", seam="voronoi", blend="multiband",
                                                             crop=False))
    assert multi.bands >= 3
    j_hard, j_multi = column_jump(hard.image, 380, 620), column_jump(multi.image, 380, 620)
    assert j_hard > 20 and j_multi < 2.0 and natural < 1.0, (j_hard, j_multi, natural)
    comp = compose_panorama(imgs, Hs, canvas, ComposeConfig(exposure="gain", seam="graphcut", crop=False))
    g = [x[0] for x in comp.gains]
    assert abs(g[0] / g[1] - GAIN) < 0.02, g
    assert column_jump(comp.image, 380, 620) < 1.0
    # the result is the scene times one gain: compare the two halves' ratio to the scene
    ratio = comp.image.astype(np.float64).mean(axis=(0, 2)) / scene.astype(np.float64).mean(axis=(0, 2))
    assert ratio[:300].std() < 0.01 and abs(ratio[:300].mean() - ratio[700:].mean()) < 0.02


def test_strips_equal_whole_canvas(step_pair):
    """The strip-wise multi-band equals the one-strip result (the margins make strips invisible)."""
    imgs, Hs, canvas, _ = step_pair
    whole = compose_panorama(imgs, Hs, canvas, ComposeConfig(crop=False, strip_pixels=10_000_000))
    strips = compose_panorama(imgs, Hs, canvas, ComposeConfig(crop=False, strip_pixels=20_000))
    diff = np.abs(whole.image.astype(int) - strips.image.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01
    # on 2 threads (the images of a strip, the output's strips in parallel): the same pixels as on one
    two = compose_panorama(imgs, Hs, canvas, ComposeConfig(crop=False, strip_pixels=20_000), workers=2)
    assert -(-canvas.size[1] // (20_000 // canvas.size[0])) >= 8  # several strips
    assert np.array_equal(two.image, strips.image)


def test_single_image_is_unchanged(step_pair):
    imgs, _, _, _ = step_pair
    canvas = canvas_bounds([np.eye(3)], [(600, 240)], Projection("plane"))
    out = compose_panorama(imgs[:1], [np.eye(3)], canvas)
    np.testing.assert_array_equal(out.image, imgs[0])


def test_bands_follow_overlap():
    assert bands_for_overlap(1200, (10000, 3000)) == 8
    assert bands_for_overlap(64, (10000, 3000)) == 4
    assert bands_for_overlap(0, (100, 100)) == 1
    assert bands_for_overlap(4096, (200, 40)) <= 3  # limited by the canvas


def test_largest_rectangle_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.random((9, 11)) > 0.25
        best = 0
        for y0 in range(9):
            for y1 in range(y0 + 1, 10):
                for x0 in range(11):
                    for x1 in range(x0 + 1, 12):
                        if m[y0:y1, x0:x1].all():
                            best = max(best, (y1 - y0) * (x1 - x0))
        x0, y0, x1, y1 = largest_rectangle(m)
        assert (x1 - x0) * (y1 - y0) == best and m[y0:y1, x0:x1].all()


def test_crop_inside_valid_mask():
    """A rotated, perspective-ish quadrilateral at 2400 x 1500 (searched at 1024 px): the crop box lies
    wholly inside the valid region and keeps most of the largest inscribed rectangle's area."""
    mask = np.zeros((1500, 2400), np.uint8)
    quad = np.array([[150, 200], [2250, 60], [2300, 1400], [90, 1300]], np.int32)
    cv2.fillPoly(mask, [quad], 1)
    x0, y0, x1, y1 = crop_box(mask > 0)
    assert mask[y0:y1, x0:x1].all()
    assert (x1 - x0) * (y1 - y0) > 0.8 * mask.sum()
    assert crop_box(np.ones((10, 20), bool)) == (0, 0, 20, 10)
    assert crop_box(np.zeros((10, 20), bool)) == (0, 0, 0, 0)


class Recorder(PipelineHooks):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def matches(self, a, b, img_a, img_b, pts_a, pts_b) -> None:
        self.calls.append("matches")

    def warped(self, names, views) -> None:
        self.calls.append("warped")

    def compensated(self, names, views, gains) -> None:
        self.calls.append("compensated")

    def seams(self, names, views, masks) -> None:
        self.calls.append("seams")

    def result(self, image, seam_lines) -> None:
        lines = seam_lines()
        assert lines.shape == image.shape[:2] and lines.any()
        self.calls.append("result")


def test_api_options_and_hooks(samples_dir):
    """Every compositing option reaches the pipeline through stitch_images; hooks see each stage once."""
    view = cv2.imread(str(samples_dir / "pano3" / "view_2.jpg"))
    crops = [view[0:400, 0:360].copy(), view[30:430, 140:500].copy()]
    rec = Recorder()
    p = stitch_images(crops, exposure="blocks", seam="dp", blend="feather", crop=False, seam_megapix=0.05,
                      hooks=rec)
    assert p.crop == (0, 0, p.canvas.size[0], p.canvas.size[1]) and p.size == p.canvas.size
    assert rec.calls == ["matches", "warped", "compensated", "seams", "result"]
    q = stitch_images(crops, exposure="none", seam="voronoi", blend="multiband", bands=2, projection="plane",
                      crop="rect")
    assert q.bands == 2 and q.mask.all() and q.size[1] == 370  # cropped to rows 30..400, which both views cover
    summary = q.summary()
    assert summary["crop"] == list(q.crop) and summary["bands"] == 2 and len(summary["gains"]) == 2
    with pytest.raises(ConfigError, match="blend='bogus'"):
        stitch_images(crops, blend="bogus")
    with pytest.raises(ConfigError, match="seam='x'"):
        stitch_images(crops, seam="x")
    with pytest.raises(ConfigError, match="exposure='x'"):
        stitch_images(crops, exposure="x")
    with pytest.raises(ConfigError, match="bands=99"):
        stitch_images(crops, bands=99)


@pytest.mark.parametrize("grow", [0, 1, 3, 10, 36])
def test_dilate_by_rows_equals_cv2_dilate(grow):
    """The run-by-run dilation gives cv2.dilate's pixels for every ellipse and mask density, and falls back to it
    for a kernel whose rows are not centred runs."""
    rng = np.random.default_rng(grow)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    for density in (0.001, 0.02, 0.4):
        img = np.pad((rng.random((rng.integers(1, 300), rng.integers(1, 300))) < density).astype(np.uint8), grow)
        assert np.array_equal(dilate_by_rows(img, kernel), cv2.dilate(img, kernel))
    odd = np.ones((3, 5), np.uint8)
    odd[1, 0] = 0
    img = (rng.random((40, 50)) < 0.05).astype(np.uint8)
    assert np.array_equal(dilate_by_rows(img, odd), cv2.dilate(img, odd))
