"""Deskew of one synthetic-drive sweep: the demo's lidar model (~57k points fired in 1,024
columns, each column at one instant), moving at the drive's speed and turning.

Run: `python -m pytest benchmarks/test_deskew_bench.py --benchmark-enable`. Each benchmark
first checks what it times: the sweep's points, shuffled so that no two neighbours share an
instant, come out of the point-by-point path as the very floats of the per-column one.
"""

from __future__ import annotations

import numpy as np
import pytest

from perception.msgs.types import EgoPose, Header, LidarSweep
from perception.pipeline.deskew import deskew_sweep
from replay.synth.world import lidar_sweep, make_world

SWEEP_NS = 100_000_000
START = EgoPose(0, (0.0, 0.0, 0.0), 0.3, (12.0, 3.0, 0.0))
END = EgoPose(SWEEP_NS, (1.2, 0.3, 0.0), 0.33, (12.0, 3.0, 0.0))
MOUNT = np.array([[1.0, 0, 0, 0.9], [0, 1, 0, 0], [0, 0, 1, 1.7], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def sweeps() -> tuple[LidarSweep, LidarSweep, np.ndarray]:
    """The sweep in firing order, the same points shuffled, and the shuffle."""
    rng = np.random.default_rng(0)
    points, offsets, _ = lidar_sweep(make_world(rng, 2.0), 0.5, rng)
    order = rng.permutation(len(points))
    header = Header("lidar", 0, 0, "lidar")
    return (
        LidarSweep(header, points, offsets),
        LidarSweep(header, points[order], offsets[order]),
        order,
    )


def _deskew(sweep: LidarSweep) -> np.ndarray:
    return deskew_sweep(sweep, START, END, MOUNT, max_range_m=120.0)[0]


def test_deskew_in_columns(benchmark, sweeps) -> None:
    columns, shuffled, order = sweeps
    assert len(np.unique(columns.point_time_offsets_ns)) * 20 < len(columns.points)
    out = benchmark(_deskew, columns)
    # Neither path cuts here (the model's range is within 120 m): rows map one to one.
    assert len(out) == len(columns.points)
    assert np.array_equal(out[order], _deskew(shuffled))


def test_deskew_point_by_point(benchmark, sweeps) -> None:
    columns, shuffled, order = sweeps
    out = benchmark(_deskew, shuffled)
    assert np.array_equal(_deskew(columns)[order], out)
