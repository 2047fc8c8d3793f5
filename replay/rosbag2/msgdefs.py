"""Message definitions the stock rosbags typestores lack: vision_msgs (ROS 2, 4.x) and
autoware_perception_msgs (autoware_msgs), for the detections export.

The texts are the packages' `.msg` files without their comments (vision_msgs 4.1.1, branch
`ros2`; autoware_msgs `autoware_perception_msgs/msg`): a bag stores the definition with each
topic, and a reader's message hash (RIHS01) is computed from the fields, so the fields and
their order must be exactly the packages' for the ROS tools to accept the messages.
"""

from __future__ import annotations

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

__all__ = [
    "AUTOWARE_DETECTED_OBJECTS",
    "AUTOWARE_PERCEPTION_MSGS",
    "VISION_DETECTION3D_ARRAY",
    "VISION_MSGS",
    "detections_typestore",
]

VISION_DETECTION3D_ARRAY = "vision_msgs/msg/Detection3DArray"
AUTOWARE_DETECTED_OBJECTS = "autoware_perception_msgs/msg/DetectedObjects"

VISION_MSGS: dict[str, str] = {
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/BoundingBox3D": "geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n",
    "vision_msgs/msg/Detection3D": (
        "std_msgs/Header header\n"
        "vision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox3D bbox\n"
        "string id\n"
    ),
    VISION_DETECTION3D_ARRAY: "std_msgs/Header header\nvision_msgs/Detection3D[] detections\n",
}

AUTOWARE_PERCEPTION_MSGS: dict[str, str] = {
    "autoware_perception_msgs/msg/ObjectClassification": (
        "uint8 UNKNOWN=0\nuint8 CAR=1\nuint8 TRUCK=2\nuint8 BUS=3\nuint8 TRAILER=4\n"
        "uint8 MOTORCYCLE=5\nuint8 BICYCLE=6\nuint8 PEDESTRIAN=7\nuint8 ANIMAL=8\n"
        "uint8 HAZARD=9\nuint8 OVER_DRIVABLE=10\nuint8 UNDER_DRIVABLE=11\n"
        "uint8 label\nfloat32 probability\n"
    ),
    "autoware_perception_msgs/msg/DetectedObjectKinematics": (
        "uint8 UNAVAILABLE=0\nuint8 SIGN_UNKNOWN=1\nuint8 AVAILABLE=2\n"
        "geometry_msgs/PoseWithCovariance pose_with_covariance\n"
        "bool has_position_covariance\n"
        "uint8 orientation_availability\n"
        "geometry_msgs/TwistWithCovariance twist_with_covariance\n"
        "bool has_twist\n"
        "bool has_twist_covariance\n"
    ),
    "autoware_perception_msgs/msg/Shape": (
        "uint8 BOUNDING_BOX=0\nuint8 CYLINDER=1\nuint8 POLYGON=2\n"
        "uint8 type\ngeometry_msgs/Polygon footprint\ngeometry_msgs/Vector3 dimensions\n"
    ),
    "autoware_perception_msgs/msg/DetectedObject": (
        "float32 existence_probability\n"
        "autoware_perception_msgs/ObjectClassification[] classification\n"
        "autoware_perception_msgs/DetectedObjectKinematics kinematics\n"
        "autoware_perception_msgs/Shape shape\n"
    ),
    AUTOWARE_DETECTED_OBJECTS: (
        "std_msgs/Header header\nautoware_perception_msgs/DetectedObject[] objects\n"
    ),
}


def detections_typestore() -> Typestore:
    """The stock ROS 2 typestore (rosbags' latest distribution) with vision_msgs and
    autoware_perception_msgs registered."""
    store = get_typestore(Stores.LATEST)
    types = {}
    for name, text in (VISION_MSGS | AUTOWARE_PERCEPTION_MSGS).items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store
