"""Checkpoints (exact resume) and exported weights (what ``refine_deep`` loads).

A checkpoint is one dict (nanoGPT style), written atomically:

    {"format", "step", "epoch", "best", "config", "model", "optimizer", "schedule", "scaler", "ema",
     "swa", "early_stop", "rng": {"python", "numpy", "torch", "cuda"}, "elapsed"}

Everything in it is a tensor or a plain Python value, so ``torch.load(..., weights_only=True)`` reads it
(the NumPy RNG state is stored as a tensor).

Exported weights are a small dict: {"format", "model_config", "work_size", "state_dict" (float16 or
float32 tensors), "meta"}; ``meta`` holds the training config, the command, the validation figures
and the data split.
"""

from __future__ import annotations

import io
import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stitch.errors import ConfigError
from stitch.io import write_bytes_atomic

CHECKPOINT_FORMAT = "stitch-deep-checkpoint/1"
WEIGHTS_FORMAT = "stitch-deep-refiner/1"
#: What torch.load raises on a truncated, corrupt or foreign file.
_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError)


def rng_state() -> dict[str, Any]:
    """The RNG states of Python, NumPy, torch (CPU) and every CUDA device."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured (CUDA states only where devices exist)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save into memory, then stitch.io's atomic write (temp file in the same folder + rename)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return write_bytes_atomic(path, buf.getvalue())


def _safe_load(path: Path, map_location: str | torch.device) -> Any:
    """torch.load with weights_only=True; torch's version string class is allowed (older files hold it)."""
    from torch.torch_version import TorchVersion

    with torch.serialization.safe_globals([TorchVersion]):
        return torch.load(path, map_location=map_location, weights_only=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``stitch.deep.train``; ConfigError if it is not one."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: checkpoint not found")
    try:
        ck = _safe_load(p, map_location)
    except _LOAD_ERRORS as exc:  # corrupt or foreign file: one clear message
        raise ConfigError(f"{p}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{p}: not a stitch training checkpoint (format {CHECKPOINT_FORMAT} expected)")
    return ck


def export_weights(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], model_config: dict[str, Any],
                   work_size: int, meta: dict[str, Any], half: bool = True) -> Path:
    """Write the small weights file ``refine_deep`` loads (float16 tensors when ``half``)."""
    sd = {k: (v.detach().to("cpu", torch.float16) if half and v.dtype.is_floating_point else v.detach().cpu())
          for k, v in state_dict.items()}
    return save_atomic({"format": WEIGHTS_FORMAT, "model_config": model_config, "work_size": int(work_size),
                        "state_dict": sd, "meta": meta}, path)


def read_weights(path: str | os.PathLike) -> dict[str, Any]:
    """The dict ``export_weights`` wrote; ConfigError naming the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: refiner weights not found (train some with `stitch train CONFIG.toml`)")
    try:
        w = _safe_load(p, "cpu")
    except _LOAD_ERRORS as exc:  # corrupt or foreign file: one clear message
        raise ConfigError(f"{p}: not readable refiner weights ({type(exc).__name__}: {exc})") from None
    if not isinstance(w, dict) or w.get("format") != WEIGHTS_FORMAT:
        raise ConfigError(f"{p}: not stitch refiner weights (format {WEIGHTS_FORMAT} expected)")
    return w
