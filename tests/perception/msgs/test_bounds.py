"""Bounds on everything decoded (`WireLimits`, stamps): each one refused at decode with a
WireError (SchemaError for JSON) naming the stream and the limit, and messages at the bound
accepted. The defaults fit a 128-beam lidar and 8 MP cameras."""

from __future__ import annotations

import json
import re
from typing import Any

import msgpack
import numpy as np
import pytest

from perception.errors import SchemaError, WireError
from perception.msgs import jsonl, wire
from perception.msgs.schema import DEFAULT_LIMITS, MAX_STAMP_NS, WireLimits
from perception.msgs.types import (
    CameraFrame,
    Detection3D,
    DetectionList,
    GnssFix,
    Header,
    LidarSweep,
    RigMessage,
)

H = Header("lidar/top", 3, 1_000_000_000, "lidar")
RIG_HEADER = {"stream": "rig", "seq": 0, "stamp_ns": 1, "frame_id": ""}


def raises(problem: str, stream: str = "lidar/top") -> Any:
    return pytest.raises(WireError, match="^" + re.escape(f"{stream}: {problem}"))


def sweep(n: int = 4, offsets: list[int] | None = None, stamp_ns: int = 1) -> LidarSweep:
    points = np.zeros((n, 4), np.float32)
    times = None if offsets is None else np.array(offsets, np.int64)
    return LidarSweep(Header("lidar/top", 3, stamp_ns, "lidar"), points, times)


def frames_of(msg: Any, limits: WireLimits = DEFAULT_LIMITS) -> list[bytes]:
    return [bytes(f) for f in wire.encode(msg, limits=limits)]


def rig_frames(rig_bytes: bytes) -> list[bytes]:
    """A RigMessage whose rig document is `rig_bytes`, raw msgpack: what a sender can put on
    the wire whatever msgpack's packer (which stops at 512 levels) allows."""
    placeholder = "\x00rig\x00"
    doc = {
        "type": "RigMessage",
        "version": 1,
        "header": RIG_HEADER,
        "fields": {"rig": {"frames": placeholder}},
        "buffers": [],
    }
    packed = msgpack.packb(doc, use_bin_type=True)
    return [b"rig", packed.replace(msgpack.packb(placeholder), rig_bytes)]


def nested_list(depth: int) -> bytes:
    """msgpack of a list nested `depth` deep: [[[...[nil]...]]]."""
    return b"\x91" * depth + b"\xc0"


# -- frames and bytes per message -----------------------------------------------------------------


def test_too_many_frames() -> None:
    frames = [*frames_of(sweep()), b"", b""]
    with raises("too many frames: 5, above the limit of 4"):
        wire.decode(frames, WireLimits(max_frames=4))


def test_message_bytes() -> None:
    frames = frames_of(sweep(1000))
    total = sum(len(f) for f in frames)
    wire.decode(frames, WireLimits(max_message_bytes=total))
    with raises(f"oversize message: {total} bytes, above the limit of {total - 1}"):
        wire.decode(frames, WireLimits(max_message_bytes=total - 1))


# -- header documents ------------------------------------------------------------------------------


def test_header_document_limit_depends_on_the_type() -> None:
    rig = frames_of(RigMessage(Header("rig", 0, 1, ""), {"source": "x" * 5000}))
    size = len(rig[1])
    limits = WireLimits(max_header_bytes=1000, max_rig_bytes=size)
    wire.decode(rig, limits)  # a rig may be bigger than other headers
    with raises(f"oversize header document of a RigMessage: {size} bytes, above the limit of "
                f"{size - 1}", "rig"):  # fmt: skip
        wire.decode(rig, WireLimits(max_header_bytes=size, max_rig_bytes=size - 1))
    det = Detection3D("Car", 0.9, (0, 0, 0), (4, 2, 1.5), 0.0, ("lidar",) * 300)
    dets = frames_of(DetectionList(Header("detections", 0, 1, "vehicle"), (det,)))
    dsize = len(dets[1])
    with raises(f"oversize header document of a DetectionList: {dsize} bytes, above the limit "
                "of 1000", "detections"):  # fmt: skip
        wire.decode(dets, limits)
    # Above both limits: refused before it is unpacked.
    with raises(f"oversize header document: {size} bytes, above the limit of 1000", "rig"):
        wire.decode(rig, WireLimits(max_header_bytes=1000, max_rig_bytes=1000))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("x" * 101, "it holds a string of 101 bytes, above the limit of 100"),
        (b"x" * 101, "it holds a byte string of 101 bytes, above the limit of 100"),
        (list(range(11)), "it holds a list of 11 items, above the limit of 10"),
        ({str(i): i for i in range(11)}, "it holds a map of 11 entries, above the limit of 10"),
    ],
)
def test_strings_lists_and_maps_are_refused_before_they_are_allocated(
    value: Any, problem: str
) -> None:
    frames = [b"rig", msgpack.packb({"type": "RigMessage", "junk": value}, use_bin_type=True)]
    limits = WireLimits(max_string_bytes=100, max_collection_items=10)
    with raises(f"oversize header document: {problem}", "rig"):
        wire.decode(frames, limits)


def test_extension_types_are_refused() -> None:
    frames = [b"rig", msgpack.packb({"x": msgpack.ExtType(5, b"abc")})]
    with raises("undecodable header document: it holds a msgpack extension type", "rig"):
        wire.decode(frames)


# -- the rig document: nesting and sizes, in both formats ----------------------------------------


def test_a_rig_nested_1000_deep_is_refused_at_decode() -> None:
    # Finding 1: such a document used to reach Rig.from_dict, which recursed until it failed.
    frames = rig_frames(nested_list(1000))
    with raises("field 'fields.rig' nests maps and lists deeper than the limit of 32", "rig"):
        wire.decode(frames)


def test_rig_nesting_at_the_limit() -> None:
    # The rig document's own map is level 1, the lists under `frames` levels 2 to 32.
    wire.decode(rig_frames(nested_list(31)))
    with raises("field 'fields.rig' nests maps and lists deeper than the limit of 32", "rig"):
        wire.decode(rig_frames(nested_list(32)))
    deep = RigMessage(Header("rig", 0, 1, ""), {"frames": json.loads("[" * 32 + "]" * 32)})
    doc = jsonl.to_document(RigMessage(Header("rig", 0, 1, ""), {"frames": []}))
    doc["rig"] = deep.rig
    with pytest.raises(SchemaError, match=r"^rig: field 'rig' nests maps and lists deeper"):
        jsonl.from_document(doc)


@pytest.mark.parametrize(
    ("rig", "problem"),
    [
        ({"source": "x" * 101}, "field 'rig' holds a string of 101 characters, above the limit"),
        ({"x" * 101: 1}, "field 'rig' holds a string of 101 characters, above the limit of 100"),
        ({"warnings": ["w"] * 11}, "field 'rig' holds a list of 11 items, above the limit of 10"),
        ({"frames": {str(i): 0 for i in range(11)}}, "field 'rig' holds a map of 11 items"),
    ],
)
def test_rig_strings_and_sizes_are_bounded_in_json_too(rig: dict[str, Any], problem: str) -> None:
    limits = WireLimits(max_string_bytes=100, max_collection_items=10)
    msg = RigMessage(Header("rig", 0, 1, ""), rig)
    doc = jsonl.to_document(msg)  # within the default limits
    with pytest.raises(SchemaError, match="^rig: " + problem.replace("(", r"\(")):
        jsonl.from_document(doc, limits=limits)
    with pytest.raises(WireError, match="oversize header document|" + problem):
        wire.decode(frames_of(msg), limits)


def test_json_nested_beyond_the_parser_is_a_schema_error() -> None:
    text = '{"type": "RigMessage", "rig": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(SchemaError, match="nested too deeply"):
        jsonl.from_json(text)


# -- plausible values ----------------------------------------------------------------------------


def test_stamps_keep_headroom_in_int64() -> None:
    wire.decode(frames_of(sweep(stamp_ns=MAX_STAMP_NS)))
    frames = frames_of(sweep())
    doc = msgpack.unpackb(frames[1])
    doc["header"]["stamp_ns"] = MAX_STAMP_NS + 1
    frames[1] = msgpack.packb(doc)
    with raises(f"field 'header.stamp_ns' is {MAX_STAMP_NS + 1}, outside [0, {MAX_STAMP_NS}]"):
        wire.decode(frames)
    with pytest.raises(WireError, match="outside"):
        wire.encode(GnssFix(Header("gnss", 0, 2**63 - 1, ""), 0.0, 0.0, 0.0))


def test_point_offsets_within_the_sweep_duration() -> None:
    wire.decode(frames_of(sweep(2, [0, 1_000_000_000])))
    limits = WireLimits(max_sweep_duration_ns=100_000_000)
    wire.decode(frames_of(sweep(2, [0, 100_000_000])), limits)
    with raises(
        "point_time_offsets_ns has values above the limit of 100000000 (maximum 100000001): "
        "each point's time after header.stamp_ns"
    ):
        wire.decode(frames_of(sweep(2, [0, 100_000_001])), limits)


def test_point_offsets_near_int64_are_refused() -> None:
    # Finding 2: offsets near 2^63 ns made the sweep's end stamp, the clock estimate and the
    # latency overflow int64. The buffer is written by hand: the encoder refuses such a sweep.
    frames = frames_of(sweep(2, [0, 1]))
    frames[3] = np.array([0, 2**63 - 2], np.int64).tobytes()
    with raises("point_time_offsets_ns has values above the limit of 1000000000 (maximum "
                f"{2**63 - 2})"):  # fmt: skip
        wire.decode(frames)
    with pytest.raises(WireError, match="above the limit"):
        wire.encode(sweep(2, [0, 2**62]))


# -- the limits themselves -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_frames": 0}, "max_frames: must be a positive integer, got 0"),
        ({"max_points": True}, "max_points: must be a positive integer, got True"),
        ({"max_sweep_duration_ns": 61 * 10**9}, "max_sweep_duration_ns: must be at most"),
    ],
)
def test_limits_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message):
        WireLimits(**kwargs)


def test_defaults_fit_an_8_mp_camera_and_a_128_beam_lidar() -> None:
    image = np.zeros((2160, 3840, 3), np.uint8)  # 8.3 MP, 24.9 MB
    frame = CameraFrame(Header("camera/front", 0, 1, "camera/front"), image=image)
    wire.decode(frames_of(frame))
    n = 128 * 3600 * 2  # 0.1 degree columns, dual return
    beams = LidarSweep(H, np.zeros((n, 4), np.float32), np.zeros(n, np.int64))
    wire.decode(frames_of(beams))
    assert sum(len(f) for f in frames_of(beams)) < DEFAULT_LIMITS.max_message_bytes
    big = np.zeros((4400, 5000, 3), np.uint8)  # 66 MB: refused
    with raises("oversize message", "camera/front"):
        wire.decode([b"camera/front", *frames_of(frame)[1:2], big.tobytes()])


def test_a_fix_faster_than_any_road_vehicle_or_with_a_wild_heading_is_refused() -> None:
    from perception.msgs.types import GnssFix, Header

    header = Header("gnss", 0, 1_000, "gnss")
    ok = GnssFix(header, 49.0, 8.4, 100.0, velocity_enu_mps=(55.0, -3.0, 0.1), heading_rad=-3.0)
    wire.decode(wire.encode(ok))
    for fix, field in (
        (GnssFix(header, 49.0, 8.4, 100.0, velocity_enu_mps=(1e300, 0.0, 0.0)), "velocity"),
        (GnssFix(header, 49.0, 8.4, 100.0, heading_rad=1e300), "heading_rad"),
    ):
        with pytest.raises(WireError, match=field):
            wire.encode(fix)
