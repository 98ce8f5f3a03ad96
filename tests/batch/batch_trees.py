"""Small trees of sets for the batch tests, and module-level job functions the job processes can import."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
from helpers import texture

from stitch.batch.jobs import JobOptions, SetResult
from stitch.batch.sets import SetSpec

#: Texture seeds whose two overlapping crops stitch (checked: seeds 1 and 5 find no overlap).
GOOD_SEEDS = (2, 3)
#: The bad sets and a word their reason must contain.
BAD_SETS = {"bad_empty": "no images", "bad_one": "got 1", "bad_nooverlap": "no two images overlap",
            "bad_corrupt": "unreadable", "bad_toml": "stitch.toml: preset='nope'"}


def write_pair(folder: Path, seed: int) -> Path:
    """Two 280 x 200 crops of one 400 x 200 texture, overlapping by 160 px (a pure translation)."""
    folder.mkdir(parents=True, exist_ok=True)
    big = texture(seed, (400, 200))
    cv2.imwrite(str(folder / "a.png"), big[:, :280])
    cv2.imwrite(str(folder / "b.png"), big[:, 120:])
    return folder


def make_tree(root: Path, bad: bool = True) -> Path:
    """root/good/s<seed>/ for GOOD_SEEDS (the first with a stitch.toml: projection plane), plus the BAD_SETS."""
    for seed in GOOD_SEEDS:
        write_pair(root / "good" / f"s{seed}", seed)
    (root / "good" / f"s{GOOD_SEEDS[0]}" / "stitch.toml").write_text('projection = "plane"\n')
    if bad:
        (root / "bad_empty").mkdir(parents=True)
        (root / "bad_one").mkdir()
        cv2.imwrite(str(root / "bad_one" / "a.png"), texture(2, (280, 200)))
        (root / "bad_nooverlap").mkdir()
        cv2.imwrite(str(root / "bad_nooverlap" / "a.png"), np.zeros((200, 280, 3), np.uint8))
        cv2.imwrite(str(root / "bad_nooverlap" / "b.png"), texture(9, (280, 200)))
        (root / "bad_corrupt").mkdir()
        (root / "bad_corrupt" / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        cv2.imwrite(str(root / "bad_corrupt" / "b.png"), texture(3, (280, 200)))
        write_pair(root / "bad_toml", GOOD_SEEDS[0])
        (root / "bad_toml" / "stitch.toml").write_text('preset = "nope"\n')
    return root


def hanging_job(spec: SetSpec, options: JobOptions, out: Path) -> SetResult:
    """A job that never finishes (the time limit must end it)."""
    time.sleep(3600)
    raise AssertionError("not reached")


def greedy_job(spec: SetSpec, options: JobOptions, out: Path) -> SetResult:
    """A job that allocates 3 GB (the memory cap must stop it)."""
    from stitch.batch.jobs import STATUS_OK

    block = np.ones(3 * 2**30, np.uint8)
    return SetResult(spec.name, STATUS_OK, seconds=float(block[0]))
