"""ROS 2 messages -> node messages (replay.rosbag2.convert, replay.rosbag2.rig): point cloud
layouts and per-point time conventions, image encodings, fixes, velocities, CameraInfo."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from calibration import FisheyeCamera, PinholeCamera
from replay.rosbag2.convert import (
    compressed_image_to_frame,
    image_to_frame,
    navsat_to_fix,
    pointcloud_to_sweep,
    velocity_sample,
)
from replay.rosbag2.errors import Rosbag2Error
from replay.rosbag2.rig import camera_calibration
from tests.replay.rosbag2.bags import (
    T,
    camera_info,
    compressed,
    header,
    image,
    nav_sat_fix,
    point_cloud,
    twist_stamped,
)

STAMP = 1_317_000_000_123_456_789
POINTS = np.array([[1, 2, 3, 0.5], [4, 5, 6, 0.25], [7, 8, 9, 1.0]], dtype=np.float32)


def sweep(msg, time_field: str | None = ""):
    return pointcloud_to_sweep(
        msg, stream="lidar/top", frame_id="lidar", seq=0, time_field=time_field, where="test"
    )


def test_cloud_points_and_no_time() -> None:
    s = sweep(point_cloud(STAMP, "velo", POINTS))
    np.testing.assert_array_equal(s.points, POINTS)
    assert s.header.stamp_ns == STAMP and s.point_time_offsets_ns is None


@pytest.mark.parametrize(
    ("name", "datatype", "values", "stamp", "offsets"),
    [
        # Ouster: uint32 ns after the header stamp.
        ("t", 6, np.array([0, 50_000_000, 99_000_000], "<u4"), STAMP, [0, 50_000_000, 99_000_000]),
        # Velodyne stamping the sweep end: float32 seconds before it.
        ("time", 7, np.array([-0.1, -0.05, 0.0], "<f4"), STAMP - 100_000_001, None),
        # Hesai: float64 absolute seconds.
        ("timestamp", 8, np.array([STAMP / 1e9, STAMP / 1e9 + 0.01, STAMP / 1e9 + 0.02]),
         STAMP, [0, 10_000_000, 20_000_000]),
    ],
)  # fmt: skip
def test_cloud_per_point_time_conventions(name, datatype, values, stamp, offsets) -> None:
    s = sweep(point_cloud(STAMP, "velo", POINTS, {name: (datatype, values)}))
    assert s.point_time_offsets_ns is not None
    # float64 seconds since the epoch resolve about 0.24 us.
    assert abs(s.header.stamp_ns - stamp) <= 300
    if offsets is not None:
        np.testing.assert_allclose(s.point_time_offsets_ns, offsets, atol=300)
    else:
        assert s.point_time_offsets_ns.min() == 0
        assert abs(int(s.point_time_offsets_ns.max()) - 100_000_001) <= 2
    # None: no per-point time even when the cloud has it.
    assert sweep(point_cloud(STAMP, "v", POINTS, {name: (datatype, values)}), None)\
        .point_time_offsets_ns is None  # fmt: skip


def test_organised_big_endian_cloud_with_padding_and_no_returns() -> None:
    # 2 x 2 points of float64 x, y, z (big-endian), no intensity, rows padded by 8 bytes.
    xyz = np.array([[[1, 2, 3], [np.nan, 0, 0]], [[4, 5, 6], [7, 8, 9]]], dtype=">f8")
    rows = [np.concatenate([xyz[r].reshape(-1).view(np.uint8), np.zeros(8, np.uint8)])
            for r in range(2)]  # fmt: skip
    field = T["sensor_msgs/msg/PointField"]
    msg = T["sensor_msgs/msg/PointCloud2"](
        header=header(STAMP, "velo"), height=2, width=2,
        fields=[field(name=n, offset=8 * i, datatype=8, count=1) for i, n in enumerate("xyz")],
        is_bigendian=True, point_step=24, row_step=56, data=np.concatenate(rows), is_dense=False,
    )  # fmt: skip
    s = sweep(msg)
    np.testing.assert_array_equal(s.points, [[1, 2, 3, 0], [4, 5, 6, 0], [7, 8, 9, 0]])


def test_a_cloud_with_reflectivity_only_reads_it_as_intensity() -> None:
    """Ouster's reduced point types carry `reflectivity` (uint16) and no `intensity`."""
    dtype = np.dtype({"names": ["x", "y", "z", "reflectivity"],
                      "formats": ["<f4", "<f4", "<f4", "<u2"], "itemsize": 16})  # fmt: skip
    records = np.zeros(3, dtype=dtype)
    for i, name in enumerate("xyz"):
        records[name] = POINTS[:, i]
    records["reflectivity"] = [10, 200, 4000]
    field = T["sensor_msgs/msg/PointField"]
    names = ("x", "y", "z", "reflectivity")
    assert dtype.fields is not None
    offsets = {n: dtype.fields[n][1] for n in names}
    msg = T["sensor_msgs/msg/PointCloud2"](
        header=header(STAMP, "os"), height=1, width=3,
        fields=[field(name=n, offset=offsets[n], datatype=7 if n in "xyz" else 4, count=1)
                for n in names],
        is_bigendian=False, point_step=16, row_step=48,
        data=np.frombuffer(records.tobytes(), dtype=np.uint8), is_dense=True,
    )  # fmt: skip
    s = sweep(msg)
    np.testing.assert_array_equal(s.points[:, :3], POINTS[:, :3])
    np.testing.assert_array_equal(s.points[:, 3], [10, 200, 4000])


def test_malformed_clouds_are_named() -> None:
    msg = point_cloud(STAMP, "velo", POINTS)
    msg.data = msg.data[:-1]
    with pytest.raises(Rosbag2Error, match=r"^test: point cloud of 1 x 3 points.*does not fit"):
        sweep(msg)
    with pytest.raises(Rosbag2Error, match="no per-point time field 'tt'"):
        sweep(point_cloud(STAMP, "velo", POINTS), "tt")
    # x declared float64 over x and y was read as garbage (2.0000005, 2048.0005, ...).
    msg = point_cloud(STAMP, "velo", POINTS)
    msg.fields[0].datatype = 8
    with pytest.raises(
        Rosbag2Error,
        match=r"^test: point cloud fields 'x' \(bytes 0-8\) and 'y' \(bytes 4-8\) overlap",
    ):
        sweep(msg)
    # A field given twice was read from its first, whichever the driver meant.
    msg = point_cloud(STAMP, "velo", POINTS, {"t": (7, np.zeros(3, "<f4"))})
    msg.fields = [*msg.fields, msg.fields[-1]]
    with pytest.raises(Rosbag2Error, match=r"^test: point cloud gives field 't' twice"):
        sweep(msg)
    ring = T["sensor_msgs/msg/PointField"](name="ring", offset=0, datatype=2, count=1)
    msg.fields = [*msg.fields[:-1], ring, ring]  # one it does not read, twice: no matter
    assert len(sweep(msg).points) == 3


@pytest.mark.filterwarnings("error")
def test_absurd_per_point_times_are_named_without_numpy_warnings() -> None:
    """A float time of 1e300 was cast to int64's minimum after numpy's RuntimeWarning (a
    second line on stderr), and the sweep refused as "per-point times start before the
    epoch"."""
    for values in (np.array([1e300, 1e300, 1e300]), np.array([-3e38, 0.0, 0.0], "<f4")):
        datatype = 8 if values.dtype.itemsize == 8 else 7
        with pytest.raises(Rosbag2Error) as error:
            sweep(point_cloud(STAMP, "velo", POINTS, {"t": (datatype, values)}))
        assert str(error.value) == (
            f"test: field 't': per-point time {values[0]:g} is beyond any sweep's"
        )


@pytest.mark.filterwarnings("error")
def test_float64_coordinates_beyond_float32_are_dropped_without_numpy_warnings() -> None:
    """They become inf and their points are dropped as no-returns; numpy's "overflow
    encountered in cast" was a line on stderr of a successful import."""
    xyz = np.array([[1, 2, 3], [1e300, 0, 0], [4, 5, 6]], dtype="<f8")
    field = T["sensor_msgs/msg/PointField"]
    msg = T["sensor_msgs/msg/PointCloud2"](
        header=header(STAMP, "velo"), height=1, width=3,
        fields=[field(name=n, offset=8 * i, datatype=8, count=1) for i, n in enumerate("xyz")],
        is_bigendian=False, point_step=24, row_step=72, data=xyz.reshape(-1).view(np.uint8),
        is_dense=False,
    )  # fmt: skip
    np.testing.assert_array_equal(sweep(msg).points, [[1, 2, 3, 0], [4, 5, 6, 0]])


BGR = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "bgra8"])
def test_image_encodings_with_row_padding(encoding: str) -> None:
    channels = {"rgb8": BGR[:, :, ::-1], "bgr8": BGR, "mono8": BGR[:, :, :1],
                "bgra8": np.dstack([BGR, np.full((2, 3), 255, np.uint8)])}[encoding]  # fmt: skip
    padded = np.zeros((2, channels.shape[1] * channels.shape[2] + 3), np.uint8)
    padded[:, : channels.shape[1] * channels.shape[2]] = channels.reshape(2, -1)
    msg = image(STAMP, "cam", BGR)
    msg.encoding, msg.step, msg.data = encoding, padded.shape[1], padded.reshape(-1)
    frame = image_to_frame(msg, stream="camera/front", frame_id="camera/front", seq=4, where="t")
    expected = np.repeat(BGR[:, :, :1], 3, axis=2) if encoding == "mono8" else BGR
    np.testing.assert_array_equal(frame.image, expected)
    assert frame.header.stamp_ns == STAMP and frame.header.seq == 4


def test_unsupported_images_are_named() -> None:
    msg = image(STAMP, "cam", BGR)
    msg.encoding = "bayer_rggb8"
    with pytest.raises(Rosbag2Error, match=r"^t: image encoding 'bayer_rggb8' is not supported"):
        image_to_frame(msg, stream="c", frame_id="c", seq=0, where="t")
    jpeg = compressed(STAMP, "cam", b"\xff\xd8\xff\xe0rest", "jpeg")
    frame = compressed_image_to_frame(jpeg, stream="c", frame_id="c", seq=0, where="t")
    assert frame.encoding == "jpeg"
    with pytest.raises(Rosbag2Error, match="'tiff' is not JPEG or PNG"):
        compressed_image_to_frame(
            compressed(STAMP, "c", b"II*\x00", "tiff"), stream="c", frame_id="c", seq=0, where="t"
        )


def test_fixes_without_a_position_are_skipped_and_unknown_covariance_is_zero() -> None:
    kw: dict[str, Any] = {
        "stream": "gnss", "frame_id": "gnss", "seq": 0, "velocity": None, "where": "t"
    }  # fmt: skip
    assert navsat_to_fix(nav_sat_fix(STAMP, "gps", 49.0, 8.4, status=-1), **kw) is None
    assert navsat_to_fix(nav_sat_fix(STAMP, "gps", float("nan"), 8.4), **kw) is None
    msg = nav_sat_fix(STAMP, "gps", 49.0, 8.4)
    msg.position_covariance_type = 0
    fix = navsat_to_fix(msg, **kw)
    assert fix is not None and fix.position_covariance_m2 == (0.0,) * 9
    assert fix.velocity_enu_mps is None and fix.header.stamp_ns == STAMP
    # Beyond what a drive holds: skipped like a fix without a position (an altitude of 1e300
    # ended the whole import, "cannot be stored in a drive"), a speed like a non-finite one.
    msg.altitude = 1e300
    assert navsat_to_fix(msg, **kw) is None
    fast = twist_stamped(STAMP, "gps", (250.0, 0.0, 0.0))
    assert velocity_sample(fast, "geometry_msgs/msg/TwistStamped", "t") is None
    slow = twist_stamped(STAMP, "gps", (30.0, 0.0, 0.0))
    assert velocity_sample(slow, "geometry_msgs/msg/TwistStamped", "t") is not None
    # Each component within the bound, the speed (212 m/s) not: a drive could not hold it.
    diagonal = twist_stamped(STAMP, "gps", (150.0, 150.0, 0.0))
    assert velocity_sample(diagonal, "geometry_msgs/msg/TwistStamped", "t") is None


def test_odometry_velocity_is_turned_into_the_world_frame() -> None:
    vec = T["geometry_msgs/msg/Vector3"]
    s = np.sqrt(0.5)
    odom = T["nav_msgs/msg/Odometry"](
        header=header(STAMP, "map"),
        child_frame_id="base_link",
        pose=T["geometry_msgs/msg/PoseWithCovariance"](
            pose=T["geometry_msgs/msg/Pose"](
                position=T["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=s, w=s),
            ),
            covariance=np.zeros(36),
        ),
        twist=T["geometry_msgs/msg/TwistWithCovariance"](
            twist=T["geometry_msgs/msg/Twist"](linear=vec(3.0, 0.0, 0.0), angular=vec(0, 0, 0)),
            covariance=np.zeros(36),
        ),
    )
    sample = velocity_sample(odom, "nav_msgs/msg/Odometry", "t")
    assert sample is not None
    np.testing.assert_allclose(sample.velocity_enu_mps, (0.0, 3.0, 0.0), atol=1e-12)
    assert sample.heading_rad == pytest.approx(np.pi / 2)


P = np.array([[700.0, 0, 600, -350.0], [0, 700, 180, 7.0], [0, 0, 1, 0.01]])


def test_camera_info_rectified_uses_p_and_its_baseline() -> None:
    info = camera_info(STAMP, "/left_optical", P, 1242, 375)
    cal = camera_calibration(info, rectified=True, where="t")
    assert cal.frame_id == "left_optical"
    assert isinstance(cal.camera, PinholeCamera) and cal.camera.distortion == ()
    np.testing.assert_array_equal(cal.camera.k, P[:, :3])
    np.testing.assert_allclose(
        cal.frame_from_camera.translation, -np.linalg.solve(P[:, :3], P[:, 3])
    )
    # Projecting a point of the info's frame with P = projecting it from the placed camera.
    point = np.array([2.0, -1.0, 20.0])
    uvw = P @ np.append(point, 1.0)
    camera_point = cal.frame_from_camera.inverse().apply(point.reshape(1, 3))[0]
    np.testing.assert_allclose(cal.camera.k @ camera_point / camera_point[2], uvw / uvw[2])


def test_camera_info_raw_uses_k_d_and_r() -> None:
    info = camera_info(STAMP, "cam", P, 1242, 375)
    info.d = np.array([0.1, -0.05, 0.001, 0.002, 0.0])
    c, s = np.cos(0.01), np.sin(0.01)
    info.r = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]).reshape(-1)
    cal = camera_calibration(info, rectified=False, where="t")
    assert cal.camera.distortion == (0.1, -0.05, 0.001, 0.002, 0.0)
    np.testing.assert_allclose(cal.frame_from_camera.rotation, info.r.reshape(3, 3))
    info.distortion_model, info.d = "equidistant", np.array([0.1, 0.01, 0.0, 0.0])
    assert isinstance(camera_calibration(info, rectified=False, where="t").camera, FisheyeCamera)
    info.k = np.zeros(9)
    with pytest.raises(Rosbag2Error, match=r"^t: the camera is not calibrated"):
        camera_calibration(info, rectified=False, where="t")


@pytest.mark.filterwarnings("error")
def test_an_absurd_focal_length_is_named_without_numpy_warnings() -> None:
    """numpy's "overflow encountered in det" came on stderr before the error."""
    huge = np.array([[1e300, 0, 600, 0], [0, 1e300, 180, 0], [0, 0, 1, 0]])
    with pytest.raises(Rosbag2Error, match=r"^t\.k: fx=1e\+300 px is no focal length"):
        camera_calibration(camera_info(STAMP, "cam", huge, 1242, 375), rectified=True, where="t")
