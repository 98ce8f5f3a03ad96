"""stitch.bench.extreme: the synthetic extreme views (known geometry), one method run, and `stitch bench extreme`."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from stitch.cli.bench_cmd import bench as bench_group

from stitch.bench.extreme import (
    EXTREME_METHOD_CHOICES,
    eval_grid,
    plane_view,
    run_extreme_bench,
    run_method,
    synthetic_pairs,
    zoom_view,
)
from stitch.errors import ConfigError
from stitch.geometry import project


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
    res = CliRunner().invoke(bench_group, ["extreme", str(photo_root), "--no-real", "--photos", "1", "--limit", "1",
                                           "--method", "SIFT+RANSAC", "--json", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["summary"][0]["method"] == "SIFT+RANSAC" and doc["rows"][0]["ok"] is True
    bad = CliRunner().invoke(bench_group, ["extreme", str(photo_root), "--no-real", "--method", "bogus"])
    assert bad.exit_code != 0 and "bogus" in bad.output and "Traceback" not in bad.output


def test_exception(tmp_path):
    assert "pipeline" in EXTREME_METHOD_CHOICES and "source:synthesis" in EXTREME_METHOD_CHOICES
    with pytest.raises(ConfigError, match="panoramas"):
        run_extreme_bench(tmp_path, real=False)
    with pytest.raises(ConfigError, match="homography_gt"):
        run_extreme_bench(tmp_path, synthetic=False)
