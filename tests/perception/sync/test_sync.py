from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from calibration import PinholeCamera, Rig, RigidTransform
from perception.config import SyncConfig
from perception.msgs.types import CameraFrame, GnssFix, Header, LidarSweep, RigMessage
from perception.sync import CollectorSync, NearestSync

MS = 1_000_000


def _rig(width: int = 64) -> Rig:
    cam = PinholeCamera(np.diag([50.0, 50.0, 1.0]), (), width, 48)
    return Rig(
        {"lidar": RigidTransform.identity(), "camera/front": RigidTransform.identity()},
        {"front": cam},
    )


def _cam(stamp: int, stream: str = "camera/front", seq: int = 0) -> CameraFrame:
    return CameraFrame(Header(stream, seq, stamp, stream), image=np.zeros((4, 4, 3), np.uint8))


def _sweep(stamp: int, seq: int = 0) -> LidarSweep:
    return LidarSweep(Header("lidar/top", seq, stamp, "lidar"), np.zeros((3, 4), np.float32))


def _sync(**kw) -> NearestSync:
    args: dict[str, Any] = {"window_ns": 50 * MS, "timeout_ns": 300 * MS, "default_rig": _rig()}
    args |= kw
    return NearestSync(("camera/front",), **args)


def test_nearest_camera_within_window_is_paired() -> None:
    s = _sync()
    s.add(_cam(90 * MS, seq=1), receive_ns=0)
    s.add(_cam(130 * MS, seq=2), receive_ns=0)
    s.add(_sweep(120 * MS), receive_ns=200 * MS)
    (b,) = s.poll(200 * MS)
    assert b.cameras["camera/front"].header.seq == 2
    assert b.skews_ns == {"camera/front": 10 * MS}
    assert b.missing == ()


def test_camera_used_at_most_once() -> None:
    s = _sync()
    s.add(_cam(100 * MS), receive_ns=0)
    s.add(_sweep(100 * MS, 0), receive_ns=0)
    s.add(_sweep(110 * MS, 1), receive_ns=0)
    assert len(s.poll(0)) == 1  # the second sweep waits for a camera of its own
    (b,) = s.poll(300 * MS)
    assert b.missing == ("camera/front",)


def test_timeout_emits_degraded_bundle() -> None:
    s = _sync()
    s.add(_cam(0), receive_ns=0)  # 100 ms away: outside the window
    s.add(_sweep(100 * MS), receive_ns=100 * MS)
    assert s.poll(399 * MS) == []
    (b,) = s.poll(400 * MS)
    assert b.missing == ("camera/front",) and b.cameras == {}
    assert b.sync_wait_ns == 300 * MS
    assert s.stats.degraded_bundles == 1


def test_rig_in_force_at_the_sweep_time() -> None:
    s = _sync(default_rig=None)
    s.add(_sweep(50 * MS), receive_ns=0)
    assert s.poll(10**12) == []
    assert s.stats.dropped_sweeps_no_rig == 1
    s.add(RigMessage(Header("rig", 0, 100 * MS, "vehicle"), _rig(64).to_dict()), receive_ns=0)
    s.add(RigMessage(Header("rig", 1, 200 * MS, "vehicle"), _rig(96).to_dict()), receive_ns=0)
    for t in (150, 250):
        s.add(_cam(t * MS), receive_ns=0)
        s.add(_sweep(t * MS), receive_ns=0)
    b1, b2 = s.poll(0)
    assert b1.rig.cameras["front"].width == 64
    assert b2.rig.cameras["front"].width == 96


def test_gnss_nearest_fix_attached() -> None:
    s = _sync()
    for t in (0, 100, 200):
        s.add(GnssFix(Header("gnss", t, t * MS, "gnss"), 49.0, 8.4, 100.0), receive_ns=0)
    s.add(_cam(140 * MS), receive_ns=0)
    s.add(_sweep(140 * MS), receive_ns=0)
    (b,) = s.poll(0)
    assert b.gnss is not None and b.gnss.header.stamp_ns == 100 * MS
    assert b.skews_ns["gnss"] == -40 * MS


def test_queues_are_bounded() -> None:
    s = _sync(queue_size=3)
    for i in range(10):
        s.add(_cam(i * 1000 * MS), receive_ns=0)
    assert s.stats.dropped_cameras_queue_full == 7
    with pytest.raises(TypeError):
        s.add(object(), receive_ns=0)  # type: ignore[arg-type]


def test_nearest_sync_is_the_collector_and_config_builds_it() -> None:
    assert NearestSync is CollectorSync
    cfg = SyncConfig(camera_offsets_ms={"camera/front": 60.0}, camera_windows_ms={"x": 5.0})
    s = CollectorSync.from_config(("camera/front",), cfg)
    assert s.offsets_ns == {"camera/front": 60 * MS}
    assert s.windows_ns == {"camera/front": 50 * MS}
    with pytest.raises(ValueError):
        CollectorSync.from_config(("camera/front",), SyncConfig(policy="nope"))


def test_offset_camera_matched_at_its_expected_time() -> None:
    s = _sync(window_ns=10 * MS, offsets_ns={"camera/front": 60 * MS})
    s.add(_cam(100 * MS, seq=1), receive_ns=0)  # at the sweep stamp: 60 ms from expected
    s.add(_sweep(100 * MS), receive_ns=0)
    assert s.poll(0) == []
    s.add(_cam(165 * MS, seq=2), receive_ns=0)
    (b,) = s.poll(0)
    assert b.cameras["camera/front"].header.seq == 2
    assert b.skews_ns["camera/front"] == 65 * MS


def test_late_member_dropped_and_counted() -> None:
    s = _sync()
    s.add(_sweep(100 * MS), receive_ns=0)
    (b,) = s.poll(300 * MS)
    assert b.missing == ("camera/front",)
    s.add(_cam(110 * MS), receive_ns=310 * MS)
    assert s.stats.late_messages == 1 and s.stats.per_stream_late == {"camera/front": 1}
    s.add(_sweep(100 * MS), receive_ns=320 * MS)  # the same sweep again
    assert s.stats.duplicate_messages == 1 and s.poll(10**12) == []


def test_complete_newer_bundle_not_held_by_incomplete_older_one() -> None:
    two = ("camera/front", "camera/rear")
    s = NearestSync(two, window_ns=20 * MS, timeout_ns=300 * MS, default_rig=_rig())
    s.add(_sweep(200 * MS, 1), receive_ns=0)  # out of order: the newer sweep first
    s.add(_sweep(100 * MS, 0), receive_ns=0)
    s.add(_cam(100 * MS, "camera/front"), receive_ns=0)
    s.add(_cam(200 * MS, "camera/front"), receive_ns=0)
    s.add(_cam(200 * MS, "camera/rear"), receive_ns=0)
    (b,) = s.poll(0)
    assert b.lidar.header.seq == 1 and b.missing == ()
    assert s.next_deadline_ns() == 300 * MS
    (old,) = s.poll(300 * MS)
    assert old.lidar.header.seq == 0 and old.missing == ("camera/rear",)


def test_node_approximate_time_policy_emits_the_policy_sets() -> None:
    from perception.config import SyncConfig
    from perception.sync import ApproximateTimePolicy, ApproximateTimeSync

    cfg = SyncConfig(policy="approximate_time", queue_size=5)
    sync = NearestSync.from_config(("camera/a", "camera/b"), cfg, default_rig=_rig())
    assert isinstance(sync, ApproximateTimeSync)
    reference = ApproximateTimePolicy(3, 5)
    rng = np.random.default_rng(3)
    expected: list[tuple[int, ...]] = []
    got = []
    for k in range(30):
        base = k * 100 * MS
        arrivals = [
            (0, _sweep(base + int(rng.integers(0, 3 * MS)), k)),
            (1, _cam(base + int(rng.integers(10, 30)) * MS, "camera/a", k)),
            (2, _cam(base + int(rng.integers(-20, 20)) * MS, "camera/b", k)),
        ]
        for index in rng.permutation(3):
            stream, msg = arrivals[index]
            expected += reference.add(stream, msg.header.stamp_ns)
            sync.add(msg, receive_ns=base)
            got += sync.poll(base)
    assert len(got) == len(expected) >= 25
    for bundle, stamps in zip(got, expected, strict=True):
        assert bundle.lidar.header.stamp_ns == stamps[0]
        assert bundle.cameras["camera/a"].header.stamp_ns == stamps[1]
        assert bundle.cameras["camera/b"].header.stamp_ns == stamps[2]
        assert bundle.missing == ()
