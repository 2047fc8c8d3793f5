"""The node's inputs as a recorded drive has them: topics by message type, and each camera's
offset after its sweep as recorded. Used where no node config is given (`perception replay
DRIVE`, `perception bench DRIVE`), so a drive recorded with other topic names (the synthetic
drive's `lidar`, a vehicle's own) replays as recorded, not as the defaults name them."""

from __future__ import annotations

import bisect
import dataclasses
import statistics
from collections.abc import Iterable

from perception.config import NodeConfig
from perception.msgs.types import CameraFrame, GnssFix, LidarSweep, Message, RigMessage
from replay.errors import ReplayError

__all__ = ["config_for_messages"]

#: Sweeps whose cameras give the offsets: enough for a robust median, a fraction of a drive.
OFFSET_SWEEPS = 50


def config_for_messages(
    records: Iterable[tuple[str, Message]], base: NodeConfig, *, max_sweeps: int = OFFSET_SWEEPS
) -> NodeConfig:
    """`base` with its input topics taken from `records` ((topic, message) in log order: the
    lidar topic, the camera topics, GNSS and rig topics) and each camera's expected offset
    after the sweep stamp (`sync.camera_offsets_ms`) set to the median recorded one (a frame
    against the latest sweep stamped at or before it), over the first `max_sweeps` sweeps.

    Raises ReplayError: no lidar sweeps, sweeps on two topics, or no camera frames."""
    lidar_topic: str | None = None
    sweep_stamps: list[int] = []
    frames: dict[str, list[int]] = {}
    gnss = rig = None
    for topic, msg in records:
        if isinstance(msg, LidarSweep):
            if lidar_topic is not None and topic != lidar_topic:
                raise ReplayError(f"lidar sweeps on two topics ({lidar_topic}, {topic})")
            if len(sweep_stamps) >= max_sweeps:
                break
            lidar_topic = topic
            bisect.insort(sweep_stamps, msg.header.stamp_ns)
        elif isinstance(msg, CameraFrame):
            frames.setdefault(topic, []).append(msg.header.stamp_ns)
        elif isinstance(msg, GnssFix):
            gnss = gnss or topic
        elif isinstance(msg, RigMessage):
            rig = rig or topic
    if lidar_topic is None:
        raise ReplayError("no lidar sweeps")
    if not frames:
        raise ReplayError("no camera frames with the lidar sweeps")
    offsets_ms: dict[str, float] = {}
    for topic, stamps in frames.items():
        after = [
            stamp - sweep_stamps[i - 1]
            for stamp in stamps
            if (i := bisect.bisect_right(sweep_stamps, stamp)) > 0
        ]
        offsets_ms[topic] = round(statistics.median(after) / 1e6, 3) if after else 0.0
    inputs = dataclasses.replace(
        base.inputs,
        lidar_topic=lidar_topic,
        camera_topics=tuple(sorted(frames)),
        gnss_topic=gnss or base.inputs.gnss_topic,
        rig_topic=rig or base.inputs.rig_topic,
    )
    # The windows of cameras this drive lacks would name topics the config does not subscribe
    # (which the config refuses).
    windows_ms = {k: v for k, v in base.sync.camera_windows_ms.items() if k in frames}
    sync = dataclasses.replace(
        base.sync, camera_offsets_ms=offsets_ms, camera_windows_ms=windows_ms
    )
    return dataclasses.replace(base, inputs=inputs, sync=sync)
