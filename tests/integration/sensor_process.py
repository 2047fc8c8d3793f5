"""A sensor as a process of its own, for tests that kill and restart one: publishes some topics
of KITTI object frames (rig, camera/front, lidar/top) at a fixed rate on an endpoint it binds.

Frames are due on a grid of host time shared by every such process (multiples of the period),
and stamped with their due time, so a camera process and a lidar process started apart still
send matching stamps; the frame index is the due time over the period, modulo the folder. The
first due time published is printed (`first <ns>`), then the process runs until killed.

    python -m tests.integration.sensor_process KITTI_DIR ENDPOINT TOPIC... [--rate HZ]
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from pathlib import Path

from perception.io.transport import Publisher
from replay.datasets.kitti_object import KittiObjectFolder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kitti_dir", type=Path)
    parser.add_argument("endpoint")
    parser.add_argument("topics", nargs="+")
    parser.add_argument("--rate", type=float, default=10.0)
    args = parser.parse_args()
    folder = KittiObjectFolder(args.kitti_dir)
    period_ns = round(1e9 / args.rate)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Publisher(args.endpoint, bind=True, hwm=1000) as pub:
        first = True
        due_ns = (time.time_ns() // period_ns + 1) * period_ns
        while not stop.is_set():
            index = (due_ns // period_ns) % len(folder)
            messages = [
                m for m in folder.frame_messages(index, due_ns) if m.header.stream in args.topics
            ]
            delay_s = (due_ns - time.time_ns()) / 1e9
            if delay_s > 0 and stop.wait(delay_s):
                break
            for msg in messages:
                pub.send(msg)
            if first:
                print(f"first {due_ns}", flush=True)
                first = False
            due_ns += period_ns


if __name__ == "__main__":
    main()
