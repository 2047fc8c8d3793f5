"""Sweeps whose points' time offsets claim a span the lidar cannot have swept.

A sweep's per-point offsets set its end, and the node judges a sweep's clock by its end (it
leaves the sensor once complete). Offsets in the wrong unit, or a driver's bad arithmetic,
claim a sweep of a second at 10 Hz: its end then lies in the future, so the clock monitor
rejected it; but three such sweeps in a row agreed with each other, read as a lidar clock jump
forward (and the next good sweeps as a jump back), and the tracker started over twice.

The span is the sweep's own fault, not the clock's: a spinning lidar's sweeps do not overlap,
so one cannot take longer than the time since the previous sweep began. `SpanGate` refuses a
sweep whose span exceeds `factor` times that interval plus `slack_ns` (a lidar whose rate halves
still passes) before its clock is judged. A sweep after a gap (sweeps lost) is judged by the
longer interval, so more leniently; one whose stamp does not advance (a clock stepping back, a
duplicate) is left to the clock monitor and the synchroniser.
"""

from __future__ import annotations

from perception.msgs.types import LidarSweep, sweep_end_ns

__all__ = ["SpanGate"]


class SpanGate:
    """Per lidar stream, the stamp of the last sweep accepted (`accepted`), which `problem`
    judges the next sweep's span against. At most `max_streams` streams are remembered (a
    stream beyond them is not judged)."""

    def __init__(
        self, *, factor: float = 2.0, slack_ns: int = 10_000_000, max_streams: int = 64
    ) -> None:
        if factor < 1.0:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.factor = factor
        self.slack_ns = slack_ns
        self.max_streams = max_streams
        self._last_start_ns: dict[str, int] = {}

    def problem(self, stream: str, sweep: LidarSweep) -> str | None:
        """Why `sweep` cannot be what its offsets say (None when it can): its span is longer
        than the time since the last accepted sweep on `stream` began, beyond the tolerance."""
        last = self._last_start_ns.get(stream)
        stamp = sweep.header.stamp_ns
        if last is None or stamp <= last:
            return None
        interval = stamp - last
        span = sweep_end_ns(sweep) - stamp
        if span <= self.factor * interval + self.slack_ns:
            return None
        return (
            f"its points' time offsets span {span / 1e9:.3f} s, but it began "
            f"{interval / 1e9:.3f} s after the sweep before it (a lidar's sweeps do not overlap)"
        )

    def accepted(self, stream: str, stamp_ns: int) -> None:
        """A sweep on `stream` stamped `stamp_ns` was filed: the next is judged against it."""
        if stream in self._last_start_ns or len(self._last_start_ns) < self.max_streams:
            self._last_start_ns[stream] = stamp_ns
