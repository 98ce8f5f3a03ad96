"""View synthesis (MODS-style): a planar pair tilted by 75 degrees, round bookkeeping, bad rounds."""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
import pytest

from stitch.errors import ConfigError
from stitch.geometry import corner_error, project
from stitch.homography.candidates import EstimatorSpec, estimate
from stitch.homography.synthesis import DEFAULT_ROUNDS, MAX_TILT, SynthesisRound, synthesize_matches


def tilted_view(img: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """img seen with its plane turned by ``degrees`` about the vertical axis: (view, H img px -> view px)."""
    h, w = img.shape[:2]
    f, a = 1.2 * max(w, h), math.radians(degrees)
    R = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    M = np.diag([f, f, 1.0]) @ np.column_stack([R[:, 0], R[:, 1], [0, 0, f]]) @ np.array(
        [[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1.0]])
    q = project(M, np.array([[0, 0], [w, 0], [w, h], [0, h]], float))
    s = max(w, h) / (q.max(0) - q.min(0)).max()
    H = np.array([[s, 0, -s * q.min(0)[0]], [0, s, -s * q.min(0)[1]], [0, 0, 1]]) @ M
    H /= H[2, 2]
    size = np.ceil(project(H, q * 0 + np.array([[0, 0], [w, 0], [w, h], [0, h]], float)).max(0)).astype(int) + 1
    return cv2.warpPerspective(img, H, (int(size[0]), int(size[1])), flags=cv2.INTER_AREA), H


def test_tilt_75(sample_pair):
    """A planar pair tilted by 75 degrees (tilt 3.9): the synthesis rounds recover H within 3 px."""
    src = sample_pair("perspective")[0]
    dst, H_gt = tilted_view(src, 75.0)
    m, stats = synthesize_matches(src, dst, replace(DEFAULT_ROUNDS[1], time_budget_s=300.0))  # all views, even loaded
    H, inl = estimate(m, EstimatorSpec("USAC_MAGSAC", 2.0))
    assert H is not None and inl.sum() >= 40
    assert corner_error(H, H_gt, src.shape[1], src.shape[0]) < 3.0
    assert stats["views"][0] == 1 + 8 + 10 and stats["view_pairs"] > 0 and stats["round_peak_mb"] > 0
    assert stats["round_seconds"] > 0 and stats["matches"] == len(m)


def test_time_budget(sample_pair):
    """Past its budget a round stops simulating views (the first view of each image is always detected)."""
    src = sample_pair("perspective")[0]
    m, stats = synthesize_matches(src, src, replace(DEFAULT_ROUNDS[2], time_budget_s=1e-6))
    assert stats["views"] == [1, 1] and stats["view_pairs"] == 1 and len(m) > 100  # original against original


def test_rounds():
    assert [max(r.tilts) for r in DEFAULT_ROUNDS] == sorted(max(r.tilts) for r in DEFAULT_ROUNDS)
    assert max(DEFAULT_ROUNDS[-1].tilts) == MAX_TILT == 8.0


@pytest.mark.parametrize("kwargs, match", [
    ({"tilts": (9.0,)}, r"tilts=\(9.0,\)"),
    ({"tilts": (1.0,)}, "each tilt"),
    ({"tilts": (2.0,), "detector": "asift"}, "detector='asift'"),
    ({"tilts": (2.0,), "max_side": 10}, "max_side"),
])
def test_exception(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SynthesisRound(**kwargs)
