"""Small types shared across stages and tools."""

from __future__ import annotations

from collections.abc import Callable

#: ``progress(done, total, label)``: called once with ``done=0`` before the first item, then after each.
ProgressFn = Callable[[int, int, str], None]
