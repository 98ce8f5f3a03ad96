"""stitch.panorama.camera: the rotating-camera model on synthetic views with a known focal and known rotations."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from stitch.cli.main import main

from stitch.errors import ConfigError
from stitch.exif import exif_focal_px
from stitch.geometry import corner_error
from stitch.panorama import camera, pipeline
from stitch.panorama.camera import (
    BundleProblem,
    Camera,
    Registration,
    build_problem,
    bundle_adjust,
    is_full_turn,
    pairs_close_turn,
    solve_rotations,
    wave_correct,
)
from stitch.panorama.pipeline import compose, register, stitch_images
from stitch.panorama.viewgraph import PairEdge

SIZE = (320, 240)
FOCAL = 260.0


def rot(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """World -> camera rotation of a camera turned by yaw (about y), then pitch (about x), then roll (degrees)."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    Ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    Rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    Rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return (Ry @ Rx @ Rz).T  # camera -> world is Ry Rx Rz


def K_of(f: float = FOCAL, size: tuple[int, int] = SIZE) -> np.ndarray:
    return np.array([[f, 0, (size[0] - 1) / 2], [0, f, (size[1] - 1) / 2], [0, 0, 1.0]])


def texture(seed: int = 3, size: tuple[int, int] = (1600, 400)) -> np.ndarray:
    """An equirectangular (w = 4 h) texture of random sharp shapes over smooth noise: plenty of SIFT corners."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 20, size[0] // 20, 3), dtype=np.uint8)
    img = cv2.resize(small, size, interpolation=cv2.INTER_CUBIC)
    for _ in range(size[0] * size[1] // 120):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        r = int(rng.integers(2, 9))
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), r, color, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(img, (x, y), (x + r, y + int(rng.integers(2, 9))), color, -1)
    return img


def render(tex: np.ndarray, R: np.ndarray, f: float = FOCAL, size: tuple[int, int] = SIZE) -> np.ndarray:
    """The view (h, w, 3) of a camera (R world -> camera, focal f) inside the sphere textured by ``tex``."""
    w, h = size
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays = np.stack([(xs - (w - 1) / 2) / f, (ys - (h - 1) / 2) / f, np.ones_like(xs)], -1) @ R  # R^T d
    lon = np.arctan2(rays[..., 0], rays[..., 2])
    lat = np.arctan2(rays[..., 1], np.hypot(rays[..., 0], rays[..., 2]))
    th, tw = tex.shape[:2]
    mx = ((lon / (2 * np.pi) + 0.5) * tw).astype(np.float32)
    my = ((lat / np.pi + 0.5) * th).astype(np.float32)
    return cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def angle_deg(A: np.ndarray, B: np.ndarray) -> float:
    """Angle (degrees) of the rotation A B^T."""
    return math.degrees(math.acos(np.clip((np.trace(A @ B.T) - 1) / 2, -1.0, 1.0)))


def ring_edges(Rs: dict[int, np.ndarray], f: float = FOCAL, n: int = 80, noise: float = 0.2, seed: int = 0):
    """Edges between every two cameras whose views overlap, with (noisy) exact correspondences."""
    rng = np.random.default_rng(seed)
    K = K_of(f)
    edges = []
    for i in sorted(Rs):
        for j in sorted(Rs):
            if j <= i:
                continue
            H = K @ Rs[j] @ Rs[i].T @ np.linalg.inv(K)
            p = rng.uniform([0, 0], [SIZE[0] - 1, SIZE[1] - 1], (max(400, 4 * n), 2))
            q = np.hstack([p, np.ones((len(p), 1))]) @ H.T
            ok = (q[:, 2] > 0)
            q = q[:, :2] / q[:, 2:]
            ok &= (q[:, 0] >= 0) & (q[:, 0] < SIZE[0]) & (q[:, 1] >= 0) & (q[:, 1] < SIZE[1])
            if ok.sum() >= min(20, n):
                p, q = p[ok][:n], q[ok][:n]
                edges.append(PairEdge(i, j, H, 0.9, len(p), p, q + rng.normal(0, noise, q.shape)))
    return edges


# --- the model on synthetic correspondences --------------------------------------------------------------


@pytest.mark.parametrize(("ref", "shared"), [(0, False), (2, False), (2, True)])
def test_gradcheck(ref, shared):
    """The analytic Jacobian of the reprojection residuals matches central finite differences, with a focal per
    image or one shared (its two entries per row summed) and the fixed image first or in the middle; it is in
    canonical CSR form (sorted, no duplicates)."""
    Rs = {k: rot(40 * k, 3 * k, k) for k in range(4)}
    edges = ring_edges(Rs, n=5)
    prob: BundleProblem = build_problem(list(Rs), edges, ref, Rs, {k: ((SIZE[0] - 1) / 2, (SIZE[1] - 1) / 2) for k in Rs},
                                        dict.fromkeys(Rs, 0) if shared else {k: k for k in Rs})
    focals = [258.0] if shared else [250.0, 255, 262, 270]
    x = np.concatenate([np.random.default_rng(0).normal(0, 0.05, 3 * prob.n_free), focals])
    J = prob.residuals(x, True)[1].tocsr()
    assert J.has_canonical_format and J.shape == (2 * len(prob.a), len(x))
    J = J.toarray()
    num = np.zeros_like(J)
    for k in range(len(x)):
        d = np.zeros_like(x)
        d[k] = 1e-6 * max(1.0, abs(x[k]))
        num[:, k] = (prob.residuals(x + d) - prob.residuals(x - d)) / (2 * d[k])
    np.testing.assert_allclose(J, num, rtol=1e-4, atol=1e-4 * np.abs(num).max())


def test_gradcheck_with_focal_prior():
    """The focal prior's rows (one per focal parameter) have the right Jacobian too."""
    Rs = {k: rot(40 * k, 3 * k, k) for k in range(3)}
    prob = build_problem(list(Rs), ring_edges(Rs, n=5), 0, Rs, {k: ((SIZE[0] - 1) / 2, (SIZE[1] - 1) / 2) for k in Rs},
                         dict.fromkeys(Rs, 0))
    prob.focal_prior, prob.prior_weight = np.array([240.0]), 37.0
    x = np.concatenate([np.random.default_rng(1).normal(0, 0.05, 3 * prob.n_free), [255.0]])
    r, J = prob.residuals(x, True)
    J = J.tocsr()
    assert len(r) == 2 * len(prob.a) + 1 and r[-1] == pytest.approx(37.0 * (255.0 / 240.0 - 1.0))
    assert J.toarray()[-1, -1] == pytest.approx(37.0 / 240.0)
    assert np.count_nonzero(J.toarray()[-1, :-1]) == 0


@pytest.mark.parametrize("chunk", [1, 7, 10**9])
def test_jacobian_chunks_give_the_same_matrix(monkeypatch, chunk):
    """The Jacobian written a few correspondences at a time (camera.JACOBIAN_CHUNK) is the one written at once, bit
    for bit, with a focal prior's rows after its own."""
    Rs = {k: rot(40 * k, 3 * k, k) for k in range(4)}
    prob = build_problem(list(Rs), ring_edges(Rs, n=9), 1, Rs, {k: ((SIZE[0] - 1) / 2, (SIZE[1] - 1) / 2) for k in Rs},
                         {0: 0, 1: 1, 2: 1, 3: 2})
    prob.focal_prior, prob.prior_weight = np.array([240.0, 250.0, 260.0]), 11.0
    x = np.concatenate([np.random.default_rng(2).normal(0, 0.05, 3 * prob.n_free), [250.0, 255.0, 262.0]])
    whole = prob.residuals(x, True)[1].tocsr()
    monkeypatch.setattr(camera, "JACOBIAN_CHUNK", chunk)
    part = prob.residuals(x, True)[1].tocsr()
    assert part.has_canonical_format and part.nnz == whole.nnz > 8 * len(prob.a)
    assert np.array_equal(part.indptr, whole.indptr) and np.array_equal(part.indices, whole.indices)
    assert np.array_equal(part.data, whole.data)


def test_normal_equations_in_chunks(monkeypatch):
    """BundleJacobian.weighted_normal: in one chunk, J^T W J and J^T W r of the whole matrix value for value; in
    chunks of 5 correspondences (camera.NORMAL_CHUNK), the same sums to rounding, the focal prior's rows included."""
    from scipy.sparse import diags

    Rs = {k: rot(40 * k, 3 * k, k) for k in range(4)}
    prob = build_problem(list(Rs), ring_edges(Rs, n=9), 1, Rs, {k: ((SIZE[0] - 1) / 2, (SIZE[1] - 1) / 2) for k in Rs},
                         {0: 0, 1: 1, 2: 1, 3: 2})
    prob.focal_prior, prob.prior_weight = np.array([240.0, 250.0, 260.0]), 11.0
    x = np.concatenate([np.random.default_rng(3).normal(0, 0.05, 3 * prob.n_free), [250.0, 255.0, 262.0]])
    r, Jb = prob.residuals(x, True)
    w = np.random.default_rng(4).uniform(0.2, 1.0, len(r))
    J = Jb.tocsr()
    JW = diags(w) @ J
    A0, g0 = np.asarray((J.T @ JW).todense()), np.asarray(JW.T @ r).ravel()
    A1, g1 = Jb.weighted_normal(w, r, dense=True)
    assert np.array_equal(A1, A0) and np.array_equal(g1, g0)
    monkeypatch.setattr(camera, "NORMAL_CHUNK", 5)
    A2, g2 = Jb.weighted_normal(w, r, dense=False)
    assert A2.format == "csc" and len(prob.a) > 20
    np.testing.assert_allclose(A2.toarray(), A0, rtol=1e-12, atol=1e-12 * np.abs(A0).max())
    np.testing.assert_allclose(g2, g0, rtol=1e-12, atol=1e-12 * np.abs(g0).max())


def _two_view_edges(noise: float, seed: int = 0) -> tuple[dict[int, np.ndarray], list[PairEdge]]:
    """Two views 20 degrees apart (focal FOCAL) with noisy correspondences: the focal is weakly fixed."""
    Rs = {0: rot(0.0), 1: rot(20.0, 1.0)}
    return Rs, ring_edges(Rs, n=60, noise=noise, seed=seed)


def test_exif_prior_holds_an_undetermined_focal():
    """With heavy noise the data barely fix the focal: the EXIF prior keeps it near EXIF; without it, it drifts."""
    Rs, edges = _two_view_edges(noise=6.0)
    centers = dict.fromkeys(Rs, ((SIZE[0] - 1) / 2, (SIZE[1] - 1) / 2))
    exif = dict.fromkeys(Rs, FOCAL * 1.08)
    _, f_prior, _, _, done = bundle_adjust(list(Rs), edges, 0, Rs, exif, centers, True, focal_prior=exif)
    assert done
    assert f_prior[1] == pytest.approx(FOCAL * 1.08, rel=0.02)
    # the prior is a plain square: a robust loss would let the data drag it far off (the bug this guards)
    _, f_free, _, _, _ = bundle_adjust(list(Rs), edges, 0, Rs, exif, centers, True)
    assert abs(f_free[1] / (FOCAL * 1.08) - 1) > abs(f_prior[1] / (FOCAL * 1.08) - 1)


def test_wrong_exif_is_overruled_by_the_data():
    """EXIF 40 % too long (a cropped photo) on clean views: solve_rotations keeps the focal the views fix."""
    Rs = {k: rot(25 * k, 2.0) for k in range(4)}
    edges = ring_edges(Rs, noise=0.2)
    geo = solve_rotations(list(Rs), edges, 0, dict.fromkeys(Rs, SIZE), [f"v{k}" for k in Rs],
                          exif=dict.fromkeys(Rs, FOCAL * 1.4), seed=0)
    assert geo is not None and geo.focal == pytest.approx(FOCAL, rel=0.01)


def test_right_exif_is_kept():
    """EXIF 1 % off on clean views: the prior's solution fits as well and stays within 1 % of the truth."""
    Rs = {k: rot(25 * k, 2.0) for k in range(4)}
    geo = solve_rotations(list(Rs), ring_edges(Rs, noise=0.2), 0, dict.fromkeys(Rs, SIZE), [f"v{k}" for k in Rs],
                          exif=dict.fromkeys(Rs, FOCAL * 1.01), seed=0)
    assert geo is not None and geo.focal == pytest.approx(FOCAL, rel=0.01)


def test_full_turn_recovers_focal_and_rotations():
    """12 views 30 degrees apart (a full turn, tilted rig): focal within 1 %, rotations within 0.1 degrees."""
    Rs = {k: rot(30 * k, 4.0, 1.0) for k in range(12)}
    edges = ring_edges(Rs)
    sizes = dict.fromkeys(Rs, SIZE)
    geo = solve_rotations(list(Rs), edges, 0, sizes, [f"v{k}" for k in Rs], seed=0)
    assert geo is not None and geo.full_turn
    for k, cam in geo.cameras.items():
        assert cam.focal == pytest.approx(FOCAL, rel=0.01)
        # relative rotations do not depend on the world frame that wave correction picks
        assert angle_deg(cam.R @ geo.cameras[0].R.T, Rs[k] @ Rs[0].T) < 0.1, k
    # the full turn is exactly 2 pi f wide in whole pixels
    assert (2 * math.pi * geo.focal) == pytest.approx(round(2 * math.pi * geo.focal), abs=1e-6)
    assert geo.focal == pytest.approx(FOCAL, rel=0.01)
    # the horizon is straight: wave correction finds the true up vector (seen from each camera: R e_y)
    for k, cam in geo.cameras.items():
        assert math.degrees(math.acos(min(1.0, cam.R[:, 1] @ Rs[k][:, 1]))) < 0.1, k


def test_order_invariance_of_the_model():
    """The same cameras, numbered in reverse: the same focal and the same relative rotations."""
    Rs = {k: rot(25 * k, 2.0 * (k % 2)) for k in range(5)}
    edges = ring_edges(Rs, noise=0.3)
    names = [f"v{k}" for k in range(5)]
    keys = [f"key{k}" for k in range(5)]
    a = solve_rotations(list(Rs), edges, 2, dict.fromkeys(Rs, SIZE), names, keys)
    rev = {k: 4 - k for k in Rs}
    edges_r = [PairEdge(min(rev[e.i], rev[e.j]), max(rev[e.i], rev[e.j]), np.linalg.inv(e.H), e.score, e.n_inliers,
                        e.pts_j, e.pts_i) for e in edges]
    b = solve_rotations(list(Rs), edges_r, 2, dict.fromkeys(Rs, SIZE), names[::-1], keys[::-1])
    assert a.focal == pytest.approx(b.focal, rel=1e-6)
    for k in Rs:
        assert angle_deg(a.cameras[k].R, b.cameras[rev[k]].R) < 1e-4


def test_wave_correct_straightens_a_tilted_sweep():
    """A sweep with the rig pitched 10 degrees: horizontal correction makes every x axis horizontal."""
    Rs = {k: rot(20 * k, 10.0) for k in range(5)}
    out = wave_correct(Rs, "horizontal", 0)
    assert all(abs(R[0, 1]) < 1e-9 for R in out.values())
    assert all(angle_deg(out[k] @ out[0].T, Rs[k] @ Rs[0].T) < 1e-5 for k in Rs)
    vert = wave_correct({k: rot(0.0, 20 * k) for k in range(5)}, "vertical", 0)
    assert all(abs(R[0, 1]) < 1e-9 and abs(R[0, 2]) < 1e-9 for R in vert.values())  # common x axis = world x
    with pytest.raises(ConfigError, match="wave_correct='diagonal'"):
        wave_correct(Rs, "diagonal", 0)


def test_partial_sweep_is_not_a_full_turn():
    Rs = {k: rot(30 * k) for k in range(6)}
    edges = ring_edges(Rs)
    assert not is_full_turn(list(Rs), edges, Rs)


def test_pairs_close_turn_without_adjustment():
    """The pairs' homographies alone tell a full turn (tilted rig, noisy points) from a 150-degree sweep, in
    either numbering; pairs that fix no focal (pure shifts) never make a turn."""
    full = {k: rot(30 * k, 4.0, 1.0) for k in range(12)}
    edges = ring_edges(full, noise=0.5)
    sizes = dict.fromkeys(full, SIZE)
    assert pairs_close_turn(list(full), edges, 0, sizes) and pairs_close_turn(list(full), edges, 7, sizes)
    part = {k: rot(30 * k, 4.0) for k in range(6)}
    assert not pairs_close_turn(list(part), ring_edges(part), 2, dict.fromkeys(part, SIZE))
    shift = np.array([[1.0, 0, 80], [0, 1, 0], [0, 0, 1]])
    shifts = [PairEdge(k, k + 1, shift, 0.9, 50, np.zeros((50, 2)), np.zeros((50, 2))) for k in range(3)]
    assert not pairs_close_turn(list(range(4)), shifts, 0, dict.fromkeys(range(4), SIZE))


def test_camera_json_round_trip(tmp_path):
    """save/load keeps every float exactly; a camera with a non-rotation R is a ConfigError naming it."""
    cams = [Camera("a.jpg", SIZE, 261.25, rot(10, 2, 1)), Camera("b.jpg", SIZE, 262.5, rot(40, 1, 0), (150.0, 110.0))]
    reg = Registration(cams, "rotation", 261.875, (159.5, 119.5), "a.jpg", full_turn=False, rotating=True)
    back = Registration.load(reg.save(tmp_path / "cams.json"))
    assert back.names == ["a.jpg", "b.jpg"] and back.focal == reg.focal and back.cameras[1].principal == (150.0, 110.0)
    assert all(np.array_equal(x.R, y.R) for x, y in zip(cams, back.cameras))
    assert all(np.array_equal(x, y) for x, y in zip(reg.homographies(), back.homographies()))
    bad = reg.to_dict()
    bad["cameras"][0]["R"] = np.eye(3).tolist()
    bad["cameras"][0]["R"][0][0] = 2.0
    with pytest.raises(ConfigError, match="camera a.jpg"):
        Registration.from_dict(bad)


# --- end to end on rendered views -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def turn_views() -> list[np.ndarray]:
    """10 views 36 degrees apart around a textured sphere (a full turn), pitched 3 degrees."""
    tex = texture()
    return [render(tex, rot(36 * k, 3.0)) for k in range(10)]


@pytest.fixture(scope="module")
def turn_pano(turn_views):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return stitch_images(turn_views, crop=False, seam="voronoi", blend="feather")


def test_full_turn_closes_and_wraps(turn_pano):
    """The loop closes: a 360-degree spherical canvas exactly 2 pi f wide, focal within 1 %, all 10 kept."""
    p = turn_pano
    assert p.full_turn and p.model == "rotation" and p.projection == "spherical" and len(p.names) == 10
    assert p.focal == pytest.approx(FOCAL, rel=0.01)
    assert p.canvas.size[0] == round(2 * math.pi * p.focal)
    assert len(p.canvas.boxes) == 11  # the image crossing the wrap is warped in both parts
    # the wrap has no seam: the first and last columns continue each other
    rows = p.mask[:, 0] & p.mask[:, -1]
    assert rows.sum() > 50
    step = np.abs(p.image[rows, 0].astype(float) - p.image[rows, -1].astype(float)).mean()
    inner = np.abs(p.image[rows, 1].astype(float) - p.image[rows, 0].astype(float)).mean()
    assert step < 2.5 * inner + 2.0


def test_order_invariance_end_to_end(turn_views, turn_pano):
    """Reversed and shuffled input: the same canvas size and the same focal (to 1e-9)."""
    shuffled = [turn_views[k] for k in np.random.default_rng(5).permutation(len(turn_views))]
    for views in (turn_views[::-1], shuffled):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reg = register(views)
        assert reg.full_turn and reg.focal == pytest.approx(turn_pano.focal, rel=1e-9)


def test_to_panorama_maps_pixels(turn_views, turn_pano):
    """Image pixels mapped into the panorama land on the same content (a few gray levels)."""
    p = turn_pano
    k = 3
    pts = np.array([[60.0, 50.0], [160.0, 120.0], [250.0, 190.0]])
    uv = np.rint(p.to_panorama(k, pts)).astype(int)
    got = p.image[uv[:, 1], uv[:, 0]].astype(float)
    want = turn_views[k][pts[:, 1].astype(int), pts[:, 0].astype(int)].astype(float)
    assert np.abs(got - want).mean() < 20


def test_recompose_from_saved_cameras_is_pixel_identical(turn_views, tmp_path):
    """register -> save -> load -> compose gives the pixels of stitch_images with the same options."""
    views = turn_views[:3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = stitch_images(views, seam="voronoi")
        reg = register(views)
        path = reg.save(tmp_path / "cams.json")
        again = compose(views, str(path), seam="voronoi")
    assert direct.model == "rotation+homography" and not direct.full_turn
    assert again.image.shape == direct.image.shape and np.array_equal(again.image, direct.image)
    with pytest.raises(ConfigError, match="no input image for camera"):
        compose(views[:2], reg)


def test_scans_mode_on_a_flat_scan():
    """A flat page scanned in 3 shifted, slightly rotated strips: model 'scans' keeps every map affine."""
    page = texture(seed=9, size=(700, 300))
    M = [cv2.getRotationMatrix2D((0, 0), a, 1.0) + np.array([[0, 0, -x], [0, 0, -y]])
         for a, x, y in ((0.0, 0, 20), (1.0, 180, 30), (-1.5, 370, 25))]
    strips = [cv2.warpAffine(page, m, (300, 240)) for m in M]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = stitch_images(strips, model="scans", crop=False, seam="voronoi", blend="feather")
    assert p.model == "scans" and p.projection == "plane"
    for H in p.homographies:
        np.testing.assert_allclose(H[2], [0, 0, 1], atol=1e-12)
    # strip k -> strip 0 should be M0 M_k^-1 (as 3 x 3)
    A = [np.vstack([m, [0, 0, 1]]) for m in M]
    H10 = np.linalg.inv(p.homographies[0]) @ p.homographies[1]
    assert corner_error(H10, A[0] @ np.linalg.inv(A[1]), 300, 240) < 1.5
    assert p.size[0] == pytest.approx(300 + 370, abs=12)


def test_exif_focal_of_a_canon_40d(shared_data):
    """opencv_boat: 25 mm at 4438.36 px per inch of focal plane -> about 4368 px."""
    pytest.importorskip("PIL")
    path = shared_data / "panoramas" / "opencv_boat" / "boat01.jpg"
    if not path.exists():
        pytest.skip(f"{path} not found")
    assert exif_focal_px(path, (3888, 2592)) == pytest.approx(4368.5, rel=1e-3)


def test_pair_shortlist_keeps_neighbours_and_the_loop(turn_views):
    """The cheap first pass keeps every ring neighbour, the loop-closing pair (9, 0) included, and not all pairs."""
    from stitch.panorama.graph import shortlist

    keys = [f"k{k}" for k in range(len(turn_views))]
    pairs = shortlist(turn_views, keys, k=2, min_images=4).pairs
    ring = {(k, k + 1) for k in range(9)} | {(0, 9)}
    assert ring <= set(pairs) and len(pairs) < 45
    rev = shortlist(turn_views[::-1], keys[::-1], k=2, min_images=4).pairs
    assert sorted((9 - j, 9 - i) for i, j in rev) == pairs  # the same pairs whatever the order


def test_recompose_at_another_projection(turn_views):
    """A registration for the plane re-renders cylindrical without matching; every projection maps pixels."""
    views = turn_views[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg = register(views, projection="plane")
        flat = compose(views, reg, projection="plane", crop=False)
        cyl = compose(views, reg, projection="cylindrical", crop=False)
    assert reg.model == "homography" and flat.projection == "plane" and cyl.projection == "cylindrical"
    for p in (flat, cyl):
        uv = np.rint(p.to_panorama(1, np.array([[160.0, 120.0]]))).astype(int)[0]
        assert p.mask[uv[1], uv[0]]
        assert np.abs(p.image[uv[1], uv[0]].astype(float) - views[1][120, 160].astype(float)).mean() < 20


def test_timelapse_of_a_full_turn_has_one_frame_per_image(turn_views, tmp_path):
    """The image crossing the 360-degree wrap is warped in two pieces, but gets one frame, numbered in order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = stitch_images(turn_views, crop=False, seam="voronoi", blend="feather", timelapse=str(tmp_path / "tl"))
    assert len(p.canvas.boxes) > len(p.names)  # some image crosses the wrap
    assert [Path(f).name for f in p.timelapse] == [f"{k:04d}_image{k}.png" for k in range(len(p.names))]
    union = np.zeros(p.mask.shape, bool)
    for f in p.timelapse:
        union |= cv2.imread(f).any(axis=2)
    assert (union | ~p.mask).mean() > 0.999  # together the frames cover the panorama


def test_plane_on_a_full_turn_fails_before_the_camera_model(turn_views, tmp_path, monkeypatch, capsys):
    """projection 'plane' cannot hold a full turn: the one-line error comes right after the pair screening
    (the camera model, its adjustments and the compositing never run), in the API and on the command line."""

    def never(*_args, **_kwargs):
        raise AssertionError("the camera model ran")

    monkeypatch.setattr(pipeline, "verified_registration", never)
    message = "projection='plane' cannot hold a full 360-degree turn (the photos close a loop); use " \
              "projection='cylindrical' or projection='spherical'"
    for model in ("auto", "rotation", "homography"):
        with warnings.catch_warnings(), pytest.raises(ConfigError) as err:
            warnings.simplefilter("ignore")
            stitch_images(turn_views, projection="plane", model=model)
        assert str(err.value) == message
    for k, view in enumerate(turn_views):
        cv2.imwrite(str(tmp_path / f"v{k}.png"), view)
    assert main(["run", str(tmp_path), "-o", str(tmp_path / "out" / "p.jpg"), "--projection", "plane", "-q"]) == 1
    cli_message = ("error: --projection plane cannot hold a full 360-degree turn (the photos close a loop); use "
                   "--projection cylindrical or --projection spherical")
    assert capsys.readouterr().err.strip().splitlines() == [cli_message]
    assert not (tmp_path / "out").exists()


# --- a narrow field of view ----------------------------------------------------------------------------------


def test_shift_ray_rotation_of_a_narrow_pair():
    """Two 480 x 360 views 5 degrees apart at an 8.5-degree field of view (focal 3248 px), 0.5 px noise on 40
    matches: the rotation fitted to the rays is within 0.1 degree; the one nearest to K^-1 H K (H fitted to the
    same matches, its perspective terms hardly fixed) is off by more than half a degree."""
    from stitch.panorama.camera import nearest_rotation, ray_rotation, relative_rotation

    f, size = 3248.5, (480, 360)
    K = K_of(f, size)
    R_a, R_b = rot(0.0, 1.0, 0.3), rot(5.1, 0.5, -0.2)
    R_ab = R_b @ R_a.T
    worst_ray, worst_h = 0.0, 0.0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        p = rng.uniform([0, 0], size, (400, 2))
        q = np.hstack([p, np.ones((len(p), 1))]) @ (K @ R_ab @ np.linalg.inv(K)).T
        q = q[:, :2] / q[:, 2:]
        ok = (q[:, 0] >= 0) & (q[:, 0] < size[0]) & (q[:, 1] >= 0) & (q[:, 1] < size[1])
        p, q = p[ok][:40], q[ok][:40] + rng.normal(0, 0.5, (40, 2))
        H, _ = cv2.findHomography(p, q, 0)
        worst_ray = max(worst_ray, angle_deg(ray_rotation(p, q, K, K), R_ab))
        worst_h = max(worst_h, angle_deg(nearest_rotation(np.linalg.inv(K) @ H @ K), R_ab))
        e = PairEdge(0, 1, H, 0.9, 40, p, q)
        np.testing.assert_allclose(relative_rotation(e, 1, K, K), ray_rotation(q, p, K, K), atol=1e-12)
    assert worst_ray < 0.1 and worst_h > 0.5, (worst_ray, worst_h)


def test_loop_focal_closes_a_narrow_turn():
    """A full turn of 36 narrow views chained at a focal 20 % off winds 1.25 or 0.83 turns; loop_focal finds the
    focal at which it closes (within 0.2 %); an open part of the turn (no loop-closing pair) gives None."""
    from stitch.panorama.camera import loop_focal

    n, size = 36, (480, 360)
    f = size[0] / 2 / math.tan(math.radians(10.0 / 0.6 / 2))
    Rs = {k: rot(10.0 * k, 0.5 * math.sin(k), 0.3 * math.cos(k)) for k in range(n)}
    rng = np.random.default_rng(0)
    K = K_of(f, size)
    edges = []
    for k in range(n):
        i, j = sorted((k, (k + 1) % n))
        p = rng.uniform([0, 0], size, (400, 2))
        q = np.hstack([p, np.ones((len(p), 1))]) @ (K @ Rs[j] @ Rs[i].T @ np.linalg.inv(K)).T
        q = q[:, :2] / q[:, 2:]
        ok = (q[:, 0] >= 0) & (q[:, 0] < size[0]) & (q[:, 1] >= 0) & (q[:, 1] < size[1])
        p, q = p[ok][:40], q[ok][:40] + rng.normal(0, 0.3, (40, 2))
        edges.append(PairEdge(i, j, cv2.findHomography(p, q, 0)[0], 0.9, 40, p, q))
    sizes = dict.fromkeys(range(n), size)
    for start in (0.8 * f, 1.2 * f):
        assert loop_focal(list(range(n)), edges, 0, sizes, start) == pytest.approx(f, rel=2e-3)
    open_part = [e for e in edges if e.j < 20]
    assert loop_focal(list(range(20)), open_part, 0, sizes, 0.8 * f) is None
