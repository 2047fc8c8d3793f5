"""The collector sync policy (the default; the Autoware design).

Keyed by the lidar sweep stamp. Camera `c` is expected at `sweep stamp + offset[c]` and matches
within `window[c]` of that time. A set is out as soon as every camera has a matching frame, or
once `timeout_ns` of host time has passed since its sweep arrived, then with the missing cameras
absent (the bundler lists them: a degraded bundle). A message is used by at most one set; a
frame that arrives after the set it belongs to was out is dropped (LATE); arrival order across
and within streams does not matter. Every buffer is bounded by `queue_size`, so a dead stream
costs at most its timeout and a fixed amount of memory.

Latency compared with ApproximateTime (perception.sync.approximate_time): the collector
publishes the moment the last expected member is in (latency = arrival of the last member) and,
with a stream down, after `timeout_ns`, degraded. ApproximateTime waits until it can prove no
later message gives a better set (about one period of the slowest stream more) and never
publishes an incomplete set.

A camera that is dead (perception.sync.liveness: silent for its configured periods) is not
waited for: a set whose only missing cameras are dead goes out at once, degraded, so a dead
camera does not make every output wait `timeout_ns`; when it sends again, full sets resume.
While the receiver drains a backlog (the liveness tracker knows how far it has caught up),
neither a timeout nor a death releases a set: its frames may be in that backlog.
Queues are bounded in bytes as well (`queue_bytes` per stream: the frames of one camera, the
pending sweeps), the oldest dropped first and the newest always kept.

The same object serves the live node (host receive times) and offline replay (simulated
receive times), so both pair identically given the same arrival order.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from perception.config import SyncConfig
from perception.msgs.types import CameraFrame, LidarSweep
from perception.sync.liveness import Liveness
from perception.sync.policy import Filed, Filing, MatchedSet, payload_bytes

__all__ = ["CollectorPolicy"]

MS = 1_000_000
# Sweeps whose gaps give the sweep interval (their median: a dropped sweep does not move it).
_INTERVAL_SWEEPS = 9
_INTERVAL_MIN_GAPS = 4

_ACCEPTED = Filing(Filed.ACCEPTED)
_DUPLICATE = Filing(Filed.DUPLICATE)
_LATE = Filing(Filed.LATE)
_UNKNOWN_STREAM = Filing(Filed.UNKNOWN_STREAM)


class _RecentStamps:
    """The stamps of the last `capacity` emitted sweeps, each with how far from its expected
    time each camera's chosen frame was (None: the set went out without one), answering "is
    one within `window` of t?" by bisection: a camera frame asks on every arrival, so a scan
    of them all would be the collector's largest cost."""

    def __init__(self, capacity: int) -> None:
        self._order: deque[int] = deque()  # emission order, for eviction
        self._sorted: list[int] = []
        self._capacity = capacity
        self._chosen: dict[int, dict[str, int | None]] = {}

    def latest(self, n: int) -> list[int]:
        """The `n` latest stamps, in stamp order."""
        return self._sorted[-n:]

    def add(self, stamp_ns: int, chosen_dt_ns: dict[str, int | None] | None = None) -> None:
        self._order.append(stamp_ns)
        bisect.insort(self._sorted, stamp_ns)
        self._chosen[stamp_ns] = chosen_dt_ns or {}
        if len(self._order) > self._capacity:
            oldest = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
            self._chosen.pop(oldest, None)

    def near(self, stamp_ns: int, window_ns: int) -> bool:
        """Whether a stamp lies within `window_ns` of `stamp_ns` (inclusive)."""
        i = bisect.bisect_left(self._sorted, stamp_ns - window_ns)
        return i < len(self._sorted) and self._sorted[i] <= stamp_ns + window_ns

    def claims(self, stream: str, expected_ns: int, window_ns: int) -> bool:
        """Whether an emitted set within `window_ns` of `expected_ns` would have taken a frame of
        `stream` expected then: it went out without one, or with one farther from its time.
        Such a frame is late. One no nearer than the frame the set took is not that set's: it
        is kept for the sets to come (sweeps closer together than the window)."""
        i = bisect.bisect_left(self._sorted, expected_ns - window_ns)
        while i < len(self._sorted) and self._sorted[i] <= expected_ns + window_ns:
            chosen = self._chosen[self._sorted[i]].get(stream)
            if chosen is None or abs(expected_ns - self._sorted[i]) < chosen:
                return True
            i += 1
        return False


@dataclass
class _Pending:
    """One pending set: the sweep and when it must be out (host ns)."""

    sweep: LidarSweep
    receive_ns: int
    decode_ns: int
    deadline_ns: int
    nbytes: int


def _accepted(evicted: int) -> Filing:
    return _ACCEPTED if evicted == 0 else Filing(Filed.ACCEPTED, evicted=evicted)


class CollectorPolicy:
    """Collector keyed by the lidar sweep stamp (see the module docstring).

    `offsets_ns` / `windows_ns` map camera streams to their expected offset from the sweep stamp
    and matching half-window (ns); streams not named use 0 and `window_ns`. At most
    `queue_size` sweeps wait, and `queue_size` frames per camera, and each of those queues
    holds at most `queue_bytes` (None: no byte bound) but always its newest message.
    `liveness`: which cameras are dead (None: every camera is waited for). Raises ValueError for
    a non-positive window, timeout or queue size.
    """

    def __init__(
        self,
        camera_streams: tuple[str, ...],
        *,
        window_ns: int,
        timeout_ns: int,
        queue_size: int,
        offsets_ns: Mapping[str, int] | None = None,
        windows_ns: Mapping[str, int] | None = None,
        queue_bytes: int | None = None,
        liveness: Liveness | None = None,
    ) -> None:
        if window_ns <= 0 or timeout_ns <= 0 or queue_size <= 0:
            raise ValueError("window_ns, timeout_ns and queue_size must be > 0")
        if queue_bytes is not None and queue_bytes <= 0:
            raise ValueError("queue_bytes must be > 0")
        self._camera_streams = camera_streams
        self.timeout_ns = timeout_ns
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.liveness = liveness
        self.offsets_ns = {s: int((offsets_ns or {}).get(s, 0)) for s in camera_streams}
        self.windows_ns = {s: int((windows_ns or {}).get(s, window_ns)) for s in camera_streams}
        if min(self.windows_ns.values(), default=1) <= 0:
            raise ValueError("camera windows must be > 0")
        # Pending sets in sweep stamp order (at most queue_size), and the bytes they hold.
        self._pending: list[_Pending] = []
        self._pending_bytes = 0
        # Unused camera frames per stream, stamp order, with their decode durations and sizes;
        # the bytes each stream holds.
        self._cameras: dict[str, list[tuple[int, CameraFrame, int, int]]] = {
            s: [] for s in camera_streams
        }
        self._camera_bytes = dict.fromkeys(camera_streams, 0)
        # Stamps of emitted sweeps, so late members and duplicate sweeps are recognised.
        self._emitted = _RecentStamps(4 * queue_size)
        self._interval_ns: int | None = None

    @classmethod
    def from_config(
        cls,
        camera_streams: tuple[str, ...],
        config: SyncConfig,
        liveness: Liveness | None = None,
    ) -> CollectorPolicy:
        """From the node config (milliseconds there, ns here)."""
        return cls(
            camera_streams,
            window_ns=round(config.window_ms * MS),
            timeout_ns=round(config.timeout_ms * MS),
            queue_size=config.queue_size,
            offsets_ns={k: round(v * MS) for k, v in config.camera_offsets_ms.items()},
            windows_ns={k: round(v * MS) for k, v in config.camera_windows_ms.items()},
            queue_bytes=config.queue_bytes,
            liveness=liveness,
        )

    @property
    def camera_streams(self) -> tuple[str, ...]:
        return self._camera_streams

    # ------------------------------------------------------------------ input

    def add_sweep(self, sweep: LidarSweep, receive_ns: int, decode_ns: int) -> Filing:
        """A sweep opens a set due at `receive_ns + timeout_ns`."""
        stamp = sweep.header.stamp_ns
        if self._emitted.near(stamp, 0) or any(
            p.sweep.header.stamp_ns == stamp for p in self._pending
        ):
            return _DUPLICATE
        evicted = 0
        if len(self._pending) >= self.queue_size:
            # The oldest set is the one least likely to still be useful downstream.
            self._pending_bytes -= self._pending.pop(0).nbytes
            evicted += 1
        keys = [p.sweep.header.stamp_ns for p in self._pending]
        nbytes = payload_bytes(sweep)
        self._pending.insert(
            bisect.bisect(keys, stamp),
            _Pending(sweep, receive_ns, decode_ns, receive_ns + self.timeout_ns, nbytes),
        )
        self._pending_bytes += nbytes
        if self.queue_bytes is not None:
            while self._pending_bytes > self.queue_bytes and len(self._pending) > 1:
                self._pending_bytes -= self._pending.pop(0).nbytes
                evicted += 1
        self._update_interval()
        return _accepted(evicted)

    def add_camera(self, frame: CameraFrame, receive_ns: int, decode_ns: int) -> Filing:
        """Buffer a frame until a set claims it; LATE if its set is already out."""
        stream = frame.header.stream
        queue = self._cameras.get(stream)
        if queue is None:
            return _UNKNOWN_STREAM
        stamp = frame.header.stamp_ns
        expected = stamp - self.offsets_ns[stream]
        window = self._window(stream)
        if self._emitted.claims(stream, expected, window):
            # Its set is already out: using it elsewhere would pair it outside its window
            # or twice, so it is dropped.
            return _LATE
        i = bisect.bisect_left(queue, stamp, key=lambda e: e[0])
        if i < len(queue) and queue[i][0] == stamp:
            return _DUPLICATE
        nbytes = payload_bytes(frame)
        queue.insert(i, (stamp, frame, decode_ns, nbytes))
        held = self._camera_bytes[stream] + nbytes
        evicted = 0
        limit = self.queue_bytes
        while len(queue) > self.queue_size or (
            limit is not None and held > limit and len(queue) > 1
        ):
            held -= queue.pop(0)[3]
            evicted += 1
        self._camera_bytes[stream] = held
        return _accepted(evicted)

    # ----------------------------------------------------------------- output

    def next_deadline_ns(self) -> int | None:
        """The earliest time a pending set goes out without further input: its timeout, or
        the moment the last camera it still waits for is declared dead."""
        best: int | None = None
        for pending in self._pending:
            due = pending.deadline_ns
            if self.liveness is not None:
                stamp = pending.sweep.header.stamp_ns
                waits = [
                    self.liveness.death_ns(s)
                    for s in self._camera_streams
                    if self._match(s, stamp) < 0
                ]
                if waits and None not in waits:
                    due = min(due, max(w for w in waits if w is not None))
            best = due if best is None else min(best, due)
        return best

    def ready(self, now_ns: int) -> list[MatchedSet]:
        out: list[MatchedSet] = []
        keep: list[_Pending] = []
        live = self.liveness
        # A receiver draining a backlog may still hold the frames a set waits for.
        horizon_ns = now_ns if live is None else live.horizon_ns(now_ns)
        for pending in self._pending:
            stamp = pending.sweep.header.stamp_ns
            due = horizon_ns >= pending.deadline_ns
            choice: dict[str, int] = {}
            for stream in self._camera_streams:
                index = self._match(stream, stamp)
                if index < 0 and not due and (live is None or not live.dead(stream, now_ns)):
                    break  # incomplete and not due: the other cameras need not be looked at
                choice[stream] = index
            else:
                taken = self._take(pending, choice, now_ns)
                self._emitted.add(stamp, self._chosen_dt(taken))
                self._pending_bytes -= pending.nbytes
                out.append(taken)
                continue
            keep.append(pending)
        self._pending = keep
        return out

    def drain(self, now_ns: int) -> list[MatchedSet]:
        out = self.ready(now_ns)
        # Whatever is left is incomplete and due after now_ns: out at its own deadline.
        while (deadline := self.next_deadline_ns()) is not None:
            out += self.ready(deadline)
        return out

    def _match(self, stream: str, stamp_ns: int) -> int:
        """Index of the unused frame nearest to its expected time within the window, or -1."""
        queue = self._cameras[stream]
        expected = stamp_ns + self.offsets_ns[stream]
        window = self._window(stream)
        i = bisect.bisect_left(queue, expected, key=lambda e: e[0])
        best, best_dt = -1, window + 1
        for j in (i - 1, i):
            if 0 <= j < len(queue):
                dt = abs(queue[j][0] - expected)
                if dt < best_dt:
                    best, best_dt = j, dt
        return best

    def _window(self, stream: str) -> int:
        """The half-window `stream`'s frames match within: the configured one, but less than
        half the sweep interval once that is known. Sweeps closer together than the window
        (25 Hz under the default 50 ms) would otherwise take their neighbour's frame: the next
        sweep's frame was dropped as late for the last one, and each set waited a period for
        a frame 40 ms off."""
        window = self.windows_ns[stream]
        interval = self._interval_ns
        return window if interval is None else min(window, (interval - 1) // 2)

    def _update_interval(self) -> None:
        """The sweep interval: the median gap between the latest sweeps, emitted and pending
        (a dropped sweep does not move it; None before five)."""
        stamps = sorted(
            {
                *self._emitted.latest(_INTERVAL_SWEEPS),
                *(p.sweep.header.stamp_ns for p in self._pending),
            }
        )[-_INTERVAL_SWEEPS:]
        gaps = sorted(b - a for a, b in itertools.pairwise(stamps))
        # A median of a few gaps, so that one odd stamp cannot narrow every match.
        self._interval_ns = gaps[len(gaps) // 2] if len(gaps) >= _INTERVAL_MIN_GAPS else None

    def _chosen_dt(self, taken: MatchedSet) -> dict[str, int | None]:
        """How far each camera's frame in `taken` is from its expected time (None: none)."""
        stamp = taken.sweep.header.stamp_ns
        out: dict[str, int | None] = dict.fromkeys(self._camera_streams)
        for stream, frame in taken.cameras.items():
            out[stream] = abs(frame.header.stamp_ns - self.offsets_ns[stream] - stamp)
        return out

    def _take(self, pending: _Pending, choice: dict[str, int], now_ns: int) -> MatchedSet:
        """The set of `pending` with the chosen frames, which leave their queues."""
        cameras: dict[str, CameraFrame] = {}
        decode_ns = pending.decode_ns
        for stream, index in choice.items():
            if index >= 0:
                _, frame, cam_decode_ns, nbytes = self._cameras[stream].pop(index)
                self._camera_bytes[stream] -= nbytes
                cameras[stream] = frame
                decode_ns += cam_decode_ns
        return MatchedSet(pending.sweep, cameras, pending.receive_ns, decode_ns, now_ns)

    # ------------------------------------------------------------------ clock jumps

    def reset_sweeps(self) -> int:
        dropped = len(self._pending)
        self._pending = []
        self._pending_bytes = 0
        # Stamps of the old timeline would make new sweeps duplicates and new frames late.
        self._emitted = _RecentStamps(4 * self.queue_size)
        self._interval_ns = None
        return dropped

    @property
    def unmatched(self) -> tuple[int, int]:
        # Every sweep goes out (complete, or degraded at its deadline); a frame no sweep
        # claims stays queued until a newer one pushes it out (counted as queue full).
        return (0, 0)

    def reset_camera(self, stream: str) -> int:
        queue = self._cameras.get(stream)
        if queue is None:
            return 0
        dropped = len(queue)
        queue.clear()
        self._camera_bytes[stream] = 0
        self._emitted = _RecentStamps(4 * self.queue_size)
        self._update_interval()
        return dropped
