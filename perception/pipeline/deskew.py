"""Lidar deskew: every point moved to the sweep reference time using the ego motion.

A spinning lidar measures each point at `stamp_ns + point_time_offsets_ns[i]` while the vehicle
moves, so a straight wall comes out bent. With the vehicle's planar twist over the sweep
(velocity in the vehicle frame, m/s, and yaw rate, rad/s, constant over ~0.1 s), the pose of
the sensor at time t relative to the reference time is integrated in closed form and each point
is transformed into the reference frame. Points are in the vehicle frame (or pass
`vehicle_from_lidar`, a 4 x 4 transform, for a sensor-frame sweep).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from perception.msgs.types import EgoPose, LidarSweep

__all__ = ["deskew_points", "deskew_sweep", "ego_twist", "vehicle_motion"]

FloatArray = npt.NDArray[np.float64]


#: The largest rotation (rad) between a point's instant and the reference up to which the
#: float32 path uses the series of sin and cos (truncation below 1e-9 there); beyond it, the
#: exact float64 form. A sweep turns by its yaw rate times 0.1 s: 0.05 rad at a sharp turn.
_SERIES_MAX_RAD = 0.3


def _sensor_motion(
    dt: FloatArray,
    velocity_mps: tuple[float, float, float],
    yaw_rate_radps: float,
    single: bool,
) -> tuple[npt.NDArray[np.floating], ...]:
    """Per point, the rotation (cos, sin of the yaw) and translation (x, y, z) that take the
    sensor frame at ``dt`` (s from the reference) to the reference frame, for a constant twist.
    ``single``: in float32, through the series of sin(a)/a and (cos(a) - 1)/a, which stay
    well conditioned for the translation as the yaw rate tends to zero (the exact form divides
    a difference of nearly equal cosines by it), and cost a tenth of float64 trigonometry."""
    vx, vy, vz = velocity_mps
    w = yaw_rate_radps
    angle = w * dt
    if single and float(np.abs(angle).max(initial=0.0)) <= _SERIES_MAX_RAD:
        a = angle.astype(np.float32)
        t = dt.astype(np.float32)
        a2 = a * a
        sinc = 1.0 + a2 * (-1.0 / 6.0 + a2 * (1.0 / 120.0 - a2 * (1.0 / 5040.0)))
        cosc = a * (-0.5 + a2 * (1.0 / 24.0 - a2 * (1.0 / 720.0)))
        sinc = sinc.astype(np.float32, copy=False)
        cosc = cosc.astype(np.float32, copy=False)
        along, across = t * sinc, t * cosc
        return (
            1.0 + a * cosc,
            a * sinc,
            np.float32(vx) * along + np.float32(vy) * across,
            np.float32(vy) * along - np.float32(vx) * across,
            np.float32(vz) * t,
        )
    c, s = np.cos(angle), np.sin(angle)
    if abs(w) < 1e-9:
        tx, ty = vx * dt, vy * dt
    else:
        # Integral of R(w t) v dt: exact for a constant twist.
        tx = (vx * s + vy * (c - 1.0)) / w
        ty = (vx * (1.0 - c) + vy * s) / w
    return c, s, tx, ty, vz * dt


def deskew_points(
    points: npt.NDArray[np.floating],
    offsets_ns: npt.NDArray[np.integer],
    velocity_mps: tuple[float, float, float],
    yaw_rate_radps: float = 0.0,
    reference_offset_ns: int = 0,
) -> npt.NDArray[np.float32]:
    """Points (N x 3+, extra columns kept) measured at `offsets_ns` -> the frame at
    `reference_offset_ns`. `velocity_mps` is the vehicle velocity in its own frame at the
    reference time. Returns a new float32 array of the same shape (computed in float64)."""
    pts = np.asarray(points)
    dt = (np.asarray(offsets_ns, dtype=np.int64) - reference_offset_ns).astype(np.float64) * 1e-9
    c, s, tx, ty, tz = _sensor_motion(dt, velocity_mps, yaw_rate_radps, single=False)
    x, y = pts[:, 0].astype(np.float64), pts[:, 1].astype(np.float64)
    out = np.array(pts, dtype=np.float32, copy=True)
    out[:, 0] = c * x - s * y + tx
    out[:, 1] = s * x + c * y + ty
    out[:, 2] = pts[:, 2].astype(np.float64) + tz
    return out


def deskew_sweep(
    sweep: LidarSweep,
    start: EgoPose | None,
    end: EgoPose | None,
    vehicle_from_lidar: npt.ArrayLike | None = None,
    *,
    max_range_m: float | None = None,
) -> tuple[npt.NDArray[np.float32], bool]:
    """The sweep's points deskewed to its stamp, in the vehicle frame, and whether it was done.

    `start` / `end` are the ego poses at the sweep's stamp and at its last point (GNSS, e.g.
    `EgoPoseBuffer.pose_at`); the twist over the sweep comes from them. Without per-point offsets
    or either pose the points are returned unchanged (in the vehicle frame) and the flag is False,
    so the caller can mark its output. `max_range_m`: returns farther than this from the vehicle
    origin, once deskewed, are left out (None keeps all).
    """
    src = np.asarray(sweep.points, dtype=np.float32)
    m = np.eye(4) if vehicle_from_lidar is None else np.asarray(vehicle_from_lidar, np.float64)
    offsets = sweep.point_time_offsets_ns
    twist = ego_twist(start, end)
    done = offsets is not None and len(offsets) > 0 and twist is not None
    # The schema keeps points finite; were a coordinate not, only its own point would become
    # NaN (each point is moved alone) and fall to the range cut. The height's shift is added
    # with the motion's, in one rounding (as it always was).
    out = _mounted(src, m, with_height=not done)
    x, y, z = out[:, 0], out[:, 1], out[:, 2]
    if done:
        assert offsets is not None and twist is not None
        # float32 throughout: a sweep of 10^5 points is deskewed on every frame, and the points
        # are float32 already (the series' and the rounding's errors stay below 0.1 mm at 120 m).
        # In place, a few temporaries: cold in cache after the frame's pause, every pass over
        # the sweep costs several times its warm time (benchmarks/RESULTS.md).
        c, s, tx, ty, tz = _motion_per_point(np.asarray(offsets, dtype=np.int64), twist)
        # A finite coordinate near float32's largest turns past it (inf, or NaN where two
        # infinities meet): that point is cut by range below, quietly, like any far return,
        # where numpy would have printed an overflow warning.
        with np.errstate(over="ignore", invalid="ignore"):
            new_x = c * x
            new_x -= s * y
            new_x += tx
            s *= x
            c *= y
            s += c
            s += ty
            x[:] = new_x
            y[:] = s
            tz += np.float32(m[2, 3])
            z += tz
    if max_range_m is not None and len(out):
        # A coordinate beyond 1.8e19 m squares past float32: inf, and cut like any far return.
        with np.errstate(over="ignore"):
            r2 = x * x
            r2 += y * y
            r2 += z * z
            keep = r2 <= np.float32(max_range_m**2)
        if not bool(keep.all()):
            # compress: a tenth of the time of a boolean index over rows.
            out = np.compress(keep, out, axis=0)
    return out, done


def _mounted(
    points: npt.NDArray[np.float32], m: FloatArray, *, with_height: bool
) -> npt.NDArray[np.float32]:
    """N x 3+ points (x, y, z, then columns kept as they are) moved by the 4 x 4 ``m`` (the
    height's shift left out unless ``with_height``): a new array. The sweep's own four columns
    go through OpenCV's transform, one compiled pass that reads the rows in place; BLAS (a
    3 x 3 product over the rows' columns) took twice as long, and the copy into rows after it
    as long again."""
    shift = m[:3, 3].astype(np.float32)
    if not with_height:
        shift[2] = 0.0
    if points.ndim == 2 and points.shape[1] == 4 and len(points):
        affine = np.zeros((4, 5), np.float32)
        affine[:3, :3] = m[:3, :3]
        affine[:3, 4] = shift
        affine[3, 3] = 1.0
        moved = cv2.transform(np.ascontiguousarray(points).reshape(-1, 1, 4), affine)
        return np.asarray(moved, dtype=np.float32).reshape(-1, 4)
    out = np.empty(points.shape, np.float32)
    out[:, :3] = (m[:3, :3].astype(np.float32) @ points[:, :3].T).T
    out[:, :3] += shift
    out[:, 3:] = points[:, 3:]
    return out


def _motion_per_point(
    offsets_ns: npt.NDArray[np.int64], twist: tuple[tuple[float, float, float], float]
) -> tuple[npt.NDArray[np.floating], ...]:
    """`_sensor_motion` (float32) of every point, from its time offset. A spinning lidar fires
    a column of lasers at one instant, so offsets come in runs of equal values (1,024 runs in a
    57k-point sweep): the motion is computed once per run and repeated, each point getting
    the very values it would get alone. Offsets in short runs are computed point by point."""
    n = len(offsets_ns)
    starts = np.flatnonzero(offsets_ns[1:] != offsets_ns[:-1]) + 1
    if 4 * (len(starts) + 1) > n:
        dt = offsets_ns.astype(np.float64) * 1e-9
        return _sensor_motion(dt, *twist, single=True)
    starts = np.concatenate(([0], starts))
    lengths = np.diff(starts, append=n)
    dt = offsets_ns[starts].astype(np.float64) * 1e-9
    return tuple(np.repeat(v, lengths) for v in _sensor_motion(dt, *twist, single=True))


def ego_twist(
    start: EgoPose | None, end: EgoPose | None
) -> tuple[tuple[float, float, float], float] | None:
    """(velocity in the vehicle frame at `start`, m/s; yaw rate, rad/s) between two ego poses,
    or None when either is missing."""
    if start is None or end is None:
        return None
    dt = max(end.stamp_ns - start.stamp_ns, 1) * 1e-9
    yaw_rate = math.remainder(end.heading_rad - start.heading_rad, 2 * math.pi) / dt
    # ENU velocity -> vehicle frame at the reference time.
    ve, vn, vu = start.velocity_enu_mps
    ch, sh = math.cos(start.heading_rad), math.sin(start.heading_rad)
    return (ch * ve + sh * vn, -sh * ve + ch * vn, vu), yaw_rate


def vehicle_motion(
    twist: tuple[tuple[float, float, float], float], dt_ns: int
) -> npt.NDArray[np.float64]:
    """`vehicle(t0 + dt)_from_vehicle(t0)` (4 x 4) for a constant twist (velocity in the vehicle
    frame, yaw rate, as `ego_twist` gives it), built from `deskew_points` applied to the origin
    and the unit axes, so that it moves points exactly as deskewing does."""
    basis = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
    moved = deskew_points(basis, np.zeros(4, np.int64), *twist, reference_offset_ns=dt_ns)
    m = np.eye(4)
    m[:3, 3] = moved[0, :3]
    m[:3, :3] = (moved[1:, :3] - moved[0, :3]).T
    return m
