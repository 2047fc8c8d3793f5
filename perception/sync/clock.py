"""Sensor clock vs host clock: offset and drift estimated online and robustly; implausible stamps
rejected; clock jumps confirmed before they are believed.

For each stream, every message gives `d = host receive time - sensor stamp`, which is the clock
offset plus a transport latency that is never negative and often large (queues, bursts). The
offset is therefore the *lower envelope* of d: the window of recent samples is cut into
`chunks` consecutive groups, the minimum of each group kept, and a Theil-Sen line (median of
pairwise slopes, then median intercept) fitted through those minima. Latency spikes only raise
single samples and do not move the envelope; a drift moves it linearly. The slope is held to
`max_drift_ppm` (1000 ppm: ten times a free-running crystal's tolerance): a stream's first
messages, close together and delayed unequally (queued behind a start-up), can show any slope,
and such a slope, carried across a pause, put the estimate seconds off. The messages after it
then looked late, were not taken (see below), and the estimate never recovered: it was wrong by
more every second until the stream was rejected and restarted as a jump.

Each message is judged against that estimate (`ClockEstimator.add` returns a `Verdict`). With
`r = d - expected offset`:
- Until the stream has `warmup` samples, |r| (|d| before any sample: the host clock is the only
  reference) may be up to `max_offset_ns`; the young envelope follows the samples.
- Then r may be down to `-jump_threshold_ns` (a stamp further ahead would mean the message
  arrived before it was sent) and up to `max_delay_ns` (a transport or receive delay).
- Only samples within `jump_threshold_ns` above the envelope (or below it) enter the window: a
  late one says nothing about the envelope.
- Outside those bounds the message is REJECTED (dropped, counted): one stamp an hour ahead or
  five seconds behind is an outlier, and must neither be published nor move the estimate.
- A clock jump (a PTP resync, a sensor restart, a player looping) is a *persistent* new offset:
  `confirm` consecutive messages outside the bounds, or late by more than the threshold, whose
  d agree within `jump_threshold_ns`, spanning at least `confirm_ns` of receive time (for a
  late run, starting where the stamps stepped; see below). The last of them is JUMPED (ADOPTED
  for a stream never estimated: a sensor clock far off the host clock from the start) and the
  estimate restarts from them.

Why the span and the agreement: a receiver that stalls (a slow message, a busy machine) delivers
a backlog of messages late and then at once. Their d are large, but fall by about one period
per message while the backlog drains, and arrive within a short receive time: neither agrees
nor spans, so a stall never reads as a jump (it used to: every late burst restarted the
estimate, and the next normal message looked like a jump back).

Why the stamps must step: a receiver slowed for longer (a loaded machine) delivers messages
late by a steady amount, which agrees and spans; but their stamps keep their usual interval (a
multiple of it after lost messages), while a clock that steps back advances its stamps less by
the step. So a late run confirms a jump only if it started where the interval of the stamps
was off; one that did not is a delay: delivered when within `max_delay_ns` (a longer transport
delay is no clock change: the latency measured from the stamp should include it, so the
envelope is not raised for it), and taken for a new offset only after `_STEADY_CONFIRM_NS` when
beyond it (a sensor back from an outage with a new clock may keep the phase of its stamps).

A young estimate (fewer than `warmup` samples) is replaced, silently, by a run of late messages
that agree for `_STEADY_CONFIRM_NS`: it was set too low by an early stamp ahead of its time, and
since late messages are not taken it would otherwise never grow out of it.
"""

from __future__ import annotations

import enum
import statistics
from collections import deque

from perception.msgs.schema import INT64_MAX, INT64_MIN
from perception.msgs.types import SensorClock

__all__ = ["ClockEstimator", "ClockMonitor", "Verdict"]

MS = 1_000_000
# A run of rejected late messages whose stamps did not step confirms a new offset only after
# this much receive time: a sustained overload delays messages steadily, and is no clock jump.
_STEADY_CONFIRM_NS = 2_000 * MS


class Verdict(enum.Enum):
    """What a message's stamp says about its stream's clock."""

    ACCEPTED = "accepted"  # consistent with the clock (or a delay within the bounds)
    REJECTED = "rejected"  # implausible, and not (yet) a confirmed jump: drop the message
    JUMPED = "jumped"  # confirms a clock jump: the estimate restarted at the new offset
    ADOPTED = "adopted"  # confirms a clock far off the host clock before any estimate


class ClockEstimator:
    """Online offset/drift of one sensor clock, and the judge of its stamps (see the module
    docstring). Times in ns. Raises ValueError for a window < 2 * chunks, a non-positive
    threshold, bound, count or drift."""

    def __init__(
        self,
        window: int = 256,
        chunks: int = 8,
        jump_threshold_ns: int = 50 * MS,
        confirm: int = 3,
        *,
        confirm_ns: int = 150 * MS,
        max_delay_ns: int = 1000 * MS,
        max_offset_ns: int = 2000 * MS,
        warmup: int = 16,
        max_drift_ppm: int = 1000,
    ) -> None:
        if chunks < 2 or window < 2 * chunks or jump_threshold_ns <= 0 or confirm < 1:
            raise ValueError("need chunks >= 2, window >= 2 * chunks, threshold > 0, confirm >= 1")
        if max_delay_ns < jump_threshold_ns or max_offset_ns <= 0 or confirm_ns < 0:
            raise ValueError("need max_delay_ns >= jump_threshold_ns, max_offset_ns > 0")
        if not 2 <= warmup <= window:
            raise ValueError("need 2 <= warmup <= window")
        if max_drift_ppm < 1:
            raise ValueError("need max_drift_ppm >= 1")
        self.chunks = chunks
        self.jump_threshold_ns = jump_threshold_ns
        self.confirm = confirm
        self.confirm_ns = confirm_ns
        self.max_delay_ns = max_delay_ns
        self.max_offset_ns = max_offset_ns
        self.warmup = warmup
        self.max_drift = max_drift_ppm * 1e-6
        self._samples: deque[tuple[int, int]] = deque(maxlen=window)
        # Messages that may start a new offset: (stamp, receive, d), consecutive, agreeing.
        self._candidates: deque[tuple[int, int, int]] = deque(maxlen=window)
        # While the estimate is young: the current run of late messages that agree, (stamp, d).
        self._young_late: deque[tuple[int, int]] = deque(maxlen=window)
        self._fit: tuple[int, float, float] | None = None  # (t_ref, intercept ns, slope)
        # The last stamp not rejected, and the recent intervals between such stamps.
        self._prev_stamp_ns: int | None = None
        self._intervals: deque[int] = deque(maxlen=9)
        # Whether the current run of candidates started where the stamps stepped.
        self._run_stepped = True
        self._total = 0
        self.jumps = 0
        self.rejected = 0
        self.last_jump_stamp_ns: int | None = None

    @property
    def sample_count(self) -> int:
        """Samples in the window (since the last jump)."""
        return len(self._samples)

    @property
    def total_samples(self) -> int:
        """Samples taken since the estimator was created (jumps do not reset it)."""
        return self._total

    def predict(self, stamp_ns: int) -> int | None:
        """Estimated host - sensor offset (ns) at sensor time `stamp_ns`, or None."""
        if self._fit is None:
            return None
        t_ref, intercept, slope = self._fit
        return _saturated(round(intercept + slope * (stamp_ns - t_ref)))

    def add(self, stamp_ns: int, receive_ns: int) -> Verdict:
        """Judge one (sensor stamp, host receive) pair and learn from it (see the module
        docstring); a REJECTED pair leaves the estimate as it was."""
        verdict = self._judge(stamp_ns, receive_ns)
        if verdict is not Verdict.REJECTED:
            prev = self._prev_stamp_ns
            if verdict is Verdict.ACCEPTED and prev is not None and stamp_ns > prev:
                self._intervals.append(stamp_ns - prev)
            self._prev_stamp_ns = stamp_ns
        return verdict

    def _steps(self, stamp_ns: int) -> bool:
        """Whether the stamps stepped here: their interval from the previous message is not
        near a multiple of the stream's usual interval (a clock that steps back by s advances
        s less; a message merely delivered late keeps its usual interval, one after lost
        messages a multiple of it). True when there is no usual interval yet."""
        if self._prev_stamp_ns is None or len(self._intervals) < 3:
            return True
        interval = stamp_ns - self._prev_stamp_ns
        if interval <= 0:
            return True
        usual = statistics.median(self._intervals)
        periods = max(1, round(interval / usual))
        return abs(interval - periods * usual) > self.jump_threshold_ns

    def _judge(self, stamp_ns: int, receive_ns: int) -> Verdict:
        d = receive_ns - stamp_ns
        expected = self.predict(stamp_ns)
        if expected is None:
            # Nothing to go by but the host clock.
            if abs(d) <= self.max_offset_ns:
                self._take(stamp_ns, d)
                return Verdict.ACCEPTED
            return self._candidate(stamp_ns, receive_ns, d, accept=False, stepped=True)
        r = d - expected
        if len(self._samples) < self.warmup:
            # A young envelope may be too high (its first messages were delayed): a stamp
            # ahead of it lowers it.
            lo, hi = -self.max_offset_ns, self.max_offset_ns
        else:
            lo, hi = -self.jump_threshold_ns, self.max_delay_ns
        if r < lo:
            # Ahead: no delay does that, only a clock that changed.
            return self._candidate(stamp_ns, receive_ns, d, accept=False, stepped=True)
        if r <= self.jump_threshold_ns:
            self._candidates.clear()
            self._young_late.clear()
            self._take(stamp_ns, d)
            return Verdict.ACCEPTED
        # Late by more than the threshold: a delay, or a clock that stepped back. It says
        # nothing about the envelope, so it is not taken into the window (a stall would
        # otherwise raise a young envelope, and normal messages would then look like a jump
        # ahead). Within the delay allowed it is delivered.
        if len(self._samples) < self.warmup and r <= hi and self._young_too_low(stamp_ns, d):
            return Verdict.ACCEPTED
        return self._candidate(stamp_ns, receive_ns, d, accept=r <= hi, stepped=None)

    def _young_too_low(self, stamp_ns: int, d: int) -> bool:
        """Whether a young estimate, which every message has found late by the same amount for
        `_STEADY_CONFIRM_NS` (and `warmup` messages), is replaced by those messages: it was
        too low (an early stamp ahead of its time set its envelope), and, never taken, the
        late messages would leave it so for good. A stall's backlog does not agree; a load that
        delays messages steadily rarely lasts that long in a stream's first seconds."""
        run = self._young_late
        if run and not all(abs(d - x[1]) <= self.jump_threshold_ns for x in run):
            run.clear()
        run.append((stamp_ns, d))
        if len(run) < self.warmup or run[-1][0] - run[0][0] < _STEADY_CONFIRM_NS:
            return False
        self._reseed(list(run))
        return True

    def _candidate(
        self, stamp_ns: int, receive_ns: int, d: int, *, accept: bool, stepped: bool | None
    ) -> Verdict:
        """A message off the estimate: a candidate for a new offset. A run of them that agree
        on one offset (within the threshold) confirms it once `confirm` of them span
        `confirm_ns` of receive time, if it started where the stamps stepped (`stepped`, or
        None: look at the stamp interval); a late run that started where they did not is a
        delay: delivered (`accept`) it never confirms, rejected only after `_STEADY_CONFIRM_NS`
        (a receiver slowed by load delivers late messages with their usual intervals, but a
        sensor back from an outage may have a new clock on its old phase)."""
        c = self._candidates
        if not (c and all(abs(d - x[2]) <= self.jump_threshold_ns for x in c)):
            c.clear()
            self._run_stepped = self._steps(stamp_ns) if stepped is None else stepped
            if accept and not self._run_stepped:
                return Verdict.ACCEPTED
        c.append((stamp_ns, receive_ns, d))
        span_ns = self.confirm_ns if self._run_stepped else max(self.confirm_ns, _STEADY_CONFIRM_NS)
        if len(c) >= self.confirm and c[-1][1] - c[0][1] >= span_ns:
            return self._restart(stamp_ns, had_estimate=self._fit is not None)
        if accept:
            return Verdict.ACCEPTED
        self.rejected += 1
        return Verdict.REJECTED

    def _take(self, stamp_ns: int, d: int, *, refit: bool = True) -> None:
        self._samples.append((stamp_ns, d))
        self._total += 1
        if refit:
            self._refit()

    def _restart(self, stamp_ns: int, *, had_estimate: bool) -> Verdict:
        """The estimate restarts from the candidates that confirmed the new offset."""
        self._reseed([(stamp, d) for stamp, _, d in self._candidates])
        if not had_estimate:
            return Verdict.ADOPTED
        self.jumps += 1
        self.last_jump_stamp_ns = stamp_ns
        return Verdict.JUMPED

    def _reseed(self, samples: list[tuple[int, int]]) -> None:
        """The estimate starts over from `samples` (stamp, d) alone: a confirmed jump's
        candidates, or the late run that replaces a young estimate."""
        self._candidates.clear()
        self._young_late.clear()
        self._samples.clear()
        for stamp, d in samples:
            self._take(stamp, d, refit=False)
        self._refit()

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
        bounds = [(max(0, end - size), end) for end in range(len(s), 0, -size)]
        if len(bounds) > 2 and bounds[-1][1] - bounds[-1][0] < size:
            bounds.pop()
        # Each chunk's first sample of least delay, found over the delays alone: this runs for
        # every sample taken (the sweep's on its path), and takes 0.6 of a keyed min's time.
        delays = [d for _, d in s]
        minima = [s[delays.index(min(delays[a:b]), a, b)] for a, b in reversed(bounds)]
        t_ref = s[-1][0]
        slopes = [
            (b[1] - a[1]) / (b[0] - a[0])
            for i, a in enumerate(minima)
            for b in minima[i + 1 :]
            if b[0] != a[0]
        ]
        slope = statistics.median(slopes) if slopes else 0.0
        slope = min(max(slope, -self.max_drift), self.max_drift)
        intercept = statistics.median(d - slope * (t - t_ref) for t, d in minima)
        self._fit = (t_ref, intercept, slope)

    def state(self, stream: str = "") -> SensorClock:
        """Current estimate for diagnostics, as the clock of `stream`."""
        last = self._samples[-1][0] if self._samples else None
        offset = None if last is None else self.predict(last)
        slope = 0.0 if self._fit is None else self._fit[2]
        return SensorClock(stream, offset, slope * 1e6, len(self._samples), self.jumps,
                           self.last_jump_stamp_ns, self.rejected)  # fmt: skip


class ClockMonitor:
    """One ClockEstimator per stream, created on first sight (at most `max_streams`); the
    estimator arguments apply to each."""

    def __init__(self, max_streams: int = 64, **estimator_args: int) -> None:
        self.max_streams = max_streams
        self._args = estimator_args
        self._streams: dict[str, ClockEstimator] = {}

    def observe(self, stream: str, stamp_ns: int, receive_ns: int) -> Verdict:
        """Judge one message of `stream` (see ClockEstimator.add). Streams beyond
        `max_streams` are not judged (ACCEPTED)."""
        est = self._streams.get(stream)
        if est is None:
            if len(self._streams) >= self.max_streams:
                return Verdict.ACCEPTED
            est = self._streams[stream] = ClockEstimator(**self._args)
        return est.add(stamp_ns, receive_ns)

    def to_host_ns(self, stream: str, stamp_ns: int, min_samples: int = 1) -> int | None:
        """A sensor stamp on the host clock, or None before the stream has taken at least
        `min_samples` messages (since it was first seen: after a jump, the estimate from the
        messages that confirmed it is used at once)."""
        est = self._streams.get(stream)
        if est is None or est.total_samples < min_samples:
            return None
        offset = est.predict(stamp_ns)
        return None if offset is None else _saturated(stamp_ns + offset)

    def expected_offset_ns(self, stream: str, stamp_ns: int) -> int | None:
        """The estimated host - sensor offset of `stream` at `stamp_ns` (None: no estimate)."""
        est = self._streams.get(stream)
        return None if est is None else est.predict(stamp_ns)

    def diagnostics(self) -> dict[str, SensorClock]:
        """Per-stream offset, drift, jumps and rejected stamps."""
        return {name: est.state(name) for name, est in self._streams.items()}


def _saturated(ns: int) -> int:
    """`ns` clamped to int64: derived times go into messages, and a stamp from a broken sensor
    must not make a DetectionList or Diagnostics unencodable."""
    return min(max(ns, INT64_MIN), INT64_MAX)
