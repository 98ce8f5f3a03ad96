"""stitch_images options: feature masks, range_width, timelapse frames, output scale, small images, the canvas cap."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from stitch.errors import CanvasTooLargeError, ConfigError, ImageReadError, StitchError
from stitch.geometry import image_corners, project
from stitch.homography.features import FeatureConfig, detect
from stitch.panorama.debug import PipelineHooks
from stitch.panorama.inputs import MIN_IMAGE_SIDE, sequence_pairs
from stitch.panorama.pipeline import stitch_images
from stitch.panorama.timelapse import timelapse_frame

#: Crop k of pano3/view_2 starts at (x, y) = SHIFTS[k]; each is 360 x 400 px.
SHIFTS = [(0, 0), (140, 30), (280, 60)]


@pytest.fixture(scope="module")
def crops(samples_dir: Path) -> list[np.ndarray]:
    img = cv2.imread(str(samples_dir / "pano3" / "view_2.jpg"))
    return [img[y:y + 400, x:x + 360].copy() for x, y in SHIFTS]


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


class Matches(PipelineHooks):
    """Records the inlier points of every accepted pair (working-resolution px)."""

    def __init__(self) -> None:
        self.points: list[np.ndarray] = []

    def matches(self, a, b, img_a, img_b, pts_a, pts_b) -> None:
        self.points += [np.asarray(pts_a), np.asarray(pts_b)]


# --- feature masks -------------------------------------------------------------------------------------


def in_box(pts: np.ndarray, box: tuple[int, int, int, int] = (100, 200, 500, 600)) -> int:
    """How many points (N, 2) round to a pixel of box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    return int(((pts[:, 0] > x0 - 0.5) & (pts[:, 0] < x1 - 0.5) & (pts[:, 1] > y0 - 0.5) & (pts[:, 1] < y1 - 0.5)).sum())


def test_detect_keeps_no_keypoint_in_the_masked_area(crops):
    img = cv2.resize(crops[0], (720, 800))
    mask = np.ones(img.shape[:2], bool)
    mask[200:600, 100:500] = False
    for cfg in (FeatureConfig(), FeatureConfig(detector="orb"), FeatureConfig(work_max_side=300)):
        full = detect(img, cfg)
        masked = detect(img, cfg, mask=mask)
        xi, yi = np.rint(masked.pts[:, 0]).astype(int), np.rint(masked.pts[:, 1]).astype(int)
        assert in_box(full.pts) > 100 and mask[yi, xi].all() and in_box(masked.pts) == 0, cfg.label()
        assert len(masked) > 0.3 * len(full)
    with pytest.raises(ConfigError, match="mask: shape"):
        detect(img, FeatureConfig(), mask=mask[:10])


def test_masks_exclude_a_misleading_overlay(crops, tmp_path):
    """The same textured sticker at the same place in two views pulls the registration to the identity;
    masking it out gives the true shift back (140, 30 px), and no match lies on the sticker."""
    a, b = crops[0].copy(), crops[1].copy()
    patch = cv2.resize(np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8), (120, 120),
                       interpolation=cv2.INTER_NEAREST)
    a[100:220, 60:180] = patch
    b[100:220, 60:180] = patch
    mask = np.full(a.shape[:2], 255, np.uint8)
    mask[100:220, 60:180] = 0
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    opts = {"preset": "fast", "projection": "plane", "crop": "none"}
    misled = quiet(stitch_images, [a, b], **opts)
    H = np.linalg.inv(misled.homographies[1]) @ misled.homographies[0]
    assert np.abs(H[:2, 2]).max() < 2  # the sticker wins without masks
    hooks = Matches()
    p = quiet(stitch_images, [a, b], masks=[mask, tmp_path / "m.png"], hooks=hooks, **opts)  # array and path
    H = np.linalg.inv(p.homographies[1]) @ p.homographies[0]
    assert np.allclose(H[:2, 2], (-140, -30), atol=1.5) and np.allclose(H[:2, :2], np.eye(2), atol=0.01)
    pts = np.vstack(hooks.points)
    assert len(pts) > 50 and in_box(pts, (60, 100, 180, 220)) == 0
    # masks follow their images when an input is dropped (unreadable) or a duplicate
    p2 = quiet(stitch_images, [tmp_path / "missing.png", a, a.copy(), b], masks=[None, mask, None, mask], **opts)
    H2 = np.linalg.inv(p2.homographies[1]) @ p2.homographies[0]
    assert np.allclose(H2[:2, 2], (-140, -30), atol=1.5)


def test_masks_exception(crops, tmp_path):
    a, b = crops[0], crops[1]
    with pytest.raises(ConfigError, match="got 1 masks for 2 inputs"):
        stitch_images([a, b], masks=[None])
    with pytest.raises(ConfigError, match=r"mask of image1: 10 x 10 px, but the image is 360 x 400 px"):
        stitch_images([a, b], masks=[None, np.ones((10, 10), bool)])
    with pytest.raises(ConfigError, match="mask of image0: masks out the whole image"):
        stitch_images([a, b], masks=[np.zeros(a.shape[:2], np.uint8), None])
    with pytest.raises(ConfigError, match="masks\\[0\\]: expected a bool or uint8 array"):
        stitch_images([a, b], masks=[np.ones(a.shape[:2], np.float32), None])
    with pytest.raises(ImageReadError, match="nope.png: mask file not found"):
        stitch_images([a, b], masks=[tmp_path / "nope.png", None])


# --- ordered sequences ---------------------------------------------------------------------------------


def test_range_width_restricts_the_pairs_matched(crops):
    assert sequence_pairs(4, 1) == [(0, 1), (1, 2), (2, 3)]
    assert sequence_pairs(4, 2) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]
    assert sequence_pairs(3, 0) == [(0, 1), (0, 2), (1, 2)]
    labels: list[str] = []
    p = quiet(stitch_images, crops, preset="fast", range_width=1, crop="none", seam="voronoi",
              progress=lambda done, total, label: labels.append(label))
    assert {lb.removeprefix("matched ") for lb in labels if lb.startswith("matched ")} == {
        "image0 - image1", "image1 - image2"}  # image0 - image2 overlap (80 px) but are 2 apart
    assert len(p.names) == 3 and {(a, b) for a, b, _, _ in p.edges} <= {("image0", "image1"), ("image1", "image2")}
    with pytest.raises(ConfigError, match="range_width=-1"):
        stitch_images(crops, range_width=-1)


# --- timelapse and output resolution ---------------------------------------------------------------------


def test_timelapse_frames_cover_the_panorama(crops, tmp_path):
    out = tmp_path / "frames"
    p = quiet(stitch_images, crops, preset="fast", projection="plane", crop="fill", timelapse=str(out))
    assert [Path(f).name for f in p.timelapse] == ["0000_image0.png", "0001_image1.png", "0002_image2.png"]
    assert sorted(f.name for f in out.iterdir()) == [Path(f).name for f in p.timelapse]  # no stray files
    union = np.zeros(p.mask.shape, bool)
    for k, f in enumerate(p.timelapse):
        frame = cv2.imread(f)
        assert frame.shape == p.image.shape
        expect, covered = timelapse_frame(crops[k], p.homographies[k], p.canvas, k, p.crop,
                                          p.gains[k])
        assert np.array_equal(frame, expect)
        union |= covered
    # the frames cover every real pixel; the 'fill' crop's empty pixels (covered by no frame) and the rim it
    # inpainted around them are False in the mask
    empty = int((~union).sum())
    assert (union | ~p.mask).all() and 0 < empty < p.filled and empty <= 0.02 * union.size
    plain = quiet(stitch_images, crops, preset="fast", projection="plane")  # the default crop, 'rect': all real
    assert plain.filled == 0 and plain.mask.all()
    with pytest.raises(ConfigError, match="0000_image0.png: the timelapse folder exists and is not a folder"):
        stitch_images(crops, timelapse=str(p.timelapse[0]))


def test_output_scale_and_megapixels(crops):
    opts = {"preset": "fast", "projection": "plane", "crop": "none", "seam": "voronoi"}
    full = quiet(stitch_images, crops[:2], **opts)
    half = quiet(stitch_images, crops[:2], scale=0.5, **opts)
    assert abs(full.size[0] - 500) <= 1 and full.size[1] == 430 and full.scale == 1.0  # crops span 500 x 430 px
    assert abs(half.size[0] - full.size[0] / 2) <= 1 and abs(half.size[1] - full.size[1] / 2) <= 1
    assert half.scale == 0.5
    # the half-size panorama is the full one scaled by 0.5 in projected coordinates (canvas px c -> 0.5 (c + offset))
    M = np.array([[0.5, 0, 0.5 * full.offset[0] - half.offset[0]], [0, 0.5, 0.5 * full.offset[1] - half.offset[1]]])
    down = cv2.warpAffine(cv2.GaussianBlur(full.image, (0, 0), 1.0), M, half.size, flags=cv2.INTER_LINEAR)
    both = half.mask & (cv2.warpAffine(full.mask.astype(np.uint8), M, half.size, flags=cv2.INTER_NEAREST) > 0)
    assert both.mean() > 0.9 and np.abs(down.astype(int) - half.image.astype(int))[both].mean() < 3
    c_full = project(full.canvas_homography(1), image_corners(360, 400))
    c_half = project(half.canvas_homography(1), image_corners(360, 400))
    assert np.allclose(c_half, 0.5 * (c_full + full.offset) - half.offset, atol=1e-6)
    assert np.allclose(c_full + full.offset, image_corners(360, 400) + (140, 30), atol=1.5)
    small = quiet(stitch_images, crops[:2], megapixels=0.05, **opts)
    assert small.canvas.pixels <= 0.05e6 * 1.02 and abs(small.scale - (0.05e6 / full.canvas.pixels) ** 0.5) < 1e-9
    assert small.summary()["scale"] == round(small.scale, 6)
    with pytest.raises(ConfigError, match="give one or the other"):
        stitch_images(crops[:2], scale=0.5, megapixels=1)
    with pytest.raises(ConfigError, match="scale=2"):
        stitch_images(crops[:2], scale=2)


# --- inputs: small images, the canvas cap --------------------------------------------------------------------


def test_small_images_are_refused(crops, tmp_path):
    tiny = np.full((16, 16, 3), 128, np.uint8)
    with pytest.raises(ImageReadError, match=f"image0: too small \\(16 x 16 px; each side must be at least "
                                             f"{MIN_IMAGE_SIDE} px\\)"):
        stitch_images([tiny, tiny.copy()])
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), tiny)
    with pytest.raises(StitchError, match="need at least 2 images, got 0 \\(2 too small, each side must be at least "
                                          "32 px: a.png, b.png\\)"):
        quiet(stitch_images, [tmp_path / "a.png", tmp_path / "b.png"])
    cv2.imwrite(str(tmp_path / "dot.png"), tiny[:1, :1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = stitch_images([crops[0], tmp_path / "dot.png", crops[1]], preset="fast", seam="voronoi")
    assert p.dropped == [("dot.png", "too small (1 x 1 px; each side must be at least 32 px)")]
    assert any("dot.png: too small" in str(w.message) for w in caught)


def test_canvas_cap_in_sensible_units(crops):
    with pytest.raises(CanvasTooLargeError, match=r"the canvas would be \d{3} x \d{3} px \(\d{3},\d{3} px > cap 1,000 px\)") as exc:
        quiet(stitch_images, crops[:2], preset="fast", projection="plane", max_canvas_pixels=1000)
    assert "0 MP" not in str(exc.value)
