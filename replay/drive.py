"""Recorded drives: MCAP files with Foxglove's well-known schemas, lossless for every message.

Layout of a drive written by `DriveWriter`
-----------------------------------------

Every message `write` is given becomes *two* MCAP messages with the same `log_time` (receive
time, ns), `publish_time` (the sensor stamp `header.stamp_ns`, ns; clamped at 0 for a negative
stamp) and MCAP `sequence` (a per-file counter, so the two are paired exactly):

1. on the topic itself (default `header.stream`), a Foxglove message (protobuf) that Foxglove
   and other MCAP tools display:

   - `CameraFrame` "bgr8" -> `foxglove.RawImage` (encoding "bgr8", step = 3 x width); "jpeg" or
     "png" -> `foxglove.CompressedImage` (format "jpeg" / "png").
   - `LidarSweep` -> `foxglove.PointCloud` (identity pose, frame `header.frame_id`): fields `x`,
     `y`, `z`, `intensity` FLOAT32 (stride 16 bytes, the sweep's points bytes as they are), plus
     `t_offset_ns` FLOAT64 (stride 24) when the sweep has per-point time offsets. Offsets are
     integers of at most 2**53 ns (104 days), so the float64 holds them exactly.
   - `GnssFix` -> `foxglove.LocationFix` (covariance ENU m^2, type KNOWN or UNKNOWN when all
     zero). Velocity and heading, which `LocationFix` lacks, are in the companion message.
   - `DetectionList` -> `foxglove.SceneUpdate`: one entity (id = topic) with a cube and a label
     per detection, in `header.frame_id`.
   - `RigMessage` -> `foxglove.FrameTransforms`: one transform per rig frame edge (parent ->
     child), so Foxglove can place the sensors. A rig document that `Rig.from_dict` rejects
     gets an empty `FrameTransforms` (and a logged warning); the document itself is kept.

2. on the companion topic `<topic>.perception` (`COMPANION_SUFFIX`), a JSON message (schema
   `perception.WireHeader`, JSON schema encoding) that is exactly the header document of the
   project's ZeroMQ wire format (see perception.msgs.wire): message type, header (stream, seq,
   stamp), every scalar field (GNSS velocity and heading, the whole DetectionList with
   timings, degraded, latency...) and the descriptors (name, dtype, shape) of the array
   buffers. The buffers' bytes are taken from the Foxglove message. `DriveReader` rebuilds each
   message with `perception.msgs.wire.decode`, so a round trip is bit-exact and validated.

Each channel's metadata names the project message type (`perception.type`). The rig given to
the writer (constructor or `write_rig`) is also stored as MCAP metadata `perception.rig`
(`{"rig": <JSON rig document>, "stamp_ns": "<int>"}`), and `write_rig` also writes a
`RigMessage` on topic `rig` (`RIG_TOPIC`), so a drive is self-contained.

Reading a truncated file (a killed recorder) falls back to a linear scan that stops at the
first incomplete record or chunk, with a logged warning and `DriveReader.truncated` set.
"""

from __future__ import annotations

import heapq
import io
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgpack
import numpy as np
import numpy.typing as npt
from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
from foxglove_schemas_protobuf.CubePrimitive_pb2 import CubePrimitive
from foxglove_schemas_protobuf.FrameTransform_pb2 import FrameTransform
from foxglove_schemas_protobuf.FrameTransforms_pb2 import FrameTransforms
from foxglove_schemas_protobuf.LocationFix_pb2 import LocationFix
from foxglove_schemas_protobuf.PackedElementField_pb2 import PackedElementField
from foxglove_schemas_protobuf.PointCloud_pb2 import PointCloud
from foxglove_schemas_protobuf.Pose_pb2 import Pose
from foxglove_schemas_protobuf.Quaternion_pb2 import Quaternion
from foxglove_schemas_protobuf.RawImage_pb2 import RawImage
from foxglove_schemas_protobuf.SceneEntity_pb2 import SceneEntity
from foxglove_schemas_protobuf.SceneUpdate_pb2 import SceneUpdate
from foxglove_schemas_protobuf.TextPrimitive_pb2 import TextPrimitive
from foxglove_schemas_protobuf.Vector3_pb2 import Vector3
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtobufMessage
from google.protobuf.timestamp_pb2 import Timestamp
from mcap.reader import SeekingReader
from mcap.records import Channel, Footer, Metadata
from mcap.records import Message as McapMessage
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType, Writer
from mcap_protobuf.schema import build_file_descriptor_set

from calibration import CalibrationError, Rig
from perception.closeable import Closeable
from perception.errors import WireError
from perception.msgs import wire
from perception.msgs.types import (
    CameraFrame,
    DetectionList,
    GnssFix,
    Header,
    LidarSweep,
    Message,
    RigMessage,
)
from replay.errors import ReplayError

__all__ = [
    "COMPANION_SCHEMA",
    "COMPANION_SUFFIX",
    "DEFAULT_CHUNK_SIZE",
    "RIG_METADATA",
    "RIG_TOPIC",
    "DriveReader",
    "DriveWriter",
    "RecordedMessage",
]

log = logging.getLogger(__name__)

#: Suffix of the companion topic holding a topic's wire header documents (JSON).
COMPANION_SUFFIX = ".perception"
#: Schema name of the companion channels.
COMPANION_SCHEMA = "perception.WireHeader"
#: Name of the MCAP metadata record holding the drive's rig document.
RIG_METADATA = "perception.rig"
#: Topic `DriveWriter.write_rig` writes its RigMessage on.
RIG_TOPIC = "rig"
#: Default uncompressed chunk size, bytes. Smaller chunks lose less when a recorder is killed.
DEFAULT_CHUNK_SIZE = 1024 * 1024

_TYPE_KEY = "perception.type"
_MAX_EXACT_OFFSET_NS = 2**53
_REORDER_WINDOW = 4096  # messages held to restore log-time order in a linear (truncated) scan

_COMPANION_JSON_SCHEMA = json.dumps(
    {
        "title": COMPANION_SCHEMA,
        "description": "perception.msgs.wire header document; array buffers are in the paired "
        "Foxglove message on the base topic",
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "version": {"type": "integer"},
            "header": {"type": "object"},
            "fields": {"type": "object"},
            "buffers": {"type": "array"},
        },
    }
).encode()

_FOXGLOVE_BY_TYPE: dict[str, type[ProtobufMessage]] = {
    "LidarSweep": PointCloud,
    "GnssFix": LocationFix,
    "DetectionList": SceneUpdate,
    "RigMessage": FrameTransforms,
}

_POINT_FIELDS = (
    PackedElementField(name="x", offset=0, type=PackedElementField.FLOAT32),
    PackedElementField(name="y", offset=4, type=PackedElementField.FLOAT32),
    PackedElementField(name="z", offset=8, type=PackedElementField.FLOAT32),
    PackedElementField(name="intensity", offset=12, type=PackedElementField.FLOAT32),
)
_OFFSET_FIELD = PackedElementField(name="t_offset_ns", offset=16, type=PackedElementField.FLOAT64)
_POINT_TIME_DTYPE = np.dtype(
    [("xyzi", "<f4", (4,)), ("t", "<f8")],
)

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


def _stamp(ns: int) -> Timestamp:
    sec, nsec = divmod(ns, 1_000_000_000)
    return Timestamp(seconds=sec, nanos=nsec)


def _quaternion(rotation: npt.NDArray[np.float64]) -> Quaternion:
    """The unit quaternion of a 3 x 3 rotation matrix (Shepperd's method)."""
    m = rotation
    trace = float(m[0, 0] + m[1, 1] + m[2, 2])
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        w, x = 0.25 * s, (m[2, 1] - m[1, 2]) / s
        y, z = (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(max(1.0 + m[0, 0] - m[1, 1] - m[2, 2], 1e-300))
        w, x = (m[2, 1] - m[1, 2]) / s, 0.25 * s
        y, z = (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(max(1.0 + m[1, 1] - m[0, 0] - m[2, 2], 1e-300))
        w, x = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s
        y, z = 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = 2.0 * math.sqrt(max(1.0 + m[2, 2] - m[0, 0] - m[1, 1], 1e-300))
        w, x = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s
        y, z = (m[1, 2] + m[2, 1]) / s, 0.25 * s
    norm = math.sqrt(w * w + x * x + y * y + z * z) or 1.0
    return Quaternion(x=float(x) / norm, y=float(y) / norm, z=float(z) / norm, w=float(w) / norm)


def _yaw_quaternion(yaw: float) -> Quaternion:
    return Quaternion(x=0.0, y=0.0, z=math.sin(yaw / 2.0), w=math.cos(yaw / 2.0))


def _frame_transforms(rig_doc: dict[str, Any], stamp_ns: int, where: str) -> FrameTransforms:
    try:
        rig = Rig.from_dict(rig_doc, source=where)
    except (CalibrationError, ValueError, TypeError, KeyError) as e:
        log.warning("%s: rig document not understood, no frame transforms written (%s)", where, e)
        return FrameTransforms()
    return _rig_transforms(rig, stamp_ns)


def _rig_transforms(rig: Rig, stamp_ns: int) -> FrameTransforms:
    out = FrameTransforms()
    for child, edge in rig.edges.items():
        t = edge.parent_from_frame
        tr = t.translation
        out.transforms.append(
            FrameTransform(
                timestamp=_stamp(stamp_ns),
                parent_frame_id=edge.parent,
                child_frame_id=child,
                translation=Vector3(x=float(tr[0]), y=float(tr[1]), z=float(tr[2])),
                rotation=_quaternion(t.rotation),
            )
        )
    return out


def _scene_update(msg: DetectionList, topic: str) -> SceneUpdate:
    entity = SceneEntity(
        timestamp=_stamp(msg.header.stamp_ns), frame_id=msg.header.frame_id, id=topic
    )
    for det in msg.detections:
        pose = Pose(
            position=Vector3(x=det.center[0], y=det.center[1], z=det.center[2]),
            orientation=_yaw_quaternion(det.yaw),
        )
        entity.cubes.append(
            CubePrimitive(pose=pose, size=Vector3(x=det.size[0], y=det.size[1], z=det.size[2]))
        )
        entity.cubes[-1].color.r, entity.cubes[-1].color.g = 1.0, 0.6
        entity.cubes[-1].color.b, entity.cubes[-1].color.a = 0.1, 0.4
        label_pose = Pose(
            position=Vector3(x=det.center[0], y=det.center[1], z=det.center[2] + det.size[2] / 2.0),
            orientation=Quaternion(w=1.0),
        )
        text = TextPrimitive(
            pose=label_pose,
            billboard=True,
            font_size=14.0,
            scale_invariant=True,
            text=f"{det.label} {det.score:.2f}",
        )
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        entity.texts.append(text)
    return SceneUpdate(entities=[entity])


def _point_cloud(msg: LidarSweep) -> PointCloud:
    points = np.ascontiguousarray(msg.points, dtype="<f4")
    pose = Pose(position=Vector3(), orientation=Quaternion(w=1.0))
    offsets = msg.point_time_offsets_ns
    if offsets is None:
        return PointCloud(
            timestamp=_stamp(msg.header.stamp_ns),
            frame_id=msg.header.frame_id,
            pose=pose,
            point_stride=16,
            fields=_POINT_FIELDS,
            data=points.tobytes(),
        )
    if offsets.size and int(np.max(np.abs(offsets))) > _MAX_EXACT_OFFSET_NS:
        raise ReplayError(
            f"{msg.header.stream}: point time offsets above 2**53 ns cannot be stored exactly"
        )
    packed = np.empty(points.shape[0], dtype=_POINT_TIME_DTYPE)
    packed["xyzi"] = points
    packed["t"] = offsets
    return PointCloud(
        timestamp=_stamp(msg.header.stamp_ns),
        frame_id=msg.header.frame_id,
        pose=pose,
        point_stride=24,
        fields=(*_POINT_FIELDS, _OFFSET_FIELD),
        data=packed.tobytes(),
    )


def _location_fix(msg: GnssFix) -> LocationFix:
    cov = [float(c) for c in msg.position_covariance_m2]
    kind = LocationFix.KNOWN if any(cov) else LocationFix.UNKNOWN
    return LocationFix(
        timestamp=_stamp(msg.header.stamp_ns),
        frame_id=msg.header.frame_id,
        latitude=msg.latitude_deg,
        longitude=msg.longitude_deg,
        altitude=msg.altitude_m,
        position_covariance=cov,
        position_covariance_type=kind,
    )


def _camera(msg: CameraFrame) -> RawImage | CompressedImage:
    stamp = _stamp(msg.header.stamp_ns)
    if msg.image is not None:
        image = np.ascontiguousarray(msg.image)
        height, width = int(image.shape[0]), int(image.shape[1])
        return RawImage(
            timestamp=stamp,
            frame_id=msg.header.frame_id,
            width=width,
            height=height,
            encoding="bgr8",
            step=3 * width,
            data=image.tobytes(),
        )
    assert msg.data is not None
    return CompressedImage(
        timestamp=stamp, frame_id=msg.header.frame_id, data=bytes(msg.data), format=msg.encoding
    )


def _foxglove(msg: Message, topic: str) -> ProtobufMessage:
    if isinstance(msg, CameraFrame):
        return _camera(msg)
    if isinstance(msg, LidarSweep):
        return _point_cloud(msg)
    if isinstance(msg, GnssFix):
        return _location_fix(msg)
    if isinstance(msg, DetectionList):
        return _scene_update(msg, topic)
    if isinstance(msg, RigMessage):
        return _frame_transforms(msg.rig, msg.header.stamp_ns, topic)
    raise ReplayError(f"{topic}: cannot record {type(msg).__name__}")


class DriveWriter(Closeable):
    """Writes a drive (MCAP, see the module docstring for the layout).

    `compression`: "zstd" (default), "lz4" or None. `chunk_size`: uncompressed bytes per chunk
    (a killed writer loses at most the chunk being filled). `rig`: stored as the drive's rig
    (metadata `perception.rig`, stamp 0). Not thread-safe: one thread writes.

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
    ) -> None:
        self.path = Path(path)
        if compression not in _COMPRESSION:
            raise ReplayError(
                f"{self.path}: unknown compression {compression!r} (zstd, lz4 or None)"
            )
        try:
            self._file: IO[bytes] = self.path.open("wb")
        except OSError as e:
            raise ReplayError(f"{self.path}: cannot create the drive ({e})") from e
        self._writer = Writer(
            self._file, chunk_size=chunk_size, compression=_COMPRESSION[compression]
        )
        self._writer.start(profile="", library="perception-node")
        self._schemas: dict[str, int] = {}
        self._channels: dict[tuple[str, str], tuple[int, int]] = {}
        self._sequence = 0
        self._seq_by_topic: dict[str, int] = {}
        self._closed = False
        self.bytes_written = 0
        """Payload bytes given to MCAP (before compression) so far."""
        self.messages_written = 0
        """Messages written so far (each is two MCAP messages, see the module docstring)."""
        if rig is not None:
            self._add_rig_metadata(rig, 0)

    # -- schemas and channels

    def _schema(self, name: str, encoding: str, data: bytes) -> int:
        if name not in self._schemas:
            self._schemas[name] = self._writer.register_schema(
                name=name, encoding=encoding, data=data
            )
        return self._schemas[name]

    def _protobuf_schema(self, cls: type[ProtobufMessage]) -> int:
        name = cls.DESCRIPTOR.full_name
        if name not in self._schemas:
            fds = build_file_descriptor_set(message_class=cls)
            return self._schema(name, "protobuf", fds.SerializeToString())
        return self._schemas[name]

    def _channel_ids(self, topic: str, type_name: str, fox: ProtobufMessage) -> tuple[int, int]:
        key = (topic, type_name)
        ids = self._channels.get(key)
        if ids is not None:
            return ids
        meta = {_TYPE_KEY: type_name}
        base = self._writer.register_channel(
            topic=topic,
            message_encoding="protobuf",
            schema_id=self._protobuf_schema(type(fox)),
            metadata=meta,
        )
        companion = self._writer.register_channel(
            topic=topic + COMPANION_SUFFIX,
            message_encoding="json",
            schema_id=self._schema(COMPANION_SCHEMA, "jsonschema", _COMPANION_JSON_SCHEMA),
            metadata=meta,
        )
        self._channels[key] = (base, companion)
        return base, companion

    # -- writing

    def _check_open(self) -> None:
        if self._closed:
            raise ReplayError(f"{self.path}: drive is closed")

    def write(self, msg: Message, log_time_ns: int, topic: str | None = None) -> None:
        """Write `msg` received at `log_time_ns` (host clock, ns) on `topic` (default: its
        stream). The message is validated as `perception.msgs.wire.encode` does.

        Raises:
            WireError: the message is invalid; nothing is written.
            ReplayError: the drive is closed, the message cannot be stored exactly, or the file
                cannot be written.
            ValueError: `log_time_ns` is negative.
        """
        self._check_open()
        if log_time_ns < 0:
            raise ValueError(f"log_time_ns must be >= 0, got {log_time_ns}")
        frames = wire.encode(msg, topic)
        name = bytes(frames[0]).decode("utf-8")
        doc = msgpack.unpackb(frames[1], raw=False)
        try:
            companion = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise ReplayError(f"{name}: message header is not representable as JSON ({e})") from e
        fox = _foxglove(msg, name)
        payload = fox.SerializeToString()
        base_id, companion_id = self._channel_ids(name, doc["type"], fox)
        sequence = self._sequence
        self._sequence = (self._sequence + 1) & 0xFFFFFFFF
        publish = max(0, msg.header.stamp_ns)
        try:
            self._writer.add_message(base_id, log_time_ns, payload, publish, sequence)
            self._writer.add_message(companion_id, log_time_ns, companion, publish, sequence)
        except (OSError, ValueError) as e:
            raise ReplayError(f"{self.path}: cannot write ({e})") from e
        self.bytes_written += len(payload) + len(companion)
        self.messages_written += 1

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

    def _add_rig_metadata(self, rig: Rig, stamp_ns: int) -> None:
        data = {"rig": json.dumps(rig.to_dict()), "stamp_ns": str(stamp_ns)}
        try:
            self._writer.add_metadata(RIG_METADATA, data)
        except OSError as e:
            raise ReplayError(f"{self.path}: cannot write ({e})") from e

    def flush(self) -> None:
        """Push buffered bytes to the operating system (completed chunks only)."""
        if not self._closed:
            self._file.flush()

    def close(self) -> None:
        """Finish the file (last chunk, summary, footer) and close it. Idempotent.

        Raises:
            ReplayError: the file cannot be written.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.finish()  # type: ignore[no-untyped-call]
        except OSError as e:
            raise ReplayError(f"{self.path}: cannot finish the drive ({e})") from e
        finally:
            self._file.close()


# -- reading -------------------------------------------------------------------------------------


_Raw = tuple[Channel, McapMessage]


class DriveReader:
    """Reads a drive written by `DriveWriter`.

    A complete file is read through its index (log-time order). A truncated file (no footer:
    the recorder was killed) is scanned linearly up to its last complete chunk; `truncated` is
    then True and a warning is logged. Each `messages` call opens the file anew, so several
    iterations may run one after the other.

    Raises (constructor):
        ReplayError: the file is missing, unreadable or not an MCAP file (names the path).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.truncated = False
        self._channels: dict[int, Channel] | None = None
        self._counts: dict[str, int] | None = None
        self._rig: Rig | None = None
        self._rig_loaded = False
        try:
            with self.path.open("rb") as f:
                magic = f.read(8)
                if magic != b"\x89MCAP0\r\n":
                    raise ReplayError(f"{self.path}: not an MCAP file")
                self._summary_ok = self._has_footer(f)
        except OSError as e:
            raise ReplayError(f"{self.path}: cannot read the drive ({e})") from e
        if not self._summary_ok:
            self.truncated = True
            log.warning(
                "%s: the drive is truncated (no footer: the recorder did not finish it); "
                "reading up to its last complete chunk",
                self.path,
            )

    def _has_footer(self, f: IO[bytes]) -> bool:
        try:
            f.seek(0, io.SEEK_SET)
            reader = SeekingReader(f)
            summary = reader.get_summary()
        except Exception as e:  # the mcap library raises assorted errors on a cut file
            log.debug("%s: no usable summary (%s)", self.path, e)
            return False
        return summary is not None

    # -- raw records

    def _iter_raw(self, topics: Sequence[str] | None, start_ns: int | None) -> Iterator[_Raw]:
        try:
            f = self.path.open("rb")
        except OSError as e:
            raise ReplayError(f"{self.path}: cannot read the drive ({e})") from e
        with f:
            if self._summary_ok:
                reader = SeekingReader(f)
                for _schema, channel, message in reader.iter_messages(
                    topics=topics, starting_at=start_ns, log_time_order=True
                ):
                    yield channel, message
            else:
                yield from self._iter_linear(f, topics, start_ns)

    def _iter_linear(
        self, f: IO[bytes], topics: Sequence[str] | None, start_ns: int | None
    ) -> Iterator[_Raw]:
        wanted = None if topics is None else set(topics)
        channels: dict[int, Channel] = {}
        heap: list[tuple[int, int, int, Channel, McapMessage]] = []
        order = 0
        for record in self._linear_records(f):
            if isinstance(record, Channel):
                channels[record.id] = record
            elif isinstance(record, McapMessage):
                channel = channels.get(record.channel_id)
                if channel is None:
                    continue
                if wanted is not None and channel.topic not in wanted:
                    continue
                if start_ns is not None and record.log_time < start_ns:
                    continue
                heapq.heappush(heap, (record.log_time, order, record.channel_id, channel, record))
                order += 1
                if len(heap) > _REORDER_WINDOW:
                    item = heapq.heappop(heap)
                    yield item[3], item[4]
        while heap:
            item = heapq.heappop(heap)
            yield item[3], item[4]

    def _linear_records(self, f: IO[bytes]) -> Iterator[Any]:
        f.seek(0, io.SEEK_SET)
        records = StreamReader(f, skip_magic=False).records
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except Exception as e:  # any decoding fault at the cut ends the data
                log.warning("%s: drive data ends in an incomplete record (%s)", self.path, e)
                self.truncated = True
                return
            if isinstance(record, Footer):
                return
            yield record

    # -- public API

    def messages(
        self, topics: Sequence[str] | None = None, start_ns: int | None = None
    ) -> Iterator[RecordedMessage]:
        """The drive's messages in log-time order, optionally only `topics` and those received
        at or after `start_ns` (host clock, ns).

        Raises:
            ReplayError: a message cannot be decoded (names the path and topic) or the file
                cannot be read.
        """
        channel_topics = None
        if topics is not None:
            channel_topics = [t for topic in topics for t in (topic, topic + COMPANION_SUFFIX)]
        pending: dict[tuple[str, int], tuple[McapMessage | None, McapMessage | None]] = {}
        for channel, record in self._iter_raw(channel_topics, start_ns):
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
            yield RecordedMessage(topic, self._decode(topic, base, comp), base.log_time)
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
            buffers = _buffers(doc, base.data)
            frames: list[bytes | memoryview] = [
                topic.encode("utf-8"),
                msgpack.packb(doc, use_bin_type=True),
                *buffers,
            ]
            _topic, msg = wire.decode(frames)
        except (WireError, ValueError, KeyError, TypeError, DecodeError) as e:
            raise ReplayError(f"{where}: cannot decode ({e})") from e
        return msg

    @property
    def rig(self) -> Rig | None:
        """The drive's rig: the `perception.rig` metadata if present, else the first
        `RigMessage` of the drive, else None.

        Raises:
            ReplayError: the stored rig document is invalid.
        """
        if not self._rig_loaded:
            self._rig = self._load_rig()
            self._rig_loaded = True
        return self._rig

    def _load_rig(self) -> Rig | None:
        doc = self._rig_metadata()
        if doc is None:
            rig_topics = [
                c.topic
                for c in self._channel_map().values()
                if c.metadata.get(_TYPE_KEY) == "RigMessage"
                and not c.topic.endswith(COMPANION_SUFFIX)
            ]
            if rig_topics:
                for rec in self.messages(topics=rig_topics):
                    if isinstance(rec.message, RigMessage):
                        doc = rec.message.rig
                        break
        if doc is None:
            return None
        try:
            return Rig.from_dict(doc, source=str(self.path))
        except CalibrationError as e:
            raise ReplayError(f"{self.path}: the drive's rig is invalid ({e})") from e

    def _rig_metadata(self) -> dict[str, Any] | None:
        with self.path.open("rb") as f:
            if self._summary_ok:
                items: Iterator[Metadata] = SeekingReader(f).iter_metadata()
                metas = list(items)
            else:
                metas = [r for r in self._linear_records(f) if isinstance(r, Metadata)]
        for meta in metas:
            if meta.name == RIG_METADATA:
                doc = json.loads(meta.metadata["rig"])
                if isinstance(doc, dict):
                    return doc
        return None

    def _channel_map(self) -> dict[int, Channel]:
        if self._channels is None:
            with self.path.open("rb") as f:
                if self._summary_ok:
                    summary = SeekingReader(f).get_summary()
                    self._channels = {} if summary is None else dict(summary.channels)
                else:
                    self._channels = {
                        r.id: r for r in self._linear_records(f) if isinstance(r, Channel)
                    }
        return self._channels

    def topics(self) -> dict[str, int]:
        """Message counts per topic (companion topics are not listed)."""
        if self._counts is None:
            counts: dict[str, int] = {}
            summary = None
            if self._summary_ok:
                with self.path.open("rb") as f:
                    summary = SeekingReader(f).get_summary()
            if summary is not None and summary.statistics is not None:
                for channel_id, n in summary.statistics.channel_message_counts.items():
                    channel = summary.channels[channel_id]
                    if channel.topic.endswith(COMPANION_SUFFIX):
                        continue
                    counts[channel.topic] = counts.get(channel.topic, 0) + n
            else:
                for rec in self.messages():
                    counts[rec.topic] = counts.get(rec.topic, 0) + 1
            self._counts = counts
        return dict(self._counts)

    @property
    def start_ns(self) -> int | None:
        """The first message's log time (host clock, ns), or None for an empty drive."""
        if self._summary_ok:
            with self.path.open("rb") as f:
                summary = SeekingReader(f).get_summary()
            if summary is not None and summary.statistics is not None:
                if summary.statistics.message_count == 0:
                    return None
                return int(summary.statistics.message_start_time)
        for rec in self.messages():
            return rec.log_time_ns
        return None


def _buffers(doc: dict[str, Any], data: bytes) -> list[bytes | memoryview]:
    """The wire buffers of a message from its Foxglove payload."""
    descs = doc["buffers"]
    if not descs:
        return []
    kind = doc["type"]
    if kind == "CameraFrame":
        if descs[0]["name"] == "image":
            return [RawImage.FromString(data).data]
        return [CompressedImage.FromString(data).data]
    if kind == "LidarSweep":
        cloud = PointCloud.FromString(data)
        if len(descs) == 1:
            return [cloud.data]
        packed = np.frombuffer(cloud.data, dtype=_POINT_TIME_DTYPE)
        points = np.ascontiguousarray(packed["xyzi"]).astype("<f4", copy=False)
        offsets = packed["t"].astype("<i8")
        return [points.tobytes(), offsets.tobytes()]
    raise ValueError(f"{kind} carries no buffers, but the header lists {len(descs)}")
