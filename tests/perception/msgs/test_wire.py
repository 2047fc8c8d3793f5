"""Wire format: round trips of every message type, and every malformed input a WireError.

Malformed messages are built from a valid encoding: `read_doc(frames)` unpacks the msgpack header
document into a plain dict; edit it and `with_doc(frames, doc)` re-packs it into `frames[1]`;
buffers are edited by replacing `frames[2:]`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from perception.errors import WireError
from perception.msgs import wire
from perception.msgs.types import (
    SCHEMA_VERSION,
    CameraBox,
    CameraFrame,
    Detection3D,
    DetectionList,
    Diagnostics,
    GnssFix,
    Header,
    LidarSweep,
    Message,
    RealtimeStatus,
    RigMessage,
    SensorClock,
)
from tests.calibration.test_images import png_header
from tests.perception.msgs.strategies import (
    SETTINGS,
    assert_same,
    camera_frames,
    detection_lists,
    diagnostics,
    gnss_fixes,
    lidar_sweeps,
    rig_messages,
    texts,
)


def roundtrip(msg: Message, topic: str | None = None) -> tuple[str, Message]:
    frames = wire.encode(msg, topic)
    # What a receiver gets: independent byte strings, not views of the sender's arrays.
    return wire.decode([bytes(f) for f in frames])


# -- round trips ------------------------------------------------------------------------------


@SETTINGS
@given(camera_frames())
def test_camera_frame_roundtrip(msg: CameraFrame) -> None:
    topic, out = roundtrip(msg)
    assert isinstance(out, CameraFrame)
    assert topic == msg.header.stream
    assert out.header == msg.header
    assert out.encoding == msg.encoding
    if msg.image is not None:
        assert out.image is not None and out.data is None
        assert out.image.dtype == np.uint8
        np.testing.assert_array_equal(out.image, msg.image)
    else:
        assert out.image is None
        assert out.data == msg.data


@SETTINGS
@given(lidar_sweeps(), st.none() | texts.filter(bool))
def test_lidar_sweep_roundtrip(msg: LidarSweep, topic: str | None) -> None:
    got_topic, out = roundtrip(msg, topic)
    assert got_topic == (msg.header.stream if topic is None else topic)
    assert isinstance(out, LidarSweep)
    assert out.header == msg.header
    assert out.points.dtype == np.float32 and out.points.shape == msg.points.shape
    np.testing.assert_array_equal(out.points, msg.points)
    if msg.point_time_offsets_ns is None:
        assert out.point_time_offsets_ns is None
    else:
        assert out.point_time_offsets_ns is not None
        np.testing.assert_array_equal(out.point_time_offsets_ns, msg.point_time_offsets_ns)


@SETTINGS
@given(gnss_fixes)
def test_gnss_fix_roundtrip(msg: GnssFix) -> None:
    assert roundtrip(msg)[1] == msg


@SETTINGS
@given(rig_messages)
def test_rig_message_roundtrip(msg: RigMessage) -> None:
    assert roundtrip(msg)[1] == msg


@SETTINGS
@given(detection_lists)
def test_detection_list_roundtrip(msg: DetectionList) -> None:
    out = roundtrip(msg)[1]
    assert out == msg
    assert isinstance(out, DetectionList)
    assert all(isinstance(d.center, tuple) for d in out.detections)


@SETTINGS
@given(diagnostics)
def test_diagnostics_roundtrip(msg: Diagnostics) -> None:
    out = roundtrip(msg)[1]
    assert out == msg
    assert_same(msg, out)


def test_encode_gives_views_of_the_arrays() -> None:
    points = np.arange(4000, dtype=np.float32).reshape(-1, 4)
    frames = wire.encode(LidarSweep(Header("lidar/top", 0, 1, "lidar"), points))
    assert isinstance(frames[2], memoryview)
    assert np.shares_memory(np.frombuffer(frames[2], np.uint8), points)


def test_decode_does_not_copy_buffers() -> None:
    points = np.arange(4000, dtype=np.float32).reshape(-1, 4)
    frames = [bytes(f) for f in wire.encode(LidarSweep(Header("l", 0, 1, "lidar"), points))]
    _, msg = wire.decode(frames)
    assert isinstance(msg, LidarSweep)
    assert not msg.points.flags.owndata
    assert np.shares_memory(msg.points, np.frombuffer(frames[2], np.uint8))


def test_header_document_keys() -> None:
    msg = LidarSweep(Header("lidar/top", 3, 7, "lidar"), np.zeros((2, 4), np.float32))
    doc = read_doc(wire.encode(msg))
    assert doc == {
        "type": "LidarSweep",
        "version": SCHEMA_VERSION,
        "header": {"stream": "lidar/top", "seq": 3, "stamp_ns": 7, "frame_id": "lidar"},
        "fields": {},
        "buffers": [{"name": "points", "dtype": "<f4", "shape": [2, 4]}],
    }


# -- malformed input --------------------------------------------------------------------------

STREAM = "lidar/top"


def sweep_frames(n: int = 5, offsets: bool = False) -> list[bytes | memoryview]:
    points = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    msg = LidarSweep(
        Header(STREAM, 1, 100, "lidar"),
        points,
        np.arange(n, dtype=np.int64) if offsets else None,
    )
    return wire.encode(msg)


def read_doc(frames: list[bytes | memoryview]) -> dict[str, Any]:
    doc: dict[str, Any] = msgpack.unpackb(bytes(frames[1]), raw=False)
    return doc


def with_doc(frames: list[bytes | memoryview], doc: dict[str, Any]) -> list[bytes | memoryview]:
    return [frames[0], msgpack.packb(doc, use_bin_type=True), *frames[2:]]


def tamper(
    frames: list[bytes | memoryview], edit: Callable[[dict[str, Any]], None]
) -> list[bytes | memoryview]:
    doc = read_doc(frames)
    edit(doc)
    return with_doc(frames, doc)


def raises(problem: str, stream: str = STREAM) -> Any:
    return pytest.raises(WireError, match=rf"^{re.escape(stream)}: .*{problem}")


def test_too_few_frames() -> None:
    with raises("too few frames"):
        wire.decode(sweep_frames()[:1])
    with pytest.raises(WireError, match="too few frames"):
        wire.decode([])


def test_missing_buffer() -> None:
    with raises(r"wrong number of buffers: the header lists 2 but 1 buffer frame\(s\) arrived"):
        wire.decode(sweep_frames(offsets=True)[:-1])


def test_extra_buffer() -> None:
    with raises("wrong number of buffers"):
        wire.decode([*sweep_frames(), b"\x00" * 16])


def test_truncated_buffer_bytes() -> None:
    frames = sweep_frames()
    frames[2] = bytes(frames[2])[:-3]
    with raises("points shape \\[5, 4\\] needs 80 bytes but its buffer frame holds 77"):
        wire.decode(frames)


def test_wrong_dtype() -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["buffers"][0]["dtype"] = "<f8"
        doc["buffers"][0]["shape"] = [5, 4]

    with raises("points has dtype '<f8', expected '<f4'"):
        wire.decode(tamper(sweep_frames(), edit))


def test_big_endian_dtype_rejected() -> None:
    with raises("points has dtype '>f4', expected '<f4'"):
        wire.decode(tamper(sweep_frames(), lambda d: d["buffers"][0].update(dtype=">f4")))


def test_shape_byte_length_mismatch() -> None:
    frames = tamper(sweep_frames(), lambda d: d["buffers"][0].update(shape=[6, 4]))
    with raises(r"needs 96 bytes but its buffer frame holds 80 \(truncated or mismatched\)"):
        wire.decode(frames)


def test_points_not_n_by_4() -> None:
    frames = tamper(sweep_frames(), lambda d: d["buffers"][0].update(shape=[10, 2]))
    with raises("points must be N x 4"):
        wire.decode(frames)


def test_offsets_length_must_match_points() -> None:
    frames = tamper(sweep_frames(offsets=True), lambda d: d["buffers"][1].update(shape=[4]))
    with raises("point_time_offsets_ns must have shape"):
        wire.decode(frames)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_points(bad: float) -> None:
    frames = sweep_frames()
    points = np.frombuffer(frames[2], np.float32).copy()
    points[5] = bad
    frames[2] = points.tobytes()
    with raises(r"points has 1 point\(s\) with non-finite"):
        wire.decode(frames)


def test_unknown_schema_version() -> None:
    with raises("unsupported schema version 99"):
        wire.decode(tamper(sweep_frames(), lambda d: d.update(version=99)))


def test_unknown_type() -> None:
    with raises("unknown message type 'Banana'"):
        wire.decode(tamper(sweep_frames(), lambda d: d.update(type="Banana")))


def test_oversize_sweep() -> None:
    with raises("oversize sweep: 11 points, above the limit of 10"):
        wire.decode(sweep_frames(11), wire.WireLimits(max_points=10))


def test_oversize_sweep_checked_before_reading_bytes() -> None:
    # A header claiming a huge sweep is refused on its shape alone, whatever the buffer holds.
    frames = tamper(sweep_frames(), lambda d: d["buffers"][0].update(shape=[10**9, 4]))
    with raises("oversize sweep"):
        wire.decode(frames)


def test_oversize_image() -> None:
    msg = CameraFrame(Header("camera/front", 0, 1, "cam"), image=np.zeros((10, 10, 3), np.uint8))
    with raises("oversize image: 10 x 10 = 100 pixels, above the limit of 99", "camera/front"):
        wire.decode(wire.encode(msg), wire.WireLimits(max_image_pixels=99))


def test_oversize_encoded_image() -> None:
    msg = CameraFrame(Header("camera/front", 0, 1, "cam"), data=b"x" * 100, encoding="jpeg")
    with raises("oversize encoded image", "camera/front"):
        wire.decode(wire.encode(msg), wire.WireLimits(max_encoded_image_bytes=99))


def test_an_encoded_image_decoding_to_too_many_pixels_is_refused() -> None:
    """A decompression bomb: a small PNG whose header says 30000 x 30000 (5 GB decoded) is
    refused on its header, as a raw image of that size would be, before anything decodes it."""
    bomb = CameraFrame(Header("camera/front", 0, 1, "cam"), data=png_header(30_000, 30_000),
                       encoding="png")  # fmt: skip
    with raises(
        "oversize image: its header says 30000 x 30000 = 900000000 pixels, above the limit of "
        "10000000",
        "camera/front",
    ):
        wire.encode(bomb)
    frames = wire.encode(bomb, limits=wire.WireLimits(max_image_pixels=10**9))
    with raises("oversize image: its header says 30000 x 30000", "camera/front"):
        wire.decode(frames)


def test_oversize_header_document() -> None:
    with raises("oversize header document"):
        wire.decode(sweep_frames(), wire.WireLimits(max_header_bytes=10))


def test_oversize_detection_list() -> None:
    det = Detection3D("car", 0.9, (0, 0, 0), (4, 2, 1.5), 0.0)
    msg = DetectionList(Header("detections", 0, 1, "vehicle"), (det,) * 3)
    with raises("oversize detection list: 3 detections, above the limit of 2", "detections"):
        wire.decode(wire.encode(msg), wire.WireLimits(max_detections=2))


@pytest.mark.parametrize("garbage", [b"", b"\xc1", b"\xff\xfe garbage", b"\x93\x01\x02"])
def test_garbage_header_bytes(garbage: bytes) -> None:
    frames = sweep_frames()
    frames[1] = garbage
    with raises("(undecodable header document|header document must be a map)"):
        wire.decode(frames)


def test_header_with_trailing_bytes() -> None:
    frames = sweep_frames()
    frames[1] = bytes(frames[1]) + b"\x00"
    with raises("undecodable header document"):
        wire.decode(frames)


def test_topic_not_utf8() -> None:
    frames = sweep_frames()
    frames[0] = b"\xff\xfe"
    with pytest.raises(WireError, match="topic frame is not UTF-8 text"):
        wire.decode(frames)


def test_negative_stamp() -> None:
    with raises("field 'header.stamp_ns' must not be negative, got -5"):
        wire.decode(tamper(sweep_frames(), lambda d: d["header"].update(stamp_ns=-5)))


def test_missing_header_field() -> None:
    with raises("missing field 'header.frame_id'"):
        wire.decode(tamper(sweep_frames(), lambda d: d["header"].pop("frame_id")))


def test_mistyped_header_field() -> None:
    with raises("field 'header.seq' must be an integer, got str"):
        wire.decode(tamper(sweep_frames(), lambda d: d["header"].update(seq="1")))


def test_unknown_buffer_name() -> None:
    frames = tamper(sweep_frames(), lambda d: d["buffers"][0].update(name="xyz"))
    with raises(r"LidarSweep carries buffers .* got \['xyz'\]"):
        wire.decode(frames)


def gnss_frames() -> list[bytes | memoryview]:
    return wire.encode(GnssFix(Header("gnss", 0, 1, "gnss"), 49.0, 8.4, 100.0))


def test_gnss_missing_field() -> None:
    with raises("missing field 'fields.latitude_deg'", "gnss"):
        wire.decode(tamper(gnss_frames(), lambda d: d["fields"].pop("latitude_deg")))


def test_gnss_mistyped_field() -> None:
    with raises("field 'fields.altitude_m' must be a number, got str", "gnss"):
        wire.decode(tamper(gnss_frames(), lambda d: d["fields"].update(altitude_m="high")))


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("latitude_deg", 91.0, r"'fields.latitude_deg' is 91.0, outside \[-90.0, 90.0\]"),
        ("longitude_deg", -180.5, r"'fields.longitude_deg' is -180.5, outside"),
        ("latitude_deg", float("nan"), r"'fields.latitude_deg' must be finite, got nan"),
        ("altitude_m", float("inf"), r"'fields.altitude_m' must be finite, got inf"),
        ("altitude_m", 1e7, r"'fields.altitude_m' is 10000000.0, outside"),
        ("position_covariance_m2", [0.0] * 8, r"must be an array of 9 numbers"),
        ("position_covariance_m2", [-1.0] + [0.0] * 8, r"negative variance"),
        # Every component within 200 m/s, the speed not.
        ("velocity_enu_mps", [150.0, 150.0, 0.0], r"a speed of 212.1 m/s, above 200 m/s"),
    ],
)
def test_gnss_bad_values(key: str, value: object, problem: str) -> None:
    with raises(problem, "gnss"):
        wire.decode(tamper(gnss_frames(), lambda d: d["fields"].update({key: value})))


def test_gnss_speed_at_the_bound_is_taken() -> None:
    at = tamper(gnss_frames(), lambda d: d["fields"].update(velocity_enu_mps=[120.0, 160.0, 0]))
    _, fix = wire.decode(at)
    assert isinstance(fix, GnssFix) and fix.velocity_enu_mps == (120.0, 160.0, 0.0)


def camera_frames_raw() -> list[bytes | memoryview]:
    image = np.zeros((4, 6, 3), np.uint8)
    return wire.encode(CameraFrame(Header("camera/front", 0, 1, "cam"), image=image))


def test_image_not_hxwx3() -> None:
    frames = tamper(camera_frames_raw(), lambda d: d["buffers"][0].update(shape=[4, 3, 6]))
    with raises(r"image must be H x W x 3 uint8", "camera/front"):
        wire.decode(frames)


def test_image_not_uint8() -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["buffers"][0].update(dtype="<u2", shape=[2, 6, 3])

    # Shape first (it is H x W x 3), then the dtype, as for every array of the schema.
    with raises(r"image has dtype '<u2', expected '\|u1' \(uint8\)", "camera/front"):
        wire.decode(tamper(camera_frames_raw(), edit))


def test_detection_fields_validated() -> None:
    det = Detection3D("car", 0.9, (0, 0, 0), (4, 2, 1.5), 0.0)
    frames = wire.encode(DetectionList(Header("detections", 0, 1, "vehicle"), (det,)))

    def edit(doc: dict[str, Any]) -> None:
        doc["fields"]["detections"][0]["center"] = [1.0, 2.0]

    with raises(r"'fields.detections\[0\].center' must be an array of 3 numbers", "detections"):
        wire.decode(tamper(frames, edit))


def diagnostics_frames() -> list[bytes | memoryview]:
    clock = SensorClock("lidar/top", 1_500, 0.25, 40, 0, None)
    status = RealtimeStatus((0, 1), 0, "other", True)
    msg = Diagnostics(
        Header("diagnostics", 0, 1, "vehicle"),
        counters={"received": 10},
        clocks=(clock,),
        budgets_ms={"end_to_end": 100.0},
        realtime=status,
    )
    return wire.encode(msg)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda f: f["counters"].update(received=-1), "'fields.counters.received' must not be neg"),
        (lambda f: f["counters"].update(received=1.5), "'fields.counters.received' must be an int"),
        (lambda f: f["clocks"][0].pop("samples"), "missing field 'fields.clocks\\[0\\].samples'"),
        (lambda f: f["clocks"][0].update(drift_ppm=float("nan")), "drift_ppm' must be finite"),
        (lambda f: f["budgets_ms"].update(end_to_end=-1.0), "'fields.budgets_ms.end_to_end' is"),
        (lambda f: f["realtime"].update(gc_hold=1), "'fields.realtime.gc_hold' must be a bool"),
        (lambda f: f.update(realtime=[]), "'fields.realtime' must be a map or nil, got list"),
        (lambda f: f.update(notes="x"), "'fields.notes' must be an array, got str"),
        (lambda f: f.update(extra=1), r"unexpected field\(s\) in fields: \['extra'\]"),
    ],
)
def test_diagnostics_fields_validated(edit: Callable[[dict[str, Any]], None], problem: str) -> None:
    with raises(problem, "diagnostics"):
        wire.decode(tamper(diagnostics_frames(), lambda d: edit(d["fields"])))


def test_rig_must_be_a_map() -> None:
    frames = wire.encode(RigMessage(Header("rig", 0, 1, "vehicle"), {"a": 1}))
    with raises("field 'fields.rig' must be a map, got list", "rig"):
        wire.decode(tamper(frames, lambda d: d["fields"].update(rig=[1, 2])))


def test_zmq_frames_accepted() -> None:
    import zmq

    frames = [zmq.Frame(bytes(f)) for f in sweep_frames()]
    topic, msg = wire.decode(frames)
    assert topic == STREAM and isinstance(msg, LidarSweep)


# -- encode refuses bad messages --------------------------------------------------------------


def test_encode_rejects_nan_points() -> None:
    points = np.zeros((3, 4), np.float32)
    points[1, 2] = np.nan
    with raises("non-finite"):
        wire.encode(LidarSweep(Header(STREAM, 0, 1, "lidar"), points))


def test_encode_rejects_wrong_dtype() -> None:
    with raises("points has dtype '<f8', expected '<f4'"):
        wire.encode(LidarSweep(Header(STREAM, 0, 1, "lidar"), np.zeros((3, 4))))  # type: ignore[arg-type]


def test_encode_rejects_negative_stamp() -> None:
    with raises("field 'header.stamp_ns' must not be negative"):
        wire.encode(LidarSweep(Header(STREAM, 0, -1, "lidar"), np.zeros((3, 4), np.float32)))


def test_encode_rejects_bad_image_shape() -> None:
    msg = CameraFrame(Header("camera/front", 0, 1, "cam"), image=np.zeros((4, 4), np.uint8))
    with raises("image must be H x W x 3", "camera/front"):
        wire.encode(msg)


def test_encode_rejects_out_of_range_gnss() -> None:
    with raises("'fields.latitude_deg' is 95.0, outside", "gnss"):
        wire.encode(GnssFix(Header("gnss", 0, 1, "gnss"), 95.0, 0.0, 0.0))


def test_encode_rejects_unserialisable_rig() -> None:
    with raises("cannot encode the header document", "rig"):
        wire.encode(RigMessage(Header("rig", 0, 1, "vehicle"), {"m": object()}))


def test_encode_non_contiguous_points() -> None:
    points = np.arange(40, dtype=np.float32).reshape(5, 8)[:, :4]
    _, out = wire.decode(wire.encode(LidarSweep(Header(STREAM, 0, 1, "lidar"), points)))
    assert isinstance(out, LidarSweep)
    np.testing.assert_array_equal(out.points, points)


# -- nothing but WireError escapes ------------------------------------------------------------


@SETTINGS
@given(st.lists(st.binary(max_size=64), max_size=5))
def test_random_frames_raise_only_wire_error(frames: list[bytes]) -> None:
    with contextlib.suppress(WireError):
        wire.decode(frames)


leaf_values = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | texts
    | st.binary(max_size=8)
    | st.lists(st.integers(-3, 3), max_size=4)
)


@SETTINGS
@given(
    st.sampled_from(["sweep", "gnss", "camera", "detections", "diagnostics"]),
    st.lists(st.tuples(st.integers(0, 50), leaf_values), min_size=1, max_size=3),
)
def test_mutated_headers_raise_only_wire_error(kind: str, edits: list[tuple[int, Any]]) -> None:
    det = Detection3D(
        "car", 0.9, (0, 0, 0), (4, 2, 1.5), 0.0, camera_box=CameraBox("f", 0, 0, 1, 1)
    )
    frames = {
        "sweep": lambda: sweep_frames(offsets=True),
        "gnss": gnss_frames,
        "camera": camera_frames_raw,
        "detections": lambda: wire.encode(DetectionList(Header("d", 0, 1, "v"), (det,))),
        "diagnostics": diagnostics_frames,
    }[kind]()
    doc = read_doc(frames)
    for index, value in edits:
        # Replace one (possibly nested) value of the document, chosen by index.
        slots = list(_slots(doc))
        container, key = slots[index % len(slots)]
        container[key] = value
    try:
        packed = msgpack.packb(doc, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return
    frames[1] = packed
    with contextlib.suppress(WireError):
        wire.decode(frames)


def _slots(node: Any) -> Any:
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        yield node, key
        if isinstance(value, dict | list):
            yield from _slots(value)
