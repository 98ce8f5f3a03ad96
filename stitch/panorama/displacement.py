"""A smooth displacement field of one image on the panorama's projected frame (what the local warp solves).

Convention: a field lives on a regular grid of vertices in *projected* coordinates (u, v) (stitch.panorama.warp:
the frame of the canvas before its offset), vertex (r, c) at (origin[0] + c * step, origin[1] + r * step), and is
bilinear between vertices (clamped to the edge vertices beyond the grid). ``forward`` f moves the image's content:
the point that the global model projects to p is drawn at p + f(p). ``inverse`` g is its inverse, on a grid
``refine`` times finer (same origin): canvas position q shows what the global model projects to q + g(q)
(q + g(q) + f(q + g(q)) = q at every vertex).
On a full turn (``period`` > 0) u is periodic: a point's u is first wrapped to within half a period of the grid's
centre.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

#: Fixed-point iterations at most that invert a forward field at the vertices (each halves the error or better for
#: the gentle fields of the local warp: their gradient stays well below 1) ...
INVERSE_ITERATIONS = 30
#: ... stopping when no vertex moves by more than this (px) in an iteration.
INVERSE_TOLERANCE = 1e-4
#: The inverse grid is this many times finer than the forward one: bilinear between its vertices, it then departs
#: from the exact inverse by a few hundredths of a pixel where the field turns fastest.
INVERSE_REFINE = 2


def bilinear(values: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """values (gh, gw, C) sampled at fractional vertex coordinates gx, gy (N,) (clamped to the grid): (N, C) float64."""
    gh, gw = values.shape[:2]
    x = np.clip(np.asarray(gx, np.float64), 0.0, gw - 1.0)
    y = np.clip(np.asarray(gy, np.float64), 0.0, gh - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.intp), max(gw - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.intp), max(gh - 2, 0))
    x1, y1 = np.minimum(x0 + 1, gw - 1), np.minimum(y0 + 1, gh - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    v = values.astype(np.float64)
    return ((v[y0, x0] * (1 - fx) + v[y0, x1] * fx) * (1 - fy)
            + (v[y1, x0] * (1 - fx) + v[y1, x1] * fx) * fy)


def _linear(g: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, frac) float32 of the 1-D linear interpolation at fractional indices g (clamped to 0..n-1)."""
    x = np.clip(np.asarray(g, np.float64), 0.0, n - 1.0)
    i0 = np.minimum(np.floor(x).astype(np.intp), max(n - 2, 0))
    return i0, np.minimum(i0 + 1, n - 1), (x - i0).astype(np.float32)


@dataclass(frozen=True)
class Displacement:
    """One image's field (see the module docstring): forward / inverse (gh, gw, 2) float32 px on a grid at ``origin``
    (projected u, v of vertex (0, 0)) with ``step`` px between vertices; ``period`` > 0 on a full turn."""

    origin: tuple[float, float]
    step: float
    forward: np.ndarray
    inverse: np.ndarray
    period: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        """(gh, gw): vertex rows and columns."""
        return int(self.forward.shape[0]), int(self.forward.shape[1])

    @property
    def refine(self) -> int:
        """How many times finer the inverse grid is than the forward one (same origin; every vertex of the forward
        grid is one of the inverse's)."""
        return max(1, (self.inverse.shape[1] - 1) // max(self.shape[1] - 1, 1))

    def grid_coords(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Projected u, v (any shape) -> fractional vertex coordinates (gx, gy); u wrapped near the grid on a turn."""
        u = np.asarray(u, np.float64)
        if self.period > 0:
            centre = self.origin[0] + self.step * (self.shape[1] - 1) / 2.0
            u = (u - centre + self.period / 2.0) % self.period - self.period / 2.0 + centre
        return (u - self.origin[0]) / self.step, (np.asarray(v, np.float64) - self.origin[1]) / self.step

    def at(self, uv: np.ndarray, inverse: bool = False) -> np.ndarray:
        """f (or g, ``inverse``) at projected points uv (N, 2): (N, 2) float64 px."""
        uv = np.asarray(uv, np.float64).reshape(-1, 2)
        gx, gy = self.grid_coords(uv[:, 0], uv[:, 1])
        if inverse:
            return bilinear(self.inverse, gx * self.refine, gy * self.refine)
        return bilinear(self.forward, gx, gy)

    def moved(self, uv: np.ndarray) -> np.ndarray:
        """Projected points uv (N, 2) placed by the global model -> where the field draws them, p + f(p) (N, 2)."""
        uv = np.asarray(uv, np.float64).reshape(-1, 2)
        return uv + self.at(uv)

    def on_region(self, offset: tuple[float, float], region: tuple[int, int, int, int]) -> np.ndarray:
        """g at the canvas pixels of region (x0, y0, x1, y1) of a canvas whose pixel (0, 0) sits at projected
        ``offset``: (h, w, 2) float32 px. The grid coordinates are separable (a column's depend on its u alone), so
        the bilinear interpolation is exact as two 1-D ones: along the columns on the grid's rows, then down, a
        block of output rows between two grid rows at a time."""
        x0, y0, x1, y1 = region
        gx, _ = self.grid_coords(np.arange(x0, x1) + offset[0], np.zeros(1))
        _, gy = self.grid_coords(np.zeros(1), np.arange(y0, y1) + offset[1])
        g, r = self.inverse, self.refine
        (c0, c1, fx), (r0, r1, fy) = _linear(gx * r, g.shape[1]), _linear(gy * r, g.shape[0])
        rows = g[:, c0] * (1 - fx)[None, :, None] + g[:, c1] * fx[None, :, None]  # (gh, w, 2) on the grid's rows
        out = np.empty((len(r0), len(c0), 2), np.float32)
        edges = np.flatnonzero(np.diff(r0)) + 1  # r0 rises with the row: one block of output rows per grid row
        for a, b in zip(np.r_[0, edges], np.r_[edges, len(r0)]):
            j, k = r0[a], r1[a]
            np.multiply(fy[a:b, None, None], rows[k] - rows[j], out=out[a:b])
            out[a:b] += rows[j]
        return out

    def scaled(self, s: float) -> Displacement:
        """The same field on a projected frame scaled by s (an output or seam canvas at s times the resolution)."""
        return replace(self, origin=(self.origin[0] * s, self.origin[1] * s), step=self.step * s,
                       forward=(self.forward * np.float32(s)).astype(np.float32),
                       inverse=(self.inverse * np.float32(s)).astype(np.float32), period=self.period * s)


def invert_field(forward: np.ndarray, origin: tuple[float, float], step: float, period: float = 0.0,
                 refine: int = INVERSE_REFINE) -> Displacement:
    """The Displacement of a forward field (gh, gw, 2) px, its inverse found on a grid ``refine`` times finer by
    fixed-point iteration at each vertex, g <- -f(q + g) (converges while the field's gradient stays below 1)."""
    fwd = np.asarray(forward, np.float32)
    gh, gw = fwd.shape[:2]
    ih, iw = (gh - 1) * refine + 1, (gw - 1) * refine + 1
    field = Displacement(origin, float(step), fwd, np.zeros((ih, iw, 2), np.float32), float(period))
    cols, rows = np.meshgrid(np.arange(iw, dtype=np.float64), np.arange(ih, dtype=np.float64))
    q = np.stack([origin[0] + cols.ravel() * step / refine, origin[1] + rows.ravel() * step / refine], 1)
    g = -field.at(q)
    for _ in range(INVERSE_ITERATIONS):
        g, last = -field.at(q + g), g
        if np.abs(g - last).max(initial=0.0) < INVERSE_TOLERANCE:
            break
    return replace(field, inverse=g.reshape(ih, iw, 2).astype(np.float32))
