"""ROS 2 bags in and out, with the pure-Python `rosbags` library (no ROS install).

- `import_rosbag2`: a bag (sqlite3 or mcap storage) -> a drive: point clouds, images,
  CameraInfo, NavSatFix (+ velocity) and tf_static, topics mapped by message type or by a
  `--topics` YAML file (replay.rosbag2.topics).
- `export_rosbag2`: the DetectionLists of a drive or replay run -> a bag of
  vision_msgs/Detection3DArray or autoware_perception_msgs/DetectedObjects.

docs/rosbag2.md describes the mapping, the YAML format, the conversions and the limits.
"""

from replay.rosbag2.errors import Rosbag2Error
from replay.rosbag2.exporter import ExportStats, export_rosbag2
from replay.rosbag2.importer import import_rosbag2

__all__ = ["ExportStats", "Rosbag2Error", "export_rosbag2", "import_rosbag2"]
