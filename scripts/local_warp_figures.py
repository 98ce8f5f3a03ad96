"""The local warp's figures (issue 21 item 1): each set stitched with and without ``local_warp``, same machine, same run.

Per set and setting: seconds (stitch_images, the best of --repeat runs, the settings interleaved); the overlap
misalignment (DIS 'medium' flow between each pair of warped photos, on the textured pixels of their common area;
p50 / p95 over every pair's pixels, and the worst pair's p95), the photos warped alone onto the panorama's frame as
``--timelapse DIR --crop none`` writes them; the overlap PSNR / SSIM of ``stitch bench panorama`` (its pair_metrics
on the same registered images); the residual of the local warp's matches before / after, and how far it bends the
photos' straight segments (line_bending).

    .venv/bin/python scripts/local_warp_figures.py --set apap_railtracks --set hill --out out/local_warp

Writes ``<out>/<set>/<off|on>/`` (the timelapse frames and the panorama as PNG) and ``<out>/figures.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np

from stitch.bench.panorama import Registered, discover_sets, pair_metrics
from stitch.io import read_image, write_image_atomic
from stitch.panorama.pipeline import stitch_images
from stitch.panorama.warp import warp_image

ROOTS = ("../shared/data/panoramas", "../shared/data/panoramas_wide")
#: Textured pixels: Sobel gradient magnitude (divided by 8: grey levels per px) above this in both photos.
MIN_GRADIENT = 8.0
#: Pixels eroded off each photo's coverage before the common area (interpolated borders, black photo pixels).
ERODE_PX = 3


def frame_coverage(frame: np.ndarray) -> np.ndarray:
    """(H, W) bool: where a timelapse frame (black where its photo does not reach) has its photo, eroded."""
    cover = (frame.max(axis=2) > 0).astype(np.uint8)
    return cv2.erode(cover, np.ones((2 * ERODE_PX + 1, 2 * ERODE_PX + 1), np.uint8)) > 0


def _textured(gray: np.ndarray) -> np.ndarray:
    gx, gy = cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1)
    return np.hypot(gx, gy) / 8.0 > MIN_GRADIENT


def pair_flow(a: np.ndarray, b: np.ndarray, ma: np.ndarray, mb: np.ndarray) -> np.ndarray | None:
    """DIS flow magnitudes (K,) px from frame a to frame b on the textured pixels of their common area (None: none)."""
    both = ma & mb
    if both.sum() < 1000:
        return None
    ys, xs = np.nonzero(both)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    if min(y1 - y0, x1 - x0) < 16:
        return None
    ga, gb = (cv2.cvtColor(f[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY) for f in (a, b))
    m = both[y0:y1, x0:x1]
    fa, fb = ga.copy(), gb.copy()  # outside the common area each sees the other: no false edges at its border
    fa[~m], fb[~m] = gb[~m], ga[~m]
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(fa, fb, None)
    tex = m & _textured(ga) & _textured(gb)
    return np.linalg.norm(flow, axis=2)[tex] if tex.sum() >= 200 else None


def misalignment(frames: list[np.ndarray]) -> dict[str, float | None]:
    """p50 / p95 of the flow over every pair of frames' textured common pixels, and the worst pair's p95."""
    covers = [frame_coverage(f) for f in frames]
    mags = [m for i in range(len(frames)) for j in range(i + 1, len(frames))
            if (m := pair_flow(frames[i], frames[j], covers[i], covers[j])) is not None]
    if not mags:
        return {"flow_p50": None, "flow_p95": None, "flow_worst_pair_p95": None, "flow_pairs": 0}
    allm = np.concatenate(mags)
    return {"flow_p50": float(np.median(allm)), "flow_p95": float(np.percentile(allm, 95)),
            "flow_worst_pair_p95": float(max(np.percentile(m, 95) for m in mags)), "flow_pairs": len(mags)}


def bench_psnr(pano, paths: list[Path]) -> dict[str, float | None]:
    """The overlap PSNR / SSIM of stitch bench panorama (pair_metrics on every piece warped onto the canvas)."""
    by_name = {p.name: p for p in paths}
    regs = []
    for k in range(len(pano.canvas.boxes)):
        src = pano.canvas.source(k)
        wi = warp_image(read_image(by_name[pano.names[src]]), pano.homographies[src], pano.canvas, k)
        if wi is not None:
            regs.append(Registered(pano.names[src], wi.image, wi.mask, wi.offset))
    pairs = pair_metrics(regs)
    return {key: float(np.mean([getattr(p, key) for p in pairs])) if pairs else None for key in ("psnr", "ssim")}


def line_bending(pano, paths: list[Path], min_len: float = 40.0, samples: int = 16) -> dict[str, float | None]:
    """How far the local warp bends straight segments of the photos (LSD, >= min_len px): per segment, the largest
    departure of its displacement from linear along it (what turns a line the global model keeps straight into a
    curve); p95 and max over every segment of every photo."""
    by_name = {p.name: p for p in paths}
    proj, t = pano.canvas.projection, np.linspace(0.0, 1.0, samples)
    bends = []
    for k, name in enumerate(pano.names):
        boxes = [b for b in range(len(pano.canvas.boxes)) if pano.canvas.source(b) == k]
        field = pano.canvas.displacement(boxes[0]) if boxes else None
        if field is None:
            continue
        gray = cv2.cvtColor(read_image(by_name[name]), cv2.COLOR_BGR2GRAY)
        seg = cv2.createLineSegmentDetector().detect(gray)[0]
        seg = np.zeros((0, 4)) if seg is None else seg.reshape(-1, 4).astype(np.float64)
        seg = seg[np.linalg.norm(seg[:, 2:] - seg[:, :2], axis=1) >= min_len]
        pts = seg[:, None, :2] * (1 - t)[None, :, None] + seg[:, None, 2:] * t[None, :, None]
        ph = np.concatenate([pts, np.ones(pts.shape[:2] + (1,))], 2).reshape(-1, 3) @ pano.homographies[k].T
        f = field.at(proj.forward(ph)[0]).reshape(len(seg), samples, 2)
        lin = f[:, :1] * (1 - t)[None, :, None] + f[:, -1:] * t[None, :, None]
        bends.append(np.linalg.norm(f - lin, axis=2).max(axis=1))
    b = np.concatenate(bends) if bends else np.zeros(0)
    return {"bend_p95": float(np.percentile(b, 95)) if len(b) else None, "bend_max": float(b.max()) if len(b) else None,
            "segments": len(b)}


def timed(paths: list[Path], repeat: int) -> dict[str, float]:
    """The best of ``repeat`` runs of stitch_images per setting, the settings interleaved (off, on, off, on, ...) so
    a busy machine slows both alike."""
    best = {"off": math.inf, "on": math.inf}
    for _ in range(repeat):
        for tag in ("off", "on"):
            t0 = time.perf_counter()
            stitch_images(paths, local_warp=tag == "on")
            best[tag] = min(best[tag], time.perf_counter() - t0)
    return best


def one_setting(paths: list[Path], out: Path, local: bool) -> dict:
    """Every figure of one set with local_warp = ``local``, but the time."""
    pano = stitch_images(paths, local_warp=local, crop="none", timelapse=str(out / "frames"))
    write_image_atomic(out / "panorama.png", pano.image)
    row = {"size": list(pano.size), "offset": list(pano.offset), "kept": len(pano.names)}
    row |= misalignment([read_image(f) for f in pano.timelapse])
    row |= bench_psnr(pano, paths)
    lw = pano.local_warp
    if lw is not None:
        row |= {"matches": lw.used, "removed": lw.removed, "incoherent": lw.incoherent,
                "match_residual_before": list(lw.before), "match_residual_after": list(lw.after),
                "local_warp_seconds": lw.seconds} | line_bending(pano, paths)
    return row


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
        seconds = timed(found[name], args.repeat)
        figures[name] = {tag: {"seconds": seconds[tag]} | one_setting(found[name], args.out / name / tag, tag == "on")
                         for tag in ("off", "on")}
        off, on = figures[name]["off"], figures[name]["on"]
        print(f"{name}: flow p50/p95 {off['flow_p50']:.2f}/{off['flow_p95']:.2f} -> {on['flow_p50']:.2f}/"
              f"{on['flow_p95']:.2f} px, PSNR {off['psnr']:.2f} -> {on['psnr']:.2f} dB, "
              f"{off['seconds']:.2f} -> {on['seconds']:.2f} s ({on['seconds'] / off['seconds']:.2f}x)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "figures.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
