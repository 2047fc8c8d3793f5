"""Hypothesis properties of the collector: random streams with jitter, drops, duplicates and
reordering. It never uses a message twice, never pairs a member outside its window, and emits
every bundle by its deadline."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration import Rig
from perception.msgs.types import CameraFrame, Header, LidarSweep
from perception.sync import Bundler, CollectorPolicy

MS = 1_000_000
PERIOD = 100 * MS
CAMERAS = ("camera/a", "camera/b", "camera/c")
OFFSETS = {"camera/a": 0, "camera/b": 30 * MS, "camera/c": -20 * MS}
WINDOW = 20 * MS
TIMEOUT = 150 * MS
IMAGE = np.zeros((1, 1, 3), np.uint8)


# The bundler only passes the rig through: an empty one stands for any.
RIG = Rig()

# One message: (sweep index, stream 0 = lidar / 1.. = cameras, jitter ns, latency ns,
# dropped, duplicated)
message = st.tuples(
    st.integers(0, 11),
    st.integers(0, len(CAMERAS)),
    st.integers(-35 * MS, 35 * MS),
    st.integers(0, 250 * MS),
    st.booleans(),
    st.booleans(),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(message, min_size=1, max_size=80), st.integers(1, 8))
def test_collector_properties(msgs: list[tuple[int, int, int, int, bool, bool]], qs: int) -> None:
    policy = CollectorPolicy(
        CAMERAS, window_ns=WINDOW, timeout_ns=TIMEOUT, queue_size=qs, offsets_ns=OFFSETS
    )
    sync = Bundler(CAMERAS, policy, gnss_window_ns=0, queue_size=qs, default_rig=RIG)
    events: list[tuple[int, int, CameraFrame | LidarSweep]] = []
    seen: set[tuple[int, int]] = set()
    for k, stream, jitter, latency, dropped, duplicated in msgs:
        if dropped or (k, stream) in seen:
            continue
        seen.add((k, stream))
        msg: CameraFrame | LidarSweep
        if stream == 0:
            stamp = k * PERIOD
            msg = LidarSweep(Header("lidar", k, stamp, "lidar"), np.zeros((1, 4), np.float32))
        else:
            name = CAMERAS[stream - 1]
            stamp = k * PERIOD + OFFSETS[name] + jitter
            msg = CameraFrame(Header(name, k, stamp, name), image=IMAGE)
        for copy in range(1 + duplicated):
            events.append((stamp + latency + copy * 7 * MS, len(events), msg))
    events.sort(key=lambda e: (e[0], e[1]))

    deadlines: dict[int, int] = {}
    emitted: list[tuple[int, object]] = []

    def poll_until(t: int) -> None:
        while (d := sync.next_deadline_ns()) is not None and d <= t:
            emitted.extend((d, b) for b in sync.poll(d))
        emitted.extend((t, b) for b in sync.poll(t))

    for receive, _, msg in events:
        poll_until(receive)
        if isinstance(msg, LidarSweep):
            deadlines.setdefault(msg.header.stamp_ns, receive + TIMEOUT)
        sync.add(msg, receive_ns=receive)
        poll_until(receive)
    poll_until(10**15)

    used: set[int] = set()
    sweeps: list[int] = []
    for at, bundle in emitted:
        stamp = bundle.lidar.header.stamp_ns  # type: ignore[attr-defined]
        sweeps.append(stamp)
        assert at <= deadlines[stamp], "emitted after its deadline"
        for name, frame in bundle.cameras.items():  # type: ignore[attr-defined]
            assert id(frame) not in used, "a message used twice"
            used.add(id(frame))
            assert abs(frame.header.stamp_ns - stamp - OFFSETS[name]) <= WINDOW
        assert set(bundle.cameras) | set(bundle.missing) == set(CAMERAS)  # type: ignore[attr-defined]
    assert len(sweeps) == len(set(sweeps)), "a sweep emitted twice"
    lost = sync.stats.dropped_sweeps_queue_full
    assert len(sweeps) + lost == len(deadlines)
    assert sync.next_deadline_ns() is None
    assert all(len(q) <= qs for q in policy._cameras.values())
