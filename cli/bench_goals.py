"""The goals that `stitch bench` checks its figures against: the project's targets, not the library's.

Each benchmark module in ``stitch.bench`` measures; this module says what counts as reached, and which set
stands for what (``DEFAULT_MEMORY_SET``). ``stitch bench ... --json`` adds the goals to the document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stitch.batch.backends import BACKENDS
from stitch.bench.batch import BAD_SETS, WORKER_COUNTS, BatchBenchResult
from stitch.bench.homography import METHOD_STITCH
from stitch.bench.panorama import (
    METHOD_OS,
    METHOD_OS_SIFT,
    ORDER_TOLERANCE,
    PEER_METHODS,
    PanoramaBenchResult,
    PanoramaRow,
)
from stitch.bench.synthetic import (
    METHOD_CLASSICAL_DEEP,
    METHOD_DEEP,
    METHOD_DEEP_ECC,
    METHOD_DEEP_IDENTITY,
    METHOD_ECC,
    METHOD_ECC_ECC,
    REGIME_DETONE,
    REGIME_REFINER,
    SyntheticResult,
    worse_than_ecc,
)

#: The panorama set whose peak memory is compared with the peers'.
DEFAULT_MEMORY_SET = "opencv_boat"
#: HomographyNet's published mean corner error on the DeTone protocol (px).
HOMOGRAPHYNET_MACE = 9.2
#: Batch (issue 15): throughput with 2 workers over 1, Ray's time per set over local's minus 1, and the
#: coordinator's peak RSS growth from the smallest to the largest tree, as a fraction of the smallest's.
BATCH_SPEEDUP = 1.8
BATCH_RAY_OVERHEAD = 0.05
BATCH_MEMORY_GROWTH = 0.05
#: Issue 13: where OpenStitching keeps every image, stitch's canvas (cropped by the same rule, the largest
#: valid rectangle) is within this fraction of its width and height.
CANVAS_TOLERANCE = 0.05
#: Issue 21, what a user sees (stitch.bench.visual): seam-band ghosting p95 (px), invented share (%), the worst
#: segment's bend (px per 100 px), and the colour step p95 (CIE76 Delta E) on COLOUR_STEP_SET.
GHOST_P95_PX = 1.0
INVENTED_PCT = 0.0
BEND_PER_100 = 1.0
COLOUR_STEP_DE = 3.0
COLOUR_STEP_SET = "exposure_error"


@dataclass
class Goal:
    """One goal: what, whether it is reached (None: not measurable, or a control with no target), the numbers."""

    name: str
    reached: bool | None
    detail: str


def _whole(result: PanoramaBenchResult, set_name: str, method: str) -> PanoramaRow | None:
    """``method``'s row on ``set_name`` when it succeeded with every image kept (distractors aside), else None.

    A peer that drops photos is scored on fewer, easier overlaps (OpenStitching keeps 5 of denny's 15), so
    its quality figures are not a like-for-like baseline.
    """
    r = result.row(set_name, method)
    return r if r is not None and r.ok and r.distractors_dropped else None


def panorama_goals(result: PanoramaBenchResult, memory_set: str = DEFAULT_MEMORY_SET) -> list[Goal]:
    """Success, overlap quality and seam visibility against the peers (where they stitch every image), time,
    and peak memory on ``memory_set``."""
    if METHOD_STITCH not in result.methods:
        return []
    ours = {s: result.row(s, METHOD_STITCH) for s in result.sets}
    peers = [m for m in result.methods if m in PEER_METHODS]
    out = []
    bad = [s for s, r in ours.items() if not (r and r.ok and r.distractors_dropped)]
    out.append(Goal("success on every set, every image kept except the distractors (*_noise)", not bad,
                      "all sets" if not bad else "not on: " + ", ".join(bad)))
    for key, label in (("ssim", "overlap SSIM"), ("psnr", "overlap PSNR"), ("ssim_udis", "UDIS SSIM"),
                       ("psnr_udis", "UDIS PSNR")):
        worse, n = [], 0
        for s in result.sets:
            vals = [getattr(r, key) for m in peers if (r := _whole(result, s, m)) and getattr(r, key) is not None]
            if not vals:
                continue
            n += 1
            mine = getattr(ours[s], key) if ours[s] and ours[s].ok else None
            if mine is None or mine < max(vals) - 1e-9:
                worse.append(f"{s} ({'—' if mine is None else f'{mine:.3f}'} < {max(vals):.3f})")
        out.append(Goal(f"{label} >= the best peer's on every set a peer stitches whole ({n} sets)",
                          None if n == 0 else not worse, "below on: " + "; ".join(worse) if worse else "on all"))
    worse, n = [], 0
    for s in result.sets:
        vals = [r.seam_visibility for m in peers if (r := _whole(result, s, m)) and r.seam_visibility is not None]
        if not vals:
            continue
        n += 1
        mine = ours[s].seam_visibility if ours[s] and ours[s].ok else None
        if mine is None or mine >= min(vals):
            worse.append(f"{s} ({'—' if mine is None else f'{mine:.2f}'} >= {min(vals):.2f})")
    out.append(Goal(f"seam visibility below every peer's on every set a peer stitches whole ({n} sets)",
                      None if n == 0 else not worse, "not below on: " + "; ".join(worse) if worse else "on all"))
    out += [g for m in (METHOD_OS, METHOD_OS_SIFT) if m in result.methods and (g := canvas_goal(result, m))]
    out += visual_goals(result)
    if result.order_runs:
        out.append(order_goal(result))
    tot = result.totals()
    if METHOD_OS_SIFT in tot and "vs_stitch" in tot[METHOD_OS_SIFT]:
        v = tot[METHOD_OS_SIFT]["vs_stitch"]
        out.append(Goal(f"total time <= openstitching-sift over the {len(v['sets'])} sets both succeed on",
                          v["seconds_stitch"] <= v["seconds_peer"] if v["sets"] else None,
                          f"stitch {v['seconds_stitch']:.1f} s vs {v['seconds_peer']:.1f} s"))
    mine = ours.get(memory_set)
    for m in (METHOD_OS, METHOD_OS_SIFT):
        peer = result.row(memory_set, m)
        if mine is None or peer is None or mine.peak_mb is None or peer.peak_mb is None:
            continue
        out.append(Goal(f"peak memory on {memory_set} <= {m}'s", mine.ok and mine.peak_mb <= peer.peak_mb,
                          f"stitch {mine.peak_mb:.0f} MB vs {peer.peak_mb:.0f} MB"
                          + ("" if peer.ok else " (the peer failed; its figure is a lower bound)")))
    return out


def _bound_goal(result: PanoramaBenchResult, key: str, bound: float, label: str, sets: Sequence[str]) -> Goal | None:
    """stitch's figure ``key`` at most ``bound`` on every set of ``sets`` where it stitched and the figure is
    measurable (a set with nothing to measure, e.g. no line segment, is named apart); None: no such set."""
    rows = [(s, r) for s in sets if (r := result.row(s, METHOD_STITCH)) is not None and r.ok]
    vals = [(s, v) for s, r in rows if (v := getattr(r.visual, key)) is not None]
    if not vals:
        return None
    bad = [f"{s} ({v:.2f})" for s, v in vals if v > bound]
    detail = "above on: " + "; ".join(bad) if bad else "on all"
    missing = [s for s, r in rows if getattr(r.visual, key) is None]
    if missing:
        detail += "; not measurable on: " + ", ".join(missing)
    return Goal(f"{label} ({len(vals)} sets)", not bad, detail)


def visual_goals(result: PanoramaBenchResult) -> list[Goal]:
    """Issue 21 (stitch.bench.visual): seam-band ghosting p95 <= GHOST_P95_PX and no higher than any peer's where
    it stitches whole; no invented pixels; no segment bent more than BEND_PER_100; colour step on COLOUR_STEP_SET."""
    out = [g for g in (
        _bound_goal(result, "ghost_p95", GHOST_P95_PX, f"seam-band ghosting p95 <= {GHOST_P95_PX:g} px on every set",
                    result.sets),
        _bound_goal(result, "invented_pct", INVENTED_PCT, f"invented pixels {INVENTED_PCT:g} % on every set",
                    result.sets),
        _bound_goal(result, "bend_max", BEND_PER_100,
                    f"no segment bends more than {BEND_PER_100:g} px per 100 px on any set", result.sets),
        _bound_goal(result, "colour_step_p95", COLOUR_STEP_DE,
                    f"colour step across seams p95 <= {COLOUR_STEP_DE:g} Delta E76 on {COLOUR_STEP_SET}",
                    [s for s in result.sets if s == COLOUR_STEP_SET])) if g is not None]
    worse, n = [], 0
    peers = [m for m in result.methods if m in PEER_METHODS]
    for s in result.sets:
        vals = [r.visual.ghost_p95 for m in peers if (r := _whole(result, s, m)) and r.visual.ghost_p95 is not None]
        mine = result.row(s, METHOD_STITCH)
        if not vals or mine is None:
            continue
        n += 1
        g = mine.visual.ghost_p95
        if not mine.ok or g is None or g > min(vals):
            worse.append(f"{s} ({'—' if g is None else f'{g:.2f}'} > {min(vals):.2f})")
    if n:
        out.insert(1, Goal(f"seam-band ghosting p95 no higher than any peer's on every set a peer stitches whole "
                           f"({n} sets)", not worse, "higher on: " + "; ".join(worse) if worse else "on all"))
    return out


def canvas_goal(result: PanoramaBenchResult, peer: str) -> Goal | None:
    """Issue 13: canvas width and height within CANVAS_TOLERANCE of ``peer``'s where it keeps every image.

    stitch's canvas is taken under the peer's crop rule (``size_rect``: the largest valid rectangle); its own
    default crop ('rect') is that rule. None when no set qualifies.
    """
    bad, n = [], 0
    for s in result.sets:
        mine, theirs = result.row(s, METHOD_STITCH), result.row(s, peer)
        if not (theirs and theirs.ok and theirs.distractors_dropped and theirs.size):
            continue
        n += 1
        if not (mine and mine.ok and mine.size_rect):
            bad.append(f"{s} (no canvas)")
            continue
        dw, dh = (mine.size_rect[k] / theirs.size[k] - 1 for k in (0, 1))
        if max(abs(dw), abs(dh)) > CANVAS_TOLERANCE:
            bad.append(f"{s} ({100 * dw:+.1f} % x {100 * dh:+.1f} %)")
    if n == 0:
        return None
    return Goal(f"canvas (same crop rule) within {100 * CANVAS_TOLERANCE:g} % of {peer}'s where it keeps every image "
                f"({n} sets)", not bad, "off on: " + "; ".join(bad) if bad else "on all")


def order_goal(result: PanoramaBenchResult) -> Goal:
    """Issue 13: canvas size and focal within ORDER_TOLERANCE across the input orders, on every set run so."""
    bad, n = [], 0
    for s in result.sets:
        runs = result.order_runs.get(s, {})
        if len(runs) < 2:
            continue
        n += 1
        failed = [o for o, r in runs.items() if not r.get("ok")]
        worst = max((v for v in result.order_spread(s).values() if v is not None), default=None)
        if failed or worst is None or worst > ORDER_TOLERANCE:
            bad.append(f"{s} (" + (f"failed: {', '.join(failed)}" if failed else
                                   f"spread {'—' if worst is None else f'{100 * worst:.2f} %'}") + ")")
    orders = ", ".join(next(iter(result.order_runs.values())))
    return Goal(f"order invariance: canvas size and focal within {100 * ORDER_TOLERANCE:g} % across {orders} "
                f"({n} sets)", None if n == 0 else not bad, "not on: " + "; ".join(bad) if bad else "on all")


def synthetic_goals(result: SyntheticResult) -> list[Goal]:
    """The learned refiner's figures, from whatever methods were run."""
    by = {(s.regime, s.method): s for ss in result.summaries.values() for s in ss}
    out: list[Goal] = []
    d = by.get((REGIME_DETONE, METHOD_DEEP_IDENTITY))
    if d:
        out.append(Goal(f"detone: deep from identity, mean MACE < {HOMOGRAPHYNET_MACE} px (HomographyNet)",
                        d.mean < HOMOGRAPHYNET_MACE, f"{d.mean:.3f} px"))
    c = by.get((REGIME_DETONE, METHOD_CLASSICAL_DEEP))
    if c:
        out.append(Goal("detone: classical+deep, mean MACE <= 1.0 px", c.mean <= 1.0, f"{c.mean:.3f} px"))
        out.append(Goal("detone: classical+deep, failures (> 3 px) <= 3%", c.failures <= 0.03, f"{c.failures:.1%}"))
    r, e = by.get((REGIME_REFINER, METHOD_DEEP)), by.get((REGIME_REFINER, METHOD_ECC))
    if r:
        out.append(Goal("refiner: deep, median MACE <= 0.5 px", r.median <= 0.5, f"{r.median:.3f} px"))
    if r and e and e.median_seconds > 0:
        ratio = r.median_seconds / e.median_seconds
        out.append(Goal("refiner: deep time / ECC time (medians; no target)", None, f"{ratio:.3f}"))
    control = by.get((REGIME_REFINER, METHOD_ECC_ECC)) and e
    n_control = worse_than_ecc(result.rows, METHOD_ECC_ECC) if control else None
    if by.get((REGIME_REFINER, METHOD_DEEP_ECC)) and e:
        n = worse_than_ecc(result.rows, METHOD_DEEP_ECC)
        de = by[(REGIME_REFINER, METHOD_DEEP_ECC)]
        out.append(Goal("refiner: pairs where deep+ECC is worse than ECC by > 0.05 px, at most the ECC+ECC control's",
                        None if n_control is None else n <= n_control,
                        f"{n} pairs" + ("" if n_control is None else f" (control: {n_control})")))
        out.append(Goal("refiner: deep+ECC mean MACE <= ECC mean MACE", de.mean <= e.mean,
                        f"{de.mean:.3f} vs {e.mean:.3f} px"))
    if n_control is not None:
        out.append(Goal("refiner (control): pairs where ECC+ECC is worse than ECC by > 0.05 px", None,
                        f"{n_control} pairs"))
    return out


def batch_goals(result: BatchBenchResult) -> list[Goal]:
    """Scaling per backend, Ray's per-set overhead, crash and resume, flat coordinator memory, bad sets."""
    out = []
    for b in BACKENDS:
        s = result.speedup(b)
        if s is not None:
            out.append(Goal(f"{b}: throughput with 2 workers >= {BATCH_SPEEDUP}x 1 worker", s >= BATCH_SPEEDUP,
                            f"{s:.2f}x"))
    for w in WORKER_COUNTS:
        o = result.ray_overhead(w)
        if o is not None:
            out.append(Goal(f"Ray's time per set <= local's + {BATCH_RAY_OVERHEAD:.0%} ({w} worker(s))",
                            o <= BATCH_RAY_OVERHEAD, f"{o:+.1%}"))
    c = result.crash
    if c is not None:
        out.append(Goal(f"kill -9 x{len(c.kill_after_s)} and resume: every set once, identical outputs, no partial "
                        "files", c.passed, f"{c.records}/{c.sets} records; {len(c.duplicates)} twice, "
                        f"{len(c.different_outputs)} outputs differ, {len(c.partial_files) + len(c.stray_files)} "
                        "stray files"))
    if len(result.memory_mb) >= 2:
        lo, hi = min(result.memory_mb), max(result.memory_mb)
        growth = result.memory_mb[hi] - result.memory_mb[lo]
        out.append(Goal(f"coordinator memory flat from {lo} to {hi} sets (growth <= {BATCH_MEMORY_GROWTH:.0%})",
                        growth <= BATCH_MEMORY_GROWTH * result.memory_mb[lo],
                        f"{result.memory_mb[lo]:.1f} -> {result.memory_mb[hi]:.1f} MB"))
    if result.bad_sets:
        out.append(Goal("each bad set failed with a one-line reason, the batch went on", result.bad_ok,
                        f"{len(result.bad_sets)} of {len(BAD_SETS)}"))
    return out


def goals_table_rows(goals: Sequence[Goal]) -> list[list[str]]:
    """name | reached (yes / no / -) | detail, as plain strings."""
    return [[g.name, "-" if g.reached is None else ("yes" if g.reached else "no"), g.detail] for g in goals]
