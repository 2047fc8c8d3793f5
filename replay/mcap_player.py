"""Publishing a recorded drive over ZeroMQ, paced by its recorded receive times; and what a
drive holds (`drive_contents`), which the commands check before they play or replay one.

One bad message never stops a player: a recorded message that cannot be decoded, or one that
cannot be encoded for the wire, is skipped, counted (`PlayStats`) and logged at a bounded rate.
A failure of the socket itself (TransportError) ends the play: every later send would fail too.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from mcap.reader import SeekingReader

from perception.io.transport import Publisher
from perception.msgs import wire
from perception.msgs.types import Message
from perception.ratelimit import RateLimitedLogger
from replay.drive import DriveReader, RecordedMessage
from replay.errors import ReplayError, messages_lost

__all__ = [
    "MAX_PACED_GAP_NS",
    "OUTPUT_TYPES",
    "SENSOR_TYPES",
    "DriveContents",
    "PacedTime",
    "PlayStats",
    "Skipped",
    "check_sensor_drive",
    "checked_messages",
    "drive_contents",
    "play_drive",
]

log = logging.getLogger(__name__)

#: Message types a sensor publishes (the node's inputs), and those the node publishes.
SENSOR_TYPES = ("LidarSweep", "CameraFrame", "GnssFix", "RigMessage")
OUTPUT_TYPES = ("DetectionList", "TrackList", "Diagnostics")

#: The longest gap between consecutive log times that pacing waits through, ns (a minute). A
#: longer one is a pause in the recording (the recorder stopped, drives spliced together, the
#: host clock stepped), not sensor timing to reproduce: pacing skips it, as `rosbag play
#: --skip-empty` does, with a warning naming the drive, the gap and its log time. Waiting it
#: through made a drive whose clock had jumped by 3e9 s play for a century. A minute is far
#: beyond any sensor's period or the node's timeouts, so no drive played for its timing loses
#: any of it.
MAX_PACED_GAP_NS = 60_000_000_000
#: Gaps warned about one by one per pass; a drive with more is broken throughout, and one line
#: says that the rest are skipped silently.
_MAX_GAP_WARNINGS = 10


@dataclass(frozen=True)
class DriveContents:
    """What a drive holds: per topic its message type (class name, e.g. "LidarSweep") and
    count, and the first and last log times (host clock, ns; None for an empty drive);
    `unreadable`: topics with messages of which not one can be read (damaged, or written by
    something else), by count."""

    types: dict[str, str]
    counts: dict[str, int]
    start_ns: int | None
    end_ns: int | None
    unreadable: dict[str, int] = field(default_factory=dict)

    def topics_of(self, *type_names: str) -> list[str]:
        """The topics holding one of `type_names`, in name order."""
        return sorted(t for t, kind in self.types.items() if kind in type_names)

    @property
    def sweeps(self) -> int:
        """Lidar sweeps in the drive (one DetectionList each when replayed)."""
        return sum(self.counts[t] for t in self.topics_of("LidarSweep"))

    @property
    def duration_s(self) -> float:
        """Seconds from the first to the last log time (0 for an empty drive)."""
        if self.start_ns is None or self.end_ns is None:
            return 0.0
        return (self.end_ns - self.start_ns) / 1e9

    def describe(self) -> str:
        """`"detections"`, `"camera/front, lidar/top, rig"`, or `"nothing"`, then any topic
        none of whose messages can be read: for messages."""
        held = ", ".join(sorted(self.types)) or "nothing"
        if self.unreadable:
            held += "; " + ", ".join(
                f"{topic} with {n} message(s), none readable"
                for topic, n in sorted(self.unreadable.items())
            )
        return held


@dataclass(frozen=True)
class PlayStats:
    """What a player did: `sent` messages (frames, for a KITTI folder) published; `unreadable`
    recorded messages (frames) that could not be read, skipped; `unpublishable` messages that
    could not be encoded for the wire (e.g. a restamped stamp out of range), skipped."""

    sent: int = 0
    unreadable: int = 0
    unpublishable: int = 0


class Skipped:
    """The `on_error` of `checked_messages` that skips: the recorded messages that could not
    be read, counted (a damaged chunk by what it held) and logged to `logger` at a bounded
    rate."""

    def __init__(self, logger: logging.Logger) -> None:
        self.count = 0
        self._log = RateLimitedLogger(logger)

    def __call__(self, error: ReplayError) -> None:
        self.count += messages_lost(error)
        self._log.warning("unreadable", f"{error}; skipped")


def checked_messages(
    reader: DriveReader,
    topics: Sequence[str] | None = None,
    start_ns: int | None = None,
    *,
    on_error: Callable[[ReplayError], None] | None = None,
) -> Iterator[RecordedMessage]:
    """`reader.messages(...)`, with the assorted errors the MCAP and compression libraries
    raise on a damaged file (zstd, lz4, struct, record parsing) turned into ReplayError naming
    the drive. `on_error`: as `DriveReader.messages` (a message that cannot be decoded is
    given to it and skipped). Errors raised while the caller handles a message are not
    touched."""
    records = reader.messages(topics=topics, start_ns=start_ns, on_error=on_error)
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except ReplayError:
            raise
        except Exception as e:  # the libraries' own error types differ by codec and version
            raise ReplayError(
                f"{reader.path}: the drive is damaged ({type(e).__name__}: {e})"
            ) from e
        yield record


class PacedTime:
    """The log times of a pass over `source` (a drive, for the messages) as pacing follows
    them: each gap between consecutive log times longer than `MAX_PACED_GAP_NS` is taken out
    (the message after it is due at once) and logged as a warning, the first
    `_MAX_GAP_WARNINGS` of a pass one by one; the timing elsewhere is kept."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.skipped_ns = 0
        """Log time taken out so far, ns."""
        self.gaps = 0
        """Gaps taken out so far."""
        self._first_ns: int | None = None
        self._last_ns: int | None = None

    def paced_ns(self, log_time_ns: int) -> int:
        """`log_time_ns` less the gaps skipped up to it; called with each message's log time
        in order."""
        first, last = self._first_ns, self._last_ns
        if first is None or last is None:
            self._first_ns = self._last_ns = log_time_ns
            return log_time_ns
        gap_ns = log_time_ns - last
        if gap_ns > MAX_PACED_GAP_NS:
            self.skipped_ns += gap_ns
            self.gaps += 1
            if self.gaps <= _MAX_GAP_WARNINGS:
                more = (
                    f"; later gaps over {MAX_PACED_GAP_NS / 1e9:g} s are skipped without a warning"
                    if self.gaps == _MAX_GAP_WARNINGS
                    else ""
                )
                log.warning(
                    "%s: no message for %.2f s of log time, from %d to %d ns (%.2f s after the "
                    "first message); the gap is skipped, not waited through (pacing "
                    "skips gaps over %g s)%s",
                    self.source, gap_ns / 1e9, last, log_time_ns, (last - first) / 1e9,
                    MAX_PACED_GAP_NS / 1e9, more,
                )  # fmt: skip
        self._last_ns = max(last, log_time_ns)
        return log_time_ns - self.skipped_ns


def _log_span(reader: DriveReader) -> tuple[int | None, int | None]:
    # Only an index checked when the drive was opened is trusted (a damaged one is read past).
    if reader.indexed:
        try:
            with reader.path.open("rb") as f:
                summary = SeekingReader(f).get_summary()
        except Exception as e:  # the mcap library raises assorted errors on a damaged file
            raise ReplayError(f"{reader.path}: cannot read the drive's summary ({e})") from e
        if summary is not None and summary.statistics is not None:
            stats = summary.statistics
            if stats.message_count == 0:
                return None, None
            return int(stats.message_start_time), int(stats.message_end_time)
    first = last = None
    for rec in checked_messages(reader, on_error=_ignore):
        first = rec.log_time_ns if first is None else first
        last = rec.log_time_ns
    return first, last


def drive_contents(reader: DriveReader) -> DriveContents:
    """Topics, their message types and counts, and the log-time span of `reader`'s drive. A
    topic's type is that of its first message (a topic carries one type).

    Raises:
        ReplayError: the drive cannot be read (names the path).
    """
    try:
        counts = reader.topics()
    except ReplayError:
        raise
    except Exception as e:  # as checked_messages: a damaged summary
        raise ReplayError(f"{reader.path}: the drive is damaged ({type(e).__name__}: {e})") from e
    types: dict[str, str] = {}
    for topic in counts:
        # The first message that can be read: a damaged one costs itself only (see play_drive).
        for rec in checked_messages(reader, topics=[topic], on_error=_ignore):
            types[topic] = type(rec.message).__name__
            break
    unreadable = {t: n for t, n in counts.items() if t not in types and n > 0}
    counts = {t: n for t, n in counts.items() if t in types}
    start_ns, end_ns = _log_span(reader)
    return DriveContents(types, counts, start_ns, end_ns, unreadable)


def _ignore(_error: ReplayError) -> None:
    """For reads that only look (types, time span): the players count damaged messages."""


def _host_stamp_ns(
    stamp_ns: int, host0_ns: int, log0_ns: int, skipped_ns: int, speed: float
) -> int:
    """A recorded stamp on the host clock of a pass that started at `host0_ns` with the
    message logged at `log0_ns`: its distance from that log time, less the gaps pacing skipped
    (`skipped_ns`), divided by `speed`. So the stamps keep pace with the sends, from the first
    message played (not the drive's first: --start, --topics), across a skipped gap and at any
    speed; a node judging them against its receive clock finds none ahead of its time."""
    offset_ns = stamp_ns - skipped_ns - log0_ns
    # Integers where nothing is scaled: a float holds nanoseconds exactly only up to 104 days.
    return host0_ns + (offset_ns if speed == 1.0 else round(offset_ns / speed))


def _stamped(msg: Message, stamp_ns: int) -> Message:
    return dataclasses.replace(msg, header=dataclasses.replace(msg.header, stamp_ns=stamp_ns))


def check_sensor_drive(
    reader: DriveReader, lidar_topic: str | None = None, *, command: str = "replay"
) -> DriveContents:
    """`drive_contents(reader)` of a drive that can be run through the pipeline: it holds
    lidar sweeps (on `lidar_topic` when given: a run that reads only the node's topics).
    `command` names what needs it, for the message.

    Raises:
        ReplayError: naming the drive, what it holds, and what `command` needs.
    """
    contents = drive_contents(reader)
    path = reader.path
    if not contents.types:
        if contents.unreadable:
            raise ReplayError(
                f"{path}: not one of the drive's messages can be read ({contents.describe()})"
            )
        if reader.truncated:
            raise ReplayError(
                f"{path}: the drive is truncated before its first complete chunk (the recorder "
                f"did not finish it): it holds no messages to {command}"
            )
        raise ReplayError(f"{path}: the drive holds no messages; {command} takes a sensor drive")
    held = contents.describe()
    if not contents.topics_of(*SENSOR_TYPES):
        raise ReplayError(
            f"{path}: no sensor topics to {command} (it holds: {held}); {command} takes a "
            "sensor drive (lidar sweeps and camera frames, as `perception record` or `import` "
            "write)"
        )
    lidar = contents.topics_of("LidarSweep")
    if not lidar:
        raise ReplayError(
            f"{path}: no lidar sweeps to {command} (it holds: {held}); the pipeline runs once "
            "per lidar sweep"
        )
    if lidar_topic is not None and lidar_topic not in lidar:
        raise ReplayError(
            f"{path}: no lidar sweeps on {lidar_topic} (the config's inputs.lidar_topic); the "
            f"drive has them on {', '.join(lidar)}"
        )
    return contents


def _loop_length_ns(times: Mapping[str, tuple[int, int, int]]) -> int | None:
    """The length of a looped pass (log time, ns), from the paced log times of the pass by
    topic (count, first, last): its busiest repeating topic's span plus one of its periods,
    so that topic keeps its period across the seam; None when no topic repeats at a later
    log time (one message, one sweep): the drive has no period to loop at."""
    repeating = [(n, last - first) for n, first, last in times.values() if last > first]
    if not repeating:
        return None
    n, span = max(repeating)
    return span + span // (n - 1)


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
    route: Mapping[str, Publisher] | None = None,
    on_message: Callable[[int], None] | None = None,
) -> PlayStats:
    """Publish the drive's messages on their recorded topics; returns what was sent and
    skipped (a message that cannot be read or encoded is skipped, counted and logged at a
    bounded rate; see the module docstring).

    Each message is sent when the time since the first one (host monotonic clock) reaches its
    recorded log-time offset divided by `speed`; `speed` <= 0 or infinite sends as fast as
    possible. A gap of more than `MAX_PACED_GAP_NS` (a minute) between consecutive log times is
    skipped, not waited through, with a warning naming it (see `PacedTime`). `start_s`: seconds
    into the drive (from its first log time) to start at.
    `topics`: only these topics (default all). `loop`: start over at the end until `stop` is set,
    paced passes one period of the busiest topic apart (`_loop_length_ns`).
    `restamp`: move every stamp onto the host clock as it is sent: each pass starts at the host
    time, and a stamp's distance from the first log time played is kept, less the gaps skipped,
    divided by `speed` (as fast as possible: not divided), so a live node sees current stamps
    that keep pace with their sends (and loops do not repeat stamps); otherwise the recorded
    stamps are sent unchanged. `route`: topic -> the publisher for it
    (e.g. detections on the node's output endpoint); other topics go to `publisher`.
    `on_message(sent)` is called after each message (progress).

    Raises:
        ValueError: `start_s` is negative or not finite.
        ReplayError: the drive cannot be read (a damaged file, not a damaged message),
            `start_s` > 0 and no message (of `topics`) is recorded that late, or `loop` with
            pacing and no topic repeats in a pass (raised after that first pass): nothing
            says how often to repeat it, and the passes were sent back to back (a
            one-message drive at 6000 messages a second, a CPU spinning).
        TransportError: a socket failed (every later send would fail too).
    """
    if not math.isfinite(start_s) or start_s < 0:
        raise ValueError(f"start_s must be a finite number >= 0, got {start_s}")
    paced = math.isfinite(speed) and speed > 0
    stop = stop or threading.Event()
    first_ns = reader.start_ns
    if first_ns is None:
        log.warning("%s: the drive has no messages", reader.path)
        return PlayStats()
    begin_ns = first_ns + round(start_s * 1e9)
    bad = RateLimitedLogger(log)
    unreadable = Skipped(log)
    sent = unpublishable = 0

    def stats() -> PlayStats:
        return PlayStats(sent, unreadable.count, unpublishable)

    while not stop.is_set():
        wall0 = time.monotonic_ns()
        host0 = time.time_ns()
        log0: int | None = None
        paced_time = PacedTime(str(reader.path))
        # By topic: messages, first and last paced log time (the loop's period).
        times: dict[str, tuple[int, int, int]] = {}
        records = checked_messages(reader, topics=topics, start_ns=begin_ns, on_error=unreadable)
        for rec in records:
            if stop.is_set():
                return stats()
            if log0 is None:
                log0 = rec.log_time_ns
            if paced:
                at_ns = paced_time.paced_ns(rec.log_time_ns)
                n, first, _ = times.get(rec.topic, (0, at_ns, at_ns))
                times[rec.topic] = (n + 1, first, at_ns)
                due = wall0 + (at_ns - log0) / speed
                delay_s = (due - time.monotonic_ns()) / 1e9
                if delay_s > 0 and stop.wait(delay_s):
                    return stats()
            try:
                msg = rec.message
                if restamp:
                    stamp_ns = _host_stamp_ns(
                        msg.header.stamp_ns,
                        host0,
                        log0,
                        paced_time.skipped_ns,
                        speed if paced else 1.0,
                    )
                    msg = _stamped(msg, stamp_ns)
                # As recorded: a camera above the default limits that the drive holds.
                frames = wire.encode(msg, rec.topic, limits=reader.limits)
            except Exception as e:  # one message that cannot go on the wire is skipped
                unpublishable += 1
                bad.warning(
                    f"unpublishable:{rec.topic}",
                    f"{reader.path}: {rec.topic} at log time {rec.log_time_ns} not published: {e}",
                )
                continue
            (route or {}).get(rec.topic, publisher).send_frames(frames)
            sent += 1
            if on_message is not None:
                on_message(sent)
        if log0 is None and start_s > 0 and not stop.is_set():
            # Publishing nothing and succeeding would hide a mistyped --start.
            _, end_ns = _log_span(reader)
            length_s = ((end_ns or first_ns) - first_ns) / 1e9
            what = "" if topics is None else f" on {', '.join(topics)}"
            raise ReplayError(
                f"{reader.path}: start {start_s:g} s is past the last message{what} "
                f"(the drive lasts {length_s:.2f} s)"
            )
        if not loop or log0 is None:
            break
        if paced:
            length_ns = _loop_length_ns(times)
            if length_ns is None:
                what = "" if topics is None else f" of {', '.join(topics)}"
                after = f" from {start_s:g} s on" if start_s else ""
                raise ReplayError(
                    f"{reader.path}: no topic{what} repeats in the drive{after} (one message "
                    "each), so it has no period to loop at"
                )
            delay_s = (wall0 + length_ns / speed - time.monotonic_ns()) / 1e9
            if delay_s > 0 and stop.wait(delay_s):
                return stats()
    return stats()
