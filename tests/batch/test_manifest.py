"""The manifest: keys follow inputs and options; torn last lines are cut; one writer at a time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stitch.batch.jobs import STATUS_FAILED, STATUS_OK, STATUS_TIMEOUT, JobOptions, SetResult
from stitch.batch.manifest import MANIFEST_NAME, Manifest, latest_records, set_key
from stitch.batch.sets import SetSpec
from stitch.errors import StitchError


def _spec(tmp_path: Path, **kw) -> SetSpec:
    files = []
    for name in ("a.jpg", "b.jpg"):
        p = tmp_path / name
        if not p.exists():
            p.write_bytes(name.encode() * 10)
        files.append(p)
    return SetSpec("s", tmp_path, tuple(files), **kw)


@pytest.mark.parametrize("mode", ["stat", "content"])
def test_key_follows_inputs_and_options(tmp_path: Path, mode: str) -> None:
    spec = _spec(tmp_path)
    opts = JobOptions(stitch={"preset": "accurate"})
    key = set_key(spec, opts, mode)
    assert set_key(spec, opts, mode) == key and len(key) == 32
    assert set_key(spec, JobOptions(stitch={"preset": "fast"}), mode) != key
    assert set_key(_spec(tmp_path, overrides={"seed": 1}), opts, mode) != key
    st = spec.files[0].stat()
    spec.files[0].write_bytes(b"B" * st.st_size)  # same size, new content
    os.utime(spec.files[0], ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime
    assert (set_key(spec, opts, mode) != key) == (mode == "content")
    os.utime(spec.files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert set_key(spec, opts, mode) != key


def test_record_resume_and_torn_tail(tmp_path: Path) -> None:
    with Manifest(tmp_path) as m:
        m.record("k1", SetResult("s1", STATUS_OK, seconds=1.0))
        m.record("k2", SetResult("s2", STATUS_FAILED, "need at least 2 images"))
        m.record("k3", SetResult("s3", STATUS_TIMEOUT, "time limit"))
    path = tmp_path / MANIFEST_NAME
    with open(path, "a") as fh:
        fh.write('{"name": "s4", "key": "k4", "sta')  # a torn write
    with Manifest(tmp_path) as m:
        assert m.torn == 1
        assert m.is_done("s1", "k1") and not m.is_done("s1", "other")
        assert m.is_done("s2", "k2")  # a bad set stays failed
        assert not m.is_done("s3", "k3")  # a resource failure is retried
        assert "s4" not in m.previous
        m.record("k1b", SetResult("s1", STATUS_OK, seconds=2.0))
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)
    latest = list(latest_records(path))
    assert [r["name"] for r in latest] == ["s1", "s2", "s3"] and latest[0]["key"] == "k1b"


def test_exception_second_writer(tmp_path: Path) -> None:
    with Manifest(tmp_path), pytest.raises(StitchError, match="another stitch batch"), Manifest(tmp_path):
        pass
