"""Publishing a recorded drive over ZeroMQ, paced by its recorded receive times."""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Sequence

from perception.io.transport import Publisher
from perception.msgs.types import Message
from replay.drive import DriveReader

__all__ = ["play_drive"]

log = logging.getLogger(__name__)


def _restamped(msg: Message, shift_ns: int) -> Message:
    header = dataclasses.replace(msg.header, stamp_ns=msg.header.stamp_ns + shift_ns)
    return dataclasses.replace(msg, header=header)


def play_drive(
    reader: DriveReader,
    publisher: Publisher,
    *,
    speed: float = 1.0,
    loop: bool = False,
    start_s: float = 0.0,
    topics: Sequence[str] | None = None,
    stop: threading.Event | None = None,
    restamp: bool = False,
) -> int:
    """Publish the drive's messages on their recorded topics; returns the messages sent.

    Each message is sent when the time since the first one (host monotonic clock) reaches its
    recorded log-time offset divided by `speed`; `speed` <= 0 or infinite sends as fast as
    possible. `start_s`: seconds into the drive (from its first log time) to start at.
    `topics`: only these topics (default all). `loop`: start over at the end until `stop` is set.
    `restamp`: shift every sensor stamp by (host time at the start of each pass - the drive's
    first log time), so a live node sees current stamps (and loops do not repeat stamps);
    otherwise the recorded stamps are sent unchanged.

    Raises:
        ValueError: `start_s` is negative or not finite.
        ReplayError: the drive cannot be read.
    """
    if not math.isfinite(start_s) or start_s < 0:
        raise ValueError(f"start_s must be a finite number >= 0, got {start_s}")
    paced = math.isfinite(speed) and speed > 0
    stop = stop or threading.Event()
    first_ns = reader.start_ns
    if first_ns is None:
        log.warning("%s: the drive has no messages", reader.path)
        return 0
    begin_ns = first_ns + round(start_s * 1e9)
    sent = 0
    while not stop.is_set():
        wall0 = time.monotonic_ns()
        shift_ns = time.time_ns() - first_ns if restamp else 0
        log0: int | None = None
        for rec in reader.messages(topics=topics, start_ns=begin_ns):
            if stop.is_set():
                return sent
            if log0 is None:
                log0 = rec.log_time_ns
            if paced:
                due = wall0 + (rec.log_time_ns - log0) / speed
                delay_s = (due - time.monotonic_ns()) / 1e9
                if delay_s > 0 and stop.wait(delay_s):
                    return sent
            msg = _restamped(rec.message, shift_ns) if restamp else rec.message
            publisher.send(msg, rec.topic)
            sent += 1
        if not loop or log0 is None:
            break
    return sent
