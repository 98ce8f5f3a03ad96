"""Stage 4: the stitching-quality score of a candidate homography.

The score looks at how well the two images line up, not only at how many matches agree:

    score = W_PHOTO * photometric + W_SUPPORT * support            (in [-W_PHOTO, 1]; higher is better)

* photometric = (NCC + GC) / 2 in the overlap, after warping src into dst at a working resolution
  (max side ``work_max_side``). NCC is the zero-mean normalised cross-correlation of the blurred
  intensities; GC is the gradient correlation  sum(g_src . g_dst) / sqrt(sum|g_src|^2 sum|g_dst|^2)
  of their Sobel gradients. Both are invariant to gain and offset, so exposure changes do not count
  against an alignment.
* support = 1 - exp(-m / support_saturation), with the MSAC-style inlier mass
  m = sum_i max(0, 1 - (e_i / support_tau)^2), where e_i is the symmetric transfer error of match i
  (px, full resolution). Tight matches count more than barely-inside ones; the term saturates, so
  once a candidate has ample support the photometric term decides.
* plausibility is a gate, not a weight: a candidate is rejected, with the reason recorded, when H is
  singular or not finite, the warped src outline is not convex (fold-over) or is mirrored, the area
  changes by more than ``max_area_change``, the local affine part is too anisotropic
  (``max_anisotropy``), or the warped src covers less than ``min_overlap`` of the smaller image.
  The outline is the src image's, unless H's horizon (the src line it sends to infinity) crosses the
  image, as when a strongly tilted view sees only part of the other photo's plane in front of it: then
  it is the part in front of the dst view, the side of the inlier matches (``visible_outline``), and
  dst pixels beyond the horizon do not count in the overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stitch.errors import ConfigError
from stitch.geometry import clip_halfplane, image_corners, project, resize_matrix, scale_h, transfer_errors
from stitch.homography.matching import Matches
from stitch.imaging import resize_max_side, to_gray
from stitch.profile import profiled

W_PHOTO = 0.6
W_SUPPORT = 0.4
DEFAULT_WORK_MAX_SIDE = 1024


@dataclass(frozen=True)
class ScoreConfig:
    """Weights and limits of the quality score (see the module docstring for the formula)."""

    work_max_side: int = DEFAULT_WORK_MAX_SIDE
    w_photo: float = W_PHOTO
    w_support: float = W_SUPPORT
    support_tau: float = 3.0
    support_saturation: float = 30.0
    max_area_change: float = 100.0
    max_anisotropy: float = 30.0
    min_overlap: float = 0.02
    #: Judge a matrix whose horizon crosses the src image on its visible part (``visible_outline``); False
    #: refuses it as a fold-over (the panorama's pair screening: its canvas needs every corner in front).
    horizon_cut: bool = True

    def __post_init__(self) -> None:
        if self.work_max_side < 32:
            raise ConfigError(f"work_max_side={self.work_max_side}: must be at least 32")
        if self.support_tau <= 0 or self.support_saturation <= 0:
            raise ConfigError("support_tau and support_saturation must be > 0")
        if self.max_area_change <= 1 or self.max_anisotropy <= 1:
            raise ConfigError("max_area_change and max_anisotropy must be > 1")


@dataclass
class ScoringContext:
    """Per-pair data prepared once: blurred float32 gray images at the working scale and the scales used."""

    src: np.ndarray
    dst: np.ndarray
    dst_grad: tuple[np.ndarray, np.ndarray]
    s_src: float
    s_dst: float
    src_size: tuple[int, int]  # full-resolution (width, height)
    dst_size: tuple[int, int]
    config: ScoreConfig


def _prep(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    small, s = resize_max_side(to_gray(img), max_side)
    return cv2.GaussianBlur(small.astype(np.float32), (0, 0), 1.0), s


def _grad(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)


@profiled("pair: scoring")
def make_context(src_img: np.ndarray, dst_img: np.ndarray, config: ScoreConfig | None = None) -> ScoringContext:
    """Prepare scoring for src/dst images (H, W, 3) BGR or (H, W) gray at ``config.work_max_side``."""
    cfg = config or ScoreConfig()
    src, s_src = _prep(src_img, cfg.work_max_side)
    dst, s_dst = _prep(dst_img, cfg.work_max_side)
    return ScoringContext(src, dst, _grad(dst), s_src, s_dst,
                          (src_img.shape[1], src_img.shape[0]), (dst_img.shape[1], dst_img.shape[0]), cfg)


def _polygon_area(q: np.ndarray) -> float:
    x, y = q[:, 0], q[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


#: When H's horizon crosses the src image, the visible part is cut where w (the third coordinate of H @ x)
#: falls below this share of its largest value over the image: the outline is then stretched at most
#: 1 / HORIZON_MARGIN times more along the horizon than at the best-kept corner (and its square across it).
HORIZON_MARGIN = 0.1


def front_sign(H: np.ndarray, dst_size: tuple[int, int], front_pts: np.ndarray | None = None) -> float:
    """+1 or -1: the sign of H[2] . [x, y, 1] on the src side in front of the dst view (H (3, 3) src -> dst px).

    That side holds ``front_pts`` (N, 2) src px, e.g. the inlier matches, which both views see (the majority
    sign); without them, the point the dst centre shows (wrong only when the dst centre looks past the plane).
    """
    H = np.asarray(H, dtype=np.float64)
    if front_pts is not None and len(front_pts):
        w = np.hstack([np.asarray(front_pts, np.float64).reshape(-1, 2), np.ones((len(front_pts), 1))]) @ H[2]
        if (vote := float(np.sum(np.sign(w)))) != 0:
            return float(np.sign(vote))
    dw, dh = dst_size
    return float(np.sign(np.linalg.solve(H, [dw / 2.0, dh / 2.0, 1.0])[2])) or 1.0


def horizon_crosses(H: np.ndarray, src_size: tuple[int, int]) -> bool:
    """True when H's horizon (the src line H (3, 3) sends to infinity) crosses the src image of (w, h) px."""
    w = np.hstack([image_corners(*src_size), np.ones((4, 1))]) @ np.asarray(H, dtype=np.float64)[2]
    return not (np.all(w > 0) or np.all(w < 0))


def visible_outline(H: np.ndarray, src_size: tuple[int, int], dst_size: tuple[int, int],
                    front_pts: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """(outline (K, 2) src px, cut): the src image corners when H's horizon misses the image (cut False); else the
    image cut at the horizon (HORIZON_MARGIN) on its side in front of the dst view (``front_sign``; K may be 0)."""
    corners = image_corners(*src_size)
    if not horizon_crosses(H, src_size):
        return corners, False
    line = np.asarray(H, dtype=np.float64)[2]
    w = np.hstack([corners, np.ones((4, 1))]) @ line
    front = front_sign(H, dst_size, front_pts)
    top = float(np.max(front * w))
    if top <= 0:
        return np.zeros((0, 2)), True
    return clip_halfplane(corners, front * line, HORIZON_MARGIN * top), True


def plausibility(H: np.ndarray | None, src_size: tuple[int, int], dst_size: tuple[int, int],
                 config: ScoreConfig | None = None, front_pts: np.ndarray | None = None) -> str | None:
    """Why H (3, 3, src->dst px) is implausible for images of (w, h) sizes, or None when it is plausible.

    ``front_pts`` (N, 2) src px: points both views see (e.g. the inlier matches), for ``visible_outline``.
    """
    cfg = config or ScoreConfig()
    if H is None or not np.all(np.isfinite(H)):
        return "no finite matrix"
    Hn = H / np.linalg.norm(H)
    if abs(np.linalg.det(Hn)) < 1e-12:
        return "singular matrix"
    poly, cut = visible_outline(Hn, src_size, dst_size, front_pts)
    if cut and not cfg.horizon_cut:
        return "fold-over: a src corner maps through the line at infinity"
    if len(poly) < 3:
        return "behind: no part of the src image is in front of the dst view"
    q = project(H, poly)
    if not np.all(np.isfinite(q)):
        return "fold-over: a src corner maps to infinity"
    n = len(q)
    a, b, c = q, np.roll(q, -1, axis=0), np.roll(q, -2, axis=0)
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - b[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - b[:, 0])
    if not (np.all(cross > 0) or np.all(cross < 0)):
        return f"fold-over: the warped src outline ({n} corners) is not convex"
    if np.all(cross < 0):
        return "mirror: the warp flips the image"
    ratio = abs(_polygon_area(q)) / abs(_polygon_area(poly))
    if not 1.0 / cfg.max_area_change <= ratio <= cfg.max_area_change:
        return f"area change x{ratio:.3g} outside [1/{cfg.max_area_change:g}, {cfg.max_area_change:g}]"
    # local affine part at the outline's centre (the image centre when uncut): singular-value ratio of the Jacobian
    cx, cy = poly.mean(axis=0)
    den = H[2, 0] * cx + H[2, 1] * cy + H[2, 2]
    p = project(H, np.array([[cx, cy]]))[0]
    J = (H[:2, :2] - np.outer(p, H[2, :2])) / den
    sv = np.linalg.svd(J, compute_uv=False)
    if sv[1] <= 0 or sv[0] / sv[1] > cfg.max_anisotropy:
        return f"ill-conditioned: local anisotropy {sv[0] / max(sv[1], 1e-12):.3g} > {cfg.max_anisotropy:g}"
    (w, h), (dw, dh) = src_size, dst_size
    clipped = cv2.intersectConvexConvex(q.astype(np.float32), image_corners(dw, dh).astype(np.float32))[0]
    if clipped / float(min(w * h, dw * dh)) < cfg.min_overlap:
        return f"no overlap: the warped src covers {clipped / float(min(w * h, dw * dh)):.1%} of the smaller image"
    return None


def _masked_corr(a: np.ndarray, b: np.ndarray, m: np.ndarray, centred: bool) -> float:
    """Correlation of flat float32 arrays a, b over weights m (0/1): zero-mean NCC if ``centred``, else cosine."""
    am = a * m
    n, sa, sb = float(m.sum()), float(am.sum()), float((b * m).sum())
    saa, sbb, sab = float(am @ a), float((b * m) @ b), float(am @ b)
    if centred:
        saa, sbb, sab = saa - sa * sa / n, sbb - sb * sb / n, sab - sa * sb / n
    den = np.sqrt(max(saa, 0.0) * max(sbb, 0.0))
    return sab / den if den > 1e-9 else 0.0


def photometric(H: np.ndarray, ctx: ScoringContext,
                front_pts: np.ndarray | None = None) -> tuple[float, float, float]:
    """(NCC, GC, overlap fraction) of src warped by H onto dst at the working scale.

    When H's horizon crosses the src image, dst pixels whose src point lies behind it (a ghost of the src's
    far side) are left out; ``front_pts`` as for ``visible_outline``.
    """
    Hw = scale_h(H, ctx.s_src, ctx.s_dst)
    dh, dw = ctx.dst.shape
    warped = cv2.warpPerspective(ctx.src, Hw, (dw, dh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    valid = cv2.warpPerspective(np.ones(ctx.src.shape, np.uint8), Hw, (dw, dh), flags=cv2.INTER_NEAREST)
    poly, cut = visible_outline(H, ctx.src_size, ctx.dst_size, front_pts)
    if cut and len(poly):  # a dst pixel's src point is in front if back . x has the sign of a front point's image
        back = np.linalg.inv(Hw)[2]
        front = back @ resize_matrix(ctx.s_dst) @ np.append(project(H, poly.mean(axis=0, keepdims=True))[0], 1.0)
        xs, ys = np.arange(dw, dtype=np.float64), np.arange(dh, dtype=np.float64)[:, None]
        valid[(back[0] * xs + back[1] * ys + back[2]) * front <= 0] = 0
    mask = cv2.erode(valid, np.ones((7, 7), np.uint8))
    n = cv2.countNonZero(mask)
    overlap = n / float(min(ctx.src.size, ctx.dst.size))
    if n < 64:
        return 0.0, 0.0, overlap
    ncc, gc = agreement(warped, ctx.dst, mask, ctx.dst_grad)
    return ncc, gc, overlap


def agreement(a: np.ndarray, b: np.ndarray, mask: np.ndarray,
              b_grad: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[float, float]:
    """(NCC, GC) of two aligned (h, w) float32 gray images over ``mask`` (h, w) (nonzero = compared): the
    photometric part's zero-mean correlation of intensities and correlation of Sobel gradients (b's may be
    given, precomputed)."""
    m = mask.reshape(-1).astype(np.float32)
    ncc = _masked_corr(a.reshape(-1), b.reshape(-1), m, centred=True)
    gx, gy = _grad(a)
    hx, hy = b_grad if b_grad is not None else _grad(b)
    ga = np.concatenate([gx.reshape(-1), gy.reshape(-1)])
    gb = np.concatenate([hx.reshape(-1), hy.reshape(-1)])
    gc = _masked_corr(ga, gb, np.concatenate([m, m]), centred=False)
    return float(ncc), float(gc)


def support(H: np.ndarray, matches: Matches, config: ScoreConfig | None = None) -> tuple[float, float, float]:
    """(support term in [0, 1], MSAC inlier mass, RMS symmetric transfer error of the inliers px)."""
    cfg = config or ScoreConfig()
    if matches is None or len(matches) == 0:
        return 0.0, 0.0, float("inf")
    e = transfer_errors(H, matches.src_pts, matches.dst_pts)
    w = np.clip(1.0 - (e / cfg.support_tau) ** 2, 0.0, 1.0)
    mass = float(w.sum())
    inl = e < cfg.support_tau
    rms = float(np.sqrt(np.mean(e[inl] ** 2))) if inl.any() else float("inf")
    return 1.0 - float(np.exp(-mass / cfg.support_saturation)), mass, rms


def _front_points(H: np.ndarray | None, matches: Matches | None, ctx: ScoringContext) -> np.ndarray | None:
    """The src points (N, 2) of the matches within support_tau of H when H's horizon crosses the src image (they
    fix which side is in front, ``front_sign``); None otherwise."""
    if H is None or matches is None or len(matches) == 0 or not np.all(np.isfinite(H)):
        return None
    if not horizon_crosses(H, ctx.src_size) or abs(np.linalg.det(H / np.linalg.norm(H))) < 1e-12:
        return None
    inl = transfer_errors(H, matches.src_pts, matches.dst_pts) < ctx.config.support_tau
    return matches.src_pts[inl] if inl.any() else None


@profiled("pair: scoring")
def score(H: np.ndarray | None, ctx: ScoringContext, matches: Matches | None) -> tuple[float, dict[str, float], str | None]:
    """Score H (3, 3, src->dst full-res px): (total, parts, rejection reason or None); rejected -> -inf."""
    cfg = ctx.config
    front = _front_points(H, matches, ctx)
    reason = plausibility(H, ctx.src_size, ctx.dst_size, cfg, front)
    if reason is not None:
        return float("-inf"), {}, reason
    ncc, gc, overlap = photometric(H, ctx, front)
    sup, mass, rms = support(H, matches, cfg) if matches is not None else (0.0, 0.0, float("inf"))
    photo = 0.5 * (ncc + gc)
    total = cfg.w_photo * photo + cfg.w_support * sup
    parts = {"photometric": photo, "ncc": ncc, "gc": gc, "overlap": overlap,
             "support": sup, "inlier_mass": mass, "inlier_rms": rms}
    return float(total), parts, None
