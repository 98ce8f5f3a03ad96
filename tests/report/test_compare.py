"""stitch.report / `stitch compare`: JSON rows and schema, accuracy with ground truth, a self-contained HTML
page (checked statically and in headless Chromium), CLI exit codes and one-line errors."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from stitch.cli.compare_cmd import compare

from stitch.bench import datasets, metrics
from stitch.errors import ConfigError
from stitch.homography.config import SelectConfig
from stitch.report.compare import (
    SCHEMA_VERSION,
    _deep_refiner,
    check_winners,
    compare_folder,
    compare_homographies,
    jsonable,
    parse_methods,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PAIR = "perspective"
ROW_KEYS = {
    "id",
    "kind",
    "source",
    "method",
    "family",
    "params",
    "trial",
    "H",
    "matches",
    "inliers",
    "inlier_ratio",
    "estimator_inliers",
    "transfer_rms",
    "score",
    "parts",
    "rejected",
    "seconds",
    "error",
    "note",
}
PART_KEYS = {"photometric", "ncc", "gc", "overlap", "support", "inlier_mass", "inlier_rms"}
#: Chromium flags that keep a headless run from phoning home; the host rules make any request fail.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--hide-scrollbars",
]


@pytest.fixture(scope="module")
def pair_dir(samples_dir: Path) -> Path:
    return samples_dir / "pairs" / PAIR


@pytest.fixture(scope="module")
def written(pair_dir: Path, tmp_path_factory) -> tuple:
    """One comparison with ground truth on a sample pair, written as HTML and JSON: (report, html, json)."""
    out = tmp_path_factory.mktemp("report")
    src, dst = next(pair_dir.glob("src.*")), next(pair_dir.glob("dst.*"))
    rep = compare_homographies(src, dst, gt=pair_dir / "H.txt")
    return rep, rep.to_html(out / "report.html"), rep.to_json(out / "report.json")


def _strict_json(path: Path) -> dict:
    def bad(token: str):
        raise AssertionError(f"non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=bad)


# --- the report object and its JSON ------------------------------------------------------------------


def test_smoke(written):
    """One row per candidate the pipeline scored, plus the pipeline, the refiners and both baselines."""
    rep, _, json_path = written
    doc = _strict_json(json_path)
    assert doc["schema_version"] == SCHEMA_VERSION == 1 and doc["kind"] == "stitch.compare"
    assert len(doc["pairs"]) == 1
    p = doc["pairs"][0]
    rows = p["rows"]
    kinds = [r["kind"] for r in rows]
    cfg = SelectConfig.from_options()
    n_cands = sum(len(lv.specs) for lv in cfg.levels if lv.name in p["pipeline"]["levels_tried"])
    assert kinds.count("candidate") == n_cands == 10
    assert kinds.count("pipeline") == 1 and kinds.count("refined") == 2  # lsq, ecc
    assert sorted(r["method"] for r in rows if r["kind"] == "baseline") == ["SIFT+MAGSAC", "SIFT+RANSAC"]
    assert len(rows) == n_cands + 1 + 2 + 2
    assert [r["id"] for r in rows] == list(range(len(rows)))
    for r in rows:
        assert set(r) == ROW_KEYS
        assert r["source"] == {"candidate": "features", "pipeline": "features", "refined": "refiner",
                               "baseline": "baseline"}[r["kind"]]
        assert set(r["parts"]) == PART_KEYS
        assert r["seconds"] > 0 and 0 < r["inliers"] <= r["matches"]
        assert r["inlier_ratio"] == pytest.approx(r["inliers"] / r["matches"])
        assert np.asarray(r["H"]).shape == (3, 3)
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)  # best first
    trials = sorted(r["trial"] for r in rows if r["kind"] == "candidate")
    assert trials == list(range(n_cands))  # every estimation trial, in generation order
    win = rows[p["winner"]]
    assert win["kind"] == "pipeline" and p["runner_up"] is not None and p["runner_up"] != p["winner"]
    runner = rows[p["runner_up"]]
    assert runner["kind"] in ("candidate", "baseline", "refined")
    # the runner-up is the best row other than the pipeline's and its winning candidate's whose matrix differs
    # from the winner's (never "leads by 0.0000" against the winner's own refinement): nothing else above it
    from stitch.geometry import corner_error
    from stitch.report.compare import SAME_MATRIX_PX

    def differs(r):
        return corner_error(np.asarray(r["H"]), np.asarray(win["H"]), 640, 480) > SAME_MATRIX_PX

    others = [r for i, r in enumerate(rows) if i != p["winner"] and r["note"].split(",")[0] != "winning candidate"
              and differs(r)]
    assert differs(runner) and runner["score"] == max(r["score"] for r in others)
    for r in rows:  # every refined row says what the pipeline's own chain did with that refiner, and why
        if r["kind"] == "refined":
            assert "in the pipeline's chain:" in r["note"] or "would not keep it" in r["note"], r["note"]
    assert np.allclose(win["H"], rep.winner_row.H)
    assert p["src"]["width"] == 640 and p["dst"]["height"] == 480
    assert set(p["timings"]) >= {"pipeline", "candidates", "refiners", "baselines", "total"}


def test_shift(written, pair_dir):
    """Known answer: with ground truth the winner's corner error is < 1 px (measured 0.02 px) and reported."""
    rep, _, json_path = written
    p = _strict_json(json_path)["pairs"][0]
    gt = p["ground_truth"]
    assert gt["error_kind"] == "corner"
    assert gt["winner_error"] < 1.0 and gt["winner_error"] == pytest.approx(p["rows"][p["winner"]]["error"])
    assert gt["winner_is_best"] and gt["winner_error"] <= gt["best_error"] + 1.0
    assert np.allclose(gt["H"], np.loadtxt(pair_dir / "H.txt"))
    assert all(isinstance(r["error"], float) for r in p["rows"])  # every row has an error
    # the reported error is bench's definition (corner error of the src image)
    w = rep.winner_row
    pair = datasets.GTPair("t", "t", Path("a"), Path("b"), np.loadtxt(pair_dir / "H.txt"))
    assert w.error == pytest.approx(metrics.homography_error(pair, w.H, (640, 480)))


def test_json_encoding():
    """inf/nan never reach the file as bare literals."""
    enc = jsonable({"a": math.inf, "b": -math.inf, "c": math.nan, "d": np.float32(1.5), "e": np.arange(2)})
    assert enc == {"a": "inf", "b": "-inf", "c": None, "d": 1.5, "e": [0, 1]}
    json.dumps(enc, allow_nan=False)


def test_points_gt(pair_dir):
    """Annotated points switch the error to the point error; estimator names filter the candidate rows; the
    optional deep refiner is a note when stitch.deep is missing."""
    H = np.loadtxt(pair_dir / "H.txt")
    pts = np.array([[100.0, 100.0], [500.0, 120.0], [320.0, 400.0]])
    dst_pts = cv2.perspectiveTransform(pts[None], H)[0]
    src = cv2.imread(str(next(pair_dir.glob("src.*"))))
    dst = cv2.imread(str(next(pair_dir.glob("dst.*"))))
    rep = compare_homographies(src, dst, gt=H, gt_points=(pts, dst_pts), methods="RHO", include_deep=True)
    assert rep.gt.error_kind == "points" and rep.gt_summary()["points"] == 3
    assert rep.winner_row.error < 1.0
    assert rep.src_name == "src" and rep.src_path is None
    # only RHO candidates (and the winning candidate, kept for reference)
    assert {r.method for r in rep.rows if r.kind == "candidate" and "winning" not in r.note} == {"RHO"}
    deep, _ = _deep_refiner()
    if deep is None:
        assert {r.kind for r in rep.rows} == {"pipeline", "candidate"}
        assert any("deep refiner skipped: stitch.deep.refine_deep is not available" in n for n in rep.notes)
    else:
        assert [r.method for r in rep.rows if r.kind == "refined"] == ["winner+deep"]


def test_exception(pair_dir):
    src = next(pair_dir.glob("src.*"))
    with pytest.raises(ConfigError, match="methods"):
        parse_methods("candidates,bogus")
    with pytest.raises(ConfigError, match="gt"):
        compare_homographies(src, src, gt=np.eye(2))
    with pytest.raises(ConfigError, match="gt_points"):
        compare_homographies(src, src, gt_points=(np.zeros((3, 2)), np.zeros((3, 2))))
    assert parse_methods("sift+magsac, ECC", include_deep=True) == ["SIFT+MAGSAC", "ecc", "deep"]


# --- the HTML page -----------------------------------------------------------------------------------


def test_html_self_contained(written):
    rep, html_path, _ = written
    text = html_path.read_text()
    assert not re.search(r"https?://", text), "the page names an http(s) URL"
    refs = re.findall(
        r"""(?:src|href|action|poster|data)\s*=\s*["']([^"']*)["']""", text, flags=re.IGNORECASE
    )
    assert refs, "no references found: the regex is broken"
    assert all(r.startswith(("data:", "#")) for r in refs), [
        r[:40] for r in refs if not r.startswith("data:")
    ]
    assert not re.search(r"""src\s*=\s*["']/""", text) and "url(" not in text and "@import" not in text
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    n_img = len(re.findall(r"<img\b", text))
    assert n_img == len(re.findall(r'<img alt="[^"]*" src="data:image/(?:png|jpeg);base64,', text))
    assert n_img >= 4 * 5 + 3  # 4 pictures x (top 3 + 2 baselines) + 3 plots
    assert len(re.findall(r'<tr class="[^"]*" data-row="\d+"', text)) == len(rep.rows)
    assert html_path.stat().st_size < 5e6  # downscaled pictures keep it at a few MB
    assert '<pre id="H-0-win">' in text  # the winning matrix, copyable


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip(
            "headless Chromium not found (Debian: apt-get install -y chromium); the page is still "
            "checked statically by test_html_self_contained"
        )
    return exe


def _page_requests(net_log: Path) -> list[str]:
    """http(s)/ws(s) URLs the *page* asked for, from a Chromium net log (browser-internal jobs have the
    initiator 'not an origin'; a file:// page's requests have the initiator 'null')."""
    d = json.loads(net_log.read_text())
    start = d["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    out = []
    for e in d["events"]:
        p = e.get("params", {})
        page_job = e["type"] == start and "url" in p and p.get("initiator") != "not an origin"
        if page_job and re.match(r"(https?|wss?|ftp)://", p["url"]):
            out.append(p["url"])
    return out


def _run_chromium(exe: str, page: Path, tmp: Path, name: str, extra: list[str]) -> tuple[str, Path]:
    net_log = tmp / f"{name}-net.json"
    cmd = [
        exe,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp / (name + '-profile')}",
        f"--log-net-log={net_log}",
        "--virtual-time-budget=5000",
        *extra,
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, net_log


def test_chromium_renders(written, tmp_path):
    """Headless Chromium: a table row per candidate, every image decodes, no request leaves the file,
    and a screenshot is saved."""
    exe = _chromium()
    rep, html_path, _ = written
    shot = tmp_path / "shot.png"
    dom, net_log = _run_chromium(
        exe, html_path, tmp_path, "report", ["--window-size=1440,2200", f"--screenshot={shot}"]
    )
    rows = re.findall(r'<tr class="[^"]*" data-row="(\d+)"', dom)
    assert sorted(map(int, rows)) == list(range(len(rep.rows)))
    decoded = re.search(r'data-decoded="(\d+)"', dom)
    total = re.search(r'data-images="(\d+)"', dom)
    assert decoded and total, "the page script did not run"
    assert int(decoded.group(1)) == int(total.group(1)) >= 23
    assert _page_requests(net_log) == []
    img = cv2.imread(str(shot))
    assert shot.stat().st_size > 50_000 and img is not None and img.shape[:2] == (2200, 1440)
    assert float(img.std()) > 20  # not a blank page
    # the request detector works: a page with external references is caught
    ctl = tmp_path / "control.html"
    ctl.write_text(
        '<!DOCTYPE html><img src="http://example.com/a.png"><script>fetch("https://example.net/")'
        ".catch(function () {});</script>"
    )
    _, ctl_log = _run_chromium(exe, ctl, tmp_path, "control", [])
    assert set(_page_requests(ctl_log)) >= {"http://example.com/a.png", "https://example.net/"}


# --- the command line --------------------------------------------------------------------------------


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_cli(pair_dir, tmp_path):
    src, dst = str(next(pair_dir.glob("src.*"))), str(next(pair_dir.glob("dst.*")))
    runner = CliRunner()
    out_html, out_json = tmp_path / "sub" / "r.html", tmp_path / "r.json"
    res = runner.invoke(
        compare,
        [
            src,
            dst,
            "--gt",
            str(pair_dir / "H.txt"),
            "--methods",
            "candidates,ecc",
            "--report",
            str(out_html),
            "--json",
            str(out_json),
            "--seed",
            "1",
            "--preset",
            "fast",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "winner" in res.output and "corner error" in res.output
    doc = _strict_json(out_json)
    p = doc["pairs"][0]
    assert p["seed"] == 1 and p["preset"] == "fast" and p["methods"] == ["candidates", "ecc"]
    assert {r["params"]["seed"] for r in p["rows"] if r["kind"] == "candidate"} >= {1}
    assert out_html.stat().st_size > 10_000
    # bad inputs: one line, exit code 1, nothing written
    bad_gt = tmp_path / "bad.txt"
    bad_gt.write_text("1 2 3\n4 5 x\n")
    singular = tmp_path / "singular.txt"
    singular.write_text("1 0 0\n0 0 0\n0 0 1\n")
    cases = {
        "file not found": [src + ".missing", dst],
        "not a numeric 3x3 matrix": [src, dst, "--gt", str(bad_gt)],
        "matrix file not found": [src, dst, "--gt", str(tmp_path / "nope.txt")],
        "singular": [src, dst, "--gt", str(singular)],
        "methods": [src, dst, "--methods", "candidates,bogus"],
        "expected SRC DST": [src],
        "got 3 paths": [src, dst, dst],
        "need SRC DST": [str(REPO_ROOT / "data" / "samples" / "pano3"), "--gt", str(pair_dir / "H.txt")],
    }
    for expected, args in cases.items():
        target = tmp_path / "never.html"
        line = _one_line_error(runner.invoke(compare, [*args, "--report", str(target)]))
        assert expected in line, line
        assert not target.exists()


def test_cli_process_exit(tmp_path):
    """Through the `stitch` entry point (cli.main): exit code 1, one 'error:' line on stderr, no traceback."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "compare",
            "missing_a.jpg",
            "missing_b.jpg",
            "--report",
            str(tmp_path / "r.html"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: missing_a.jpg: file not found"
    assert proc.stdout == "" and not (tmp_path / "r.html").exists()


def test_folder(samples_dir, tmp_path):
    """A panorama folder: one section per overlapping pair; the non-overlapping pair is screened out."""
    res = compare_folder(samples_dir / "pano3", methods="SIFT+MAGSAC", preset="fast")
    pairs = [(r.src_name, r.dst_name) for r in res.reports]
    assert pairs == [("view_1.jpg", "view_2.jpg"), ("view_2.jpg", "view_3.jpg")]
    screened = {(s["src"], s["dst"]): s["accepted"] for s in res.screening}
    assert screened[("view_1.jpg", "view_3.jpg")] is False
    for r in res.reports:
        assert r.winner_row is not None and {x.kind for x in r.rows} == {"pipeline", "candidate", "baseline"}
    html = res.to_html(tmp_path / "f.html").read_text()
    assert html.count('<section id="pair-') == 2 and not re.search(r"https?://", html)
    doc = _strict_json(res.to_json(tmp_path / "f.json"))
    assert len(doc["pairs"]) == 2 and len(doc["screening"]) == 3


def test_folder_screens_as_the_pipeline_does(samples_dir, tmp_path, monkeypatch):
    """compare_folder screens with the panorama's own registration stage: a duplicate photo is dropped (reported,
    never compared), a pair the shortlist skips is reported as such, and the pairs compared are the pipeline's
    accepted edges."""
    from stitch.panorama import pipeline
    from stitch.panorama.config import PanoramaConfig

    folder = tmp_path / "pano"
    shutil.copytree(samples_dir / "pano3", folder)
    shutil.copy(folder / "view_2.jpg", folder / "view_2_copy.jpg")
    from stitch.panorama.graph import Shortlist

    real = pipeline.shortlist
    monkeypatch.setattr(pipeline, "shortlist",
                        lambda works, keys, **kw: Shortlist([p for p in real(works, keys, **kw).pairs if p != (0, 2)], []))
    with pytest.warns(UserWarning, match="dropped view_2_copy.jpg: identical to view_2.jpg"):
        res = compare_folder(folder, methods="SIFT+MAGSAC", preset="fast")
    compared = [(r.src_name, r.dst_name) for r in res.reports]
    assert compared == [("view_1.jpg", "view_2.jpg"), ("view_2.jpg", "view_3.jpg")]
    reasons = {(s["src"], s["dst"]): (s["accepted"], s["reason"]) for s in res.screening}
    assert reasons[("view_2.jpg", "view_2_copy.jpg")] == (
        False, "identical images: view_2_copy.jpg is a duplicate of view_2.jpg (dropped)")
    assert reasons[("view_1.jpg", "view_3.jpg")] == (False, "not shortlisted (few matches in the first pass)")
    assert len(res.screening) == 4 and res.reports[1].dst_path == str(folder / "view_3.jpg")
    paths = sorted(folder.glob("*.jpg"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        screened = pipeline.screen_pairs(paths, PanoramaConfig.from_options(preset="fast"))
        pano_edges = pipeline.register(paths, preset="fast").edges
    assert compared == [(screened.names[e.i], screened.names[e.j]) for e in screened.edges]
    assert compared == [(a, b) for a, b, _, _ in pano_edges]


@pytest.mark.slow
def test_homogr_winner(shared_data):
    """On a real homogr pair with annotated points the winner is within 1 px of the best row."""
    pairs = [p for p in datasets.load_homogr_pairs(shared_data / "homography_gt" / "homogr") if p.name == "adam"]
    if not pairs:
        pytest.skip("homogr/adam not in the shared data")
    (res,) = check_winners(pairs, methods="candidates,lsq,ecc,SIFT+MAGSAC")
    assert res["winner_is_best"] and res["winner_error"] < 2.0


def test_trail_reason_says_why_the_pipeline_did_not_pick_a_better_row():
    from types import SimpleNamespace

    from stitch.report.html import trail_reason

    report = SimpleNamespace(levels_tried=["sift-4000"])
    base = SimpleNamespace(kind="baseline", method="SIFT+MAGSAC", params={})
    far = SimpleNamespace(kind="candidate", method="USAC_MAGSAC", params={"level": "asift"})
    own = SimpleNamespace(kind="candidate", method="RANSAC", params={"level": "sift-4000"})
    assert "baseline SIFT+MAGSAC, which the pipeline does not run" in trail_reason(report, base)
    assert "level asift, which the pipeline did not reach: it stopped after sift-4000" in trail_reason(report, far)
    assert "one of the pipeline's candidates" in trail_reason(report, own)
