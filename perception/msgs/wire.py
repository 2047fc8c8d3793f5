"""The ZeroMQ wire format of every message type.

A message travels as one ZeroMQ multipart message::

    [topic, header document, buffer_0, buffer_1, ...]

- `topic`: UTF-8 bytes, by default the message's `header.stream`; subscribers filter on it.
- header document: a msgpack map::

      {"type": "LidarSweep", "version": SCHEMA_VERSION,
       "header": {"stream": str, "seq": int, "stamp_ns": int, "frame_id": str},
       "fields": {...type-specific scalars, lists and maps...},
       "buffers": [{"name": "points", "dtype": "<f4", "shape": [N, 4]}, ...]}

  Optional fields are always present, `nil` meaning "absent".
- buffers: the message's arrays as raw little-endian C-contiguous bytes, one frame each, in the
  order the header lists them. `CameraFrame` carries `image` (H x W x 3 `|u1`) or `data` (the
  encoded bytes, `|u1`, one dimension); `LidarSweep` carries `points` (N x 4 `<f4`) and, when
  present, `point_time_offsets_ns` (N `<i8`). The other types carry no buffers.

`encode` returns the buffers as views of the message's arrays (no copy, unless an array is not
C-contiguous little-endian), so a publisher can hand large ones to ZeroMQ with `copy=False`.
`decode` wraps each received buffer with `np.frombuffer` (no copy; arrays are made read-only)
and validates everything, raising `WireError` for any fault. `encode` validates its output the
same way, so a message that encodes is one that decodes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import msgpack
import numpy as np
import numpy.typing as npt

from perception.errors import WireError
from perception.msgs.types import (
    SCHEMA_VERSION,
    CameraBox,
    CameraFrame,
    Detection3D,
    DetectionList,
    GnssFix,
    Header,
    LidarSweep,
    Message,
    RigMessage,
)

__all__ = [
    "DEFAULT_LIMITS",
    "ENCODED_IMAGE_FORMATS",
    "WireLimits",
    "decode",
    "encode",
]

#: `CameraFrame.encoding` values allowed for encoded (`data`) images; raw images are "bgr8".
ENCODED_IMAGE_FORMATS = frozenset({"jpeg", "png"})

_UNKNOWN_STREAM = "<unknown stream>"
_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)
# Ellipsoidal heights outside this span are not where a road vehicle can be: below the deepest
# ocean trench, above the Karman line.
_ALTITUDE_RANGE_M = (-12_000.0, 100_000.0)

_POINTS_DTYPE = np.dtype("<f4")
_OFFSETS_DTYPE = np.dtype("<i8")
_BYTES_DTYPE = np.dtype("|u1")


@dataclass(frozen=True)
class WireLimits:
    """Size limits a decoder enforces, so a hostile or broken sender cannot make it allocate or
    scan without bound. Messages above a limit raise `WireError` ("... above the limit ...").

    - `max_points`: points in one `LidarSweep`.
    - `max_image_pixels`: height x width of a raw `CameraFrame` image (3 bytes per pixel).
    - `max_encoded_image_bytes`: size of an encoded (JPEG/PNG) `CameraFrame`.
    - `max_detections`: detections in one `DetectionList`.
    - `max_header_bytes`: size of the msgpack header document.

    Raises ValueError when a limit is not a positive integer.
    """

    max_points: int = 2_000_000
    max_image_pixels: int = 8192 * 8192
    max_encoded_image_bytes: int = 32 * 1024 * 1024
    max_detections: int = 10_000
    max_header_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in (
            "max_points",
            "max_image_pixels",
            "max_encoded_image_bytes",
            "max_detections",
            "max_header_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"WireLimits.{name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS = WireLimits()


# -- encoding ------------------------------------------------------------------------------------


def encode(
    msg: Message, topic: str | None = None, *, limits: WireLimits = DEFAULT_LIMITS
) -> list[bytes | memoryview]:
    """The multipart frames of `msg`: `[topic, header document, buffer_0, ...]`.

    `topic` defaults to `msg.header.stream`. Array buffers are zero-copy `memoryview`s of the
    message's arrays (a copy is made only for a non-C-contiguous or big-endian array); callers
    must not mutate the arrays until the frames are sent.

    Raises WireError (naming the topic or stream and the fault) when the message is invalid by
    the rules `decode` applies with `limits`, or cannot be represented on the wire.
    """
    header = getattr(msg, "header", None)
    stream = header.stream if isinstance(header, Header) and isinstance(header.stream, str) else ""
    name = topic if isinstance(topic, str) and topic else (stream or _UNKNOWN_STREAM)
    if not isinstance(header, Header):
        _fail(name, f"cannot encode {type(msg).__name__}: it has no perception Header")
    if topic is None:
        topic = stream
    if not isinstance(topic, str) or not topic:
        _fail(name, f"topic must be a non-empty string, got {topic!r}")
    try:
        topic_bytes = topic.encode("utf-8")
    except UnicodeEncodeError as e:
        _fail(name, f"topic is not encodable as UTF-8 ({e.reason})")

    fields: dict[str, Any]
    arrays: list[tuple[str, Any, np.dtype[Any]]] = []
    raw_data: bytes | None = None
    if isinstance(msg, CameraFrame):
        fields = {"encoding": msg.encoding}
        if msg.image is not None:
            arrays.append(("image", msg.image, _BYTES_DTYPE))
        else:
            raw_data = _as_bytes(name, msg.data)
    elif isinstance(msg, LidarSweep):
        fields = {}
        arrays.append(("points", msg.points, _POINTS_DTYPE))
        if msg.point_time_offsets_ns is not None:
            arrays.append(("point_time_offsets_ns", msg.point_time_offsets_ns, _OFFSETS_DTYPE))
    elif isinstance(msg, GnssFix):
        fields = {
            "latitude_deg": msg.latitude_deg,
            "longitude_deg": msg.longitude_deg,
            "altitude_m": msg.altitude_m,
            "position_covariance_m2": msg.position_covariance_m2,
            "velocity_enu_mps": msg.velocity_enu_mps,
            "heading_rad": msg.heading_rad,
        }
    elif isinstance(msg, RigMessage):
        fields = {"rig": msg.rig}
    elif isinstance(msg, DetectionList):
        if msg.schema_version != SCHEMA_VERSION:
            _fail(
                name,
                f"DetectionList.schema_version {msg.schema_version!r} is not the version this "
                f"node writes ({SCHEMA_VERSION})",
            )
        fields = {
            "detections": [_detection_doc(name, d) for d in _iterable(name, msg.detections)],
            "timings_ns": msg.timings_ns,
            "latency_ns": msg.latency_ns,
            "budget_ok": msg.budget_ok,
            "degraded": msg.degraded,
            "valid": msg.valid,
        }
    else:
        _fail(name, f"cannot encode {type(msg).__name__}: not a wire message type")

    descriptors: list[dict[str, Any]] = []
    buffers: list[bytes | memoryview] = []
    for field_name, value, dtype in arrays:
        descriptor, buffer = _wire_array(name, field_name, value, dtype)
        descriptors.append(descriptor)
        buffers.append(buffer)
    if raw_data is not None:
        descriptors.append({"name": "data", "dtype": _BYTES_DTYPE.str, "shape": [len(raw_data)]})
        buffers.append(raw_data)

    doc = {
        "type": type(msg).__name__,
        "version": SCHEMA_VERSION,
        "header": {
            "stream": header.stream,
            "seq": header.seq,
            "stamp_ns": header.stamp_ns,
            "frame_id": header.frame_id,
        },
        "fields": fields,
        "buffers": descriptors,
    }
    try:
        packed = msgpack.packb(doc, default=_pack_default, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        _fail(name, f"cannot encode the header document ({e})")
    frames: list[bytes | memoryview] = [topic_bytes, packed, *buffers]
    # Validate exactly what a receiver will check, so invalid messages never leave the node.
    decode(frames, limits)
    return frames


def _pack_default(value: Any) -> Any:
    # Numpy scalars and small arrays (e.g. a covariance row) become plain msgpack values.
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _iterable(stream: str, value: Any) -> Sequence[Any]:
    if not isinstance(value, list | tuple):
        _fail(stream, f"detections must be a tuple, got {type(value).__name__}")
    return value


def _detection_doc(stream: str, det: Any) -> dict[str, Any]:
    if not isinstance(det, Detection3D):
        _fail(stream, f"detections must be Detection3D, got {type(det).__name__}")
    box = det.camera_box
    if box is not None and not isinstance(box, CameraBox):
        _fail(stream, f"camera_box must be a CameraBox, got {type(box).__name__}")
    return {
        "label": det.label,
        "score": det.score,
        "center": det.center,
        "size": det.size,
        "yaw": det.yaw,
        "sources": det.sources,
        "latitude_deg": det.latitude_deg,
        "longitude_deg": det.longitude_deg,
        "camera_box": None
        if box is None
        else {"camera": box.camera, "x1": box.x1, "y1": box.y1, "x2": box.x2, "y2": box.y2},
    }


def _as_bytes(stream: str, data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    _fail(stream, f"encoded image data must be bytes, got {type(data).__name__}")


def _wire_array(
    stream: str, name: str, value: Any, dtype: np.dtype[Any]
) -> tuple[dict[str, Any], memoryview]:
    if not isinstance(value, np.ndarray):
        _fail(stream, f"{name} must be a numpy array, got {type(value).__name__}")
    arr: npt.NDArray[Any] = value
    if arr.dtype.hasobject:
        _fail(stream, f"{name} has dtype {arr.dtype}, which cannot travel as a raw buffer")
    if arr.dtype != dtype and arr.dtype.kind == dtype.kind and arr.dtype.itemsize == dtype.itemsize:
        # Same type in the other byte order: the wire is little-endian.
        arr = arr.astype(dtype)
    arr = np.ascontiguousarray(arr)  # a no-op (no copy) for the usual C-contiguous array
    descriptor = {"name": name, "dtype": arr.dtype.str, "shape": list(value.shape)}
    return descriptor, arr.reshape(-1).view(np.uint8).data


# -- decoding ------------------------------------------------------------------------------------


def decode(frames: Sequence[Any], limits: WireLimits = DEFAULT_LIMITS) -> tuple[str, Message]:
    """The topic and message of one received multipart message.

    `frames` are `bytes`, `memoryview`s (or other buffers), or `zmq.Frame`s (their `.buffer` is
    used). Array fields are read-only `np.frombuffer` views of the frames (no copy); they keep
    the frames alive. An encoded image's `data` is copied into `bytes`.

    Raises WireError naming the stream (the topic; the header's stream when the topic is not
    readable) and the problem for any fault: too few frames, an undecodable or oversized header
    document, an unknown message type or schema version, missing or mistyped fields, buffers
    of the wrong number, dtype or size, non-finite or out-of-range values, negative stamps,
    sizes above `limits`.
    """
    ctx = _Context()
    try:
        return _decode(ctx, frames, limits)
    except WireError:
        raise
    except Exception as e:  # the decoder's last line of defence: one error type for callers
        raise WireError(ctx.stream, f"malformed message ({type(e).__name__}: {e})") from e


class _Context:
    """The stream name errors report: the topic, else the header's stream once known."""

    def __init__(self) -> None:
        self.topic: str | None = None
        self.header_stream: str | None = None

    @property
    def stream(self) -> str:
        return self.topic or self.header_stream or _UNKNOWN_STREAM

    def fail(self, problem: str) -> NoReturn:
        raise WireError(self.stream, problem)


def _fail(stream: str, problem: str) -> NoReturn:
    raise WireError(stream, problem)


def _frame_buffer(ctx: _Context, frame: Any, index: int) -> memoryview:
    source = frame.buffer if hasattr(frame, "buffer") else frame
    try:
        view = memoryview(source)
    except TypeError:
        ctx.fail(f"frame {index} is not a buffer ({type(frame).__name__})")
    if view.ndim == 1 and view.itemsize == 1:
        return view
    if not view.c_contiguous:
        ctx.fail(f"frame {index} is not a contiguous buffer")
    if view.nbytes == 0:
        return memoryview(b"")
    return view.cast("B")


def _decode(ctx: _Context, frames: Sequence[Any], limits: WireLimits) -> tuple[str, Message]:
    try:
        frames = list(frames)
    except TypeError:
        ctx.fail(f"frames must be a sequence, got {type(frames).__name__}")
    views = [_frame_buffer(ctx, f, i) for i, f in enumerate(frames)]
    if views:
        try:
            ctx.topic = bytes(views[0]).decode("utf-8") or None
        except UnicodeDecodeError:
            ctx.fail("topic frame is not UTF-8 text")
    # Checked after reading the topic, so the error names the stream.
    if len(frames) < 2:
        ctx.fail(f"too few frames: got {len(frames)}, need at least 2 (topic, header document)")
    topic = ctx.topic
    if not topic:
        ctx.fail("topic frame is empty")

    header_bytes = views[1].nbytes
    if header_bytes > limits.max_header_bytes:
        ctx.fail(
            f"oversize header document: {header_bytes} bytes, above the limit of "
            f"{limits.max_header_bytes}"
        )
    try:
        doc = msgpack.unpackb(views[1], raw=False, strict_map_key=True, use_list=True)
    except Exception as e:  # msgpack raises many types (ExtraData, ValueError, StackError, ...)
        ctx.fail(f"undecodable header document (not msgpack: {type(e).__name__}: {e})")
    if not isinstance(doc, dict):
        ctx.fail(f"undecodable header document: expected a map, got {_kind(doc)}")
    top = _Fields(ctx, "", doc)

    version = top.int_("version")
    if version != SCHEMA_VERSION:
        ctx.fail(f"unsupported schema version {version} (this node reads version {SCHEMA_VERSION})")
    type_name = top.str_("type")
    builder = _BUILDERS.get(type_name)
    if builder is None:
        known = ", ".join(sorted(_BUILDERS))
        ctx.fail(f"unknown message type {type_name!r} (known: {known})")

    hdr = top.map_("header")
    stream = hdr.str_("stream", nonempty=True)
    ctx.header_stream = stream
    header = Header(
        stream=stream,
        seq=hdr.int_("seq", lo=0),
        stamp_ns=hdr.int_("stamp_ns", lo=0),
        frame_id=hdr.str_("frame_id"),
    )
    hdr.finish()

    descriptors = top.list_("buffers")
    if len(descriptors) != len(views) - 2:
        ctx.fail(
            f"wrong number of buffers: the header lists {len(descriptors)} but "
            f"{len(views) - 2} buffer frame(s) arrived"
        )
    buffers = [_Buffer.parse(ctx, i, d, views[i + 2]) for i, d in enumerate(descriptors)]
    fields = top.map_("fields")
    top.finish()
    msg = builder(ctx, header, fields, buffers, limits=limits, version=version)
    fields.finish()
    return topic, msg


class _Fields:
    """Typed, validated access to one map of the header document; errors name the key path."""

    def __init__(self, ctx: _Context, path: str, doc: dict[str, Any]) -> None:
        self.ctx = ctx
        self.path = path
        self.doc = doc
        self.used: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str) -> Any:
        if key not in self.doc:
            self.ctx.fail(f"missing field {self._name(key)!r}")
        self.used.add(key)
        return self.doc[key]

    def mistyped(self, key: str, expected: str, value: Any) -> NoReturn:
        self.ctx.fail(f"field {self._name(key)!r} must be {expected}, got {_kind(value)}")

    def finish(self) -> None:
        extra = sorted(str(k) for k in self.doc if k not in self.used)
        if extra:
            self.ctx.fail(f"unexpected field(s) in {self.path or 'header document'}: {extra}")

    def int_(self, key: str, *, lo: int = _INT64_MIN, hi: int = _INT64_MAX) -> int:
        return _check_int(self, key, self.get(key), lo, hi)

    def float_(self, key: str, *, lo: float = -math.inf, hi: float = math.inf) -> float:
        return _check_float(self, key, self.get(key), lo, hi)

    def optional_float(
        self, key: str, *, lo: float = -math.inf, hi: float = math.inf
    ) -> float | None:
        value = self.get(key)
        return None if value is None else _check_float(self, key, value, lo, hi)

    def str_(self, key: str, *, nonempty: bool = False) -> str:
        value = self.get(key)
        if not isinstance(value, str):
            self.mistyped(key, "a string", value)
        if nonempty and not value:
            self.ctx.fail(f"field {self._name(key)!r} must not be empty")
        return value

    def bool_(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            self.mistyped(key, "a boolean", value)
        return value

    def list_(self, key: str) -> list[Any]:
        value = self.get(key)
        if not isinstance(value, list):
            self.mistyped(key, "an array", value)
        return value

    def map_(self, key: str) -> _Fields:
        value = self.get(key)
        if not isinstance(value, dict):
            self.mistyped(key, "a map", value)
        return _Fields(self.ctx, self._name(key), value)

    def optional_map(self, key: str) -> _Fields | None:
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.mistyped(key, "a map or nil", value)
        return _Fields(self.ctx, self._name(key), value)

    def floats(
        self, key: str, length: int, *, lo: float = -math.inf, hi: float = math.inf
    ) -> tuple[float, ...]:
        value = self.get(key)
        if not isinstance(value, list) or len(value) != length:
            self.mistyped(key, f"an array of {length} numbers", value)
        return tuple(_check_float(self, f"{key}[{i}]", v, lo, hi) for i, v in enumerate(value))

    def optional_floats(self, key: str, length: int) -> tuple[float, ...] | None:
        if self.get(key) is None:
            return None
        return self.floats(key, length)

    def strs(self, key: str) -> tuple[str, ...]:
        value = self.list_(key)
        for i, v in enumerate(value):
            if not isinstance(v, str):
                self.mistyped(f"{key}[{i}]", "a string", v)
        return tuple(value)


def _kind(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return type(value).__name__


def _check_int(fields: _Fields, key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fields.mistyped(key, "an integer", value)
    if not lo <= value <= hi:
        name = fields._name(key)
        if value < 0 <= lo:
            fields.ctx.fail(f"field {name!r} must not be negative, got {value}")
        fields.ctx.fail(f"field {name!r} is {value}, outside [{lo}, {hi}]")
    return value


def _check_float(fields: _Fields, key: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        fields.mistyped(key, "a number", value)
    number = float(value)
    name = fields._name(key)
    if not math.isfinite(number):
        fields.ctx.fail(f"field {name!r} must be finite, got {number}")
    if not lo <= number <= hi:
        fields.ctx.fail(f"field {name!r} is {number}, outside [{lo}, {hi}]")
    return number


@dataclass(frozen=True)
class _Buffer:
    """One buffer frame with the name, dtype and shape the header gives it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    data: memoryview

    @staticmethod
    def parse(ctx: _Context, index: int, desc: Any, data: memoryview) -> _Buffer:
        if not isinstance(desc, dict):
            ctx.fail(f"buffers[{index}] must be a map, got {_kind(desc)}")
        fields = _Fields(ctx, f"buffers[{index}]", desc)
        name = fields.str_("name")
        dtype = fields.str_("dtype")
        shape = fields.list_("shape")
        for i, dim in enumerate(shape):
            _check_int(fields, f"shape[{i}]", dim, 0, _INT64_MAX)
        fields.finish()
        return _Buffer(name, dtype, tuple(shape), data)

    def array(self, ctx: _Context, dtype: np.dtype[Any], what: str) -> npt.NDArray[Any]:
        if self.dtype != dtype.str:
            ctx.fail(f"{self.name} has dtype {self.dtype!r}, expected {dtype.str!r} ({what})")
        expected = math.prod(self.shape) * dtype.itemsize
        if expected != self.data.nbytes:
            ctx.fail(
                f"{self.name} shape {list(self.shape)} needs {expected} bytes but its buffer "
                f"frame holds {self.data.nbytes} (truncated or mismatched)"
            )
        arr = np.frombuffer(self.data, dtype=dtype).reshape(self.shape)
        # Messages are immutable; received frames may be writable, their views must not be.
        arr.flags.writeable = False
        return arr


def _expect_buffers(
    ctx: _Context, type_name: str, buffers: list[_Buffer], allowed: Sequence[Sequence[str]]
) -> None:
    names = [b.name for b in buffers]
    if any(list(option) == names for option in allowed):
        return
    options = " or ".join(str(list(o)) for o in allowed)
    ctx.fail(f"{type_name} carries buffers {options}, got {names}")


def _camera_frame(
    ctx: _Context,
    header: Header,
    fields: _Fields,
    buffers: list[_Buffer],
    *,
    limits: WireLimits,
    version: int,
) -> CameraFrame:
    _expect_buffers(ctx, "CameraFrame", buffers, (["image"], ["data"]))
    encoding = fields.str_("encoding")
    buf = buffers[0]
    if buf.name == "image":
        if encoding != "bgr8":
            ctx.fail(f"a raw image must have encoding 'bgr8', got {encoding!r}")
        if buf.dtype != _BYTES_DTYPE.str or len(buf.shape) != 3 or buf.shape[2] != 3:
            ctx.fail(
                f"image must be H x W x 3 uint8 (BGR), got dtype {buf.dtype!r} shape "
                f"{list(buf.shape)}"
            )
        height, width = buf.shape[0], buf.shape[1]
        if height == 0 or width == 0:
            ctx.fail(f"image is empty ({height} x {width})")
        if height * width > limits.max_image_pixels:
            ctx.fail(
                f"oversize image: {height} x {width} = {height * width} pixels, above the limit "
                f"of {limits.max_image_pixels}"
            )
        return CameraFrame(header, image=buf.array(ctx, _BYTES_DTYPE, "uint8"), encoding=encoding)
    if encoding not in ENCODED_IMAGE_FORMATS:
        ctx.fail(
            f"encoded image has encoding {encoding!r}, expected one of "
            f"{sorted(ENCODED_IMAGE_FORMATS)}"
        )
    if buf.dtype != _BYTES_DTYPE.str or len(buf.shape) != 1:
        ctx.fail(
            f"encoded image data must be a 1-D uint8 buffer, got dtype {buf.dtype!r} shape "
            f"{list(buf.shape)}"
        )
    size = buf.shape[0]
    if size == 0:
        ctx.fail("encoded image data is empty")
    if size > limits.max_encoded_image_bytes:
        ctx.fail(
            f"oversize encoded image: {size} bytes, above the limit of "
            f"{limits.max_encoded_image_bytes}"
        )
    data = buf.array(ctx, _BYTES_DTYPE, "uint8")
    # CameraFrame.data is `bytes`; encoded images are small, so this copy is cheap.
    return CameraFrame(header, data=data.tobytes(), encoding=encoding)


def _lidar_sweep(
    ctx: _Context,
    header: Header,
    fields: _Fields,
    buffers: list[_Buffer],
    *,
    limits: WireLimits,
    version: int,
) -> LidarSweep:
    _expect_buffers(ctx, "LidarSweep", buffers, (["points"], ["points", "point_time_offsets_ns"]))
    points_buf = buffers[0]
    if len(points_buf.shape) != 2 or points_buf.shape[1] != 4:
        ctx.fail(f"points must be N x 4 (x, y, z, intensity), got shape {list(points_buf.shape)}")
    count = points_buf.shape[0]
    if count > limits.max_points:
        ctx.fail(f"oversize sweep: {count} points, above the limit of {limits.max_points}")
    points = points_buf.array(ctx, _POINTS_DTYPE, "float32")
    finite = np.isfinite(points)
    if not finite.all():
        bad = int(np.count_nonzero(~finite.all(axis=1)))
        ctx.fail(f"points has {bad} point(s) with non-finite x, y, z or intensity (NaN or inf)")
    offsets = None
    if len(buffers) == 2:
        off_buf = buffers[1]
        if off_buf.shape != (count,):
            ctx.fail(
                f"point_time_offsets_ns must have shape [{count}] (one per point), got "
                f"{list(off_buf.shape)}"
            )
        offsets = off_buf.array(ctx, _OFFSETS_DTYPE, "int64")
        if count and int(offsets.min()) < 0:
            ctx.fail("point_time_offsets_ns has negative offsets (they count from the sweep start)")
    return LidarSweep(header, points=points, point_time_offsets_ns=offsets)


def _gnss_fix(
    ctx: _Context,
    header: Header,
    fields: _Fields,
    buffers: list[_Buffer],
    *,
    limits: WireLimits,
    version: int,
) -> GnssFix:
    _expect_buffers(ctx, "GnssFix", buffers, ([],))
    covariance = fields.floats("position_covariance_m2", 9)
    if any(covariance[i] < 0 for i in (0, 4, 8)):
        ctx.fail(f"position_covariance_m2 has a negative variance: {list(covariance)}")
    velocity = fields.optional_floats("velocity_enu_mps", 3)
    return GnssFix(
        header,
        latitude_deg=fields.float_("latitude_deg", lo=-90.0, hi=90.0),
        longitude_deg=fields.float_("longitude_deg", lo=-180.0, hi=180.0),
        altitude_m=fields.float_("altitude_m", lo=_ALTITUDE_RANGE_M[0], hi=_ALTITUDE_RANGE_M[1]),
        position_covariance_m2=covariance,
        velocity_enu_mps=None if velocity is None else (velocity[0], velocity[1], velocity[2]),
        heading_rad=fields.optional_float("heading_rad"),
    )


def _rig_message(
    ctx: _Context,
    header: Header,
    fields: _Fields,
    buffers: list[_Buffer],
    *,
    limits: WireLimits,
    version: int,
) -> RigMessage:
    _expect_buffers(ctx, "RigMessage", buffers, ([],))
    rig = fields.map_("rig")
    for key in rig.doc:
        if not isinstance(key, str):
            ctx.fail(f"rig document keys must be strings, got {_kind(key)}")
    # The rig's contents are checked by calibration.Rig.from_dict, which knows the schema.
    return RigMessage(header, rig=rig.doc)


def _detection_list(
    ctx: _Context,
    header: Header,
    fields: _Fields,
    buffers: list[_Buffer],
    *,
    limits: WireLimits,
    version: int,
) -> DetectionList:
    _expect_buffers(ctx, "DetectionList", buffers, ([],))
    docs = fields.list_("detections")
    if len(docs) > limits.max_detections:
        ctx.fail(
            f"oversize detection list: {len(docs)} detections, above the limit of "
            f"{limits.max_detections}"
        )
    detections = tuple(_detection(ctx, i, d) for i, d in enumerate(docs))
    timings = fields.map_("timings_ns")
    timings_ns = {}
    for key in list(timings.doc):
        if not isinstance(key, str):
            ctx.fail(f"timings_ns keys must be strings, got {_kind(key)}")
        timings_ns[key] = timings.int_(key, lo=0)
    return DetectionList(
        header,
        detections=detections,
        timings_ns=timings_ns,
        # Sensor and host clocks may disagree, so a negative latency is representable.
        latency_ns=fields.int_("latency_ns"),
        budget_ok=fields.bool_("budget_ok"),
        degraded=fields.strs("degraded"),
        valid=fields.bool_("valid"),
        schema_version=version,
    )


def _detection(ctx: _Context, index: int, doc: Any) -> Detection3D:
    path = f"fields.detections[{index}]"
    if not isinstance(doc, dict):
        ctx.fail(f"{path} must be a map, got {_kind(doc)}")
    f = _Fields(ctx, path, doc)
    center = f.floats("center", 3)
    size = f.floats("size", 3, lo=0.0)
    latitude = f.optional_float("latitude_deg", lo=-90.0, hi=90.0)
    longitude = f.optional_float("longitude_deg", lo=-180.0, hi=180.0)
    if (latitude is None) != (longitude is None):
        ctx.fail(f"{path}: latitude_deg and longitude_deg must be both set or both nil")
    box_fields = f.optional_map("camera_box")
    box = None
    if box_fields is not None:
        box = CameraBox(
            camera=box_fields.str_("camera"),
            x1=box_fields.float_("x1"),
            y1=box_fields.float_("y1"),
            x2=box_fields.float_("x2"),
            y2=box_fields.float_("y2"),
        )
        box_fields.finish()
    det = Detection3D(
        label=f.str_("label"),
        score=f.float_("score", lo=0.0, hi=1.0),
        center=(center[0], center[1], center[2]),
        size=(size[0], size[1], size[2]),
        yaw=f.float_("yaw"),
        sources=f.strs("sources"),
        latitude_deg=latitude,
        longitude_deg=longitude,
        camera_box=box,
    )
    f.finish()
    return det


class _Builder(Protocol):
    def __call__(
        self,
        ctx: _Context,
        header: Header,
        fields: _Fields,
        buffers: list[_Buffer],
        *,
        limits: WireLimits,
        version: int,
    ) -> Message: ...


_BUILDERS: Mapping[str, _Builder] = {
    "CameraFrame": _camera_frame,
    "LidarSweep": _lidar_sweep,
    "GnssFix": _gnss_fix,
    "RigMessage": _rig_message,
    "DetectionList": _detection_list,
}
