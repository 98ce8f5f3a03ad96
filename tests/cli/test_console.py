"""The console helpers: the progress bar's phases and ETA."""

import io

from rich.console import Console

from cli.console import progress_bar


def test_progress_bar_eta_per_phase():
    out = io.StringIO()
    con = Console(file=out, force_terminal=True, width=160, color_system=None)
    with progress_bar("stitching", con) as update:
        for k in range(4):
            update(k, 4, f"pair {k}")
        update(4, 6, "pair 4")  # the total grows within a phase: the count goes on
        update(0, 3, "strip 0")  # a count that goes back: a new phase
        update(1, 3, "strip 1")
    last = out.getvalue().rsplit("stitching", 1)[-1]  # the last frame drawn
    assert "ETA" in last and "1/3" in last and "strip 1" in last
