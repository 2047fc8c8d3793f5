"""Detections -> ROS 2 bag (`perception export rosbag2 DRIVE_OR_RUN --out BAG`).

The source is a drive (`.mcap`) holding DetectionLists, each exported on `/<its topic>` at
its log time, or a replay run (`.jsonl`, one DetectionList per line), each on
`/<its stream>` at its sweep stamp (a run records no receive times). Messages
are vision_msgs/msg/Detection3DArray, or autoware_perception_msgs/msg/DetectedObjects
(replay.rosbag2.detections), in a rosbag2 (metadata version 9) of mcap or sqlite3 storage.
A source holding one frame twice on a topic (one `header.seq` or stamp again: runs
concatenated) is refused, as `show` and `eval` refuse such a run.

The bag is written in a hidden folder beside `out` and moved into place only when complete;
an existing `out` is never replaced (a bag is a folder: remove it first).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rosbags.rosbag2 import StoragePlugin, Writer

from calibration.errors import not_a_file
from perception.errors import PerceptionError
from perception.msgs.jsonl import read_jsonl_lines
from perception.msgs.types import DetectionList
from replay.drive import DriveReader
from replay.errors import ReplayError
from replay.mcap_player import Skipped
from replay.output import OutputError, place_new
from replay.rosbag2.detections import to_autoware, to_vision_msgs
from replay.rosbag2.errors import Rosbag2Error
from replay.rosbag2.msgdefs import (
    AUTOWARE_DETECTED_OBJECTS,
    VISION_DETECTION3D_ARRAY,
    detections_typestore,
)
from replay.runs import check_one_per_frame

__all__ = [
    "MSGS",
    "ROS_TOPIC_MAX_CHARS",
    "STORAGES",
    "ExportProgress",
    "ExportStats",
    "export_rosbag2",
]

#: --msgs choices -> the ROS message type written.
MSGS = {"vision_msgs": VISION_DETECTION3D_ARRAY, "autoware": AUTOWARE_DETECTED_OBJECTS}
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
log = logging.getLogger(__name__)
_TOPIC_CHARS = re.compile(r"[^A-Za-z0-9_/]")
#: rmw's RMW_TOPIC_MAX_NAME_LENGTH: the characters of a fully qualified topic name (its
#: leading / included), 255 less 8 that DDS implementations keep for their prefixes (`rt/`).
#: rcl refuses a longer name, so `ros2 bag play` could not publish the topic.
ROS_TOPIC_MAX_CHARS = 255 - 8

#: progress(DetectionLists written, DetectionLists in all).
ExportProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class ExportStats:
    """What an export wrote: the bag folder, the message type, messages per ROS topic, the
    detections in all, the storage format and the wall time (s); `unreadable`: messages of a
    drive that could not be read (a damaged record or chunk), skipped."""

    path: Path
    msgtype: str
    messages: dict[str, int]
    detections: int
    storage: str
    wall_s: float
    unreadable: int = 0


def _ros_topic(name: str) -> str:
    """A drive topic or stream as a valid ROS 2 topic name: tokens of letters, digits and _,
    none empty (`a//b` and `/` are names `ros2 bag play` refuses) nor starting with a digit."""
    tokens = [_TOPIC_CHARS.sub("_", t) for t in name.split("/") if t]
    return "/" + "/".join(f"_{t}" if t[0].isdigit() else t for t in tokens or ["_"])


class _Topics:
    """Drive topics or streams -> ROS 2 topics, refusing two that become one (their lists
    were merged on one topic, or refused as one frame twice) and one longer than ROS 2 takes
    (exported as it was, a bag no ROS 2 node could play)."""

    def __init__(self, source: Path) -> None:
        self._source = source
        self._names: dict[str, str] = {}
        self._topics: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _ros_topic(name)
            if len(topic) > ROS_TOPIC_MAX_CHARS:
                raise Rosbag2Error(
                    f"{self._source}: {name!r} becomes a ROS 2 topic of {len(topic)} "
                    f"characters; ROS 2 takes at most {ROS_TOPIC_MAX_CHARS} "
                    "(RMW_TOPIC_MAX_NAME_LENGTH)"
                )
            other = self._names.setdefault(topic, name)
            if other != name:
                raise Rosbag2Error(
                    f"{self._source}: {other!r} and {name!r} both become the ROS 2 topic "
                    f"{topic} (letters, digits and _ only)"
                )
        return topic


_Item = tuple[str, int, DetectionList]  # (ROS topic, receive time ns, the list)


def _drive_lists(source: Path, on_error: Callable[[ReplayError], None]) -> list[_Item]:
    # DetectionLists are small: held in memory, so the progress bar knows the total.
    topics = _Topics(source)
    return [
        (topics(rec.topic), rec.log_time_ns, rec.message)
        for rec in DriveReader(source).messages(on_error=on_error)
        if isinstance(rec.message, DetectionList)
    ]


def _run_lists(source: Path) -> tuple[list[_Item], list[int]]:
    """The run's items and the line each DetectionList is on."""
    numbered = list(read_jsonl_lines(source, DetectionList))
    # A run records no receive times. Its sweep stamps, not stamp + latency: the latency of an
    # offline run is this machine's processing time, and would reorder the lists.
    topics = _Topics(source)
    items = [(topics(dl.header.stream), dl.header.stamp_ns, dl) for _, dl in numbered]
    return items, [line for line, _ in numbered]


def _check_one_per_frame(source: Path, items: list[_Item], lines: list[int] | None) -> None:
    """Refuses a frame twice on one ROS topic, as `show` and `eval` refuse it in a run
    (replay.runs). Per topic: a drive may hold the DetectionLists of two nodes, each a run of
    its own, and each becomes a topic of the bag."""
    by_topic: dict[str, list[int]] = {}
    for i, (topic, _, _) in enumerate(items):
        by_topic.setdefault(topic, []).append(i)
    for places in by_topic.values():
        try:
            check_one_per_frame(
                [items[i][2] for i in places],
                source,
                None if lines is None else [lines[i] for i in places],
                numbers=[i + 1 for i in places],
            )
        except PerceptionError as e:
            raise Rosbag2Error(str(e)) from e


#: The latest stamp a ROS 2 header holds: `builtin_interfaces/Time`'s seconds are an int32.
_MAX_ROS_STAMP_NS = (2**31 - 1) * 1_000_000_000 + 999_999_999


def _detection_lists(source: Path, on_error: Callable[[ReplayError], None]) -> list[_Item]:
    items = _read_detection_lists(source, on_error)
    for i, (_, _, dl) in enumerate(items, start=1):
        if dl.header.stamp_ns > _MAX_ROS_STAMP_NS:
            raise Rosbag2Error(
                f"{source}: DetectionList {i} (seq {dl.header.seq}): stamp {dl.header.stamp_ns} "
                "ns is past what a ROS 2 header holds (int32 seconds: 2038-01-19)"
            )
    return items


def _read_detection_lists(source: Path, on_error: Callable[[ReplayError], None]) -> list[_Item]:
    state = not_a_file(source)
    if state is not None:
        raise Rosbag2Error(f"{source}: {state}; expected a drive (.mcap) or a run (.jsonl)")
    if source.suffix == ".mcap":
        items = _drive_lists(source, on_error)
        if not items:
            raise Rosbag2Error(
                f"{source}: the drive holds no DetectionLists (replay it first: perception "
                f"replay {source.name} --out RUN.mcap)"
            )
        _check_one_per_frame(source, items, None)
        return items
    if source.suffix == ".jsonl":
        items, lines = _run_lists(source)
        if not items:
            raise Rosbag2Error(f"{source}: the run holds no DetectionLists")
        _check_one_per_frame(source, items, lines)
        return items
    raise Rosbag2Error(f"{source}: expected a drive (.mcap) or a replay run (.jsonl)")


def _check_out(out: Path) -> None:
    if out.exists() or out.is_symlink():
        raise Rosbag2Error(
            f"{out}: exists; a bag is never overwritten (remove it or choose another name)"
        )
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise Rosbag2Error(f"{out}: {parent} is a file, not a folder")
    if not parent.is_dir():
        raise Rosbag2Error(f"{out}: folder {parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise Rosbag2Error(f"{out}: folder {parent} is not writable")


def export_rosbag2(
    source: Path,
    out: Path,
    *,
    storage: str = "mcap",
    msgs: str = "vision_msgs",
    progress: ExportProgress | None = None,
) -> ExportStats:
    """Write the DetectionLists of `source` (a drive `.mcap` or a replay run `.jsonl`) into the
    new ROS 2 bag folder `out` (see the module docstring). `storage`: `mcap` or `sqlite3`;
    `msgs`: `vision_msgs` (Detection3DArray) or `autoware` (DetectedObjects).
    `progress(done, total)` after each message. A drive's message or chunk that cannot be read
    is skipped, counted (`ExportStats.unreadable`) and logged at a bounded rate.

    Raises Rosbag2Error naming the path: `out` exists or its folder is missing, the source is
    not a drive or run, holds no DetectionLists or holds one frame twice on a topic (one
    `header.seq` or `header.stamp_ns` again, replay.runs.check_one_per_frame) or two topics
    or streams that become one ROS 2 topic (`det-1`, `det_1`) or a topic longer than ROS 2
    takes (ROS_TOPIC_MAX_CHARS), or `out` appeared while the bag was written; the source's
    own read errors (ReplayError / SourceError) pass through; ValueError for an unknown
    `storage` or `msgs`."""
    begin = time.perf_counter()
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
    if msgs not in MSGS:
        raise ValueError(f"msgs must be one of {sorted(MSGS)}, got {msgs!r}")
    source, out = Path(source), Path(out)
    _check_out(out)
    skipped = Skipped(log)
    items = _detection_lists(source, skipped)
    msgtype = MSGS[msgs]
    store = detections_typestore()
    convert: Callable[[Any, DetectionList], Any] = (
        to_vision_msgs if msgs == "vision_msgs" else to_autoware
    )
    counts: dict[str, int] = {}
    detections = 0
    staging = out.parent / f".{out.name}.{secrets.token_hex(4)}.part"
    try:
        staging.mkdir()
        # Written under its final name inside the staging folder: rosbag2 names the storage
        # file after the bag folder.
        writer = Writer(staging / out.name, version=9, storage_plugin=STORAGES[storage])
        with writer:
            connections: dict[str, Any] = {}
            for done, (topic, receive_ns, dl) in enumerate(items, start=1):
                if topic not in connections:
                    connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
                data = store.serialize_cdr(convert(store, dl), msgtype)
                writer.write(connections[topic], max(receive_ns, 0), data)
                counts[topic] = counts.get(topic, 0) + 1
                detections += len(dl.detections)
                if progress is not None:
                    progress(done, len(items))
        _check_out(out)
        # Not os.replace: it replaces an empty folder made at `out` since that check.
        place_new(staging / out.name, out)
    except OutputError as e:
        raise Rosbag2Error(str(e)) from e
    except PerceptionError:
        raise
    except OSError as e:
        raise Rosbag2Error(f"{out}: cannot write the bag ({e.strerror or e})") from e
    except Exception as e:  # rosbags' writer errors
        raise Rosbag2Error(f"{out}: cannot write the bag ({type(e).__name__}: {e})") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportStats(
        path=out,
        msgtype=msgtype,
        messages=counts,
        detections=detections,
        storage=storage,
        wall_s=time.perf_counter() - begin,
        unreadable=skipped.count,
    )
