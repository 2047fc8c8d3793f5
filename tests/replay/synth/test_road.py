"""The synthetic road: the straight road is the original world's x axis, curved roads are
continuous and smooth, and road coordinates round-trip."""

from __future__ import annotations

import math

import numpy as np
import pytest

from replay.synth.road import Road


def test_the_straight_road_is_the_x_axis_exactly() -> None:
    road = Road()
    s = np.array([-30.0, 0.0, 12.345, 200.0])
    d = np.array([0.4, -3.5, 0.0, 9.5])
    x, y, h = road.pose(s, d)
    assert np.array_equal(x, s) and np.array_equal(y, d) and not h.any()
    assert road.is_straight
    along, lateral = road.locate(x, y)
    assert np.array_equal(along, s) and np.array_equal(lateral, d)


@pytest.mark.parametrize("seed", range(5))
def test_a_curved_road_is_continuous_in_position_and_heading(seed: int) -> None:
    road = Road.curved(np.random.default_rng(seed), 300.0, junctions=2)
    assert not road.is_straight and road.starts[0] == 0.0
    for start in road.starts[1:]:
        before = [float(v) for v in road.pose(start - 1e-6)]
        after = [float(v) for v in road.pose(start + 1e-6)]
        assert math.dist(before[:2], after[:2]) < 1e-4
        assert abs(before[2] - after[2]) < 1e-6
    # Arc length is arc length: 1 m steps along the centreline are 1 m apart.
    x, y, _ = road.pose(np.arange(-20.0, 300.0, 1.0))
    steps = np.hypot(np.diff(x), np.diff(y))
    assert np.allclose(steps, 1.0, atol=1e-3)
    radii = [1 / abs(k) for k in road.curvature if k]
    assert all(70.0 <= r <= 350.0 for r in radii)
    assert all(40.0 <= j <= 260.0 for j in road.junctions)
    assert all(b - a >= 50.0 for a, b in zip(road.junctions, road.junctions[1:], strict=False))


def test_road_coordinates_round_trip_on_a_curved_road() -> None:
    road = Road.curved(np.random.default_rng(11), 250.0)
    rng = np.random.default_rng(1)
    s = rng.uniform(-30.0, 240.0, 2000)
    d = rng.uniform(-40.0, 40.0, 2000)
    x, y, h = road.pose(s, d)
    along, lateral = road.locate(x, y)
    assert np.abs(along - s).max() < 0.05
    assert np.abs(lateral - d).max() < 1e-3
    # From a rough guess (what the lidar's ground classification passes) as well.
    _, lateral2 = road.locate(x, y, s + rng.normal(0.0, 5.0, s.shape))
    assert np.abs(lateral2 - d).max() < 1e-3
    # The lateral offset moves along the normal: the heading at (s, d) is the centreline's.
    assert np.allclose(h, road.heading(s))
