"""The learned refiner's coarse mode on full-size pairs (issue 24): raw, and behind the pipeline's score gate.

For every pair of data/samples/pairs and of ../shared/data/homography_gt, the pipeline's answer H0
(``estimate_homography`` with the features source only, so that the start does not depend on the weights) is
refined by ``refine_deep(H0, coarse=True)`` with each weights file given. Per weights file it reports:

- raw: pairs where the quality score (``stitch.homography.quality.score``, with the pipeline's matches) of the
  coarse result is lower than H0's, pairs whose error grows by more than 0.5 px, and the mean / median error;
- gated: the better-scoring of H0 and the coarse result (what the pipeline's candidates and refinements
  keep): pairs whose error grows by more than 0.5 px;
- the median seconds of one coarse call.

    .venv/bin/python scripts/deep_fullsize.py stitch/deep/weights/refiner.pt other.pt --json out/deep_fullsize.json

Errors: the homography bench's (``stitch.bench.metrics.homography_error``: annotated points or corners).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

import stitch
from stitch.bench.datasets import GTPair, load_homography_gt
from stitch.bench.metrics import homography_error
from stitch.deep import refine_deep
from stitch.errors import StitchError
from stitch.homography import quality
from stitch.io import read_image

SAMPLES = Path("data/samples/pairs")
SHARED = Path("../shared/data/homography_gt")
WORSE_PX = 0.5


def sample_pairs() -> list[GTPair]:
    """The four sample pairs (src.*, dst.*, H.txt) as bench pairs."""
    out = []
    for d in sorted(p for p in SAMPLES.iterdir() if p.is_dir()):
        out.append(GTPair("samples", d.name, next(d.glob("src.*")), next(d.glob("dst.*")), np.loadtxt(d / "H.txt")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", nargs="+", help="weights files to compare")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    pairs = sample_pairs() + (load_homography_gt(SHARED) if SHARED.is_dir() else [])
    rows = []
    for p in pairs:
        src, dst = read_image(p.src), read_image(p.dst)
        size = (src.shape[1], src.shape[0])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = stitch.estimate_homography(src, dst, sources="features")
        except StitchError:
            continue
        ctx = quality.make_context(src, dst)
        s0 = quality.score(r.H, ctx, r.matches)[0]
        row = {"pair": p.label, "start_error": homography_error(p, r.H, size), "start_score": s0}
        for w in args.weights:
            t0 = time.perf_counter()
            Hc = refine_deep(r.H, src, dst, coarse=True, weights=w)
            secs = time.perf_counter() - t0
            sc = quality.score(Hc, ctx, r.matches)[0] if Hc is not None else float("-inf")
            err = homography_error(p, Hc, size) if Hc is not None else row["start_error"]
            gated = err if sc > s0 else row["start_error"]
            row[w] = {"score": sc, "error": err, "gated_error": gated, "seconds": secs}
        rows.append(row)
        print(p.label, f"start {row['start_error']:.2f} px", " | ".join(
            f"{row[w]['error']:.2f} px, score {row[w]['score'] - s0:+.3f}" for w in args.weights), flush=True)
    summary = {}
    for w in args.weights:
        e0 = np.array([r["start_error"] for r in rows])
        e = np.array([r[w]["error"] for r in rows])
        g = np.array([r[w]["gated_error"] for r in rows])
        summary[w] = {
            "pairs": len(rows),
            "raw_score_lower": int(sum(r[w]["score"] < r["start_score"] for r in rows)),
            "raw_error_worse": int(np.sum(e > e0 + WORSE_PX)), "raw_error_better": int(np.sum(e < e0 - WORSE_PX)),
            "raw_mean": float(np.mean(np.minimum(e, 1e4))), "raw_median": float(np.median(e)),
            "gated_error_worse": int(np.sum(g > e0 + WORSE_PX)), "gated_error_better": int(np.sum(g < e0 - WORSE_PX)),
            "start_mean": float(np.mean(np.minimum(e0, 1e4))), "start_median": float(np.median(e0)),
            "median_seconds": float(np.median([r[w]["seconds"] for r in rows])),
        }
        print(w, json.dumps(summary[w]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1, default=float))


if __name__ == "__main__":
    main()
