"""Cost of one tracker update with 50 moving objects (the target: <= 2 ms median).

Run: `python -m pytest benchmarks/test_tracker_bench.py --benchmark-enable`. The tracker is
warmed up (every object confirmed, its velocity settled) with 40 sweeps of a synthetic drive:
50 cars, pedestrians and cyclists moving at 0-20 m/s in lanes 3.5 m apart, detected with
noise, the ego driving among them with GNSS poses. Each round times one `update` with the
next sweep's detections and checks its result.
"""

from __future__ import annotations

import math

import numpy as np

from calibration import RigidTransform
from perception.msgs.types import Detection3D
from perception.pipeline.tracking import Tracker

OBJECTS = 50
WARMUP = 40
ROUNDS = 200
DT_NS = 100_000_000
LABELS = ("Car", "Car", "Car", "Pedestrian", "Cyclist")
SIZES = {"Car": (4.5, 1.8, 1.5), "Pedestrian": (0.8, 0.6, 1.7), "Cyclist": (1.8, 0.6, 1.7)}
SPEEDS = {"Car": 20.0, "Pedestrian": 1.5, "Cyclist": 6.0}


def _drive() -> list[tuple[int, list[Detection3D], RigidTransform]]:
    rng = np.random.default_rng(0)
    labels = [LABELS[i % len(LABELS)] for i in range(OBJECTS)]
    # Each object in a lane of its own, 3.5 m apart, half of them going each way: close
    # enough to share gates now and then, never crossing.
    start = np.column_stack([rng.uniform(-40.0, 40.0, OBJECTS), 3.5 * np.arange(OBJECTS) - 86.0])
    heading = np.where(np.arange(OBJECTS) % 2 == 0, 0.0, math.pi)
    speed = np.array([rng.uniform(0.0, SPEEDS[label]) for label in labels])
    velocity = speed[:, None] * np.column_stack([np.cos(heading), np.sin(heading)])
    sweeps = []
    for k in range(WARMUP + ROUNDS):
        t = k * DT_NS / 1e9
        pose = RigidTransform.from_yaw(0.05 * t, (10.0 * t, 0.0, 0.0))
        world = start + velocity * t + rng.normal(0.0, 0.1, start.shape)
        local = pose.inverse().apply(np.column_stack([world, np.full(OBJECTS, 0.8)]))
        yaw = heading - 0.05 * t + rng.normal(0.0, 0.05, OBJECTS)
        detections = [
            Detection3D(label, 0.9, (x, y, z), SIZES[label], a)
            for label, (x, y, z), a in zip(labels, local.tolist(), yaw.tolist(), strict=True)
        ]
        sweeps.append((k * DT_NS, detections, pose))
    return sweeps


def test_tracker_update_50_objects(benchmark) -> None:
    sweeps = _drive()
    tracker = Tracker()
    for stamp, detections, pose in sweeps[:WARMUP]:
        tracks = tracker.update(detections, stamp, pose)
    assert tracks is not None and [tr.track_id for tr in tracks] == list(range(1, OBJECTS + 1))
    upcoming = iter(sweeps[WARMUP:])

    def next_sweep():
        stamp, detections, pose = next(upcoming)
        return (detections, stamp, pose), {}

    def checked(detections, stamp, pose):
        tracks = tracker.update(detections, stamp, pose)
        assert tracks is not None and len(tracks) == OBJECTS
        return tracks

    tracks = benchmark.pedantic(checked, setup=next_sweep, rounds=ROUNDS, iterations=1)
    assert [tr.track_id for tr in tracks] == list(range(1, OBJECTS + 1))
    assert all(tr.misses == 0 for tr in tracks)
    assert tracker.resets == 0 and tracker.skipped_detections == 0
