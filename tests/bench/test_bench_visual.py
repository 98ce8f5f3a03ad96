"""stitch.bench.visual and visual_sheet: known answers on synthetic panoramas (shifts, seams, Lab offsets, lines)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import texture

from stitch.bench.visual import (
    PLACE_KINDS,
    Place,
    Registered,
    bend_per_100,
    detect_segments,
    invented_empty,
    label_map,
    longest_run,
    segment_bends,
    texture_energy,
    visual_figures,
    weighted_quantiles,
)
from stitch.bench.visual_sheet import crop_at, worst_places_sheet, write_place_crops

W, H, OVERLAP_X0, SEAM_X = 600, 300, 200, 300


def scene(seed: int = 1) -> np.ndarray:
    return texture(seed, (W, H))


def two_views(img: np.ndarray, shift_b: float = 0.0, b_pixels: np.ndarray | None = None) -> list[Registered]:
    """Views [0, 400) and [200, 600) of img; b's content moved right by shift_b px (sub-pixel allowed)."""
    b_src = img if b_pixels is None else b_pixels
    if shift_b:
        M = np.float32([[1, 0, shift_b], [0, 1, 0]])
        b_src = cv2.warpAffine(b_src, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    m = np.ones((H, 400), bool)
    return [Registered("a", img[:, :400].copy(), m, (0, 0)), Registered("b", b_src[:, 200:].copy(), m.copy(), (200, 0))]


def hard_seam(regs: list[Registered], b_shown: np.ndarray | None = None) -> np.ndarray:
    """The panorama: a's pixels left of SEAM_X, b's (or b_shown's) from SEAM_X on."""
    pano = np.zeros((H, W, 3), np.uint8)
    pano[:, :400] = regs[0].image
    right = regs[1].image if b_shown is None else b_shown
    pano[:, SEAM_X:] = right[:, SEAM_X - 200:]
    return pano


def full(shape=(H, W)) -> np.ndarray:
    return np.ones(shape, bool)


def test_smoke():
    """Identical views and a seam through them: no misalignment, no ghost, no colour step, nothing invented."""
    img = scene()
    regs = two_views(img)
    f = visual_figures(img, full(), regs, {})
    assert f.flow_p50 == pytest.approx(0.0, abs=0.05) and f.flow_p95 == pytest.approx(0.0, abs=0.1)
    assert f.ghost_p95 == pytest.approx(0.0, abs=0.1)
    assert f.colour_step_p95 == pytest.approx(0.0, abs=0.2)
    assert f.invented_pct == 0.0 and f.empty_pct == 0.0
    assert len(f.pairs) == 1 and f.seam_px > H  # the seam crosses the overlap top to bottom
    assert [p.kind for p in f.places] == ["ghost", "colour"]


def test_shift():
    """A pair misplaced by a known 3 px: overlap flow p50 and p95 ~3."""
    regs = two_views(scene(), shift_b=3.0)
    f = visual_figures(hard_seam(regs), full(), regs, {})
    assert f.flow_p50 == pytest.approx(3.0, abs=0.1) and f.flow_p95 == pytest.approx(3.0, abs=0.25)


@pytest.mark.parametrize("shift", [0.0, 2.0])
def test_seam_band_ghosting(shift):
    """A hard seam between an image and its shift-px-moved copy: seam-band ghosting ~shift, found at the seam."""
    regs = two_views(scene(2), shift_b=shift)
    f = visual_figures(hard_seam(regs), full(), regs, {})
    assert f.ghost_p50 == pytest.approx(shift, abs=0.1) and f.ghost_p95 == pytest.approx(shift, abs=0.25)
    if shift:
        ghost = next(p for p in f.places if p.kind == "ghost")
        assert abs(ghost.x - SEAM_X) <= 40 and ghost.value == pytest.approx(shift, abs=0.25)


def test_seam_labels_follow_the_output():
    """Each pixel is labelled by the view that shows it: a at the left of the hard seam, b at its right; where
    both views agree the undecided pixels split halfway between the decided ones."""
    img = scene(3)
    regs = two_views(img, shift_b=2.0)
    pano = hard_seam(regs)
    pad_a, pad_b = ((0, 0), (0, 200)), ((0, 0), (200, 0))

    def gray(x: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(x, cv2.COLOR_BGR2GRAY)

    grays = [np.pad(gray(regs[0].image), pad_a), np.pad(gray(regs[1].image), pad_b)]
    masks = [np.pad(np.ones((H, 400), bool), pad_a), np.pad(np.ones((H, 400), bool), pad_b)]
    labels = label_map(gray(pano), grays, masks)
    assert (labels[:, :200] == 0).all() and (labels[:, 400:] == 1).all()
    assert (labels[:, 200:SEAM_X - 4] == 0).mean() > 0.95 and (labels[:, SEAM_X + 4:400] == 1).mean() > 0.95
    same = label_map(gray(img), [np.pad(gray(img[:, :400]), pad_a), np.pad(gray(img[:, 200:]), pad_b)], masks)
    assert (same[:, :298] == 0).all() and (same[:, 302:] == 1).all()  # agreeing views: the split falls at 300


def lab_shifted(img: np.ndarray, dL: float, da: float, db: float) -> np.ndarray:
    lab = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab) + np.float32([dL, da, db])
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2BGR) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def test_mixed_content():
    """b shows another scene on 100 x 60 px of the 200 x 300 px overlap (a moving object): a hard seam that takes
    it whole from b mixes nothing; a 50/50 blend of the overlap mixes most of where the two differ; where the
    views agree nothing differs and nothing is mixed."""
    img = scene(4)
    planted = img.copy()
    planted[100:200, 320:380] = scene(9)[100:200, 320:380]
    regs = two_views(img, b_pixels=planted)
    hard = visual_figures(hard_seam(regs), full(), regs, {})
    differ = hard.pairs[0]["differ_pct"]
    assert 2.0 < differ < 10.0 and hard.mixed_pct < 0.1 * differ, (differ, hard.mixed_pct)
    blended = hard_seam(regs)
    blended[:, 200:400] = ((regs[0].image[:, 200:].astype(np.uint16) + regs[1].image[:, :200]) // 2).astype(np.uint8)
    mixed = visual_figures(blended, full(), regs, {})
    # the rest: one content so faint beside the other that it hardly shows
    assert mixed.mixed_pct > 0.6 * differ, (differ, mixed.mixed_pct)
    same = two_views(img)
    f = visual_figures(hard_seam(same), full(), same, {})
    assert f.mixed_pct == 0.0 and f.pairs[0]["differ_pct"] == 0.0


def test_colour_step_known_offset():
    """b is a's scene moved by Lab (4, 3, 0) (Delta E76 = 5): a hard seam between them steps by ~5; the same seam
    with b's side compensated back (what the output shows matches a) steps by ~0."""
    img = (scene(4).astype(np.float32) * 0.5 + 64).astype(np.uint8)  # mid-tones: the offset stays in gamut
    other = lab_shifted(img, 4.0, 3.0, 0.0)
    regs = two_views(img, b_pixels=other)
    f = visual_figures(hard_seam(regs), full(), regs, {})
    assert f.colour_step_mean == pytest.approx(5.0, abs=0.3) and f.colour_step_p95 == pytest.approx(5.0, abs=0.4)
    fixed = visual_figures(hard_seam(regs, b_shown=img[:, 200:]), full(), regs, {})
    assert fixed.colour_step_p95 == pytest.approx(0.0, abs=0.4)


def test_invented_share_equals_the_planted_count():
    """Uncovered pixels: shown (non-black) ones are invented, black ones empty, in percent of the output."""
    img = scene(5)
    regs = two_views(img)
    regs[1].mask[:40, 350:] = False  # 40 x 50 px of b uncovered, in the output's corner (x 550..600)
    pano = img.copy()
    pano[:40, 580:] = 0  # 40 x 20 of them black (empty), 40 x 30 shown (invented)
    inv, emp, place = invented_empty(pano, regs)
    assert inv == pytest.approx(100 * 40 * 30 / (W * H)) and emp == pytest.approx(100 * 40 * 20 / (W * H))
    assert place is not None and place.kind == "invented" and place.value == 40 * 30
    assert 550 <= place.x < 580 and place.y < 40
    pano[:40, 550:] = 0
    assert invented_empty(pano, regs)[:2] == (0.0, pytest.approx(100 * 40 * 50 / (W * H)))


def test_straight_under_a_homography_and_a_known_bend():
    """Mapped by a homography a segment stays straight (0 px per 100 px); bent by a parabola of sagitta 3 px over
    a 300 px chord it bends 1 px per 100 px."""
    seg = np.array([[50.0, 100.0, 350.0, 100.0], [100.0, 40.0, 100.0, 240.0]])
    Hm = np.array([[1.1, 0.05, 10.0], [0.02, 0.95, 5.0], [2e-4, 1e-4, 1.0]])

    def homography(p: np.ndarray) -> np.ndarray:
        q = np.hstack([p, np.ones((len(p), 1))]) @ Hm.T
        return q[:, :2] / q[:, 2:]

    def parabola(p: np.ndarray) -> np.ndarray:
        t = (p[:, 0] - 50.0) / 300.0
        return np.stack([p[:, 0], p[:, 1] + 12.0 * t * (1 - t)], 1)  # 12 t (1 - t): 3 px at t = 1/2

    mask = full((400, 500))
    assert segment_bends(seg, homography, mask) == pytest.approx([0.0, 0.0], abs=1e-9)
    assert segment_bends(seg[:1], parabola, mask) == pytest.approx([1.0], abs=1e-9)
    assert bend_per_100(np.array([[0.0, 0.0], [50.0, 2.0], [100.0, 0.0]])) == pytest.approx(2.0)


def test_segments_are_found_and_clipped_to_the_output():
    """LSD finds a drawn line; samples off the output are dropped (the longest inside run is kept, if half)."""
    img = np.full((240, 320, 3), 40, np.uint8)
    cv2.line(img, (30, 120), (290, 120), (230, 230, 230), 3)
    segs = detect_segments(img)
    assert len(segs) >= 1 and abs(abs(segs[0, 2] - segs[0, 0]) - 260) < 8 and abs(segs[0, 1] - 120) < 3
    mask = full((240, 320))
    mask[:, 200:] = False  # the output shows only x < 200: 170 of the 260 px, over half
    assert segment_bends(segs[:1], lambda p: p, mask) == pytest.approx([0.0], abs=1e-6)
    mask[:, 120:] = False  # under half of the segment left: skipped
    assert segment_bends(segs[:1], lambda p: p, mask).size == 0
    assert longest_run(np.array([1, 1, 0, 1, 1, 1, 0], bool)) == slice(3, 6)


def test_straightness_and_map_check_of_a_method():
    """visual_figures maps each input's segments through its to_output, once per input, and checks the map."""
    img = scene(6)
    cv2.line(img, (20, 150), (380, 150), (255, 255, 255), 3)
    regs = two_views(img)
    regs[0].to_output = lambda p: np.asarray(p, np.float64)
    regs[1].to_output = lambda p: np.asarray(p, np.float64) + [200.0, 0.0]
    f = visual_figures(img, full(), regs, {"a": img[:, :400], "b": img[:, 200:]})
    assert f.segments >= 2 and f.bend_max == pytest.approx(0.0, abs=1e-6) and f.map_check == 0.0
    regs[1].to_output = lambda p: np.asarray(p, np.float64) + [190.0, 0.0]  # a wrong map: the check sees it
    assert visual_figures(img, full(), regs, {"a": img[:, :400], "b": img[:, 200:]}).map_check > 5


def test_weighted_quantiles_and_texture():
    v = np.array([1.0, 2.0, 3.0, 4.0])
    assert weighted_quantiles(v, np.ones(4), [0.5, 0.95]) == [2.0, 4.0]
    assert weighted_quantiles(v, np.array([1.0, 1.0, 1.0, 9.0]), [0.5]) == [4.0]  # a sample standing for 9 px
    assert weighted_quantiles(np.zeros(0), np.zeros(0), [0.5]) == [None]
    flat = np.full((64, 64), 120, np.uint8)
    edge = flat.copy()
    edge[:, 32:] = 200  # a lone straight edge: no 2-D structure (the aperture problem)
    assert texture_energy(flat).max() < 1e-3 and texture_energy(edge).max() < 0.5
    assert np.median(texture_energy(cv2.cvtColor(scene(7), cv2.COLOR_BGR2GRAY))) > 1.0


def test_exception():
    """Nothing to pair, nothing to measure: the figures are None, not errors."""
    img = scene(8)
    regs = [Registered("a", img, full(), (0, 0))]
    f = visual_figures(img, full(), regs, {})
    assert f.flow_p50 is None and f.ghost_p95 is None and f.colour_step_p95 is None and f.pairs == []
    assert f.invented_pct == 0.0 and f.bend_max is None and f.segments == 0 and f.map_check is None


def test_worst_places_sheet(tmp_path):
    """Crops at 100 % around each place (kept inside the panorama), then one row per set, a cell per method."""
    img = scene(9)
    crop = crop_at(img, 10, 10, 160)
    assert crop.shape == (160, 160, 3) and np.array_equal(crop[20:140, 20:140], img[20:140, 20:140])
    assert crop_at(img[:100, :100], 50, 50, 160)[0, 0].tolist() == [128, 128, 128]  # beyond a small panorama
    places = [Place("ghost", 300, 150, 2.5), Place("colour", 310, 40, 4.0), Place("empty", 590, 290, 12.0)]
    written = write_place_crops(img, places, tmp_path / "run")
    assert [p["kind"] for p in written] == ["ghost", "colour", "empty"] and all(
        (tmp_path / "run" / f"worst_{k}.png").exists() for k in ("ghost", "colour", "empty"))
    out = worst_places_sheet(["s1", "s2"], ["stitch", "opencv"], {("s1", "stitch"): written,
                                                                  ("s1", "opencv"): "failed: status 3"},
                             tmp_path / "worst_places.png")
    sheet = cv2.imread(str(out))
    assert sheet.shape[0] > 2 * 160 and sheet.shape[1] > 2 * len(PLACE_KINDS) * 160
    assert sheet[45:200, 155:640].std() > 10  # the stitch cell of s1 holds the crops
