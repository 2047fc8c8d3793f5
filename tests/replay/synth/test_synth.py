"""The synthetic drive: deterministic, and its ground truth agrees with its sensors."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

from perception.msgs.types import CameraFrame, GnssFix, LidarSweep
from replay.drive import SYNTHETIC_METADATA, DriveReader
from replay.synth.world import (
    CAMERA_NAME,
    LIDAR_HEIGHT_M,
    SynthObject,
    SynthWorld,
    calibration_caveat,
    generate_drive,
    ground_truth_path,
    lidar_sweep,
    make_world,
    read_drive_ground_truth,
    read_ground_truth,
    render_camera,
    synth_rig,
)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_gives_byte_identical_drive(tmp_path: Path) -> None:
    a = generate_drive(tmp_path / "a.mcap", seed=3, seconds=0.5)
    b = generate_drive(tmp_path / "b.mcap", seed=3, seconds=0.5)
    c = generate_drive(tmp_path / "c.mcap", seed=4, seconds=0.5)
    assert _sha(a.path) == _sha(b.path)
    assert _sha(a.ground_truth) == _sha(b.ground_truth)
    assert _sha(a.path) != _sha(c.path)


def test_binary_ground_truth_is_named_with_its_line(tmp_path: Path) -> None:
    stats = generate_drive(tmp_path / "d.mcap", seed=0, seconds=0.2)
    first = ground_truth_path(stats.path).read_bytes().splitlines(keepends=True)[0]
    bad = tmp_path / "bad.gt.jsonl"
    bad.write_bytes(first + b"\xff\xfe\x00garbage\n")
    with pytest.raises(ValueError) as info:
        read_ground_truth(bad)
    assert str(info.value) == f"{bad}:2: not UTF-8 text (byte 0xff at offset {len(first)})"


def test_blank_ground_truth_lines_are_skipped_and_counted_in_line_numbers(
    tmp_path: Path,
) -> None:
    """As the detections reader: a blank line (an editor's trailing one) holds no frame. It was
    "X.gt.jsonl:1: malformed ground truth (Expecting value...)"."""
    stats = generate_drive(tmp_path / "d.mcap", seed=0, seconds=0.2)
    lines = ground_truth_path(stats.path).read_bytes().splitlines(keepends=True)
    assert len(lines) == 2
    blank = tmp_path / "blank.gt.jsonl"
    blank.write_bytes(b"\n" + lines[0] + b"  \t\r\n" + lines[1] + b"\n\n")
    assert read_ground_truth(blank) == read_ground_truth(ground_truth_path(stats.path))
    # Errors still name the line of the file, blank lines counted.
    blank.write_bytes(b"\n" + lines[0] + b"\n" + b"[1]\n")
    with pytest.raises(ValueError, match=r"blank\.gt\.jsonl:4: malformed ground truth"):
        read_ground_truth(blank)


def test_ground_truth_integer_longer_than_python_converts_is_named(tmp_path: Path) -> None:
    digits = sys.get_int_max_str_digits()
    huge = tmp_path / "huge.gt.jsonl"
    huge.write_text('{"seq": 1' + "0" * digits + "}\n")
    with pytest.raises(ValueError) as info:
        read_ground_truth(huge)
    assert str(info.value) == (
        f"{huge}:1: malformed ground truth (an integer of more than {digits} digits)"
    )


def test_drive_contents(tmp_path: Path) -> None:
    stats = generate_drive(tmp_path / "d.mcap", seed=0, seconds=0.5)
    reader = DriveReader(stats.path)
    assert reader.rig is not None and "front" in reader.rig.cameras
    kinds = [type(r.message) for r in reader.messages()]
    assert kinds.count(LidarSweep) == kinds.count(CameraFrame) == kinds.count(GnssFix) == 5
    frames = read_ground_truth(ground_truth_path(stats.path))
    assert len(frames) == 5 and any(b.label == "Car" for b in frames[0].boxes)
    # The drive carries the same ground truth on its channel, at the sweep stamps.
    assert read_drive_ground_truth(stats.path) == frames
    sweep_stamps = [r.message.header.stamp_ns for r in reader.messages(topics=["lidar"])]
    assert [f.stamp_ns for f in frames] == sweep_stamps
    sweeps = [r.message for r in reader.messages() if isinstance(r.message, LidarSweep)]
    assert sweeps[0].point_time_offsets_ns is not None
    assert (
        0
        <= int(sweeps[0].point_time_offsets_ns.min())
        < int(sweeps[0].point_time_offsets_ns.max())
        < 100_000_000
    )


def test_lidar_points_hit_ground_truth_boxes() -> None:
    world = make_world(np.random.default_rng(0), 1.0)
    points, _offsets, ident = lidar_sweep(world, 0.0, np.random.default_rng(1))
    ground = points[ident < 0]
    # Ground returns lie on the plane LIDAR_HEIGHT_M below the sensor (range noise aside).
    assert np.median(np.abs(ground[:, 2] + LIDAR_HEIGHT_M)) < 0.05
    boxes = {b["id"]: b for b in world.boxes_in_vehicle(0.05)}
    inside = 0
    hits = np.flatnonzero(ident >= 0)
    for i in hits:
        b = boxes.get(int(ident[i]))
        if b is None:
            continue
        c, s = np.cos(b["yaw"]), np.sin(b["yaw"])
        d = points[i, :3] - np.array(b["center"])
        local = np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1], d[2]])
        # Points are in the sensor frame at their own time; 0.5 m covers motion within a sweep.
        inside += bool(np.all(np.abs(local) <= np.array(b["size"]) / 2 + 0.5))
    assert len(hits) > 1000
    assert inside / len(hits) > 0.95


def _car_object(ident: int, x: float, y: float) -> SynthObject:
    """A car as replay.synth.world builds them (a body and a narrower, shorter cabin box on it), at
    rest at (x, y) facing along the road."""
    length, width, height = 3.9, 1.6, 1.56
    body_h = 0.55 * height
    parts = (
        (0.0, 0.0, body_h / 2, length, width, body_h, (40, 40, 200)),
        (-0.1 * length, 0.0, body_h + (height - body_h) / 2, 0.55 * length, 0.9 * width,
         height - body_h, (70, 55, 45)),
    )  # fmt: skip
    return SynthObject(ident, "Car", (length, width, height), x, y, 0.0, 0.0, parts, 0.6)


def test_camera_visible_fraction_counts_occlusion() -> None:
    # A car 15 m ahead hides almost all of one 30 m ahead in the same lane; a car alone is seen
    # whole. (The silhouette of a car's overlapping faces must count each pixel once.)
    rig = synth_rig()
    camera = rig.cameras[CAMERA_NAME]
    vehicle_from_camera = rig.transform("camera/front", "vehicle").inverse()
    world = SynthWorld((_car_object(0, 15.0, 0.0), _car_object(1, 30.0, 0.0)), 1.0)
    _, boxes = render_camera(world, 0.0, camera, vehicle_from_camera, distort=False)  # type: ignore[arg-type]
    seen = {b.ident: b.visible for b in boxes}
    assert seen[0] > 0.95
    assert seen[1] < 0.2
    alone = SynthWorld((_car_object(1, 30.0, 0.0),), 1.0)
    _, boxes = render_camera(alone, 0.0, camera, vehicle_from_camera, distort=False)  # type: ignore[arg-type]
    assert boxes[0].visible > 0.95
    # Half hidden: shifted sideways by about half its width behind the near car.
    world = SynthWorld((_car_object(0, 15.0, 0.0), _car_object(1, 30.0, 1.6)), 1.0)
    _, boxes = render_camera(world, 0.0, camera, vehicle_from_camera, distort=False)  # type: ignore[arg-type]
    assert 0.2 < {b.ident: b.visible for b in boxes}[1] < 0.8


def test_a_damaged_world_record_loses_the_caveat_with_a_warning(
    synth_drive, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Which world a drive is of could not be read: the caveat went without a word."""
    data = synth_drive(0, 1.0).read_bytes()
    assert calibration_caveat(synth_drive(0, 1.0)) is not None
    name = data.index(SYNTHETIC_METADATA.encode())
    at = data.index(b"simple", name)
    damaged = tmp_path / "d.mcap"
    damaged.write_bytes(data[:at] + b"\x91" + data[at + 1 :])
    with caplog.at_level("WARNING", logger="replay.synth.world"):
        assert calibration_caveat(damaged) is None
    [warning] = [r.getMessage() for r in caplog.records if r.name == "replay.synth.world"]
    assert warning.startswith(f"{damaged}: ")
    assert warning.endswith("a calibration verdict over it comes without its world's caveat")
