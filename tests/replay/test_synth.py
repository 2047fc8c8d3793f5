"""The synthetic drive: deterministic, and its ground truth agrees with its sensors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from perception.messages import CameraFrame, GnssFix, LidarSweep
from replay.drive import DriveReader
from replay.synth import (
    LIDAR_HEIGHT_M,
    generate_drive,
    ground_truth_path,
    lidar_sweep,
    make_world,
    read_ground_truth,
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


def test_drive_contents(tmp_path: Path) -> None:
    stats = generate_drive(tmp_path / "d.mcap", seed=0, seconds=0.5)
    reader = DriveReader(stats.path)
    assert reader.rig is not None and "front" in reader.rig.cameras
    kinds = [type(r.message) for r in reader.messages()]
    assert kinds.count(LidarSweep) == kinds.count(CameraFrame) == kinds.count(GnssFix) == 5
    frames = read_ground_truth(ground_truth_path(stats.path))
    assert len(frames) == 5 and any(b.label == "Car" for b in frames[0].boxes)
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
