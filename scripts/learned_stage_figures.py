"""The learned stage's figures (issue 24) in one run: today's pipeline and weights beside the new ones.

DeTone regime (``stitch bench synthetic``'s protocol, 128 x 128 patches, rho 32, identity start) on the
standard and the low-texture split of the 8 test sets, then the refiner regime (start off by up to 8 px) on
the standard split. Rows:

- SIFT+RANSAC: the baseline;
- today: the pipeline as it was (the direct source's challenge off: ``challenge_below=0``) with the previous
  default weights, and those weights alone from the identity;
- each other weights file given: the pipeline with its defaults (the challenge on) and the weights alone;
- refiner regime: ECC, deep, deep+ECC and ECC+ECC per weights file, and the pairs where deep+ECC ends worse
  than ECC alone by more than 0.05 px (ECC+ECC: the control).

Pipeline time: per pair, the new pipeline's seconds minus today's (p50 / p95 / max), on the same pairs; and
the challenge's own seconds (its network calls and their scoring, summed from its candidates) on the pairs
that reach it, which a busy machine skews less than a difference of two runs.

    .venv/bin/python scripts/learned_stage_figures.py --today stitch/deep/weights/cpu_2026-11-22/refiner.pt \\
        --weights stitch/deep/weights/gpu_h200/refiner.pt --weights stitch/deep/weights/refiner.pt --json out/l.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import stitch
from stitch.bench.baselines import METHOD_SIFT_RANSAC
from stitch.bench.synthetic import (
    METHOD_CLASSICAL_ECC,
    METHOD_DEEP,
    METHOD_DEEP_ECC,
    METHOD_DEEP_IDENTITY,
    METHOD_ECC,
    METHOD_ECC_ECC,
    SPLIT_CHOICES,
    SPLITS,
    run_synthetic_bench,
    synthetic_images,
    worse_than_ecc,
)
from stitch.io import read_image

ROOT = "../shared/data/panoramas"
TEST_SETS = ("hill", "pier", "uttower", "vlfeat_river", "vlfeat_roofs", "weir", "dhw_temple", "dhw_carpark")


def line(label: str, s) -> str:
    return (f"| {label} | {s.mean:.2f} | {s.median:.2f} | {100 * s.failures:.1f} % | {s.mean_seconds:.3f} | "
            f"{s.median_seconds:.3f} |")


def challenge_seconds(split: str, pairs: int, weights: str) -> dict:
    """Seconds of the direct source's challenge per pair that reaches it (defaults, ``weights``), DeTone regime."""
    files = synthetic_images(ROOT, TEST_SETS)
    images = [read_image(f) for f in files[:pairs]]
    secs = []
    for k in range(pairs):
        pr = SPLITS[split](images[k % len(images)], np.random.default_rng([0, 0, k]), "detone", "")
        try:
            r = stitch.estimate_homography(pr.src, pr.dst, deep_weights=weights)
        except stitch.StitchError:
            continue
        if "direct-challenge" in r.levels_tried:
            secs.append(sum(c.seconds for c in r.candidates if c.params.get("level", "").startswith("direct-")
                            and c.method == "deep-coarse"))
    a = np.array(secs)
    return {"reached": len(a), "pairs": pairs, "p50": float(np.median(a)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--today", required=True, help="the previous default weights")
    ap.add_argument("--weights", action="append", default=[], help="weights to compare (repeatable)")
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--refiner-pairs", type=int, default=100)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    t_start = time.perf_counter()
    out: dict = {"pairs": args.pairs, "refiner_pairs": args.refiner_pairs, "splits": {}, "refiner": {}}
    common = {"pairs": args.pairs, "sets": TEST_SETS, "regimes": ["detone"]}
    for split in SPLIT_CHOICES:
        print(f"\n### DeTone regime, {split} split ({args.pairs} pairs)\n")
        print("| method | mean px | median px | fail > 3 px | mean s | median s |\n| --- | --- | --- | --- | --- | --- |")
        today = run_synthetic_bench(ROOT, methods=[METHOD_SIFT_RANSAC, METHOD_CLASSICAL_ECC, METHOD_DEEP_IDENTITY],
                                    weights=args.today, options={"challenge_below": 0.0}, split=split, **common)
        by = {s.method: s for s in today.summaries["detone"]}
        print(line("SIFT+RANSAC", by[METHOD_SIFT_RANSAC]))
        print(line(f"today: pipeline, challenge off, {args.today}", by[METHOD_CLASSICAL_ECC]))
        print(line(f"today: {args.today} alone from the identity", by[METHOD_DEEP_IDENTITY]))
        rec = {"today": {m: vars(s) for m, s in by.items()}}
        t_today = {r.pair: r.seconds for r in today.rows if r.method == METHOD_CLASSICAL_ECC}
        for w in args.weights:
            res = run_synthetic_bench(ROOT, methods=[METHOD_CLASSICAL_ECC, METHOD_DEEP_IDENTITY], weights=w,
                                      split=split, **common)
            bw = {s.method: s for s in res.summaries["detone"]}
            print(line(f"pipeline (defaults), {w}", bw[METHOD_CLASSICAL_ECC]))
            print(line(f"{w} alone from the identity", bw[METHOD_DEEP_IDENTITY]))
            extra = np.array([r.seconds - t_today[r.pair] for r in res.rows if r.method == METHOD_CLASSICAL_ECC])
            rec[w] = {m: vars(s) for m, s in bw.items()}
            rec[w]["extra_seconds"] = {"p50": float(np.median(extra)), "p95": float(np.percentile(extra, 95)),
                                       "max": float(extra.max())}
            print(f"|   pipeline seconds over today's, per pair: p50 {np.median(extra):+.3f}, "
                  f"p95 {np.percentile(extra, 95):+.3f}, max {extra.max():+.3f} | | | | | |")
            ch = rec[w]["challenge_seconds"] = challenge_seconds(split, args.pairs, w)
            print(f"|   the challenge's own seconds on the {ch['reached']} of {ch['pairs']} pairs that reach it: p50 "
                  f"{ch['p50']:.3f}, p95 {ch['p95']:.3f}, max {ch['max']:.3f} | | | | | |")
        out["splits"][split] = rec
    print(f"\n### Refiner regime, standard split ({args.refiner_pairs} pairs)\n")
    print("| weights | ECC | deep | deep+ECC | ECC+ECC | deep+ECC worse than ECC | ECC+ECC worse than ECC |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for w in [args.today, *args.weights]:
        res = run_synthetic_bench(ROOT, pairs=args.refiner_pairs, sets=TEST_SETS, regimes=["refiner"], weights=w,
                                  methods=[METHOD_ECC, METHOD_DEEP, METHOD_DEEP_ECC, METHOD_ECC_ECC])
        bw = {s.method: s for s in res.summaries["refiner"]}
        n_deep, n_ctrl = worse_than_ecc(res.rows, METHOD_DEEP_ECC), worse_than_ecc(res.rows, METHOD_ECC_ECC)
        print(f"| {w} | {bw[METHOD_ECC].mean:.2f} | {bw[METHOD_DEEP].mean:.2f} | {bw[METHOD_DEEP_ECC].mean:.2f} | "
              f"{bw[METHOD_ECC_ECC].mean:.2f} | {n_deep} | {n_ctrl} |")
        out["refiner"][w] = {"summaries": {m: vars(s) for m, s in bw.items()}, "deep_ecc_worse": n_deep,
                             "ecc_ecc_worse": n_ctrl}
    out["seconds"] = time.perf_counter() - t_start
    print(f"\n{out['seconds']:.0f} s in all")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
