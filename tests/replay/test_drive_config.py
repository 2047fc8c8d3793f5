"""replay.drive_config: a config for a drive's own topics."""

from __future__ import annotations

import numpy as np

from perception.config import NodeConfig, SyncConfig, parse_config
from perception.msgs.types import CameraFrame, Header, LidarSweep, Message
from replay.drive_config import config_for_messages

MS = 1_000_000


def test_windows_of_cameras_the_drive_lacks_are_dropped() -> None:
    # A base config's window for a camera the drive does not have named a topic the new
    # config does not subscribe, which the config refuses (`bench` parses the result).
    base = NodeConfig(sync=SyncConfig(camera_windows_ms={"camera/front": 20.0}))
    records: list[tuple[str, Message]] = [
        ("lidar", LidarSweep(Header("lidar", 0, 0, "lidar"), np.zeros((3, 4), np.float32))),
        (
            "cam0",
            CameraFrame(Header("cam0", 0, 62 * MS, "cam0"), image=np.zeros((4, 4, 3), np.uint8)),
        ),
    ]
    config = config_for_messages(records, base)
    assert config.inputs.camera_topics == ("cam0",)
    assert config.sync.camera_offsets_ms == {"cam0": 62.0}
    assert config.sync.camera_windows_ms == {}
    kept = config_for_messages(records, NodeConfig(sync=SyncConfig(camera_windows_ms={"cam0": 9})))
    assert kept.sync.camera_windows_ms == {"cam0": 9}
    doc = {
        "inputs": {"lidar_topic": "lidar", "camera_topics": list(config.inputs.camera_topics)},
        "sync": {
            "camera_offsets_ms": config.sync.camera_offsets_ms,
            "camera_windows_ms": config.sync.camera_windows_ms,
        },
    }
    parse_config(doc)
