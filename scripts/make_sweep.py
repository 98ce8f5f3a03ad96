"""Render a multi-row sweep of N views with known rotations from the shared photographs (stitch.bench.sweep).

Usage: python scripts/make_sweep.py --views 100 --rows 4 [--data ../shared/data] [--out out/sweep100] [--seed 0]
       [--measure]

The world's photo band takes every photograph of <data>/panoramas and <data>/panoramas_wide (each crop at a
random place). With --measure, registers the views (stitch.register) and prints the seconds, the views kept and
the placement error per view (degrees; stitch.bench.devsets.placement_errors). The output is derived from the
shared data: keep it out of the repository (out/ is ignored).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from stitch.bench.sweep import make_sweep
from stitch.io import IMAGE_EXTENSIONS, read_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--views", type=int, default=100)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--measure", action="store_true")
    args = ap.parse_args()
    files = sorted(p for sub in ("panoramas", "panoramas_wide") for p in (args.data / sub).rglob("*")
                   if p.suffix.lower() in IMAGE_EXTENSIONS and not p.stem.lower().startswith("mask"))
    photos = [read_image(p) for p in files]
    out = args.out or Path(f"out/sweep{args.views}")
    t0 = time.perf_counter()
    dev = make_sweep(out, photos, args.views, args.rows, args.seed)
    print(f"{len(dev.truth)} views from {len(photos)} photographs in {time.perf_counter() - t0:.1f} s: {out}")
    if args.measure:
        import stitch
        from stitch.bench.devsets import placement_errors

        t0 = time.perf_counter()
        reg = stitch.register(sorted(str(p) for p in out.glob("view_*.jpg")))
        secs = time.perf_counter() - t0
        err = np.array(list(placement_errors(reg, dev).values()))
        print(f"registered in {secs:.1f} s: {len(reg.names)} of {len(dev.truth)} views kept; placement error "
              f"median {np.median(err):.3f}, p95 {np.percentile(err, 95):.3f}, max {err.max():.3f} degrees; "
              f"{int(np.sum(err > 0.2))} views above 0.2")


if __name__ == "__main__":
    main()
