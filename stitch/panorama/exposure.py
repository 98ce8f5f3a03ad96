"""Stage 8a: exposure compensation. Gains solved by least squares from the overlaps, at a low resolution.

Every image k gets a gain map g_k, multiplied into its pixels before the seams are found and the images
blended. The gains come from the warped images at the seam resolution (stitch.compose warps them once, at
``seam_megapix`` per image), so the cost does not grow with the photos' size.

Model (the one of OpenCV's GainCompensator, Brown & Lowe 2007, solved here in numpy): every pair of
*units* u, v from different images that overlap in N_uv pixels, with mean intensities I_uv (unit u over the
shared pixels) and I_vu (unit v over the same pixels), contributes

    N_uv * [ (g_u I_uv - g_v I_vu)^2 / sigma_n^2 + ((1 - g_u)^2 + (1 - g_v)^2) / sigma_g^2 ]

to a quadratic energy; its minimum solves one small linear system (one unknown per unit). sigma_n (intensity
noise, in 0..255 units) weighs the agreement, sigma_g pulls every gain towards 1 so the overall brightness
is kept. OpenCV uses sigma_g = 0.1, which with sigma_n = 10 weighs the prior as much as the data and
shrinks the gains towards 1; the image gains here use sigma_g = 1 (why this value: docs/measurements.md,
"exposure"), the block gains, which only correct what the image gains left, keep OpenCV's 0.1. Pixels near
black or white (outside [``DEFAULT_MIN_LEVEL``, ``DEFAULT_MAX_LEVEL``] in any image) are left out of the
means: a clipped pixel does not scale with the exposure.

Kinds (``EXPOSURE_CHOICES``):

* ``gain``: one unit per image, on the gray level (mean of B, G, R): one scalar gain per image;
* ``channels``: the same system solved for B, G and R separately: three gains per image (white balance;
  not the default: next to a gray photo it pulls a color photo's colors towards gray, e.g. opencv_b's snow
  turns pink);
* ``blocks``: per-image gray gains first, then block gains on top: each image's warped box is cut into
  blocks of about ``block_size`` px (at the seam resolution), every block is a unit of a second system,
  solved on the gain-compensated images with the same prior towards 1; the block grid is smoothed (the
  [1/4, 1/2, 1/4] kernel, twice) and interpolated bilinearly, so a gain varies smoothly across an image
  (vignetting, a sky that darkens towards one side);
* ``color`` (the default, ``DEFAULT_EXPOSURE``): for a colour cast between images, including one that varies across the frame (a sky that is
  teal in one photo and blue in the next): a gray gain per image, a colour balance per image (the per-channel
  gains divided by their mean, so it changes colour and not brightness) and smoothed per-channel block gains
  on top. The colour terms are solved only between colour images: a gray photo (``is_monochrome``) still sets
  the brightness of its neighbours but never their colour, so opencv_b's snow does not turn pink. What no gain
  model restores is a clipped channel: in exposure_error the second photo is overexposed by a third and its
  sky's blue is clipped at 255, so after its 0.75 gain it reads 190 where the first photo has 250;
* ``none``: every gain is 1.

Convention: gains multiply 8-bit BGR values (g > 1 brightens); a gain map is (h, w, C) float32 over the
image's box on the low-resolution canvas, C = 1 (gray gain) or 3 (B, G, R), and it is sampled bilinearly at
full resolution by the blender.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from stitch.errors import ConfigError
from stitch.geometry import Box, box_slices
from stitch.panorama.views import LowView, overlapping_pairs

DEFAULT_EXPOSURE = "color"
#: Standard deviation of the intensity difference between two aligned views (0..255 units).
DEFAULT_SIGMA_N = 10.0
#: Standard deviation of an image gain around 1 (the prior that keeps the overall brightness).
DEFAULT_SIGMA_G = 1.0
#: The same for the block gains (a correction on top of the image gains).
DEFAULT_BLOCK_SIGMA_G = 0.1
#: The same for the per-channel block gains of 'color' (looser: a sky's cast can reach 15-20 %).
DEFAULT_COLOR_BLOCK_SIGMA_G = 0.3
#: Block side (px at the seam resolution) of the 'blocks' kind.
DEFAULT_BLOCK_SIZE = 32
#: Pixels darker or brighter than these levels in any image are left out of the overlap means.
DEFAULT_MIN_LEVEL = 8
DEFAULT_MAX_LEVEL = 247
#: Gains are clipped to this range (a solve on a bad overlap must not blow an image up).
GAIN_RANGE = (0.25, 4.0)
#: A view whose mean (max - min over B, G, R) is below this many levels is gray: it takes no colour correction.
MONOCHROME_SPREAD = 3.0


@dataclass
class Gains:
    """Per-image gain maps. maps[k] (h_k, w_k, C) float32 over view k's low box; uniform[k] when constant."""

    kind: str
    maps: list[np.ndarray]
    uniform: list[bool]

    def scalar(self, k: int) -> np.ndarray:
        """The mean gain of image k over its map, (C,) float64 (C = 1 or 3)."""
        return self.maps[k].reshape(-1, self.maps[k].shape[-1]).mean(axis=0).astype(np.float64)

    def apply_low(self, k: int, view: LowView) -> LowView:
        """View k with its gain applied (uint8, clipped), masked pixels left black."""
        out = np.clip(view.image.astype(np.float32) * self.maps[k], 0, 255)
        out = np.rint(out).astype(np.uint8)
        out[~view.mask] = 0
        return LowView(out, view.mask, view.offset)


def _crop(view: LowView, r: Box) -> tuple[np.ndarray, np.ndarray]:
    sl = box_slices(r, view.offset)
    return view.image[sl], view.mask[sl]


def solve_gains(n_units: int, pairs: Sequence[tuple[int, int, float, float, float]] | np.ndarray,
                sigma_n: float = DEFAULT_SIGMA_N, sigma_g: float = DEFAULT_SIGMA_G) -> np.ndarray:
    """Gains (n_units,) float64 minimising the energy of the module docstring.

    pairs: (u, v, N_uv, I_uv, I_vu) per overlapping pair of units. A unit in no pair gets gain 1. The normal
    equations are sparse (a unit meets a few others: blocks of 35 photos make thousands of units), so they are
    assembled and solved as a sparse system (scipy's SuperLU): the dense solve grew with the cube of the units.
    """
    if sigma_n <= 0 or sigma_g <= 0:
        raise ConfigError(f"sigma_n={sigma_n}, sigma_g={sigma_g}: must be > 0")
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    a_n, a_g = 1.0 / sigma_n ** 2, 1.0 / sigma_g ** 2
    p = np.asarray(pairs, np.float64).reshape(-1, 5)
    u, v = p[:, 0].astype(np.int64), p[:, 1].astype(np.int64)
    n, iu, iv = p[:, 2], p[:, 3], p[:, 4]
    diag = np.zeros(n_units)
    b = np.zeros(n_units)
    np.add.at(diag, u, n * (iu * iu * a_n + a_g))
    np.add.at(diag, v, n * (iv * iv * a_n + a_g))
    np.add.at(b, u, n * a_g)
    np.add.at(b, v, n * a_g)
    isolated = diag == 0
    diag[isolated] = 1.0
    b[isolated] = 1.0
    off = -n * iu * iv * a_n
    units = np.arange(n_units)
    A = coo_matrix((np.concatenate([diag, off, off]), (np.concatenate([units, u, v]), np.concatenate([units, v, u]))),
                   shape=(n_units, n_units)).tocsc()  # duplicates add up, as the energy's terms do
    return np.clip(np.atleast_1d(spsolve(A, b)), *GAIN_RANGE)


def _usable(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(h, w) bool: mask & not clipped (every channel of img (h, w, 3) uint8 in [DEFAULT_MIN_LEVEL, DEFAULT_MAX_LEVEL])."""
    lo, hi = (DEFAULT_MIN_LEVEL,) * 3, (DEFAULT_MAX_LEVEL,) * 3
    return mask & (cv2.inRange(img, lo, hi) > 0)


def _image_pairs(views: Sequence[LowView]) -> list[tuple[int, int, np.ndarray, np.ndarray, tuple]]:
    """(i, j, img_i float32 (m, 3), img_j float32 (m, 3), (rows, cols, region)) over each overlap's usable pixels."""
    out = []
    usable = [_usable(v.image, v.mask) for v in views]  # once per view, cropped per pair
    for i, j, r in overlapping_pairs(views):
        a, _ = _crop(views[i], r)
        b, _ = _crop(views[j], r)
        ok = usable[i][box_slices(r, views[i].offset)] & usable[j][box_slices(r, views[j].offset)]
        if ok.sum() < 16:
            continue
        rows, cols = np.nonzero(ok)
        out.append((i, j, a[ok].astype(np.float32), b[ok].astype(np.float32), (rows, cols, r)))
    return out


#: Weight (pixels) of the pseudo-overlap that ties the two pieces of an image crossing a 360-degree wrap.
SAME_IMAGE_WEIGHT = 1e7


def _image_gains(n: int, overlaps: list, channel: int | None, sigma_n: float, sigma_g: float,
                 same: Sequence[tuple[int, int]] = ()) -> np.ndarray:
    pairs = [(u, v, SAME_IMAGE_WEIGHT, 128.0, 128.0) for u, v in same]
    for i, j, a, b, _ in overlaps:
        va = a.mean(axis=1) if channel is None else a[:, channel]
        vb = b.mean(axis=1) if channel is None else b[:, channel]
        pairs.append((i, j, float(len(va)), float(va.mean()), float(vb.mean())))
    return solve_gains(n, pairs, sigma_n, sigma_g)


def _smooth_grid(grid: np.ndarray) -> np.ndarray:
    k = np.array([0.25, 0.5, 0.25], np.float32)
    out = grid.astype(np.float32)
    for _ in range(2):
        out = cv2.sepFilter2D(out, -1, k, k, borderType=cv2.BORDER_REPLICATE)
    return out


def _block_gains(views: Sequence[LowView], overlaps: list, bases: Sequence[np.ndarray], block_size: int,
                 sigma_n: float, sigma_g: float, channels: Sequence[int | None] = (None,)) -> list[list[np.ndarray]]:
    """Per channel of ``channels`` (None: the gray level), per image its block-gain grid (by, bx) float32 (before
    the image gain ``bases[c]`` (n,)), solved on gain-compensated means; the blocks each overlap pixel falls in are
    found once for all channels."""
    grids = [(max(1, round(v.mask.shape[0] / block_size)), max(1, round(v.mask.shape[1] / block_size)))
             for v in views]
    counts = [by * bx for by, bx in grids]
    first = [sum(counts[:k]) for k in range(len(grids))]
    n_units = sum(counts)
    per_pair = []  # per overlap: (inverse index of each pixel's unit pair, unit pairs met)
    for i, j, _, _, (rows, cols, r) in overlaps:
        units = []
        for k in (i, j):
            v = views[k]
            h, w = v.mask.shape
            by, bx = grids[k]
            yy = rows + (r[1] - v.offset[1])
            xx = cols + (r[0] - v.offset[0])
            units.append(first[k] + np.minimum(yy * by // h, by - 1) * bx + np.minimum(xx * bx // w, bx - 1))
        uniq, inv = np.unique(units[0].astype(np.int64) * n_units + units[1], return_inverse=True)
        per_pair.append((inv, uniq))
    keys, where = np.unique(np.concatenate([u for _, u in per_pair] or [np.zeros(0, np.int64)]), return_inverse=True)
    cnt = np.bincount(where, np.concatenate([np.bincount(inv) for inv, _ in per_pair] or [np.zeros(0)]),
                      minlength=len(keys))
    out = []
    for base, channel in zip(bases, channels):
        sums = []
        for (i, j, a, b, _), (inv, uniq) in zip(overlaps, per_pair):
            va, vb = (a.mean(axis=1), b.mean(axis=1)) if channel is None else (a[:, channel], b[:, channel])
            sums.append((np.bincount(inv, base[i] * va, len(uniq)), np.bincount(inv, base[j] * vb, len(uniq))))
        sa, sb = (np.bincount(where, np.concatenate([x[q] for x in sums] or [np.zeros(0)]), minlength=len(keys))
                  for q in (0, 1))
        pairs = np.column_stack([keys // n_units, keys % n_units, cnt, sa / cnt, sb / cnt])
        g = solve_gains(n_units, pairs, sigma_n, sigma_g)
        out.append([_smooth_grid(g[first[k]:first[k] + by * bx].reshape(by, bx)) for k, (by, bx) in enumerate(grids)])
    return out


def _unit_gains(views: Sequence[LowView], block_size: int, sigma_n: float, sigma_g: float,
                same: Sequence[tuple[int, int]] = ()) -> Gains:
    """``none``: every gain is 1."""
    return Gains("none", [np.ones((*v.mask.shape, 1), np.float32) for v in views], [True] * len(views))


def _channel_gains(views: Sequence[LowView], block_size: int, sigma_n: float, sigma_g: float,
                   same: Sequence[tuple[int, int]] = ()) -> Gains:
    """``channels``: one gain per image and per B, G, R channel."""
    overlaps, n = _image_pairs(views), len(views)
    g = np.stack([_image_gains(n, overlaps, c, sigma_n, sigma_g, same) for c in range(3)], axis=1)
    maps = [np.broadcast_to(g[k].astype(np.float32), (*v.mask.shape, 3)).copy() for k, v in enumerate(views)]
    return Gains("channels", maps, [True] * n)


def _gray_gains(views: Sequence[LowView], block_size: int, sigma_n: float, sigma_g: float,
                same: Sequence[tuple[int, int]] = ()) -> Gains:
    """``gain``: one gain per image, on the gray level."""
    base = _image_gains(len(views), _image_pairs(views), None, sigma_n, sigma_g, same)
    return Gains("gain", [np.full((*v.mask.shape, 1), base[k], np.float32) for k, v in enumerate(views)],
                 [True] * len(views))


def _block_gain_maps(views: Sequence[LowView], block_size: int, sigma_n: float, sigma_g: float,
                     same: Sequence[tuple[int, int]] = ()) -> Gains:
    """``blocks``: per-image gray gains, then smoothed block gains on top."""
    overlaps = _image_pairs(views)
    base = _image_gains(len(views), overlaps, None, sigma_n, sigma_g, same)
    grids = _block_gains(views, overlaps, [base], block_size, sigma_n, DEFAULT_BLOCK_SIGMA_G)[0]
    maps = [(base[k] * cv2.resize(grid, (v.mask.shape[1], v.mask.shape[0]), interpolation=cv2.INTER_LINEAR))
            .reshape(*v.mask.shape, 1).astype(np.float32) for k, (grid, v) in enumerate(zip(grids, views))]
    return Gains("blocks", maps, [False] * len(views))


def is_monochrome(view: LowView, spread: float = MONOCHROME_SPREAD) -> bool:
    """True when the view's pixels are gray: the mean of (max - min over B, G, R) is below ``spread`` levels."""
    if not view.mask.any():
        return True
    b, g, r = cv2.split(view.image)  # planes: channel-wise max/min far faster than over the (N, 3) masked rows
    chroma = cv2.subtract(cv2.max(cv2.max(b, g), r), cv2.min(cv2.min(b, g), r))
    return float(chroma[view.mask].mean()) < spread


def _color_gain_maps(views: Sequence[LowView], block_size: int, sigma_n: float, sigma_g: float,
                     same: Sequence[tuple[int, int]] = ()) -> Gains:
    """``color``: a gray gain per image, a colour balance per image (per-channel gains over the gray one) and
    smoothed per-channel block gains, the colour terms solved only between colour images (a gray photo
    next to a colour one constrains brightness, never colour)."""
    n = len(views)
    overlaps = _image_pairs(views)
    mono = [is_monochrome(v) for v in views]
    colour = [o for o in overlaps if not mono[o[0]] and not mono[o[1]]]
    gray = _image_gains(n, overlaps, None, sigma_n, sigma_g, same)
    per_channel = np.stack([_image_gains(n, colour, c, sigma_n, sigma_g, same) for c in range(3)], axis=1)  # (n, 3)
    balance = per_channel / per_channel.mean(axis=1, keepdims=True)  # colour only: mean 1 over B, G, R
    base = gray[:, None] * balance
    grids = _block_gains(views, colour, [base[:, c] for c in range(3)], block_size, sigma_n,
                         DEFAULT_COLOR_BLOCK_SIGMA_G, (0, 1, 2))
    maps = []
    for k, v in enumerate(views):
        h, w = v.mask.shape
        chans = [base[k, c] * cv2.resize(grids[c][k], (w, h), interpolation=cv2.INTER_LINEAR) for c in range(3)]
        maps.append(np.stack(chans, axis=2).astype(np.float32))
    return Gains("color", maps, [False] * n)


#: The exposure kinds: name -> gains(views, block_size, sigma_n, sigma_g, same) (same: pairs of views that are
#: pieces of one image, whose gains are tied). The CLI and the API read it.
EXPOSURE_MODES: dict[str, Callable[..., Gains]] = {
    "blocks": _block_gain_maps,
    "channels": _channel_gains,
    "color": _color_gain_maps,
    "gain": _gray_gains,
    "none": _unit_gains,
}
EXPOSURE_CHOICES = tuple(EXPOSURE_MODES)


def compensate(views: Sequence[LowView], kind: str = DEFAULT_EXPOSURE, block_size: int = DEFAULT_BLOCK_SIZE,
               sigma_n: float = DEFAULT_SIGMA_N, sigma_g: float = DEFAULT_SIGMA_G,
               same: Sequence[tuple[int, int]] = ()) -> Gains:
    """Gain maps for the warped low-resolution views (see the module docstring for the model and kinds).

    same: pairs of views that are pieces of one image (a 360-degree wrap): their image gains are tied.
    """
    if kind not in EXPOSURE_MODES:
        raise ConfigError(f"exposure={kind!r}: choose one of {', '.join(EXPOSURE_CHOICES)}")
    if block_size < 2:
        raise ConfigError(f"block_size={block_size}: must be at least 2 px")
    if len(views) < 2:
        return replace(_unit_gains(views, block_size, sigma_n, sigma_g), kind=kind)
    return EXPOSURE_MODES[kind](views, block_size, sigma_n, sigma_g, tuple(same))
