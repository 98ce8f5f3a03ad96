"""Test helpers: procedurally generated photographs (no data files needed) and the CLI error-line check."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def texture(seed: int, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """(H, W, 3) uint8 BGR: multi-scale smooth noise plus a few rectangles and circles (corners, edges)."""
    w, h = size
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w), np.float32)
    for s, amp in ((24, 0.5), (8, 0.3), (3, 0.2)):
        small = rng.random((h // s + 2, w // s + 2)).astype(np.float32)
        img += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    img = (img - img.min()) / (np.ptp(img) + 1e-6) * 180 + 30
    for _ in range(12):
        x, y = int(rng.integers(0, w - 30)), int(rng.integers(0, h - 30))
        val = float(rng.integers(0, 256))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(8, 40)), y + int(rng.integers(8, 40))), val, -1)
        else:
            cv2.circle(img, (x + 15, y + 15), int(rng.integers(4, 15)), val, -1)
    g = np.clip(img, 0, 255).astype(np.uint8)
    return cv2.merge([g, np.roll(g, 3, axis=1), 255 - g])


def write_sets(root: Path, sets: dict[str, int], size: tuple[int, int] = (320, 240)) -> Path:
    """``root/<set>/img<i>.png`` for each set with that many images; returns root."""
    seed = 0
    for name, n in sets.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cv2.imwrite(str(root / name / f"img{i}.png"), texture(seed, size))
            seed += 1
    return root


def one_line_error(stderr: str, *needles: str) -> str:
    """The single `error:` line of stderr (no traceback); asserts it names every needle."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]
