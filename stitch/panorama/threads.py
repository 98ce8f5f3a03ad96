"""Threads for the compositing stages: ``in_order`` runs independent pieces of work (the images of a strip, the
tiles of a canvas, the overlapping pairs of the seam canvas) on a pool and hands their results back in order,
so the sums made of them, and so the pixels, do not depend on the number of threads. OpenCV and NumPy release
the GIL in their heavy calls, which is what the threads share. ``release_free_memory`` hands back what the
threads' malloc arenas hold free before the next large allocations; ``one_blas_thread`` keeps NumPy's BLAS to one
thread while our own threads share the cores.
"""

from __future__ import annotations

import ctypes
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


#: glibc malloc while a panorama is made (``keep_freed_memory``): arrays up to MALLOC_MMAP_THRESHOLD bytes come from
#: the heap instead of fresh mappings, freed heap up to MALLOC_TRIM_THRESHOLD stays for the next arrays, and the heap
#: grows MALLOC_TOP_PAD at a time (why these values: docs/measurements.md, "threads").
MALLOC_MMAP_THRESHOLD = 32 << 20
MALLOC_TRIM_THRESHOLD = 1 << 30
MALLOC_TOP_PAD = 256 << 20
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # mallopt's parameter numbers (malloc.h)


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse (``mallopt``: the whole process, from then on; elsewhere a no-op):
    True when set.

    The compositing stages allocate and free arrays of tens of MB per strip; by default each is a fresh mapping,
    zeroed page by page and unmapped again, which with several threads costs more kernel time than the arithmetic.
    ``release_free_memory`` still hands the kept memory back at the end of a stage and of a stitch.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return all(libc.mallopt(param, value) == 1 for param, value in ((_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD),
                                                                        (_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD),
                                                                        (_M_TOP_PAD, MALLOC_TOP_PAD)))
    except (OSError, AttributeError):
        return False


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``; elsewhere a no-op).

    Threads allocate from their own malloc arenas, and arrays freed there stay resident: after the pair
    matching, and after a blend's strips, before the next stage's large arrays (docs/measurements.md, "graph"
    and "blend").
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Within: NumPy's BLAS (OpenBLAS, MKL) runs on one thread, so threads of ours that each multiply matrices do
    not fight its threads for the cores (``threadpoolctl``; the whole process, restored after). Without
    threadpoolctl (an install that predates the dependency) BLAS keeps its threads: the same results, slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def in_order(fn: Callable[[int], T], n: int, pool: Executor | None, ahead: int) -> Iterator[T]:
    """fn(0), ..., fn(n - 1) in order; on ``pool`` at most ``ahead`` calls run ahead of the one consumed (so at most
    that many results are held), else one by one."""
    if pool is None or ahead < 2:
        yield from (fn(k) for k in range(n))
        return
    pending: deque[Future[T]] = deque()
    for k in range(n):
        pending.append(pool.submit(fn, k))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


@contextmanager
def thread_pool(workers: int, jobs: int = 2) -> Iterator[Executor | None]:
    """A pool of ``workers`` threads, or None when one thread (or fewer than two ``jobs``) would do; shut down after."""
    if workers < 2 or jobs < 2:
        yield None
        return
    pool = ThreadPoolExecutor(workers)
    try:
        yield pool
    finally:
        pool.shutdown()
