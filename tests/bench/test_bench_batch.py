"""stitch bench batch: the generated tree, the OUT checks, the figures, and one small end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from stitch.cli.bench_goals import batch_goals
from stitch.cli.main import main

from stitch.batch.jobs import STATUS_FAILED, STATUS_OK, SetResult
from stitch.batch.manifest import Manifest
from stitch.bench.batch import (
    BAD_SETS,
    BatchBenchResult,
    ScalingRow,
    bad_set_reasons,
    link_tree,
    make_tree,
    partial_files,
    run_batch_bench,
    stray_files,
    variants,
)
from stitch.errors import StitchError


def test_variants_cycle_windows_crops_and_sizes() -> None:
    src = [("a", [Path("a0"), Path("a1"), Path("a2")]), ("b", [Path("b0"), Path("b1")])]
    v = variants(src, 10)  # windows: a0a1, a1a2, b0b1 (2 images), a0a1a2 (3 images)
    assert [len(p) for _, p, _, _ in v[:4]] == [2, 2, 2, 3]
    assert [(c, s) for _, _, c, s in v[:5]] == [(1.0, 320)] * 4 + [(0.85, 320)]
    assert len({(n, tuple(p), c, s) for n, p, c, s in v}) == 10


def test_make_tree(shared_data: Path, tmp_path: Path) -> None:
    names = make_tree(shared_data / "panoramas", tmp_path / "tree", sets=7, max_side=96)
    assert len(names) == 7 and set(BAD_SETS) <= set(names)
    good = [n for n in names if n.startswith("good/")]
    for n in good:
        files = sorted((tmp_path / "tree" / n).iterdir())
        assert len(files) == 2 and max(cv2.imread(str(files[0])).shape[:2]) == 96
    assert not any((tmp_path / "tree" / "bad/empty").iterdir())
    assert cv2.imread(str(tmp_path / "tree" / "bad/corrupt/1.jpg")) is None  # truncated
    assert link_tree(tmp_path / "tree" / "good", tmp_path / "linked", 5) == 5
    assert len(list((tmp_path / "linked").glob("*/*.jpg"))) == 10
    with pytest.raises(StitchError, match="not a folder"):
        make_tree(tmp_path / "missing", tmp_path / "t2")


def test_out_checks(tmp_path: Path) -> None:
    with Manifest(tmp_path) as m:
        m.record("k", SetResult("good/a", STATUS_OK, panorama="good/a/panorama.jpg", thumbnail="good/a/thumb.jpg"))
        for name in BAD_SETS:
            m.record("k", SetResult(name, STATUS_FAILED, f"{BAD_SETS[name]} (details)"))
    for rel in ("good/a/panorama.jpg", "good/a/thumb.jpg", "good/a/summary.json", "good/a/log.txt", "bad/empty/log.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    assert stray_files(tmp_path) == [] and partial_files(tmp_path) == []
    (tmp_path / "bad/empty/panorama.jpg").write_text("x")  # a failed set keeps only its log
    (tmp_path / "good/a/.panorama.jpg.123.tmp").write_text("x")
    assert stray_files(tmp_path) == ["bad/empty/panorama.jpg", "good/a/.panorama.jpg.123.tmp"]
    assert partial_files(tmp_path) == ["good/a/.panorama.jpg.123.tmp"]
    reasons, ok = bad_set_reasons(tmp_path)
    assert ok and reasons["bad/one_image"] == "got 1 (details)"


def test_targets() -> None:
    r = BatchBenchResult("t", 200, scaling=[ScalingRow("local", 1, 200, 190, 10, 200.0, 0.1, 1.0, 190.0),
                                            ScalingRow("local", 2, 200, 190, 10, 105.0, 0.1, 1.9048, 190.0),
                                            ScalingRow("ray", 2, 200, 190, 10, 108.0, 6.0, 1.8519, 190.0)],
                         memory_mb={200: 150.0, 2000: 151.0})
    assert r.speedup("local") == pytest.approx(1.9048) and r.speedup("ray") is None
    assert r.ray_overhead(2) == pytest.approx(1.9048 / 1.8519 - 1)
    goals = {g.name: g.reached for g in batch_goals(r)}
    assert goals == {"local: throughput with 2 workers >= 1.8x 1 worker": True,
                     "Ray's time per set <= local's + 5% (2 worker(s))": True,
                     "coordinator memory flat from 200 to 2000 sets (growth <= 5%)": True}
    assert json.loads(json.dumps(r.to_json()))["speedup"]["local"] == pytest.approx(1.9048)


def test_smoke_end_to_end(shared_data: Path, tmp_path: Path) -> None:
    """One good set and the bad ones, local backend, no crash or memory runs: every bad set has its reason."""
    result = run_batch_bench(shared_data / "panoramas", work=tmp_path / "w", sets=5, backends=("local",), kills=0,
                             memory_sets=())
    assert [(r.backend, r.workers, r.sets) for r in result.scaling] == [("local", 1, 5), ("local", 2, 5)]
    assert result.bad_ok and set(result.bad_sets) == set(BAD_SETS)
    assert main(["bench", "batch", str(tmp_path / "missing"), "--memory-sets", "x"]) == 2
