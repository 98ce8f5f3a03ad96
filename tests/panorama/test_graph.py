"""stitch.panorama.graph: the first pass's match counts against OpenCV's brute-force matcher."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from stitch.panorama.graph import image_key, pair_votes, ratio_passes


def _bf_count(a: np.ndarray, b: np.ndarray, ratio: float) -> int:
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(a, b, k=2)
    return sum(1 for m in knn if len(m) == 2 and m[0].distance < ratio * m[1].distance)


def test_pair_votes_equal_opencv_brute_force_counts():
    """Ratio-test counts in both directions, summed, equal cv2.BFMatcher's on sets of different sizes."""
    rng = np.random.default_rng(5)
    base = rng.random((120, 32)).astype(np.float32)
    desc = [np.vstack([base[:80] + rng.normal(0, 0.02, (80, 32)).astype(np.float32), rng.random((n, 32), np.float32)])
            for n in (10, 40, 3)]
    desc.append(None)  # an image with no features matches nothing
    desc.append(base[:1])  # a single descriptor: no second neighbour, no match (as OpenCV's knn gives none)
    votes = pair_votes(desc, ratio=0.7, block=2)
    assert votes.shape == (5, 5) and np.array_equal(votes, votes.T)
    for i in range(3):
        for j in range(3):
            if i != j:
                assert votes[i, j] == _bf_count(desc[i], desc[j], 0.7) + _bf_count(desc[j], desc[i], 0.7)
    assert votes[0, 1] >= 100  # the shared 80 descriptors match both ways
    assert not votes[3].any() and not votes[4].any()


def test_ratio_passes_as_the_two_nearest_sorted_out():
    """ratio_passes gives, row by row, the test on the two nearest sorted out (np.partition), ties and infinite
    padding included: a duplicated nearest fails, an all-infinite row fails, a lone zero passes."""
    rng = np.random.default_rng(11)
    d2 = (rng.integers(0, 40, (6, 9, 9)) * 0.37).astype(np.float32)  # few distinct values: many ties
    d2[0, :, 0] = np.inf
    d2[1, 2] = np.inf
    d2[2, :, 3] = 0.0
    d2[2, 5, 3] = 7.0
    d2[3, 4, :] = [0.0] + [1.0] * 8
    r2 = np.float32(0.7 * 0.7)
    for axis in (1, 2):
        two = np.moveaxis(np.partition(d2, 1, axis=axis), axis, -1)[..., :2]
        assert np.array_equal(ratio_passes(d2, r2, axis), two[..., 0] < r2 * two[..., 1])
    assert not ratio_passes(d2, r2, 2)[1, 2]  # every entry infinite
    assert ratio_passes(d2, r2, 2)[3, 4]  # 0 against 1: passes
    assert not ratio_passes(d2, r2, 1)[2, 3]  # zero twice: a tie fails


def _strip_descriptors(n: int, per: int = 60, shared: int = 30, seed: int = 3) -> list[np.ndarray]:
    """Descriptor sets of a strip of n views: view k shares ``shared`` noisy descriptors with each neighbour."""
    rng = np.random.default_rng(seed)
    scene = rng.random((n * shared + shared, 32)).astype(np.float32)
    out = []
    for k in range(n):
        own = scene[k * shared:(k + 2) * shared] + rng.normal(0, 0.01, (2 * shared, 32)).astype(np.float32)
        out.append(np.vstack([own, rng.random((per - 2 * shared, 32)).astype(np.float32)]))
    return out


def test_pair_votes_partners_count_only_those_pairs():
    desc = _strip_descriptors(8)
    full = pair_votes(desc)
    partners = [[k + 1] if k + 1 < 8 else [] for k in range(8)]
    part = pair_votes(desc, partners=partners)
    near = np.abs(np.subtract.outer(np.arange(8), np.arange(8))) == 1
    assert np.array_equal(part[near], full[near]) and not part[~near].any()
    assert full[near].min() >= 40  # neighbours share 30 descriptors each way


def test_pair_votes_threads_give_the_same_votes():
    """Two or three threads (each with one BLAS thread) count the same votes bit for bit as one, partners or not,
    and NumPy's BLAS gets its threads back afterwards."""
    from threadpoolctl import threadpool_info

    before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    desc = _strip_descriptors(12, per=70)
    desc[5] = None
    partners = [[b for b in range(k + 1, 12) if (b - k) % 3] for k in range(12)]
    for parts in (None, partners):
        one = pair_votes(desc, block=4, partners=parts)
        assert one.any()
        for workers in (2, 3):
            assert np.array_equal(pair_votes(desc, block=4, partners=parts, workers=workers), one)
    assert [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] == before


def test_prefilter_keeps_the_shortlist_of_many_images(monkeypatch):
    """Above PREFILTER_MIN_IMAGES the exact votes run only on the prefilter's partners: the shortlist is the one
    the votes on every pair give (neighbours on a strip), at any input order."""
    from stitch.panorama import graph
    from stitch.panorama.graph import PREFILTER_MIN_IMAGES, prefilter_partners, shortlist

    n = PREFILTER_MIN_IMAGES + 5
    desc = _strip_descriptors(n)
    keys = [f"{k:04d}" for k in range(n)]
    near = prefilter_partners(desc, keys, count=4, features=45)
    assert all({k - 1, k + 1} & set(range(n)) <= set(p[:2]) for k, p in enumerate(near))
    rng = np.random.default_rng(0)
    works = [np.full((8, 8, 3), k % 251, np.uint8) for k in range(n)]
    order = rng.permutation(n)
    feats = dict(zip(map(id, works), desc))
    monkeypatch.setattr(graph, "_thumb_features", lambda w, spread: feats[id(w)])
    pairs = shortlist(works, keys, k=2, min_images=8).pairs
    shuffled = shortlist([works[k] for k in order], [keys[k] for k in order], k=2, min_images=8).pairs
    assert set(pairs) == {(k, k + 1) for k in range(n - 1)}
    # between the parts the shortlist leaves, only each photo's next partners by votes (none here: neighbours only)
    assert graph.shortlist(works, keys, k=2, min_images=8).fallback == []
    assert graph.shortlist(works[:20], keys[:20], k=2, min_images=8).fallback is None  # a few: every skipped pair
    assert {(min(order[i], order[j]), max(order[i], order[j])) for i, j in shuffled} == set(pairs)


def test_match_graph_screens_only_the_fallback_between_parts(samples_dir):
    """When the shortlist leaves the graph in parts, the pairs screened between them are ``fallback``'s (every
    skipped pair when it is None): a photo that matches nothing is not searched against every other one."""
    from stitch.panorama.config import PanoramaConfig
    from stitch.panorama.graph import match_graph

    views = [cv2.imread(str(samples_dir / "pano3" / f"view_{k}.jpg")) for k in (1, 2)]
    noise = np.random.default_rng(0).integers(0, 256, views[0].shape, dtype=np.uint8)
    works, names = views + [noise], ["view_1", "view_2", "noise"]
    cfg = PanoramaConfig.from_options(preset="fast")
    keys = ["a", "b", "c"]
    acc, why = match_graph(works, names, cfg, keys=keys, pairs=[(0, 1)], fallback=[(1, 2)])
    assert [(i, j) for i, j, _ in acc] == [(0, 1)] and set(why) == {(1, 2)}
    acc, why = match_graph(works, names, cfg, keys=keys, pairs=[(0, 1)])
    assert set(why) == {(0, 2), (1, 2)}


def _peak_live(order: list[tuple[int, int]], n: int) -> int:
    """Most images holding features at once when pairs run in ``order`` (detected at the first, freed after the last)."""
    left = np.bincount(np.asarray(order).ravel(), minlength=n)
    live: set[int] = set()
    peak = 0
    for pair in order:
        live.update(pair)
        peak = max(peak, len(live))
        for k in pair:
            left[k] -= 1
            if not left[k]:
                live.discard(k)
    return peak


def test_pair_schedule_keeps_few_images_open():
    """A sweep of 6 rows x 60 photos (each matched with its right, lower and diagonal neighbours): every pair is
    screened once, and at most about two columns of photos hold features at once, in any input order (the pairs
    sorted row by row hold a whole row)."""
    from stitch.panorama.graph import pair_schedule

    rows, cols = 6, 60
    at = np.arange(rows * cols).reshape(rows, cols)
    pairs = sorted({(int(min(at[r, c], at[r + dr, c + dc])), int(max(at[r, c], at[r + dr, c + dc])))
                    for r in range(rows) for c in range(cols) for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1))
                    if 0 <= r + dr < rows and 0 <= c + dc < cols})
    assert _peak_live(pairs, rows * cols) >= cols
    perm = np.random.default_rng(0).permutation(rows * cols)
    for ps in (pairs, [(int(min(perm[i], perm[j])), int(max(perm[i], perm[j]))) for i, j in pairs]):
        order = pair_schedule(rows * cols, ps)
        assert sorted(order) == sorted(ps)
        assert _peak_live(order, rows * cols) <= 2 * rows + 2
    assert pair_schedule(5, []) == []


def test_match_graph_detects_each_image_once_and_frees_it(samples_dir, monkeypatch):
    """Each image's features are detected once (on either thread, before its first pair) and, above
    FREE_FEATURES_MIN_IMAGES images, forgotten after its last pair (a few images keep theirs for the later phases)."""
    from stitch.homography import search
    from stitch.panorama import graph
    from stitch.panorama.config import PanoramaConfig
    from stitch.panorama.graph import match_graph

    works = [cv2.imread(str(samples_dir / "pano3" / f"view_{k}.jpg")) for k in (1, 2, 3)]
    calls: list[int] = []
    cleared: list[int] = []
    detect, clear = search.detect, search.FeatureCache.clear
    monkeypatch.setattr(search, "detect", lambda img, *a: calls.append(id(img)) or detect(img, *a))
    monkeypatch.setattr(search.FeatureCache, "clear", lambda self: cleared.append(1) or clear(self))
    cfg = PanoramaConfig.from_options(preset="fast", workers=2)
    match_graph(works, ["a", "b", "c"], cfg, keys=["a", "b", "c"])
    assert sorted(calls) == sorted(id(w) for w in works) and not cleared
    calls.clear()
    monkeypatch.setattr(graph, "FREE_FEATURES_MIN_IMAGES", 2)
    acc, _ = match_graph(works, ["a", "b", "c"], cfg, keys=["a", "b", "c"])
    assert sorted(calls) == sorted(id(w) for w in works) and len(cleared) == 3
    assert [(i, j) for i, j, _ in acc] == [(0, 1), (1, 2)]  # views 1 and 3 do not overlap


def test_spread_order_takes_every_cell_before_a_crowded_one():
    """100 strong keypoints crowded in one corner cell and 5 weak ones in each other cell: the first 9 of the order
    are one per cell (each cell's strongest), and any prefix holds at most one more keypoint from a cell than from
    another that still has some."""
    from stitch.panorama.graph import spread_order

    rng = np.random.default_rng(2)
    crowd = rng.uniform(0, 30, (100, 2))
    others = [rng.uniform([x * 100 + 1, y * 100 + 1], [x * 100 + 99, y * 100 + 99], (5, 2))
              for y in range(3) for x in range(3) if (x, y) != (0, 0)]
    xy = np.vstack([crowd] + others)
    response = np.concatenate([rng.uniform(10, 20, 100), rng.uniform(0, 1, 40)])
    order = spread_order(xy, response, (300, 300), grid=3)
    assert sorted(order.tolist()) == list(range(140))
    cell = (xy[:, 1] // 100).astype(int) * 3 + (xy[:, 0] // 100).astype(int)
    assert sorted(cell[order[:9]].tolist()) == list(range(9))
    for c in range(9):  # each cell's first pick is its strongest
        members = np.flatnonzero(cell == c)
        assert order[[cell[o] == c for o in order].index(True)] == members[np.argmax(response[members])]
    counts = np.bincount(cell[order[:45]], minlength=9)
    assert counts.tolist() == [5] * 9  # 45 = 5 per cell
    assert np.bincount(cell[order[:60]], minlength=9)[0] == 20  # then only the crowded cell has more


def test_spread_features_vote_where_a_crowded_object_would_take_them_all():
    """Two overlapping crops of one texture, each with a high-contrast block pattern (a QR code) outside the overlap:
    SIFT's 300 strongest features of each thumbnail lie mostly on the pattern and barely vote; spread over the
    thumbnail, the same count votes many times as often."""
    from stitch.panorama.graph import _thumb_features

    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (300, 520)).astype(np.uint8), (0, 0), 2.0)
    base = cv2.normalize(base, None, 60, 190, cv2.NORM_MINMAX)

    def blocks(seed: int) -> np.ndarray:
        cells = np.random.default_rng(seed).integers(0, 2, (32, 12)).astype(np.uint8) * 255
        return cv2.resize(cells, (100, 260), interpolation=cv2.INTER_NEAREST)

    a, b = base[:, :320].copy(), base[:, 200:].copy()
    a[20:280, 10:110], b[20:280, 210:310] = blocks(1), blocks(2)
    A, B = (cv2.cvtColor(x, cv2.COLOR_GRAY2BGR) for x in (a, b))
    strongest = [_thumb_features(A), _thumb_features(B)]
    spread = [_thumb_features(A, spread=True), _thumb_features(B, spread=True)]
    assert [len(d) for d in strongest + spread] == [300] * 4
    assert pair_votes(strongest)[0, 1] < 30
    assert pair_votes(spread)[0, 1] > 5 * max(pair_votes(strongest)[0, 1], 10)
    assert _thumb_features(np.zeros((40, 40, 3), np.uint8), spread=True) is None  # no keypoint


def test_match_graph_keeps_what_keep_makes_of_each_result(samples_dir):
    """keep(i, j, result) replaces each accepted result in the list, in place, as it is accepted."""
    from stitch.panorama.config import PanoramaConfig
    from stitch.panorama.graph import match_graph

    names = [f"view_{k}.jpg" for k in (1, 2, 3)]
    works = [cv2.imread(str(samples_dir / "pano3" / nm)) for nm in names]
    cfg = PanoramaConfig.from_options()
    full, why = match_graph(works, names, cfg)
    kept, why_kept = match_graph(works, names, cfg, keep=lambda i, j, res: (i, j, res.n_inliers, res.H.copy()))
    assert len(full) >= 2 and why_kept.keys() == why.keys()
    for (i, j, res), (a, b, got) in zip(full, kept):
        assert (a, b) == (i, j) and got[:3] == (i, j, res.n_inliers)
        assert np.array_equal(got[3], res.H)


def test_pair_votes_threads_without_threadpoolctl(monkeypatch):
    """An install without threadpoolctl counts the same votes on threads (BLAS keeps its own threads)."""
    import sys

    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # import fails
    desc = _strip_descriptors(10, per=70)
    assert np.array_equal(pair_votes(desc, block=3, workers=2), pair_votes(desc, block=3))


def test_image_key_is_the_digest_of_shape_and_pixels():
    """The key hashes the shape's repr and the C-ordered pixels (a saved Registration's keys stay valid): the same
    pixels give the same key in any memory layout, another shape or pixel another key."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    expected = hashlib.sha1(repr(img.shape).encode() + img.tobytes()).hexdigest()
    assert image_key(img) == expected == image_key(np.asfortranarray(img))
    assert image_key(img[:, ::-1][:, ::-1]) == expected
    other = img.copy()
    other[3, 4, 1] ^= 1
    assert image_key(other) != expected and image_key(img.reshape(9, 7, 3)) != expected
