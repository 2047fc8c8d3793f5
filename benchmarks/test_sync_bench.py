"""Synchroniser cost with 1 lidar + 6 cameras + GNSS (10 Hz lidar/cameras, 10 Hz GNSS).

Run: `python -m pytest benchmarks/test_sync_bench.py --benchmark-enable`. One round feeds 100
sweeps' worth of messages (800 messages, 100 bundles) in arrival order, polling after every
message as the node does; divide the round time by 800 for the cost per message and by 100 for
the cost per bundle (both printed by `test_sync_cost_per_message_and_bundle`). The collector and
ApproximateTime run through the Bundler (rig, GNSS, ego poses, SyncedBundle); the last benchmark
times the stamp-level ApproximateTime policy alone.
"""

from __future__ import annotations

import time

import numpy as np

from calibration import Rig
from perception.msgs.types import CameraFrame, GnssFix, Header, LidarSweep
from perception.sync import ApproximateTimeAdapter, ApproximateTimePolicy, Bundler, CollectorPolicy

MS = 1_000_000
CAMERAS = tuple(f"camera/{i}" for i in range(6))
SWEEPS = 100


def _messages() -> list[tuple[int, CameraFrame | LidarSweep | GnssFix]]:
    rng = np.random.default_rng(0)
    points = np.zeros((1, 4), np.float32)
    image = np.zeros((1, 1, 3), np.uint8)
    out: list[tuple[int, CameraFrame | LidarSweep | GnssFix]] = []
    for k in range(SWEEPS):
        t = k * 100 * MS
        out.append((t + 105 * MS, LidarSweep(Header("lidar", k, t, "lidar"), points)))
        for c in CAMERAS:
            stamp = t + 50 * MS + int(rng.integers(-5 * MS, 5 * MS))
            out.append((stamp + 20 * MS, CameraFrame(Header(c, k, stamp, c), image=image)))
        fix = GnssFix(Header("gnss", k, t + 30 * MS, "gnss"), 49.0, 8.4, 100.0)
        out.append((t + 35 * MS, fix))
    out.sort(key=lambda e: e[0])
    return out


MESSAGES = _messages()
# The bundler only passes the rig through: an empty one stands for any.
RIG = Rig()


def _run_collector() -> int:
    policy = CollectorPolicy(
        CAMERAS, window_ns=20 * MS, timeout_ns=150 * MS, queue_size=20,
        offsets_ns=dict.fromkeys(CAMERAS, 50 * MS),
    )  # fmt: skip
    sync = Bundler(CAMERAS, policy, gnss_window_ns=500 * MS, queue_size=20, default_rig=RIG)
    n = 0
    for receive, msg in MESSAGES:
        sync.add(msg, receive_ns=receive)
        n += len(sync.poll(receive))
    return n


def _run_approximate_bundler() -> int:
    policy = ApproximateTimeAdapter(
        CAMERAS, queue_size=10, offsets_ns=dict.fromkeys(CAMERAS, 50 * MS)
    )
    sync = Bundler(CAMERAS, policy, gnss_window_ns=500 * MS, queue_size=10, default_rig=RIG)
    n = 0
    for receive, msg in MESSAGES:
        sync.add(msg, receive_ns=receive)
        n += len(sync.poll(receive))
    return n


def _run_approximate() -> int:
    policy = ApproximateTimePolicy(8, queue_size=10)
    index = {"lidar": 0, **{c: i + 1 for i, c in enumerate(CAMERAS)}, "gnss": 7}
    return sum(len(policy.add(index[m.header.stream], m.header.stamp_ns)) for _, m in MESSAGES)


def test_collector_sync_800_messages(benchmark) -> None:
    assert benchmark(_run_collector) == SWEEPS


def test_approximate_time_bundler_800_messages(benchmark) -> None:
    # The last sweep's set is never proved: no later message follows it.
    assert benchmark(_run_approximate_bundler) == SWEEPS - 1


def test_approximate_time_800_stamps(benchmark) -> None:
    assert benchmark(_run_approximate) >= SWEEPS - 2


def test_sync_cost_per_message_and_bundle() -> None:
    runs = (
        ("collector", _run_collector),
        ("approximate_time bundler", _run_approximate_bundler),
        ("approximate_time stamps", _run_approximate),
    )
    for name, run in runs:
        best = min(_timed(run) for _ in range(5))
        per_msg_us = best / len(MESSAGES) * 1e6
        per_bundle_us = best / SWEEPS * 1e6
        print(f"\n{name}: {per_msg_us:.1f} us/message, {per_bundle_us:.1f} us/bundle")
        assert per_bundle_us < 10_000  # a generous bound: sync must be far below the 100 ms budget


def _timed(run: object) -> float:
    t0 = time.perf_counter()
    run()  # type: ignore[operator]
    return time.perf_counter() - t0
