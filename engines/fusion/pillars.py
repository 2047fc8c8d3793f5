"""Painted points -> the learned fusion engine's static pillar tensors (numpy, no torch).

A pillar is one ``pillar_m`` square column of the BEV grid. Every point in the grid's range
gets its features (``engines.fusion.learned_config.POINT_FEATURES`` then its painted channels);
each pillar keeps up to ``points_per_pillar`` points, and the ``max_pillars`` fullest pillars are
kept (ties by cell, so the choice is deterministic). Padding pillars point at the cell one past
the grid, which the graph drops.

BEV layout: cell ``(ix, iy)`` (ix along x from ``x_range_m[0]``, iy along y from
``y_range_m[0]``) is flat index ``ix * ny + iy`` of an ``[nx, ny]`` image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engines.fusion.learned_config import LearnedFusionConfig

__all__ = ["PillarInputs", "pillarize"]


@dataclass(frozen=True)
class PillarInputs:
    """The graph's inputs for one sweep: ``pillars`` float32 [P, K, F], ``pillar_points``
    int32 [P] (points in each pillar, 0 for padding), ``pillar_cells`` int64 [P] (flat cell,
    ``nx * ny`` for padding); ``pillars_used`` and ``points_used`` say how much of the sweep
    fit (for diagnostics: a sweep with more occupied pillars than ``max_pillars`` loses the
    emptiest)."""

    pillars: npt.NDArray[np.float32]
    pillar_points: npt.NDArray[np.int32]
    pillar_cells: npt.NDArray[np.int64]
    pillars_used: int
    points_used: int

    def as_feeds(self) -> dict[str, npt.NDArray[np.generic]]:
        """The engine's named inputs."""
        return {
            "pillars": self.pillars,
            "pillar_points": self.pillar_points,
            "pillar_cells": self.pillar_cells,
        }


def pillarize(points: npt.NDArray[np.float32], config: LearnedFusionConfig) -> PillarInputs:
    """The pillar tensors of painted ``points`` (N x (4 + painted channels): x, y, z, intensity
    in the vehicle frame, then one score per class and the camera flag).

    Raises:
        ValueError: ``points`` is not N x (4 + len(classes) + 1) or holds non-finite values.
    """
    painted = len(config.classes) + 1
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 4 + painted:
        raise ValueError(
            f"learned fusion points must be N x {4 + painted} (x, y, z, intensity, "
            f"{len(config.classes)} class scores, camera flag), got {list(pts.shape)}"
        )
    if not np.isfinite(pts).all():
        raise ValueError("learned fusion points hold non-finite values")
    nx, ny = config.grid_size
    p_max, k_max = config.max_pillars, config.points_per_pillar
    x0, y0 = config.x_range_m[0], config.y_range_m[0]
    size = config.pillar_m
    ix = np.floor((pts[:, 0] - x0) / size).astype(np.int64)
    iy = np.floor((pts[:, 1] - y0) / size).astype(np.int64)
    z_lo, z_hi = config.z_range_m
    keep = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny) & (pts[:, 2] >= z_lo) & (pts[:, 2] < z_hi)
    source = np.flatnonzero(keep)  # rows of `pts`, gathered once at the end
    cells = ix[source] * ny + iy[source]

    # Group by cell (stable: a pillar keeps its first points in sweep order). The groups are
    # read off the sorted cells directly: np.unique would sort them a second time. On a grid
    # of at most 2^16 cells (the default has 25,200) the cells sort as 16-bit keys, for which
    # numpy's stable sort is a radix sort: the same order, several times quicker.
    key = cells.astype(np.uint16) if nx * ny <= 1 << 16 else cells
    order = np.argsort(key, kind="stable")
    source, cells = source[order], cells[order]
    n = len(cells)
    first = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]]) if n else np.zeros(0, np.int64)
    uniq = cells[first]
    counts = np.diff(np.r_[first, n])
    # The fullest pillars first, ties by cell: deterministic, and dense objects survive.
    chosen = np.lexsort((uniq, -counts))[:p_max]
    chosen.sort()
    pillar_of_cell = np.full(len(uniq), -1, np.int64)
    pillar_of_cell[chosen] = np.arange(len(chosen))
    group = np.repeat(np.arange(len(uniq)), counts)
    rank = np.arange(n) - np.repeat(first, counts)
    pillar = pillar_of_cell[group]
    use = np.flatnonzero((pillar >= 0) & (rank < k_max))
    # np.take gathers whole rows several times quicker than fancy indexing does.
    pts = np.take(pts, source[use], axis=0).astype(np.float32, copy=False)
    pillar, rank, used_cells = pillar[use], rank[use], cells[use]

    n_pillars = len(chosen)
    count = np.bincount(pillar, minlength=n_pillars).astype(np.int32)
    # Summed in float64 in point order, as np.add.at did, at a fraction of its cost.
    denom = np.maximum(count, 1)
    mean = np.empty((n_pillars, 3), np.float32)
    for axis in range(3):
        mean[:, axis] = np.bincount(pillar, weights=pts[:, axis], minlength=n_pillars) / denom
    cx = x0 + ((used_cells // ny).astype(np.float32) + 0.5) * size
    cy = y0 + ((used_cells % ny).astype(np.float32) + 0.5) * size

    features = np.empty((len(pts), config.point_features), np.float32)
    features[:, :4] = pts[:, :4]
    features[:, 4:7] = pts[:, :3] - np.take(mean, pillar, axis=0)
    features[:, 7] = pts[:, 0] - cx
    features[:, 8] = pts[:, 1] - cy
    features[:, 9:] = pts[:, 4:]

    pillars = np.zeros((p_max, k_max, config.point_features), np.float32)
    pillars[pillar, rank] = features
    pillar_points = np.zeros(p_max, np.int32)
    pillar_points[:n_pillars] = count
    pillar_cells = np.full(p_max, nx * ny, np.int64)
    pillar_cells[:n_pillars] = uniq[chosen]
    return PillarInputs(pillars, pillar_points, pillar_cells, n_pillars, len(pts))
