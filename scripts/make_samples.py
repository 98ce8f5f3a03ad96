"""Generate data/samples/ deterministically from scikit-image's bundled photos.

Usage: python scripts/make_samples.py [--out data/samples]

Every output is a view of a planar "poster" (a mosaic of skimage.data photos) rendered with
cv2.warpPerspective through an exact homography, so the ground truth is exact.

Convention: H maps src pixel coordinates to dst pixel coordinates, x_dst ~ H @ [x, y, 1], with pixel
centers at integer coordinates (OpenCV's), and H[2, 2] == 1.
Re-running with the same library versions writes byte-identical files (fixed seeds and JPEG quality).
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import skimage
from skimage import data as skdata

from stitch.geometry import image_corners, normalize_h, project
from stitch.io import write_image_atomic, write_text_atomic

SEED = 20240611
JPEG_PARAMS = (cv2.IMWRITE_JPEG_QUALITY, 92)
PNG_PARAMS = (cv2.IMWRITE_PNG_COMPRESSION, 9)
VIEW_SIZE = (640, 480)  # (width, height) of every generated image
PANO_SCENE_SIZE = (1600, 600)
PAIR_SCENE_SIZE = (1280, 1024)

# skimage.data photos: (loader name, BGR tint for grayscale images, source and license).
TILES = (
    ("astronaut", None, "NASA (Eileen Collins); public domain"),
    ("coffee", None, "Rachel Michetti / Pikolo Espresso Bar; CC0"),
    ("chelsea", None, "Stefan van der Walt; CC0"),
    ("rocket", None, "SpaceX (DSCOVR launch); public domain"),
    ("immunohistochemistry", None, "CMMI; no known copyright restrictions"),
    ("hubble_deep_field", None, "NASA/HubbleSite; public domain"),
    ("brick", (0.55, 0.75, 1.0), "CC0Textures Bricks25; CC0"),
    ("gravel", (0.8, 0.9, 0.85), "CC0Textures Gravel04; CC0"),
    ("grass", (0.5, 1.0, 0.6), "linolafett on DeviantArt; CC0"),
    ("camera", (1.0, 0.9, 0.8), "Lav Varshney; CC0"),
    ("coins", (0.7, 0.85, 1.0), "Brooklyn Museum Collection; no known copyright restrictions"),
)


@dataclass(frozen=True)
class PairSpec:
    """One two-image sample: its relative homography src -> dst (3, 3) and how dst is rendered."""

    name: str
    H: np.ndarray
    ext: str
    description: str
    gamma: float = 1.0
    gain: float = 1.0
    noise_sigma: float = 0.0


def load_tile(name: str, tint: tuple[float, float, float] | None) -> np.ndarray:
    """Load a skimage.data photo as (H, W, 3) uint8 BGR; grayscale ones are tinted."""
    img = getattr(skdata, name)()
    if img.ndim == 2:
        return np.clip(img[:, :, None] * np.asarray(tint, dtype=np.float64), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img[:, :, 2::-1])


def make_scene(width: int, height: int, rows: int, order: np.ndarray) -> np.ndarray:
    """A (height, width, 3) uint8 mosaic: `rows` strips of tiles in `order`, each tile used at most once."""
    heights = np.diff(np.linspace(0, height, rows + 1).round().astype(int))
    queue = [load_tile(TILES[i][0], TILES[i][1]) for i in order]
    strips = []
    for h in heights:
        strip, filled = [], 0
        while filled < width:
            if not queue:
                raise RuntimeError("not enough tiles to fill the scene without repeating one")
            tile = queue.pop(0)
            w = round(tile.shape[1] * h / tile.shape[0])
            interp = cv2.INTER_AREA if h < tile.shape[0] else cv2.INTER_CUBIC
            strip.append(cv2.resize(tile, (w, int(h)), interpolation=interp))
            filled += w
        strips.append(np.hstack(strip)[:, :width])
    return np.vstack(strips)


def about_center(M: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Conjugate M (3, 3) so that it acts about the center of a (width, height) image."""
    cx, cy = (size[0] - 1) / 2, (size[1] - 1) / 2
    T = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]], dtype=np.float64)
    return T @ M @ np.linalg.inv(T)


def similarity(angle_deg: float, scale: float, tx: float = 0.0, ty: float = 0.0) -> np.ndarray:
    """Rotation (counter-clockwise on screen for positive angles, y down) + scale + shift, (3, 3)."""
    a = np.deg2rad(angle_deg)
    c, s = scale * np.cos(a), scale * np.sin(a)
    return np.array([[c, s, tx], [-s, c, ty], [0, 0, 1]], dtype=np.float64)


def view_to_scene(center: tuple[float, float], angle_deg: float, scale: float,
                  persp: tuple[float, float]) -> np.ndarray:
    """H (3, 3) mapping a VIEW_SIZE view's pixels to scene pixels: tilt, rotate, zoom, place at center."""
    w, h = VIEW_SIZE
    P = np.array([[1, 0, 0], [0, 1, 0], [persp[0] / (w / 2), persp[1] / (h / 2), 1]], dtype=np.float64)
    T = np.array([[1, 0, center[0] - (w - 1) / 2], [0, 1, center[1] - (h - 1) / 2], [0, 0, 1]])
    return normalize_h(T @ about_center(similarity(angle_deg, scale) @ P, VIEW_SIZE))


def render_view(scene: np.ndarray, H_view_to_scene: np.ndarray) -> np.ndarray:
    """Render the VIEW_SIZE view (H, W, 3) uint8 whose pixel x shows scene pixel H @ x."""
    w, h = VIEW_SIZE
    corners = project(H_view_to_scene, np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]))
    sh, sw = scene.shape[:2]
    if corners.min() < 0 or np.any(corners.max(axis=0) > [sw - 1, sh - 1]):
        raise RuntimeError(f"view leaves the scene: corners {corners.round(1).tolist()}")
    return cv2.warpPerspective(scene, H_view_to_scene, VIEW_SIZE,
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


def overlap_fraction(H_src_to_dst: np.ndarray, size: tuple[int, int] = VIEW_SIZE, step: int = 4) -> float:
    """Fraction of a src image's pixels (sampled every `step` px) that land inside the dst image."""
    w, h = size
    xs, ys = np.meshgrid(np.arange(0, w, step), np.arange(0, h, step))
    p = project(H_src_to_dst, np.stack([xs.ravel(), ys.ravel()], axis=1))
    inside = (p[:, 0] >= 0) & (p[:, 0] <= w - 1) & (p[:, 1] >= 0) & (p[:, 1] <= h - 1)
    return float(inside.mean())


def apply_photometric(img: np.ndarray, gain: float, gamma: float = 1.0, noise_sigma: float = 0.0,
                      rng: np.random.Generator | None = None) -> np.ndarray:
    """(H, W, 3) uint8 -> uint8: 255 * gain * (I / 255) ** gamma, plus Gaussian noise of noise_sigma."""
    out = 255.0 * gain * (img.astype(np.float64) / 255.0) ** gamma
    if noise_sigma > 0:
        out += rng.normal(0.0, noise_sigma, size=img.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def matrix_text(H: np.ndarray) -> str:
    """Three lines of three numbers for a 3x3 matrix."""
    return "".join(" ".join(f"{v: .12e}" for v in row) + "\n" for row in H)


def as_list(H: np.ndarray) -> list[list[float]]:
    """A 3x3 matrix as nested lists of floats rounded to 12 significant digits (stable JSON)."""
    return [[float(f"{v:.12g}") for v in row] for row in H]


def compact_json(obj: dict) -> str:
    """JSON with 2-space indents, but each innermost list of numbers on one line."""
    text = json.dumps(obj, indent=2)
    return re.sub(r"\[\s*([-+0-9.eE,\s]+?)\s*\]", lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]",
                  text) + "\n"


def make_pano(out: Path, rng: np.random.Generator) -> dict:
    """Write pano3/ (three overlapping views of one scene + ground_truth.json); return its summary."""
    W, H = PANO_SCENE_SIZE
    scene = make_scene(W, H, rows=2, order=rng.permutation(len(TILES)))
    step = 384  # 640 - 384 = 256 px of nominal overlap: 40 %
    x0 = (W - (VIEW_SIZE[0] + 2 * step)) / 2 + (VIEW_SIZE[0] - 1) / 2
    views = []
    for i in range(3):
        center = (x0 + i * step + rng.uniform(-12, 12), (H - 1) / 2 + rng.uniform(-10, 10))
        Hv = view_to_scene(center, angle_deg=rng.uniform(-3, 3), scale=rng.uniform(0.97, 1.03),
                           persp=(rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03)))
        gain = round(float(rng.uniform(0.95, 1.08)), 3)
        name = f"view_{i + 1}.jpg"
        write_image_atomic(out / "pano3" / name, apply_photometric(render_view(scene, Hv), gain), JPEG_PARAMS)
        views.append({"file": name, "size": list(VIEW_SIZE), "gain": gain, "H_view_to_scene": Hv})
    pairs = []
    for a, b in pairwise(views):
        Hab = normalize_h(np.linalg.inv(b["H_view_to_scene"]) @ a["H_view_to_scene"])
        frac = overlap_fraction(Hab)
        if not 0.33 <= frac <= 0.47:
            raise RuntimeError(f"{a['file']} -> {b['file']}: overlap {frac:.2f} outside 0.33..0.47")
        pairs.append({"src": a["file"], "dst": b["file"], "H": as_list(Hab), "overlap": round(frac, 3)})
    for v in views:
        v["H_view_to_scene"] = as_list(v["H_view_to_scene"])
    gt = {
        "convention": "H maps src pixels to dst pixels, x_dst ~ H @ [x, y, 1]; pixel centers at integer "
                      "coordinates (OpenCV); H[2][2] == 1. Images are BGR JPEG, quality 92.",
        "scene_size": list(PANO_SCENE_SIZE),
        "views": views,
        "pairs": pairs,
    }
    write_text_atomic(out / "pano3" / "ground_truth.json", compact_json(gt))
    return gt


def pair_specs() -> list[PairSpec]:
    """The four two-image samples, each with an exact src -> dst homography."""
    tilt_src = image_corners(*VIEW_SIZE).astype(np.float32)
    tilt_dst = tilt_src + np.array([[96, 40], [-72, 16], [24, -12], [-20, -36]], dtype=np.float32)
    return [
        PairSpec("rotation_scale", about_center(similarity(20.0, 0.8), VIEW_SIZE), ".jpg",
                 "rotation by 20 degrees and scale 0.8 about the image center"),
        PairSpec("perspective", normalize_h(cv2.getPerspectiveTransform(tilt_src, tilt_dst)), ".jpg",
                 "projective tilt: corners moved by (96, 40), (-72, 16), (24, -12), (-20, -36) px"),
        PairSpec("illumination",
                 normalize_h(about_center(similarity(-6.0, 1.08, 14, -10), VIEW_SIZE)
                             @ np.array([[1, 0, 0], [0, 1, 0], [4e-5, -3e-5, 1]])),
                 ".jpg", "mild homography (rotation -6 degrees, scale 1.08, slight tilt); dst has "
                 "gamma 0.7, gain 0.85 and Gaussian noise sigma 4", gamma=0.7, gain=0.85, noise_sigma=4.0),
        PairSpec("translation", np.array([[1, 0, -37], [0, 1, 23], [0, 0, 1]], dtype=np.float64), ".png",
                 "pure integer shift (-37, +23) px: dst is an exact crop of the scene (lossless PNG)"),
    ]


def make_pairs(out: Path, rng: np.random.Generator) -> list[PairSpec]:
    """Write pairs/<name>/{src,dst}.<ext> and H.txt; dst is rendered from a scene, not warped from src."""
    W, H = PAIR_SCENE_SIZE
    specs = pair_specs()
    for spec in specs:
        scene = make_scene(W, H, rows=3, order=rng.permutation(len(TILES)))
        # src is an exact crop at the scene center; dst pixel y shows scene point Hs @ inv(H) @ y.
        Hs = np.array([[1, 0, (W - VIEW_SIZE[0]) // 2], [0, 1, (H - VIEW_SIZE[1]) // 2], [0, 0, 1]], dtype=float)
        Hd = normalize_h(Hs @ np.linalg.inv(spec.H))
        src = render_view(scene, Hs)
        dst = apply_photometric(render_view(scene, Hd), spec.gain, spec.gamma, spec.noise_sigma, rng)
        params = JPEG_PARAMS if spec.ext == ".jpg" else PNG_PARAMS
        folder = out / "pairs" / spec.name
        write_image_atomic(folder / f"src{spec.ext}", src, params)
        write_image_atomic(folder / f"dst{spec.ext}", dst, params)
        write_text_atomic(folder / "H.txt", matrix_text(spec.H))
    return specs


README_TEMPLATE = """\
# Sample data

Generated by `python scripts/make_samples.py` (or `make samples`); do not edit by hand.
Every image is a view of a flat "poster" (a mosaic of scikit-image sample photos) rendered with
`cv2.warpPerspective` through an exact homography, so the ground truth below is exact up to
interpolation and JPEG compression. Re-running the script with the same library versions
(scikit-image {skimage}, OpenCV {cv2}, NumPy {numpy}) writes byte-identical files: seed {seed}, JPEG
quality {quality}, PNG compression 9.

## Convention

`H` maps **src pixel coordinates to dst pixel coordinates**, like `cv2.findHomography(src_pts, dst_pts)`:
`x_dst ~ H @ [x, y, 1]`. Pixel centers are at integer coordinates (OpenCV), the origin is the
top-left pixel's center, x goes right and y goes down, and `H[2, 2] == 1`. Images are 8-bit BGR
as `cv2.imread` returns them, {w}x{h} px.

## `pano3/`: a three-image panorama

`view_1.jpg`, `view_2.jpg`, `view_3.jpg` are three views, left to right, of one {sw}x{sh} px scene, each
with a small rotation (within ±3°), zoom (0.97..1.03), mild perspective and a brightness gain.

`ground_truth.json` holds:
- `views[i].H_view_to_scene`: the 3x3 homography mapping view pixels into the scene (canvas) frame;
- `views[i].gain`: the brightness factor applied to that view;
- `pairs[k].H`: the homography from `pairs[k].src` to its right neighbour `pairs[k].dst`
  (`inv(H_dst_to_scene) @ H_src_to_scene`), and `overlap`, the fraction of src pixels that land in dst.

| view | gain |
| --- | --- |
{view_rows}
| pair | overlap |
| --- | --- |
{pair_rows}
## `pairs/<name>/`: two images and `H.txt`

Each folder has `src`, `dst` and `H.txt` (three lines of three numbers: the src -> dst homography).
`src` is an axis-aligned crop of a scene; `dst` is rendered from the same scene, so both are fully
covered (no black borders).

| name | format | what changes |
| --- | --- | --- |
{spec_rows}
## Sources and licenses

The photos come from `skimage.data` (scikit-image {skimage}, BSD-3-Clause); their own terms, as the
scikit-image documentation states them:

| image | source; license |
| --- | --- |
{tile_rows}
Grayscale images are tinted to give the mosaic color. The derived images here keep the terms of
the photos they show (public domain, CC0, or no known copyright restrictions).
"""


def write_readme(out: Path, gt: dict, specs: list[PairSpec]) -> None:
    """Write data/samples/README.md from the generated ground truth."""
    text = README_TEMPLATE.format(
        skimage=skimage.__version__, cv2=cv2.__version__, numpy=np.__version__, seed=SEED,
        quality=JPEG_PARAMS[1], w=VIEW_SIZE[0], h=VIEW_SIZE[1], sw=PANO_SCENE_SIZE[0], sh=PANO_SCENE_SIZE[1],
        view_rows="".join(f"| {v['file']} | {v['gain']:.3f} |\n" for v in gt["views"]),
        pair_rows="".join(f"| {p['src']} -> {p['dst']} | {p['overlap']:.2f} |\n" for p in gt["pairs"]),
        spec_rows="".join(f"| `{s.name}` | {s.ext[1:].upper()} | {s.description} |\n" for s in specs),
        tile_rows="".join(f"| `{name}` | {src} |\n" for name, _, src in TILES),
    )
    write_text_atomic(out / "README.md", text)


def main(argv: list[str] | None = None) -> None:
    """Generate every sample under --out (default: data/samples next to this script's repo)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "samples")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(SEED)
    gt = make_pano(args.out, rng)
    specs = make_pairs(args.out, rng)
    write_readme(args.out, gt, specs)
    files = sorted(p for p in args.out.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    print(f"wrote {len(files)} files, {total / 1e6:.2f} MB, under {args.out}")


if __name__ == "__main__":
    main()
