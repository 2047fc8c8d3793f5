"""`perception import rosbag2` and `perception export rosbag2` end to end through `main`, and
each bad input as one line on stderr with exit code 2 (no drive or bag left behind)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

import replay.rosbag2.exporter
from app.cli import main
from perception.msgs.jsonl import read_jsonl, write_jsonl_line
from perception.msgs.types import CameraFrame, DetectionList, Header
from replay.drive import DriveReader
from tests.app.one_line import fails as _fails
from tests.replay.rosbag2.bags import (
    CAMERA_NS,
    CHATTER_TOPIC,
    INFO_TOPIC,
    LIDAR_TOPIC,
    BagWriter,
    camera_info,
    compressed,
    write_kitti_bag,
)
from tests.replay.test_drive_limits import ROOMY, _big_png

BIG_IMAGE = f"{CAMERA_NS}/image_raw/compressed"
RAW_IMAGE = f"{CAMERA_NS}/image_raw"


@pytest.fixture(scope="module")
def bag(kitti_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kitti_bag(kitti_dir, tmp_path_factory.mktemp("bags") / "kitti", frames=2).path


def test_import_replay_export(
    capsys: pytest.CaptureFixture[str], bag: Path, yolox_path: Path, tmp_path: Path
) -> None:
    drive = tmp_path / "drive.mcap"
    assert main(["import", "rosbag2", str(bag), "--out", str(drive), "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        out[0]
        == f"warning: skipped {CHATTER_TOPIC} (std_msgs/msg/String): no conversion for this type"
    )
    assert out[1].startswith(
        # Frames 000000 and 000003 come from different drives: the rig changes between them.
        f"perception import: {drive}: camera/front 2, gnss 2, lidar/top 2, rig 2 ("
    )
    run = tmp_path / "run.jsonl"
    assert main(["replay", str(drive), "--out", str(run), "--model", str(yolox_path),
                 "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    lists = list(read_jsonl(run))
    assert len(lists) == 2
    out_bag = tmp_path / "detections"
    argv = ["export", "rosbag2", str(run), "--out", str(out_bag), "--storage", "sqlite3",
            "--msgs", "autoware", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    (line,) = capsys.readouterr().out.splitlines()
    total = sum(len(dl.detections) for dl in lists)
    assert line.startswith(
        f"perception export: {out_bag}: autoware_perception_msgs/msg/DetectedObjects on "
        f"/detections 2 ({total} detections, sqlite3, "
    )
    with AnyReader([out_bag]) as reader:
        objects = [len(reader.deserialize(raw, c.msgtype).objects)  # type: ignore[attr-defined]
                   for c, _t, raw in reader.messages()]  # fmt: skip
    assert objects == [len(dl.detections) for dl in lists]


def test_a_bag_without_lidar(capsys, kitti_dir: Path, tmp_path: Path) -> None:
    bag = write_kitti_bag(kitti_dir, tmp_path / "bag", frames=1, skip=(LIDAR_TOPIC,)).path
    out = tmp_path / "d.mcap"
    err = _fails(capsys, "import", "rosbag2", str(bag), "--out", str(out), "--quiet")
    assert err.startswith(
        f"perception import: error: {bag}: no lidar topic (sensor_msgs/msg/PointCloud2) in the bag"
    )
    assert not out.exists()


def _custom_topic(writer: BagWriter, index: int, stamp: int) -> None:
    # A type the bag carries no definition of, as a recorder without it installed leaves.
    if index == 0:
        writer.connection("/custom", "my_msgs/msg/Foo", msgdef="", rihs01="RIHS01_" + "0" * 64)
    writer.write_raw("/custom", stamp, b"\x00\x01\x00\x00")


@pytest.mark.parametrize(
    ("yaml_text", "error"),
    [
        (f"topics:\n  {CHATTER_TOPIC}: lidar\n",
         f"topics.{CHATTER_TOPIC}: cannot convert std_msgs/msg/String to lidar (expects "
         "sensor_msgs/msg/PointCloud2)"),
        ("topics:\n  /custom: gnss\n",
         "topic /custom: message type my_msgs/msg/Foo is unknown"),
        ("topics: {/points: lidar\n", "--topics file is not valid YAML"),
        ("topics:\n  /kitti/velo/pointcloud: laser\n", "unknown role 'laser'"),
    ],
)  # fmt: skip
def test_bad_topic_mappings(
    capsys, kitti_dir: Path, tmp_path: Path, yaml_text: str, error: str
) -> None:
    bag = write_kitti_bag(kitti_dir, tmp_path / "bag", frames=1, extra=_custom_topic).path
    topics = tmp_path / "topics.yaml"
    topics.write_text(yaml_text)
    out = tmp_path / "d.mcap"
    err = _fails(capsys, "import", "rosbag2", str(bag), "--out", str(out), "--topics",
                 str(topics), "--quiet")  # fmt: skip
    assert error in err
    assert not out.exists()
    # Unmapped, the unknown type is listed and skipped.
    assert main(["import", "rosbag2", str(bag), "--out", str(out), "--quiet"]) == 0
    assert "warning: skipped /custom (my_msgs/msg/Foo): message type unknown" in (
        capsys.readouterr().out
    )


def test_missing_and_corrupt_bags(capsys, bag: Path, tmp_path: Path) -> None:
    out = tmp_path / "d.mcap"
    missing = tmp_path / "nope"
    err = _fails(capsys, "import", "rosbag2", str(missing), "--out", str(out))
    assert err == f"perception import: error: {missing}: ROS 2 bag does not exist"
    err = _fails(capsys, "import", "rosbag2", str(bag), "--out", str(out), "--topics",
                 str(tmp_path / "none.yaml"))  # fmt: skip
    assert "none.yaml: cannot read the --topics file" in err

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.yaml").write_text("rosbag2_bagfile_information: [1, 2\n")
    err = _fails(capsys, "import", "rosbag2", str(broken), "--out", str(out))
    assert err.startswith(f"perception import: error: {broken}: not a readable ROS 2 bag (")

    cut = tmp_path / "cut.mcap"
    data = (bag / "kitti.mcap").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    err = _fails(capsys, "import", "rosbag2", str(cut), "--out", str(out))
    assert err.startswith(f"perception import: error: {cut}: ")
    garbage = tmp_path / "garbage.db3"
    garbage.write_bytes(b"not sqlite at all" * 10)
    err = _fails(capsys, "import", "rosbag2", str(garbage), "--out", str(out))
    assert err.startswith(f"perception import: error: {garbage}: not a readable ROS 2 bag (")
    assert not out.exists()


def test_export_mistakes(capsys, bag: Path, tmp_path: Path) -> None:
    err = _fails(capsys, "export", "rosbag2", str(tmp_path / "run.jsonl"), "--out",
                 str(tmp_path / "b"))  # fmt: skip
    assert err.endswith("run.jsonl: does not exist; expected a drive (.mcap) or a run (.jsonl)")
    run = tmp_path / "run.jsonl"
    run.write_text('{"not": "a run"}\n')
    err = _fails(capsys, "export", "rosbag2", str(run), "--out", str(bag))
    assert "exists; a bag is never overwritten" in err
    err = _fails(capsys, "export", "rosbag2", str(run), "--out", str(tmp_path / "b"))
    assert err.startswith(f"perception export: error: {run}:1: ")
    assert not (tmp_path / "b").exists()


def test_export_of_a_stamp_past_2038_names_the_detection_list(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A ROS 2 header's seconds are an int32: a later stamp is refused up front, not a
    struct error from inside the bag writer blaming the output."""
    run = tmp_path / "run.jsonl"
    with run.open("w") as f:
        for seq, stamp_ns in enumerate((1_000_000_000, 4 * 10**18)):
            header = Header("detections", seq, stamp_ns, "vehicle")
            write_jsonl_line(f, DetectionList(header, ()))
    out = tmp_path / "b"
    err = _fails(capsys, "export", "rosbag2", str(run), "--out", str(out))
    assert err == (
        f"perception export: error: {run}: DetectionList 2 (seq 1): stamp 4000000000000000000 "
        "ns is past what a ROS 2 header holds (int32 seconds: 2038-01-19)"
    )
    assert not out.exists()


def test_export_refuses_a_run_holding_a_frame_twice(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """As `show` and `eval` refuse it, in their words: runs concatenated were exported as two
    messages of one sweep."""
    run = tmp_path / "run.jsonl"
    with run.open("w") as f:
        for seq in (0, 1, 0):
            header = Header("detections", seq, 1_000_000_000 + seq, "vehicle")
            write_jsonl_line(f, DetectionList(header, ()))
    out = tmp_path / "b"
    err = _fails(capsys, "export", "rosbag2", str(run), "--out", str(out))
    assert err == (
        f"perception export: error: {run}:3: frame header.seq 0 again (first on line 1); a run "
        "holds one DetectionList per frame"
    )
    assert not out.exists()
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    shown = _fails(capsys, "show", str(run), "--kitti", str(tmp_path), "--out", str(pictures))
    assert shown == err.replace("perception export:", "perception show:", 1)


def test_export_to_an_out_made_meanwhile_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An empty folder made at --out after its last check was replaced by the bag without a
    word (exit 0); refused as other outputs are (one line, exit 2), the folder left alone."""
    run = tmp_path / "run.jsonl"
    with run.open("w") as f:
        write_jsonl_line(f, DetectionList(Header("detections", 0, 1_000_000_000, "vehicle"), ()))
    out = tmp_path / "b"
    checked = replay.rosbag2.exporter._check_out

    def then_made(path: Path) -> None:
        checked(path)
        if any(tmp_path.glob(".b.*.part/b/metadata.yaml")):  # the bag is written: the last check
            path.mkdir()

    monkeypatch.setattr(replay.rosbag2.exporter, "_check_out", then_made)
    err = _fails(capsys, "export", "rosbag2", str(run), "--out", str(out), "--quiet")
    assert err == (
        f"perception export: error: {out}: appeared while this command wrote it (another "
        "process writing the same folder?); not replaced, and what was written here is dropped"
    )
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "run.jsonl"]


def test_import_of_a_camera_above_the_default_limits_takes_the_node_config(
    capsys: pytest.CaptureFixture[str], kitti_dir: Path, tmp_path: Path
) -> None:
    """A bag of a 12 MP camera could not be imported at all (every frame above the default
    `max_image_pixels`); with the node config whose `limits:` allow it, it is, and the drive
    keeps those limits for its readers."""
    png = _big_png()
    p = np.array([[2000.0, 0, 2000, 0], [0, 2000, 1500, 0], [0, 0, 1, 0]])

    def big_camera(w: BagWriter, _i: int, stamp: int) -> None:
        w.write(INFO_TOPIC, stamp + 2_000_000, camera_info(stamp, "camera_rect", p, 4000, 3000))
        w.write(BIG_IMAGE, stamp + 3_000_000, compressed(stamp, "camera_rect", png))

    bag = write_kitti_bag(
        kitti_dir, tmp_path / "big", frames=2, skip=(INFO_TOPIC, RAW_IMAGE), extra=big_camera
    ).path
    drive = tmp_path / "big.mcap"
    argv = ["import", "rosbag2", str(bag), "--out", str(drive), "--quiet"]
    err = _fails(capsys, *argv)
    assert "above the limit of 10000000" in err, err
    assert not drive.exists()
    config = tmp_path / "node.yaml"
    config.write_text(f"limits: {{max_image_pixels: {ROOMY.max_image_pixels}}}\n")
    assert main([*argv, "--config", str(config)]) == 0
    assert "camera/front 2," in capsys.readouterr().out
    reader = DriveReader(drive)
    assert reader.limits == ROOMY
    frames = [r.message for r in reader.messages() if isinstance(r.message, CameraFrame)]
    assert [f.data for f in frames] == [png, png]
    # A format --config does not apply to is told so, not ignored.
    err = _fails(capsys, *["import", "kitti-object", str(kitti_dir), "--out",
                          str(tmp_path / "k.mcap"), "--config", str(config)])  # fmt: skip
    assert "--config" in err, err
