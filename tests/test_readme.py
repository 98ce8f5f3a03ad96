"""Every ```python block of README.md runs as written, in order, in one namespace.

The test only sets the scene a reader has: the image files the README names (src.jpg, dst.jpg, a.jpg, b.jpg,
c.jpg, copied from data/samples), the ground truth ``H_gt`` of src.jpg -> dst.jpg, ``np``, and
the weights file the README's own-weights line points to (a copy of the shipped weights).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

from stitch.io import read_matrix

REPO_ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def python_blocks() -> list[str]:
    """The README's python code blocks, in order."""
    return BLOCK.findall((REPO_ROOT / "README.md").read_text())


def test_readme_has_python_blocks():
    assert len(python_blocks()) >= 3


def test_readme_python_blocks_run(tmp_path, monkeypatch, samples_dir):
    pair = samples_dir / "pairs" / "perspective"
    src, dst = next(pair.glob("src.*")), next(pair.glob("dst.*"))
    shutil.copy(src, tmp_path / "src.jpg")
    shutil.copy(dst, tmp_path / "dst.jpg")
    views = sorted((samples_dir / "pano3").glob("view_*"))
    for name, view in zip(("a.jpg", "b.jpg", "c.jpg"), views):
        shutil.copy(view, tmp_path / name)
    H_gt = read_matrix(pair / "H.txt")
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks()
    needs_deep = [i for i, b in enumerate(blocks) if "stitch.deep" in b or 'refiner="deep"' in b]
    if needs_deep:
        from stitch.deep import DEFAULT_WEIGHTS, require_torch
        from stitch.errors import ConfigError

        try:
            require_torch()
        except ConfigError:  # the deep extra is optional: run every other block
            blocks = [b for i, b in enumerate(blocks) if i not in needs_deep]
        else:
            weights = re.search(r'deep_weights="([^"]+)"', "".join(blocks))
            if weights:
                Path(weights.group(1)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(DEFAULT_WEIGHTS, weights.group(1))
    ns: dict = {"np": np, "H_gt": H_gt}
    for k, code in enumerate(blocks):  # a failure's traceback names "README.md python block k"
        exec(compile(code, f"README.md python block {k}", "exec"), ns)  # noqa: S102 - the README's own code
    assert ns["r"].H.shape == (3, 3)
