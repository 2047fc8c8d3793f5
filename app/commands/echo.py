"""`perception echo`: what arrives on a topic, one summary line (or JSON document) per message."""

from __future__ import annotations

import argparse
import sys

from app.common import (
    check_reachable,
    check_topic_lengths,
    endpoints_for_topic,
    load_node_config,
    stop_on_signals,
    warn_unresolved,
)
from perception.errors import PerceptionError, WireError
from perception.io.curve import curve_keys_for
from perception.io.transport import Subscriber
from perception.msgs import wire
from perception.msgs.jsonl import to_json
from perception.msgs.types import (
    CameraFrame,
    DetectionList,
    Diagnostics,
    GnssFix,
    LidarSweep,
    Message,
    RigMessage,
)

__all__ = ["cmd_echo"]


def cmd_echo(args: argparse.Namespace) -> int:
    config = load_node_config(args.config)
    if not args.topic.strip():
        # As a ZeroMQ subscription '' is every topic's prefix: not what an empty name meant.
        raise PerceptionError(f"topic {args.topic!r}: a topic must not be empty")
    check_topic_lengths([args.topic])
    # The topic where it is published: the node's outputs, or the sensors' endpoint.
    endpoints = [args.endpoint] if args.endpoint else list(endpoints_for_topic(args.topic, config))
    check_reachable(endpoints, "--endpoint" if args.endpoint else "")
    warn_unresolved(endpoints, "perception echo")
    stop = stop_on_signals()
    count = 0

    def refused(error: WireError) -> None:
        # Refused while receiving (too many frames or bytes): a message all the same.
        print(f"{args.topic}: refused: {error}", flush=True)

    # Held to the config's limits, as the node is: a camera above the default 10 MP, on a rig
    # whose node has them raised, was "undecodable" here.
    with Subscriber(
        endpoints,
        [args.topic],
        curve=curve_keys_for(config.security),
        on_refused=refused,
        limits=config.limits,
    ) as sub:
        while not stop.is_set() and (args.count <= 0 or count < args.count):
            frames = sub.recv(timeout_ms=100)
            if frames is None:
                continue
            count += 1
            try:
                topic, msg = wire.decode(frames, config.limits)
            except WireError as e:
                print(f"{args.topic}: undecodable: {e}", flush=True)
                continue
            if args.json:
                print(to_json(msg, array_data=False))
            else:
                print("\n".join(_summary(topic, msg)))
            sys.stdout.flush()
    return 0


def _summary(topic: str, msg: Message) -> list[str]:
    """One line about `msg` (and one per detection of a DetectionList)."""
    h = msg.header
    head = f"{topic} seq={h.seq} stamp_ns={h.stamp_ns}"
    if isinstance(msg, DetectionList):
        ms = {k: round(v / 1e6, 2) for k, v in msg.timings_ns.items()}
        lines = [f"{head} latency_ms={msg.latency_ns / 1e6:.1f} timings_ms={ms}"]
        for d in msg.detections:
            x, y, z = d.center
            lines.append(
                f"  {d.label:<12} {d.score:.2f} center=({x:.2f}, {y:.2f}, {z:.2f}) yaw={d.yaw:+.2f}"
            )
        return lines
    if isinstance(msg, Diagnostics):
        notes = f" notes={list(msg.notes)}" if msg.notes else ""
        sensors = " ".join(
            f"{s.stream}={'alive' if s.alive else 'dead'}@{s.rate_hz:.1f}Hz" for s in msg.sensors
        )
        return [
            f"{head} inputs={msg.status} {sensors} counters={msg.counters} sync={msg.sync}{notes}"
        ]
    if isinstance(msg, LidarSweep):
        return [f"{head} points={msg.points.shape[0]}"]
    if isinstance(msg, CameraFrame):
        shape = msg.image.shape if msg.image is not None else msg.encoding
        return [f"{head} image={shape}"]
    if isinstance(msg, GnssFix):
        return [f"{head} lat={msg.latitude_deg:.7f} lon={msg.longitude_deg:.7f}"]
    if isinstance(msg, RigMessage):
        return [f"{head} rig cameras={sorted(msg.rig.get('cameras', {}))}"]
    return [head]
