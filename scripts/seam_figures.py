"""Seams and blending around disagreement (issue 21 item 2): each set stitched with named option settings, figures
of ``stitch bench panorama`` for method stitch, computed by its own child run (stitch.bench.panorama.run_child).

Settings (``SETTINGS``): ``off`` is main's behaviour (no misalignment term, plain multi-band), ``seam`` the
misalignment term alone, ``on`` the term plus sharp blending in disagreement areas, ``ncc`` the structure term
plus sharp blending. Per set and setting: overlap PSNR / SSIM, seam visibility, overlap flow and seam-band
ghosting p50 / p95, colour step across seams, invented share.

    .venv/bin/python scripts/seam_figures.py --set hill --set ledge --setting off --setting on --out out/seams

Writes ``<out>/<set>/<setting>/`` (the bench's thumbnail and worst-place crops) and ``<out>/figures.json``
(merged with what an earlier run left there, so sets can be run one at a time).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stitch.bench.panorama import METHOD_STITCH, discover_sets, run_child

ROOTS = ("../shared/data/panoramas", "../shared/data/panoramas_wide")
SETTINGS = {
    "off": {"seam_misalign": "none", "sharp_blend": False},
    "seam": {"seam_misalign": "flow", "sharp_blend": False},
    "on": {"seam_misalign": "flow", "sharp_blend": True},
    "ncc": {"seam_misalign": "ncc", "sharp_blend": True},
}
KEYS = ("psnr", "ssim", "seam_visibility", "kept", "seconds")
VISUAL_KEYS = ("flow_p50", "flow_p95", "ghost_p50", "ghost_p95", "colour_step_p95", "colour_step_mean", "invented_pct")


def figures(paths: list[Path], out: Path, options: dict) -> dict:
    """The figures of stitch bench panorama (method stitch) with these stitch_images options."""
    out.mkdir(parents=True, exist_ok=True)
    raw = run_child(METHOD_STITCH, paths, out, stitch_options=options)
    if not raw.get("ok"):
        return {"error": raw.get("error")}
    visual = raw.get("visual", {})
    return {k: raw.get(k) for k in KEYS} | {k: visual.get(k) for k in VISUAL_KEYS} | {
        "worst_places": raw.get("worst_places")}


def options(tag: str) -> dict:
    """The stitch_images options of a setting: SETTINGS[tag], or TERM:WEIGHT:SHARP."""
    if tag in SETTINGS:
        return SETTINGS[tag]
    term, weight, sharp = tag.split(":")
    return {"seam_misalign": term, "seam_misalign_weight": float(weight), "sharp_blend": sharp == "1"}


def fmt(v: object) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def main() -> None:
    """Parse the arguments, run every set with every setting, print and save the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="sets", action="append", required=True, help="set name (repeatable)")
    ap.add_argument("--setting", dest="settings", action="append",
                    help="option setting (repeatable; default: off and on): a name of SETTINGS, or TERM:WEIGHT:SHARP "
                    "(e.g. ncc:20:1, seam_misalign ncc, seam_misalign_weight 20, sharp_blend on)")
    ap.add_argument("--out", type=Path, default=Path("out/seams"))
    args = ap.parse_args()
    settings = args.settings or ["off", "on"]
    found = {}
    for root in ROOTS:
        if Path(root).is_dir():
            found |= {n: ps for n, ps in discover_sets(root) if n in args.sets}
    path = args.out / "figures.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    for name in args.sets:
        for tag in settings:
            fig = figures(found[name], args.out / name / tag.replace(":", "_"), options(tag))
            doc.setdefault(name, {})[tag] = fig
            print(name, tag, " ".join(f"{k} {fmt(fig.get(k))}" for k in ("ghost_p95", "flow_p95", "psnr", "ssim",
                                                                          "seam_visibility", "colour_step_p95",
                                                                          "seconds")), flush=True)
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
