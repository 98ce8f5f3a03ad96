"""The detection floor of the speed goal (issue 23): per shared set, OpenStitching-SIFT's whole in-process time and
the part of it spent in its SIFT detection, beside stitch's whole in-process time and its own detection.

Usage: python scripts/detection_floor.py [--data ../shared/data/panoramas] [--set NAME ...]

Both detect SIFT on about 0.6 MP working images (OpenStitching: ``cv.SIFT_create()`` uncapped on its medium
resolution; stitch: uncapped SIFT cut to 4000 spread keypoints), so the detection is a floor both pay; a run
cannot take under half of OpenStitching's time unless its detection does. Each set runs once per method in this
process, stitch with ``workers=1`` beside OpenStitching (single-threaded in Python; OpenCV's own threads in both).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from stitch.bench.panorama import discover_sets
from stitch.profile import recording


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/panoramas"))
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    from stitching import Stitcher

    import stitch

    class Timed(Stitcher):
        detect_s = 0.0

        def find_features(self, imgs, feature_masks=()):
            t0 = time.perf_counter()
            out = super().find_features(imgs, list(feature_masks))
            self.detect_s += time.perf_counter() - t0
            return out

    tot = [0.0, 0.0, 0.0, 0.0]
    print(f"{'set':18s} {'OS s':>7s} {'OS detect':>9s} {'stitch s':>8s} {'st detect':>9s}")
    for name, paths in discover_sets(args.data, args.sets):
        st = Timed(detector="sift")
        t0 = time.perf_counter()
        try:
            st.stitch([str(p) for p in paths])
            os_s = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - a peer's failure is a row, not the end of the run
            print(f"{name:18s} OpenStitching failed: {type(exc).__name__}")
            continue
        with recording() as rec:
            t0 = time.perf_counter()
            stitch.stitch_images([str(p) for p in paths], workers=1)
            st_s = time.perf_counter() - t0
        det = rec.seconds.get("pair: detection", 0.0)
        for k, v in enumerate((os_s, st.detect_s, st_s, det)):
            tot[k] += v
        print(f"{name:18s} {os_s:7.2f} {st.detect_s:9.2f} {st_s:8.2f} {det:9.2f}", flush=True)
    print(f"{'total':18s} {tot[0]:7.2f} {tot[1]:9.2f} {tot[2]:8.2f} {tot[3]:9.2f}")
    print(f"OpenStitching's detection: {tot[1] / tot[0]:.0%} of its time; stitch's detection: {tot[3] / tot[2]:.0%} "
          f"of its time; 0.5x OpenStitching = {0.5 * tot[0]:.1f} s")


if __name__ == "__main__":
    main()
