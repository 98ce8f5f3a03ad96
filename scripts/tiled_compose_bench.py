"""Time and peak memory of compositing a large canvas in one piece and tile by tile (stitch.panorama.tiles).

Usage: python scripts/tiled_compose_bench.py WORLD [--size 20000x5000] [--photo 3000x2500] [--overlap 0.3]
       [--tile-megapix 64 0] [--tile-side 4096] [--workers 2] [--out out/tiles]

WORLD is any large photograph (e.g. a panorama stitch wrote), scaled to --size; it is cut into photos of --photo
px overlapping by --overlap, each with its own gain (0.85-1.15), placed by known shifts on the plane, and
composited by stitch.panorama.compose.compose_panorama once per --tile-megapix value (0: in one piece), each in
its own process, which writes OUT/pano_<value>.tif. Printed per run: seconds of compositing, of the .tif
write, the process's peak resident memory (ru_maxrss: file-backed pages of the disk-backed result included)
and its peak anonymous memory (RssAnon sampled every 20 ms: what the tiles bound), tiles; then the pixel
difference between the runs' results (mean / max gray levels).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np


def photos(world: np.ndarray, photo: tuple[int, int], overlap: float, seed: int = 0):
    """(images, shifts (3, 3)): photos of (w, h) px cut from world with the given overlap, each with a gain."""
    H, W = world.shape[:2]
    pw, ph = photo
    xs = list(range(0, W - pw, int(pw * (1 - overlap)))) + [W - pw]
    ys = list(range(0, H - ph, int(ph * (1 - overlap)))) + [H - ph]
    rng = np.random.default_rng(seed)
    imgs, Hs = [], []
    for y in ys:
        for x in xs:
            g = rng.uniform(0.85, 1.15)
            imgs.append(np.clip(world[y:y + ph, x:x + pw].astype(np.float32) * g, 0, 255).astype(np.uint8))
            Hs.append(np.array([[1.0, 0, x], [0, 1.0, y], [0, 0, 1.0]]))
    return imgs, Hs


def anon_peak(stop: threading.Event, out: list[int]) -> None:
    """Sample this process's RssAnon (kB) every 20 ms into out[0] (its peak) until stop is set."""
    while not stop.is_set():
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    out[0] = max(out[0], int(line.split()[1]))
        time.sleep(0.02)


def child(args: argparse.Namespace) -> None:
    from stitch.panorama.compose import ComposeConfig, compose_panorama
    from stitch.panorama.output import write_panorama
    from stitch.panorama.warp import Projection, canvas_bounds

    W, H = args.size
    world = cv2.resize(cv2.imread(args.world), (W, H), interpolation=cv2.INTER_CUBIC)
    imgs, Hs = photos(world, args.photo, args.overlap)
    del world
    canvas = canvas_bounds(Hs, [args.photo] * len(imgs), Projection("plane"), max_canvas_pixels=10 ** 10)
    peak, stop = [0], threading.Event()
    sampler = threading.Thread(target=anon_peak, args=(stop, peak), daemon=True)
    sampler.start()
    t = time.perf_counter()
    cfg = ComposeConfig(tile_megapix=args.run, **({"tile_side": args.tile_side} if args.tile_side else {}))
    out = compose_panorama(imgs, Hs, canvas, cfg, workers=args.workers)
    t_compose = time.perf_counter() - t
    t = time.perf_counter()
    path = write_panorama(Path(args.out) / f"pano_{args.run:g}.tif", out.image)
    t_write = time.perf_counter() - t
    stop.set()
    sampler.join()
    inputs_mb = sum(img.nbytes for img in imgs) // 2 ** 20
    print(json.dumps({"tile_megapix": args.run, "tile_side": cfg.tile_side, "photos": len(imgs), "inputs_mb": inputs_mb,
                      "canvas_mp": round(canvas.pixels / 1e6, 1),
                      "result": list(out.image.shape), "tiles": out.tiles, "compose_s": round(t_compose, 1),
                      "write_s": round(t_write, 1), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                      "peak_anon_mb": peak[0] // 1024, "file": str(path)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("world")
    ap.add_argument("--size", default="20000x5000")
    ap.add_argument("--photo", default="3000x2500")
    ap.add_argument("--overlap", type=float, default=0.3)
    ap.add_argument("--tile-megapix", type=float, nargs="+", default=[64.0, 0.0])
    ap.add_argument("--tile-side", type=int, default=None, help="tile side (px; default: ComposeConfig's)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="out/tiles")
    ap.add_argument("--run", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.size = tuple(int(v) for v in args.size.split("x"))
    args.photo = tuple(int(v) for v in args.photo.split("x"))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.run is not None:
        child(args)
        return
    results = []
    for value in args.tile_megapix:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--run", str(value)]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(json.dumps(res))
        results.append(res)
    first = cv2.imread(results[0]["file"])
    for res in results[1:]:
        d = np.abs(cv2.imread(res["file"]).astype(np.int16) - first.astype(np.int16))
        print(f"tile_megapix {results[0]['tile_megapix']:g} vs {res['tile_megapix']:g}: mean |diff| "
              f"{d.mean():.4f}, max {int(d.max())} gray levels")


if __name__ == "__main__":
    main()
