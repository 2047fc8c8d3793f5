"""Per-stage timing on the monotonic clock."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

__all__ = [
    "ENGINE_STAGES",
    "STAGES",
    "STEP_STAGES",
    "StageTimer",
    "engine_ns",
    "engine_path",
    "overlap_ns",
    "serial_ns",
    "step_ns",
]

# Stage names in pipeline order; every DetectionList of the live node carries these keys (offline
# replays have no queue or publish, and their transport is the drive's log time). `transport` is
# the sweep's way from its last point to the node's receiver (on the host clock: with the lidar
# clock's estimated offset applied, what it took beyond the fastest sweep seen). `lidar_objects`
# is the lidar branch's work after the encoder (the lidar-only clusters). `fusion` holds the
# vehicle's motion to each camera's stamp, each camera's points in view (for a camera still
# being encoded, found before `camera_wait`), the fusion engine and the choice of lidar-only
# objects. `branch_wait`
# is there when the lidar branch runs beside the camera branch (`pipeline.parallel_branches`):
# the lidar branch's time on the frame's path after the camera boxes are fused (meanwhile the
# main thread places their detections on the map: what of that the branch outlasted counts
# here, not in `postprocess`). `camera_wait` is there when the cameras were encoded as their
# frames arrived (the live node's `pipeline.camera_ahead`): the frame's wait for those
# encodings; `camera_encoder` is then their compute, off the frame's path. `tracking` is the
# TrackList's alone: the tracker runs once the DetectionList is out (the TrackList carries the
# DetectionList's timings and its own).
# `decode` is, on the node, the decode and filing of the message that completed the frame's
# bundle (what of the decoding was on the frame's path and in its latency); `Pipeline.step`
# alone reports every member's.
STAGES = (
    "transport",
    "decode",
    "sync_wait",
    "queue_wait",
    "preprocess",
    "camera_encoder",
    "camera_wait",
    "lidar_encoder",
    "lidar_objects",
    "branch_wait",
    "fusion",
    "postprocess",
    "publish",
)


class StageTimer:
    """Accumulates nanoseconds per named stage (a stage entered twice adds up)."""

    def __init__(self) -> None:
        self.timings_ns: dict[str, int] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter_ns()
        try:
            yield
        finally:
            self.add(name, time.perf_counter_ns() - start)

    def add(self, name: str, duration_ns: int) -> None:
        self.timings_ns[name] = self.timings_ns.get(name, 0) + int(duration_ns)


#: The stages of one `Pipeline.step`: the whole frame's work (the others wait, decode, track or
#: publish).
STEP_STAGES = STAGES[STAGES.index("preprocess") : STAGES.index("postprocess") + 1]

#: The engine stages (with the lidar branch's clustering, which was part of fusion); with
#: parallel branches the lidar branch's time is hidden behind the camera branch but for
#: `branch_wait`.
ENGINE_STAGES = ("camera_encoder", "lidar_encoder", "lidar_objects", "fusion")
#: The lidar branch's stages.
_LIDAR_BRANCH = ("lidar_encoder", "lidar_objects")


def _hidden(timings_ns: Mapping[str, int]) -> set[str]:
    """Timings not on the frame's critical path: GPU sub-timings (within their stage), the
    lidar branch when it ran beside the camera branch (its wait, `branch_wait`, is), and the
    camera encoder when it ran ahead of the frame (its wait, `camera_wait`, is)."""
    hidden = {name for name in timings_ns if name.endswith("_gpu")}
    if "branch_wait" in timings_ns:
        hidden.update(_LIDAR_BRANCH)
    if "camera_wait" in timings_ns:
        hidden.add("camera_encoder")
    return hidden


def serial_ns(timings_ns: Mapping[str, int]) -> int:
    """A frame's stages along its critical path: what they add up to in wall time."""
    hidden = _hidden(timings_ns)
    return sum(v for name, v in timings_ns.items() if name not in hidden)


def engine_path(timings_ns: Mapping[str, int]) -> tuple[str, ...]:
    """The timings that make the engines' share of a frame's critical path, in `STAGES` order:
    the camera encoder or, where it ran ahead of the frame, the wait for it; the lidar branch
    or, where it ran beside the camera branch, the wait for it; fusion."""
    hidden = _hidden(timings_ns)
    on_path = {s for s in ENGINE_STAGES if s in timings_ns and s not in hidden}
    if "lidar_encoder" in hidden:
        on_path.add("branch_wait")
    if "camera_encoder" in hidden:
        on_path.add("camera_wait")
    return tuple(s for s in STAGES if s in on_path)


def engine_ns(timings_ns: Mapping[str, int]) -> int:
    """The engines' share of a frame's critical path (the sum of `engine_path`)."""
    return sum(timings_ns.get(s, 0) for s in engine_path(timings_ns))


def step_ns(timings_ns: Mapping[str, int]) -> int:
    """The whole frame: its `STEP_STAGES` along the critical path."""
    return serial_ns({name: v for name, v in timings_ns.items() if name in STEP_STAGES})


def overlap_ns(start_ns: int, end_ns: int, other_end_ns: int) -> int:
    """Of work from `start_ns` to `end_ns` (perf_counter_ns), the part done while another
    thread's work, ending at `other_end_ns`, still ran: hidden behind it, off a path that
    waits for both."""
    return min(max(other_end_ns - start_ns, 0), max(end_ns - start_ns, 0))
