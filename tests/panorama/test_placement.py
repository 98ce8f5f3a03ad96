"""stitch.panorama.placement: which pairs of a model overlap, all of an image's partners at once."""

from __future__ import annotations

import numpy as np

from stitch.geometry import project
from stitch.panorama.placement import ModelOverlaps


def relative(H_a: np.ndarray, H_b: np.ndarray) -> np.ndarray:
    """H_b^-1 H_a with a positive determinant, written out for one pair (the reference)."""
    H = np.linalg.solve(H_b, H_a)
    return H if np.linalg.det(H) > 0 else -H


def shared_fraction(H: np.ndarray, size_a: tuple[int, int], size_b: tuple[int, int], grid: int = 9) -> float:
    """Fraction of a grid x grid lattice of a's pixels that H puts in front of and inside b, for one pair."""
    w, h = size_a
    xs, ys = np.meshgrid(np.linspace(0, w - 1, grid), np.linspace(0, h - 1, grid))
    pts = np.stack([xs.ravel(), ys.ravel()], 1)
    front = (np.hstack([pts, np.ones((len(pts), 1))]) @ H[2]) > 0
    q = project(H, pts)
    inside = front & (q[:, 0] >= 0) & (q[:, 0] <= size_b[0] - 1) & (q[:, 1] >= 0) & (q[:, 1] <= size_b[1] - 1)
    return float(inside.mean())


def test_shared_fractions_equal_the_pairwise_ones():
    """The batched fractions and relative matrices equal the one-pair ones, including matrices of negative
    determinant and pairs that do not overlap."""
    rng = np.random.default_rng(0)
    Hs = []
    for k in range(12):
        H = np.eye(3)
        H[:2, 2] = rng.uniform(-300, 300), rng.uniform(-200, 200)
        H[2, :2] = rng.normal(0, 3e-4, 2)
        H[:2, :2] += rng.normal(0, 0.1, (2, 2))
        Hs.append(-H if k % 4 == 3 else H)
    sizes = [(int(rng.integers(200, 500)), int(rng.integers(150, 400))) for _ in Hs]
    seen = 0
    model = ModelOverlaps.of(Hs, sizes)
    for a in range(len(Hs) - 1):
        rel, fa, fb = model.later(a)
        assert rel.shape == (len(Hs) - a - 1, 3, 3)
        for k, b in enumerate(range(a + 1, len(Hs))):
            H = relative(Hs[a], Hs[b])
            assert np.allclose(rel[k], H, rtol=1e-12, atol=1e-12)
            assert fa[k] == shared_fraction(H, sizes[a], sizes[b])
            assert fb[k] == shared_fraction(np.linalg.inv(H), sizes[b], sizes[a])
            seen += max(fa[k], fb[k]) > 0.08
    assert 20 < seen < 66  # some pairs overlap, some do not


def test_frame_boxes_skip_only_pairs_that_share_nothing():
    """A full turn of rotations (two rows): images behind the reference cross the frame's line at infinity and are
    never skipped; the pairs whose bounded boxes miss each other are skipped, and every fraction still equals the
    one-pair test."""
    from stitch.bench.devsets import intrinsics, rotation

    K = intrinsics(500.0, (640, 480))
    Hs = [K @ rotation(yaw, pitch).T @ np.linalg.inv(K) for pitch in (-20.0, 20.0) for yaw in range(0, 360, 15)]
    sizes = [(640, 480)] * len(Hs)
    model = ModelOverlaps.of(Hs, sizes)
    assert 4 <= int(model.bounded.sum()) < len(Hs)
    apart = 0
    for a in range(len(Hs) - 1):
        _, fa, fb = model.later(a)
        box, others = model.boxes[a], model.boxes[a + 1:]
        miss = (model.bounded[a] & model.bounded[a + 1:] & ((others[:, 0] > box[2]) | (others[:, 2] < box[0])
                                                            | (others[:, 1] > box[3]) | (others[:, 3] < box[1])))
        apart += int(miss.sum())
        for k, b in enumerate(range(a + 1, len(Hs))):
            H = relative(Hs[a], Hs[b])
            assert fa[k] == shared_fraction(H, sizes[a], sizes[b])
            assert fb[k] == shared_fraction(np.linalg.inv(H), sizes[b], sizes[a])
    assert apart >= 10
