"""`stitch train`: dry run, a tiny run with overrides, resume, and one-line errors."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch", reason="needs torch (pip install 'stitch-toolkit[deep]')")
pytest.importorskip("kornia", reason="needs kornia (pip install 'stitch-toolkit[deep]')")

from helpers import write_sets
from stitch.cli.main import main

TINY = """
[run]
out_dir = "{out}"
seed = 1
device = "cpu"
[data]
root = "{root}"
val_sets = ["v"]
val_samples = 2
patch = 32
max_side = 96
detone_rho = 6
refine_true_rho = 6
refine_rho = 3
[model]
enc_channels = [4, 6, 8]
feat_dim = 8
local_dim = 4
hidden = 8
radius = 2
global_iters = 1
local_iters = 1
lk_iters = [1, 1, 1]
[schedule]
name = "cosine"
warmup_steps = 1
[train]
max_steps = 3
batch_size = 2
eval_every = 2
log_every = 1
ckpt_every = 2
"""


@pytest.fixture
def config(tmp_path):
    root = write_sets(tmp_path / "photos", {"t": 2, "v": 1}, size=(160, 120))
    p = tmp_path / "tiny.toml"
    p.write_text(TINY.format(out=tmp_path / "run", root=root))
    return p


def test_dry_run(config, capsys):
    assert main(["train", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "2 training / 1 validation images" in out and "lr at step" in out
    assert not (config.parent / "run" / "last.pt").exists()


def test_train_resume_json(config, capsys):
    assert main(["train", str(config), "-q", "--json", "-", "-s", "train.max_steps=2"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["step"] == 2 and s["stopped"] == "max_steps"
    run = config.parent / "run"
    assert main(["train", str(config), "-q", "--json", "-", "--resume", str(run / "last.pt")]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["step"] == 3 and (run / "refiner.pt").is_file() and (run / "lr.png").is_file()


def test_errors(config, capsys):
    assert main(["train", str(config), "-s", "train.max_steps"]) == 1
    assert "section.key=value" in capsys.readouterr().err
    assert main(["train", str(config), "-s", "train.optimizer=sgd"]) == 1
    assert "unknown key" in capsys.readouterr().err
    assert main(["train", str(config.parent / "missing.toml")]) == 1
    assert main(["train", str(config), "--resume", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "checkpoint" in err
