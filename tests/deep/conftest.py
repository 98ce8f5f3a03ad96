"""Fixtures for the learned-refiner tests.

Modules that need torch/kornia call ``pytest.importorskip`` themselves; test_fallback.py runs without them.
"""

from __future__ import annotations

import importlib.util

import pytest

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one thread is as fast, and leaves the other core to everyone else."""
    if not HAS_TORCH:
        yield
        return
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
