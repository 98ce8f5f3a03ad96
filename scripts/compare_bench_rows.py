"""Pairs that `stitch bench homography --json` runs lost against an older run: python scripts/compare_bench_rows.py OLD NEW.

A pair is lost when the older run's ``stitch`` row is within ``--px`` (default 3) and the newer one is not.
Prints one line per pair present in both (old error, new error, winning source and steps of the new run).
"""

from __future__ import annotations

import argparse
import json
import math


def stitch_rows(path: str) -> dict[tuple[str, str], dict]:
    """(subset, pair) -> the ``stitch`` row of a bench homography JSON file."""
    with open(path) as f:
        rows = json.load(f)["rows"]
    return {(r["subset"], r["name"]): r for r in rows if r["method"] == "stitch"}


def err(row: dict) -> float:
    e = row["error"]
    return math.inf if e in (None, "inf") else float(e)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--px", type=float, default=3.0)
    a = ap.parse_args()
    old, new = stitch_rows(a.old), stitch_rows(a.new)
    lost = []
    for key in sorted(set(old) & set(new)):
        eo, en = err(old[key]), err(new[key])
        flag = "LOST" if eo <= a.px < en else ("gained" if en <= a.px < eo else "")
        print(f"{key[0]}/{key[1]}: old {eo:.2f} px, new {en:.2f} px {flag}  [{new[key].get('detail', '')}]")
        if flag == "LOST":
            lost.append(key)
    print(f"{len(lost)} pair(s) lost at {a.px:g} px of {len(set(old) & set(new))} compared")
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
