"""Weight averaging: an exponential moving average (EMA) and stochastic weight averaging (SWA).

EMA, after the n-th update (n = 1, 2, ...) with the model's weights w_n:

    ema_n = d_n * ema_{n-1} + (1 - d_n) * w_n,    ema_0 = w_0 (the weights at creation)
    d_n = min(decay, (1 + n) / (10 + n)) with ``warmup``, else decay

(the warmup keeps early averages from being dominated by the random initialisation). Buffers that are
not floating point are copied.

SWA (Izmailov et al. 2018): the equal-weight mean of the snapshots taken every ``every`` optimizer
steps from step ``start`` on, ``swa = (1/K) sum_k w_k`` (``torch.optim.swa_utils.AveragedModel``). The
model has no BatchNorm, so the averaged weights need no statistics update.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class ModelEMA:
    """EMA of a model's parameters and buffers (see the module docstring for the formula)."""

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay={decay}: must be in (0, 1)")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.updates = 0

    def current_decay(self) -> float:
        """d_n for the next update n = updates + 1."""
        n = self.updates + 1
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        self.updates += 1
        src = model.state_dict()
        for k, v in self.module.state_dict().items():
            w = src[k].detach()
            if v.dtype.is_floating_point:
                v.mul_(d).add_(w.to(v.dtype), alpha=1.0 - d)
            else:
                v.copy_(w)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay,
                "warmup": self.warmup}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])


class SWA:
    """Equal-weight average of snapshots every ``every`` optimizer steps from ``start`` (step counted from 1)."""

    def __init__(self, model: nn.Module, start: int, every: int = 1) -> None:
        if start < 1 or every < 1:
            raise ValueError(f"start={start}, every={every}: both must be >= 1")
        self.start, self.every = int(start), int(every)
        self.averaged = AveragedModel(model)

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    @property
    def count(self) -> int:
        return int(self.averaged.n_averaged.item())

    def maybe_update(self, model: nn.Module, step: int) -> bool:
        """Add a snapshot when ``step`` (optimizer steps done) is start, start + every, ...; True if added."""
        if step >= self.start and (step - self.start) % self.every == 0:
            self.averaged.update_parameters(model)
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"averaged": self.averaged.state_dict(), "start": self.start, "every": self.every}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state["averaged"])
        self.start, self.every = int(state["start"]), int(state["every"])
