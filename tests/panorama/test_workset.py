"""stitch.panorama.workset and graph.WorkImages: the working images of many photos read again from their files give
the same registration as images held in memory, and only a few are held at a time."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stitch.errors import ImageReadError
from stitch.panorama import graph, workset
from stitch.panorama.config import PanoramaConfig
from stitch.panorama.graph import WorkImages, match_graph
from stitch.panorama.pipeline import register_images, screen_pairs
from stitch.panorama.workset import LAZY_MIN_IMAGES, lazy_inputs, to_work, work_loader


@pytest.fixture(scope="module")
def views(samples_dir: Path) -> list[Path]:
    return sorted((samples_dir / "pano3").glob("view_*.jpg"))


def test_smoke_work_images_hold_and_release():
    """An image not held is made again each time it is asked for; hold keeps it until release; held images without
    a loader stay."""
    made = []

    def load(k: int) -> np.ndarray:
        made.append(k)
        return np.full((4, 4, 3), k, np.uint8)

    works = WorkImages([None, None], load)
    assert len(works) == 2 and int(works[1][0, 0, 0]) == 1 and int(works[1][0, 0, 0]) == 1 and made == [1, 1]
    works.hold(0)
    works.hold(0)
    assert [int(w[0, 0, 0]) for w in works] == [0, 1] and made == [1, 1, 0, 1]  # held once, 1 made again
    works.release(0)
    assert int(works[0][0, 0, 0]) == 0 and made[-1] == 0
    still = WorkImages([np.zeros((2, 2, 3), np.uint8)])
    still.release(0)
    assert still[0].shape == (2, 2, 3)


def test_exception_work_images_need_a_loader():
    with pytest.raises(ValueError, match="load function"):
        WorkImages([None])


def test_lazy_inputs_only_for_many_files(tmp_path):
    paths = [tmp_path / f"{k}.jpg" for k in range(LAZY_MIN_IMAGES + 1)]
    assert lazy_inputs(paths) and lazy_inputs([str(p) for p in paths])
    assert not lazy_inputs(paths[:LAZY_MIN_IMAGES])
    assert not lazy_inputs(paths[:-1] + [np.zeros((64, 64, 3), np.uint8)])  # an array is in memory anyway


def test_work_loader_reads_the_file_again(tmp_path):
    """The loader makes the working image the scan made, and names a file that changed size since."""
    img = cv2.resize(np.random.default_rng(0).integers(0, 255, (30, 40, 3), np.uint8), (800, 600))
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), img)
    load = work_loader([str(path)], [0], ["a.png"], [(800, 600)], 0.1)
    assert np.array_equal(load(0), to_work(img, 0.1)) and load(0).shape[:2] == (274, 365)
    cv2.imwrite(str(path), img[:500])
    with pytest.raises(ImageReadError, match=r"a\.png: changed while being stitched \(800 x 500 px, was 800 x 600\)"):
        load(0)


def test_lazy_screening_gives_the_same_graph(views):
    """screen_pairs reading the working images again (lazy) accepts the same pairs with the same matrices and
    inliers as with every image held, keeps no image, and the same thumbnails."""
    cfg = PanoramaConfig.from_options()
    held = screen_pairs(views, cfg, lazy=False)
    lazy = screen_pairs(views, cfg, lazy=True)
    assert len(held.images) == 3 and lazy.images == [] and lazy.lazy and not held.lazy
    assert lazy.keys == held.keys and lazy.sizes == held.sizes and len(lazy.edges) == len(held.edges) == 2
    for a, b in zip(lazy.edges, held.edges):
        assert (a.i, a.j, a.n_inliers) == (b.i, b.j, b.n_inliers)
        assert np.array_equal(a.H, b.H) and np.array_equal(a.pts_i, b.pts_i)
    assert all(np.array_equal(a, b) for a, b in zip(lazy.thumbs, held.thumbs))


def test_lazy_registration_reads_the_kept_images_again(views, monkeypatch):
    """With the lazy threshold below the input count, register_images gives the same cameras and, read again
    after the camera model, the same full-resolution pixels."""
    cfg = PanoramaConfig.from_options()
    reg, kept = register_images(views, cfg)
    monkeypatch.setattr(workset, "LAZY_MIN_IMAGES", 2)
    lazy_reg, lazy_kept = register_images(views, cfg)
    assert lazy_reg.names == reg.names and all(np.array_equal(a, b) for a, b in zip(lazy_reg.homographies(),
                                                                                   reg.homographies()))
    assert [px.image.shape for px in lazy_kept] == [px.image.shape for px in kept] == [(480, 640, 3)] * 3
    assert all(np.array_equal(a.image, b.image) for a, b in zip(lazy_kept, kept))


def test_pair_search_releases_every_image(views, monkeypatch):
    """Above FREE_FEATURES_MIN_IMAGES images, the pair search holds an image from its first pair to its last: none
    is held at the end, each is made again only a few times, and the pairs come out as with every image held."""
    cfg = PanoramaConfig.from_options()
    works = [to_work(cv2.imread(str(v)), cfg.work_megapix) for v in views]
    held = match_graph(works, [v.name for v in views], cfg)
    monkeypatch.setattr(graph, "FREE_FEATURES_MIN_IMAGES", 0)
    made = []

    def load(k: int) -> np.ndarray:
        made.append(k)
        return works[k]

    lazy = WorkImages([None] * 3, load)
    got = match_graph(lazy, [v.name for v in views], cfg)
    assert [(i, j) for i, j, _ in got[0]] == [(i, j) for i, j, _ in held[0]] == [(0, 1), (1, 2)]
    assert all(np.array_equal(a.H, b.H) for (_, _, a), (_, _, b) in zip(got[0], held[0]))
    assert lazy._images == [None, None, None] and sorted(set(made)) == [0, 1, 2] and len(made) <= 9


def test_exception_a_photo_gone_before_compositing(views, tmp_path, monkeypatch):
    """A lazy registration reads the kept photos again: one deleted meanwhile is an ImageReadError naming it, and the
    other inputs stay as they were."""
    import shutil

    from stitch.panorama import pipeline

    copies = [Path(shutil.copy(v, tmp_path / v.name)) for v in views]
    before = [c.read_bytes() for c in copies[:2]]
    solve = pipeline.verified_registration

    def solve_then_delete(*args, **kwargs):
        reg = solve(*args, **kwargs)
        copies[2].unlink()
        return reg

    monkeypatch.setattr(workset, "LAZY_MIN_IMAGES", 2)
    monkeypatch.setattr(pipeline, "verified_registration", solve_then_delete)
    with pytest.raises(ImageReadError, match="view_3.jpg"):
        register_images(copies, PanoramaConfig.from_options())
    assert [c.read_bytes() for c in copies[:2]] == before
