"""The Ray backend on a real local Ray instance (2 CPUs, one per module): same outputs as local, time limit."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from batch_trees import GOOD_SEEDS, hanging_job, make_tree

from stitch.batch.backends import Limits, RayBackend
from stitch.batch.jobs import STATUS_TIMEOUT
from stitch.batch.manifest import MANIFEST_NAME, latest_records
from stitch.batch.run import run_batch
from stitch.bench.batch import output_files, partial_files

TESTS = Path(__file__).resolve().parents[1]


def _children() -> list[str]:
    """Command lines of this process's children, but multiprocessing's fork server and resource tracker (session-long)."""
    me, found = str(os.getpid()), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fields[1] == me and "forkserver" not in cmdline and "resource_tracker" not in cmdline:
            found.append(cmdline)
    return found


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[object]:
    ray = pytest.importorskip("ray")
    path = os.pathsep.join([str(TESTS.parent), str(TESTS), str(TESTS / "batch"), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})  # the workers import stitch and batch_trees
    yield ray
    ray.shutdown()
    t0 = time.monotonic()
    while _children() and time.monotonic() - t0 < 15:
        time.sleep(0.2)
    assert _children() == [], "Ray left processes behind"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_tree(tmp_path_factory.mktemp("tree") / "in")
    for name in ("bad_corrupt", "bad_toml", "bad_nooverlap"):  # keep it small: 2 good, 2 bad sets
        shutil.rmtree(root / name)
    return root


def test_local_and_ray_identical(ray_instance: object, tree: Path, tmp_path: Path) -> None:
    local = run_batch(tree, tmp_path / "local", workers=2)
    ray = run_batch(tree, tmp_path / "ray", backend="ray", workers=2)
    assert ray.backend == "ray" and ray.workers == 2 and ray.counts == local.counts == {"ok": 2, "failed": 2}
    a, b = output_files(tmp_path / "local"), output_files(tmp_path / "ray")
    assert len(a) == 2 * len(GOOD_SEEDS) and a == b  # byte-identical panoramas and thumbnails
    fields = ("name", "status", "reason", "images", "kept", "dropped", "size", "warnings", "key")
    rows = [[{k: r[k] for k in fields} for r in latest_records(tmp_path / d / MANIFEST_NAME)] for d in ("local", "ray")]
    assert rows[0] == rows[1]
    assert partial_files(tmp_path / "ray") == []


def test_ray_time_limit(ray_instance: object, tree: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    summary = run_batch(tree / "good", tmp_path / "out", backend="ray", workers=2, job_fn=hanging_job,
                        limits=Limits(timeout_s=1.0))
    assert time.monotonic() - t0 < 30
    assert summary.counts == {STATUS_TIMEOUT: len(GOOD_SEEDS)}


def test_task_options(ray_instance: object, tree: Path) -> None:
    """CPUs and memory always; a GPU only for a set with a learned stage."""
    from stitch.batch.backends import Job
    from stitch.batch.jobs import JobOptions
    from stitch.batch.sets import SetSpec

    backend = RayBackend(1)
    limits = Limits(memory_mb=2048, cpus=1.0, gpus=0.5)
    plain = Job(SetSpec("a", tree, ()), "k", JobOptions(), tree, limits)
    deep = Job(SetSpec("b", tree, (), overrides={"refiner": "deep"}), "k", JobOptions(), tree, limits)
    assert backend.task_options(plain) == {"num_cpus": 1.0, "max_retries": 0, "memory": 2048 * 2**20}
    assert backend.task_options(deep)["num_gpus"] == 0.5
    backend.close()  # leaves the module's instance running (it did not start it)
    assert ray_instance.is_initialized()
