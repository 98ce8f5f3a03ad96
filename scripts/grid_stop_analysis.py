"""What an early stop inside the estimator grid would save and change (docs/measurements.md, "search").

Usage: python scripts/grid_stop_analysis.py [--data ../shared/data/panoramas] [--bar 0.9 --bar 0.95 ...]

Screens every shared set's pairs as a panorama does (stitch.panorama.graph.match_graph) and, for each accepted
pair, lists its first-level candidates in grid order: how many estimator runs a stop at each bar would skip, and
on how many pairs the stop would keep a different winner (and by how much lower a score).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stitch.bench.panorama import discover_sets
from stitch.io import load_image
from stitch.panorama.config import PanoramaConfig
from stitch.panorama.graph import match_graph
from stitch.panorama.workset import to_work


def grid_rows(paths: list[Path]) -> list[tuple[list[float | None], float]]:
    """Per accepted pair: the first level's candidate scores in grid order (None: rejected), and the winner's."""
    cfg = PanoramaConfig.from_options()
    works = [to_work(load_image(p), cfg.work_megapix) for p in paths]
    screen, _ = cfg.screening(len(works))
    level = screen.levels[0]
    order = [(s.method, s.threshold, s.seed) for s in level.specs]
    out = []
    for _, _, res in match_graph(works, [p.name for p in paths], cfg)[0]:
        first = [c for c in res.candidates if c.params.get("level") == level.name]
        first.sort(key=lambda c: order.index((c.method, c.params["threshold"], c.params["seed"])))
        out.append(([c.score if c.ok else None for c in first], res.best.score))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/panoramas"))
    ap.add_argument("--bar", type=float, action="append", default=[])
    args = ap.parse_args()
    rows = [r for _, paths in discover_sets(args.data) for r in grid_rows(paths)]
    print(f"{len(rows)} accepted pairs, {sum(len(s) for s, _ in rows)} candidates")
    for bar in args.bar or [0.9, 0.95, 0.97]:
        skipped, changed, worst = 0, 0, 0.0
        for scores, win in rows:
            for k, s in enumerate(scores):
                if s is not None and s >= bar:
                    skipped += len(scores) - k - 1
                    kept = max(x for x in scores[:k + 1] if x is not None)
                    if kept < win - 1e-9:
                        changed, worst = changed + 1, max(worst, win - kept)
                    break
        print(f"stop at {bar}: {skipped} estimator runs skipped; winner changed on {changed} pairs "
              f"(score lower by up to {worst:.4f})")


if __name__ == "__main__":
    main()
