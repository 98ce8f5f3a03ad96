"""Before / after crops at 100 % for seams and blending around disagreement (issue 21 item 2): each set stitched
with two option settings (scripts/seam_figures.py's), and the places where the two results differ most (the
mean absolute difference over WINDOW px boxes, the PLACES largest, apart) cropped side by side.

    .venv/bin/python scripts/seam_crops.py --set dhw_temple --before off --after on --out out/seam_crops

Writes ``<out>/<set>_<before>_vs_<after>.png``: a row per place, the before crop on the left, the after crop
on the right, CROP px square each, with the place's canvas position in the file's printed summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from seam_figures import ROOTS, options  # scripts/ is on sys.path when run as a script

from stitch.bench.panorama import discover_sets
from stitch.panorama.pipeline import stitch_images

WINDOW = 64
PLACES = 4
CROP = 200


def places(a: np.ndarray, b: np.ndarray, n: int = PLACES) -> list[tuple[int, int, float]]:
    """(x, y, mean |a - b|) of the n windows where a and b differ most, each at least CROP px from the others."""
    diff = cv2.boxFilter(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(axis=2), -1, (WINDOW, WINDOW))
    out = []
    for _ in range(n):
        y, x = np.unravel_index(int(np.argmax(diff)), diff.shape)
        if diff[y, x] <= 0.5:
            break
        out.append((int(x), int(y), float(diff[y, x])))
        diff[max(0, y - CROP):y + CROP, max(0, x - CROP):x + CROP] = 0
    return out


def crop(img: np.ndarray, x: int, y: int) -> np.ndarray:
    """A CROP x CROP px crop of img centred at (x, y), black beyond its frame."""
    pad = cv2.copyMakeBorder(img, CROP, CROP, CROP, CROP, cv2.BORDER_CONSTANT, value=0)
    return pad[y + CROP // 2:y + CROP // 2 + CROP, x + CROP // 2:x + CROP // 2 + CROP]


def main() -> None:
    """Stitch each set with both settings; write and print the crops where they differ most."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="sets", action="append", required=True)
    ap.add_argument("--before", default="off")
    ap.add_argument("--after", default="on")
    ap.add_argument("--out", type=Path, default=Path("out/seam_crops"))
    args = ap.parse_args()
    found = {}
    for root in ROOTS:
        if Path(root).is_dir():
            found |= {n: ps for n, ps in discover_sets(root) if n in args.sets}
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.sets:
        a = stitch_images(found[name], seed=0, **options(args.before)).image
        b = stitch_images(found[name], seed=0, **options(args.after)).image
        if a.shape != b.shape:
            print(f"{name}: the results differ in size ({a.shape} / {b.shape})")
            continue
        where = places(a, b)
        rows = [np.hstack([crop(a, x, y), np.full((CROP, 4, 3), 255, np.uint8), crop(b, x, y)]) for x, y, _ in where]
        path = args.out / f"{name}_{args.before}_vs_{args.after}.png".replace(":", "_")
        if rows:
            cv2.imwrite(str(path), np.vstack([np.vstack([r, np.full((4, r.shape[1], 3), 255, np.uint8)])
                                              for r in rows]))
        print(f"{name}: {path} " + ", ".join(f"({x}, {y}) {d:.1f}" for x, y, d in where), flush=True)


if __name__ == "__main__":
    main()
