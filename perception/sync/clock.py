"""Sensor clock vs host clock: offset and drift estimated online and robustly; jumps flagged.

For each stream, every message gives `d = host receive time - sensor stamp`, which is the clock
offset plus a transport latency that is never negative and often large (queues, bursts). The
offset is therefore the *lower envelope* of d: the window of recent samples is cut into
`chunks` consecutive groups, the minimum of each group kept, and a Theil-Sen line (median of
pairwise slopes, then median intercept) fitted through those minima. Latency spikes only raise
single samples and do not move the envelope; a drift moves it linearly.

A clock jump (sensor clock reset or step, NTP/PTP step) shows as a sample below the envelope by
more than `jump_threshold_ns` (the message would have arrived before it was sent), or as
`confirm` consecutive samples above it by more than the threshold. It is flagged, counted and
the history restarted so the estimate follows the new clock at once.
"""

from __future__ import annotations

import statistics
from collections import deque

from perception.msgs.schema import INT64_MAX, INT64_MIN
from perception.msgs.types import SensorClock

__all__ = ["ClockEstimator", "ClockMonitor"]


class ClockEstimator:
    """Online offset/drift of one sensor clock. Raises ValueError for a window < 2 * chunks."""

    def __init__(
        self,
        window: int = 256,
        chunks: int = 8,
        jump_threshold_ns: int = 50_000_000,
        confirm: int = 3,
    ) -> None:
        if chunks < 2 or window < 2 * chunks or jump_threshold_ns <= 0 or confirm < 1:
            raise ValueError("need chunks >= 2, window >= 2 * chunks, threshold > 0, confirm >= 1")
        self.chunks = chunks
        self.jump_threshold_ns = jump_threshold_ns
        self.confirm = confirm
        self._samples: deque[tuple[int, int]] = deque(maxlen=window)
        self._above = 0
        self._fit: tuple[int, float, float] | None = None  # (t_ref, intercept ns, slope)
        self.jumps = 0
        self.last_jump_stamp_ns: int | None = None

    @property
    def sample_count(self) -> int:
        """Samples in the window (since the last jump)."""
        return len(self._samples)

    def predict(self, stamp_ns: int) -> int | None:
        """Estimated host - sensor offset (ns) at sensor time `stamp_ns`, or None."""
        if self._fit is None:
            return None
        t_ref, intercept, slope = self._fit
        return _saturated(round(intercept + slope * (stamp_ns - t_ref)))

    def add(self, stamp_ns: int, receive_ns: int) -> bool:
        """File one (sensor stamp, host receive) pair; True when it reveals a clock jump."""
        d = receive_ns - stamp_ns
        expected = self.predict(stamp_ns)
        jump = False
        if expected is not None:
            r = d - expected
            if r < -self.jump_threshold_ns:
                jump = True
            elif r > self.jump_threshold_ns:
                self._above += 1
                jump = self._above >= self.confirm
            else:
                self._above = 0
        if jump:
            self.jumps += 1
            self.last_jump_stamp_ns = _saturated(stamp_ns)
            # Keep the samples since the jump (the confirming ones) and restart from them.
            keep = list(self._samples)[-(self._above - 1) :] if self._above > 1 else []
            self._samples.clear()
            self._samples.extend(keep)
            self._above = 0
            self._fit = None
        self._samples.append((stamp_ns, d))
        if self._above == 0 or self._fit is None:
            self._refit()
        return jump

    def _refit(self) -> None:
        s = list(self._samples)
        if not s:
            return
        n = max(1, min(self.chunks, len(s) // 2))
        size = -(-len(s) // n)
        # Chunks are cut from the newest sample back, and a short oldest chunk is dropped when
        # full ones remain: a newest sample alone in a chunk would be an envelope point by
        # itself, so one delay spike would bend the fit and make the next normal message look
        # like a clock jump.
        chunks = [s[max(0, end - size) : end] for end in range(len(s), 0, -size)]
        if len(chunks) > 2 and len(chunks[-1]) < size:
            chunks.pop()
        minima = [min(chunk, key=lambda x: x[1]) for chunk in reversed(chunks)]
        t_ref = s[-1][0]
        slopes = [
            (b[1] - a[1]) / (b[0] - a[0])
            for i, a in enumerate(minima)
            for b in minima[i + 1 :]
            if b[0] != a[0]
        ]
        slope = statistics.median(slopes) if slopes else 0.0
        intercept = statistics.median(d - slope * (t - t_ref) for t, d in minima)
        self._fit = (t_ref, intercept, slope)

    def state(self, stream: str = "") -> SensorClock:
        """Current estimate for diagnostics, as the clock of `stream`."""
        last = self._samples[-1][0] if self._samples else None
        offset = None if last is None else self.predict(last)
        slope = 0.0 if self._fit is None else self._fit[2]
        return SensorClock(stream, offset, slope * 1e6, len(self._samples), self.jumps,
                           self.last_jump_stamp_ns)  # fmt: skip


class ClockMonitor:
    """One ClockEstimator per stream, created on first sight (at most `max_streams`)."""

    def __init__(self, max_streams: int = 64, **estimator_args: int) -> None:
        self.max_streams = max_streams
        self._args = estimator_args
        self._streams: dict[str, ClockEstimator] = {}

    def observe(self, stream: str, stamp_ns: int, receive_ns: int) -> bool:
        """File one message; True when it reveals a clock jump of its stream. Streams beyond
        `max_streams` are ignored (returns False)."""
        est = self._streams.get(stream)
        if est is None:
            if len(self._streams) >= self.max_streams:
                return False
            est = self._streams[stream] = ClockEstimator(**self._args)
        return est.add(stamp_ns, receive_ns)

    def to_host_ns(self, stream: str, stamp_ns: int, min_samples: int = 1) -> int | None:
        """A sensor stamp on the host clock, or None before the stream has an estimate from
        at least `min_samples` messages."""
        est = self._streams.get(stream)
        if est is None or est.sample_count < min_samples:
            return None
        offset = est.predict(stamp_ns)
        return None if offset is None else _saturated(stamp_ns + offset)

    def diagnostics(self) -> dict[str, SensorClock]:
        """Per-stream offset, drift and jumps."""
        return {name: est.state(name) for name, est in self._streams.items()}


def _saturated(ns: int) -> int:
    """`ns` clamped to int64: derived times go into messages, and a stamp from a broken sensor
    must not make a DetectionList or Diagnostics unencodable."""
    return min(max(ns, INT64_MIN), INT64_MAX)
