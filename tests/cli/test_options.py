"""stitch.cli.options / console: the shared options behave the same in every command."""

from __future__ import annotations

import json

import pytest
from stitch.cli.main import main

COMMANDS_WITH_SEED = (["run", "data/samples/pano3", "-o", "x.jpg"],
                      ["compare", "a.jpg", "b.jpg", "--report", "r.html"],
                      ["bench", "homography", "nowhere"],
                      ["bench", "synthetic", "nowhere"])


def one_error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("argv", COMMANDS_WITH_SEED)
def test_negative_seed_is_a_usage_error(argv, capsys):
    assert main(argv + ["--seed", "-3"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--seed" in line and "-3" in line


@pytest.mark.parametrize("argv", [["run", "data/samples/pano3", "-o", "x.jpg"],
                                  ["bench", "homography", "nowhere"],
                                  ["compare", "a.jpg", "b.jpg", "--report", "r.html"]])
def test_json_into_a_missing_or_readonly_folder_fails_first(argv, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        target = ro / "s.json"
        import os
        if os.access(ro, os.W_OK):  # root ignores permission bits
            target = tmp_path / "s.json" / "x"  # a path below a file is never writable
            (tmp_path / "s.json").write_text("{}")
        assert main(argv + ["--json", str(target)]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "--json" in line and "cannot write" in line
    finally:
        ro.chmod(0o700)


def test_run_json_to_stdout_and_file(tmp_path, capsys):
    out = tmp_path / "p.png"
    assert main(["run", "data/samples/pano3", "-o", str(out), "--json", "-", "--workers", "1", "-q"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["output"] == str(out) and len(doc["kept"]) == 3
    assert main(["run", "data/samples/pano3", "-o", str(out), "--json", str(tmp_path / "s.json"), "-q",
                 "--workers", "1"]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["size"] == doc["size"]


def test_compare_report_must_be_html(tmp_path, capsys):
    assert main(["compare", "a.jpg", "b.jpg", "--report", str(tmp_path / "x.gif")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "x.gif" in line and ".html" in line
    assert not (tmp_path / "x.gif").exists()
