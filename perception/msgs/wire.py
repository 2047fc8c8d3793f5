"""The ZeroMQ wire format of every message type, derived from the schema tables.

A message travels as one ZeroMQ multipart message::

    [topic, header document, buffer_0, buffer_1, ...]

- `topic`: UTF-8 bytes, by default the message's `header.stream`; subscribers filter on it.
- header document: a msgpack map::

      {"type": "LidarSweep", "version": SCHEMA_VERSION,
       "header": {"stream": str, "seq": int, "stamp_ns": int, "frame_id": str},
       "fields": {...every other field but the arrays, by attribute name...},
       "buffers": [{"name": "points", "dtype": "<f4", "shape": [N, 4]}, ...]}

  `fields` holds each field of the type's table (`perception.msgs.schema`) that is not the
  header, an array or the schema version (`DetectionList.schema_version` is `version`), under
  its attribute name, nested messages as maps; optional fields are always present, `nil`
  meaning "absent".
- buffers: the table's array fields (and `CameraFrame.data`, one-dimensional `|u1`) as raw
  little-endian C-contiguous bytes, one frame each, in table order, absent optional ones left
  out: `CameraFrame` carries `image` or `data`, `LidarSweep` `points` and, when present,
  `point_time_offsets_ns`; the other types carry none.

`encode` returns the buffers as views of the message's arrays (no copy, unless an array is not
C-contiguous little-endian), so a publisher can hand large ones to ZeroMQ with `copy=False`.
`decode` wraps each received buffer with `np.frombuffer` (no copy; arrays are made read-only)
and validates everything by the table, raising `WireError` for any fault. `encode` validates its
output the same way, so a message that encodes is one that decodes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NoReturn

import msgpack
import numpy as np

from calibration.images import encoded_image_size
from perception.errors import WireError
from perception.msgs.arrays import check_buffer, decode_descriptor, from_buffer, to_buffer
from perception.msgs.codec import (
    FieldError,
    check_keys,
    decode_header,
    describe,
    encode_header,
    message_codec,
    upgrade,
)
from perception.msgs.schema import (
    DEFAULT_LIMITS,
    ENCODED_IMAGE_FORMATS,
    READABLE_SCHEMA_VERSIONS,
    SCHEMA_VERSION,
    WIRE_TYPES,
    WireLimits,
    versions_read,
)
from perception.msgs.types import CameraFrame, Header, Message

__all__ = [
    "DEFAULT_LIMITS",
    "ENCODED_IMAGE_FORMATS",
    "WireLimits",
    "decode",
    "encode",
]

_UNKNOWN_STREAM = "<unknown stream>"
_ENVELOPE = ("version", "type", "header", "buffers", "fields")
_ENVELOPE_KEYS = frozenset(_ENVELOPE)
_DESCRIPTOR = ("name", "dtype", "shape")
_CLASSES = {s.cls: name for name, s in WIRE_TYPES.items()}
# Types whose header document has a limit of its own (the rig document travels in it).
_HEADER_LIMITS = {"RigMessage": "max_rig_bytes"}
# msgpack's words for a value above one of the unpacker's limits:
# "<n> exceeds max_<what>_len(<limit>)"
_UNPACK_LIMIT = re.compile(r"(\d+) exceeds max_(str|bin|array|map|ext)_len\((\d+)\)")
_UNPACK_WHAT = {
    "str": "a string of {} bytes",
    "bin": "a byte string of {} bytes",
    "array": "a list of {} items",
    "map": "a map of {} entries",
}


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
    type_name = _CLASSES.get(type(msg))
    if type_name is None:
        _fail(name, f"cannot encode {type(msg).__name__}: not a wire message type")
    codec = message_codec(type_name)

    descriptors: list[dict[str, Any]] = []
    buffers: list[bytes | memoryview] = []
    try:
        fields = codec.encode_plain(msg)
        for f in codec.buffers:
            value = getattr(msg, f.name)
            if value is None and f.optional:
                continue
            dtype, shape, data = to_buffer(f, value)
            descriptors.append({"name": f.name, "dtype": dtype, "shape": shape})
            buffers.append(data)
    except FieldError as e:
        _fail(name, e.message())
    for field_name in codec.versions:
        if getattr(msg, field_name) != SCHEMA_VERSION:
            _fail(
                name,
                f"{type_name}.{field_name} {getattr(msg, field_name)!r} is not the version this "
                f"node writes ({SCHEMA_VERSION})",
            )

    doc = {
        "type": type_name,
        "version": SCHEMA_VERSION,
        "header": encode_header(header),
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


def _fail(stream: str, problem: str) -> NoReturn:
    raise WireError(stream, problem)


# -- decoding ------------------------------------------------------------------------------------


def decode(frames: Sequence[Any], limits: WireLimits = DEFAULT_LIMITS) -> tuple[str, Message]:
    """The topic and message of one received multipart message.

    `frames` are `bytes`, `memoryview`s (or other buffers), or `zmq.Frame`s (their `.buffer` is
    used). Array fields are read-only `np.frombuffer` views of the frames (no copy); they keep
    the frames alive. An encoded image's `data` is copied into `bytes`.

    Raises WireError naming the stream (the topic; the header's stream when the topic is not
    readable) and the problem for any fault: too few frames, an undecodable header document,
    an unknown message type or schema version, missing or mistyped fields, buffers of the wrong
    number, dtype or size, non-finite or out-of-range values, negative stamps or stamps above
    `MAX_STAMP_NS`, anything above `limits` (frames and bytes of the message, the header
    document's size, its strings, maps and lists, the nesting of the rig document, points,
    pixels, detections, a sweep's point time offsets).
    """
    ctx = _Context()
    try:
        return _decode(ctx, frames, limits)
    except WireError:
        raise
    except FieldError as e:
        raise WireError(ctx.stream, e.message()) from None
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


def _check_header_size(
    ctx: _Context, size: int, limits: WireLimits, type_name: str | None = None
) -> None:
    """The header document's size against its type's limit; before the type is known (None),
    against the largest any type may have."""
    if type_name is None:
        allowed = max(limits.max_header_bytes, limits.max_rig_bytes)
    else:
        allowed = getattr(limits, _HEADER_LIMITS.get(type_name, "max_header_bytes"))
    if size > allowed:
        of = f" of a {type_name}" if type_name else ""
        ctx.fail(f"oversize header document{of}: {size} bytes, above the limit of {allowed}")


def _unpack_problem(error: ValueError) -> str:
    """The words for a msgpack ValueError: a value above one of `WireLimits`' bounds, else an
    undecodable document."""
    found = _UNPACK_LIMIT.search(str(error))
    if found is None:
        return f"undecodable header document (not msgpack: {type(error).__name__}: {error})"
    size, kind, allowed = found.groups()
    if kind == "ext":
        return "undecodable header document: it holds a msgpack extension type"
    what = _UNPACK_WHAT[kind].format(size)
    return f"oversize header document: it holds {what}, above the limit of {allowed}"


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


def _get(doc: dict[Any, Any], key: str, expected: type, what: str) -> Any:
    if key not in doc:
        raise FieldError(lambda p: f"missing field {p!r}").within(key)
    value = doc[key]
    if type(value) is not expected:
        raise FieldError(lambda p: f"field {p!r} must be {what}, got {describe(value)}").within(key)
    return value


def _decode(ctx: _Context, frames: Sequence[Any], limits: WireLimits) -> tuple[str, Message]:
    try:
        frames = list(frames)
    except TypeError:
        ctx.fail(f"frames must be a sequence, got {type(frames).__name__}")
    if frames:
        try:
            ctx.topic = bytes(_frame_buffer(ctx, frames[0], 0)).decode("utf-8") or None
        except UnicodeDecodeError:
            ctx.fail("topic frame is not UTF-8 text")
    # Checked after reading the topic, so the error names the stream.
    if len(frames) > limits.max_frames:
        ctx.fail(f"too many frames: {len(frames)}, above the limit of {limits.max_frames}")
    views = [_frame_buffer(ctx, f, i) for i, f in enumerate(frames)]
    if len(frames) < 2:
        ctx.fail(f"too few frames: got {len(frames)}, need at least 2 (topic, header document)")
    topic = ctx.topic
    if not topic:
        ctx.fail("topic frame is empty")
    total = sum(v.nbytes for v in views)
    if total > limits.max_message_bytes:
        ctx.fail(f"oversize message: {total} bytes, above the limit of {limits.max_message_bytes}")

    header_bytes = views[1].nbytes
    # The type is known only once the document is read: refuse what no type may have first.
    _check_header_size(ctx, header_bytes, limits)
    try:
        doc = msgpack.unpackb(
            views[1],
            raw=False,
            strict_map_key=True,
            use_list=True,
            # Refused by the unpacker before it allocates them.
            max_str_len=limits.max_string_bytes,
            max_bin_len=limits.max_string_bytes,
            max_array_len=limits.max_collection_items,
            max_map_len=limits.max_collection_items,
            max_ext_len=0,
        )
    except ValueError as e:
        ctx.fail(_unpack_problem(e))
    except Exception as e:  # msgpack raises many types (ExtraData, StackError, ...)
        ctx.fail(f"undecodable header document (not msgpack: {type(e).__name__}: {e})")
    if not isinstance(doc, dict):
        ctx.fail(f"undecodable header document: expected a map, got {describe(doc)}")

    version = _get(doc, "version", int, "an integer")
    if version not in READABLE_SCHEMA_VERSIONS:
        ctx.fail(f"unsupported schema version {version} ({versions_read()})")
    type_name = _get(doc, "type", str, "a string")
    if type_name not in WIRE_TYPES:
        known = ", ".join(sorted(WIRE_TYPES))
        ctx.fail(f"unknown message type {type_name!r} (known: {known})")
    _check_header_size(ctx, header_bytes, limits, type_name)
    codec = message_codec(type_name)

    if "header" not in doc:
        raise FieldError(lambda p: f"missing field {p!r}").within("header")
    hdr = doc["header"]
    if type(hdr) is dict and type(hdr.get("stream")) is str:
        ctx.header_stream = hdr["stream"] or None
    try:
        header = decode_header(hdr, limits)
    except FieldError as e:
        raise e.within("header") from None

    descriptors = _get(doc, "buffers", list, "an array")
    if len(descriptors) != len(views) - 2:
        ctx.fail(
            f"wrong number of buffers: the header lists {len(descriptors)} but "
            f"{len(views) - 2} buffer frame(s) arrived"
        )
    parsed = []
    for i, desc in enumerate(descriptors):
        try:
            dtype, shape, others = decode_descriptor(desc, _DESCRIPTOR, limits)
        except FieldError as e:
            raise e.within(i).within("buffers") from None
        parsed.append((others["name"], dtype, shape))
    fields = _get(doc, "fields", dict, "a map")
    if doc.keys() != _ENVELOPE_KEYS:
        try:
            check_keys(doc, _ENVELOPE)
        except FieldError as e:
            ctx.fail(e.message("header document"))

    codec.check_buffer_names([name for name, _, _ in parsed])
    shapes: dict[str, tuple[int, ...]] = {}
    for name, dtype, shape in parsed:
        check_buffer(
            codec.schema,
            codec.schema.field(name),
            dtype=dtype,
            shape=shape,
            shapes=shapes,
            limits=limits,
        )
        shapes[name] = shape
    try:
        if version != SCHEMA_VERSION and type(fields) is dict:
            fields = dict(upgrade(codec.schema, fields, version))
        plain = codec.decode_fields(fields, limits)
    except FieldError as e:
        raise e.within("fields") from None
    arrays = {
        name: from_buffer(codec.schema.field(name), shape, view, "its buffer frame", limits)
        for (name, _, shape), view in zip(parsed, views[2:], strict=True)
    }
    # Read, an older document is a message of the current version.
    msg: Message = codec.assemble(header, SCHEMA_VERSION, plain, arrays)
    if type(msg) is CameraFrame and msg.data is not None:
        _check_encoded_pixels(ctx, msg.data, limits)
    return topic, msg


def _check_encoded_pixels(ctx: _Context, data: bytes, limits: WireLimits) -> None:
    """Refuses an encoded image whose header says it decodes to more pixels than
    `max_image_pixels` (a raw image's limit): a small PNG can decode to gigabytes."""
    size = encoded_image_size(data)
    if size is not None and size[0] * size[1] > limits.max_image_pixels:
        ctx.fail(
            f"oversize image: its header says {size[0]} x {size[1]} = {size[0] * size[1]} "
            f"pixels, above the limit of {limits.max_image_pixels}"
        )
