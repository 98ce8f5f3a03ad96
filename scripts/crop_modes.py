"""Print the crop trade-off table of docs/benchmarks/panorama.md: for each set, the area every crop mode keeps (python scripts/crop_modes.py).

Each set is stitched once uncropped (defaults otherwise); every CROP_MODES entry then crops its valid mask.
Usage: python scripts/crop_modes.py [--data ../shared/data/panoramas] [SET ...] (default: ledge hill prague_maps).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from stitch.io import list_images
from stitch.panorama.crop import CROP_MODES, DEFAULT_CROP_MAX_EMPTY
from stitch.panorama.pipeline import stitch_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="*", default=["ledge", "hill", "prague_maps"])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "panoramas")
    ap.add_argument("--max-empty", type=float, default=DEFAULT_CROP_MAX_EMPTY)
    args = ap.parse_args()
    print("| set | " + " | ".join(CROP_MODES) + " |")
    print("| --- |" + " --- |" * len(CROP_MODES))
    for name in args.sets:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mask = stitch_images(list_images(args.data / name), crop="none").mask
        content = int(mask.sum())
        cells = []
        for spec in CROP_MODES.values():
            x0, y0, x1, y1 = spec.box(mask, args.max_empty)
            area = (x1 - x0) * (y1 - y0)
            kept = int(mask[y0:y1, x0:x1].sum())
            cells.append(f"{area / 1e6:.3f} MP, {kept / content:.0%} of content, {1 - kept / area:.1%} empty")
        print(f"| {name} ({content / 1e6:.2f} MP of content) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
