"""The shared homography bench with and without the direct source's challenge (issue 24), in one run.

    .venv/bin/python scripts/homography_challenge.py --today stitch/deep/weights/cpu_2026-11-22/refiner.pt

Runs ``stitch bench homography``'s protocol (``run_homography_bench``, method stitch) twice on
../shared/data/homography_gt: today's search (``challenge_below=0``, the previous default weights) and the
defaults; prints ok@3/5/10, AUC@3/5/10, the median error and seconds of each, the pairs whose error changed by
more than 0.5 px, and the pairs that reached the challenge.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stitch.bench.homography import METHOD_STITCH, run_homography_bench

ROOT = "../shared/data/homography_gt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--today", required=True, help="the previous default weights")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    runs = {"today (challenge off)": {"challenge_below": 0.0, "deep_weights": args.today}, "defaults": {}}
    res = {name: run_homography_bench(ROOT, methods=[METHOD_STITCH], options=opts) for name, opts in runs.items()}
    print("| run | pairs | ok@3 | ok@5 | ok@10 | AUC@3 | AUC@5 | AUC@10 | median px | median s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    out = {}
    for name, r in res.items():
        s = next(x for x in r.summaries["overall"] if x.method == METHOD_STITCH)
        print(f"| {name} | {s.pairs} | " + " | ".join(f"{s.ok[t]:.3f}" for t in (3.0, 5.0, 10.0)) + " | "
              + " | ".join(f"{s.auc[t]:.3f}" for t in (3.0, 5.0, 10.0)) + f" | {s.median_error:.2f} | "
              f"{s.median_seconds:.2f} |")
        out[name] = {"ok": s.ok, "auc": s.auc, "median_error": s.median_error, "median_seconds": s.median_seconds}
    a, b = ({(x.subset, x.name): x for x in r.rows if x.method == METHOD_STITCH} for r in res.values())
    changed = [(k, a[k].error, b[k].error) for k in a if abs(a[k].error - b[k].error) > 0.5]
    reached = [k for k in b if "direct-challenge" in b[k].detail]
    print(f"\nerror changed by > 0.5 px on {len(changed)} pair(s): "
          + ", ".join(f"{'/'.join(k)} {e0:.2f} -> {e1:.2f}" for k, e0, e1 in changed))
    print(f"the challenge ran on {len(reached)} of {len(b)} pairs: {', '.join('/'.join(k) for k in reached)}")
    extra = [b[k].seconds - a[k].seconds for k in reached]
    if extra:
        print(f"seconds over today's on those pairs: median {sorted(extra)[len(extra) // 2]:+.2f}, max {max(extra):+.2f}")
    out["changed"], out["reached"] = [["/".join(k), e0, e1] for k, e0, e1 in changed], ["/".join(k) for k in reached]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
