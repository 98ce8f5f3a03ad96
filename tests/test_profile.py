"""stitch.profile: exclusive section times on a fake clock, threads, and ``stitch run --profile``."""

from __future__ import annotations

import itertools
import json
import threading

import pytest

from stitch import profile
from stitch.errors import StitchError


@pytest.fixture
def clock(monkeypatch):
    """perf_counter returns 0, 1, 2, ... (one tick per call), shared by every thread."""
    ticks = itertools.count()
    lock = threading.Lock()

    def now() -> float:
        with lock:
            return float(next(ticks))

    monkeypatch.setattr(profile.time, "perf_counter", now)


def test_shift(clock):
    """A section's time excludes the sections inside it: outer [1, 6] holds inner [2, 3] and [4, 5]."""
    with profile.recording() as prof, profile.section("outer"):  # recording starts at 0, outer at 1
        with profile.section("pair: inner"):  # start 2, end 3: 1 s
            pass
        with profile.section("pair: inner"):  # start 4, end 5: 1 s
            pass
    # outer ends at 6: 5 s in all, 2 s inside -> 3 s exclusive; the recording ends at 7
    assert prof.seconds == {"outer": 3.0, "pair: inner": 2.0}
    assert prof.calls == {"outer": 1, "pair: inner": 2}
    assert prof.wall_s == 7.0
    doc = prof.to_dict({"blend": 0.5})
    assert [r["name"] for r in doc["stages"]] == ["outer", profile.UNMARKED]
    assert doc["stages"][1]["seconds"] == 4.0  # the wall time in no stage
    assert doc["pair_search"] == [{"name": "pair: inner", "seconds": 2.0, "calls": 2, "share": 1.0}]
    assert doc["compositing"] == {"blend": 0.5}


def test_smoke_inactive_records_nothing():
    @profile.profiled("pair: matching")
    def f(x):
        return x + 1

    assert f(1) == 2
    with profile.recording() as prof:
        assert f(2) == 3
    assert f(3) == 4
    assert prof.calls == {"pair: matching": 1}


def test_threads_add_up(clock):
    with profile.recording() as prof:
        def one():
            with profile.section("pair: detection"):
                pass
        threads = [threading.Thread(target=one) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert prof.calls == {"pair: detection": 3}
    assert prof.seconds["pair: detection"] >= 3.0  # each call spans at least one tick of the shared clock


def test_exception_one_recording_at_a_time():
    with profile.recording(), pytest.raises(StitchError, match="already being recorded"), profile.recording():
        pass


def test_cli_profile(tmp_path, samples_dir):
    from click.testing import CliRunner
    from stitch.cli.main import cli

    out = tmp_path / "prof.json"
    r = CliRunner().invoke(cli, ["run", str(samples_dir / "pano3"), "-o", str(tmp_path / "p.jpg"), "--profile",
                                 str(out), "-q"])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    stages = {s["name"]: s["seconds"] for s in doc["stages"]}
    assert {"read", "pair search", "camera model", "placement check", "compositing", "write"} <= set(stages)
    assert sum(stages.values()) == pytest.approx(doc["wall_s"], abs=0.01)
    steps = {s["name"] for s in doc["pair_search"]}
    assert {"pair: detection", "pair: matching", "pair: estimation", "pair: scoring"} <= steps
    assert set(doc["compositing"]) >= {"exposure", "seams", "blend", "crop"}
