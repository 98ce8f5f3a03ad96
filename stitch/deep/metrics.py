"""The training log: one row per logged step (CSV and JSON), and PNG plots of the loss, MACE and LR curves.

Rows are dicts with a ``step`` and a ``kind`` ("train" or "val"); the CSV has the union of all columns.
On resume, rows after the checkpoint's step are dropped, so the log of a resumed run equals the log of
an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from stitch.io import write_text_atomic

CSV_NAME = "metrics.csv"
JSON_NAME = "metrics.json"
PLOT_NAMES = ("loss.png", "val_mace.png", "lr.png")


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class MetricsLog:
    """Append rows (train rows: ``loss`` = mean over the steps since the previous row), write ``metrics.csv`` / ``metrics.json`` into ``out_dir``."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.dir = Path(out_dir)
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append({k: _clean(v) for k, v in row.items()})

    def truncate(self, step: int) -> None:
        """Drop the rows logged after optimizer step ``step`` (resume)."""
        self.rows = [r for r in self.rows if int(r["step"]) <= step]

    def load(self) -> None:
        """Read back ``metrics.json`` if present (resume)."""
        p = self.dir / JSON_NAME
        if p.is_file():
            self.rows = list(json.loads(p.read_text(encoding="utf-8")).get("rows", []))

    def columns(self) -> list[str]:
        cols: list[str] = []
        for r in self.rows:
            cols += [k for k in r if k not in cols]
        return cols

    def write(self, summary: dict[str, Any] | None = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns(), lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
        write_text_atomic(self.dir / CSV_NAME, buf.getvalue())
        write_text_atomic(self.dir / JSON_NAME, json.dumps({"summary": summary or {}, "rows": self.rows},
                                                           indent=1, allow_nan=False) + "\n")

    def series(self, kind: str, key: str) -> tuple[list[int], list[float]]:
        xs, ys = [], []
        for r in self.rows:
            if r.get("kind") == kind and r.get(key) is not None:
                xs.append(int(r["step"]))
                ys.append(float(r[key]))
        return xs, ys

    def plot(self) -> list[Path]:
        """Write loss.png, val_mace.png and lr.png (needs matplotlib; returns [] without it)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return []
        out = []
        specs = [
            ("loss.png", "training loss", [("train", "loss", "loss")], True),
            ("val_mace.png", "validation MACE (px)",
             [("val", k, k) for k in ("val_mace_detone", "val_mace_refiner", "ema_val_mace_detone",
                                      "ema_val_mace_refiner", "swa_val_mace_detone", "swa_val_mace_refiner")], True),
            ("lr.png", "learning rate", [("train", "lr_head", "head"), ("train", "lr_backbone", "backbone")], False),
        ]
        for name, title, lines, logy in specs:
            fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
            drawn, all_y = 0, []
            for kind, key, label in lines:
                xs, ys = self.series(kind, key)
                if xs:
                    ax.plot(xs, ys, label=label, marker="o" if kind == "val" and len(xs) < 30 else None, ms=3)
                    drawn += 1
                    all_y += ys
            ax.set_xlabel("optimizer step")
            ax.set_title(title)
            if logy and all_y and min(all_y) > 0:
                ax.set_yscale("log")
            if drawn > 1:
                ax.legend()
            ax.grid(True, alpha=0.3)
            fig.tight_layout()
            p = self.dir / name
            fig.savefig(p)
            plt.close(fig)
            out.append(p)
        return out

