"""Publishing recorded frames over ZeroMQ, paced like the live sensors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from perception.io.transport import Publisher
from replay.datasets.kitti_object import KittiObjectFolder

__all__ = ["play_kitti_object"]


def play_kitti_object(
    folder: KittiObjectFolder,
    publisher: Publisher,
    *,
    rate_hz: float = 10.0,
    loop: bool = False,
    stop: threading.Event | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> int:
    """Publish every frame (rig, camera, lidar) at `rate_hz`; returns the frames sent.

    Frames are stamped with the host time they are due, as a live sensor would stamp them, so
    the node's sensor-to-publish latency is meaningful. Each frame is read before it is due.
    """
    if rate_hz <= 0:
        raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
    period_ns = int(1e9 / rate_hz)
    stop = stop or threading.Event()
    sent = 0
    start_ns = time.time_ns() + period_ns // 2
    while not stop.is_set():
        for index in range(len(folder)):
            due_ns = start_ns + sent * period_ns
            messages = folder.frame_messages(index, due_ns)
            delay_s = (due_ns - time.time_ns()) / 1e9
            if delay_s > 0 and stop.wait(delay_s):
                return sent
            for msg in messages:
                publisher.send(msg)
            sent += 1
            if on_frame is not None:
                on_frame(index)
        if not loop:
            break
    return sent
