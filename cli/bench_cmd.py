"""`stitch bench ...`: run the benchmark protocols and print rich tables (helpers in stitch.cli.console).

Each subcommand prints the project's figures beside the baselines and, where the project has goals for
them, a goals table (stitch.cli.bench_goals).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from stitch.cli.bench_goals import (
    DEFAULT_MEMORY_SET,
    Goal,
    batch_goals,
    goals_table_rows,
    panorama_goals,
    synthetic_goals,
)
from stitch.cli.console import (
    emit_json,
    fmt_num,
    fmt_threshold,
    make_table,
    progress_bar,
    results_console,
)
from stitch.cli.options import json_option, key_values, preset_option, seed_option

from stitch.batch.backends import BACKENDS as BATCH_BACKENDS
from stitch.bench.homography import (
    BASELINE_METHODS,
    DEFAULT_HOMOGRAPHY_METHODS,
    HOMOGRAPHY_METHOD_CHOICES,
    HOMOGRAPHY_ROW_ORDER,
    METHOD_SELECT_INLIERS,
    METHOD_SELECT_SCORE,
    METHOD_SIFT_MAGSAC,
    METHOD_SIFT_RANSAC,
    METHOD_STITCH,
    METHOD_STITCH_DEEP,
    REGRESSION_THRESHOLD,
    BenchResult,
    MethodSummary,
    refiner_check,
    run_homography_bench,
)
from stitch.bench.panorama import (
    DEFAULT_TIMEOUT_S,
    GROWTH_COUNTS,
    ORDER_CHOICES,
    PANORAMA_METHOD_CHOICES,
    REGISTRATION_NOTES,
    run_growth,
    run_panorama_bench,
)
from stitch.bench.synthetic import DEFAULT_PAIRS, REGIME_CHOICES, SPLIT_CHOICES, run_synthetic_bench
from stitch.errors import StitchError


def metric_summary_table(title: str, summaries: Sequence[MethodSummary]) -> Table:
    """method | pairs | ok@t... | AUC@t... | median err (px) | median s | total s."""
    thresholds = list(summaries[0].ok) if summaries else []
    columns = (
        ["method", "pairs"]
        + [f"ok@{fmt_threshold(t)}" for t in thresholds]
        + [f"AUC@{fmt_threshold(t)}" for t in thresholds]
        + ["median err (px)", "median s", "total s"]
    )
    rows = [
        [escape(s.method), str(s.pairs)]
        + [fmt_num(s.ok[t], 3) for t in thresholds]
        + [fmt_num(s.auc[t], 3) for t in thresholds]
        + [fmt_num(s.median_error, 2), fmt_num(s.median_seconds, 2), fmt_num(s.total_seconds, 1)]
        for s in summaries
    ]
    return make_table(title, columns, rows)


def print_goals(goals: Sequence[Goal], console: Console) -> None:
    """The goals table: goal | reached | detail (nothing when no goal applies to this run)."""
    if goals:
        rows = [[escape(n), "[red]no[/red]" if r == "no" else r, escape(d)] for n, r, d in goals_table_rows(goals)]
        console.print(make_table("goals", ["goal", "reached", "detail"], rows))


def with_goals(doc: dict[str, Any], goals: Sequence[Goal]) -> dict[str, Any]:
    """The benchmark's JSON document with its goals added under "goals"."""
    return {**doc, "goals": [asdict(g) for g in goals]}


# --- homography ------------------------------------------------------------------------------------

#: Column labels of the per-pair table (the summary tables use the full method names).
SHORT_LABELS = {
    METHOD_STITCH: "stitch",
    METHOD_STITCH_DEEP: "stitch+deep",
    METHOD_SELECT_SCORE: "by score (raw)",
    METHOD_SELECT_INLIERS: "by inliers (raw)",
    METHOD_SIFT_RANSAC: "SIFT+RANSAC",
    METHOD_SIFT_MAGSAC: "SIFT+MAGSAC",
}


def per_pair_table(result: BenchResult, threshold: float = REGRESSION_THRESHOLD) -> Table:
    """One row per pair: the error (px) of every method (red above ``threshold``), and seconds."""
    methods = [m for m in HOMOGRAPHY_ROW_ORDER if any(r.method == m for r in result.rows)]
    secs: dict[tuple[str, str, str], float] = {(r.subset, r.name, r.method): r.seconds for r in result.rows}
    timed = [m for m in (METHOD_STITCH, METHOD_SIFT_MAGSAC) if m in methods]
    rows = []
    for (subset, name), errs in result.errors_by_pair().items():
        cells = [escape(subset), escape(name)]
        for m in methods:
            e = errs.get(m)
            text = fmt_num(e, 2)
            cells.append(f"[red]{text}[/red]" if e is not None and not e <= threshold else text)
        cells += [fmt_num(secs.get((subset, name, m)), 2) for m in timed]
        rows.append(cells)
    columns = ["subset", "pair"] + [SHORT_LABELS.get(m, m) for m in methods]
    columns += [f"{SHORT_LABELS.get(m, m)} s" for m in timed]
    return make_table("per-pair error (px; red: above the threshold)", columns, rows, left_columns=2)


def print_homography_result(result: BenchResult, console: Console, per_pair: bool = False) -> None:
    """The per-subset and overall tables, then the regression list and the time ratio."""
    if per_pair:
        console.print(per_pair_table(result))
    for key, summaries in result.summaries.items():
        n = summaries[0].pairs if summaries else 0
        console.print(metric_summary_table(f"homography: {key} ({n} pairs)", summaries))
    t = fmt_threshold(REGRESSION_THRESHOLD)
    head = f"regressions (a baseline <= {t} px, stitch not):"
    if METHOD_STITCH not in result.methods or not any(m in result.methods for m in BASELINE_METHODS):
        console.print(f"{head} n/a (needs stitch and a baseline)")
    elif result.regressions:
        console.print(f"{head} {len(result.regressions)}")
        for reg in result.regressions:
            base = ", ".join(f"{m} {fmt_num(e)}" for m, e in reg.baseline_errors.items())
            console.print(f"  {reg.subset}/{reg.name}: stitch {fmt_num(reg.project_error)} px; {base} px")
    else:
        console.print(f"{head} none")
    ratio = result.time_ratio_vs_magsac
    console.print(f"median time ratio vs SIFT+MAGSAC: {'n/a' if ratio is None else f'{ratio:.2f}'}")
    chk = refiner_check(result.rows)
    if chk is not None:
        console.print(f"stitch+deep vs stitch on {chk.pairs} pairs: quality score lower on {len(chk.score_lower)}, "
                      f"higher on {len(chk.score_higher)}; error worse by > 0.01 px on {len(chk.error_worse)}, "
                      f"better on {len(chk.error_better)}")
        for label in chk.score_lower + chk.error_worse:
            console.print(f"  {label}")
    if result.gt_checks:
        bad = [c for c in result.gt_checks if c.inconsistent]
        console.print(f"ground truth vs the images (median residual on SIFT matches within 5 px of H_gt): "
                      f"{len(bad)} of {len(result.gt_checks)} pairs have an H_gt that leaves > 2x (and > 1 px) "
                      "the residual of a homography fitted to the same matches")
        for c in bad:
            console.print(f"  {c.subset}/{c.name}: H_gt {fmt_num(c.gt_residual, 2)} px vs fitted "
                          f"{fmt_num(c.fit_residual, 2)} px on {c.matches} matches")


@click.group(
    help="Run the benchmark protocols and print tables of the results beside the baselines.\n\n"
    "homography: real image pairs with ground-truth homographies (oxford_affine, homogr); "
    "reports ok@3/5/10 px, AUC@3/5/10, median error and time, against OpenCV SIFT baselines."
)
def bench() -> None:
    """The `stitch bench` group."""


@bench.command("homography")
@click.argument("directory", type=click.Path(path_type=Path))
@seed_option("Seed passed to the estimator.")
@preset_option(help="Estimator preset.")
@json_option("Also write the full result (summaries and per-pair rows) as JSON to this file ('-': stdout).")
@click.option("--per-pair", is_flag=True, help="Print the per-pair error table too.")
@click.option("--check-gt", is_flag=True,
              help="Also check how well each H_gt fits the images (untimed diagnostic; flags biased GT).")
@click.option("--exact-gt", "control", is_flag=True,
              help="Also run each pair's exact-GT twin: both images rendered from its src image (dst by H_gt, "
              "with gain, offset and noise), summarised apart, so the estimators' own error shows.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Only the first N pairs of each subset (quick runs).",
)
@click.option(
    "--method",
    "methods",
    type=click.Choice(HOMOGRAPHY_METHOD_CHOICES),
    multiple=True,
    help="Run only these methods (repeatable; default: all but stitch+deep, the pipeline with the learned "
    "refiner, which needs torch). 'stitch' includes the two raw selector rows.",
)
def homography_cmd(
    directory: Path,
    seed: int,
    preset: str,
    json_path: Path | None,
    per_pair: bool,
    limit: int | None,
    methods: tuple[str, ...],
    check_gt: bool,
    control: bool,
) -> None:
    """Homography accuracy on DIRECTORY (homography_gt, or its oxford_affine/ or homogr/ folder).

    Errors: oxford = mean corner error of image 1 mapped by H_est vs H_gt; homogr = mean error on
    the annotated points. Baselines: SIFT + ratio 0.8 + findHomography RANSAC / USAC_MAGSAC at 3 px.
    """
    try:
        with progress_bar("homography") as progress:
            result = run_homography_bench(
                directory,
                methods=methods or DEFAULT_HOMOGRAPHY_METHODS,
                options={"preset": preset},
                seed=seed,
                progress=progress,
                limit=limit,
                check_gt=check_gt,
                control=control,
            )
        print_homography_result(result, results_console(json_path), per_pair=per_pair)
        emit_json(json_path, result.to_json)
    except StitchError as exc:
        raise click.ClickException(str(exc)) from None


# --- synthetic -------------------------------------------------------------------------------------


def synthetic_table(title: str, summaries: Sequence[Any]) -> Table:
    """method | pairs | mean | median | p90 | <=1 px | fail >3 px | no result | mean s | median s."""
    columns = ["method", "pairs", "mean MACE (px)", "median", "p90", "<=1 px", "fail >3 px", "no result",
               "mean s", "median s"]
    rows = [[escape(s.method), str(s.pairs), fmt_num(s.mean, 2), fmt_num(s.median, 2), fmt_num(s.p90, 2),
             fmt_num(s.ok1, 3), fmt_num(s.failures, 3), str(s.no_result), fmt_num(s.mean_seconds, 4),
             fmt_num(s.median_seconds, 4)] for s in summaries]
    return make_table(title, columns, rows)


def print_synthetic_result(result: Any, console: Console) -> None:
    """One table per regime, then the goals (reached or not) and notes."""
    titles = {"detone": "DeTone regime: 320x240, 128x128 patch, rho=32, start = identity",
              "refiner": "refiner regime: start off by <= 8 px at the corners, photometric change"}
    for regime, summaries in result.summaries.items():
        console.print(synthetic_table(f"synthetic, {result.split} split: {titles.get(regime, regime)} "
                                      f"({result.pairs} pairs)", summaries))
    print_goals(synthetic_goals(result), console)
    for n in result.notes:
        console.print(f"note: {n}", markup=False)


@bench.command("synthetic")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--pairs", type=click.IntRange(min=1), default=DEFAULT_PAIRS, show_default=True,
              help="Pairs per regime (pair k uses image k mod n).")
@seed_option("Seed of the pair generator and estimators.")
@click.option("--regime", "regimes", type=click.Choice(REGIME_CHOICES), multiple=True,
              help="Run only this regime (repeatable; default: both).")
@click.option("--method", "methods", multiple=True,
              help="Run only these methods (repeatable; default: all of each regime).")
@click.option("--sets", default=None, help="Comma-separated set names (first-level folders of DIRECTORY) to use.")
@click.option("--split", type=click.Choice(SPLIT_CHOICES), default="standard", show_default=True,
              help="How pairs are drawn: the DeTone protocol at random places, or low-texture places with haze "
                   "and an exposure change.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Refiner weights for the deep methods (default: the shipped ones).")
@click.option("--iterations", type=click.IntRange(min=1), default=None, help="Deep refiner passes (default: its own).")
@preset_option(default=None, help="Pipeline preset (default: the pipeline's).")
@json_option("Also write the summaries, goals and per-pair rows as JSON to this file ('-': stdout).")
def synthetic_cmd(directory: Path, pairs: int, seed: int, regimes: tuple[str, ...], methods: tuple[str, ...],
                  sets: str | None, split: str, weights: Path | None, iterations: int | None, preset: str | None,
                  json_path: Path | None) -> None:
    """MACE on synthetic pairs from the images in DIRECTORY (DeTone protocol and the refiner regime).

    DeTone regime: SIFT+RANSAC, ECC from identity, classical, classical+ECC, deep from identity,
    classical+deep. Refiner regime: start, ECC, deep, deep with all stages, deep+ECC, and ECC+ECC (ECC
    again from its own result, a control for how much ECC's end point moves with its start). A method that
    gives no matrix keeps its start matrix. Use images the refiner never trained on (see
    stitch/deep/weights/README.md).
    """
    try:
        with progress_bar("synthetic") as progress:
            result = run_synthetic_bench(
                directory, pairs=pairs, seed=seed, regimes=regimes or REGIME_CHOICES,
                methods=methods or None, sets=[s.strip() for s in sets.split(",") if s.strip()] if sets else None,
                weights=weights, iterations=iterations, preset=preset, progress=progress, split=split)
        print_synthetic_result(result, results_console(json_path))
        emit_json(json_path, lambda: with_goals(result.to_json(), synthetic_goals(result)))
    except StitchError as exc:
        raise click.ClickException(str(exc)) from None


# --- panorama --------------------------------------------------------------------------------------


def panorama_set_table(result: Any, set_name: str) -> Table:
    """method | ok | kept/given | s | peak MB | size | focal | PSNR | SSIM | PSNR udis | SSIM udis | seam vis | pairs |
    placement px (the largest edge residual after the adjustment, work resolution; stitch only) | placement min
    (the lowest per-image photometric agreement on the output, every method)."""
    columns = ["method", "ok", "kept/given", "seconds", "peak MB", "size", "focal", "PSNR", "SSIM", "PSNR udis",
               "SSIM udis", "seam vis", "pairs", "place px", "place min"]
    rows = []
    for m in result.methods:
        r = result.row(set_name, m)
        if r is None:
            continue
        ok = "yes" if r.ok else ("[red]timeout[/red]" if r.timed_out else "[red]no[/red]")
        kept = f"{r.kept}/{r.given}" + ("" if r.distractors_dropped or not r.ok else " [yellow]![/yellow]")
        size = f"{r.size[0]} x {r.size[1]}" if r.size else "—"
        rows.append([escape(m), ok, kept, fmt_num(r.seconds, 1), fmt_num(r.peak_mb, 0), size, fmt_num(r.focal, 0),
                     fmt_num(r.psnr, 2),
                     fmt_num(r.ssim, 4), fmt_num(r.psnr_udis, 2), fmt_num(r.ssim_udis, 4),
                     fmt_num(r.seam_visibility, 2), str(r.pairs), fmt_num(r.placement_px, 2),
                     fmt_num(r.placement_min, 2)])
    return make_table(f"panorama: {set_name}", columns, rows)


def panorama_visual_table(result: Any, set_name: str) -> Table:
    """What a user sees (stitch.bench.visual): method | overlap flow p50 / p95 px | seam-band ghosting p50 / p95 px |
    mixed content % | invented % | empty % | colour step Delta E76 p95 / mean | bend px per 100 px, max / p95 |
    segments | map check."""
    columns = ["method", "flow p50/p95", "ghost p50/p95", "mixed %", "invented %", "empty %", "dE p95/mean",
               "bend max/p95", "segments", "map check"]
    rows = []
    for m in result.methods:
        row = result.row(set_name, m)
        if row is None or not row.ok:
            continue
        r = row.visual
        rows.append([escape(m), f"{fmt_num(r.flow_p50, 2)} / {fmt_num(r.flow_p95, 2)}",
                     f"{fmt_num(r.ghost_p50, 2)} / {fmt_num(r.ghost_p95, 2)}", fmt_num(r.mixed_pct, 1),
                     fmt_num(r.invented_pct, 3),
                     fmt_num(r.empty_pct, 3), f"{fmt_num(r.colour_step_p95, 2)} / {fmt_num(r.colour_step_mean, 2)}",
                     f"{fmt_num(r.bend_max, 2)} / {fmt_num(r.bend_p95, 2)}", str(r.segments), fmt_num(r.map_check, 0)])
    return make_table(f"what a user sees: {set_name}", columns, rows)


def print_panorama_result(result: Any, console: Console, memory_set: str = DEFAULT_MEMORY_SET) -> None:
    """A table per set, the totals, the goals, failures, and how each figure was obtained."""
    if result.stitch_options:
        console.print("method stitch ran with " + ", ".join(f"{k}={v!r}" for k, v in result.stitch_options.items()),
                      markup=False)
    for s in result.sets:
        console.print(panorama_set_table(result, s))
        console.print(panorama_visual_table(result, s))
    totals = result.totals()
    rows = [[escape(m), f"{t['sets_ok']}/{t['sets']}", f"{t['kept']}/{t['given']}", fmt_num(t["seconds_all_ok"], 1),
             fmt_num(t["mean_psnr"], 2), fmt_num(t["mean_ssim"], 4), fmt_num(t["mean_psnr_udis"], 2),
             fmt_num(t["mean_ssim_udis"], 4), fmt_num(t["mean_seam_visibility"], 2)] for m, t in totals.items()]
    console.print(make_table("panorama totals (means over each method's successful sets)",
                             ["method", "sets ok", "kept/given", "total s", "PSNR", "SSIM", "PSNR udis", "SSIM udis",
                              "seam vis"], rows))
    head = []
    for m, t in totals.items():
        v = t.get("vs_stitch")
        if v is None:
            continue
        head.append([escape(m), str(len(v["sets"])), fmt_num(v["seconds_stitch"], 1), fmt_num(v["seconds_peer"], 1),
                     f"{fmt_num(v['ssim_stitch'], 4)} / {fmt_num(v['ssim_peer'], 4)}",
                     f"{fmt_num(v['psnr_stitch'], 2)} / {fmt_num(v['psnr_peer'], 2)}",
                     f"{fmt_num(v['seam_visibility_stitch'], 2)} / {fmt_num(v['seam_visibility_peer'], 2)}"])
    if head:
        console.print(make_table("stitch vs each peer, over the sets both succeed on",
                                 ["peer", "sets", "stitch s", "peer s", "SSIM stitch/peer", "PSNR stitch/peer",
                                  "seam vis stitch/peer"], head))
    if result.order_runs:
        orows = []
        for s_name, runs in result.order_runs.items():
            spread = result.order_spread(s_name)
            for o, r in runs.items():
                size = f"{r['size'][0]} x {r['size'][1]}" if r.get("size") else "—"
                orows.append([escape(s_name), o, "yes" if r.get("ok") else "[red]no[/red]", str(r.get("kept")), size,
                              fmt_num(r.get("focal"), 1), fmt_num(r.get("seconds"), 1)])
            orows.append([escape(s_name), "spread %", "", "",
                          " / ".join(fmt_num(None if spread[k] is None else 100 * spread[k], 2) for k in ("width", "height")),
                          fmt_num(None if spread["focal"] is None else 100 * spread["focal"], 2), ""])
        console.print(make_table("order invariance (stitch on each input order)",
                                 ["set", "order", "ok", "kept", "size (spread: w / h)", "focal", "seconds"], orows))
    print_goals(panorama_goals(result, memory_set), console)
    for r in result.rows:
        if r.error:
            console.print(f"{r.set} / {r.method}: {r.error}", markup=False, highlight=False, soft_wrap=True)
    for m, why in result.skipped.items():
        console.print(f"skipped {m}: {why}", markup=False, highlight=False)
    for m in result.methods:
        console.print(f"registered images of {m}: {REGISTRATION_NOTES[m]}", markup=False, highlight=False,
                      soft_wrap=True)
    if result.contact_sheet:
        console.print(f"contact sheet: {result.contact_sheet}", markup=False, highlight=False)
    if result.worst_places:
        console.print(f"worst places (100 % crops: ghosting / colour step / invented or empty): {result.worst_places}",
                      markup=False, highlight=False)


@bench.command("panorama")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--method", "methods", type=click.Choice(PANORAMA_METHOD_CHOICES), multiple=True,
              help="Run only these methods (repeatable; default: all).")
@click.option("--set", "sets", multiple=True, help="Run only these sets (subfolder names; repeatable).")
@click.option("--timeout", type=click.FloatRange(min=1), default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Seconds per run (one method on one set) before it is killed.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("out/bench_panorama"),
              show_default=True, help="Folder for the thumbnails, per-run logs, contact_sheet.png and worst_places.png.")
@click.option("--memory-set", default=DEFAULT_MEMORY_SET, show_default=True,
              help="The set whose peak memory is compared with the peers' in the goals table.")
@json_option("Also write every row, the totals and the goals as JSON to this file ('-': stdout).")
@click.option("--order", "orders", type=click.Choice(ORDER_CHOICES), multiple=True,
              help="Order-invariance check: also run stitch on the inputs in this order (repeatable: sorted, "
              "reversed, shuffled) and report canvas size and focal per order.")
@click.option("--grow", "grow", is_flag=True,
              help="Time as N grows instead: stitch alone on the first " + ", ".join(map(str, GROWTH_COUNTS))
              + " images of each --set (e.g. cave_atrium).")
@click.option("--stitch-option", "stitch_opts", multiple=True, metavar="KEY=VALUE",
              help="An option of method stitch, named as `stitch run`'s flag (repeatable), e.g. local_warp=true, "
                   "seam_misalign=none: before/after runs of one setting.")
@click.option("--cli", "cli_timing", is_flag=True,
              help="Time the command lines instead: `stitch run` and OpenStitching's own CLI on each set, each in its "
                   "own process group, from spawn to exit (start-up and imports included; no quality figures).")
def panorama_cmd(directory: Path, methods: tuple[str, ...], sets: tuple[str, ...], timeout: float,
                 out_dir: Path, memory_set: str, json_path: Path | None, orders: tuple[str, ...], grow: bool,
                 stitch_opts: tuple[str, ...], cli_timing: bool) -> None:
    """Panoramas on DIRECTORY (e.g. ../shared/data/panoramas): stitch against OpenStitching and cv2.Stitcher.

    Each method runs on each set in its own subprocess with a timeout; reports success, images kept,
    seconds, peak memory, overlap PSNR/SSIM (overlap-only and UDIS variants) and seam visibility, and what a
    user sees: overlap misalignment and seam-band ghosting (optical flow), invented and empty pixels, the colour
    step across seams and line straightness; writes a contact sheet and worst_places.png (100 % crops). The
    peers need the bench extra: pip install -e '.[bench]' (make bench-panorama).
    """
    try:
        if grow:
            if stitch_opts:
                raise StitchError("--stitch-option does not apply to --grow (stitch runs with its defaults there)")
            _growth(directory, sets, timeout, out_dir, json_path)
            return
        if cli_timing:
            if stitch_opts or orders:
                raise StitchError("--cli times each method's command with its defaults: drop --stitch-option/--order")
            _cli_timing(directory, methods, sets, timeout, out_dir, json_path)
            return
        options = key_values(stitch_opts, "--stitch-option", "block_size=64")
        with progress_bar("panorama") as progress:
            result = run_panorama_bench(directory, methods=methods or PANORAMA_METHOD_CHOICES, sets=sets,
                                        timeout=timeout, out_dir=out_dir, progress=progress, orders=orders,
                                        stitch_options=options)
        print_panorama_result(result, results_console(json_path), memory_set)
        emit_json(json_path, lambda: with_goals(result.to_json(), panorama_goals(result, memory_set)))
    except StitchError as exc:
        raise click.ClickException(str(exc)) from None


def _cli_timing(directory: Path, methods: tuple[str, ...], sets: tuple[str, ...], timeout: float, out_dir: Path,
                json_path: Path | None) -> None:
    """``bench panorama --cli``: seconds per set and command, and the totals over the sets every method stitched."""
    from stitch.bench.cli_timing import CLI_METHOD_CHOICES, run_cli_timing

    with progress_bar("command lines") as progress:
        rows, skipped = run_cli_timing(directory, methods or CLI_METHOD_CHOICES, sets, timeout, out_dir, progress)
    run = list(dict.fromkeys(r.method for r in rows))
    by = {(r.set, r.method): r for r in rows}
    names = list(dict.fromkeys(r.set for r in rows))
    table = [[escape(n)] + [fmt_num(by[(n, m)].seconds, 2) if by[(n, m)].ok else "[red]failed[/red]" for m in run]
             for n in names]
    common = [n for n in names if all(by[(n, m)].ok for m in run)]
    totals = {m: sum(by[(n, m)].seconds for n in common) for m in run}
    table.append([f"[bold]total ({len(common)} sets all stitched)[/bold]"] + [fmt_num(totals[m], 1) for m in run])
    con = results_console(json_path)
    con.print(make_table("command lines: wall seconds from spawn to exit", ["set"] + run, table))
    if METHOD_STITCH in totals:
        for m in run:
            if m != METHOD_STITCH and totals[m] > 0:
                con.print(f"stitch / {m}: {totals[METHOD_STITCH] / totals[m]:.2f}x over {len(common)} sets")
    for m, why in skipped.items():
        con.print(f"{m}: skipped ({why})")
    for r in rows:
        if not r.ok:
            con.print(f"{escape(r.set)} / {r.method}: {escape(r.error or '')}")
    emit_json(json_path, lambda: {"cli_rows": [asdict(r) for r in rows], "common_sets": common, "totals": totals,
                                  "skipped": skipped})


def _growth(directory: Path, sets: tuple[str, ...], timeout: float, out_dir: Path, json_path: Path | None) -> None:
    """``bench panorama --grow``: time as N grows on each --set; a table per set, JSON on request."""
    if not sets:
        raise StitchError("--grow needs --set (e.g. --set cave_atrium)")
    doc = {}
    for name in sets:
        with progress_bar(f"growth {name}") as progress:
            rows = run_growth(directory / name, timeout=timeout, out_dir=out_dir, progress=progress)
        doc[name] = [asdict(r) for r in rows]
        results_console(json_path).print(make_table(
            f"time as N grows: {name} (stitch, one subprocess per N)", ["N", "ok", "kept", "seconds", "peak MB", "size"],
            [[str(r.n), "yes" if r.ok else "[red]no[/red]", str(r.kept), fmt_num(r.seconds, 1), fmt_num(r.peak_mb, 0),
              f"{r.size[0]} x {r.size[1]}" if r.size else escape(r.error or "—")] for r in rows]))
    emit_json(json_path, lambda: {"growth": doc})


# --- extreme views ---------------------------------------------------------------------------------


def print_extreme_result(result: Any, console: Console) -> None:
    """Success within 10 px per group and method, with median seconds and peak traced MiB."""
    from stitch.bench.extreme import SUCCESS_PX

    rows = [[escape(s["group"]), escape(s["method"]), f"{s['ok@10']}/{s['pairs']}", fmt_num(s["median_seconds"], 2),
             fmt_num(s["median_peak_mb"], 1)] for s in result.summary()]
    console.print(make_table(f"extreme views: success within {SUCCESS_PX:g} px", ["group", "method", "ok@10",
                                                                                   "median s", "median peak MiB"],
                             rows, left_columns=2))
    per = [[escape(r.name), escape(r.method), fmt_num(r.error, 2), fmt_num(r.seconds, 2), fmt_num(r.peak_mb, 1),
            escape(", ".join(f"{k} {v:.2f}s" for k, v in r.source_seconds.items()))] for r in result.rows]
    console.print(make_table("per pair", ["pair", "method", "error px", "s", "peak MiB", "s per source"], per,
                             left_columns=2))


@bench.command("extreme")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--method", "methods", multiple=True, help="Run only these methods (repeatable; default: all: "
              "pipeline, source:<name> per candidate source, SIFT+RANSAC, ASIFT (OpenCV)).")
@click.option("--photos", type=click.IntRange(min=0), default=4, show_default=True,
              help="Panorama sets whose first photo gives the synthetic tilt/zoom views (0: none).")
@click.option("--no-real", is_flag=True, help="Leave out the real pairs (Oxford graf/wall/boat, homogr graf/adam/ExtremeZoom).")
@click.option("--no-real-tilt", is_flag=True, help="Leave out the real pairs re-seen at a 60 or 70 degree tilt "
              "(every homogr pair, Oxford 1->2 and 1->3 outside the GT caveat).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N pairs (a smoke run).")
@seed_option("Seed of the synthetic views and of the pipeline (a non-negative integer).")
@json_option("Also write every row and the summary as JSON to this file ('-': stdout).")
def extreme_cmd(directory: Path, methods: tuple[str, ...], photos: int, no_real: bool, no_real_tilt: bool,
                limit: int | None, seed: int, json_path: Path | None) -> None:
    """Extreme viewpoints on DIRECTORY (the shared data root, e.g. ../shared/data): success within 10 px per
    candidate source and for the pipeline, beside SIFT+RANSAC and OpenCV's ASIFT, with time and peak memory."""
    from stitch.bench.extreme import run_extreme_bench

    try:
        with progress_bar("extreme") as progress:
            result = run_extreme_bench(directory, methods=methods or None, photos=photos, seed=seed,
                                       synthetic=photos > 0, real=not no_real, real_tilt=not no_real_tilt,
                                       limit=limit, progress=progress)
        print_extreme_result(result, results_console(json_path))
        emit_json(json_path, result.to_json)
    except StitchError as exc:
        raise click.ClickException(str(exc)) from None


# --- batch -----------------------------------------------------------------------------------------------


def print_batch_result(result: Any, console: Console) -> None:
    """Scaling per backend and worker count, the crash check, coordinator memory, bad sets, the issue's figures."""
    rows = [[r.backend, str(r.workers), str(r.sets), str(r.ok), str(r.failed), fmt_num(r.seconds, 1),
             fmt_num(r.setup_s, 1), fmt_num(r.sets_per_s, 3), fmt_num(1000 * r.seconds * r.workers / max(r.sets, 1), 0)]
            for r in result.scaling]
    console.print(make_table(f"batch scaling ({result.sets} sets)", ["backend", "workers", "sets", "ok", "failed",
                                                                     "seconds", "setup s", "sets/s", "ms per set"],
                             rows, left_columns=2))
    c = result.crash
    if c is not None:
        console.print(make_table("crash and resume", ["check", "value"], [
            ["kill -9 after (s since each restart)", ", ".join(fmt_num(t, 1) for t in c.kill_after_s)],
            ["sets finished at each kill", ", ".join(map(str, c.finished_before_kill))],
            ["records / sets", f"{c.records} / {c.sets}"],
            ["finished twice", escape(", ".join(c.duplicates)) or "none"],
            ["missing", escape(", ".join(c.missing)) or "none"],
            ["outputs differing from the uninterrupted run", escape(", ".join(c.different_outputs)) or "none"],
            ["summaries differing (timings aside)", escape(", ".join(c.different_summaries)) or "none"],
            ["partial (temporary) files", escape(", ".join(c.partial_files)) or "none"],
            ["stray files", escape(", ".join(c.stray_files)) or "none"]]))
    if result.memory_mb:
        console.print(make_table("coordinator peak RSS (local backend, 2 workers)", ["sets", "peak MB", "seconds"],
                                 [[str(n), fmt_num(mb, 1), fmt_num(result.memory_seconds[n], 1)]
                                  for n, mb in sorted(result.memory_mb.items())]))
    if result.bad_sets:
        console.print(make_table("bad sets", ["set", "reason"],
                                 [[escape(n), escape(r)] for n, r in result.bad_sets.items()], left_columns=2))
    print_goals(batch_goals(result), console)
    for b, why in result.skipped.items():
        console.print(f"skipped {b}: {why}", markup=False, highlight=False)
    for n in result.notes:
        console.print(f"note: {n}", markup=False, highlight=False)


@bench.command("batch")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--sets", type=click.IntRange(min=10), default=200, show_default=True,
              help="Sets in the generated tree (the bad sets among them).")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Empty folder for the tree and the outputs, kept afterwards (default: a temporary folder).")
@click.option("--backend", "backends", type=click.Choice(tuple(BATCH_BACKENDS)), multiple=True,
              help="Run only these backends (repeatable; default: all).")
@click.option("--kills", type=click.IntRange(min=0), default=3, show_default=True,
              help="kill -9 the batch this many times before letting it finish (0: no crash check).")
@click.option("--memory-sets", default="200,2000", show_default=True,
              help="Tree sizes at which the coordinator's peak RSS is measured ('' to skip).")
@seed_option("Seed of the kill times (a non-negative integer).")
@json_option("Also write every figure and the goals as JSON to this file ('-': stdout).")
def batch_cmd(directory: Path, sets: int, work: Path | None, backends: tuple[str, ...], kills: int, memory_sets: str,
              seed: int, json_path: Path | None) -> None:
    """stitch batch at scale on a tree generated from DIRECTORY (e.g. ../shared/data/panoramas).

    Throughput with 1 and 2 workers per backend, Ray's per-set overhead over local, kill -9 and resume
    (every set exactly once, byte-identical outputs, no partial files), the coordinator's peak memory at
    200 and 2,000 sets, and the reason recorded for each bad set.
    """
    from stitch.bench.batch import run_batch_bench

    try:
        sizes = tuple(int(x) for x in memory_sets.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{memory_sets!r}: comma-separated set counts", param_hint="--memory-sets") from None
    if not sizes or any(n < 1 for n in sizes):
        raise click.BadParameter(f"{memory_sets!r}: set counts must be >= 1", param_hint="--memory-sets")
    try:
        with progress_bar("bench batch") as progress:
            result = run_batch_bench(directory, work=work, sets=sets, backends=backends or tuple(BATCH_BACKENDS),
                                     kills=kills, memory_sets=sizes, seed=seed, progress=progress)
        print_batch_result(result, results_console(json_path))
        emit_json(json_path, lambda: with_goals(result.to_json(), batch_goals(result)))
    except StitchError as exc:
        raise click.ClickException(str(exc)) from None
