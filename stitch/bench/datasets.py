"""Ground-truth homography datasets: Oxford affine and CMP homogr pairs, read into ``GTPair`` records.

- ``oxford_affine/<seq>/img1..6`` with ``H1to{k}p`` (img1 -> img{k}): 8 sequences x 5 pairs.
- ``homogr/<name>A|B`` with ``derived_H_A_to_B/<name>.txt`` (A -> B; the original ``<name>_model.txt``
  maps B -> A) and ``<name>_vpts.txt`` (N x 6: xA yA wA xB yB wB): 16 pairs.

Convention: every H maps src pixels to dst pixels, ``x_dst ~ H @ [x, y, 1]``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stitch.errors import ConfigError, StitchError
from stitch.io import IMAGE_EXTENSIONS, read_matrix

#: The subsets of homography_gt, in table order.
SUBSETS = ("oxford", "homogr")


@dataclass(frozen=True)
class GTPair:
    """One benchmark pair with its ground truth.

    ``H_gt`` (3, 3) float64 maps ``src`` pixels to ``dst`` pixels. ``eval_src_pts`` / ``eval_dst_pts``
    (N, 2) are annotated correspondences (``homogr``); None means the corner error is used (``oxford``).
    """

    subset: str
    name: str
    src: Path
    dst: Path
    H_gt: np.ndarray = field(repr=False)
    eval_src_pts: np.ndarray | None = field(default=None, repr=False)
    eval_dst_pts: np.ndarray | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """``<subset>/<name>``, unique within a benchmark."""
        return f"{self.subset}/{self.name}"


def _find_image(folder: Path, stem: str) -> Path | None:
    """The image file ``folder/stem.<ext>`` (any known image extension), or None."""
    for p in sorted(folder.glob(f"{stem}.*")):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            return p
    return None


def _require_image(folder: Path, stem: str) -> Path:
    p = _find_image(folder, stem)
    if p is None:
        raise StitchError(f"{folder / stem}.*: image not found (the ground-truth set is incomplete)")
    return p


def _is_oxford_dir(d: Path) -> bool:
    return d.is_dir() and any((s / "H1to2p").is_file() for s in d.iterdir() if s.is_dir())


def _is_homogr_dir(d: Path) -> bool:
    return d.is_dir() and ((d / "derived_H_A_to_B").is_dir() or any(d.glob("*_model.txt")))


def load_oxford_pairs(folder: str | os.PathLike) -> list[GTPair]:
    """Pairs img1 -> img{k} of every ``<seq>`` folder that has ``H1to{k}p`` (sorted by sequence, k)."""
    root = Path(folder)
    pairs: list[GTPair] = []
    for seq in sorted(p for p in root.iterdir() if p.is_dir()):
        src = _find_image(seq, "img1")
        if src is None:
            continue
        ks = sorted(int(h.name[4:-1]) for h in seq.glob("H1to*p") if h.name[4:-1].isdigit())
        for k in ks:
            dst = _require_image(seq, f"img{k}")
            pairs.append(GTPair("oxford", f"{seq.name} 1->{k}", src, dst, read_matrix(seq / f"H1to{k}p")))
    return pairs


def read_vpts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``<name>_vpts.txt`` (N x 6: xA yA wA xB yB wB) -> A (N, 2), B (N, 2) in pixels."""
    try:
        v = np.loadtxt(path, comments="#", ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise StitchError(f"{path}: not a numeric N x 6 point table ({exc})") from None
    if v.ndim != 2 or v.shape[1] != 6 or len(v) == 0:
        raise StitchError(f"{path}: expected N x 6 columns (xA yA wA xB yB wB), got shape {v.shape}")
    return v[:, 0:2] / v[:, 2:3], v[:, 3:5] / v[:, 5:6]


def load_homogr_pairs(folder: str | os.PathLike) -> list[GTPair]:
    """Pairs A -> B of the CMP ``homogr`` set (sorted by name).

    The A -> B matrix is ``derived_H_A_to_B/<name>.txt``; without it, ``inv(<name>_model.txt)`` (the
    model file maps B -> A). Evaluation points come from ``<name>_vpts.txt`` when present.
    """
    root = Path(folder)
    derived = root / "derived_H_A_to_B"
    names = {p.stem for p in derived.glob("*.txt")} if derived.is_dir() else set()
    names |= {p.name[: -len("_model.txt")] for p in root.glob("*_model.txt")}
    pairs: list[GTPair] = []
    for name in sorted(names):
        if (derived / f"{name}.txt").is_file():
            H = read_matrix(derived / f"{name}.txt")
        else:
            model = read_matrix(root / f"{name}_model.txt")
            try:
                H = np.linalg.inv(model)
            except np.linalg.LinAlgError:
                raise StitchError(f"{root / name}_model.txt: singular matrix") from None
        H = H / H[2, 2]
        src, dst = _require_image(root, f"{name}A"), _require_image(root, f"{name}B")
        vpts = root / f"{name}_vpts.txt"
        pa, pb = read_vpts(vpts) if vpts.is_file() else (None, None)
        pairs.append(GTPair("homogr", name, src, dst, H, pa, pb))
    return pairs


def load_homography_gt(root: str | os.PathLike) -> list[GTPair]:
    """All ground-truth pairs under ``root``: oxford first, then homogr.

    ``root`` is the ``homography_gt`` folder (holding ``oxford_affine/`` and/or ``homogr/``) or one of
    those two folders directly. Raises StitchError naming ``root`` when neither subset is found.
    """
    base = Path(root)
    if not base.is_dir():
        raise StitchError(f"{base}: folder not found")
    pairs: list[GTPair] = []
    if (base / "oxford_affine").is_dir() or (base / "homogr").is_dir():
        if _is_oxford_dir(base / "oxford_affine"):
            pairs += load_oxford_pairs(base / "oxford_affine")
        if _is_homogr_dir(base / "homogr"):
            pairs += load_homogr_pairs(base / "homogr")
    elif _is_oxford_dir(base):
        pairs = load_oxford_pairs(base)
    elif _is_homogr_dir(base):
        pairs = load_homogr_pairs(base)
    if not pairs:
        raise StitchError(
            f"{base}: no homography ground truth found (expected oxford_affine/<seq>/H1to2p "
            "or homogr/derived_H_A_to_B/)"
        )
    return pairs


def limit_pairs(pairs: Sequence[GTPair], limit: int | None) -> list[GTPair]:
    """The first ``limit`` pairs of each subset (all pairs when ``limit`` is None), order kept."""
    if limit is None:
        return list(pairs)
    if limit < 1:
        raise ConfigError(f"limit: must be >= 1, got {limit}")
    seen: dict[str, int] = {}
    out = []
    for p in pairs:
        if seen.get(p.subset, 0) < limit:
            out.append(p)
            seen[p.subset] = seen.get(p.subset, 0) + 1
    return out
