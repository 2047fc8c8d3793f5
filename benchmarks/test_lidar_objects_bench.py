"""The lidar branch's own work on one synthetic-drive sweep (the demo's lidar model, ~57k points,
deskewed as the pipeline does): the ground plane, the obstacle returns and their clusters'
rectangles (the closeness fit), each apart. These run on the frame's critical path beside the
encoder's engine (benchmarks/RESULTS.md, #17).

Run: `python -m pytest benchmarks/test_lidar_objects_bench.py --benchmark-enable`. Each benchmark
first checks what it times: the plane fitted to the sweep's float32 points is the one fitted to
their float64 copy (the candidates are compared in float64 either way), the obstacle returns
are the sweep's kept rows with their heights, and the rectangles fitted all at once are those
fitted one cluster at a time, to the bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from perception.msgs.types import EgoPose, Header, LidarSweep
from perception.pipeline.deskew import deskew_sweep
from perception.pipeline.ground import GroundPlane, estimate_ground
from perception.pipeline.lidar_objects import (
    _FIT_MAX_POINTS,
    LidarObjects,
    fit_rectangle,
    fit_rectangles,
)
from replay.synth.world import lidar_sweep, make_world

SWEEP_NS = 100_000_000
START = EgoPose(0, (0.0, 0.0, 0.0), 0.3, (12.0, 3.0, 0.0))
END = EgoPose(SWEEP_NS, (1.2, 0.3, 0.0), 0.33, (12.0, 3.0, 0.0))


@pytest.fixture(scope="module")
def points() -> np.ndarray:
    rng = np.random.default_rng(0)
    raw, offsets, _ = lidar_sweep(make_world(rng, 2.0), 0.5, rng)
    sweep = LidarSweep(Header("lidar", 0, 0, "lidar"), raw, offsets)
    # The synthetic world gives the sweep in the vehicle frame (the demo's rig).
    return deskew_sweep(sweep, START, END, max_range_m=120.0)[0]


@pytest.fixture(scope="module")
def branch() -> LidarObjects:
    return LidarObjects()


def test_ground_plane(benchmark, points) -> None:
    plane = estimate_ground(points)
    assert plane.normal[2] > 0.99
    assert plane == estimate_ground(points.astype(np.float64))
    assert benchmark(estimate_ground, points) == plane


def test_obstacle_returns(benchmark, points, branch) -> None:
    """The lidar encoder's stage as the pipeline runs it: the obstacle returns, then the
    engine's grid (timed alone in test_lidar_encoder_bench)."""
    ground = estimate_ground(points)
    cfg = branch.config

    def obstacle() -> np.ndarray:
        height = ground.height_above(points[:, :3])
        rows = np.flatnonzero((height >= cfg.min_height_m) & (height < cfg.max_height_m))
        out = points[rows].copy()
        out[:, 2] = height[rows]
        return out

    expected = obstacle()
    assert 1000 < len(expected) < len(points)
    found, _ = branch.encode(points, ground)
    assert np.array_equal(found, expected[:: -(-len(expected) // branch.encoder.config.max_points)])
    benchmark(branch.encode, points, ground)


def test_rectangle_fit(benchmark, points, branch) -> None:
    ground: GroundPlane = estimate_ground(points)
    clusters = branch.clusters(*branch.encode(points, ground), ground)
    sets = [np.ascontiguousarray(xy[:: -(-len(xy) // _FIT_MAX_POINTS)]) for xy in clusters.members]
    assert len(sets) >= 10
    alone = [fit_rectangle(xy) for xy in sets]
    assert fit_rectangles(sets) == alone
    assert benchmark(fit_rectangles, sets) == alone
