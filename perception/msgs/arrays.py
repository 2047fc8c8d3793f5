"""Arrays of messages (point clouds, images, encoded bytes), derived from the schema tables.

Every format describes an array by its dtype and shape (the wire in its buffer descriptors,
JSON next to the base64 bytes) and carries the raw little-endian C-contiguous bytes. An array
is checked on its description first (layout, dimensions shared with other arrays, emptiness,
`WireLimits`, dtype), so an oversized one is refused before its bytes are touched, then on its
bytes (length, finiteness, bounds).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from perception.msgs.codec import FieldError, check_keys, describe, plain_error, value_decoder
from perception.msgs.schema import INT64_MAX, Field, Kind, Schema, WireLimits

__all__ = ["check_buffer", "decode_descriptor", "from_buffer", "to_buffer"]


def check_buffer(
    schema: Schema,
    f: Field,
    *,
    dtype: str,
    shape: tuple[int, ...],
    shapes: Mapping[str, tuple[int, ...]],
    limits: WireLimits,
) -> None:
    """Check an array's dtype and shape, as its document describes them, before its bytes are
    read: layout, dimensions shared with other arrays (`shapes`), emptiness, size limits."""
    spec = f.shape
    if len(shape) != len(spec) or any(
        isinstance(want, int) and got != want for want, got in zip(spec, shape, strict=False)
    ):
        raise plain_error(f"{f.name} must be {f.layout}, got dtype {dtype!r} shape {list(shape)}")
    for axis, want in enumerate(spec):
        if isinstance(want, str):
            other = shapes.get(want)
            if other is not None and shape[axis] != other[0]:
                resolved = [other[0] if isinstance(w, str) else w or "N" for w in spec]
                rows = schema.field(want).rows
                raise plain_error(
                    f"{f.name} must have shape {resolved} (one per {rows}), got {list(shape)}"
                )
    if f.nonempty and 0 in shape:
        raise plain_error(f"{f.name} is empty (shape {list(shape)})")
    if f.limit is not None:
        limit = f.limit
        count = math.prod(shape[: limit.dims])
        allowed = getattr(limits, limit.attr)
        if count > allowed:
            sizes = " x ".join(str(d) for d in shape[: limit.dims])
            amount = f"{sizes} = {count}" if limit.dims > 1 else str(count)
            raise plain_error(
                f"oversize {limit.what}: {amount} {limit.unit}, above the limit of {allowed}"
            )
    if dtype != f.dtype:
        name = np.dtype(f.dtype).name
        raise plain_error(f"{f.name} has dtype {dtype!r}, expected {f.dtype!r} ({name})")


def from_buffer(
    f: Field, shape: tuple[int, ...], data: Any, holder: str, limits: WireLimits
) -> npt.NDArray[Any] | bytes:
    """The field's value from its bytes (after `check_buffer`): a read-only array viewing
    `data` (no copy), or `bytes` for encoded bytes; its values checked (finite, bounds, the
    field's `value_limit` in `limits`). `holder` names where the bytes were, for the error
    ("its buffer frame")."""
    dtype = _dtype(f.dtype)
    view = memoryview(data)
    expected = math.prod(shape) * dtype.itemsize
    if expected != view.nbytes:
        raise plain_error(
            f"{f.name} shape {list(shape)} needs {expected} bytes but {holder} holds "
            f"{view.nbytes} (truncated or mismatched)"
        )
    arr = np.frombuffer(view, dtype=dtype).reshape(shape)
    # Messages are immutable; received frames may be writable, their views must not be.
    arr.flags.writeable = False
    if f.kind is Kind.BYTES:
        return arr.tobytes()
    if f.finite:
        finite = np.isfinite(arr)
        if not finite.all():
            per_row = finite.reshape(shape[0], -1).all(axis=1) if arr.ndim > 1 else finite
            bad = int(np.count_nonzero(~per_row))
            what = _or_list(f.columns) if f.columns else "values"
            raise plain_error(f"{f.name} has {bad} {f.rows}(s) with non-finite {what} (NaN or inf)")
    if f.lo is not None and arr.size:
        low = arr.min()
        if low < f.lo:
            raise plain_error(f"{f.name} has values below {f.lo:g} (minimum {low}): {f.doc}")
    if f.value_limit is not None and arr.size:
        high = arr.max()
        allowed = getattr(limits, f.value_limit)
        if high > allowed:
            raise plain_error(
                f"{f.name} has values above the limit of {allowed} (maximum {high}): {f.doc}"
            )
    return arr


def _or_list(names: Sequence[str]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


@functools.cache
def _dtype(name: str) -> np.dtype[Any]:
    return np.dtype(name)


def to_buffer(f: Field, value: Any) -> tuple[str, list[int], memoryview | bytes]:
    """An array (or encoded bytes) as (dtype, shape, bytes): a zero-copy view of a C-contiguous
    little-endian array, else a converted copy. The receiver checks dtype and shape."""
    if f.kind is Kind.BYTES:
        if isinstance(value, bytes):
            return f.dtype, [len(value)], value
        if isinstance(value, bytearray | memoryview):
            data = bytes(value)
            return f.dtype, [len(data)], data
        raise plain_error(f"{f.name} must be bytes, got {type(value).__name__}")
    if not isinstance(value, np.ndarray):
        raise plain_error(f"{f.name} must be a numpy array, got {type(value).__name__}")
    arr: npt.NDArray[Any] = value
    want = _dtype(f.dtype)
    if arr.dtype.hasobject:
        raise plain_error(f"{f.name} has dtype {arr.dtype}, which cannot travel as a raw buffer")
    if arr.dtype != want and arr.dtype.kind == want.kind and arr.dtype.itemsize == want.itemsize:
        # Same type in the other byte order: documents carry little-endian data.
        arr = arr.astype(want)
    arr = np.ascontiguousarray(arr)  # a no-op (no copy) for the usual C-contiguous array
    return arr.dtype.str, list(value.shape), arr.reshape(-1).view(np.uint8).data


_DTYPE = value_decoder(Field("dtype", Kind.STR, "numpy dtype string"))
_SHAPE = value_decoder(Field("shape", Kind.INTS, "array shape", lo=0, hi=INT64_MAX))
_TEXT = value_decoder(Field("text", Kind.STR, "a string"))


def decode_descriptor(
    desc: Any, keys: Sequence[str], limits: WireLimits
) -> tuple[str, tuple[int, ...], dict[str, str]]:
    """A buffer's description in a document: a map of exactly `keys`, `dtype` a string,
    `shape` non-negative integers, any other key a string. Returns (dtype, shape, others)."""
    if type(desc) is not dict:
        raise FieldError(lambda p: f"{p} must be a map, got {describe(desc)}")
    if desc.keys() != set(keys):
        check_keys(desc, keys)
    others = {}
    for key in keys:
        decode = _DTYPE if key == "dtype" else _SHAPE if key == "shape" else _TEXT
        try:
            value = decode(desc[key], limits)
        except FieldError as e:
            raise e.within(key) from None
        others[key] = value
    return others.pop("dtype"), others.pop("shape"), others
