"""`perception view`: a running node's sensor topics and outputs over Foxglove WebSocket."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time

from app.common import check_reachable, load_node_config, stop_on_signals, warn_unresolved
from perception.errors import WireError
from perception.io.curve import curve_keys_for
from perception.io.transport import Subscriber
from perception.msgs import wire
from perception.node.view import FoxgloveView, ViewMessage, ViewTopics
from perception.ratelimit import RateLimitedLogger

__all__ = ["cmd_view"]

log = logging.getLogger("perception.view")

# Each of the two subscribers is waited on this long in turn.
_POLL_MS = 5
# Nothing received this long after the start is said once: a view of no node (or of endpoints
# something else serves) waited without a word, as if the node had nothing to show.
_QUIET_NOTE_S = 5.0


def cmd_view(args: argparse.Namespace) -> int:
    config = load_node_config(args.config)
    settings = config.view
    settings = dataclasses.replace(
        settings,
        foxglove=True,
        host=settings.host if args.host is None else args.host,
        port=settings.port if args.port is None else args.port,
    )
    inputs, outputs = config.inputs, config.outputs
    check_reachable([*inputs.endpoints, outputs.endpoint])
    warn_unresolved([*inputs.endpoints, outputs.endpoint], "perception view")
    sensor_topics = (*inputs.camera_topics, inputs.lidar_topic, inputs.gnss_topic, inputs.rig_topic)
    output_topics = (outputs.detections_topic, outputs.tracks_topic, outputs.diagnostics_topic)
    curve = curve_keys_for(config.security)
    stop = stop_on_signals()
    bad = RateLimitedLogger(log)
    received = undecodable = 0
    with (
        FoxgloveView(settings, ViewTopics.from_config(config), name="perception view") as view,
        Subscriber(inputs.endpoints, sensor_topics, limits=config.limits, curve=curve) as sensors,
        Subscriber([outputs.endpoint], output_topics, limits=config.limits, curve=curve) as node,
    ):
        print(
            f"perception view: serving {view.url} (Foxglove WebSocket); sensors from "
            f"{', '.join(sensors.endpoints)}, outputs from {node.endpoints[0]}",
            flush=True,
        )
        started = time.monotonic()
        noted = False
        while not stop.is_set():
            if not noted and received == 0 and time.monotonic() - started >= _QUIET_NOTE_S:
                noted = True
                print(
                    f"perception view: warning: nothing received in {_QUIET_NOTE_S:g} s from "
                    f"{', '.join(sensors.endpoints)} or {node.endpoints[0]}; is a node running "
                    "there (`perception run`, `perception play`)? Still waiting",
                    file=sys.stderr,
                    flush=True,
                )
            for sub in (sensors, node):
                frames = sub.recv(timeout_ms=_POLL_MS)
                if frames is None:
                    continue
                received += 1
                try:
                    topic, msg = wire.decode(frames, config.limits)
                except WireError as e:
                    undecodable += 1
                    bad.warning(f"decode:{e.stream}", f"dropped message: {e}")
                    continue
                # Per topic: a burst on one cannot push another's newest message out.
                view.offer(topic, ViewMessage(topic, msg))
        stats = view.stats
    print(
        f"perception view: stopped; {received} received, {undecodable} undecodable, "
        f"{stats.dropped} dropped by the view, {stats.sent} sent to clients",
        flush=True,
    )
    return 0
