"""The learned refiner: a small correlation network that predicts 4-corner offsets, applied iteratively.

Architecture (IHN/RAFT-like, sized for CPUs: about 0.1 M parameters and 0.1 GFLOP per 128 x 128 pair):

* a shared encoder turns each image of the pair, ``[normalised gray, validity mask]`` (2, H, W), into
  features at stride 8 (``feat_dim`` channels) and stride 4 (``local_dim`` channels);
* **global stage** (stride 8): one all-pairs correlation volume between the two stride-8 maps, plus a
  coarser level against B's 2x2-pooled features. Each of ``global_iters`` iterations maps A's grid
  through the current homography, looks up a (2r+1)^2 window of correlations around each mapped point
  on every level, and a small CNN turns the lookups plus the current flow into an update of the four
  corner offsets;
* **local stage** (stride 4): ``local_iters`` iterations that warp B's stride-4 features by the current
  homography and correlate them with A's in a (2r+1)^2 neighbourhood, for sub-pixel accuracy;
* ``predict(..., rounds=2)`` re-warps A with ``kornia.geometry.warp_perspective`` by the estimate so far
  and runs the network again on the nearly aligned pair.

At CPU inference (no autograd) the Lucas-Kanade stage runs in numpy + OpenCV (``lucas_kanade_host``), and
the fine mode (LK stage alone) also takes its features from ``Encoder.lk_host``: the same estimates as the
torch path in far fewer calls (tests/deep compare the two step by step).

Features are instance-normalised and unit-length at each position, so correlations are cosines.
Between iterations the offsets are detached (RAFT-style), so the homography from the offsets needs no
gradient; ``corners_to_h`` builds the 4-point homography in closed form.

Convention: A (the src side, already warped into the working frame) and B (the dst side) are
(B, 1, H, W) float tensors in [0, 1] with (B, 1, H, W) validity masks (1 = valid). The prediction
``delta`` (B, 4, 2) is the displacement in input pixels of the corners TL, TR, BR, BL = (0, 0), (W, 0),
(W, H), (0, H), pixel centres at integer coordinates (the OpenCV / ``stitch.geometry`` convention):
the residual homography R with R(c_k) = c_k + delta_k maps A pixels to B pixels, A(u) ~ B(R u).
Device and dtype follow the inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_perspective
from torch import Tensor, nn

from stitch.errors import ConfigError
from stitch.geometry import image_corners, resize_matrix

GLOBAL_STRIDE = 8
LOCAL_STRIDE = 4


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the refiner network (see the module docstring)."""

    enc_channels: tuple[int, int, int] = (12, 24, 32)  # encoder widths at strides 2, 4, 8
    feat_dim: int = 32          # stride-8 feature channels (global correlation)
    local_dim: int = 16         # stride-4 feature channels (local correlation)
    hidden: int = 32            # width of the update CNNs
    radius: int = 3             # lookup radius r: (2r+1)^2 correlations per level
    levels: int = 2             # levels of the global correlation pyramid
    global_iters: int = 4
    local_iters: int = 2
    lk_dim: int = 4             # learned channels of the Lucas-Kanade features (stride 2); the image is added
    lk_strides: tuple[int, ...] = (8, 4, 2)  # the LK pyramid, coarse to fine (multiples of 2)
    lk_iters: tuple[int, ...] = (2, 2, 2)    # LK iterations per pyramid level
    lk_damping: float = 1e-3    # Levenberg-Marquardt damping, relative to the mean Hessian diagonal

    def __post_init__(self) -> None:
        for f in ("feat_dim", "local_dim", "hidden", "radius", "levels", "global_iters"):
            if int(getattr(self, f)) < 1:
                raise ConfigError(f"model.{f}={getattr(self, f)}: must be >= 1")
        if self.local_iters < 0:
            raise ConfigError(f"model.local_iters={self.local_iters}: must be >= 0")
        if len(self.enc_channels) != 3 or min(self.enc_channels) < 1:
            raise ConfigError(f"model.enc_channels={list(self.enc_channels)}: three positive widths")
        if self.lk_dim < 0 or self.lk_damping < 0:
            raise ConfigError("model.lk_dim and model.lk_damping must be >= 0")
        if len(self.lk_strides) != len(self.lk_iters) or any(s < 2 or s % 2 for s in self.lk_strides) \
                or any(i < 0 for i in self.lk_iters):
            raise ConfigError(f"model.lk_strides={list(self.lk_strides)}, lk_iters={list(self.lk_iters)}: one "
                              "iteration count >= 0 per stride, strides even and >= 2")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build from a plain dict (a TOML section); an unknown key is an error naming the key."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"model: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        d = dict(d)
        for k in ("enc_channels", "lk_strides", "lk_iters"):
            if k in d:
                d[k] = tuple(int(c) for c in d[k])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("enc_channels", "lk_strides", "lk_iters"):
            d[k] = list(d[k])
        return d


# --- geometry helpers ------------------------------------------------------------------------------


def image_corners_t(width: int, height: int, like: Tensor) -> Tensor:
    """The corners (1, 4, 2) TL, TR, BR, BL of a W x H image in pixels, on ``like``'s device/dtype."""
    return _corners_cached(int(width), int(height), str(like.device), like.dtype)


@lru_cache(maxsize=64)
def _corners_cached(width: int, height: int, device: str, dtype: torch.dtype) -> Tensor:
    return torch.tensor([[0.0, 0.0], [width, 0.0], [width, height], [0.0, height]],
                        device=device, dtype=dtype).unsqueeze(0)


@lru_cache(maxsize=64)
def _corner_scale(width: int, height: int, device: str, dtype: torch.dtype) -> Tensor:
    return torch.tensor([1.0 / width, 1.0 / height, 1.0], dtype=dtype, device=device)


def corners_to_h(delta: Tensor, width: int, height: int) -> Tensor:
    """Homography (B, 3, 3) mapping corner c_k to c_k + delta_k; delta (B, 4, 2) pixels; H[2, 2] = 1.

    Closed form (Heckbert 1989: the unit square to a quadrilateral, then the W x H scaling), far fewer
    ops than a linear solve; equal to kornia's ``get_perspective_transform``.
    """
    dt = torch.float64 if delta.dtype == torch.float64 else torch.float32
    q = image_corners_t(width, height, delta.to(dt)) + delta.to(dt)  # (B, 4, 2)
    x, y = q[..., 0], q[..., 1]
    x0, x1, x2, x3 = x.unbind(-1)
    y0, y1, y2, y3 = y.unbind(-1)
    sx, sy = x0 - x1 + x2 - x3, y0 - y1 + y2 - y3
    dx1, dx2, dy1, dy2 = x1 - x2, x3 - x2, y1 - y2, y3 - y2
    den = dx1 * dy2 - dx2 * dy1
    g = (sx * dy2 - dx2 * sy) / den
    h = (dx1 * sy - sx * dy1) / den
    one = torch.ones_like(g)
    Q = torch.stack([x1 - x0 + g * x1, x3 - x0 + h * x3, x0,
                     y1 - y0 + g * y1, y3 - y0 + h * y3, y0,
                     g, h, one], -1).reshape(-1, 3, 3)
    return Q * _corner_scale(int(width), int(height), str(delta.device), dt)


def apply_h(H: Tensor, pts: Tensor) -> Tensor:
    """Map points (B, N, 2) through H (B, 3, 3)."""
    ph = torch.cat([pts, torch.ones_like(pts[..., :1])], -1) @ H.transpose(1, 2).to(pts.dtype)
    w = ph[..., 2:3]
    return ph[..., :2] / torch.where(w.abs() < 1e-8, torch.full_like(w, 1e-8), w)


def h_to_corners(H: Tensor, width: int, height: int) -> Tensor:
    """Corner displacements (B, 4, 2) of the homographies H (B, 3, 3): H(c_k) - c_k."""
    c = image_corners_t(width, height, H).expand(H.shape[0], 4, 2)
    return apply_h(H, c) - c


def _wide(t: Tensor) -> Tensor:
    """float64 stays float64; anything else (float16/bfloat16/float32) becomes float32."""
    return t if t.dtype == torch.float64 else t.float()


def pixel_grid(h: int, w: int, stride: int, like: Tensor) -> Tensor:
    """(1, h*w, 2) input-pixel coordinates (x, y) of a stride-``stride`` feature grid (centre convention)."""
    off = 0.5 * (stride - 1)
    dt = torch.float64 if like.dtype == torch.float64 else torch.float32
    ys = torch.arange(h, device=like.device, dtype=dt) * stride + off
    xs = torch.arange(w, device=like.device, dtype=dt) * stride + off
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1).reshape(1, h * w, 2)


def to_feature_px(p: Tensor, stride: int) -> Tensor:
    """Input px -> feature px of a stride-``stride`` map (pixel centres: x_in = s x_f + (s - 1) / 2)."""
    return (p - 0.5 * (stride - 1)) / stride


def normalize_image(img: Tensor, mask: Tensor) -> Tensor:
    """Zero-mean, unit-std over the valid pixels of each image (B, 1, H, W); invalid pixels -> 0."""
    n = mask.sum((2, 3), keepdim=True).clamp_min(1.0)
    mean = (img * mask).sum((2, 3), keepdim=True) / n
    var = (((img - mean) * mask) ** 2).sum((2, 3), keepdim=True) / n
    return (img - mean) / (var.sqrt() + 0.02) * mask


def normalize_image_host(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``normalize_image`` of one (H, W) float32 image with a 0/1 mask, in OpenCV: (H, W) float32."""
    valid = cv2.compare(mask, 0.5, cv2.CMP_GT)
    if not cv2.countNonZero(valid):
        return np.zeros(img.shape, np.float32)
    mean, std = cv2.meanStdDev(img, mask=valid)
    return cv2.multiply(cv2.subtract(img, float(mean[0, 0])), mask, scale=1.0 / (std[0, 0] + 0.02), dtype=cv2.CV_32F)


def standardize_host(f: np.ndarray) -> np.ndarray:
    """``standardize`` of one (h, w, C) float32 map (each channel zero-mean, unit-variance, eps 1e-5), in OpenCV."""
    if f.shape[-1] > 4:  # cv2.meanStdDev takes at most 4 channels
        return np.concatenate([standardize_host(f[..., i:i + 4]) for i in range(0, f.shape[-1], 4)], -1)
    f = np.ascontiguousarray(f)
    mean, std = cv2.meanStdDev(f)
    scale = 1.0 / np.sqrt(np.square(std[:, 0]) + 1e-5)
    pad = (0.0,) * (4 - f.shape[-1])
    out = cv2.multiply(cv2.subtract(f, tuple(mean[:, 0]) + pad), tuple(scale) + pad)
    return out.reshape(f.shape)


def pad_windows(maps: Tensor, radius: int) -> Tensor:
    """``maps`` (B, N, h, w) with a zero border of 2r + 2 px: the input of ``bilinear_windows_padded``."""
    k = 2 * radius + 2
    return F.pad(maps, (k, k, k, k))


def bilinear_windows_padded(padded: Tensor, coords: Tensor, radius: int) -> Tensor:
    """Windows around ``coords`` (B, N, 2) (x, y px of the *unpadded* map n) of ``pad_windows`` output.

    Returns (B, N, (2r+1)^2), row-major over (dy, dx): bilinear samples at coords + (dx, dy) for integer
    offsets in [-r, r], zero outside the map (``grid_sample(..., align_corners=True,
    padding_mode="zeros")``). The (2r+2)^2 integer block around each point is gathered once (all
    offsets share the bilinear weights); the zero border makes clamped blocks read zeros.
    """
    r = radius
    k = 2 * r + 2
    b, n = coords.shape[:2]
    hp, wp = padded.shape[-2:]
    c0 = torch.floor(coords)
    frac = (coords - c0).to(padded.dtype)
    top_left = c0.long() + (k - r)  # block origin in padded px
    xs = top_left[..., 0].clamp(0, wp - k).unsqueeze(-1) + torch.arange(k, device=coords.device)  # (B, N, k)
    ys = top_left[..., 1].clamp(0, hp - k).unsqueeze(-1) + torch.arange(k, device=coords.device)
    idx = (ys.unsqueeze(-1) * wp + xs.unsqueeze(-2)).reshape(b, n, k * k)
    vals = torch.gather(padded.reshape(b, n, hp * wp), 2, idx).reshape(b, n, k, k)
    fx, fy = frac[..., 0, None, None], frac[..., 1, None, None]
    top = torch.lerp(vals[:, :, :-1, :-1], vals[:, :, :-1, 1:], fx)
    bot = torch.lerp(vals[:, :, 1:, :-1], vals[:, :, 1:, 1:], fx)
    return torch.lerp(top, bot, fy).reshape(b, n, -1)


def bilinear_windows(maps: Tensor, coords: Tensor, radius: int) -> Tensor:
    """Windows of ``maps`` (B, N, h, w) around ``coords`` (B, N, 2) -> (B, N, (2r+1)^2); see the padded variant."""
    return bilinear_windows_padded(pad_windows(maps, radius), coords, radius)


def local_correlation(fa: Tensor, fb: Tensor, radius: int) -> Tensor:
    """(B, (2r+1)^2, h, w): sum_c fa(u) fb(u + d) for d = (dx, dy) in [-r, r]^2 (row-major), zero outside fb."""
    h, w = fa.shape[-2:]
    r = radius
    pad = F.pad(fb, (r, r, r, r))
    return torch.stack([(fa * pad[:, :, dy:dy + h, dx:dx + w]).sum(1)
                        for dy in range(2 * r + 1) for dx in range(2 * r + 1)], 1)


@lru_cache(maxsize=32)
def _warp_jacobian_cached(width: int, height: int, stride: int, device: str, dtype: torch.dtype) -> Tensor:
    grid = pixel_grid(height // stride, width // stride, stride, torch.empty(0, dtype=torch.float64, device=device))
    return warp_jacobian(width, height, grid[0]).to(dtype)


def warp_jacobian(width: int, height: int, pts: Tensor) -> Tensor:
    """d R_delta(p) / d delta at delta = 0 for points (N, 2) in px -> (N, 2, 8) (central differences, float64)."""
    eps = 1e-3
    d = torch.eye(8, dtype=torch.float64, device=pts.device).reshape(8, 4, 2) * eps
    Hs = corners_to_h(torch.cat([d, -d]), width, height)  # (16, 3, 3)
    q = apply_h(Hs, pts.to(torch.float64).unsqueeze(0).expand(16, -1, -1))  # (16, N, 2)
    return ((q[:8] - q[8:]) / (2 * eps)).permute(1, 2, 0).contiguous()


def _pool(x: Tensor, k: int) -> Tensor:
    return F.avg_pool2d(x, k) if k > 1 else x


def lucas_kanade(lka: Tensor, mask_a: Tensor, lkb: Tensor, mask_b: Tensor, delta: Tensor, stride: int, iters: int,
                 damping: float, preds: list[Tensor], step: float = 1.0) -> Tensor:
    """Inverse-compositional Lucas-Kanade on stride-2 features pooled to ``stride``; appends each estimate.

    Finds R (4 corner offsets ``delta``, A(u) ~ B(R u)) minimising sum_v |F_a(R^-1 v) - F_b(v)|^2 over
    B's pixels v. The steepest-descent images SD = grad F_b . dR/d delta and the Hessian SD^T SD are
    computed once on B (its valid pixels); each iteration warps F_a, solves (H + lambda diag) dp =
    SD^T e with e = F_a(R^-1 v) - F_b(v) (A's invalid pixels zeroed), and composes R <- R_{step dp} R
    (``step`` > 1 over-relaxes the Gauss-Newton step, which the learned features leave short).
    Differentiable in the features (the offsets are detached between iterations, like the other stages).
    ``mask_a``/``mask_b`` are (B, 1, H/2, W/2) masks at the features' stride 2.
    """
    bsz = lka.shape[0]
    H, W = 2 * mask_a.shape[-2], 2 * mask_a.shape[-1]
    k = stride // 2
    fa = _pool(lka, k)
    fb = _pool(lkb, k)
    c, h, w = fb.shape[1:]
    ma = _pool(mask_a, k)
    mb = (_pool(mask_b, k) > 0.999).flatten(2)  # (B, 1, N)
    padded = F.pad(fb, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (padded[:, :, 1:-1, 2:] - padded[:, :, 1:-1, :-2]) / stride  # per input px
    gy = 0.5 * (padded[:, :, 2:, 1:-1] - padded[:, :, :-2, 1:-1]) / stride
    J = _warp_jacobian_cached(W, H, stride, str(fb.device), fb.dtype)  # (N, 2, 8)
    gx, gy = (gx.flatten(2) * mb).unsqueeze(1), (gy.flatten(2) * mb).unsqueeze(1)  # (B, 1, C, N)
    sd = (gx * J[:, 0].T[None, :, None] + gy * J[:, 1].T[None, :, None]).reshape(bsz, 8, c * h * w)
    hess = sd @ sd.transpose(1, 2)  # (B, 8, 8)
    lam = damping * hess.diagonal(dim1=1, dim2=2).mean(-1) + 1e-9
    hess = hess + lam[:, None, None] * torch.eye(8, dtype=hess.dtype, device=hess.device)
    hinv = torch.linalg.inv(hess)
    fbf = fb.flatten(2)  # (B, C, N)
    src = torch.cat([fa, ma], 1)
    grid = pixel_grid(h, w, stride, fb)  # (1, N, 2) input px of B's feature pixels
    grid_h = torch.cat([grid, torch.ones_like(grid[..., :1])], -1).to(fb.dtype)  # (1, N, 3)
    to_unit = _sample_matrix(w, h, stride, str(fb.device), fb.dtype)  # input px -> grid_sample coords
    R = corners_to_h(delta.detach(), W, H)
    for _ in range(iters):
        R = R.detach()
        M = to_unit @ torch.linalg.inv(R).to(fb.dtype)
        q = grid_h @ M.transpose(1, 2)  # (B, N, 3)
        z = q[..., 2:3]
        g = q[..., :2] / torch.where(z.abs() < 1e-8, torch.full_like(z, 1e-8), z)
        s = F.grid_sample(src, g.unsqueeze(1), mode="bilinear", padding_mode="zeros",
                          align_corners=True).squeeze(2)  # (B, C + 1, N)
        e = (s[:, :c] - fbf) * (s[:, c:] > 0.999)
        dp = (step * (hinv @ (sd @ e.reshape(bsz, c * h * w, 1)))).clamp(-2.0 * stride, 2.0 * stride)  # trust region
        R = corners_to_h(dp.reshape(bsz, 4, 2), W, H) @ R
        R = R / R[:, 2:3, 2:3]
        preds.append(h_to_corners(R, W, H))
    return preds[-1] if iters > 0 else delta


def _pool_hwc(x: np.ndarray, k: int) -> np.ndarray:
    """k x k average pooling of an (h, w[, C]) float32 array (h, w multiples of k; INTER_AREA at an integer
    factor is exactly the box average)."""
    if k == 1:
        return x
    return cv2.resize(x, (x.shape[1] // k, x.shape[0] // k), interpolation=cv2.INTER_AREA)


def _warp_inv(img: np.ndarray, M: np.ndarray) -> np.ndarray:
    """out(v) = img(M v), same size: bilinear, zeros outside (``grid_sample(align_corners=True)`` in pixels)."""
    return cv2.warpPerspective(img, M, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT)


def _channel_groups(c: int) -> list[list[int]]:
    """Indices into [features (c), mask] in groups of 4, 3 or 1 channels (OpenCV's vectorised warps); -1 pads."""
    idx = list(range(c + 1))
    groups = [idx[i:i + 4] for i in range(0, c + 1, 4)]
    if len(groups[-1]) == 2:
        groups[-1].append(-1)
    return groups


def _stack(x: np.ndarray, chans: list[int]) -> np.ndarray:
    """(h, w, len(chans)) float32 from an (h, w, C) array (index -1: a zero channel); (h, w) for one channel."""
    if len(chans) == 1:
        return np.ascontiguousarray(x[..., chans[0]])
    zero = np.zeros(x.shape[:2], np.float32)
    return cv2.merge([x[..., i] if i >= 0 else zero for i in chans])


def lucas_kanade_host(lka: np.ndarray, mask_a: np.ndarray, lkb: np.ndarray, mask_b: np.ndarray, R: np.ndarray,
                      strides: Sequence[int], iters: Sequence[int], damping: float, step: float = 1.0,
                      every_step: bool = True) -> list[np.ndarray]:
    """``lucas_kanade`` for one pair at CPU inference, in numpy + OpenCV: the same steps in far fewer calls.

    ``lka``/``lkb`` (h, w, C) float32 stride-2 features, ``mask_a``/``mask_b`` (h, w) float32 stride-2
    masks, R (3, 3) float64 the start (A px -> B px, input pixels of the 2w x 2h pair). Runs every level
    of ``strides`` with its ``iters`` and returns R after each iteration (``every_step``) or only the last
    R (a one-element list; the start itself when no iteration runs). A's features and mask are
    warped together in groups of 4, 3 or 1 channels (OpenCV's vectorised bilinear warps, which agree
    with ``grid_sample`` to float rounding).
    """
    H2, W2 = mask_a.shape
    W, H = 2 * W2, 2 * H2
    c = lka.shape[-1]
    groups = _channel_groups(c)
    full_a = np.concatenate([lka, mask_a[..., None]], -1)
    a_groups = [_stack(full_a, ch) for ch in groups]
    feats = [[j for j, i in enumerate(ch) if 0 <= i < c] for ch in groups]  # feature slots of each group
    b_groups = [_stack(lkb, [ch[j] for j in f]) if f else None for ch, f in zip(groups, feats)]
    mask_group = next(g for g, ch in enumerate(groups) if c in ch)
    mask_slot = groups[mask_group].index(c)
    order = [mask_group] + [g for g in range(len(groups)) if g != mask_group]  # the mask's group first
    corners = image_corners(W, H)
    steps: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (T, M, T^-1) after each iteration
    R_inv = cv2.invert(R)[1]
    for stride, n in zip(strides, iters):
        if n <= 0:
            continue
        k = stride // 2
        fa = [_pool_hwc(x, k) for x in a_groups]
        fb = [None if x is None else _pool_hwc(x, k) for x in b_groups]
        valid_b = (_pool_hwc(mask_b, k) > 0.999).astype(np.float32)
        h, w = valid_b.shape
        sd = []  # steepest-descent images per group: (8, N * features), zero off B's mask
        for x in fb:
            if x is None:
                continue
            gx = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=1, scale=0.5 / stride, borderType=cv2.BORDER_REPLICATE)
            gy = cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=1, scale=0.5 / stride, borderType=cv2.BORDER_REPLICATE)
            gx, gy = (g.reshape(h, w, -1) * valid_b[..., None] for g in (gx, gy))  # central differences per input px
            J0, J1 = _warp_jacobian_host(W, H, stride, gx.shape[-1])
            sd.append(J0 * gx.reshape(-1) + J1 * gy.reshape(-1))
        sd_all = np.concatenate(sd, 1)  # (8, N * c), the groups' features in order
        hess = (sd_all @ sd_all.T).astype(np.float64)
        hess.flat[::9] += damping * np.trace(hess) / 8.0 + 1e-9
        gain = (step * cv2.invert(hess, flags=cv2.DECOMP_CHOLESKY)[1]).astype(np.float32) @ sd_all  # dp = gain @ e
        lim = 2.0 * stride
        off = 0.5 * (stride - 1)
        T, T_inv = resize_matrix(stride), resize_matrix(1.0 / stride)  # feature px <-> input px
        corners_f = ((corners - off) / stride).astype(np.float32)  # the corners in feature px
        M = T_inv @ R_inv @ T  # B's feature px -> A's feature px (T: feature px -> input px)
        e_all = np.empty(sd_all.shape[1], np.float32)
        e_views, at = [], 0
        for x in fb:
            e_views.append(None if x is None else e_all[at:at + x.size].reshape(x.shape))
            at += 0 if x is None else x.size
        for _ in range(n):
            e_all.fill(0.0)
            valid = None
            for g in order:
                warped = _warp_inv(fa[g], M)
                if valid is None:
                    valid = cv2.compare(warped[..., mask_slot] if warped.ndim == 3 else warped, 0.999, cv2.CMP_GT)
                f = feats[g]
                if not f:
                    continue
                if len(f) < len(groups[g]):
                    warped = cv2.extractChannel(warped, f[0]) if len(f) == 1 else np.ascontiguousarray(warped[..., f])
                cv2.subtract(warped, fb[g], dst=e_views[g], mask=valid)  # stays 0 where A's sample is not valid
            dp = np.clip(gain @ e_all, -lim, lim).reshape(4, 2)  # a trust region on each corner offset
            # R <- R_dp R: M <- M T^-1 R_dp^-1 T, where T^-1 R_dp^-1 T maps the moved corners (feature px) back
            M = M @ cv2.getPerspectiveTransform(corners_f + dp / stride, corners_f)
            steps.append((T, M, T_inv))
        R_inv = T @ M @ T_inv
    if not steps:
        return [] if every_step else [R / R[2, 2]]
    out = [T @ M @ T_inv for T, M, T_inv in (steps if every_step else steps[-1:])]
    return [R / R[2, 2] for R in (cv2.invert(x)[1] for x in out)]


@lru_cache(maxsize=32)
def _warp_jacobian_host(width: int, height: int, stride: int, channels: int) -> np.ndarray:
    """``warp_jacobian`` on the stride-``stride`` grid, d(x, y) / d delta, as float32 numpy (2, 8, N * channels):
    each pixel's column repeated ``channels`` times (the layout of an (h, w, channels) image); read-only."""
    J = _warp_jacobian_cached(width, height, stride, "cpu", torch.float64).permute(1, 2, 0).numpy()  # (2, 8, N)
    out = np.ascontiguousarray(np.repeat(J, channels, axis=2), dtype=np.float32)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=32)
def _sample_matrix(w: int, h: int, stride: int, device: str, dtype: torch.dtype) -> Tensor:
    """(3, 3): input px -> the [-1, 1] coordinates of ``grid_sample(align_corners=True)`` on a w x h map of
    stride ``stride`` (``to_feature_px``, then 2 x / (w - 1) - 1)."""
    f = torch.tensor([[1.0 / stride, 0.0, -0.5 * (stride - 1) / stride],
                      [0.0, 1.0 / stride, -0.5 * (stride - 1) / stride], [0.0, 0.0, 1.0]], dtype=torch.float64)
    n = torch.tensor([[2.0 / max(w - 1, 1), 0.0, -1.0], [0.0, 2.0 / max(h - 1, 1), -1.0], [0.0, 0.0, 1.0]],
                     dtype=torch.float64)
    return (n @ f).to(device=device, dtype=dtype)


# --- network ---------------------------------------------------------------------------------------


def _conv(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, s, padding=(k - 1) // 2 if k % 2 else 1)


class Encoder(nn.Module):
    """(B, 2, H, W) -> stride-4 features (B, local_dim, H/4, W/4), stride-8 features (B, feat_dim, H/8, W/8).

    Downsampling convs are k=4, s=2, p=1: output j is centred on input 2j + 0.5, the pixel-centre
    convention of ``to_feature_px``.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c2, c4, c8 = cfg.enc_channels
        self.down2 = _conv(2, c2, 4, 2)
        self.down4 = _conv(c2, c4, 4, 2)
        self.conv4 = _conv(c4, c4)
        self.down8 = _conv(c4, c8, 4, 2)
        self.conv8 = _conv(c8, c8)
        self.out4 = nn.Conv2d(c4, cfg.local_dim, 1)
        self.out8 = nn.Conv2d(c8, cfg.feat_dim, 1)
        self.lk = _conv(c2, cfg.lk_dim) if cfg.lk_dim else None

    def lk_host(self, imgs: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """The stride-2 LK features of ``forward`` (B, H/2, W/2, C) float32 for (B, H, W) float32 images and 0/1
        masks, at CPU inference: the convolutions in torch, the normalisations in numpy / OpenCV."""
        norm = np.stack([normalize_image_host(i, m) for i, m in zip(imgs, masks)])
        img2 = np.stack([_pool_hwc(n, 2) for n in norm])[..., None]
        if self.lk is None:
            return img2
        with torch.no_grad():
            # (B, H, W, 2) seen as (B, 2, H, W): channels-last, the faster layout for small CPU convolutions
            x = torch.from_numpy(np.stack([norm, masks.astype(np.float32)], -1)).permute(0, 3, 1, 2)
            f = self.lk(F.relu(self.down2(x))).float().permute(0, 2, 3, 1).numpy()
        return np.concatenate([np.stack([standardize_host(x) for x in f]), img2], -1)

    def forward(self, x: Tensor, coarse: bool = True) -> tuple[Tensor | None, Tensor | None, Tensor]:
        """(stride-4 unit features, stride-8 unit features, stride-2 LK features); the first two are None
        when ``coarse`` is False (only the LK stage will run)."""
        x2 = F.relu(self.down2(x))
        img2 = F.avg_pool2d(x[:, :1], 2)  # the normalised image itself: LK works from the first step
        lk = torch.cat([standardize(self.lk(x2)), img2], 1) if self.lk is not None else img2
        if not coarse:
            return None, None, lk
        x4 = F.relu(self.conv4(F.relu(self.down4(x2))))
        x8 = F.relu(self.conv8(F.relu(self.down8(x4))))
        return unit_features(self.out4(x4)), unit_features(self.out8(x8)), lk


def unit_features(f: Tensor) -> Tensor:
    """Zero-mean, unit-variance channels over each map (instance norm), then unit length at each position.

    Correlations of such features are cosines in [-1, 1] with a useful contrast from the first step
    (raw features at initialisation correlate almost uniformly, and the network would barely learn).
    """
    return F.normalize(standardize(f), dim=1).contiguous()


def standardize(f: Tensor) -> Tensor:
    """Instance normalisation without affine parameters, eps 1e-5 (as ``F.instance_norm``, whose backward
    gave wrong input gradients in float64 here), computed at float32 or wider."""
    f = _wide(f)
    mean = f.mean((2, 3), keepdim=True)
    var = (f - mean).pow(2).mean((2, 3), keepdim=True)
    return (f - mean) * torch.rsqrt(var + 1e-5)


class UpdateBlock(nn.Module):
    """Lookups + flow (B, cin, h, w) -> corner-offset update (B, 4, 2) in feature px."""

    def __init__(self, cin: int, hidden: int, size_hint: int) -> None:
        super().__init__()
        self.inp = nn.Conv2d(cin, hidden, 1)
        n_down = max(1, int(math.log2(max(size_hint, 4))) - 2)  # down to about 4 x 4
        self.down = nn.ModuleList([_conv(hidden, hidden, 3, 2) for _ in range(n_down)])
        self.head = nn.Conv2d(hidden, 2, 1)
        nn.init.zeros_(self.head.weight)  # start at "no update": a stable first iteration
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.inp(x))
        for conv in self.down:
            if min(x.shape[-2:]) < 4:
                break
            x = F.relu(conv(x))
        x = self.head(F.adaptive_avg_pool2d(x, 2))  # (B, 2, 2, 2): cells TL TR / BL BR
        x = x.flatten(2).transpose(1, 2)  # (B, 4, 2), cells in the order TL, TR, BL, BR
        return torch.cat([x[:, :2], x[:, 3:], x[:, 2:3]], 1)  # corner order TL, TR, BR, BL


class HomographyRefiner(nn.Module):
    """Predicts the residual homography between two nearly aligned images as 4 corner offsets.

    Example:
        >>> net = HomographyRefiner(ModelConfig())
        >>> a = b = torch.rand(1, 1, 128, 128); m = torch.ones_like(a)
        >>> net(a, m, b, m)[-1].shape
        torch.Size([1, 4, 2])
    """

    def __init__(self, cfg: ModelConfig | None = None, work_size: int = 128) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig()
        self.work_size = int(work_size)
        c = self.cfg
        win = (2 * c.radius + 1) ** 2
        self.encoder = Encoder(c)
        self.global_update = UpdateBlock(c.levels * win + 2, c.hidden, self.work_size // GLOBAL_STRIDE)
        self.local_update = UpdateBlock(win + 2, c.hidden, self.work_size // LOCAL_STRIDE)

    def backbone_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The encoder's named parameters (the 'backbone' learning-rate group)."""
        return [(f"encoder.{n}", p) for n, p in self.encoder.named_parameters()]

    def head_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The update blocks' named parameters (the 'head' learning-rate group)."""
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("encoder.")]

    def _encode(self, img: Tensor, mask: Tensor, coarse: bool = True) -> tuple[Tensor | None, Tensor | None, Tensor]:
        return self.encoder(torch.cat([normalize_image(img, mask), mask], 1), coarse)

    def forward(self, img_a: Tensor, mask_a: Tensor, img_b: Tensor, mask_b: Tensor,
                global_iters: int | None = None, local_iters: int | None = None,
                lk_iters: Sequence[int] | None = None, lk_step: float = 1.0) -> list[Tensor]:
        """Corner-offset estimates (B, 4, 2) in px, one per iteration, the last one final.

        Args:
            img_a, img_b: (B, 1, H, W) gray images in [0, 1]; H and W multiples of 16.
            mask_a, mask_b: (B, 1, H, W) validity masks (1 = valid).
            global_iters, local_iters, lk_iters: override the configured iteration counts (0 skips a
                stage; without the two correlation stages the encoder computes the LK features only).
            lk_step: scale of the Lucas-Kanade Gauss-Newton steps (1 in training).
        """
        if img_a.shape != img_b.shape or img_a.dim() != 4 or img_a.shape[1] != 1:
            raise ValueError(f"img_a, img_b: expected equal (B, 1, H, W) shapes, got {tuple(img_a.shape)}, "
                             f"{tuple(img_b.shape)}")
        bsz, _, H, W = img_a.shape
        if H % 16 or W % 16:
            raise ValueError(f"img_a: H and W must be multiples of 16, got {H} x {W}")
        gi = self.cfg.global_iters if global_iters is None else int(global_iters)
        li = self.cfg.local_iters if local_iters is None else int(local_iters)
        ki = tuple(self.cfg.lk_iters if lk_iters is None else lk_iters)
        self._check_lk_iters(ki)
        coarse = gi > 0 or li > 0
        # one encoder pass over both images (every normalisation is per image): fewer, larger ops
        f4, f8, lk = self._encode(torch.cat([img_a, img_b]), torch.cat([mask_a, mask_b]), coarse)
        f4a, f4b = (None, None) if f4 is None else f4.split(bsz)
        f8a, f8b = (None, None) if f8 is None else f8.split(bsz)
        lka, lkb = lk.split(bsz)
        delta = _wide(torch.zeros(bsz, 4, 2, device=img_a.device, dtype=img_a.dtype))
        preds: list[Tensor] = []
        if coarse:
            delta = self._correlation_stages(f4a, f8a, f4b, f8b, delta, gi, li, W, H, preds)
        if any(ki):
            with torch.autocast(device_type=img_a.device.type, enabled=False):
                lka, lkb = _wide(lka), _wide(lkb)
                ma2, mb2 = _pool(_wide(mask_a), 2), _pool(_wide(mask_b), 2)
                if not torch.is_grad_enabled() and lka.device.type == "cpu":
                    preds.extend(self._lucas_kanade_host(lka, ma2, lkb, mb2, delta, ki, lk_step))
                    return preds
                for stride, iters in zip(self.cfg.lk_strides, ki):
                    if iters > 0:
                        delta = lucas_kanade(lka, ma2, lkb, mb2, delta, stride, iters, self.cfg.lk_damping, preds,
                                             lk_step)
        return preds

    def _check_lk_iters(self, lk_iters: Sequence[int]) -> None:
        if len(lk_iters) != len(self.cfg.lk_strides):
            raise ValueError(f"lk_iters={list(lk_iters)}: one count per LK level {list(self.cfg.lk_strides)}")

    def _lucas_kanade_host(self, lka: Tensor, ma2: Tensor, lkb: Tensor, mb2: Tensor, delta: Tensor,
                           lk_iters: Sequence[int], step: float) -> list[Tensor]:
        """The LK stage through ``lucas_kanade_host``, pair by pair: corner offsets (B, 4, 2) per iteration."""
        W, H = 2 * lka.shape[-1], 2 * lka.shape[-2]
        starts = corners_to_h(delta.detach().double(), W, H).numpy()
        fa, fb = lka.permute(0, 2, 3, 1).float().numpy(), lkb.permute(0, 2, 3, 1).float().numpy()
        ma, mb = ma2[:, 0].float().numpy(), mb2[:, 0].float().numpy()
        Rs = np.stack([lucas_kanade_host(fa[i], ma[i], fb[i], mb[i], starts[i], self.cfg.lk_strides, lk_iters,
                                         self.cfg.lk_damping, step) for i in range(len(starts))], 1)
        offsets = h_to_corners(torch.from_numpy(Rs).reshape(-1, 3, 3), W, H).reshape(*Rs.shape[:2], 4, 2)
        return list(offsets.to(delta.dtype).unbind(0))

    @torch.no_grad()
    def lk_refine_host(self, img_a: np.ndarray, mask_a: np.ndarray, img_b: np.ndarray, mask_b: np.ndarray,
                       lk_iters: Sequence[int], lk_step: float = 1.0) -> np.ndarray:
        """The LK stage alone from the identity for one pair at CPU inference: R (3, 3) float64, A px -> B px.

        Same result as ``predict(..., rounds=1, global_iters=0, local_iters=0)`` without its torch
        bookkeeping: (H, W) float32 images in [0, 1] and 0/1 masks in, numpy out.
        """
        self._check_lk_iters(lk_iters)
        lk = self.encoder.lk_host(np.stack([img_a, img_b]), np.stack([mask_a, mask_b]))
        ma, mb = _pool_hwc(mask_a, 2), _pool_hwc(mask_b, 2)  # avg_pool2d(mask, 2)
        return lucas_kanade_host(lk[0], ma, lk[1], mb, np.eye(3), self.cfg.lk_strides, lk_iters, self.cfg.lk_damping,
                                 lk_step, every_step=False)[0]

    def _correlation_stages(self, f4a: Tensor, f8a: Tensor, f4b: Tensor, f8b: Tensor, delta: Tensor, gi: int,
                            li: int, W: int, H: int, preds: list[Tensor]) -> Tensor:
        """The global (stride 8, all-pairs) and local (stride 4) correlation stages; appends to ``preds``."""
        bsz = delta.shape[0]

        # global stage: all-pairs correlation at stride 8 (float32); level l correlates with 2^l-pooled B
        h, w = f8a.shape[-2:]
        with torch.autocast(device_type=f8a.device.type, enabled=False):
            fa = _wide(f8a).flatten(2).transpose(1, 2)  # (B, hw, C); unit features: correlations are cosines
            pyramid, fb = [], _wide(f8b)
            for lvl in range(self.cfg.levels):
                if lvl:
                    fb = F.avg_pool2d(fb, 2)
                pyramid.append((fa @ fb.flatten(2)).reshape(bsz, h * w, *fb.shape[-2:]))
        grid = pixel_grid(h, w, GLOBAL_STRIDE, f8a)
        base = to_feature_px(grid, GLOBAL_STRIDE)
        padded = [pad_windows(c, self.cfg.radius) for c in pyramid] if gi > 0 else []
        for _ in range(gi):
            delta = delta.detach()
            p = to_feature_px(apply_h(corners_to_h(delta, W, H), grid.expand(bsz, -1, -1)), GLOBAL_STRIDE)
            look = [bilinear_windows_padded(c, (p - 0.5 * (2 ** lvl - 1)) / 2 ** lvl, self.cfg.radius)
                    for lvl, c in enumerate(padded)]
            x = torch.cat(look + [p - base], -1).transpose(1, 2).reshape(bsz, -1, h, w)
            delta = delta + GLOBAL_STRIDE * _wide(self.global_update(x))
            preds.append(delta)

        # local stage: warp B's stride-4 features by the estimate, correlate in a (2r+1)^2 window
        h4, w4 = f4a.shape[-2:]
        grid4 = pixel_grid(h4, w4, LOCAL_STRIDE, f4a)
        base4 = to_feature_px(grid4, LOCAL_STRIDE)
        r = self.cfg.radius
        fa4 = _wide(f4a)
        for _ in range(li):
            delta = delta.detach()
            p = to_feature_px(apply_h(corners_to_h(delta, W, H), grid4.expand(bsz, -1, -1)), LOCAL_STRIDE)
            g = torch.stack([2.0 * p[..., 0] / max(w4 - 1, 1) - 1.0, 2.0 * p[..., 1] / max(h4 - 1, 1) - 1.0], -1)
            fbw = F.grid_sample(_wide(f4b), g.reshape(bsz, h4, w4, 2), mode="bilinear", padding_mode="zeros",
                                align_corners=True)
            look = local_correlation(fa4, fbw, r)
            flow = (p - base4).transpose(1, 2).reshape(bsz, 2, h4, w4)
            delta = delta + LOCAL_STRIDE * _wide(self.local_update(torch.cat([look, flow], 1)))
            preds.append(delta)
        return delta

    @torch.no_grad()
    def predict(self, img_a: Tensor, mask_a: Tensor, img_b: Tensor, mask_b: Tensor, rounds: int = 1,
                global_iters: int | None = None, local_iters: int | None = None,
                lk_iters: Sequence[int] | None = None, lk_step: float = 1.0) -> Tensor:
        """Final corner offsets (B, 4, 2) after ``rounds`` passes; A is re-warped (kornia) between passes."""
        _, _, H, W = img_a.shape
        total = torch.zeros(img_a.shape[0], 4, 2, device=img_a.device, dtype=torch.float32)
        a, ma = img_a, mask_a
        for k in range(max(1, int(rounds))):
            d = self(a, ma, img_b, mask_b, global_iters, local_iters, lk_iters, lk_step)[-1]
            total = h_to_corners(corners_to_h(d, W, H) @ corners_to_h(total, W, H), W, H)
            if k + 1 < rounds:  # A_k(u) = A_0(R^-1 u) ~ B(R_true R^-1 u): a small residual for the next pass
                Rt = corners_to_h(total, W, H).to(img_a.dtype)
                a = warp_perspective(img_a, Rt, (H, W), align_corners=True)
                ma = (warp_perspective(mask_a, Rt, (H, W), align_corners=True) > 0.999).to(mask_a.dtype)
        return total


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def sequence_loss(preds: list[Tensor], target: Tensor, gamma: float = 0.85) -> Tensor:
    """sum_i gamma^(N-1-i) * mean |pred_i - target| (L1 over the 8 corner coordinates, px)."""
    n = len(preds)
    loss = target.new_zeros((), dtype=torch.float32)
    for i, p in enumerate(preds):
        loss = loss + gamma ** (n - 1 - i) * (p.float() - target.float()).abs().mean()
    return loss


def mace(pred: Tensor, target: Tensor) -> Tensor:
    """Mean average corner error per sample (B,): mean over the 4 corners of ||pred - target|| px."""
    return (pred.float() - target.float()).norm(dim=-1).mean(-1)
