"""Mutations on the wire: what a broken or hostile sender can put in a multipart message.

`mutate_wire` applies one to three of: bit flips, truncation, extension, frames dropped,
repeated, inserted, swapped or emptied (or thousands added), a hostile topic (empty, not UTF-8,
a subscribed topic with a suffix, which ZeroMQ's prefix match lets through, very long), header
document edits (`edit_document`: a value of the wrong type, huge or negative integers, NaN and
infinities, long strings, deep nesting and invalid UTF-8 spliced in as raw msgpack, keys removed
or added, dtype and shape descriptors, the type name, the version, stamps far off) and array
values (NaN, infinities, float32 extremes in a sweep; negative and huge time offsets).
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np

from perception.msgs.schema import INT64_MAX, INT64_MIN
from tests.fuzz.sources import Source, choice, weighted

__all__ = [
    "START_NS",
    "doc_paths",
    "edit_document",
    "hostile_value",
    "mutate_document",
    "mutate_wire",
    "odd_string",
    "pack",
    "parent_of",
    "short",
]

# A stamp near where the drive starts (KITTI raw's epoch, as the synthetic drive uses).
START_NS = 1_317_000_000_000_000_000
#: Longest string a mutation writes (the header document limit is 4 MiB).
MAX_STRING = 1 << 16
#: Longest topic a mutation writes (mutations compound: a topic repeated twice would reach
#: hundreds of MB, more than the node's sockets take in one message).
MAX_TOPIC = 1 << 20
# A unique string whose packed form is replaced by raw msgpack bytes after packing.
_SPLICE = "\x00splice-raw-msgpack\x00"
_SPLICE_PACKED = msgpack.packb(_SPLICE, use_bin_type=True)
_DTYPES = (
    "<f4",
    ">f4",
    "<f8",
    "<f2",
    "<i8",
    ">i8",
    "<i4",
    "|u1",
    "|i1",
    "|b1",
    "<u8",
    "|O",
    "<U8",
    "|S4",
    "|V16",
    "<c8",
    "<M8[ns]",
    "f4",
    "float32",
    "",
    "xyz",
    "<f4\x00",
)


# -- hostile values -------------------------------------------------------------------------------


def _long_string(src: Source) -> str:
    n = choice(src, (0, 1, 255, 256, 4096, src.integer(1, MAX_STRING)))
    return choice(src, ("a", "é", "\u2603", "\x00", "/"))[:1] * n


def odd_string(src: Source) -> str:
    return choice(
        src,
        (
            "",
            " ",
            "\x00",
            "camera/front\x00",
            "lidar/top ",
            "\u202e\u0000\ufeff",
            "\U0001f697" * 3,
            "../../etc/passwd",
            "%s%n%x",
            "camera/rear",
            "lidar",
            _long_string(src),
        ),
    )


def hostile_value(src: Source) -> Any:
    """A value of any msgpack type, likely to break whatever reads it."""
    return weighted(
        src,
        (
            (3, lambda: None),
            (2, lambda: choice(src, (True, False))),
            (
                6,
                lambda: choice(
                    src,
                    (
                        0,
                        -1,
                        1,
                        2**31,
                        2**32,
                        INT64_MAX,
                        INT64_MAX + 1,
                        2**64 - 1,
                        INT64_MIN,
                        10**18,
                        -(10**18),
                    ),
                ),
            ),
            (2, lambda: src.integer(INT64_MIN, 2**64 - 1)),
            (
                5,
                lambda: choice(
                    src,
                    (
                        math.nan,
                        math.inf,
                        -math.inf,
                        1e308,
                        -1e308,
                        -0.0,
                        5e-324,
                        0.5,
                        3.4e38,
                        1e-45,
                    ),
                ),
            ),
            (4, lambda: odd_string(src)),
            (2, lambda: src.raw(src.integer(0, 64))),
            (2, lambda: []),
            (2, lambda: {}),
            (2, lambda: [0] * src.integer(1, 10_000)),
            (1, lambda: {str(i): i for i in range(src.integer(1, 2000))}),
            (1, lambda: {1: "int key"}),
            (1, lambda: {b"bytes key": 1}),
            (2, lambda: _SPLICE),  # deep nesting or invalid UTF-8, spliced in after packing
        ),
    )()


def _splice_raw(src: Source) -> bytes:
    """Raw msgpack that packb cannot write: nesting deeper than its limit, a str of invalid
    UTF-8, a map with a nil key, an ext type."""
    depth = choice(src, (50, 400, 999, 1000, 1100, 5000, src.integer(1, 100_000)))
    return weighted(
        src,
        (
            (3, lambda: b"\x91" * depth + b"\xc0"),  # [[[...nil...]]]
            (2, lambda: b"\x81\xa1k" * depth + b"\xc0"),  # {"k": {"k": ...}}
            (1, lambda: b"\xa3\xff\xfe\xfd"),  # str of invalid UTF-8
            (1, lambda: b"\xa2\xed\xa0"),  # str of a lone surrogate
            (1, lambda: b"\x81\xc0\x01"),  # {nil: 1}
            (1, lambda: b"\xd4\x01\x00"),  # fixext 1
            (1, lambda: b"\xdd\xff\xff\xff\xff"),  # array32 claiming 4G items, none there
        ),
    )()


def pack(doc: Any, src: Source) -> bytes:
    """msgpack of `doc`, with any `_SPLICE` string replaced by raw bytes (`_splice_raw`);
    values packb refuses (ints beyond 64 bits) become nil."""
    try:
        packed: bytes = msgpack.packb(doc, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        packed = msgpack.packb(_clip(doc), use_bin_type=True)
    while _SPLICE_PACKED in packed:
        packed = packed.replace(_SPLICE_PACKED, _splice_raw(src), 1)
    return packed


def _clip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clip(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clip(v) for v in value]
    if isinstance(value, int) and not (INT64_MIN <= value <= 2**64 - 1):
        return None
    return value


# -- document edits -------------------------------------------------------------------------------


def doc_paths(doc: Any, prefix: tuple[Any, ...] = (), limit: int = 400) -> list[tuple[Any, ...]]:
    """Paths to the values inside `doc` (maps and lists), breadth first, at most `limit`."""
    out: list[tuple[Any, ...]] = []
    todo: deque[tuple[tuple[Any, ...], Any]] = deque([(prefix, doc)])
    while todo and len(out) < limit:
        path, value = todo.popleft()
        items: list[tuple[Any, Any]] = []
        if isinstance(value, dict):
            items = list(value.items())
        elif isinstance(value, list):
            items = list(enumerate(value[:16]))
        for key, child in items:
            out.append((*path, key))
            todo.append(((*path, key), child))
    return out


def parent_of(doc: Any, path: tuple[Any, ...]) -> Any:
    node = doc
    for key in path[:-1]:
        node = node[key]
    return node


def edit_document(src: Source, doc: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A deep copy of a header document with one hostile edit, and what it was."""
    doc = copy.deepcopy(doc)
    how = weighted(
        src,
        (
            (10, "value"),
            (2, "delete"),
            (2, "add key"),
            (3, "stamp"),
            (3, "descriptor"),
            (1, "type"),
            (1, "version"),
            (1, "seq"),
        ),
    )
    if how == "stamp":
        stamp = doc["header"].get("stamp_ns")
        stamp = stamp if isinstance(stamp, int) else START_NS
        value = choice(
            src,
            (
                0,
                1,
                -1,
                INT64_MAX,
                INT64_MAX + 1,
                START_NS * 7,
                10**9,
                stamp - 10**15,
                stamp + 10**15,
                1.5e18,
                str(START_NS),
            ),
        )
        doc["header"]["stamp_ns"] = value
        return doc, f"header.stamp_ns={value!r:.40}"
    if how == "seq":
        value = choice(src, (-1, INT64_MAX, 2**64 - 1, 0.0))
        doc["header"]["seq"] = value
        return doc, f"header.seq={value!r}"
    if how == "type":
        value = choice(
            src,
            (
                "LidarSweep",
                "CameraFrame",
                "GnssFix",
                "RigMessage",
                "DetectionList",
                "Diagnostics",
                "SyncedBundle",
                "",
                "EgoPose",
            ),
        )
        doc["type"] = value
        return doc, f"type={value}"
    if how == "version":
        value = choice(src, (0, 2, -1, 1.0, "1", None, True))
        doc["version"] = value
        return doc, f"version={value!r}"
    buffers = doc.get("buffers")
    if how == "descriptor" and isinstance(buffers, list) and buffers:
        index = src.integer(0, len(buffers) - 1)
        if not isinstance(buffers[index], dict):
            buffers[index] = {}
        desc = buffers[index]
        key = choice(src, ("dtype", "shape", "name"))
        if key == "dtype":
            desc["dtype"] = choice(src, _DTYPES)
        elif key == "shape":
            shape = desc.get("shape")
            shape = [s for s in shape if isinstance(s, int)] if isinstance(shape, list) else [1]
            desc["shape"] = weighted(
                src,
                (
                    (2, lambda: [-1, *shape[1:]]),
                    (2, lambda: [0, *shape[1:]]),
                    (2, lambda: [s + choice(src, (1, -1)) for s in shape]),
                    (1, lambda: [2**62, *shape[1:]]),
                    (1, lambda: [2**31, 2**31, *shape[1:]]),
                    (1, lambda: [*shape, 1]),
                    (1, lambda: shape[:-1]),
                    (1, lambda: []),
                    (1, lambda: [1] * src.integer(32, 100_000)),
                    (1, lambda: [float(s) for s in shape]),
                    (1, lambda: "1,4"),
                    (1, lambda: [[s] for s in shape]),
                ),
            )()
        else:
            desc["name"] = choice(src, ("points", "image", "data", "point_time_offsets_ns", "x"))
        return doc, f"buffers[{index}].{key}={desc[key]!r:.60}"
    paths = doc_paths(doc)
    path = choice(src, paths)
    parent = parent_of(doc, path)
    name = ".".join(str(p) for p in path)
    if how == "delete":
        del parent[path[-1]]
        return doc, f"delete {name}"
    if how == "add key" and isinstance(parent, dict):
        key = choice(src, ("extra", "", "stamp_ns", "\x00", "x" * 300))
        parent[key] = hostile_value(src)
        return doc, f"add {name}.{key!r:.20}"
    value = hostile_value(src)
    parent[path[-1]] = value
    return doc, f"{name}={short(value)}"


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}...({type(value).__name__}, {len(text)})"


# -- wire mutations -------------------------------------------------------------------------------


def _flip_bits(src: Source, frames: list[Any]) -> str:
    i = src.integer(0, len(frames) - 1)
    data = bytearray(frames[i])
    if not data:
        return "flip (empty frame)"
    n = choice(src, (1, 1, 2, 3, 8, 64))
    for _ in range(n):
        pos = src.integer(0, len(data) - 1)
        data[pos] ^= 1 << src.integer(0, 7)
    frames[i] = bytes(data)
    return f"flip {n} bits of frame {i}"


def _truncate(src: Source, frames: list[Any]) -> str:
    i = src.integer(0, len(frames) - 1)
    size = len(frames[i])
    keep = choice(src, (0, 1, size // 2, max(0, size - 1), max(0, size - 7), src.integer(0, size)))
    frames[i] = bytes(memoryview(frames[i])[:keep])
    return f"truncate frame {i} to {keep}/{size} bytes"


def _extend(src: Source, frames: list[Any]) -> str:
    i = src.integer(0, len(frames) - 1)
    extra = src.raw(choice(src, (1, 3, 4, 16, 1000)))
    frames[i] = bytes(frames[i]) + extra
    return f"extend frame {i} by {len(extra)} bytes"


def _frame_list(src: Source, frames: list[Any]) -> str:
    op = choice(src, ("drop", "repeat", "insert", "swap", "empty", "many"))
    i = src.integer(0, len(frames) - 1)
    if op == "drop":
        del frames[i]
    elif op == "repeat":
        frames.insert(i, frames[i])
    elif op == "insert":
        frames.insert(i, src.raw(src.integer(0, 64)))
    elif op == "swap":
        j = src.integer(0, len(frames) - 1)
        frames[i], frames[j] = frames[j], frames[i]
    elif op == "empty":
        frames[i] = b""
    else:
        frames.extend([b""] * src.integer(1, 2000))
    return f"{op} frame {i} ({len(frames)} frames)"


def _topic(src: Source, frames: list[Any]) -> str:
    topic = bytes(frames[0])
    new = weighted(
        src,
        (
            (2, lambda: b""),
            (2, lambda: b"\xff\xfe" + topic),
            (2, lambda: topic + src.raw(src.integer(1, 16)).hex().encode()),  # a SUB prefix match
            (1, lambda: topic + b"\x00"),
            (1, lambda: (topic * src.integer(100, 5000))[:MAX_TOPIC]),
            (
                2,
                lambda: choice(
                    src,
                    (
                        b"rig",
                        b"gnss",
                        b"lidar/top",
                        b"camera/front",
                        b"detections",
                        b"camera/rear",
                        b"diagnostics",
                    ),
                ),
            ),
        ),
    )()
    frames[0] = new
    return f"topic={short(new)}"


def mutate_document(src: Source, frames: list[Any]) -> str:
    """One hostile edit of the header document of `frames` (in place); what it was."""
    if len(frames) < 2:
        return _flip_bits(src, frames)
    try:
        doc = msgpack.unpackb(bytes(frames[1]), raw=False)
    except Exception:
        return _flip_bits(src, frames)
    if not isinstance(doc, dict) or not isinstance(doc.get("header"), dict):
        frames[1] = pack(hostile_value(src), src)
        return "document replaced"
    try:
        edited, what = edit_document(src, doc)
        packed = pack(edited, src)
    except RecursionError:  # a document nested deeply by an earlier mutation
        return _flip_bits(src, frames)
    frames[1] = packed
    return f"document: {what}"


def _array_values(src: Source, frames: list[Any]) -> str:
    """Special values written into a sweep's points or time offsets (other buffers: bit
    flips)."""
    if len(frames) < 3:
        return _flip_bits(src, frames)
    i = src.integer(2, len(frames) - 1)
    data = frames[i]
    if len(data) % 8 == 0 and len(data) >= 8 and src.chance(0.3):
        arr = np.frombuffer(data, dtype="<i8").copy()
        value = choice(src, (-1, INT64_MIN, INT64_MAX, 10**15, -(10**12)))
        arr[src.integer(0, arr.size - 1) :: choice(src, (1, 7, arr.size))] = value
        frames[i] = arr.tobytes()
        return f"int64 {value} into frame {i}"
    if len(data) % 4 or not data:
        return _flip_bits(src, frames)
    arr = np.frombuffer(data, dtype="<f4").copy()
    special = choice(src, (np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-45, -0.0, 1e10))
    arr[src.integer(0, arr.size - 1) :: choice(src, (1, 4, 97, arr.size))] = special
    frames[i] = arr.tobytes()
    return f"float32 {special} into frame {i}"


_WIRE: tuple[tuple[int, Callable[[Source, list[Any]], str]], ...] = (
    (4, _flip_bits),
    (2, _truncate),
    (1, _extend),
    (2, _frame_list),
    (1, _topic),
    (8, mutate_document),
    (2, _array_values),
)


def mutate_wire(src: Source, frames: list[Any]) -> str:
    """One to three wire mutations of `frames` (in place); what they were."""
    done = []
    for _ in range(weighted(src, ((6, 1), (3, 2), (1, 3)))):
        if not frames:
            frames.append(b"")
        done.append(weighted(src, _WIRE)(src, frames))
    return " | ".join(done)
