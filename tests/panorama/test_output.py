"""What a panorama file holds: 16-bit depth from 16-bit inputs, alpha as no data, the reference photo's EXIF and
ICC profile, the JPEG quality (stitch.panorama.output, Panorama.save)."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from stitch.errors import ConfigError
from stitch.exif import read_meta
from stitch.io import is_stitch_output
from stitch.panorama.debug import PipelineHooks
from stitch.panorama.inputs import feature_mask
from stitch.panorama.pipeline import compose, stitch_images

#: Three 300 x 400 crops of pano3/view_2 at x = 0, 170, 340 (y = 0, 20, 40); the middle one is the reference.
CROPS = [(0, 0), (170, 20), (340, 40)]
PLANE = {"preset": "fast", "projection": "plane", "crop": "none", "seam": "voronoi"}


@pytest.fixture(scope="module")
def crops(samples_dir: Path) -> list[np.ndarray]:
    img = cv2.imread(str(samples_dir / "pano3" / "view_2.jpg"))
    return [img[y:y + 400, x:x + 300].copy() for x, y in CROPS]


def stitched(images, **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pano = stitch_images(images, **options)
    return pano, [str(w.message) for w in caught]


def red(img: np.ndarray) -> np.ndarray:
    """(H, W) bool: strongly red pixels of a BGR uint8 image (pano3/view_2 has none)."""
    b, g, r = (img[..., c].astype(int) for c in range(3))
    return (r > 150) & (g < 80) & (b < 80)


def save_rgb(path: Path, bgr: np.ndarray, **save: object) -> Path:
    Image.fromarray(bgr[..., ::-1].copy()).save(path, **save)
    return path


# --- 16 bits --------------------------------------------------------------------------------------------


def test_16_bit_inputs_give_a_16_bit_panorama(crops, tmp_path):
    """16-bit PNGs (the 8-bit crops as the high byte, detail in the low byte) give a uint16 panorama; on the 8-bit
    panorama's cameras (stitch.compose), its pixels are the 8-bit ones times 256 plus the low bytes' mean."""
    rng = np.random.default_rng(0)
    deep = [img.astype(np.uint16) * 256 + rng.integers(0, 256, img.shape, dtype=np.uint16) for img in crops]
    paths = [tmp_path / f"d{k}.png" for k in range(3)]
    for p, img in zip(paths, deep):
        assert cv2.imwrite(str(p), img)
    pano, notes = stitched(paths, **PLANE)
    assert pano.image.dtype == np.uint16 and not notes and int(pano.image[pano.mask].max()) > 250 * 256
    assert np.mean(pano.image[pano.mask] % 256 != 0) > 0.9  # the low byte is kept
    shallow, _ = stitched(crops, **PLANE)
    again = compose(deep, shallow.cameras, **{k: v for k, v in PLANE.items() if k != "preset"})
    assert again.image.dtype == np.uint16 and again.size == shallow.size and np.array_equal(again.mask, shallow.mask)
    both = shallow.mask
    assert np.median(np.abs((again.image[both] - 127.5) / 256.0 - shallow.image[both])) < 0.6
    out = pano.save(tmp_path / "pano.png")
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back, pano.image) and is_stitch_output(out)
    with pytest.warns(UserWarning, match=r"pano\.jpg: a \.jpg file holds 8 bits per channel, so the 16-bit "
                                         r"panorama is written with 8 \(write \.png or \.tif to keep 16\)"):
        jpg = pano.save(tmp_path / "pano.jpg")
    eight = cv2.imread(str(jpg), cv2.IMREAD_UNCHANGED)
    assert eight.dtype == np.uint8 and np.abs(eight[pano.mask] - pano.image[pano.mask] / 257.0).mean() < 2.5


# --- alpha ------------------------------------------------------------------------------------------------


class Matches(PipelineHooks):
    """The inlier points (working px) each accepted pair found in image ``name``."""

    def __init__(self, name: str) -> None:
        self.name, self.points = name, []

    def matches(self, a, b, img_a, img_b, pts_a, pts_b) -> None:
        if self.name in (a, b):
            self.points.append(np.asarray(pts_a if a == self.name else pts_b))


def test_transparent_pixels_are_no_data(crops, tmp_path):
    """A red strip in the middle photo, transparent: no red in the panorama, no feature there, and where no other
    photo reaches it the panorama is empty (mask False), as the photo's outside would be."""
    rgba = np.dstack([crops[1], np.full(crops[1].shape[:2], 255, np.uint8)])
    rgba[:, 100:160, :3] = (0, 0, 255)  # columns 100-160: 270-330 of view_2; the left crop reaches 300
    rgba[:, 100:160, 3] = 0
    paths = [tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"]
    for p, img in zip(paths, [crops[0], rgba, crops[2]]):
        cv2.imwrite(str(p), img)
    hook = Matches("b.png")
    pano, _ = stitched(paths, hooks=hook, **PLANE)
    assert not red(pano.image).any()
    pts = np.vstack(hook.points)
    assert len(pts) > 20 and not ((pts[:, 0] > 97) & (pts[:, 0] < 163)).any()  # (working res = full res here)
    x = np.round(pano.to_panorama("b.png", np.array([[140.0, 200.0], [115.0, 200.0]]))).astype(int)
    assert not pano.mask[x[0, 1], x[0, 0]] and pano.mask[x[1, 1], x[1, 0]]  # 310: no photo; 285: the left one
    opaque, _ = stitched([crops[0], rgba[..., :3], crops[2]], **PLANE)
    assert red(opaque.image).sum() > 1000  # without the alpha, the red strip shows


def test_feature_mask_combines_the_user_mask_and_the_alpha():
    user, alpha = np.ones((2, 3), bool), np.ones((2, 3), bool)
    user[0, 0], alpha[1, 2] = False, False
    assert feature_mask(user, alpha).tolist() == [[False, True, True], [True, True, False]]
    assert feature_mask(None, alpha) is alpha and feature_mask(user, None) is user and feature_mask(None, None) is None


# --- metadata and the JPEG quality -----------------------------------------------------------------------


def test_reference_metadata_and_icc_are_carried(crops, tmp_path):
    """make/model/date and the ICC profile of the reference (the middle photo) in the JPEG and PNG panoramas."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    paths = []
    for k, img in enumerate(crops):
        exif = Image.Exif()
        exif[0x010F], exif[0x0110] = "Canon", f"EOS {k}"
        exif.get_ifd(0x8769)[0x9003] = f"2024:05:01 10:00:0{k}"
        exif[0x0112] = 1
        paths.append(save_rgb(tmp_path / f"p{k}.jpg", img, exif=exif, icc_profile=icc if k == 1 else None,
                              quality=97))
    pano, _ = stitched(paths, **PLANE)
    assert pano.reference == "p1.jpg" and pano.metadata.model == "EOS 1"
    for ext in ("jpg", "png"):
        out = pano.save(tmp_path / f"pano.{ext}")
        meta = read_meta(out)
        assert (meta.make, meta.model, meta.datetime_original) == ("Canon", "EOS 1", "2024:05:01 10:00:01")
        assert meta.icc_profile == icc and meta.orientation == 1 and is_stitch_output(out)
    arrays, _ = stitched(crops, **PLANE)
    assert arrays.metadata is None and read_meta(arrays.save(tmp_path / "plain.jpg")).make is None


def test_jpeg_quality(crops, tmp_path):
    pano, _ = stitched(crops, jpeg_quality=40, **PLANE)
    low = pano.save(tmp_path / "q40.jpg")
    pano.jpeg_quality = 95
    high = pano.save(tmp_path / "q95.jpg")
    assert low.stat().st_size < 0.6 * high.stat().st_size
    err = np.abs(cv2.imread(str(low)).astype(int) - pano.image.astype(int))[pano.mask].mean()
    assert 1.0 < err < 6.0
    for bad in (0, 101, 9.5, True):
        with pytest.raises(ConfigError, match=f"jpeg_quality={bad!r}: must be an integer in 1..100"):
            stitch_images(crops, jpeg_quality=bad)
