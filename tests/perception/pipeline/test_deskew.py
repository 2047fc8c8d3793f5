"""Deskew: a straight wall seen from a vehicle at 20 m/s is straight again."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from calibration.geodesy import LocalTangentPlane
from perception.msgs.types import EgoPose, GnssFix, Header, LidarSweep, sweep_end_ns
from perception.pipeline.deskew import (
    _motion_per_point,
    _sensor_motion,
    deskew_points,
    deskew_sweep,
    ego_twist,
)
from perception.sync.ego import EgoPoseBuffer

MS = 1_000_000
SWEEP_NS = 100 * MS


def _scan_wall(speed: float, yaw_rate: float, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """A wall x = 30 m (reference frame, y in [-40, 40]) scanned over one sweep while moving.

    The sweep starts facing backwards and turns counter-clockwise, so point i is measured at
    t_i proportional to its azimuth + pi, in the sensor frame at t_i: the reference-frame point
    moved by the inverse of the sensor pose at t_i (constant twist)."""
    y = np.linspace(-40.0, 40.0, n)
    azimuth = np.arctan2(y, 30.0)
    offsets = ((azimuth + np.pi) / (2 * np.pi) * SWEEP_NS).astype(np.int64)
    t = offsets * 1e-9
    yaw = yaw_rate * t
    if yaw_rate == 0.0:
        tx, ty = speed * t, 0.0 * t
    else:
        tx, ty = speed * np.sin(yaw) / yaw_rate, speed * (1 - np.cos(yaw)) / yaw_rate
    dx, dy = 30.0 - tx, y - ty
    c, s = np.cos(yaw), np.sin(yaw)
    pts = np.zeros((n, 4), np.float32)
    pts[:, 0], pts[:, 1], pts[:, 2] = c * dx + s * dy, -s * dx + c * dy, 0.5
    return pts, offsets


def _line_residual(pts: np.ndarray) -> float:
    xy = pts[:, :2].astype(np.float64)
    centred = xy - xy.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return float(np.abs(centred @ vt[1]).max())


@pytest.mark.parametrize("yaw_rate", [0.0, 0.3])
def test_wall_straight_after_deskew_at_20_mps(yaw_rate: float) -> None:
    pts, offsets = _scan_wall(20.0, yaw_rate)
    # Skewed: the vehicle travels ~0.8 m while the laser sweeps the wall.
    assert np.abs(pts[:, 0] - 30.0).max() > 0.5 and _line_residual(pts) > 0.03
    out = deskew_points(pts, offsets, (20.0, 0.0, 0.0), yaw_rate)
    assert _line_residual(out) < 0.02
    assert np.abs(out[:, 0] - 30.0).max() < 0.02
    assert np.array_equal(out[:, 3], pts[:, 3])


def test_deskew_sweep_with_gnss_motion() -> None:
    origin = LocalTangentPlane(49.0, 8.4, 100.0)
    heading = math.radians(30)
    ego = EgoPoseBuffer(origin)
    v = (20.0 * math.cos(heading), 20.0 * math.sin(heading), 0.0)
    for k in range(-1, 3):
        t = k * 0.1
        lat, lon, alt = origin.enu_to_geodetic([v[0] * t, v[1] * t, 0.0])
        ego.add(
            GnssFix(Header("gnss", k, k * SWEEP_NS, "gnss"), lat, lon, alt, (0.0,) * 9, v, heading)
        )
    pts, offsets = _scan_wall(20.0, 0.0)
    sweep = LidarSweep(Header("lidar", 0, 0, "lidar"), pts, offsets)
    out, done = deskew_sweep(sweep, ego.pose_at(0), ego.pose_at(sweep_end_ns(sweep)))
    assert done and _line_residual(out) < 0.02
    plain, done = deskew_sweep(
        LidarSweep(Header("lidar", 0, 0, "lidar"), pts), ego.pose_at(0), ego.pose_at(0)
    )
    assert not done and np.array_equal(plain, pts)


@pytest.mark.parametrize("yaw_rate", [0.0, 1e-7, 0.05, 1.0, 4.0])
def test_deskew_sweep_in_float32_matches_the_float64_form(yaw_rate: float) -> None:
    """The sweep path (float32, series of sin and cos up to 0.3 rad, then the exact form) moves
    points as the float64 form does, within 0.1 mm at 150 m, through a rotated, shifted mount;
    the intensity is carried over exactly. A yaw rate of 1e-7 rad/s is where the exact form's
    (1 - cos) / w loses every digit in float32."""
    rng = np.random.default_rng(7)
    n = 5000
    pts = rng.uniform(-150.0, 150.0, (n, 4)).astype(np.float32)
    offsets = np.sort(rng.integers(0, SWEEP_NS, n))
    yaw = 0.3
    mount = np.eye(4)
    mount[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    mount[:3, 3] = (1.2, -0.3, 1.73)
    heading = 0.7
    start = EgoPose(0, (0.0, 0.0, 0.0), heading, (14.0, 9.0, 0.2))
    end = EgoPose(SWEEP_NS, (0.0, 0.0, 0.0), heading + yaw_rate * 0.1, (14.0, 9.0, 0.2))
    sweep = LidarSweep(Header("lidar", 0, 0, "lidar"), pts, offsets)
    out, done = deskew_sweep(sweep, start, end, mount)
    in_vehicle = pts[:, :3].astype(np.float64) @ mount[:3, :3].T + mount[:3, 3]
    twist = ego_twist(start, end)
    assert done and twist is not None
    expected = deskew_points(np.c_[in_vehicle, pts[:, 3]], offsets, *twist)
    assert out.dtype == np.float32 and out.shape == pts.shape
    assert np.abs(out[:, :3].astype(np.float64) - expected[:, :3]).max() < 1e-4
    assert np.array_equal(out[:, 3], pts[:, 3])
    plain, done = deskew_sweep(LidarSweep(Header("lidar", 0, 0, "lidar"), pts), start, end, mount)
    assert not done
    assert np.abs(plain[:, :3].astype(np.float64) - in_vehicle).max() < 1e-4
    assert np.array_equal(plain[:, 3], pts[:, 3])


@pytest.mark.parametrize("deskewed", [True, False])
def test_deskew_sweep_range_cut_drops_exactly_the_far_returns(deskewed: bool) -> None:
    """`max_range_m` leaves out the returns farther than it once deskewed (not as measured: the
    vehicle moves them), keeps the rest in order with every column, and keeps all of a sweep
    within range (the same array as without the cut)."""
    rng = np.random.default_rng(11)
    n = 20_000
    pts = np.c_[rng.uniform(-90.0, 90.0, (n, 3)), rng.uniform(0, 1, (n, 2))].astype(np.float32)
    offsets = np.sort(rng.integers(0, SWEEP_NS, n)) if deskewed else None
    sweep = LidarSweep(Header("lidar", 0, 0, "lidar"), pts, offsets)
    start = EgoPose(0, (0.0, 0.0, 0.0), 0.4, (18.0, 4.0, 0.0))
    end = EgoPose(SWEEP_NS, (0.0, 0.0, 0.0), 0.45, (18.0, 4.0, 0.0))
    mount = np.eye(4)
    mount[:3, 3] = (1.0, 0.0, 1.7)
    full, done = deskew_sweep(sweep, start, end, mount)
    assert done == deskewed
    far = np.linalg.norm(full[:, :3].astype(np.float64), axis=1) > 80.0
    assert 1000 < far.sum() < n - 1000
    cut, done = deskew_sweep(sweep, start, end, mount, max_range_m=80.0)
    assert done == deskewed and cut.dtype == np.float32 and cut.shape[1] == 5
    assert np.array_equal(cut, full[~far])
    within, _ = deskew_sweep(sweep, start, end, mount, max_range_m=1e4)
    assert np.array_equal(within, full)
    # Coordinates whose squares pass float32's range are cut like any far return, quietly;
    # so are those near float32's largest, which the motion itself turns past it (a sweep
    # holding one printed numpy's overflow warning).
    huge = pts.copy()
    huge[::7, :3] = 1e30
    huge[3::7, :3] = np.finfo(np.float32).max
    huge[5::7, :2] = (np.finfo(np.float32).max, -np.finfo(np.float32).max)
    sweep = LidarSweep(Header("lidar", 0, 0, "lidar"), huge, offsets)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cut, _ = deskew_sweep(sweep, start, end, mount, max_range_m=80.0)
    assert np.array_equal(cut, full[~far & ~np.isin(np.arange(n) % 7, (0, 3, 5))])


@pytest.mark.parametrize("yaw_rate", [0.0, 0.05, 4.0])
def test_motion_per_run_of_offsets_is_each_points_own(yaw_rate: float) -> None:
    """Offsets in runs of equal values (a spinning lidar's columns: 1,024 of ~55 points, some
    short) get the motion computed once per run, to the bit what each point gets computed
    alone, on the series (float32) path and the exact one beyond 0.3 rad; offsets in no runs
    (every point its own instant) are computed point by point."""
    rng = np.random.default_rng(3)
    columns = np.sort(rng.integers(0, SWEEP_NS, 1024))
    per_column = rng.integers(1, 110, 1024)
    twist = ((14.0, -2.0, 0.3), yaw_rate)
    for drawn in (np.repeat(columns, per_column), rng.integers(0, SWEEP_NS, 5000)):
        offsets = drawn.astype(np.int64)
        alone = _sensor_motion(offsets.astype(np.float64) * 1e-9, *twist, single=True)
        together = _motion_per_point(offsets, twist)
        for a, b in zip(alone, together, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape == offsets.shape
            assert np.array_equal(a, b)
    for n in (0, 1, 2):
        offsets = np.zeros(n, np.int64)
        assert all(len(v) == n for v in _motion_per_point(offsets, twist))


def test_deskew_sweep_with_extra_columns_moves_points_as_the_sweeps_own_four() -> None:
    """Points with columns beyond the sweep's four (x, y, z, intensity: OpenCV's transform
    moves those) go through the other path: through a rotated, shifted mount the points come
    out as the four columns' own, to float32's rounding, and every other column unchanged."""
    rng = np.random.default_rng(5)
    n = 3000
    pts = rng.uniform(-100.0, 100.0, (n, 6)).astype(np.float32)
    offsets = np.sort(rng.integers(0, SWEEP_NS, n))
    mount = np.eye(4)
    mount[:3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    mount[:3, 3] = (1.2, -0.3, 1.73)
    start = EgoPose(0, (0.0, 0.0, 0.0), 0.2, (15.0, 2.0, 0.0))
    end = EgoPose(SWEEP_NS, (1.5, 0.2, 0.0), 0.25, (15.0, 2.0, 0.0))
    header = Header("lidar", 0, 0, "lidar")
    for times in (offsets, None):
        wide, _ = deskew_sweep(LidarSweep(header, pts, times), start, end, mount)
        own, _ = deskew_sweep(LidarSweep(header, pts[:, :4].copy(), times), start, end, mount)
        assert wide.shape == pts.shape and wide.dtype == np.float32
        assert np.abs(wide[:, :3] - own[:, :3]).max() < 2e-5
        assert np.array_equal(wide[:, 3:], pts[:, 3:])
