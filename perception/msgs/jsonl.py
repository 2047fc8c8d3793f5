"""Messages <-> JSON documents and JSON Lines files (one message per line), for every type.

A message's JSON document is derived from its table (`perception.msgs.schema`)::

    {"type": "DetectionList", "schema_version": 1,
     "header": {"stream": "detections", "seq": 0, "stamp_ns": 0, "frame_id": "vehicle"},
     "detections": [{"label": "Car", "score": 0.9, "center": [x, y, z], ...,
                     "latitude_deg": null, "longitude_deg": null, "camera_box": null}],
     "timings_ns": {"fusion": 1200000}, "latency_ns": 45000000, "budget_ok": true,
     "degraded": [], "valid": true}

- `type` and `schema_version` say what the record is; every other key is the attribute name,
  nested messages nested maps (the key paths are the attribute paths: `header.stamp_ns`,
  `detections[0].latitude_deg`). `DetectionList.schema_version` is the record's
  `schema_version`. Optional fields are always present, `null` meaning absent.
- Arrays (`LidarSweep.points`, `CameraFrame.image`, ...) and encoded bytes
  (`CameraFrame.data`) are `{"dtype": "<f4", "shape": [N, 4], "base64": "..."}`: the same
  dtype and shape as the wire's buffer descriptor, and the raw little-endian bytes in base64.
  Bit-exact by construction (no float printing; NaN payloads and -0.0 kept), a third larger
  than the bytes, and decoded without parsing one number per element. Nested lists would be
  easier to read but three to six times larger and slow to read back for a point cloud.

Reading checks a document with the same rules and the same words as the wire decoder (types,
bounds, finiteness, keys, cross-field rules, `WireLimits`); errors name the stream and the key
path, and for files the file and line. Writing checks the message the same way, so a message
that writes is one that reads.

Files of the earlier JSON Lines format (DetectionLists only, no `type`; `sequence`,
`stamp_ns`, `stream` and `frame_id` at the top, `timings`, `latitude`/`longitude`, optional
keys left out) are still read, through `_LEGACY` (one mapping, documented there, with a
warning per file); they are never written.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO, TypeVar, overload

import numpy as np

from calibration.errors import unconverted
from perception.errors import SchemaError, SourceError
from perception.msgs.arrays import check_buffer, decode_descriptor, from_buffer, to_buffer
from perception.msgs.codec import (
    FieldError,
    check_keys,
    decode_header,
    describe,
    encode_header,
    message_codec,
    mistyped,
    plain_error,
    upgrade,
    value_decoder,
)
from perception.msgs.schema import (
    DEFAULT_LIMITS,
    READABLE_SCHEMA_VERSIONS,
    SCHEMA_VERSION,
    WIRE_TYPES,
    Kind,
    WireLimits,
    versions_read,
)
from perception.msgs.types import DetectionList, Header, Message

__all__ = [
    "from_document",
    "from_json",
    "read_jsonl",
    "read_jsonl_lines",
    "read_messages",
    "to_document",
    "to_json",
    "write_jsonl_line",
]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

_UNKNOWN_STREAM = "<unknown stream>"
_ENVELOPE = ("type", "schema_version")
_BUFFER_KEYS = ("dtype", "shape", "base64")
_TOO_DEEP = "not JSON this reader accepts (arrays and objects nested too deeply)"
_CLASSES = {s.cls: name for name, s in WIRE_TYPES.items()}


def _unconverted(e: ValueError) -> str:
    """What `json.loads` refused in valid JSON (`calibration.errors.unconverted`: an integer
    of more digits than `int()` takes), which is no JSONDecodeError."""
    return f"not JSON this reader accepts ({unconverted(e)})"


# -- writing -------------------------------------------------------------------------------------


def _stream_of(msg: Any) -> str:
    header = getattr(msg, "header", None)
    stream = getattr(header, "stream", None)
    return stream if isinstance(stream, str) and stream else _UNKNOWN_STREAM


def _build(msg: Message, array_data: bool) -> dict[str, Any]:
    """The document of `msg` before any check (may hold numpy scalars)."""
    stream = _stream_of(msg)
    type_name = _CLASSES.get(type(msg))
    if type_name is None:
        raise SchemaError(stream, f"cannot write {type(msg).__name__}: not a message type")
    if not isinstance(msg.header, Header):
        raise SchemaError(stream, f"cannot write {type_name}: it has no perception Header")
    codec = message_codec(type_name)
    doc: dict[str, Any] = {"type": type_name, "schema_version": SCHEMA_VERSION}
    try:
        doc["header"] = encode_header(msg.header)
        plain = codec.encode_plain(msg)
        for f in codec.schema.fields[1:]:
            if f.kind is Kind.VERSION:
                value = getattr(msg, f.name)
                if value != SCHEMA_VERSION:
                    raise SchemaError(
                        stream,
                        f"{type_name}.{f.name} {value!r} is not the version this node writes "
                        f"({SCHEMA_VERSION})",
                    )
            elif not f.kind.is_buffer:
                doc[f.name] = plain[f.name]
            elif getattr(msg, f.name) is None and f.optional:
                doc[f.name] = None
            else:
                dtype, shape, data = to_buffer(f, getattr(msg, f.name))
                doc[f.name] = {"dtype": dtype, "shape": shape}
                if array_data:
                    doc[f.name]["base64"] = base64.b64encode(data).decode("ascii")
    except FieldError as e:
        raise SchemaError(stream, e.message()) from None
    return doc


def _json_default(value: Any) -> Any:
    # Numpy scalars (a score computed with numpy) become plain JSON values, as on the wire.
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not representable in JSON")


def _dumps(doc: dict[str, Any], stream: str, indent: int | None = None) -> str:
    separators = (",", ":") if indent is None else (",", ": ")
    try:
        # NaN and inf are let through here so the check below names the field that holds them.
        return json.dumps(doc, default=_json_default, separators=separators, indent=indent)
    except (TypeError, ValueError, OverflowError) as e:
        raise SchemaError(stream, f"cannot encode the document ({e})") from e


def _document_and_text(msg: Message, limits: WireLimits) -> tuple[dict[str, Any], str]:
    stream = _stream_of(msg)
    raw = _build(msg, array_data=True)
    # Map keys are checked before json.dumps, which would turn a non-string key into a string.
    codec = message_codec(raw["type"])
    for f in codec.plain:
        if f.kind is Kind.DOCUMENT:
            try:
                value_decoder(f)(raw[f.name], limits)
            except FieldError as e:
                raise SchemaError(stream, e.within(f.name).message()) from None
    text = _dumps(raw, stream)
    doc = json.loads(text)
    from_document(doc, limits=limits)  # what a reader will check
    return doc, text


def to_json(
    msg: Message,
    *,
    indent: int | None = None,
    array_data: bool = True,
    limits: WireLimits = DEFAULT_LIMITS,
) -> str:
    """`msg` as its JSON document (one line unless `indent`), e.g. to print it.

    `array_data=False` leaves the bytes of arrays out (`dtype` and `shape` only): a summary to
    show, not a document to read back, and not checked.

    Raises SchemaError (naming the stream and the fault) when the message is invalid by the
    rules a reader applies with `limits`.
    """
    if not array_data:
        return _dumps(_build(msg, array_data=False), _stream_of(msg), indent)
    doc, text = _document_and_text(msg, limits)
    return text if indent is None else _dumps(doc, _stream_of(msg), indent)


def to_document(msg: Message, *, limits: WireLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """`msg` as its JSON document (plain dicts, lists, strings, numbers), checked as `to_json`.

    Raises SchemaError when the message is invalid.
    """
    return _document_and_text(msg, limits)[0]


def write_jsonl_line(stream: TextIO, msg: Message, *, limits: WireLimits = DEFAULT_LIMITS) -> None:
    """Append `msg` to a JSON Lines file as one line. Raises SchemaError when it is invalid."""
    stream.write(to_json(msg, limits=limits) + "\n")


# -- reading -------------------------------------------------------------------------------------


def _envelope(doc: Mapping[str, Any]) -> str:
    for key, kind, expected in (("type", str, "a string"), ("schema_version", int, "an integer")):
        if key not in doc:
            raise FieldError(lambda p: f"missing field {p!r}").within(key)
        if type(doc[key]) is not kind:
            raise mistyped(expected, doc[key]).within(key)
    version = doc["schema_version"]
    if version not in READABLE_SCHEMA_VERSIONS:
        raise plain_error(f"unsupported schema version {version} ({versions_read()})")
    type_name: str = doc["type"]
    if type_name not in WIRE_TYPES:
        known = ", ".join(sorted(WIRE_TYPES))
        raise plain_error(f"unknown message type {type_name!r} (known: {known})")
    return type_name


def _defaults(type_name: str) -> dict[str, Any]:
    """The JSON form of each top-level field's dataclass default."""
    schema = WIRE_TYPES[type_name]
    out = {}
    for name, value in schema.defaults().items():
        if schema.field(name).kind is not Kind.VERSION:
            out[name] = json.loads(json.dumps(value))
    return out


def _decode_document(doc: Any, limits: WireLimits, fill_defaults: bool) -> Message:
    if type(doc) is not dict:
        raise plain_error(f"a document must be a JSON object, got {describe(doc)}")
    type_name = _envelope(doc)
    codec = message_codec(type_name)
    written = doc["schema_version"]
    if written != SCHEMA_VERSION:
        doc = {**upgrade(codec.schema, doc, written), "schema_version": SCHEMA_VERSION}
    if fill_defaults:
        doc = {**_defaults(type_name), **doc}
    names = ("header", *codec.plain_names, *(f.name for f in codec.buffers))
    if doc.keys() != {*_ENVELOPE, *names}:
        check_keys(doc, names, _ENVELOPE)
    try:
        header = decode_header(doc["header"], limits)
    except FieldError as e:
        raise e.within("header") from None
    plain = codec.decode_plain(doc, limits)
    descriptors = []
    for f in codec.buffers:
        value = doc[f.name]
        if value is None and f.optional:
            continue
        try:
            if value is None:
                raise mistyped("a map", value)
            dtype, shape, others = decode_descriptor(value, _BUFFER_KEYS, limits)
        except FieldError as e:
            raise e.within(f.name) from None
        descriptors.append((f, dtype, shape, others["base64"]))
    shapes: dict[str, tuple[int, ...]] = {}
    for f, dtype, shape, _ in descriptors:
        check_buffer(codec.schema, f, dtype=dtype, shape=shape, shapes=shapes, limits=limits)
        shapes[f.name] = shape
    arrays = {}
    for f, _, shape, text in descriptors:
        try:
            data = binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError) as e:
            raise _not_base64(e).within("base64").within(f.name) from None
        arrays[f.name] = from_buffer(f, shape, data, "its base64 data", limits)
    msg: Message = codec.assemble(header, SCHEMA_VERSION, plain, arrays)
    return msg


def _not_base64(error: Exception) -> FieldError:
    return FieldError(lambda p: f"field {p!r} is not valid base64 ({error})")


def from_document(
    doc: Any, *, limits: WireLimits = DEFAULT_LIMITS, fill_defaults: bool = False
) -> Message:
    """The message of a JSON document (as `json.loads` gives it), checked as the wire decoder
    checks a message. Arrays are read-only views of the decoded bytes.

    `fill_defaults`: top-level fields absent from the document take their dataclass default
    (for files that leave fields out on purpose, such as regression references); fields without
    a default must still be present.

    Raises SchemaError naming the stream (when the header names one) and the problem.
    """
    try:
        return _decode_document(doc, limits, fill_defaults)
    except FieldError as e:
        raise SchemaError(_document_stream(doc), e.message()) from None


def _document_stream(doc: Any) -> str:
    header = doc.get("header") if isinstance(doc, dict) else None
    stream = header.get("stream") if isinstance(header, dict) else None
    return stream if isinstance(stream, str) and stream else _UNKNOWN_STREAM


def from_json(
    text: str | bytes, *, limits: WireLimits = DEFAULT_LIMITS, fill_defaults: bool = False
) -> Message:
    """The message of one JSON document. Raises SchemaError when it is not JSON or not a valid
    document (see `from_document`)."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SchemaError(_UNKNOWN_STREAM, f"not JSON ({e})") from e
    except ValueError as e:
        raise SchemaError(_UNKNOWN_STREAM, _unconverted(e)) from None
    except RecursionError:  # the parser recurses per nesting level
        raise SchemaError(_UNKNOWN_STREAM, _TOO_DEEP) from None
    return from_document(doc, limits=limits, fill_defaults=fill_defaults)


# The JSON Lines records written before the schema table: one DetectionList per line, no
# `type`; header fields at the top (`sequence` for `seq`), `timings` for `timings_ns`, detection
# `latitude`/`longitude` for `latitude_deg`/`longitude_deg`; keys with a default could be left
# out. Old key -> current key path, and the defaults the old reader applied:
_LEGACY = {
    "stream": ("header", "stream"),
    "sequence": ("header", "seq"),
    "stamp_ns": ("header", "stamp_ns"),
    "frame_id": ("header", "frame_id"),
    "detections": ("detections",),
    "timings": ("timings_ns",),
    "latency_ns": ("latency_ns",),
    "budget_ok": ("budget_ok",),
    "degraded": ("degraded",),
    "valid": ("valid",),
    "schema_version": ("schema_version",),
}
_LEGACY_DEFAULTS: dict[str, Any] = {
    "stream": "detections",
    "frame_id": "vehicle",
    "timings": {},
    "latency_ns": 0,
    "budget_ok": True,
    "degraded": [],
    "valid": True,
    "schema_version": 1,
}
_LEGACY_DETECTION = {"latitude": "latitude_deg", "longitude": "longitude_deg"}
_LEGACY_DETECTION_DEFAULTS: dict[str, Any] = {
    "sources": [],
    "latitude_deg": None,
    "longitude_deg": None,
    "camera_box": None,
}


def _is_legacy(doc: Any) -> bool:
    return isinstance(doc, dict) and "type" not in doc and "sequence" in doc


def _from_legacy(doc: dict[str, Any]) -> dict[str, Any]:
    """A pre-schema DetectionList record as a current document (checked afterwards as any)."""
    extra = sorted(set(doc) - set(_LEGACY))
    if extra:
        raise plain_error(f"unexpected field(s) in an old-format record: {extra}")
    out: dict[str, Any] = {"type": "DetectionList", "header": {}}
    for key, value in {**_LEGACY_DEFAULTS, **doc}.items():
        *parents, leaf = _LEGACY[key]
        (out[parents[0]] if parents else out)[leaf] = value
    detections = out.get("detections")
    if isinstance(detections, list):
        out["detections"] = [
            {**_LEGACY_DETECTION_DEFAULTS, **{_LEGACY_DETECTION.get(k, k): v for k, v in d.items()}}
            if isinstance(d, dict)
            else d
            for d in detections
        ]
    return out


def read_messages(
    path: Path, *, limits: WireLimits = DEFAULT_LIMITS, fill_defaults: bool = False
) -> Iterator[Message]:
    """The messages of a JSON Lines file, in order (blank lines skipped).

    Raises SourceError naming the file and line when the file cannot be read or a line is not
    a valid document (see `from_document`, also for `fill_defaults`).
    """
    for _, msg in _read(Path(path), limits, fill_defaults):
        yield msg


@overload
def read_jsonl(
    path: Path, *, limits: WireLimits = ..., fill_defaults: bool = ...
) -> Iterator[DetectionList]: ...
@overload
def read_jsonl(
    path: Path, message_type: type[M], *, limits: WireLimits = ..., fill_defaults: bool = ...
) -> Iterator[M]: ...
def read_jsonl(
    path: Path,
    message_type: type[Any] = DetectionList,
    *,
    limits: WireLimits = DEFAULT_LIMITS,
    fill_defaults: bool = False,
) -> Iterator[Message]:
    """The messages of a JSON Lines file holding only `message_type` (default DetectionList,
    the replay output). Raises SourceError naming the file and line as `read_messages` does,
    also for a record of another type."""
    for _, msg in read_jsonl_lines(path, message_type, limits=limits, fill_defaults=fill_defaults):
        yield msg


def read_jsonl_lines(
    path: Path,
    message_type: type[M],
    *,
    limits: WireLimits = DEFAULT_LIMITS,
    fill_defaults: bool = False,
) -> Iterator[tuple[int, M]]:
    """`read_jsonl`'s messages with the line each is on (blank lines are skipped), for errors
    about a record that name its line."""
    for lineno, msg in _read(Path(path), limits, fill_defaults):
        if not isinstance(msg, message_type):
            raise SourceError(
                f"{path}:{lineno}: a {type(msg).__name__} record, expected {message_type.__name__}"
            )
        yield lineno, msg


def _read(path: Path, limits: WireLimits, fill_defaults: bool) -> Iterator[tuple[int, Message]]:
    try:
        f = path.open("rb")
    except OSError as e:
        raise SourceError(f"{path}: cannot read messages ({e.strerror})") from e
    warned = False
    with f:
        try:
            for lineno, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise SourceError(f"{path}:{lineno}: not UTF-8 text ({e.reason})") from e
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SourceError(f"{path}:{lineno}: not JSON ({e})") from e
                except ValueError as e:
                    raise SourceError(f"{path}:{lineno}: {_unconverted(e)}") from None
                except RecursionError:  # the parser recurses per nesting level
                    raise SourceError(f"{path}:{lineno}: {_TOO_DEEP}") from None
                if _is_legacy(doc):
                    if not warned:
                        log.warning("%s: old JSON Lines keys (no `type`), read as DetectionLists "
                                    "through the legacy mapping", path)  # fmt: skip
                        warned = True
                    try:
                        doc = _from_legacy(doc)
                    except FieldError as e:
                        raise SourceError(f"{path}:{lineno}: {e.message()}") from None
                try:
                    msg = from_document(doc, limits=limits, fill_defaults=fill_defaults)
                except SchemaError as e:
                    raise SourceError(f"{path}:{lineno}: {e}") from e
                yield lineno, msg
        except OSError as e:
            raise SourceError(f"{path}: cannot read messages ({e.strerror})") from e
