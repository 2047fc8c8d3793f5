"""`perception record`: ZeroMQ topics into an MCAP drive."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from app.common import (
    check_reachable,
    check_topic_lengths,
    endpoints_for_topic,
    load_node_config,
    stop_on_signals,
    warn_unresolved,
)
from perception.config import NodeConfig
from perception.errors import PerceptionError
from perception.io.curve import curve_keys_for
from perception.io.runtime import resolve_endpoint
from replay.drive import check_not_being_written
from replay.output import OutputError, atomic_output, check_output_file
from replay.recorder import Recorder, RecorderStats

__all__ = ["cmd_record"]


@contextlib.contextmanager
def _drive_path(out: Path, overwrite: bool) -> Iterator[Path]:
    """Where to record `out`. A new drive is written in place, so a recorder that is killed
    (power loss) leaves a readable drive under its name. An existing one is replaced only with
    `overwrite`, and then only when the new recording is finished (until then it is written
    beside it)."""
    check_output_file(out, "--out")
    if not out.exists():
        yield out
        return
    # Replaced, the recorder writing it would go on writing a file no name leads to.
    check_not_being_written(out)
    if not overwrite:
        raise OutputError(f"{out}: exists; give --overwrite to replace it, or another --out")
    with atomic_output(out, "--out") as tmp:
        yield tmp


def cmd_record(args: argparse.Namespace) -> int:
    config = load_node_config(args.config)
    if any(not t.strip() for t in args.topics):
        # As a ZeroMQ subscription '' is every topic's prefix: not what an empty name meant.
        raise PerceptionError(f"topics {args.topics}: a topic must not be empty")
    inputs = config.inputs
    topics = args.topics or [
        inputs.lidar_topic,
        *inputs.camera_topics,
        inputs.gnss_topic,
        inputs.rig_topic,
    ]
    check_topic_lengths(topics)
    # Each topic where it is published (sensors vs the node's outputs) unless --endpoint says.
    where = {t: list(args.endpoint or endpoints_for_topic(t, config)) for t in topics}
    check_reachable(_listened(where), "--endpoint" if args.endpoint else "")
    out = Path(args.out).expanduser()
    if out.suffix != ".mcap":
        # A drive under another name is likely a typo that would replace some other file.
        raise OutputError(f"{out}: --out must end in .mcap (it is an MCAP drive)")
    # As given: a trailing / (a folder) is lost in the Path.
    check_output_file(args.out, "--out")
    try:
        stats = _record(args, config, where, out)
    except _DeletedError as e:
        stats = e.stats
    _report(stats, out)
    if stats.error is not None:
        print(f"perception record: error: {stats.error}", file=sys.stderr, flush=True)
        return 1
    return 0


class _DeletedError(Exception):
    """The drive being written was deleted (or its folder): nothing to put in place of an
    --overwrite target."""

    def __init__(self, stats: RecorderStats) -> None:
        super().__init__(stats.error)
        self.stats = stats


def _record(
    args: argparse.Namespace, config: NodeConfig, where: dict[str, list[str]], out: Path
) -> RecorderStats:
    """Records the topics (`where`: each one's endpoints) into `out` until a signal or a
    failure; the recorder's stats."""
    with _drive_path(out, args.overwrite) as path:
        stop = stop_on_signals()
        recorder = Recorder(
            list(config.inputs.endpoints),
            list(where),
            path,
            queue_size=args.queue_size,
            compression=None if args.compression == "none" else args.compression,
            stop_timeout_s=args.stop_timeout,
            topic_endpoints=where,
            curve=curve_keys_for(config.security),
            # As the node it records for receives them: a camera above the default limits,
            # served by a node whose limits were raised, was counted undecodable and lost.
            limits=config.limits,
        )
        by_endpoint: dict[str, list[str]] = {}
        for topic, endpoints in where.items():
            for endpoint in endpoints:
                by_endpoint.setdefault(endpoint, []).append(topic)
        listening = "; ".join(
            f"{', '.join(t)} at {resolve_endpoint(e)}" for e, t in by_endpoint.items()
        )
        print(f"perception record: recording {listening} to {out}", flush=True)
        warn_unresolved(_listened(where), "perception record")
        # A recording stopped by a write failure still replaces an --overwrite target: it holds
        # what was recorded, which the old drive does not.
        stats = recorder.run(stop)
        if stats.error is not None and not os.path.lexists(path):
            raise _DeletedError(stats)
    return stats


def _listened(where: dict[str, list[str]]) -> list[str]:
    """Every endpoint listened to, once each, in order."""
    return list(dict.fromkeys(e for es in where.values() for e in es))


def _report(stats: RecorderStats, out: Path) -> None:
    print(
        f"perception record: {stats.received} received, {stats.written} written, "
        f"{stats.dropped} dropped (queue full or left at the stop), {stats.undecodable} "
        f"undecodable, {stats.failed} failed, {stats.bytes / 1e6:.1f} MB",
        flush=True,
    )
    if stats.arrived:
        print(
            "perception record: by topic: "
            + ", ".join(f"{topic} {count}" for topic, count in stats.arrived),
            flush=True,
        )
    silent = [topic for topic, count in stats.arrived if count == 0]
    if silent and stats.received:
        # Others arrived: the likeliest cause is a topic published under another name, unless
        # messages arrived that could not be decoded (whose topic is not known to be theirs).
        undecodable = (
            f"{stats.undecodable} messages could not be decoded (the warnings name their "
            "streams), or is it published under another name?"
            if stats.undecodable
            else "is it published under another name?"
        )
        print(
            f"perception record: nothing decodable arrived on {', '.join(silent)}; "
            f"{undecodable} (`perception echo TOPIC` shows what arrives on one)",
            flush=True,
        )
    if stats.received == 0 and stats.error is None:
        # Not an error (nothing may have been published), but the usual cause is worth a line.
        print(
            f"perception record: nothing arrived; is anything publishing on those endpoints? "
            f"({os.fspath(out)} holds an empty drive)",
            flush=True,
        )
