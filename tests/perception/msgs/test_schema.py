"""The schema tables: they cover every dataclass field with a kind that fits its annotation, key
names are attribute names in every format, units follow the names, and the generated JSON
Schemas accept every document the codecs write (and refuse others)."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

import jsonschema
import msgpack
import numpy as np
import pytest
from hypothesis import given

from perception.msgs import jsonl, wire
from perception.msgs.json_schemas import document_json_schema, wire_json_schema
from perception.msgs.schema import (
    HEADER,
    SCHEMAS,
    WIRE_TYPES,
    Field,
    Kind,
    Schema,
    schema_of,
)
from perception.msgs.types import Header, Message
from tests.perception.msgs.strategies import SETTINGS, messages


def _nested_dataclasses(cls: type[Any]) -> set[type[Any]]:
    """The dataclasses a message holds, at any depth (from the annotations, not the table)."""
    found: set[type[Any]] = set()
    stack = list(typing.get_type_hints(cls).values())
    while stack:
        hint = stack.pop()
        if dataclasses.is_dataclass(hint) and isinstance(hint, type) and hint not in found:
            found.add(hint)
            stack += typing.get_type_hints(hint).values()
        stack += typing.get_args(hint)
    return found


def test_every_wire_type_has_a_table() -> None:
    assert set(WIRE_TYPES) == {t.__name__ for t in typing.get_args(Message)}
    nested = set().union(*(_nested_dataclasses(s.cls) for s in WIRE_TYPES.values()))
    assert nested <= set(SCHEMAS), f"nested types without a table: {nested - set(SCHEMAS)}"
    assert Header in nested


@pytest.mark.parametrize("schema", list(SCHEMAS.values()), ids=lambda s: s.name)
def test_table_lists_every_dataclass_field_in_order(schema: Schema) -> None:
    declared = [f.name for f in dataclasses.fields(schema.cls)]
    assert [f.name for f in schema.fields] == declared


def _allowed_hints(f: Field) -> list[Any]:
    """The annotations a field of this kind may have (None added for optional fields)."""
    npt_array = "ndarray"
    cls = f.schema.cls if f.schema is not None else None
    by_kind: dict[Kind, list[Any]] = {
        Kind.INT: [int],
        Kind.FLOAT: [float],
        Kind.BOOL: [bool],
        Kind.STR: [str],
        Kind.STRS: [tuple[str, ...]],
        Kind.INTS: [tuple[int, ...]],
        Kind.FLOATS: [tuple[float, ...], tuple.__class_getitem__((float,) * f.length)],
        Kind.INT_MAP: [dict[str, int]],
        Kind.FLOAT_MAP: [dict[str, float]],
        Kind.MESSAGE: [cls],
        Kind.MESSAGES: [tuple[cls, ...]],  # type: ignore[valid-type]
        Kind.ARRAY: [npt_array],
        Kind.BYTES: [bytes],
        Kind.DOCUMENT: [dict[str, Any]],
        Kind.VERSION: [int],
    }
    return by_kind[f.kind]


def _matches(hint: Any, allowed: Any) -> bool:
    if allowed == "ndarray":
        return typing.get_origin(hint) is np.ndarray
    return bool(hint == allowed)


@pytest.mark.parametrize("schema", list(SCHEMAS.values()), ids=lambda s: s.name)
def test_each_kind_fits_the_annotation(schema: Schema) -> None:
    hints = typing.get_type_hints(schema.cls)
    for f in schema.fields:
        hint = hints[f.name]
        args = typing.get_args(hint)
        is_optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and (
            type(None) in args
        )
        assert is_optional == f.optional, f"{schema.name}.{f.name}: optional is {f.optional}"
        if is_optional:
            (hint,) = [a for a in args if a is not type(None)]
        allowed = _allowed_hints(f)
        assert any(_matches(hint, a) for a in allowed), f"{schema.name}.{f.name}: {hint}"


def test_a_table_without_a_new_field_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class LongerHeader(Header):
        source_id: int = 0

    with pytest.raises(TypeError, match="source_id"):
        Schema(LongerHeader, HEADER.fields)
    with pytest.raises(TypeError, match="frame_id"):
        Schema(Header, HEADER.fields[:-1])


_UNITS = {"_ns": "ns", "_m": "m", "_deg": "deg", "_rad": "rad", "_mps": "m/s", "_m2": "m^2",
          "_ms": "ms", "_ppm": "ppm"}  # fmt: skip


@pytest.mark.parametrize("schema", list(SCHEMAS.values()), ids=lambda s: s.name)
def test_units_follow_the_names(schema: Schema) -> None:
    for f in schema.fields:
        suffix = "_" + f.name.rsplit("_", 1)[-1]
        if suffix in _UNITS:
            assert f.unit == _UNITS[suffix], f"{schema.name}.{f.name}: unit {f.unit!r}"
        assert f.doc, f"{schema.name}.{f.name} has no doc"


@SETTINGS
@given(messages)
def test_keys_are_attribute_names_in_every_format(msg: Message) -> None:
    names = {f.name for f in dataclasses.fields(msg)}
    arrays = {f.name for f in schema_of(type(msg)).fields if f.kind.is_buffer}
    doc = jsonl.to_document(msg)
    # JSON: the attribute names, the version being the record's `schema_version`.
    assert set(doc) == names | {"type", "schema_version"}
    assert set(doc["header"]) == {f.name for f in dataclasses.fields(Header)}
    # Wire: the header, the plain fields under `fields`, the arrays as named buffers.
    wire_doc = msgpack.unpackb(bytes(wire.encode(msg)[1]), raw=False)
    assert wire_doc["header"] == doc["header"]
    assert set(wire_doc["fields"]) == names - arrays - {"header", "schema_version"}
    assert [b["name"] for b in wire_doc["buffers"]] == [
        f.name for f in dataclasses.fields(msg) if f.name in arrays and doc[f.name] is not None
    ]
    # Nested messages: the same keys and values in both documents.
    for name, value in wire_doc["fields"].items():
        assert json.loads(json.dumps(value)) == doc[name]


@pytest.mark.parametrize("name", list(WIRE_TYPES))
def test_json_schemas_are_valid(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(document_json_schema(name))
    jsonschema.Draft202012Validator.check_schema(wire_json_schema(name))
    assert schema_of(name) is WIRE_TYPES[name]


@SETTINGS
@given(messages)
def test_json_schemas_accept_what_the_codecs_write(msg: Message) -> None:
    name = type(msg).__name__
    jsonschema.validate(jsonl.to_document(msg), document_json_schema(name))
    frames = wire.encode(msg)
    companion = json.loads(json.dumps(msgpack.unpackb(bytes(frames[1]), raw=False)))
    jsonschema.validate(companion, wire_json_schema(name))


def test_json_schemas_refuse_other_documents() -> None:
    from perception.msgs.types import DetectionList

    dl = DetectionList(Header("detections", 0, 1, "vehicle"), ())
    doc = jsonl.to_document(dl)
    schema = document_json_schema("DetectionList")
    for bad in (
        {**doc, "timings": {}},
        {**doc, "header": {**doc["header"], "sequence": 0}},
        {**doc, "latency_ns": 1.5},
        {**doc, "type": "GnssFix"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    described = schema["properties"]["timings_ns"]["description"]
    assert described == "time spent per pipeline stage [ns]"
