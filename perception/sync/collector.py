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

The same object serves the live node (host receive times) and offline replay (simulated
receive times), so both pair identically given the same arrival order.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from perception.config import SyncConfig
from perception.msgs.types import CameraFrame, LidarSweep
from perception.sync.policy import Filed, Filing, MatchedSet

__all__ = ["CollectorPolicy"]

MS = 1_000_000

_ACCEPTED = Filing(Filed.ACCEPTED)
_ACCEPTED_EVICTED = Filing(Filed.ACCEPTED, evicted=1)
_DUPLICATE = Filing(Filed.DUPLICATE)
_LATE = Filing(Filed.LATE)
_UNKNOWN_STREAM = Filing(Filed.UNKNOWN_STREAM)


class _RecentStamps:
    """The stamps of the last `capacity` emitted sweeps, answering "is one within `window` of
    t?" by bisection: a camera frame asks on every arrival, so a scan of them all would be the
    collector's largest cost."""

    def __init__(self, capacity: int) -> None:
        self._order: deque[int] = deque()  # emission order, for eviction
        self._sorted: list[int] = []
        self._capacity = capacity

    def add(self, stamp_ns: int) -> None:
        self._order.append(stamp_ns)
        bisect.insort(self._sorted, stamp_ns)
        if len(self._order) > self._capacity:
            oldest = self._order.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]

    def near(self, stamp_ns: int, window_ns: int) -> bool:
        """Whether a stamp lies within `window_ns` of `stamp_ns` (inclusive)."""
        i = bisect.bisect_left(self._sorted, stamp_ns - window_ns)
        return i < len(self._sorted) and self._sorted[i] <= stamp_ns + window_ns


@dataclass
class _Pending:
    """One pending set: the sweep and when it must be out (host ns)."""

    sweep: LidarSweep
    receive_ns: int
    decode_ns: int
    deadline_ns: int


class CollectorPolicy:
    """Collector keyed by the lidar sweep stamp (see the module docstring).

    `offsets_ns` / `windows_ns` map camera streams to their expected offset from the sweep stamp
    and matching half-window (ns); streams not named use 0 and `window_ns`. At most
    `queue_size` sweeps wait, and `queue_size` frames per camera. Raises ValueError for a
    non-positive window, timeout or queue size.
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
    ) -> None:
        if window_ns <= 0 or timeout_ns <= 0 or queue_size <= 0:
            raise ValueError("window_ns, timeout_ns and queue_size must be > 0")
        self._camera_streams = camera_streams
        self.timeout_ns = timeout_ns
        self.queue_size = queue_size
        self.offsets_ns = {s: int((offsets_ns or {}).get(s, 0)) for s in camera_streams}
        self.windows_ns = {s: int((windows_ns or {}).get(s, window_ns)) for s in camera_streams}
        if min(self.windows_ns.values(), default=1) <= 0:
            raise ValueError("camera windows must be > 0")
        # Pending sets in sweep stamp order (at most queue_size).
        self._pending: list[_Pending] = []
        # Unused camera frames per stream, stamp order, with their decode durations.
        self._cameras: dict[str, list[tuple[int, CameraFrame, int]]] = {
            s: [] for s in camera_streams
        }
        # Stamps of emitted sweeps, so late members and duplicate sweeps are recognised.
        self._emitted = _RecentStamps(4 * queue_size)

    @classmethod
    def from_config(cls, camera_streams: tuple[str, ...], config: SyncConfig) -> CollectorPolicy:
        """From the node config (milliseconds there, ns here)."""
        return cls(
            camera_streams,
            window_ns=round(config.window_ms * MS),
            timeout_ns=round(config.timeout_ms * MS),
            queue_size=config.queue_size,
            offsets_ns={k: round(v * MS) for k, v in config.camera_offsets_ms.items()},
            windows_ns={k: round(v * MS) for k, v in config.camera_windows_ms.items()},
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
        filing = _ACCEPTED
        if len(self._pending) >= self.queue_size:
            # The oldest set is the one least likely to still be useful downstream.
            self._pending.pop(0)
            filing = _ACCEPTED_EVICTED
        keys = [p.sweep.header.stamp_ns for p in self._pending]
        self._pending.insert(
            bisect.bisect(keys, stamp),
            _Pending(sweep, receive_ns, decode_ns, receive_ns + self.timeout_ns),
        )
        return filing

    def add_camera(self, frame: CameraFrame, receive_ns: int, decode_ns: int) -> Filing:
        """Buffer a frame until a set claims it; LATE if its set is already out."""
        stream = frame.header.stream
        queue = self._cameras.get(stream)
        if queue is None:
            return _UNKNOWN_STREAM
        stamp = frame.header.stamp_ns
        expected = stamp - self.offsets_ns[stream]
        window = self.windows_ns[stream]
        if self._emitted.near(expected, window):
            # Its set is already out: using it elsewhere would pair it outside its window
            # or twice, so it is dropped.
            return _LATE
        i = bisect.bisect_left(queue, stamp, key=lambda e: e[0])
        if i < len(queue) and queue[i][0] == stamp:
            return _DUPLICATE
        queue.insert(i, (stamp, frame, decode_ns))
        if len(queue) > self.queue_size:
            queue.pop(0)
            return _ACCEPTED_EVICTED
        return _ACCEPTED

    # ----------------------------------------------------------------- output

    def next_deadline_ns(self) -> int | None:
        return min((p.deadline_ns for p in self._pending), default=None)

    def ready(self, now_ns: int) -> list[MatchedSet]:
        out: list[MatchedSet] = []
        keep: list[_Pending] = []
        for pending in self._pending:
            stamp = pending.sweep.header.stamp_ns
            due = now_ns >= pending.deadline_ns
            choice: dict[str, int] = {}
            for stream in self._camera_streams:
                index = self._match(stream, stamp)
                if index < 0 and not due:
                    break  # incomplete and not due: the other cameras need not be looked at
                choice[stream] = index
            else:
                self._emitted.add(stamp)
                out.append(self._take(pending, choice, now_ns))
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
        window = self.windows_ns[stream]
        i = bisect.bisect_left(queue, expected, key=lambda e: e[0])
        best, best_dt = -1, window + 1
        for j in (i - 1, i):
            if 0 <= j < len(queue):
                dt = abs(queue[j][0] - expected)
                if dt < best_dt:
                    best, best_dt = j, dt
        return best

    def _take(self, pending: _Pending, choice: dict[str, int], now_ns: int) -> MatchedSet:
        """The set of `pending` with the chosen frames, which leave their queues."""
        cameras: dict[str, CameraFrame] = {}
        decode_ns = pending.decode_ns
        for stream, index in choice.items():
            if index >= 0:
                _, frame, cam_decode_ns = self._cameras[stream].pop(index)
                cameras[stream] = frame
                decode_ns += cam_decode_ns
        return MatchedSet(pending.sweep, cameras, pending.receive_ns, decode_ns, now_ns)
