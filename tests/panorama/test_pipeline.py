"""stitch.panorama: pair graph, reference, joint adjustment, and stitch_images on the samples (real numbers)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from stitch.errors import ConfigError, NoOverlapError, StitchError
from stitch.geometry import corner_error, image_corners, project
from stitch.panorama.adjust import adjust_homographies, edge_residuals, norm_matrix, transfer_residuals
from stitch.panorama.config import PanoramaConfig
from stitch.panorama.graph import choose_reference, spanning_tree_homographies
from stitch.panorama.pipeline import (
    Panorama,
    choose_canvas,
    register_images,
    stitch_images,
    work_scale_matrix,
)
from stitch.panorama.viewgraph import PairEdge
from stitch.panorama.warp import estimate_focal, pair_focals


def shift(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0, tx], [0, 1.0, ty], [0, 0, 1.0]])


def noise_image(seed: int, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """Smooth random blobs (H, W, 3) uint8: textured, but unrelated to any sample."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
    return cv2.resize(small, size, interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope="module")
def pano3(samples_dir: Path) -> tuple[Panorama, dict, list[str]]:
    """stitch_images on pano3's views plus an unrelated image, uncropped, on the GT's plane (run once; warnings)."""
    gt = json.loads((samples_dir / "pano3" / "ground_truth.json").read_text())
    inputs = [samples_dir / "pano3" / v["file"] for v in gt["views"]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pano = stitch_images(inputs[:2] + [noise_image(7)] + inputs[2:], seed=0, crop=False, projection="plane")
    return pano, gt, [str(w.message) for w in caught]


# --- stitch_images on real samples ---------------------------------------------------------------------


def test_pano3_keeps_views_and_drops_unrelated(pano3):
    pano, _, caught = pano3
    assert pano.names == ["view_1.jpg", "view_2.jpg", "view_3.jpg"]
    assert pano.reference == "view_2.jpg"  # the graph centre
    assert [n for n, _ in pano.dropped] == ["image2"]
    assert any("image2" in w and "dropped" in w for w in caught)
    assert any("image2" in w for w in pano.warnings)
    assert {(a, b) for a, b, _, _ in pano.edges} == {("view_1.jpg", "view_2.jpg"), ("view_2.jpg", "view_3.jpg")}
    assert all(s > 0.9 and n > 100 for _, _, s, n in pano.edges)


def test_pano3_matches_ground_truth(pano3):
    """Pairwise homographies within 2 px at the corners; panorama size within 3 px of the GT bounds."""
    pano, gt, _ = pano3
    H = dict(zip(pano.names, pano.homographies))
    np.testing.assert_allclose(H["view_2.jpg"], np.eye(3), atol=1e-12)
    for pair in gt["pairs"]:
        H_est = np.linalg.inv(H[pair["dst"]]) @ H[pair["src"]]
        assert corner_error(H_est, np.array(pair["H"]), 640, 480) < 2.0, pair["src"]
    to_scene = {v["file"]: np.array(v["H_view_to_scene"]) for v in gt["views"]}
    ref_inv = np.linalg.inv(to_scene["view_2.jpg"])
    pts = np.vstack([project(ref_inv @ to_scene[v["file"]], image_corners(639, 479)) for v in gt["views"]])
    expect_w = math.floor(pts[:, 0].max()) - math.floor(pts[:, 0].min()) + 1
    expect_h = math.floor(pts[:, 1].max()) - math.floor(pts[:, 1].min()) + 1
    assert abs(pano.size[0] - expect_w) <= 3 and abs(pano.size[1] - expect_h) <= 3, (pano.size, expect_w, expect_h)
    assert pano.image.shape == (pano.size[1], pano.size[0], 3) and pano.image.dtype == np.uint8
    assert pano.mask.shape == pano.image.shape[:2] and 0.6 < pano.mask.mean() < 0.95
    assert pano.rms_after is not None and pano.rms_after <= pano.rms_before < 1.0


def test_pano3_canvas_homography_places_pixels(pano3, samples_dir):
    """A view warped by canvas_homography agrees with the panorama over the view's interior."""
    pano, _, _ = pano3
    view = cv2.imread(str(samples_dir / "pano3" / "view_3.jpg"))
    Hc = pano.canvas_homography(2)
    w, h = pano.size
    warped = cv2.warpPerspective(view, Hc, (w, h))
    inside = cv2.warpPerspective(np.full(view.shape[:2], 255, np.uint8), Hc, (w, h), flags=cv2.INTER_NEAREST)
    inside = cv2.erode(inside, np.ones((9, 9), np.uint8)) > 0
    diff = np.abs(warped[inside].astype(int) - pano.image[inside].astype(int))
    assert np.median(diff) < 8  # the views differ in gain by a few percent; a misplacement is far worse


def test_same_seed_identical(sample_pair):
    src, dst, _ = sample_pair("translation")
    calls = []
    a = stitch_images([src, dst], seed=3, progress=lambda done, total, label: calls.append((done, total, label)))
    assert calls and all(0 <= d <= t for d, t, _ in calls) and any("matching" in c[2] for c in calls)
    b = stitch_images([src, dst], seed=3)
    assert a.image.tobytes() == b.image.tobytes()
    assert all(np.array_equal(x, y) for x, y in zip(a.homographies, b.homographies))
    # pure shift (-37, +23) px: src -> dst
    H = np.linalg.inv(b.homographies[1]) @ b.homographies[0]
    assert corner_error(H, shift(-37, 23), src.shape[1], src.shape[0]) < 0.5
    c = stitch_images([src, dst], seed=3, full_grid_max_images=1)  # the large-set screening grid
    H = np.linalg.inv(c.homographies[1]) @ c.homographies[0]
    assert corner_error(H, shift(-37, 23), src.shape[1], src.shape[0]) < 0.5


def test_workers_do_not_change_the_result(samples_dir):
    """Pair matching on 1 or 3 threads gives the same matrices and pixels; a bad count names itself."""
    views = sorted((samples_dir / "pano3").glob("view_*.jpg"))
    one = stitch_images(views, workers=1, crop=False, seam_megapix=0.05)
    three = stitch_images(views, workers=3, crop=False, seam_megapix=0.05)
    assert one.names == three.names and len(one.edges) == len(three.edges) == 2  # views 1 and 3 do not overlap
    assert all(np.array_equal(x, y) for x, y in zip(one.homographies, three.homographies))
    assert one.image.tobytes() == three.image.tobytes()
    with pytest.raises(ConfigError, match="workers=-1"):
        stitch_images(views, workers=-1)


def test_register_without_the_images_gives_the_same_cameras(samples_dir):
    """keep_images=False (stitch.register) frees the inputs before the camera model: no images come back, and the
    cameras are the same as those a stitch composes."""
    views = sorted((samples_dir / "pano3").glob("view_*.jpg"))
    cfg = PanoramaConfig.from_options()
    reg, kept = register_images(views, cfg)
    bare, none = register_images(views, cfg, keep_images=False)
    assert len(kept) == len(reg.names) == 3 and none == []
    assert bare.names == reg.names and bare.placement == reg.placement
    assert all(np.array_equal(x, y) for x, y in zip(bare.homographies(), reg.homographies()))


@pytest.mark.slow
def test_weir_drops_the_distractor(shared_data):
    """Real photos: weir_1..3 stitch (every pair above the threshold); weir_noise.jpg is dropped by name."""
    folder = shared_data / "panoramas" / "weir"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    with pytest.warns(UserWarning, match="dropped weir_noise.jpg"):
        pano = stitch_images(sorted(folder.glob("weir_*.jpg")), crop=False)
    assert pano.names == ["weir_1.jpg", "weir_2.jpg", "weir_3.jpg"] and pano.reference == "weir_2.jpg"
    assert [n for n, _ in pano.dropped] == ["weir_noise.jpg"]
    assert len(pano.edges) == 3 and min(s for _, _, s, _ in pano.edges) > 0.7
    assert pano.rms_after < 2.5  # px at full resolution (1333 x 750)
    assert pano.projection == "spherical" and pano.focal == pytest.approx(2700, rel=0.1)  # auto: a rotating camera
    assert 2550 < pano.size[0] < 2750 and 850 < pano.size[1] < 1000


def test_identical_images_dropped_with_warning(sample_pair):
    src, dst, _ = sample_pair("translation")
    with pytest.warns(UserWarning, match="image2.*identical to image0"):
        pano = stitch_images([src, dst, src.copy()])
    assert pano.names == ["image0", "image1"]
    assert pano.dropped == [("image2", "identical to image0")]


def test_exception_only_duplicates(sample_pair):
    """Two copies of one image are one image: the error says so (it used to give a one-image 'panorama')."""
    src, _, _ = sample_pair("translation")
    with pytest.warns(UserWarning, match="identical"), \
            pytest.raises(StitchError, match="need at least 2 different images, got 1: image1 is identical to image0"):
        stitch_images([src, src.copy()])


def test_exception(tmp_path, sample_pair):
    src, _, _ = sample_pair("translation")
    one = tmp_path / "a.jpg"
    cv2.imwrite(str(one), src)
    with pytest.raises(StitchError, match=r"need at least 2 images, got 1: a\.jpg"):
        stitch_images([one])
    (tmp_path / "b.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match="b.jpg"), pytest.raises(StitchError, match=r"got 1: a\.jpg.*b\.jpg"):
        stitch_images([one, tmp_path / "b.jpg"])
    with pytest.raises(NoOverlapError, match="no two images overlap: image0, image1, image2"):
        stitch_images([noise_image(1, (320, 240)), noise_image(2, (320, 240)), noise_image(3, (320, 240))])
    with pytest.raises(ConfigError, match="bogus"):
        stitch_images([src, src], bogus=1)
    with pytest.raises(ConfigError, match="projection='mercator'"):
        stitch_images([src, src], projection="mercator")
    with pytest.raises(ConfigError, match="work_megapix"):
        stitch_images([src, src], work_megapix=0)


# --- graph helpers and the joint adjustment (synthetic ground truth) -------------------------------------


def synthetic_edges(Hs_true: dict[int, np.ndarray], pairs, n: int = 60, seed: int = 0, noise: float = 0.0):
    """Edges with exact (or noisy) correspondences under the true image -> reference Hs, 640 x 480 images."""
    rng = np.random.default_rng(seed)
    edges = []
    for i, j in pairs:
        pi = rng.uniform([0, 0], [639, 479], (n, 2))
        pj = project(np.linalg.solve(Hs_true[j], Hs_true[i]), pi) + rng.normal(0, noise, (n, 2))
        edges.append(PairEdge(i, j, np.linalg.solve(Hs_true[j], Hs_true[i]), 0.9, n, pi, pj))
    return edges


def true_chain() -> dict[int, np.ndarray]:
    return {0: np.array([[0.98, 0.02, -400.0], [-0.01, 1.01, 5.0], [2e-5, 1e-5, 1.0]]), 1: np.eye(3),
            2: np.array([[1.02, -0.03, 390.0], [0.02, 0.99, -8.0], [-3e-5, 2e-5, 1.0]]),
            3: np.array([[1.01, 0.01, 770.0], [0.01, 1.0, -12.0], [-2e-5, 1e-5, 1.0]])}


def test_gradcheck():
    """The analytic Jacobian of the symmetric transfer residuals matches central finite differences."""
    Hs = true_chain()
    edges = synthetic_edges(Hs, [(0, 1), (1, 2), (0, 2), (2, 3)], n=5)
    sizes = {k: (640, 480) for k in Hs}
    T = {k: norm_matrix(sizes[k]) for k in Hs}
    Tref_inv = np.linalg.inv(T[1])
    free = [0, 2, 3]
    col = {k: m for m, k in enumerate(free)}

    def unpack(x):
        out = {1: np.eye(3)}
        for m, k in enumerate(free):
            out[k] = Tref_inv @ np.append(x[8 * m:8 * m + 8], 1.0).reshape(3, 3) @ T[k]
        return out

    x = np.concatenate([((G := T[1] @ Hs[k] @ np.linalg.inv(T[k])) / G[2, 2]).ravel()[:8] for k in free])
    r, blocks = transfer_residuals(unpack(x), edges, col, T, Tref_inv, want_jac=True)
    J = np.zeros((len(r), len(x)))
    for row, c, B in blocks:
        J[row:row + len(B), 8 * c:8 * c + 8] = B
    num = np.zeros_like(J)
    for k in range(len(x)):
        d = np.zeros_like(x)
        d[k] = 1e-6
        num[:, k] = (edge_residuals(unpack(x + d), edges) - edge_residuals(unpack(x - d), edges)) / 2e-6
    np.testing.assert_allclose(J, num, rtol=1e-4, atol=1e-3 * np.abs(num).max())


def test_adjust_recovers_perturbed_chain():
    """Perturbed initial Hs (several px off) are pulled back to the truth; outliers are down-weighted."""
    Hs_true = true_chain()
    edges = synthetic_edges(Hs_true, [(0, 1), (1, 2), (0, 2), (2, 3), (1, 3)], n=80, noise=0.3)
    # plant 10 gross outliers at known indices of one edge
    edges[1].pts_j[:10] += 40.0
    rng = np.random.default_rng(1)
    init = {k: H @ shift(*rng.normal(0, 4, 2)) if k != 1 else H for k, H in Hs_true.items()}
    sizes = {k: (640, 480) for k in Hs_true}
    out, before, after = adjust_homographies(init, 1, edges, sizes, loss="soft_l1", f_scale=1.0)
    assert after < before
    np.testing.assert_allclose(out[1], np.eye(3), atol=1e-12)
    for k in (0, 2, 3):
        assert corner_error(np.linalg.inv(Hs_true[k]) @ out[k], np.eye(3), 640, 480) < 0.5, k


def test_reference_and_spanning_tree():
    """Chain 0-1-2-3-4: the centre is 2; chained Hs compose the pairwise ones exactly."""
    Hs_true = {k: shift(300.0 * (k - 2), 3.0 * k) for k in range(5)}
    edges = synthetic_edges(Hs_true, [(0, 1), (1, 2), (2, 3), (3, 4)], n=10)
    assert choose_reference(list(range(5)), edges) == 2
    Hs = spanning_tree_homographies(list(range(5)), edges, 2)
    for k in range(5):
        np.testing.assert_allclose(Hs[k], np.linalg.inv(Hs_true[2]) @ Hs_true[k], atol=1e-9)


def test_auto_projection_spherical_for_rotation_plane_for_translation():
    """'auto' picks spherical when the pairs fix a focal (rotating camera, f = 700) and the plane for shifts."""
    size, f = (640, 480), 700.0
    K = np.array([[f, 0, 319.5], [0, f, 239.5], [0, 0, 1.0]])
    R = cv2.Rodrigues(np.array([0.05, math.radians(25), 0.0]))[0]
    H_rot = K @ R @ np.linalg.inv(K)
    pairs = [(H_rot, size, size)]
    focal = estimate_focal(pairs)
    assert focal == pytest.approx(f, rel=0.02) and pair_focals(pairs)
    canvas = choose_canvas("auto", [np.eye(3), H_rot], [size, size], ["a", "b"], size, focal, 10**8,
                           rotating=bool(pair_focals(pairs)))
    assert canvas.projection.kind == "spherical" and canvas.projection.focal == pytest.approx(focal)
    moved = [(shift(300, 10), size, size)]
    assert pair_focals(moved) == []
    canvas = choose_canvas("auto", [np.eye(3), shift(300, 10)], [size, size], ["a", "b"], size,
                           estimate_focal(moved), 10**8, rotating=False)
    assert canvas.projection.kind == "plane" and canvas.size[0] == pytest.approx(940, abs=2)


def test_work_scale_matrix():
    """Full-res -> working px follows cv2.resize's pixel-centre convention."""
    A = work_scale_matrix((1000, 800), (500, 400))
    np.testing.assert_allclose(project(A, np.array([[0.5, 0.5], [999.5, 799.5]])), [[0.0, 0.0], [499.5, 399.5]])
