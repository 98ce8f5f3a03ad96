"""stitch.panorama.resolution: the output scale follows the median photo's resolution, not the reference's."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from stitch.errors import ConfigError
from stitch.panorama.camera import pinhole
from stitch.panorama.pipeline import stitch_images
from stitch.panorama.resolution import (
    choose_output_scale,
    magnification,
    native_scale,
    native_scales,
    resolution_notes,
    typical_scale,
)

#: Three 300 x 400 crops of pano3/view_2 at x = 0, 170, 340 (y = 0, 20, 40): together 640 x 440 px; the outer two
#: do not overlap, so the middle one is the reference (the graph centre).
CROPS = [(0, 0), (170, 20), (340, 40)]
PLANE = {"projection": "plane", "crop": "none", "seam": "voronoi"}
#: The warning on a photo 3 times larger than the median one.
AT_A_THIRD = "is drawn at 33 % of its resolution: the panorama takes the resolution of the median photo"


@pytest.fixture(scope="module")
def crops(samples_dir: Path) -> list[np.ndarray]:
    img = cv2.imread(str(samples_dir / "pano3" / "view_2.jpg"))
    return [img[y:y + 400, x:x + 300].copy() for x, y in CROPS]


def shrink(img: np.ndarray, f: float) -> np.ndarray:
    return cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)


def stitched(images, **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pano = stitch_images(images, **options)
    return pano, [str(w.message) for w in caught]


def test_magnification_known_answers():
    S = np.diag([3.0, 3.0, 1.0])
    np.testing.assert_allclose(magnification(S, np.array([[0.0, 0.0], [50.0, 7.0]])), [3.0, 3.0])
    P = np.array([[1.0, 0, 0], [0, 1.0, 0], [0.001, 0, 1.0]])  # det 1, w = 1 + 0.001 x
    np.testing.assert_allclose(magnification(P, np.array([[0.0, 0.0], [1000.0, 0.0]])), [1.0, 2 ** -1.5])
    assert native_scale(np.diag([0.25, 0.25, 1.0]) * 7.0, (400, 300), (200.0, 150.0)) == pytest.approx(4.0)


@pytest.mark.parametrize("yaw", [0.0, 0.3, 0.7])
def test_native_scale_of_a_turned_camera_is_the_focal_ratio(yaw):
    """H = K_ref R K_k^-1: the perspective stretch cancels, f_k / f_ref remains (the module docstring's rule 1)."""
    size, f_k, f_ref = (1200, 900), 2000.0, 500.0
    K_k, K_ref = pinhole(f_k, (599.5, 449.5)), pinhole(f_ref, (199.5, 149.5))
    R = cv2.Rodrigues(np.array([0.1, yaw, 0.0]))[0]
    H = K_ref @ R @ np.linalg.inv(K_k)
    assert native_scale(H, size, (199.5, 149.5)) == pytest.approx(f_k / f_ref, rel=1e-9)
    assert native_scales([H, np.eye(3), np.diag([1.1, 1.1, 1.0])], [size, (400, 300), (400, 300)],
                         (199.5, 149.5)) == [pytest.approx(4.0), 1.0, 1.0]  # within 15 % of 1: exactly 1


def test_typical_scale_and_the_cap():
    assert typical_scale([1.0, 5.0]) == 5.0 and typical_scale([1.0, 1.0, 30.0]) == 1.0
    assert typical_scale([0.2, 1.0, 3.0, 4.0]) == 3.0 and typical_scale([]) == 1.0
    plan = choose_output_scale(1_000_000, [5.0, 5.0, 1.0])
    assert plan.scale == 5.0 and plan.shrink == (1.0, 1.0, 1.0) and not plan.capped
    capped = choose_output_scale(1_000_000, [5.0, 5.0, 1.0], max_pixels=4_000_000)
    assert capped.scale == pytest.approx(2.0) and capped.native == 5.0 and capped.capped
    assert capped.shrink == pytest.approx((0.4, 0.4, 1.0))
    half = choose_output_scale(1_000_000, [1.0, 1.0, 1 / 30], scale=0.5)
    assert half.scale == 0.5 and half.shrink == pytest.approx((0.5, 0.5, 1.0))  # 1/30: a small photo, never upscaled
    assert choose_output_scale(4_000_000, [2.0, 2.0], megapixels=1.0).scale == pytest.approx(0.5)
    big = [30.0, 1.0, 1.0]  # a 12000 x 9000 photo and two 400 x 300 ones of the same view, the reference small
    notes = resolution_notes(choose_output_scale(100, big), big, ["big.jpg", "a", "b"],
                             [(12000, 9000), (400, 300), (400, 300)], 100, None)
    assert len(notes) == 1 and notes[0].startswith("big.jpg (12000 x 9000 px) is drawn at 3 % of its resolution")
    with pytest.raises(ConfigError, match="scale=1.5"):
        choose_output_scale(100, [1.0], scale=1.5)


def test_output_follows_the_median_photo_not_a_small_reference(crops):
    """The middle crop (the reference) at a third of the size: the panorama keeps the other two's resolution."""
    same, _ = stitched(crops, **PLANE)
    assert same.scale == 1.0 and abs(same.size[0] - 640) <= 2 and abs(same.size[1] - 440) <= 2
    small_ref = [crops[0], shrink(crops[1], 1 / 3), crops[2]]
    pano, notes = stitched(small_ref, **PLANE)
    assert pano.reference == "image1" and pano.scale == pytest.approx(3.0, rel=0.02)
    assert abs(pano.size[0] - 640) <= 6 and abs(pano.size[1] - 440) <= 6 and not notes


def test_a_large_photo_among_small_ones_is_named(crops):
    """One photo 3 times larger than the other two: the panorama takes the small ones' resolution and says so."""
    mixed = [shrink(crops[0], 1 / 3), crops[1], shrink(crops[2], 1 / 3)]
    pano, notes = stitched(mixed, **PLANE)
    assert pano.scale == pytest.approx(1 / 3, rel=0.02)
    assert abs(pano.size[0] - 640 / 3) <= 4 and abs(pano.size[1] - 440 / 3) <= 4
    assert notes == [f"image1 (300 x 400 px) {AT_A_THIRD}"] == pano.warnings


def test_the_canvas_cap_lowers_an_upscaled_canvas(crops):
    """At the median photo's resolution the canvas would pass the cap: it is drawn at the cap instead."""
    small_ref = [crops[0], shrink(crops[1], 1 / 3), crops[2]]
    pano, notes = stitched(small_ref, max_canvas_pixels=100_000, **PLANE)
    assert pano.canvas.pixels <= 100_000 * 1.03 and 1.0 < pano.scale < 3.0
    assert len(notes) == 1 and notes[0].startswith("the panorama at the median photo's resolution would be 0.")
    assert notes[0].endswith(f" MP, over the canvas cap of 0.1 MP (--max-canvas-mp): drawn at "
                             f"{100 * pano.scale / 3:.0f} % of that resolution")


def test_no_decompression_bomb_warning_from_files(crops, tmp_path, monkeypatch):
    """Pillow reads only metadata: its decompression-bomb warning (a huge photo) never reaches the user."""
    from PIL import Image

    paths = []
    for k, img in enumerate([shrink(crops[0], 1 / 3), crops[1], shrink(crops[2], 1 / 3)]):
        paths.append(tmp_path / f"p{k}.jpg")
        cv2.imwrite(str(paths[-1]), img, [cv2.IMWRITE_JPEG_QUALITY, 98])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 400 - 1)  # p1.jpg is 'too large' for Pillow
    _, notes = stitched(paths, **PLANE)
    assert notes == [f"p1.jpg (300 x 400 px) {AT_A_THIRD}"]
