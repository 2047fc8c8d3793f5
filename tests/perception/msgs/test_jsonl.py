"""JSON documents and JSON Lines files: every message type round trips (optional fields absent
and present, arrays empty and not, bit-exact), malformed lines are refused naming the file,
the line and the fault, old-format files read through the legacy mapping."""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from perception.errors import SchemaError, SourceError
from perception.msgs import jsonl, wire
from perception.msgs.jsonl import (
    from_document,
    from_json,
    read_jsonl,
    read_messages,
    to_document,
    to_json,
    write_jsonl_line,
)
from perception.msgs.schema import WireLimits
from perception.msgs.types import (
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
from tests.perception.msgs.strategies import SETTINGS, assert_same, messages

H = Header("stream", 3, 1_000, "frame")


def _sweep(n: int, offsets: bool) -> LidarSweep:
    points = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    return LidarSweep(H, points, np.arange(n, dtype=np.int64) * 10 if offsets else None)


DETECTION = Detection3D(
    "Car", 0.875, (10.1, -2.3, -0.8), (3.9, 1.6, 1.5), 0.3, ("camera", "lidar"), 49.0001,
    8.4002, CameraBox("front", 1.5, 2.5, 100.25, 80.0),
)  # fmt: skip

# Every type, optional fields absent and present, arrays empty and not.
EXAMPLES: dict[str, Message] = {
    "image": CameraFrame(H, image=np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)),
    "jpeg": CameraFrame(H, data=b"\xff\xd8\xff\x00 not really a jpeg", encoding="jpeg"),
    "sweep-empty": _sweep(0, offsets=False),
    "sweep-empty-offsets": _sweep(0, offsets=True),
    "sweep": _sweep(5, offsets=False),
    "sweep-offsets": _sweep(5, offsets=True),
    "gnss": GnssFix(H, 49.0, 8.4, 112.0),
    "gnss-full": GnssFix(H, 49.0, 8.4, 112.0, (0.5,) * 9, (1.5, -0.25, 0.0), -2.75),
    "rig": RigMessage(H, {"frames": {"lidar": {"parent": "vehicle"}}, "cameras": [1, 2.5]}),
    "detections-empty": DetectionList(H, ()),
    "detections": DetectionList(
        H,
        (DETECTION, Detection3D("Pedestrian", 0.5, (5.0, 1.0, -0.9), (0.8, 0.6, 1.7), -1.2)),
        {"fusion": 2_000_000},
        -5,
        False,
        ("gnss",),
        False,
    ),
    "diagnostics-empty": Diagnostics(H),
    "diagnostics": Diagnostics(
        H,
        counters={"received": 10, "dropped": 0},
        overruns_by_stage={"fusion": 2},
        sync={"bundles": 9},
        missing_by_stream={"camera/left": 1},
        late_by_stream={"camera/left": 3},
        clocks=(
            SensorClock("lidar", 1_500, 0.25, 40, 1, 900),
            SensorClock("camera/front", None, 0.0, 0, 0, None),
        ),
        budgets_ms={"end_to_end": 100.0, "fusion": 12.5},
        last_publish_ns=5_000,
        last_latency_ns=-20,
        engines=("camera_encoder: onnxruntime cpu fp32",),
        notes=("fell back to the CPU",),
        realtime=RealtimeStatus((0, 1), -5, "fifo", True, ("nice -5: permission denied",)),
    ),
}


@pytest.mark.parametrize("msg", list(EXAMPLES.values()), ids=list(EXAMPLES))
def test_every_type_round_trips(msg: Message, tmp_path: Path) -> None:
    assert_same(msg, from_json(to_json(msg)))
    assert_same(msg, from_document(to_document(msg)))
    path = tmp_path / "one.jsonl"
    with path.open("w") as f:
        write_jsonl_line(f, msg)
    (got,) = read_messages(path)
    assert_same(msg, got)


@SETTINGS
@given(st.lists(messages, max_size=4))
def test_random_messages_round_trip_through_a_file(msgs: list[Message]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "messages.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for msg in msgs:
                write_jsonl_line(f, msg)
        got = list(read_messages(path))
    assert len(got) == len(msgs)
    for a, b in zip(msgs, got, strict=True):
        assert_same(a, b)


@SETTINGS
@given(messages)
def test_json_and_wire_carry_the_same_message(msg: Message) -> None:
    # wire -> JSON -> wire gives the same frames: both formats hold all of the message.
    frames = [bytes(f) for f in wire.encode(msg)]
    _, received = wire.decode(frames)
    again = from_json(to_json(received))
    assert [bytes(f) for f in wire.encode(again)] == frames


def test_arrays_are_bit_exact() -> None:
    points = np.array(
        [[-0.0, 1e-45, 3.4028235e38, -1.1754944e-38], [0.1, 1 / 3, -7.5, 2.0]], np.float32
    )
    sweep = LidarSweep(H, points, np.array([0, 999_999_999], np.int64))
    out = from_json(to_json(sweep))
    assert isinstance(out, LidarSweep)
    assert out.points.tobytes() == points.tobytes()
    assert out.point_time_offsets_ns is not None and out.point_time_offsets_ns[1] == 999_999_999
    assert not out.points.flags.writeable
    doc = to_document(sweep)
    assert doc["points"]["dtype"] == "<f4" and doc["points"]["shape"] == [2, 4]


def test_big_endian_and_strided_arrays_are_written_little_endian() -> None:
    base = np.arange(32, dtype=">f4").reshape(4, 8)
    sweep = LidarSweep(H, base[:, :4])
    out = from_json(to_json(sweep))
    assert isinstance(out, LidarSweep)
    np.testing.assert_array_equal(out.points, base[:, :4])
    assert out.points.dtype == np.dtype("<f4")


def test_document_layout() -> None:
    doc = to_document(EXAMPLES["detections"])
    assert list(doc)[:3] == ["type", "schema_version", "header"]
    assert doc["header"] == {"stream": "stream", "seq": 3, "stamp_ns": 1_000, "frame_id": "frame"}
    first = doc["detections"][0]
    assert first["latitude_deg"] == 49.0001 and first["camera_box"]["x2"] == 100.25
    assert doc["detections"][1]["camera_box"] is None
    assert doc["timings_ns"] == {"fusion": 2_000_000}
    assert "timings" not in doc and "sequence" not in doc
    # The document is what json gives back: lists, not tuples.
    assert doc == json.loads(to_json(EXAMPLES["detections"]))


def test_to_json_for_display() -> None:
    sweep = _sweep(3, offsets=True)
    summary = json.loads(to_json(sweep, array_data=False, indent=2))
    assert summary["points"] == {"dtype": "<f4", "shape": [3, 4]}
    with pytest.raises(SchemaError, match=r"missing field 'points\.base64'"):
        from_document(summary)
    assert "\n  " in to_json(EXAMPLES["gnss"], indent=2)


def test_numpy_scalars_are_written_as_numbers() -> None:
    det = Detection3D("Car", np.float32(0.5), (1.0, 2.0, 3.0), (1.0, 1.0, 1.0), np.float64(0.25))  # type: ignore[arg-type]
    dl = DetectionList(H, (det,), {"fusion": np.int64(7)})  # type: ignore[dict-item]
    out = from_json(to_json(dl))
    assert isinstance(out, DetectionList)
    assert out.detections[0].score == 0.5 and out.timings_ns == {"fusion": 7}


@pytest.mark.parametrize(
    ("msg", "problem"),
    [
        (
            DetectionList(H, (Detection3D("Car", 2.0, (0, 0, 0), (1, 1, 1), 0.0),)),
            r"^stream: field 'detections\[0\]\.score' is 2\.0, outside \[0\.0, 1\.0\]$",
        ),
        (GnssFix(H, 49.0, 8.4, float("nan")), r"^stream: field 'altitude_m' must be finite"),
        (RigMessage(H, {"a": {1: 2}}), r"^stream: field 'rig' has a map key that is not a str"),
        (DetectionList(H, (), schema_version=1), r"schema_version 1 is not the version"),
        (DetectionList(H, ("car",)), r"detections\[0\] must be a Detection3D, got str"),  # type: ignore[arg-type]
        (Diagnostics(H, counters={"x": -1}), r"field 'counters\.x' must not be negative"),
        (LidarSweep(H, np.zeros((2, 3), np.float32)), r"points must be N x 4 float32"),
    ],
)
def test_invalid_messages_are_not_written(msg: Message, problem: str) -> None:
    with pytest.raises(SchemaError, match=problem):
        to_json(msg)


# -- malformed files -----------------------------------------------------------------------------


def _line(name: str, edit: Any = None) -> str:
    doc = to_document(EXAMPLES[name])
    if edit is not None:
        edit(doc)
    return json.dumps(doc)


def _points(**kw: Any) -> Any:
    return lambda d: d["points"].update(kw)


NAN_POINTS = np.full(20, np.nan, "<f4").tobytes()

BAD_LINES = [
    ("not json at all", r"not JSON \(Expecting value"),
    ("[1, 2]", r"a document must be a JSON object, got list"),
    ('{"schema_version": 1}', r"missing field 'type'"),
    (_line("gnss", lambda d: d.update(type="Banana")), r"unknown message type 'Banana'"),
    (_line("gnss", lambda d: d.update(schema_version=3)), r"unsupported schema version 3"),
    (_line("gnss", lambda d: d.pop("heading_rad")), r"stream: missing field 'heading_rad'"),
    (_line("gnss", lambda d: d.update(extra=1)), r"unexpected field\(s\) in the document: \['e"),
    (_line("gnss", lambda d: d["header"].pop("seq")), r"missing field 'header\.seq'"),
    (_line("gnss", lambda d: d["header"].update(seq="1")), r"'header\.seq' must be an integer"),
    (_line("gnss", lambda d: d.update(latitude_deg=91)), r"'latitude_deg' is 91\.0, outside"),
    (_line("gnss", lambda d: d.update(position_covariance_m2=[-1.0] + [0.0] * 8)),
     r"position_covariance_m2 has a negative variance"),
    ('{"type": "GnssFix", "schema_version": 1, "header": {"stream": "g", "seq": 0, "stamp_ns": 0, '
     '"frame_id": "g"}, "latitude_deg": NaN, "longitude_deg": 0, "altitude_m": 0, '
     '"position_covariance_m2": [0,0,0,0,0,0,0,0,0], "velocity_enu_mps": null, '
     '"heading_rad": null}', r"^[^:]+:1: g: field 'latitude_deg' must be finite, got nan$"),
    (_line("detections", lambda d: d["detections"][0].update(score=1.5)),
     r"field 'detections\[0\]\.score' is 1\.5, outside \[0\.0, 1\.0\]"),
    (_line("detections", lambda d: d["detections"][0].update(longitude_deg=None)),
     r"detections\[0\]: latitude_deg and longitude_deg must be both set or both nil"),
    (_line("detections", lambda d: d["detections"][0].update(latitude=49.0)),
     r"unexpected field\(s\) in detections\[0\]: \['latitude'\]"),
    (_line("detections", lambda d: d["detections"][1].update(center=[1, 2])),
     r"'detections\[1\]\.center' must be an array of 3 numbers, got list"),
    (_line("detections", lambda d: d.update(timings_ns={"fusion": -1})),
     r"'timings_ns\.fusion' must not be negative"),
    (_line("sweep", _points(base64="not base64!")), r"'points\.base64' is not valid base64"),
    (_line("sweep", _points(shape=[4, 4])),
     r"points shape \[4, 4\] needs 64 bytes but its base64 data holds 80"),
    (_line("sweep", _points(dtype="<f8", shape=[5, 2])),
     r"points must be N x 4 float32 \(x, y, z, intensity\), got dtype '<f8' shape \[5, 2\]"),
    (_line("sweep", _points(dtype="<f8")), r"points has dtype '<f8', expected '<f4'"),
    (_line("sweep", _points(base64=base64.b64encode(NAN_POINTS).decode())),
     r"points has 5 point\(s\) with non-finite x, y, z or intensity"),
    (_line("sweep", _points(rows=5)), r"unexpected field\(s\) in points: \['rows'\]"),
    (_line("sweep-offsets", lambda d: d["point_time_offsets_ns"].update(shape=[4])),
     r"point_time_offsets_ns must have shape \[5\] \(one per point\), got \[4\]"),
    (_line("sweep", lambda d: d.update(points=None)), r"field 'points' must be a map, got nil"),
    (_line("image", lambda d: d.update(image=None)), r"exactly one of image and data must be set"),
    (_line("jpeg", lambda d: d.update(encoding="gif")), r"encoded image has encoding 'gif'"),
    (_line("diagnostics", lambda d: d["clocks"][1].update(samples=-1)),
     r"field 'clocks\[1\]\.samples' must not be negative"),
    (_line("diagnostics", lambda d: d["realtime"].update(cpu_affinity=[0, "1"])),
     r"field 'realtime\.cpu_affinity\[1\]' must be an integer, got str"),
    (_line("rig", lambda d: d.update(rig=[])), r"field 'rig' must be a map, got list"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "problem"), BAD_LINES)
def test_malformed_lines_name_the_file_line_and_fault(
    tmp_path: Path, line: str, problem: str
) -> None:
    path = tmp_path / "bad.jsonl"
    good = _line("gnss")
    path.write_text(f"{good}\n\n{line}\n")  # the bad record is on line 3
    expected = problem.removeprefix("^[^:]+:1: ")
    with pytest.raises(SourceError, match=rf"bad\.jsonl:3: .*{expected}"):
        list(read_messages(path))
    # The same words for a document alone.
    if problem.startswith("^[^:]+:1: "):
        path.write_text(line)
        with pytest.raises(
            SourceError, match=problem.replace("^[^:]+", "^" + re.escape(str(path)))
        ):
            list(read_messages(path))


def test_an_integer_longer_than_python_converts_is_named(tmp_path: Path) -> None:
    """Valid JSON, but `int()` refuses more than `sys.get_int_max_str_digits()` digits with a
    ValueError that is no JSONDecodeError: it was "unexpected ValueError ... a bug" to the CLI."""
    digits = sys.get_int_max_str_digits()
    huge = _line("detections").replace('"seq": 3', '"seq": 1' + "0" * (digits + 700))
    assert huge != _line("detections")
    path = tmp_path / "huge.jsonl"
    path.write_text(f"{_line('detections')}\n\n{huge}\n")
    with pytest.raises(SourceError) as info:
        list(read_jsonl(path))
    assert str(info.value) == (
        f"{path}:3: not JSON this reader accepts (an integer of more than {digits} digits)"
    )
    with pytest.raises(SchemaError, match=rf"\(an integer of more than {digits} digits\)$"):
        from_json(huge)


def test_limits_apply_to_documents(tmp_path: Path) -> None:
    small = WireLimits(max_points=4, max_detections=1)
    with pytest.raises(SchemaError, match="oversize sweep: 5 points, above the limit of 4"):
        from_json(to_json(EXAMPLES["sweep"]), limits=small)
    path = tmp_path / "d.jsonl"
    path.write_text(_line("detections") + "\n")
    with pytest.raises(SourceError, match=r"d\.jsonl:1: .*oversize detection list: 2 detections"):
        list(read_jsonl(path, limits=small))


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"nope\.jsonl: cannot read messages"):
        list(read_messages(tmp_path / "nope.jsonl"))
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(_line("gnss").encode() + b"\n\xff\xfe\n")
    with pytest.raises(SourceError, match=r"latin\.jsonl:2: not UTF-8 text"):
        list(read_messages(latin))


def test_read_jsonl_expects_one_type(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(_line("detections") + "\n" + _line("gnss") + "\n")
    with pytest.raises(SourceError, match=r"mixed\.jsonl:2: a GnssFix record, expected Detec"):
        list(read_jsonl(path))
    (fix,) = read_jsonl(_write(tmp_path, "gnss"), GnssFix)
    assert fix == EXAMPLES["gnss"]


def _write(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.jsonl"
    path.write_text(_line(name) + "\n")
    return path


def test_fill_defaults_for_files_that_leave_fields_out(tmp_path: Path) -> None:
    doc = to_document(EXAMPLES["detections"])
    for key in ("timings_ns", "latency_ns", "budget_ok"):
        doc.pop(key)
    with pytest.raises(SchemaError, match="missing field 'timings_ns'"):
        from_document(doc)
    out = from_document(doc, fill_defaults=True)
    assert isinstance(out, DetectionList)
    assert (out.timings_ns, out.latency_ns, out.budget_ok) == ({}, 0, True)
    assert out.detections == EXAMPLES["detections"].detections  # type: ignore[union-attr]
    del doc["header"]
    with pytest.raises(SchemaError, match="missing field 'header'"):
        from_document(doc, fill_defaults=True)


# -- the earlier format --------------------------------------------------------------------------

# Two records as the writer before the schema table wrote them (keys `sequence`, `timings`,
# `latitude`; optional keys left out).
LEGACY = [
    '{"stamp_ns":0,"sequence":0,"stream":"detections","frame_id":"vehicle","detections":[{'
    '"label":"Car","score":0.8,"center":[8.85,-1.78,-0.71],"size":[3.9,1.6,1.5],"yaw":0.0,'
    '"sources":["camera","lidar"],"latitude":49.0,"longitude":8.4,"camera_box":{"camera":"front",'
    '"x1":711.7,"y1":143.2,"x2":805.3,"y2":301.2}}],"timings":{"fusion":5},"latency_ns":7,'
    '"budget_ok":false,"degraded":["gnss"],"valid":true,"schema_version":1}',
    '{"stamp_ns":100,"sequence":1,"detections":[{"label":"unknown","score":0.3,'
    '"center":[5.6,-3.8,-1.1],"size":[1.5,0.3,0.9],"yaw":1.5}]}',
]


def test_old_files_read_through_the_legacy_mapping(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.jsonl"
    path.write_text("\n".join(LEGACY) + "\n")
    with caplog.at_level(logging.WARNING, logger="perception.msgs.jsonl"):
        first, second = read_jsonl(path)
    assert caplog.text.count("legacy mapping") == 1
    assert first == DetectionList(
        Header("detections", 0, 0, "vehicle"),
        (
            Detection3D(
                "Car",
                0.8,
                (8.85, -1.78, -0.71),
                (3.9, 1.6, 1.5),
                0.0,
                ("camera", "lidar"),
                49.0,
                8.4,
                CameraBox("front", 711.7, 143.2, 805.3, 301.2),
            ),
        ),
        {"fusion": 5},
        7,
        False,
        ("gnss",),
    )
    assert second == DetectionList(
        Header("detections", 1, 100, "vehicle"),
        (Detection3D("unknown", 0.3, (5.6, -3.8, -1.1), (1.5, 0.3, 0.9), 1.5),),
    )
    # Written again, they take the current keys.
    assert '"seq":1' in to_json(second) and "sequence" not in to_json(second)


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: d.update(color="red"), r"unexpected field\(s\) in an old-format record"),
        (lambda d: d["detections"][0].pop("longitude"), r"latitude_deg and longitude_deg must be"),
        (lambda d: d.update(sequence=-1), r"field 'header\.seq' must not be negative"),
    ],
)
def test_old_records_are_checked_like_any(tmp_path: Path, edit: Any, problem: str) -> None:
    doc = json.loads(LEGACY[0])
    edit(doc)
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps(doc) + "\n")
    with pytest.raises(SourceError, match=rf"old\.jsonl:1: .*{problem}"):
        list(read_jsonl(path))


def test_public_names() -> None:
    assert set(jsonl.__all__) == {
        "from_document", "from_json", "read_jsonl", "read_jsonl_lines", "read_messages",
        "to_document", "to_json", "write_jsonl_line",
    }  # fmt: skip
