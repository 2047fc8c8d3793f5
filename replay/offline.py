"""Offline runs: recorded inputs through the node core (perception.node.core), no sockets.

Every input reaches the core exactly as the live node hands it over: undecoded wire frames
through `NodeCore.on_frames` (so an undecodable recorded message is counted, not fatal), decoded
messages through `NodeCore.on_message`, each with its recorded receive time; between inputs the
core is polled as the live receiver polls it (`NodeCore.idle_polls`), and at the end of the
input the pending bundles come out at their timeouts (`NodeCore.flush`). Each batch of ready
bundles goes to `NodeCore.on_bundles` as the live worker hands it over when it keeps up. So a
replay gives the live node's outputs and counters for the same arrivals, deterministically;
timings, latencies and budget checks are measured on this machine as the live node measures
them (`latency_ns` = recorded receive time minus the sweep stamp on the host clock, plus the
sync wait and the processing time measured here).

Sources (`open_source`): a recorded drive (MCAP, replay.drive: messages at their log times,
only the node's topics; refused when it holds no lidar sweeps there) or a KITTI object folder
(replay.datasets.kitti_object: each message received at its stamp; the frames, unrelated
scenes, stamped `tracking.max_gap_s` + 1 s apart, so that the tracker starts over at each).
The initial rig is `config.rig` when set, else the drive's own; rig messages take over from
their stamps (unless left out: `open_source(..., recorded_rigs=False)`).
`replay_to_file` runs one source into a JSON Lines or MCAP file (written beside the target and
renamed into place only when the run succeeds), for the CLI and for the Ray path alike.

One bad message never ends a replay: a recorded message that cannot be decoded is skipped and
counted (`ReplaySummary.unreadable`), and so is each message of a drive's chunk whose bytes are
damaged (replay.drive: the chunk's messages are lost, the rest of the drive is read); a
DetectionList that cannot be written (invalid for the output format) is counted
(`ReplaySummary.unwritten`); all are logged at a bounded rate. A drive is what a vehicle
recorded, and a bad sector must not take the rest of an hour's drive with it; the summary
counts what was lost, so no evaluation runs on it unawares. A KITTI folder's broken scan, image
or calib file (a mistake in a dataset, which an evaluation must not silently run without), a
file that is no drive, or an output that cannot be written (full disk) ends the run with one
error naming the file.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from calibration import CalibrationError, Rig, load_rig
from perception.config import NodeConfig
from perception.msgs.jsonl import write_jsonl_line
from perception.msgs.types import DetectionList, Message, TrackList
from perception.node import NodeCore
from perception.node.core import ReadyBundle
from perception.pipeline import Pipeline
from perception.ratelimit import RateLimitedLogger
from perception.sync.bundler import SyncStats
from replay.datasets.kitti_object import KittiObjectFolder
from replay.drive import (
    REPLAY_METADATA,
    SYNTHETIC_METADATA,
    DriveReader,
    DriveWriter,
    RecordedMessage,
)
from replay.drive_config import config_for_messages
from replay.errors import DriveStorageError, ReplayError
from replay.mcap_player import PacedTime, Skipped, check_sensor_drive, checked_messages
from replay.output import OutputError, atomic_output

__all__ = [
    "Received",
    "ReplayInput",
    "ReplaySummary",
    "Skipped",
    "open_source",
    "replay_to_file",
    "run_core",
    "run_messages",
    "run_records",
]

log = logging.getLogger(__name__)

_DIAGNOSTICS_PERIOD_NS = 1_000_000_000


@dataclass(frozen=True)
class Received:
    """One input as the node receives it: on `topic` at `receive_ns` (host clock, ns), either
    as wire `frames` (decoded by the core) or as a decoded `message`."""

    topic: str
    receive_ns: int
    message: Message | None = None
    frames: Sequence[Any] | None = None


@dataclass(frozen=True)
class ReplayInput:
    """A source opened for replay: its inputs in receive order, the node config to run them
    with, the rig in force from the start, how many sweeps it holds (None when unknown), what
    it is, in words, and the inputs skipped so far because they could not be read."""

    received: Iterable[Received]
    config: NodeConfig
    default_rig: Rig | None
    sweeps: int | None
    description: str
    skipped: Skipped = field(default_factory=lambda: Skipped(log))


def run_core(
    core: NodeCore,
    received: Iterable[Received],
    *,
    speed: float = 0.0,
    on_diagnostics: Callable[[Any], None] | None = None,
    on_tracks: Callable[[TrackList], None] | None = None,
    source: str = "the input",
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[DetectionList]:
    """The DetectionLists the core produces for `received`, in order (see the module
    docstring). `speed` > 0 paces the inputs by receive time (1.0 = real time), through
    `sleep` (seconds); 0 runs as fast as possible. A gap of more than
    `replay.mcap_player.MAX_PACED_GAP_NS` (a minute) between consecutive receive times is
    skipped, not slept through, with a warning naming `source` (the drive), the gap and its
    receive time (see `replay.mcap_player.PacedTime`). `on_diagnostics` gets the core's
    Diagnostics once per second of receive time and once at the end; `on_tracks` the
    tracker's TrackList of each DetectionList, before the DetectionList is yielded."""
    last_ns: int | None = None
    next_diagnostics_ns: int | None = None
    pacing_start = time.monotonic_ns()
    first_ns: int | None = None
    paced_time = PacedTime(source)
    for item in received:
        if speed > 0:
            first_ns = item.receive_ns if first_ns is None else first_ns
            paced_ns = paced_time.paced_ns(item.receive_ns)
            delay_ns = (paced_ns - first_ns) / speed - (time.monotonic_ns() - pacing_start)
            if delay_ns > 0:
                sleep(delay_ns / 1e9)
        if last_ns is not None:
            for batch in core.idle_polls(last_ns, item.receive_ns):
                yield from _process(core, batch, on_tracks)
        if item.frames is not None:
            batch = core.on_frames(item.frames, item.receive_ns)
        elif item.message is not None:
            batch = core.on_message(item.topic, item.message, item.receive_ns)
        else:
            raise ValueError(f"{item.topic}: a Received input needs frames or a message")
        yield from _process(core, batch, on_tracks)
        last_ns = item.receive_ns if last_ns is None else max(last_ns, item.receive_ns)
        if on_diagnostics is not None:
            if next_diagnostics_ns is None:
                next_diagnostics_ns = last_ns
            if last_ns >= next_diagnostics_ns:
                on_diagnostics(core.diagnostics(last_ns))
                next_diagnostics_ns += _DIAGNOSTICS_PERIOD_NS
    if last_ns is not None:
        for batch in core.flush(last_ns):
            yield from _process(core, batch, on_tracks)
        if on_diagnostics is not None:
            on_diagnostics(core.diagnostics(last_ns))


def run_messages(
    messages: Iterable[Message],
    pipeline: Pipeline,
    config: NodeConfig | None = None,
    *,
    default_rig: Rig | None = None,
) -> Iterator[DetectionList]:
    """`run_core` on a fresh core for messages received at their sensor stamps (a KITTI object
    folder's messages, synthetic inputs)."""
    core = NodeCore(config or NodeConfig(), pipeline, default_rig)
    received = (Received(m.header.stream, m.header.stamp_ns, message=m) for m in messages)
    return run_core(core, received)


def run_records(
    records: Iterable[RecordedMessage],
    pipeline: Pipeline,
    config: NodeConfig | None = None,
    *,
    default_rig: Rig | None = None,
    speed: float = 0.0,
    on_tracks: Callable[[TrackList], None] | None = None,
    source: str = "the drive",
) -> Iterator[DetectionList]:
    """`run_core` on a fresh core for a drive's messages, each received at its log time;
    `source` names the drive in warnings."""
    core = NodeCore(config or NodeConfig(), pipeline, default_rig)
    received = (Received(r.topic, r.log_time_ns, message=r.message) for r in records)
    return run_core(core, received, speed=speed, on_tracks=on_tracks, source=source)


def _process(
    core: NodeCore,
    batch: list[ReadyBundle],
    on_tracks: Callable[[TrackList], None] | None = None,
) -> Iterator[DetectionList]:
    if batch:
        out = core.on_bundles(batch)
        if out is not None:
            tracks = core.take_tracks()
            if on_tracks is not None and tracks is not None:
                on_tracks(tracks)
            core.after_publish()
            yield out


def _load_config_rig(config: NodeConfig) -> Rig | None:
    if config.rig is None:
        return None
    try:
        return load_rig(Path(config.rig).expanduser())
    except CalibrationError as e:
        raise ReplayError(f"{config.rig}: cannot load the configured rig ({e})") from e


def open_source(
    source: Path,
    config: NodeConfig,
    *,
    topics_from_drive: bool = False,
    recorded_rigs: bool = True,
) -> ReplayInput:
    """`source` (a drive file or a KITTI object folder) as the node's inputs. With
    `topics_from_drive`, a drive's inputs are read on the topics it has them on, with its
    recorded camera offsets (replay.drive_config), not on `config`'s, and its messages are
    decoded with the wire limits it was recorded under (`DriveReader.limits`, then the
    config's); without, with `config.limits`, as the node configured so receives them (a
    message above them is skipped and counted, as the node refuses one). Without
    `recorded_rigs`, a drive's rig messages are not replayed: the initial rig holds throughout
    (a rig being checked against the drive's data).

    Raises ReplayError naming the path: missing source, unreadable drive, invalid or no rig."""
    source = Path(source)
    initial = _load_config_rig(config)
    if source.is_dir():
        folder = KittiObjectFolder(source)
        # The frames of a KITTI object folder are unrelated scenes. Stamped further apart than
        # the tracker's `max_gap_s`, each starts the tracker over (counted as a reset) instead
        # of chaining detections from different streets into tracks.
        period_ns = round((config.tracking.max_gap_s + 1.0) * 1e9)
        # Its sensors' rate is that of the frames: at the config's (10 Hz) the first gap between
        # two frames read as the sensors dying, every input stale, then alive again.
        inputs = replace(config.inputs, rates_hz={}, default_rate_hz=1e9 / period_ns)
        config = replace(config, inputs=inputs)
        received = (
            Received(m.header.stream, m.header.stamp_ns, message=m)
            for m in folder.messages(period_ns=period_ns)
        )
        return ReplayInput(received, config, initial, len(folder), f"KITTI object folder {source}")
    if not source.exists():
        raise ReplayError(f"{source}: no such drive or KITTI object folder")
    # A device or pipe is named as such.
    reader = DriveReader(source, limits=None if topics_from_drive else config.limits)
    if topics_from_drive:
        # Only looking at the topics here: the replay below counts the damaged messages.
        recorded = ((r.topic, r.message) for r in checked_messages(reader, on_error=_ignore))
        try:
            config = config_for_messages(recorded, config)
        except ReplayError as e:
            raise ReplayError(f"{source}: {e}") from None
        config = replace(config, limits=reader.limits)
    inputs = config.inputs
    contents = check_sensor_drive(reader, inputs.lidar_topic)
    # A topic of the config the drive has nothing on (a typo, another rig's name) left every
    # detection without that camera, or without a global position, and said nothing.
    for key, topic, kind, what in (
        *(
            ("inputs.camera_topics", t, "CameraFrame", "camera frames")
            for t in inputs.camera_topics
        ),
        ("inputs.gnss_topic", inputs.gnss_topic, "GnssFix", "GNSS fixes"),
    ):
        held = contents.topics_of(kind)
        unread = contents.unreadable.get(topic, 0)
        if unread:
            # "The drive has none" sent the user after a wrong topic: they are there, unread.
            log.warning(
                "%s: not one of the %d messages on %s (the config's %s) can be read (the "
                "warnings of those skipped say why)",
                source,
                unread,
                topic,
                key,
            )
        # Read on the drive's own topics, a drive without any is what it is. (No GNSS at all
        # is said below, with what it changes.)
        elif topic not in contents.types and (
            held or (not topics_from_drive and kind != "GnssFix")
        ):
            log.warning(
                "%s: no %s on %s (the config's %s): the drive has %s",
                source,
                what,
                topic,
                key,
                f"them on {', '.join(held)}" if held else "none",
            )
    if not contents.topics_of("GnssFix"):
        # Nothing else says it, and it changes what the tracks mean.
        log.warning(
            "%s: no GNSS fixes: detections are not placed on the map, and tracks are in the "
            "vehicle frame (their velocities relative to the moving vehicle)",
            source,
        )
    topics = [inputs.lidar_topic, *inputs.camera_topics, inputs.gnss_topic]
    if recorded_rigs:
        topics.append(inputs.rig_topic)
    skipped = Skipped(log)
    records = checked_messages(reader, topics=topics, on_error=skipped)
    received = (Received(r.topic, r.log_time_ns, message=r.message) for r in records)
    rig = initial or reader.rig
    if rig is None:
        # Every sweep would wait for a rig that never comes: a replay of nothing, not a run.
        raise ReplayError(
            f"{source}: the drive has no rig (calibration); give one with the config's `rig`"
        )
    return ReplayInput(received, config, rig, contents.sweeps, f"drive {source}", skipped)


def _ignore(_error: ReplayError) -> None:
    """For a read that only looks at a drive's topics."""


@dataclass
class ReplaySummary:
    """What a replay wrote: DetectionLists (`sweeps`), detections, the node's final counters
    (perception.node.core.NodeCounters, by name), the inputs skipped because they could not be
    read (`unreadable`) and the DetectionLists that could not be written (`unwritten`)."""

    sweeps: int = 0
    detections: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    unreadable: int = 0
    unwritten: int = 0
    #: Sweeps the synchroniser dropped before any output, by reason (SyncStats'
    #: `dropped_sweeps_*`, without the prefix): a `sync.queue_size` too small for the sweeps
    #: waiting for their cameras dropped 99 of 100 without a word.
    dropped_sweeps: dict[str, int] = field(default_factory=dict)
    #: Bundles made without a camera, per camera stream (SyncStats' `per_stream_missing`): a
    #: `sync.window_ms` too narrow or a wrong `camera_offsets_ms` left every sweep without its
    #: camera (no camera-confirmed detection) without a word.
    missing_cameras: dict[str, int] = field(default_factory=dict)
    #: Bundles made without a GNSS fix although fixes came (SyncStats' `bundles_without_fix`):
    #: a `sync.gnss_window_ms` too narrow left every detection without a global position.
    without_fix: int = 0
    #: Bundles made but passed over, not processed, before the input ended (the counters'
    #: `skipped_bundles` then: completed after a newer sweep's output, or of the lidar clock's
    #: timeline before a jump). Those at the end, where the last sweeps waiting for their
    #: cameras time out together, are the end of a drive, not counted here.
    passed_over: int = 0


def replay_to_file(
    source: Path,
    out: Path,
    config: NodeConfig,
    pipeline: Pipeline,
    *,
    speed: float = 0.0,
    progress: Callable[[int, int | None], None] | None = None,
    topics_from_drive: bool = False,
) -> ReplaySummary:
    """Replay `source` into `out`: JSON Lines (one DetectionList per line) or MCAP (the
    DetectionLists and the tracker's TrackLists, plus the node's Diagnostics once per second
    of drive time, and what was replayed: `replay.drive.REPLAY_METADATA`). The file is
    written beside `out` and renamed into place only when the run succeeds, so a failed run
    leaves an existing `out` as it was. `speed`: as `run_core` (a gap of more than a minute in
    the drive's log times is skipped, not slept through). `progress(sweeps_done, sweeps_total
    or None)` after each DetectionList. `topics_from_drive`: see `open_source`.

    Raises ReplayError naming the path for a bad source (a drive without lidar sweeps on the
    config's lidar topic among them), OutputError for an unwritable output (full disk
    included); the pipeline's setup errors pass through. One input that cannot be read, or one
    output invalid for the format, is skipped and counted instead (see the module
    docstring)."""
    out = Path(out)
    if out.suffix not in (".jsonl", ".mcap"):
        raise ReplayError(f"{out}: the output must end in .jsonl or .mcap")
    replay_input = open_source(source, config, topics_from_drive=topics_from_drive)
    core = NodeCore(replay_input.config, pipeline, replay_input.default_rig)
    summary = ReplaySummary()
    received = _noting_end(replay_input.received, core, summary)
    output = _Output(out, summary)
    with atomic_output(out, "the detections file") as tmp:
        if out.suffix == ".jsonl":
            f = tmp.open("w")
            with _closed_on_error(f.close):
                results = run_core(core, received, speed=speed, source=str(source))
                writes = _timed_writes(core, results, lambda dl: write_jsonl_line(f, dl), output)
                for dl in writes:
                    _count(summary, dl, progress, replay_input.sweeps)
            output.write(f.close, "the file")  # the last bytes: a full disk may show here
        else:
            writer = DriveWriter(
                tmp, rig=replay_input.default_rig, limits=replay_input.config.limits
            )
            with _closed_on_error(writer.close):
                described = _described(source)
                output.write(
                    lambda: writer.write_metadata(REPLAY_METADATA, described), "the metadata"
                )

                def write_diagnostics(d: Any) -> None:
                    output.write(lambda: writer.write(d, d.header.stamp_ns), "a Diagnostics")

                def write_tracks(t: TrackList) -> None:
                    output.write(lambda: writer.write(t, t.header.stamp_ns), "a TrackList")

                results = run_core(
                    core,
                    received,
                    speed=speed,
                    source=str(source),
                    on_diagnostics=write_diagnostics,
                    on_tracks=write_tracks,
                )

                writes = _timed_writes(
                    core, results, lambda dl: writer.write(dl, dl.header.stamp_ns), output
                )
                for dl in writes:
                    _count(summary, dl, progress, replay_input.sweeps)
            output.write(writer.close, "the drive's summary")
        # Live, the diagnostics say it once a second; a replay to JSON Lines writes none.
        core.camera_phase_notes()
        summary.dropped_sweeps = sweeps_dropped(core.bundler.stats)
        summary.missing_cameras = dict(core.bundler.stats.per_stream_missing)
        summary.without_fix = core.bundler.stats.bundles_without_fix
        if not summary.sweeps and replay_input.sweeps:
            # An empty output would read as a drive with nothing in it (no file is written).
            counters = core.counters.scalars() | {
                f"dropped_sweeps_{why}": n for why, n in summary.dropped_sweeps.items()
            }
            raise ReplayError(
                _nothing_out(
                    source, replay_input.sweeps, counters, max_interval_hint(replay_input.config)
                )
            )
    summary.counters = core.counters.scalars()
    summary.unreadable = replay_input.skipped.count
    return summary


def _noting_end(
    received: Iterable[Received], core: NodeCore, summary: ReplaySummary
) -> Iterator[Received]:
    """`received`, noting in `summary.passed_over` the bundles the core passed over by the
    time they end: `run_core` reads on from here only to flush the core."""
    yield from received
    summary.passed_over = core.counters.skipped_bundles


def _described(source: Path) -> dict[str, str]:
    """`REPLAY_METADATA` of a replay of `source`."""
    described = {"source": Path(source).name}
    if Path(source).is_file():
        try:
            world = DriveReader(source).metadata(SYNTHETIC_METADATA)
        except ReplayError:
            world = None  # the replay itself reports what of the drive cannot be read
        described |= world or {}
    return described


def sweeps_dropped(stats: SyncStats) -> dict[str, int]:
    """The sweeps `stats` counts as dropped by the synchroniser, by reason (`queue_full`,
    `no_rig`, `clock_reset`, `unmatched`), those not 0."""
    prefix = "dropped_sweeps_"
    return {
        f.name.removeprefix(prefix): n
        for f in fields(stats)
        if f.name.startswith(prefix) and (n := getattr(stats, f.name))
    }


def max_interval_hint(config: NodeConfig) -> str:
    """What sweeps dropped as unmatched may owe to `sync.max_interval_ms` ('' where it does not
    apply)."""
    sync = config.sync
    if sync.policy != "approximate_time" or sync.max_interval_ms is None:
        return ""
    return (
        f"sync.max_interval_ms ({sync.max_interval_ms:g} ms) makes no set wider: is it below "
        "how far a camera's frames lie from their sweeps (less sync.camera_offsets_ms)?"
    )


def _nothing_out(
    source: Path | str, sweeps: int, counters: Mapping[str, int], max_interval: str = ""
) -> str:
    """Why none of a drive's `sweeps` sweeps gave a DetectionList, from the node's counters;
    `max_interval`: `max_interval_hint` of the config."""
    said = [f"{name} {n}" for name, n in counters.items() if n and name != "received"]
    hint = (
        " (stamps far from their log times: was the drive recorded with another clock for its "
        "log times?)"
        if counters.get("stamp_faults")
        else f" ({max_interval})"
        if max_interval and counters.get("dropped_sweeps_unmatched")
        else ""
    )
    return (
        f"{source}: none of its {sweeps} sweeps gave a DetectionList "
        f"({', '.join(said) or 'no counter says why'}){hint}"
    )


@contextlib.contextmanager
def _closed_on_error(close: Callable[[], None]) -> Iterator[None]:
    """Calls `close` when the block raises, without letting a failure of `close` (the same
    full disk, flushing what is left) replace the error that ended the block."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            close()
        raise


class _Output:
    """Writes into a replay's output: an output invalid for the format costs itself only
    (counted in `summary.unwritten`, logged at a bounded rate); a failure of the file (full
    disk) ends the run with one OutputError naming `out`, since every later write would fail
    too."""

    def __init__(self, out: Path, summary: ReplaySummary) -> None:
        self.out = out
        self.summary = summary
        self._log = RateLimitedLogger(log)

    def write(self, write: Callable[[], None], what: str) -> bool:
        """`write()`; False when `what` could not be written."""
        try:
            write()
        except OSError as e:
            raise OutputError(f"{self.out}: cannot write {what} ({e.strerror or e})") from e
        except DriveStorageError as e:
            cause = e.__cause__
            reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else e
            raise OutputError(f"{self.out}: cannot write {what} ({reason})") from e
        except Exception as e:  # invalid for the output format: this output only
            self.summary.unwritten += 1
            self._log.warning(f"unwritten:{what}", f"{self.out}: {what} not written: {e}")
            return False
        return True


def _timed_writes(
    core: NodeCore,
    results: Iterable[DetectionList],
    write: Callable[[DetectionList], None],
    output: _Output,
) -> Iterator[DetectionList]:
    """Writes each result, telling the core how long it took (the next output's `publish`);
    yields those written."""
    for dl in results:
        start = time.perf_counter_ns()
        written = output.write(functools.partial(write, dl), "a DetectionList")
        core.record_publish(time.perf_counter_ns() - start)
        if written:
            yield dl


def _count(
    summary: ReplaySummary,
    dl: DetectionList,
    progress: Callable[[int, int | None], None] | None,
    total: int | None,
) -> None:
    summary.sweeps += 1
    summary.detections += len(dl.detections)
    if progress is not None:
        progress(summary.sweeps, total)
