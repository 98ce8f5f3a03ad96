"""The HTML page of a compare report: one self-contained file (inline CSS/JS, images as data: URIs).

The page loads nothing: a Content-Security-Policy meta tag forbids every source except inline styles,
inline scripts and data: images. Pictures are downscaled (``DISPLAY_MAX_SIDE``) JPEGs, plots are
matplotlib PNGs (``matplotlib.figure.Figure``, no pyplot state). When the page has loaded, its script
writes ``data-decoded`` (images with a decoded bitmap) and ``data-images`` (all images) on <body>.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from stitch.errors import install_hint
from stitch.geometry import image_corners, project, scale_h
from stitch.homography.refine import corner_shift
from stitch.imaging import resize_max_side

DISPLAY_MAX_SIDE = 560
JPEG_QUALITY = 80
MAX_DRAWN_MATCHES = 250
TOP_PICTURED = 3
#: The difference picture saturates at this many standard deviations of normalised intensity.
DIFF_SATURATION_SIGMA = 2.5
#: Pictures skip a matrix within this many px (max corner move) of one already shown, while others remain.
DISTINCT_SHIFT_PX = 0.5
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

KIND_COLORS = {"pipeline": "#1b7f3b", "candidate": "#4062bb", "refined": "#8a4fb5", "baseline": "#c0572b"}
PLOT_COLORS = ["#4062bb", "#c0572b", "#1b7f3b", "#8a4fb5", "#b8860b", "#2a9d8f", "#d62976", "#555555"]

CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dde5; --bg: #f6f7f9; --win: #e3f4e8; --run: #fff4d6; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); }
main { max-width: 1440px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 36px 0 8px; padding-top: 8px;
     border-top: 2px solid var(--line); } h3 { font-size: 16px; margin: 26px 0 8px; } h4 { margin: 0 0 8px; }
.muted { color: var(--muted); } .small { font-size: 12px; }
.box { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 18px;
       margin: 10px 0; }
.box > h3:first-child { margin-top: 0; }
.summary { display: grid; grid-template-columns: minmax(0, 1.25fr) minmax(0, 1fr); gap: 14px; }
.good { color: #1b7f3b; font-weight: 600; } .bad { color: #b3261e; font-weight: 600; }
table { border-collapse: collapse; background: #fff; }
table.parts td, table.parts th { padding: 3px 10px; border-bottom: 1px solid var(--line); text-align: right; }
table.parts td:first-child, table.parts th:first-child, table.parts.left td, table.parts.left th {
  text-align: left; }
.tablewrap { overflow-x: auto; border: 1px solid var(--line); border-radius: 8px; }
table.sortable { width: 100%; font-size: 12px; font-variant-numeric: tabular-nums; }
table.sortable th { position: sticky; top: 0; background: #eef0f4; cursor: pointer; user-select: none;
                    padding: 6px 6px; text-align: right; white-space: nowrap;
                    border-bottom: 1px solid var(--line); }
table.sortable th.l, table.sortable td.l { text-align: left; }
table.sortable th[aria-sort=ascending]::after { content: " \\25B2"; font-size: 9px; }
table.sortable th[aria-sort=descending]::after { content: " \\25BC"; font-size: 9px; }
table.sortable td { padding: 4px 6px; text-align: right; border-bottom: 1px solid #eceef2;
                    white-space: nowrap; }
table.sortable td.params { white-space: normal; min-width: 170px; color: var(--muted); }
table.sortable td.why { white-space: normal; min-width: 150px; color: #b3261e; }
tr.win td { background: var(--win); font-weight: 600; } tr.runner td { background: var(--run); }
tr.rej td { color: #9aa1ad; }
.tag { display: inline-block; padding: 0 6px; border-radius: 9px; color: #fff; font-size: 11px; }
.cards { display: grid; gap: 14px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.card .pics { display: grid; grid-template-columns: repeat(5, minmax(0, 1fr)); gap: 10px;
              align-items: start; }
.card .pics .wide { grid-column: span 2; }
figure { margin: 0; } figure img { width: 100%; height: auto; display: block; border-radius: 4px;
                                   background: #222; cursor: zoom-in; }
.lightbox { position: fixed; inset: 0; background: rgba(10, 12, 18, .88); display: none; align-items: center;
            justify-content: center; z-index: 10; cursor: zoom-out; }
.lightbox img { max-width: 96vw; max-height: 94vh; }
figcaption { font-size: 12px; color: var(--muted); margin-top: 3px; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 14px; }
.plots figure { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 8px; }
pre { background: #0f1420; color: #e8ecf3; padding: 10px 12px; border-radius: 6px; margin: 4px 0 10px;
      overflow-x: auto; font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.matrix { display: grid; grid-template-columns: repeat(auto-fill, minmax(390px, 1fr)); gap: 4px 16px; }
button.copy { float: right; font-size: 11px; padding: 1px 8px; border: 1px solid var(--line);
              border-radius: 4px;
              background: #fff; cursor: pointer; }
ul.notes { margin: 6px 0; padding-left: 20px; }
nav a { margin-right: 14px; }
"""

JS = """
(function () {
  function key(td) {
    var v = td.getAttribute('data-v');
    if (v === null) return td.textContent.trim().toLowerCase();
    var f = parseFloat(v);
    return isNaN(f) ? null : f;
  }
  document.querySelectorAll('table.sortable').forEach(function (t) {
    var heads = t.querySelectorAll('thead th');
    heads.forEach(function (th, i) {
      th.addEventListener('click', function () {
        var asc = th.getAttribute('aria-sort') !== 'ascending';
        heads.forEach(function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
        var body = t.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[i]), y = key(b.cells[i]);
          if (x === null && y === null) return 0;
          if (x === null) return 1;
          if (y === null) return -1;
          return x < y ? (asc ? -1 : 1) : x > y ? (asc ? 1 : -1) : 0;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  document.querySelectorAll('button.copy').forEach(function (btn) {
    btn.addEventListener('click', function () {
      var pre = document.getElementById(btn.getAttribute('data-target'));
      var done = function () { btn.textContent = 'copied'; };
      var select = function () {
        var r = document.createRange(); r.selectNodeContents(pre);
        var s = window.getSelection(); s.removeAllRanges(); s.addRange(r);
        if (document.execCommand && document.execCommand('copy')) done();
      };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(pre.textContent).then(done, select);
      } else { select(); }
    });
  });
  var box = null;
  document.querySelectorAll('figure img').forEach(function (img) {
    img.title = 'click to enlarge';
    img.addEventListener('click', function () {
      if (box === null) {
        box = document.createElement('div'); box.className = 'lightbox';
        box.appendChild(document.createElement('img'));
        box.addEventListener('click', function () { box.style.display = 'none'; });
        document.body.appendChild(box);
      }
      box.firstChild.src = img.src; box.style.display = 'flex';
    });
  });
  window.addEventListener('load', function () {
    var imgs = document.images, n = 0;
    for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) n++; }
    document.body.setAttribute('data-decoded', String(n));
    document.body.setAttribute('data-images', String(imgs.length));
  });
})();
"""


# --- small helpers -----------------------------------------------------------------------------------


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt(x: float | None, digits: int = 3) -> str:
    """Fixed-point text; '—' for not measured, 'inf' for failures."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if math.isinf(x):
        return "inf" if x > 0 else "−inf"
    return f"{x:.{digits}f}"


def data_v(x: float | None) -> str:
    """The sort key attribute of a numeric cell (missing values sort last)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ' data-v=""'
    return (
        f' data-v="{float(x)!r}"' if math.isfinite(x) else f' data-v="{"Infinity" if x > 0 else "-Infinity"}"'
    )


def matrix_text(H: np.ndarray | None) -> str:
    """Copyable matrix text, valid as a Python/JSON nested list."""
    if H is None:
        return "None"
    rows = [", ".join(f"{v: .10g}" for v in r) for r in np.asarray(H, float)]
    return "[[" + "],\n [".join(rows) + "]]"


def data_uri(img: np.ndarray, ext: str = ".jpg") -> str:
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ext == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 6]
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise ValueError(f"cannot encode a {img.shape} image as {ext}")
    mime = "image/jpeg" if ext == ".jpg" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(buf.tobytes()).decode("ascii")


# --- pictures ----------------------------------------------------------------------------------------


class Display:
    """Downscaled copies of a pair for pictures; ``h(H)`` re-expresses a full-res H (3, 3) between them."""

    def __init__(self, src: np.ndarray, dst: np.ndarray, max_side: int = DISPLAY_MAX_SIDE):
        self.src, self.s_src = resize_max_side(src, max_side)
        self.dst, self.s_dst = resize_max_side(dst, max_side)

    def h(self, H: np.ndarray) -> np.ndarray:
        return scale_h(H, self.s_src, self.s_dst)

    def warp(self, H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """src warped into the dst frame and its validity mask (bool)."""
        dh, dw = self.dst.shape[:2]
        Hd = self.h(H)
        warped = cv2.warpPerspective(self.src, Hd, (dw, dh), flags=cv2.INTER_LINEAR)
        valid = (
            cv2.warpPerspective(
                np.full(self.src.shape[:2], 255, np.uint8), Hd, (dw, dh), flags=cv2.INTER_NEAREST
            )
            > 0
        )
        return warped, valid


def matches_picture(d: Display, row: Any, tau: float) -> tuple[np.ndarray, str]:
    """src | dst side by side with the row's inlier matches (green lines) and outliers (red dots)."""
    a, b = d.src, d.dst
    h = max(a.shape[0], b.shape[0])
    gap = 8
    canvas = np.full((h, a.shape[1] + gap + b.shape[1], 3), 30, np.uint8)
    canvas[: a.shape[0], : a.shape[1]] = a
    canvas[: b.shape[0], a.shape[1] + gap :] = b
    canvas = (canvas * 0.8).astype(np.uint8)
    m = row.match_set
    if m is None or row.residuals is None or len(m) == 0:
        return canvas, "no matches"
    inl = row.residuals < tau
    pa = m.src_pts * d.s_src
    pb = m.dst_pts * d.s_dst + [a.shape[1] + gap, 0]
    rng = np.random.default_rng(0)
    out_idx = np.flatnonzero(~inl)
    for k in rng.permutation(out_idx)[:MAX_DRAWN_MATCHES]:
        cv2.circle(canvas, tuple(int(v) for v in pa[k]), 2, (60, 60, 230), -1, cv2.LINE_AA)
        cv2.circle(canvas, tuple(int(v) for v in pb[k]), 2, (60, 60, 230), -1, cv2.LINE_AA)
    in_idx = np.flatnonzero(inl)
    shown = rng.permutation(in_idx)[:MAX_DRAWN_MATCHES]
    for k in shown:
        p, q = tuple(int(v) for v in pa[k]), tuple(int(v) for v in pb[k])
        cv2.line(canvas, p, q, (80, 220, 80), 1, cv2.LINE_AA)
        cv2.circle(canvas, p, 2, (80, 255, 80), -1, cv2.LINE_AA)
        cv2.circle(canvas, q, 2, (80, 255, 80), -1, cv2.LINE_AA)
    cap = (
        f"{len(in_idx)} inliers of {len(m)} matches (&lt; {tau:g} px; {len(shown)} drawn, green), "
        f"outliers red"
    )
    return canvas, cap


def checker_picture(d: Display, H: np.ndarray) -> np.ndarray:
    """The overlap as a checkerboard of warped src and dst tiles; dst dimmed outside the overlap."""
    warped, valid = d.warp(H)
    dh, dw = d.dst.shape[:2]
    tile = max(16, max(dh, dw) // 14)
    yy, xx = np.mgrid[0:dh, 0:dw]
    board = ((yy // tile + xx // tile) % 2 == 0) & valid
    out = (d.dst * 0.45).astype(np.uint8)
    out[valid] = d.dst[valid]
    out[board] = warped[board]
    return out


def diff_picture(d: Display, H: np.ndarray) -> np.ndarray:
    """|warped src - dst| over the overlap after matching mean and contrast there (the score is gain/offset
    invariant too), inferno colour map saturating at DIFF_SATURATION_SIGMA; dst darkened outside it."""
    warped, valid = d.warp(H)
    ga = cv2.cvtColor(warped, cv2.COLOR_BGR2GRAY).astype(np.float32)
    gb = cv2.cvtColor(d.dst, cv2.COLOR_BGR2GRAY).astype(np.float32)
    diff = np.zeros(ga.shape, np.float32)
    if valid.sum() > 16:
        za = (ga - ga[valid].mean()) / max(float(ga[valid].std()), 1e-3)
        zb = (gb - gb[valid].mean()) / max(float(gb[valid].std()), 1e-3)
        diff = np.abs(za - zb) * (255.0 / DIFF_SATURATION_SIGMA)
    out = cv2.applyColorMap(np.clip(diff, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    out[~valid] = (cv2.cvtColor(d.dst, cv2.COLOR_BGR2GRAY)[~valid, None] * 0.3).astype(np.uint8)
    return out


def corners_picture(d: Display, H: np.ndarray, H_gt: np.ndarray | None) -> np.ndarray:
    """dst with the src outline mapped by H (magenta) and by the ground truth (green), padded to show both."""
    sh, sw = d.src.shape[:2]
    dh, dw = d.dst.shape[:2]
    c = image_corners(sw, sh) - 0.5
    polys = [(project(d.h(H), c), (255, 60, 255), 2)]
    if H_gt is not None:
        polys.insert(0, (project(d.h(H_gt), c), (90, 230, 90), 2))
    pts = np.vstack([p for p, _, _ in polys if np.all(np.isfinite(p))] + [[[0, 0], [dw, dh]]])
    lo = np.maximum(np.floor(pts.min(axis=0)), [-dw, -dh])
    hi = np.minimum(np.ceil(pts.max(axis=0)), [2 * dw, 2 * dh])
    pad = 6
    off = -lo + pad
    W, Hh = int(hi[0] - lo[0]) + 2 * pad, int(hi[1] - lo[1]) + 2 * pad
    canvas = np.full((Hh, W, 3), 45, np.uint8)
    ox, oy = int(off[0]), int(off[1])
    canvas[oy : oy + dh, ox : ox + dw] = d.dst
    for p, color, th in polys:
        if not np.all(np.isfinite(p)):
            continue
        q = np.round((p + off) * 4).astype(np.int32)  # 2 fractional bits
        cv2.polylines(canvas, [q.reshape(-1, 1, 2)], True, color, th, cv2.LINE_AA, shift=2)
        cv2.circle(canvas, tuple(int(v) for v in np.round(p[0] + off)), 5, color, -1, cv2.LINE_AA)
    scale = DISPLAY_MAX_SIDE / float(max(canvas.shape[:2]))
    if scale < 1:
        canvas = cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return canvas


def pictured_rows(report: Any) -> list[Any]:
    """The winner and the next best distinct matrices (TOP_PICTURED in all), then the baselines."""
    pool = [r for r in report.rows if r.ok and r.kind != "baseline"]
    chosen: list[Any] = []
    w, h = report.src_image.shape[1], report.src_image.shape[0]
    if report.winner_row is not None:
        chosen.append(report.winner_row)

    def distinct(r: Any) -> bool:
        return all(corner_shift(r.H, c.H, w, h) > DISTINCT_SHIFT_PX for c in chosen)

    for r in pool:
        if len(chosen) < TOP_PICTURED and r not in chosen and distinct(r):
            chosen.append(r)
    for r in pool:  # too few distinct ones: fill with the next best
        if len(chosen) < TOP_PICTURED and r not in chosen:
            chosen.append(r)
    return chosen + [r for r in report.rows if r.kind == "baseline" and r.H is not None]


# --- plots -------------------------------------------------------------------------------------------


def _figure(w: float = 6.4, h: float = 3.6):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    fig.subplots_adjust(
        left=0.11, right=0.98, bottom=0.14, top=0.91
    )  # fixed margins: constrained layout is slow
    return fig, fig.subplots()


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def plot_trials(report: Any) -> str | None:
    """Score against the trial index (generation order) of every candidate, one colour per estimator."""
    cands = [r for r in report.rows if r.kind == "candidate" and r.trial is not None]
    if not cands:
        return None
    fig, ax = _figure()
    ok = [r for r in cands if r.ok]
    floor = min((r.score for r in ok), default=0.0) - 0.05
    methods = list(dict.fromkeys(r.method for r in sorted(cands, key=lambda r: r.trial)))
    for k, m in enumerate(methods):
        col = PLOT_COLORS[k % len(PLOT_COLORS)]
        good = [r for r in ok if r.method == m]
        bad = [r for r in cands if r.method == m and not r.ok]
        ax.scatter(
            [r.trial for r in good], [r.score for r in good], s=28, color=col, label=m, zorder=3, alpha=0.85
        )
        if bad:
            ax.scatter([r.trial for r in bad], [floor] * len(bad), s=30, color=col, marker="x", zorder=3)
    w = report.winner_row
    if w is not None:
        ax.axhline(w.score, color=KIND_COLORS["pipeline"], lw=1, ls="--", label=f"pipeline {w.score:.4f}")
    for r in report.rows:
        if r.kind == "baseline" and r.ok:
            ax.axhline(
                r.score, color=KIND_COLORS["baseline"], lw=0.8, ls=":", label=f"{r.method} {r.score:.4f}"
            )
    levels = sorted(
        {
            (min(r.trial for r in cands if r.params.get("level") == lv), lv)
            for lv in {r.params.get("level") for r in cands}
        }
    )
    for t, lv in levels[1:]:
        ax.axvline(t - 0.5, color="#999", lw=0.8)
        ax.text(t - 0.3, ax.get_ylim()[1], lv, fontsize=7, va="top", color="#666")
    ax.set_xlabel("trial index (candidate generation order)")
    ax.set_ylabel("quality score")
    ax.set_title(
        "score per robust-estimation trial" + (" (x: rejected)" if len(ok) < len(cands) else ""), fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    return _png(fig)


def plot_score_vs_error(report: Any) -> str | None:
    """Score against the ground-truth error of every row with a finite error (log x)."""
    rows = [r for r in report.rows if r.ok and math.isfinite(r.error)]
    if report.gt is None or not rows:
        return None
    fig, ax = _figure()
    for kind in ("candidate", "refined", "baseline", "pipeline"):  # the pipeline's star on top
        sel = [r for r in rows if r.kind == kind]
        if sel:
            big = kind == "pipeline"
            ax.scatter(
                [max(r.error, 1e-3) for r in sel],
                [r.score for r in sel],
                s=140 if big else 30,
                color=KIND_COLORS[kind],
                label=kind,
                zorder=4 if big else 3,
                marker="*" if big else "o",
                alpha=1.0 if big else 0.8,
                edgecolors="white" if big else "none",
            )
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"{report.gt.error_kind} error vs ground truth (px, log)")
    ax.set_ylabel("quality score")
    ax.set_title("score against error (good: top left)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _png(fig)


def plot_residuals(report: Any, rows: Sequence[Any]) -> str | None:
    """Histogram of symmetric transfer errors on the winner's match set for the pictured rows."""
    ref = report.winner_row
    m = None if ref is None else ref.match_set
    sel = [r for r in rows if r.residuals is not None and r.match_set is m and m is not None]
    if not sel:
        return None
    fig, ax = _figure()
    cap = 10.0
    bins = np.linspace(0, cap, 41)
    for k, r in enumerate(sel):
        e = np.clip(np.nan_to_num(r.residuals, posinf=cap), 0, cap)
        ax.hist(
            e,
            bins=bins,
            histtype="step",
            lw=1.4,
            color=PLOT_COLORS[k % len(PLOT_COLORS)],
            label=f"{r.label[:38]} (rms {fmt(r.transfer_rms, 2)})",
        )
    ax.axvline(report.score_config.support_tau, color="#999", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel(f"symmetric transfer error (px, clipped at {cap:g}); dashed: support_tau")
    ax.set_ylabel("matches")
    ax.set_title(f"residuals on the winner's {len(m)} matches", fontsize=10)
    ax.legend(fontsize=7)
    return _png(fig)


# --- sections ----------------------------------------------------------------------------------------

COLUMNS = (  # key, header, tooltip, digits (None: text)
    ("id", "#", "rank by score", 0),
    (
        "method",
        "method",
        "kind (pipeline / candidate / refined / baseline) and estimator, refiner or baseline",
        None,
    ),
    ("source", "source", "candidate source (features, learned, synthesis, direct), refiner or baseline", None),
    ("params", "parameters", "threshold, seed, feature level, matching", None),
    ("inliers", "inliers", "matches with symmetric transfer error < support_tau", 0),
    ("matches", "matches", "size of the match set the row is measured on", 0),
    ("inlier_ratio", "ratio", "inliers / matches", 3),
    ("transfer_rms", "RMS px", "RMS symmetric transfer error over the inliers (px)", 3),
    ("photometric", "photo", "photometric term (NCC + GC) / 2", 4),
    ("ncc", "NCC", "normalised cross-correlation in the overlap", 4),
    ("gc", "GC", "gradient correlation in the overlap", 4),
    ("overlap", "overlap", "overlap fraction at the working scale", 3),
    ("support", "support", "support term 1 - exp(-mass / saturation)", 4),
    ("inlier_mass", "mass", "MSAC inlier mass", 1),
    ("score", "score", "total quality score", 4),
    ("error", "error px", "error vs ground truth (px)", 3),
    ("seconds", "s", "seconds", 3),
    ("rejected", "rejected / note", "rejection reason or note", None),
)


def _params_text(r: Any) -> str:
    p = r.params
    if r.kind == "candidate":
        bits = [
            f"t={p.get('threshold', 0):g} px",
            f"seed {p.get('seed', 0)}",
            f"{p.get('features', '')} {p.get('matching', '')}",
        ]
    elif r.kind == "pipeline":
        bits = [
            f"refined: {p.get('refined_by')}",
            f"from {p.get('from')}",
            "levels " + ", ".join(p.get("levels_tried", [])),
        ]
    elif r.kind == "refined":
        bits = [f"applied to {p.get('from')}"]
    else:
        bits = [f"ratio {p.get('ratio')}", f"{p.get('threshold'):g} px", "full-res OpenCV SIFT"]
    return " · ".join(b for b in bits if b)


def table_html(report: Any, key: str) -> str:
    cols = [c for c in COLUMNS if c[0] != "error" or report.gt is not None]
    head = "".join(
        f'<th class="{"l" if d is None else ""}" title="{esc(t)}">{esc(h)}</th>' for _, h, t, d in cols
    )
    body = []
    for r in report.rows:
        cls = [f"k-{r.kind}"]
        if r.id == report.winner:
            cls.append("win")
        elif r.id == report.runner_up:
            cls.append("runner")
        if not r.ok:
            cls.append("rej")
        cells = []
        for k, _, _, d in cols:
            if k == "method":
                cells.append(
                    f'<td class="l"><span class="tag" style="background:{KIND_COLORS[r.kind]}">'
                    f"{esc(r.kind)}</span> {esc(r.method)}</td>"
                )
            elif k == "source":
                cells.append(f'<td class="l">{esc(r.source)}</td>')
            elif k == "params":
                cells.append(f'<td class="l params">{esc(_params_text(r))}</td>')
            elif k == "rejected":
                text = r.rejected or r.note
                cells.append(f'<td class="l {"why" if r.rejected else "params"}">{esc(text)}</td>')
            else:
                v = (
                    r.parts.get(k, math.nan)
                    if k in ("photometric", "ncc", "gc", "overlap", "support", "inlier_mass")
                    else getattr(r, k)
                )
                if k == "matches" and not r.matches:
                    v = math.nan
                cells.append(f"<td{data_v(v)}>{fmt(v, d)}</td>")
        body.append(f'<tr class="{" ".join(cls)}" data-row="{r.id}">' + "".join(cells) + "</tr>")
    return (
        f'<div class="tablewrap"><table class="sortable" id="table-{key}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def families_html(report: Any) -> str:
    fams = report.families()
    if not fams:
        return ""
    gt = report.gt is not None
    head = "<tr><th>family (estimator · features, matching)</th><th>trials</th><th>rejected</th>"
    head += (
        "<th>best score</th><th>best row</th>"
        + ("<th>best error px</th>" if gt else "")
        + "<th>seconds</th></tr>"
    )
    body = "".join(
        f"<tr><td>{esc(f['family'])}</td><td>{f['trials']}</td><td>{f['rejected']}</td>"
        f"<td>{fmt(f['best_score'], 4)}</td>"
        f"<td>{'—' if f['best_row'] is None else '#' + str(f['best_row'])}</td>"
        + (f"<td>{fmt(f['best_error'], 3)}</td>" if gt else "")
        + f"<td>{fmt(f['seconds'], 2)}</td></tr>"
        for f in fams
    )
    return f'<table class="parts">{head}{body}</table>'


def _copyable(pid: str, title: str, H: np.ndarray | None) -> str:
    return (
        f'<div><button class="copy" data-target="{pid}">copy</button><b>{esc(title)}</b>'
        f'<pre id="{pid}">{esc(matrix_text(H))}</pre></div>'
    )


def trail_reason(report: Any, row: Any) -> str:
    """Why the pipeline did not pick ``row``, a row that outscores its matrix (the page says it)."""
    level = row.params.get("level")
    if row.kind == "baseline":
        return (f"it is the baseline {row.method}, which the pipeline does not run, so its matrix was never one of "
                "the pipeline's candidates")
    if level and report.levels_tried and level not in report.levels_tried:
        return (f"it comes from the search level {level}, which the pipeline did not reach: it stopped after "
                f"{', '.join(report.levels_tried)}, whose best score already passed the acceptance bar")
    if row.kind == "refined":
        return (f"it is the {row.method} refinement of a candidate the pipeline did not choose; the pipeline refines "
                "its winning candidate only")
    return ("it is one of the pipeline's candidates; the pipeline ranked it lower before refinement, and its own "
            "winner's refinement did not reach this score")


def summary_html(report: Any, key: str, extra_notes: Sequence[str] = ()) -> str:
    w, ru = report.winner_row, report.runner_up_row
    left = ['<div class="box">']
    if w is None:
        left.append(f'<h3 class="bad">No winner: {esc(report.pipeline_error or "the pipeline failed")}</h3>')
    else:
        p = w.params
        left.append(f"<h3>Winner: the pipeline's matrix (row #{w.id}), score {fmt(w.score, 4)}</h3>")
        left.append(
            f"<p>Winning candidate: <b>{esc(p.get('from'))}</b>, refined by <b>{esc(p.get('refined_by'))}"
            f"</b>; {w.inliers} of {w.matches} matches within {report.score_config.support_tau:g} px "
            f"(RMS {fmt(w.transfer_rms, 3)} px).</p>"
        )
        if ru is not None:
            cfg = report.score_config
            dp = (w.parts.get("photometric", 0) - ru.parts.get("photometric", 0)) * cfg.w_photo
            ds = (w.parts.get("support", 0) - ru.parts.get("support", 0)) * cfg.w_support
            lead = "the photometric term" if abs(dp) >= abs(ds) else "support"
            delta = w.score - ru.score
            verb = "leads" if delta >= 0 else "trails"
            left.append(
                f"<p><b>Why:</b> against the runner-up <b>{esc(ru.label)}</b> ({esc(ru.kind)}, score "
                f"{fmt(ru.score, 4)}) the winner {verb} by {abs(delta):.4f}: {dp:+.4f} from the photometric "
                f"term (weight {cfg.w_photo:g}) and {ds:+.4f} from support (weight {cfg.w_support:g}); "
                f"mostly <b>{lead}</b>.</p>"
            )
            if delta < 0:
                left.append(f"<p class='bad'>The runner-up scores higher: {esc(trail_reason(report, ru))}.</p>")
            left.append(_parts_table(w, ru))
        left.append(_copyable(f"H-{key}-win", "H (src → dst px)", w.H))
    left.append("</div>")
    right = ['<div class="box">']
    gs = report.gt_summary()
    if gs is not None:
        what = (
            f"mean error on {gs['points']} annotated points"
            if gs["error_kind"] == "points"
            else "mean corner error of the src image"
        )
        best = report.rows[gs["best_row"]] if gs["best_row"] is not None else None
        verdict = (
            '<span class="good">best or within {:g} px of the best</span>'
            if gs["winner_is_best"]
            else '<span class="bad">more than {:g} px worse than the best</span>'
        ).format(gs["winner_within_px"])
        right.append(
            f"<h3>Ground truth</h3><p>Error = {what}.<br>Winner: <b>{fmt(gs['winner_error'], 3)} px</b>; "
            f"smallest in the table: {fmt(gs['best_error'], 3)} px"
            f"{' (' + esc(best.label) + ')' if best is not None else ''}.<br>The winner is {verdict}.</p>"
        )
    base = [r for r in report.rows if r.kind == "baseline"]
    where = "the pipeline's matches" if report.winner_row is not None else "the first level's matches"
    if base:
        right.append("<h3>Baselines</h3><ul class='notes'>")
        for r in base:
            err = f", error {fmt(r.error, 3)} px" if report.gt is not None else ""
            right.append(
                f"<li>{esc(r.method)}: score {fmt(r.score, 4)}, {r.inliers}/{r.matches} inliers on "
                f"{where}{err}{'; rejected: ' + esc(r.rejected) if r.rejected else ''}</li>"
            )
        right.append("</ul>")
    notes = list(report.warnings) + list(report.notes) + list(extra_notes)
    if notes:
        right.append(
            "<h3>Notes</h3><ul class='notes'>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>"
        )
    t = report.timings
    right.append(
        f"<p class='muted small'>preset {esc(report.preset)}, seed {report.seed}; "
        f"methods {esc(', '.join(report.methods))}.<br>Seconds: "
        + ", ".join(f"{esc(k)} {v:.2f}" for k, v in t.items())
        + "</p></div>"
    )
    return f'<div class="summary">{"".join(left)}{"".join(right)}</div>'


def _parts_table(w: Any, ru: Any) -> str:
    keys = [
        ("score", "score"),
        ("photometric", "photometric"),
        ("ncc", "· NCC"),
        ("gc", "· GC"),
        ("support", "support"),
        ("inlier_mass", "· inlier mass"),
        ("overlap", "overlap"),
        ("transfer_rms", "transfer RMS px"),
        ("inliers", "inliers"),
    ]
    out = ['<table class="parts"><tr><th>part</th><th>winner</th><th>runner-up</th><th>Δ</th></tr>']
    for k, name in keys:
        a = getattr(w, k) if k in ("score", "transfer_rms", "inliers") else w.parts.get(k, math.nan)
        b = getattr(ru, k) if k in ("score", "transfer_rms", "inliers") else ru.parts.get(k, math.nan)
        d = a - b if all(isinstance(v, (int, float)) and math.isfinite(v) for v in (a, b)) else math.nan
        dig = 0 if k == "inliers" else (2 if k == "inlier_mass" else 4)
        out.append(
            f"<tr><td>{esc(name)}</td><td>{fmt(a, dig)}</td><td>{fmt(b, dig)}</td>"
            f"<td>{'' if math.isnan(d) else f'{d:+.{dig}f}'}</td></tr>"
        )
    return "".join(out) + "</table>"


def pictures_html(report: Any, rows: Sequence[Any]) -> str:
    d = Display(report.src_image, report.dst_image)
    H_gt = None if report.gt is None else report.gt.H
    cards = []
    for r in rows:
        mp, cap = matches_picture(d, r, report.score_config.support_tau)
        err = f" · error {fmt(r.error, 3)} px" if report.gt is not None else ""
        tag = f'<span class="tag" style="background:{KIND_COLORS[r.kind]}">{esc(r.kind)}</span>'
        gt_cap = " and by the ground truth (green)" if H_gt is not None else ""
        cards.append(
            f'<div class="card"><h4>{tag} {esc(r.label)} · score {fmt(r.score, 4)}{err}</h4>'
            f'<div class="pics"><figure class="wide"><img alt="matches {r.id}" src="{data_uri(mp)}">'
            f"<figcaption>{cap}</figcaption></figure>"
            f'<figure><img alt="checkerboard {r.id}" src="{data_uri(checker_picture(d, r.H))}">'
            f"<figcaption>checkerboard of warped src and dst tiles</figcaption></figure>"
            f'<figure><img alt="difference {r.id}" src="{data_uri(diff_picture(d, r.H))}">'
            f"<figcaption>|warped src − dst|, mean and contrast matched; bright = disagreement</figcaption>"
            f"</figure>"
            f'<figure><img alt="corners {r.id}" src="{data_uri(corners_picture(d, r.H, H_gt))}">'
            f"<figcaption>src outline mapped by this H (magenta){gt_cap}; dot: top-left</figcaption>"
            f"</figure></div></div>"
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def plots_html(report: Any, pictured: Sequence[Any]) -> tuple[str, str | None]:
    """(plots section, note when matplotlib is missing)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "", f"plots skipped: matplotlib is not installed ({install_hint('report')})"
    figs = [
        (
            plot_trials(report),
            (
                "Score of every candidate in generation order; the repeated RANSAC/USAC runs "
                "differ only in threshold and seed."
            ),
        ),
        (plot_score_vs_error(report), "Each row's score against its error vs the ground truth."),
        (
            plot_residuals(report, pictured),
            ("Symmetric transfer errors of the pictured matrices on the pipeline's match set."),
        ),
    ]
    items = [
        f'<figure><img alt="plot" src="{uri}"><figcaption>{esc(cap)}</figcaption></figure>'
        for uri, cap in figs
        if uri is not None
    ]
    return f'<div class="plots">{"".join(items)}</div>', None


def matrices_html(report: Any, key: str) -> str:
    items = [
        _copyable(f"H-{key}-{r.id}", f"#{r.id} {r.kind}: {r.label.split(' ', 1)[1]}", r.H)
        for r in report.rows
        if r.H is not None
    ]
    if report.gt is not None:
        items.insert(0, _copyable(f"H-{key}-gt", "ground truth", report.gt.H))
    return f'<div class="matrix">{"".join(items)}</div>'


def section_html(report: Any, key: str, heading: bool) -> str:
    pictured = pictured_rows(report)
    plots, plot_note = plots_html(report, pictured)
    src = f"{report.src_name} ({report.src_image.shape[1]}×{report.src_image.shape[0]})"
    dst = f"{report.dst_name} ({report.dst_image.shape[1]}×{report.dst_image.shape[0]})"
    parts = [f'<section id="pair-{key}">']
    parts.append(
        f"<h2>{esc(src)} → {esc(dst)}</h2>" if heading else f"<p class='muted'>{esc(src)} → {esc(dst)}</p>"
    )
    parts.append(summary_html(report, key, [plot_note] if plot_note else []))
    n_c = sum(r.kind == "candidate" for r in report.rows)
    parts.append(f"<h3>All matrices ({len(report.rows)} rows: {n_c} candidates; click a header to sort)</h3>")
    parts.append(table_html(report, key))
    parts.append(
        "<p class='muted small'>Green row: the winner; yellow: the runner-up. Candidates are measured on "
        "their own level's matches, the other rows on the pipeline's matches. Every row is scored "
        "with the same scoring context.</p>"
    )
    parts.append("<h3>Candidate families</h3>" + families_html(report))
    parts.append(
        f"<h3>Pictures: the top {TOP_PICTURED} matrices and the baselines</h3><p class='muted small'>The "
        f"winner, then the best matrices that move a src corner by more than {DISTINCT_SHIFT_PX:g} px "
        "against those already shown (the next best otherwise). Click a picture to enlarge it.</p>"
    )
    parts.append(pictures_html(report, pictured))
    if plots:
        parts.append("<h3>Plots</h3>" + plots)
    parts.append("<h3>Matrices (src → dst px, copyable)</h3>" + matrices_html(report, key))
    parts.append("</section>")
    return "".join(parts)


def render_page(
    reports: Sequence[Any], screening: list[dict[str, Any]] | None = None, title: str | None = None
) -> str:
    """The whole HTML document for one or more pair reports."""
    from stitch import __version__

    if title is None:
        title = (
            f"stitch compare: {reports[0].src_name} → {reports[0].dst_name}"
            if len(reports) == 1
            else f"stitch compare: {len(reports)} pairs"
        )
    body = [
        (
            f"<h1>{esc(title)}</h1><p class='muted small'>stitch {esc(__version__)}, OpenCV "
            f"{esc(cv2.__version__)}. H maps src pixels to dst pixels. Self-contained: nothing is loaded "
            f"from the network.</p>"
        )
    ]
    if screening:
        rows = "".join(
            f"<tr><td>{esc(s['src'])}</td><td>{esc(s['dst'])}</td>"
            f"<td class='{'good' if s['accepted'] else 'muted'}'>{'yes' if s['accepted'] else 'no'}</td>"
            f"<td>{esc(s['reason'])}</td></tr>"
            for s in screening
        )
        body.append(
            "<div class='box'><h3>Pairs screened</h3><table class='parts left'><tr><th>src</th><th>dst</th>"
            f"<th>overlap</th><th>reason</th></tr>{rows}</table></div>"
        )
    if len(reports) > 1:
        body.append(
            "<nav>"
            + "".join(
                f'<a href="#pair-{k}">{esc(r.src_name)} → {esc(r.dst_name)}</a>'
                for k, r in enumerate(reports)
            )
            + "</nav>"
        )
    body += [section_html(r, str(k), heading=len(reports) > 1) for k, r in enumerate(reports)]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(body)}</main><script>{JS}</script></body></html>\n"
    )
