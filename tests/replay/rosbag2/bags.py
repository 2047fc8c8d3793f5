"""ROS 2 bags for the tests, written with rosbags from the KITTI object frames of the data
corpus: what a ROS driver stack would record for them (PointCloud2, Image or CompressedImage,
CameraInfo, NavSatFix + TwistStamped, tf_static and an unrelated topic).

Frames are as a KITTI-to-ROS conversion has them: `base_link` -> `velo_link` (identity: the
vehicle frame is the Velodyne's), `velo_link` -> `camera_rect` (the rectified camera 0, where
KITTI's P matrices project) and `velo_link` -> `imu_link` (the OXTS unit, the fixes' frame);
camera 2's CameraInfo has P = P2 with its baseline column and frame_id `camera_rect`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation

from calibration import RigidTransform, load_kitti_object_calib
from calibration.kitti import read_kitti_calib_fields
from replay.datasets.kitti_object import KittiObjectFolder

STORE = get_typestore(Stores.LATEST)
T = STORE.types

LIDAR_TOPIC = "/kitti/velo/pointcloud"
CAMERA_NS = "/kitti/camera_color_left"
INFO_TOPIC = f"{CAMERA_NS}/camera_info"
FIX_TOPIC = "/kitti/oxts/gps/fix"
VEL_TOPIC = "/kitti/oxts/gps/vel"
CHATTER_TOPIC = "/chatter"
#: KITTI raw 2011_09_26 drive 0001's first oxts packet (data corpus kitti_raw/).
LAT, LON, ALT = 49.015003823272, 8.4342971002335, 116.43032836914
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


def header(stamp_ns: int, frame_id: str) -> Any:
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id
    )


def transform_stamped(stamp_ns: int, parent: str, child: str, t: RigidTransform) -> Any:
    x, y, z, w = Rotation.from_matrix(t.rotation).as_quat()
    tx, ty, tz = (float(v) for v in t.translation)
    return T["geometry_msgs/msg/TransformStamped"](
        header=header(stamp_ns, parent),
        child_frame_id=child,
        transform=T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](x=tx, y=ty, z=tz),
            rotation=T["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w),
        ),
    )


def tf_static(stamp_ns: int, edges: list[tuple[str, str, RigidTransform]]) -> Any:
    return T["tf2_msgs/msg/TFMessage"](
        transforms=[transform_stamped(stamp_ns, p, c, t) for p, c, t in edges]
    )


def point_cloud(stamp_ns: int, frame_id: str, points: np.ndarray, extra: dict | None = None) -> Any:
    """x, y, z, intensity float32 (+ `extra`: name -> (datatype, values as that dtype))."""
    field_t = T["sensor_msgs/msg/PointField"]
    names = [("x", 7, "<f4"), ("y", 7, "<f4"), ("z", 7, "<f4"), ("intensity", 7, "<f4")]
    columns = [points[:, i].astype("<f4") for i in range(4)]
    for name, (datatype, values) in (extra or {}).items():
        names.append((name, datatype, values.dtype.str))
        columns.append(values)
    dtype = np.dtype({"names": [n for n, _, _ in names], "formats": [f for _, _, f in names]})
    records = np.zeros(len(points), dtype=dtype)
    for (name, _, _), col in zip(names, columns, strict=True):
        records[name] = col
    assert dtype.fields is not None
    fields = [field_t(name=n, offset=dtype.fields[n][1], datatype=d, count=1) for n, d, _ in names]
    return T["sensor_msgs/msg/PointCloud2"](
        header=header(stamp_ns, frame_id),
        height=1,
        width=len(points),
        fields=fields,
        is_bigendian=False,
        point_step=dtype.itemsize,
        row_step=dtype.itemsize * len(points),
        data=np.frombuffer(records.tobytes(), dtype=np.uint8),
        is_dense=True,
    )


def image(stamp_ns: int, frame_id: str, bgr: np.ndarray, encoding: str = "rgb8") -> Any:
    pixels = bgr[:, :, ::-1] if encoding == "rgb8" else bgr
    h, w = bgr.shape[:2]
    return T["sensor_msgs/msg/Image"](
        header=header(stamp_ns, frame_id),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=w * 3,
        data=np.ascontiguousarray(pixels).reshape(-1),
    )


def compressed(stamp_ns: int, frame_id: str, data: bytes, fmt: str = "png") -> Any:
    return T["sensor_msgs/msg/CompressedImage"](
        header=header(stamp_ns, frame_id), format=fmt, data=np.frombuffer(data, dtype=np.uint8)
    )


def camera_info(stamp_ns: int, frame_id: str, p: np.ndarray, width: int, height: int) -> Any:
    return T["sensor_msgs/msg/CameraInfo"](
        header=header(stamp_ns, frame_id),
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=p[:, :3].reshape(-1).copy(),
        r=np.eye(3).reshape(-1),
        p=p.reshape(-1).copy(),
        binning_x=0,
        binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )


def nav_sat_fix(stamp_ns: int, frame_id: str, lat: float, lon: float, status: int = 0) -> Any:
    cov = np.diag([0.25, 0.25, 1.0]).reshape(-1)
    return T["sensor_msgs/msg/NavSatFix"](
        header=header(stamp_ns, frame_id),
        status=T["sensor_msgs/msg/NavSatStatus"](status=status, service=1),
        latitude=lat,
        longitude=lon,
        altitude=ALT,
        position_covariance=cov,
        position_covariance_type=2,
    )


def twist_stamped(stamp_ns: int, frame_id: str, v: tuple[float, float, float]) -> Any:
    vec = T["geometry_msgs/msg/Vector3"]
    return T["geometry_msgs/msg/TwistStamped"](
        header=header(stamp_ns, frame_id),
        twist=T["geometry_msgs/msg/Twist"](linear=vec(*v), angular=vec(0.0, 0.0, 0.0)),
    )


@dataclass(frozen=True)
class KittiBag:
    path: Path
    stamps: list[int]


class BagWriter:
    """A rosbags Writer taking message objects: `write(topic, receive_ns, msg)`."""

    def __init__(self, path: Path, storage: str = "mcap") -> None:
        self._writer = Writer(path, version=9, storage_plugin=STORAGES[storage])
        self._connections: dict[str, Any] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()

    def connection(self, topic: str, msgtype: str, **kwargs: Any) -> Any:
        if topic not in self._connections:
            if "msgdef" not in kwargs:
                kwargs["typestore"] = STORE
            self._connections[topic] = self._writer.add_connection(topic, msgtype, **kwargs)
        return self._connections[topic]

    def write(self, topic: str, receive_ns: int, msg: Any) -> None:
        msgtype = msg.__msgtype__
        self._writer.write(
            self.connection(topic, msgtype), receive_ns, STORE.serialize_cdr(msg, msgtype)
        )

    def write_raw(self, topic: str, receive_ns: int, data: bytes) -> None:
        self._writer.write(self._connections[topic], receive_ns, data)


def write_kitti_bag(
    kitti_dir: Path,
    path: Path,
    *,
    storage: str = "mcap",
    period_ns: int = 100_000_000,
    start_ns: int = 0,
    compressed_images: bool = False,
    frames: int | None = None,
    skip: tuple[str, ...] = (),
    extra: Callable[[BagWriter, int, int], None] | None = None,
) -> KittiBag:
    """The KITTI object frames of `kitti_dir` (the folder replay's scans) as a bag at `path`:
    frame i stamped `start_ns + i * period_ns`, received 1-5 ms later (tf_static, CameraInfo,
    image, cloud, fix + velocity), plus a std_msgs/String on /chatter. `skip`: topics to leave
    out; `extra(writer, frame index, stamp)` writes more."""
    folder = KittiObjectFolder(kitti_dir)
    stamps = []
    with BagWriter(path, storage) as w:
        for i, frame in enumerate(folder.frames[:frames]):
            stamp = start_ns + i * period_ns
            stamps.append(stamp)
            png = frame.image_path.read_bytes()
            bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            assert bgr is not None
            h, w_px = bgr.shape[:2]
            rig = load_kitti_object_calib(frame.calib_path, w_px, h)
            fields = read_kitti_calib_fields(frame.calib_path)
            edges = [
                ("base_link", "velo_link", RigidTransform.identity()),
                ("velo_link", "camera_rect", rig.edges["rect"].parent_from_frame),
                ("velo_link", "imu_link", rig.edges["imu"].parent_from_frame),
            ]
            points = np.fromfile(frame.lidar_path, dtype="<f4").reshape(-1, 4)
            msgs: list[tuple[str, int, Any]] = [
                ("/tf_static", stamp + 1_000_000, tf_static(stamp, edges)),
                (
                    INFO_TOPIC,
                    stamp + 2_000_000,
                    camera_info(stamp, "camera_rect", fields["P2"].reshape(3, 4), w_px, h),
                ),
                (
                    f"{CAMERA_NS}/image_raw/compressed"
                    if compressed_images
                    else f"{CAMERA_NS}/image_raw",
                    stamp + 3_000_000,
                    compressed(stamp, "camera_rect", png)
                    if compressed_images
                    else image(stamp, "camera_rect", bgr),
                ),
                (LIDAR_TOPIC, stamp + 4_000_000, point_cloud(stamp, "velo_link", points)),
                (FIX_TOPIC, stamp + 5_000_000, nav_sat_fix(stamp, "imu_link", LAT, LON + i * 1e-5)),
                (VEL_TOPIC, stamp + 5_000_000, twist_stamped(stamp, "imu_link", (1.0, 2.0, 0.0))),
                (CHATTER_TOPIC, stamp + 5_000_000, T["std_msgs/msg/String"](data=f"frame {i}")),
            ]
            for topic, receive, msg in msgs:
                if topic not in skip:
                    w.write(topic, receive, msg)
            if extra is not None:
                extra(w, i, stamp)
    return KittiBag(path, stamps)
