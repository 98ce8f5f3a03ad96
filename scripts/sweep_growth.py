"""Growth on rendered sweeps (issue 23): registration time, peak memory, views kept and rotation error per N, for
stitch and OpenStitching-SIFT, each run in its own process group (killed whole at --timeout).

Usage: python scripts/sweep_growth.py out/sweep100 out/sweep200 out/sweep500 [--method stitch]
       [--method openstitching-sift] [--timeout 900] [--json out/growth.json]

The folders come from scripts/make_sweep.py (views and truth.json). stitch: ``stitch.register`` (pair search,
camera model, checks). OpenStitching: ``Stitcher(detector="sift")`` up to its cameras (features, matching,
subset, estimation, bundle adjustment, wave correction), which is its registration. Seconds are measured inside
the child around the registration (reading the views included, imports excluded); peak memory is the child's
peak resident set. Rotation error: stitch.bench.devsets.placement_errors / camera_errors (degrees).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stitch.bench.devsets import camera_errors, load_devset, placement_errors
from stitch.bench.panorama import METHOD_OS_SIFT, METHOD_STITCH, run_group
from stitch.io import write_text_atomic

METHODS = (METHOD_STITCH, METHOD_OS_SIFT)


def _register(method: str, folder: Path) -> dict:
    """Register the views of ``folder`` with ``method`` in this process: seconds, kept, error per view (degrees)."""
    dev = load_devset(folder)
    files = sorted(str(p) for p in folder.glob("view_*.jpg"))
    t0 = time.perf_counter()
    if method == METHOD_STITCH:
        import stitch

        reg = stitch.register(files)
        secs = time.perf_counter() - t0
        err = placement_errors(reg, dev)
    else:
        from stitching import Stitcher
        from stitching.images import Images

        st = Stitcher(detector="sift")
        st.images = Images.of(files, st.medium_megapix, st.low_megapix, st.final_megapix)
        imgs = st.resize_medium_resolution()
        features = st.find_features(imgs)
        matches = st.match_features(features)
        imgs, features, matches = st.subset(imgs, features, matches)
        cameras = st.perform_wave_correction(st.refine_camera_parameters(
            features, matches, st.estimate_camera_parameters(features, matches)))
        secs = time.perf_counter() - t0
        scale = st.images.get_ratio(Images.Resolution.MEDIUM, Images.Resolution.FINAL)  # K is in medium px
        names = [Path(n).name for n in st.images.names]
        cams = {}
        for n, c in zip(names, cameras):
            K = np.asarray(c.K(), float)
            K[:2] /= scale  # back to the view's own px
            cams[n] = (K, np.asarray(c.R, float))
        err = camera_errors(cams, dev)
    e = np.array(list(err.values())) if err else np.array([math.inf])
    return {"method": method, "views": len(dev.truth), "kept": len(err), "seconds": secs,
            "median_deg": float(np.median(e)), "p95_deg": float(np.percentile(e, 95)), "max_deg": float(e.max()),
            "above_0.2": int(np.sum(e > 0.2))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="*", type=Path)
    ap.add_argument("--method", action="append", choices=METHODS)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", nargs=3, metavar=("METHOD", "FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        method, folder, out = args.child
        write_text_atomic(Path(out), json.dumps(_register(method, Path(folder))))
        return 0
    rows = []
    for folder in args.folders:
        for method in args.method or METHODS:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "result.json"
                run = run_group([sys.executable, __file__, "--child", method, str(folder), str(out)],
                                Path(tmp) / "log.txt", args.timeout)
                row = json.loads(out.read_text()) if out.exists() else {
                    "method": method, "error": "timed out" if run.timed_out else
                    (Path(tmp) / "log.txt").read_text(errors="replace").strip().splitlines()[-1:]}
            row.update(folder=str(folder), wall_s=run.seconds, peak_mb=run.peak_mb)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        write_text_atomic(args.json, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
