"""nuScenes geometry for the importer (`replay.datasets.nuscenes`): quaternions, the rig from
`calibrated_sensor` records, ego poses over time, and annotations as ground-truth boxes.

Frames (see docs/nuscenes.md)
    nuScenes gives every sensor as `ego_from_sensor` (`calibrated_sensor`: translation m, rotation
    quaternion w, x, y, z) in the *ego* frame (x forward, y left, z up, origin at the rear axle
    centre on the ground), and the ego as `global_from_ego` (`ego_pose`) in its map's metric
    frame (x east, y north). The rig's `vehicle` frame is the ego frame's axes moved up to
    LIDAR_TOP's origin (a pure translation, `vehicle_from_ego`), so the node's KITTI-like priors
    hold (ground at about -1.84 m, like the KITTI Velodyne's -1.73 m) and `lidar` is a pure
    rotation of `vehicle`. The GNSS antenna (`gnss`, the point the fixes refer to) is the ego
    origin, so the frame `gnss` *is* nuScenes' ego frame.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from calibration import PinholeCamera, Rig, RigidTransform
from calibration.transforms import rotation_from_quaternion as quaternion_rotation

__all__ = [
    "CATEGORY_LABELS",
    "EgoTrack",
    "box_document",
    "label_of",
    "nuscenes_rig",
    "rotation_from_quaternion",
    "transform_from_record",
    "visible_fraction_of",
]

FloatArray = npt.NDArray[np.float64]

#: nuScenes category -> the node's label. The node's classes (Car, Pedestrian, Cyclist) and
#: KITTI's neighbours (Van, Truck) where a category is one; the other categories of the nuScenes
#: detection challenge (the devkit's `category_to_detection_name`) under their challenge names;
#: every other category is `unknown` (`label_of`). `vehicle.bicycle` is a Cyclist only with a
#: rider (attribute `cycle.with_rider`; nuScenes boxes include the rider), else a Bicycle.
CATEGORY_LABELS: Mapping[str, str] = {
    "vehicle.car": "Car",
    "vehicle.emergency.police": "Car",
    "vehicle.emergency.ambulance": "Van",
    "vehicle.truck": "Truck",
    "vehicle.bus.bendy": "Bus",
    "vehicle.bus.rigid": "Bus",
    "vehicle.trailer": "Trailer",
    "vehicle.construction": "Construction_vehicle",
    "vehicle.motorcycle": "Motorcycle",
    "vehicle.bicycle": "Bicycle",
    "human.pedestrian.adult": "Pedestrian",
    "human.pedestrian.child": "Pedestrian",
    "human.pedestrian.construction_worker": "Pedestrian",
    "human.pedestrian.police_officer": "Pedestrian",
    "movable_object.barrier": "Barrier",
    "movable_object.trafficcone": "Traffic_cone",
}
_RIDER_ATTRIBUTE = "cycle.with_rider"
_UNKNOWN = "unknown"
# Visibility levels are bins of the fraction visible in the six images ("v0-40" ...).
_LEVEL = re.compile(r"^v(\d+)-(\d+)$")


def label_of(category: str, attributes: Sequence[str]) -> str:
    """The node's label of a nuScenes category with the annotation's attribute names."""
    if category == "vehicle.bicycle" and _RIDER_ATTRIBUTE in attributes:
        return "Cyclist"
    return CATEGORY_LABELS.get(category, _UNKNOWN)


def visible_fraction_of(level: str | None) -> float:
    """The middle of a visibility bin (`v40-60` -> 0.5); 1.0 without a level (nuScenes leaves
    it empty where it was not annotated: the object was annotated, so it is taken as seen)."""
    m = _LEVEL.match(level or "")
    if m is None:
        return 1.0
    return (int(m.group(1)) + int(m.group(2))) / 200.0


def rotation_from_quaternion(q_wxyz: Sequence[float], where: str) -> FloatArray:
    """The 3 x 3 rotation of a quaternion (w, x, y, z), normalised first.

    Raises ValueError naming `where` for anything but 4 finite numbers of non-zero norm."""
    q = np.asarray(q_wxyz, dtype=np.float64)
    try:
        if q.shape != (4,):
            raise ValueError
        return quaternion_rotation(*(float(v) for v in q))
    except ValueError:
        raise ValueError(
            f"{where}: expected a quaternion (w, x, y, z), got {list(q_wxyz)!r}"
        ) from None


def transform_from_record(record: Mapping[str, Any], where: str) -> RigidTransform:
    """`target_from_record` of a record with `translation` (m) and `rotation` (w, x, y, z): for a
    `calibrated_sensor` `ego_from_sensor`, for an `ego_pose` `global_from_ego`.

    Raises ValueError naming `where` for malformed values."""
    t = np.asarray(record["translation"], dtype=np.float64)
    if t.shape != (3,) or not np.all(np.isfinite(t)):
        raise ValueError(f"{where}: translation: expected 3 finite numbers")
    m = np.eye(4)
    m[:3, :3] = rotation_from_quaternion(record["rotation"], f"{where}: rotation")
    m[:3, 3] = t
    return RigidTransform(m)


def _unit(q_wxyz: Sequence[float]) -> FloatArray:
    q = np.asarray(q_wxyz, dtype=np.float64)
    return q / np.linalg.norm(q)


def _slerp(q0: FloatArray, q1: FloatArray, amount: float) -> FloatArray:
    """Spherical interpolation of unit quaternions (extrapolates for amounts outside 0-1)."""
    dot = float(np.dot(q0, q1))
    if dot < 0.0:  # the shorter way round
        q1, dot = -q1, -dot
    if dot > 0.9995:
        out = q0 + amount * (q1 - q0)
        return out / np.linalg.norm(out)
    theta = math.acos(min(dot, 1.0))
    s = math.sin(theta)
    out = (math.sin((1 - amount) * theta) * q0 + math.sin(amount * theta) * q1) / s
    return out / np.linalg.norm(out)


@dataclass(frozen=True)
class EgoTrack:
    """`global_from_ego` over time from `ego_pose` records (stamps ns, strictly increasing):
    positions interpolated linearly, rotations spherically; before the first or after the last
    pose, extrapolated from the first or last pair."""

    stamps_ns: tuple[int, ...]
    translations: tuple[tuple[float, float, float], ...]
    quaternions: tuple[tuple[float, float, float, float], ...]

    @staticmethod
    def from_records(records: Sequence[Mapping[str, Any]]) -> EgoTrack:
        """From `ego_pose` records (timestamps in µs), sorted by time; repeated stamps keep the
        first. Raises ValueError for no records."""
        if not records:
            raise ValueError("no ego poses")
        stamps: list[int] = []
        trans: list[tuple[float, float, float]] = []
        quats: list[tuple[float, float, float, float]] = []
        for r in sorted(records, key=lambda r: int(r["timestamp"])):
            stamp = int(r["timestamp"]) * 1000
            if stamps and stamp == stamps[-1]:
                continue
            where = f"ego_pose {r.get('token', '?')}"
            # Checked here, naming the record: a bad one was found only when interpolated,
            # as "ego pose" with its values already NaN.
            rotation_from_quaternion(r["rotation"], f"{where}: rotation")
            x, y, z = (float(v) for v in r["translation"])
            if not all(map(math.isfinite, (x, y, z))):
                raise ValueError(f"{where}: translation {[x, y, z]} is not finite")
            qw, qx, qy, qz = (float(v) for v in _unit(r["rotation"]))
            stamps.append(stamp)
            trans.append((x, y, z))
            quats.append((qw, qx, qy, qz))
        return EgoTrack(tuple(stamps), tuple(trans), tuple(quats))

    def _pair(self, stamp_ns: int) -> tuple[int, float]:
        n = len(self.stamps_ns)
        if n == 1:
            return 0, 0.0
        i = int(np.searchsorted(self.stamps_ns, stamp_ns, side="right")) - 1
        i = min(max(i, 0), n - 2)
        t0, t1 = self.stamps_ns[i], self.stamps_ns[i + 1]
        return i, (stamp_ns - t0) / (t1 - t0)

    def global_from_ego(self, stamp_ns: int) -> RigidTransform:
        """The ego pose at `stamp_ns` (ns)."""
        i, a = self._pair(stamp_ns)
        if len(self.stamps_ns) == 1:
            p, q = np.asarray(self.translations[0]), np.asarray(self.quaternions[0])
        else:
            p0, p1 = np.asarray(self.translations[i]), np.asarray(self.translations[i + 1])
            p = p0 + a * (p1 - p0)
            q = _slerp(np.asarray(self.quaternions[i]), np.asarray(self.quaternions[i + 1]), a)
        m = np.eye(4)
        m[:3, :3] = rotation_from_quaternion(tuple(q), "ego pose")
        m[:3, 3] = p
        return RigidTransform(m)

    def velocity_mps(self, index: int) -> tuple[float, float, float]:
        """Velocity (m/s, map axes) at the `index`-th pose: the central difference of its
        neighbours, one-sided at the ends; zero for a single pose."""
        n = len(self.stamps_ns)
        if n == 1:
            return 0.0, 0.0, 0.0
        lo, hi = max(index - 1, 0), min(index + 1, n - 1)
        dt = (self.stamps_ns[hi] - self.stamps_ns[lo]) * 1e-9
        d = np.asarray(self.translations[hi]) - np.asarray(self.translations[lo])
        vx, vy, vz = (float(v) for v in d / dt)
        return vx, vy, vz


def nuscenes_rig(
    lidar: Mapping[str, Any],
    cameras: Mapping[str, tuple[Mapping[str, Any], int, int]],
    *,
    source: str,
    warnings: Sequence[str] = (),
) -> tuple[Rig, RigidTransform]:
    """The rig of LIDAR_TOP's `calibrated_sensor` record and, per rig camera name, a camera's
    record with its image width and height (pixels); and `vehicle_from_ego`. Camera images of
    nuScenes are undistorted, so the cameras are ideal pinholes of `camera_intrinsic`.

    Raises ValueError or CalibrationError naming the record for invalid values."""
    ego_from_lidar = transform_from_record(lidar, f"{source}: LIDAR_TOP")
    vehicle_from_ego = RigidTransform.from_yaw(0.0, -ego_from_lidar.translation)
    vehicle_from: dict[str, RigidTransform] = {"lidar": vehicle_from_ego @ ego_from_lidar}
    models: dict[str, PinholeCamera] = {}
    for name, (record, width, height) in cameras.items():
        where = f"{source}: camera {name}"
        ego_from_camera = transform_from_record(record, where)
        vehicle_from[f"camera/{name}"] = vehicle_from_ego @ ego_from_camera
        models[name] = PinholeCamera(
            np.asarray(record["camera_intrinsic"], dtype=np.float64),
            (),
            int(width),
            int(height),
            context=where,
        )
    rig = Rig(
        vehicle_from=vehicle_from,
        cameras=models,
        source=source,
        gnss_lever_arm_m=vehicle_from_ego.translation,
        warnings=warnings,
    )
    return rig, vehicle_from_ego


def box_document(
    annotation: Mapping[str, Any],
    *,
    ident: int,
    label: str,
    category: str,
    velocity_global: Sequence[float],
    annotated_ns: int,
    stamp_ns: int,
    vehicle_from_global: RigidTransform,
    visible: float,
) -> dict[str, Any]:
    """A ground-truth box (the `replay.drive` ground-truth channel) of a `sample_annotation`
    annotated at `annotated_ns`, moved to `stamp_ns` along its velocity (map axes, m/s; NaN:
    unknown, then the box stays where annotated and its velocity is written as 0) and put in
    the vehicle frame at `stamp_ns` (`vehicle_from_global`). nuScenes sizes are (width, length,
    height); the document's are (length, width, height).

    Raises ValueError naming the annotation for malformed values."""
    where = f"sample_annotation {annotation.get('token', '?')}"
    try:
        global_from_box = transform_from_record(annotation, where)
        w, length, h = (float(v) for v in annotation["size"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{where}: malformed ({type(e).__name__}: {e})") from e
    if not all(math.isfinite(s) and s > 0 for s in (w, length, h)):
        # A box of negative or NaN size went into the ground truth the evaluation scores by.
        raise ValueError(f"{where}: size {[w, length, h]} is not three positive numbers")
    v = np.asarray(velocity_global, dtype=np.float64)[:3]
    known = bool(np.all(np.isfinite(v[:2])))
    if not known:
        v = np.zeros(3)
    v = np.where(np.isfinite(v), v, 0.0)
    center_global = global_from_box.translation + v * ((stamp_ns - annotated_ns) * 1e-9)
    center = vehicle_from_global.apply(center_global[None, :])[0]
    rot = vehicle_from_global.rotation @ global_from_box.rotation
    vel = vehicle_from_global.rotation @ v
    return {
        "id": ident,
        "label": label,
        "category": category,
        "center": [float(c) for c in center],
        "size": [length, w, h],
        "yaw": math.atan2(rot[1, 0], rot[0, 0]),
        "velocity": [float(vel[0]), float(vel[1])],
        "lidar_points": int(annotation.get("num_lidar_pts", 0)),
        "camera_visible": visible,
    }
