"""Learning-rate schedules by name, each composable with a linear warmup.

All schedules count **optimizer steps** (not epochs): ``step_size``, ``milestones``, ``T_max``, ``T_0``
and OneCycle's ``total_steps`` are in optimizer steps. Call ``schedule.step()`` once after every
``optimizer.step()`` (the order torch expects); ReduceLROnPlateau additionally takes the validation
metric through ``schedule.step_metric(value)`` after each evaluation.

With ``warmup_steps = w`` and ``warmup_start_factor = f``, the LR at optimizer step ``t`` (t = 0 before
the first step) is

    lr(t) = main(0) * (f + (1 - f) * t / w)    for t < w
    lr(t) = main(t - w)                         for t >= w

where ``main(k)`` is the chosen torch scheduler's LR after k of its own steps. The main schedule's
length (``T_max``, OneCycle's ``total_steps``, the LambdaLR horizon) defaults to
``total_steps - warmup_steps``.

Names (``SCHEDULER_CHOICES``) and their options:

- ``constant``: none.
- ``step`` (StepLR): step_size, gamma.
- ``multistep`` (MultiStepLR): milestones, gamma.
- ``exponential`` (ExponentialLR): gamma.
- ``cosine`` (CosineAnnealingLR): T_max, eta_min.
- ``cosine_restarts`` (CosineAnnealingWarmRestarts): T_0, T_mult, eta_min.
- ``plateau`` (ReduceLROnPlateau): mode, factor, patience, threshold, cooldown, min_lr.
- ``lambda`` (LambdaLR): lr_lambda in LAMBDA_CHOICES (``poly`` with power, ``inverse_sqrt`` with
  timescale, ``linear`` decay to end_factor), or any callable through the Python API.
- ``onecycle`` (OneCycleLR): max_lr (default: the optimizer's LRs), pct_start, anneal_strategy,
  div_factor, final_div_factor, three_phase.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.optim import lr_scheduler as lrs

from stitch.errors import ConfigError

SCHEDULER_CHOICES = ("constant", "step", "multistep", "exponential", "cosine", "cosine_restarts", "plateau",
                     "lambda", "onecycle")
DEFAULT_SCHEDULER = "onecycle"
LAMBDA_CHOICES = ("poly", "inverse_sqrt", "linear")

_ALLOWED: dict[str, set[str]] = {
    "constant": set(),
    "step": {"step_size", "gamma"},
    "multistep": {"milestones", "gamma"},
    "exponential": {"gamma"},
    "cosine": {"T_max", "eta_min"},
    "cosine_restarts": {"T_0", "T_mult", "eta_min"},
    "plateau": {"mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "min_lr", "eps"},
    "lambda": {"lr_lambda", "power", "timescale", "end_factor"},
    "onecycle": {"max_lr", "pct_start", "anneal_strategy", "div_factor", "final_div_factor", "three_phase"},
}


def named_lambda(name: str, horizon: int, power: float = 1.0, timescale: float = 1000.0,
                 end_factor: float = 0.0) -> Callable[[int], float]:
    """A LambdaLR multiplier by name: poly (1 - k/horizon)^power, inverse_sqrt, or linear to end_factor."""
    horizon = max(1, int(horizon))
    if name == "poly":
        return lambda k: max(0.0, 1.0 - min(k, horizon) / horizon) ** power
    if name == "inverse_sqrt":
        return lambda k: 1.0 / math.sqrt(max(1.0, k / timescale))
    if name == "linear":
        return lambda k: 1.0 + (end_factor - 1.0) * min(k, horizon) / horizon
    raise ConfigError(f"schedule.lr_lambda={name!r}: choose one of {', '.join(LAMBDA_CHOICES)}")


def build_main(optimizer: Optimizer, name: str, steps: int, options: dict[str, Any]) -> lrs.LRScheduler | None:
    """The torch scheduler ``name`` for a main phase of ``steps`` optimizer steps (None for 'constant')."""
    if name not in SCHEDULER_CHOICES:
        raise ConfigError(f"schedule.name={name!r}: choose one of {', '.join(SCHEDULER_CHOICES)}")
    unknown = sorted(set(options) - _ALLOWED[name])
    if unknown:
        raise ConfigError(f"schedule: option(s) {', '.join(unknown)} do not apply to {name!r} "
                          f"(valid: {', '.join(sorted(_ALLOWED[name])) or 'none'})")
    o = dict(options)
    steps = max(1, int(steps))
    if name == "constant":
        return None
    if name == "step":
        return lrs.StepLR(optimizer, step_size=int(o.get("step_size", max(1, steps // 3))), gamma=o.get("gamma", 0.1))
    if name == "multistep":
        ms = o.get("milestones", [steps // 2, (3 * steps) // 4])
        return lrs.MultiStepLR(optimizer, milestones=[int(m) for m in ms], gamma=o.get("gamma", 0.1))
    if name == "exponential":
        return lrs.ExponentialLR(optimizer, gamma=o.get("gamma", 0.01 ** (1.0 / steps)))
    if name == "cosine":
        return lrs.CosineAnnealingLR(optimizer, T_max=int(o.get("T_max", steps)), eta_min=o.get("eta_min", 0.0))
    if name == "cosine_restarts":
        return lrs.CosineAnnealingWarmRestarts(optimizer, T_0=int(o.get("T_0", max(1, steps // 4))),
                                               T_mult=int(o.get("T_mult", 1)), eta_min=o.get("eta_min", 0.0))
    if name == "plateau":
        return lrs.ReduceLROnPlateau(optimizer, **o)
    if name == "lambda":
        fn = o.pop("lr_lambda", "poly")
        if not callable(fn):
            fn = named_lambda(str(fn), steps, o.get("power", 1.0), o.get("timescale", 1000.0),
                              o.get("end_factor", 0.0))
        return lrs.LambdaLR(optimizer, fn)
    max_lr = o.pop("max_lr", None)
    if max_lr is None:
        max_lr = [g["lr"] for g in optimizer.param_groups]
    return lrs.OneCycleLR(optimizer, max_lr=max_lr, total_steps=steps, **o)


class Schedule:
    """A named LR schedule with linear warmup (see the module docstring for the formula).

    Example:
        >>> sched = Schedule(opt, "cosine", total_steps=1000, warmup_steps=100)
        >>> for batch in data:
        ...     loss.backward(); opt.step(); opt.zero_grad(); sched.step()
    """

    def __init__(self, optimizer: Optimizer, name: str = DEFAULT_SCHEDULER, total_steps: int = 1000,
                 warmup_steps: int = 0, warmup_start_factor: float = 0.01, **options: Any) -> None:
        if total_steps < 1:
            raise ConfigError(f"total_steps={total_steps}: must be >= 1")
        if not 0 <= warmup_steps < total_steps:
            raise ConfigError(f"schedule.warmup_steps={warmup_steps}: must be in [0, total_steps={total_steps})")
        if not 0.0 <= warmup_start_factor <= 1.0:
            raise ConfigError(f"schedule.warmup_start_factor={warmup_start_factor}: must be in [0, 1]")
        self.optimizer = optimizer
        self.name = name
        self.warmup_steps = int(warmup_steps)
        self.start_factor = float(warmup_start_factor)
        self.main = build_main(optimizer, name, total_steps - warmup_steps, options)
        self.base = [g["lr"] for g in optimizer.param_groups]  # main(0): the LRs after the scheduler's init
        self.t = 0
        self._apply_warmup()

    @property
    def is_plateau(self) -> bool:
        return isinstance(self.main, lrs.ReduceLROnPlateau)

    def _apply_warmup(self) -> None:
        if self.t < self.warmup_steps:
            f = self.start_factor + (1.0 - self.start_factor) * self.t / self.warmup_steps
            for g, b in zip(self.optimizer.param_groups, self.base):
                g["lr"] = b * f
        elif self.t == self.warmup_steps:
            for g, b in zip(self.optimizer.param_groups, self.base):
                g["lr"] = b

    def step(self) -> None:
        """Advance one optimizer step; call after ``optimizer.step()``."""
        self.t += 1
        if self.t <= self.warmup_steps:
            self._apply_warmup()
        elif self.main is not None and not self.is_plateau:
            self.main.step()

    def step_metric(self, value: float) -> None:
        """Report a validation metric (only ReduceLROnPlateau uses it, and only after the warmup)."""
        if self.is_plateau and self.t >= self.warmup_steps:
            self.main.step(value)

    def get_last_lr(self) -> list[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "base": list(self.base), "name": self.name,
                "main": self.main.state_dict() if self.main is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ConfigError(f"checkpoint schedule {state.get('name')!r} differs from the configured {self.name!r}")
        self.t = int(state["t"])
        self.base = list(state["base"])
        if self.main is not None and state["main"] is not None:
            self.main.load_state_dict(state["main"])
