"""stitch.io: reading odd image files, folders, atomic writes, matrices; and the sample data's ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from stitch.errors import ImageReadError, StitchError
from stitch.geometry import normalize_h
from stitch.io import (
    fill_no_data,
    is_stitch_output,
    list_images,
    load_image,
    load_images,
    load_pixels,
    read_image,
    read_matrix,
    read_pixels,
    write_image_atomic,
)

SAMPLE_PAIRS = ("rotation_scale", "perspective", "illumination", "translation")


def write(path: Path, img: np.ndarray) -> Path:
    """Write img with OpenCV (fails the test if encoding fails); returns path."""
    assert cv2.imwrite(str(path), img), f"could not write {path}"
    return path


def overlap_agreement(src: np.ndarray, dst: np.ndarray, H: np.ndarray) -> tuple[float, float]:
    """Warp src (H, W, 3) by H into dst's frame; mean abs diff and correlation over the overlap, 2 px in."""
    h, w = dst.shape[:2]
    warped = cv2.warpPerspective(src, H, (w, h))
    mask = cv2.warpPerspective(np.full(src.shape[:2], 255, np.uint8), H, (w, h), flags=cv2.INTER_NEAREST)
    inside = cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0
    assert inside.mean() > 0.3, "the ground truth leaves too little overlap to check"
    a, b = warped[inside].astype(np.float64), dst[inside].astype(np.float64)
    return float(np.abs(a - b).mean()), float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


# --- reading files -------------------------------------------------------------------------------


def test_read_grayscale(tmp_path):
    gray = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    img = read_image(write(tmp_path / "g.png", gray))
    assert img.shape == (12, 16, 3) and img.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], gray)


def test_read_rgba_drops_alpha(tmp_path):
    bgra = np.zeros((8, 10, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2] = 10, 20, 30
    bgra[..., 3] = np.arange(10, dtype=np.uint8) * 25
    img = read_image(write(tmp_path / "a.png", bgra))
    assert img.shape == (8, 10, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, bgra[..., :3])


@pytest.mark.parametrize("channels", [1, 3])
def test_read_16bit_png(tmp_path, channels):
    values = np.array([0, 255, 10 * 256 + 7, 65535], dtype=np.uint16)  # -> 0, 0, 10, 255 (high byte)
    img16 = np.tile(values, (5, 1))
    if channels == 3:
        img16 = np.dstack([img16] * 3)
    img = read_image(write(tmp_path / "d.png", img16))
    assert img.shape == (5, 4, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[0, :, 0], [0, 0, 10, 255])


def test_read_zero_byte_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.png"):
        read_image(p)


def test_read_text_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a JPEG\n")
    with pytest.raises(ImageReadError, match="notes.jpg"):
        read_image(p)


def test_read_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageReadError, match="nope.png"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)


@pytest.mark.parametrize(
    "arr, expected",
    [
        (np.full((2, 3), 0.5, np.float32), 127),
        (np.full((2, 3), 200.0), 200),
        (np.ones((2, 3), bool), 255),
        (np.full((2, 3, 1), 9, np.int32), 9),
    ],
)
def test_load_image_converts_arrays(arr, expected):
    img = load_image(arr)
    assert img.shape == (2, 3, 3) and img.dtype == np.uint8
    assert np.all(img == expected)


def test_load_image_rejects_bad_input():
    with pytest.raises(ImageReadError, match="shape"):
        load_image(np.zeros((0, 4), np.uint8))
    with pytest.raises(ImageReadError, match="channel"):
        load_image(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ImageReadError, match="path or a numpy array"):
        load_image(42)


# --- folders -------------------------------------------------------------------------------------


def test_list_images_sorts_and_filters(tmp_path):
    px = np.zeros((4, 4, 3), np.uint8)
    for name in ("img_02.png", "img_10.JPG", "img_01.jpeg", "img_03.tif"):
        write(tmp_path / name, px)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "ground_truth.json").write_text("{}")
    (tmp_path / "sub.png").mkdir()  # a folder with an image-like name is not an image
    write(tmp_path / "sub.png" / "inner.png", px)  # and listing is not recursive
    assert [p.name for p in list_images(tmp_path)] == ["img_01.jpeg", "img_02.png", "img_03.tif", "img_10.JPG"]


def test_list_images_errors(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        list_images(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(ImageReadError, match="not a folder"):
        list_images(tmp_path / "file.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(ImageReadError, match="no images"):
        list_images(empty)


def test_load_images_skips_unreadable_with_warning(tmp_path):
    good = [write(tmp_path / f"ok_{i}.png", np.full((6, 6, 3), 40 * i, np.uint8)) for i in range(2)]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    with pytest.warns(UserWarning, match="broken.jpg"):
        loaded = load_images([good[0], bad, good[1]])
    assert loaded.names == ["ok_0.png", "ok_1.png"]
    assert len(loaded.images) == 2 and int(loaded.images[1][0, 0, 0]) == 40
    assert len(loaded.skipped) == 1 and loaded.skipped[0].name == "broken.jpg" and not loaded.skipped[0].too_small
    with pytest.raises(ImageReadError, match="broken.jpg"):
        load_images([good[0], bad], skip_unreadable=False)


def test_load_images_keep_sees_each_readable_input_in_order(tmp_path):
    """keep(index in the inputs, name, Pixels) replaces each kept image, in input order; unreadable ones are skipped."""
    good = [write(tmp_path / f"ok_{i}.png", np.full((6, 6, 3), 40 * i, np.uint8)) for i in range(2)]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    seen = []
    with pytest.warns(UserWarning, match="broken.jpg"):
        loaded = load_images([good[0], bad, good[1]], keep=lambda i, name, px: seen.append(name) or (i, px.image.mean()))
    assert seen == ["ok_0.png", "ok_1.png"] and loaded.images == [(0, 0.0), (2, 40.0)] and loaded.indices == [0, 2]
    assert loaded.valid == [None, None]  # what keep made carries what it needs of each image


def test_load_images_on_threads_gives_the_sequential_result(tmp_path):
    """ordered_map (here threads.in_order on two threads, two reads ahead) changes neither the images, their order,
    the skipped inputs and their warnings, nor the first error when unreadable inputs must raise."""
    from stitch.panorama.threads import in_order, thread_pool

    paths = [write(tmp_path / f"ok_{i}.png", np.full((6 + i, 6, 3), 20 * i, np.uint8)) for i in range(6)]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    tiny = write(tmp_path / "tiny.png", np.zeros((2, 2, 3), np.uint8))
    inputs = [paths[0], bad, *paths[1:4], tiny, *paths[4:]]
    keep = lambda i, name, px: (i, name, px.image.shape[0], int(px.image[0, 0, 0]))
    with pytest.warns(UserWarning) as one:
        alone = load_images(inputs, min_side=4, keep=keep)
    with thread_pool(2, len(inputs)) as pool, pytest.warns(UserWarning) as two:
        threaded = load_images(inputs, min_side=4, keep=keep, ordered_map=lambda fn, n: in_order(fn, n, pool, 2))
    assert threaded.images == alone.images == [(k, f"ok_{j}.png", 6 + j, 20 * j)
                                               for k, j in zip([0, 2, 3, 4, 6, 7], range(6))]
    assert threaded.indices == alone.indices == [0, 2, 3, 4, 6, 7]
    assert [str(w.message) for w in two] == [str(w.message) for w in one] and len(one) == 2
    assert [(s.name, s.too_small) for s in threaded.skipped] == [("broken.jpg", False), ("tiny.png", True)]
    with thread_pool(2, 3) as pool, pytest.raises(ImageReadError, match="broken.jpg"):
        load_images([paths[0], bad, tiny], min_side=4, skip_unreadable=False,
                    ordered_map=lambda fn, n: in_order(fn, n, pool, 2))


# --- writing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_write_image_atomic(tmp_path, ext):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = tmp_path / "nested" / "dir" / f"result{ext}"
    assert write_image_atomic(out, img) == out
    write_image_atomic(out, img)  # overwriting an existing file is fine
    back = read_image(out)
    assert back.shape == img.shape
    if ext == ".png":
        np.testing.assert_array_equal(back, img)
    assert [p.name for p in out.parent.iterdir()] == [out.name], "temporary files left behind"


def test_write_image_atomic_bad_extension(tmp_path):
    with pytest.raises(StitchError, match="encode"):
        write_image_atomic(tmp_path / "out.notanimage", np.zeros((4, 4, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


# --- matrices ------------------------------------------------------------------------------------


def test_read_matrix_formats(tmp_path):
    p = tmp_path / "H.txt"
    p.write_text("# a homography\n1, 0, 5\n0 1 -2.5e1  # row two\n\n0 0 1\n")
    np.testing.assert_array_equal(read_matrix(p), [[1, 0, 5], [0, 1, -25], [0, 0, 1]])
    assert read_matrix(p).dtype == np.float64


@pytest.mark.parametrize("text, match", [("1 2 3\n4 5 6\n", "found 6"), ("1 2 3\n4 x 6\n7 8 9\n", "numeric"),
                                         ("", "found 0")])
def test_read_matrix_errors(tmp_path, text, match):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(StitchError, match=match):
        read_matrix(p)


def test_read_matrix_missing(tmp_path):
    with pytest.raises(StitchError, match="missing.txt"):
        read_matrix(tmp_path / "missing.txt")


# --- sample data ground truth --------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLE_PAIRS)
def test_sample_pair_ground_truth(sample_pair, name):
    src, dst, H = sample_pair(name)
    assert src.shape == dst.shape == (480, 640, 3)
    assert H.shape == (3, 3) and H[2, 2] == 1.0
    mad, corr = overlap_agreement(src, dst, H)
    shifted = np.array([[1, 0, 2], [0, 1, 1], [0, 0, 1]]) @ H  # 2 px off: must agree clearly worse
    mad_off, corr_off = overlap_agreement(src, dst, shifted)
    if name == "illumination":  # gamma, gain and noise: compare structure, not values
        assert corr > 0.97 and corr_off < corr - 0.04
        return
    if name == "translation":  # integer shift, lossless PNG: exact
        assert mad == 0.0
    assert mad < 4.0 and corr > 0.99
    assert mad_off > 2 * mad + 2


def test_pano3_ground_truth(samples_dir):
    folder = samples_dir / "pano3"
    gt = json.loads((folder / "ground_truth.json").read_text())
    views = {v["file"]: v for v in gt["views"]}
    assert sorted(views) == ["view_1.jpg", "view_2.jpg", "view_3.jpg"]
    for pair in gt["pairs"]:
        a, b = views[pair["src"]], views[pair["dst"]]
        H = np.array(pair["H"])
        H_chain = normalize_h(np.linalg.inv(b["H_view_to_scene"]) @ np.array(a["H_view_to_scene"]))
        np.testing.assert_allclose(H, H_chain, rtol=1e-6, atol=1e-8)
        assert 0.33 <= pair["overlap"] <= 0.47
        src, dst = read_image(folder / pair["src"]), read_image(folder / pair["dst"])
        relit = np.clip(src * (b["gain"] / a["gain"]), 0, 255).astype(np.uint8)
        mad, corr = overlap_agreement(relit, dst, H)
        assert mad < 6.0 and corr > 0.98


def test_too_small_and_unreadable_are_told_apart_by_type(tmp_path):
    """Skip records say which is which (a corrupt file named 'too small.jpg' is unreadable, not too small)."""
    from stitch.errors import ImageTooSmallError
    from stitch.io import check_min_side

    corrupt = tmp_path / "too small.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), np.zeros((10, 10, 3), np.uint8))
    with pytest.warns(UserWarning):
        loaded = load_images([corrupt, tiny], min_side=32)
    assert [(s.name, s.too_small) for s in loaded.skipped] == [("too small.jpg", False), ("tiny.png", True)]
    assert loaded.skipped[1].reason.startswith("too small (10 x 10 px")
    with pytest.raises(ImageTooSmallError):
        check_min_side(np.zeros((10, 10, 3), np.uint8), "x", 32)


# --- full depth, alpha and metadata (what a panorama reads and writes) --------------------------------------


def test_read_pixels_keeps_16_bits(tmp_path):
    img16 = np.random.default_rng(1).integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    px = read_pixels(write(tmp_path / "d.png", img16))
    assert px.image.dtype == np.uint16 and px.valid is None
    np.testing.assert_array_equal(px.image, img16)
    gray = read_pixels(write(tmp_path / "g.tif", img16[:, :, 0]))
    assert gray.image.shape == (6, 7, 3) and gray.image.dtype == np.uint16
    np.testing.assert_array_equal(gray.image[:, :, 2], img16[:, :, 0])
    assert read_pixels(write(tmp_path / "e.png", (img16 >> 8).astype(np.uint8))).image.dtype == np.uint8


def test_alpha_is_the_valid_mask_and_no_data_is_filled(tmp_path):
    """alpha 0 is no data: the mask says so, and those pixels hold their nearest valid pixel, not the file's red."""
    bgra = np.zeros((8, 10, 4), np.uint8)
    bgra[..., :3] = (40, 80, 120)
    bgra[:, 7:, :3] = (0, 0, 255)  # a red strip ...
    bgra[..., 3] = 255
    bgra[:, 7:, 3] = 0  # ... made transparent
    bgra[0, 0, 3] = 1  # any alpha above 0 is data
    px = read_pixels(write(tmp_path / "a.png", bgra))
    assert px.image.dtype == np.uint8 and px.valid is not None
    np.testing.assert_array_equal(px.valid, bgra[..., 3] > 0)
    np.testing.assert_array_equal(px.image, np.broadcast_to(np.uint8([40, 80, 120]), (8, 10, 3)))
    from_array = load_pixels(bgra, "arr")
    assert np.array_equal(from_array.valid, px.valid) and np.array_equal(from_array.image, px.image)
    opaque = bgra.copy()
    opaque[..., 3] = 255
    assert read_pixels(write(tmp_path / "o.png", opaque)).valid is None
    bgra[..., 3] = 0
    with pytest.raises(ImageReadError, match=r"t\.png: every pixel is transparent"):
        read_pixels(write(tmp_path / "t.png", bgra))


def test_fill_no_data_takes_the_nearest_valid_pixel():
    img = np.arange(5, dtype=np.uint16).reshape(1, 5, 1) * 1000
    valid = np.array([[True, False, False, False, True]])
    np.testing.assert_array_equal(fill_no_data(img, valid)[0, :, 0], [0, 0, 0, 4000, 4000])


@pytest.mark.parametrize("ext", ["png", "tif", "webp"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_alpha_follows_the_exif_orientation(tmp_path, ext, orientation):
    """OpenCV turns the colours upright; the alpha mask turns with them (a transparent top-left block)."""
    from PIL import Image

    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., 0] = np.arange(40, dtype=np.uint8)[None, :] * 6  # an asymmetric picture
    rgba[..., 1] = np.arange(30, dtype=np.uint8)[:, None] * 8
    rgba[..., 3] = 255
    rgba[:10, :15, 3] = 0
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o.{ext}"
    Image.fromarray(rgba, "RGBA").save(path, exif=exif, lossless=True)
    turn = {1: lambda a: a, 3: lambda a: a[::-1, ::-1], 6: lambda a: np.rot90(a, -1), 8: lambda a: np.rot90(a, 1)}
    px = read_pixels(path)
    assert read_image(path).shape[:2] == px.image.shape[:2] == turn[orientation](rgba).shape[:2]
    np.testing.assert_array_equal(px.valid, turn[orientation](rgba[..., 3] > 0))
    np.testing.assert_array_equal(px.image[..., 2][px.valid], turn[orientation](rgba[..., 0])[px.valid])  # R too


def test_write_carries_exif_and_icc(tmp_path):
    """JPEG and PNG outputs carry the EXIF block and the ICC profile, and stay tagged as stitch outputs."""
    from PIL import ImageCms

    from stitch.exif import ImageMeta, output_exif, read_meta

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    big_icc = icc + bytes(150_000)  # split over three JPEG APP2 segments
    exif = output_exif(ImageMeta(make="Canon", model="EOS 40D", datetime_original="2024:05:01 10:00:00"))
    img = np.full((20, 30, 3), 90, np.uint8)
    for ext in ("jpg", "png"):
        for profile in (icc, big_icc):
            out = write_image_atomic(tmp_path / f"m.{ext}", img, tag=True, exif=exif, icc=profile)
            meta = read_meta(out)
            assert (meta.make, meta.model, meta.datetime_original) == ("Canon", "EOS 40D", "2024:05:01 10:00:00")
            assert meta.icc_profile == profile and is_stitch_output(out)
            assert np.abs(cv2.imread(str(out)).astype(int) - 90).max() <= 2
    tif = write_image_atomic(tmp_path / "m.tif", img, exif=exif, icc=icc)  # TIFF: OpenCV's encoder carries none
    assert read_meta(tif).make is None and np.array_equal(cv2.imread(str(tif)), img)


def test_16_bit_writes_keep_or_round_the_depth(tmp_path):
    img16 = np.array([[[0, 257 * 10 + 128, 65535]]], np.uint16).repeat(4, 0).repeat(4, 1)
    assert cv2.imread(str(write_image_atomic(tmp_path / "d.png", img16)), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert cv2.imread(str(write_image_atomic(tmp_path / "d.tif", img16)), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    low = cv2.imread(str(write_image_atomic(tmp_path / "d.bmp", img16)), cv2.IMREAD_UNCHANGED)
    assert low.dtype == np.uint8 and low[0, 0].tolist() == [0, 10, 255]  # v / 257, rounded (10.498 -> 10)
