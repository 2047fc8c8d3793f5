"""Recorded drives: MCAP files with Foxglove's well-known schemas, lossless for every message.

Layout of a drive written by `DriveWriter`
-----------------------------------------

Every message `write` is given becomes *two* MCAP messages with the same `log_time` (receive
time, ns), `publish_time` (the sensor stamp `header.stamp_ns`, ns; clamped at 0 for a negative
stamp) and MCAP `sequence` (a per-file counter, so the two are paired exactly):

1. on the topic itself (default `header.stream`), the message's Foxglove form
   (`perception.msgs.foxglove.to_foxglove`), which Foxglove and other MCAP tools display:
   `foxglove.RawImage` / `CompressedImage`, `PointCloud`, `LocationFix`, `SceneUpdate`,
   `FrameTransforms` (protobuf), or for `Diagnostics` its JSON document (schema
   `perception.Diagnostics`, a JSON Schema generated from the message table).

2. on the companion topic `<topic>.perception` (`COMPANION_SUFFIX`), a JSON message that is
   exactly the header document of the project's ZeroMQ wire format (see perception.msgs.wire):
   message type, header (stream, seq, stamp), every field that is not an array (GNSS velocity
   and heading, the whole DetectionList with timings, degraded, latency...) and the descriptors
   (name, dtype, shape) of the array buffers. Its schema, `perception.WireHeader.<type>`
   (JSON Schema), is generated from the message table
   (`perception.msgs.schema.wire_json_schema`). The buffers' bytes are taken from the Foxglove
   message. `DriveReader` rebuilds each message with `perception.msgs.wire.decode`, so a round
   trip is bit-exact and validated.

Each channel's metadata names the project message type (`perception.type`). The rig given to
the writer (constructor or `write_rig`) is also stored as MCAP metadata `perception.rig`
(`{"rig": <JSON rig document>, "stamp_ns": "<int>"}`), and `write_rig` also writes a
`RigMessage` on topic `rig` (`RIG_TOPIC`), so a drive is self-contained.

A drive written with other than the default wire limits (`perception.msgs.schema.WireLimits`:
a node config's `limits:` raised for a 12 MP camera) names them in MCAP metadata
`perception.limits` (`LIMITS_METADATA`: each limit's name -> its decimal value), and
`DriveReader` decodes its messages with them: a message the recorder took is never refused on
reading for a limit it was recorded under.

A synthetic drive also names its world in MCAP metadata `perception.synthetic`
(`SYNTHETIC_METADATA`: `scene`, `seed`, `lidar`, `seconds`; `write_metadata` /
`DriveReader.metadata`), so that a reader can say what its data can show (a calibration
verdict over the simple world does not check the rig).

A drive may also hold ground truth (synthetic drives do): one JSON message per lidar sweep on
topic `ground_truth` (`GROUND_TRUTH_TOPIC`, written by `DriveWriter.write_ground_truth`),
`publish_time` the sweep stamp, schema `perception.GroundTruth` (`GROUND_TRUTH_SCHEMA`, a JSON
Schema: `seq`, `stamp_ns` and the `boxes` in the vehicle frame at the sweep stamp). It has no
companion and is no project message: `DriveReader.messages` and `topics` leave it out (players
and replays never see it); `DriveReader.ground_truth` reads it.

Chunks are cut by `DriveWriter` itself (at `chunk_size` bytes, or when `flush` is called), never
between a message and its companion, and each is handed to the operating system in one write
as soon as it is cut (no user-space buffer). So a killed writer leaves exactly the chunks cut
before the kill, and after a failed write (full disk) `DriveWriter.messages_flushed` says how
many messages the file holds.

A complete file is read chunk by chunk through its index (`replay.mcap_chunks`): a chunk whose
bytes are damaged (it does not decompress, or its CRC does not match) costs its own messages,
reported as a `DamagedDriveError` that names how many of which topic, not the rest of the drive.

A file without a usable index is read from start to end, record by record, with the same checks:
a truncated file (a killed recorder, a full disk; a logged warning and `DriveReader.truncated`
set), read up to the record its end cuts; a file whose summary section fails its CRC or points
outside the data (a logged warning: a damaged index would cost intact chunks); a complete file
written without a summary. There a damaged record whose framing (opcode, length) is intact costs
its own contents only (a chunk's messages, reported as above, counted from the message indexes
that follow it), and the read goes on with the next. A length that runs past the end of the
file (a damaged length field, bytes cut out of the middle) is passed over to the next intact
chunk header found after it (the bytes between are reported as damaged, how many messages they
held unknown); only where none follows does it end the read (a truncated file's cut). A
damaged metadata record costs that record: `DriveReader.metadata` names it when asked for it,
and the rig is then taken from the drive's first `RigMessage`.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import heapq
import io
import json
import logging
import os
import re
import stat
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import msgpack
from mcap.opcode import Opcode
from mcap.reader import SeekingReader
from mcap.records import Channel, Chunk, MessageIndex, Metadata
from mcap.records import Message as McapMessage
from mcap.summary import Summary
from mcap.writer import CompressionType, Writer

from calibration import CalibrationError, Rig
from perception.closeable import Closeable
from perception.errors import PerceptionError, SchemaError
from perception.msgs import foxglove, wire
from perception.msgs.json_schemas import wire_json_schema
from perception.msgs.schema import DEFAULT_LIMITS, WireLimits, above_a_limit
from perception.msgs.types import Header, Message, RigMessage
from replay.errors import DamagedDriveError, DriveStorageError, ReplayError
from replay.mcap_chunks import (
    DamagedChunk,
    chunk_records,
    indexed_messages,
    parse_record,
    read_record,
)
from replay.output import try_lock

__all__ = [
    "COMPANION_SCHEMA",
    "COMPANION_SUFFIX",
    "DEFAULT_CHUNK_SIZE",
    "GROUND_TRUTH_SCHEMA",
    "GROUND_TRUTH_TOPIC",
    "LIMITS_METADATA",
    "REPLAY_METADATA",
    "RIG_METADATA",
    "RIG_TOPIC",
    "SYNTHETIC_METADATA",
    "DriveReader",
    "DriveWriter",
    "RecordedMessage",
    "being_written",
    "check_not_being_written",
]

log = logging.getLogger(__name__)

#: Suffix of the companion topic holding a topic's wire header documents (JSON).
COMPANION_SUFFIX = ".perception"
#: Schema name of the companion channels, followed by `.<message type>`.
COMPANION_SCHEMA = "perception.WireHeader"
#: Name of the MCAP metadata record holding the drive's rig document.
RIG_METADATA = "perception.rig"
#: Name of the MCAP metadata record holding the wire limits a drive was written under, where
#: they are not the defaults (each `WireLimits` field's name -> its value, decimal).
LIMITS_METADATA = "perception.limits"
#: Name of the MCAP metadata record of a synthetic drive: its world (`scene`), `seed` and
#: lidar model and length in seconds (replay.synth.world.generate_drive).
SYNTHETIC_METADATA = "perception.synthetic"
#: Name of the MCAP metadata record of a replay's MCAP output naming what was replayed:
#: `source` (the drive's or KITTI folder's file name) and, for a synthetic drive, its world (its
#: `SYNTHETIC_METADATA`). Synthetic drives share their stamps: only this tells the tracks of
#: one from another's (`perception eval --tracks`; replay.offline.replay_to_file writes it).
REPLAY_METADATA = "perception.replay"
#: Topic `DriveWriter.write_rig` writes its RigMessage on.
RIG_TOPIC = "rig"
#: Default uncompressed chunk size, bytes. Smaller chunks lose less when a recorder is killed.
DEFAULT_CHUNK_SIZE = 1024 * 1024

#: Topic of the ground-truth channel (one JSON document per sweep).
GROUND_TRUTH_TOPIC = "ground_truth"
#: Schema name of the ground-truth channel.
GROUND_TRUTH_SCHEMA = "perception.GroundTruth"

_TYPE_KEY = "perception.type"
# Channel metadata `perception.type` of the ground-truth channel: not a project message type.
_GROUND_TRUTH_TYPE = "GroundTruth"
_NUMBER_ARRAY = {"type": "array", "items": {"type": "number"}}
_GROUND_TRUTH_JSON_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": GROUND_TRUTH_SCHEMA,
    "description": "Ground truth of one lidar sweep: boxes in the vehicle frame at the sweep "
    "stamp (centre m, size (length, width, height) m, yaw rad about +z).",
    "type": "object",
    "required": ["seq", "stamp_ns", "boxes"],
    "properties": {
        "seq": {"type": "integer"},
        "stamp_ns": {"type": "integer"},
        "boxes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["label", "center", "size", "yaw"],
                "properties": {
                    "id": {"type": "integer"},
                    "label": {"type": "string"},
                    "center": {**_NUMBER_ARRAY, "minItems": 3, "maxItems": 3},
                    "size": {**_NUMBER_ARRAY, "minItems": 3, "maxItems": 3},
                    "yaw": {"type": "number"},
                    "velocity": _NUMBER_ARRAY,
                    "relative_velocity": _NUMBER_ARRAY,
                    "lidar_points": {"type": "integer"},
                    "camera_visible": {"type": "number"},
                },
            },
        },
    },
}
# The MCAP writer never cuts a chunk itself (DriveWriter does, see the module docstring).
_NEVER = 1 << 62
_RECORD_OVERHEAD = 31  # bytes of an MCAP message record besides its data
_RECORD_PREFIX = struct.Struct("<BQ")  # opcode, length of every MCAP record
_MAGIC = b"\x89MCAP0\r\n"
_FOOTER_RECORD = 9 + 20  # prefix, summary start, summary offset start (u64 each), CRC (u32)
_FOOTER_FIELDS = struct.Struct("<QQI")
#: Records a read from start to end parses; it passes over the other known ones (a header, a
#: schema: nothing a drive's reader uses).
_READ_OPCODES = frozenset(
    {Opcode.CHANNEL, Opcode.CHUNK, Opcode.MESSAGE, Opcode.MESSAGE_INDEX, Opcode.METADATA}
)
_KNOWN_OPCODES = frozenset(int(o) for o in Opcode)
#: Records of the summary section only, and the footer (at the end).
_SUMMARY_ONLY_OPCODES = frozenset(
    {
        Opcode.CHUNK_INDEX,
        Opcode.ATTACHMENT_INDEX,
        Opcode.METADATA_INDEX,
        Opcode.STATISTICS,
        Opcode.SUMMARY_OFFSET,
        Opcode.FOOTER,
    }
)
#: Records of the summary section (after the data end record).
_SUMMARY_OPCODES = frozenset(
    {
        Opcode.SCHEMA,
        Opcode.CHANNEL,
        Opcode.CHUNK_INDEX,
        Opcode.ATTACHMENT_INDEX,
        Opcode.METADATA_INDEX,
        Opcode.STATISTICS,
        Opcode.SUMMARY_OFFSET,
    }
)
_REORDER_WINDOW = 4096  # messages held to restore log-time order in a linear (truncated) scan
#: A chunk record's fixed start: opcode, length, message start and end time, uncompressed size
#: and CRC, and the length of its compression's name (then the name, then the records' length).
_CHUNK_HEAD = struct.Struct("<BQQQQII")
_CHUNK_COMPRESSIONS = (b"", b"lz4", b"zstd")
_RESYNC_BLOCK = 1 << 20  # bytes searched at a time for the next chunk after damaged framing
# What `DriveReader._warn_once` has logged: (what, file, size, modification time).
_WARNED: set[tuple[str, str, int, int]] = set()

_COMPRESSION = {
    None: CompressionType.NONE,
    "none": CompressionType.NONE,
    "zstd": CompressionType.ZSTD,
    "lz4": CompressionType.LZ4,
}


@dataclass(frozen=True)
class RecordedMessage:
    """One message of a drive: its topic, the message, and when it was received (`log_time_ns`,
    host clock, ns)."""

    topic: str
    message: Message
    log_time_ns: int


# -- writing -------------------------------------------------------------------------------------


class _UnbufferedFile:
    """A file opened for writing without a user-space buffer: every `write` reaches the
    operating system before it returns, so `size` is exactly what the file holds (what a killed
    process leaves), and nothing from a failed write lingers in a buffer to be written later,
    out of place. (The MCAP writer wraps a raw file object in a buffer, hence this class.)"""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Locked before it is emptied: two recorders given one new file both wrote it in
        # place, each truncating and interleaving the other's chunks.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            if not try_lock(fd, fcntl.LOCK_EX):
                raise _being_written_error(path)
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.ftruncate(fd, 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            # A regular file takes less than asked at a size limit; the next write fails.
            n = os.write(self._fd, view)
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
            self.size += n
            view = view[n:]
        return total

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        """Nothing to do: nothing is buffered."""

    def removed(self) -> bool:
        """Whether no name leads to the file any more (it, or its folder, was deleted): its
        writes still succeed, into a file that vanishes when it is closed."""
        return self._fd >= 0 and os.fstat(self._fd).st_nlink == 0

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def _being_written_error(path: Path) -> ReplayError:
    return ReplayError(
        f"{path}: is being written by another process (a recorder, an import); choose another "
        "file, or stop that one first"
    )


def check_not_being_written(path: Path) -> None:
    """Refuses to replace the drive at `path` while a `DriveWriter` writes it (`being_written`).

    Raises:
        ReplayError: naming the path.
    """
    if being_written(path):
        raise _being_written_error(path)


def being_written(path: Path) -> bool:
    """Whether a `DriveWriter` (of any process) is writing the drive at `path` now: replacing
    it (`--overwrite`) would leave that writer writing a file no name leads to, all it
    records lost. False for a path that cannot be opened (missing, unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        # A shared lock conflicts only with a writer's exclusive one; released at close.
        return not try_lock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)


class DriveWriter(Closeable):
    """Writes a drive (MCAP, see the module docstring for the layout).

    `compression`: "zstd" (default), "lz4" or None. `chunk_size`: uncompressed bytes per chunk
    (a killed writer loses the chunk being filled; `flush` cuts one early). `rig`: stored as
    the drive's rig (metadata `perception.rig`, stamp 0). `limits`: what a message may hold
    (`write` refuses more, as `wire.encode` does), stored with the drive where they are not the
    defaults (`LIMITS_METADATA`), so its readers decode with them. Not thread-safe: one thread
    writes.

    A failed write of the file (disk full, file size limit, I/O error) raises
    `DriveStorageError` and leaves the writer unusable (later calls raise it again, `close`
    only closes the file): the file keeps every chunk that reached it, and
    `messages_flushed` says how many messages those hold.

    Raises (constructor):
        ReplayError: the file cannot be created, or `compression` is unknown.
    """

    def __init__(
        self,
        path: Path,
        *,
        compression: str | None = "zstd",
        rig: Rig | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        limits: WireLimits = DEFAULT_LIMITS,
    ) -> None:
        self.path = Path(path)
        self.limits = limits
        if compression not in _COMPRESSION:
            raise ReplayError(
                f"{self.path}: unknown compression {compression!r} (zstd, lz4 or None)"
            )
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 byte, got {chunk_size}")
        try:
            self._file = _UnbufferedFile(self.path)
        except OSError as e:
            raise ReplayError(f"{self.path}: cannot create the drive ({e.strerror})") from e
        self._chunk_size = chunk_size
        self._chunk_bytes = 0
        # The MCAP writer needs only write, tell and flush of its output.
        output = cast(IO[bytes], self._file)
        self._writer = Writer(output, chunk_size=_NEVER, compression=_COMPRESSION[compression])
        self._schemas: dict[str, int] = {}
        self._channels: dict[tuple[str, str], tuple[int, int]] = {}
        self._sequence = 0
        self._seq_by_topic: dict[str, int] = {}
        self._closed = False
        self._broken: DriveStorageError | None = None
        self.bytes_written = 0
        """Payload bytes given to MCAP (before compression) so far."""
        self.messages_written = 0
        """Messages written so far (each is two MCAP messages, see the module docstring),
        including those of the chunk being filled."""
        self.messages_flushed = 0
        """Messages in the chunks the file holds: readable even if the process is killed now
        (not after a power loss: the operating system writes them to the disk later)."""
        try:
            self._writer.start(profile="", library="perception-node")
            if limits != DEFAULT_LIMITS:
                self.write_metadata(LIMITS_METADATA, _limits_document(limits))
            if rig is not None:
                self._add_rig_metadata(rig, 0)
        except BaseException:
            self._file.close()
            raise

    # -- schemas and channels

    def _schema(self, name: str, encoding: str, data: bytes) -> int:
        if name not in self._schemas:
            self._schemas[name] = self._writer.register_schema(
                name=name, encoding=encoding, data=data
            )
        return self._schemas[name]

    def _channel_ids(
        self, topic: str, type_name: str, fox: foxglove.FoxgloveMessage
    ) -> tuple[int, int]:
        key = (topic, type_name)
        ids = self._channels.get(key)
        if ids is not None:
            return ids
        meta = {_TYPE_KEY: type_name}
        base = self._writer.register_channel(
            topic=topic,
            message_encoding=fox.message_encoding,
            schema_id=self._schema(fox.schema_name, fox.schema_encoding, fox.schema_data),
            metadata=meta,
        )
        companion_schema = json.dumps(wire_json_schema(type_name)).encode()
        companion = self._writer.register_channel(
            topic=topic + COMPANION_SUFFIX,
            message_encoding="json",
            schema_id=self._schema(
                f"{COMPANION_SCHEMA}.{type_name}", "jsonschema", companion_schema
            ),
            metadata=meta,
        )
        self._channels[key] = (base, companion)
        return base, companion

    # -- writing

    def write(
        self, msg: Message, log_time_ns: int, topic: str | None = None, *, source: str = ""
    ) -> None:
        """Write `msg` received at `log_time_ns` (host clock, ns) on `topic` (default: its
        stream). The message is validated as `perception.msgs.wire.encode` does. `source`: the
        file or record an importer read it from, which the error for an invalid message then
        names (an 8 MP PNG above the wire's size limit was "camera/front: oversize message",
        naming no file).

        Raises:
            WireError: the message is invalid (a ReplayError, "SOURCE: cannot be stored in a
                drive (...)", when `source` is given); nothing is written.
            ReplayError: the drive is closed, or the message cannot be stored exactly; nothing
                is written.
            DriveStorageError: the chunk this message completed cannot be written (see the
                class docstring); the message counts in `messages_written` only.
            ValueError: `log_time_ns` is negative (a ReplayError when `source` is given).
        """
        try:
            self._write(msg, log_time_ns, topic)
        except (PerceptionError, ValueError) as e:
            if not source or isinstance(e, ReplayError):
                raise  # the drive's own fault (closed, full disk...) names the drive
            raise ReplayError(f"{source}: cannot be stored in a drive ({e})") from e

    def _write(self, msg: Message, log_time_ns: int, topic: str | None) -> None:
        self._check_open()
        if log_time_ns < 0:
            raise ValueError(f"log_time_ns must be >= 0, got {log_time_ns}")
        frames = wire.encode(msg, topic, limits=self.limits)
        name = bytes(frames[0]).decode("utf-8")
        doc = msgpack.unpackb(frames[1], raw=False)
        try:
            companion = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError) as e:
            # RecursionError: a document nested deeper than the interpreter's stack allows.
            raise ReplayError(
                f"{self.path}: {name}: message header is not representable as JSON "
                f"({type(e).__name__}: {e})"
            ) from e
        try:
            fox = foxglove.to_foxglove(msg, name)
        except SchemaError as e:
            raise ReplayError(f"{self.path}: cannot record {e}") from e
        payload = fox.payload
        base_id, companion_id = self._channel_ids(name, doc["type"], fox)
        sequence = self._sequence
        self._sequence = (self._sequence + 1) & 0xFFFFFFFF
        publish = max(0, msg.header.stamp_ns)
        # Both go into the chunk being filled (memory only): a pair is never split by a cut.
        self._writer.add_message(base_id, log_time_ns, payload, publish, sequence)
        self._writer.add_message(companion_id, log_time_ns, companion, publish, sequence)
        size = len(payload) + len(companion)
        self.bytes_written += size
        self.messages_written += 1
        self._chunk_bytes += size + 2 * _RECORD_OVERHEAD
        if self._chunk_bytes >= self._chunk_size:
            self.flush()

    def write_rig(self, rig: Rig, stamp_ns: int) -> None:
        """Store `rig` as the drive's rig (metadata `perception.rig`) and write it as a
        `RigMessage` on topic `rig` (stamp and log time `stamp_ns`, ns; clamped at 0 for the
        log time).

        Raises:
            ReplayError: the drive is closed or cannot be written.
        """
        self._check_open()
        self._add_rig_metadata(rig, stamp_ns)
        seq = self._seq_by_topic.get(RIG_TOPIC, 0)
        self._seq_by_topic[RIG_TOPIC] = seq + 1
        msg = RigMessage(Header(RIG_TOPIC, seq, stamp_ns, "vehicle"), rig.to_dict())
        self.write(msg, max(0, stamp_ns), RIG_TOPIC)

    def write_ground_truth(self, doc: dict[str, Any], log_time_ns: int) -> None:
        """Write one sweep's ground truth `doc` (`seq`, `stamp_ns`, `boxes`: see the module
        docstring) on `GROUND_TRUTH_TOPIC`, received at `log_time_ns` (write it with its
        sweep's log time so the drive's time span stays that of its sensor messages).

        Raises:
            ReplayError: the drive is closed, or `doc` lacks `seq`, `stamp_ns` or `boxes` or
                is not representable as JSON; nothing is written.
            DriveStorageError: as `write`.
            ValueError: `log_time_ns` is negative.
        """
        self._check_open()
        if log_time_ns < 0:
            raise ValueError(f"log_time_ns must be >= 0, got {log_time_ns}")
        missing = [k for k in ("seq", "stamp_ns", "boxes") if k not in doc]
        if missing:
            raise ReplayError(f"{self.path}: ground truth without {', '.join(missing)}")
        try:
            data = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ReplayError(
                f"{self.path}: ground truth is not representable as JSON ({e})"
            ) from e
        key = (GROUND_TRUTH_TOPIC, _GROUND_TRUTH_TYPE)
        if key not in self._channels:
            schema = json.dumps(_GROUND_TRUTH_JSON_SCHEMA, sort_keys=True).encode()
            channel = self._writer.register_channel(
                topic=GROUND_TRUTH_TOPIC,
                message_encoding="json",
                schema_id=self._schema(GROUND_TRUTH_SCHEMA, "jsonschema", schema),
                metadata={_TYPE_KEY: _GROUND_TRUTH_TYPE},
            )
            self._channels[key] = (channel, channel)
        channel_id = self._channels[key][0]
        sequence = self._sequence
        self._sequence = (self._sequence + 1) & 0xFFFFFFFF
        payload = data.encode()
        publish = max(0, int(doc["stamp_ns"]))
        self._writer.add_message(channel_id, log_time_ns, payload, publish, sequence)
        self.bytes_written += len(payload)
        self._chunk_bytes += len(payload) + _RECORD_OVERHEAD
        if self._chunk_bytes >= self._chunk_size:
            self.flush()

    def _add_rig_metadata(self, rig: Rig, stamp_ns: int) -> None:
        data = {"rig": json.dumps(rig.to_dict()), "stamp_ns": str(stamp_ns)}
        try:
            self._writer.add_metadata(RIG_METADATA, data)
        except OSError as e:
            raise self._storage_failed("cannot write the rig", e) from e

    def write_metadata(self, name: str, data: Mapping[str, str]) -> None:
        """An MCAP metadata record `name` holding `data` (what the drive is, for its readers:
        `DriveReader.metadata`).

        Raises:
            DriveStorageError: the file cannot be written.
        """
        try:
            self._writer.add_metadata(name, dict(data))
        except OSError as e:
            raise self._storage_failed(f"cannot write the metadata {name}", e) from e

    def flush(self) -> None:
        """Cut the chunk being filled (if it holds messages) and hand it to the operating
        system: every message written so far is then in the file, even if the process is killed
        (`messages_flushed`).

        Raises:
            DriveStorageError: the file cannot be written.
            ReplayError: the drive is closed.
        """
        self._check_open()
        start = self._file.size
        try:
            self._writer.flush()  # type: ignore[no-untyped-call]
        except OSError as e:
            if self._chunk_complete(start):
                self.messages_flushed = self.messages_written
            raise self._storage_failed("cannot write", e) from e
        self._check_not_removed()
        self.messages_flushed = self.messages_written
        self._chunk_bytes = 0

    def _check_not_removed(self) -> None:
        # A recorder whose folder was deleted under it wrote on, into a file no name led to,
        # and reported every message written.
        if self._file.removed():
            self.messages_flushed = 0
            self._broken = DriveStorageError(
                f"{self.path}: was deleted while being written (the file or its folder): the "
                f"{self.messages_written} message(s) written are lost with it"
            )
            raise self._broken

    def _chunk_complete(self, start: int) -> bool:
        """Whether a complete chunk record reached the file at `start` before a failed write
        (the message indexes that follow it are not needed to read it)."""
        end = self._file.size
        try:
            with self.path.open("rb") as f:
                pos = start
                while pos + _RECORD_PREFIX.size <= end:
                    f.seek(pos)
                    opcode, length = _RECORD_PREFIX.unpack(f.read(_RECORD_PREFIX.size))
                    pos += _RECORD_PREFIX.size + length
                    if pos > end:
                        return False
                    if opcode == Opcode.CHUNK:
                        return True
        except OSError:
            return False
        return False

    def _storage_failed(self, what: str, e: OSError) -> DriveStorageError:
        self._broken = DriveStorageError(
            f"{self.path}: {what} ({e.strerror or e}); the drive holds the "
            f"{self.messages_flushed} message(s) written before"
        )
        return self._broken

    def _check_open(self) -> None:
        if self._broken is not None:
            raise self._broken
        if self._closed:
            raise ReplayError(f"{self.path}: drive is closed")

    def close(self) -> None:
        """Finish the file (last chunk, summary, footer) and close it. Idempotent. After a
        storage failure it only closes the file (which reads as a truncated drive).

        Raises:
            DriveStorageError: the file cannot be written (the chunks written before are kept;
                without its summary and footer the file reads as a truncated drive).
        """
        if self._closed:
            return
        try:
            if self._broken is None:
                self.flush()
                try:
                    self._writer.finish()  # type: ignore[no-untyped-call]
                except OSError as e:
                    raise self._storage_failed("cannot finish the drive (summary)", e) from e
                self._check_not_removed()
        finally:
            self._closed = True
            self._file.close()


# -- reading -------------------------------------------------------------------------------------


_Raw = tuple[Channel, McapMessage]


class DriveReader:
    """Reads a drive written by `DriveWriter`.

    A complete file is read through its index (log-time order). A file without a usable index
    is read from start to end, every chunk's CRC checked: a truncated file (no footer: the
    recorder was killed), read up to its last complete record (`truncated` is then True, and
    one warning, once a read reaches the cut, names where the data ends); a file whose summary
    section (the index) is damaged (warned about); a file written without one. There a damaged
    record whose framing is intact costs its own contents only: the read goes on with the next
    record. Each `messages` call opens the file anew, so several iterations may run one after
    the other.

    `limits`: the wire limits its messages are decoded with (a message above them cannot be
    decoded: `messages`); default: those the drive was written under (`limits`).

    Raises (constructor):
        ReplayError: the file is missing, unreadable or not an MCAP file (names the path).
    """

    def __init__(self, path: Path, *, limits: WireLimits | None = None) -> None:
        self.path = Path(path)
        self.truncated = False
        self._limits = limits
        self._recorded: WireLimits | None = None
        self._channels: dict[int, Channel] | None = None
        self._counts: dict[str, int] | None = None
        self._rig: Rig | None = None
        self._rig_loaded = False
        try:
            # Opened without blocking, and checked: a FIFO with no writer blocked the open
            # itself, and a device (/dev/zero) never ends.
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise ReplayError(
                        f"{self.path}: not a regular file (a device, pipe or socket), so no drive"
                    )
                magic = f.read(len(_MAGIC))
                if magic != _MAGIC:
                    raise ReplayError(f"{self.path}: not an MCAP file")
                self._summary = self._checked_summary(f)
        except OSError as e:
            raise ReplayError(f"{self.path}: cannot read the drive ({e})") from e

    @property
    def indexed(self) -> bool:
        """Whether the drive is read through its summary section (its index); False where it
        is read from start to end (a truncated drive, one whose summary is damaged, or one
        written without a summary)."""
        return self._summary is not None

    def _warn_once(self, what: str, text: str, level: int = logging.WARNING) -> None:
        """Log `text` once per process for this file as it is now: a command opens a drive
        several times (its contents, its topics, its messages), and a pass over a truncated
        file meets the same cut each time."""
        try:
            st = self.path.stat()
        except OSError:
            return
        key = (what, str(self.path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _WARNED:
            _WARNED.add(key)
            log.log(level, "%s", text)

    def _checked_summary(self, f: IO[bytes]) -> Summary | None:
        """The drive's summary, checked against its CRC and the file; None (with a log line
        saying why) where the drive is to be read from start to end."""
        size = os.fstat(f.fileno()).st_size
        footer_at = size - len(_MAGIC) - _FOOTER_RECORD
        f.seek(max(footer_at, 0), io.SEEK_SET)
        tail = f.read(_FOOTER_RECORD + len(_MAGIC))
        if (
            footer_at < len(_MAGIC)
            or tail[-len(_MAGIC) :] != _MAGIC
            or _RECORD_PREFIX.unpack_from(tail) != (Opcode.FOOTER, _FOOTER_RECORD - 9)
        ):
            # Said once the read reaches the cut (`_cut`, `_truncated_end`): one line naming
            # what was lost, not one now and another then.
            self.truncated = True
            return None
        summary_start, _offsets_start, summary_crc = _FOOTER_FIELDS.unpack_from(tail, 9)
        if summary_start == 0:
            # Complete, as some MCAP writers leave it: nothing is wrong but the speed.
            self._warn_once(
                "no summary",
                f"{self.path}: the drive has no summary section (no index); reading it from "
                "start to end",
                logging.INFO,
            )
            return None
        try:
            summary = self._summary_at(f, summary_start, footer_at, summary_crc)
        except Exception as e:  # damaged bytes raise assorted errors in the mcap library
            why = str(e) if isinstance(e, _SummaryFaultError) else _why(e)
            self._warn_once(
                "damaged summary",
                f"{self.path}: the drive's summary section (its index) is damaged ({why}); "
                "reading the drive from start to end",
            )
            return None
        return summary

    def _summary_at(
        self, f: IO[bytes], summary_start: int, footer_at: int, summary_crc: int
    ) -> Summary:
        """The summary section starting at `summary_start`, read only if its CRC (over it and
        the footer's fields before the CRC; 0: none stored) matches, and each index in it
        pointing into the data section. A damaged index made the reader throw an intact chunk
        away, or read past the end of the file."""
        if not len(_MAGIC) <= summary_start <= footer_at:
            raise _SummaryFaultError(
                f"the footer puts it at byte {summary_start}, outside the file"
            )
        if summary_crc != 0:
            f.seek(summary_start, io.SEEK_SET)
            crc, left = 0, footer_at + _FOOTER_RECORD - 4 - summary_start
            while left > 0:
                piece = f.read(min(left, 1 << 20))
                if not piece:
                    raise _SummaryFaultError("the file ends inside it")
                crc = zlib.crc32(piece, crc)
                left -= len(piece)
            if crc != summary_crc:
                raise _SummaryFaultError(
                    f"its CRC is {crc:#010x}, its footer says {summary_crc:#010x}"
                )
        f.seek(0, io.SEEK_SET)
        summary = SeekingReader(f).get_summary()
        if summary is None:
            raise _SummaryFaultError("the footer points at no summary")
        data_end = summary_start
        for index in summary.chunk_indexes:
            chunk_end = index.chunk_start_offset + index.chunk_length
            indexes_end = chunk_end + index.message_index_length
            if not (
                len(_MAGIC) <= index.chunk_start_offset < chunk_end <= indexes_end <= data_end
                and all(chunk_end <= o < indexes_end for o in index.message_index_offsets.values())
            ):
                raise _SummaryFaultError(
                    f"a chunk index points outside the data (chunk at byte "
                    f"{index.chunk_start_offset}, {index.chunk_length} bytes)"
                )
        for meta in summary.metadata_indexes:
            if not len(_MAGIC) <= meta.offset < meta.offset + meta.length <= data_end:
                raise _SummaryFaultError(
                    f"a metadata index points outside the data (record at byte {meta.offset}, "
                    f"{meta.length} bytes)"
                )
        if summary.statistics is not None:
            unknown = set(summary.statistics.channel_message_counts) - set(summary.channels)
            if unknown:
                raise _SummaryFaultError(
                    f"its statistics count messages of unknown channels {sorted(unknown)}"
                )
        return summary

    # -- raw records

    def _iter_raw(
        self,
        topics: Sequence[str] | None,
        start_ns: int | None,
        on_damage: Callable[[DamagedDriveError], None] | None = None,
    ) -> Iterator[_Raw]:
        """The raw records of `topics` from `start_ns` on, in log-time order. A chunk that
        cannot be read is given to `on_damage` as a DamagedDriveError and skipped; without
        it, that error is raised."""

        def damaged_error(error: DamagedDriveError) -> None:
            if on_damage is None:
                raise error
            on_damage(error)

        try:
            f = self.path.open("rb")
        except OSError as e:
            raise ReplayError(f"{self.path}: cannot read the drive ({e})") from e
        with f:
            summary = self._summary
            if summary is None or not summary.chunk_indexes:
                # No chunk indexed (an empty drive, or messages outside chunks): the same read
                # from start to end, which passes over damage.
                yield from self._iter_linear(f, topics, start_ns, damaged_error)
                return

            def damaged(chunk: DamagedChunk) -> None:
                damaged_error(self._damage_error(chunk, summary))

            yield from indexed_messages(f, summary, topics, start_ns, damaged)

    def _damage_error(self, chunk: DamagedChunk, summary: Summary) -> DamagedDriveError:
        """The error of a chunk that could not be read, naming where it lies and what it held."""
        # Seconds into the drive read better than epoch nanoseconds.
        stats = summary.statistics
        zero = chunk.start_ns if stats is None else min(stats.message_start_time, chunk.start_ns)
        where = (
            f"{self.path}: a damaged chunk (bytes {chunk.offset} to {chunk.offset + chunk.length}"
            f", {(chunk.start_ns - zero) / 1e9:.3f} to {(chunk.end_ns - zero) / 1e9:.3f} s into "
            f"the drive) could not be read ({chunk.error})"
        )
        return _lost(where, chunk.messages, summary.channels)

    def _iter_linear(
        self,
        f: IO[bytes],
        topics: Sequence[str] | None,
        start_ns: int | None,
        on_damage: Callable[[DamagedDriveError], None],
    ) -> Iterator[_Raw]:
        """`_iter_raw` from start to end: a damaged record is given to `on_damage` with what it
        cost (a chunk's message indexes follow it, so they tell how many of which channel) and
        the read goes on with the next record."""
        wanted = None if topics is None else set(topics)
        channels: dict[int, Channel] = {}
        heap: list[tuple[int, int, int, Channel, McapMessage]] = []
        order = 0
        damage: _DamagedRecord | None = None
        # Records per channel id of the damaged record's message indexes; None where one of
        # those is damaged too.
        damage_counts: dict[int, int] | None = {}
        # Messages of channels whose definition was lost with a damaged record: their sequence
        # numbers (a message and its companion share one, the module docstring).
        orphans: set[int] = set()
        for record in self._linear_records(f):
            if isinstance(record, MessageIndex):
                if damage is not None and damage_counts is not None:
                    n = len(record.records)
                    damage_counts[record.channel_id] = damage_counts.get(record.channel_id, 0) + n
                continue
            if isinstance(record, _DamagedRecord) and record.opcode == Opcode.MESSAGE_INDEX:
                # An intact chunk does not need its message indexes.
                if damage is not None:
                    damage_counts = None
                continue
            if damage is not None:
                self._report_damage(damage, damage_counts, channels, on_damage, wanted)
                damage, damage_counts = None, {}
            if isinstance(record, _DamagedRecord):
                # A metadata record costs no message: `metadata` says so when it is asked for.
                if record.opcode != Opcode.METADATA:
                    damage = record
            elif isinstance(record, Channel):
                channels[record.id] = record
            elif isinstance(record, McapMessage):
                if start_ns is not None and record.log_time < start_ns:
                    continue
                channel = channels.get(record.channel_id)
                if channel is None:
                    orphans.add(record.sequence)
                    continue
                if wanted is not None and channel.topic not in wanted:
                    continue
                heapq.heappush(heap, (record.log_time, order, record.channel_id, channel, record))
                order += 1
                if len(heap) > _REORDER_WINDOW:
                    item = heapq.heappop(heap)
                    yield item[3], item[4]
        if damage is not None:
            self._report_damage(damage, damage_counts, channels, on_damage, wanted)
        if orphans:
            on_damage(
                DamagedDriveError(
                    f"{self.path}: {len(orphans)} message(s) of channels defined in damaged "
                    "data could not be read (their topics are unknown)",
                    len(orphans),
                )
            )
        while heap:
            item = heapq.heappop(heap)
            yield item[3], item[4]

    def _report_damage(
        self,
        damage: _DamagedRecord,
        counts: dict[int, int] | None,
        channels: Mapping[int, Channel],
        on_damage: Callable[[DamagedDriveError], None],
        wanted: set[str] | None,
    ) -> None:
        """Reports a damaged record of a read from start to end: what it cost to `on_damage`,
        a record that held no message (a schema, an attachment) as a warning. A chunk whose
        indexes say it held none of the `wanted` topics cost this read nothing (as a read
        through the index passes it over: `mcap_chunks`)."""
        if (
            wanted is not None
            and counts
            and all(c in channels and channels[c].topic not in wanted for c in counts)
        ):
            return
        kind = _record_kind(damage.opcode)
        where = (
            f"{self.path}: a damaged {kind} (bytes {damage.offset} to {damage.end}) could not "
            f"be read ({damage.error})"
        )
        if damage.framing:
            where = f"{self.path}: {damage.error}"
            on_damage(DamagedDriveError(f"{where}; how many messages they held is unknown", 1))
        elif counts is None or counts or damage.opcode == Opcode.CHUNK:
            # Message indexes follow only a chunk: the damaged opcode was one.
            on_damage(_lost(where, counts or None, channels))
        elif damage.opcode == Opcode.MESSAGE:
            on_damage(DamagedDriveError(f"{where}: 1 message lost", 1))
        else:
            self._warn_once(f"damaged {damage.offset}", f"{where}; passed over")

    def _linear_records(self, f: IO[bytes], *, open_chunks: bool = True) -> Iterator[Any]:
        """The records of the data section from start to end (with `open_chunks` the records
        of each chunk, its CRC checked, in the chunk's place; without, none of a chunk), and
        a `_DamagedRecord` for each that cannot be read. A record whose length runs past the
        end of the file ends the read: a truncated file's cut (logged once, `truncated` set),
        else a damaged length field (a last `_DamagedRecord` with `framing`), after which no
        record can be found."""
        size = os.fstat(f.fileno()).st_size
        pos = len(_MAGIC)
        in_summary = False
        while True:
            if pos >= size:
                if self.truncated:
                    self._truncated_end(
                        "its summary is cut" if in_summary else "cut between two records"
                    )
                return
            f.seek(pos, io.SEEK_SET)
            prefix = f.read(_RECORD_PREFIX.size)
            if len(prefix) == _RECORD_PREFIX.size:
                opcode, length = _RECORD_PREFIX.unpack(prefix)
                end = pos + _RECORD_PREFIX.size + length
            else:
                opcode, length, end = -1, -1, size + 1
            if end > size:
                if in_summary:
                    if self.truncated:
                        self._truncated_end("its summary is cut")
                    return
                # A damaged length (or bytes cut out): the chunks after it are intact, and
                # found by their headers; ending the read here lost them without a count.
                resume = _next_chunk(f, pos + 1, size)
                if resume is None:
                    yield from self._cut(pos, opcode, length, size)
                    return
                yield self._skipped(pos, opcode, length, size, resume)
                pos = resume
                continue
            start, pos = pos, end
            if opcode == Opcode.FOOTER and end + len(_MAGIC) == size:
                return
            if opcode == Opcode.DATA_END:
                in_summary = True
                continue
            # The summary repeats what the data section holds (a damaged one is read past).
            if in_summary and opcode in _SUMMARY_OPCODES:
                continue
            if opcode not in _READ_OPCODES:
                # A record that has no place here is a damaged opcode (a chunk's, most likely:
                # the message indexes that follow say).
                if opcode >= 0x80:  # private records (the MCAP specification)
                    continue
                if opcode not in _KNOWN_OPCODES:
                    yield _DamagedRecord(start, end, opcode, f"unknown opcode {opcode:#04x}")
                elif not in_summary and (
                    opcode in _SUMMARY_ONLY_OPCODES or (opcode == Opcode.HEADER and start > 8)
                ):
                    error = f"a {_record_kind(opcode)} has no place in the data section"
                    yield _DamagedRecord(start, end, opcode, error)
                continue
            if opcode == Opcode.CHUNK and not open_chunks:
                continue
            body = f.read(length)
            try:
                record = parse_record(opcode, body)
                if isinstance(record, Chunk):
                    yield from chunk_records(record)
                else:
                    yield record
            except Exception as e:  # the libraries raise assorted errors on damaged bytes
                yield _DamagedRecord(start, end, opcode, _why(e), _metadata_name(opcode, body))

    def _truncated_end(self, where: str) -> None:
        """Says, once, that the drive is truncated and where its data ends (`where`)."""
        self._warn_once(
            "truncated",
            f"{self.path}: the drive is truncated (no footer: the recorder did not finish it); "
            f"read up to its last complete record: {where}",
        )

    def _skipped(
        self, pos: int, opcode: int, length: int, size: int, resume: int
    ) -> _DamagedRecord:
        """The bytes from a record whose length runs past the end of the file (at `pos`) to
        the next chunk (at `resume`), as a damaged record (`_linear_records`)."""
        if length < 0:
            what = f"the record at byte {pos} is cut short"
        else:
            what = (
                f"the {_record_kind(opcode)} at byte {pos} claims {length} bytes, "
                f"{size - pos - _RECORD_PREFIX.size} remain"
            )
        return _DamagedRecord(
            pos,
            resume,
            opcode,
            f"a damaged record length ({what}): the {resume - pos} bytes up to the next chunk "
            f"(at byte {resume}) cannot be read",
            framing=True,
        )

    def _cut(self, pos: int, opcode: int, length: int, size: int) -> Iterator[_DamagedRecord]:
        """The end of a read from start to end at a record running past the end of the file
        (`_linear_records`)."""
        if length < 0:
            what = f"the record at byte {pos} is cut short ({size - pos} of its 9 prefix bytes)"
        else:
            what = (
                f"the {_record_kind(opcode)} at byte {pos} claims {length} bytes, "
                f"{size - pos - _RECORD_PREFIX.size} remain"
            )
        if self.truncated:
            self._truncated_end(f"its data ends in an incomplete record ({what})")
            return
        # The file has its footer, so this is no cut: a damaged length field, and without it no
        # later record can be found.
        yield _DamagedRecord(
            pos,
            size,
            opcode,
            f"a damaged record length ({what}): the {size - pos} bytes from there on cannot be "
            "read",
            framing=True,
        )

    # -- public API

    def messages(
        self,
        topics: Sequence[str] | None = None,
        start_ns: int | None = None,
        *,
        on_error: Callable[[ReplayError], None] | None = None,
    ) -> Iterator[RecordedMessage]:
        """The drive's messages in log-time order, optionally only `topics` and those received
        at or after `start_ns` (host clock, ns). `on_error`: called with the error of a message
        that cannot be decoded, which is then skipped (a damaged record costs that message
        only), and with a DamagedDriveError for a chunk that cannot be read (its messages are
        skipped; the error says how many); without it, that error is raised.

        Raises:
            ReplayError: a message cannot be decoded (names the path and topic) or a chunk
                cannot be read (DamagedDriveError; neither with `on_error`), or the file cannot
                be read.
        """

        def damaged(error: DamagedDriveError) -> None:
            if on_error is None:
                raise error
            on_error(error)

        for topic, base, comp in self._pairs(topics, start_ns, damaged):
            try:
                msg = self._decode(topic, base, comp)
            except ReplayError as e:
                if on_error is None:
                    raise
                on_error(e)
                continue
            yield RecordedMessage(topic, msg, base.log_time)

    def _pairs(
        self,
        topics: Sequence[str] | None,
        start_ns: int | None,
        on_damage: Callable[[DamagedDriveError], None] | None = None,
    ) -> Iterator[tuple[str, McapMessage, McapMessage]]:
        """(topic, Foxglove record, companion record) of each message, undecoded; a damaged
        chunk as `_iter_raw`."""
        channel_topics = None
        if topics is not None:
            channel_topics = [t for topic in topics for t in (topic, topic + COMPANION_SUFFIX)]
        pending: dict[tuple[str, int], tuple[McapMessage | None, McapMessage | None]] = {}
        for channel, record in self._iter_raw(channel_topics, start_ns, on_damage):
            if _is_ground_truth(channel):
                continue  # not a project message (see the module docstring)
            companion = channel.topic.endswith(COMPANION_SUFFIX)
            topic = channel.topic[: -len(COMPANION_SUFFIX)] if companion else channel.topic
            key = (topic, record.sequence)
            base, comp = pending.pop(key, (None, None))
            if companion:
                comp = record
            else:
                base = record
            if base is None or comp is None:
                pending[key] = (base, comp)
                continue
            yield topic, base, comp
        if pending:
            log.warning(
                "%s: %d message(s) without their companion part skipped (cut file?)",
                self.path,
                len(pending),
            )

    def _decode(self, topic: str, base: McapMessage, comp: McapMessage) -> Message:
        where = f"{self.path}: {topic} at log time {base.log_time}"
        try:
            doc = json.loads(comp.data)
            buffers = foxglove.wire_buffers(doc["type"], doc["buffers"], base.data)
            frames: list[bytes | memoryview] = [
                topic.encode("utf-8"),
                msgpack.packb(doc, use_bin_type=True),
                *buffers,
            ]
            _topic, msg = wire.decode(frames, self.limits)
        except Exception as e:  # recorded bytes are input: any fault is this message's
            raise ReplayError(
                f"{where}: cannot decode ({type(e).__name__}: {e}){self._held_by(e)}"
            ) from e
        return msg

    def _held_by(self, error: Exception) -> str:
        """Where a message is above limits the reader was given, not those the drive was
        recorded under (a config's, narrower than those of the node that recorded it): said,
        or the message reads as damaged."""
        if not above_a_limit(error) or self._recorded_limits() == self.limits:
            return ""
        return (
            "; the drive was recorded under limits that allow it (its node's `limits:` were "
            "raised): this read holds it to the config's"
        )

    def ground_truth(self) -> list[dict[str, Any]]:
        """The documents of the ground-truth channel (see the module docstring), in log-time
        order; empty when the drive has none.

        Raises:
            ReplayError: a document is not a JSON object with `seq`, `stamp_ns` and `boxes`
                (names the path and log time), or the file cannot be read.
        """
        docs: list[dict[str, Any]] = []
        for channel, record in self._iter_raw([GROUND_TRUTH_TOPIC], None):
            if not _is_ground_truth(channel):
                continue
            try:
                doc = json.loads(record.data)
                if not isinstance(doc, dict) or not {"seq", "stamp_ns", "boxes"} <= doc.keys():
                    raise ValueError("expected an object with seq, stamp_ns and boxes")
            except ValueError as e:
                raise ReplayError(
                    f"{self.path}: {GROUND_TRUTH_TOPIC} at log time {record.log_time}: "
                    f"malformed ground truth ({e})"
                ) from e
            except RecursionError:  # the parser recurses per nesting level
                raise ReplayError(
                    f"{self.path}: {GROUND_TRUTH_TOPIC} at log time {record.log_time}: "
                    "malformed ground truth (arrays and objects nested too deeply)"
                ) from None
            docs.append(doc)
        return docs

    @property
    def rig(self) -> Rig | None:
        """The drive's rig: the `perception.rig` metadata if present, else the first
        `RigMessage` of the drive, else None. A damaged metadata record is taken for absent,
        with a warning, where the drive holds a RigMessage.

        Raises:
            ReplayError: the stored rig document is invalid, or its metadata record is damaged
                and the drive holds no RigMessage.
        """
        if not self._rig_loaded:
            self._rig = self._load_rig()
            self._rig_loaded = True
        return self._rig

    def _load_rig(self) -> Rig | None:
        damage: ReplayError | None = None
        try:
            doc = self._rig_metadata()
        except _DamagedMetadataError as e:
            # The rig also travels as RigMessages (`write_rig`): a damaged record costs the
            # drive its rig only where it holds none.
            doc, damage = None, e
        if doc is None:
            rig_topics = [
                c.topic
                for c in self._channel_map().values()
                if c.metadata.get(_TYPE_KEY) == "RigMessage"
                and not c.topic.endswith(COMPANION_SUFFIX)
            ]
            if rig_topics:
                # A damaged rig message is passed over for the next (whoever reads the drive's
                # messages counts the damage).
                for rec in self.messages(topics=rig_topics, on_error=_passed_over):
                    if isinstance(rec.message, RigMessage):
                        doc = rec.message.rig
                        if damage is not None:
                            self._warn_once(
                                "rig from messages",
                                f"{damage}; the rig is taken from its first RigMessage (topic "
                                f"{rec.topic})",
                            )
                        break
        if doc is None:
            if damage is not None:
                raise ReplayError(f"{damage}, and the drive holds no RigMessage to take it from")
            return None
        try:
            return Rig.from_dict(doc, source=str(self.path))
        except CalibrationError as e:
            raise ReplayError(f"{self.path}: the drive's rig is invalid ({e})") from e

    def _rig_metadata(self) -> dict[str, Any] | None:
        data = self.metadata(RIG_METADATA)
        if data is not None and "rig" in data:
            try:
                doc = json.loads(data["rig"])
            except ValueError as e:
                why = f"not JSON: {e}"
            except RecursionError:  # the parser recurses per nesting level
                why = "not JSON (arrays and objects nested too deeply)"
            else:
                if isinstance(doc, dict):
                    return doc
                why = f"a JSON {type(doc).__name__}, not an object"
            raise ReplayError(
                f"{self.path}: the drive's rig is invalid (its {RIG_METADATA} metadata is {why})"
            )
        return None

    @property
    def limits(self) -> WireLimits:
        """The wire limits its messages are decoded with: the reader's `limits`, else those the
        drive was written under (its `LIMITS_METADATA`, each never below its default; the
        defaults where it has none). A record that cannot be read or holds no valid limits is
        warned about once, and the defaults are used: it costs only the messages above them."""
        if self._limits is None:
            self._limits = self._recorded_limits()
        return self._limits

    def _recorded_limits(self) -> WireLimits:
        # Once: `_held_by` asks again for each message above a config's limits, and a drive
        # read from start to end (truncated) is scanned for its metadata.
        if self._recorded is None:
            self._recorded = self._read_recorded_limits()
        return self._recorded

    def _read_recorded_limits(self) -> WireLimits:
        try:
            data = self.metadata(LIMITS_METADATA)
        except _DamagedMetadataError as e:
            problem = str(e)
        else:
            if data is None:
                return DEFAULT_LIMITS
            limits, problem = _limits_from_document(data)
            if limits is not None:
                return limits
            problem = f"{self.path}: the drive's {LIMITS_METADATA} metadata is invalid ({problem})"
        self._warn_once(
            "limits",
            f"{problem}; its messages are decoded with the default limits, so those above them "
            "cannot be read",
        )
        return DEFAULT_LIMITS

    def metadata(self, name: str) -> dict[str, str] | None:
        """The first intact MCAP metadata record `name` of the drive
        (`DriveWriter.write_metadata`), None when it has none. A damaged one before it is
        passed over with a warning.

        Raises:
            ReplayError: the drive's only record(s) `name` are damaged (names the path and
                where), or the file cannot be read.
        """
        damaged: _DamagedRecord | None = None
        try:
            with self.path.open("rb") as f:
                for record in self._metadata_records(f):
                    if isinstance(record, _DamagedRecord):
                        # A record whose name cannot be read either may be the one asked for.
                        if damaged is None and record.name in (name, None):
                            damaged = record
                    elif record.name == name:
                        if damaged is not None and damaged.name == name:
                            self._warn_once(
                                f"metadata {damaged.offset}",
                                f"{self._metadata_damage(name, damaged)}; a later one is used",
                            )
                        return dict(record.metadata)
        except OSError as e:
            raise ReplayError(f"{self.path}: cannot read the drive ({e})") from e
        if damaged is not None:
            raise _DamagedMetadataError(self._metadata_damage(name, damaged))
        return None

    def _metadata_damage(self, name: str, damaged: _DamagedRecord) -> str:
        which = "its" if damaged.name == name else "a metadata record whose name is unreadable,"
        return (
            f"{self.path}: the drive's {name} metadata cannot be read: {which} record (bytes "
            f"{damaged.offset} to {damaged.end}) is damaged ({damaged.error})"
        )

    def _metadata_records(self, f: IO[bytes]) -> Iterator[Metadata | _DamagedRecord]:
        """The drive's metadata records in file order, a `_DamagedRecord` (named from the index
        where the drive has one) for each that cannot be read."""
        summary = self._summary
        if summary is None:
            for record in self._linear_records(f, open_chunks=False):
                damaged = isinstance(record, _DamagedRecord) and record.opcode == Opcode.METADATA
                if damaged or isinstance(record, Metadata):
                    yield record
            return
        for index in sorted(summary.metadata_indexes, key=lambda i: i.offset):
            end = index.offset + index.length
            try:
                body = read_record(f, index.offset, index.length, Opcode.METADATA)
                yield parse_record(Opcode.METADATA, body)
            except OSError:
                raise
            except Exception as e:  # the libraries raise assorted errors on damaged bytes
                yield _DamagedRecord(index.offset, end, Opcode.METADATA, _why(e), index.name)

    def _channel_map(self) -> dict[int, Channel]:
        if self._channels is None:
            if self._summary is not None:
                self._channels = dict(self._summary.channels)
            else:
                with self.path.open("rb") as f:
                    self._channels = {
                        r.id: r for r in self._linear_records(f) if isinstance(r, Channel)
                    }
        return self._channels

    def topics(self) -> dict[str, int]:
        """Message counts per topic (companion topics are not listed). In a drive read from
        start to end, those that can be read."""
        if self._counts is None:
            counts: dict[str, int] = {}
            summary = self._summary
            if summary is not None and summary.statistics is not None:
                for channel_id, n in summary.statistics.channel_message_counts.items():
                    channel = summary.channels[channel_id]
                    if channel.topic.endswith(COMPANION_SUFFIX) or _is_ground_truth(channel):
                        continue
                    counts[channel.topic] = counts.get(channel.topic, 0) + n
            else:
                # Damage is reported by whoever reads the messages.
                for topic, _base, _comp in self._pairs(None, None, _passed_over):
                    counts[topic] = counts.get(topic, 0) + 1
            self._counts = counts
        return dict(self._counts)

    @property
    def start_ns(self) -> int | None:
        """The first message's log time (host clock, ns), or None for an empty drive."""
        summary = self._summary
        if summary is not None and summary.statistics is not None:
            if summary.statistics.message_count == 0:
                return None
            return int(summary.statistics.message_start_time)
        for _topic, base, _comp in self._pairs(None, None, _passed_over):
            return int(base.log_time)
        return None


@dataclass(frozen=True)
class _DamagedRecord:
    """A record of a read from start to end that could not be read: where it lies (byte
    offsets), its opcode, what failed, the name of a metadata record where that can be read,
    and whether its framing (length) was damaged (`framing`: nothing after it can be found)."""

    offset: int
    end: int
    opcode: int
    error: str
    name: str | None = None
    framing: bool = False


class _SummaryFaultError(ValueError):
    """What is wrong with a drive's summary section, found by checking it (`_summary_at`)."""


class _DamagedMetadataError(ReplayError):
    """A metadata record asked for is damaged (`DriveReader.metadata`)."""


def _lost(
    where: str, counts: Mapping[int, int] | None, channels: Mapping[int, Channel]
) -> DamagedDriveError:
    """The error of a damaged chunk `where` that held `counts` records per channel id (None:
    unknown)."""
    if counts is None:
        return DamagedDriveError(
            f"{where}; its messages are lost (how many is unknown: its index is damaged too)", 1
        )
    lost: dict[str, int] = {}
    unknown = 0
    for channel_id, n in counts.items():
        channel = channels.get(channel_id)
        if channel is None:
            unknown += n
            continue
        # A project message is its record and its companion's, in one chunk (the module
        # docstring): counted once, by its record.
        if channel.topic.endswith(COMPANION_SUFFIX):
            continue
        if _is_ground_truth(channel):  # no project message (the module docstring)
            continue
        lost[channel.topic] = lost.get(channel.topic, 0) + n
    total = sum(lost.values())
    detail = ", ".join(f"{topic} {n}" for topic, n in sorted(lost.items()))
    if unknown:
        # Channels defined in the damaged chunk itself: a message is two records of them.
        total += (unknown + 1) // 2
        detail += (", " if detail else "") + f"{(unknown + 1) // 2} of unknown topics"
    return DamagedDriveError(
        f"{where}: {total} message(s) lost" + (f" ({detail})" if detail else ""), total
    )


def _next_chunk(f: IO[bytes], start: int, size: int) -> int | None:
    """The offset of the first chunk record at or after `start` whose header is intact (its
    length within the file, its compression one MCAP names, its records' length what the
    rest of the record holds), None where there is none. A chance match inside compressed
    data would need all of those to agree."""
    # A header is at most this long: its fixed start, "zstd" and the records' length (u64).
    head = _CHUNK_HEAD.size + 4 + 8
    block_start = start
    while block_start < size:
        f.seek(block_start, io.SEEK_SET)
        block = f.read(_RESYNC_BLOCK + head)
        if not block:
            return None
        i = block.find(b"\x06")
        # Candidates in the block's first _RESYNC_BLOCK bytes; the next block overlaps the rest.
        while 0 <= i < _RESYNC_BLOCK:
            if _is_chunk_head(block, i, block_start + i, size):
                return block_start + i
            i = block.find(b"\x06", i + 1)
        block_start += _RESYNC_BLOCK
    return None


def _is_chunk_head(block: bytes, i: int, offset: int, size: int) -> bool:
    """Whether an intact chunk record's header starts at `block[i]` (at `offset` in a file
    of `size` bytes)."""
    if i + _CHUNK_HEAD.size > len(block):
        return False
    opcode, length, start_ns, end_ns, _usize, _crc, name_len = _CHUNK_HEAD.unpack_from(block, i)
    if (
        opcode != Opcode.CHUNK
        or offset + _RECORD_PREFIX.size + length > size
        or start_ns > end_ns
        or name_len > 4
    ):
        return False
    name_at = i + _CHUNK_HEAD.size
    if name_at + name_len + 8 > len(block):
        return False
    if block[name_at : name_at + name_len] not in _CHUNK_COMPRESSIONS:
        return False
    (records_len,) = struct.unpack_from("<Q", block, name_at + name_len)
    return bool(records_len == length - (_CHUNK_HEAD.size - _RECORD_PREFIX.size + name_len + 8))


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _record_kind(opcode: int) -> str:
    try:
        return f"{Opcode(opcode).name.lower().replace('_', ' ')} record"
    except ValueError:
        return "record"


def _metadata_name(opcode: int, body: bytes) -> str | None:
    """The name of a damaged metadata record where that much of it can be read."""
    if opcode != Opcode.METADATA or len(body) < 4:
        return None
    n = int.from_bytes(body[:4], "little")
    if len(body) < 4 + n:
        return None
    try:
        return body[4 : 4 + n].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _limits_document(limits: WireLimits) -> dict[str, str]:
    """`limits` as `LIMITS_METADATA` holds them."""
    return {f.name: str(getattr(limits, f.name)) for f in dataclasses.fields(WireLimits)}


# A limit's value as the metadata holds it: a positive decimal integer of at most 19 digits, so
# that no text of a damaged record is converted at length.
_LIMIT_VALUE = re.compile(r"[1-9][0-9]{0,18}")


def _limits_from_document(data: Mapping[str, str]) -> tuple[WireLimits | None, str]:
    """The limits a `LIMITS_METADATA` record holds, each never below its default, or None and
    what is wrong. A limit it does not name keeps its default (an older writer's drive); one
    this reader does not know is passed over (a newer writer's: this reader's decoder checks
    no such bound anyway)."""
    known = {f.name for f in dataclasses.fields(WireLimits)}
    values: dict[str, int] = {}
    for key, text in data.items():
        if key not in known:
            continue
        if not _LIMIT_VALUE.fullmatch(text):
            return None, f"{key}: not a positive integer: {text[:40]!r}"
        # Never below the default: the writer held every message to the recorded limits, so
        # a lower one only matters where the record is damaged (metadata has no CRC), and then
        # it would cost messages that are intact.
        values[key] = max(int(text), getattr(DEFAULT_LIMITS, key))
    try:
        return WireLimits(**values), ""
    except ValueError as e:
        return None, str(e)


def _passed_over(error: ReplayError) -> None:
    log.debug("%s", error)


def _is_ground_truth(channel: Channel) -> bool:
    return channel.metadata.get(_TYPE_KEY) == _GROUND_TRUTH_TYPE
