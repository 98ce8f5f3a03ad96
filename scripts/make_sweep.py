"""Render a multi-row sweep of N views with known rotations from the shared photographs (stitch.bench.sweep).

Usage: python scripts/make_sweep.py --views 100 --rows 4 [--data ../shared/data] [--out out/sweep100] [--seed 0]
       [--columns N] [--repeat-scenes] [--measure]
       python scripts/make_sweep.py --folder out/sweep500 [--select 216:287]   (measure a sweep already made)

The world's photo band must not show one scene twice (a repeated scene is another test: repeated structure), so
it takes the first photograph of each set of <data>/panoramas and <data>/panoramas_wide, cut into distinct pieces
of about PIECE_PX (a small photograph stays whole), and keeps the pieces that hold texture (a piece of sky alone
would be a view no one can place). The band reaches just beyond the views and its tiles are about
stitch.bench.sweep.SWEEP_TILE_PX wide, so a photo is enlarged about twice (--columns overrides the tiles).
--repeat-scenes builds the repeated-structure world instead: every photograph of those sets, whole, cycled over
16 columns (or --columns) of a band of +-50 degrees, so the overlapping photos of one set (and one photo's crops)
show the same scene in several places, as repeated facades or a row of identical houses do (fewer --columns make
the copies denser).
With --measure, registers the views (stitch.register) and prints the seconds, the views kept and
the placement error per view (degrees; stitch.bench.devsets.placement_errors). --folder measures a sweep made
before (its truth.json) without rendering it again; --select A:B only its views A..B-1 in name order (one row of
out/sweep500: 216:287). The output is derived from the
shared data: keep it out of the repository (out/ is ignored).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from stitch.bench.devsets import DevSet, load_devset, placement_errors
from stitch.bench.sweep import SWEEP_BAND_DEG, make_sweep
from stitch.imaging import gradient_energy
from stitch.io import IMAGE_EXTENSIONS, read_image

#: The size (px) of the pieces the photographs are cut into for the sweep's world.
PIECE_PX = 300


def pieces(img: np.ndarray, size: int = PIECE_PX) -> list[np.ndarray]:
    """The (h, w, 3) image cut into a grid of pieces of about ``size`` px (each a distinct part of the scene)."""
    h, w = img.shape[:2]
    rows, cols = max(1, round(h / size)), max(1, round(w / size))
    return [img[r * h // rows:(r + 1) * h // rows, c * w // cols:(c + 1) * w // cols]
            for r in range(rows) for c in range(cols)]


def textured(piece: np.ndarray, floor: float = 5.0) -> bool:
    """Whether a piece holds texture (mean gradient >= ``floor`` gray levels per px at 320 x 240): not sky alone."""
    gray = cv2.cvtColor(cv2.resize(piece, (320, 240), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    return gradient_energy(gray) >= floor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--views", type=int, default=100)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--columns", type=int, default=None, help="tile columns of the world's photo band")
    ap.add_argument("--repeat-scenes", action="store_true",
                    help="every photograph, cycled: the same scene in several places (repeated structure)")
    ap.add_argument("--measure", action="store_true")
    ap.add_argument("--folder", type=Path, default=None, help="measure the sweep already in this folder")
    ap.add_argument("--select", default=None, help="A:B, views A..B-1 (name order) of --folder")
    args = ap.parse_args()
    if args.folder is not None:
        dev = load_devset(args.folder)
        names = sorted(dev.truth)
        if args.select:
            a, b = (int(x) for x in args.select.split(":"))
            names = names[a:b]
        measure([args.folder / n for n in names], DevSet(dev.folder, dev.kind, {n: dev.truth[n] for n in names}))
        return
    firsts = []
    for sub in ("panoramas", "panoramas_wide"):
        for d in sorted(p for p in (args.data / sub).iterdir() if p.is_dir()):
            imgs = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
                          and not p.stem.lower().startswith("mask"))
            firsts += imgs if args.repeat_scenes else imgs[:1]
    photos = ([read_image(p) for p in firsts] if args.repeat_scenes else
              [piece for p in firsts for piece in pieces(read_image(p)) if textured(piece)])
    out = args.out or Path(f"out/sweep{args.views}" + ("_repeats" if args.repeat_scenes else ""))
    t0 = time.perf_counter()
    world = ({"columns": args.columns or 16, "band_deg": SWEEP_BAND_DEG} if args.repeat_scenes  # as measured
             else {"columns": args.columns})
    dev = make_sweep(out, photos, args.views, args.rows, args.seed, allow_repeats=args.repeat_scenes, **world)
    print(f"{len(dev.truth)} views from {len(photos)} pieces of {len(firsts)} photographs in {time.perf_counter() - t0:.1f} s: {out}")
    if args.measure:
        measure(sorted(out.glob("view_*.jpg")), dev)


def measure(paths: list[Path], dev: DevSet) -> None:
    """Register ``paths`` (stitch.register) and print the seconds, the views kept and their placement errors."""
    import stitch

    t0 = time.perf_counter()
    reg = stitch.register(sorted(str(p) for p in paths))
    secs = time.perf_counter() - t0
    err = np.array(list(placement_errors(reg, dev).values()))
    print(f"registered in {secs:.1f} s: {len(reg.names)} of {len(dev.truth)} views kept (full turn: {reg.full_turn}, "
          f"focal {reg.focal:.1f} px, true {next(iter(dev.truth.values()))['focal']:.1f}); placement error "
          f"median {np.median(err):.3f}, p95 {np.percentile(err, 95):.3f}, max {err.max():.3f} degrees; "
          f"{int(np.sum(err > 0.2))} views above 0.2")


if __name__ == "__main__":
    main()
