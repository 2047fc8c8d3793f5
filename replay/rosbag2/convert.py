"""ROS 2 messages (as rosbags deserialises them) -> the node's messages.

Stamps
    `header.stamp` (sec, nanosec) is the sensor stamp, to integer nanoseconds exactly; the
    bag's receive time becomes the drive's log time (replay.rosbag2.importer).

PointCloud2 -> LidarSweep
    `x`, `y`, `z` and `intensity` (else `i`, else `reflectivity`, as Ouster's reduced point
    types carry it; zeros when none is there: the calibration monitor then skips the sweeps,
    having nothing to compare the images with) of any numeric field
    type and either byte order, organised clouds (row padding) included, in the cloud's
    frame. Points with a non-finite coordinate (an organised cloud's no-returns) are dropped.
    Per-point time comes from a field chosen by name (`t`, `time`, `time_stamp`,
    `timestamp`, `offset_time`; `--topics` may name another or none) and read by what its
    values look like, as the drivers write them: an integer field is nanoseconds, a float
    field seconds; values within 10 s of zero count from the header stamp (Velodyne, Ouster,
    Autoware), larger ones are absolute (Hesai, Livox). The sweep's stamp is the earlier of
    the header stamp and its first point (our lidar stamp is the sweep start: a driver that
    stamps the sweep end gives negative offsets), and the offsets count from it.

Image -> CameraFrame (BGR image)
    `rgb8`, `bgr8`, `rgba8`, `bgra8`, `mono8` (and `8UC1`, `8UC3`), rows padded or not.
CompressedImage -> CameraFrame (encoded)
    JPEG or PNG bytes as they are, the format told by the bytes themselves.

NavSatFix (+ velocity) -> GnssFix
    Latitude, longitude, altitude; `position_covariance` (ENU m^2, as ours) unless its type is
    UNKNOWN (then zeros). A fix with status NO_FIX or non-finite coordinates is skipped (the
    GnssFix has no status). Velocity: TwistStamped / TwistWithCovarianceStamped linear
    velocity taken as ENU (what GNSS drivers publish); Odometry's body-frame twist turned by
    its orientation, and its yaw as the heading, so its frame must be ENU-aligned (a GNSS/INS
    odometry); the velocity sample nearest the fix in stamp within 0.5 s is used.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from perception.msgs.schema import ALTITUDE_RANGE_M, MAX_SPEED_MPS
from perception.msgs.types import CameraFrame, GnssFix, Header, LidarSweep
from replay.rosbag2.errors import Rosbag2Error
from replay.rosbag2.rig import rotation_from_quaternion

__all__ = [
    "TIME_FIELDS",
    "VelocitySample",
    "compressed_image_to_frame",
    "image_to_frame",
    "navsat_to_fix",
    "pointcloud_to_sweep",
    "stamp_ns",
    "velocity_sample",
]

#: Fields read as the points' intensity, the first present (ROS drivers' names).
INTENSITY_FIELDS = ("intensity", "i", "reflectivity")
#: Per-point time field names tried in order when `--topics` names none.
TIME_FIELDS = ("t", "time", "time_stamp", "timestamp", "offset_time")
#: Velocity samples further than this from a fix's stamp are not its velocity.
VELOCITY_WINDOW_NS = 500_000_000
_RELATIVE_LIMIT_S = 10.0
_ABSOLUTE_NS_ABOVE = 1e14  # float times above this are nanoseconds since the epoch
_MAX_TIME_NS = 2.0**62  # above any stamp a drive holds (2116), below int64's limit

# sensor_msgs/PointField datatypes -> numpy kinds.
_POINT_FIELD_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
_NO_FIX = -1
_COVARIANCE_TYPE_UNKNOWN = 0


def stamp_ns(stamp: Any, where: str) -> int:
    """A `builtin_interfaces/Time` as integer nanoseconds. Raises Rosbag2Error naming `where`
    for a negative time or nanoseconds beyond a second."""
    sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    if sec < 0 or not 0 <= nanosec < 1_000_000_000:
        raise Rosbag2Error(f"{where}: invalid header stamp {sec} s {nanosec} ns")
    return sec * 1_000_000_000 + nanosec


# -- point clouds -------------------------------------------------------------------------------


def _cloud_fields(msg: Any, where: str) -> tuple[dict[str, tuple[np.dtype[Any], int]], set[str]]:
    """Each field's dtype and offset (the first of a name given twice), and the names given
    twice."""
    order = ">" if msg.is_bigendian else "<"
    fields: dict[str, tuple[np.dtype[Any], int]] = {}
    twice: set[str] = set()
    for f in msg.fields:
        kind = _POINT_FIELD_TYPES.get(int(f.datatype))
        if kind is None:
            raise Rosbag2Error(f"{where}: field {f.name!r} has unknown datatype {f.datatype}")
        dtype = np.dtype(order + kind)
        if int(f.offset) + dtype.itemsize > int(msg.point_step):
            raise Rosbag2Error(
                f"{where}: field {f.name!r} (offset {f.offset}) lies beyond point_step "
                f"{msg.point_step}"
            )
        if str(f.name) in fields:
            twice.add(str(f.name))
        fields.setdefault(str(f.name), (dtype, int(f.offset)))
    return fields, twice


def _check_read_fields(
    fields: dict[str, tuple[np.dtype[Any], int]], read: list[str], twice: set[str], where: str
) -> None:
    """The fields a sweep is read from are each given once and share no byte: a cloud whose x
    is declared float64 over x and y read as garbage, without a word."""
    for name in read:
        if name in twice:
            raise Rosbag2Error(f"{where}: point cloud gives field {name!r} twice")
    spans = sorted((fields[n][1], fields[n][1] + fields[n][0].itemsize, n) for n in read)
    for (start_a, end_a, a), (start_b, end_b, b) in itertools.pairwise(spans):
        if start_b < end_a:
            raise Rosbag2Error(
                f"{where}: point cloud fields {a!r} (bytes {start_a}-{end_a}) and {b!r} "
                f"(bytes {start_b}-{end_b}) overlap"
            )


def _cloud_records(msg: Any, where: str) -> npt.NDArray[np.uint8]:
    """The cloud's points as an (N, point_step) byte array, row padding removed."""
    height, width = int(msg.height), int(msg.width)
    step, row_step = int(msg.point_step), int(msg.row_step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if height * width == 0:
        return np.zeros((0, max(step, 1)), dtype=np.uint8)
    if step <= 0 or row_step < width * step or data.size < row_step * (height - 1) + width * step:
        raise Rosbag2Error(
            f"{where}: point cloud of {height} x {width} points, point_step {step}, row_step "
            f"{row_step} does not fit its {data.size} bytes"
        )
    if row_step == width * step:
        flat = data[: height * width * step]
    else:
        rows = [data[i * row_step : i * row_step + width * step] for i in range(height)]
        flat = np.concatenate(rows)
    return flat.reshape(height * width, step)


def _column(records: npt.NDArray[np.uint8], dtype: np.dtype[Any], offset: int) -> Any:
    raw = np.ascontiguousarray(records[:, offset : offset + dtype.itemsize])
    return raw.view(dtype).reshape(-1)


def _time_offsets(
    values: npt.NDArray[Any], integer: bool, header_ns: int, where: str
) -> npt.NDArray[np.int64]:
    """Per-point times (see the module docstring) as ns after the header stamp (any sign).
    Raises Rosbag2Error naming `where` for a time whose nanoseconds do not fit an int64."""
    v = values.astype(np.float64)
    if integer:
        if np.abs(v).max() < _RELATIVE_LIMIT_S * 1e9:
            return values.astype(np.int64)
        return values.astype(np.int64) - header_ns
    if np.abs(v).max() < _RELATIVE_LIMIT_S:
        return np.rint(v * 1e9).astype(np.int64)
    if np.median(v) > _ABSOLUTE_NS_ABOVE:
        return _as_int64(v, v, where) - header_ns
    # Absolute seconds: subtract the header's seconds first so float64 keeps the nanoseconds.
    sec = header_ns // 1_000_000_000
    rest = header_ns - sec * 1_000_000_000
    with np.errstate(over="ignore"):
        ns = (v - sec) * 1e9
    return _as_int64(ns, v, where) - rest


def _as_int64(
    ns: npt.NDArray[np.float64], given: npt.NDArray[np.float64], where: str
) -> npt.NDArray[np.int64]:
    """`ns` rounded to int64. A float time of 1e300 was cast with numpy's RuntimeWarning to
    int64's minimum, and the sweep refused as starting before the epoch."""
    out_of_range = ~(np.abs(ns) < _MAX_TIME_NS)
    if np.any(out_of_range):
        raise Rosbag2Error(
            f"{where}: per-point time {given[np.argmax(out_of_range)]:g} is beyond any sweep's"
        )
    return np.rint(ns).astype(np.int64)


def pointcloud_to_sweep(
    msg: Any, *, stream: str, frame_id: str, seq: int, time_field: str | None, where: str
) -> LidarSweep:
    """A `sensor_msgs/msg/PointCloud2` as a LidarSweep on `stream` in rig frame `frame_id`.
    `time_field`: the per-point time field (`""`: chosen by name, None: none).

    Raises Rosbag2Error naming `where` for a malformed cloud, no x/y/z fields, a named time
    field that is missing, or non-finite times."""
    header_ns = stamp_ns(msg.header.stamp, where)
    fields, twice = _cloud_fields(msg, where)
    missing = [a for a in "xyz" if a not in fields]
    if missing:
        raise Rosbag2Error(
            f"{where}: point cloud has no {'/'.join(missing)} field (fields: "
            f"{', '.join(fields) or 'none'})"
        )
    name = next((n for n in INTENSITY_FIELDS if n in fields), None)
    if time_field == "":
        time_field = next((n for n in TIME_FIELDS if n in fields), None)
    elif time_field is not None and time_field not in fields:
        raise Rosbag2Error(
            f"{where}: no per-point time field {time_field!r} (fields: {', '.join(fields)})"
        )
    read = [*"xyz", *(n for n in (name, time_field) if n is not None)]
    _check_read_fields(fields, read, twice, where)
    records = _cloud_records(msg, where)
    # A float64 value beyond float32's range becomes inf, and its point is dropped below as a
    # non-finite one: numpy's RuntimeWarning was a second line on stderr.
    with np.errstate(over="ignore"):
        xyz = np.stack([_column(records, *fields[a]).astype(np.float32) for a in "xyz"], axis=1)
        if name is None:
            intensity = np.zeros(len(records), dtype=np.float32)
        else:
            intensity = _column(records, *fields[name]).astype(np.float32)
    keep = np.all(np.isfinite(xyz), axis=1) & np.isfinite(intensity)
    points = np.ascontiguousarray(np.column_stack([xyz, intensity])[keep], dtype=np.float32)

    offsets = None
    stamp = header_ns
    if time_field is not None and len(points):
        dtype, offset = fields[time_field]
        values = _column(records, dtype, offset)[keep]
        if not np.all(np.isfinite(values.astype(np.float64))):
            raise Rosbag2Error(
                f"{where}: per-point time field {time_field!r} has non-finite values"
            )
        at = f"{where}: field {time_field!r}"
        relative = _time_offsets(values, dtype.kind in "iu", header_ns, at)
        first = min(int(relative.min()), 0)
        stamp = header_ns + first
        if stamp < 0:
            raise Rosbag2Error(f"{where}: per-point times start before the epoch")
        offsets = relative - first
    return LidarSweep(Header(stream, seq, stamp, frame_id), points, offsets)


# -- images -------------------------------------------------------------------------------------

_CHANNELS = {
    "rgb8": 3, "bgr8": 3, "8uc3": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8uc1": 1,
}  # fmt: skip


def image_to_frame(msg: Any, *, stream: str, frame_id: str, seq: int, where: str) -> CameraFrame:
    """A `sensor_msgs/msg/Image` as a BGR CameraFrame. Raises Rosbag2Error naming `where`
    for an unsupported encoding or a size that does not match the data."""
    encoding = str(msg.encoding).lower()
    channels = _CHANNELS.get(encoding)
    if channels is None:
        raise Rosbag2Error(
            f"{where}: image encoding {msg.encoding!r} is not supported "
            "(rgb8, bgr8, rgba8, bgra8, mono8)"
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    row = width * channels
    if height <= 0 or width <= 0 or step < row or data.size < step * (height - 1) + row:
        raise Rosbag2Error(
            f"{where}: {width} x {height} {msg.encoding} image with step {step} does not fit "
            f"its {data.size} bytes"
        )
    padded = np.zeros(step * height, dtype=np.uint8)
    padded[: min(data.size, padded.size)] = data[: padded.size]
    pixels = padded.reshape(height, step)[:, :row].reshape(height, width, channels)
    if channels == 1:
        bgr = np.repeat(pixels, 3, axis=2)
    elif encoding.startswith("rgb"):
        bgr = pixels[:, :, 2::-1]
    else:
        bgr = pixels[:, :, :3]
    image = np.ascontiguousarray(bgr, dtype=np.uint8)
    header = Header(stream, seq, stamp_ns(msg.header.stamp, where), frame_id)
    return CameraFrame(header, image=image)


def compressed_image_to_frame(
    msg: Any, *, stream: str, frame_id: str, seq: int, where: str
) -> CameraFrame:
    """A `sensor_msgs/msg/CompressedImage` (JPEG or PNG) as an encoded CameraFrame. Raises
    Rosbag2Error naming `where` for any other format."""
    data = bytes(np.asarray(msg.data, dtype=np.uint8))
    if data.startswith(b"\xff\xd8\xff"):
        encoding = "jpeg"
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        encoding = "png"
    else:
        raise Rosbag2Error(
            f"{where}: compressed image format {msg.format!r} is not JPEG or PNG data"
        )
    header = Header(stream, seq, stamp_ns(msg.header.stamp, where), frame_id)
    return CameraFrame(header, data=data, encoding=encoding)


# -- GNSS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VelocitySample:
    """An ENU velocity (m/s) at `stamp_ns`, with the heading (rad, ENU yaw) where known."""

    stamp_ns: int
    velocity_enu_mps: tuple[float, float, float]
    heading_rad: float | None = None


def velocity_sample(msg: Any, msgtype: str, where: str) -> VelocitySample | None:
    """The velocity of a TwistStamped, TwistWithCovarianceStamped or Odometry message (see the
    module docstring); None when it has non-finite values or one faster than any road vehicle
    (`MAX_SPEED_MPS`, what a drive can hold)."""
    stamp = stamp_ns(msg.header.stamp, where)
    heading = None
    if msgtype.endswith("/Odometry"):
        q = msg.pose.pose.orientation
        rotation = rotation_from_quaternion(q.x, q.y, q.z, q.w, where)
        lin = msg.twist.twist.linear
        v = rotation @ np.array([lin.x, lin.y, lin.z], dtype=np.float64)
        heading = math.atan2(rotation[1, 0], rotation[0, 0])
    else:
        twist = msg.twist.twist if msgtype.endswith("WithCovarianceStamped") else msg.twist
        lin = twist.linear
        v = np.array([lin.x, lin.y, lin.z], dtype=np.float64)
    if not (np.all(np.isfinite(v)) and math.hypot(*v.tolist()) <= MAX_SPEED_MPS):
        return None
    return VelocitySample(stamp, (float(v[0]), float(v[1]), float(v[2])), heading)


def navsat_to_fix(
    msg: Any,
    *,
    stream: str,
    frame_id: str,
    seq: int,
    velocity: VelocitySample | None,
    where: str,
) -> GnssFix | None:
    """A `sensor_msgs/msg/NavSatFix` as a GnssFix with `velocity` (when given); None for a
    fix without a position (status NO_FIX, non-finite or out-of-range coordinates, an
    altitude outside `ALTITUDE_RANGE_M`, what a drive can hold: one glitch must not end the
    import)."""
    lat, lon, alt = float(msg.latitude), float(msg.longitude), float(msg.altitude)
    if int(msg.status.status) <= _NO_FIX or not all(map(math.isfinite, (lat, lon, alt))):
        return None
    low, high = ALTITUDE_RANGE_M
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0 and low <= alt <= high):
        return None
    cov = np.asarray(msg.position_covariance, dtype=np.float64).ravel()
    if int(msg.position_covariance_type) == _COVARIANCE_TYPE_UNKNOWN or not (
        cov.size == 9 and np.all(np.isfinite(cov)) and np.all(cov[[0, 4, 8]] >= 0)
    ):
        cov = np.zeros(9)
    return GnssFix(
        header=Header(stream, seq, stamp_ns(msg.header.stamp, where), frame_id),
        latitude_deg=lat,
        longitude_deg=lon,
        altitude_m=alt,
        position_covariance_m2=tuple(float(c) for c in cov),
        velocity_enu_mps=None if velocity is None else velocity.velocity_enu_mps,
        heading_rad=None if velocity is None else velocity.heading_rad,
    )
