"""Where the seconds go: a recorder of named sections, for ``stitch run --profile``.

Stages and pair-search steps are marked with ``@profiled(name)`` (or ``with section(name)``). Nothing is
recorded unless a ``recording()`` block is active, and then each section's *exclusive* time is summed per
name: a section's time excludes the sections inside it (refinement excludes the scoring it calls), so the
figures add up. Sections run on several threads (the pair search runs on ``--workers`` threads) add up as
thread-seconds; ``wall_s`` is the recording's own wall time.

Names: the stages (``read``, ``pair search``, ``camera model``, ``placement check``, ``compositing``, ``write``)
run on the main thread, so their exclusive seconds add up to about the wall time; a pair's steps are named
``pair: detection``, ``pair: matching``, ``pair: estimation``, ``pair: scoring``, ``pair: refinement`` and
``pair: other`` (PAIR_PREFIX) and add up to the pair search's thread-seconds.

Convention: seconds from ``time.perf_counter``; one recording per process at a time (a second one raises).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from stitch.errors import StitchError

F = TypeVar("F", bound=Callable[..., Any])
#: Sections of one pair's search (they run on the pair-search threads) start with this.
PAIR_PREFIX = "pair: "
#: The stages' row for the main thread's time in no marked stage (the recording's wall time less the stages).
UNMARKED = "other (unmarked)"


@dataclass
class Profile:
    """Exclusive seconds and calls per section name, and the recording's wall time."""

    seconds: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, seconds: float) -> None:
        """Add one call of ``name`` taking ``seconds`` (exclusive)."""
        with self.lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
            self.calls[name] = self.calls.get(name, 0) + 1

    def rows(self, prefix: str | None) -> list[dict[str, Any]]:
        """Sections whose name starts with ``prefix`` (None: the others), slowest first, with their share."""
        picked = {k: v for k, v in self.seconds.items()
                  if (k.startswith(prefix) if prefix is not None else not k.startswith(PAIR_PREFIX))}
        total = sum(picked.values()) or 1.0
        return [{"name": k, "seconds": round(v, 3), "calls": self.calls[k], "share": round(v / total, 4)}
                for k, v in sorted(picked.items(), key=lambda kv: -kv[1])]

    def to_dict(self, compositing: dict[str, float] | None = None) -> dict[str, Any]:
        """JSON-ready: the wall time; the stages (main thread, wall seconds); the pair search's steps
        (thread-seconds over the ``--workers`` threads); and, when given, the compositing stages' seconds."""
        stages = self.rows(None)
        unmarked = self.wall_s - sum(r["seconds"] for r in stages)
        stages.append({"name": UNMARKED, "seconds": round(max(unmarked, 0.0), 3), "calls": 0,
                       "share": round(max(unmarked, 0.0) / (self.wall_s or 1.0), 4)})
        out = {"wall_s": round(self.wall_s, 3), "stages": stages, "pair_search": self.rows(PAIR_PREFIX)}
        if compositing is not None:
            out["compositing"] = {k: round(v, 3) for k, v in compositing.items()}
        return out


_ACTIVE: Profile | None = None
_STACK = threading.local()  # per thread: a list of [name, start, time spent in inner sections]


@contextmanager
def recording() -> Iterator[Profile]:
    """Record every section entered (on any thread) until the block ends; yields the Profile."""
    global _ACTIVE
    if _ACTIVE is not None:
        raise StitchError("a profile is already being recorded in this process")
    prof, t0 = Profile(), time.perf_counter()
    _ACTIVE = prof
    try:
        yield prof
    finally:
        _ACTIVE = None
        prof.wall_s = time.perf_counter() - t0


@contextmanager
def section(name: str) -> Iterator[None]:
    """Time the block as section ``name`` while a recording is active (else do nothing)."""
    prof = _ACTIVE
    if prof is None:
        yield
        return
    stack = getattr(_STACK, "frames", None)
    if stack is None:
        stack = _STACK.frames = []
    frame = [name, time.perf_counter(), 0.0]
    stack.append(frame)
    try:
        yield
    finally:
        stack.pop()
        spent = time.perf_counter() - frame[1]
        prof.add(name, spent - frame[2])
        if stack:
            stack[-1][2] += spent


def profiled(name: str) -> Callable[[F], F]:
    """Decorator: every call of the function is section ``name``."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            if _ACTIVE is None:
                return fn(*args, **kwargs)
            with section(name):
                return fn(*args, **kwargs)
        return inner  # type: ignore[return-value]
    return wrap
