"""Drives (MCAP) written and read back: every message type bit-exact (Diagnostics included),
Foxglove schemas, companion JSON schemas, rig, truncated files, bad files. Real KITTI frames,
real files."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from mcap.reader import make_reader

from perception.errors import WireError
from perception.msgs import jsonl, wire
from perception.msgs.json_schemas import document_json_schema, wire_json_schema
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
from replay.datasets.kitti_object import KittiObjectFolder
from replay.drive import (
    COMPANION_SUFFIX,
    GROUND_TRUTH_TOPIC,
    RIG_METADATA,
    DriveReader,
    DriveWriter,
    being_written,
)
from replay.errors import ReplayError
from tests.perception.msgs.strategies import SETTINGS, messages
from tests.perception.msgs.strategies import assert_same as assert_same_message
from tests.replay.damage import record_ends

MS = 1_000_000


def wire_bytes(msg: Message, topic: str | None = None) -> bytes:
    """The message's exact wire encoding (header document and buffers), for equality."""
    return b"".join(bytes(f) for f in wire.encode(msg, topic))


def assert_same(a: Message, b: Message) -> None:
    assert type(a) is type(b)
    assert a.header == b.header
    assert wire_bytes(a) == wire_bytes(b)
    if isinstance(a, CameraFrame) and isinstance(b, CameraFrame):
        if a.image is not None:
            assert b.image is not None and np.array_equal(a.image, b.image)
        assert a.data == b.data and a.encoding == b.encoding
    if isinstance(a, LidarSweep) and isinstance(b, LidarSweep):
        assert a.points.tobytes() == b.points.tobytes()
        if a.point_time_offsets_ns is None:
            assert b.point_time_offsets_ns is None
        else:
            assert b.point_time_offsets_ns is not None
            assert np.array_equal(a.point_time_offsets_ns, b.point_time_offsets_ns)
    if not isinstance(a, CameraFrame | LidarSweep):
        assert a == b


def every_message_type(kitti_dir: Path) -> list[tuple[Message, int]]:
    """(message, log time ns) of every type and variant, from real KITTI frames."""
    folder = KittiObjectFolder(kitti_dir)
    rig_msg, camera, sweep = folder.frame_messages(0, 1_000 * MS)
    assert isinstance(camera, CameraFrame) and camera.image is not None
    assert isinstance(sweep, LidarSweep)
    ok, jpeg = cv2.imencode(".jpg", camera.image)
    ok2, png = cv2.imencode(".png", camera.image[:64, :64])
    assert ok and ok2
    n = sweep.points.shape[0]
    offsets = np.linspace(0, 99_999_999, n).astype(np.int64)
    t = 1_000 * MS
    return [
        (rig_msg, t + 1),
        (camera, t + 2 * MS),
        (
            CameraFrame(
                Header("camera/jpeg", 0, t, "camera/front"), data=jpeg.tobytes(), encoding="jpeg"
            ),
            t + 3 * MS,
        ),
        (
            CameraFrame(
                Header("camera/png", 7, t, "camera/front"), data=png.tobytes(), encoding="png"
            ),
            t + 4 * MS,
        ),
        (sweep, t + 5 * MS),
        (LidarSweep(Header("lidar/deskew", 3, t, "lidar"), sweep.points, offsets), t + 6 * MS),
        (GnssFix(Header("gnss", 1, t, "gnss"), 49.0123456789, 8.4123456789, 112.25), t + 7 * MS),
        (
            GnssFix(
                Header("gnss", 2, t + 100 * MS, "gnss"),
                49.0,
                8.4,
                112.0,
                (0.5, 0.01, 0.0, 0.01, 0.5, 0.0, 0.0, 0.0, 2.0),
                (1.5, -0.25, 0.0),
                -2.75,
            ),
            t + 107 * MS,
        ),
        (
            DetectionList(
                Header("detections", 0, t, "vehicle"),
                (
                    Detection3D(
                        "car",
                        0.875,
                        (10.1, -2.3, -0.8),
                        (3.9, 1.6, 1.5),
                        0.3,
                        ("lidar", "camera"),
                        49.0001,
                        8.4002,
                        CameraBox("front", 1.5, 2.5, 100.25, 80.0),
                    ),
                    Detection3D("pedestrian", 0.5, (5.0, 1.0, -0.9), (0.8, 0.6, 1.7), -1.2),
                ),
                timings_ns={"sync": 12_345, "fusion": 2_000_000},
                latency_ns=-5,
                budget_ok=False,
                degraded=("gnss",),
                valid=True,
            ),
            t + 108 * MS,
        ),
        (DetectionList(Header("detections", 1, t + 100 * MS, "vehicle"), ()), t + 208 * MS),
        (Diagnostics(Header("diagnostics", 0, t + 200 * MS, "vehicle")), t + 209 * MS),
        (
            Diagnostics(
                Header("diagnostics", 1, t + 1_200 * MS, "vehicle"),
                counters={"received": 30, "published": 10, "dropped": 0},
                overruns_by_stage={"fusion": 1},
                sync={"bundles": 10, "timeouts": 0},
                missing_by_stream={"camera/front": 0},
                late_by_stream={"camera/front": 2},
                clocks=(
                    SensorClock("lidar/top", 1_250_000, -0.5, 10, 1, t),
                    SensorClock("gnss", None, 0.0, 1, 0, None),
                ),
                budgets_ms={"end_to_end": 100.0, "fusion": 12.5},
                last_publish_ns=t + 1_150 * MS,
                last_latency_ns=48 * MS,
                engines=("camera_encoder: onnxruntime CPUExecutionProvider fp32",),
                notes=("TensorRT unavailable: ONNX Runtime on the CPU",),
                realtime=RealtimeStatus((0, 1), 0, "other", True, ("nice -5: not permitted",)),
            ),
            t + 1_209 * MS,
        ),
    ]


@pytest.fixture(scope="module")
def written(kitti_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    msgs = every_message_type(kitti_dir)
    path = tmp_path_factory.mktemp("drive") / "drive.mcap"
    folder = KittiObjectFolder(kitti_dir)
    camera = msgs[1][0]
    assert isinstance(camera, CameraFrame) and camera.image is not None
    with DriveWriter(path, rig=folder.rig(folder.frames[0], camera.image)) as w:
        for msg, log_time in msgs:
            w.write(msg, log_time)
    return path, msgs


def test_round_trip_every_message_type_is_bit_exact(written) -> None:
    path, msgs = written
    reader = DriveReader(path)
    assert not reader.truncated
    got = list(reader.messages())
    assert len(got) == len(msgs)
    for (msg, log_time), rec in zip(msgs, got, strict=True):
        assert rec.topic == msg.header.stream
        assert rec.log_time_ns == log_time
        assert_same(msg, rec.message)
    counts: dict[str, int] = {}
    for msg, _ in msgs:
        counts[msg.header.stream] = counts.get(msg.header.stream, 0) + 1
    assert reader.topics() == counts
    assert reader.start_ns == msgs[0][1]


def test_topic_and_start_filters(written) -> None:
    path, msgs = written
    reader = DriveReader(path)
    gnss = [r.message for r in reader.messages(topics=["gnss"])]
    assert [m.header.seq for m in gnss] == [1, 2]
    late = list(reader.messages(start_ns=msgs[7][1]))
    assert [r.log_time_ns for r in late] == [t for _, t in msgs[7:]]


def test_foxglove_schemas_and_publish_time(written) -> None:
    path, msgs = written
    with path.open("rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        assert summary is not None
        names = {s.name for s in summary.schemas.values()}
        assert {
            "foxglove.RawImage",
            "foxglove.CompressedImage",
            "foxglove.PointCloud",
            "foxglove.LocationFix",
            "foxglove.SceneUpdate",
            "foxglove.FrameTransforms",
            "perception.Diagnostics",
        } <= names
        encodings = {c.topic: c.message_encoding for c in summary.channels.values()}
        assert encodings["camera/front"] == "protobuf"
        assert encodings["detections" + COMPANION_SUFFIX] == "json"
        assert encodings["diagnostics"] == "json"
        stamps = {
            (c.topic, m.publish_time)
            for _, c, m in reader.iter_messages()
            if not c.topic.endswith(COMPANION_SUFFIX)
        }
    assert stamps == {(m.header.stream, m.header.stamp_ns) for m, _ in msgs}


def test_foxglove_messages_decode_as_their_schemas(written) -> None:
    from foxglove_schemas_protobuf.PointCloud_pb2 import PointCloud
    from foxglove_schemas_protobuf.SceneUpdate_pb2 import SceneUpdate

    path, msgs = written
    with path.open("rb") as f:
        for _, channel, m in make_reader(f).iter_messages(topics=["lidar/top", "detections"]):
            if channel.topic == "lidar/top":
                cloud = PointCloud.FromString(m.data)
                assert [fl.name for fl in cloud.fields] == ["x", "y", "z", "intensity"]
                assert cloud.point_stride == 16
                assert cloud.data == msgs[4][0].points.tobytes()
            elif m.sequence == 8:
                scene = SceneUpdate.FromString(m.data)
                assert len(scene.entities[0].cubes) == 2
                assert scene.entities[0].texts[0].text == "car 0.88 [lidar+camera]"


def test_json_channels_follow_their_generated_schemas(written) -> None:
    path, msgs = written
    seen = set()
    with path.open("rb") as f:
        for schema, channel, m in make_reader(f).iter_messages():
            if channel.message_encoding != "json":
                continue
            assert schema is not None and schema.encoding == "jsonschema"
            stored = json.loads(schema.data)
            doc = json.loads(m.data)
            type_name = channel.metadata["perception.type"]
            if channel.topic.endswith(COMPANION_SUFFIX):
                assert schema.name == f"perception.WireHeader.{type_name}"
                assert stored == wire_json_schema(type_name)
            else:
                # The base channel of a type Foxglove has no schema for: its JSON document.
                assert (schema.name, type_name) == ("perception.Diagnostics", "Diagnostics")
                assert stored == document_json_schema("Diagnostics")
                assert doc == jsonl.to_document(msgs[m.sequence][0])
            jsonschema.validate(doc, stored)
            seen.add((type_name, channel.topic.endswith(COMPANION_SUFFIX)))
    assert seen == {(type(m).__name__, True) for m, _ in msgs} | {("Diagnostics", False)}


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=4))
def test_random_messages_round_trip_through_a_drive(msgs: list[Message]) -> None:
    for msg in msgs:
        offsets = getattr(msg, "point_time_offsets_ns", None)
        # A PointCloud holds time offsets exactly up to 2**53 ns (104 days).
        assume(offsets is None or not offsets.size or int(offsets.max()) <= 2**53)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "drive.mcap"
        with DriveWriter(path, compression=None) as w:
            for i, msg in enumerate(msgs):
                w.write(msg, 1_000 + i)
        got = list(DriveReader(path).messages())
    assert [(r.topic, r.log_time_ns) for r in got] == [
        (m.header.stream, 1_000 + i) for i, m in enumerate(msgs)
    ]
    for msg, rec in zip(msgs, got, strict=True):
        assert_same_message(msg, rec.message)


def test_rig_is_stored_in_the_drive(written, kitti_dir: Path) -> None:
    path, msgs = written
    rig = DriveReader(path).rig
    assert rig is not None
    rig_msg = msgs[0][0]
    assert isinstance(rig_msg, RigMessage)
    assert rig.to_dict() == rig_msg.rig


def test_rig_from_write_rig_and_from_rig_messages(written, tmp_path: Path) -> None:
    path, msgs = written
    rig = DriveReader(path).rig
    assert rig is not None
    out = tmp_path / "rig.mcap"
    with DriveWriter(out, compression=None) as w:
        w.write_rig(rig, 5)
    reader = DriveReader(out)
    assert reader.rig is not None and reader.rig.to_dict() == rig.to_dict()
    (rec,) = list(reader.messages())
    assert rec.topic == "rig" and rec.message.header.stamp_ns == 5
    # Without metadata, the first RigMessage is the rig.
    only_messages = tmp_path / "rigmsg.mcap"
    with DriveWriter(only_messages) as w:
        w.write(msgs[0][0], 1)
    assert DriveReader(only_messages).rig is not None
    empty = tmp_path / "empty.mcap"
    DriveWriter(empty).close()
    assert DriveReader(empty).rig is None
    assert DriveReader(empty).topics() == {}
    assert list(DriveReader(empty).messages()) == []


@pytest.mark.parametrize("compression", ["zstd", "lz4", None])
def test_truncated_drive_reads_up_to_the_cut(
    kitti_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, compression: str | None
) -> None:
    folder = KittiObjectFolder(kitti_dir)
    msgs = list(folder.messages(start_ns=0))
    path = tmp_path / "full.mcap"
    with DriveWriter(path, compression=compression, chunk_size=64 * 1024) as w:
        for i, msg in enumerate(msgs):
            w.write(msg, 1_000 + i)
    data = path.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="replay.drive"):
        reader = DriveReader(cut)
        got = list(reader.messages())
    assert reader.truncated
    assert "truncated" in caplog.text
    assert 0 < len(got) < len(msgs)
    for msg, rec in zip(msgs, got, strict=False):
        assert_same(msg, rec.message)
    assert sum(reader.topics().values()) == len(got)
    # The cut is logged once per reader (not once per pass over the file), naming what ended
    # the data even where the library's error carries no text.
    cuts = [r.getMessage() for r in caplog.records if "incomplete record" in r.getMessage()]
    assert len(cuts) == 1 and not cuts[0].endswith("()"), cuts


def test_write_rejects_invalid_messages_and_closed_drive(tmp_path: Path) -> None:
    path = tmp_path / "d.mcap"
    w = DriveWriter(path)
    bad = LidarSweep(Header("lidar", 0, 0, "lidar"), np.full((2, 4), np.nan, np.float32))
    with pytest.raises(WireError):
        w.write(bad, 0)
    with pytest.raises(ValueError):
        w.write(GnssFix(Header("gnss", 0, 0, "gnss"), 1.0, 2.0, 3.0), -1)
    w.close()
    w.close()
    with pytest.raises(ReplayError, match="closed"):
        w.write(GnssFix(Header("gnss", 0, 0, "gnss"), 1.0, 2.0, 3.0), 0)
    assert DriveReader(path).topics() == {}


def test_bad_files_raise_replay_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.mcap"
    with pytest.raises(ReplayError, match=r"missing\.mcap"):
        DriveReader(missing)
    text = tmp_path / "text.mcap"
    text.write_text("not an mcap file at all")
    with pytest.raises(ReplayError, match=r"text\.mcap: not an MCAP"):
        DriveReader(text)
    # A pipe with no writer blocked the open itself; a device never ends.
    fifo = tmp_path / "pipe.mcap"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(ReplayError, match="not a regular file"):
            DriveReader(path)
    with pytest.raises(ReplayError, match="unknown compression"):
        DriveWriter(tmp_path / "x.mcap", compression="gzip")
    with pytest.raises(ReplayError, match="cannot create"):
        DriveWriter(tmp_path / "no" / "dir" / "x.mcap")


def _gnss(seq: int) -> GnssFix:
    return GnssFix(Header("gnss", seq, 1_000 + seq, "gnss"), 49.0, 8.4, 100.0)


def test_flush_puts_every_written_message_in_the_file(tmp_path: Path) -> None:
    """What a process killed now would leave: the chunks handed to the operating system."""
    path = tmp_path / "open.mcap"
    with DriveWriter(path, chunk_size=1 << 30) as w:
        for seq in range(10):
            w.write(_gnss(seq), 1_000 + seq)
        assert (w.messages_written, w.messages_flushed) == (10, 0)
        assert list(DriveReader(path).messages()) == []
        w.flush()
        assert w.messages_flushed == 10
        assert [r.message.header.seq for r in DriveReader(path).messages()] == list(range(10))
        w.write(_gnss(10), 2_000)
    assert len(list(DriveReader(path).messages())) == 11


# Writes drives of 200 GNSS fixes under file size limits (RLIMIT_FSIZE, lowered and restored in
# this child process only), one per limit in argv, and prints the messages each holds by
# `messages_flushed` and the error.
_LIMITED_WRITES = """
import json, resource, sys
from pathlib import Path
from perception.msgs.types import GnssFix, Header
from replay.drive import DriveWriter
from replay.errors import DriveStorageError
def _gnss(seq):
    return GnssFix(Header("gnss", seq, 1_000 + seq, "gnss"), 49.0, 8.4, 100.0)
folder, limits = Path(sys.argv[1]), [int(a) for a in sys.argv[2:]]
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
results = []
for limit in limits:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    w = DriveWriter(folder / f"{limit}.mcap", compression=None, chunk_size=8192)
    error = None
    try:
        for seq in range(200):
            w.write(_gnss(seq), 1_000 + seq)
        w.close()
    except DriveStorageError as e:
        error = str(e)
        w.close()
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    results.append([limit, w.messages_written, w.messages_flushed, error])
print(json.dumps(results))
"""


def test_a_failed_write_leaves_a_drive_holding_messages_flushed(tmp_path: Path) -> None:
    """A full disk may cut a chunk, the message indexes after it, or the summary: the drive then
    reads as truncated and holds exactly `messages_flushed` messages."""
    full = tmp_path / "full.mcap"
    with DriveWriter(full, compression=None, chunk_size=8192) as w:
        for seq in range(200):
            w.write(_gnss(seq), 1_000 + seq)
    records = record_ends(full.read_bytes())
    chunks = [(start, end) for opcode, start, end in records if opcode == 0x06]
    assert len(chunks) >= 3
    limits = {100}
    for start, end in chunks[:3]:
        limits |= {start, start + 5, end - 1, end, end + 3}  # end + 3: inside its indexes
    limits.add(full.stat().st_size - 10)  # the summary
    folder = tmp_path / "limited"
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _LIMITED_WRITES, str(folder), *map(str, sorted(limits))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = full.read_bytes()
    for limit, written, flushed, error in json.loads(done.stdout):
        path = folder / f"{limit}.mcap"
        assert error is not None and "File too large" in error, (limit, error)
        assert flushed <= written and path.read_bytes() == data[:limit]
        # What a file cut there holds, read independently of the writer's account.
        cut = tmp_path / "cut.mcap"
        cut.write_bytes(data[:limit])
        expected = [r.message.header.seq for r in DriveReader(cut).messages()]
        reader = DriveReader(path)
        got = [r.message.header.seq for r in reader.messages()]
        assert reader.truncated
        assert got == expected == list(range(flushed)), (limit, flushed)
    assert {flushed for _l, _w, flushed, _e in json.loads(done.stdout)} >= {0, 200}


def test_an_undecodable_record_is_skipped_with_on_error(tmp_path: Path) -> None:
    path = tmp_path / "damaged.mcap"
    with DriveWriter(path) as w:
        w.write(_gnss(0), 1_000)
        base, companion = w._channels[("gnss", "GnssFix")]
        # A record whose companion is not JSON: a damaged or hostile file.
        w._writer.add_message(base, 1_500, b"", 1_500, 999)
        w._writer.add_message(companion, 1_500, b"{not json", 1_500, 999)
        w.write(_gnss(1), 2_000)
    with pytest.raises(ReplayError, match="gnss at log time 1500: cannot decode"):
        list(DriveReader(path).messages())
    errors: list[ReplayError] = []
    got = list(DriveReader(path).messages(on_error=errors.append))
    assert [r.message.header.seq for r in got] == [0, 1]
    assert len(errors) == 1 and "damaged.mcap" in str(errors[0])
    assert DriveReader(path).topics() == {"gnss": 3}


def _truth(seq: int) -> dict[str, object]:
    box = {"id": 7, "label": "Car", "center": [5.0, 1.0, -0.9], "size": [3.9, 1.6, 1.5], "yaw": 0.1}
    return {"seq": seq, "stamp_ns": 1_000 + seq, "boxes": [box]}


def test_ground_truth_channel_round_trips_and_readers_ignore_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gt.mcap"
    with DriveWriter(path) as w:
        for seq in range(3):
            w.write(_gnss(seq), 2_000 + seq)
            w.write_ground_truth(_truth(seq), 2_000 + seq)
    with caplog.at_level(logging.WARNING, logger="replay.drive"):
        reader = DriveReader(path)
        assert [type(r.message) for r in reader.messages()] == [GnssFix] * 3
        assert reader.topics() == {"gnss": 3}
        assert reader.ground_truth() == [_truth(seq) for seq in range(3)]
    assert "companion" not in caplog.text  # not taken for a message missing its other half
    with path.open("rb") as f:
        mcap = make_reader(f)
        summary = mcap.get_summary()
        assert summary is not None
        (channel,) = [c for c in summary.channels.values() if c.topic == "ground_truth"]
        schema = summary.schemas[channel.schema_id]
        assert (channel.message_encoding, schema.name, schema.encoding) == (
            "json",
            "perception.GroundTruth",
            "jsonschema",
        )
        docs = [
            (json.loads(m.data), m.publish_time)
            for _, c, m in mcap.iter_messages(topics=["ground_truth"])
        ]
    for doc, publish in docs:
        jsonschema.validate(doc, json.loads(schema.data))
        assert publish == doc["stamp_ns"]
    # A truncated drive (linear scan) also leaves it out of the messages and keeps it readable.
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(path.read_bytes()[:-40])
    cut_reader = DriveReader(cut)
    assert cut_reader.truncated
    assert [type(r.message) for r in cut_reader.messages()] == [GnssFix] * 3
    assert cut_reader.ground_truth() == [_truth(seq) for seq in range(3)]


def test_ground_truth_rejects_incomplete_documents(tmp_path: Path) -> None:
    with DriveWriter(tmp_path / "bad.mcap") as w:
        with pytest.raises(ReplayError, match="ground truth without stamp_ns"):
            w.write_ground_truth({"seq": 0, "boxes": []}, 0)
        with pytest.raises(ReplayError, match="not representable as JSON"):
            w.write_ground_truth({"seq": 0, "stamp_ns": 0, "boxes": [float("nan")]}, 0)
    assert DriveReader(tmp_path / "bad.mcap").ground_truth() == []


def test_damaged_rig_metadata_and_ground_truth_are_named(tmp_path: Path) -> None:
    """Each was a JSONDecodeError or RecursionError from deep in the reader: "a bug" to
    replay, calib check, bench and show."""
    deep = "[" * 100_000 + "]" * 100_000
    for text, why in [
        ("not json", "not JSON: Expecting value: line 1 column 1 (char 0)"),
        (deep, "not JSON (arrays and objects nested too deeply)"),
        ("[1, 2]", "a JSON list, not an object"),
    ]:
        path = tmp_path / "rig.mcap"
        with DriveWriter(path) as w:
            w.write_metadata(RIG_METADATA, {"rig": text, "stamp_ns": "0"})
        with pytest.raises(ReplayError) as info:
            _ = DriveReader(path).rig
        assert str(info.value) == (
            f"{path}: the drive's rig is invalid (its perception.rig metadata is {why})"
        )
    path = tmp_path / "truth.mcap"
    with DriveWriter(path) as w:
        w.write_ground_truth({"seq": 0, "stamp_ns": 0, "boxes": []}, 7)
        # The channel as the writer made it, a document no writer would make.
        channel = w._channels[(GROUND_TRUTH_TOPIC, "GroundTruth")][0]
        w._writer.add_message(channel, 8, deep.encode(), 8, 1)
    with pytest.raises(ReplayError) as info:
        DriveReader(path).ground_truth()
    assert str(info.value) == (
        f"{path}: ground_truth at log time 8: malformed ground truth (arrays and objects "
        "nested too deeply)"
    )


def test_two_writers_of_one_drive(tmp_path: Path) -> None:
    """Two recorders given one new file both wrote it in place, each truncating and
    interleaving the other's chunks: the second writer is refused, and the first one's drive is
    left as it was."""
    path = tmp_path / "one.mcap"
    fix = GnssFix(Header("gnss", 0, 1_000, "gnss"), 49.0, 8.4, 100.0)
    with DriveWriter(path) as first:
        first.write(fix, 1_000)
        first.flush()
        size = path.stat().st_size
        assert being_written(path)
        with pytest.raises(ReplayError, match="is being written by another process"):
            DriveWriter(path)
        assert path.stat().st_size == size  # not emptied by the refused writer
    assert not being_written(path)
    assert [r.message.header.seq for r in DriveReader(path).messages()] == [0]
    with DriveWriter(path):  # finished: written anew
        pass
    assert list(DriveReader(path).messages()) == []
