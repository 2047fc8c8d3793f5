from __future__ import annotations

import math

import pytest

from calibration.geodesy import LocalTangentPlane
from perception.msgs.schema import MAX_SPEED_MPS
from perception.msgs.types import GnssFix, Header
from perception.sync.ego import EgoPoseBuffer

MS = 1_000_000
ORIGIN = LocalTangentPlane(49.0, 8.4, 100.0)


def _fix(t_ms: int, east_m: float, north_m: float, heading: float | None = None) -> GnssFix:
    lat, lon, alt = ORIGIN.enu_to_geodetic([east_m, north_m, 0.0])
    return GnssFix(Header("gnss", t_ms, t_ms * MS, "gnss"), lat, lon, alt, heading_rad=heading)


def _buffer(**kw: int) -> EgoPoseBuffer:
    ego = EgoPoseBuffer(ORIGIN, **kw)
    # 10 m/s east, heading turning from 179 deg to -179 deg (across the wrap).
    ego.add(_fix(200, 2.0, 0.0, math.radians(-179)))
    ego.add(_fix(100, 1.0, 0.0, math.radians(179)))  # out of order
    return ego


def test_interpolates_position_heading_velocity() -> None:
    p = _buffer().pose_at(150 * MS)
    assert p is not None and not p.extrapolated and not p.stale
    assert p.position_enu_m[0] == pytest.approx(1.5, abs=1e-6)
    assert abs(math.remainder(p.heading_rad - math.pi, 2 * math.pi)) < 1e-9  # shorter arc
    assert p.velocity_enu_mps[0] == pytest.approx(10.0, abs=1e-4)


def test_bounded_extrapolation_is_flagged() -> None:
    ego = _buffer(max_extrapolation_ns=100 * MS)
    p = ego.pose_at(250 * MS)
    assert p is not None and p.extrapolated
    assert p.position_enu_m[0] == pytest.approx(2.5, abs=1e-4)
    before = ego.pose_at(50 * MS)
    assert before is not None and before.extrapolated
    assert before.position_enu_m[0] == pytest.approx(0.5, abs=1e-4)
    assert ego.pose_at(301 * MS) is None
    assert EgoPoseBuffer().pose_at(0) is None


def test_stale_gnss_is_flagged() -> None:
    ego = EgoPoseBuffer(ORIGIN, stale_after_ns=300 * MS)
    ego.add(_fix(0, 0.0, 0.0))
    ego.add(_fix(1000, 10.0, 0.0))
    p = ego.pose_at(500 * MS)
    assert p is not None and p.stale and not p.extrapolated
    assert p.heading_rad == pytest.approx(0.0, abs=1e-6)  # from the velocity: east
    fresh = ego.pose_at(100 * MS)
    assert fresh is not None and not fresh.stale


def test_buffer_is_bounded() -> None:
    ego = EgoPoseBuffer(ORIGIN, capacity=3)
    for t in range(10):
        ego.add(_fix(t * 100, float(t), 0.0))
    assert len(ego) == 3
    assert ego.pose_at(0) is None  # the old fixes are gone
    with pytest.raises(ValueError):
        EgoPoseBuffer(capacity=1)


def test_extrapolation_keeps_turning_at_the_yaw_rate() -> None:
    # A turn at 0.2 rad/s, fixes every 100 ms; the heading crosses the +-pi wrap.
    ego = EgoPoseBuffer(ORIGIN)
    rate = 0.2
    for k in range(5):
        heading = math.pi - 0.1 + rate * k * 0.1
        ego.add(_fix(100 * k, 1.0 * k, 0.0, math.remainder(heading, 2 * math.pi)))
    after = ego.pose_at(500 * MS)  # 100 ms past the newest fix
    assert after is not None and after.extrapolated
    expected = math.remainder(math.pi - 0.1 + rate * 0.5, 2 * math.pi)
    assert abs(math.remainder(after.heading_rad - expected, 2 * math.pi)) < 1e-9
    before = ego.pose_at(-100 * MS)
    assert before is not None
    expected = math.remainder(math.pi - 0.1 - rate * 0.1, 2 * math.pi)
    assert abs(math.remainder(before.heading_rad - expected, 2 * math.pi)) < 1e-9


def test_a_velocity_from_positions_spans_a_baseline_and_a_road_speed() -> None:
    # Fixes without velocity every 100 ms at 10 m/s east, each followed 1 ns later by a twin
    # 1 cm further north (two receivers, or a repeated fix): the velocity of a twin, from the
    # two positions 1 ns apart, was 10^7 m/s north, and deskew moved every point out of range.
    ego = EgoPoseBuffer(ORIGIN)
    for k in range(5):
        ego.add(_fix(100 * k, 1.0 * k, 0.0))
        lat, lon, alt = ORIGIN.enu_to_geodetic([1.0 * k, 0.01, 0.0])
        ego.add(GnssFix(Header("gnss", k, k * 100 * MS + 1, "gnss"), lat, lon, alt))
    for stamp_ns in (150 * MS, 100 * MS + 1, 450 * MS):  # between, at a twin, extrapolated
        p = ego.pose_at(stamp_ns)
        assert p is not None
        assert p.velocity_enu_mps[0] == pytest.approx(10.0, abs=0.2)
        assert abs(p.velocity_enu_mps[1]) < 0.2
        assert abs(p.heading_rad) < 0.02  # east, from that velocity
    # Positions that jump (an outlier 1 km off) give no more than a road vehicle's speed.
    ego.add(_fix(500, 1000.0, 0.0))
    p = ego.pose_at(500 * MS)
    assert p is not None and math.hypot(*p.velocity_enu_mps) == pytest.approx(MAX_SPEED_MPS)
