"""DetectionList -> vision_msgs/msg/Detection3DArray or
autoware_perception_msgs/msg/DetectedObjects (rosbags message objects).

Both keep the DetectionList's header: stamp (its sweep's, ns -> sec + nanosec) and frame_id
(the vehicle frame, `vehicle`). Per detection:

- vision_msgs `Detection3D`: one `ObjectHypothesisWithPose` (class_id = the label, score, the
  box's pose, zero covariance), `bbox.center` = the box centre and yaw as a quaternion about
  +z, `bbox.size` = (length, width, height) along the box's x, y, z; `id` empty (detections
  are not tracks).
- autoware `DetectedObject`: existence_probability = score, one classification (the label
  mapped by `AUTOWARE_LABELS`, probability = score), the pose (no covariance,
  orientation_availability SIGN_UNKNOWN: the node's yaw is that of the length axis, its
  sign not told apart), no twist, shape BOUNDING_BOX with dimensions (length, width,
  height).

What neither carries: the detection's sources, global position and camera box, and the
DetectionList's timings, latency, budget and degraded flags.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from rosbags.typesys.store import Typestore

from perception.msgs.types import Detection3D, DetectionList
from replay.rosbag2.msgdefs import AUTOWARE_DETECTED_OBJECTS, VISION_DETECTION3D_ARRAY

__all__ = [
    "AUTOWARE_LABELS",
    "NODE_LABELS",
    "to_autoware",
    "to_vision_msgs",
    "yaw_quaternion",
]

#: Node label -> autoware_perception_msgs/ObjectClassification label; others are UNKNOWN (0).
AUTOWARE_LABELS: Mapping[str, int] = {
    "Car": 1, "car": 1, "truck": 2, "Truck": 2, "Van": 1, "bus": 3, "Bus": 3, "trailer": 4,
    "motorbike": 5, "motorcycle": 5, "Cyclist": 6, "bicycle": 6, "Pedestrian": 7,
    "person": 7, "Person_sitting": 7,
}  # fmt: skip
#: ObjectClassification label -> the node's label (for reading an export back).
NODE_LABELS: Mapping[int, str] = {
    0: "unknown", 1: "Car", 2: "truck", 3: "bus", 4: "trailer", 5: "motorbike", 6: "Cyclist",
    7: "Pedestrian",
}  # fmt: skip
_SIGN_UNKNOWN = 1
_BOUNDING_BOX = 0


def yaw_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation by `yaw` (rad) about +z."""
    return 0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)


def _header(store: Typestore, dl: DetectionList) -> Any:
    t = store.types
    sec, nanosec = divmod(dl.header.stamp_ns, 1_000_000_000)
    stamp = t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
    return t["std_msgs/msg/Header"](stamp=stamp, frame_id=dl.header.frame_id)


def _pose(store: Typestore, det: Detection3D) -> Any:
    t = store.types
    x, y, z = (float(v) for v in det.center)
    qx, qy, qz, qw = yaw_quaternion(float(det.yaw))
    return t["geometry_msgs/msg/Pose"](
        position=t["geometry_msgs/msg/Point"](x=x, y=y, z=z),
        orientation=t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
    )


def _pose_with_covariance(store: Typestore, det: Detection3D) -> Any:
    return store.types["geometry_msgs/msg/PoseWithCovariance"](
        pose=_pose(store, det), covariance=np.zeros(36, dtype=np.float64)
    )


def _size(store: Typestore, det: Detection3D) -> Any:
    length, width, height = (float(v) for v in det.size)
    return store.types["geometry_msgs/msg/Vector3"](x=length, y=width, z=height)


def to_vision_msgs(store: Typestore, dl: DetectionList) -> Any:
    """`dl` as a vision_msgs/msg/Detection3DArray (see the module docstring); `store` has the
    vision_msgs types (replay.rosbag2.msgdefs.detections_typestore)."""
    t = store.types
    header = _header(store, dl)
    detections = [
        t["vision_msgs/msg/Detection3D"](
            header=header,
            results=[
                t["vision_msgs/msg/ObjectHypothesisWithPose"](
                    hypothesis=t["vision_msgs/msg/ObjectHypothesis"](
                        class_id=det.label, score=float(det.score)
                    ),
                    pose=_pose_with_covariance(store, det),
                )
            ],
            bbox=t["vision_msgs/msg/BoundingBox3D"](
                center=_pose(store, det), size=_size(store, det)
            ),
            id="",
        )
        for det in dl.detections
    ]
    return t[VISION_DETECTION3D_ARRAY](header=header, detections=detections)


def to_autoware(store: Typestore, dl: DetectionList) -> Any:
    """`dl` as an autoware_perception_msgs/msg/DetectedObjects (see the module docstring);
    `store` has the autoware types (replay.rosbag2.msgdefs.detections_typestore)."""
    t = store.types
    zero_twist = t["geometry_msgs/msg/TwistWithCovariance"](
        twist=t["geometry_msgs/msg/Twist"](
            linear=t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
            angular=t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
        ),
        covariance=np.zeros(36, dtype=np.float64),
    )
    objects = [
        t["autoware_perception_msgs/msg/DetectedObject"](
            existence_probability=float(det.score),
            classification=[
                t["autoware_perception_msgs/msg/ObjectClassification"](
                    label=AUTOWARE_LABELS.get(det.label, 0), probability=float(det.score)
                )
            ],
            kinematics=t["autoware_perception_msgs/msg/DetectedObjectKinematics"](
                pose_with_covariance=_pose_with_covariance(store, det),
                has_position_covariance=False,
                orientation_availability=_SIGN_UNKNOWN,
                twist_with_covariance=zero_twist,
                has_twist=False,
                has_twist_covariance=False,
            ),
            shape=t["autoware_perception_msgs/msg/Shape"](
                type=_BOUNDING_BOX,
                footprint=t["geometry_msgs/msg/Polygon"](points=[]),
                dimensions=_size(store, det),
            ),
        )
        for det in dl.detections
    ]
    return t[AUTOWARE_DETECTED_OBJECTS](header=_header(store, dl), objects=objects)
