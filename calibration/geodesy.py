"""WGS84 geodetic <-> ECEF <-> local ENU (pymap3d), and GNSS fix -> vehicle pose.

Units: degrees for latitude/longitude, metres for altitudes (ellipsoidal, WGS84) and
coordinates, radians for headings. ENU axes: x east, y north, z up, around an origin
(`LocalTangentPlane`). A heading is the ENU yaw of the vehicle x axis: 0 = east,
counter-clockwise positive (pi/2 = north), as KITTI OXTS `yaw`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pymap3d

from calibration.errors import CalibrationError
from calibration.transforms import RigidTransform

__all__ = [
    "LocalTangentPlane",
    "ecef_to_geodetic",
    "geodetic_to_ecef",
    "vehicle_pose_from_gnss",
]

FloatArray = npt.NDArray[np.float64]


def _coords(*values: npt.ArrayLike) -> list[FloatArray]:
    return [np.asarray(v, dtype=np.float64) for v in values]


def geodetic_to_ecef(
    lat_deg: npt.ArrayLike, lon_deg: npt.ArrayLike, alt_m: npt.ArrayLike
) -> FloatArray:
    """WGS84 (deg, deg, m) -> ECEF (x, y, z) metres; shape (..., 3)."""
    lat, lon, alt = _coords(lat_deg, lon_deg, alt_m)
    x, y, z = pymap3d.geodetic2ecef(lat, lon, alt)
    return np.stack(np.broadcast_arrays(x, y, z), axis=-1).astype(np.float64)


def ecef_to_geodetic(ecef: npt.ArrayLike) -> FloatArray:
    """ECEF (..., 3) metres -> WGS84 (lat deg, lon deg, alt m); shape (..., 3)."""
    e = np.asarray(ecef, dtype=np.float64)
    lat, lon, alt = pymap3d.ecef2geodetic(e[..., 0], e[..., 1], e[..., 2])
    return np.stack(np.broadcast_arrays(lat, lon, alt), axis=-1).astype(np.float64)


@dataclass(frozen=True)
class LocalTangentPlane:
    """A local ENU frame whose origin is the WGS84 point (lat0, lon0, alt0).

    Raises CalibrationError for a non-finite origin or a latitude outside [-90, 90].
    """

    lat0_deg: float
    lon0_deg: float
    alt0_m: float = 0.0

    def __post_init__(self) -> None:
        values = (self.lat0_deg, self.lon0_deg, self.alt0_m)
        if not all(np.isfinite(values)) or abs(self.lat0_deg) > 90.0:
            raise CalibrationError(f"ENU origin: invalid (lat, lon, alt) {values}")

    def geodetic_to_enu(
        self, lat_deg: npt.ArrayLike, lon_deg: npt.ArrayLike, alt_m: npt.ArrayLike
    ) -> FloatArray:
        """WGS84 -> ENU (..., 3) metres."""
        lat, lon, alt = _coords(lat_deg, lon_deg, alt_m)
        e, n, u = pymap3d.geodetic2enu(lat, lon, alt, self.lat0_deg, self.lon0_deg, self.alt0_m)
        return np.stack(np.broadcast_arrays(e, n, u), axis=-1).astype(np.float64)

    def enu_to_geodetic(self, enu: npt.ArrayLike) -> FloatArray:
        """ENU (..., 3) metres -> WGS84 (lat deg, lon deg, alt m), shape (..., 3)."""
        p = np.asarray(enu, dtype=np.float64)
        lat, lon, alt = pymap3d.enu2geodetic(
            p[..., 0], p[..., 1], p[..., 2], self.lat0_deg, self.lon0_deg, self.alt0_m
        )
        return np.stack(np.broadcast_arrays(lat, lon, alt), axis=-1).astype(np.float64)

    def ecef_to_enu(self, ecef: npt.ArrayLike) -> FloatArray:
        """ECEF (..., 3) -> ENU (..., 3), metres."""
        p = np.asarray(ecef, dtype=np.float64)
        e, n, u = pymap3d.ecef2enu(
            p[..., 0], p[..., 1], p[..., 2], self.lat0_deg, self.lon0_deg, self.alt0_m
        )
        return np.stack(np.broadcast_arrays(e, n, u), axis=-1).astype(np.float64)

    def enu_to_ecef(self, enu: npt.ArrayLike) -> FloatArray:
        """ENU (..., 3) -> ECEF (..., 3), metres."""
        p = np.asarray(enu, dtype=np.float64)
        x, y, z = pymap3d.enu2ecef(
            p[..., 0], p[..., 1], p[..., 2], self.lat0_deg, self.lon0_deg, self.alt0_m
        )
        return np.stack(np.broadcast_arrays(x, y, z), axis=-1).astype(np.float64)


def vehicle_pose_from_gnss(
    origin: LocalTangentPlane,
    lat_deg: float,
    lon_deg: float,
    alt_m: float,
    heading_rad: float,
    *,
    lever_arm_m: npt.ArrayLike | None = None,
    pitch_rad: float = 0.0,
    roll_rad: float = 0.0,
) -> RigidTransform:
    """`enu_from_vehicle` from a GNSS fix of the antenna.

    The fix (lat, lon, alt) is the antenna position; `heading_rad` is the ENU yaw of the
    vehicle x axis (optional pitch/roll: z-y'-x'' angles, radians); `lever_arm_m` is the antenna
    position in the vehicle frame (metres, e.g. `rig.gnss_lever_arm_m`; None = at the origin).
    The vehicle origin is the antenna position minus the rotated lever arm.
    Raises CalibrationError for non-finite inputs.
    """
    arm = np.zeros(3) if lever_arm_m is None else np.asarray(lever_arm_m, dtype=np.float64)
    values = (lat_deg, lon_deg, alt_m, heading_rad, pitch_rad, roll_rad)
    if arm.shape != (3,) or not np.all(np.isfinite(arm)) or not np.all(np.isfinite(values)):
        raise CalibrationError(
            f"GNSS fix: non-finite or malformed values (fix {values}, lever arm {arm.tolist()})"
        )
    if (lat_deg, lon_deg, alt_m) == (origin.lat0_deg, origin.lon0_deg, origin.alt0_m):
        # The antenna is the plane's origin (a plane at each fix): exactly what the conversion
        # gives, without its cost.
        antenna_enu = np.zeros(3)
    else:
        antenna_enu = origin.geodetic_to_enu(lat_deg, lon_deg, alt_m)
    rot = RigidTransform.from_yaw(heading_rad, pitch=pitch_rad, roll=roll_rad)
    m = rot.matrix.copy()
    m[:3, 3] = antenna_enu - rot.rotation @ arm
    return RigidTransform(m)
