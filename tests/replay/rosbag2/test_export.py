"""Detections exported as a ROS 2 bag (both storages, vision_msgs and autoware) and read back
with rosbags, from the bag's own message definitions, equal the DetectionLists."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcap.reader import SeekingReader
from rosbags.highlevel import AnyReader

import replay.rosbag2.exporter
from perception.msgs.jsonl import write_jsonl_line
from perception.msgs.types import Detection3D, DetectionList, Header
from replay.drive import DriveWriter
from replay.rosbag2 import Rosbag2Error, export_rosbag2
from replay.rosbag2.detections import AUTOWARE_LABELS, NODE_LABELS
from replay.rosbag2.exporter import ROS_TOPIC_MAX_CHARS

LISTS = [
    DetectionList(
        Header("detections", i, 1_317_000_000_000_000_000 + i * 100_000_000 + 7, "vehicle"),
        tuple(
            Detection3D(
                label, 0.9 - 0.1 * j, (10.0 + j, -2.5 * j, -0.8), (3.9, 1.6, 1.56), 0.3 * j - 1.0,
                sources=("lidar", "camera/front"), latitude_deg=49.0, longitude_deg=8.4,
            )
            for j, label in enumerate(["Car", "Pedestrian", "Cyclist", "bus"][: i + 1])
        ),
        latency_ns=40_000_000,
    )
    for i in range(4)
] + [DetectionList(Header("detections", 4, 1_317_000_000_400_000_000, "vehicle"), ())]  # fmt: skip


def later_frame(dl: DetectionList, seqs: int, ns: int) -> DetectionList:
    """`dl` as the frame `seqs` frames and `ns` later."""
    header = replace(dl.header, seq=dl.header.seq + seqs, stamp_ns=dl.header.stamp_ns + ns)
    return replace(dl, header=header)


def yaw_of(q) -> float:
    assert q.x == 0.0 and q.y == 0.0
    return 2.0 * math.atan2(q.z, q.w)


def same_angle(a: float, b: float) -> bool:
    return abs(math.remainder(a - b, 2 * math.pi)) < 1e-12


@pytest.fixture(params=["jsonl", "mcap"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "jsonl":
        path = tmp_path / "run.jsonl"
        with path.open("w") as f:
            for dl in LISTS:
                write_jsonl_line(f, dl)
    else:
        path = tmp_path / "run.mcap"
        with DriveWriter(path) as w:
            for dl in LISTS:
                w.write(dl, dl.header.stamp_ns + 1)
    return path


def read_back(bag: Path) -> list[tuple[str, str, int, Any]]:
    with AnyReader([bag]) as reader:
        return [
            (c.topic, c.msgtype, t, reader.deserialize(raw, c.msgtype))
            for c, t, raw in reader.messages()
        ]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_vision_msgs_round_trip(source: Path, tmp_path: Path, storage: str) -> None:
    out = tmp_path / "bag"
    stats = export_rosbag2(source, out, storage=storage)
    assert stats.messages == {"/detections": 5} and stats.detections == 10
    msgs = read_back(out)
    assert len(msgs) == len(LISTS)
    for (topic, msgtype, receive, msg), dl in zip(msgs, LISTS, strict=True):
        assert (topic, msgtype) == ("/detections", "vision_msgs/msg/Detection3DArray")
        # A run's lists are received at their stamps (it has no receive times), a drive's at
        # their log times.
        assert receive == dl.header.stamp_ns + (0 if source.suffix == ".jsonl" else 1)
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        assert stamp == dl.header.stamp_ns and msg.header.frame_id == "vehicle"
        assert len(msg.detections) == len(dl.detections)
        for d, det in zip(msg.detections, dl.detections, strict=True):
            (result,) = d.results
            assert result.hypothesis.class_id == det.label
            assert result.hypothesis.score == det.score
            p = d.bbox.center.position
            assert (p.x, p.y, p.z) == det.center
            assert (d.bbox.size.x, d.bbox.size.y, d.bbox.size.z) == det.size
            assert same_angle(yaw_of(d.bbox.center.orientation), det.yaw)
            assert result.pose.pose == d.bbox.center


def test_autoware_round_trip(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "bag"
    stats = export_rosbag2(source, out, storage="sqlite3", msgs="autoware")
    assert stats.msgtype == "autoware_perception_msgs/msg/DetectedObjects"
    msgs = read_back(out)
    for (_topic, msgtype, _t, msg), dl in zip(msgs, LISTS, strict=True):
        assert msgtype == "autoware_perception_msgs/msg/DetectedObjects"
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        assert stamp == dl.header.stamp_ns
        assert len(msg.objects) == len(dl.detections)
        for o, det in zip(msg.objects, dl.detections, strict=True):
            (cls,) = o.classification
            assert cls.label == AUTOWARE_LABELS[det.label]
            assert NODE_LABELS[cls.label] == det.label
            assert cls.probability == pytest.approx(det.score)  # float32
            assert o.existence_probability == pytest.approx(det.score)
            pose = o.kinematics.pose_with_covariance.pose
            assert (pose.position.x, pose.position.y, pose.position.z) == det.center
            assert same_angle(yaw_of(pose.orientation), det.yaw)
            dims = o.shape.dimensions
            assert (dims.x, dims.y, dims.z) == det.size and o.shape.type == 0
            assert not o.kinematics.has_twist
            np.testing.assert_array_equal(o.kinematics.pose_with_covariance.covariance, 0.0)


def test_export_refuses_an_existing_bag_and_sources_without_detections(tmp_path: Path) -> None:
    (tmp_path / "bag").mkdir()
    run = tmp_path / "run.jsonl"
    run.write_text("")
    with pytest.raises(Rosbag2Error, match="bag: exists; a bag is never overwritten"):
        export_rosbag2(run, tmp_path / "bag")
    # It said "folder run.jsonl does not exist", of a file that does.
    with pytest.raises(Rosbag2Error, match=r"run\.jsonl is a file, not a folder$"):
        export_rosbag2(run, run / "bag")
    with pytest.raises(Rosbag2Error, match=r"run\.jsonl: the run holds no DetectionLists"):
        export_rosbag2(run, tmp_path / "new")
    drive = tmp_path / "empty.mcap"
    with DriveWriter(drive):
        pass
    with pytest.raises(Rosbag2Error, match="the drive holds no DetectionLists"):
        export_rosbag2(drive, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag", "empty.mcap", "run.jsonl"]


def test_a_damaged_chunk_of_a_drive_costs_its_lists_only(tmp_path: Path) -> None:
    """A drive chunk whose bytes are damaged loses the DetectionLists it held: the others are
    exported, and the loss is counted."""
    drive = tmp_path / "run.mcap"
    with DriveWriter(drive, chunk_size=1024) as w:
        for k in range(6):
            for dl in LISTS:
                # Frames of their own: a frame twice is refused.
                later = later_frame(dl, k * len(LISTS), k * 1_000_000_000)
                w.write(later, later.header.stamp_ns)
    with drive.open("rb") as f:
        summary = SeekingReader(f).get_summary()
    assert summary is not None and len(summary.chunk_indexes) >= 3
    index = summary.chunk_indexes[1]
    data = bytearray(drive.read_bytes())
    at = index.chunk_start_offset + index.chunk_length // 2
    data[at : at + 32] = bytes(32)
    drive.write_bytes(bytes(data))
    stats = export_rosbag2(drive, tmp_path / "bag")
    assert 0 < stats.unreadable < 30
    assert (
        len(read_back(tmp_path / "bag")) == stats.messages["/detections"] == 30 - stats.unreadable
    )


@pytest.mark.parametrize("again", ["seq", "stamp"])
def test_a_frame_twice_on_a_topic_is_refused(source: Path, tmp_path: Path, again: str) -> None:
    """As `show` and `eval` refuse such a run (replay.runs.check_one_per_frame): a frame twice
    (runs concatenated) would be two messages of one sweep on the bag's topic."""
    dup = later_frame(LISTS[1], 0 if again == "seq" else 10, 0 if again == "stamp" else 1)
    if source.suffix == ".jsonl":
        with source.open("a") as f:
            write_jsonl_line(f, dup)
        first, second = "line 2", f"{source}:6"
    else:
        source = tmp_path / "dup.mcap"
        with DriveWriter(source) as w:
            for dl in LISTS:
                w.write(dl, dl.header.stamp_ns + 1)
            w.write(dup, LISTS[-1].header.stamp_ns + 2)
        first, second = "DetectionList 2", f"{source}: DetectionList 6"
    frame = f"seq {dup.header.seq}" if again == "seq" else f"stamp_ns {dup.header.stamp_ns}"
    with pytest.raises(Rosbag2Error) as error:
        export_rosbag2(source, tmp_path / "bag")
    assert str(error.value) == (
        f"{second}: frame header.{frame} again (first on {first}); a run holds one "
        "DetectionList per frame"
    )
    assert not (tmp_path / "bag").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bag")]


def test_each_topic_of_a_drive_holds_its_own_frames(tmp_path: Path) -> None:
    """Two nodes' DetectionLists of the same sweeps, recorded on two topics, are two runs:
    each becomes a topic of the bag."""
    drive = tmp_path / "two.mcap"
    with DriveWriter(drive) as w:
        for dl in LISTS:
            w.write(dl, dl.header.stamp_ns + 1, "detections")
            w.write(dl, dl.header.stamp_ns + 2, "detections_learned")
    stats = export_rosbag2(drive, tmp_path / "bag")
    assert stats.messages == {"/detections": 5, "/detections_learned": 5}


def _run_of_streams(path: Path, streams: list[str]) -> Path:
    with path.open("w") as f:
        for stream, dl in zip(streams, LISTS, strict=False):
            write_jsonl_line(f, replace(dl, header=replace(dl.header, stream=stream)))
    return path


def test_streams_become_valid_ros_topic_names(tmp_path: Path) -> None:
    """`a//b` and `/` were exported as the topics `/a//b` and `/`, and only a stream's first
    token was kept from starting with a digit: names `ros2 bag play` refuses."""
    run = _run_of_streams(tmp_path / "run.jsonl", ["a//b/9c", "/", "x-y/", "2d"])
    stats = export_rosbag2(run, tmp_path / "bag")
    assert stats.messages == {"/a/b/_9c": 1, "/_": 1, "/x_y": 1, "/_2d": 1}


def test_two_streams_of_one_ros_topic_are_refused(tmp_path: Path) -> None:
    """They were merged on one topic (or refused as one frame twice)."""
    run = _run_of_streams(tmp_path / "run.jsonl", ["det-1", "det_1"])
    with pytest.raises(Rosbag2Error) as error:
        export_rosbag2(run, tmp_path / "bag")
    assert str(error.value) == (
        f"{run}: 'det-1' and 'det_1' both become the ROS 2 topic /det_1 (letters, digits and _ "
        "only)"
    )
    assert not (tmp_path / "bag").exists()


def test_a_stream_longer_than_a_ros2_topic_takes_is_refused(tmp_path: Path) -> None:
    """rmw's RMW_TOPIC_MAX_NAME_LENGTH (255 - 8 characters of the fully qualified name, its
    leading / included): a longer stream was exported as it was, a topic rcl refuses."""
    assert ROS_TOPIC_MAX_CHARS == 247
    longest = "d" * (ROS_TOPIC_MAX_CHARS - 1)  # with its /: the longest ROS 2 takes
    stats = export_rosbag2(_run_of_streams(tmp_path / "ok.jsonl", [longest]), tmp_path / "ok")
    assert stats.messages == {f"/{longest}": 1}
    run = _run_of_streams(tmp_path / "run.jsonl", ["detections", longest + "d"])
    with pytest.raises(Rosbag2Error) as error:
        export_rosbag2(run, tmp_path / "bag")
    assert str(error.value) == (
        f"{run}: {longest + 'd'!r} becomes a ROS 2 topic of 248 characters; ROS 2 takes at most "
        "247 (RMW_TOPIC_MAX_NAME_LENGTH)"
    )
    assert not (tmp_path / "bag").exists()


def test_a_folder_made_at_out_while_the_bag_is_written_is_kept(
    monkeypatch: pytest.MonkeyPatch, source: Path, tmp_path: Path
) -> None:
    """`out` is checked, the bag written beside it, then renamed: an empty folder made at
    `out` between the last check and the rename was replaced (a rename replaces an empty
    folder). The rename itself is real: the folder appears just after the check."""
    out = tmp_path / "bag"
    checked = replay.rosbag2.exporter._check_out
    calls: list[Path] = []

    def then_made(path: Path) -> None:
        checked(path)
        calls.append(path)
        if len(calls) == 2:  # the check just before the rename
            path.mkdir()

    monkeypatch.setattr(replay.rosbag2.exporter, "_check_out", then_made)
    with pytest.raises(Rosbag2Error) as error:
        export_rosbag2(source, out)
    assert str(error.value) == (
        f"{out}: appeared while this command wrote it (another process writing the same "
        "folder?); not replaced, and what was written here is dropped"
    )
    assert len(calls) == 2 and list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag", source.name]
