"""WGS84 <-> ECEF <-> ENU and the GNSS fix -> vehicle pose."""

from __future__ import annotations

import numpy as np
import pymap3d
import pytest

from calibration import CalibrationError, LocalTangentPlane, RigidTransform, vehicle_pose_from_gnss
from calibration.geodesy import ecef_to_geodetic, geodetic_to_ecef

# KITTI raw 2011_09_26 drive 0001, first OXTS packet.
LAT, LON, ALT = 49.0150038, 8.4342971, 116.43


def test_enu_round_trip_within_a_millimetre() -> None:
    origin = LocalTangentPlane(LAT, LON, ALT)
    rng = np.random.default_rng(0)
    enu = rng.uniform(-5000.0, 5000.0, (1000, 3)) * np.array([1.0, 1.0, 0.02])
    geo = origin.enu_to_geodetic(enu)
    back = origin.geodetic_to_enu(geo[:, 0], geo[:, 1], geo[:, 2])
    assert np.max(np.abs(back - enu)) < 1e-3
    ecef = origin.enu_to_ecef(enu)
    assert np.max(np.abs(origin.ecef_to_enu(ecef) - enu)) < 1e-3
    geo2 = ecef_to_geodetic(ecef)
    assert np.max(np.abs(geodetic_to_ecef(geo2[:, 0], geo2[:, 1], geo2[:, 2]) - ecef)) < 1e-3
    # The origin itself is (0, 0, 0); 0.001 deg of latitude is about 111 m north.
    np.testing.assert_allclose(origin.geodetic_to_enu(LAT, LON, ALT), [0, 0, 0], atol=1e-6)
    north = origin.geodetic_to_enu(LAT + 0.001, LON, ALT)
    assert abs(north[1] - 111.2) < 0.5 and abs(north[0]) < 1e-6


def test_vehicle_pose_applies_heading_and_lever_arm() -> None:
    origin = LocalTangentPlane(LAT, LON, ALT)
    lever = np.array([-0.8, 0.3, -0.8])
    heading = np.radians(30.0)
    east, north, up = 12.0, -7.0, 1.5
    lat, lon, alt = pymap3d.enu2geodetic(east, north, up, LAT, LON, ALT)
    pose = vehicle_pose_from_gnss(origin, lat, lon, alt, heading, lever_arm_m=lever)
    # The antenna, mapped from the vehicle frame, is where the fix says.
    np.testing.assert_allclose(pose.apply(lever[None])[0], [east, north, up], atol=1e-6)
    assert pose.yaw == pytest.approx(heading)
    # The vehicle x axis points along the heading in ENU.
    np.testing.assert_allclose(pose.rotation[:, 0], [np.cos(heading), np.sin(heading), 0.0])
    no_arm = vehicle_pose_from_gnss(origin, lat, lon, alt, heading)
    np.testing.assert_allclose(no_arm.translation, [east, north, up], atol=1e-6)
    assert isinstance(no_arm, RigidTransform)


def test_invalid_geodesy_inputs() -> None:
    with pytest.raises(CalibrationError, match=r"ENU origin: invalid"):
        LocalTangentPlane(95.0, 0.0)
    with pytest.raises(CalibrationError, match=r"GNSS fix: non-finite"):
        vehicle_pose_from_gnss(LocalTangentPlane(LAT, LON), float("nan"), LON, ALT, 0.0)
