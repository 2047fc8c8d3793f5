"""Message types of the node: frozen dataclasses, integer nanoseconds, metres, radians.

Arrays inside messages are numpy arrays owned by the message; callers must not mutate them
(they may be read-only views of received ZeroMQ frames).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from calibration import Rig

__all__ = [
    "READABLE_SCHEMA_VERSIONS",
    "SCHEMA_VERSION",
    "CalibrationStatus",
    "CameraBox",
    "CameraFrame",
    "Detection3D",
    "DetectionList",
    "Diagnostics",
    "EgoPose",
    "GnssFix",
    "Header",
    "LidarSweep",
    "Message",
    "RealtimeStatus",
    "RigMessage",
    "SensorClock",
    "SensorStatus",
    "SyncedBundle",
    "Track",
    "TrackList",
    "sweep_end_ns",
]

#: The schema version this node writes. Version 2 added `Detection3D.camera_contribution`.
SCHEMA_VERSION = 2
#: The versions this node reads: an older document gets the fields added since as None
#: (perception.msgs.schema.upgrade).
READABLE_SCHEMA_VERSIONS = (1, 2)


@dataclass(frozen=True)
class Header:
    """Common header.

    `stamp_ns` is sensor time: mid-exposure for a camera, the sweep *start* for a lidar (the
    per-point time offsets of a sweep count forward from it).
    """

    stream: str
    seq: int
    stamp_ns: int
    frame_id: str


@dataclass(frozen=True, eq=False)
class CameraFrame:
    """One camera image: `image` is H x W x 3 uint8 BGR, or `data` holds encoded bytes."""

    header: Header
    image: npt.NDArray[np.uint8] | None = None
    data: bytes | None = None
    encoding: str = "bgr8"  # "bgr8" (raw image) or "jpeg" / "png" (encoded bytes in `data`)

    def __post_init__(self) -> None:
        if (self.image is None) == (self.data is None):
            raise ValueError(f"{self.header.stream}: exactly one of image and data must be set")


@dataclass(frozen=True, eq=False)
class LidarSweep:
    """One lidar sweep: `points` N x 4 float32 (x, y, z, intensity) in the sensor frame.

    `point_time_offsets_ns` (N, int64), when present, is each point's time after `stamp_ns`.
    """

    header: Header
    points: npt.NDArray[np.float32]
    point_time_offsets_ns: npt.NDArray[np.int64] | None = None


@dataclass(frozen=True)
class GnssFix:
    """A WGS84 fix. Covariance is ENU, m^2, row-major 3 x 3; velocity ENU m/s; heading rad
    (ENU yaw: 0 = east, counter-clockwise positive)."""

    header: Header
    latitude_deg: float
    longitude_deg: float
    altitude_m: float
    position_covariance_m2: tuple[float, ...] = (0.0,) * 9
    velocity_enu_mps: tuple[float, float, float] | None = None
    heading_rad: float | None = None


@dataclass(frozen=True)
class RigMessage:
    """The rig calibration in force from `header.stamp_ns` on (as a rig document, see
    calibration.rig.Rig.to_dict). Datasets of independent frames (KITTI object) send one per
    frame; a vehicle sends it once at start or configures the node with a rig file."""

    header: Header
    rig: dict[str, Any]


@dataclass(frozen=True)
class EgoPose:
    """Vehicle state at `stamp_ns`: ENU position (m), heading (rad), ENU velocity (m/s)."""

    stamp_ns: int
    position_enu_m: tuple[float, float, float]
    heading_rad: float
    velocity_enu_mps: tuple[float, float, float]
    extrapolated: bool = False
    stale: bool = False


@dataclass(frozen=True)
class CameraBox:
    """The 2D box (pixels, original image) a detection came from."""

    camera: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class Detection3D:
    """A fused 3D detection in the vehicle frame. `size` is (length, width, height); `center`
    is the box centre; `yaw` is the heading of the length axis about +z. `camera_contribution`
    (learned fusion): how much the camera features raised the score, the score minus that of
    the same peak with them removed, both from one engine call; None where not measured."""

    label: str
    score: float
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float
    sources: tuple[str, ...] = ()
    latitude_deg: float | None = None
    longitude_deg: float | None = None
    camera_box: CameraBox | None = None
    camera_contribution: float | None = None


@dataclass(frozen=True)
class DetectionList:
    """Detections of one lidar sweep. `timings_ns` per stage; `latency_ns` sensor stamp to
    publish; `degraded` names the input streams missing, or present but unfit to use (a camera
    image too dark or too blurred, perception.pipeline.camera_health); `valid`: none was."""

    header: Header
    detections: tuple[Detection3D, ...]
    timings_ns: dict[str, int] = field(default_factory=dict)
    latency_ns: int = 0
    budget_ok: bool = True
    degraded: tuple[str, ...] = ()
    valid: bool = True
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True)
class Track:
    """One tracked object (perception.pipeline.tracking). The world frame is a local ENU frame
    at the drive's origin (the first GNSS fix) when the node has ego poses, else the vehicle
    frame (`TrackList.world_frame` says which). `center`, `yaw`, `velocity_mps` are in the
    vehicle frame at the list's stamp (velocity over the ground, in vehicle axes), their
    `*_world` twins in the world frame; `size` (length, width, height) is smoothed; `yaw_rate`
    rad/s. `covariance_world` is the row-major 4 x 4 covariance of (x, y, vx, vy) in the world
    frame (m^2, m^2/s, m^2/s^2). `score` is the track's existence probability; `age_ns` time
    since it was born, `hits` the detections it took, `misses` the consecutive sweeps it went
    unseen (coasting when > 0)."""

    track_id: int
    label: str
    score: float
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float
    velocity_mps: tuple[float, float]
    center_world: tuple[float, float, float]
    yaw_world: float
    velocity_world_mps: tuple[float, float]
    yaw_rate: float
    covariance_world: tuple[float, ...]
    age_ns: int
    hits: int
    misses: int


@dataclass(frozen=True)
class TrackList:
    """The confirmed tracks at one lidar sweep (header stamp: the sweep's), with the timings of
    the DetectionList they were updated from plus `tracking`; `world_frame`: `enu` or
    `vehicle` (no ego pose, see `Track`); `resets`: how many times the tracker started over
    (clock jumps, ego pose lost or gained)."""

    header: Header
    tracks: tuple[Track, ...]
    world_frame: str = "enu"
    timings_ns: dict[str, int] = field(default_factory=dict)
    resets: int = 0
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True)
class SensorClock:
    """One sensor stream's clock against the host clock (perception.sync.clock): `offset_ns` =
    host - sensor at the newest stamp (None before an estimate), `drift_ppm` (host seconds gained
    per sensor second, x 1e6), `samples` in the estimator's window, `jumps` seen (confirmed
    persistent offset changes) and the stamp of the last one, `rejected`: messages dropped for a
    stamp too far from the host receive clock."""

    stream: str
    offset_ns: int | None
    drift_ppm: float
    samples: int
    jumps: int
    last_jump_stamp_ns: int | None
    rejected: int = 0


@dataclass(frozen=True)
class SensorStatus:
    """One input sensor's liveness (perception.sync.liveness), from the receive times of its
    messages: `alive` (heard from within `dead_after_periods` of its period), `rate_hz` measured
    over its recent messages (0 when dead), `nominal_rate_hz` from the config, `messages`
    accepted, `outages` (times it came back after being dead) and `last_receive_ns` (host
    receive time of its last message, None if never heard)."""

    stream: str
    alive: bool
    rate_hz: float
    nominal_rate_hz: float
    messages: int = 0
    outages: int = 0
    last_receive_ns: int | None = None


@dataclass(frozen=True)
class RealtimeStatus:
    """The real-time settings in force (perception.node.realtime) and what the OS refused, one
    line per refusal."""

    cpu_affinity: tuple[int, ...]
    nice: int
    scheduler: str
    gc_hold: bool
    refused: tuple[str, ...] = ()


@dataclass(frozen=True)
class CalibrationStatus:
    """The calibration monitor's belief about one camera's extrinsic (calibration.monitor):
    `state` is `collecting` (too few frames yet), `aligned` or `drifted`; `rotation_deg`
    (a rotation vector about the vehicle axes, about the camera's centre) and `translation_m`
    (along the vehicle axes) are the correction that best aligns the camera with the lidar,
    with their standard deviations (-1 where an axis is not observed); `frames` used and
    `skipped` (too few points, too little contrast, or not moving); `score` the mutual
    information (nats) at the search's centre."""

    camera: str
    state: str
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    translation_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation_sigma_deg: tuple[float, float, float] = (-1.0, -1.0, -1.0)
    translation_sigma_m: tuple[float, float, float] = (-1.0, -1.0, -1.0)
    frames: int = 0
    skipped: int = 0
    score: float = 0.0


@dataclass(frozen=True)
class Diagnostics:
    """The node's state, published at 1 Hz on the diagnostics topic (and recordable like any
    message). `header.stamp_ns` is host wall time.

    - `counters`: what the node received, dropped, skipped and published (perception.node).
    - `overruns_by_stage`: budget overruns per stage (and `end_to_end`).
    - `sync`: the synchroniser's counters; `missing_by_stream` / `late_by_stream` per stream.
    - `clocks`: each sensor clock against the host clock.
    - `sensors`: each input sensor alive or dead, its measured and nominal rate.
    - `status`: the inputs overall: `ok` (every sensor alive), `degraded` (some dead) or
      `stale` (every sensor dead, or none heard yet); `unknown` where not reported.
    - `budgets_ms`: the budgets in force, per stage and `end_to_end` (milliseconds).
    - `last_publish_ns`, `last_latency_ns`: the last DetectionList's publish time and latency.
    - `engines`: what each engine actually runs on (backend, device, precision).
    - `notes`: conditions a user must know about, such as a backend fallback.
    - `realtime`: the real-time settings in force (None before the node applied them).
    - `calibration`: the calibration monitor's belief per camera (empty when it is off).
    """

    header: Header
    counters: dict[str, int] = field(default_factory=dict)
    overruns_by_stage: dict[str, int] = field(default_factory=dict)
    sync: dict[str, int] = field(default_factory=dict)
    missing_by_stream: dict[str, int] = field(default_factory=dict)
    late_by_stream: dict[str, int] = field(default_factory=dict)
    clocks: tuple[SensorClock, ...] = ()
    budgets_ms: dict[str, float] = field(default_factory=dict)
    last_publish_ns: int = 0
    last_latency_ns: int = 0
    engines: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    realtime: RealtimeStatus | None = None
    sensors: tuple[SensorStatus, ...] = ()
    status: str = "unknown"
    calibration: tuple[CalibrationStatus, ...] = ()


def sweep_end_ns(sweep: LidarSweep) -> int:
    """Stamp of the sweep's last point (its stamp when it has no per-point offsets)."""
    offsets = sweep.point_time_offsets_ns
    if offsets is None or len(offsets) == 0:
        return sweep.header.stamp_ns
    return sweep.header.stamp_ns + max(int(offsets.max()), 1)


Message = CameraFrame | LidarSweep | GnssFix | RigMessage | DetectionList | TrackList | Diagnostics


@dataclass(frozen=True, eq=False)
class SyncedBundle:
    """One lidar sweep with the camera frames matched to it.

    `skews_ns` maps each member stream to its stamp minus the sweep stamp. `rig` is the
    calibration in force at the sweep time. `decode_ns` is how long the
    members took to decode; `sync_wait_ns` how long the sweep waited for its bundle. `ego_pose`
    and `ego_pose_end` are the GNSS ego poses at the sweep's stamp and at its last point (for
    deskew; None without GNSS).
    """

    lidar: LidarSweep
    cameras: dict[str, CameraFrame]
    rig: Rig
    gnss: GnssFix | None = None
    missing: tuple[str, ...] = ()
    skews_ns: dict[str, int] = field(default_factory=dict)
    decode_ns: int = 0
    sync_wait_ns: int = 0
    ego_pose: EgoPose | None = None
    ego_pose_end: EgoPose | None = None
