"""The local warp's figures (issue 21 item 1): each set stitched with and without ``local_warp``, same machine, same run.

Per set and setting: seconds (stitch_images, the best of --repeat runs, the two settings interleaved so a busy
machine slows both alike), then the figures of ``stitch bench panorama`` for method stitch, computed by its own
child run (stitch.bench.panorama.run_child, in this process): the overlap PSNR / SSIM, the overlap misalignment
(DIS flow between each pair of photos warped alone onto the panorama's frame, p50 / p95), seam-band ghosting
and line straightness (stitch.bench.visual), and the local warp's own figures (matches, residual before / after).

    .venv/bin/python scripts/local_warp_figures.py --set apap_railtracks --set hill --out out/local_warp

Writes ``<out>/<set>/<off|on>/`` (the bench's thumbnail and worst-place crops) and ``<out>/figures.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from stitch.bench.panorama import METHOD_STITCH, discover_sets, run_child
from stitch.panorama.pipeline import local_warp_summary, stitch_images

ROOTS = ("../shared/data/panoramas", "../shared/data/panoramas_wide")
#: The bench's figures kept per setting (visual ones are under its "visual" key).
KEYS = ("psnr", "ssim", "kept")
VISUAL_KEYS = ("flow_p50", "flow_p95", "ghost_p50", "ghost_p95", "bend_p95", "bend_max")


def timed(paths: list[Path], repeat: int) -> tuple[dict[str, float], dict | None]:
    """(the best of ``repeat`` runs of stitch_images per setting, interleaved; the local warp's summary)."""
    best, summary = {"off": math.inf, "on": math.inf}, None
    for _ in range(repeat):
        for tag in ("off", "on"):
            t0 = time.perf_counter()
            pano = stitch_images(paths, local_warp=tag == "on")
            best[tag] = min(best[tag], time.perf_counter() - t0)
            if pano.local_warp is not None:
                summary = local_warp_summary(pano.local_warp) | {"seconds": pano.local_warp.seconds}
    return best, summary


def bench_figures(paths: list[Path], out: Path, local: bool) -> dict:
    """The figures of stitch bench panorama (method stitch) with local_warp = ``local``."""
    out.mkdir(parents=True, exist_ok=True)
    raw = run_child(METHOD_STITCH, paths, out, stitch_options={"local_warp": local})
    if not raw.get("ok"):
        return {"error": raw.get("error")}
    visual = raw.get("visual", {})
    return {k: raw.get(k) for k in KEYS} | {k: visual.get(k) for k in VISUAL_KEYS}


def main() -> None:
    """Parse the arguments, run every set with and without the local warp, print and save the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="sets", action="append", required=True, help="set name (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("out/local_warp"))
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per setting, interleaved (the best counts)")
    args = ap.parse_args()
    found = {}
    for root in ROOTS:
        if Path(root).is_dir():
            found |= {n: ps for n, ps in discover_sets(root) if n in args.sets}
    figures = {}
    for name in args.sets:
        seconds, summary = timed(found[name], args.repeat)
        figures[name] = {tag: {"seconds": seconds[tag]} | bench_figures(found[name], args.out / name / tag, tag == "on")
                         for tag in ("off", "on")}
        figures[name]["local_warp"] = summary
        off, on = figures[name]["off"], figures[name]["on"]
        print(f"{name}: flow p50/p95 {off['flow_p50']:.2f}/{off['flow_p95']:.2f} -> {on['flow_p50']:.2f}/"
              f"{on['flow_p95']:.2f} px, PSNR {off['psnr']:.2f} -> {on['psnr']:.2f} dB, "
              f"{off['seconds']:.2f} -> {on['seconds']:.2f} s ({on['seconds'] / off['seconds']:.2f}x)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "figures.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
