"""Offline replay (replay.offline) through the node core: one recorded message that cannot be
read costs that message only, and is counted; the rest of the drive is replayed. (A broken
KITTI folder frame is a mistake in a dataset: it fails the run, tests/app/test_cli_mistakes.)"""

from __future__ import annotations

import itertools
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from perception.config import CameraModelConfig, NodeConfig
from perception.msgs.jsonl import read_jsonl
from perception.msgs.schema import DEFAULT_LIMITS
from perception.msgs.types import CameraFrame, Diagnostics, GnssFix, Header, RigMessage, TrackList
from perception.node import NodeCore
from perception.pipeline import Pipeline
from replay.datasets.kitti_object import KittiObjectFolder
from replay.drive import DriveReader, DriveWriter
from replay.errors import ReplayError
from replay.offline import Received, open_source, replay_to_file, run_core
from tests.replay.damage import damage_chunk, kitti_drive
from tests.replay.test_drive_limits import ROOMY, big_kitti_drive


def damaged_drive(kitti_dir: Path, path: Path, after: int = 5) -> Path:
    """The KITTI folder as a drive, with one damaged record (its companion is not JSON) on
    the lidar topic after the `after`-th message."""
    with DriveWriter(path) as w:
        for i, msg in enumerate(KittiObjectFolder(kitti_dir).messages()):
            w.write(msg, msg.header.stamp_ns)
            if i == after:
                base, companion = w._channels[("lidar/top", "LidarSweep")]
                t = msg.header.stamp_ns + 1
                w._writer.add_message(base, t, b"", t, 999_999)
                w._writer.add_message(companion, t, b"{not json", t, 999_999)
    return path


@pytest.fixture(scope="module")
def pipeline(yolox_path: Path) -> Pipeline:
    return Pipeline.from_config(CameraModelConfig(path=str(yolox_path), kind="yolox"))


def test_a_damaged_drive_record_is_skipped_and_counted(
    kitti_dir: Path, tmp_path: Path, pipeline: Pipeline
) -> None:
    drive = damaged_drive(kitti_dir, tmp_path / "damaged.mcap")
    out = tmp_path / "out.jsonl"
    summary = replay_to_file(drive, out, NodeConfig(), pipeline)
    assert summary.unreadable == 1 and summary.unwritten == 0
    assert summary.sweeps == 8 == len(list(read_jsonl(out)))
    assert summary.counters["received"] == 24


def test_a_damaged_chunk_costs_what_it_held_and_the_rest_is_replayed(
    kitti_dir: Path, tmp_path: Path, pipeline: Pipeline
) -> None:
    """A chunk whose bytes are damaged (it no longer decompresses) holds a frame's sweep and the
    next frame's camera image and rig: those are lost and counted, and every other sweep is
    answered. The sweep whose camera is lost is ready only once it times out, with the next
    sweep's bundle: the node takes the newer, as it does live when it falls behind."""
    drive = kitti_drive(kitti_dir, tmp_path / "drive.mcap")
    assert {"lidar/top", "camera/front", "rig"} <= damage_chunk(drive, 3)
    errors: list[ReplayError] = []
    sweeps = DriveReader(drive).messages(topics=["lidar/top"], on_error=errors.append)
    stamps = [r.message.header.stamp_ns for r in sweeps]
    assert len(stamps) == 7 and len(errors) == 1

    out = tmp_path / "out.jsonl"
    result = replay_to_file(drive, out, NodeConfig(), pipeline)
    assert result.unreadable == 3 and result.sweeps == 6
    assert result.counters["skipped_bundles"] == 1
    # The sweep after the one lost lost its camera.
    cameraless = next(b for a, b in itertools.pairwise(stamps) if b - a > 100_000_000)
    assert [dl.header.stamp_ns for dl in read_jsonl(out)] == [s for s in stamps if s != cameraless]


def test_kitti_object_frames_start_the_tracker_over(
    kitti_dir: Path, tmp_path: Path, pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    # The frames are unrelated scenes: the tracker must not chain detections from different
    # streets into tracks, so each frame starts it over and none lives long enough to be
    # confirmed (3 hits).
    out = tmp_path / "out.mcap"
    with caplog.at_level("WARNING", logger="perception.node.core"):
        summary = replay_to_file(kitti_dir, out, NodeConfig(), pipeline)
    # Their sensors are taken at the frames' rate: the gaps between frames are no outages
    # (KITTI object frames carry no GNSS, which alone is silent).
    assert [r.getMessage() for r in caplog.records] == ["gnss: no message since the node started"]
    diagnostics = [
        r.message for r in DriveReader(out).messages() if isinstance(r.message, Diagnostics)
    ]
    sensors = {s.stream: s for s in diagnostics[-1].sensors}
    assert sensors["lidar/top"].alive and sensors["lidar/top"].outages == 0
    assert sensors["camera/front"].alive and sensors["camera/front"].outages == 0
    assert summary.sweeps == 8 and summary.detections > 0
    lists = [r.message for r in DriveReader(out).messages() if isinstance(r.message, TrackList)]
    assert len(lists) == 8
    assert [t.resets for t in lists] == list(range(8))
    assert all(t.tracks == () for t in lists)
    assert summary.counters["tracker_resets"] == 7
    stamps = [t.header.stamp_ns for t in lists]
    assert min(b - a for a, b in itertools.pairwise(stamps)) > NodeConfig().tracking.max_gap_s * 1e9


def test_a_drive_without_a_rig_is_refused_not_replayed_to_nothing(
    kitti_dir: Path, tmp_path: Path, pipeline: Pipeline
) -> None:
    drive = tmp_path / "no-rig.mcap"
    with DriveWriter(drive) as w:
        for msg in KittiObjectFolder(kitti_dir).messages():
            if not isinstance(msg, RigMessage):
                w.write(msg, msg.header.stamp_ns)
    assert "rig" not in DriveReader(drive).topics() and DriveReader(drive).rig is None
    out = tmp_path / "out.jsonl"
    with pytest.raises(ReplayError) as info:
        replay_to_file(drive, out, NodeConfig(), pipeline)
    assert str(info.value) == (
        f"{drive}: the drive has no rig (calibration); give one with the config's `rig`"
    )
    assert not out.exists()
    # With the rig given, every sweep is replayed.
    rig = tmp_path / "rig.yaml"
    kitti_rig = next(
        m for m in KittiObjectFolder(kitti_dir).messages() if isinstance(m, RigMessage)
    )
    rig.write_text(yaml.safe_dump(kitti_rig.rig))
    summary = replay_to_file(drive, out, NodeConfig(rig=str(rig)), pipeline)
    assert summary.sweeps == 8


def test_realtime_pacing_skips_a_gap_over_a_minute_with_a_warning(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    """`replay --realtime` of a drive whose log times jump by 3e9 s slept for a century; the gap
    is skipped with one warning naming the drive, the gap and where, and the timing elsewhere
    (a gap of exactly the bound included) is kept. The sleeps are recorded, not slept."""
    from tests.replay.test_mcap_player import GAPPED_DUE_S, GAPPED_TIMES

    received = [
        Received("gnss", t, message=GnssFix(Header("gnss", i, t, "gnss"), 49.0, 8.4, 100.0))
        for i, t in enumerate(GAPPED_TIMES)
    ]
    sleeps: list[float] = []
    core = NodeCore(NodeConfig(), pipeline)
    with caplog.at_level(logging.WARNING, logger="replay.mcap_player"):
        list(run_core(core, received, speed=1.0, source="gapped.mcap", sleep=sleeps.append))
    assert len(sleeps) == 4
    for slept, due in zip(sleeps, GAPPED_DUE_S, strict=True):
        assert due - 1.0 < slept <= due
    warnings = [r.getMessage() for r in caplog.records if r.name == "replay.mcap_player"]
    assert warnings == [
        f"gapped.mcap: no message for {(GAPPED_TIMES[3] - GAPPED_TIMES[2]) / 1e9:.2f} s of log "
        f"time, from {GAPPED_TIMES[2]} to {GAPPED_TIMES[3]} ns (70.00 s after the first "
        "message); the gap is skipped, not waited through (pacing skips gaps over 60 s)"
    ]


def test_a_drive_whose_every_sweep_is_dropped_writes_no_output(
    kitti_dir: Path, tmp_path: Path, pipeline: Pipeline
) -> None:
    """Every message logged at 0 (as some recorders write), its stamp an hour on: each is
    dropped as a stamp fault. That wrote an empty file and said nothing was wrong (exit 0)."""
    drive = tmp_path / "zero.mcap"
    with DriveWriter(drive) as w:
        for msg in KittiObjectFolder(kitti_dir).messages():
            header = replace(msg.header, stamp_ns=msg.header.stamp_ns + 3600 * 10**9)
            w.write(replace(msg, header=header), 0)
    out = tmp_path / "out.jsonl"
    with pytest.raises(ReplayError) as info:
        replay_to_file(drive, out, NodeConfig(), pipeline)
    assert str(info.value).startswith(
        f"{drive}: none of its 8 sweeps gave a DetectionList (stamp_faults "
    )
    assert "was the drive recorded with another clock for its log times?" in str(info.value)
    assert not out.exists() and list(tmp_path.iterdir()) == [drive]


def test_a_replay_holds_a_drive_to_the_limits_it_runs_under(
    kitti_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """Without a config, a drive's messages are read with the limits it was recorded under (a
    12 MP camera of a node whose limits were raised for it) and the replay runs with them; with
    a config, with its limits, as the node configured so would receive them: a frame above them
    is skipped and counted, where it had been replayed as if the node had taken it."""
    drive = big_kitti_drive(kitti_dir, tmp_path / "big.mcap")
    opened = open_source(drive, NodeConfig(), topics_from_drive=True)
    assert opened.config.limits == ROOMY
    frames = [r for r in opened.received if isinstance(r.message, CameraFrame)]
    assert len(frames) == 8 and opened.skipped.count == 0
    with caplog.at_level(logging.WARNING):
        held = open_source(drive, NodeConfig())
        assert held.config.limits == DEFAULT_LIMITS
        assert not [r for r in held.received if isinstance(r.message, CameraFrame)]
    assert held.skipped.count == 8
    said = [r.getMessage() for r in caplog.records]
    # Not "the drive has none", nor a damaged message: why each frame is refused.
    assert (
        f"{drive}: not one of the 8 messages on camera/front (the config's "
        "inputs.camera_topics) can be read (the warnings of those skipped say why)"
    ) in said
    assert any(
        "above the limit of 10000000); the drive was recorded under limits that allow it" in m
        for m in said
    ), said


def test_a_drive_without_gnss_says_what_that_changes(
    kitti_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without fixes the tracker tracks in the vehicle frame: its velocities are relative to
    the moving vehicle (scored as the ground's, they read as the ego's speed), and nothing said
    so."""
    drive = tmp_path / "kitti.mcap"
    with DriveWriter(drive) as w:
        for msg in KittiObjectFolder(kitti_dir).messages():
            w.write(msg, msg.header.stamp_ns)
    assert "gnss" not in DriveReader(drive).topics()
    with caplog.at_level("WARNING", logger="replay.offline"):
        open_source(drive, NodeConfig())
    assert [r.getMessage() for r in caplog.records] == [
        f"{drive}: no GNSS fixes: detections are not placed on the map, and tracks are in the "
        "vehicle frame (their velocities relative to the moving vehicle)"
    ]
