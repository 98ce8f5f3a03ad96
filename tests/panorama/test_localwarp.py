"""stitch.panorama.localwarp: parallax-tolerant local alignment after the camera model (known answers on rendered
scenes with depth, a pure homography left alone, decay, outliers, determinism, full turns, round trips)."""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest
from scipy.spatial import cKDTree

from stitch.errors import ConfigError
from stitch.panorama.camera import Registration
from stitch.panorama.config import PanoramaConfig
from stitch.panorama.displacement import Displacement, invert_field
from stitch.panorama.localwarp import image_lines, local_warp, pair_matches, screen_gaps
from stitch.panorama.pipeline import compose, stitch_images
from stitch.panorama.viewgraph import PairEdge, PairMatches
from stitch.panorama.warp import Projection, canvas_bounds, inverse_maps, warp_image

W, H, F = 640, 480, 500.0
K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1.0]])
WALL_Z, GROUND_Y = 8.0, 1.6  # metres: a wall ahead and a ground plane below the camera (y down)


def rich_texture(seed: int, size: tuple[int, int] = (3000, 2000)) -> np.ndarray:
    """(h, w, 3) uint8: smooth colour noise under many small shapes and numbers (features at every place)."""
    w, h = size
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for s, amp in ((200, 0.6), (50, 0.4)):
        img += amp * cv2.resize(rng.random((h // s + 2, w // s + 2, 3)).astype(np.float32), (w, h),
                                interpolation=cv2.INTER_CUBIC)
    img = np.clip(img * 160 + 40, 0, 255).astype(np.uint8)
    for _ in range(w * h // 500):
        x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(4, 30))
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 4))
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + r, y + int(rng.integers(4, 30))), col, -1)
        elif kind == 1:
            cv2.circle(img, (x, y), r // 2 + 2, col, -1)
        elif kind == 2:
            cv2.line(img, (x, y), (x + int(rng.integers(-40, 40)), y + int(rng.integers(-40, 40))), col, 2)
        else:
            cv2.putText(img, str(int(rng.integers(0, 999))), (x, y), cv2.FONT_HERSHEY_SIMPLEX, r / 20.0, col, 2)
    return img


def rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def render(R: np.ndarray, C: np.ndarray, textures: tuple[np.ndarray, np.ndarray], ground: bool = True,
           px_per_m: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """(view (H, W, 3) uint8, world point of each pixel (H, W, 3)) of a camera (R world -> camera, centre C)
    looking at the wall (and, ``ground``, the ground plane in front of it)."""
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T @ R
    s_wall = (WALL_Z - C[2]) / rays[..., 2]
    s_ground = np.where(rays[..., 1] > 1e-9, (GROUND_Y - C[1]) / np.maximum(rays[..., 1], 1e-9), np.inf)
    on_ground = (s_ground < s_wall) & ground
    X = C + np.where(on_ground, s_ground, s_wall)[..., None] * rays
    th, tw = textures[0].shape[:2]
    mx = (X[..., 0] * px_per_m + tw / 2).astype(np.float32)
    wall = cv2.remap(textures[0], mx, (X[..., 1] * px_per_m + th / 2).astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)
    floor = cv2.remap(textures[1], mx, (X[..., 2] * px_per_m).astype(np.float32), cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REFLECT)
    return np.where(on_ground[..., None], floor, wall), X


def project_world(cam: tuple[np.ndarray, np.ndarray], X: np.ndarray) -> np.ndarray:
    """World points (..., 3) -> pixels (..., 2) of camera (R, C)."""
    R, C = cam
    x = (X - C) @ R.T @ K.T
    return x[..., :2] / x[..., 2:3]


def scene(ground: bool = True, n: int = 3) -> tuple[list[np.ndarray], list[np.ndarray], list]:
    """n views 15 degrees apart, each 0.35 m right of the last: (images, world points, cameras)."""
    textures = (rich_texture(0), rich_texture(1))
    cams = [(rot_y(-15.0 * k), np.array([0.35 * k, 0.0, 0.0])) for k in range(n)]
    out = [render(R, C, textures, ground) for R, C in cams]
    return [o[0] for o in out], [o[1] for o in out], cams


def quiet_stitch(images, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return stitch_images(images, **options)


@pytest.fixture(scope="module")
def two_planes():
    """The wall-and-ground scene stitched with and without the local warp: (images, world points, cameras, off, on)."""
    images, X, cams = scene()
    return images, X, cams, quiet_stitch(images, local_warp=False), quiet_stitch(images, local_warp=True)


def ground_errors(pano, X, cams, a: int, b: int, near_px: float = 16.0) -> np.ndarray:
    """Distances (px) in the panorama between where pano puts the same ground point from image a and from image b,
    over the ground pixels of a seen by b within ``near_px`` of a match of the pair."""
    ys, xs = np.mgrid[4:H - 4:4, 4:W - 4:4]
    xa = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    Xw = X[a][ys.ravel(), xs.ravel()]
    xb = project_world(cams[b], Xw)
    ok = (xb[:, 0] > 2) & (xb[:, 0] < W - 3) & (xb[:, 1] > 2) & (xb[:, 1] < H - 3) & (Xw[:, 1] > GROUND_Y - 0.01)
    m = next(m for m in pano.cameras.matches if (m.a, m.b) == (f"image{a}", f"image{b}"))
    near = cKDTree(m.pts_a).query(xa[ok])[0] < near_px
    return np.linalg.norm(pano.to_panorama(a, xa[ok][near]) - pano.to_panorama(b, xb[ok][near]), axis=1)


def overlap_flow(pano, images, a: int, b: int) -> np.ndarray:
    """DIS flow magnitudes (px) between images a and b warped alone onto pano's canvas, on their textured overlap."""
    frames = []
    for k in (a, b):
        wi = warp_image(images[k], pano.homographies[k], pano.canvas, k)
        f = np.zeros((pano.canvas.size[1], pano.canvas.size[0]), np.uint8)
        m = np.zeros(f.shape, np.uint8)
        h, w = wi.mask.shape
        f[wi.offset[1]:wi.offset[1] + h, wi.offset[0]:wi.offset[0] + w] = cv2.cvtColor(wi.image, cv2.COLOR_BGR2GRAY)
        m[wi.offset[1]:wi.offset[1] + h, wi.offset[0]:wi.offset[0] + w] = wi.mask
        frames.append((f, cv2.erode(m, np.ones((7, 7), np.uint8)) > 0))
    both = frames[0][1] & frames[1][1]
    ys, xs = np.nonzero(both)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    (ga, _), (gb, _), m = frames[0], frames[1], both[box]
    ga, gb = ga[box].copy(), gb[box].copy()
    ga[~m], gb[~m] = gb[~m], ga[~m]  # outside the common area each sees the other: no edge at its border
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(ga, gb, None)
    grad = np.hypot(cv2.Sobel(ga, cv2.CV_32F, 1, 0), cv2.Sobel(ga, cv2.CV_32F, 0, 1)) / 8
    return np.linalg.norm(flow, axis=2)[m & (grad > 8)]


def test_shift(two_planes):
    """Known answer: a wall and a ground plane seen by a camera that turns and shifts. The global model aligns the
    wall and leaves the ground 5 px or more apart; the local warp brings it within 1 px, at the matched points, at the
    ground points near them (true correspondences from the rendering) and by optical flow over the overlap."""
    images, X, cams, off, on = two_planes
    lw = on.local_warp
    assert off.local_warp is None and lw is not None and lw.used > 1000
    assert lw.before[1] >= 5.0 and lw.after[0] < 0.5 and lw.after[1] < 2.5  # (median, p95) px of the matches
    for a, b in ((0, 1), (1, 2)):
        before, after = ground_errors(off, X, cams, a, b), ground_errors(on, X, cams, a, b)
        assert np.median(before) >= 5.0 and np.median(after) < 1.0, (a, b, np.median(before), np.median(after))
        flow_off, flow_on = overlap_flow(off, images, a, b), overlap_flow(on, images, a, b)
        assert np.percentile(flow_off, 90) >= 5.0 and np.percentile(flow_on, 90) < 1.0, (
            a, b, np.percentile(flow_off, 90), np.percentile(flow_on, 90))
    # the panorama itself shows it: the ground pixels of image 1 land on the same ground content
    assert on.full_turn is False and on.canvas.local and on.summary()["size"] == list(on.size)


def test_single_plane_is_left_unchanged():
    """A pure homography (the wall alone): the matches agree up to noise, so no image gets a field above 0.05 px and
    every point maps where the global model maps it."""
    images, _, _ = scene(ground=False, n=2)
    off, on = quiet_stitch(images, local_warp=False), quiet_stitch(images, local_warp=True)
    lw = on.local_warp
    assert lw.used > 500 and lw.before[1] < 1.0
    assert all(f is None or max(np.abs(f.forward).max(), np.abs(f.inverse).max()) < 0.05 for f in lw.fields)
    pts = np.stack(np.meshgrid(np.linspace(0, W - 1, 9), np.linspace(0, H - 1, 7)), -1).reshape(-1, 2)
    for k in range(2):
        delta = on.to_panorama(k, pts) - np.asarray(on.offset) - (off.to_panorama(k, pts) - np.asarray(off.offset))
        assert np.abs(delta).max() < 0.05


def synthetic_pair(gap: float = 10.0, n: int = 400, seed: int = 0):
    """Two 400 x 300 images side by side on the plane (image 1 shifted 300 px right), and matches over their
    100 px overlap whose ends the global model places ``gap`` px apart (the parallax of a nearer object)."""
    rng = np.random.default_rng(seed)
    Hs = [np.eye(3), np.array([[1.0, 0, 300], [0, 1, 0], [0, 0, 1]])]
    pa = np.stack([rng.uniform(305, 395, n), rng.uniform(5, 295, n)], 1)
    pb = pa - [300.0, 0.0] + [gap, 0.0]
    return Hs, [(400, 300), (400, 300)], ["a", "b"], PairMatches("a", "b", pa, pb, n)


def test_decays_far_from_the_overlaps():
    """Both images move half the gap each in the overlap (the average stays put) and back to the global model away
    from it: the field is below 0.1 px on each image's far side."""
    Hs, sizes, names, pm = synthetic_pair(gap=10.0)
    lw = local_warp(Hs, sizes, Projection("plane"), names, [pm])
    assert lw.before[0] == pytest.approx(10.0) and lw.after[0] < 0.1 and lw.after[1] < 0.75
    fa, fb = lw.fields
    mid = np.array([[350.0, 150.0]])
    assert fa.at(mid)[0, 0] == pytest.approx(5.0, abs=0.5) and fb.at(mid)[0, 0] == pytest.approx(-5.0, abs=0.5)
    far_a = np.stack([np.zeros(7), np.linspace(0, 299, 7)], 1)  # image a's left border
    far_b = far_a + [699.0, 0.0]  # image b's right border
    assert np.abs(fa.at(far_a)).max() < 0.1 and np.abs(fb.at(far_b)).max() < 0.1
    # smooth: a vertical line of image a where the field decays (100 px from the overlap, moved by about 1.5 px)
    # stays straight within 0.25 px over its 300 px
    line = np.stack([np.full(41, 200.0), np.linspace(0, 299, 41)], 1)
    moved = fa.moved(line)
    assert 0.5 < np.median(moved[:, 0] - 200.0) < 3.0 and np.ptp(moved[:, 0]) < 0.25


def chord_distance(pts: np.ndarray) -> float:
    """Largest distance (px) of pts (N, 2) from the chord through the first and last."""
    d = pts[-1] - pts[0]
    return float(np.max(np.abs(d[0] * (pts[:, 1] - pts[0, 1]) - d[1] * (pts[:, 0] - pts[0, 0]))) / np.hypot(*d))


def test_lines_stay_straight():
    """Matches in a strip at the overlap's far edge whose gap is a 10 px bump along it: the smooth field bends a
    vertical segment of image a 70 px away from them by over 2 px; with the segment in the line term it stays
    within 0.15 px of straight, and the matches are fitted as well (p95 residual within 0.1 px)."""
    rng = np.random.default_rng(0)
    n = 400
    Hs = [np.eye(3), np.array([[1.0, 0, 300], [0, 1, 0], [0, 0, 1]])]
    pa = np.stack([rng.uniform(370, 398, n), rng.uniform(5, 295, n)], 1)
    gap = 10.0 * np.exp(-(((pa[:, 1] - 150) / 50) ** 2))
    pm = PairMatches("a", "b", pa, pa - [300.0, 0.0] + np.stack([gap, np.zeros(n)], 1), n)
    line = np.stack([np.full(57, 330.0), np.linspace(10, 290, 57)], 1)
    plain = local_warp(Hs, [(400, 300)] * 2, Projection("plane"), ["a", "b"], [pm])
    kept = local_warp(Hs, [(400, 300)] * 2, Projection("plane"), ["a", "b"], [pm],
                      [np.array([[330.0, 10.0, 330.0, 290.0]]), np.zeros((0, 4))])
    assert chord_distance(plain.fields[0].moved(line)) > 2.0
    assert chord_distance(kept.fields[0].moved(line)) < 0.15
    assert kept.after[1] < plain.after[1] + 0.1
    asked: list[int] = []
    threaded = local_warp(Hs, [(400, 300)] * 2, Projection("plane"), ["a", "b"], [pm],
                          lambda k: asked.append(k) or ([[330.0, 10.0, 330.0, 290.0]] if k == 0 else []), workers=2)
    assert sorted(asked) == [0, 1] and np.array_equal(threaded.fields[0].forward, kept.fields[0].forward)
    with pytest.raises(ConfigError, match="1 line sets must match"):
        local_warp(Hs, [(400, 300)] * 2, Projection("plane"), ["a", "b"], [pm], [np.zeros((0, 4))])


def test_image_lines_finds_a_drawn_line():
    """A 3 px line drawn from (50, 40) to (350, 250) is found, its ends within 3 px (either direction)."""
    img = np.full((300, 400, 3), 90, np.uint8)
    cv2.line(img, (50, 40), (350, 250), (255, 255, 255), 3)
    seg = image_lines(img)
    ends = np.sort(seg.reshape(-1, 2, 2), axis=1)  # each segment's ends in x order
    assert len(seg) >= 1 and np.abs(ends - [[50, 40], [350, 250]]).max(axis=(1, 2)).min() < 3.0
    assert image_lines(np.full((300, 400, 3), 90, np.uint8)).shape == (0, 4)


def test_outliers_are_dropped():
    """Planted wrong matches (at known indices, 30-80 px off) are flagged by the coherence screen, and the fit is
    the one without them."""
    Hs, sizes, names, pm = synthetic_pair(gap=6.0, n=300)
    rng = np.random.default_rng(1)
    bad = rng.choice(300, 15, replace=False)
    wrong = pm.pts_b.copy()
    wrong[bad] += rng.uniform(30, 80, (15, 2)) * rng.choice([-1, 1], (15, 2))
    p, q = pm.pts_a, project_plane(Hs[1], wrong)
    keep, _ = screen_gaps(p, q - p, tolerance=3.0, noise=0.5)
    assert set(np.flatnonzero(~keep)) == set(bad)
    lw = local_warp(Hs, sizes, Projection("plane"), names, [PairMatches("a", "b", pm.pts_a, wrong, 300)])
    assert lw.incoherent == 15 and lw.used == 285 and lw.after[1] < 0.3


def project_plane(Hm: np.ndarray, pts: np.ndarray) -> np.ndarray:
    ph = np.hstack([pts, np.ones((len(pts), 1))]) @ Hm.T
    return ph[:, :2] / ph[:, 2:]


def test_deterministic():
    """Same inputs, same fields (bit for bit); the matches' order does not matter beyond rounding."""
    Hs, sizes, names, pm = synthetic_pair(gap=8.0)
    a = local_warp(Hs, sizes, Projection("plane"), names, [pm])
    b = local_warp(Hs, sizes, Projection("plane"), names, [pm])
    for fa, fb in zip(a.fields, b.fields):
        assert np.array_equal(fa.forward, fb.forward) and np.array_equal(fa.inverse, fb.inverse)
    order = np.random.default_rng(3).permutation(len(pm.pts_a))
    c = local_warp(Hs, sizes, Projection("plane"), names,
                   [PairMatches("a", "b", pm.pts_a[order], pm.pts_b[order], pm.inliers)])
    assert all(np.abs(fa.forward - fc.forward).max() < 1e-6 for fa, fc in zip(a.fields, c.fields))


def test_rendering_agrees_with_to_panorama():
    """The renderer's inverse maps and the forward field used by Panorama.to_panorama are inverses (0.05 px)."""
    Hs, sizes, names, pm = synthetic_pair(gap=12.0)
    lw = local_warp(Hs, sizes, Projection("plane"), names, [pm])
    canvas = canvas_bounds(Hs, sizes, Projection("plane"), names, local=lw.fields)
    assert canvas.local and canvas.boxes[0][2] > 400  # image a's box grew by the field's reach
    for k in range(2):
        x0, y0, x1, y1 = canvas.boxes[k]
        mx, my, valid = inverse_maps(Hs[k], canvas, canvas.boxes[k], canvas.displacement(k))
        assert valid.all()
        rows, cols = np.mgrid[y0 + 5:y1 - 5:23, x0 + 5:x1 - 5:17]
        src = np.stack([mx[rows - y0, cols - x0], my[rows - y0, cols - x0]], -1).reshape(-1, 2).astype(float)
        inside = (src[:, 0] > 0) & (src[:, 0] < 399) & (src[:, 1] > 0) & (src[:, 1] < 299)
        uv = lw.fields[k].moved(project_plane(Hs[k], src[inside]))
        want = np.stack([cols, rows], -1).reshape(-1, 2)[inside] + np.asarray(canvas.offset)
        assert np.abs(uv - want).max() < 0.05


def test_full_turn_wraps():
    """On a full turn two images meeting across the wrap (u = +-pi f) are aligned through it: the gap is taken
    modulo the turn, each field is sampled a turn away alike, and both pieces of the image crossing it warp."""
    f, size = 300.0, (400, 300)
    Kc = np.array([[f, 0, 199.5], [0, f, 149.5], [0, 0, 1.0]])
    proj = Projection("spherical", f, (199.5, 149.5), turn=True)
    Hs = [Kc @ rot_y(yaw).T @ np.linalg.inv(Kc) for yaw in (165.0, -165.0)]  # 30 degrees apart across the wrap
    rng = np.random.default_rng(0)
    dirs = np.stack([np.sin(np.radians(rng.uniform(172, 188, 300))), rng.uniform(-0.3, 0.3, 300),
                     np.cos(np.radians(rng.uniform(172, 188, 300)))], 1)
    pix = [(dirs @ rot_y(yaw).T @ Kc.T) for yaw in (165.0, -165.0)]
    pa, pb = (p[:, :2] / p[:, 2:] for p in pix)
    pb = pb + [4.0, 0.0]  # a nearer object: image b sees it 4 px further right
    lw = local_warp(Hs, [size, size], proj, ["a", "b"], [PairMatches("a", "b", pa, pb, 300)])
    assert lw.before[0] == pytest.approx(4.0, abs=0.5) and lw.after[1] < 0.3
    fa = lw.fields[0]
    uv = np.array([[math.pi * f - 5.0, 0.0]])
    assert np.allclose(fa.at(uv), fa.at(uv - [2 * math.pi * f, 0.0]))
    canvas = canvas_bounds(Hs, [size, size], proj, ["a", "b"], local=lw.fields)
    assert canvas.size[0] == round(2 * math.pi * f) and len(canvas.boxes) >= 3 and len(canvas.local) == len(canvas.boxes)
    img = rich_texture(2, size)
    plain = canvas_bounds(Hs, [size, size], proj, ["a", "b"])
    covered = [sum(int(wi.mask.sum()) for k in range(len(c.boxes)) if c.source(k) == 0
                   and (wi := warp_image(img, Hs[0], c, k)) is not None) for c in (plain, canvas)]
    assert covered[1] == pytest.approx(covered[0], rel=0.01)  # the two pieces still hold the whole image


def test_matches_round_trip_and_recompose(two_planes, tmp_path):
    """The registration keeps each pair's matches (rounded to 0.01 px, so its JSON is exact): compose() from the
    saved cameras renders the pixels of stitch_images with local_warp."""
    images, _, _, _, on = two_planes
    reg = on.cameras
    assert len(reg.matches) == len(reg.edges) and all(m.inliers <= len(m.pts_a) <= 600 for m in reg.matches)
    back = Registration.load(reg.save(tmp_path / "cams.json"))
    assert all(np.array_equal(m.pts_a, n.pts_a) and np.array_equal(m.pts_b, n.pts_b) and m.inliers == n.inliers
               for m, n in zip(reg.matches, back.matches))
    again = compose(images, str(tmp_path / "cams.json"), local_warp=True)
    assert np.array_equal(again.image, on.image)


def test_pair_matches_keeps_the_parallax():
    """An edge's tentative matches off its homography (where the parallax is) keep up to half the cap."""
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 500, (900, 2))
    edge = PairEdge(0, 1, np.eye(3), 0.9, 800, pts[:800], pts[:800] + 1, pts[800:], pts[800:] + 9)
    pm = pair_matches(edge, ["x", "y"], cap=300)
    assert (pm.a, pm.b, len(pm.pts_a), pm.inliers) == ("x", "y", 300, 200)
    assert np.allclose(pm.pts_b[200:] - pm.pts_a[200:], 9.0, atol=0.011)
    assert np.array_equal(pm.pts_a, np.round(pm.pts_a, 2))


def test_exception():
    """Bad inputs are named: lengths, the option's type, malformed saved matches."""
    with pytest.raises(ConfigError, match="local_warp: 2 homographies, 1 sizes"):
        local_warp([np.eye(3)] * 2, [(10, 10)], Projection("plane"), ["a", "b"], [])
    with pytest.raises(ConfigError, match="local_warp='yes'"):
        PanoramaConfig.from_options(local_warp="yes")
    with pytest.raises(ConfigError, match="pair matches a-b: 2 and 1 points"):
        PairMatches.from_dict({"a": "a", "b": "b", "inliers": 0, "pts_a": [[0, 0], [1, 1]], "pts_b": [[0, 0]]})
    with pytest.raises(ConfigError, match="canvas_bounds: need one displacement field"):
        canvas_bounds([np.eye(3)], [(10, 10)], Projection("plane"), local=[None, None])
    empty = local_warp([np.eye(3)], [(10, 10)], Projection("plane"), ["a"], [])
    assert empty.fields == [None] and empty.used == 0


def test_invert_field():
    """A gentle analytic field and its vertex-wise inverse compose to the identity (1e-3 px)."""
    gy, gx = np.mgrid[0:20, 0:30].astype(float)
    fwd = np.stack([3 * np.sin(gx / 6.0), 2 * np.cos(gy / 5.0)], -1)
    d = invert_field(fwd, (-10.0, -20.0), 10.0)
    assert isinstance(d, Displacement) and d.shape == (20, 30)
    q = np.stack([np.linspace(20, 250, 50), np.linspace(0, 150, 50)], 1)
    p = q + d.at(q, inverse=True)
    assert np.abs(d.moved(p) - q).max() < 2e-2
