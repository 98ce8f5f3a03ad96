"""Train the refiner: one loop you can read top to bottom (nanoGPT style).

    cfg = load_config("configs/refiner_cpu.toml")
    result = train(cfg)                       # or train(cfg, resume="runs/x/last.pt")

Per optimizer step: ``accum_steps`` micro-batches (forward under autocast on CUDA, the sequence loss,
optional flooding, backward of loss / accum_steps through the GradScaler), then unscale, clip the
global gradient norm, optimizer step, scaler update, zero grads, **then** the LR schedule step, the
EMA update and the SWA snapshot. Every ``eval_every`` steps the model (and its EMA and SWA averages)
are evaluated on the fixed validation set; the monitored value (the EMA's MACE when the EMA is on)
drives ReduceLROnPlateau, the best-weights file and early stopping. A checkpoint follows the
evaluation of the same step, so a resumed run continues exactly where the checkpoint was taken: its
loss curve equals the uninterrupted run's (bitwise on CPU).

Output folder (``run.out_dir``): last.pt (checkpoint), best.pt (weights), refiner.pt (exported
weights), metrics.csv / metrics.json, loss.png / val_mace.png / lr.png, config.json.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stitch.deep.checkpoint import (
    CHECKPOINT_FORMAT,
    export_weights,
    load_checkpoint,
    rng_state,
    save_atomic,
    set_rng_state,
)
from stitch.deep.config import TrainConfig
from stitch.deep.data import (
    EpochSampler,
    PairDataset,
    build_loader,
    epoch_position,
    make_val_set,
    split_files,
)
from stitch.deep.ema import SWA, ModelEMA
from stitch.deep.metrics import MetricsLog
from stitch.deep.model import HomographyRefiner, count_parameters, mace, sequence_loss
from stitch.deep.optim import build_optimizer
from stitch.deep.schedules import Schedule
from stitch.errors import ConfigError
from stitch.io import write_text_atomic

#: ``progress(step, max_steps, info)``: called after every logged step and evaluation.
TrainProgress = Callable[[int, int, dict[str, Any]], None]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); optionally ask torch for deterministic kernels."""
    os.environ["PYTHONHASHSEED"] = str(seed)  # for subprocesses; this process's hash seed is fixed at start
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but torch sees no CUDA device (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device={name!r}: choose cpu, cuda or auto")
    return torch.device(name)


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: None (off) on CPU or when 'off'; bf16 on CUDA by default, fp16 when asked."""
    if device.type != "cuda" or setting == "off":
        return None
    if setting == "fp16":
        return torch.float16
    if setting == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


class EarlyStopping:
    """Stop after ``patience`` evaluations without an improvement of more than ``min_delta`` (lower is better)."""

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.best = math.inf
        self.bad = 0

    def update(self, value: float) -> bool:
        """Record a validation value; True when training should stop."""
        if value < self.best - self.min_delta:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        return self.patience > 0 and self.bad >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad": self.bad}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.best, self.bad = float(s["best"]), int(s["bad"])


def flooded(loss: torch.Tensor, level: float) -> torch.Tensor:
    """Flooding (Ishida et al. 2020): |loss - b| + b; the identity for b = 0."""
    return (loss - level).abs() + level if level > 0 else loss


def _mask_b(batch: dict[str, torch.Tensor], sl: slice = slice(None)) -> torch.Tensor:
    """B's validity mask (B, 1, P, P): the batch's own, or all valid for a batch made without one."""
    return batch["mask_b"][sl] if "mask_b" in batch else torch.ones_like(batch["b"][sl])


@torch.no_grad()
def evaluate(model: nn.Module, val: dict[str, torch.Tensor], batch_size: int = 128,
             dtype: torch.dtype | None = None) -> dict[str, float]:
    """Validation MACE (px) per regime: val_mace_detone, val_mace_refiner, val_mace (their mean)."""
    was = model.training
    model.eval()
    errs = []
    n = val["a"].shape[0]
    dev = val["a"].device
    for i in range(0, n, batch_size):
        sl = slice(i, i + batch_size)
        with torch.autocast(device_type=dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            pred = model(val["a"][sl], val["mask_a"][sl], val["b"][sl], _mask_b(val, sl))[-1]
        errs.append(mace(pred, val["target"][sl]))
    model.train(was)
    e = torch.cat(errs)
    out = {}
    for rid, name in ((0, "detone"), (1, "refiner")):
        sel = e[val["regime"] == rid]
        out[f"val_mace_{name}"] = float(sel.mean()) if len(sel) else math.nan
    out["val_mace"] = float(np.nanmean([out["val_mace_detone"], out["val_mace_refiner"]]))
    return out


@dataclass
class TrainResult:
    """What a run produced: the step reached, why it stopped, the final validation figures, the files."""

    step: int
    stopped: str
    best: float
    final: dict[str, float]
    exported: str
    export_source: str
    out_dir: Path
    seconds: float
    params: int
    losses: list[float] = field(default_factory=list)  # training loss of every optimizer step of this process


def _batch_to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    nb = device.type == "cuda"
    return {k: v.to(device, non_blocking=nb) for k, v in batch.items()}


@dataclass
class _Run:
    """Everything one training run holds: the modules, the optimizer state, the counters and the log."""

    cfg: TrainConfig
    dev: torch.device
    out: Path
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: torch.amp.GradScaler
    adt: torch.dtype | None
    ema: ModelEMA | None
    swa: SWA | None
    stopper: EarlyStopping
    log: MetricsLog
    t0: float
    step: int = 0
    best: float = math.inf
    elapsed_before: float = 0.0
    skipped: int = 0
    window: float = 0.0  # loss sum since the last log row
    n_log: int = 0  # steps in ``window`` (also those before a resume)
    n_timed: int = 0  # steps since ``t_log``
    t_log: float = 0.0

    @property
    def elapsed(self) -> float:
        """Training seconds, those before a resume included."""
        return self.elapsed_before + time.perf_counter() - self.t0


def _set_up(cfg: TrainConfig, device: str | None) -> _Run:
    """Device, seeds, output folder, model, optimizer, schedule, AMP scaler, EMA / SWA, early stopping, log."""
    tc = cfg.train
    start = initial_weights(tc.init_from, cfg.model.to_dict()) if tc.init_from else None  # checked before any output
    dev = resolve_device(device or cfg.run.device)
    if dev.type == "cpu" and tc.threads:
        torch.set_num_threads(tc.threads)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = not tc.deterministic
    seed_everything(cfg.run.seed, tc.deterministic)
    t0 = time.perf_counter()
    out = Path(cfg.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.json", cfg.to_json() + "\n")
    model = HomographyRefiner(cfg.model, cfg.data.patch).to(dev)
    if start is not None:
        model.load_state_dict(start)
    optimizer = build_optimizer(model, cfg.optim)
    schedule = Schedule(optimizer, cfg.schedule.name, tc.max_steps, cfg.schedule.warmup_steps,
                        cfg.schedule.warmup_start_factor, **cfg.schedule.options)
    adt = amp_dtype(tc.amp, dev)
    return _Run(cfg, dev, out, model, optimizer, schedule, torch.amp.GradScaler(dev.type, enabled=adt == torch.float16),
                adt, ModelEMA(model, tc.ema_decay, tc.ema_warmup) if tc.ema_decay > 0 else None,
                SWA(model, tc.swa_start, tc.swa_every) if tc.swa_start > 0 else None,
                EarlyStopping(tc.early_stop_patience, tc.early_stop_min_delta), MetricsLog(out), t0)


def initial_weights(path: str | os.PathLike, model_config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The float32 state dict a fine-tune starts from: a checkpoint's EMA weights (its model's when it has no
    EMA), or a weights file's; ConfigError when the file's [model] differs from ``model_config``."""
    from stitch.deep.checkpoint import read_weights

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"train.init_from={p}: file not found")
    try:
        ck = load_checkpoint(p)
        state, cfg = (ck["ema"]["module"] if ck.get("ema") else ck["model"]), ck["config"]["model"]
    except ConfigError:
        w = read_weights(p)
        state, cfg = w["state_dict"], w["model_config"]
    if cfg != model_config:
        raise ConfigError(f"train.init_from={p}: its [model] differs from the configuration's")
    return {k: v.float() if v.dtype.is_floating_point else v for k, v in state.items()}


def _resume(run: _Run, path: str | os.PathLike) -> None:
    """Load a checkpoint into ``run``: every state, the counters, the RNG states and the log up to its step."""
    ck = load_checkpoint(path, run.dev)
    if ck["config"]["model"] != run.cfg.model.to_dict():
        raise ConfigError(f"{path}: the checkpoint's [model] differs from the configuration's")
    run.model.load_state_dict(ck["model"])
    run.optimizer.load_state_dict(ck["optimizer"])
    run.schedule.load_state_dict(ck["schedule"])
    run.scaler.load_state_dict(ck["scaler"])
    if run.ema is not None and ck["ema"] is not None:
        run.ema.load_state_dict(ck["ema"])
    if run.swa is not None and ck["swa"] is not None:
        run.swa.load_state_dict(ck["swa"])
    run.stopper.load_state_dict(ck["early_stop"])
    run.step, run.best, run.elapsed_before = int(ck["step"]), float(ck["best"]), float(ck.get("elapsed", 0.0))
    set_rng_state(ck["rng"])
    run.log.load()
    run.log.truncate(run.step)
    run.window, run.n_log = float(ck["log_window"][0]), int(ck["log_window"][1])


def _checkpoint(run: _Run, path: Path) -> None:
    """The one-dict checkpoint: states, counters, config and RNG states (exact resume)."""
    save_atomic({
        "format": CHECKPOINT_FORMAT, "step": run.step, "epoch": run.step // run.cfg.train.steps_per_epoch,
        "best": run.best, "config": run.cfg.to_dict(), "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(), "schedule": run.schedule.state_dict(),
        "scaler": run.scaler.state_dict(), "ema": run.ema.state_dict() if run.ema is not None else None,
        "swa": run.swa.state_dict() if run.swa is not None else None,
        "early_stop": run.stopper.state_dict(), "rng": rng_state(), "log_window": [run.window, run.n_log],
        "elapsed": run.elapsed,
    }, path)


def _step(run: _Run, batches: Any, params: list[torch.Tensor]) -> tuple[float, float]:
    """One optimizer step: accumulated micro-batches, unscale, clip, step, scaler update, then the schedule,
    EMA and SWA. Returns (mean loss of the micro-batches, gradient norm)."""
    tc = run.cfg.train
    loss_sum = 0.0
    for _micro in range(tc.accum_steps):
        b = _batch_to(next(batches), run.dev)
        with torch.autocast(device_type=run.dev.type, dtype=run.adt or torch.float32, enabled=run.adt is not None):
            preds = run.model(b["a"], b["mask_a"], b["b"], _mask_b(b))
        loss = flooded(sequence_loss(preds, b["target"], tc.loss_gamma), tc.flood)
        run.scaler.scale(loss / tc.accum_steps).backward()
        loss_sum += float(loss.detach())
    run.scaler.unscale_(run.optimizer)
    gnorm = float(torch.nn.utils.clip_grad_norm_(params, tc.grad_clip if tc.grad_clip > 0 else math.inf))
    if math.isfinite(gnorm) or run.scaler.is_enabled():  # the fp16 scaler skips non-finite steps itself
        run.scaler.step(run.optimizer)
    else:
        run.skipped += 1  # a non-finite gradient (fp32/bf16): skip this update, keep the schedule in step
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.schedule.step()  # after the optimizer step
    run.step += 1
    if run.ema is not None:
        run.ema.update(run.model)
    if run.swa is not None:
        run.swa.maybe_update(run.model, run.step)
    return loss_sum / tc.accum_steps, gnorm


def _log_train(run: _Run, loss_avg: float, gnorm: float, progress: TrainProgress | None) -> None:
    """A training row (mean loss since the last row, LRs, throughput) into the log and to ``progress``."""
    tc = run.cfg.train
    dt = time.perf_counter() - run.t_log
    lrs = {g["name"]: g["lr"] for g in run.optimizer.param_groups}
    row = {"step": run.step, "kind": "train", "epoch": run.step // tc.steps_per_epoch, "loss": run.window / run.n_log,
           "last_loss": loss_avg, "grad_norm": gnorm, "lr_head": lrs.get("head/decay", lrs.get("head/no_decay")),
           "lr_backbone": lrs.get("backbone/decay", lrs.get("backbone/no_decay")),
           "samples_per_s": run.n_timed * tc.batch_size * tc.accum_steps / max(dt, 1e-9), "elapsed_s": run.elapsed,
           "skipped_steps": run.skipped}
    run.log.add(row)
    run.log.write()
    run.t_log, run.n_log, run.n_timed, run.window = time.perf_counter(), 0, 0, 0.0
    if progress:
        progress(run.step, tc.max_steps, row)


def _evaluate(run: _Run, val: dict[str, torch.Tensor]) -> dict[str, float]:
    """Validation MACE of the model, and of its EMA and SWA averages when they exist."""
    ev = evaluate(run.model, val, dtype=run.adt)
    if run.ema is not None:
        ev.update({f"ema_{k}": v for k, v in evaluate(run.ema.module, val, dtype=run.adt).items()})
    if run.swa is not None and run.swa.count > 0:
        ev.update({f"swa_{k}": v for k, v in evaluate(run.swa.module, val, dtype=run.adt).items()})
    return ev


def _evaluate_and_track(run: _Run, val: dict[str, torch.Tensor], meta: dict[str, Any],
                        progress: TrainProgress | None) -> bool:
    """Evaluate; step ReduceLROnPlateau, keep the best weights, log. Returns True when early stopping fires."""
    ev = _evaluate(run, val)
    value = ev.get("ema_val_mace", ev["val_mace"])  # the monitored value: the EMA's when the EMA is on
    run.schedule.step_metric(value)
    if value < run.best:
        run.best = value
        src = run.ema.module if run.ema is not None else run.model
        export_weights(run.out / "best.pt", src.state_dict(), run.cfg.model.to_dict(), run.cfg.data.patch,
                       dict(meta, step=run.step, val=ev), half=False)
    stop = run.stopper.update(value)
    run.log.add({"step": run.step, "kind": "val", "epoch": run.step // run.cfg.train.steps_per_epoch, **ev,
                 "best": run.best, "elapsed_s": run.elapsed})
    run.log.write()
    if progress:
        progress(run.step, run.cfg.train.max_steps, {"kind": "val", **ev, "best": run.best})
    return stop


def _export(run: _Run, val: dict[str, torch.Tensor], meta: dict[str, Any], stopped: str,
            losses: list[float]) -> TrainResult:
    """Export the lowest final validation MACE among model / EMA / SWA (or ``train.export``) as refiner.pt."""
    final = _evaluate(run, val)
    cands = {"model": (run.model, final["val_mace"])}
    if run.ema is not None:
        cands["ema"] = (run.ema.module, final["ema_val_mace"])
    if run.swa is not None and run.swa.count > 0:
        cands["swa"] = (run.swa.module, final["swa_val_mace"])
    pick = run.cfg.train.export if run.cfg.train.export != "auto" else min(cands, key=lambda k: cands[k][1])
    if pick not in cands:
        pick = "model"
    seconds = run.elapsed
    exported = export_weights(run.out / "refiner.pt", cands[pick][0].state_dict(), run.cfg.model.to_dict(),
                              run.cfg.data.patch, dict(meta, step=run.step, stopped=stopped, export_source=pick,
                                                       val=final, seconds=round(seconds, 1)))
    params = count_parameters(run.model)
    run.log.write({"step": run.step, "stopped": stopped, "export_source": pick, "final": final, "best": run.best,
                   "seconds": seconds, "params": params})
    run.log.plot()
    return TrainResult(run.step, stopped, run.best, final, str(exported), pick, run.out, seconds, params, losses)


def train(cfg: TrainConfig, device: str | None = None, resume: str | os.PathLike | None = None,
          progress: TrainProgress | None = None, command: str | None = None,
          stop_after: int | None = None) -> TrainResult:
    """Train the refiner as ``cfg`` says; ``resume`` continues from a checkpoint (exactly).

    ``stop_after``: stop like an interruption once this many optimizer steps are done (checkpoint
    written, nothing exported; ``stopped == "interrupted"``), e.g. to test or to split a run. A killed run
    resumes from its last periodic checkpoint (``train.ckpt_every``).
    """
    # --- set-up ---------------------------------------------------------------------------------------
    run = _set_up(cfg, device)
    tc, dc = cfg.train, cfg.data
    split = split_files(dc)
    # --- resume ---------------------------------------------------------------------------------------
    if resume is not None:
        _resume(run, resume)
    spe, per_step = tc.steps_per_epoch, tc.batch_size * tc.accum_steps
    dataset = PairDataset(split.train, dc, cfg.run.seed, length=2 ** 62)
    sampler = EpochSampler(spe * per_step)
    loader = build_loader(dataset, sampler, tc.batch_size, dc, cfg.run.seed, run.dev)
    val = {k: v.to(run.dev) for k, v in make_val_set(split.val, dc, cfg.run.seed).items()}
    params = [p for p in run.model.parameters() if p.requires_grad]
    meta = {"config": cfg.to_dict(), "config_file": cfg.source, "command": command or " ".join(sys.argv),
            "params": count_parameters(run.model), "torch": str(torch.__version__), "device": str(run.dev),
            "split": {"how": split.how, "train_sets": split.train_sets, "val_sets": split.val_sets,
                      "train_images": len(split.train), "val_images": len(split.val)}}
    # --- the loop: step, log, evaluate and checkpoint -------------------------------------------------
    run.model.train()
    losses: list[float] = []
    stopped = "max_steps"
    epoch, done_in_epoch = epoch_position(run.step, spe)
    run.t_log = time.perf_counter()
    while run.step < tc.max_steps and stopped == "max_steps":
        sampler.set_epoch(epoch, skip=done_in_epoch * per_step)
        batches = iter(loader)
        for _ in range(done_in_epoch, spe):
            loss_avg, gnorm = _step(run, batches, params)
            losses.append(loss_avg)
            run.n_log += 1
            run.n_timed += 1
            run.window += loss_avg
            if run.step % tc.log_every == 0 or run.step == tc.max_steps:
                _log_train(run, loss_avg, gnorm, progress)
            over_time = tc.max_minutes > 0 and (time.perf_counter() - run.t0) > 60.0 * tc.max_minutes
            evaluate_now = run.step % tc.eval_every == 0 or run.step == tc.max_steps or over_time
            if evaluate_now and _evaluate_and_track(run, val, meta, progress):
                stopped = "early_stop"
            if over_time and stopped == "max_steps":
                stopped = "max_minutes"
            if stop_after is not None and run.step >= stop_after and stopped == "max_steps":
                stopped = "interrupted"
            if run.step % tc.ckpt_every == 0 or stopped != "max_steps" or run.step == tc.max_steps:
                _checkpoint(run, run.out / "last.pt")
            if stopped != "max_steps" or run.step >= tc.max_steps:
                break
        epoch, done_in_epoch = epoch + 1, 0
    if stopped == "interrupted":
        run.log.write()
        return TrainResult(run.step, stopped, run.best, {}, "", "", run.out, run.elapsed,
                           count_parameters(run.model), losses)
    # --- export ---------------------------------------------------------------------------------------
    return _export(run, val, meta, stopped, losses)


#: Training samples above which a CPU run gets a warning (the shipped CPU recipe plans about 21,000).
CPU_SAMPLES_WARN = 200_000


def plan_warnings(cfg: TrainConfig, device: str | None = None) -> list[str]:
    """Warnings about a plan that does not fit the machine, e.g. a GPU recipe that would run on the CPU."""
    dev = resolve_device(device or cfg.run.device)
    out = []
    samples = cfg.train.max_steps * cfg.train.batch_size * cfg.train.accum_steps
    cpus = os.cpu_count() or 1
    if dev.type == "cpu" and samples > CPU_SAMPLES_WARN:
        out.append(f"no CUDA device: this configuration plans {samples:,} training samples on the CPU, which takes "
                   f"days here; use configs/refiner_cpu.toml, or lower train.max_steps with -s train.max_steps=N")
    if cfg.data.num_workers > cpus:
        out.append(f"data.num_workers={cfg.data.num_workers} is more than this machine's {cpus} CPUs; "
                   f"try -s data.num_workers={max(cpus - 1, 0)}")
    return out


def describe(cfg: TrainConfig, device: str | None = None) -> dict[str, Any]:
    """What ``train`` would do, without training (``stitch train --dry-run``): data split, model size, LRs."""
    dev = resolve_device(device or cfg.run.device)
    split = split_files(cfg.data)
    model = HomographyRefiner(cfg.model, cfg.data.patch)
    optimizer = build_optimizer(model, cfg.optim)
    schedule = Schedule(optimizer, cfg.schedule.name, cfg.train.max_steps, cfg.schedule.warmup_steps,
                        cfg.schedule.warmup_start_factor, **cfg.schedule.options)
    groups = [{"name": g["name"], "lr": g["lr"], "weight_decay": g["weight_decay"], "tensors": len(g["params"])}
              for g in optimizer.param_groups]
    marks = sorted({0, cfg.schedule.warmup_steps, cfg.train.max_steps // 4, cfg.train.max_steps // 2,
                    (3 * cfg.train.max_steps) // 4, cfg.train.max_steps - 1})
    names = [g["name"] for g in optimizer.param_groups]
    lrs: dict[int, dict[str, float]] = {}
    for t in range(max(marks) + 1):
        if t in marks:
            lrs[t] = {n.split("/")[0]: lr for n, lr in zip(names, schedule.get_last_lr())}
        optimizer.step()  # no gradients: a no-op that keeps torch's step-order check quiet
        schedule.step()
    return {"device": str(dev), "amp": str(amp_dtype(cfg.train.amp, dev)), "params": count_parameters(model),
            "train_images": len(split.train), "val_images": len(split.val), "split": split.how,
            "train_sets": split.train_sets, "val_sets": split.val_sets,
            "groups": groups, "lr_at_step": lrs, "samples": cfg.train.max_steps * cfg.train.batch_size * cfg.train.accum_steps,
            "out_dir": cfg.run.out_dir, "warnings": plan_warnings(cfg, device)}
