"""Stage 5: refine a selected homography: least squares on its inliers, ECC photometric alignment, the learned
refiner. ``REFINERS`` is the one table of refiner names: the pipeline's chain per setting and each step alone."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from stitch.errors import ConfigError, EstimationError
from stitch.geometry import (
    as_homography,
    fit_homography,
    image_corners,
    normalize_h,
    project,
    scale_h,
    transfer_errors,
)
from stitch.homography.matching import Matches
from stitch.homography.quality import visible_outline
from stitch.imaging import to_gray
from stitch.profile import profiled

DEFAULT_REFINER = "ecc"
DEFAULT_ECC_MAX_SIDE = 1024


def refine_lsq(H: np.ndarray, matches: Matches, tau: float = 2.5, rounds: int = 3,
               min_points: int = 8) -> np.ndarray | None:
    """Least squares on the matches within ``tau`` px of H (3, 3), refitted (at most ``rounds`` times) until the
    inliers settle; None if < min_points remain. Each fit is stitch.geometry.fit_homography (normalised DLT +
    Levenberg-Marquardt in float64: exact on exact points, where cv2.findHomography's float32 is not)."""
    cur, used = H, None
    for _ in range(rounds):
        inl = transfer_errors(cur, matches.src_pts, matches.dst_pts) < tau
        if used is not None and np.array_equal(inl, used):
            break  # the same inliers: the same fit
        if inl.sum() < max(4, min_points):
            return None
        cur, used = fit_homography(matches.src_pts[inl], matches.dst_pts[inl]), inl
        if cur is None:
            return None
    return cur


def _ecc_mask(shape: tuple[int, int], border: int = 8) -> np.ndarray:
    """uint8 validity mask of the ECC input (dst) image, ``border`` px trimmed (warped into src by ECC itself)."""
    m = np.zeros(shape, np.uint8)
    m[border:-border, border:-border] = 255
    return m


def _ecc_value(H: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """ECC correlation of src ``a`` and dst ``b`` (float32 gray) under H (src px -> dst px); -1 if no overlap."""
    h, w = a.shape
    warped = cv2.warpPerspective(b, H, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    valid = cv2.warpPerspective(_ecc_mask(b.shape), H, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    if cv2.countNonZero(valid) < 64:
        return -1.0
    try:
        return float(cv2.computeECC(a, warped, valid))
    except cv2.error:
        return -1.0


def refine_ecc(H: np.ndarray, src_img: np.ndarray, dst_img: np.ndarray, max_side: int = DEFAULT_ECC_MAX_SIDE,
               levels: int = 2, iterations: int = 40, eps: float = 1e-5) -> np.ndarray | None:
    """ECC (enhanced correlation) refinement of H (3, 3, src->dst px), coarse to fine; None if it fails.

    Every level runs up to ``iterations``, the finest too (why: docs/measurements.md, "refine"). A coarse
    level can also lead a good start astray: when the result correlates worse than the start at the finest
    level, the finest level is rerun from the start alone and the better of the two is kept.
    """
    src, dst = to_gray(src_img).astype(np.float32), to_gray(dst_img).astype(np.float32)
    base = min(1.0, max_side / float(max(src.shape + dst.shape)))
    scales = [s for s in (base / 2 ** lvl for lvl in reversed(range(levels))) if s * min(src.shape) >= 48]
    pyramid = [(s, *_ecc_pair(src, dst, s)) for s in scales]
    start = np.asarray(H, dtype=np.float64)
    if not pyramid:  # too small for ECC's window at every level: nothing to refine
        return normalize_h(start)
    out = _ecc_levels(start, pyramid, iterations, eps)
    if len(pyramid) > 1:
        s, a, b = pyramid[-1]

        def value(M: np.ndarray | None) -> float:
            return -2.0 if M is None else _ecc_value(scale_h(M, s, s), a, b)

        v_out = value(out)
        if v_out < value(start):
            again = _ecc_levels(start, pyramid[-1:], iterations, eps)
            if again is not None and (out is None or value(again) > v_out):
                out = again
    return None if out is None else normalize_h(out)


def _ecc_pair(src: np.ndarray, dst: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    if s >= 1:
        return src, dst
    return (cv2.resize(src, None, fx=s, fy=s, interpolation=cv2.INTER_AREA),
            cv2.resize(dst, None, fx=s, fy=s, interpolation=cv2.INTER_AREA))


def _ecc_levels(H: np.ndarray, pyramid: list[tuple[float, np.ndarray, np.ndarray]], iterations: int,
                eps: float) -> np.ndarray | None:
    """findTransformECC on each (scale, src, dst) level in turn, coarse first; None if it fails."""
    cur = H
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, eps)
    for s, a, b in pyramid:
        try:
            _, W = cv2.findTransformECC(a, b, scale_h(cur, s, s).astype(np.float32), cv2.MOTION_HOMOGRAPHY, crit,
                                        _ecc_mask(b.shape), 5)
        except cv2.error:
            return None
        if not np.all(np.isfinite(W)):
            return None
        cur = scale_h(W.astype(np.float64), 1.0 / s, 1.0 / s)
    return cur


#: A refinement step: (H (3, 3) src->dst px, src image, dst image, matches or None, options) -> H or None.
RefineStep = Callable[..., "np.ndarray | None"]


def _lsq_step(H: np.ndarray, src_img: np.ndarray, dst_img: np.ndarray, matches: Matches | None,
              **options: Any) -> np.ndarray | None:
    return None if matches is None or len(matches) == 0 else refine_lsq(H, matches, **options)


def _ecc_step(H: np.ndarray, src_img: np.ndarray, dst_img: np.ndarray, matches: Matches | None,
              **options: Any) -> np.ndarray | None:
    return refine_ecc(H, src_img, dst_img, **options)


def _deep_step(H: np.ndarray, src_img: np.ndarray, dst_img: np.ndarray, matches: Matches | None,
               **options: Any) -> np.ndarray | None:
    from stitch.deep import refine_deep  # optional: needs torch + kornia

    return refine_deep(H, src_img, dst_img, **options)


@dataclass(frozen=True)
class Refiner:
    """A refiner name: ``step`` refines alone; ``chain`` is what the pipeline applies under this setting, in order."""

    name: str
    step: RefineStep | None
    chain: tuple[str, ...]
    needs_matches: bool = False
    extra: str | None = None  # the optional extra it needs (errors.install_hint)
    help: str = ""


#: The one table of refiners: CLI choices, API checks, the compare report and the benches read it.
REFINERS: dict[str, Refiner] = {r.name: r for r in (
    Refiner("none", None, (), help="keep the selected candidate's matrix"),
    Refiner("lsq", _lsq_step, ("lsq",), needs_matches=True, help="least squares + LM on the inliers"),
    Refiner("ecc", _ecc_step, ("lsq", "ecc"), help="then ECC photometric alignment"),
    Refiner("deep", _deep_step, ("lsq", "ecc", "deep"), extra="deep", help="then the learned refiner"),
)}
REFINER_CHOICES = tuple(REFINERS)
#: The refiners that are a step of their own (every name but "none").
REFINER_STEPS = tuple(n for n, r in REFINERS.items() if r.step is not None)


def check_refiner(name: str, what: str = "refiner") -> Refiner:
    """The table entry of ``name``; ConfigError naming ``what`` and the choices otherwise."""
    if name not in REFINERS:
        raise ConfigError(f"{what}={name!r}: choose one of {', '.join(REFINER_CHOICES)}")
    return REFINERS[name]


@profiled("pair: refinement")
def refine_chain(refiner: str, src_img: np.ndarray, dst_img: np.ndarray, matches: Matches | None,
                 options: dict[str, dict[str, Any]] | None = None) -> list[tuple[str, Callable]]:
    """The (name, H -> H or None) steps the pipeline applies for a refiner setting; ``options`` per step name.

    Steps that need matches are left out when there are none (a candidate from a direct estimator).
    """
    opts = options or {}
    out = []
    for name in check_refiner(refiner).chain:
        r = REFINERS[name]
        if r.needs_matches and (matches is None or len(matches) == 0):
            continue
        kw = {k: v for k, v in opts.get(name, {}).items() if v is not None}
        out.append((name, lambda H, r=r, kw=kw: r.step(H, src_img, dst_img, matches, **kw)))
    return out


@dataclass
class Refinement:
    """What ``refine_homography`` did. H (3, 3) is the refiner's output (src px -> dst px); ``start`` the matrix
    it started from; the quality scores of both on the same images (and matches, when given) say whether it
    helped: ``improved`` is True when ``score_after > score_before``, and ``best`` is the better matrix."""

    H: np.ndarray
    start: np.ndarray
    method: str
    score_before: float
    score_after: float
    corner_shift: float  # the largest move of a src corner between start and H (px)

    @property
    def improved(self) -> bool:
        """True when the refined matrix scores higher than the start."""
        return self.score_after > self.score_before

    @property
    def best(self) -> np.ndarray:
        """The refined matrix when it scores higher, else the start."""
        return self.H if self.improved else self.start


def refine_homography(src, dst, H: np.ndarray, method: str = DEFAULT_REFINER, matches: Matches | None = None,
                      **options) -> Refinement:
    """Refine H (3, 3, src->dst px) between src/dst (paths or arrays) with ``method`` in REFINER_CHOICES.

    Returns a Refinement: the refined matrix and the quality scores before and after (stitch.homography.quality,
    on the same images and matches), so a refinement that lowers the score is visible (``improved`` False,
    ``best`` the start) and warned about; nothing is discarded silently. Raises EstimationError when the
    refiner does not converge, ConfigError for a bad method or matrix.
    """
    from stitch.homography import quality
    from stitch.io import load_image

    r = check_refiner(method, "method")
    H = as_homography(H)
    a, b = load_image(src, "src"), load_image(dst, "dst")
    if r.needs_matches and matches is None:
        raise ConfigError(f"method={method!r} needs the matches (use estimate_homography, which passes them)")
    out = H if r.step is None else r.step(H, a, b, matches, **options)
    if out is None:
        raise EstimationError(f"{method} refinement did not converge from the given matrix")
    out = normalize_h(out)
    ctx = quality.make_context(a, b)
    before = quality.score(H, ctx, matches)[0]
    after = before if r.step is None else quality.score(out, ctx, matches)[0]  # "none" keeps H: one score
    shift = corner_shift(H, out, a.shape[1], a.shape[0], (b.shape[1], b.shape[0]))
    result = Refinement(out, H, method, float(before), float(after), shift)
    if r.step is not None and after < before:
        warnings.warn(f"refinement {method!r} lowered the quality score ({before:.4f} -> {after:.4f}); "
                      "Refinement.best keeps the start", stacklevel=2)
    return result


def corner_shift(H_a: np.ndarray, H_b: np.ndarray, width: int, height: int,
                 dst_size: tuple[int, int] | None = None) -> float:
    """Max distance (px) between the src corners mapped by H_a and by H_b (3, 3, src px -> dst px).

    With ``dst_size`` (w, h), when H_a's horizon crosses the src image (stitch.homography.quality.
    visible_outline), the corners are those of the part in front of the dst view, and the distance is taken
    back in the src image (between c and H_b^-1 H_a c): near the horizon a dst pixel spans many src pixels.
    """
    if dst_size is None:
        c, cut = image_corners(width, height), False
    else:
        c, cut = visible_outline(H_a, (width, height), dst_size)
    if len(c) == 0:
        return float("inf")
    if cut:
        try:
            back = project(np.linalg.solve(H_b, H_a), c)
        except np.linalg.LinAlgError:  # a singular H_b: no way back
            return float("inf")
        return float(np.max(np.linalg.norm(back - c, axis=1)))
    return float(np.max(np.linalg.norm(project(H_a, c) - project(H_b, c), axis=1)))
