"""Sensor liveness and what the synchroniser does with it: a dead camera is not waited for,
full bundles resume when it returns, replay's polls (next_deadline_ns) meet the live node's;
queues bounded in bytes; a clock jump forgets the old timeline."""

from __future__ import annotations

import numpy as np
import pytest

from calibration import PinholeCamera, Rig, RigidTransform
from perception.config import SyncConfig
from perception.msgs.types import CameraFrame, GnssFix, Header, LidarSweep, RigMessage
from perception.sync import (
    ApproximateTimeAdapter,
    ApproximateTimePolicy,
    Bundler,
    CollectorPolicy,
    Filed,
)
from perception.sync.liveness import Liveness

Input = CameraFrame | LidarSweep
MS = 1_000_000
PERIOD = 100 * MS
CAMERAS = ("camera/front", "camera/rear")


def _rig() -> Rig:
    cam = PinholeCamera(np.diag([50.0, 50.0, 1.0]), (), 64, 48)
    frames = {"lidar": RigidTransform.identity()}
    frames.update({c: RigidTransform.identity() for c in CAMERAS})
    return Rig(frames, {"front": cam, "rear": cam})


def _cam(stamp: int, stream: str = "camera/front", *, pixels: int = 4) -> CameraFrame:
    image = np.zeros((pixels, pixels, 3), np.uint8)
    return CameraFrame(Header(stream, stamp // PERIOD, stamp, stream), image=image)


def _sweep(stamp: int, points: int = 3) -> LidarSweep:
    header = Header("lidar/top", stamp // PERIOD, stamp, "lidar")
    return LidarSweep(header, np.zeros((points, 4), np.float32))


def _liveness(cameras: tuple[str, ...] = CAMERAS, periods: float = 3.0) -> Liveness:
    return Liveness.for_streams(("lidar/top", *cameras, "gnss"), {}, 10.0, periods)


def _collector(
    cameras: tuple[str, ...] = CAMERAS,
    liveness: Liveness | None = None,
    queue_bytes: int | None = None,
) -> Bundler:
    policy = CollectorPolicy(
        cameras,
        window_ns=50 * MS,
        timeout_ns=300 * MS,
        queue_size=20,
        liveness=liveness,
        queue_bytes=queue_bytes,
    )
    return Bundler(
        cameras, policy, gnss_window_ns=0, queue_size=20, default_rig=_rig(), liveness=liveness
    )


# -- Liveness ------------------------------------------------------------------------------------


def test_liveness_from_receive_times() -> None:
    live = Liveness({"camera/front": 10.0, "gnss": 1.0}, dead_after_periods=3)
    assert live.death_ns("camera/front") is None  # nothing received yet
    assert live.overall(0) == "stale"
    live.seen("rig", 0)  # any message starts the clock for the streams never heard from
    assert live.death_ns("camera/front") == 300 * MS and live.death_ns("gnss") == 3_000 * MS
    assert live.death_ns("rig") is None and not live.dead("rig", 10**15)  # not monitored
    for k in range(10):
        live.seen("camera/front", k * PERIOD)
    assert not live.dead("camera/front", 1_199 * MS) and live.dead("camera/front", 1_200 * MS)
    assert live.rate_hz("camera/front", 900 * MS) == pytest.approx(10.0)
    assert live.overall(900 * MS) == "degraded"  # gnss never heard from
    live.seen("gnss", 900 * MS)
    assert live.overall(900 * MS) == "ok"
    assert live.overall(1_500 * MS) == "degraded"
    assert live.overall(3_900 * MS) == "stale"
    front, gnss = live.status(1_500 * MS)
    assert (front.stream, front.alive, front.rate_hz, front.messages) == (
        "camera/front", False, 0.0, 10)  # fmt: skip
    assert front.last_receive_ns == 900 * MS and front.nominal_rate_hz == 10.0
    assert gnss.alive and gnss.last_receive_ns == 900 * MS
    fresh = Liveness({"gnss": 1.0}, 3)
    fresh.seen("lidar/top", 0)
    # Never heard from: not alive, though not dead yet (it would still be waited for).
    (never,) = fresh.status(1_000 * MS)
    assert not never.alive and not fresh.dead("gnss", 1_000 * MS) and fresh.dead("gnss", 3 * 10**9)
    live.seen("camera/front", 5_000 * MS)  # back: an outage
    assert live.status(5_000 * MS)[0].outages == 1 and not live.dead("camera/front", 5_000 * MS)


def test_a_sensor_slower_than_its_nominal_rate_is_judged_on_its_measured_period() -> None:
    live = Liveness({"camera/front": 10.0}, dead_after_periods=3)
    for k in range(5):
        live.seen("camera/front", k * 400 * MS)  # 2.5 Hz, not 10
    # Dead after 3 measured periods (1.2 s), not 3 nominal ones (0.3 s).
    assert live.death_ns("camera/front") == 1_600 * MS + 1_200 * MS
    assert live.rate_hz("camera/front", 1_700 * MS) == pytest.approx(2.5)


def test_liveness_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Liveness({"a": 0.0}, 3)
    with pytest.raises(ValueError):
        Liveness({"a": 1.0}, 0)


# -- the collector with a dead camera ----------------------------------------------------------


def _run(sync: Bundler, events: list[tuple[int, Input]], until_ns: int, poll_ns: int = 10 * MS):
    """Feeds (receive_ns, message) in order and polls every `poll_ns` in between, as the live
    receiver does; returns (bundle, when it came out)."""
    out = []
    now = 0
    events = sorted(events, key=lambda e: e[0])
    i = 0
    while now <= until_ns:
        while i < len(events) and events[i][0] <= now:
            t, msg = events[i]
            sync.add(msg, receive_ns=t)
            out += [(b, t) for b in sync.poll(t)]
            i += 1
        out += [(b, now) for b in sync.poll(now)]
        now += poll_ns
    return out


def _drive(seconds: float, *, rear_dead: tuple[int, int] | None = None, delay: int = 5 * MS):
    """Sweeps and two cameras at 10 Hz, each message received `delay` after its stamp; the rear
    camera silent within `rear_dead` (ns)."""
    events: list[tuple[int, Input]] = []
    for k in range(int(seconds * 10)):
        t = k * PERIOD
        events.append((t + delay, _sweep(t)))
        events.append((t + delay + MS, _cam(t, "camera/front")))
        if rear_dead is None or not rear_dead[0] <= t < rear_dead[1]:
            events.append((t + delay + 2 * MS, _cam(t, "camera/rear")))
    return events


def test_a_dead_camera_is_not_waited_for_and_full_bundles_resume() -> None:
    dead_from, back_at = 2_000 * MS, 5_000 * MS
    sync = _collector(liveness=_liveness())
    out = _run(sync, _drive(7.0, rear_dead=(dead_from, back_at)), 7_500 * MS)
    assert len(out) == 70
    waits = {b.lidar.header.stamp_ns: (t - b.lidar.header.stamp_ns, b.missing) for b, t in out}
    # Before: complete, out when the rear frame arrives.
    assert waits[1_900 * MS] == (7 * MS, ())
    # The rear camera's last frame was received at 1.907 s: dead at 2.207 s. Sweeps 2.0 and
    # 2.1 wait for it until then (not for the 300 ms timeout); from 2.2 s on none waits.
    assert waits[2_000 * MS] == (210 * MS, ("camera/rear",))
    assert waits[2_100 * MS] == (110 * MS, ("camera/rear",))
    for k in range(22, 50):
        wait, missing = waits[k * PERIOD]
        assert missing == ("camera/rear",) and wait <= 10 * MS, (k, wait)
    # Back at 5.0 s: its first frame arrives 1 ms after the front one completed sweep 5.0's
    # set (it is late for it); from the next sweep on every set waits for it again.
    assert waits[5_000 * MS] == (6 * MS, ("camera/rear",))
    for k in range(51, 70):
        assert waits[k * PERIOD] == (7 * MS, ()), k
    assert sync.stats.dead_camera_bundles == 31 and sync.stats.degraded_bundles == 31
    assert sync.stats.late_messages == 1
    assert sync.liveness is not None
    assert sync.liveness.status(5_100 * MS)[2].outages == 1


def test_without_liveness_a_dead_camera_costs_the_timeout() -> None:
    sync = _collector()
    out = _run(sync, _drive(4.0, rear_dead=(2_000 * MS, 10_000 * MS)), 4_500 * MS)
    late = [t - b.lidar.header.stamp_ns for b, t in out if b.missing]
    assert late and min(late) >= 300 * MS


def test_replay_polls_meet_the_live_polls_when_a_camera_dies() -> None:
    """`next_deadline_ns` includes the moment a waited-for camera is declared dead, so a
    replay that polls only at deadlines (NodeCore.idle_polls) emits what a live receiver
    polling every 10 ms emits, at the same moments."""
    events = _drive(4.0, rear_dead=(1_000 * MS, 3_000 * MS))
    live = _collector(liveness=_liveness())
    live_out = [(b.lidar.header.stamp_ns, b.missing, t) for b, t in _run(live, events, 4_500 * MS)]
    replay = _collector(liveness=_liveness())
    replay_out = []
    events.sort(key=lambda e: e[0])
    for i, (t, msg) in enumerate(events):
        replay.add(msg, receive_ns=t)
        replay_out += [(b.lidar.header.stamp_ns, b.missing, t) for b in replay.poll(t)]
        nxt = events[i + 1][0] if i + 1 < len(events) else None
        last = t
        while (deadline := replay.next_deadline_ns()) is not None:
            poll = last + max(1, -(-(deadline - last) // (10 * MS))) * 10 * MS
            if nxt is not None and poll >= nxt:
                break
            replay_out += [(b.lidar.header.stamp_ns, b.missing, poll) for b in replay.poll(poll)]
            last = poll
    # The live loop polls on a fixed grid, the replay on the grid after each message: the
    # same bundles, each out within one poll period of the other.
    assert [x[:2] for x in live_out] == [x[:2] for x in replay_out]
    assert all(abs(a[2] - b[2]) <= 10 * MS for a, b in zip(live_out, replay_out, strict=True))


def test_a_camera_never_heard_from_is_waited_for_only_at_first() -> None:
    sync = _collector(("camera/front",), liveness=_liveness(("camera/front",)))
    out = _run(sync, [(k * PERIOD, _sweep(k * PERIOD)) for k in range(10)], 1_500 * MS)
    waits = [t - b.lidar.header.stamp_ns for b, t in out]
    # The first message starts the clock: the camera is dead 300 ms later.
    assert waits[:3] == [300 * MS, 200 * MS, 100 * MS] and max(waits[3:]) == 0


# -- ApproximateTime with a dead camera ---------------------------------------------------------


def test_approximate_time_rebuilds_over_the_live_cameras() -> None:
    live = _liveness()
    cfg = SyncConfig(policy="approximate_time", queue_size=10)
    sync = Bundler.from_config(CAMERAS, cfg, default_rig=_rig(), liveness=live)
    assert isinstance(sync.policy, ApproximateTimeAdapter)
    out = _run(sync, _drive(6.0, rear_dead=(2_000 * MS, 4_000 * MS)), 6_500 * MS)
    by_stamp = {b.lidar.header.stamp_ns: (b, t) for b, t in out}
    # Before and after: full sets (proved once the next messages arrive).
    assert by_stamp[1_000 * MS][0].missing == () and by_stamp[5_000 * MS][0].missing == ()
    # While the rear camera is dead, sets of the sweep and the front camera, still proved by
    # message_filters' rule over those two: the front camera's next frame.
    for k in range(24, 39):
        bundle, t = by_stamp[k * PERIOD]
        assert bundle.missing == ("camera/rear",), k
        assert "camera/front" in bundle.cameras and t - k * PERIOD <= 110 * MS, k
    assert len(out) >= 55


def test_approximate_time_with_every_camera_dead_sends_each_sweep_at_once() -> None:
    live = _liveness(("camera/front",))
    cfg = SyncConfig(policy="approximate_time", queue_size=10)
    sync = Bundler.from_config(("camera/front",), cfg, default_rig=_rig(), liveness=live)
    events: list[tuple[int, Input]] = [(0, _cam(0)), (1 * MS, _sweep(0))]
    events += [(k * PERIOD + MS, _sweep(k * PERIOD)) for k in range(1, 20)]
    out = _run(sync, events, 2_500 * MS)
    waits = {b.lidar.header.stamp_ns: t - b.lidar.header.stamp_ns for b, t in out}
    # Dead at 0.3 s: sweeps 1 and 2 (held) go out then, the rest as they arrive.
    assert waits[1 * PERIOD] == 200 * MS and waits[2 * PERIOD] == 100 * MS
    assert all(waits[k * PERIOD] == 1 * MS for k in range(4, 20))


# -- byte bounds --------------------------------------------------------------------------------


def test_camera_queue_is_bounded_in_bytes() -> None:
    frame_bytes = 100 * 100 * 3
    sync = _collector(("camera/front",), queue_bytes=5 * frame_bytes)
    for k in range(12):  # frames no sweep claims
        result = sync.add(_cam(k * PERIOD, pixels=100), receive_ns=k * PERIOD)
        assert result.filed is Filed.ACCEPTED
    assert sync.stats.dropped_cameras_queue_full == 7
    # The newest five are kept: a sweep at the newest frame still gets it.
    sync.add(_sweep(11 * PERIOD), receive_ns=11 * PERIOD)
    (bundle,) = sync.poll(11 * PERIOD)
    assert bundle.missing == ()


def test_pending_sweeps_are_bounded_in_bytes_but_the_newest_is_kept() -> None:
    sweep_bytes = 1_000 * 16
    sync = _collector(("camera/front",), queue_bytes=sweep_bytes // 2)  # less than one sweep
    for k in range(4):
        sync.add(_sweep(k * PERIOD, points=1_000), receive_ns=k * PERIOD)
    assert sync.stats.dropped_sweeps_queue_full == 3
    sync.add(_cam(3 * PERIOD), receive_ns=3 * PERIOD)
    (bundle,) = sync.poll(3 * PERIOD)
    assert bundle.lidar.header.stamp_ns == 3 * PERIOD


def test_approximate_time_queues_are_bounded_in_bytes() -> None:
    frame_bytes = 100 * 100 * 3
    cfg = SyncConfig(policy="approximate_time", queue_size=10, queue_bytes=3 * frame_bytes)
    sync = Bundler.from_config(("camera/front",), cfg, default_rig=_rig())
    for k in range(8):
        sync.add(_cam(k * PERIOD, pixels=100), receive_ns=k * PERIOD)
    assert sync.stats.dropped_cameras_queue_full == 5


# -- clock jumps --------------------------------------------------------------------------------


def test_a_lidar_clock_jump_forgets_the_old_timeline() -> None:
    sync = _collector(("camera/front",))
    for k in range(5):
        sync.add(_cam(k * PERIOD), receive_ns=k * PERIOD)
        sync.add(_sweep(k * PERIOD), receive_ns=k * PERIOD)
        assert len(sync.poll(k * PERIOD)) == 1
    sync.add(_sweep(5 * PERIOD), receive_ns=5 * PERIOD)  # pending: its camera is late
    # A rig on the old timeline, in force from 0.45 s only.
    rig_doc = _rig().to_dict()
    sync.add(RigMessage(Header("rig", 1, 450 * MS, "vehicle"), rig_doc), receive_ns=5 * PERIOD)
    # The sensor clocks step back 5 s (the core confirmed it): sweep 0.0 s is new, not a
    # duplicate of the old one; its frame is not late.
    jumped = _sweep(0)
    assert sync.clock_jump(jumped) == 1
    assert sync.stats.dropped_sweeps_clock_reset == 1
    assert sync.clock_jump(_cam(0)) == 0
    assert sync.add(jumped, receive_ns=6 * PERIOD).filed is Filed.ACCEPTED
    assert sync.add(_cam(0), receive_ns=6 * PERIOD).filed is Filed.ACCEPTED
    (bundle,) = sync.poll(6 * PERIOD)
    # The rig received last holds from the beginning: sweep 0 of the new timeline has one.
    assert bundle.lidar is jumped and bundle.missing == ()
    assert sync.next_deadline_ns() is None


def test_a_camera_clock_jump_drops_its_buffered_frames() -> None:
    sync = _collector(("camera/front",))
    for k in range(3):
        sync.add(_cam(k * PERIOD), receive_ns=k * PERIOD)
    assert sync.clock_jump(_cam(0)) == 3
    assert sync.stats.dropped_cameras_clock_reset == 3
    fix = GnssFix(Header("gnss", 0, 0, "gnss"), 49.0, 8.4, 100.0)
    sync.add(fix, receive_ns=0)
    assert sync.clock_jump(fix) == 1 and sync.stats.dropped_fixes_clock_reset == 1


def test_approximate_time_resets_on_a_clock_jump() -> None:
    cfg = SyncConfig(policy="approximate_time", queue_size=10)
    sync = Bundler.from_config(("camera/front",), cfg, default_rig=_rig())
    for k in range(4):
        sync.add(_sweep(10_000 * MS + k * PERIOD), receive_ns=k * PERIOD)
        sync.add(_cam(10_000 * MS + k * PERIOD), receive_ns=k * PERIOD)
        sync.poll(k * PERIOD)
    # The policy orders stamps: after a 10 s step back, it starts over.
    sync.clock_jump(_sweep(0))
    sync.clock_jump(_cam(0))
    # The sets are those of a fresh policy given the new timeline.
    reference = ApproximateTimePolicy(2, 10)
    expected = []
    got = []
    for k in range(4, 8):
        t = (k - 4) * PERIOD + 7 * MS * (k % 2)
        sync.add(_sweep(t), receive_ns=k * PERIOD)
        sync.add(_cam(t + 5 * MS), receive_ns=k * PERIOD)
        expected += reference.add(0, t) + reference.add(1, t + 5 * MS)
        got += sync.poll(k * PERIOD)
    assert len(expected) == 3
    assert [b.lidar.header.stamp_ns for b in got] == [s[0] for s in expected]


def test_while_the_receiver_drains_a_backlog_no_set_times_out_or_loses_a_camera() -> None:
    """The receiver stalled 0.7 s (caught up last at 0.2 s) and drains: the sweep received
    first after the stall is not released without its camera (dead by the clock, timed out
    by the clock, but its frame may be in the backlog); its frame arrives next."""
    live = _liveness(("camera/front",))
    sync = _collector(("camera/front",), liveness=live)
    for k in range(3):
        t = k * PERIOD
        live.caught_up(t)
        sync.add(_cam(t), receive_ns=t)
        sync.add(_sweep(t), receive_ns=t)
        assert len(sync.poll(t)) == 1
    sync.add(_sweep(300 * MS), receive_ns=300 * MS)  # then the receiver stalls
    assert sync.poll(300 * MS) == []
    # Drained at 1.0 s, not caught up: neither the camera's death (0.5 s) nor the timeout
    # (0.6 s) counts yet.
    sync.add(_sweep(400 * MS), receive_ns=1_000 * MS)
    assert sync.poll(1_000 * MS) == []
    sync.add(_cam(300 * MS), receive_ns=1_001 * MS)
    (bundle,) = sync.poll(1_001 * MS)
    assert bundle.lidar.header.stamp_ns == 300 * MS and bundle.missing == ()
    # Sweep 0.4 s waits for its frame as any other: the camera is alive, and its timeout is
    # 0.3 s after the sweep arrived, whenever that was.
    live.caught_up(1_299 * MS)
    assert sync.poll(1_299 * MS) == []
    live.caught_up(1_300 * MS)
    (bundle,) = sync.poll(1_300 * MS)
    assert bundle.lidar.header.stamp_ns == 400 * MS and bundle.missing == ("camera/front",)
