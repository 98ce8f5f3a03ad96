"""Optimizers with decay / no-decay parameter groups and separate backbone / head learning rates.

Four groups at most: {backbone, head} x {decay, no_decay}. Biases and every parameter with fewer than
2 dimensions (norm scales, ...) get no weight decay. ``backbone_lr`` defaults to ``lr``; the head (the
iterative update blocks) uses ``lr``. Each group carries a ``name`` (e.g. ``"head/decay"``) for logs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from stitch.errors import ConfigError

OPTIMIZER_CHOICES = ("sgd", "adam", "adamw")
DEFAULT_OPTIMIZER = "adamw"


@dataclass(frozen=True)
class OptimConfig:
    """The ``[optim]`` section."""

    name: str = DEFAULT_OPTIMIZER
    lr: float = 1e-3                 # head LR (and the backbone's unless backbone_lr is set)
    backbone_lr: float | None = None
    weight_decay: float = 1e-4
    momentum: float = 0.9            # SGD
    nesterov: bool = True            # SGD
    betas: tuple[float, float] = (0.9, 0.999)  # Adam / AdamW
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZER_CHOICES:
            raise ConfigError(f"optim.name={self.name!r}: choose one of {', '.join(OPTIMIZER_CHOICES)}")
        if self.lr <= 0 or (self.backbone_lr is not None and self.backbone_lr <= 0):
            raise ConfigError("optim.lr and optim.backbone_lr must be > 0")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay={self.weight_decay}: must be >= 0")
        if self.nesterov and self.name == "sgd" and self.momentum <= 0:
            raise ConfigError("optim.nesterov needs optim.momentum > 0")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OptimConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"optim: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(float(b) for b in d["betas"])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


def _no_decay(name: str, p: nn.Parameter) -> bool:
    return p.ndim < 2 or name.endswith(".bias")


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """Parameter groups {backbone, head} x {decay, no_decay}; empty groups are left out.

    The model may define ``backbone_parameters()`` / ``head_parameters()`` (lists of (name, param));
    otherwise everything is 'head'.
    """
    if hasattr(model, "backbone_parameters") and hasattr(model, "head_parameters"):
        parts = {"backbone": model.backbone_parameters(), "head": model.head_parameters()}
    else:
        parts = {"backbone": [], "head": list(model.named_parameters())}
    seen = {id(p) for ps in parts.values() for _, p in ps}
    missing = [n for n, p in model.named_parameters() if id(p) not in seen]
    if missing:
        raise ValueError(f"parameters in neither backbone nor head: {missing[:5]}")
    lrs = {"backbone": cfg.backbone_lr if cfg.backbone_lr is not None else cfg.lr, "head": cfg.lr}
    groups = []
    for part, named in parts.items():
        for kind in ("decay", "no_decay"):
            ps = [p for n, p in named if p.requires_grad and (_no_decay(n, p) == (kind == "no_decay"))]
            if ps:
                groups.append({"params": ps, "lr": lrs[part], "name": f"{part}/{kind}",
                               "weight_decay": cfg.weight_decay if kind == "decay" else 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW over ``param_groups(model, cfg)``."""
    groups = param_groups(model, cfg)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
