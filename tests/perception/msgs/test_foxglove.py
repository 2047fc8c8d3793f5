"""Foxglove forms of every message type: the fields they take from the tables, and the way back
to the wire buffers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
from foxglove_schemas_protobuf.FrameTransforms_pb2 import FrameTransforms
from foxglove_schemas_protobuf.LocationFix_pb2 import LocationFix
from foxglove_schemas_protobuf.PackedElementField_pb2 import PackedElementField
from foxglove_schemas_protobuf.PointCloud_pb2 import PointCloud
from foxglove_schemas_protobuf.RawImage_pb2 import RawImage
from foxglove_schemas_protobuf.SceneUpdate_pb2 import SceneUpdate
from hypothesis import assume, given
from hypothesis import strategies as st

from calibration.rig import load_rig_yaml
from perception.errors import SchemaError
from perception.msgs import jsonl, wire
from perception.msgs.foxglove import (
    LOCATION_FIX_FIELDS,
    POINT_OFFSET_FIELD,
    channel_schema,
    rig_transforms,
    timings_foxglove,
    to_foxglove,
    wire_buffers,
)
from perception.msgs.json_schemas import document_json_schema
from perception.msgs.schema import GNSS_FIX, LIDAR_SWEEP
from perception.msgs.types import (
    CameraFrame,
    Detection3D,
    DetectionList,
    Diagnostics,
    GnssFix,
    Header,
    LidarSweep,
    Message,
    RigMessage,
    Track,
    TrackList,
)
from tests.perception.msgs.strategies import SETTINGS, camera_frames, lidar_sweeps, messages

H = Header("gnss", 0, 1_500_000_000, "gnss")
EXAMPLE_RIG = Path(__file__).resolve().parents[3] / "calibration" / "examples" / "kitti_rig.yaml"


def test_location_fix_takes_the_mapped_fields() -> None:
    # Every GnssFix field is the header, shown in LocationFix, or kept in the companion only.
    companion_only = {"velocity_enu_mps", "heading_rad"}
    names = {f.name for f in GNSS_FIX.fields}
    assert names == {"header"} | set(LOCATION_FIX_FIELDS) | companion_only
    assert set(LOCATION_FIX_FIELDS.values()) <= set(LocationFix.DESCRIPTOR.fields_by_name)
    fix = GnssFix(H, 49.25, 8.5, 112.0, (0.5, 0, 0, 0, 0.5, 0, 0, 0, 2.0), (1.0, 0, 0), 0.5)
    fox = to_foxglove(fix, "gnss")
    assert (fox.schema_name, fox.message_encoding) == ("foxglove.LocationFix", "protobuf")
    loc = LocationFix.FromString(fox.payload)
    assert (loc.latitude, loc.longitude, loc.altitude) == (49.25, 8.5, 112.0)
    assert list(loc.position_covariance) == list(fix.position_covariance_m2)
    assert loc.position_covariance_type == LocationFix.KNOWN
    assert loc.timestamp.seconds == 1 and loc.timestamp.nanos == 500_000_000
    unknown = LocationFix.FromString(to_foxglove(GnssFix(H, 1.0, 2.0, 3.0), "g").payload)
    assert unknown.position_covariance_type == LocationFix.UNKNOWN


def test_point_cloud_fields_are_the_table_columns() -> None:
    points = np.arange(12, dtype=np.float32).reshape(3, 4)
    plain = PointCloud.FromString(to_foxglove(LidarSweep(H, points), "l").payload)
    columns = LIDAR_SWEEP.field("points").columns
    assert [f.name for f in plain.fields] == list(columns) == ["x", "y", "z", "intensity"]
    assert [f.offset for f in plain.fields] == [0, 4, 8, 12] and plain.point_stride == 16
    assert plain.data == points.tobytes()
    timed = LidarSweep(H, points, np.array([0, 5, 2**53], np.int64))
    cloud = PointCloud.FromString(to_foxglove(timed, "l").payload)
    assert [f.name for f in cloud.fields] == [*columns, POINT_OFFSET_FIELD]
    assert cloud.fields[-1].type == PackedElementField.FLOAT64 and cloud.point_stride == 24
    with pytest.raises(SchemaError, match=r"^gnss: point_time_offsets_ns above 2\*\*53 ns"):
        to_foxglove(LidarSweep(H, points, np.array([0, 5, 2**53 + 1], np.int64)), "l")


def _showable(msg: Message) -> bool:
    """Whether a PointCloud holds the message exactly (offsets up to 2**53 ns)."""
    offsets = getattr(msg, "point_time_offsets_ns", None)
    return offsets is None or not offsets.size or int(offsets.max()) <= 2**53


def _frames(msg: Message) -> tuple[dict[str, object], list[bytes]]:
    import msgpack

    frames = wire.encode(msg)
    return msgpack.unpackb(bytes(frames[1])), [bytes(f) for f in frames[2:]]


@SETTINGS
@given(st.one_of(lidar_sweeps(), camera_frames()))
def test_wire_buffers_are_recovered_from_the_payload(msg: LidarSweep | CameraFrame) -> None:
    assume(_showable(msg))
    doc, buffers = _frames(msg)
    fox = to_foxglove(msg, "t")
    got = wire_buffers(str(doc["type"]), doc["buffers"], fox.payload)  # type: ignore[arg-type]
    assert [bytes(b) for b in got] == buffers
    expected = (
        ("foxglove.PointCloud",)
        if isinstance(msg, LidarSweep)
        else ("foxglove.RawImage", "foxglove.CompressedImage")
    )
    assert fox.schema_name in expected


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1e19])
def test_a_damaged_point_time_is_named_not_cast(bad: float) -> None:
    """A recorded point time offset that is no int64 number of nanoseconds (a damaged drive)
    is refused with the field's name; cast, it became a garbage integer and a numpy warning."""
    points = np.zeros((3, 4), np.float32)
    sweep = LidarSweep(Header("lidar", 0, 1, "lidar"), points, np.array([0, 5, 9], np.int64))
    doc, _buffers = _frames(sweep)
    cloud = PointCloud.FromString(to_foxglove(sweep, "t").payload)
    packed = np.frombuffer(cloud.data, dtype=np.uint8).copy()
    stride = cloud.point_stride
    packed[2 * stride - 8 : 2 * stride] = np.frombuffer(np.float64(bad).tobytes(), np.uint8)
    cloud.data = packed.tobytes()
    with pytest.raises(ValueError, match=f"field '{POINT_OFFSET_FIELD}': a point time offset"):
        wire_buffers("LidarSweep", doc["buffers"], cloud.SerializeToString())  # type: ignore[arg-type]


def test_images() -> None:
    image = np.arange(2 * 5 * 3, dtype=np.uint8).reshape(2, 5, 3)
    raw = RawImage.FromString(to_foxglove(CameraFrame(H, image=image), "c").payload)
    assert (raw.width, raw.height, raw.step, raw.encoding) == (5, 2, 15, "bgr8")
    assert raw.data == image.tobytes()
    png = CameraFrame(H, data=b"\x89PNG fake", encoding="png")
    compressed = CompressedImage.FromString(to_foxglove(png, "c").payload)
    assert (compressed.format, compressed.data) == ("png", b"\x89PNG fake")


def test_rig_frame_transforms(caplog: pytest.LogCaptureFixture) -> None:
    rig = load_rig_yaml(EXAMPLE_RIG)
    fox = to_foxglove(RigMessage(H, rig.to_dict()), "rig")
    transforms = FrameTransforms.FromString(fox.payload).transforms
    assert {(t.parent_frame_id, t.child_frame_id) for t in transforms} == {
        (edge.parent, child) for child, edge in rig.edges.items()
    }
    assert transforms == rig_transforms(rig, H.stamp_ns).transforms
    for t in transforms:
        q = t.rotation
        assert q.x**2 + q.y**2 + q.z**2 + q.w**2 == pytest.approx(1.0)
    with caplog.at_level(logging.WARNING, logger="perception.msgs.foxglove"):
        # A topic of its own: the warning is rate-limited per topic, process-wide.
        empty = to_foxglove(RigMessage(H, {"not": "a rig"}), "rig/not-a-rig")
    assert FrameTransforms.FromString(empty.payload).transforms == []
    assert "rig document not understood" in caplog.text


def test_a_repeated_bad_rig_is_said_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    """A recorder logged a line per rig message it could not parse (1,766 for 2,000)."""
    with caplog.at_level(logging.WARNING, logger="perception.msgs.foxglove"):
        for _ in range(50):
            to_foxglove(RigMessage(H, {"cameras": 5, "frames": []}), "rig/repeated")
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1, said
    assert said[0].startswith("rig/repeated: rig document not understood")


def test_diagnostics_are_a_json_channel() -> None:
    diag = Diagnostics(Header("diagnostics", 4, 9, "vehicle"), counters={"received": 3})
    fox = to_foxglove(diag, "diagnostics")
    assert (fox.schema_name, fox.schema_encoding, fox.message_encoding) == (
        "perception.Diagnostics",
        "jsonschema",
        "json",
    )
    assert json.loads(fox.schema_data) == document_json_schema("Diagnostics")
    assert json.loads(fox.payload) == jsonl.to_document(diag)
    assert jsonl.from_json(fox.payload) == diag
    assert wire_buffers("Diagnostics", [], fox.payload) == []


@SETTINGS
@given(messages)
def test_every_message_has_a_foxglove_form(msg: Message) -> None:
    assume(_showable(msg))
    fox = to_foxglove(msg, "topic")
    assert fox.schema_encoding in ("protobuf", "jsonschema") and fox.schema_data
    if fox.message_encoding == "protobuf":
        assert fox.schema_name.startswith("foxglove.")
    if isinstance(msg, CameraFrame | LidarSweep):
        doc, buffers = _frames(msg)
        got = wire_buffers(type(msg).__name__, doc["buffers"], fox.payload)  # type: ignore[arg-type]
        assert [bytes(b) for b in got] == buffers
    elif isinstance(msg, GnssFix | Diagnostics | RigMessage):
        assert fox.payload or isinstance(msg, RigMessage)
    else:
        assert SceneUpdate.FromString(fox.payload).entities[0].id == "topic"


def test_tracks_show_as_boxes_with_ids_and_velocity_arrows() -> None:
    def track(track_id: int, velocity: tuple[float, float]) -> Track:
        return Track(
            track_id, "Car", 0.9, (10.0, 2.0, 0.8), (4.2, 1.8, 1.5), 0.5, velocity,
            (110.0, 52.0, 0.8), 1.2, velocity, 0.0, (0.0,) * 16, 2_000_000_000, 20, 0,
        )  # fmt: skip

    msg = TrackList(Header("tracks", 3, 1_500_000_000, "vehicle"), (track(7, (3.0, 4.0)),
                    track(8, (0.0, 0.0))))  # fmt: skip
    fox = to_foxglove(msg, "tracks")
    assert fox.schema_name == "foxglove.SceneUpdate"
    (entity,) = SceneUpdate.FromString(fox.payload).entities
    assert entity.frame_id == "vehicle" and len(entity.cubes) == 2
    assert [t.text for t in entity.texts] == ["#7 Car 5.0 m/s", "#8 Car 0.0 m/s"]
    (arrow,) = entity.arrows  # a standing car has none
    q = arrow.pose.orientation
    assert 2 * np.arctan2(q.z, q.w) == pytest.approx(np.arctan2(4.0, 3.0))
    assert arrow.shaft_length + arrow.head_length == pytest.approx(5.0)


@SETTINGS
@given(messages)
def test_a_channel_can_be_advertised_before_its_first_message(msg: Message) -> None:
    """`channel_schema` gives the schema `to_foxglove` gives for the same schema name."""
    assume(_showable(msg))
    fox = to_foxglove(msg, "topic")
    schema = channel_schema(fox.schema_name)
    got = (schema.name, schema.encoding, schema.data, schema.message_encoding)
    assert got == (fox.schema_name, fox.schema_encoding, fox.schema_data, fox.message_encoding)


def test_timings_and_unknown_schemas() -> None:
    from perception.msgs.types import DetectionList

    dl = DetectionList(Header("detections", 4, 7, "vehicle"), (), {"fusion": 1_500_000}, 9_000_000)
    fox = timings_foxglove(dl)
    doc = json.loads(fox.payload)
    assert doc == {"seq": 4, "stamp_ns": 7, "latency_ms": 9.0, "budget_ok": True,
                   "stages_ms": {"fusion": 1.5}}  # fmt: skip
    schema = channel_schema("perception.Timings")
    assert json.loads(schema.data)["title"] == "perception.Timings" == fox.schema_name
    for name in ("perception.Nothing", "foxglove.Grid", "Diagnostics"):
        with pytest.raises(KeyError, match="no Foxglove conversion"):
            channel_schema(name)


def test_detection_labels_say_class_score_sources_and_the_cameras_part() -> None:
    dets = (
        Detection3D("Car", 0.91, (10.0, 1.0, -0.8), (4.0, 1.7, 1.5), 0.0, ("camera", "lidar"),
                    camera_contribution=0.3149),
        Detection3D("unknown", 0.5, (20.0, 5.0, -0.5), (2.0, 2.0, 1.0), 0.0, ("lidar",)),
    )  # fmt: skip
    msg = DetectionList(Header("detections", 1, 1_000, "vehicle"), dets)
    (entity,) = SceneUpdate.FromString(to_foxglove(msg, "detections").payload).entities
    assert [t.text for t in entity.texts] == [
        "Car 0.91 [camera+lidar] camera +0.31",
        "unknown 0.50 [lidar]",
    ]
