"""`perception play`: a drive or a KITTI object folder published over ZeroMQ."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

from app.common import (
    StopEvent,
    check_reachable,
    is_output_topic,
    load_node_config,
    not_for,
    split_source,
    stop_on_signals,
)
from perception.config import NodeConfig
from perception.errors import PerceptionError
from perception.io.curve import curve_keys_for
from perception.io.transport import Publisher
from replay.datasets.kitti_object import KittiObjectFolder
from replay.drive import DriveReader
from replay.mcap_player import (
    OUTPUT_TYPES,
    DriveContents,
    PlayStats,
    drive_contents,
    play_drive,
)
from replay.player import play_kitti_object

__all__ = ["cmd_play"]

#: What only a drive's playing takes (a KITTI folder has no recorded time or topics).
_DRIVE_OPTIONS = ("--speed", "--start", "--topics", "--restamp")


def _routes(
    contents: DriveContents, topics: list[str], config: NodeConfig, endpoint: str | None
) -> dict[str, str]:
    """topic -> the endpoint it is published on: `endpoint` for all when given; else the
    node's outputs endpoint for what the node publishes (detections, diagnostics: by type, or
    by the config's topic names) and the sensors endpoint for the rest."""
    sensors = config.inputs.endpoints[0]
    routes = {}
    for topic in topics:
        output = contents.types.get(topic) in OUTPUT_TYPES or is_output_topic(topic, config)
        routes[topic] = endpoint or (config.outputs.endpoint if output else sensors)
    return routes


def _check_drive(reader: DriveReader, args: argparse.Namespace) -> tuple[DriveContents, list[str]]:
    contents = drive_contents(reader)
    if not contents.types:
        raise PerceptionError(f"{reader.path}: the drive holds no messages")
    topics = list(args.topics or sorted(contents.types))
    missing = [t for t in topics if t not in contents.types]
    if missing:
        raise PerceptionError(
            f"{reader.path}: no topic {', '.join(missing)} in the drive "
            f"(it holds: {contents.describe()})"
        )
    if args.start * 1e9 > (contents.end_ns or 0) - (contents.start_ns or 0):
        raise PerceptionError(
            f"{reader.path}: --start {args.start:g} s is past the end of the drive "
            f"(it lasts {contents.duration_s:.2f} s)"
        )
    if args.loop and args.speed > 0 and all(contents.counts[t] < 2 for t in topics):
        # Passes are a period of the drive apart; with none, a one-message drive was sent
        # back to back, thousands a second (play_drive refuses it too, after a pass).
        raise PerceptionError(
            f"{reader.path}: --loop: the drive holds one message per topic played "
            f"({', '.join(topics)}), so it has no period to repeat them at; play it without "
            "--loop"
        )
    return contents, topics


def cmd_play(args: argparse.Namespace) -> int:
    config = load_node_config(args.config)
    curve = curve_keys_for(config.security)
    kind, path = split_source([args.source, *([args.dir] if args.dir else [])], "play")
    if kind == "kitti-object":
        not_for(args, "a KITTI object folder (played at --rate)", _DRIVE_OPTIONS)
        folder = KittiObjectFolder(path)
        endpoint = args.endpoint or config.inputs.endpoints[0]
        check_reachable([endpoint], _endpoint_option(args))
        stop = stop_on_signals()
        with Publisher(endpoint, bind=True, hwm=args.hwm, curve=curve) as publisher:
            bound = _say_bound([publisher])[0]
            if args.wait > 0:
                # PUB/SUB drops what is sent before a subscriber's subscription arrives.
                stop.wait(args.wait)
            stats = play_kitti_object(
                folder, publisher, rate_hz=args.rate, loop=args.loop, stop=stop
            )
            # Let ZeroMQ flush the last frames before the socket closes.
            time.sleep(0.2)
        print(
            f"perception play: {stats.sent} frames published on {bound}{_skipped(stats)}",
            flush=True,
        )
        return _ended(stop, args.loop)

    not_for(args, "a drive (paced by its recorded time: --speed)", ("--rate",))
    reader = DriveReader(path)
    contents, topics = _check_drive(reader, args)
    routes = _routes(contents, topics, config, args.endpoint)
    check_reachable(list(dict.fromkeys(routes.values())), _endpoint_option(args))
    stop = stop_on_signals()
    with contextlib.ExitStack() as stack:
        publishers = {
            e: stack.enter_context(Publisher(e, bind=True, hwm=args.hwm, curve=curve))
            for e in dict.fromkeys(routes.values())
        }
        bound_at = dict(zip(publishers, _say_bound(list(publishers.values())), strict=True))
        if args.wait > 0:
            stop.wait(args.wait)
        first = publishers[next(iter(publishers))]
        stats = play_drive(
            reader,
            first,
            speed=args.speed,
            loop=args.loop,
            start_s=args.start,
            topics=topics,
            stop=stop,
            restamp=args.restamp,
            route={t: publishers[e] for t, e in routes.items()},
        )
        time.sleep(0.2)
    where = "; ".join(
        f"{', '.join(t for t, e in routes.items() if e == endpoint)} on {bound_at[endpoint]}"
        for endpoint in publishers
    )
    print(
        f"perception play: {stats.sent} messages published ({where}){_skipped(stats)}", flush=True
    )
    return _ended(stop, args.loop)


def _ended(stop: StopEvent, loop: bool) -> int:
    """The exit code: 0, or 128 + the signal that cut a single pass short. A script took a
    Ctrl-C'd play (exit 0) for the whole drive published; with --loop a signal is how play
    stops, so it ends one cleanly."""
    if stop.signum is None or loop:
        return 0
    print(f"perception play: {stop.how} before the end of the pass", file=sys.stderr, flush=True)
    return 128 + stop.signum


def _endpoint_option(args: argparse.Namespace) -> str:
    """Where the endpoints come from, for a message: --endpoint, or the config (unnamed)."""
    return "--endpoint" if args.endpoint else ""


def _say_bound(publishers: list[Publisher]) -> list[str]:
    """Each publisher's endpoint as bound, said at once where it was not given whole (the port
    chosen for `tcp://host:*` or `:0`: subscribers need it while the drive plays)."""
    bound = [p.last_endpoint for p in publishers]
    for publisher, endpoint in zip(publishers, bound, strict=True):
        if endpoint != publisher.endpoint:
            print(f"perception play: {publisher.endpoint} bound as {endpoint}", flush=True)
    return bound


def _skipped(stats: PlayStats) -> str:
    """`"; 2 unreadable, 1 unpublishable (skipped)"`, or nothing when nothing was skipped."""
    if not stats.unreadable and not stats.unpublishable:
        return ""
    return f"; {stats.unreadable} unreadable, {stats.unpublishable} unpublishable (skipped)"
