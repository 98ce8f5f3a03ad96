"""The view-graph verification of a rendered sweep held against its truth (issue 23, "right or refused").

Usage: python scripts/verify_truth.py out/sweep200_repeats [--cache out/sweep200_repeats.screen.pkl]

Screens the views' pairs as stitch.register does (steps 1-3 of stitch.panorama.pipeline; --cache keeps them in a
pickle, so a second run takes seconds), labels each accepted pair right or wrong by its inliers' median transfer
error under the true rotations (wrong: above WRONG_PX), and runs the verification as the pipeline does (the focal
of the model solved on every pair, corrected by camera.loop_focal). Prints the objective (verify.Placer.judge) of
the placement the verification settles on against the objective of the true placement, the wrong pairs it keeps
and the right ones it rejects, and how far its placement lays each view from the truth once aligned on the views
it places right (degrees, rows of ``--per-row`` views). Not a benchmark: a look inside one stage.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

from stitch.bench.devsets import DevSet, load_devset
from stitch.geometry import transfer_errors
from stitch.panorama import pipeline
from stitch.panorama.camera import image_center, loop_focal, pinhole
from stitch.panorama.config import PanoramaConfig
from stitch.panorama.graph import choose_reference
from stitch.panorama.verify import DEFAULT_TOLERANCE_PX, Placer, rotation_evidence, verify_edges
from stitch.panorama.viewgraph import PairEdge

#: A pair is wrong when its inliers' median transfer error under the true rotations exceeds this (full-res px).
WRONG_PX = 10.0
#: Views within this angle of the truth (degrees) after the alignment count as placed right.
ALIGNED_DEG = 2.0


def true_error(e: PairEdge, sc: pipeline.Screening, dev: DevSet) -> float:
    """Median transfer error (px) of edge e's inliers under the true rotations and focal of ``dev``."""
    t_i, t_j = dev.truth[sc.names[e.i]], dev.truth[sc.names[e.j]]
    K_i = pinhole(t_i["focal"], image_center(sc.sizes[e.i]))
    K_j = pinhole(t_j["focal"], image_center(sc.sizes[e.j]))
    H = K_j @ np.asarray(t_j["R"]) @ np.asarray(t_i["R"]).T @ np.linalg.inv(K_i)
    return float(np.median(transfer_errors(H, e.pts_i, e.pts_j)))


def angle_deg(R: np.ndarray) -> float:
    """The angle (degrees) of rotation R (3, 3)."""
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def aligned_errors(G: dict[int, np.ndarray], K: dict[int, np.ndarray], truth: dict[int, np.ndarray]
                   ) -> dict[int, float]:
    """Per view, the angle (degrees) between its placement G (3, 3: pixels -> rays) and its true rotation, after
    the global rotation that the most views agree with (tried from every fifth view, refitted on those within
    ALIGNED_DEG twice)."""
    R = {k: (G[k] @ K[k]).T for k in G}
    best: dict[int, float] = {}
    for k0 in sorted(G)[::5]:
        Q = truth[k0].T @ R[k0]
        for _ in range(2):
            err = {k: angle_deg(truth[k] @ Q @ R[k].T) for k in G}
            U, _, Vt = np.linalg.svd(sum(truth[k].T @ R[k] for k in G if err[k] < ALIGNED_DEG) + np.zeros((3, 3)))
            Q = U @ Vt
        err = {k: angle_deg(truth[k] @ Q @ R[k].T) for k in G}
        if sum(v < ALIGNED_DEG for v in err.values()) > sum(v < ALIGNED_DEG for v in best.values()):
            best = err
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--per-row", type=int, default=40)
    args = ap.parse_args()
    dev = load_devset(args.folder)
    cfg = PanoramaConfig.from_options()
    if args.cache is not None and args.cache.exists():
        sc = pickle.loads(args.cache.read_bytes())
    else:
        sc = pipeline.screen_pairs(sorted(str(p) for p in args.folder.glob("view_*.jpg")), cfg)
        sc.images.clear()
        if args.cache is not None:
            args.cache.write_bytes(pickle.dumps(sc))
    n, edges = len(sc.names), list(sc.edges)
    wrong = {id(e) for e in edges if true_error(e, sc, dev) > WRONG_PX}
    print(f"{len(sc.pairs)} pairs screened, {len(edges)} accepted, {len(wrong)} wrong (above {WRONG_PX} px)")
    graph = pipeline.GraphInputs(sc.names, sc.sizes, sc.keys, sc.A, cfg, sc.notes, lambda nodes: {})
    every = pipeline.solve_component(graph, range(n), edges)
    main_nodes = pipeline.largest_component_nodes(range(n), edges)
    sub = [e for e in edges if e.i in main_nodes and e.j in main_nodes]
    sizes = dict(enumerate(sc.sizes))
    f = loop_focal(main_nodes, sub, choose_reference(main_nodes, sub, sc.keys), sizes, every.reg.focal, sc.keys)
    f = f or every.reg.focal
    print(f"focal: model on every pair {every.reg.focal:.1f}, chained at {f:.1f}, "
          f"true {next(iter(dev.truth.values()))['focal']:.1f} px")
    K = {k: pinhole(f, image_center(s)) for k, s in sizes.items()}
    scale = {k: float(sc.A[k][0, 0]) for k in range(n)}
    evidence = rotation_evidence(edges, K, scale)  # as verify_graph weighs the pairs
    placer = Placer(list(range(n)), edges, K, scale, sizes, DEFAULT_TOLERANCE_PX, evidence)
    truth = {k: np.asarray(dev.truth[sc.names[k]]["R"]) for k in range(n)}
    true_obj, true_errs = placer.judge({k: truth[k].T @ np.linalg.inv(K[k]) for k in range(n)})
    kept, rejected, obj = verify_edges(range(n), edges, K, scale, sizes, seed_rng=cfg.seed, evidence=evidence)
    print(f"objective: verification {obj:.1f}, truth {true_obj:.1f} (the truth agrees with "
          f"{sum(x <= DEFAULT_TOLERANCE_PX for x in true_errs)} pairs, "
          f"{sum(x <= DEFAULT_TOLERANCE_PX and id(e) in wrong for e, x in zip(edges, true_errs))} of them wrong)")
    print(f"verification keeps {len(kept)} pairs, {sum(id(e) in wrong for e in kept)} of them wrong; rejects "
          f"{sum(id(r.edge) not in wrong for r in rejected)} right ones")
    weight = dict.fromkeys(range(n), 0.0)
    for e in edges:
        weight[e.i] += evidence[id(e)]
        weight[e.j] += evidence[id(e)]
    seed = min(range(n), key=lambda k: (-round(weight[k], 6), k))
    err = aligned_errors(placer.grow(seed), K, truth)
    print(f"placement grown from view {sc.names[seed]} (the verification's first seed), degrees off once aligned:")
    for lo in range(0, n, args.per_row):
        print(" ".join(f"{err[k]:4.1f}" if k in err else "   -" for k in range(lo, min(n, lo + args.per_row))))


if __name__ == "__main__":
    main()
