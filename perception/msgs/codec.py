"""Checks and conversions derived from the schema tables, shared by every format.

`perception.msgs.wire` (msgpack header document + raw buffers) and `perception.msgs.jsonl`
(JSON documents) differ only in their envelopes and in how arrays travel; everything inside a
message (types, bounds, finiteness, keys, limits, cross-field rules) is checked here and in
`perception.msgs.arrays`, from the tables of `perception.msgs.schema`, so every format accepts
and refuses the same messages with the same words.

Decoders raise `FieldError`; the format turns it into its own error with the field's path in its
document (`fields.detections[3].score` on the wire, `detections[3].score` in JSON). The path is
assembled only when a fault is raised, so valid messages pay nothing for it.
"""

from __future__ import annotations

import itertools
import math
import operator
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from perception.msgs.schema import (
    HEADER,
    INT64_MAX,
    INT64_MIN,
    Field,
    Kind,
    Schema,
    WireLimits,
    schema_of,
)

__all__ = [
    "Decoder",
    "FieldError",
    "MessageCodec",
    "check_keys",
    "decode_header",
    "describe",
    "encode_header",
    "message_codec",
    "mistyped",
    "plain_error",
    "upgrade",
    "value_decoder",
]

Decoder = Callable[[Any, WireLimits], Any]
Encoder = Callable[[Any], Any]

_FLOAT_MAX = sys.float_info.max


class FieldError(Exception):
    """A value that breaks its schema. `render(path)` words the problem for the value's path
    in the document; the containers it passes through add their key (`within`). Internal: the
    formats turn it into their own error (WireError, SchemaError)."""

    def __init__(self, render: Callable[[str], str]) -> None:
        super().__init__()
        self.render = render
        self.segments: list[str | int] = []  # innermost first

    def within(self, segment: str | int) -> FieldError:
        self.segments.append(segment)
        return self

    def message(self, prefix: str = "") -> str:
        """The problem, with the path below `prefix` (e.g. "fields")."""
        path = prefix
        for segment in reversed(self.segments):
            if isinstance(segment, int):
                path += f"[{segment}]"
            else:
                path = f"{path}.{segment}" if path else segment
        return self.render(path)

    def __str__(self) -> str:
        return self.message()


def describe(value: Any) -> str:
    """How an error names a value's type ("nil" for None, the value for non-finite floats)."""
    if value is None:
        return "nil"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return type(value).__name__


def mistyped(expected: str, value: Any) -> FieldError:
    """`field <path> must be <expected>, got <type>`."""
    return FieldError(lambda p: f"field {p!r} must be {expected}, got {describe(value)}")


def plain_error(problem: str) -> FieldError:
    """A problem worded without the path (it names what it is about)."""
    return FieldError(lambda _p: problem)


def _at(problem: str) -> FieldError:
    return FieldError(lambda p: f"{p}: {problem}" if p else problem)


def _or_nil(expected: str, optional: bool) -> str:
    return f"{expected} or nil" if optional else expected


# -- scalars -------------------------------------------------------------------------------------


def _key_error(key: Any) -> FieldError:
    return FieldError(lambda p: f"field {p!r} keys must be strings, got {describe(key)}")


def _int_fault(value: Any, lo: int, hi: int, optional: bool) -> FieldError:
    if isinstance(value, bool) or not isinstance(value, int):
        return mistyped(_or_nil("an integer", optional), value)
    if value < 0 <= lo:
        return FieldError(lambda p: f"field {p!r} must not be negative, got {value}")
    return FieldError(lambda p: f"field {p!r} is {value}, outside [{lo}, {hi}]")


def _float_value(value: Any, lo: float, hi: float, optional: bool) -> float:
    """The slow path of a float check: integers, and the words of every fault."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise mistyped(_or_nil("a number", optional), value)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf if value > 0 else -math.inf
    if not math.isfinite(number):
        raise FieldError(lambda p: f"field {p!r} must be finite, got {number}")
    if not lo <= number <= hi:
        raise FieldError(lambda p: f"field {p!r} is {number}, outside [{lo}, {hi}]")
    return number


def _int_bounds(f: Field) -> tuple[int, int]:
    lo = INT64_MIN if f.lo is None else max(int(f.lo), INT64_MIN)
    hi = INT64_MAX if f.hi is None else min(int(f.hi), INT64_MAX)
    return lo, hi


def _float_bounds(f: Field) -> tuple[float, float, float, float]:
    """(lo, hi) as declared and as a chained comparison that also refuses NaN and inf."""
    lo = -math.inf if f.lo is None else float(f.lo)
    hi = math.inf if f.hi is None else float(f.hi)
    return lo, hi, max(lo, -_FLOAT_MAX), min(hi, _FLOAT_MAX)


def _int(f: Field) -> Decoder:
    lo, hi = _int_bounds(f)
    optional = f.optional

    def decode(v: Any, _limits: WireLimits) -> int | None:
        if type(v) is int and lo <= v <= hi:
            return v
        if v is None and optional:
            return None
        raise _int_fault(v, lo, hi, optional)

    return decode


def _float(f: Field) -> Decoder:
    lo, hi, flo, fhi = _float_bounds(f)
    optional = f.optional

    def decode(v: Any, _limits: WireLimits) -> float | None:
        if type(v) is float and flo <= v <= fhi:
            return v
        if v is None and optional:
            return None
        return _float_value(v, lo, hi, optional)

    return decode


def _bool(f: Field) -> Decoder:
    optional = f.optional

    def decode(v: Any, _limits: WireLimits) -> bool | None:
        if type(v) is bool or (v is None and optional):
            return v
        raise mistyped(_or_nil("a boolean", optional), v)

    return decode


def _str(f: Field) -> Decoder:
    optional, nonempty = f.optional, f.nonempty

    def decode(v: Any, _limits: WireLimits) -> str | None:
        if type(v) is str:
            if nonempty and not v:
                raise FieldError(lambda p: f"field {p!r} must not be empty")
            return v
        if v is None and optional:
            return None
        raise mistyped(_or_nil("a string", optional), v)

    return decode


# -- sequences and maps --------------------------------------------------------------------------


def _items(v: Any) -> bool:
    return type(v) is list or type(v) is tuple


def _elements(element: Decoder, items: Sequence[Any], limits: WireLimits) -> tuple[Any, ...]:
    """Decode every element; on a fault, find the element again to name its index."""
    try:
        return tuple([element(x, limits) for x in items])
    except FieldError:
        for i, x in enumerate(items):
            try:
                element(x, limits)
            except FieldError as e:
                raise e.within(i) from None
        raise


def _strs(f: Field) -> Decoder:
    element = _str(Field(f.name, Kind.STR, f.doc))
    optional = f.optional

    def decode(v: Any, limits: WireLimits) -> tuple[str, ...] | None:
        if _items(v):
            if all(type(x) is str for x in v):
                return tuple(v)
            return _elements(element, v, limits)
        if v is None and optional:
            return None
        raise mistyped(_or_nil("an array", optional), v)

    return decode


def _ints(f: Field) -> Decoder:
    element = _int(Field(f.name, Kind.INT, f.doc, lo=f.lo, hi=f.hi))
    optional = f.optional

    def decode(v: Any, limits: WireLimits) -> tuple[int, ...] | None:
        if _items(v):
            return _elements(element, v, limits)
        if v is None and optional:
            return None
        raise mistyped(_or_nil("an array", optional), v)

    return decode


def _floats(f: Field) -> Decoder:
    lo, hi, flo, fhi = _float_bounds(f)
    n, optional = f.length, f.optional

    def element(x: Any, _limits: WireLimits) -> float:
        if type(x) is float and flo <= x <= fhi:
            return x
        return _float_value(x, lo, hi, False)

    def decode(v: Any, limits: WireLimits) -> tuple[float, ...] | None:
        if _items(v) and len(v) == n:
            for x in v:
                if not (type(x) is float and flo <= x <= fhi):
                    return _elements(element, v, limits)
            return tuple(v)
        if v is None and optional:
            return None
        raise mistyped(_or_nil(f"an array of {n} numbers", optional), v)

    return decode


def _map(f: Field) -> Decoder:
    is_fast: Callable[[Any], bool]
    if f.kind is Kind.INT_MAP:
        value = _int(Field(f.name, Kind.INT, f.doc, lo=f.lo, hi=f.hi))
        lo, hi = _int_bounds(f)
        is_fast = lambda x: type(x) is int and lo <= x <= hi  # noqa: E731
    else:
        value = _float(Field(f.name, Kind.FLOAT, f.doc, lo=f.lo, hi=f.hi))
        _, _, flo, fhi = _float_bounds(f)
        is_fast = lambda x: type(x) is float and flo <= x <= fhi  # noqa: E731
    optional = f.optional

    def slow(v: dict[Any, Any], limits: WireLimits) -> dict[str, Any]:
        out = {}
        for key, x in v.items():
            if type(key) is not str:
                raise _key_error(key)
            try:
                out[key] = value(x, limits)
            except FieldError as e:
                raise e.within(key) from None
        return out

    def decode(v: Any, limits: WireLimits) -> dict[str, Any] | None:
        if type(v) is dict:
            for key, x in v.items():
                if type(key) is not str or not is_fast(x):
                    return slow(v, limits)
            return dict(v)
        if v is None and optional:
            return None
        raise mistyped(_or_nil("a map", optional), v)

    return decode


def _document_fault(doc: dict[Any, Any], limits: WireLimits) -> FieldError | None:
    """What makes an opaque document unacceptable (None if nothing): nesting deeper than
    `limits.max_document_depth`, a map or list above `max_collection_items`, a string above
    `max_string_bytes` characters, a map key that is not a string. Walked level by level
    without recursion, so no nesting can exhaust the stack here or in the document's owner."""
    max_depth, max_items = limits.max_document_depth, limits.max_collection_items
    max_string = limits.max_string_bytes
    level: list[Any] = [doc]
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            return FieldError(
                lambda p: f"field {p!r} nests maps and lists deeper than the limit of {max_depth}"
            )
        below: list[Any] = []
        for node in level:
            if type(node) is dict:
                items: Iterable[Any] = node.values()
                for key in node:
                    if type(key) is not str:
                        return _document_key(key)
                    if len(key) > max_string:
                        return _long_string(len(key), max_string)
            else:
                items = node
            if len(node) > max_items:
                what = "map" if type(node) is dict else "list"
                return _big_collection(what, len(node), max_items)
            for value in items:
                kind = type(value)
                if kind is dict or kind is list or kind is tuple:
                    below.append(value)
                elif kind is str and len(value) > max_string:
                    return _long_string(len(value), max_string)
        level = below
    return None


def _document_key(key: Any) -> FieldError:
    return FieldError(lambda p: f"field {p!r} has a map key that is not a string: {key!r}")


def _big_collection(what: str, count: int, limit: int) -> FieldError:
    return FieldError(
        lambda p: f"field {p!r} holds a {what} of {count} items, above the limit of {limit}"
    )


def _long_string(length: int, limit: int) -> FieldError:
    return FieldError(
        lambda p: f"field {p!r} holds a string of {length} characters, above the limit of {limit}"
    )


def _document(f: Field) -> Decoder:
    optional = f.optional

    def decode(v: Any, limits: WireLimits) -> dict[str, Any] | None:
        if type(v) is dict:
            # JSON has string keys only (and would turn others into strings silently), so
            # every format refuses other keys at any depth. The owner of the document (the rig:
            # calibration) walks it recursively: its depth and sizes are bounded here first.
            fault = _document_fault(v, limits)
            if fault is not None:
                raise fault
            return v
        if v is None and optional:
            return None
        raise mistyped(_or_nil("a map", optional), v)

    return decode


def _messages(f: Field) -> Decoder:
    assert f.schema is not None
    element = struct_decoder(f.schema)
    limit, optional = f.limit, f.optional

    def decode(v: Any, limits: WireLimits) -> tuple[Any, ...] | None:
        if _items(v):
            if limit is not None and len(v) > getattr(limits, limit.attr):
                allowed = getattr(limits, limit.attr)
                raise plain_error(
                    f"oversize {limit.what}: {len(v)} {limit.unit}, above the limit of {allowed}"
                )
            return _elements(element, v, limits)
        if v is None and optional:
            return None
        raise mistyped(_or_nil("an array", optional), v)

    return decode


def value_decoder(f: Field) -> Decoder:
    """The decoder of a field held in a document (not a buffer, not the version)."""
    makers: dict[Kind, Callable[[Field], Decoder]] = {
        Kind.INT: _int,
        Kind.FLOAT: _float,
        Kind.BOOL: _bool,
        Kind.STR: _str,
        Kind.STRS: _strs,
        Kind.INTS: _ints,
        Kind.FLOATS: _floats,
        Kind.INT_MAP: _map,
        Kind.FLOAT_MAP: _map,
        Kind.DOCUMENT: _document,
        Kind.MESSAGES: _messages,
    }
    if f.kind is Kind.MESSAGE:
        assert f.schema is not None
        return struct_decoder(f.schema, optional=f.optional)
    maker = makers.get(f.kind)
    if maker is None:
        raise TypeError(f"field {f.name}: {f.kind.value} is not held in a document")
    return maker(f)


# -- maps of fields (nested messages) ------------------------------------------------------------


def check_keys(doc: Mapping[Any, Any], names: Sequence[str], envelope: Iterable[str] = ()) -> None:
    """Raise the FieldError for a document whose keys are not `names` (plus `envelope`): the first
    missing key in table order, else the unexpected ones."""
    expected = [*envelope, *names]
    for name in expected:
        if name not in doc:
            raise FieldError(lambda p: f"missing field {p!r}").within(name)
    known = set(expected)
    extra = sorted(str(k) for k in doc if k not in known)
    raise FieldError(lambda p: f"unexpected field(s) in {p or 'the document'}: {extra}")


def decode_values(
    pairs: Sequence[tuple[str, Decoder]], doc: Mapping[str, Any], limits: WireLimits
) -> list[Any]:
    """Each field's decoded value (keys already checked); a fault names the field."""
    try:
        return [decode(doc[name], limits) for name, decode in pairs]
    except FieldError:
        for name, decode in pairs:
            try:
                decode(doc[name], limits)
            except FieldError as e:
                raise e.within(name) from None
        raise


def finisher(schema: Schema) -> Callable[[list[Any]], Any]:
    """Builds the dataclass from its field values (in table order) after the field groups,
    and checks the table's rules on it."""
    cls = schema.cls
    index = {f.name: i for i, f in enumerate(schema.fields)}
    together = [(tuple(index[n] for n in g), g) for g in schema.together]
    one_of = [(tuple(index[n] for n in g), g) for g in schema.one_of]
    rules = schema.rules

    def finish(values: list[Any]) -> Any:
        for where, names in together:
            present = [values[i] is not None for i in where]
            if any(present) and not all(present):
                words = " and ".join(names)
                raise _at(f"{words} must be both set or both nil")
        for where, names in one_of:
            if sum(values[i] is not None for i in where) != 1:
                raise _at(f"exactly one of {' and '.join(names)} must be set")
        try:
            obj = cls(*values)
        except (TypeError, ValueError) as e:
            raise _at(f"not a valid {cls.__name__} ({e})") from e
        for rule in rules:
            problem = rule(obj)
            if problem:
                raise _at(problem)
        return obj

    return finish


_STRUCTS: dict[tuple[int, bool], Decoder] = {}


def struct_decoder(schema: Schema, optional: bool = False) -> Decoder:
    """The decoder of a nested message held as a map (no buffers)."""
    key = (id(schema), optional)
    cached = _STRUCTS.get(key)
    if cached is not None:
        return cached
    names = tuple(f.name for f in schema.fields)
    keys = frozenset(names)
    pairs = tuple((f.name, value_decoder(f)) for f in schema.fields)
    finish = finisher(schema)

    def decode(v: Any, limits: WireLimits) -> Any:
        if type(v) is not dict:
            if v is None and optional:
                return None
            raise mistyped(_or_nil("a map", optional), v)
        if v.keys() != keys:
            check_keys(v, names)
        return finish(decode_values(pairs, v, limits))

    _STRUCTS[key] = decode
    return decode


# -- encoding to documents -----------------------------------------------------------------------


def _struct_encoder(schema: Schema) -> Encoder:
    cls = schema.cls
    names = tuple(f.name for f in schema.fields)
    # attrgetter of several names gives a tuple, of one the value itself.
    get = operator.attrgetter(*names) if len(names) > 1 else lambda o: (getattr(o, names[0]),)
    nested = [(i, f.name, enc) for i, f in enumerate(schema.fields) if (enc := value_encoder(f))]

    def encode(obj: Any) -> dict[str, Any]:
        if type(obj) is not cls and not isinstance(obj, cls):
            got = type(obj).__name__
            raise FieldError(lambda p: f"{p or 'message'} must be a {cls.__name__}, got {got}")
        values = get(obj)
        out = dict(zip(names, values))  # noqa: B905 (as many values as names, by construction)
        for i, name, enc in nested:
            try:
                out[name] = enc(values[i])
            except FieldError as e:
                raise e.within(name) from None
        return out

    return encode


def value_encoder(f: Field) -> Encoder | None:
    """How a field's value becomes a document value: None when it is the value itself
    (msgpack and json take tuples, dicts and scalars as they are)."""
    if f.kind is Kind.MESSAGE:
        assert f.schema is not None
        struct = _struct_encoder(f.schema)
        if not f.optional:
            return struct
        return lambda v: None if v is None else struct(v)
    if f.kind is Kind.MESSAGES:
        assert f.schema is not None
        element = _struct_encoder(f.schema)

        def encode(v: Any) -> list[Any]:
            if not _items(v):
                raise FieldError(lambda p: f"{p} must be a tuple, got {type(v).__name__}")
            try:
                return [element(x) for x in v]
            except FieldError:
                for i, x in enumerate(v):
                    try:
                        element(x)
                    except FieldError as e:
                        raise e.within(i) from None
                raise

        return encode
    return None


# -- older schema versions -----------------------------------------------------------------------


def _added_since(schema: Schema, version: int) -> bool:
    """Whether `schema` or a message nested in it has a field added after `version`."""
    return any(
        f.since > version
        or (f.schema is not None and f.schema is not schema and _added_since(f.schema, version))
        for f in schema.fields
    )


def _not_yet(version: int, since: int) -> FieldError:
    return FieldError(
        lambda p: f"field {p!r} is not in schema version {version} (added in version {since})"
    )


def upgrade(schema: Schema, doc: Mapping[str, Any], version: int) -> Mapping[str, Any]:
    """`doc`, a map of `schema`'s fields written with schema `version`, as the current version
    reads it: every field added since (always optional) is None, in nested messages too. A
    document of the current version is returned as it is. Values of the wrong type are left
    for the decoders to refuse.

    Raises FieldError: `doc` holds a field its version did not have."""
    if not _added_since(schema, version):
        return doc
    out = dict(doc)
    for f in schema.fields:
        if f.since > version:
            if f.name in out:
                raise _not_yet(version, f.since).within(f.name)
            out[f.name] = None
        elif f.schema is None or not _added_since(f.schema, version):
            continue
        elif f.kind is Kind.MESSAGE and type(out.get(f.name)) is dict:
            try:
                out[f.name] = upgrade(f.schema, out[f.name], version)
            except FieldError as e:
                raise e.within(f.name) from None
        elif f.kind is Kind.MESSAGES and type(out.get(f.name)) is list:
            items = []
            for i, item in enumerate(out[f.name]):
                try:
                    items.append(upgrade(f.schema, item, version) if type(item) is dict else item)
                except FieldError as e:
                    raise e.within(i).within(f.name) from None
            out[f.name] = items
    return out


# -- whole messages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageCodec:
    """What a format needs of one wire type's table: the header, the fields held in the
    document (`plain`, in table order), the buffers, and how to build the message."""

    schema: Schema
    plain: tuple[Field, ...]
    plain_pairs: tuple[tuple[str, Decoder], ...]
    plain_keys: frozenset[str]
    plain_encoders: tuple[tuple[str, Encoder | None], ...]
    buffers: tuple[Field, ...]
    versions: tuple[str, ...]
    buffer_options: tuple[tuple[str, ...], ...]
    slots: tuple[Any, ...]
    finish: Callable[[list[Any]], Any]

    @property
    def plain_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.plain_pairs)

    def decode_fields(self, doc: Any, limits: WireLimits) -> list[Any]:
        """The plain fields' values from a map holding exactly them (the wire's `fields`)."""
        if type(doc) is not dict:
            raise mistyped("a map", doc)
        if doc.keys() != self.plain_keys:
            check_keys(doc, self.plain_names)
        return decode_values(self.plain_pairs, doc, limits)

    def decode_plain(self, doc: Mapping[str, Any], limits: WireLimits) -> list[Any]:
        """The plain fields' values from a document already checked to hold them."""
        return decode_values(self.plain_pairs, doc, limits)

    def encode_plain(self, msg: Any) -> dict[str, Any]:
        out = {}
        for name, enc in self.plain_encoders:
            value = getattr(msg, name)
            if enc is not None:
                try:
                    value = enc(value)
                except FieldError as e:
                    raise e.within(name) from None
            out[name] = value
        return out

    def check_buffer_names(self, names: list[str]) -> None:
        if tuple(names) not in self.buffer_options:
            options = " or ".join(str(list(o)) for o in self.buffer_options)
            raise plain_error(f"{self.schema.name} carries buffers {options}, got {names}")

    def assemble(
        self, header: Any, version: int, plain: list[Any], buffers: Mapping[str, Any]
    ) -> Any:
        """The message from its parts (checks the table's field groups and rules)."""
        rest = iter(plain)
        values = [
            header
            if slot is _HEADER
            else version
            if slot is _VERSION
            else next(rest)
            if slot is _PLAIN
            else buffers.get(slot)
            for slot in self.slots
        ]
        return self.finish(values)


# Where each field's value comes from when a message is assembled (else: the buffer's name).
_HEADER, _VERSION, _PLAIN = object(), object(), object()


def _buffer_options(schema: Schema) -> tuple[tuple[str, ...], ...]:
    buffers = [f for f in schema.fields if f.kind.is_buffer]
    options = []
    for present in itertools.product((True, False), repeat=len(buffers)):
        names = {f.name for f, p in zip(buffers, present, strict=True) if p}
        if any(not p and not f.optional for f, p in zip(buffers, present, strict=True)):
            continue
        if any(len(names & set(g)) != 1 for g in schema.one_of):
            continue
        if any(0 < len(names & set(g)) < len(g) for g in schema.together):
            continue
        options.append(tuple(f.name for f in buffers if f.name in names))
    return tuple(sorted(options, key=len))


_CODECS: dict[str, MessageCodec] = {}


def message_codec(type_name: str) -> MessageCodec:
    """The codec of a wire type; KeyError when there is no such type."""
    codec = _CODECS.get(type_name)
    if codec is None:
        schema = schema_of(type_name)
        plain = tuple(
            f for f in schema.fields[1:] if not f.kind.is_buffer and f.kind is not Kind.VERSION
        )
        slots = tuple(
            _HEADER
            if i == 0
            else _VERSION
            if f.kind is Kind.VERSION
            else f.name
            if f.kind.is_buffer
            else _PLAIN
            for i, f in enumerate(schema.fields)
        )
        codec = MessageCodec(
            schema=schema,
            plain=plain,
            plain_pairs=tuple((f.name, value_decoder(f)) for f in plain),
            plain_keys=frozenset(f.name for f in plain),
            plain_encoders=tuple((f.name, value_encoder(f)) for f in plain),
            buffers=tuple(f for f in schema.fields if f.kind.is_buffer),
            versions=tuple(f.name for f in schema.fields if f.kind is Kind.VERSION),
            buffer_options=_buffer_options(schema),
            slots=slots,
            finish=finisher(schema),
        )
        _CODECS[type_name] = codec
    return codec


#: Decoder and encoder of the common header, used by every format.
decode_header: Decoder = struct_decoder(HEADER)
encode_header: Encoder = _struct_encoder(HEADER)
