"""The ApproximateTime sync policy: ROS 2 message_filters semantics.

`ApproximateTimePolicy` is a port of ROS 2 message_filters' C++
`sync_policies::ApproximateTime` at the stamp level, so recorded stamp sequences can be checked
against it. `ApproximateTimeAdapter` puts it behind the bundler's policy interface
(perception.sync.policy), with the lidar as the first stream and the cameras after it.

Latency compared with the collector (perception.sync.collector): ApproximateTime publishes a set
only once it can *prove* no later message gives a better set, i.e. after a message newer than
the pivot has arrived on every other stream (or the inter-message lower bounds prove it), so its
latency is about one period of the slowest stream after the last member; it has no timeout and
never emits an incomplete set (a dead stream stalls it until its queue overflows). The collector
publishes the moment the last expected member is in (latency = arrival of the last member) and,
with a stream down, after `timeout_ns`, degraded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from perception.config import SyncConfig
from perception.msgs.types import CameraFrame, LidarSweep
from perception.sync.policy import Filed, Filing, MatchedSet

__all__ = ["ApproximateTimeAdapter", "ApproximateTimePolicy"]

MS = 1_000_000

_ACCEPTED = Filing(Filed.ACCEPTED)
_DUPLICATE = Filing(Filed.DUPLICATE)
_UNKNOWN_STREAM = Filing(Filed.UNKNOWN_STREAM)


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


class ApproximateTimeAdapter:
    """message_filters' ApproximateTime choosing the bundler's sets.

    Streams are the lidar (first) and the cameras; a set is out when the policy proves it (no
    timeout, never incomplete: see the module docstring for the latency cost). Messages the
    policy can no longer use are dropped; every buffer holds at most `queue_size` messages per
    stream. A camera with a known offset after the sweep (`offsets_ns`, as
    `sync.camera_offsets_ms`) enters the policy at its stamp minus that offset: message_filters
    has no offsets, and a camera exposed 62 ms after a sweep-start stamp would otherwise sit
    nearer the next sweep and be paired with it. Raises ValueError as ApproximateTimePolicy.
    """

    def __init__(
        self,
        camera_streams: tuple[str, ...],
        *,
        queue_size: int,
        age_penalty: float = 0.1,
        max_interval_ns: int | None = None,
        offsets_ns: Mapping[str, int] | None = None,
    ) -> None:
        self._camera_streams = camera_streams
        self.queue_size = queue_size
        self._policy = ApproximateTimePolicy(
            1 + len(camera_streams), queue_size, age_penalty, max_interval_ns=max_interval_ns
        )
        self._index = {stream: 1 + i for i, stream in enumerate(camera_streams)}
        # Per stream index (0 = lidar): stamp -> (message, receive_ns, decode_ns).
        self._held: list[dict[int, tuple[LidarSweep | CameraFrame, int, int]]] = [
            {} for _ in range(1 + len(camera_streams))
        ]
        # Stamp tuples the policy published and `ready` has not handed out yet.
        self._sets: list[tuple[int, ...]] = []
        # Per stream index: subtracted from the stamp before the policy sees it.
        self._shift_ns = [0] + [int((offsets_ns or {}).get(c, 0)) for c in camera_streams]

    @classmethod
    def from_config(
        cls, camera_streams: tuple[str, ...], config: SyncConfig
    ) -> ApproximateTimeAdapter:
        """From the node config (milliseconds there, ns here); the collector's window and
        timeout do not apply."""
        return cls(
            camera_streams,
            queue_size=config.queue_size,
            age_penalty=config.age_penalty,
            max_interval_ns=None
            if config.max_interval_ms is None
            else round(config.max_interval_ms * MS),
            offsets_ns={k: round(v * MS) for k, v in config.camera_offsets_ms.items()},
        )

    @property
    def camera_streams(self) -> tuple[str, ...]:
        return self._camera_streams

    def add_sweep(self, sweep: LidarSweep, receive_ns: int, decode_ns: int) -> Filing:
        return self._feed(0, sweep, receive_ns, decode_ns)

    def add_camera(self, frame: CameraFrame, receive_ns: int, decode_ns: int) -> Filing:
        index = self._index.get(frame.header.stream)
        if index is None:
            return _UNKNOWN_STREAM
        return self._feed(index, frame, receive_ns, decode_ns)

    def _feed(
        self, index: int, msg: LidarSweep | CameraFrame, receive_ns: int, decode_ns: int
    ) -> Filing:
        stamp = msg.header.stamp_ns - self._shift_ns[index]
        held = self._held[index]
        if stamp in held:
            return _DUPLICATE
        held[stamp] = (msg, receive_ns, decode_ns)
        if len(held) > self.queue_size:
            # The policy's own queue has dropped it too (message_filters does not count these).
            del held[min(held)]
        self._sets += self._policy.add(index, stamp)
        return _ACCEPTED

    def next_deadline_ns(self) -> int | None:
        return None  # sets come out on arrivals only

    def ready(self, now_ns: int) -> list[MatchedSet]:
        out: list[MatchedSet] = []
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
            for stream, item in zip(self._camera_streams, members[1:], strict=True):
                assert item is not None and isinstance(item[0], CameraFrame)
                cameras[stream] = item[0]
                decode_ns += item[2]
            out.append(MatchedSet(sweep, cameras, receive_ns, decode_ns, now_ns))
        self._sets = []
        return out

    def drain(self, now_ns: int) -> list[MatchedSet]:
        # Nothing is due later: a set the policy has not proved is never published.
        return self.ready(now_ns)
