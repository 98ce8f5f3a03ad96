"""stitch.panorama.graph: the first pass's match counts against OpenCV's brute-force matcher."""

from __future__ import annotations

import cv2
import numpy as np

from stitch.panorama.graph import pair_votes


def _bf_count(a: np.ndarray, b: np.ndarray, ratio: float) -> int:
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(a, b, k=2)
    return sum(1 for m in knn if len(m) == 2 and m[0].distance < ratio * m[1].distance)


def test_pair_votes_equal_opencv_brute_force_counts():
    """Ratio-test counts in both directions, summed, equal cv2.BFMatcher's on sets of different sizes."""
    rng = np.random.default_rng(5)
    base = rng.random((120, 32)).astype(np.float32)
    desc = [np.vstack([base[:80] + rng.normal(0, 0.02, (80, 32)).astype(np.float32), rng.random((n, 32), np.float32)])
            for n in (10, 40, 3)]
    desc.append(None)  # an image with no features matches nothing
    desc.append(base[:1])  # a single descriptor: no second neighbour, no match (as OpenCV's knn gives none)
    votes = pair_votes(desc, ratio=0.7, block=2)
    assert votes.shape == (5, 5) and np.array_equal(votes, votes.T)
    for i in range(3):
        for j in range(3):
            if i != j:
                assert votes[i, j] == _bf_count(desc[i], desc[j], 0.7) + _bf_count(desc[j], desc[i], 0.7)
    assert votes[0, 1] >= 100  # the shared 80 descriptors match both ways
    assert not votes[3].any() and not votes[4].any()
