"""stitch.io folder listing rules (links, mask names, stitch's own tagged outputs) and the output tag."""

from __future__ import annotations

import os
import warnings

import cv2
import numpy as np
import pytest

from stitch.errors import ImageReadError
from stitch.io import (
    OUTPUT_TAG,
    collect_inputs,
    is_mask_name,
    is_stitch_output,
    list_images,
    scan_folder,
    tag_output,
    write_image_atomic,
)


def test_tag_keeps_pixels_and_files_valid(tmp_path):
    from PIL import Image

    img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    for ext in ("png", "jpg"):
        plain = write_image_atomic(tmp_path / f"plain.{ext}", img)
        tagged = write_image_atomic(tmp_path / f"tagged.{ext}", img, tag=True)
        assert not is_stitch_output(plain) and is_stitch_output(tagged)
        assert np.array_equal(cv2.imread(str(plain)), cv2.imread(str(tagged)))
        with Image.open(tagged) as im:  # a strict decoder (PNG chunk CRCs) accepts it
            im.load()
            assert OUTPUT_TAG.decode() in str(im.info)
    tif = write_image_atomic(tmp_path / "t.tif", img, tag=True)
    assert not is_stitch_output(tif)  # TIFF carries no tag
    assert tag_output(b"not an image") == b"not an image"


def test_scan_folder_rules(tmp_path):
    img = np.full((40, 40, 3), 100, np.uint8)
    for name in ("b.jpg", "a.png", "mask.png", "Mask_02.JPG", "c_mask.png", "d-mask.tif", "masking.png"):
        cv2.imwrite(str(tmp_path / name), img)
    write_image_atomic(tmp_path / "pano.jpg", img, tag=True)
    (tmp_path / "notes.txt").write_text("x")
    os.symlink(tmp_path / "missing.jpg", tmp_path / "dangling.jpg")
    os.symlink("loop.png", tmp_path / "loop.png")
    os.symlink(tmp_path / "a.png", tmp_path / "z_link.png")  # a working link is read
    scan = scan_folder(tmp_path)
    assert [p.name for p in scan.paths] == ["a.png", "b.jpg", "z_link.png"]
    reasons = dict(scan.skipped)
    assert set(reasons) == {"Mask_02.JPG", "c_mask.png", "d-mask.tif", "dangling.jpg", "loop.png", "mask.png",
                            "masking.png", "pano.jpg"}
    assert reasons["loop.png"] == "symlink loop" and reasons["dangling.jpg"].startswith("dangling symlink")
    assert reasons["pano.jpg"].startswith("written by stitch") and "mask" in reasons["masking.png"]
    assert is_mask_name("img_mask.png") and not is_mask_name("unmasked.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(list_images(tmp_path)) == 3
    assert sorted(str(w.message).split(":")[0] for w in caught) == sorted(f"skipping {n}" for n in reasons)
    # files named explicitly are read whatever their name; folders and files mix in the order given
    got = collect_inputs([tmp_path / "mask.png", tmp_path])
    assert [p.name for p in got.paths] == ["mask.png", "a.png", "b.jpg", "z_link.png"]
    with pytest.raises(ImageReadError, match="dangling.jpg: dangling symlink"):
        collect_inputs([tmp_path / "dangling.jpg"])
    with pytest.raises(ImageReadError, match="no inputs given"):
        collect_inputs([])
    only = tmp_path / "only_masks"
    only.mkdir()
    cv2.imwrite(str(only / "mask.png"), img)
    with pytest.raises(ImageReadError, match="no images found .*skipped mask.png"), \
            pytest.warns(UserWarning, match="skipping mask.png"):
        list_images(only)
