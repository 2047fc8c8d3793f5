from __future__ import annotations

import numpy as np
import pytest

from calibration import PinholeCamera, Rig, RigidTransform
from perception.config import SyncConfig
from perception.errors import ConfigError
from perception.msgs.types import (
    CameraFrame,
    Diagnostics,
    GnssFix,
    Header,
    LidarSweep,
    Message,
    RigMessage,
    SyncedBundle,
)
from perception.sync import (
    AddResult,
    ApproximateTimeAdapter,
    ApproximateTimePolicy,
    Bundler,
    CollectorPolicy,
    Filed,
)

MS = 1_000_000
FRONT = ("camera/front",)


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


def _sync(
    cameras: tuple[str, ...] = FRONT,
    *,
    window_ns: int = 50 * MS,
    timeout_ns: int = 300 * MS,
    queue_size: int = 20,
    default_rig: Rig | None = None,
    offsets_ns: dict[str, int] | None = None,
) -> Bundler:
    policy = CollectorPolicy(
        cameras,
        window_ns=window_ns,
        timeout_ns=timeout_ns,
        queue_size=queue_size,
        offsets_ns=offsets_ns,
    )
    rig = _rig() if default_rig is None else default_rig
    return Bundler(cameras, policy, gnss_window_ns=500 * MS, queue_size=queue_size, default_rig=rig)


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
    s = Bundler.from_config(FRONT, SyncConfig())
    assert s.add(_sweep(50 * MS), receive_ns=0) == AddResult(Filed.ACCEPTED)
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


def test_the_same_rig_sent_again_is_the_rig_already_in_use() -> None:
    """A rig re-sent unchanged (a latched topic, a looped drive) keeps the rig in use, with the
    caches its cameras built; a changed one replaces it."""
    s = Bundler.from_config(FRONT, SyncConfig())
    for seq in range(3):
        doc = _rig(64).to_dict()
        s.add(RigMessage(Header("rig", seq, (100 + 100 * seq) * MS, "vehicle"), doc), 0)
    first = s.rig_at(100 * MS)
    assert first is not None
    assert s.rig_at(200 * MS) is first and s.rig_at(300 * MS) is first
    s.add(RigMessage(Header("rig", 3, 400 * MS, "vehicle"), _rig(96).to_dict()), 0)
    changed = s.rig_at(400 * MS)
    assert changed is not first and changed is not None
    assert changed.cameras["front"].width == 96
    assert s.rig_at(300 * MS) is first


def test_gnss_nearest_fix_attached() -> None:
    s = _sync()
    for t in (0, 100, 200):
        fix = GnssFix(Header("gnss", t, t * MS, "gnss"), 49.0, 8.4, 100.0)
        assert s.add(fix, receive_ns=0).filed is Filed.ACCEPTED
    s.add(_cam(140 * MS), receive_ns=0)
    s.add(_sweep(140 * MS), receive_ns=0)
    (b,) = s.poll(0)
    assert b.gnss is not None and b.gnss.header.stamp_ns == 100 * MS
    assert b.skews_ns["gnss"] == -40 * MS
    assert b.ego_pose is not None and b.ego_pose.stamp_ns == 140 * MS


def test_queues_are_bounded() -> None:
    s = _sync(queue_size=3)
    for i in range(10):
        assert s.add(_cam(i * 1000 * MS), receive_ns=0).filed is Filed.ACCEPTED
    assert s.stats.dropped_cameras_queue_full == 7
    for i in range(5):
        s.add(_sweep(i * 1000 * MS + 500 * MS, i), receive_ns=0)
    assert s.stats.dropped_sweeps_queue_full == 2


def test_config_builds_the_policy_it_names() -> None:
    cfg = SyncConfig(camera_offsets_ms={"camera/front": 60.0}, camera_windows_ms={"x": 5.0})
    s = Bundler.from_config(FRONT, cfg)
    assert isinstance(s.policy, CollectorPolicy)
    assert s.policy.offsets_ns == {"camera/front": 60 * MS}
    assert s.policy.windows_ns == {"camera/front": 50 * MS}
    assert s.policy.timeout_ns == 300 * MS
    at = Bundler.from_config(FRONT, SyncConfig(policy="approximate_time"))
    assert isinstance(at.policy, ApproximateTimeAdapter)
    with pytest.raises(ConfigError, match=r"sync\.policy: unknown policy 'nope' \(use 'collector'"):
        Bundler.from_config(FRONT, SyncConfig(policy="nope"))


def test_invalid_construction_is_refused() -> None:
    policy = CollectorPolicy(FRONT, window_ns=MS, timeout_ns=MS, queue_size=1)
    with pytest.raises(ValueError, match="differ from the policy's"):
        Bundler(("camera/rear",), policy, gnss_window_ns=0, queue_size=1)
    with pytest.raises(ValueError, match="queue_size"):
        Bundler(FRONT, policy, gnss_window_ns=0, queue_size=0)
    with pytest.raises(ValueError, match="must be > 0"):
        CollectorPolicy(FRONT, window_ns=0, timeout_ns=MS, queue_size=1)
    with pytest.raises(ValueError, match="camera windows"):
        CollectorPolicy(FRONT, window_ns=MS, timeout_ns=MS, queue_size=1, windows_ns={FRONT[0]: 0})


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
    assert s.add(_cam(110 * MS), receive_ns=310 * MS) == AddResult(Filed.LATE)
    assert s.stats.late_messages == 1 and s.stats.per_stream_late == {"camera/front": 1}
    # The same sweep again: its stamp was emitted already.
    assert s.add(_sweep(100 * MS), receive_ns=320 * MS) == AddResult(Filed.DUPLICATE)
    assert s.stats.duplicate_messages == 1 and s.poll(10**12) == []


def test_sweeps_closer_than_the_window_each_get_their_own_frame() -> None:
    """25 Hz under the default 50 ms window: a frame 40 ms from an emitted sweep, no nearer to
    it than the frame that sweep took, is the next sweep's (it was dropped as late, and each
    set then waited a period for its neighbour's frame, 40 ms off)."""
    s = _sync()
    out = []
    for k in range(8):
        stamp = k * 40 * MS
        assert s.add(_cam(stamp, seq=k), receive_ns=stamp).filed is Filed.ACCEPTED
        s.add(_sweep(stamp, seq=k), receive_ns=stamp)
        out += [(b, stamp) for b in s.poll(stamp)]
    assert [b.lidar.header.seq for b, _ in out] == list(range(8))
    assert all(b.cameras["camera/front"].header.seq == b.lidar.header.seq for b, _ in out)
    assert all(b.sync_wait_ns == 0 and b.skews_ns == {"camera/front": 0} for b, _ in out)


def test_at_25_hz_a_lost_frame_costs_its_own_sweep_only() -> None:
    """Once the sweep interval is known a set matches only within half of it: the sweep whose
    frame was lost does not take the next one's (which would shift every pairing after it)."""
    s = _sync(timeout_ns=100 * MS)
    out = []
    for k in range(10):
        stamp = k * 40 * MS
        if k != 5:
            s.add(_cam(stamp, seq=k), receive_ns=stamp)
        s.add(_sweep(stamp, seq=k), receive_ns=stamp)
        out += s.poll(stamp)
    out += s.flush()
    by_sweep = {b.lidar.header.seq: b for b in out}
    assert sorted(by_sweep) == list(range(10))
    assert by_sweep[5].missing == ("camera/front",)
    for k in set(range(10)) - {5}:
        assert by_sweep[k].cameras["camera/front"].header.seq == k, k


def test_one_odd_sweep_stamp_does_not_narrow_the_matching() -> None:
    """Two sweeps 1 ms apart (a replayed glitch) among 10 Hz ones: the interval is a median of
    several gaps, so the next sets still match their frames 30 ms off."""
    s = _sync(timeout_ns=50 * MS)
    stamps = [0, 1 * MS, 100 * MS, 200 * MS, 300 * MS, 400 * MS, 500 * MS]
    out = []
    for k, stamp in enumerate(stamps):
        s.add(_cam(stamp + 30 * MS, seq=k), receive_ns=stamp)
        s.add(_sweep(stamp, seq=k), receive_ns=stamp)
        out += s.poll(stamp + 60 * MS)  # past each set's timeout
    out += s.flush()
    full = {b.lidar.header.seq for b in out if not b.missing}
    assert {1, 2, 3, 4, 5, 6} <= full


def test_a_frame_farther_than_the_one_its_set_took_is_not_late() -> None:
    """A 30 Hz camera beside a 10 Hz lidar: the frames between sweeps are nobody's, not late
    for the sweep before them; one nearer than what an emitted set took is late."""
    s = _sync()
    s.add(_cam(100 * MS, seq=1), receive_ns=0)
    s.add(_sweep(100 * MS), receive_ns=0)
    (b,) = s.poll(0)
    assert b.cameras["camera/front"].header.seq == 1
    assert s.add(_cam(133 * MS, seq=2), receive_ns=0).filed is Filed.ACCEPTED
    degraded = _sync(timeout_ns=10 * MS)
    degraded.add(_sweep(100 * MS), receive_ns=0)
    (gone,) = degraded.poll(20 * MS)
    assert gone.missing == ("camera/front",)
    assert degraded.add(_cam(133 * MS, seq=2), receive_ns=0).filed is Filed.LATE


def test_add_result_for_each_outcome() -> None:
    s = _sync()
    assert s.add(_sweep(100 * MS), receive_ns=0) == AddResult(Filed.ACCEPTED)
    assert s.add(_sweep(100 * MS, seq=7), receive_ns=1) == AddResult(Filed.DUPLICATE)
    assert s.add(_cam(300 * MS), receive_ns=2).filed is Filed.ACCEPTED
    assert s.add(_cam(300 * MS), receive_ns=3) == AddResult(Filed.DUPLICATE)
    assert s.add(_cam(100 * MS, "camera/side"), receive_ns=4) == AddResult(Filed.UNKNOWN_STREAM)

    not_input = s.add(Diagnostics(Header("diagnostics", 3, 0, "")), receive_ns=5)
    assert not_input.filed is Filed.NOT_AN_INPUT
    assert not_input.reason == "diagnostics: Diagnostics is not a sensor input"

    doc = _rig().to_dict()
    doc["cameras"]["front"]["width"] = -1
    bad = s.add(RigMessage(Header("rig/main", 4, 50 * MS, "vehicle"), doc), receive_ns=6)
    assert bad.filed is Filed.BAD_RIG
    assert bad.reason.startswith("rig/main message 4: cameras.front")
    assert s.add(RigMessage(Header("rig/main", 5, 0, "v"), {"nope": 1}), 7).filed is Filed.BAD_RIG

    nan_fix = GnssFix(Header("gnss/main", 9, 100 * MS, "gnss"), float("nan"), 8.4, 100.0)
    bad_fix = s.add(nan_fix, receive_ns=8)
    assert bad_fix.filed is Filed.BAD_FIX
    assert bad_fix.reason.startswith("gnss/main: fix 9: invalid (lat, lon, alt) (nan, 8.4")
    spinning = GnssFix(Header("gnss/main", 10, 100 * MS, "gnss"), 49.0, 8.4, 0.0, heading_rad=1e400)
    assert s.add(spinning, receive_ns=9).filed is Filed.BAD_FIX

    (b,) = s.poll(300 * MS)  # the bad rigs and fixes changed nothing
    assert b.rig.cameras["front"].width == 64 and b.missing == ("camera/front",)
    assert b.gnss is None and b.ego_pose is None
    assert s.add(_cam(120 * MS), receive_ns=10) == AddResult(Filed.LATE)
    st = s.stats
    assert (st.duplicate_messages, st.unknown_streams, st.not_inputs) == (2, 1, 1)
    assert st.bad_rigs == 2 and st.bad_fixes == 2
    assert st.late_messages == 1 and st.bundles == 1


def test_complete_newer_bundle_not_held_by_incomplete_older_one() -> None:
    two = ("camera/front", "camera/rear")
    s = _sync(two, window_ns=20 * MS)
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


def _end_of_drive() -> list[tuple[int, Message]]:
    """Arrivals that leave three sweeps pending at the end: two degraded (the second received
    before the first, so due first), one complete that nobody polled for."""
    two = ("camera/front", "camera/rear")
    return [
        (0, _sweep(0, 0)),
        (10 * MS, _cam(0, two[0])),
        (20 * MS, _cam(0, two[1])),
        (100 * MS, _sweep(200 * MS, 2)),
        (110 * MS, _cam(200 * MS, two[1])),
        (150 * MS, _sweep(100 * MS, 1)),
        (160 * MS, _cam(100 * MS, two[0])),
        (170 * MS, _cam(300 * MS, two[0])),
        (180 * MS, _sweep(300 * MS, 3)),
        (190 * MS, _cam(300 * MS, two[1])),
    ]


def test_flush_gives_what_the_live_node_gives_after_the_timeout() -> None:
    two = ("camera/front", "camera/rear")
    live, offline = _sync(two), _sync(two)
    live_out: list[SyncedBundle] = []
    offline_out: list[SyncedBundle] = []
    for receive, msg in _end_of_drive():
        live.add(msg, receive)
        offline.add(msg, receive)
        if receive < 180 * MS:  # the last two arrivals are never polled for offline
            live_out += live.poll(receive)
            offline_out += offline.poll(receive)
    # The live node polls after the last arrival and then, input over, at each deadline.
    live_out += live.poll(190 * MS)
    while (deadline := live.next_deadline_ns()) is not None:
        live_out += live.poll(deadline)
    offline_out += offline.flush()

    def summary(bundles: list[SyncedBundle]) -> list[tuple[int, tuple[str, ...], int]]:
        return [(b.lidar.header.seq, b.missing, b.sync_wait_ns) for b in bundles]

    expected = [
        (0, (), 20 * MS),
        (3, (), 10 * MS),  # complete at the last arrival
        (2, ("camera/front",), 300 * MS),  # due at 400 ms
        (1, ("camera/rear",), 300 * MS),  # due at 450 ms
    ]
    assert summary(live_out) == summary(offline_out) == expected
    assert live.stats == offline.stats
    assert offline.stats.degraded_bundles == 2
    assert offline.next_deadline_ns() is None and offline.flush() == []


def test_flush_without_input_or_pending_is_empty() -> None:
    s = _sync()
    assert s.flush() == []
    s.add(_cam(0), receive_ns=0)
    s.add(_sweep(0), receive_ns=0)
    assert len(s.poll(0)) == 1 and s.flush() == []


def test_approximate_time_flush_hands_out_proved_sets_only() -> None:
    cfg = SyncConfig(policy="approximate_time", queue_size=5)
    s = Bundler.from_config(FRONT, cfg, default_rig=_rig())
    for k in range(3):
        s.add(_sweep(k * 100 * MS, k), receive_ns=k * 100 * MS)
        s.add(_cam(k * 100 * MS + 5 * MS, seq=k), receive_ns=k * 100 * MS + 20 * MS)
    assert s.next_deadline_ns() is None
    flushed = s.flush()
    # Sweep 2's set is never proved (no later message on any stream): never published.
    assert [b.lidar.header.seq for b in flushed] == [0, 1]
    assert all(b.missing == () for b in flushed)
    assert flushed[0].sync_wait_ns == 220 * MS  # proved before, handed out at the last arrival
    assert s.flush() == []


def test_approximate_time_counts_every_sweep_it_drops() -> None:
    # A camera that misses frames: ApproximateTime passes over the sweeps it cannot pair, and
    # the one unproved at the end of input is dropped with it. Every sweep is a bundle or a
    # counted drop.
    cfg = SyncConfig(policy="approximate_time", queue_size=5)
    s = Bundler.from_config(FRONT, cfg, default_rig=_rig())
    bundles = []
    sweeps = 8
    for k in range(sweeps):
        s.add(_sweep(k * 100 * MS, k), receive_ns=k * 100 * MS)
        if k % 3 == 2:
            s.add(_cam(k * 100 * MS + 5 * MS, seq=k), receive_ns=k * 100 * MS + 20 * MS)
        bundles += s.poll(k * 100 * MS + 20 * MS)
    bundles += s.flush()
    stats = s.stats
    assert stats.dropped_sweeps_unmatched >= sweeps - 3
    assert len(bundles) + stats.dropped_sweeps_unmatched + stats.dropped_sweeps_queue_full == sweeps


def test_approximate_time_drops_sets_wider_than_max_interval_as_it_goes() -> None:
    # Cameras 62 ms after their sweeps, max_interval_ms 10 and no camera_offsets_ms: no set is
    # narrow enough. The sweeps the policy deleted stayed held, uncounted, until a full queue
    # pushed them out ("queue full", the wrong reason) or, in a replay shorter than the queue,
    # the end of input published them alone: 1 DetectionList of 20 sweeps, nothing said.
    sweeps = 8
    for offsets, formed in (({}, 0), ({"camera/front": 62.0}, sweeps)):
        cfg = SyncConfig(policy="approximate_time", max_interval_ms=10.0, camera_offsets_ms=offsets)
        s = Bundler.from_config(FRONT, cfg, default_rig=_rig())
        bundles = []
        for k in range(sweeps):
            s.add(_sweep(k * 100 * MS, k), receive_ns=k * 100 * MS)
            s.add(_cam(k * 100 * MS + 62 * MS, seq=k), receive_ns=k * 100 * MS + 70 * MS)
            bundles += s.poll(k * 100 * MS + 70 * MS)
        stats = s.stats
        assert len(bundles) == formed
        assert stats.dropped_sweeps_queue_full == 0
        # Counted as they are dropped.
        assert stats.dropped_sweeps_unmatched == sweeps - formed
        bundles += s.flush()
        assert len(bundles) + s.stats.dropped_sweeps_unmatched == sweeps


def test_node_approximate_time_policy_emits_the_policy_sets() -> None:
    cfg = SyncConfig(policy="approximate_time", queue_size=5)
    sync = Bundler.from_config(("camera/a", "camera/b"), cfg, default_rig=_rig())
    assert isinstance(sync.policy, ApproximateTimeAdapter)
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
            assert sync.add(msg, receive_ns=base).filed is Filed.ACCEPTED
            got += sync.poll(base)
    assert len(got) == len(expected) >= 25
    for bundle, stamps in zip(got, expected, strict=True):
        assert bundle.lidar.header.stamp_ns == stamps[0]
        assert bundle.cameras["camera/a"].header.stamp_ns == stamps[1]
        assert bundle.cameras["camera/b"].header.stamp_ns == stamps[2]
        assert bundle.missing == ()
    assert sync.add(_cam(0, "camera/c"), receive_ns=0).filed is Filed.UNKNOWN_STREAM
    assert sync.add(_sweep(10**12, 99), receive_ns=0).filed is Filed.ACCEPTED
    assert sync.add(_sweep(10**12, 99), receive_ns=0).filed is Filed.DUPLICATE
    assert sync.stats.unknown_streams == 1 and sync.stats.duplicate_messages == 1
    assert sync.stats.bundles == len(got)
