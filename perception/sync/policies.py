"""Time synchronisation: the collector (default) and ROS message_filters ApproximateTime.

Collector (`CollectorSync`, the Autoware design): keyed by the lidar sweep stamp. Camera `c` is
expected at `sweep stamp + offset[c]` and matches within `window[c]` of that time. A bundle is
emitted as soon as every camera has a matching frame, or once `timeout_ns` of host time has
passed since its sweep arrived, then with the missing cameras listed (degraded). A message is
used by at most one bundle; a frame that arrives after the bundle it belongs to was emitted is
dropped and counted; arrival order across and within streams does not matter. Every buffer is
bounded by `queue_size`, so a dead stream costs at most its timeout and a fixed amount of memory.

The same object serves the live node (host receive times) and offline replay (simulated
receive times), so both pair identically given the same arrival order.

ApproximateTime (`ApproximateTimePolicy`): a port of ROS 2 message_filters' C++
`sync_policies::ApproximateTime` at the stamp level, so recorded stamp sequences can be checked
against it. Latency compared with the collector: ApproximateTime publishes a set only once it
can *prove* no later message gives a better set, i.e. after a message newer than the pivot has
arrived on every other stream (or the inter-message lower bounds prove it), so its latency is
about one period of the slowest stream after the last member; it has no timeout and never emits
an incomplete set (a dead stream stalls it until its queue overflows). The collector publishes
the moment the last expected member is in (latency = arrival of the last member) and, with a
stream down, after `timeout_ns`, degraded.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from calibration import Rig
from perception.config import SyncConfig
from perception.msgs.types import (
    CameraFrame,
    GnssFix,
    LidarSweep,
    Message,
    RigMessage,
    SyncedBundle,
    sweep_end_ns,
)
from perception.sync.ego import EgoPoseBuffer

__all__ = [
    "ApproximateTimePolicy",
    "ApproximateTimeSync",
    "CollectorSync",
    "NearestSync",
    "SyncStats",
]

MS = 1_000_000


@dataclass
class SyncStats:
    """Counters of what the synchroniser emitted and dropped; read by diagnostics."""

    bundles: int = 0
    degraded_bundles: int = 0
    dropped_sweeps_no_rig: int = 0
    dropped_sweeps_queue_full: int = 0
    dropped_cameras_queue_full: int = 0
    unknown_streams: int = 0
    late_messages: int = 0
    duplicate_messages: int = 0
    per_stream_missing: dict[str, int] = field(default_factory=dict)
    per_stream_late: dict[str, int] = field(default_factory=dict)


@dataclass
class _Collector:
    """One pending bundle: the sweep and when it must be out (host ns)."""

    sweep: LidarSweep
    receive_ns: int
    decode_ns: int
    deadline_ns: int


class CollectorSync:
    """Collector synchroniser keyed by the lidar sweep stamp.

    `add(msg, receive_ns, decode_ns)` files a message with its host receive time and decode
    duration (ns); `poll(now_ns)` returns the bundles that became complete or timed out, in
    sweep stamp order. `offsets_ns` / `windows_ns` map camera streams to their expected offset
    from the sweep stamp and matching half-window (ns); streams not named use 0 and `window_ns`.
    Raises ValueError for a non-positive window, timeout or queue size.
    """

    def __init__(
        self,
        camera_streams: tuple[str, ...],
        *,
        window_ns: int,
        timeout_ns: int,
        gnss_window_ns: int = 500 * MS,
        queue_size: int = 20,
        default_rig: Any = None,
        offsets_ns: Mapping[str, int] | None = None,
        windows_ns: Mapping[str, int] | None = None,
    ) -> None:
        if window_ns <= 0 or timeout_ns <= 0 or queue_size <= 0:
            raise ValueError("window_ns, timeout_ns and queue_size must be > 0")
        self.camera_streams = camera_streams
        self.window_ns = window_ns
        self.timeout_ns = timeout_ns
        self.gnss_window_ns = gnss_window_ns
        self.queue_size = queue_size
        self.offsets_ns = {s: int((offsets_ns or {}).get(s, 0)) for s in camera_streams}
        self.windows_ns = {s: int((windows_ns or {}).get(s, window_ns)) for s in camera_streams}
        if min(self.windows_ns.values(), default=1) <= 0:
            raise ValueError("camera windows must be > 0")
        self.stats = SyncStats()
        # Pending bundles in sweep stamp order (at most queue_size).
        self._pending: list[_Collector] = []
        # Unused camera frames per stream, stamp order, with their decode durations.
        self._cameras: dict[str, list[tuple[int, CameraFrame, int]]] = {
            s: [] for s in camera_streams
        }
        # Stamps of emitted sweeps, so late members and duplicate sweeps are recognised.
        self._emitted: deque[int] = deque(maxlen=4 * queue_size)
        self._gnss: deque[GnssFix] = deque(maxlen=queue_size * 5)
        self.ego = EgoPoseBuffer(capacity=queue_size * 5)
        # (stamp_ns, rig) in stamp order; a rig holds from its stamp until the next one.
        self._rigs: list[tuple[int, Any]] = [] if default_rig is None else [(-1, default_rig)]

    @classmethod
    def from_config(
        cls, camera_streams: tuple[str, ...], config: SyncConfig, default_rig: Any = None
    ) -> CollectorSync:
        """Build from the node config (milliseconds there, ns here): the collector, or the
        ApproximateTime policy when `config.policy` is "approximate_time". Raises ValueError for
        another policy."""
        if config.policy == "approximate_time":
            return ApproximateTimeSync(
                camera_streams,
                queue_size=config.queue_size,
                age_penalty=config.age_penalty,
                max_interval_ns=None
                if config.max_interval_ms is None
                else round(config.max_interval_ms * MS),
                gnss_window_ns=round(config.gnss_window_ms * MS),
                default_rig=default_rig,
                offsets_ns={k: round(v * MS) for k, v in config.camera_offsets_ms.items()},
            )
        if config.policy != "collector":
            raise ValueError(
                f"sync.policy {config.policy!r}: use 'collector' or 'approximate_time'"
            )
        return cls(
            camera_streams,
            window_ns=round(config.window_ms * MS),
            timeout_ns=round(config.timeout_ms * MS),
            gnss_window_ns=round(config.gnss_window_ms * MS),
            queue_size=config.queue_size,
            default_rig=default_rig,
            offsets_ns={k: round(v * MS) for k, v in config.camera_offsets_ms.items()},
            windows_ns={k: round(v * MS) for k, v in config.camera_windows_ms.items()},
        )

    # ------------------------------------------------------------------ input

    def add(self, msg: Message, receive_ns: int, decode_ns: int = 0) -> None:
        """File any input message. Raises calibration.CalibrationError for an invalid rig
        message and TypeError for a message type that is not an input."""
        if isinstance(msg, LidarSweep):
            self.add_sweep(msg, receive_ns, decode_ns)
        elif isinstance(msg, CameraFrame):
            self.add_camera(msg, decode_ns)
        elif isinstance(msg, GnssFix):
            self.add_gnss(msg)
        elif isinstance(msg, RigMessage):
            source = f"{msg.header.stream} message {msg.header.seq}"
            self.add_rig(msg.header.stamp_ns, Rig.from_dict(msg.rig, source=source))
        else:
            raise TypeError(f"{type(msg).__name__} is not a sensor input")

    def add_sweep(self, sweep: LidarSweep, receive_ns: int, decode_ns: int = 0) -> None:
        """A lidar sweep opens a bundle due at `receive_ns + timeout_ns`."""
        stamp = sweep.header.stamp_ns
        if stamp in self._emitted or any(c.sweep.header.stamp_ns == stamp for c in self._pending):
            self.stats.duplicate_messages += 1
            return
        if len(self._pending) >= self.queue_size:
            # The oldest bundle is the one least likely to still be useful downstream.
            self._pending.pop(0)
            self.stats.dropped_sweeps_queue_full += 1
        keys = [c.sweep.header.stamp_ns for c in self._pending]
        self._pending.insert(
            bisect.bisect(keys, stamp),
            _Collector(sweep, receive_ns, decode_ns, receive_ns + self.timeout_ns),
        )

    def add_camera(self, frame: CameraFrame, decode_ns: int = 0) -> None:
        """Buffer a camera frame until a bundle claims it (or drop it as late / duplicate)."""
        stream = frame.header.stream
        queue = self._cameras.get(stream)
        if queue is None:
            self.stats.unknown_streams += 1
            return
        stamp = frame.header.stamp_ns
        expected = stamp - self.offsets_ns[stream]
        window = self.windows_ns[stream]
        if any(abs(expected - s) <= window for s in self._emitted):
            # Its bundle is already out: using it elsewhere would pair it outside its window
            # or twice, so it is dropped.
            self.stats.late_messages += 1
            self.stats.per_stream_late[stream] = self.stats.per_stream_late.get(stream, 0) + 1
            return
        i = bisect.bisect_left(queue, stamp, key=lambda e: e[0])
        if i < len(queue) and queue[i][0] == stamp:
            self.stats.duplicate_messages += 1
            return
        queue.insert(i, (stamp, frame, decode_ns))
        if len(queue) > self.queue_size:
            queue.pop(0)
            self.stats.dropped_cameras_queue_full += 1

    def add_gnss(self, fix: GnssFix) -> None:
        """Keep the fix; the nearest one within `gnss_window_ns` joins each bundle, and the
        ego poses at the sweep's start and end are interpolated from the fixes."""
        self._gnss.append(fix)
        self.ego.add(fix)

    def add_rig(self, stamp_ns: int, rig: Any) -> None:
        """A rig in force from `stamp_ns` until the next one."""
        keys = [s for s, _ in self._rigs]
        i = bisect.bisect_right(keys, stamp_ns)
        if i > 0 and keys[i - 1] == stamp_ns:
            self._rigs[i - 1] = (stamp_ns, rig)
        else:
            self._rigs.insert(i, (stamp_ns, rig))
        while len(self._rigs) > self.queue_size:
            self._rigs.pop(0)

    # ----------------------------------------------------------------- output

    def next_deadline_ns(self) -> int | None:
        """Host time (ns) at which the earliest pending bundle times out; None if none is."""
        return min((c.deadline_ns for c in self._pending), default=None)

    def poll(self, now_ns: int) -> list[SyncedBundle]:
        """Bundles complete or due at host time `now_ns`, in sweep stamp order."""
        out: list[SyncedBundle] = []
        keep: list[_Collector] = []
        for pending in self._pending:
            stamp = pending.sweep.header.stamp_ns
            choice = {s: self._match(s, stamp) for s in self.camera_streams}
            complete = all(i >= 0 for i in choice.values())
            if not (complete or now_ns >= pending.deadline_ns):
                keep.append(pending)
                continue
            self._emitted.append(stamp)
            bundle = self._emit(pending, choice, now_ns)
            if bundle is not None:
                out.append(bundle)
        self._pending = keep
        return out

    def _match(self, stream: str, stamp_ns: int) -> int:
        """Index of the unused frame nearest to its expected time within the window, or -1."""
        queue = self._cameras[stream]
        expected = stamp_ns + self.offsets_ns[stream]
        window = self.windows_ns[stream]
        i = bisect.bisect_left(queue, expected, key=lambda e: e[0])
        best, best_dt = -1, window + 1
        for j in (i - 1, i):
            if 0 <= j < len(queue):
                dt = abs(queue[j][0] - expected)
                if dt < best_dt:
                    best, best_dt = j, dt
        return best

    def _emit(
        self, pending: _Collector, choice: dict[str, int], now_ns: int
    ) -> SyncedBundle | None:
        cameras: dict[str, CameraFrame] = {}
        decode_ns = pending.decode_ns
        for stream, index in choice.items():
            if index >= 0:
                _, frame, cam_decode_ns = self._cameras[stream].pop(index)
                cameras[stream] = frame
                decode_ns += cam_decode_ns
        return self._bundle(pending.sweep, cameras, pending.receive_ns, decode_ns, now_ns)

    def _bundle(
        self,
        sweep: LidarSweep,
        cameras: dict[str, CameraFrame],
        receive_ns: int,
        decode_ns: int,
        now_ns: int,
    ) -> SyncedBundle | None:
        """The bundle of a sweep and its matched frames (None, counted, without a rig)."""
        stamp = sweep.header.stamp_ns
        missing = [s for s in self.camera_streams if s not in cameras]
        for stream in missing:
            self.stats.per_stream_missing[stream] = self.stats.per_stream_missing.get(stream, 0) + 1
        skews = {s: f.header.stamp_ns - stamp for s, f in cameras.items()}
        rig = self._rig_at(stamp)
        if rig is None:
            self.stats.dropped_sweeps_no_rig += 1
            return None
        gnss = self._nearest_gnss(stamp)
        if gnss is not None:
            skews[gnss.header.stream] = gnss.header.stamp_ns - stamp
        self.stats.bundles += 1
        self.stats.degraded_bundles += bool(missing)
        return SyncedBundle(
            lidar=sweep,
            cameras=cameras,
            rig=rig,
            gnss=gnss,
            missing=tuple(missing),
            skews_ns=skews,
            decode_ns=decode_ns,
            sync_wait_ns=max(0, now_ns - receive_ns),
            ego_pose=self.ego.pose_at(stamp),
            ego_pose_end=self.ego.pose_at(sweep_end_ns(sweep)),
        )

    def _rig_at(self, stamp_ns: int) -> Any:
        keys = [s for s, _ in self._rigs]
        i = bisect.bisect_right(keys, stamp_ns)
        return self._rigs[i - 1][1] if i > 0 else None

    def _nearest_gnss(self, stamp_ns: int) -> GnssFix | None:
        best: GnssFix | None = None
        for fix in self._gnss:
            dt = abs(fix.header.stamp_ns - stamp_ns)
            if dt <= self.gnss_window_ns and (
                best is None or dt < abs(best.header.stamp_ns - stamp_ns)
            ):
                best = fix
        return best


# The walking skeleton's name: the collector with zero offsets is its nearest-frame pairing.
NearestSync = CollectorSync


class ApproximateTimePolicy:
    """ROS 2 message_filters C++ `ApproximateTime`, on stamps (integer ns).

    `add(stream_index, stamp_ns)` returns the sets (one stamp per stream, stream order) that
    this arrival caused to be published (0, 1 or more). Parameters as message_filters:
    `queue_size` per stream (counting the messages hidden behind a candidate), `age_penalty`
    (default 0.1), `inter_message_lower_bounds_ns` (per stream, default 0) and
    `max_interval_ns` (the widest set allowed; None = unbounded). Raises ValueError for fewer
    than 2 streams, a queue size < 1 or a negative parameter.
    """

    def __init__(
        self,
        num_streams: int,
        queue_size: int,
        age_penalty: float = 0.1,
        inter_message_lower_bounds_ns: list[int] | tuple[int, ...] | None = None,
        max_interval_ns: int | None = None,
    ) -> None:
        if num_streams < 2 or queue_size < 1 or age_penalty < 0:
            raise ValueError("need num_streams >= 2, queue_size >= 1, age_penalty >= 0")
        bounds = list(inter_message_lower_bounds_ns or [0] * num_streams)
        if len(bounds) != num_streams or min(bounds) < 0:
            raise ValueError("inter_message_lower_bounds_ns: one value >= 0 per stream")
        if max_interval_ns is not None and max_interval_ns < 0:
            raise ValueError("max_interval_ns must be >= 0")
        self.n = num_streams
        self.queue_size = queue_size
        self.age_penalty = age_penalty
        self.bounds = bounds
        self.max_interval_ns = max_interval_ns
        self._deques: list[deque[int]] = [deque() for _ in range(num_streams)]
        self._past: list[list[int]] = [[] for _ in range(num_streams)]
        self._non_empty = 0
        self._candidate: tuple[int, ...] | None = None
        self._candidate_start = 0
        self._candidate_end = 0
        self._pivot: int | None = None
        self._pivot_time = 0
        self._dropped = [False] * num_streams
        self._out: list[tuple[int, ...]] = []

    def _scaled(self, duration_ns: int) -> int:
        # rclcpp::Duration * double truncates towards zero.
        return int(duration_ns * (1.0 + self.age_penalty))

    def add(self, stream_index: int, stamp_ns: int) -> list[tuple[int, ...]]:
        """File one stamp; return the sets published as a consequence."""
        if not 0 <= stream_index < self.n:
            raise ValueError(f"stream_index {stream_index} outside [0, {self.n})")
        self._out = []
        q = self._deques[stream_index]
        q.append(stamp_ns)
        if len(q) == 1:
            self._non_empty += 1
            if self._non_empty == self.n:
                self._process()
        # message_filters only warns here when the lower bound is violated; nothing to do.
        if len(q) + len(self._past[stream_index]) > self.queue_size:
            # Cancel any candidate search: put the hidden messages back, drop the oldest.
            self._recover_all()
            q.popleft()
            self._dropped[stream_index] = True
            if self._pivot is not None:
                self._candidate = None
                self._pivot = None
                self._process()
        return self._out

    # The helpers below mirror the C++ private methods of the same names.

    def _recount(self) -> None:
        self._non_empty = sum(1 for d in self._deques if d)

    def _recover_all(self, counts: list[int] | None = None) -> None:
        for i in range(self.n):
            past, q = self._past[i], self._deques[i]
            k = len(past) if counts is None else counts[i]
            for _ in range(k):
                q.appendleft(past.pop())
        self._recount()

    def _delete_front(self, i: int) -> None:
        self._deques[i].popleft()
        if not self._deques[i]:
            self._non_empty -= 1

    def _move_front_to_past(self, i: int) -> None:
        self._past[i].append(self._deques[i].popleft())
        if not self._deques[i]:
            self._non_empty -= 1

    def _make_candidate(self) -> None:
        self._candidate = tuple(d[0] for d in self._deques)
        for p in self._past:
            p.clear()

    def _publish_candidate(self) -> None:
        assert self._candidate is not None
        self._out.append(self._candidate)
        self._candidate = None
        self._pivot = None
        # Recover hidden messages and delete the ones the candidate used.
        for i in range(self.n):
            past, q = self._past[i], self._deques[i]
            while past:
                q.appendleft(past.pop())
            q.popleft()
        self._recount()

    def _boundary(self, times: list[int], end: bool) -> tuple[int, int]:
        # As the C++ `(t < time) ^ end`: ties go to the first stream for the start and to
        # the last stream for the end.
        index, time = 0, times[0]
        for i in range(1, self.n):
            if (times[i] < time) != end:
                index, time = i, times[i]
        return index, time

    def _virtual_times(self) -> list[int]:
        out = []
        for i in range(self.n):
            q = self._deques[i]
            if q:
                out.append(q[0])
            else:
                out.append(max(self._past[i][-1] + self.bounds[i], self._pivot_time))
        return out

    def _process(self) -> None:
        while self._non_empty == self.n:
            heads = [d[0] for d in self._deques]
            end_index, end_time = self._boundary(heads, end=True)
            start_index, start_time = self._boundary(heads, end=False)
            for i in range(self.n):
                if i != end_index:
                    self._dropped[i] = False
            if self._pivot is None:
                if self.max_interval_ns is not None and end_time - start_time > (
                    self.max_interval_ns
                ):
                    self._delete_front(start_index)
                    continue
                if self._dropped[end_index]:
                    self._delete_front(start_index)
                    continue
                self._make_candidate()
                self._candidate_start, self._candidate_end = start_time, end_time
                self._pivot, self._pivot_time = end_index, end_time
                self._move_front_to_past(start_index)
            elif self._scaled(end_time - self._candidate_end) >= (
                start_time - self._candidate_start
            ):
                self._move_front_to_past(start_index)
            else:
                self._make_candidate()
                self._candidate_start, self._candidate_end = start_time, end_time
                self._move_front_to_past(start_index)
            age_check = self._scaled(end_time - self._candidate_end)
            if start_index == self._pivot or age_check >= self._pivot_time - self._candidate_start:
                self._publish_candidate()
            elif self._non_empty < self.n:
                self._virtual_search()

    def _virtual_search(self) -> None:
        """Use the inter-message lower bounds to try to prove the candidate optimal."""
        moves = [0] * self.n
        while True:
            times = self._virtual_times()
            _, end_time = self._boundary(times, end=True)
            start_index, start_time = self._boundary(times, end=False)
            scaled = self._scaled(end_time - self._candidate_end)
            if scaled >= self._pivot_time - self._candidate_start:
                self._publish_candidate()
                return
            if scaled < start_time - self._candidate_start:
                self._recover_all(moves)
                return
            self._move_front_to_past(start_index)
            moves[start_index] += 1


class ApproximateTimeSync(CollectorSync):
    """The node's synchroniser with message_filters' ApproximateTime choosing the sets.

    Streams are the lidar (first) and the cameras; a set is emitted when the policy proves it
    (no timeout, never incomplete: see the module docstring for the latency cost). Rig, GNSS
    and ego poses are attached as the collector does. Messages the policy can no longer use are
    dropped; every buffer holds at most `queue_size` messages per stream. A camera with a known
    offset after the sweep (`offsets_ns`, as `sync.camera_offsets_ms`) enters the policy at its
    stamp minus that offset: message_filters has no offsets, and a camera exposed 62 ms after a
    sweep-start stamp would otherwise sit nearer the next sweep and be paired with it.
    """

    def __init__(
        self,
        camera_streams: tuple[str, ...],
        *,
        queue_size: int = 20,
        age_penalty: float = 0.1,
        max_interval_ns: int | None = None,
        gnss_window_ns: int = 500_000_000,
        default_rig: Any = None,
        offsets_ns: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(
            camera_streams,
            window_ns=1,
            timeout_ns=2**62,
            gnss_window_ns=gnss_window_ns,
            queue_size=queue_size,
            default_rig=default_rig,
        )
        self._policy = ApproximateTimePolicy(
            1 + len(camera_streams), queue_size, age_penalty, max_interval_ns=max_interval_ns
        )
        # Per stream index (0 = lidar): stamp -> (message, receive_ns, decode_ns).
        self._held: list[dict[int, tuple[LidarSweep | CameraFrame, int, int]]] = [
            {} for _ in range(1 + len(camera_streams))
        ]
        self._sets: list[tuple[int, ...]] = []
        self._last_receive_ns = 0
        # Per stream index: subtracted from the stamp before the policy sees it.
        self._shift_ns = [0] + [int((offsets_ns or {}).get(c, 0)) for c in camera_streams]

    def add_sweep(self, sweep: LidarSweep, receive_ns: int, decode_ns: int = 0) -> None:
        self._last_receive_ns = receive_ns
        self._feed(0, sweep, receive_ns, decode_ns)

    def add_camera(self, frame: CameraFrame, decode_ns: int = 0) -> None:
        stream = frame.header.stream
        if stream not in self.camera_streams:
            self.stats.unknown_streams += 1
            return
        index = 1 + self.camera_streams.index(stream)
        self._feed(index, frame, self._last_receive_ns, decode_ns)

    def _feed(
        self, index: int, msg: LidarSweep | CameraFrame, receive_ns: int, decode_ns: int
    ) -> None:
        stamp = msg.header.stamp_ns - self._shift_ns[index]
        held = self._held[index]
        if stamp in held:
            self.stats.duplicate_messages += 1
            return
        held[stamp] = (msg, receive_ns, decode_ns)
        if len(held) > self.queue_size:
            del held[min(held)]
        self._sets += self._policy.add(index, stamp)

    def next_deadline_ns(self) -> int | None:
        return None

    def poll(self, now_ns: int) -> list[SyncedBundle]:
        out: list[SyncedBundle] = []
        for stamps in self._sets:
            members = [self._held[i].pop(t, None) for i, t in enumerate(stamps)]
            # Older messages of each stream can no longer join a set.
            for held, t in zip(self._held, stamps, strict=True):
                for old in [k for k in held if k < t]:
                    del held[old]
            sweep_item = members[0]
            if sweep_item is None or any(m is None for m in members):
                continue  # evicted from its bounded buffer before the set was proved
            sweep, receive_ns, decode_ns = sweep_item
            assert isinstance(sweep, LidarSweep)
            cameras: dict[str, CameraFrame] = {}
            for stream, item in zip(self.camera_streams, members[1:], strict=True):
                assert item is not None and isinstance(item[0], CameraFrame)
                cameras[stream] = item[0]
                decode_ns += item[2]
            bundle = self._bundle(sweep, cameras, receive_ns, decode_ns, now_ns)
            if bundle is not None:
                out.append(bundle)
        self._sets = []
        return out
