"""JSON Schemas (draft 2020-12) generated from the message tables (perception.msgs.schema):
of a message's JSON document (perception.msgs.jsonl), and of its wire header document
(perception.msgs.wire) as JSON, the content of a recorded drive's companion channel. Each
property's description is the field's doc and unit."""

from __future__ import annotations

import math
from typing import Any

from perception.msgs.schema import SCHEMA_VERSION, Field, Kind, Schema, schema_of

__all__ = ["document_json_schema", "wire_json_schema"]

_JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _json_number(lo: float | None, hi: float | None, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind}
    if lo is not None and math.isfinite(lo):
        out["minimum"] = lo
    if hi is not None and math.isfinite(hi):
        out["maximum"] = hi
    return out


def _json_value(f: Field) -> dict[str, Any]:
    scalar = {Kind.INT: "integer", Kind.FLOAT: "number"}
    kind = f.kind
    out: dict[str, Any]
    if kind in scalar:
        out = _json_number(f.lo, f.hi, scalar[kind])
    elif kind is Kind.BOOL:
        out = {"type": "boolean"}
    elif kind is Kind.STR:
        out = {"type": "string", "minLength": 1} if f.nonempty else {"type": "string"}
    elif kind is Kind.STRS:
        out = {"type": "array", "items": {"type": "string"}}
    elif kind is Kind.INTS:
        out = {"type": "array", "items": _json_number(f.lo, f.hi, "integer")}
    elif kind is Kind.FLOATS:
        item = _json_number(f.lo, f.hi, "number")
        out = {"type": "array", "items": item, "minItems": f.length, "maxItems": f.length}
    elif kind in (Kind.INT_MAP, Kind.FLOAT_MAP):
        value = _json_number(f.lo, f.hi, "integer" if kind is Kind.INT_MAP else "number")
        out = {"type": "object", "additionalProperties": value}
    elif kind is Kind.MESSAGE:
        assert f.schema is not None
        out = _json_object(f.schema, {})
    elif kind is Kind.MESSAGES:
        assert f.schema is not None
        out = {"type": "array", "items": _json_object(f.schema, {})}
    elif kind.is_buffer:
        out = {
            "type": "object",
            "properties": {
                "dtype": {"const": f.dtype},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "base64": {"type": "string", "contentEncoding": "base64"},
            },
            "required": ["dtype", "shape", "base64"],
            "additionalProperties": False,
        }
    elif kind is Kind.DOCUMENT:
        out = {"type": "object"}
    else:  # Kind.VERSION
        out = {"const": SCHEMA_VERSION}
    if f.optional:
        out = {"anyOf": [out, {"type": "null"}]}
    out["description"] = f.description
    return out


def _json_object(
    schema: Schema, extra: dict[str, Any], *, skip: tuple[Kind, ...] = ()
) -> dict[str, Any]:
    props = {**extra}
    for f in schema.fields:
        if f.kind not in skip:
            props[f.name] = _json_value(f)
    return {
        "type": "object",
        "title": schema.name,
        "description": schema.doc,
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


def document_json_schema(message_type: type[Any] | str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a message's JSON document (perception.msgs.jsonl):
    `type`, `schema_version`, then every field by its attribute name; arrays and encoded bytes
    as `{dtype, shape, base64}`."""
    s = schema_of(message_type)
    envelope = {
        "type": {"const": s.name, "description": "message type"},
        "schema_version": {"const": SCHEMA_VERSION, "description": "schema version"},
    }
    out = _json_object(s, envelope, skip=(Kind.VERSION,))
    return {"$schema": _JSON_SCHEMA_DIALECT, **out}


def wire_json_schema(message_type: type[Any] | str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a message's wire header document
    (perception.msgs.wire) as JSON: the MCAP companion channel's content."""
    s = schema_of(message_type)
    fields = [f for f in s.fields if f.name != "header" and f.kind is not Kind.VERSION]
    plain = [f for f in fields if not f.kind.is_buffer]
    buffer_names = [f.name for f in fields if f.kind.is_buffer]
    descriptor = {
        "type": "object",
        "properties": {
            "name": {"enum": buffer_names} if buffer_names else {"type": "string"},
            "dtype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        },
        "required": ["name", "dtype", "shape"],
        "additionalProperties": False,
    }
    return {
        "$schema": _JSON_SCHEMA_DIALECT,
        "type": "object",
        "title": f"{s.name} wire header document",
        "description": f"{s.doc} Array buffers are not in this document.",
        "properties": {
            "type": {"const": s.name},
            "version": {"const": SCHEMA_VERSION, "description": "schema version"},
            "header": _json_value(s.fields[0]),
            "fields": {
                "type": "object",
                "properties": {f.name: _json_value(f) for f in plain},
                "required": [f.name for f in plain],
                "additionalProperties": False,
            },
            "buffers": {
                "type": "array",
                "items": descriptor,
                "maxItems": len(buffer_names),
                "description": "name, dtype and shape of each array buffer, in order",
            },
        },
        "required": ["type", "version", "header", "fields", "buffers"],
        "additionalProperties": False,
    }
