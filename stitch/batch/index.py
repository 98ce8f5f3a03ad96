"""The HTML index of a batch: ``OUT/index.html``, one row per set from the manifest (latest record of each).

Per set: a thumbnail linking to the panorama, status, seconds, images kept and dropped, size, warnings, the
failure reason and the log. Written in two streaming passes over the manifest (totals, then rows) through
stitch.io.write_chunks_atomic: the index never sits whole in memory, and a reader never sees half of it.
"""

from __future__ import annotations

import html
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

from stitch.batch.jobs import LOG_NAME, STATUS_OK, STATUSES
from stitch.batch.manifest import MANIFEST_NAME, latest_records
from stitch.io import write_chunks_atomic

INDEX_NAME = "index.html"

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:.35em .6em;text-align:left;vertical-align:top;font-size:14px}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:320px;max-height:200px;display:block}
.ok{color:#17803d;font-weight:600}.failed,.timeout,.oom,.crashed{color:#b42318;font-weight:600}
ul{margin:0;padding-left:1.1em}.reason{color:#b42318}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _link(path: str) -> str:
    """A relative URL for a path under OUT (each segment quoted)."""
    from urllib.parse import quote

    return "/".join(quote(p) for p in path.split("/"))


def _row(r: dict[str, Any]) -> str:
    """One table row of a manifest record."""
    name = r["name"]
    status = r.get("status", "")
    thumb = r.get("thumbnail")
    pano = r.get("panorama")
    cell = "—"
    if thumb:
        img = f'<img loading="lazy" src="{_esc(_link(thumb))}" alt="{_esc(name)}">'
        cell = f'<a href="{_esc(_link(pano))}">{img}</a>' if pano else img
    size = r.get("size")
    warns = r.get("warnings") or []
    warn_html = "<ul>" + "".join(f"<li>{_esc(w)}</li>" for w in warns) + "</ul>" if warns else ""
    reason = f'<div class="reason">{_esc(r.get("reason", ""))}</div>' if r.get("reason") else ""
    log = f'<a href="{_esc(_link(name + "/" + LOG_NAME))}">log</a>'
    return (
        f'<tr><td>{cell}</td><td>{_esc(name)}<br>{log}</td><td class="{_esc(status)}">{_esc(status)}</td>'
        f'<td class="num">{float(r.get("seconds", 0.0)):.2f}</td><td class="num">{int(r.get("images", 0))}</td>'
        f'<td class="num">{int(r.get("kept", 0))}</td><td class="num">{int(r.get("dropped", 0))}</td>'
        f'<td>{"" if not size else f"{size[0]} x {size[1]}"}</td><td>{warn_html}{reason}</td></tr>\n')


def write_index(out: Path, title: str = "stitch batch") -> Path:
    """Write ``out/index.html`` from ``out/manifest.jsonl``; returns its path."""
    out = Path(out)
    manifest = out / MANIFEST_NAME
    counts: Counter[str] = Counter()
    seconds = 0.0
    for r in latest_records(manifest):
        counts[r.get("status", "")] += 1
        seconds += float(r.get("seconds", 0.0))
    total = sum(counts.values())
    parts = [f"{counts[s]} {s}" for s in STATUSES if counts[s]]
    head = (f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{_esc(title)}</h1>\n"
            f"<p>{total} sets: {_esc(', '.join(parts) or 'none')}; {counts[STATUS_OK]} panoramas; "
            f"{seconds:.1f} s of stitching in all.</p>\n<table><thead><tr><th>panorama</th><th>set</th>"
            "<th>status</th><th>seconds</th><th>images</th><th>kept</th><th>dropped</th><th>size</th>"
            "<th>warnings / reason</th></tr></thead><tbody>\n")
    rows = (_row(r) for r in latest_records(manifest))
    chunks = itertools.chain([head], rows, ["</tbody></table></body></html>\n"])
    return write_chunks_atomic(out / INDEX_NAME, (c.encode("utf-8") for c in chunks))
