"""Deskew: a straight wall seen from a vehicle at 20 m/s is straight again."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibration.geodesy import LocalTangentPlane
from perception.msgs.types import GnssFix, Header, LidarSweep, sweep_end_ns
from perception.pipeline.deskew import deskew_points, deskew_sweep
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
