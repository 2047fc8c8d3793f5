"""Sensor liveness: which input sensors are alive, from the receive times of their messages.

Each monitored stream has a nominal rate (the config's topic table). A stream is *dead* once it
has been silent for `dead_after_periods` periods: of its nominal period, or of its measured one
(the median of its recent receive intervals) when it runs slower, so a sensor slower than
configured is not declared dead between two of its messages, while one that stops is noticed
after the periods it used to keep. A stream never heard from is dead that long after the first
message of any stream. It is alive again with its next message (an outage, counted).

Everything is a function of the receive times given to `seen` and the `now_ns` asked about, never
of a clock read here, so offline replay (recorded receive times) gets the live node's answers.
A receiver that stalled (a slow message, a stopped process) and then drains a backlog must not
take the sensors whose messages wait in that backlog for dead: once `caught_up` is used, silence
is judged only up to the latest time the receiver was caught up (had nothing waiting).
The collector (perception.sync.collector) stops waiting for a dead camera: bundles go out at once
without it, degraded; `death_ns` tells the policies when a waiting set would be released, so the
receive side can poll at that moment (live: every poll; replay: NodeCore.idle_polls).
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable, Mapping

from perception.msgs.types import SensorStatus

__all__ = ["Liveness"]

# Receive intervals kept per stream for the measured period and rate.
_HISTORY = 9


class _Stream:
    def __init__(self, nominal_period_ns: int) -> None:
        self.nominal_period_ns = nominal_period_ns
        self.receives: deque[int] = deque(maxlen=_HISTORY)
        self.messages = 0
        self.outages = 0

    @property
    def last_ns(self) -> int | None:
        return self.receives[-1] if self.receives else None

    def period_ns(self) -> int:
        """The nominal period, or the measured one when it is longer."""
        r = self.receives
        if len(r) < 2:
            return self.nominal_period_ns
        measured = statistics.median(b - a for a, b in zip(r, list(r)[1:], strict=False))
        return max(self.nominal_period_ns, round(measured))


class Liveness:
    """Liveness of the streams in `rates_hz` (stream -> nominal rate, Hz). Others are not
    monitored and always alive. Raises ValueError for a rate or `dead_after_periods` <= 0."""

    def __init__(self, rates_hz: Mapping[str, float], dead_after_periods: float) -> None:
        if dead_after_periods <= 0 or any(not r > 0 for r in rates_hz.values()):
            raise ValueError("rates and dead_after_periods must be > 0")
        self.dead_after_periods = dead_after_periods
        self.rates_hz = dict(rates_hz)
        self._streams = {s: _Stream(round(1e9 / r)) for s, r in rates_hz.items()}
        self._start_ns: int | None = None
        # The latest time the receiver had no message waiting (None: not tracked, `now`).
        self._caught_up_ns: int | None = None

    @classmethod
    def for_streams(
        cls,
        streams: Iterable[str],
        rates_hz: Mapping[str, float],
        default_rate_hz: float,
        dead_after_periods: float,
    ) -> Liveness:
        """`streams` monitored, each at its rate in `rates_hz` or `default_rate_hz`."""
        return cls({s: rates_hz.get(s, default_rate_hz) for s in streams}, dead_after_periods)

    @property
    def streams(self) -> tuple[str, ...]:
        """The monitored streams."""
        return tuple(self._streams)

    def seen(self, stream: str, receive_ns: int) -> None:
        """A message of `stream` received at `receive_ns` (any stream: it starts the clock for
        the streams never heard from)."""
        if self._start_ns is None:
            self._start_ns = receive_ns
        s = self._streams.get(stream)
        if s is None:
            return
        last = s.last_ns
        if last is not None and receive_ns >= last + self._dead_after_ns(s):
            s.outages += 1
        if last is not None and receive_ns < last:
            return  # out of order (replayed input): the newest receive time stands
        s.receives.append(receive_ns)
        s.messages += 1

    def _dead_after_ns(self, s: _Stream) -> int:
        return round(self.dead_after_periods * s.period_ns())

    def grace_ns(self, stream: str) -> int:
        """How long a monitored `stream` may be silent before it is dead, now."""
        return self._dead_after_ns(self._streams[stream])

    def death_ns(self, stream: str) -> int | None:
        """When `stream` is (or was) declared dead without further messages; None if it is not
        monitored, or nothing was received yet."""
        s = self._streams.get(stream)
        if s is None or self._start_ns is None:
            return None
        since = s.last_ns if s.last_ns is not None else self._start_ns
        return since + self._dead_after_ns(s)

    def caught_up(self, now_ns: int) -> None:
        """The receiver had no message waiting at `now_ns`: silence up to then is real."""
        if self._caught_up_ns is None or now_ns > self._caught_up_ns:
            self._caught_up_ns = now_ns

    def horizon_ns(self, now_ns: int) -> int:
        """How far silence is known at `now_ns`: up to the latest time the receiver was caught
        up (`now_ns` when that is not tracked). Timeouts too are judged against it."""
        return now_ns if self._caught_up_ns is None else min(now_ns, self._caught_up_ns)

    def dead(self, stream: str, now_ns: int) -> bool:
        """Whether `stream` is dead at `now_ns` (as far as the receiver has caught up)."""
        death = self.death_ns(stream)
        return death is not None and self.horizon_ns(now_ns) >= death

    def rate_hz(self, stream: str, now_ns: int) -> float:
        """Messages per second over the stream's recent receive times (0 when dead or fewer
        than two)."""
        s = self._streams.get(stream)
        if s is None or len(s.receives) < 2 or self.dead(stream, now_ns):
            return 0.0
        span_ns = s.receives[-1] - s.receives[0]
        return (len(s.receives) - 1) * 1e9 / span_ns if span_ns > 0 else 0.0

    def status(self, now_ns: int) -> tuple[SensorStatus, ...]:
        """Every monitored stream at `now_ns`, for diagnostics (`alive`: heard from and not
        dead)."""
        return tuple(
            SensorStatus(
                stream=name,
                alive=self._alive(name, now_ns),
                rate_hz=self.rate_hz(name, now_ns),
                nominal_rate_hz=self.rates_hz[name],
                messages=s.messages,
                outages=s.outages,
                last_receive_ns=s.last_ns,
            )
            for name, s in self._streams.items()
        )

    def _alive(self, stream: str, now_ns: int) -> bool:
        """Heard from, and not dead (one never heard from is not waited for once dead, but
        is not alive before either)."""
        return self._streams[stream].last_ns is not None and not self.dead(stream, now_ns)

    def overall(self, now_ns: int) -> str:
        """`ok` (every stream alive), `degraded` (some not) or `stale` (none)."""
        alive = [self._alive(s, now_ns) for s in self._streams]
        if not any(alive):
            return "stale"
        return "ok" if all(alive) else "degraded"
