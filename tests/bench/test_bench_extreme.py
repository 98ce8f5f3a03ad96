"""stitch.bench.extreme: the synthetic extreme views (known geometry), one method run, and `stitch bench extreme`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from stitch.cli.bench_cmd import bench as bench_group

from stitch.bench.extreme import (
    EXTREME_METHOD_CHOICES,
    REAL_TILTS_DEG,
    SYNTH_MAX_SIDE,
    eval_grid,
    plane_view,
    real_tilt_pairs,
    run_extreme_bench,
    run_method,
    synthetic_pairs,
    zoom_view,
)
from stitch.bench.metrics import homography_error
from stitch.errors import ConfigError
from stitch.geometry import project
from stitch.imaging import resize_max_side
from stitch.io import read_image

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture
def photo_root(tmp_path, sample_pair):
    """A data root with panoramas/one/a.png (a sample image) and no homography_gt."""
    d = tmp_path / "panoramas" / "one"
    d.mkdir(parents=True)
    cv2.imwrite(str(d / "a.png"), sample_pair("perspective")[0])
    return tmp_path


def test_zoom_view():
    """The zoom centre lands on the view centre and lengths grow by the zoom."""
    img = np.zeros((100, 200, 3), np.uint8)
    view, H = zoom_view(img, 5.0, 30.0, (80.0, 40.0))
    assert view.shape == img.shape
    np.testing.assert_allclose(project(H, np.array([[80.0, 40.0]])), [[100.0, 50.0]], atol=1e-9)
    a, b = project(H, np.array([[80.0, 40.0], [81.0, 40.0]]))
    assert np.linalg.norm(b - a) == pytest.approx(5.0)


@pytest.mark.parametrize("tilt", [0.0, 60.0, 80.0])
def test_plane_view(tilt):
    """A plane turned by ``tilt``: foreshortening 1/cos(tilt) along the tilt direction, the view fits the image."""
    img = np.zeros((300, 400, 3), np.uint8)
    view, H = plane_view(img, tilt, 0.0, 0.0)  # axis along x: y is foreshortened
    q = project(H, np.array([[0, 0], [400, 0], [400, 300], [0, 300]], float))
    assert q.min() > -1e-6 and max(view.shape[:2]) <= 401
    ext = q.max(0) - q.min(0)
    if tilt == 0.0:
        assert ext[0] / ext[1] == pytest.approx(400 / 300)
    else:  # a strong tilt squeezes y by about cos(tilt) (perspective makes it a trapezoid)
        assert ext[1] / ext[0] < 0.75 * math.cos(math.radians(tilt)) * 4


def test_eval_grid():
    H = np.array([[2.0, 0, -100], [0, 2.0, -50], [0, 0, 1]])
    sp, dp = eval_grid(H, (400, 300), (400, 300))
    np.testing.assert_allclose(project(H, sp), dp, atol=1e-9)
    assert len(sp) == 25


def test_run_method(photo_root):
    """SIFT+RANSAC and the pipeline restricted to the features source on the synthetic pairs of one photo."""
    pairs = synthetic_pairs(photo_root, 1, 0)
    assert [p.group for p in pairs] == ["tilt", "tilt", "tilt", "zoom"]
    tilt60 = pairs[0]
    r = run_method("source:features", tilt60, 0)
    assert r.error < 2.0 and r.ok and r.seconds > 0 and r.peak_mb > 0 and set(r.source_seconds) == {"features"}
    r = run_method("SIFT+RANSAC", tilt60, 0)
    assert r.error < 10.0 and r.source_seconds == {}


def test_cli(photo_root, tmp_path):
    out = tmp_path / "x.json"
    res = CliRunner().invoke(bench_group, ["extreme", str(photo_root), "--no-real", "--no-real-tilt", "--photos", "1",
                                           "--limit", "1", "--method", "SIFT+RANSAC", "--json", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["summary"][0]["method"] == "SIFT+RANSAC" and doc["rows"][0]["ok"] is True
    bad = CliRunner().invoke(bench_group, ["extreme", str(photo_root), "--no-real", "--no-real-tilt", "--method",
                                           "bogus"])
    assert bad.exit_code != 0 and "bogus" in bad.output and "Traceback" not in bad.output


def test_exception(tmp_path):
    assert "pipeline" in EXTREME_METHOD_CHOICES and "source:synthesis" in EXTREME_METHOD_CHOICES
    with pytest.raises(ConfigError, match="panoramas"):
        run_extreme_bench(tmp_path, real=False)
    with pytest.raises(ConfigError, match="homography_gt"):
        run_extreme_bench(tmp_path, synthetic=False)
    with pytest.raises(ConfigError, match="homography_gt"):
        run_extreme_bench(tmp_path, synthetic=False, real=False)  # the real+tilt group needs it too


def test_real_tilt_pairs():
    """Reliable real pairs, dst re-seen at 60/70 degrees: H is the tilt after the (shrunk) published matrix."""
    if not (SHARED_DATA / "homography_gt").is_dir():
        pytest.skip(f"{SHARED_DATA / 'homography_gt'} not present")
    pairs = real_tilt_pairs(SHARED_DATA, 0)
    names = [p.name for p in pairs]
    assert len(pairs) == 28 and {p.group for p in pairs} == {"real+tilt"}
    assert "oxford graf 1->2 tilt-60" in names and "homogr adam tilt-60" in names
    assert not any(n.startswith(("oxford wall", "oxford bark")) or "1->6" in n for n in names)  # GT caveat out
    assert {n.rsplit("-", 1)[1] for n in names} == {f"{t:g}" for t in REAL_TILTS_DEG}
    ubc = next(p for p in pairs if p.name == "oxford ubc 1->2 tilt-60")
    assert max(ubc.src.shape[:2]) <= SYNTH_MAX_SIDE and max(ubc.dst.shape[:2]) <= SYNTH_MAX_SIDE + 2
    # ubc 1->2 is the identity: the tilted view is the shrunk photo warped by the pair's H_gt itself
    photo, _ = resize_max_side(read_image(ubc.gt.src), SYNTH_MAX_SIDE)
    again = cv2.warpPerspective(photo, ubc.gt.H_gt, (ubc.dst.shape[1], ubc.dst.shape[0]), flags=cv2.INTER_AREA)
    inner = (slice(100, -100), slice(100, -100))
    assert np.abs(again[inner].astype(int) - ubc.dst[inner].astype(int)).mean() < 6.0
    assert homography_error(ubc.gt, ubc.gt.H_gt, (ubc.src.shape[1], ubc.src.shape[0])) < 1e-6
    r = run_method("SIFT+RANSAC", ubc, 0)
    assert r.ok and r.error < 2.0
