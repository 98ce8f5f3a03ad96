"""The process-wide helpers of stitch.panorama.threads: glibc's malloc settings and the ordered thread map."""

from __future__ import annotations

import ctypes
import sys

import numpy as np
import pytest

from stitch.panorama import threads
from stitch.panorama.threads import in_order, keep_freed_memory, release_free_memory, thread_pool


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018 (a glibc without mallopt is no glibc)
    except (OSError, AttributeError):
        return None
    return libc


def _faults_of_arrays(n: int, nbytes: int) -> int:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        a = np.ones(nbytes, np.uint8)  # written: every page touched
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux") or _glibc() is None, reason="glibc's malloc only")
def test_keep_freed_memory_reuses_freed_arrays():
    """With glibc's default thresholds (set here first) every 3 MB array is a fresh mapping whose 768 pages fault again
    (below the 4 MB from which NumPy asks for huge pages); after keep_freed_memory the freed array's memory is
    reused, and hardly a page faults after the first."""
    libc = _glibc()
    try:
        assert libc.mallopt(threads._M_MMAP_THRESHOLD, 128 * 1024) == 1  # glibc's default threshold
        assert libc.mallopt(threads._M_TRIM_THRESHOLD, 128 * 1024) == 1
        release_free_memory()  # what earlier tests left free in the heap goes back: it would serve the arrays
        fresh = _faults_of_arrays(10, 3 << 20)
        assert fresh >= 10 * 768 * 0.9
        assert keep_freed_memory() is True
        _faults_of_arrays(1, 3 << 20)  # the first one grows the heap
        reused = _faults_of_arrays(10, 3 << 20)
        assert reused < 0.1 * fresh
    finally:
        assert keep_freed_memory() is True  # the settings the pipeline uses
        release_free_memory()


def test_keep_freed_memory_without_glibc_is_a_no_op(monkeypatch):
    def no_libc(name):
        raise OSError(f"{name}: not found")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert keep_freed_memory() is False
    release_free_memory()  # no error either


def test_in_order_returns_results_in_order_on_threads():
    with thread_pool(2, 8) as pool:
        assert list(in_order(lambda k: k * k, 8, pool, 2)) == [k * k for k in range(8)]
    assert list(in_order(lambda k: -k, 3, None, 2)) == [0, -1, -2]
