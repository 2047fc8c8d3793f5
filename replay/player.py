"""Publishing recorded frames over ZeroMQ, paced like the live sensors."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from perception.io.transport import Publisher
from perception.msgs import wire
from perception.ratelimit import RateLimitedLogger
from replay.datasets.kitti_object import KittiObjectFolder
from replay.errors import ReplayError
from replay.mcap_player import PlayStats

__all__ = ["play_kitti_object"]

log = logging.getLogger(__name__)


def play_kitti_object(
    folder: KittiObjectFolder,
    publisher: Publisher,
    *,
    rate_hz: float = 10.0,
    loop: bool = False,
    stop: threading.Event | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> PlayStats:
    """Publish every frame (rig, camera, lidar) at `rate_hz`; returns the frames sent
    (`sent`), the frames that could not be read (`unreadable`: a broken scan, image or calib
    file; skipped) and the messages that could not be encoded (`unpublishable`; skipped, the
    rest of their frame is sent). Skips are logged at a bounded rate.

    Frames are stamped with the host time they are due, as a live sensor would stamp them, so
    the node's sensor-to-publish latency is meaningful. Each frame is read before it is due.

    Raises:
        ValueError: `rate_hz` is not positive.
        ReplayError: a whole pass over the folder read no frame (nothing to play).
        TransportError: the socket failed (every later send would fail too).
    """
    if rate_hz <= 0:
        raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
    period_ns = int(1e9 / rate_hz)
    stop = stop or threading.Event()
    bad = RateLimitedLogger(log)
    sent = unreadable = unpublishable = 0
    start_ns = time.time_ns() + period_ns // 2
    while not stop.is_set():
        sent_before = sent
        for index in range(len(folder)):
            due_ns = start_ns + sent * period_ns
            try:
                messages = folder.frame_messages(index, due_ns)
            except Exception as e:  # one broken frame costs that frame only
                unreadable += 1
                bad.warning("unreadable", f"{folder.root}: frame {index} skipped: {e}")
                continue
            frames = []
            for msg in messages:
                try:
                    frames.append(wire.encode(msg))
                except Exception as e:  # the frame's other messages still go
                    unpublishable += 1
                    bad.warning(
                        f"unpublishable:{msg.header.stream}",
                        f"{folder.root}: frame {index}: {msg.header.stream} not published: {e}",
                    )
            if not frames:
                continue
            delay_s = (due_ns - time.time_ns()) / 1e9
            if delay_s > 0 and stop.wait(delay_s):
                return PlayStats(sent, unreadable, unpublishable)
            for message_frames in frames:
                publisher.send_frames(message_frames)
            sent += 1
            if on_frame is not None:
                on_frame(index)
        if sent == sent_before and not stop.is_set():
            # Looping over a folder whose frames all fail would spin silently.
            raise ReplayError(
                f"{folder.root}: none of its {len(folder)} frames could be read or published"
            )
        if not loop:
            break
    return PlayStats(sent, unreadable, unpublishable)
