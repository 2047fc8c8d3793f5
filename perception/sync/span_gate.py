"""Sweeps whose points' time offsets claim a span the lidar cannot have swept.

A sweep's per-point offsets set its end, and the node judges a sweep's clock by its end (it
leaves the sensor once complete). Offsets in the wrong unit, or a driver's bad arithmetic,
claim a sweep of a second at 10 Hz: its end then lies in the future, so the clock monitor
rejected it; but three such sweeps in a row agreed with each other, read as a lidar clock jump
forward (and the next good sweeps as a jump back), and the tracker started over twice.

The span is the sweep's own fault, not the clock's. `SpanGate` refuses a sweep, before its clock
is judged, whose span is beyond both of what the stream's own sweeps allow:
- the time since the previous sweep began, times `factor`, plus `slack_ns`: a spinning lidar's
  sweeps do not overlap (a lidar whose rate halves still passes; after a gap, sweeps lost, the
  longer interval judges more leniently);
- the median span of the stream's latest accepted sweeps, times `factor`, plus `slack_ns`: a
  lidar's sweeps span alike. A drive played faster than it was recorded (`perception bench` at
  25 Hz of a 10 Hz drive) has sweeps that overlap but span as before, and a lidar whose
  sweeps covered a sector and now cover the circle ends within the interval: either rule alone
  would have refused them.
A sweep whose stamp does not advance (a clock stepping back, a duplicate) is left to the clock
monitor and the synchroniser, as is the first sweep with offsets (nothing to judge it by).
"""

from __future__ import annotations

import statistics
from collections import deque

from perception.msgs.types import LidarSweep, sweep_end_ns

__all__ = ["SpanGate"]

#: Accepted sweeps whose spans make a stream's usual span (their median).
_HISTORY = 8


class _Stream:
    def __init__(self) -> None:
        self.last_start_ns: int | None = None
        self.spans_ns: deque[int] = deque(maxlen=_HISTORY)


class SpanGate:
    """Per lidar stream, the stamp and span of the sweeps accepted (`accepted`), which `problem`
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
        self._streams: dict[str, _Stream] = {}

    def problem(self, stream: str, sweep: LidarSweep) -> str | None:
        """Why `sweep` cannot be what its offsets say (None when it can): see the module
        docstring."""
        state = self._streams.get(stream)
        stamp = sweep.header.stamp_ns
        if state is None or state.last_start_ns is None or stamp <= state.last_start_ns:
            return None
        interval = stamp - state.last_start_ns
        span = sweep_end_ns(sweep) - stamp
        if span <= self.factor * interval + self.slack_ns:
            return None
        usual = statistics.median_low(state.spans_ns) if state.spans_ns else None
        if usual is not None and span <= self.factor * usual + self.slack_ns:
            return None
        also = "" if usual is None else f", and this lidar's sweeps span {usual / 1e9:.3f} s"
        return (
            f"its points' time offsets span {span / 1e9:.3f} s, but it began "
            f"{interval / 1e9:.3f} s after the sweep before it{also}"
        )

    def accepted(self, stream: str, sweep: LidarSweep) -> None:
        """`sweep` on `stream` was filed: the next is judged against it."""
        state = self._streams.get(stream)
        if state is None:
            if len(self._streams) >= self.max_streams:
                return
            state = self._streams[stream] = _Stream()
        state.last_start_ns = sweep.header.stamp_ns
        offsets = sweep.point_time_offsets_ns
        if offsets is not None and len(offsets):
            state.spans_ns.append(sweep_end_ns(sweep) - sweep.header.stamp_ns)
