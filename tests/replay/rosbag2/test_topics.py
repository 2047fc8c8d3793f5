"""The topic mapping by type and the --topics file (replay.rosbag2.topics), and the rig's
frames from tf_static (replay.rosbag2.rig.build_rig)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration import PinholeCamera, RigidTransform
from replay.rosbag2.errors import Rosbag2Error
from replay.rosbag2.rig import CameraCalibration, TfEdge, build_rig
from replay.rosbag2.topics import load_topics_file, plan_topics

PC2, IMG, CIMG = (
    "sensor_msgs/msg/PointCloud2",
    "sensor_msgs/msg/Image",
    "sensor_msgs/msg/CompressedImage",
)
INFO, FIX = "sensor_msgs/msg/CameraInfo", "sensor_msgs/msg/NavSatFix"
TWIST, ODOM, TF = (
    "geometry_msgs/msg/TwistStamped",
    "nav_msgs/msg/Odometry",
    "tf2_msgs/msg/TFMessage",
)
BAG = {
    "/points": PC2,
    "/cam_l/image_raw": IMG,
    "/cam_l/image_raw/compressed": CIMG,
    "/cam_l/image_rect_color": IMG,
    "/cam_l/camera_info": INFO,
    "/cam_r/image_raw/compressed": CIMG,
    "/cam_r/camera_info": INFO,
    "/gps/fix": FIX,
    "/gps/vel": TWIST,
    "/odom": ODOM,
    "/tf": TF,
    "/tf_static": TF,
    "/rosout": "rcl_interfaces/msg/Log",
    "/custom": "my_msgs/msg/Foo",
}
KNOWN = frozenset(set(BAG.values()) - {"my_msgs/msg/Foo"})


def topics_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(text)
    return path


def test_mapping_by_type() -> None:
    plan = plan_topics(BAG, KNOWN, None, "bag")
    assert plan.lidar.topic == "/points"
    assert [(c.topic, c.name, c.info_topic) for c in plan.cameras] == [
        ("/cam_l/image_rect_color", "cam_l", "/cam_l/camera_info"),
        ("/cam_r/image_raw/compressed", "cam_r", "/cam_r/camera_info"),
    ]
    assert plan.gnss == "/gps/fix" and plan.velocity == ("/gps/vel", TWIST)
    assert plan.tf_static == ("/tf_static",)
    assert {t: why for t, _m, why in plan.skipped} == {
        "/cam_l/image_raw": "the camera /cam_l is imported from another topic",
        "/cam_l/image_raw/compressed": "the camera /cam_l is imported from another topic",
        "/custom": "message type unknown (no definition in the bag)",
        "/odom": "another velocity topic (/gps/vel) is used",
        "/rosout": "no conversion for this type",
        "/tf": "dynamic transforms are not part of the rig",
    }
    assert plan.streams["/points"] == "lidar/top"


def test_one_camera_is_front_with_the_only_camera_info() -> None:
    bag = {"/velodyne_points": PC2, "/image": IMG, "/camera/info": INFO}
    plan = plan_topics(bag, frozenset(bag.values()), None, "bag")
    assert [(c.stream, c.info_topic) for c in plan.cameras] == [("camera/front", "/camera/info")]
    assert plan.gnss is None and plan.velocity is None


def test_lidar_must_be_there_and_one(tmp_path: Path) -> None:
    with pytest.raises(Rosbag2Error, match=r"^bag: no lidar topic \(sensor_msgs/msg/PointCloud2\)"):
        plan_topics({"/image": IMG}, KNOWN, None, "bag")
    two = {**BAG, "/points2": PC2}
    with pytest.raises(Rosbag2Error, match=r"several PointCloud2 topics \(/points, /points2\)"):
        plan_topics(two, KNOWN, None, "bag")
    chosen = load_topics_file(topics_file(tmp_path, "topics:\n  /points2: lidar\n"))
    plan = plan_topics(two, KNOWN, chosen, "bag")
    assert plan.lidar.topic == "/points2"
    assert ("/points", PC2, "another lidar (/points2) is imported") in plan.skipped


def test_topics_file_overrides(tmp_path: Path) -> None:
    path = topics_file(
        tmp_path,
        "topics:\n"
        "  /points: {role: lidar, time_field: null}\n"
        "  cam_l/image_raw: {role: camera, name: front, rectified: true}\n"
        "  /cam_r/image_raw/compressed: skip\n"
        "  /odom: velocity\n"
        "vehicle_frame: /base_footprint\n",
    )
    plan = plan_topics(BAG, KNOWN, load_topics_file(path), "bag")
    assert plan.lidar.time_field is None
    assert [(c.topic, c.name, c.rectified) for c in plan.cameras] == [
        ("/cam_l/image_raw", "front", True)
    ]
    assert plan.velocity == ("/odom", ODOM)
    assert load_topics_file(path).vehicle_frame == "base_footprint"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("topics: [a\n", "--topics file is not valid YAML"),
        ("topics: " + "[" * 10_000 + "\n", "--topics file is not valid YAML (nests too deep)"),
        ("- a\n", "expected a mapping with `topics:`, got list"),
        ("topic: {}\n", "unknown key(s) ['topic']"),
        ("topics:\n  /points: radar\n", "topics./points.role: unknown role 'radar'"),
        ("topics:\n  /points: {role: lidar, name: x}\n", "unknown key(s) ['name'] for role lidar"),
        ("topics:\n  /a: {role: camera, name: 'a b'}\n", "name: expected a camera name"),
    ],
)
def test_bad_topics_files(tmp_path: Path, text: str, error: str) -> None:
    path = topics_file(tmp_path, text)
    with pytest.raises(Rosbag2Error) as e:
        load_topics_file(path)
    assert str(e.value).startswith(f"{path}: ")
    assert error in str(e.value) and "\n" not in str(e.value)


def test_binary_topics_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "topics.yaml"
    path.write_bytes(b"topics:\n\xff\xfe")
    with pytest.raises(Rosbag2Error) as e:
        load_topics_file(path)
    assert str(e.value) == f"{path}: not UTF-8 text (byte 0xff at offset 8)"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("topics:\n  /nope: lidar\n", "topics./nope: not in the bag bag (topics: "),
        ("topics:\n  /rosout: lidar\n", "topics./rosout: cannot convert rcl_interfaces/msg/Log to "
         "lidar (expects sensor_msgs/msg/PointCloud2)"),
        ("topics:\n  /custom: gnss\n",
         "bag: topic /custom: message type my_msgs/msg/Foo is unknown"),
        ("topics:\n  /cam_l/image_raw: {role: camera, camera_info: /gps/fix}\n",
         "camera_info: /gps/fix is a sensor_msgs/msg/NavSatFix, not a sensor_msgs/msg/CameraInfo"),
    ],
)  # fmt: skip
def test_topics_file_against_the_bag(tmp_path: Path, text: str, error: str) -> None:
    topics = load_topics_file(topics_file(tmp_path, text))
    with pytest.raises(Rosbag2Error) as e:
        plan_topics(BAG, KNOWN, topics, "bag")
    assert error in str(e.value)


def _edge(parent: str, child: str, x: float, yaw: float = 0.0) -> TfEdge:
    return TfEdge(parent, child, RigidTransform.from_yaw(yaw, (x, 0.0, 0.0)))


def _camera(frame_id: str) -> CameraCalibration:
    k = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    return CameraCalibration(frame_id, PinholeCamera(k, (), 640, 480), RigidTransform.identity())


def test_rig_hangs_from_base_link_and_renames_reserved_frames() -> None:
    tf = {
        "base_link": _edge("odom", "base_link", 100.0),  # above the vehicle: inverted
        "lidar": _edge("base_link", "lidar", 1.5, 0.1),  # a tf frame called like ours
        "cam": _edge("lidar", "cam", 0.2),
        "gps": _edge("base_link", "gps", -0.5),
        "far": _edge("elsewhere", "far", 1.0),
    }
    rig = build_rig(tf, lidar_frame="/lidar", cameras={"front": _camera("cam")},
                    gnss_frame="gps", vehicle_frame=None, source="bag")  # fmt: skip
    assert rig.parent("lidar") == "tf/lidar" and rig.parent("tf/lidar") == "vehicle"
    assert rig.parent("camera/front") == "cam" and rig.parent("odom") == "vehicle"
    np.testing.assert_allclose(
        rig.transform("vehicle", "camera/front").matrix,
        (
            RigidTransform.from_yaw(0.1, (1.5, 0, 0)) @ RigidTransform.from_yaw(0, (0.2, 0, 0))
        ).matrix,
    )
    np.testing.assert_allclose(rig.transform("vehicle", "odom").translation, [-100.0, 0, 0])
    assert rig.gnss_lever_arm_m is not None
    np.testing.assert_allclose(rig.gnss_lever_arm_m, [-0.5, 0, 0])
    assert rig.warnings == ("tf_static frames not connected to 'base_link' left out: far",)
    with pytest.raises(Rosbag2Error, match="camera front: its frame 'far' is not connected"):
        build_rig(tf, lidar_frame="lidar", cameras={"front": _camera("far")},
                  gnss_frame=None, vehicle_frame=None, source="bag")  # fmt: skip


def test_rig_of_looping_tf_frames_is_refused() -> None:
    """velo -> cam -> velo (a later tf_static reversing an edge): the tree took one of the
    two disagreeing paths without a word."""
    tf = {
        "velo": _edge("cam", "velo", 1.0),
        "cam": _edge("velo", "cam", 1.0),
        "gps": _edge("base_link", "gps", -0.5),
    }
    with pytest.raises(Rosbag2Error) as e:
        build_rig(tf, lidar_frame="velo", cameras={}, gnss_frame=None, vehicle_frame=None,
                  source="bag")  # fmt: skip
    assert str(e.value) == (
        "bag: tf_static frames loop (velo -> cam -> velo, each frame's parent after it): a "
        "frame has one parent"
    )


def test_rig_without_tf_is_the_lidar_frame() -> None:
    rig = build_rig({}, lidar_frame="velodyne", cameras={}, gnss_frame="gps",
                    vehicle_frame=None, source="bag")  # fmt: skip
    np.testing.assert_allclose(rig.transform("vehicle", "lidar").matrix, np.eye(4))
    assert rig.gnss_lever_arm_m is None and "no lever arm" in rig.warnings[0]
