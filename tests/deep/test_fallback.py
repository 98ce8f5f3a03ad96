"""Without torch/kornia: the classical pipeline imports and runs; the deep refiner fails with one clear ConfigError."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from stitch.errors import ConfigError
from stitch.geometry import corner_error

REPO = Path(__file__).resolve().parents[2]
HINT = r"refiner 'deep' needs torch and kornia: pip install 'stitch-toolkit\[deep\]'"


@pytest.fixture
def no_torch(monkeypatch):
    """Make `import torch` / `import kornia` fail as if they were not installed."""
    for name in list(sys.modules):
        if name.split(".")[0] in ("torch", "kornia"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "kornia", None)


def test_refine_deep_raises_config_error(no_torch):
    from stitch.deep import refine_deep

    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ConfigError, match=HINT):
        refine_deep(np.eye(3), img, img)


def test_pipeline_falls_back(no_torch, sample_pair):
    """refiner='ecc' (the default) works without torch; refiner='deep' is one ConfigError naming the fix."""
    import stitch

    src, dst, H_gt = sample_pair("perspective")
    r = stitch.estimate_homography(src, dst, refiner="ecc")
    assert corner_error(r.H, H_gt, src.shape[1], src.shape[0]) < 1.0
    with pytest.raises(ConfigError, match=HINT):
        stitch.estimate_homography(src, dst, refiner="deep")
    with pytest.raises(ConfigError, match=HINT):
        stitch.refine_homography(src, dst, r.H, method="deep")


def test_fresh_interpreter_without_torch(tmp_path):
    """A new process where torch and kornia cannot be imported: stitch, its CLI and the classical bench run."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None
        sys.modules["kornia"] = None
        import stitch, stitch.deep, stitch.homography.select, stitch.bench.synthetic
        from stitch.cli.main import main
        rc = main(["train", {str(REPO / "configs" / "refiner_cpu.toml")!r}, "--dry-run"])
        assert rc == 1, rc
        rc = main(["bench", "synthetic", {str(REPO / "data" / "samples")!r}, "--pairs", "1", "--regime", "refiner",
                   "--method", "start", "--method", "ECC"])
        assert rc == 0, rc
        assert not any(m.split(".")[0] in ("torch", "kornia") for m, v in sys.modules.items() if v is not None)
        print("OK")
    """)
    p = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                       check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "OK" in p.stdout
    assert "error: refiner 'deep' needs torch and kornia" in p.stderr
