"""stitch.deep.train: exact resume, gradient accumulation, early stopping, outputs; tiny runs on generated images."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="needs torch (pip install 'stitch-toolkit[deep]')")
pytest.importorskip("kornia", reason="needs kornia (pip install 'stitch-toolkit[deep]')")

import json
from pathlib import Path

import torch
from helpers import write_sets

from stitch.deep.checkpoint import load_checkpoint, read_weights
from stitch.deep.config import config_from_dict, load_config
from stitch.deep.infer import load_refiner
from stitch.deep.train import EarlyStopping, describe, flooded, train
from stitch.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    return write_sets(tmp_path_factory.mktemp("photos"), {"train": 3, "val": 1}, size=(160, 120))


def tiny(root: Path, out: Path, **train_over) -> dict:
    t = {"max_steps": 8, "batch_size": 2, "accum_steps": 2, "steps_per_epoch": 3, "eval_every": 2, "log_every": 2,
         "ckpt_every": 5, "ema_decay": 0.9, "swa_start": 4, "swa_every": 2, "flood": 0.5, "grad_clip": 5.0}
    t.update(train_over)
    return {"run": {"out_dir": str(out), "seed": 3, "device": "cpu"},
            "data": {"root": str(root), "val_sets": ["val"], "val_samples": 2, "patch": 32, "max_side": 96,
                     "detone_rho": 6, "refine_true_rho": 6, "refine_rho": 3},
            "model": {"enc_channels": [4, 6, 8], "feat_dim": 8, "local_dim": 4, "hidden": 8, "radius": 2,
                      "global_iters": 2, "local_iters": 1},
            "optim": {"name": "adamw", "lr": 3e-3, "backbone_lr": 1e-3},
            "schedule": {"name": "plateau", "warmup_steps": 2, "patience": 0, "factor": 0.5},
            "train": t}


def rows_without_time(out: Path) -> list[dict]:
    rows = json.loads((out / "metrics.json").read_text())["rows"]
    return [{k: v for k, v in r.items() if k not in ("elapsed_s", "samples_per_s")} for r in rows]


def test_resume_is_exact(image_root, tmp_path):
    """Interrupted at step 3 and resumed: the same loss curve, metrics and weights as one uninterrupted run."""
    full = train(config_from_dict(tiny(image_root, tmp_path / "a")))
    cfg_b = config_from_dict(tiny(image_root, tmp_path / "b"))
    part = train(cfg_b, stop_after=3)
    assert part.stopped == "interrupted" and part.step == 3 and load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 3
    rest = train(cfg_b, resume=tmp_path / "b" / "last.pt")
    assert rest.step == full.step == 8
    assert part.losses + rest.losses == full.losses  # bitwise on CPU
    assert rest.final == full.final and rest.export_source == full.export_source
    assert rows_without_time(tmp_path / "a") == rows_without_time(tmp_path / "b")
    wa, wb = read_weights(full.exported)["state_dict"], read_weights(rest.exported)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_accumulation_matches_big_batch(image_root, tmp_path):
    """accum_steps=2 x batch 2 takes the same first step as batch 4 (same samples, mean loss)."""
    runs = []
    for name, accum, batch in (("a", 2, 2), ("b", 1, 4)):
        d = tiny(image_root, tmp_path / name, max_steps=1, accum_steps=accum, batch_size=batch, flood=0.0,
                 swa_start=0)
        d["schedule"] = {"name": "constant"}
        # SGD: Adam would turn float noise in (mathematically) zero gradients into full-size steps
        d["optim"] = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True}
        runs.append(train(config_from_dict(d)))
    a, b = runs
    assert a.losses == pytest.approx(b.losses, rel=1e-5)
    wa = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6)


def test_outputs(image_root, tmp_path):
    out = tmp_path / "run"
    r = train(config_from_dict(tiny(image_root, out, max_steps=4, swa_start=2, log_every=1)))
    for name in ("last.pt", "best.pt", "refiner.pt", "metrics.csv", "metrics.json", "loss.png", "val_mace.png",
                 "lr.png", "config.json"):
        assert (out / name).is_file(), name
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"step", "loss", "lr_head", "lr_backbone", "val_mace_detone", "val_mace_refiner"} <= set(header)
    model, meta = load_refiner(r.exported)
    assert meta["export_source"] in ("model", "ema", "swa") and meta["split"]["val_sets"] == ["val"]
    assert model.work_size == 32 and not model.training
    lrs = [row["lr_head"] for row in json.loads((out / "metrics.json").read_text())["rows"] if row["kind"] == "train"]
    assert lrs[0] == pytest.approx(3e-3 * (0.01 + 0.99 * 1 / 2))  # warmup, then the plateau schedule


def test_early_stopping(image_root, tmp_path):
    stopper = EarlyStopping(patience=2, min_delta=0.1)
    assert [stopper.update(v) for v in (5.0, 4.95, 4.0, 3.95, 3.99)] == [False, False, False, False, True]
    r = train(config_from_dict(tiny(image_root, tmp_path / "es", max_steps=40, eval_every=1,
                                    early_stop_patience=1, early_stop_min_delta=1e6)))
    assert r.stopped == "early_stop" and r.step == 2


def test_flooding():
    x = torch.tensor([0.2, 1.0])
    assert flooded(x, 0.5).tolist() == pytest.approx([0.8, 1.0])
    assert flooded(x, 0.0) is x


def test_describe_and_configs(image_root, tmp_path):
    plan = describe(config_from_dict(tiny(image_root, tmp_path / "d")))
    assert plan["train_images"] == 3 and plan["val_images"] == 1 and len(plan["groups"]) == 4
    for name in ("refiner_cpu.toml", "refiner_gpu.toml", "refiner_finetune.toml"):  # the shipped configs validate
        cfg = load_config(REPO / "configs" / name)
        assert cfg.data.val_sets and "hill" in cfg.data.exclude_sets
    tuned = load_config(REPO / "configs" / "refiner_finetune.toml")
    assert (REPO / tuned.train.init_from).is_file() and tuned.data.window_mask > 0
    assert (REPO / "stitch/deep/weights/refiner.toml").read_bytes() == (REPO / "configs/refiner_finetune.toml").read_bytes()


def test_exception(image_root, tmp_path):
    d = tiny(image_root, tmp_path / "x")
    d["train"]["amp"] = "fp8"
    with pytest.raises(ConfigError, match="train.amp"):
        config_from_dict(d)
    with pytest.raises(ConfigError, match="unknown section"):
        config_from_dict({"trainer": {}})
    with pytest.raises(ConfigError, match="checkpoint not found"):
        train(config_from_dict(tiny(image_root, tmp_path / "y")), resume=tmp_path / "nope.pt")


def test_fine_tune_starts_from_weights(image_root, tmp_path):
    """train.init_from: a run starts from a checkpoint's EMA weights (or a weights file's); with no learning
    (lr 1e-12) it exports those weights (float16); a different [model] is a ConfigError naming the file."""
    from stitch.deep.train import initial_weights

    first = train(config_from_dict(tiny(image_root, tmp_path / "a", max_steps=4)))
    ck = load_checkpoint(tmp_path / "a" / "last.pt")
    model_cfg = config_from_dict(tiny(image_root, tmp_path / "z")).model.to_dict()
    start = initial_weights(tmp_path / "a" / "last.pt", model_cfg)
    assert all(torch.equal(start[k], ck["ema"]["module"][k].float()) for k in start)
    from_file = initial_weights(first.exported, model_cfg)
    assert set(from_file) == set(start)
    d = tiny(image_root, tmp_path / "b", max_steps=3, ema_decay=0.0, swa_start=0, init_from=str(tmp_path / "a" / "last.pt"))
    d["optim"] = {"name": "sgd", "lr": 1e-12, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}
    tuned = train(config_from_dict(d))
    got = read_weights(tuned.exported)["state_dict"]
    assert all(torch.allclose(got[k].float(), start[k], rtol=2e-3, atol=1e-4) for k in start)
    other = tiny(image_root, tmp_path / "c", init_from=str(tmp_path / "a" / "last.pt"))
    other["model"]["feat_dim"] = 12
    with pytest.raises(ConfigError, match=r"init_from=.*last.pt: its \[model\] differs"):
        train(config_from_dict(other))
    missing = tiny(image_root, tmp_path / "d", init_from=str(tmp_path / "nope.pt"))
    with pytest.raises(ConfigError, match="init_from=.*nope.pt: file not found"):
        train(config_from_dict(missing))
    assert not (tmp_path / "d").exists()  # checked before any output is written
