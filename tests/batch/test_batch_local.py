"""stitch batch on the local backend: outputs, bad sets, resume after kill -9, changed inputs, limits, CLI."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from batch_trees import (
    BAD_SETS,
    GOOD_SEEDS,
    greedy_job,
    hanging_job,
    make_tree,
    write_pair,
)
from helpers import texture
from stitch.cli.main import main

from stitch.batch.backends import Limits, make_backend
from stitch.batch.jobs import STATUS_FAILED, STATUS_OK, STATUS_OOM, STATUS_TIMEOUT, JobOptions, set_options
from stitch.batch.manifest import MANIFEST_NAME, latest_records, read_records
from stitch.batch.run import run_batch
from stitch.batch.sets import SetSpec
from stitch.bench.batch import output_files, partial_files
from stitch.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
GOOD = [f"good/s{s}" for s in GOOD_SEEDS]
ALL_SETS = sorted(GOOD + list(BAD_SETS))


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "in")


@pytest.fixture(scope="module")
def reference(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT of one uninterrupted run with 2 workers."""
    out = tmp_path_factory.mktemp("ref") / "out"
    summary = run_batch(tree, out, workers=2)
    assert summary.total == len(ALL_SETS) and summary.ran == len(ALL_SETS)
    return out


def test_outputs_and_bad_set_reasons(reference: Path) -> None:
    records = {r["name"]: r for r in latest_records(reference / MANIFEST_NAME)}
    assert sorted(records) == ALL_SETS
    for name, word in BAD_SETS.items():
        r = records[name]
        assert r["status"] == STATUS_FAILED and word in r["reason"] and "\n" not in r["reason"], r
        assert (reference / name / "log.txt").is_file() and not (reference / name / "panorama.jpg").exists()
    for name in GOOD:
        r = records[name]
        assert r["status"] == STATUS_OK and r["kept"] == 2 and r["dropped"] == 0
        folder = reference / name
        assert cv2.imread(str(folder / "panorama.jpg")).shape[1] > 300
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["kept"] == ["a.png", "b.png"] and summary["output"].endswith("panorama.jpg")
        assert "ok:" in (folder / "log.txt").read_text()
    assert json.loads((reference / GOOD[0] / "summary.json").read_text())["projection"] == "plane"  # stitch.toml
    index = (reference / "index.html").read_text()
    assert all(name in index for name in ALL_SETS) and "no two images overlap" in index
    assert partial_files(reference) == []


def test_rerun_skips_unchanged_and_redoes_changed(tree: Path, reference: Path, tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(tree, root)
    shutil.copytree(reference, out, symlinks=True)
    for p in (root / "good").rglob("*.png"):  # copytree keeps mtimes (copy2), so the keys hold
        assert p.stat().st_mtime_ns == (tree / p.relative_to(root)).stat().st_mtime_ns
    again = run_batch(root, out, workers=2)
    assert again.skipped == len(GOOD) and again.ran == 0
    # the sets that failed are still failed (not redone without --retry-failed), with their reasons
    assert again.failed_before == again.failed == len(BAD_SETS)
    assert {n for n, _, _ in again.failures} == set(BAD_SETS)
    reasons = {n: r for n, _, r in again.failures}
    assert all(word in reasons[n] for n, word in BAD_SETS.items())
    before = (out / GOOD[1] / "panorama.jpg").read_bytes()
    cv2.imwrite(str(root / GOOD[1] / "b.png"), texture(GOOD_SEEDS[1], (400, 200))[:, 100:])
    changed = run_batch(root, out, workers=2)
    assert changed.ran == 1 and changed.skipped == len(GOOD) - 1 and changed.counts == {STATUS_OK: 1}
    assert (out / GOOD[1] / "panorama.jpg").read_bytes() != before
    assert output_files(out)[f"{GOOD[0]}/panorama.jpg"] == output_files(reference)[f"{GOOD[0]}/panorama.jpg"]


def test_resume_after_kill_9(tree: Path, reference: Path, tmp_path: Path) -> None:
    """kill -9 the CLI after its first finished set; the resumed run completes every set exactly once."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "stitch.cli.main", "batch", str(tree / "good"), "-o", str(out), "--workers", "1",
           "-q"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / MANIFEST_NAME
    t0 = time.monotonic()
    while not (manifest.exists() and manifest.read_text().count("\n") >= 1) and time.monotonic() - t0 < 60:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = [r["name"] for r in read_records(manifest)]
    assert len(first) == 1
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    names = [r["name"] for r in read_records(manifest)]
    assert sorted(names) == [f"s{s}" for s in GOOD_SEEDS]  # every set finished exactly once
    expected = {f"good/{k}": v for k, v in output_files(out).items()}
    assert expected == {k: v for k, v in output_files(reference).items() if k.startswith("good/")}  # byte-identical
    assert partial_files(out) == []


def test_time_limit_on_hanging_set(tree: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    summary = run_batch(tree / "good", tmp_path / "out", workers=2, job_fn=hanging_job, limits=Limits(timeout_s=1.0))
    assert time.monotonic() - t0 < 20
    assert summary.counts == {STATUS_TIMEOUT: len(GOOD)}
    assert all("time limit: killed after 1 s" in reason for _, _, reason in summary.failures)
    assert multiprocessing.active_children() == []
    assert "timeout: time limit" in (tmp_path / "out" / "s2" / "log.txt").read_text()


def test_memory_cap(tree: Path, tmp_path: Path) -> None:
    summary = run_batch(tree / "good", tmp_path / "out", workers=1, job_fn=greedy_job, limits=Limits(memory_mb=1500))
    assert summary.counts == {STATUS_OOM: len(GOOD)}
    assert all("--memory-mb 1500" in reason for _, _, reason in summary.failures)


def test_cli(tree: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    report = tmp_path / "batch.json"
    # nothing left to do, but the sets that failed before are still failed: exit 1, and they are listed
    assert main(["batch", str(tree), "-o", str(out), "-q", "--json", str(report)]) == 1
    assert f"{len(BAD_SETS)} of them before and not redone (--retry-failed redoes them)" in capsys.readouterr().err
    data = json.loads(report.read_text())
    assert data["skipped"] == len(GOOD) and data["ran"] == 0 and data["total"] == len(ALL_SETS)
    assert data["failed"] == data["failed_before"] == len(BAD_SETS)
    assert sorted(f["set"] for f in data["failures"]) == sorted(BAD_SETS)
    assert main(["batch", str(tree), "-o", str(tree / "good" / "s2" / "a.png")]) == 2
    assert "a.png' is a file" in capsys.readouterr().err


def test_exception_ray_missing(monkeypatch: pytest.MonkeyPatch, tree: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'stitch-toolkit\[ray\]'"):
        make_backend("ray", 1)
    assert main(["batch", str(tree / "good"), "-o", str(tmp_path / "o"), "--backend", "ray"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: the ray backend needs Ray: pip install 'stitch-toolkit[ray]'"]
    with pytest.raises(ConfigError, match="backend='spark'"):
        make_backend("spark", 1)


def test_out_inside_root_is_not_a_set(tree: Path, tmp_path: Path) -> None:
    root = tmp_path / "in"
    shutil.copytree(tree / "bad_one", root / "bad_one")
    (root / "bad_empty").mkdir()
    first = run_batch(root, root / "out", workers=1)
    again = run_batch(root, root / "out", workers=1)
    assert first.total == again.total == 2 and again.skipped == 0 and again.failed_before == 2


def test_cli_run_options_reach_the_sets(tree: Path, tmp_path: Path) -> None:
    """`stitch run`'s options are batch options too (the same click options), applied to every set."""
    from stitch.cli.batch_cmd import batch
    from stitch.cli.main import run_cmd
    from stitch.cli.panorama_options import PANORAMA_OPTION_NAMES

    assert len(PANORAMA_OPTION_NAMES) == 25
    assert set(PANORAMA_OPTION_NAMES) <= {p.name for p in run_cmd.params} & {p.name for p in batch.params}
    out = tmp_path / "out"
    assert main(["batch", str(tree / "good"), "-o", str(out), "-q", "--projection", "cylindrical", "--seed", "3"]) == 0
    for seed in GOOD_SEEDS:
        summary = json.loads((out / f"s{seed}" / "summary.json").read_text())
        assert summary["projection"] == ("plane" if seed == GOOD_SEEDS[0] else "cylindrical")  # stitch.toml wins
    assert main(["batch", str(tree / "good"), "-o", str(out), "--no-crop", "--crop", "rect"]) == 2


def test_out_above_root_and_limits_out_of_range_are_refused(tmp_path: Path) -> None:
    """-o holding the input folder would write set outputs among the photos; limits past what the OS takes."""
    from stitch.batch.run import check_out

    root = tmp_path / "photos"
    root.mkdir()
    with pytest.raises(ConfigError, match="contains the input folder"):
        check_out(root, tmp_path)
    assert check_out(root, tmp_path / "out") == []
    with pytest.raises(ConfigError, match="timeout=inf"):
        Limits(timeout_s=float("inf")).check()
    with pytest.raises(ConfigError, match="memory_mb="):
        Limits(memory_mb=2 ** 60).check()


def test_typo_in_stitch_toml_keeps_the_last_good_panorama(tmp_path: Path) -> None:
    """A set that stitched, then a typo in its stitch.toml: the set fails with the reason, and its earlier
    panorama, thumbnail and summary stay (the options are checked before any output is touched)."""
    root, out = tmp_path / "in", tmp_path / "out"
    write_pair(root / "s", GOOD_SEEDS[1])
    assert run_batch(root, out, workers=1).failed == 0
    before = (out / "s" / "panorama.jpg").read_bytes()
    (root / "s" / "stitch.toml").write_text('projecton = "plane"\n')
    again = run_batch(root, out, workers=1)
    record = {r["name"]: r for r in latest_records(out / MANIFEST_NAME)}["s"]
    assert again.failed == 1 and record["status"] == STATUS_FAILED and "projecton" in record["reason"]
    assert (out / "s" / "panorama.jpg").read_bytes() == before
    assert (out / "s" / "summary.json").is_file() and "projecton" in (out / "s" / "log.txt").read_text()


def test_interrupted_batch_still_writes_the_index(tmp_path: Path) -> None:
    """Ctrl-C after the first finished set: the index is written, with that set on it."""
    root, out = tmp_path / "in", tmp_path / "out"
    for seed in GOOD_SEEDS:
        write_pair(root / f"s{seed}", seed)

    def interrupt(name: str, result: object, done: int, total: int) -> None:
        if result is not None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(root, out, workers=1, on_set=interrupt)
    index = (out / "index.html").read_text()
    assert "s2" in index and len(list(latest_records(out / MANIFEST_NAME))) == 1


def test_stitch_toml_keys_are_the_run_options(tmp_path: Path) -> None:
    """stitch.toml takes `stitch run`'s option names ('_' or '-', the CLI's units), mapped as the flags are; a fixed,
    unknown or contradicting key fails the set, naming the file and the key."""
    batch_options = JobOptions(stitch={"projection": "plane", "crop": "rect"}, timelapse=str(tmp_path / "tl"))
    spec = SetSpec("s", tmp_path, (), {"max_canvas_mp": 2, "no_crop": True, "wave-correct": "none"})
    assert set_options(spec, batch_options) == {"projection": "plane", "crop": "none", "max_canvas_pixels": 2_000_000,
                                                "wave_correct": "none", "workers": 1,
                                                "timelapse": str(tmp_path / "tl" / "s")}
    for overrides, message in (
            ({"projecton": "plane"}, "unknown option 'projecton' (did you mean 'projection'?); valid: preset, "),
            ({"timelapse": "x"}, "'timelapse' cannot be set per set (stitch batch --timelapse DIR writes"),
            ({"workers": 2}, "'workers' cannot be set per set (each set runs on one thread)"),
            ({"crop": "rect", "no-crop": True}, "no_crop=True contradicts crop='rect'"),
            ({"max_canvas_mp": 0}, "max_canvas_mp=0: must be a positive number of megapixels")):
        with pytest.raises(ConfigError) as err:
            set_options(SetSpec("s", tmp_path, (), overrides), batch_options)
        assert str(err.value).startswith(f"{tmp_path / 'stitch.toml'}: ") and message in str(err.value)


def test_mask_dir_timelapse_and_debug_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--mask-dir (a folder laid out like ROOT), --timelapse and --debug-dir (DIR/<set>/) on the local backend;
    a changed mask redoes its set alone; folders that would mix with the inputs are refused before any set."""
    root, out, masks, frames, debug = (tmp_path / n for n in ("in", "out", "masks", "frames", "debug"))
    for seed in GOOD_SEEDS:
        write_pair(root / f"s{seed}", seed)
        (masks / f"s{seed}").mkdir(parents=True)
    cv2.imwrite(str(masks / "s2" / "a.png"), np.zeros((200, 280), np.uint8))  # masks out the whole of s2/a.png
    cv2.imwrite(str(masks / "s3" / "zz.png"), np.full((200, 280), 255, np.uint8))  # the mask of no photo
    argv = ["batch", str(root), "-o", str(out), "-q", "--preset", "fast", "--mask-dir", str(masks),
            "--timelapse", str(frames), "--debug-dir", str(debug), "--json", str(tmp_path / "b.json")]
    assert main(argv) == 1
    records = {r["name"]: r for r in latest_records(out / MANIFEST_NAME)}
    assert records["s2"]["status"] == STATUS_FAILED
    assert "mask of a.png: masks out the whole image" in records["s2"]["reason"]
    assert records["s3"]["status"] == STATUS_OK
    unused = f"{masks}: no photo of set s3 matches the mask file(s) zz.png (the mask of a.jpg is a.png)"
    assert records["s3"]["warnings"] == [unused]
    summary = json.loads((out / "s3" / "summary.json").read_text())
    assert summary["timelapse"] == [str(frames / "s3" / "0000_a.png"), str(frames / "s3" / "0001_b.png")]
    assert sorted(p.name for p in (frames / "s3").iterdir()) == ["0000_a.png", "0001_b.png"]
    assert cv2.imread(summary["timelapse"][1]).shape[:2] == (summary["size"][1], summary["size"][0])
    assert (debug / "s3" / "matches" / "a--b.jpg").is_file() and (debug / "s3" / "result_seams.jpg").is_file()
    assert not (frames / "s2").exists()
    cv2.imwrite(str(masks / "s2" / "a.png"), np.full((200, 280), 255, np.uint8))  # now the whole image may be used
    assert main(argv) == 0
    again = json.loads((tmp_path / "b.json").read_text())
    assert again["ran"] == 1 and again["skipped"] == 1 and again["counts"]["ok"] == 1
    assert sorted(p.name for p in (frames / "s2").iterdir()) == ["0000_a.png", "0001_b.png"]
    capsys.readouterr()
    for flags, message in ((["--timelapse", str(root / "s2" / "tl")], "--timelapse lies inside the input folder"),
                           (["--debug-dir", str(tmp_path)], "--debug-dir must not be the input folder"),
                           (["--mask-dir", str(tmp_path / "none")], "mask folder not found (--mask-dir)")):
        assert main(["batch", str(root), "-o", str(tmp_path / "out2"), *flags]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
