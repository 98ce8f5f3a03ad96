"""Measure training throughput before a long run: ``python -m stitch.deep.speed CONFIG.toml [options]``.

Prints, for the configured data and model: samples/s of the DataLoader alone (with ``num_workers``
workers) and milliseconds per optimizer step of the model alone on random tensors, per batch size.
The slower of the two bounds the training speed; use it to choose ``train.max_steps`` for a time budget.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from stitch.deep.config import load_config
from stitch.deep.data import EpochSampler, PairDataset, build_loader, split_files
from stitch.deep.model import HomographyRefiner, count_parameters, sequence_loss
from stitch.deep.optim import build_optimizer
from stitch.deep.train import amp_dtype, resolve_device


def loader_rate(cfg, device: torch.device, batches: int) -> float:
    """Samples per second of the configured DataLoader (after a warm-up batch)."""
    split = split_files(cfg.data)
    ds = PairDataset(split.train, cfg.data, cfg.run.seed, 2 ** 62)
    sampler = EpochSampler(cfg.train.batch_size * (batches + 1))
    it = iter(build_loader(ds, sampler, cfg.train.batch_size, cfg.data, cfg.run.seed, device))
    next(it)
    t = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += next(it)["a"].shape[0]
    return n / (time.perf_counter() - t)


def step_ms(cfg, device: torch.device, batch: int, steps: int) -> float:
    """Milliseconds per optimizer step (forward, backward, clip, step) on random data."""
    model = HomographyRefiner(cfg.model, cfg.data.patch).to(device)
    opt = build_optimizer(model, cfg.optim)
    adt = amp_dtype(cfg.train.amp, device)
    P = cfg.data.patch
    a = torch.rand(batch, 1, P, P, device=device)
    m = torch.ones_like(a)
    tgt = torch.randn(batch, 4, 2, device=device) * 8
    for i in range(steps + 3):
        if i == 3:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=adt or torch.float32, enabled=adt is not None):
            loss = sequence_loss(model(a, m, a, m), tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1000.0 * (time.perf_counter() - t) / steps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--device", default=None)
    ap.add_argument("--batch", type=int, nargs="*", default=None, help="batch sizes to time (default: the config's)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--loader-batches", type=int, default=20)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    over: dict = {"data": {}}
    if args.data_root:
        over["data"]["root"] = args.data_root
    if args.workers is not None:
        over["data"]["num_workers"] = args.workers
    cfg = load_config(args.config, over)
    dev = resolve_device(args.device or cfg.run.device)
    out = {"device": str(dev), "params": count_parameters(HomographyRefiner(cfg.model, cfg.data.patch)),
           "workers": cfg.data.num_workers}
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        out["gpu"] = torch.cuda.get_device_name()
    out["loader_samples_per_s"] = round(loader_rate(cfg, dev, args.loader_batches), 1)
    for b in args.batch or [cfg.train.batch_size]:
        ms = step_ms(cfg, dev, b, args.steps)
        out[f"step_ms_b{b}"] = round(ms, 2)
        out[f"model_samples_per_s_b{b}"] = round(1000.0 * b / ms, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
