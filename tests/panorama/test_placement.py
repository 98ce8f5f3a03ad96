"""stitch.panorama.placement: which pairs of a model overlap, all of an image's partners at once."""

from __future__ import annotations

import numpy as np

from stitch.panorama.placement import _relative, shared_fraction, shared_fractions


def test_shared_fractions_equal_the_pairwise_ones():
    """The batched fractions and relative matrices equal shared_fraction / _relative pair by pair, including
    matrices of negative determinant and pairs that do not overlap."""
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
    for a in range(len(Hs) - 1):
        rel, fa, fb = shared_fractions(Hs, sizes, a)
        assert rel.shape == (len(Hs) - a - 1, 3, 3)
        for k, b in enumerate(range(a + 1, len(Hs))):
            H = _relative(Hs[a], Hs[b])
            assert np.allclose(rel[k], H, rtol=1e-12, atol=1e-12)
            assert fa[k] == shared_fraction(H, sizes[a], sizes[b])
            assert fb[k] == shared_fraction(np.linalg.inv(H), sizes[b], sizes[a])
            seen += max(fa[k], fb[k]) > 0.08
    assert 20 < seen < 66  # some pairs overlap, some do not
