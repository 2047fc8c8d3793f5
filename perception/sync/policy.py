"""The interface between the bundler and its sync policies.

A policy decides only which lidar sweep and camera frames form a set, and when a set is out;
the bundler (perception.sync.bundler) owns what every policy shares: the rig, GNSS, ego poses,
the counters and the SyncedBundle. A policy reports what it did with each message as a `Filing`
(never by raising) and hands finished sets over as `MatchedSet`s.

Two policies implement it: `CollectorPolicy` (perception.sync.collector, the default) and
`ApproximateTimeAdapter` (perception.sync.approximate_time, ROS message_filters semantics).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from perception.msgs.types import CameraFrame, LidarSweep

__all__ = ["Filed", "Filing", "MatchedSet", "SyncPolicy", "payload_bytes"]


def payload_bytes(msg: CameraFrame | LidarSweep) -> int:
    """The bytes a buffered message holds on to (its arrays or encoded data), for the byte
    bounds on the policies' queues."""
    if isinstance(msg, CameraFrame):
        if msg.image is not None:
            return int(msg.image.nbytes)
        return len(msg.data or b"")
    offsets = msg.point_time_offsets_ns
    return int(msg.points.nbytes) + (0 if offsets is None else int(offsets.nbytes))


class Filed(enum.Enum):
    """What the bundler (or its policy) did with a message."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # same stream and stamp seen already
    LATE = "late"  # its bundle was already emitted
    UNKNOWN_STREAM = "unknown_stream"
    NOT_AN_INPUT = "not_an_input"  # a DetectionList, Diagnostics, ... (not a sensor input)
    BAD_RIG = "bad_rig"  # a RigMessage whose document calibration rejects
    BAD_FIX = "bad_fix"  # a GnssFix with a non-finite or out-of-range position, velocity or heading


@dataclass(frozen=True)
class Filing:
    """A policy's answer to one sweep or frame: what it did with it, and how many older
    messages of the same stream it dropped to keep its queue bounded."""

    filed: Filed
    evicted: int = 0


@dataclass(frozen=True)
class MatchedSet:
    """A sweep and the camera frames a policy matched to it (cameras it could not match are
    absent). `receive_ns`: the sweep's host receive time; `decode_ns`: the members' decode
    durations summed; `ready_ns`: the host time the set came out (for `sync_wait_ns`)."""

    sweep: LidarSweep
    cameras: dict[str, CameraFrame]
    receive_ns: int
    decode_ns: int
    ready_ns: int


class SyncPolicy(Protocol):
    """Chooses the sets; all times are integer ns (stamps: sensor time, the rest host time)."""

    @property
    def camera_streams(self) -> tuple[str, ...]:
        """The camera streams the policy matches, in bundle order."""
        ...

    def add_sweep(self, sweep: LidarSweep, receive_ns: int, decode_ns: int) -> Filing:
        """File a lidar sweep received at `receive_ns`."""
        ...

    def add_camera(self, frame: CameraFrame, receive_ns: int, decode_ns: int) -> Filing:
        """File a camera frame received at `receive_ns`; UNKNOWN_STREAM for a stream the
        policy does not match."""
        ...

    def ready(self, now_ns: int) -> list[MatchedSet]:
        """The sets complete or due at host time `now_ns`, in sweep stamp order; each is
        handed out once."""
        ...

    def next_deadline_ns(self) -> int | None:
        """Host time at which a pending set falls due without further input; None if none."""
        ...

    def drain(self, now_ns: int) -> list[MatchedSet]:
        """End of input at host time `now_ns`: the sets `ready(now_ns)` gives, then every set
        still pending, as the live node would get them by polling at each deadline."""
        ...

    @property
    def unmatched(self) -> tuple[int, int]:
        """(sweeps, frames) the policy dropped so far because no set could use them any more
        (passed over by a newer set, or left unproved at the end of input); 0 for a policy
        that emits every sweep."""
        ...

    def reset_sweeps(self) -> int:
        """The lidar clock jumped: forget the sweeps (pending sets) and emitted stamps of its
        old timeline. Returns the sweeps dropped."""
        ...

    def reset_camera(self, stream: str) -> int:
        """Camera `stream`'s clock jumped: forget its buffered frames and the emitted stamps
        they were judged against. Returns the frames dropped."""
        ...
