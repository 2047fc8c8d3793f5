"""`perception echo`: what arrives on a topic, one line per message."""

from __future__ import annotations

import argparse
import sys

from app.common import endpoints_for_topic, load_node_config, stop_on_signals
from perception.errors import WireError
from perception.io.transport import Subscriber
from perception.msgs import wire
from perception.msgs.types import CameraFrame, DetectionList, GnssFix, LidarSweep, RigMessage

__all__ = ["cmd_echo"]


def cmd_echo(args: argparse.Namespace) -> int:
    config = load_node_config(args.config)
    # The topic where it is published: the node's outputs, or the sensors' endpoint.
    endpoints = [args.endpoint] if args.endpoint else list(endpoints_for_topic(args.topic, config))
    stop = stop_on_signals()
    count = 0
    with Subscriber(endpoints, [args.topic]) as sub:
        while not stop.is_set() and (args.count <= 0 or count < args.count):
            frames = sub.recv(timeout_ms=100)
            if frames is None:
                continue
            count += 1
            if len(frames) == 2 and bytes(frames[1].buffer[:1]) == b"{":
                print(f"{args.topic}: {bytes(frames[1].buffer).decode()}", flush=True)
                continue
            try:
                topic, msg = wire.decode(frames)
            except WireError as e:
                print(f"{args.topic}: undecodable: {e}", flush=True)
                continue
            h = getattr(msg, "header", None)
            head = f"{topic} seq={h.seq} stamp_ns={h.stamp_ns}" if h else topic
            if isinstance(msg, DetectionList):
                ms = {k: round(v / 1e6, 2) for k, v in msg.timings_ns.items()}
                print(f"{head} latency_ms={msg.latency_ns / 1e6:.1f} timings_ms={ms}")
                for d in msg.detections:
                    x, y, z = d.center
                    print(
                        f"  {d.label:<12} {d.score:.2f} center=({x:.2f}, {y:.2f}, {z:.2f}) "
                        f"yaw={d.yaw:+.2f}"
                    )
            elif isinstance(msg, LidarSweep):
                print(f"{head} points={msg.points.shape[0]}")
            elif isinstance(msg, CameraFrame):
                shape = msg.image.shape if msg.image is not None else msg.encoding
                print(f"{head} image={shape}")
            elif isinstance(msg, GnssFix):
                print(f"{head} lat={msg.latitude_deg:.7f} lon={msg.longitude_deg:.7f}")
            elif isinstance(msg, RigMessage):
                print(f"{head} rig cameras={sorted(msg.rig.get('cameras', {}))}")
            sys.stdout.flush()
    return 0
