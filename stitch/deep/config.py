"""The training configuration: one TOML file, one frozen dataclass per section.

```toml
[run]       name, out_dir, seed, device
[data]      see stitch.deep.data.DataConfig
[model]     see stitch.deep.model.ModelConfig
[optim]     see stitch.deep.optim.OptimConfig
[schedule]  name, warmup_steps, warmup_start_factor, plus the chosen scheduler's options
[train]     see TrainSection
```

Relative paths (``data.root``, ``run.out_dir``) are relative to the current directory. Every key is
checked up front; an unknown key or a bad value raises ConfigError naming ``section.key``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from stitch.deep.schedules import DEFAULT_SCHEDULER, SCHEDULER_CHOICES
from stitch.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
AMP_CHOICES = ("auto", "off", "bf16", "fp16")
EXPORT_CHOICES = ("auto", "model", "ema", "swa")
SECTIONS = ("run", "data", "model", "optim", "schedule", "train")


def _type_ok(value: Any, default: Any) -> bool:
    """Whether ``value`` has the type of the field's ``default`` (an int passes for a float, a bool never for a
    number)."""
    want = type(default)
    if want is bool or isinstance(value, bool):
        return isinstance(value, bool) and want is bool
    if want is float:
        return isinstance(value, (int, float))
    return isinstance(value, want)


def _check_keys(section: str, d: dict[str, Any], cls: type, extra_ok: bool = False) -> None:
    """Unknown keys (unless ``extra_ok``) and values of the wrong type raise ConfigError naming ``section.key``."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown and not extra_ok:
        raise ConfigError(f"{section}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    for f in fields(cls):
        default = f.default if f.default is not MISSING else None
        if f.name in d and isinstance(default, (bool, int, float, str)) and not _type_ok(d[f.name], default):
            raise ConfigError(f"{section}.{f.name}={d[f.name]!r}: expected {type(default).__name__} "
                              f"(like the default, {default!r})")


@dataclass(frozen=True)
class RunSection:
    name: str = "refiner"
    out_dir: str = "runs/refiner"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.device not in DEVICE_CHOICES:
            raise ConfigError(f"run.device={self.device!r}: choose one of {', '.join(DEVICE_CHOICES)}")


@dataclass(frozen=True)
class ScheduleSection:
    name: str = DEFAULT_SCHEDULER
    warmup_steps: int = 0
    warmup_start_factor: float = 0.01
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in SCHEDULER_CHOICES:
            raise ConfigError(f"schedule.name={self.name!r}: choose one of {', '.join(SCHEDULER_CHOICES)}")
        if self.warmup_steps < 0:
            raise ConfigError(f"schedule.warmup_steps={self.warmup_steps}: must be >= 0")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScheduleSection:
        d = dict(d)
        base = {k: d.pop(k) for k in ("name", "warmup_steps", "warmup_start_factor") if k in d}
        return cls(**base, options=d)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "warmup_steps": self.warmup_steps,
                "warmup_start_factor": self.warmup_start_factor, **self.options}


@dataclass(frozen=True)
class TrainSection:
    """The ``[train]`` section: loop length, batch, regularisers and bookkeeping (steps = optimizer steps)."""

    max_steps: int = 1000
    batch_size: int = 32
    accum_steps: int = 1           # micro-batches per optimizer step (gradient accumulation)
    steps_per_epoch: int = 500     # optimizer steps per epoch (the data are generated, so an epoch is a length)
    grad_clip: float = 1.0         # max global gradient norm; 0 disables clipping
    amp: str = "auto"              # auto = bf16 autocast on CUDA, off on CPU
    ema_decay: float = 0.999       # 0 disables the EMA
    ema_warmup: bool = True
    swa_start: int = 0             # first optimizer step averaged by SWA; 0 disables SWA
    swa_every: int = 100
    early_stop_patience: int = 0   # evaluations without improvement before stopping; 0 disables
    early_stop_min_delta: float = 0.0
    flood: float = 0.0             # flooding level b: loss -> |loss - b| + b; 0 disables
    loss_gamma: float = 0.85       # weight of iteration i of N: gamma^(N-1-i)
    eval_every: int = 500
    log_every: int = 50
    ckpt_every: int = 1000
    max_minutes: float = 0.0       # stop (and finish cleanly) after this wall time; 0 = no limit
    export: str = "auto"           # weights to export: the lowest validation MACE among model/EMA/SWA
    deterministic: bool = False    # torch.use_deterministic_algorithms (slower on CUDA)
    threads: int = 0               # torch.set_num_threads on CPU; 0 = torch's default
    init_from: str = ""            # fine-tune: start from these weights (a checkpoint's EMA, or a weights file)

    def __post_init__(self) -> None:
        for f in ("max_steps", "batch_size", "accum_steps", "steps_per_epoch", "eval_every", "log_every",
                  "ckpt_every", "swa_every"):
            if int(getattr(self, f)) < 1:
                raise ConfigError(f"train.{f}={getattr(self, f)}: must be >= 1")
        if self.amp not in AMP_CHOICES:
            raise ConfigError(f"train.amp={self.amp!r}: choose one of {', '.join(AMP_CHOICES)}")
        if self.export not in EXPORT_CHOICES:
            raise ConfigError(f"train.export={self.export!r}: choose one of {', '.join(EXPORT_CHOICES)}")
        if not (self.ema_decay == 0 or 0 < self.ema_decay < 1):
            raise ConfigError(f"train.ema_decay={self.ema_decay}: 0 (off) or in (0, 1)")
        for f in ("grad_clip", "flood", "max_minutes", "early_stop_min_delta", "swa_start", "early_stop_patience",
                  "threads"):
            if getattr(self, f) < 0:
                raise ConfigError(f"train.{f}={getattr(self, f)}: must be >= 0")
        if not 0 < self.loss_gamma <= 1:
            raise ConfigError(f"train.loss_gamma={self.loss_gamma}: must be in (0, 1]")
        if self.export == "ema" and self.ema_decay == 0:
            raise ConfigError("train.export='ema' needs train.ema_decay > 0")
        if self.export == "swa" and self.swa_start == 0:
            raise ConfigError("train.export='swa' needs train.swa_start > 0")


@dataclass(frozen=True)
class TrainConfig:
    """The whole configuration; ``source`` is the file it was read from (if any)."""

    run: RunSection
    data: Any   # DataConfig (imported lazily: it needs torch)
    model: Any  # ModelConfig
    optim: Any  # OptimConfig
    schedule: ScheduleSection
    train: TrainSection
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"run": asdict(self.run), "data": self.data.to_dict(), "model": self.model.to_dict(),
                "optim": self.optim.to_dict(), "schedule": self.schedule.to_dict(), "train": asdict(self.train)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def config_from_dict(d: dict[str, Any], source: str = "") -> TrainConfig:
    """Build and check a TrainConfig from nested dicts (the parsed TOML)."""
    from stitch.deep.data import DataConfig
    from stitch.deep.model import ModelConfig
    from stitch.deep.optim import OptimConfig

    unknown = sorted(set(d) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section(s) [{'], ['.join(unknown)}]; valid: {', '.join(SECTIONS)}")
    for s in SECTIONS:
        if not isinstance(d.get(s, {}), dict):
            raise ConfigError(f"[{s}] must be a table")
    run = d.get("run", {})
    train = d.get("train", {})
    for name, cls in (("run", RunSection), ("train", TrainSection), ("data", DataConfig), ("model", ModelConfig),
                      ("optim", OptimConfig), ("schedule", ScheduleSection)):
        _check_keys(name, d.get(name, {}), cls, extra_ok=name == "schedule")  # schedule: extras are options
    try:
        cfg = TrainConfig(run=RunSection(**run), data=DataConfig.from_dict(d.get("data", {})),
                          model=ModelConfig.from_dict(d.get("model", {})), optim=OptimConfig.from_dict(d.get("optim", {})),
                          schedule=ScheduleSection.from_dict(d.get("schedule", {})), train=TrainSection(**train),
                          source=source)
    except TypeError as exc:  # a wrong value type reaching a dataclass
        raise ConfigError(f"bad value in the configuration: {exc}") from None
    if cfg.schedule.warmup_steps >= cfg.train.max_steps:
        raise ConfigError(f"schedule.warmup_steps={cfg.schedule.warmup_steps} must be < train.max_steps="
                          f"{cfg.train.max_steps}")
    return cfg


def toml_module() -> Any:
    """tomllib (Python 3.11+) or tomli."""
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:
        import tomli  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError("reading TOML on Python 3.10 needs the 'tomli' package: pip install tomli") from None
    return tomli


def load_config(path: str | os.PathLike, overrides: dict[str, dict[str, Any]] | None = None) -> TrainConfig:
    """Read a TOML training configuration; ``overrides`` ({section: {key: value}}) replace file values."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: configuration file not found")
    toml = toml_module()
    try:
        d = toml.loads(p.read_text(encoding="utf-8"))
    except toml.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc})") from None
    for section, values in (overrides or {}).items():
        d.setdefault(section, {}).update(values)
    return config_from_dict(d, str(p))
