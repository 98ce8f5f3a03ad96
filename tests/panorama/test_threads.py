"""The process-wide helpers of stitch.panorama.threads: glibc's malloc settings and the ordered thread map."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from stitch.panorama.threads import in_order, keep_freed_memory, release_free_memory, thread_pool


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018 (a glibc without mallopt is no glibc)
    except (OSError, AttributeError):
        return None
    return libc


_FAULTS = """
import ctypes, resource, numpy as np
from stitch.panorama import threads
libc = ctypes.CDLL("libc.so.6")
for param in (threads._M_MMAP_THRESHOLD, threads._M_TRIM_THRESHOLD, threads._M_TOP_PAD):
    assert libc.mallopt(param, 128 * 1024) == 1  # glibc's initial values, without its dynamic threshold

def faults(n):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        a = np.ones(3 << 20, np.uint8)  # every page written
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

fresh = faults(10)
kept = threads.keep_freed_memory()
faults(1)  # the first one grows the heap
print(fresh, kept, faults(10))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or _glibc() is None, reason="glibc's malloc only")
def test_keep_freed_memory_reuses_freed_arrays():
    """In a fresh process with glibc's small thresholds every 3 MB array is a fresh mapping whose 768 pages fault
    again (below the 4 MB from which NumPy asks for huge pages); after keep_freed_memory the freed array's memory is
    reused, and hardly a page faults after the first."""
    out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, check=True).stdout.split()
    fresh, kept, reused = int(out[0]), out[1], int(out[2])
    assert kept == "True"
    assert fresh >= 10 * 768 * 0.9
    assert reused < 0.1 * fresh


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
