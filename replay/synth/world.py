"""A deterministic synthetic drive: a ground truth test bed and the project's default data.

The world is a flat straight road (the *road frame*: x along the road, y to the left, z up,
metres, ground at z = 0). The ego vehicle drives along it at `EGO_SPEED_MPS` weaving gently
inside its lane; cars (in lanes and parked), cyclists and pedestrians are boxes (each drawn as a
few coloured parts) moving at constant velocity. The vehicle frame is the lidar frame, mounted
`LIDAR_HEIGHT_M` above the ground like the KITTI Velodyne, so KITTI priors hold.

Sensors (KITTI-raw-like timing; all stamps integer ns):
- lidar `lidar`: 64 beams (+2 .. -24.8 deg), `LIDAR_COLUMNS` columns per turn at 10 Hz, turning
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

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from calibration import LocalTangentPlane, PinholeCamera, Rig, RigidTransform
from perception.msgs.types import CameraFrame, GnssFix, Header, LidarSweep
from replay.drive import DriveReader, DriveWriter
from replay.evaluation import ReferenceBox

__all__ = [
    "CAMERA_NAME",
    "CAMERA_OFFSET_NS",
    "CAMERA_STREAM",
    "GNSS_STREAM",
    "LIDAR_HEIGHT_M",
    "LIDAR_STREAM",
    "Box2DTruth",
    "GroundTruthFrame",
    "SynthObject",
    "SynthStats",
    "SynthWorld",
    "generate_drive",
    "ground_truth_path",
    "lidar_sweep",
    "make_world",
    "read_drive_ground_truth",
    "read_ground_truth",
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
LIDAR_BEAMS = 64
LIDAR_COLUMNS = 1024
LIDAR_PERIOD_NS = 100_000_000
LIDAR_MAX_RANGE_M = 120.0
LIDAR_RANGE_NOISE_M = 0.02
LIDAR_DROPOUT = 0.03
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


@dataclass(frozen=True)
class SynthObject:
    """One road user. `parts`: (dx, dy, dz, l, w, h, (b, g, r)) boxes in the object frame
    (centre offsets from the object's ground-level centre, m; colour 0-255). Position in the road
    frame at t = 0 (m), `yaw` (rad), constant `speed_mps` along the heading."""

    ident: int
    label: str
    size: tuple[float, float, float]
    x0: float
    y0: float
    yaw: float
    speed_mps: float
    parts: tuple[tuple[float, float, float, float, float, float, tuple[int, int, int]], ...]
    reflectivity: float

    def position(self, t: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Road-frame (x, y) of the ground-level centre at `t` (s after the drive start)."""
        tt = np.asarray(t, dtype=np.float64)
        return (
            self.x0 + self.speed_mps * math.cos(self.yaw) * tt,
            self.y0 + self.speed_mps * math.sin(self.yaw) * tt,
        )


@dataclass(frozen=True)
class SynthWorld:
    """The objects and the drive duration (s)."""

    objects: tuple[SynthObject, ...]
    seconds: float

    @staticmethod
    def ego_pose(t: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Road-frame position (x, y, m) and yaw (rad) of the vehicle origin at `t` (s)."""
        tt = np.asarray(t, dtype=np.float64)
        x = EGO_SPEED_MPS * tt
        y = _WEAVE_M * np.sin(_WEAVE_RADPS * tt)
        yaw = np.arctan2(_WEAVE_M * _WEAVE_RADPS * np.cos(_WEAVE_RADPS * tt), EGO_SPEED_MPS)
        return x, y, yaw

    @staticmethod
    def ego_velocity(t: float) -> tuple[float, float]:
        """Road-frame velocity (m/s) of the vehicle at `t` (s)."""
        return EGO_SPEED_MPS, _WEAVE_M * _WEAVE_RADPS * math.cos(_WEAVE_RADPS * t)

    def boxes_in_vehicle(self, t: float, max_range_m: float = 120.0) -> list[dict[str, Any]]:
        """Ground truth at `t` (s): boxes in the vehicle frame at t within `max_range_m`."""
        ex, ey, eyaw = (float(v) for v in self.ego_pose(t))
        c, s = math.cos(eyaw), math.sin(eyaw)
        evx, evy = self.ego_velocity(t)
        out = []
        for obj in self.objects:
            ox, oy = (float(v) for v in obj.position(t))
            dx, dy = ox - ex, oy - ey
            vx, vy = c * dx + s * dy, -s * dx + c * dy
            if math.hypot(vx, vy) > max_range_m:
                continue
            wvx = obj.speed_mps * math.cos(obj.yaw) - evx
            wvy = obj.speed_mps * math.sin(obj.yaw) - evy
            yaw = (obj.yaw - eyaw + math.pi) % (2 * math.pi) - math.pi
            out.append(
                {
                    "id": obj.ident,
                    "label": obj.label,
                    "center": [vx, vy, obj.size[2] / 2.0 - LIDAR_HEIGHT_M],
                    "size": list(obj.size),
                    "yaw": yaw,
                    "velocity": [obj.speed_mps * math.cos(obj.yaw - eyaw), obj.speed_mps
                                 * math.sin(obj.yaw - eyaw)],
                    "relative_velocity": [c * wvx + s * wvy, -s * wvx + c * wvy],
                }
            )  # fmt: skip
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
    """The ground truth of one sweep: its seq, stamp (ns) and boxes (vehicle frame)."""

    seq: int
    stamp_ns: int
    boxes: tuple[ReferenceBox, ...]
    camera_visible: tuple[float, ...]
    lidar_points: tuple[int, ...]


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


def make_world(rng: np.random.Generator, seconds: float) -> SynthWorld:
    """Random road users along the stretch the ego drives in `seconds` (plus 100 m ahead)."""
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
    return SynthWorld(tuple(objects), float(seconds))


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


def _beam_directions() -> tuple[FloatArray, FloatArray]:
    """Unit directions (beams, columns, 3) in the sensor frame and column time offsets (s)."""
    elev = np.radians(np.linspace(2.0, -24.8, LIDAR_BEAMS))
    col_t = (np.arange(LIDAR_COLUMNS) + 0.5) / LIDAR_COLUMNS * LIDAR_PERIOD_NS * 1e-9
    az = math.pi - 2.0 * math.pi * (np.arange(LIDAR_COLUMNS) + 0.5) / LIDAR_COLUMNS
    ce = np.cos(elev)[:, None]
    dirs = np.stack(
        [
            ce * np.cos(az)[None],
            ce * np.sin(az)[None],
            np.broadcast_to(np.sin(elev)[:, None], (LIDAR_BEAMS, LIDAR_COLUMNS)),
        ],
        axis=-1,
    )
    return dirs, col_t


def _part_pose(obj: SynthObject, part: tuple[Any, ...], t: FloatArray) -> tuple[FloatArray, ...]:
    """Road-frame centre (x, y, z arrays) of a part at times t."""
    ox, oy = obj.position(t)
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    px = ox + c * part[0] - s * part[1]
    py = oy + s * part[0] + c * part[1]
    return px, py, np.full_like(px, part[2])


def lidar_sweep(
    world: SynthWorld, t0: float, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    """One sweep starting at `t0` (s): points (N x 4: x, y, z, intensity; sensor frame at each
    point's time), per-point offsets from the sweep start (ns) and the hit object ident (-1 for
    the ground)."""
    dirs, col_t = _beam_directions()
    t = t0 + col_t
    ex, ey, eyaw = world.ego_pose(t)
    depth = np.full((LIDAR_BEAMS, LIDAR_COLUMNS), np.inf)
    # Ground: the sensor is LIDAR_HEIGHT_M above a flat ground, so the range depends on the beam.
    dz = dirs[..., 2]
    with np.errstate(divide="ignore"):
        ground = np.where(dz < -1e-6, LIDAR_HEIGHT_M / -dz, np.inf)
    depth = np.minimum(depth, ground)
    ident = np.full((LIDAR_BEAMS, LIDAR_COLUMNS), -1, dtype=np.int32)
    refl = np.full((LIDAR_BEAMS, LIDAR_COLUMNS), 0.15)
    col_az = math.pi - 2.0 * math.pi * (np.arange(LIDAR_COLUMNS) + 0.5) / LIDAR_COLUMNS
    tm = t0 + 0.05
    mx, my, myaw = (float(v) for v in world.ego_pose(tm))
    for obj in world.objects:
        ox, oy = (float(v) for v in obj.position(tm))
        dist = math.hypot(ox - mx, oy - my)
        if dist > LIDAR_MAX_RANGE_M:
            continue
        # Columns that can see the object: its azimuth span plus the motion within a sweep.
        radius = 0.5 * math.hypot(obj.size[0], obj.size[1])
        if dist <= radius + 0.5:
            cols = np.arange(LIDAR_COLUMNS)
        else:
            centre_az = math.atan2(oy - my, ox - mx) - myaw
            half = (
                math.asin(min(1.0, radius / dist))
                + (abs(obj.speed_mps) + EGO_SPEED_MPS) * 0.1 / dist
            )
            diff = (col_az - centre_az + math.pi) % (2 * math.pi) - math.pi
            cols = np.flatnonzero(np.abs(diff) <= half + 4 * 2 * math.pi / LIDAR_COLUMNS)
        if cols.size == 0:
            continue
        ct = t[cols]
        cy_, sy_ = np.cos(eyaw[cols]), np.sin(eyaw[cols])
        d = dirs[:, cols]  # (B, K, 3) sensor frame
        dwx = cy_ * d[..., 0] - sy_ * d[..., 1]
        dwy = sy_ * d[..., 0] + cy_ * d[..., 1]
        dwz = d[..., 2]
        for part in obj.parts:
            px, py, pz = _part_pose(obj, part, ct)
            # Ray origin relative to the part centre, rotated into the part frame.
            rx, ry, rz = ex[cols] - px, ey[cols] - py, LIDAR_HEIGHT_M - pz
            c, s = math.cos(obj.yaw), math.sin(obj.yaw)
            lox, loy = c * rx + s * ry, -s * rx + c * ry
            ldx, ldy = c * dwx + s * dwy, -s * dwx + c * dwy
            half_size = (part[3] / 2, part[4] / 2, part[5] / 2)
            t_near = np.full(d.shape[:2], -np.inf)
            t_far = np.full(d.shape[:2], np.inf)
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
                t_near, t_far = np.maximum(t_near, lo), np.minimum(t_far, hi)
            hit = (t_near <= t_far) & (t_near > 0.05)
            cand = np.where(hit, t_near, np.inf)
            cur = depth[:, cols]
            better = cand < cur
            depth[:, cols] = np.where(better, cand, cur)
            ident[:, cols] = np.where(better, obj.ident, ident[:, cols])
            refl[:, cols] = np.where(better, obj.reflectivity, refl[:, cols])
    noise = rng.normal(0.0, LIDAR_RANGE_NOISE_M, depth.shape)
    drop = rng.random(depth.shape) < LIDAR_DROPOUT
    inten_noise = rng.uniform(-0.05, 0.05, depth.shape)
    keep = np.isfinite(depth) & (depth <= LIDAR_MAX_RANGE_M) & ~drop
    rng_m = depth + noise
    # Spinning-lidar order: column by column, beams top to bottom.
    keep_t, rng_t, dirs_t = keep.T, rng_m.T, dirs.transpose(1, 0, 2)
    pts = dirs_t[keep_t] * rng_t[keep_t][:, None]
    inten = np.clip(refl.T[keep_t] + inten_noise.T[keep_t], 0.0, 1.0)
    cols_idx = np.broadcast_to(np.arange(LIDAR_COLUMNS)[:, None], keep_t.shape)[keep_t]
    offsets = np.round(col_t[cols_idx] * 1e9).astype(np.int64)
    out = np.concatenate([pts, inten[:, None]], axis=1).astype(np.float32)
    return out, offsets, ident.T[keep_t].astype(np.int32)


# -- camera --------------------------------------------------------------------------------------


def _clip_near(poly: FloatArray, near: float) -> FloatArray:
    """Sutherland-Hodgman clip of a camera-frame polygon (N x 3) to z >= near."""
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
    uv = poly_cam[:, :2] / poly_cam[:, 2:3] * [k[0, 0], k[1, 1]] + [k[0, 2], k[1, 2]]
    out: npt.NDArray[np.int32] = np.round(np.clip(uv, -1e5, 1e5) * 16).astype(np.int32)
    return out


def _camera_pose(t: float, vehicle_from_camera: RigidTransform) -> FloatArray:
    """4 x 4 camera_from_road at `t` (s); the road frame's ground is z = 0."""
    x, y, yaw = (float(v) for v in SynthWorld.ego_pose(t))
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
    """The camera image (BGR uint8) at `t` (s) and the 2D boxes of the visible objects (in the
    ideal pinhole image; `visible` = unoccluded fraction of the silhouette). With `distort` the
    image goes through the camera's distortion (the boxes do not)."""
    w, h, k = camera.width, camera.height, camera.k
    cam_from_road = _camera_pose(t, vehicle_from_camera)
    rot, trans = cam_from_road[:3, :3], cam_from_road[:3, 3]
    cam_pos = -rot.T @ trans
    img = np.empty((h, w, 3), np.uint8)
    # Sky gradient above the horizon (the camera is level), grass below.
    horizon = round(k[1, 2])
    rows = np.arange(h, dtype=np.float64)[:, None]
    sky = np.array([235.0, 200.0, 160.0]) - np.array([60.0, 50.0, 30.0]) * (
        1 - rows / max(horizon, 1)
    )
    img[:] = np.where(rows[..., None] < horizon, sky[:, None, :], np.array([70, 115, 85.0]))
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

    ex = float(SynthWorld.ego_pose(t)[0])
    x0, x1 = ex - 5.0, ex + 160.0
    fill(np.array([[x0, -11, 0], [x1, -11, 0], [x1, 11, 0], [x0, 11, 0]], float), (150, 150, 145))
    fill(np.array([[x0, -8.5, 0], [x1, -8.5, 0], [x1, 8.5, 0], [x0, 8.5, 0]], float), (85, 85, 88))
    for ly in (-5.25, -1.75, 1.75, 5.25):
        if abs(ly) > 5:
            fill(np.array([[x0, ly - 0.08, 0], [x1, ly - 0.08, 0], [x1, ly + 0.08, 0],
                           [x0, ly + 0.08, 0]], float), (220, 220, 220))  # fmt: skip
            continue
        start = math.floor(x0 / 9.0) * 9.0
        for xs in np.arange(start, x1, 9.0):
            fill(np.array([[xs, ly - 0.07, 0], [xs + 3, ly - 0.07, 0], [xs + 3, ly + 0.07, 0],
                           [xs, ly + 0.07, 0]], float), (220, 220, 220))  # fmt: skip

    # Parts far to near (painter's algorithm), only the faces turned towards the camera.
    items = []
    for obj in world.objects:
        ox, oy = (float(v) for v in obj.position(t))
        c_obj = rot @ np.array([ox, oy, 0.0]) + trans
        if c_obj[2] < -8.0 or np.hypot(c_obj[0], c_obj[2]) > 150.0:
            continue
        for part in obj.parts:
            px, py, pz = (float(v[()]) for v in _part_pose(obj, part, np.array(t)))
            centre = np.array([px, py, pz])
            items.append((float(np.linalg.norm(centre - cam_pos)), obj, part, centre))
    items.sort(key=lambda it: (-it[0], it[1].ident))
    for _dist, obj, part, centre in items:
        c, s = math.cos(obj.yaw), math.sin(obj.yaw)
        r_obj = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        corners = centre + (_CORNER_SIGNS * np.array(part[3:6]) / 2) @ r_obj.T
        normals = _NORMALS @ r_obj.T
        base = np.array(part[6], float)
        for face, normal in zip(_FACES, normals, strict=True):
            quad = corners[list(face)]
            if float(normal @ (cam_pos - quad.mean(0))) <= 0:
                continue
            shade = 0.45 + 0.55 * max(0.0, float(normal @ _LIGHT))
            fill(quad, tuple(float(v) for v in base * shade), obj.ident + 1)

    boxes = _boxes_2d(world, t, rot, trans, k, w, h, mask, near)
    if distort and camera.has_distortion:
        mx, my = _distortion_maps(camera)
        img = np.asarray(
            cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
            dtype=np.uint8,
        )
    return np.ascontiguousarray(img, dtype=np.uint8), boxes


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
        ox, oy = (float(v) for v in obj.position(t))
        c_obj = rot @ np.array([ox, oy, obj.size[2] / 2]) + trans
        if c_obj[2] < 0.5 or c_obj[2] > 120.0:
            continue
        c, s = math.cos(obj.yaw), math.sin(obj.yaw)
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


def ground_truth_path(drive_path: Path) -> Path:
    """The ground truth file beside a drive: `<drive>.gt.jsonl`."""
    p = Path(drive_path)
    return p.with_name(p.name + ".gt.jsonl")


def read_ground_truth(path: Path) -> list[GroundTruthFrame]:
    """The frames of a ground truth file (see the module docstring).

    Raises:
        ValueError: a malformed line (names the file and line).
    """
    frames = []
    with Path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                frames.append(_ground_truth_frame(json.loads(line)))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: malformed ground truth ({e})") from e
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
    boxes = tuple(
        ReferenceBox(b["label"], tuple(b["center"]), tuple(b["size"]), b["yaw"])
        for b in doc["boxes"]
    )
    return GroundTruthFrame(
        int(doc["seq"]),
        int(doc["stamp_ns"]),
        boxes,
        tuple(float(b["camera_visible"]) for b in doc["boxes"]),
        tuple(int(b["lidar_points"]) for b in doc["boxes"]),
    )


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
) -> SynthStats:
    """Write a synthetic drive (MCAP, `replay.drive` layout, with the rig and the ground-truth
    channel) to `out_path` and its ground truth beside it (`ground_truth_path`). `seconds` of
    driving at 10 Hz per sensor. `progress(sweeps done, sweeps in all)` is called after each
    sweep.

    Raises:
        ValueError: `seconds` is not positive.
        replay.errors.ReplayError: the files cannot be written.
    """
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    out_path = Path(out_path)
    rng = np.random.Generator(np.random.PCG64(seed))
    world = make_world(rng, seconds)
    rig = synth_rig()
    camera = rig.cameras[CAMERA_NAME]
    assert isinstance(camera, PinholeCamera)
    vehicle_from_camera = rig.transform("camera/front", "vehicle").inverse()
    origin = LocalTangentPlane(*ORIGIN)
    enu_rot = RigidTransform.from_yaw(ROAD_HEADING_RAD).rotation
    n = max(1, round(seconds * 10))
    gt_path = ground_truth_path(out_path)
    points_total = 0
    with DriveWriter(out_path, rig=None) as writer, gt_path.open("w", encoding="utf-8") as gt:
        writer.write_rig(rig, START_NS)
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
