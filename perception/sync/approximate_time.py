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
from dataclasses import replace

from perception.config import SyncConfig
from perception.msgs.types import CameraFrame, LidarSweep
from perception.sync.liveness import Liveness
from perception.sync.policy import Filed, Filing, MatchedSet, payload_bytes

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
        #: (stream index, stamp) of the messages the last `add` deleted because every set with
        #: them was wider than `max_interval_ns` (the caller's copies of them can go).
        self.too_wide: list[tuple[int, int]] = []

    def _scaled(self, duration_ns: int) -> int:
        # rclcpp::Duration * double truncates towards zero.
        return int(duration_ns * (1.0 + self.age_penalty))

    def add(self, stream_index: int, stamp_ns: int) -> list[tuple[int, ...]]:
        """File one stamp; return the sets published as a consequence."""
        if not 0 <= stream_index < self.n:
            raise ValueError(f"stream_index {stream_index} outside [0, {self.n})")
        self._out = []
        self.too_wide = []
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
                    self.too_wide.append((start_index, start_time))
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
    stream, and `queue_bytes` (None: no byte bound) but always its newest message. A camera
    with a known offset after the sweep (`offsets_ns`, as `sync.camera_offsets_ms`) enters the
    policy at its stamp minus that offset: message_filters has no offsets, and a camera exposed
    62 ms after a sweep-start stamp would otherwise sit nearer the next sweep and be paired with
    it. Raises ValueError as ApproximateTimePolicy.

    Dead cameras (`liveness`): message_filters would stall until its queues overflow, since it
    needs a message on every stream to prove a set. Here, when the set of live cameras changes,
    the policy is rebuilt over the lidar and the live cameras and fed again what is still held,
    in arrival order; with no live camera, each sweep is a set by itself, at once. Sets without
    a dead camera are degraded (the bundler lists it missing); when it sends again the policy
    is rebuilt with it and full sets resume.
    """

    def __init__(
        self,
        camera_streams: tuple[str, ...],
        *,
        queue_size: int,
        age_penalty: float = 0.1,
        max_interval_ns: int | None = None,
        offsets_ns: Mapping[str, int] | None = None,
        queue_bytes: int | None = None,
        liveness: Liveness | None = None,
    ) -> None:
        if queue_bytes is not None and queue_bytes <= 0:
            raise ValueError("queue_bytes must be > 0")
        self._camera_streams = camera_streams
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.liveness = liveness
        self._age_penalty = age_penalty
        self._max_interval_ns = max_interval_ns
        # Validates the parameters even when a policy over the live streams is built later.
        ApproximateTimePolicy(1 + len(camera_streams), queue_size, age_penalty,
                              max_interval_ns=max_interval_ns)  # fmt: skip
        self._index = {stream: 1 + i for i, stream in enumerate(camera_streams)}
        # Per stream index (0 = lidar): stamp -> (message, receive_ns, decode_ns, bytes).
        self._held: list[dict[int, tuple[LidarSweep | CameraFrame, int, int, int]]] = [
            {} for _ in range(1 + len(camera_streams))
        ]
        self._held_bytes = [0] * (1 + len(camera_streams))
        # Sets the policy published and `ready` has not handed out yet.
        self._out: list[MatchedSet] = []
        # Sweeps and frames dropped because no set could use them any more.
        self._unmatched = [0, 0]
        # Per stream index: subtracted from the stamp before the policy sees it.
        self._shift_ns = [0] + [int((offsets_ns or {}).get(c, 0)) for c in camera_streams]
        # The stream indices the policy runs over (the lidar and the live cameras), the policy
        # (None: no live camera, each sweep is a set) and the latest time they were checked.
        self._members: tuple[int, ...] = tuple(range(1 + len(camera_streams)))
        self._policy: ApproximateTimePolicy | None = self._new_policy()
        self._now_ns = -(2**63)

    @classmethod
    def from_config(
        cls,
        camera_streams: tuple[str, ...],
        config: SyncConfig,
        liveness: Liveness | None = None,
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
            queue_bytes=config.queue_bytes,
            liveness=liveness,
        )

    @property
    def camera_streams(self) -> tuple[str, ...]:
        return self._camera_streams

    def _new_policy(self) -> ApproximateTimePolicy | None:
        if len(self._members) < 2:
            return None
        return ApproximateTimePolicy(
            len(self._members), self.queue_size, self._age_penalty,
            max_interval_ns=self._max_interval_ns,
        )  # fmt: skip

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
        self._check_members(receive_ns)
        stamp = msg.header.stamp_ns - self._shift_ns[index]
        held = self._held[index]
        if stamp in held:
            return _DUPLICATE
        nbytes = payload_bytes(msg)
        held[stamp] = (msg, receive_ns, decode_ns, nbytes)
        self._held_bytes[index] += nbytes
        evicted = 0
        limit = self.queue_bytes
        while len(held) > self.queue_size or (
            limit is not None and self._held_bytes[index] > limit and len(held) > 1
        ):
            # The policy's own queue drops it too, or can no longer use it.
            self._held_bytes[index] -= held.pop(min(held))[3]
            evicted += 1
        self._offer(index, stamp, receive_ns)
        return _ACCEPTED if evicted == 0 else Filing(Filed.ACCEPTED, evicted=evicted)

    def _offer(self, index: int, stamp: int, now_ns: int) -> None:
        """One held message to the policy; the sets it proves are out at `now_ns`."""
        if index not in self._members:
            return  # a dead camera's frame: kept until the camera is live again
        if self._policy is None:
            self._publish({0: stamp}, now_ns)  # the lidar alone: nothing to wait for
            return
        policy = self._policy
        sets = policy.add(self._members.index(index), stamp)
        # What the policy deleted for a set wider than max_interval_ns no set can use: held
        # until a newer set (or a full queue) pushed it out, a max_interval_ns narrower than
        # the streams lie apart lost every sweep as "queue full", or with a short input, at
        # its end, without a word.
        for position, deleted in policy.too_wide:
            i = self._members[position]
            item = self._held[i].pop(deleted, None)
            if item is not None:
                self._held_bytes[i] -= item[3]
                self._unmatched[i > 0] += 1
        for stamps in sets:
            self._publish(dict(zip(self._members, stamps, strict=True)), now_ns)

    def _publish(self, stamps: dict[int, int], now_ns: int) -> None:
        members = {i: self._held[i].pop(t, None) for i, t in stamps.items()}
        for i, item in members.items():
            if item is not None:
                self._held_bytes[i] -= item[3]
        # Older messages of each stream can no longer join a set.
        for i, t in stamps.items():
            held = self._held[i]
            for old in [k for k in held if k < t]:
                self._held_bytes[i] -= held.pop(old)[3]
                self._unmatched[i > 0] += 1
        sweep_item = members[0]
        if sweep_item is None or any(m is None for m in members.values()):
            # A member was evicted from its bounded buffer before the set was proved: the
            # others are dropped with it.
            for i, item in members.items():
                self._unmatched[i > 0] += item is not None
            return
        sweep, receive_ns, decode_ns, _ = sweep_item
        assert isinstance(sweep, LidarSweep)
        cameras: dict[str, CameraFrame] = {}
        for i, item in members.items():
            if i == 0:
                continue
            assert item is not None and isinstance(item[0], CameraFrame)
            cameras[self._camera_streams[i - 1]] = item[0]
            decode_ns += item[2]
        self._out.append(MatchedSet(sweep, cameras, receive_ns, decode_ns, now_ns))

    def _check_members(self, now_ns: int) -> None:
        """Rebuilds the policy when the live cameras at `now_ns` are not its members."""
        self._now_ns = max(self._now_ns, now_ns)
        live = self.liveness
        if live is None:
            return
        members = (0, *(self._index[c] for c in self._camera_streams if not live.dead(c, now_ns)))
        if members != self._members:
            self._members = members
            self._rebuild(now_ns)

    def _rebuild(self, now_ns: int) -> None:
        """A fresh policy over the members, fed what is held, in arrival order."""
        self._policy = self._new_policy()
        held = sorted(
            (item[1], i, stamp) for i in self._members for stamp, item in self._held[i].items()
        )
        for _, i, stamp in held:
            if stamp in self._held[i]:  # not taken by a set the feeding proved
                self._offer(i, stamp, now_ns)

    def next_deadline_ns(self) -> int | None:
        """Sets come out on arrivals, and when a live camera is declared dead (the policy is
        rebuilt without it, and may prove held sets at once)."""
        live = self.liveness
        if live is None:
            return None
        deaths = [live.death_ns(self._camera_streams[i - 1]) for i in self._members[1:]]
        return min((d for d in deaths if d is not None), default=None)

    def ready(self, now_ns: int) -> list[MatchedSet]:
        self._check_members(now_ns)
        # A set is out when it is handed out (the node asks right after each arrival).
        out = [replace(m, ready_ns=now_ns) for m in self._out]
        self._out = []
        return out

    def drain(self, now_ns: int) -> list[MatchedSet]:
        # Nothing is due later: a set the policy has not proved is never published, and what
        # is held is dropped with the end of input.
        out = self.ready(now_ns)
        for i, held in enumerate(self._held):
            self._unmatched[i > 0] += len(held)
            held.clear()
            self._held_bytes[i] = 0
        return out

    @property
    def unmatched(self) -> tuple[int, int]:
        return (self._unmatched[0], self._unmatched[1])

    def reset_sweeps(self) -> int:
        return self._reset(0)

    def reset_camera(self, stream: str) -> int:
        index = self._index.get(stream)
        return 0 if index is None else self._reset(index)

    def _reset(self, index: int) -> int:
        """Drops stream `index`'s held messages (and with the lidar, the sets not handed out)
        and restarts the policy on what the other streams hold: its state orders stamps, which
        a clock jump has made meaningless."""
        dropped = len(self._held[index])
        self._held[index].clear()
        self._held_bytes[index] = 0
        if index == 0:
            dropped += len(self._out)
            self._out = []
        self._rebuild(self._now_ns)
        return dropped
