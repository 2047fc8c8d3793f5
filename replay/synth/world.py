"""A deterministic synthetic drive: a ground truth test bed and the project's default data.

The world is a flat straight road (the *road frame*: x along the road, y to the left, z up,
metres, ground at z = 0). The ego vehicle drives along it at `EGO_SPEED_MPS` weaving gently
inside its lane; cars (in lanes and parked), cyclists and pedestrians are boxes (each drawn as a
few coloured parts) moving at constant velocity. The vehicle frame is the lidar frame, mounted
`LIDAR_HEIGHT_M` above the ground like the KITTI Velodyne, so KITTI priors hold.

Sensors (KITTI-raw-like timing; all stamps integer ns):
- lidar `lidar`: 64 beams (+2 .. -24.8 deg), 1024 columns per turn at 10 Hz (the `synth64`
  model of `replay.synth.lidar_model`; the rich world's is KITTI's HDL-64E), turning
  clockwise from the rear, per-point time offsets from the sweep start (the stamp), ray-cast
  against the object parts and the ground, Gaussian range noise and random dropouts;
- camera `camera/front`: 1242 x 375 pinhole with a small plumb-bob distortion, rendered with
  OpenCV at the sweep stamp + `CAMERA_OFFSET_NS` (+- jitter), when the lidar faces forward;
- GNSS `gnss`: WGS84 fixes of the antenna (lever arm) at 10 Hz with noise, heading and velocity.

Ground truth: one JSON line per sweep (`<drive>.gt.jsonl`): `seq`, `stamp_ns` and the boxes in
the vehicle frame at the sweep stamp (`id`, `label`, `center` m, `size` (l, w, h) m, `yaw` rad,
`velocity` m/s in the vehicle axes, `lidar_points` (returns of the sweep on the object) and
`camera_visible` (unoccluded fraction of its in-image silhouette in the camera frame, 0-1)).
The same documents are in the drive itself, on its ground-truth channel (`replay.drive`,
`GROUND_TRUTH_TOPIC`), read by `read_drive_ground_truth`.

Everything derives from one `numpy.random.Generator(PCG64(seed))`; the same seed gives
byte-identical files (the MCAP writer stores no wall-clock time).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from calibration import LocalTangentPlane, PinholeCamera, Rig, RigidTransform
from calibration.errors import not_utf8, unconverted
from calibration.monitor import Correction, corrected_rig
from perception.msgs.types import CameraFrame, GnssFix, Header, LidarSweep
from replay.drive import SYNTHETIC_METADATA, DriveReader, DriveWriter
from replay.errors import ReplayError
from replay.evaluation import ReferenceBox
from replay.synth.lidar_model import MATERIALS, LidarModel, lidar_model, passes_through
from replay.synth.road import Road

__all__ = [
    "CAMERA_NAME",
    "CAMERA_OFFSET_NS",
    "CAMERA_STREAM",
    "GNSS_STREAM",
    "LIDAR_HEIGHT_M",
    "LIDAR_STREAM",
    "SCENES",
    "Box2DTruth",
    "GroundTruthFrame",
    "SynthObject",
    "SynthStats",
    "SynthWorld",
    "check_world_options",
    "drive_files",
    "ego_road_coordinates",
    "generate_drive",
    "ground_truth_path",
    "has_ground_truth",
    "lidar_sweep",
    "make_world",
    "read_drive_ground_truth",
    "read_ground_truth",
    "read_numbered_ground_truth",
    "render_camera",
    "synth_rig",
]

FloatArray = npt.NDArray[np.float64]

LIDAR_STREAM = "lidar"
CAMERA_NAME = "front"
CAMERA_STREAM = "camera/front"
GNSS_STREAM = "gnss"
#: Lidar (= vehicle origin) height above the ground, m (KITTI Velodyne).
LIDAR_HEIGHT_M = 1.73
LIDAR_PERIOD_NS = 100_000_000
#: Nominal camera stamp after the sweep start (ns): the lidar faces forward at mid-sweep.
CAMERA_OFFSET_NS = 62_000_000
CAMERA_JITTER_NS = 2_000_000
GNSS_OFFSET_NS = 5_000_000
GNSS_JITTER_NS = 1_000_000
GNSS_SIGMA_M = 0.03
EGO_SPEED_MPS = 6.0
#: Drive start time (ns since the Unix epoch): 2011-09-26 like KITTI raw.
START_NS = 1_317_000_000_000_000_000
#: WGS84 origin of the road frame and the road's ENU heading (rad).
ORIGIN = (49.011, 8.417, 115.0)
ROAD_HEADING_RAD = 0.35
#: Lever arm of the GNSS antenna in the vehicle frame (m), KITTI's OXTS position.
GNSS_LEVER_ARM_M = (-0.81, 0.32, -0.80)
_WEAVE_M = 0.4
_WEAVE_RADPS = 2.0 * math.pi / 12.0
_FACES = ((0, 1, 2, 3), (4, 5, 6, 7), (0, 1, 5, 4), (2, 3, 7, 6), (1, 2, 6, 5), (0, 3, 7, 4))
# Face normals in the part frame, in _FACES order (corner signs below).
_NORMALS = np.array([[0, 0, -1], [0, 0, 1], [0, -1, 0], [0, 1, 0], [1, 0, 0], [-1, 0, 0]], float)
_CORNER_SIGNS = np.array(
    [
        [-1, -1, -1],
        [1, -1, -1],
        [1, 1, -1],
        [-1, 1, -1],
        [-1, -1, 1],
        [1, -1, 1],
        [1, 1, 1],
        [-1, 1, 1],
    ],
    float,
)
_LIGHT = np.array([0.4, 0.3, 0.86]) / np.linalg.norm([0.4, 0.3, 0.86])
#: Half step (s) of the central differences that give velocities on a curved road.
_DT_S = 0.005
#: Lane lines (lateral offsets, m): dashed between the lanes, solid at the carriageway's edges.
_LANE_LINES_M = (-5.25, -1.75, 1.75, 5.25)
#: The flat look's road colours (b, g, r): pavement, asphalt, lane paint.
_PAVEMENT_BGR = (150, 150, 145)
_ASPHALT_BGR = (85, 85, 88)
_PAINT_BGR = (220, 220, 220)
#: Half width (m) of a junction's side road.
_SIDE_ROAD_HALF_M = 3.5
#: The worlds `make_world` builds: the original straight road with road users only, and the
#: rich world (curved roads, junctions, clutter, vans and trucks, crossing pedestrians,
#: randomised appearance; `replay.synth.scene`).
SCENES = ("simple", "rich")
#: A generated drive's size per second of driving, per scene (bytes; measured: the simple
#: world's 10 s 88.8 MB, the rich world's 2 s 53.8 MB), to refuse a drive the disk cannot hold.
DRIVE_BYTES_PER_S = {"simple": 9.0e6, "rich": 27.0e6}

log = logging.getLogger(__name__)


def ego_road_coordinates(t: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Road coordinates (s, d) (m) of the vehicle origin at `t` (s): it drives along the road
    at `EGO_SPEED_MPS`, weaving gently inside its lane."""
    tt = np.asarray(t, dtype=np.float64)
    return EGO_SPEED_MPS * tt, _WEAVE_M * np.sin(_WEAVE_RADPS * tt)


def _central_velocity(
    pose: Callable[[FloatArray], tuple[FloatArray, ...]], t: float
) -> tuple[float, float]:
    """World velocity (m/s) at `t` (s) of a pose along a curved road (central differences)."""
    x, y = pose(np.array([t - _DT_S, t + _DT_S]))[:2]
    return float(x[1] - x[0]) / (2 * _DT_S), float(y[1] - y[0]) / (2 * _DT_S)


@dataclass(frozen=True)
class SynthObject:
    """One road user or piece of scenery. `parts`: (dx, dy, dz, l, w, h, (b, g, r)[, material])
    boxes in the object frame (centre offsets from the object's ground-level centre, m; colour
    0-255; the optional material names an entry of `lidar_model.MATERIALS`, else
    `reflectivity` holds for every part).

    Without `road`, (`x0`, `y0`) is the world position at t = 0 (m), `yaw` the heading (rad) and
    the object moves at `speed_mps` along it. With `road`, (`x0`, `y0`) are road coordinates
    (s, d) at t = 0 and `yaw` is the heading relative to the road: the object moves in (s, d)
    (along the lane for yaw 0 or pi, across the road for +-pi/2) and turns with the road."""

    ident: int
    label: str
    size: tuple[float, float, float]
    x0: float
    y0: float
    yaw: float
    speed_mps: float
    parts: tuple[tuple[Any, ...], ...]
    reflectivity: float
    road: Road | None = None

    def pose(self, t: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
        """World (x, y) of the ground-level centre and the heading (rad) at `t` (s after the
        drive start)."""
        a, b = self.track(t)
        if self.road is None:
            return a, b, np.full_like(a, self.yaw)
        x, y, h = self.road.pose(a, b)
        return x, y, h + self.yaw

    def track(self, t: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """(`x0`, `y0`) moved at `speed_mps` along `yaw` for `t` (s): the world position
        without a road, the road coordinates (s, d) on one."""
        tt = np.asarray(t, dtype=np.float64)
        return (
            self.x0 + self.speed_mps * math.cos(self.yaw) * tt,
            self.y0 + self.speed_mps * math.sin(self.yaw) * tt,
        )

    def position(self, t: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """World (x, y) of the ground-level centre at `t` (s after the drive start)."""
        x, y, _ = self.pose(t)
        return x, y

    def velocity(self, t: float) -> tuple[float, float]:
        """World velocity (m/s) at `t` (s)."""
        if self.road is None or self.speed_mps == 0.0:
            return self.speed_mps * math.cos(self.yaw), self.speed_mps * math.sin(self.yaw)
        return _central_velocity(self.pose, t)


@dataclass(frozen=True)
class Appearance:
    """How a world's camera images look (domain randomisation by seed): the sun direction
    (unit vector, world frame) and ambient share of the shading, sky colours at the top and at
    the horizon, ground colours (b, g, r), exposure gain, white balance (b, g, r gains), sensor
    noise (sigma, grey levels), blur (Gaussian sigma, px), the ground texture's contrast and a
    salt for the per-frame noise."""

    light: tuple[float, float, float]
    ambient: float
    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    grass: tuple[float, float, float]
    asphalt: tuple[float, float, float]
    pavement: tuple[float, float, float]
    gain: float
    white_balance: tuple[float, float, float]
    noise: float
    blur: float
    texture: float
    salt: int


@dataclass(frozen=True)
class SynthWorld:
    """The road users, the drive duration (s), the road, the scenery (static clutter, not in
    the ground truth), the camera's appearance (None: the original flat look) and the name of
    the lidar model (`lidar_model.LIDAR_MODELS`)."""

    objects: tuple[SynthObject, ...]
    seconds: float
    road: Road = field(default_factory=Road)
    scenery: tuple[SynthObject, ...] = ()
    appearance: Appearance | None = None
    lidar: str = "synth64"

    def ego_pose(self, t: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
        """World position (x, y, m) and yaw (rad) of the vehicle origin at `t` (s): it drives
        along the road at `EGO_SPEED_MPS`, weaving gently inside its lane."""
        tt = np.asarray(t, dtype=np.float64)
        x, y, h = self.road.pose(*ego_road_coordinates(tt))
        yaw = h + np.arctan2(_WEAVE_M * _WEAVE_RADPS * np.cos(_WEAVE_RADPS * tt), EGO_SPEED_MPS)
        return x, y, yaw

    def ego_velocity(self, t: float) -> tuple[float, float]:
        """World velocity (m/s) of the vehicle at `t` (s)."""
        if self.road.is_straight:
            return EGO_SPEED_MPS, _WEAVE_M * _WEAVE_RADPS * math.cos(_WEAVE_RADPS * t)
        return _central_velocity(self.ego_pose, t)

    def lidar_model(self) -> LidarModel:
        """The world's lidar model."""
        return lidar_model(self.lidar)

    def boxes_in_vehicle(self, t: float, max_range_m: float = 120.0) -> list[dict[str, Any]]:
        """Ground truth at `t` (s): boxes in the vehicle frame at t within `max_range_m`."""
        ex, ey, eyaw = (float(v) for v in self.ego_pose(t))
        c, s = math.cos(eyaw), math.sin(eyaw)
        evx, evy = self.ego_velocity(t)
        out = []
        for obj in self.objects:
            ox, oy, oyaw = (float(v) for v in obj.pose(t))
            dx, dy = ox - ex, oy - ey
            vx, vy = c * dx + s * dy, -s * dx + c * dy
            if math.hypot(vx, vy) > max_range_m:
                continue
            if obj.road is None:
                # The original closed forms: the simple world's ground truth stays bit for bit.
                ground = [obj.speed_mps * math.cos(obj.yaw - eyaw), obj.speed_mps
                          * math.sin(obj.yaw - eyaw)]  # fmt: skip
                wvx = obj.speed_mps * math.cos(obj.yaw) - evx
                wvy = obj.speed_mps * math.sin(obj.yaw) - evy
            else:
                ovx, ovy = obj.velocity(t)
                ground = [c * ovx + s * ovy, -s * ovx + c * ovy]
                wvx, wvy = ovx - evx, ovy - evy
            yaw = (oyaw - eyaw + math.pi) % (2 * math.pi) - math.pi
            out.append(
                {
                    "id": obj.ident,
                    "label": obj.label,
                    "center": [vx, vy, obj.size[2] / 2.0 - LIDAR_HEIGHT_M],
                    "size": list(obj.size),
                    "yaw": yaw,
                    "velocity": ground,
                    "relative_velocity": [c * wvx + s * wvy, -s * wvx + c * wvy],
                }
            )
        return out


@dataclass(frozen=True)
class SynthStats:
    """What `generate_drive` wrote: counts, total lidar points, sizes (bytes) and paths."""

    path: Path
    ground_truth: Path
    seed: int
    seconds: float
    sweeps: int
    camera_frames: int
    gnss_fixes: int
    objects: int
    lidar_points: int
    bytes: int


@dataclass(frozen=True)
class GroundTruthFrame:
    """The ground truth of one sweep: its seq, stamp (ns) and boxes (vehicle frame); per box,
    its unoccluded fraction in the camera image, its lidar returns, its object id (the same
    object keeps its id over the drive) and its velocity over the ground in the vehicle axes
    (m/s). `ids` and `velocities` are empty for ground truth written before they were read
    (documents without `id` or `velocity`)."""

    seq: int
    stamp_ns: int
    boxes: tuple[ReferenceBox, ...]
    camera_visible: tuple[float, ...]
    lidar_points: tuple[int, ...]
    ids: tuple[int, ...] = ()
    velocities: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class Box2DTruth:
    """A rendered object's 2D box (pixels, undistorted image), label and visible fraction."""

    ident: int
    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    visible: float
    distance_m: float


# -- world ----------------------------------------------------------------------------------------


def _car(rng: np.random.Generator) -> tuple[tuple[float, float, float], tuple[Any, ...], float]:
    s = rng.uniform(0.93, 1.07)
    length, width, height = 3.9 * s, 1.6 * rng.uniform(0.95, 1.05), 1.56 * rng.uniform(0.94, 1.06)
    palette = ((40, 40, 200), (200, 200, 200), (30, 30, 30), (160, 90, 20), (40, 150, 40),
               (220, 220, 225), (20, 110, 200), (90, 90, 110), (0, 190, 230))  # fmt: skip
    color = tuple(int(v) for v in palette[int(rng.integers(len(palette)))])
    body_h = height * 0.55
    glass = (70, 55, 45)
    parts = (
        (0.0, 0.0, body_h / 2.0, length, width, body_h, color),
        (-0.1 * length, 0.0, body_h + (height - body_h) / 2.0, 0.55 * length, 0.9 * width,
         height - body_h, glass),
    )  # fmt: skip
    return (length, width, height), parts, 0.6


def _pedestrian(
    rng: np.random.Generator,
) -> tuple[tuple[float, float, float], tuple[Any, ...], float]:
    height = rng.uniform(1.6, 1.85)
    length, width = 0.8 * rng.uniform(0.85, 1.0), 0.6 * rng.uniform(0.85, 1.0)
    shirt = tuple(int(v) for v in rng.integers(30, 230, 3))
    head = 0.25
    parts = (
        (0.0, 0.0, (height - head) * 0.45 / 2, 0.35, 0.45, (height - head) * 0.45, (60, 50, 40)),
        (0.0, 0.0, (height - head) * (0.45 + 0.55 / 2), 0.4, 0.55, (height - head) * 0.55, shirt),
        (0.0, 0.0, height - head / 2, 0.22, 0.2, head, (120, 160, 210)),
    )
    return (length, width, height), parts, 0.4


def _cyclist(rng: np.random.Generator) -> tuple[tuple[float, float, float], tuple[Any, ...], float]:
    height = rng.uniform(1.65, 1.8)
    length, width = 1.76 * rng.uniform(0.95, 1.05), 0.6
    jacket = tuple(int(v) for v in rng.integers(30, 230, 3))
    wheel = 0.7
    parts = (
        (0.0, 0.0, wheel / 2, length, 0.12, wheel, (30, 30, 30)),
        (-0.1, 0.0, wheel + (height - wheel - 0.25) / 2, 0.55, 0.5, height - wheel - 0.25, jacket),
        (0.0, 0.0, height - 0.125, 0.22, 0.2, 0.25, (120, 160, 210)),
    )
    return (length, width, height), parts, 0.5


def check_world_options(scene: str, lidar: str | None = None) -> None:
    """Raises ValueError naming the known ones when `scene` is not a world of `SCENES` or
    `lidar` (when given) not a lidar model."""
    if scene not in SCENES:
        raise ValueError(f"scene: choose among {', '.join(SCENES)}, got {scene!r}")
    if lidar is not None:
        lidar_model(lidar)


def make_world(
    rng: np.random.Generator, seconds: float, *, scene: str = "simple", lidar: str | None = None
) -> SynthWorld:
    """A random world for a drive of `seconds`: road users along the stretch the ego drives
    (plus 100 m ahead), on the `scene`'s road (`SCENES`), seen by the lidar model `lidar`
    (default: `synth64` for the simple scene, `hdl64e` for the rich one).

    Raises:
        ValueError: an unknown scene or lidar model.
    """
    check_world_options(scene, lidar)
    if scene == "rich":
        # Imported here: the scene module builds on this one's types.
        from replay.synth.scene import make_rich_world  # noqa: PLC0415

        return make_rich_world(rng, seconds, lidar=lidar or "hdl64e")
    x_lo, x_hi = -30.0, EGO_SPEED_MPS * seconds + 100.0
    objects: list[SynthObject] = []

    def add(kind: str, x: float, y: float, yaw: float, speed: float) -> None:
        maker = {"Car": _car, "Pedestrian": _pedestrian, "Cyclist": _cyclist}[kind]
        size, parts, refl = maker(rng)
        objects.append(SynthObject(len(objects), kind, size, x, y, yaw, speed, parts, refl))

    # (lane y, heading, speed, min gap, max gap, kind, fill probability)
    lanes = (
        (-3.5, 0.0, 7.5, 10.0, 30.0, "Car", 1.0),
        (3.5, math.pi, 6.0, 10.0, 30.0, "Car", 1.0),
        (-7.0, 0.0, 0.0, 5.5, 9.0, "Car", 0.55),
        (7.0, math.pi, 0.0, 5.5, 9.0, "Car", 0.55),
        (-5.3, 0.0, 4.0, 25.0, 70.0, "Cyclist", 1.0),
        (5.3, math.pi, 4.0, 25.0, 70.0, "Cyclist", 1.0),
        (-9.5, 0.0, 1.3, 8.0, 30.0, "Pedestrian", 1.0),
        (9.5, math.pi, 1.3, 8.0, 30.0, "Pedestrian", 1.0),
    )
    for y, yaw, speed, gap_lo, gap_hi, kind, fill in lanes:
        x = x_lo + rng.uniform(0.0, gap_hi)
        # Objects moving along the lane start further back/ahead so the stretch stays populated.
        lo, hi = (x_lo - speed * seconds, x_hi) if yaw == 0.0 else (x_lo, x_hi + speed * seconds)
        x = lo + rng.uniform(0.0, gap_hi)
        while x < hi:
            jitter = rng.normal(0.0, 0.15) if speed == 0.0 else 0.0
            lateral = rng.normal(0.0, 0.15)
            if rng.random() < fill:
                add(kind, x, y + lateral, yaw + jitter, speed)
            x += rng.uniform(gap_lo, gap_hi)
    # A lead car in the ego lane, keeping the ego's speed.
    add("Car", float(rng.uniform(14.0, 22.0)), 0.0, 0.0, EGO_SPEED_MPS)
    return SynthWorld(tuple(objects), float(seconds), lidar=lidar or "synth64")


def synth_rig() -> Rig:
    """The rig: vehicle = lidar frame; the front camera KITTI-like (0.27 m ahead, 8 cm below the
    lidar, looking along +x) with a small plumb-bob distortion; the GNSS lever arm."""
    k = [[721.5377, 0.0, 609.5593], [0.0, 721.5377, 172.854], [0.0, 0.0, 1.0]]
    camera = PinholeCamera(np.array(k), (-0.05, 0.02, 0.0005, -0.0003, 0.0), 1242, 375)
    rot = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    vehicle_from_camera = RigidTransform.from_rotation_translation(rot, [0.27, 0.0, -0.08])
    return Rig(
        {"lidar": RigidTransform.identity(), "camera/front": vehicle_from_camera},
        {CAMERA_NAME: camera},
        {},
        source="replay.synth.world",
        gnss_lever_arm_m=GNSS_LEVER_ARM_M,
    )


# -- lidar ---------------------------------------------------------------------------------------


def _heading_cos_sin(obj: SynthObject, yaw: FloatArray) -> tuple[Any, Any]:
    """cos and sin of an object's heading `yaw` (its `pose`): scalars for an object off the
    road (its heading is constant, and scalar trigonometry keeps the original straight world bit
    for bit), arrays on a road."""
    if obj.road is None:
        return math.cos(obj.yaw), math.sin(obj.yaw)
    return np.cos(yaw), np.sin(yaw)


def _part_poses(
    obj: SynthObject, t: FloatArray
) -> Iterator[tuple[tuple[Any, ...], tuple[FloatArray, ...]]]:
    """Each part of `obj` with its world centre (x, y, z arrays) and the object's heading at
    times t (the object's pose found once for all its parts)."""
    ox, oy, yaw = obj.pose(t)
    c, s = _heading_cos_sin(obj, yaw)
    for part in obj.parts:
        px = ox + c * part[0] - s * part[1]
        py = oy + s * part[0] + c * part[1]
        yield part, (px, py, np.full_like(px, part[2]), yaw)


def _part_material(obj: SynthObject, part: tuple[Any, ...]) -> tuple[float, float, bool]:
    """(reflectivity, transmittance, retroreflective) of a part: its material's, else the
    object's reflectivity."""
    if len(part) > 7 and part[7] is not None:
        m = MATERIALS[part[7]]
        return m.reflectivity, m.transmittance, m.retroreflective
    return obj.reflectivity, 0.0, False


def lidar_sweep(
    world: SynthWorld, t0: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    """One sweep of the world's lidar model starting at `t0` (s): points (N x 4: x, y, z,
    intensity; sensor frame at each point's time), per-point offsets from the sweep start (ns)
    and the hit object ident (-1 for the ground)."""
    model = world.lidar_model()
    physical = model.intensity_model != "flat"
    dirs, col_t = model.directions()
    beams, columns = dirs.shape[:2]
    t = t0 + col_t
    ex, ey, eyaw = world.ego_pose(t)
    depth = np.full((beams, columns), np.inf)
    # Ground: the sensor is LIDAR_HEIGHT_M above a flat ground, so the range depends on the beam.
    dz = dirs[..., 2]
    with np.errstate(divide="ignore"):
        ground = np.where(dz < -1e-6, LIDAR_HEIGHT_M / -dz, np.inf)
    depth = np.minimum(depth, ground)
    ident = np.full((beams, columns), -1, dtype=np.int32)
    refl = np.full((beams, columns), 0.15)
    cosine = np.abs(dz) if physical else np.ones((beams, columns))
    retro = np.zeros((beams, columns), bool)
    if physical:
        refl = _ground_reflectivity(world, dirs, depth, ex, ey, eyaw, t)
    col_az = model.azimuths_rad()
    tm = t0 + 0.05
    mx, my, myaw = (float(v) for v in world.ego_pose(tm))
    for obj in world.objects + world.scenery:
        ox, oy = (float(v) for v in obj.position(tm))
        dist = math.hypot(ox - mx, oy - my)
        if dist > model.max_range_m:
            continue
        # Columns that can see the object: its azimuth span plus the motion within a sweep.
        radius = 0.5 * math.hypot(obj.size[0], obj.size[1])
        if dist <= radius + 0.5:
            cols = np.arange(columns)
        else:
            centre_az = math.atan2(oy - my, ox - mx) - myaw
            half = (
                math.asin(min(1.0, radius / dist))
                + (abs(obj.speed_mps) + EGO_SPEED_MPS) * 0.1 / dist
            )
            diff = (col_az - centre_az + math.pi) % (2 * math.pi) - math.pi
            cols = np.flatnonzero(np.abs(diff) <= half + 4 * 2 * math.pi / columns)
        if cols.size == 0:
            continue
        ct = t[cols]
        cy_, sy_ = np.cos(eyaw[cols]), np.sin(eyaw[cols])
        d = dirs[:, cols]  # (B, K, 3) sensor frame
        dwx = cy_ * d[..., 0] - sy_ * d[..., 1]
        dwy = sy_ * d[..., 0] + cy_ * d[..., 1]
        dwz = d[..., 2]
        for part, (px, py, pz, pyaw) in _part_poses(obj, ct):
            # Ray origin relative to the part centre, rotated into the part frame.
            rx, ry, rz = ex[cols] - px, ey[cols] - py, LIDAR_HEIGHT_M - pz
            c, s = _heading_cos_sin(obj, pyaw)
            lox, loy = c * rx + s * ry, -s * rx + c * ry
            ldx, ldy = c * dwx + s * dwy, -s * dwx + c * dwy
            half_size = (part[3] / 2, part[4] / 2, part[5] / 2)
            t_near = np.full(d.shape[:2], -np.inf)
            t_far = np.full(d.shape[:2], np.inf)
            face_cos = np.zeros(d.shape[:2]) if physical else None
            slabs = (
                (lox[None], ldx, half_size[0]),
                (loy[None], ldy, half_size[1]),
                (np.broadcast_to(rz, lox.shape)[None], dwz, half_size[2]),
            )
            for o, dd, h in slabs:
                with np.errstate(divide="ignore", invalid="ignore"):
                    inv = 1.0 / dd
                    a, b = (-h - o) * inv, (h - o) * inv
                lo, hi = np.minimum(a, b), np.maximum(a, b)
                inside = np.abs(o) <= h
                parallel = np.abs(dd) < 1e-12
                lo = np.where(parallel, np.where(inside, -np.inf, np.inf), lo)
                hi = np.where(parallel, np.where(inside, np.inf, -np.inf), hi)
                if face_cos is not None:
                    # The slab that sets the entry distance is the face the ray hits.
                    face_cos = np.where(lo > t_near, np.abs(dd), face_cos)
                t_near, t_far = np.maximum(t_near, lo), np.minimum(t_far, hi)
            hit = (t_near <= t_far) & (t_near > 0.05)
            part_refl, transmit, part_retro = _part_material(obj, part)
            if physical and transmit > 0.0:
                hit &= ~passes_through(np.full(hit.shape, transmit), rng)
            cand = np.where(hit, t_near, np.inf)
            cur = depth[:, cols]
            better = cand < cur
            depth[:, cols] = np.where(better, cand, cur)
            ident[:, cols] = np.where(better, obj.ident, ident[:, cols])
            refl[:, cols] = np.where(better, part_refl, refl[:, cols])
            if face_cos is not None:
                cosine[:, cols] = np.where(better, face_cos, cosine[:, cols])
                retro[:, cols] = np.where(better, part_retro, retro[:, cols])
    keep, rng_m, inten = model.returns(depth, refl, cosine, rng, retroreflective=retro)
    # Spinning-lidar order: column by column, beams top to bottom.
    keep_t, rng_t, dirs_t = keep.T, rng_m.T, dirs.transpose(1, 0, 2)
    pts = dirs_t[keep_t] * rng_t[keep_t][:, None]
    cols_idx = np.broadcast_to(np.arange(columns)[:, None], keep_t.shape)[keep_t]
    offsets = model.column_offsets_ns()[cols_idx]
    out = np.concatenate([pts, inten.T[keep_t][:, None]], axis=1).astype(np.float32)
    return out, offsets, ident.T[keep_t].astype(np.int32)


def _ground_reflectivity(
    world: SynthWorld, dirs: FloatArray, depth: FloatArray, ex: FloatArray, ey: FloatArray,
    eyaw: FloatArray, t_cols: FloatArray,
) -> FloatArray:  # fmt: skip
    """Reflectivity of the ground under each ray: asphalt on the carriageway and the side roads,
    paint on the lane markings, concrete pavements, grass beyond."""
    out = np.full(depth.shape, MATERIALS["grass"].reflectivity)
    hit = np.isfinite(depth) & (depth < 80.0)
    if not hit.any():
        return out
    b, k = np.nonzero(hit)
    r = depth[b, k]
    sx, sy = dirs[b, k, 0] * r, dirs[b, k, 1] * r
    c, s = np.cos(eyaw[k]), np.sin(eyaw[k])
    gx, gy = ex[k] + c * sx - s * sy, ey[k] + s * sx + c * sy
    # Ground hits lie within 80 m, so the ego's arc length plus the forward distance is a
    # starting point the projection converges from.
    ego_s = float(ego_road_coordinates(float(np.mean(t_cols)))[0])
    along, lateral = world.road.locate(gx, gy, ego_s + sx)
    paved = np.abs(lateral) <= world.road.verge_m
    road = np.abs(lateral) <= world.road.half_width_m
    for js in world.road.junctions:
        side = np.abs(along - js) <= _SIDE_ROAD_HALF_M
        paved |= side
        road |= side & (np.abs(lateral) > world.road.half_width_m)
    value = np.where(paved, MATERIALS["concrete"].reflectivity, out[b, k])
    value = np.where(road, MATERIALS["asphalt"].reflectivity, value)
    for ly in _LANE_LINES_M:
        dashed = abs(ly) < 5.0
        on = np.abs(lateral - ly) <= 0.08
        if dashed:
            on &= np.mod(along, 9.0) < 3.0
        value = np.where(on & road, MATERIALS["lane_paint"].reflectivity, value)
    out[b, k] = value
    return out


# -- camera --------------------------------------------------------------------------------------


def _clip_near(poly: FloatArray, near: float) -> FloatArray:
    """Sutherland-Hodgman clip of a camera-frame polygon (N x 3) to z >= near."""
    if bool((poly[:, 2] >= near).all()):
        # Wholly in front (most polygons): the clip keeps every vertex as it is.
        return poly
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        ina, inb = a[2] >= near, b[2] >= near
        if ina:
            out.append(a)
        if ina != inb:
            f = (near - a[2]) / (b[2] - a[2])
            out.append(a + f * (b - a))
    return np.array(out).reshape(-1, 3)


def _project(poly_cam: FloatArray, k: FloatArray) -> npt.NDArray[np.int32]:
    """Pixel coordinates of camera-frame points in 1/16 px (cv2.fillPoly's `shift=4`)."""
    # The ufuncs np.clip and np.round come to, called directly: the same values, without
    # their wrappers' cost (a render projects tens of thousands of polygons).
    uv = poly_cam[:, :2] / poly_cam[:, 2:3]
    uv *= (k[0, 0], k[1, 1])
    uv += (k[0, 2], k[1, 2])
    np.minimum(np.maximum(uv, -1e5, out=uv), 1e5, out=uv)
    uv *= 16
    out: npt.NDArray[np.int32] = np.rint(uv, out=uv).astype(np.int32)
    return out


def _camera_pose(world: SynthWorld, t: float, vehicle_from_camera: RigidTransform) -> FloatArray:
    """4 x 4 camera_from_road at `t` (s); the road frame's ground is z = 0."""
    x, y, yaw = (float(v) for v in world.ego_pose(t))
    road_from_vehicle = RigidTransform.from_yaw(yaw, (x, y, LIDAR_HEIGHT_M)).matrix
    out: FloatArray = np.linalg.inv(road_from_vehicle @ vehicle_from_camera.matrix).astype(
        np.float64
    )
    return out


_DIST_MAPS: dict[tuple[Any, ...], tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]] = {}


def _distortion_maps(
    camera: PinholeCamera,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """remap() maps that turn an ideal pinhole render into the distorted camera image."""
    key = (camera.k.tobytes(), camera.distortion, camera.width, camera.height)
    if key not in _DIST_MAPS:
        u, v = np.meshgrid(np.arange(camera.width), np.arange(camera.height))
        pix = np.stack([u.ravel(), v.ravel()], 1).astype(np.float64).reshape(-1, 1, 2)
        und = cv2.undistortPoints(pix, camera.k, np.array(camera.distortion), P=camera.k)
        und = und.reshape(camera.height, camera.width, 2).astype(np.float32)
        _DIST_MAPS[key] = (np.ascontiguousarray(und[..., 0]), np.ascontiguousarray(und[..., 1]))
    return _DIST_MAPS[key]


def render_camera(
    world: SynthWorld,
    t: float,
    camera: PinholeCamera,
    vehicle_from_camera: RigidTransform,
    *,
    distort: bool = True,
) -> tuple[npt.NDArray[np.uint8], list[Box2DTruth]]:
    """The camera image (BGR uint8) at `t` (s) and the 2D boxes of the visible road users (in
    the ideal pinhole image; `visible` = unoccluded fraction of the silhouette, scenery
    included as occluders). With `distort` the image goes through the camera's distortion (the
    boxes do not); a world with an `Appearance` also gets its exposure, white balance, blur and
    sensor noise."""
    w, h, k = camera.width, camera.height, camera.k
    look = world.appearance
    cam_from_road = _camera_pose(world, t, vehicle_from_camera)
    rot, trans = cam_from_road[:3, :3], cam_from_road[:3, 3]
    cam_pos = -rot.T @ trans
    img = np.empty((h, w, 3), np.uint8)
    # Sky gradient above the horizon (the camera is level), grass below.
    horizon = round(k[1, 2])
    rows = np.arange(h, dtype=np.float64)[:, None]
    if look is None:
        top, bottom = np.array([175.0, 150.0, 130.0]), np.array([235.0, 200.0, 160.0])
        grass = np.array([70, 115, 85.0])
    else:
        top, bottom = np.array(look.sky_top), np.array(look.sky_horizon)
        grass = np.array(look.grass)
    sky = bottom - (bottom - top) * (1 - rows / max(horizon, 1))
    img[:] = np.where(rows[..., None] < horizon, sky[:, None, :], grass)
    mask = np.zeros((h, w), np.uint16)
    near = 0.3

    def fill(poly_road: FloatArray, color: tuple[float, ...], ident: int = 0) -> None:
        cam = poly_road @ rot.T + trans
        cam = _clip_near(cam, near)
        if len(cam) < 3:
            return
        pts = _project(cam, k)
        cv2.fillPoly(img, [pts], color, cv2.LINE_AA, shift=4)
        if ident:
            cv2.fillPoly(mask, [pts], ident, cv2.LINE_8, shift=4)

    if world.road.is_straight and look is None:
        _draw_straight_road(world, t, fill)
    else:
        _draw_road(world, t, fill, look)
        if look is not None and look.texture > 0:
            _texture_ground(img, look, cam_from_road, k, horizon)

    light = _LIGHT if look is None else np.array(look.light)
    # The literal pair keeps the simple world's shading bit for bit (1 - 0.45 != 0.55).
    ambient, diffuse = (0.45, 0.55) if look is None else (look.ambient, 1.0 - look.ambient)
    # Parts far to near (painter's algorithm), only the faces turned towards the camera.
    items = []
    for obj in world.objects + world.scenery:
        ox, oy = (float(v) for v in obj.position(t))
        c_obj = rot @ np.array([ox, oy, 0.0]) + trans
        if c_obj[2] < -8.0 or np.hypot(c_obj[0], c_obj[2]) > 150.0:
            continue
        for part, pose in _part_poses(obj, np.array(t)):
            px, py, pz, pyaw = (float(v[()]) for v in pose)
            centre = np.array([px, py, pz])
            items.append((float(np.linalg.norm(centre - cam_pos)), obj, part, centre, pyaw))
    items.sort(key=lambda it: (-it[0], it[1].ident))
    for _dist, obj, part, centre, pyaw in items:
        c, s = math.cos(pyaw), math.sin(pyaw)
        r_obj = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        corners = centre + (_CORNER_SIGNS * np.array(part[3:6]) / 2) @ r_obj.T
        normals = _NORMALS @ r_obj.T
        base = np.array(part[6], float)
        for face, normal in zip(_FACES, normals, strict=True):
            quad = corners[list(face)]
            if float(normal @ (cam_pos - quad.mean(0))) <= 0:
                continue
            shade = ambient + diffuse * max(0.0, float(normal @ light))
            fill(quad, tuple(float(v) for v in base * shade), obj.ident + 1)

    boxes = _boxes_2d(world, t, rot, trans, k, w, h, mask, near)
    if distort and camera.has_distortion:
        mx, my = _distortion_maps(camera)
        img = np.asarray(
            cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
            dtype=np.uint8,
        )
    if look is not None:
        img = _sensor_effects(img, look, t)
    return np.ascontiguousarray(img, dtype=np.uint8), boxes


_Fill = Callable[..., None]


def _draw_straight_road(world: SynthWorld, t: float, fill: _Fill) -> None:
    """The original straight road's surfaces and markings (kept as drawn before, so that the
    simple world's images stay byte-identical)."""
    ex = float(world.ego_pose(t)[0])
    x0, x1 = ex - 5.0, ex + 160.0
    fill(np.array([[x0, -11, 0], [x1, -11, 0], [x1, 11, 0], [x0, 11, 0]], float), _PAVEMENT_BGR)
    fill(np.array([[x0, -8.5, 0], [x1, -8.5, 0], [x1, 8.5, 0], [x0, 8.5, 0]], float), _ASPHALT_BGR)
    for ly in _LANE_LINES_M:
        if abs(ly) > 5:
            fill(np.array([[x0, ly - 0.08, 0], [x1, ly - 0.08, 0], [x1, ly + 0.08, 0],
                           [x0, ly + 0.08, 0]], float), _PAINT_BGR)  # fmt: skip
            continue
        start = math.floor(x0 / 9.0) * 9.0
        for xs in np.arange(start, x1, 9.0):
            fill(np.array([[xs, ly - 0.07, 0], [xs + 3, ly - 0.07, 0], [xs + 3, ly + 0.07, 0],
                           [xs, ly + 0.07, 0]], float), _PAINT_BGR)  # fmt: skip


def _strip(road: Road, s0: float, s1: float, d0: float, d1: float) -> FloatArray:
    """A road-aligned quad from arc length s0 to s1 between lateral offsets d0 and d1."""
    x, y, _ = road.pose([s0, s1, s1, s0], [d0, d0, d1, d1])
    return np.stack([x, y, np.zeros(4)], axis=1)


def _draw_road(world: SynthWorld, t: float, fill: _Fill, look: Appearance | None) -> None:
    """A curved road in 3 m strips, its lane markings and the junctions' side roads."""
    road = world.road
    ego_s = float(ego_road_coordinates(t)[0])
    pavement = _PAVEMENT_BGR if look is None else look.pavement
    asphalt = _ASPHALT_BGR if look is None else look.asphalt
    lo, hi = ego_s - 6.0, ego_s + 150.0
    edges = np.arange(lo, hi + 3.0, 3.0)
    for s0, s1 in itertools.pairwise(edges):
        fill(_strip(road, s0, s1, -road.verge_m, road.verge_m), pavement)
        fill(_strip(road, s0, s1, -road.half_width_m, road.half_width_m), asphalt)
    for js in road.junctions:
        if not lo - 10.0 <= js <= hi:
            continue
        cx, cy, ch = (float(v) for v in road.pose(js))
        tx, ty, nx, ny = math.cos(ch), math.sin(ch), -math.sin(ch), math.cos(ch)
        for sign in (-1.0, 1.0):
            for half, colour, start in (
                (_SIDE_ROAD_HALF_M + 2.5, pavement, road.verge_m - 0.5),
                (_SIDE_ROAD_HALF_M, asphalt, road.half_width_m - 0.5),
            ):
                quad = [
                    (cx + tx * a + nx * sign * b, cy + ty * a + ny * sign * b, 0.0)
                    for a, b in ((-half, start), (half, start), (half, 70.0), (-half, 70.0))
                ]
                fill(np.array(quad), colour)
    for ly in _LANE_LINES_M:
        if abs(ly) > 5:
            for s0, s1 in itertools.pairwise(edges):
                mid = (s0 + s1) / 2
                if not any(abs(mid - js) < _SIDE_ROAD_HALF_M + 1.5 for js in road.junctions):
                    fill(_strip(road, s0, s1, ly - 0.08, ly + 0.08), _PAINT_BGR)
            continue
        for xs in np.arange(math.floor(lo / 9.0) * 9.0, hi, 9.0):
            fill(_strip(road, xs, xs + 3.0, ly - 0.07, ly + 0.07), _PAINT_BGR)


def _texture_ground(
    img: npt.NDArray[np.uint8],
    look: Appearance,
    cam_from_road: FloatArray,
    k: FloatArray,
    horizon: int,
) -> None:
    """Modulate the ground below the horizon by a value noise fixed to the ground plane (fine
    grain and larger patches), so the texture moves with the world as a real surface does."""
    h, w = img.shape[:2]
    v0 = horizon + 2
    if v0 >= h:
        return
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(v0, h, dtype=np.float64))
    road_from_cam = np.linalg.inv(cam_from_road)
    cam_height = road_from_cam[2, 3]
    # The camera is level: a pixel below the horizon sees the ground at this depth.
    depth = cam_height * k[1, 1] / (v - k[1, 2])
    xc = (u - k[0, 2]) / k[0, 0] * depth
    yc = (v - k[1, 2]) / k[1, 1] * depth
    gx = road_from_cam[0, 0] * xc + road_from_cam[0, 1] * yc + road_from_cam[0, 2] * depth
    gy = road_from_cam[1, 0] * xc + road_from_cam[1, 1] * yc + road_from_cam[1, 2] * depth
    gx += road_from_cam[0, 3]
    gy += road_from_cam[1, 3]
    fine = _value_noise(gx / 0.12, gy / 0.12, look.salt)
    coarse = _value_noise(gx / 2.5, gy / 2.5, look.salt + 1)
    # Far texture averages out in a real image; fade it with depth to avoid aliasing.
    fade = np.clip(1.0 - depth / 40.0, 0.0, 1.0)
    factor = 1.0 + look.texture * (0.6 * fine * fade + 0.4 * coarse)
    part = img[v0:].astype(np.float64) * factor[..., None]
    img[v0:] = np.clip(part, 0, 255).astype(np.uint8)


def _value_noise(x: FloatArray, y: FloatArray, salt: int) -> FloatArray:
    """Deterministic value noise in [-1, 1] on a unit grid (bilinear between hashed corners)."""
    ix, iy = np.floor(x), np.floor(y)
    fx, fy = x - ix, y - iy
    ix64, iy64 = ix.astype(np.int64), iy.astype(np.int64)

    def corner(ax: npt.NDArray[np.int64], ay: npt.NDArray[np.int64]) -> FloatArray:
        hsh = (ax * 73856093) ^ (ay * 19349663) ^ (salt * 83492791)
        hsh = (hsh ^ (hsh >> 13)) * 1274126177
        return ((hsh >> 8) & 0xFFFF).astype(np.float64) / 32767.5 - 1.0

    a, b = corner(ix64, iy64), corner(ix64 + 1, iy64)
    c, d = corner(ix64, iy64 + 1), corner(ix64 + 1, iy64 + 1)
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _sensor_effects(
    img: npt.NDArray[np.uint8], look: Appearance, t: float
) -> npt.NDArray[np.uint8]:
    """Exposure, white balance, optics blur and sensor noise of a randomised camera."""
    gains = look.gain * np.array(look.white_balance, np.float32)
    out: npt.NDArray[np.float32] = img.astype(np.float32) * gains
    if look.blur > 0.05:
        out = np.asarray(cv2.GaussianBlur(out, (0, 0), look.blur), dtype=np.float32)
    if look.noise > 0:
        frame_rng = np.random.default_rng([look.salt, round(t * 1e6)])
        out += frame_rng.normal(0.0, look.noise, out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def _boxes_2d(
    world: SynthWorld,
    t: float,
    rot: FloatArray,
    trans: FloatArray,
    k: FloatArray,
    w: int,
    h: int,
    mask: npt.NDArray[np.uint16],
    near: float,
) -> list[Box2DTruth]:
    out = []
    for obj in world.objects:
        ox, oy, oyaw = (float(v) for v in obj.pose(t))
        c_obj = rot @ np.array([ox, oy, obj.size[2] / 2]) + trans
        if c_obj[2] < 0.5 or c_obj[2] > 120.0:
            continue
        c, s = math.cos(oyaw), math.sin(oyaw)
        r_obj = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        polys = []
        for part in obj.parts:
            centre = np.array([ox + c * part[0] - s * part[1], oy + s * part[0] + c * part[1],
                               part[2]])  # fmt: skip
            corners = centre + (_CORNER_SIGNS * np.array(part[3:6]) / 2) @ r_obj.T
            for face in _FACES:
                cam = _clip_near(corners[list(face)] @ rot.T + trans, near)
                if len(cam) >= 3:
                    polys.append(_project(cam, k))
        if not polys:
            continue
        allp = np.concatenate(polys) / 16.0
        x1, y1 = np.clip(allp.min(0), 0, [w, h])
        x2, y2 = np.clip(allp.max(0), 0, [w, h])
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        ix1, iy1, ix2, iy2 = int(x1), int(y1), math.ceil(x2), math.ceil(y2)
        sil = np.zeros((iy2 - iy1 + 1, ix2 - ix1 + 1), np.uint8)
        off = np.array([ix1 * 16, iy1 * 16], np.int32)
        # One polygon at a time: fillPoly given several polygons fills by the even-odd rule,
        # so the overlapping faces would cancel and the silhouette come out far too small.
        for p in polys:
            cv2.fillPoly(sil, [p - off], 1, cv2.LINE_8, shift=4)
        total = int(sil.sum())
        seen = int(np.count_nonzero(mask[iy1 : iy2 + 1, ix1 : ix2 + 1] == obj.ident + 1))
        if total == 0:
            continue
        out.append(Box2DTruth(obj.ident, obj.label, float(x1), float(y1), float(x2), float(y2),
                              min(1.0, seen / total), float(c_obj[2])))  # fmt: skip
    return out


# -- the drive -----------------------------------------------------------------------------------


#: The simple world has nothing static beside the road: the only structure the calibration
#: monitor finds there is on road users, so its verdict there reads their poses, not the rig's
#: (benchmarks/RESULTS.md, "what the evidence can tell apart"). A short demo may even call the
#: true rig drifted.
SIMPLE_WORLD_CALIBRATION_CAVEAT = (
    "the simple world has no static structure beside the road, so the monitor cannot check "
    "the rig over it; a drive of the rich world (`perception demo --scene rich`) can"
)


def calibration_caveat(drive_path: Path) -> str | None:
    """Why a calibration verdict over the drive does not check its rig: it is a synthetic drive
    of the simple world (its `SYNTHETIC_METADATA`); None for any other drive, and for one
    written before drives recorded their world."""
    try:
        meta = DriveReader(drive_path).metadata(SYNTHETIC_METADATA)
    except ReplayError as e:
        # Which world it is cannot be read: the verdict goes without the caveat, but not
        # silently.
        log.warning("%s; a calibration verdict over it comes without its world's caveat", e)
        return None
    if meta is not None and meta.get("scene") == "simple":
        return SIMPLE_WORLD_CALIBRATION_CAVEAT
    return None


def ground_truth_path(drive_path: Path) -> Path:
    """The ground truth file beside a drive: `<drive>.gt.jsonl`."""
    p = Path(drive_path)
    if p.name in ("", ".."):
        # `.`, `..` or `/`, a folder given where a drive or a KITTI folder may be: `with_name`
        # refuses a path without a name, which ended `replay kitti-object .` as a bug.
        p = Path(os.path.abspath(p))
        if not p.name:  # the root: nothing lies beside it
            return p / ".gt.jsonl"
    return p.with_name(p.name + ".gt.jsonl")


def drive_files(drive_path: Path) -> tuple[Path, Path]:
    """The files a drive is read from: the drive and the ground truth beside it
    (`ground_truth_path`), which no output may replace."""
    return Path(drive_path), ground_truth_path(drive_path)


def has_ground_truth(drive_path: Path) -> bool:
    """Whether a ground truth file lies beside the drive (`ground_truth_path`): False also where
    no file can have its name (a drive named as long as a file name may be)."""
    try:
        return ground_truth_path(drive_path).is_file()
    except OSError:
        return False


def read_ground_truth(path: Path) -> list[GroundTruthFrame]:
    """The frames of a ground truth file (see the module docstring); blank lines are skipped.

    Raises:
        ValueError: a malformed line, or one that is not UTF-8 text (names the file and line).
    """
    return [frame for _, frame in read_numbered_ground_truth(path)]


def read_numbered_ground_truth(path: Path) -> list[tuple[int, GroundTruthFrame]]:
    """`read_ground_truth`, each frame with its line number (from 1)."""
    frames = []
    offset = 0
    # Read as bytes and decoded line by line, so a binary file is named with its line rather
    # than failing inside the text stream with the codec's message alone.
    with Path(path).open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: {not_utf8(e, offset)}") from e
            offset += len(raw)
            if not line.strip():
                # As the detections reader (perception.msgs.jsonl): a blank line, such as an
                # editor's trailing one, holds no frame; the line numbers still count it.
                continue
            try:
                frames.append((lineno, _ground_truth_frame(json.loads(line))))
            except (ValueError, KeyError, TypeError) as e:
                problem = unconverted(e) if isinstance(e, ValueError) else e
                raise ValueError(f"{path}:{lineno}: malformed ground truth ({problem})") from e
            except RecursionError:  # the parser recurses per nesting level
                raise ValueError(
                    f"{path}:{lineno}: malformed ground truth (arrays and objects nested too "
                    "deeply)"
                ) from None
    return frames


def read_drive_ground_truth(drive_path: Path) -> list[GroundTruthFrame]:
    """The frames of a drive's ground-truth channel (the documents of `read_ground_truth`);
    empty for a drive without one.

    Raises:
        ValueError: a malformed document (names the drive and sweep).
        replay.errors.ReplayError: the drive cannot be read.
    """
    frames = []
    for doc in DriveReader(drive_path).ground_truth():
        try:
            frames.append(_ground_truth_frame(doc))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"{drive_path}: ground truth of sweep {doc.get('seq')}: malformed ({e})"
            ) from e
    return frames


def _ground_truth_frame(doc: dict[str, Any]) -> GroundTruthFrame:
    docs = doc["boxes"]
    boxes = tuple(
        ReferenceBox(b["label"], tuple(b["center"]), tuple(b["size"]), b["yaw"]) for b in docs
    )
    # All or nothing: a box without an id (or velocity) leaves the frame without any, so the
    # tuples always run parallel to `boxes` when present.
    ids = tuple(int(b["id"]) for b in docs) if all("id" in b for b in docs) else ()
    velocities: tuple[tuple[float, float], ...] = ()
    if all("velocity" in b for b in docs):
        velocities = tuple(_velocity(b["velocity"]) for b in docs)
    return GroundTruthFrame(
        int(doc["seq"]),
        int(doc["stamp_ns"]),
        boxes,
        tuple(float(b["camera_visible"]) for b in docs),
        tuple(int(b["lidar_points"]) for b in docs),
        ids,
        velocities,
    )


def _velocity(value: Any) -> tuple[float, float]:
    vx, vy = (float(v) for v in value)  # a velocity of another length fails here: malformed
    if not (math.isfinite(vx) and math.isfinite(vy)):
        raise ValueError(f"velocity: not finite: {value}")
    return vx, vy


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, list):
        return [_round(v) for v in value]
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value


def generate_drive(
    out_path: Path,
    seed: int = 0,
    seconds: float = 10.0,
    progress: Callable[[int, int], None] | None = None,
    *,
    scene: str = "simple",
    lidar: str | None = None,
    rig_error: Correction | None = None,
) -> SynthStats:
    """Write a synthetic drive (MCAP, `replay.drive` layout, with the rig and the ground-truth
    channel) to `out_path` and its ground truth beside it (`ground_truth_path`). `seconds` of
    driving at 10 Hz per sensor. `progress(sweeps done, sweeps in all)` is called after each
    sweep. `scene` and `lidar` choose the world and the lidar model (`make_world`).
    `rig_error`: the rig written to the drive (the one a node replaying it is given) has the
    camera moved by it, while the images are rendered with the true one: a drifted extrinsic,
    for the calibration monitor (calibration.monitor); the correction that undoes it is its
    `inverse()`.

    Raises:
        ValueError: `seconds` is not positive, an unknown scene or lidar model.
        replay.errors.ReplayError: the files cannot be written.
    """
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    out_path = Path(out_path)
    rng = np.random.Generator(np.random.PCG64(seed))
    world = make_world(rng, seconds, scene=scene, lidar=lidar)
    rig = synth_rig()
    camera = rig.cameras[CAMERA_NAME]
    assert isinstance(camera, PinholeCamera)
    vehicle_from_camera = rig.transform("camera/front", "vehicle").inverse()
    origin = LocalTangentPlane(*ORIGIN)
    enu_rot = RigidTransform.from_yaw(ROAD_HEADING_RAD).rotation
    n = max(1, round(seconds * 10))
    gt_path = ground_truth_path(out_path)
    points_total = 0
    given = rig if rig_error is None else corrected_rig(rig, CAMERA_NAME, rig_error)
    with DriveWriter(out_path, rig=None) as writer, gt_path.open("w", encoding="utf-8") as gt:
        # What world it is: a reader (`perception calib check`) can say what its data can show.
        writer.write_metadata(
            SYNTHETIC_METADATA,
            # Its length too: the road users are spread over the drive, so seed 0 at 3 s is
            # another world than seed 0 at 10 s from the first sweep.
            {"scene": scene, "seed": str(seed), "lidar": world.lidar, "seconds": f"{seconds:g}"},
        )
        writer.write_rig(given, START_NS)
        for i in range(n):
            t0 = i * LIDAR_PERIOD_NS * 1e-9
            stamp = START_NS + i * LIDAR_PERIOD_NS
            # GNSS fix of the antenna, a few ms after the sweep start.
            g_off = GNSS_OFFSET_NS + int(rng.integers(-GNSS_JITTER_NS, GNSS_JITTER_NS + 1))
            tg = t0 + g_off * 1e-9
            gx, gy, gyaw = (float(v) for v in world.ego_pose(tg))
            arm = np.asarray(GNSS_LEVER_ARM_M)
            c, s = math.cos(gyaw), math.sin(gyaw)
            antenna = np.array([gx + c * arm[0] - s * arm[1], gy + s * arm[0] + c * arm[1],
                                LIDAR_HEIGHT_M + arm[2]])  # fmt: skip
            enu = enu_rot @ antenna + rng.normal(0.0, [GNSS_SIGMA_M, GNSS_SIGMA_M, 0.05])
            lat, lon, alt = (float(v) for v in origin.enu_to_geodetic(enu))
            vel = enu_rot @ np.array([*world.ego_velocity(tg), 0.0])
            fix = GnssFix(
                Header(GNSS_STREAM, i, stamp + g_off, "gnss"),
                lat,
                lon,
                alt,
                (GNSS_SIGMA_M**2, 0.0, 0.0, 0.0, GNSS_SIGMA_M**2, 0.0, 0.0, 0.0, 0.0025),
                (float(vel[0]), float(vel[1]), 0.0),
                float(ROAD_HEADING_RAD + gyaw + rng.normal(0.0, 0.002)),
            )
            writer.write(fix, stamp + g_off + 2_000_000)
            # Lidar sweep, delivered when complete.
            pts, offsets, ident = lidar_sweep(world, t0, rng)
            hits = np.bincount(ident[ident >= 0], minlength=len(world.objects))
            points_total += len(pts)
            sweep = LidarSweep(Header(LIDAR_STREAM, i, stamp, "lidar"), pts, offsets)
            writer.write(sweep, stamp + LIDAR_PERIOD_NS + 3_000_000)
            # Camera frame, mid-exposure stamp.
            c_off = CAMERA_OFFSET_NS + int(rng.integers(-CAMERA_JITTER_NS, CAMERA_JITTER_NS + 1))
            image, seen = render_camera(world, t0 + c_off * 1e-9, camera, vehicle_from_camera)
            visible = {b.ident: b.visible for b in seen}
            frame = CameraFrame(Header(CAMERA_STREAM, i, stamp + c_off, "camera/front"), image)
            writer.write(frame, stamp + c_off + 8_000_000)
            boxes = [b for b in world.boxes_in_vehicle(t0) if math.hypot(*b["center"][:2]) < 100]
            for b in boxes:
                b["lidar_points"] = int(hits[b["id"]])
                b["camera_visible"] = float(visible.get(b["id"], 0.0))
            line = {"seq": i, "stamp_ns": stamp, "boxes": _round(boxes)}
            gt.write(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n")
            # The same document in the drive, with its sweep's log time.
            writer.write_ground_truth(line, stamp + LIDAR_PERIOD_NS + 3_000_000)
            if progress is not None:
                progress(i + 1, n)
    return SynthStats(
        path=out_path,
        ground_truth=gt_path,
        seed=seed,
        seconds=float(seconds),
        sweeps=n,
        camera_frames=n,
        gnss_fixes=n,
        objects=len(world.objects),
        lidar_points=points_total,
        bytes=out_path.stat().st_size,
    )
