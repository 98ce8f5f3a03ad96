"""stitch.deep.refine_deep with the shipped weights: it reduces the corner error on real pairs."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="needs torch (pip install 'stitch-toolkit[deep]')")
pytest.importorskip("kornia", reason="needs kornia (pip install 'stitch-toolkit[deep]')")

import cv2
import numpy as np
from helpers import texture

import stitch
from stitch.deep import DEFAULT_WEIGHTS, refine_deep
from stitch.deep.pairs import Photometric, detone_pair
from stitch.errors import ConfigError
from stitch.geometry import corner_error, image_corners, project

pytestmark = pytest.mark.skipif(not DEFAULT_WEIGHTS.is_file(), reason=f"no shipped weights at {DEFAULT_WEIGHTS}")

CORNER_DELTAS = np.array([[3.0, -2.0], [-2.0, -3.0], [-3.0, 2.0], [2.0, 3.0]])  # ~3.6 px at every corner


def perturb(H: np.ndarray, w: int, h: int, deltas: np.ndarray) -> np.ndarray:
    c = image_corners(w, h)
    return cv2.getPerspectiveTransform(c.astype(np.float32), (project(H, c) + deltas).astype(np.float32)).astype(
        np.float64)


@pytest.mark.parametrize("coarse", [True, False])
def test_reduces_corner_error_on_sample_pair(sample_pair, coarse):
    """data/samples 'perspective' (640 x 480): from 3.6 px off at every corner to clearly less."""
    src, dst, H_gt = sample_pair("perspective")
    w, h = src.shape[1], src.shape[0]
    H0 = perturb(H_gt, w, h, CORNER_DELTAS)
    before = corner_error(H0, H_gt, w, h)
    after = corner_error(refine_deep(H0, src, dst, coarse=coarse), H_gt, w, h)
    assert before == pytest.approx(np.hypot(3, 2))
    assert after < 0.7 * before, (before, after)


def test_refiner_regime_patch():
    """A 128 x 128 synthetic pair of the refiner regime (start up to 8 px off, photometric change)."""
    errs = []
    for k in range(4):
        pr = detone_pair(texture(k), np.random.default_rng(k), photo=Photometric(p=0.5), start_rho=8.0)
        before = corner_error(pr.H_start, pr.H_gt, 128, 128)
        after = corner_error(refine_deep(pr.H_start, pr.src, pr.dst, coarse=False), pr.H_gt, 128, 128)
        errs.append((before, after))
    assert np.median([a for _, a in errs]) < 1.0, errs
    assert all(a < b for b, a in errs), errs


def test_refine_homography_deep(sample_pair):
    src, dst, H_gt = sample_pair("illumination")
    w, h = src.shape[1], src.shape[0]
    H0 = perturb(H_gt, w, h, CORNER_DELTAS)
    out = stitch.refine_homography(src, dst, H0, method="deep").H
    assert corner_error(out, H_gt, w, h) < corner_error(H0, H_gt, w, h)


def test_pipeline_with_deep(sample_pair):
    """refiner='deep' runs after the classical selection and never lowers the quality score."""
    src, dst, H_gt = sample_pair("translation")
    r_ecc = stitch.estimate_homography(src, dst, refiner="ecc")
    r_deep = stitch.estimate_homography(src, dst, refiner="deep")
    assert r_deep.score >= r_ecc.score - 1e-12
    assert corner_error(r_deep.H, H_gt, src.shape[1], src.shape[0]) < 1.0


def test_pipeline_deep_weights_option(tmp_path):
    """estimate_homography(refiner="deep", deep_weights=...) hands the weights file to the refiner."""
    img = texture(0)
    with pytest.raises(ConfigError, match="not found"):
        stitch.estimate_homography(img, img, refiner="deep", deep_weights=tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="deep_weights"):
        stitch.estimate_homography(img, img, refiner="deep", deep_weights=5)
    assert refine_deep(np.eye(3), img, img) is not None  # the shipped weights by default


def test_exception():
    img = texture(0)
    with pytest.raises(ConfigError, match="H:"):
        refine_deep(np.eye(2), img, img)
    with pytest.raises(ConfigError, match="iterations"):
        refine_deep(np.eye(3), img, img, iterations=0)
    far = np.array([[1, 0, 5000.0], [0, 1, 0], [0, 0, 1]])
    assert refine_deep(far, img, img) is None  # no overlap: a clear None, no crash


def test_torch_threads_overlapping_blocks_restore_the_setting():
    """Blocks that overlap (as the panorama's pair threads do) leave torch's thread count as it was."""
    import torch

    from stitch.deep.infer import torch_threads

    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a, b = torch_threads(1), torch_threads(1)
        a.__enter__()
        b.__enter__()
        assert torch.get_num_threads() == 1
        a.__exit__(None, None, None)  # the other block still runs: its setting stays
        assert torch.get_num_threads() == 1
        b.__exit__(None, None, None)
        assert torch.get_num_threads() == 2
        with torch_threads(None):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)
