"""The road of a synthetic world: a centreline of piecewise-constant curvature, and its junctions.

Positions along the road are given in road coordinates `(s, d)`: `s` the arc length along the
centreline (m), `d` the lateral offset to the left of it (m). `Road.pose(s, d)` turns them into
the world frame (x, y in m, heading in rad, ground at z = 0). A straight road whose centreline
is the world x axis gives exactly `x = s, y = d`, heading 0: the original straight world.

A curved road is a chain of arcs and straight pieces (curvature constant on each, so poses have
a closed form and need no integration); the first piece also extends backwards, so `s < 0` is
valid. Junctions are crossroads at given arc lengths: a side road perpendicular to the main
road's heading there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Road"]

FloatArray = npt.NDArray[np.float64]

#: Curved roads: piece lengths (m) and the turn radii (m) of the arcs; KITTI's residential and
#: city drives bend with radii of roughly 50-400 m.
_PIECE_M = (30.0, 90.0)
_RADIUS_M = (70.0, 350.0)
_STRAIGHT_PROBABILITY = 0.35


@dataclass(frozen=True, eq=False)
class Road:
    """Pieces `i` start at arc length `starts[i]` with pose `(x0[i], y0[i], h0[i])` and have
    curvature `curvature[i]` (1/m, positive = turning left). `junctions`: arc lengths (m) of
    crossroads. `half_width_m`: half the carriageway; `verge_m`: half the paved width incl.
    the pavements."""

    starts: tuple[float, ...] = (0.0,)
    x0: tuple[float, ...] = (0.0,)
    y0: tuple[float, ...] = (0.0,)
    h0: tuple[float, ...] = (0.0,)
    curvature: tuple[float, ...] = (0.0,)
    junctions: tuple[float, ...] = ()
    half_width_m: float = 8.5
    verge_m: float = 11.0

    @property
    def is_straight(self) -> bool:
        """The original straight road along the x axis."""
        return len(self.starts) == 1 and self.curvature[0] == 0.0 and self.h0[0] == 0.0

    @staticmethod
    def curved(
        rng: np.random.Generator, length_m: float, *, junctions: int = 0, margin_m: float = 40.0
    ) -> Road:
        """A random road from s = 0 to at least `length_m`: straight pieces and arcs of either
        sense, and `junctions` crossroads placed at least `margin_m` from either end and 50 m
        apart (as far as the length allows)."""
        starts, xs, ys, hs, ks = [0.0], [0.0], [0.0], [0.0], []
        s = 0.0
        while True:
            piece = float(rng.uniform(*_PIECE_M))
            if rng.random() < _STRAIGHT_PROBABILITY:
                k = 0.0
            else:
                k = float(rng.choice((-1.0, 1.0)) / rng.uniform(*_RADIUS_M))
            ks.append(k)
            x, y, h = _advance(xs[-1], ys[-1], hs[-1], k, piece)
            s += piece
            if s >= length_m:
                break
            starts.append(s)
            xs.append(x)
            ys.append(y)
            hs.append(h)
        placed: list[float] = []
        lo, hi = margin_m, max(margin_m, length_m - margin_m)
        for _ in range(junctions):
            for _attempt in range(20):
                js = float(rng.uniform(lo, hi))
                if all(abs(js - p) >= 50.0 for p in placed):
                    placed.append(js)
                    break
        return Road(
            tuple(starts), tuple(xs), tuple(ys), tuple(hs), tuple(ks), tuple(sorted(placed))
        )

    def pose(self, s: npt.ArrayLike, d: npt.ArrayLike = 0.0) -> tuple[FloatArray, ...]:
        """World (x, y, heading) of road coordinates (s, d) (arrays broadcast together)."""
        ss = np.asarray(s, dtype=np.float64)
        dd = np.asarray(d, dtype=np.float64)
        if self.is_straight:
            # Kept as plain arithmetic so that the straight world stays bit for bit the same.
            x = ss + 0.0 * dd
            return x, dd + 0.0 * ss, np.zeros_like(x)
        idx = np.clip(np.searchsorted(np.asarray(self.starts), ss, side="right") - 1, 0, None)
        s0 = np.asarray(self.starts)[idx]
        x0, y0 = np.asarray(self.x0)[idx], np.asarray(self.y0)[idx]
        h0, k = np.asarray(self.h0)[idx], np.asarray(self.curvature)[idx]
        ds = ss - s0
        h = h0 + k * ds
        straight = np.abs(k) < 1e-12
        safe_k = np.where(straight, 1.0, k)
        x = np.where(straight, x0 + ds * np.cos(h0), x0 + (np.sin(h) - np.sin(h0)) / safe_k)
        y = np.where(straight, y0 + ds * np.sin(h0), y0 - (np.cos(h) - np.cos(h0)) / safe_k)
        return x - dd * np.sin(h), y + dd * np.cos(h), h

    def heading(self, s: npt.ArrayLike) -> FloatArray:
        """Heading (rad) of the centreline at arc length `s`."""
        return self.pose(s)[2]

    def locate(
        self, x: npt.ArrayLike, y: npt.ArrayLike, s_guess: npt.ArrayLike | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """Road coordinates (s, d) (m) of world points, by Newton steps of the projection onto
        the centreline from `s_guess` (default: the nearest centreline sample every 5 m).
        Exact for points nearer the centreline than its tightest radius of curvature."""
        px = np.asarray(x, dtype=np.float64)
        py = np.asarray(y, dtype=np.float64)
        if self.is_straight:
            return px.copy(), py.copy()
        if s_guess is None:
            grid = np.arange(self.starts[0] - 200.0, self.starts[-1] + 400.0, 5.0)
            cx, cy, _ = self.pose(grid)
            flat_x, flat_y = px.reshape(-1), py.reshape(-1)
            guess = np.empty(flat_x.shape)
            for i in range(0, flat_x.size, 4096):
                qx, qy = flat_x[i : i + 4096, None], flat_y[i : i + 4096, None]
                guess[i : i + 4096] = grid[np.argmin((qx - cx) ** 2 + (qy - cy) ** 2, axis=1)]
            s = guess.reshape(px.shape)
        else:
            s = np.broadcast_to(np.asarray(s_guess, dtype=np.float64), px.shape).copy()
        starts, curvature = np.asarray(self.starts), np.asarray(self.curvature)
        for _ in range(5):
            cx, cy, ch = self.pose(s)
            rx, ry = px - cx, py - cy
            # Newton's step for the foot of the perpendicular on an arc of curvature k: the
            # tangential offset shrinks by (1 - k d) at lateral offset d.
            k = curvature[np.clip(np.searchsorted(starts, s, side="right") - 1, 0, None)]
            lateral = -np.sin(ch) * rx + np.cos(ch) * ry
            s = s + (np.cos(ch) * rx + np.sin(ch) * ry) / np.maximum(1.0 - k * lateral, 0.2)
        cx, cy, ch = self.pose(s)
        return s, -np.sin(ch) * (px - cx) + np.cos(ch) * (py - cy)


def _advance(x: float, y: float, h: float, k: float, length: float) -> tuple[float, float, float]:
    if k == 0.0:
        return x + length * math.cos(h), y + length * math.sin(h), h
    h1 = h + k * length
    return x + (math.sin(h1) - math.sin(h)) / k, y - (math.cos(h1) - math.cos(h)) / k, h1
