"""The rig of a bag: frames from tf_static, cameras from CameraInfo.

Frames
    tf_static holds `TransformStamped`s `header.frame_id` (parent) -> `child_frame_id`, the
    transform being the child's pose in the parent: `parent_from_child` in our naming. The
    latest transform of each child wins (a static publisher re-sends them; a bag with new
    values changes the rig from then on).

    The rig's `vehicle` is the `--topics` file's `vehicle_frame`, else `base_link` (REP 105)
    when it is in the lidar frame's tree, else that tree's root. The tree is re-hung from
    `vehicle` (edges above it are inverted); frames not connected to it are left out (listed in
    the rig's warnings). tf frames keep their names (a leading `/` dropped), except those the
    rig reserves (`vehicle`, `lidar`, `gnss`, `camera/...`), which become `tf/<name>`.

    The sensors hang below the frames their messages name: `lidar` below the point cloud's
    `frame_id` (identity), `gnss` below the NavSatFix's (identity: the antenna), and
    `camera/<name>` below the CameraInfo's (see below).

Cameras (sensor_msgs/CameraInfo)
    `P` projects points of `header.frame_id` into the rectified image; its last column is
    zero for a single camera and holds `-fx' * baseline` (and for KITTI also y and z parts)
    for the second camera of a stereo pair, whose frame_id is the first camera's. So the
    camera's optical centre sits at `-P[:, :3]^-1 P[:, 3]` in `frame_id`, and
    `camera/<name>` is there: `frame_from_camera = [R | -P[:, :3]^-1 P[:, 3]]`.
    - rectified images (the topic's name holds `rect`, or `rectified: true` in --topics):
      intrinsics `P[:, :3]` (K when P is unset), no distortion, and R is not used.
    - raw images: intrinsics `K`, distortion `D` (`plumb_bob` and `rational_polynomial`: the
      pinhole model with 5 or 8 coefficients; `equidistant`: the fisheye model), and the
      raw camera turned by `R` (rectified from raw) from its rectified frame.
    An all-zero D, R or P means unset (identity R, no distortion, P from K).
    This places KITTI's camera 2 (P2 with its baseline column, frame_id the rectified camera
    0) exactly where the KITTI loader (calibration.kitti) puts it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from calibration import (
    GNSS_FRAME,
    VEHICLE_FRAME,
    CalibrationError,
    CameraModel,
    FisheyeCamera,
    FrameEdge,
    PinholeCamera,
    Rig,
    RigidTransform,
)
from calibration.rig import camera_frame
from calibration.transforms import rotation_from_quaternion as quaternion_rotation
from replay.rosbag2.errors import Rosbag2Error

__all__ = [
    "LIDAR_FRAME",
    "CameraCalibration",
    "TfEdge",
    "build_rig",
    "camera_calibration",
    "rotation_from_quaternion",
    "tf_edges",
]

LIDAR_FRAME = "lidar"
BASE_LINK = "base_link"
_PINHOLE_MODELS = {"plumb_bob", "rational_polynomial", ""}
_FISHEYE_MODELS = {"equidistant", "fisheye"}

FloatArray = npt.NDArray[np.float64]


def rotation_from_quaternion(x: float, y: float, z: float, w: float, where: str) -> FloatArray:
    """The 3 x 3 rotation of a ROS quaternion (x, y, z, w; normalised). Raises Rosbag2Error
    naming `where` for a non-finite or zero quaternion."""
    try:
        return quaternion_rotation(w, x, y, z)
    except ValueError:
        raise Rosbag2Error(
            f"{where}: rotation quaternion (x, y, z, w) {[x, y, z, w]} is not a rotation"
        ) from None


def _frame(name: str) -> str:
    return name.lstrip("/")


@dataclass(frozen=True)
class TfEdge:
    """One static transform: `parent_from_child`."""

    parent: str
    child: str
    parent_from_child: RigidTransform


def tf_edges(msg: Any, where: str) -> list[TfEdge]:
    """The transforms of a `tf2_msgs/msg/TFMessage`. Raises Rosbag2Error naming `where` for a
    transform without frames or with a non-finite translation or rotation."""
    edges = []
    for i, ts in enumerate(msg.transforms):
        parent, child = _frame(ts.header.frame_id), _frame(ts.child_frame_id)
        at = f"{where}: transforms[{i}] ({parent or '?'} -> {child or '?'})"
        if not parent or not child or parent == child:
            raise Rosbag2Error(f"{at}: needs a parent and a different child frame")
        t, q = ts.transform.translation, ts.transform.rotation
        m = np.eye(4)
        m[:3, :3] = rotation_from_quaternion(q.x, q.y, q.z, q.w, at)
        m[:3, 3] = (t.x, t.y, t.z)
        if not np.all(np.isfinite(m)):
            raise Rosbag2Error(f"{at}: non-finite translation")
        edges.append(TfEdge(parent, child, RigidTransform(m)))
    return edges


@dataclass(frozen=True, eq=False)
class CameraCalibration:
    """A camera from its CameraInfo: the model, the frame the info names, and the camera's
    pose in it (`frame_from_camera`)."""

    frame_id: str
    camera: CameraModel
    frame_from_camera: RigidTransform


def _unset(values: FloatArray) -> bool:
    return bool(values.size == 0 or not np.any(values))


def camera_calibration(info: Any, *, rectified: bool, where: str) -> CameraCalibration:
    """A camera from a `sensor_msgs/msg/CameraInfo` (see the module docstring for the
    conventions), for rectified or raw images. Raises Rosbag2Error naming `where` for an
    uncalibrated or invalid CameraInfo."""
    frame_id = _frame(info.header.frame_id)
    if not frame_id:
        raise Rosbag2Error(f"{where}: CameraInfo has no header.frame_id")
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    p = np.asarray(info.p, dtype=np.float64).reshape(3, 4)
    r = np.asarray(info.r, dtype=np.float64).reshape(3, 3)
    d = np.asarray(info.d, dtype=np.float64).ravel()
    if _unset(k):
        raise Rosbag2Error(f"{where}: the camera is not calibrated (K is all zero)")
    if not (np.all(np.isfinite(k)) and np.all(np.isfinite(p)) and np.all(np.isfinite(r))):
        raise Rosbag2Error(f"{where}: CameraInfo K, R or P has non-finite values")
    projection = k if _unset(p) else p[:, :3]
    with np.errstate(over="ignore", invalid="ignore"):
        # An fx of 1e300 overflows (numpy's warning was a line before the error that names it).
        det = float(np.linalg.det(projection))
    if abs(det) < 1e-12:
        raise Rosbag2Error(f"{where}: CameraInfo P[:, :3] is singular")
    offset = np.zeros(3) if _unset(p) else -np.linalg.solve(projection, p[:, 3])
    rotation = np.eye(3) if rectified or _unset(r) else r
    model = str(info.distortion_model).strip().lower()
    try:
        if rectified:
            camera: CameraModel = PinholeCamera(
                projection.copy(), (), int(info.width), int(info.height), context=where
            )
        else:
            dist = () if _unset(d) else tuple(float(v) for v in d)
            if model in _FISHEYE_MODELS and dist:
                camera = FisheyeCamera(k, dist, int(info.width), int(info.height), context=where)
            elif model in _PINHOLE_MODELS or not dist:
                camera = PinholeCamera(k, dist, int(info.width), int(info.height), context=where)
            else:
                raise Rosbag2Error(
                    f"{where}: distortion model {info.distortion_model!r} is not supported "
                    "(plumb_bob, rational_polynomial, equidistant)"
                )
        frame_from_camera = RigidTransform.from_rotation_translation(
            rotation, offset, f"{where}: R and P"
        )
    except CalibrationError as e:
        raise Rosbag2Error(str(e)) from e
    return CameraCalibration(frame_id, camera, frame_from_camera)


# -- the rig ------------------------------------------------------------------------------------


def _root(frame: str, tf: Mapping[str, TfEdge]) -> str:
    seen = {frame}
    while frame in tf:
        frame = tf[frame].parent
        if frame in seen:
            break  # a cycle: any frame of it will do as the root
        seen.add(frame)
    return frame


def _component(start: str, tf: Mapping[str, TfEdge]) -> dict[str, tuple[str, RigidTransform]]:
    """Every frame connected to `start`, each with its parent in a tree hung from `start` and
    `parent_from_frame` (a tf edge, or its inverse where the tree runs against it)."""
    neighbours: dict[str, list[tuple[str, RigidTransform]]] = {}
    for edge in tf.values():
        # parent -> child: the child's parent_from_child; child -> parent: its inverse.
        neighbours.setdefault(edge.parent, []).append((edge.child, edge.parent_from_child))
        neighbours.setdefault(edge.child, []).append(
            (edge.parent, edge.parent_from_child.inverse())
        )
    tree: dict[str, tuple[str, RigidTransform]] = {}
    queue, seen = [start], {start}
    while queue:
        frame = queue.pop(0)
        for other, frame_from_other in neighbours.get(frame, []):
            if other not in seen:
                seen.add(other)
                tree[other] = (frame, frame_from_other)
                queue.append(other)
    return tree


def _reserved(name: str) -> bool:
    return name in (VEHICLE_FRAME, LIDAR_FRAME, GNSS_FRAME) or name.startswith("camera/")


def _loop(tf: Mapping[str, TfEdge]) -> list[str] | None:
    """Frames whose parents lead back to them (child, parent, ..., child), or None."""
    for start in tf:
        path, frame = [start], start
        while frame in tf:
            frame = tf[frame].parent
            if frame in path:
                return [*path[path.index(frame) :], frame]
            path.append(frame)
    return None


def build_rig(
    tf: Mapping[str, TfEdge],
    *,
    lidar_frame: str,
    cameras: Mapping[str, CameraCalibration],
    gnss_frame: str | None,
    vehicle_frame: str | None,
    source: str,
) -> Rig:
    """The rig of `tf` (child -> edge), the lidar's frame id, the cameras (rig name ->
    calibration) and the GNSS fix's frame id (see the module docstring).

    Raises Rosbag2Error naming `source`: frames whose parents loop, the vehicle frame is not
    connected to the lidar's, a camera's frame is not connected to the vehicle's tree, or the
    rig is invalid."""
    loop = _loop(tf)
    if loop is not None:
        # Two paths between frames that disagree: one was taken without a word.
        raise Rosbag2Error(
            f"{source}: tf_static frames loop ({' -> '.join(loop)}, each frame's parent after "
            "it): a frame has one parent"
        )
    lidar_frame = _frame(lidar_frame)
    if vehicle_frame is None:
        root = _root(lidar_frame, tf)
        near = _component(root, tf)
        vehicle_frame = BASE_LINK if BASE_LINK in near or root == BASE_LINK else root
    tree = _component(vehicle_frame, tf)
    if lidar_frame != vehicle_frame and lidar_frame not in tree:
        raise Rosbag2Error(
            f"{source}: the lidar's frame {lidar_frame!r} is not connected to the vehicle frame "
            f"{vehicle_frame!r} in tf_static"
        )

    def rig_name(frame: str) -> str:
        if frame == vehicle_frame:
            return VEHICLE_FRAME
        return f"tf/{frame}" if _reserved(frame) else frame

    edges: dict[str, FrameEdge] = {
        rig_name(f): FrameEdge(rig_name(parent), t) for f, (parent, t) in tree.items()
    }
    edges[LIDAR_FRAME] = FrameEdge(rig_name(lidar_frame), RigidTransform.identity())
    warnings: list[str] = []
    for name, cal in sorted(cameras.items()):
        if cal.frame_id != vehicle_frame and cal.frame_id not in tree:
            raise Rosbag2Error(
                f"{source}: camera {name}: its frame {cal.frame_id!r} is not connected to the "
                f"vehicle frame {vehicle_frame!r} in tf_static"
            )
        edges[camera_frame(name)] = FrameEdge(rig_name(cal.frame_id), cal.frame_from_camera)
    if gnss_frame is not None:
        gnss_frame = _frame(gnss_frame)
        if gnss_frame == vehicle_frame or gnss_frame in tree:
            edges[GNSS_FRAME] = FrameEdge(rig_name(gnss_frame), RigidTransform.identity())
        else:
            warnings.append(
                f"the GNSS frame {gnss_frame!r} is not connected to {vehicle_frame!r} in "
                "tf_static: no lever arm (fixes taken at the vehicle origin)"
            )
    loose = sorted({e.child for e in tf.values()} - set(tree) - {vehicle_frame})
    if loose:
        warnings.append(
            f"tf_static frames not connected to {vehicle_frame!r} left out: {', '.join(loose)}"
        )
    try:
        return Rig(
            cameras={n: c.camera for n, c in cameras.items()},
            source=source,
            edges=edges,
            warnings=warnings,
        )
    except CalibrationError as e:
        raise Rosbag2Error(
            f"{source}: the rig from tf_static and CameraInfo is invalid ({e})"
        ) from e
