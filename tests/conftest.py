"""Shared fixtures: the generated samples in data/samples and the benchmark data in ../shared/data."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from stitch.io import read_image, read_matrix

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/helpers.py, for every folder

SamplePair = tuple[np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """data/samples (made by scripts/make_samples.py); skips the test when it is missing."""
    d = REPO_ROOT / "data" / "samples"
    if not d.is_dir():
        pytest.skip(f"{d} is missing: run `make samples`")
    return d


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository (benchmark data); skips the test when it is absent."""
    d = REPO_ROOT.parent / "shared" / "data"
    if not d.is_dir():
        pytest.skip(f"shared benchmark data not found at {d} (it sits beside the repository, not in it)")
    return d


@pytest.fixture(scope="session")
def sample_pair(samples_dir: Path) -> Callable[[str], SamplePair]:
    """Factory: name -> (src (H, W, 3) uint8, dst (H, W, 3) uint8, H_gt (3, 3) float64 src -> dst)."""

    def load(name: str) -> SamplePair:
        folder = samples_dir / "pairs" / name
        if not folder.is_dir():
            raise FileNotFoundError(f"no sample pair '{name}' in {folder.parent}")
        (src,) = folder.glob("src.*")
        (dst,) = folder.glob("dst.*")
        return read_image(src), read_image(dst), read_matrix(folder / "H.txt")

    return load
