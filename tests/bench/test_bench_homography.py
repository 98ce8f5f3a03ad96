"""Tests for stitch.bench (metrics, GT loading, baselines, the benchmark run) and `stitch bench`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from stitch.cli.bench_cmd import bench as bench_group

from stitch.bench import baselines, datasets, metrics
from stitch.bench import homography as bench
from stitch.errors import ConfigError, EstimationError, StitchError
from stitch.geometry import point_error, project
from stitch.io import read_image

INF = math.inf
REPO_ROOT = Path(__file__).resolve().parents[2]
GT_ROOT = REPO_ROOT.parent / "shared" / "data" / "homography_gt"


@pytest.fixture(scope="module")
def gt_root() -> Path:
    if not GT_ROOT.is_dir():
        pytest.skip(f"{GT_ROOT} not present")
    return GT_ROOT


@pytest.fixture(scope="module")
def gt_pairs(gt_root: Path) -> list[datasets.GTPair]:
    return datasets.load_homography_gt(gt_root)


def cand(name: str, H, n_inliers: int, score: float, rejected: str | None = None):
    return SimpleNamespace(
        method=name,
        params={},
        H=H,
        n_inliers=n_inliers,
        score=score,
        rejected=rejected,
        parts={},
        seconds=0.0,
    )


# --- metrics ---------------------------------------------------------------------------------------


def test_ok_at_known_answer():
    errors = [0.0, 1.0, 2.0, INF]
    assert metrics.ok_at(errors, 3) == 0.75
    assert metrics.ok_at(errors, 1) == 0.5  # <= counts
    assert metrics.ok_at(errors, 0.5) == 0.25
    assert metrics.ok_at([INF, float("nan")], 10) == 0.0  # NaN is a failure too
    assert math.isnan(metrics.ok_at([], 3))


def test_auc_known_answer():
    # Curve through (0,0), (0,.25), (1,.5), (2,.75), held at .75 up to t=3:
    # area = 0 + (.25+.5)/2 + (.5+.75)/2 + .75 = 1.75 -> AUC@3 = 1.75 / 3.
    assert metrics.auc_at([0.0, 1.0, 2.0, INF], 3) == pytest.approx(1.75 / 3)
    # t=1.5: 0.375 + (.5 + .5) * .5 / 2... held at .5 from 1 to 1.5 -> (0.375 + 0.25) / 1.5.
    assert metrics.auc_at([0.0, 1.0, 2.0, INF], 1.5) == pytest.approx(0.625 / 1.5)
    assert metrics.auc_at([0.0, 0.0], 5) == pytest.approx(1.0)
    assert metrics.auc_at([INF, INF], 5) == 0.0
    # one error of 1 px: linear from (0,0) to (1,1), then flat: (0.5 + 9) / 10.
    assert metrics.auc_at([1.0], 10) == pytest.approx(0.95)
    assert metrics.auc_at([2.0, 1.0, 0.0, INF], 3) == metrics.auc_at([0.0, 1.0, 2.0, INF], 3)  # order-free
    assert math.isnan(metrics.auc_at([], 3))
    with pytest.raises(ConfigError, match="threshold"):
        metrics.auc_at([1.0], 0)


def test_summarize_known_answer():
    s = metrics.summarize("m", [0.0, 1.0, 2.0, INF], [1.0, 2.0, 3.0, float("nan")])
    assert s.pairs == 4
    assert s.ok == {3.0: 0.75, 5.0: 0.75, 10.0: 0.75}
    assert s.auc[3.0] == pytest.approx(1.75 / 3)
    assert s.median_error == 1.5
    assert s.median_seconds == 2.0 and s.total_seconds == 6.0  # NaN = not timed, left out
    assert metrics.summarize("m", [INF, INF, 1.0], [0, 0, 0]).median_error == INF


def test_corner_error_shift():
    pair = datasets.GTPair("oxford", "x", Path("a"), Path("b"), np.eye(3))
    shift = np.array([[1.0, 0, 3.0], [0, 1, 4.0], [0, 0, 1]])
    assert metrics.homography_error(pair, shift, (640, 480)) == pytest.approx(5.0)
    assert metrics.homography_error(pair, np.eye(3), (640, 480)) == 0.0
    assert metrics.homography_error(pair, None, (640, 480)) == INF
    assert metrics.homography_error(pair, np.zeros((3, 3)), (640, 480)) == INF
    assert metrics.homography_error(pair, np.full((3, 3), np.nan), (640, 480)) == INF
    # with annotated points, the error is measured on those points, not the corners
    pts = np.array([[10.0, 10.0], [20.0, 30.0]])
    pair_pts = datasets.GTPair("homogr", "y", Path("a"), Path("b"), np.eye(3), pts, pts + [3.0, 4.0])
    assert metrics.homography_error(pair_pts, np.eye(3), (640, 480)) == pytest.approx(5.0)
    assert metrics.homography_error(pair_pts, shift, (640, 480)) == pytest.approx(0.0)


def test_selectors_planted():
    H1, H2, H3 = np.eye(3), 2 * np.eye(3), 3 * np.eye(3)
    cands = [
        cand("rej", H3, 500, -INF, rejected="fold-over"),  # most inliers but rejected
        cand("best", H1, 40, 0.9),
        cand("many", H2, 90, 0.5),
        cand("tie", H3, 90, 0.1),  # ties with "many": the earlier one wins
    ]
    assert bench.select_by_score(cands).method == "best"
    assert bench.select_by_inliers(cands).method == "many"
    assert bench.select_by_score([cands[0]]) is None
    assert bench.select_by_inliers([]) is None


def test_regressions_and_ratio():
    R = bench.PairRow
    rows = [
        R("oxford", "a", bench.METHOD_STITCH, 9.0, 2.0),
        R("oxford", "a", baselines.METHOD_SIFT_MAGSAC, 1.0, 1.0),
        R("oxford", "a", baselines.METHOD_SIFT_RANSAC, 4.0, 1.0),
        R("oxford", "b", bench.METHOD_STITCH, 1.0, 4.0),
        R("oxford", "b", baselines.METHOD_SIFT_MAGSAC, 0.5, 1.0),
        R("homogr", "c", bench.METHOD_STITCH, INF, 6.0),
        R("homogr", "c", baselines.METHOD_SIFT_MAGSAC, INF, 1.0),
    ]
    regs = bench.find_regressions(rows)
    assert [(r.subset, r.name) for r in regs] == [("oxford", "a")]
    assert regs[0].baseline_errors == {baselines.METHOD_SIFT_MAGSAC: 1.0}
    assert bench.median_time_ratio(rows) == pytest.approx(4.0)
    assert bench.median_time_ratio(rows[:1]) is None
    summ = bench.summarize_rows(rows)
    assert list(summ) == ["oxford", "homogr", "overall"]
    assert [s.method for s in summ["overall"]] == [
        bench.METHOD_STITCH,
        baselines.METHOD_SIFT_RANSAC,
        baselines.METHOD_SIFT_MAGSAC,
    ]


def test_loader_exception(tmp_path: Path):
    with pytest.raises(StitchError, match=str(tmp_path)):
        datasets.load_homography_gt(tmp_path)
    with pytest.raises(StitchError, match="not found"):
        datasets.load_homography_gt(tmp_path / "missing")


# --- real data -------------------------------------------------------------------------------------


def test_loader_counts(gt_root: Path, gt_pairs):
    assert sum(p.subset == "oxford" for p in gt_pairs) == 40
    assert sum(p.subset == "homogr" for p in gt_pairs) == 16
    assert len({p.label for p in gt_pairs}) == 56
    assert all(p.eval_src_pts is None for p in gt_pairs if p.subset == "oxford")
    # a subset folder directly
    assert len(datasets.load_homography_gt(gt_root / "oxford_affine")) == 40
    assert len(datasets.load_homography_gt(gt_root / "homogr")) == 16
    assert len(datasets.limit_pairs(gt_pairs, 2)) == 4


def test_homogr_gt_maps_annotated_points(gt_pairs):
    homogr = [p for p in gt_pairs if p.subset == "homogr"]
    inverted_far = 0
    for p in homogr:
        assert p.eval_src_pts is not None and len(p.eval_src_pts) >= 4
        fwd = point_error(p.H_gt, p.eval_src_pts, p.eval_dst_pts)
        assert fwd < 0.5, p.name
        assert metrics.homography_error(p, p.H_gt, (1, 1)) == pytest.approx(fwd)
        # the inverse (B -> A) is worse everywhere, and far off on most pairs (city is near-identity)
        inv = point_error(np.linalg.inv(p.H_gt), p.eval_src_pts, p.eval_dst_pts)
        assert inv > fwd, p.name
        inverted_far += inv > 5
    assert inverted_far >= 12


def test_baseline_magsac_leuven(gt_pairs):
    pair = next(p for p in gt_pairs if p.subset == "oxford" and p.name == "leuven 1->2")
    src, dst = read_image(pair.src), read_image(pair.dst)
    out = baselines.run_sift_baselines(src, dst, [baselines.METHOD_SIFT_MAGSAC])
    err = metrics.homography_error(pair, out[baselines.METHOD_SIFT_MAGSAC].H, (src.shape[1], src.shape[0]))
    assert err < 3.0
    assert out[baselines.METHOD_SIFT_MAGSAC].seconds > 0


def gt_stub(pairs):
    """An estimator that returns each pair's GT H in order, plus a worse candidate with more inliers."""
    queue = [p.H_gt for p in pairs]

    def estimate(src, dst, seed=0, **options):
        H = queue.pop(0)
        worse = H @ np.array([[1.0, 0, 20.0], [0, 1, 0], [0, 0, 1]])
        cands = [cand("gt", H, 10, 1.0), cand("worse", worse, 99, 0.2)]
        return SimpleNamespace(H=H, score=1.0, candidates=cands, seconds=0.0)

    return estimate


def test_bench_run_with_gt_stub(gt_root: Path, gt_pairs):
    pairs = datasets.limit_pairs(gt_pairs, 1)
    calls = []
    res = bench.run_homography_bench(
        gt_root,
        methods=[bench.METHOD_STITCH],
        seed=3,
        limit=1,
        estimator=gt_stub(pairs),
        progress=lambda done, total, label: calls.append((done, total)),
    )
    assert calls[0] == (0, 2) and calls[-1] == (2, 2)
    stitch_rows = [r for r in res.rows if r.method == bench.METHOD_STITCH]
    assert len(stitch_rows) == 2
    assert all(r.error == pytest.approx(0.0, abs=1e-6) for r in stitch_rows)
    overall = {s.method: s for s in res.summaries["overall"]}
    assert overall[bench.METHOD_STITCH].ok[3.0] == 1.0
    assert overall[bench.METHOD_STITCH].auc[3.0] == pytest.approx(1.0)
    assert overall[bench.METHOD_SELECT_SCORE].ok[3.0] == 1.0
    assert overall[bench.METHOD_SELECT_INLIERS].ok[10.0] == 0.0  # the 20 px shift
    assert res.time_ratio_vs_magsac is None  # no baseline run
    data = res.to_json()
    json.dumps(data, allow_nan=False)
    assert data["seed"] == 3 and len(data["rows"]) == 6


def test_bench_estimation_error_is_failure(gt_root: Path):
    def failing(src, dst, seed=0, **options):
        raise EstimationError("no plausible homography")

    res = bench.run_homography_bench(
        gt_root / "oxford_affine", methods=["stitch"], limit=1, estimator=failing
    )
    assert [r.error for r in res.rows] == [INF, INF, INF]
    assert "EstimationError" in res.rows[0].detail
    assert res.to_json()["rows"][0]["error"] == "inf"


def test_bench_methods_exception(gt_root: Path):
    with pytest.raises(ConfigError, match="methods"):
        bench.run_homography_bench(gt_root, methods=["nope"])
    with pytest.raises(ConfigError, match="limit"):
        bench.run_homography_bench(gt_root, methods=["stitch"], limit=0, estimator=gt_stub([]))


def test_cli_homography_smoke(gt_root: Path, gt_pairs, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(bench, "default_estimator", lambda: gt_stub(datasets.limit_pairs(gt_pairs, 1)))
    out = tmp_path / "res.json"
    r = CliRunner().invoke(
        bench_group,
        ["homography", str(gt_root), "--limit", "1", "--method", "stitch", "--per-pair", "--json", str(out)],
    )
    assert r.exit_code == 0, r.output
    for text in (
        "homography: oxford",
        "homography: overall",
        "stitch: select by inliers (raw)",
        "AUC@10",
        "median time ratio vs SIFT+MAGSAC: n/a",
        "bark 1->2",
    ):
        assert text in r.output
    data = json.loads(out.read_text())
    assert data["options"]["preset"]
    assert data["summaries"]["overall"][0]["ok@3"] == 1.0


def test_cli_exception(tmp_path: Path):
    r = CliRunner().invoke(bench_group, ["homography", str(tmp_path)])
    assert r.exit_code != 0
    assert "no homography ground truth" in r.output
    assert "Traceback" not in r.output


def test_refiner_check_counts_lower_scores_and_worse_errors():
    """stitch+deep is compared with stitch pair by pair: score drops and error rises above 0.01 px."""
    R = bench.PairRow
    rows = [
        R("homogr", "a", bench.METHOD_STITCH, 1.00, 1.0, score=0.80),
        R("homogr", "a", bench.METHOD_STITCH_DEEP, 1.005, 1.2, score=0.80),  # same score, 0.005 px: a tie
        R("homogr", "b", bench.METHOD_STITCH, 2.0, 1.0, score=0.70),
        R("homogr", "b", bench.METHOD_STITCH_DEEP, 1.5, 1.2, score=0.75),
        R("homogr", "c", bench.METHOD_STITCH, 2.0, 1.0, score=0.70),
        R("homogr", "c", bench.METHOD_STITCH_DEEP, 2.5, 1.2, score=0.65),
    ]
    chk = bench.refiner_check(rows)
    assert chk.pairs == 3 and chk.score_lower == ["homogr/c"] and chk.score_higher == ["homogr/b"]
    assert chk.error_worse == ["homogr/c"] and chk.error_better == ["homogr/b"]
    assert bench.refiner_check(rows[:1]) is None


def test_bench_stitch_deep_row_runs_the_deep_refiner(gt_root: Path, gt_pairs):
    """Method stitch+deep calls the estimator with refiner='deep' and reports its score."""
    pytest.importorskip("torch")
    pytest.importorskip("kornia")
    pairs = datasets.limit_pairs(gt_pairs, 1)
    stub = gt_stub([p for p in pairs for _ in range(2)])  # two estimator calls per pair
    seen = []

    def spy(src, dst, seed=0, **options):
        seen.append(options.get("refiner"))
        return stub(src, dst, seed=seed, **options)

    res = bench.run_homography_bench(gt_root, methods=[bench.METHOD_STITCH, bench.METHOD_STITCH_DEEP], limit=1,
                                     estimator=spy)
    assert seen == [None, "deep", None, "deep"]
    deep_rows = [r for r in res.rows if r.method == bench.METHOD_STITCH_DEEP]
    assert len(deep_rows) == 2 and all(r.error == pytest.approx(0.0, abs=1e-6) for r in deep_rows)
    assert res.to_json()["refiner_check"]["pairs"] == 2


def test_gt_caveat_summaries():
    """The Oxford GT-caveat pairs (wall, bark, boat 1->6) get a summary apart from the other Oxford pairs."""
    rows = [bench.PairRow("oxford", n, "stitch", e, 1.0) for n, e in
            (("wall 1->2", 4.0), ("bark 1->3", 4.0), ("boat 1->6", 4.0), ("boat 1->2", 1.0), ("graf 1->2", 1.0))]
    s = bench.summarize_rows(rows)
    assert s[bench.OXFORD_CAVEAT][0].pairs == 3 and s[bench.OXFORD_CAVEAT][0].ok[3.0] == 0.0
    assert s[bench.OXFORD_RELIABLE][0].pairs == 2 and s[bench.OXFORD_RELIABLE][0].ok[3.0] == 1.0
    assert s["oxford"][0].pairs == 5
    rows.append(bench.PairRow("homogr", "adam", "stitch", 1.5, 1.0))
    s = bench.summarize_rows(rows)
    reliable = s[bench.OVERALL_RELIABLE][0]
    assert reliable.pairs == 3 and reliable.auc[3.0] == pytest.approx(metrics.auc_at([1.0, 1.0, 1.5], 3.0))
    assert s[bench.OVERALL][0].pairs == 6


def test_control_pair_is_exact():
    """The exact-GT twin: dst is src's source image warped by H_gt, so the twin's H_gt maps twin src to twin dst."""
    rng = np.random.default_rng(0)
    img = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    img = np.ascontiguousarray(np.kron(img[::8, ::8], np.ones((8, 8, 1), np.uint8))[:120, :160])
    H_gt = np.array([[0.9, 0.05, 6.0], [-0.04, 0.95, 3.0], [1e-4, 0.0, 1.0]])
    pair = datasets.GTPair("oxford", "x 1->2", Path("a.png"), Path("b.png"), H_gt)
    twin, src, dst = bench.control_pair(pair, img, (150, 110), np.random.default_rng(1))
    assert twin.subset == f"oxford: {bench.CONTROL}" and bench.is_control(twin.subset) and not bench.is_control("oxford")
    assert src.shape == (120, 160, 3) and dst.shape == (110, 150, 3) and not dst.flags.writeable
    assert twin.eval_src_pts is None  # the corner error, even for homogr twins
    # a src-twin pixel maps to the same scene point in dst-twin: compare through the original image
    pt = np.array([[80.0, 60.0]])
    orig = project(np.linalg.inv(bench.CONTROL_PRE_WARP), pt)
    np.testing.assert_allclose(project(twin.H_gt, pt), project(H_gt, orig), atol=1e-9)
    # photometric change: gain, offset and noise of known size on the warped original
    clean = cv2.warpPerspective(img, H_gt, (150, 110), flags=cv2.INTER_CUBIC).astype(float)
    inner = (slice(20, 90), slice(20, 130))
    resid = dst[inner].astype(float) - (clean[inner] * bench.CONTROL_GAIN + bench.CONTROL_OFFSET)
    assert abs(resid.mean()) < 0.2 and resid.std() == pytest.approx(bench.CONTROL_NOISE, rel=0.15)


def test_control_rows_summarised_apart():
    """Control twins get their own summaries; overall, the caveat split and the time ratio use the real pairs."""
    R = bench.PairRow
    ctl = f"oxford: {bench.CONTROL}"
    rows = [R("oxford", "graf 1->2", bench.METHOD_STITCH, 2.0, 1.0), R(ctl, "graf 1->2", bench.METHOD_STITCH, 0.1, 9.0),
            R("oxford", "graf 1->2", baselines.METHOD_SIFT_MAGSAC, 1.0, 1.0),
            R(ctl, "graf 1->2", baselines.METHOD_SIFT_MAGSAC, 0.2, 1.0)]
    s = bench.summarize_rows(rows)
    assert list(s) == ["oxford", "overall", ctl, f"overall: {bench.CONTROL}"]
    assert s["overall"][0].pairs == 1 and s["overall"][0].median_error == 2.0
    assert s[ctl][0].pairs == 1 and s[ctl][0].median_error == 0.1
    only = bench.summarize_rows(rows[1:2])
    assert list(only) == [ctl, f"overall: {bench.CONTROL}"]


def test_bench_run_with_control(gt_root: Path, gt_pairs):
    """``control=True`` runs each pair twice: the real pair, then its twin with an exact H_gt."""
    pairs = datasets.limit_pairs(gt_pairs, 1)
    twins = [bench.control_pair(p, read_image(p.src), (1, 1), np.random.default_rng(0))[0] for p in pairs]
    calls = []
    res = bench.run_homography_bench(gt_root, methods=[bench.METHOD_STITCH], limit=1, control=True,
                                     estimator=gt_stub(pairs + twins),
                                     progress=lambda done, total, label: calls.append((done, total)))
    assert calls[-1] == (4, 4)
    stitch_rows = [r for r in res.rows if r.method == bench.METHOD_STITCH]
    assert [bench.is_control(r.subset) for r in stitch_rows] == [False, False, True, True]
    assert all(r.error == pytest.approx(0.0, abs=1e-6) for r in stitch_rows)
    assert res.summaries[f"overall: {bench.CONTROL}"][0].pairs == 2 and res.summaries["overall"][0].pairs == 2
