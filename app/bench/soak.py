"""A bench run over time (a soak): the figures per window of the run, the node's memory growth
and the verdict. Pure functions; times in seconds from the run's first send.

Per window of send time (`window_s`, a minute by default): sweeps sent, answered and dropped,
the end-to-end latency percentiles of the answered ones, the node's RSS (median and max of its
samples) and CPU, and how much its skipped-bundle and error counters (`ERROR_COUNTERS`, from its
diagnostics) grew.

Memory: the first minute (`RSS_BASELINE_S`) is warm-up - ONNX Runtime's arenas, the allocator's
pools and the node's bounded queues fill - so the growth is measured from the RSS just after it
(`RSS_MEDIAN_S` of samples, their median: single samples jump with garbage collection) to the
RSS at the end (the last `RSS_MEDIAN_S`), as a percentage, against `RSS_GROWTH_LIMIT_PCT`; the
least-squares slope over everything after the first minute (MB per hour, once there are
`RSS_TREND_MIN_S` of it) tells a steady leak from a step. The soak passes when no sweep was
dropped, no error counter grew and the growth is under the limit; a run too short to have an
RSS after the first minute and at its end gets no memory verdict (None).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from app.bench.stats import Frame, LatencyStats, latency_stats

__all__ = [
    "ERROR_COUNTERS",
    "RSS_BASELINE_S",
    "RSS_GROWTH_LIMIT_PCT",
    "RSS_MEDIAN_S",
    "RSS_TREND_MIN_S",
    "RssGrowth",
    "Soak",
    "Window",
    "counter_growth",
    "rss_growth",
    "soak_summary",
]

#: The node's diagnostics counters that count errors; a clean run adds to none of them.
ERROR_COUNTERS = ("decode_errors", "sync_errors", "step_errors", "loop_errors", "receiver_restarts")
#: The warm-up: memory growth is measured from the end of the first minute.
RSS_BASELINE_S = 60.0
#: The RSS at a time is the median of the samples over this long (from it on, or up to the end).
RSS_MEDIAN_S = 10.0
#: A soak passes with less RSS growth than this after the first minute.
RSS_GROWTH_LIMIT_PCT = 5.0
#: The trend is given from this long after the first minute on: over a few minutes, the steps
#: the allocator takes in bursts read as a slope of tens of MB per hour.
RSS_TREND_MIN_S = 600.0

#: (seconds from the first send, node counters) of a diagnostics message.
CountersAt = tuple[float, Mapping[str, int]]


@dataclass(frozen=True)
class Window:
    """One window of the run, [start_s, end_s) of send time. `rss_mb`: median of the node's
    RSS samples in it (MB, 1e6 bytes); `errors` and `skipped_bundles`: growth of the node's
    counters over it (None without diagnostics)."""

    start_s: float
    end_s: float
    sent: int
    received: int
    dropped: int
    end_to_end: LatencyStats | None
    rss_mb: float | None
    rss_max_mb: float | None
    cpu_mean_pct: float | None
    errors: int | None
    skipped_bundles: int | None


@dataclass(frozen=True)
class RssGrowth:
    """The node's RSS after the first minute (`baseline_mb`, the median over `RSS_MEDIAN_S`
    from `baseline_s`) and at the end (`final_mb`), the growth between them in % against
    `limit_pct`, and the trend after the first minute (MB per hour, least squares; None for
    less than `RSS_TREND_MIN_S` of samples after it)."""

    baseline_s: float
    baseline_mb: float
    final_mb: float
    growth_pct: float
    slope_mb_per_h: float | None
    limit_pct: float
    ok: bool


@dataclass(frozen=True)
class Soak:
    """The run over time: its windows, the RSS samples (s, MB), the memory growth (None: the
    run was too short), sweeps dropped, the growth of each error counter over the run (None:
    no diagnostics) and the verdict (None without a memory figure or diagnostics)."""

    window_s: float
    windows: tuple[Window, ...]
    rss_series: tuple[tuple[float, float], ...]
    rss: RssGrowth | None
    dropped: int
    errors: int | None
    errors_by_counter: dict[str, int]
    passed: bool | None

    def verdict(self) -> str:
        """One line: pass/fail and why."""
        if self.rss is None:
            memory = (
                f"RSS growth n/a (the run is shorter than {RSS_BASELINE_S:g} s + "
                f"{2 * RSS_MEDIAN_S:g} s)"
            )
        else:
            r = self.rss
            trend = (
                f"{r.slope_mb_per_h:+.1f} MB/h"
                if r.slope_mb_per_h is not None
                else f"n/a under {RSS_TREND_MIN_S / 60:g} min"
            )
            memory = (
                f"RSS {r.growth_pct:+.2f}% from {r.baseline_mb:.1f} MB after the first minute to "
                f"{r.final_mb:.1f} MB at the end (limit {r.limit_pct:g}%; trend {trend})"
            )
        errors = "errors n/a (no diagnostics)" if self.errors is None else f"{self.errors} errors"
        if self.errors_by_counter and self.errors:
            errors += " (" + ", ".join(f"{k} {v}" for k, v in self.errors_by_counter.items()) + ")"
        word = {True: "pass", False: "FAIL", None: "no verdict"}[self.passed]
        return f"{word}: {self.dropped} dropped, {errors}, {memory}"


def counter_growth(
    before: Mapping[str, int] | None, after: Mapping[str, int] | None, names: Sequence[str]
) -> dict[str, int] | None:
    """How much each of `names` grew from `before` to `after` (counters missing from both are
    left out; None when either is unknown)."""
    if before is None or after is None:
        return None
    return {n: int(after.get(n, 0)) - int(before.get(n, 0)) for n in names if n in after}


def _counters_at(timeline: Sequence[CountersAt], t_s: float) -> Mapping[str, int] | None:
    """The counters of the last diagnostics message at or before `t_s`."""
    found = None
    for at_s, counters in timeline:
        if at_s > t_s:
            break
        found = counters
    return found


def rss_growth(
    samples: Sequence[tuple[float, float]], *, limit_pct: float = RSS_GROWTH_LIMIT_PCT
) -> RssGrowth | None:
    """Memory growth from `samples` (s, RSS MB) as the module docstring says; None when no
    sample falls in the window after the first minute or the end window starts before it
    ends."""
    if not samples:
        return None
    t = np.array([s for s, _ in samples], dtype=np.float64)
    mb = np.array([m for _, m in samples], dtype=np.float64)
    end_s = float(t.max())
    base = (t >= RSS_BASELINE_S) & (t < RSS_BASELINE_S + RSS_MEDIAN_S)
    final = t >= end_s - RSS_MEDIAN_S
    if not base.any() or end_s - RSS_MEDIAN_S < RSS_BASELINE_S + RSS_MEDIAN_S:
        return None
    baseline = float(np.median(mb[base]))
    last = float(np.median(mb[final]))
    after = t >= RSS_BASELINE_S
    slope = None
    if end_s - RSS_BASELINE_S >= RSS_TREND_MIN_S:
        slope = float(np.polyfit(t[after], mb[after], 1)[0]) * 3600.0
    growth = 100.0 * (last - baseline) / baseline
    return RssGrowth(
        baseline_s=RSS_BASELINE_S,
        baseline_mb=baseline,
        final_mb=last,
        growth_pct=growth,
        slope_mb_per_h=slope,
        limit_pct=limit_pct,
        ok=growth < limit_pct,
    )


def soak_summary(
    frames: Sequence[Frame],
    dropped_sent_s: Sequence[float],
    usage: Sequence[tuple[float, float, int]],
    timeline: Sequence[CountersAt],
    *,
    counters_before: Mapping[str, int] | None,
    counters_after: Mapping[str, int] | None,
    window_s: float,
) -> Soak:
    """The run over time from its answered `frames`, the send times of the dropped sweeps,
    the node's usage samples (s, CPU % of a core, RSS bytes), its diagnostics counters over
    the run (`timeline`, in time order) and at its start and end."""
    # Windows of send time: the samples taken after the last send (the drain) join the last.
    sends = [f.sent_s for f in frames] + list(dropped_sent_s)
    count = max(1, math.floor(max(sends or [s for s, _, _ in usage] or [0.0]) / window_s) + 1)

    def index(t_s: float) -> int:
        return min(count - 1, max(0, math.floor(t_s / window_s)))

    answered_in: list[list[Frame]] = [[] for _ in range(count)]
    for f in frames:
        answered_in[index(f.sent_s)].append(f)
    dropped_in = [0] * count
    for s in dropped_sent_s:
        dropped_in[index(s)] += 1
    usage_in: list[list[tuple[float, int]]] = [[] for _ in range(count)]
    for s, cpu, rss_bytes in usage:
        usage_in[index(s)].append((cpu, rss_bytes))
    windows = []
    for i in range(count):
        start, end = i * window_s, (i + 1) * window_s
        answered, dropped, in_window = answered_in[i], dropped_in[i], usage_in[i]
        rss = [r / 1e6 for _, r in in_window]
        at_start = _counters_at(timeline, start) if i else counters_before
        at_end = _counters_at(timeline, end)
        grown = counter_growth(at_start, at_end, (*ERROR_COUNTERS, "skipped_bundles"))
        windows.append(
            Window(
                start_s=start,
                end_s=end,
                sent=len(answered) + dropped,
                received=len(answered),
                dropped=dropped,
                end_to_end=latency_stats([f.latency_ns for f in answered]),
                rss_mb=float(np.median(rss)) if rss else None,
                rss_max_mb=max(rss) if rss else None,
                cpu_mean_pct=float(np.mean([c for c, _ in in_window])) if in_window else None,
                errors=None
                if grown is None
                else sum(v for k, v in grown.items() if k in ERROR_COUNTERS),
                skipped_bundles=None if grown is None else grown.get("skipped_bundles"),
            )
        )
    series = tuple((s, rss / 1e6) for s, _, rss in usage)
    growth = rss_growth(series)
    errors_by = counter_growth(counters_before, counters_after, ERROR_COUNTERS)
    errors = None if errors_by is None else sum(errors_by.values())
    dropped_total = len(dropped_sent_s)
    passed = None
    if growth is not None and errors is not None:
        passed = dropped_total == 0 and errors == 0 and growth.ok
    return Soak(
        window_s=window_s,
        windows=tuple(windows),
        rss_series=series,
        rss=growth,
        dropped=dropped_total,
        errors=errors,
        errors_by_counter={k: v for k, v in (errors_by or {}).items() if v},
        passed=passed,
    )
