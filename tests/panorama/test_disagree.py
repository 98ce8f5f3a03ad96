"""stitch.panorama.disagree, and seams / blending that never show two contents at once (issue 21, item 2)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stitch.errors import ConfigError
from stitch.panorama.compose import ComposeConfig, compose_panorama
from stitch.panorama.config import PanoramaConfig
from stitch.panorama.disagree import (
    MISALIGN_CHOICES,
    Disagreement,
    PairDisagreement,
    disagreement,
    flow_magnitude,
    local_median,
    local_ncc,
    local_offset,
)
from stitch.panorama.seams import find_seams
from stitch.panorama.views import LowView
from stitch.panorama.warp import Projection, canvas_bounds

#: The "person": rows, columns (canvas px) of a rectangle view A sees and view B does not.
PERSON = (slice(50, 190), slice(165, 335))
PERSON_BGR = (250, 250, 250)
#: Margin (px) around the person over which the result must show one photo or the other, never a mix.
HALO = 24
#: Largest difference (gray levels) from the nearer photo that counts as "no mix": multi-band's own error where
#: the photos are equal (near an image's border, where its pyramid sees its replicated edge) is up to 5.
NO_MIX = 5
OLD = {"seam_misalign": "none", "sharp_blend": False}


def textured_scene(size: tuple[int, int] = (600, 240), seed: int = 3) -> np.ndarray:
    """A (H, W, 3) uint8 scene with fine and coarse texture, values about 50..200."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = cv2.resize(rng.uniform(60, 190, (h // 24, w // 24, 3)).astype(np.float32), size,
                        interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.uniform(-25, 25, (h // 3, w // 3, 3)).astype(np.float32), size,
                      interpolation=cv2.INTER_LINEAR)
    return np.clip(coarse + fine, 0, 255).astype(np.uint8)


def two_views(person: bool) -> tuple[list[np.ndarray], list[np.ndarray], object, np.ndarray, np.ndarray]:
    """Views A (canvas columns 0..350) and B (150..600) of one scene, overlapping on 150..350; with ``person``, A
    sees PERSON that B lacks (nearly as wide as the overlap: any seam passes close to it). Returns (images, homographies, canvas, A on the canvas, B on the canvas)."""
    s = textured_scene()
    seen_a = s.copy()
    if person:
        seen_a[PERSON] = PERSON_BGR
    a, b = seen_a[:, :350].copy(), s[:, 150:].copy()
    Hs = [np.eye(3), np.array([[1.0, 0, 150], [0, 1.0, 0], [0, 0, 1.0]])]
    canvas = canvas_bounds(Hs, [(350, 240), (450, 240)], Projection("plane"))
    return [a, b], Hs, canvas, seen_a, s


def nearest_source_error(out: np.ndarray, a: np.ndarray, b: np.ndarray, box: tuple[slice, slice]) -> np.ndarray:
    """Per pixel of ``box``: min over the two sources of max over channels of |out - source| (gray levels)."""
    o, x, y = (z[box].astype(int) for z in (out, a, b))
    return np.minimum(np.abs(o - x).max(axis=2), np.abs(o - y).max(axis=2))


def grown(box: tuple[slice, slice], px: int) -> tuple[slice, slice]:
    return slice(box[0].start - px, box[0].stop + px), slice(box[1].start - px, box[1].stop + px)


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    mse = float(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def test_smoke():
    views = [LowView(textured_scene()[:, :400].copy(), np.ones((240, 400), bool), (0, 0)),
             LowView(textured_scene()[:, 200:].copy(), np.ones((240, 400), bool), (200, 0))]
    for term in MISALIGN_CHOICES:
        d = disagreement(views, term)
        p = d.pairs[(0, 1)]
        assert p.region == (199, -1, 401, 241) and p.misalign.shape == p.differ.shape == (242, 202)
        assert d.views == [None, None]  # no disagreement area: no full-size map either
        assert p.misalign.max() < 0.5 and not p.differ.any(), term  # the same scene: nothing disagrees
    shifted = [views[0], LowView(np.roll(views[1].image, 40, axis=0), views[1].mask, views[1].offset)]
    d = disagreement(shifted)
    assert d.views[0].differ.shape == (240, 400) and d.views[1].offset.shape == (240, 400, 3)
    assert d.views[0].differ[:, 200:].mean() > 0.5 and not d.views[0].differ[:, :199].any()


@pytest.mark.parametrize("seam_megapix", [0.1, 0.02])
def test_shift(seam_megapix):
    """A person in one view only, with the default blend: every pixel within HALO px of it is one photo's or the
    other's (no mix), the person whole (its box all A's) or left out (all B's). Multi-band blending without
    sharp blending mixes them (the known failure)."""
    imgs, Hs, canvas, a, b = two_views(person=True)
    box = grown(PERSON, HALO)
    new = compose_panorama(imgs, Hs, canvas, ComposeConfig(exposure="none", crop=False, seam_megapix=seam_megapix))
    err = nearest_source_error(new.image, a, b, box)
    assert err.max() <= NO_MIX, err.max()
    inside = new.image[PERSON].astype(int)
    whole = np.abs(inside - a[PERSON]).max(axis=2) <= NO_MIX
    gone = np.abs(inside - b[PERSON]).max(axis=2) <= NO_MIX
    assert whole.all() or gone.all(), (whole.mean(), gone.mean())
    old = compose_panorama(imgs, Hs, canvas, ComposeConfig(exposure="none", crop=False, seam_megapix=seam_megapix,
                                                           **OLD))
    old_err = nearest_source_error(old.image, a, b, box)
    assert old_err.max() > 12 and (old_err > NO_MIX).sum() > 2000  # the half-transparent halo this item removes


def test_photos_that_agree_keep_todays_blend():
    """No disagreement: with the misalignment term and sharp blending the result is today's multi-band one (PSNR
    over the whole canvas)."""
    imgs, Hs, canvas, _, _ = two_views(person=False)
    b = np.clip(imgs[1].astype(np.float32) * 1.1, 0, 255).astype(np.uint8)  # an exposure step the gains solve
    new = compose_panorama([imgs[0], b], Hs, canvas, ComposeConfig(crop=False, seam_megapix=0.02, sharp_blend=True))
    old = compose_panorama([imgs[0], b], Hs, canvas, ComposeConfig(crop=False, seam_megapix=0.02, **OLD))
    assert psnr(new.image, old.image) > 45, psnr(new.image, old.image)


def test_seam_runs_around_misalignment():
    """Two identical views (every seam costs the same colour): a band of measured misalignment where the cut
    would go moves the seam out of it."""
    s = textured_scene((300, 120))
    views = [LowView(s[:, :200].copy(), np.ones((120, 200), bool), (0, 0)),
             LowView(s[:, 100:].copy(), np.ones((120, 200), bool), (100, 0))]
    region = (99, -1, 201, 121)

    def seam_columns(mask: np.ndarray) -> np.ndarray:
        """Canvas columns where view 0's seam mask ends, over the overlap's rows."""
        return np.nonzero(np.diff(mask[:, 99:].astype(np.int8), axis=1))[1] + 100

    for method in ("graphcut", "dp"):
        plain = seam_columns(find_seams(views, method)[0])
        c = int(np.median(plain))
        lo, hi = max(100, c - 20), min(200, c + 21)
        misalign = np.zeros((region[3] - region[1], region[2] - region[0]), np.float32)
        misalign[:, lo - region[0]:hi - region[0]] = 4.0  # a band of misalignment around the plain seam
        dis = Disagreement({(0, 1): PairDisagreement(region, misalign, misalign, misalign > 0)},
                           [np.zeros((120, 200), np.float32)] * 2)
        routed = seam_columns(find_seams(views, method, gamma=10.0, disagreement=dis)[0])
        assert ((plain >= lo) & (plain < hi)).mean() == 1.0, method
        assert ((routed >= lo) & (routed < hi)).mean() == 0.0, (method, lo, hi, routed)


def test_terms():
    """flow: a 3 px shift of texture reads ~3 px; ncc: 1 on the same patch, about 0 on unrelated noise."""
    s = cv2.cvtColor(textured_scene((200, 120)), cv2.COLOR_BGR2GRAY)
    shifted = np.roll(s, 3, axis=1)
    mag = flow_magnitude(s, shifted)
    assert abs(float(np.median(mag[20:-20, 20:-20])) - 3.0) < 0.3
    assert float(local_ncc(s, s).min()) > 0.999
    noise = np.random.default_rng(0).integers(0, 255, s.shape, dtype=np.uint8)
    assert abs(float(np.median(local_ncc(s, noise)))) < 0.2


def test_exception():
    with pytest.raises(ConfigError, match="seam_misalign"):
        ComposeConfig(seam_misalign="optical").check()
    with pytest.raises(ConfigError, match="seam_misalign_weight"):
        ComposeConfig(seam_misalign_weight=-1.0).check()
    with pytest.raises(ConfigError, match="seam_misalign_weight"):
        PanoramaConfig.from_options(seam_misalign_weight=float("nan"))
    with pytest.raises(ConfigError, match="sharp_blend"):
        PanoramaConfig.from_options(sharp_blend="yes")
    with pytest.raises(ConfigError, match="misalign"):
        disagreement([], "bogus")
    with pytest.raises(ConfigError, match="seam_misalign_weight"):
        find_seams([], "graphcut", gamma=-2.0)


def test_misalignment_alone():
    """areas=False (no sharp blending): the same misalignment, no disagreement areas, no offsets."""
    from stitch.panorama.disagree import pair_disagreement

    a = textured_scene((200, 120))
    b = np.roll(a, 3, axis=1).copy()
    b[40:80, 60:120] = 255  # something in one photo only
    m = np.ones(a.shape[:2], bool)
    full = pair_disagreement(a, b, m, m, (0, 0, 200, 120))
    alone = pair_disagreement(a, b, m, m, (0, 0, 200, 120), areas=False)
    np.testing.assert_array_equal(full.misalign, alone.misalign)
    assert full.differ[40:80, 60:120].mean() > 0.9 and not alone.differ.any()


def test_offset_on_a_coarser_grid():
    """local_offset formed on a grid 2x coarser recovers a planted smooth difference as well as at full resolution
    (median error within 0.05 levels of it), across a 300 x 300 px area where the photos disagree too."""
    rng = np.random.default_rng(0)
    h, w = 500, 700
    a = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    smooth = cv2.resize(rng.uniform(-30, 30, (6, 8, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    b = np.clip(a - smooth, 0, 255).astype(np.uint8)
    agree = (rng.random((h, w)) > 0.3) & (a > 30).all(axis=2) & (a < 225).all(axis=2)
    agree[100:400, 200:500] = False
    errors = [float(np.median(np.abs(local_offset(a, b, agree, shrink=f) - smooth))) for f in (1, 2)]
    assert errors[0] < 1.0 and abs(errors[1] - errors[0]) < 0.05, errors


def test_replacement_tiles_and_strip_warps_change_no_pixel(monkeypatch):
    """The person scene blended sharply with the replacement in tiles of 16 px gives the same pixels as in one tile,
    and so does warping the owners again instead of reading the strip's warps."""
    import stitch.panorama.blend as blend_module

    imgs, Hs, canvas, _, _ = two_views(person=True)
    cfg = ComposeConfig(exposure="none", crop=False, seam_megapix=0.1, sharp_blend=True)
    results = []
    for tile in (16, 4096):
        monkeypatch.setattr(blend_module, "TAKE_TILE", tile)
        results.append(compose_panorama(imgs, Hs, canvas, cfg).image)
    monkeypatch.setattr(blend_module, "_strip_warps", lambda *args: None)
    results.append(compose_panorama(imgs, Hs, canvas, cfg).image)
    assert np.array_equal(results[0], results[1]) and np.array_equal(results[0], results[2])


def test_local_median_on_a_coarser_grid():
    """On a smooth difference (a ramp of 60 levels over 160 px) with an 8 x 8 px object 100 levels above it, the
    local median (taken on a 2x coarser grid) follows the ramp within 3 levels and leaves the object out: the
    object stands 90+ levels above it, the rest under 3."""
    yy, xx = np.mgrid[0:120, 0:160].astype(np.float32)
    r = np.repeat((xx * 60.0 / 160.0 - 30.0 + yy * 0.1)[:, :, None], 3, axis=2)
    r[50:58, 70:78] += 100.0
    rest = np.ones((120, 160), bool)
    rest[46:62, 66:82] = False
    residual = np.abs(r - local_median(r)).max(axis=2)
    assert residual[52:56, 72:76].min() > 90.0 and residual[rest].max() < 3.0, (residual[52:56, 72:76].min(),
                                                                                 residual[rest].max())
