"""Render the repeated-structure dev sets (stitch.bench.devsets) from the shared photographs.

Usage: python scripts/make_devsets.py [--data ../shared/data] [--out out/devsets] [--seed 0]

Writes <out>/repeated_turn (a two-row full turn of a world with three identical facades, plus two views of
another world) and <out>/window_wall (a moving camera along a wall of identical windows), each with its
truth.json. The turn's world takes one photograph from each set of <data>/panoramas and <data>/panoramas_wide
(so no two tiles show the same scene, except the facade's copies); the distractors' world is made of
scikit-image's bundled photos. Without <data>, both worlds use scikit-image's photos. The output is derived
from the shared data: keep it out of the repository (out/ is ignored).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from skimage import data as skdata

from stitch.bench.devsets import TURN_TILES, make_repeated_turn, make_window_wall
from stitch.io import IMAGE_EXTENSIONS, read_image

#: The photos bundled with scikit-image (nothing is downloaded), one per scene.
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "brick",
                  "gravel", "grass", "camera", "coins", "retina", "page", "text", "moon", "horse", "clock",
                  "colorwheel", "logo", "cell")


def skimage_photos() -> list[np.ndarray]:
    """scikit-image's bundled photos as (h, w, 3) uint8 BGR (gray ones tinted by their index)."""
    out = []
    for k, name in enumerate(SKIMAGE_PHOTOS):
        img = np.asarray(getattr(skdata, name)())
        if img.ndim == 2:
            tint = np.array([0.6 + 0.4 * ((k * 37) % 10) / 10, 0.8, 1.0 - 0.3 * ((k * 53) % 10) / 10])
            img = np.clip(img[:, :, None] * tint, 0, 255)
        out.append(np.ascontiguousarray(img[:, :, 2::-1] if img.shape[2] >= 3 else img).astype(np.uint8)[:, :, :3])
    return out


def shared_photos(data: Path) -> list[np.ndarray]:
    """One photograph per set folder of data/panoramas and data/panoramas_wide (the set's first file)."""
    out = []
    for group in ("panoramas", "panoramas_wide"):
        for folder in sorted(p for p in (data / group).iterdir() if p.is_dir()):
            files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS
                           and not f.name.lower().startswith("mask"))
            if files:
                out.append(read_image(files[0]))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("out/devsets"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    other = skimage_photos()
    if (args.data / "panoramas").is_dir():
        tiles = shared_photos(args.data)
    else:  # the left halves make the turn's world, the right halves the distractors'
        tiles = [p[:, : p.shape[1] // 2] for p in other]
        other = [p[:, p.shape[1] // 2:] for p in other]
    turn = make_repeated_turn(args.out / "repeated_turn", tiles[:TURN_TILES], other, seed=args.seed)
    wall = make_window_wall(args.out / "window_wall", tiles[3:], seed=args.seed)
    print(f"wrote {len(turn.truth) + len(turn.distractors)} views to {turn.folder}, {len(wall.truth)} to {wall.folder}")


if __name__ == "__main__":
    main()
