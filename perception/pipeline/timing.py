"""Per-stage timing on the monotonic clock."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["STAGES", "StageTimer"]

# Stage names in pipeline order; every DetectionList of the live node carries these keys (offline
# replays have no queue or publish).
STAGES = (
    "decode",
    "sync_wait",
    "queue_wait",
    "preprocess",
    "camera_encoder",
    "lidar_encoder",
    "fusion",
    "postprocess",
    "tracking",
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
