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
            pred = model(val["a"][sl], val["mask_a"][sl], val["b"][sl], torch.ones_like(val["b"][sl]))[-1]
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


def train(cfg: TrainConfig, device: str | None = None, resume: str | os.PathLike | None = None,
          progress: TrainProgress | None = None, command: str | None = None,
          stop_after: int | None = None) -> TrainResult:
    """Train the refiner as ``cfg`` says; ``resume`` continues from a checkpoint (exactly).

    ``stop_after``: stop like an interruption once this many optimizer steps are done (checkpoint
    written, nothing exported; ``stopped == "interrupted"``), e.g. to test or to split a run. A killed run
    resumes from its last periodic checkpoint (``train.ckpt_every``).
    """
    t0 = time.perf_counter()
    tc, dc = cfg.train, cfg.data
    dev = resolve_device(device or cfg.run.device)
    if dev.type == "cpu" and tc.threads:
        torch.set_num_threads(tc.threads)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = not tc.deterministic
    seed_everything(cfg.run.seed, tc.deterministic)
    out = Path(cfg.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.json", cfg.to_json() + "\n")

    # --- data, model, optimizer, schedule, AMP, averages ------------------------------------------
    split = split_files(dc)
    model = HomographyRefiner(cfg.model, dc.patch).to(dev)
    optimizer = build_optimizer(model, cfg.optim)
    schedule = Schedule(optimizer, cfg.schedule.name, tc.max_steps, cfg.schedule.warmup_steps,
                        cfg.schedule.warmup_start_factor, **cfg.schedule.options)
    adt = amp_dtype(tc.amp, dev)
    scaler = torch.amp.GradScaler(dev.type, enabled=adt == torch.float16)
    ema = ModelEMA(model, tc.ema_decay, tc.ema_warmup) if tc.ema_decay > 0 else None
    swa = SWA(model, tc.swa_start, tc.swa_every) if tc.swa_start > 0 else None
    stopper = EarlyStopping(tc.early_stop_patience, tc.early_stop_min_delta)
    log = MetricsLog(out)
    step, best, elapsed_before = 0, math.inf, 0.0

    if resume is not None:
        ck = load_checkpoint(resume, dev)
        if ck["config"]["model"] != cfg.model.to_dict():
            raise ConfigError(f"{resume}: the checkpoint's [model] differs from the configuration's")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        schedule.load_state_dict(ck["schedule"])
        scaler.load_state_dict(ck["scaler"])
        if ema is not None and ck["ema"] is not None:
            ema.load_state_dict(ck["ema"])
        if swa is not None and ck["swa"] is not None:
            swa.load_state_dict(ck["swa"])
        stopper.load_state_dict(ck["early_stop"])
        step, best, elapsed_before = int(ck["step"]), float(ck["best"]), float(ck.get("elapsed", 0.0))
        set_rng_state(ck["rng"])
        log.load()
        log.truncate(step)

    spe = tc.steps_per_epoch
    per_step = tc.batch_size * tc.accum_steps
    dataset = PairDataset(split.train, dc, cfg.run.seed, length=2 ** 62)
    sampler = EpochSampler(spe * per_step)
    loader = build_loader(dataset, sampler, tc.batch_size, dc, cfg.run.seed, dev)
    val = {k: v.to(dev) for k, v in make_val_set(split.val, dc, cfg.run.seed).items()}
    params = [p for p in model.parameters() if p.requires_grad]
    meta_base = {"config": cfg.to_dict(), "config_file": cfg.source, "command": command or " ".join(sys.argv),
                 "params": count_parameters(model), "torch": str(torch.__version__), "device": str(dev),
                 "split": {"how": split.how, "train_sets": split.train_sets, "val_sets": split.val_sets,
                           "train_images": len(split.train), "val_images": len(split.val)}}

    def monitored(ev: dict[str, float]) -> float:
        return ev.get("ema_val_mace", ev["val_mace"])

    def run_eval() -> dict[str, float]:
        ev = evaluate(model, val, dtype=adt)
        if ema is not None:
            ev.update({f"ema_{k}": v for k, v in evaluate(ema.module, val, dtype=adt).items()})
        if swa is not None and swa.count > 0:
            ev.update({f"swa_{k}": v for k, v in evaluate(swa.module, val, dtype=adt).items()})
        return ev

    def checkpoint(path: Path) -> None:
        save_atomic({
            "format": CHECKPOINT_FORMAT, "step": step, "epoch": step // spe, "best": best,
            "config": cfg.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "scaler": scaler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "swa": swa.state_dict() if swa is not None else None,
            "early_stop": stopper.state_dict(), "rng": rng_state(), "log_window": [window, n_log],
            "elapsed": elapsed_before + time.perf_counter() - t0,
        }, path)

    # --- the loop -----------------------------------------------------------------------------------
    model.train()
    losses: list[float] = []
    skipped = 0
    stopped = "max_steps"
    epoch, done_in_epoch = epoch_position(step, spe)
    t_log, n_log, window = time.perf_counter(), 0, 0.0  # window: loss sum since the last log row
    n_timed = 0  # steps since t_log (n_log also counts the steps before a resume)
    if resume is not None:
        window, n_log = float(ck["log_window"][0]), int(ck["log_window"][1])
    while step < tc.max_steps and stopped == "max_steps":
        sampler.set_epoch(epoch, skip=done_in_epoch * per_step)
        batches = iter(loader)
        for _ in range(done_in_epoch, spe):
            loss_sum = 0.0
            for _micro in range(tc.accum_steps):
                b = _batch_to(next(batches), dev)
                with torch.autocast(device_type=dev.type, dtype=adt or torch.float32, enabled=adt is not None):
                    preds = model(b["a"], b["mask_a"], b["b"], torch.ones_like(b["b"]))
                loss = flooded(sequence_loss(preds, b["target"], tc.loss_gamma), tc.flood)
                scaler.scale(loss / tc.accum_steps).backward()
                loss_sum += float(loss.detach())
            scaler.unscale_(optimizer)
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, tc.grad_clip if tc.grad_clip > 0 else math.inf))
            if math.isfinite(gnorm) or scaler.is_enabled():  # the fp16 scaler skips non-finite steps itself
                scaler.step(optimizer)
            else:
                skipped += 1  # a non-finite gradient (fp32/bf16): skip this update, keep the schedule in step
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()  # after the optimizer step
            step += 1
            if ema is not None:
                ema.update(model)
            if swa is not None:
                swa.maybe_update(model, step)
            loss_avg = loss_sum / tc.accum_steps
            losses.append(loss_avg)
            n_log += 1
            n_timed += 1
            window += loss_avg
            elapsed = elapsed_before + time.perf_counter() - t0
            if step % tc.log_every == 0 or step == tc.max_steps:
                dt = time.perf_counter() - t_log
                lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
                row = {"step": step, "kind": "train", "epoch": step // spe, "loss": window / n_log,
                       "last_loss": loss_avg, "grad_norm": gnorm,
                       "lr_head": lrs.get("head/decay", lrs.get("head/no_decay")),
                       "lr_backbone": lrs.get("backbone/decay", lrs.get("backbone/no_decay")),
                       "samples_per_s": n_timed * per_step / max(dt, 1e-9), "elapsed_s": elapsed,
                       "skipped_steps": skipped}
                log.add(row)
                log.write()
                t_log, n_log, n_timed, window = time.perf_counter(), 0, 0, 0.0
                if progress:
                    progress(step, tc.max_steps, row)
            over_time = tc.max_minutes > 0 and (time.perf_counter() - t0) > 60.0 * tc.max_minutes
            if step % tc.eval_every == 0 or step == tc.max_steps or over_time:
                ev = run_eval()
                value = monitored(ev)
                schedule.step_metric(value)
                if value < best:
                    best = value
                    src = ema.module if ema is not None else model
                    export_weights(out / "best.pt", src.state_dict(), cfg.model.to_dict(), dc.patch,
                                   dict(meta_base, step=step, val=ev), half=False)
                if stopper.update(value):
                    stopped = "early_stop"
                log.add({"step": step, "kind": "val", "epoch": step // spe, **ev, "best": best,
                         "elapsed_s": elapsed})
                log.write()
                if progress:
                    progress(step, tc.max_steps, {"kind": "val", **ev, "best": best})
            if over_time and stopped == "max_steps":
                stopped = "max_minutes"
            if stop_after is not None and step >= stop_after and stopped == "max_steps":
                stopped = "interrupted"
            if step % tc.ckpt_every == 0 or stopped != "max_steps" or step == tc.max_steps:
                checkpoint(out / "last.pt")
            if stopped != "max_steps" or step >= tc.max_steps:
                break
        epoch, done_in_epoch = epoch + 1, 0
    if stopped == "interrupted":
        log.write()
        return TrainResult(step, stopped, best, {}, "", "", out, elapsed_before + time.perf_counter() - t0,
                           count_parameters(model), losses)

    # --- export: the lowest validation MACE among model / EMA / SWA --------------------------------
    final = run_eval()
    cands = {"model": (model, final["val_mace"])}
    if ema is not None:
        cands["ema"] = (ema.module, final["ema_val_mace"])
    if swa is not None and swa.count > 0:
        cands["swa"] = (swa.module, final["swa_val_mace"])
    pick = tc.export if tc.export != "auto" else min(cands, key=lambda k: cands[k][1])
    if pick not in cands:
        pick = "model"
    seconds = elapsed_before + time.perf_counter() - t0
    meta = dict(meta_base, step=step, stopped=stopped, export_source=pick, val=final, seconds=round(seconds, 1))
    exported = export_weights(out / "refiner.pt", cands[pick][0].state_dict(), cfg.model.to_dict(), dc.patch, meta)
    log.write({"step": step, "stopped": stopped, "export_source": pick, "final": final, "best": best,
               "seconds": seconds, "params": count_parameters(model)})
    log.plot()
    return TrainResult(step, stopped, best, final, str(exported), pick, out, seconds, count_parameters(model),
                       losses)


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
            "out_dir": cfg.run.out_dir}
