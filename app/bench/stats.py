"""The figures of `perception bench`, computed from what was sent and what the node answered:
latency percentiles, drop accounting, node overhead, process usage and the max-rate search.
Pure functions; all figures in milliseconds unless named.

Accounting: a sent sweep is *received* when a DetectionList with its stamp arrives in time
(see app.bench.runner), else *dropped*. *Skipped bundles* is the growth of the node's
`skipped_bundles` counter over the run (bundles it passed over to catch up). *Node overhead*
per frame is the response minus the engine stages on the frame's critical path
(`perception.pipeline.timing.engine_ns`: the lidar encoder counts only for the camera branch's
wait where it ran beside it): transport, decoding, synchronisation, queueing, pre/postprocessing
and publishing.

Max rate (`find_max_rate`): from the start rate, the rate doubles while it is sustained (fewer
than `MAX_DROPPED_FRACTION` of the sweeps dropped; halves while it is not, until one is), in
short trials; then, at the edge, in long ones: the highest sustained rate is measured again,
and the interval between it and the lowest failing rate is bisected until they are within 10%
of each other. The answer is always a rate that was measured sustained, in a long trial unless
the trial budget ran out first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from perception.pipeline.timing import ENGINE_STAGES, engine_ns, serial_ns, step_ns

__all__ = [
    "ENGINE_STAGES",
    "MAX_DROPPED_FRACTION",
    "OVERHEAD_TARGET_MS",
    "OVERHEAD_TARGET_SHARE",
    "Frame",
    "FrameRatio",
    "LatencyStats",
    "MaxRateSearch",
    "NodeOverhead",
    "ProcessUsage",
    "RateTrial",
    "SweepAccounting",
    "account",
    "find_max_rate",
    "frame_ratio",
    "latency_stats",
    "node_overhead",
    "process_usage",
    "stage_stats",
]

#: A rate is sustained when fewer than this share of its sweeps are dropped.
MAX_DROPPED_FRACTION = 0.05
#: The issue's target for the node overhead: below both, median per frame.
OVERHEAD_TARGET_SHARE = 0.10
OVERHEAD_TARGET_MS = 5.0


@dataclass(frozen=True)
class LatencyStats:
    """Distribution of one latency over the answered sweeps, ms (linear-interpolated
    percentiles)."""

    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class SweepAccounting:
    """Sweeps sent, answered (received) and not (dropped); `degraded`: answers marked degraded
    (missing streams); `unmatched`: DetectionLists whose stamp was not sent in this run;
    `skipped_bundles`: the node's counter over the run (None: no diagnostics)."""

    sent: int
    received: int
    dropped: int
    dropped_fraction: float
    degraded: int
    unmatched: int
    skipped_bundles: int | None


@dataclass(frozen=True)
class NodeOverhead:
    """Per frame: the response (sweep sent -> published) minus the engine stages and the
    transport (which has targets of its own: `transport_median_ms`); medians over the frames.
    `unstaged_median_ms`: the response minus every stage the frame carries but `publish`: time
    in no timed stage (the message waiting for the node's receiver thread). The response ends
    where the publish begins, and the `publish` carried is the previous output's, so it is left
    out; `decode` is the sweep's own decode and filing, on the frame's path.
    `queue_wait_median_ms`: of the overhead, the time ready bundles waited for the node's worker
    (the node's `queue_wait` stage: 0 unless it falls behind)."""

    median_ms: float
    median_share: float
    unstaged_median_ms: float
    queue_wait_median_ms: float
    transport_median_ms: float
    target_ms: float
    target_share: float
    meets_target: bool


@dataclass(frozen=True)
class FrameRatio:
    """The whole frame (a `Pipeline.step`'s stages on its critical path, median over the
    frames) against the camera encoder alone (timed in the bench's process before the node
    started), ms, and their ratio against the target."""

    frame_median_ms: float
    camera_alone_ms: float
    ratio: float
    target_ratio: float
    meets_target: bool


@dataclass(frozen=True)
class ProcessUsage:
    """The node process while sweeps were sent: CPU in % of one core (sampled every
    `period_s`), resident memory max in MB (1e6 bytes). None without samples."""

    cpu_mean_pct: float | None
    cpu_max_pct: float | None
    rss_max_mb: float | None
    samples: int
    period_s: float


@dataclass(frozen=True)
class RateTrial:
    """One step of the max-rate search; `long`: a trial at the edge (`EDGE_TRIAL_S`)."""

    rate_hz: float
    dropped_fraction: float
    sustained: bool
    long: bool = False


@dataclass(frozen=True)
class MaxRateSearch:
    """The highest rate measured sustained (None: none was) and every step taken.
    `limit_found`: a higher rate was measured not sustained, so `rate_hz` is the node's limit
    (within the search's tolerance); False: the search stopped (at its ceiling or after its
    last trial) still stepping up, and the node sustains at least `rate_hz`."""

    rate_hz: float | None
    max_dropped_fraction: float
    trials: tuple[RateTrial, ...]
    limit_found: bool = True


@dataclass(frozen=True)
class Frame:
    """One answered sweep: sent `sent_s` after the run's first send, spanning `sweep_span_ns`
    from its stamp to its last point; the node's figures."""

    sent_s: float
    latency_ns: int
    sweep_span_ns: int
    timings_ns: dict[str, int]
    degraded: bool

    @property
    def response_ns(self) -> int:
        """From sending the complete sweep to publishing: the latency minus the sweep span."""
        return self.latency_ns - self.sweep_span_ns


def latency_stats(values_ns: Sequence[float]) -> LatencyStats | None:
    """Mean, p50/p90/p99 and max in ms of `values_ns`; None when empty."""
    if not values_ns:
        return None
    ms = np.asarray(values_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return LatencyStats(len(ms), float(ms.mean()), p50, p90, p99, float(ms.max()))


def stage_stats(frames: Sequence[Frame]) -> dict[str, LatencyStats]:
    """`latency_stats` of each stage over the frames that carry it, in first-seen order."""
    names: dict[str, None] = {}
    for f in frames:
        names.update(dict.fromkeys(f.timings_ns))
    stats = {}
    for name in names:
        s = latency_stats([f.timings_ns[name] for f in frames if name in f.timings_ns])
        if s is not None:
            stats[name] = s
    return stats


def account(
    sent_stamps: Sequence[int],
    answered: Iterable[tuple[int, bool]],
    skipped_bundles: int | None,
) -> SweepAccounting:
    """Drop accounting of one run from the stamps sent and the (stamp, degraded) of the
    DetectionLists received. A stamp answered twice counts once (the repeat as unmatched)."""
    sent = set(sent_stamps)
    seen: set[int] = set()
    degraded = unmatched = 0
    for stamp, is_degraded in answered:
        if stamp not in sent or stamp in seen:
            unmatched += 1
            continue
        seen.add(stamp)
        degraded += int(is_degraded)
    n_sent = len(sent_stamps)
    dropped = n_sent - len(seen)
    return SweepAccounting(
        sent=n_sent,
        received=len(seen),
        dropped=dropped,
        dropped_fraction=dropped / n_sent if n_sent else 0.0,
        degraded=degraded,
        unmatched=unmatched,
        skipped_bundles=skipped_bundles,
    )


def node_overhead(frames: Sequence[Frame]) -> NodeOverhead | None:
    """Median node overhead (response minus the engines' critical path and the transport) in ms
    and as a share of the response; None without frames of positive response."""
    rows = [f for f in frames if f.response_ns > 0]
    if not rows:
        return None
    overhead_ns = np.array(
        [f.response_ns - engine_ns(f.timings_ns) - f.timings_ns.get("transport", 0) for f in rows],
        dtype=np.float64,
    )
    share = overhead_ns / np.array([f.response_ns for f in rows], dtype=np.float64)
    median_ms = float(np.median(overhead_ns)) / 1e6
    median_share = float(np.median(share))
    unstaged_ns = [
        f.response_ns - serial_ns({k: v for k, v in f.timings_ns.items() if k != "publish"})
        for f in rows
    ]
    return NodeOverhead(
        median_ms=median_ms,
        median_share=median_share,
        unstaged_median_ms=float(np.median(unstaged_ns)) / 1e6,
        queue_wait_median_ms=float(np.median([f.timings_ns.get("queue_wait", 0) for f in rows]))
        / 1e6,
        transport_median_ms=float(np.median([f.timings_ns.get("transport", 0) for f in rows]))
        / 1e6,
        target_ms=OVERHEAD_TARGET_MS,
        target_share=OVERHEAD_TARGET_SHARE,
        meets_target=median_ms < OVERHEAD_TARGET_MS and median_share < OVERHEAD_TARGET_SHARE,
    )


def frame_ratio(
    frames: Sequence[Frame], camera_alone_ms: float | None, target_ratio: float
) -> FrameRatio | None:
    """The whole frame against the camera encoder alone; None without frames or yardstick."""
    if not frames or camera_alone_ms is None or camera_alone_ms <= 0:
        return None
    frame_ms = float(np.median([step_ns(f.timings_ns) for f in frames])) / 1e6
    ratio = frame_ms / camera_alone_ms
    return FrameRatio(frame_ms, camera_alone_ms, ratio, target_ratio, ratio <= target_ratio)


def process_usage(samples: Sequence[tuple[float, int]], period_s: float) -> ProcessUsage:
    """Summary of (CPU % of one core, RSS bytes) samples."""
    if not samples:
        return ProcessUsage(None, None, None, 0, period_s)
    cpu = [c for c, _ in samples]
    return ProcessUsage(
        cpu_mean_pct=float(np.mean(cpu)),
        cpu_max_pct=float(max(cpu)),
        rss_max_mb=max(r for _, r in samples) / 1e6,
        samples=len(samples),
        period_s=period_s,
    )


def find_max_rate(
    measure: Callable[[float, bool], float],
    start_hz: float,
    *,
    max_dropped_fraction: float = MAX_DROPPED_FRACTION,
    growth: float = 2.0,
    rel_tol: float = 0.1,
    min_hz: float = 0.1,
    max_hz: float = 1000.0,
    max_trials: int = 16,
) -> MaxRateSearch:
    """The highest rate (Hz) that `measure(rate, edge) -> dropped fraction` finds sustained
    (dropped < `max_dropped_fraction`): step up (x `growth`) from `start_hz` while sustained,
    or down (/ `growth`) until sustained, with short trials (`edge` False); then, at the edge
    (a sustained and a failing rate both seen), long trials (`edge` True) only: the highest
    sustained rate is measured again in a long trial unless it was one, and the interval up to
    the lowest failing rate is bisected until their ratio is within 1 + `rel_tol`. A short
    trial cannot tell 3 % dropped from 14 %, so the answer is a rate sustained in a long trial
    (or, when the trial budget ran out before one, the best a short trial found). Stops at
    `min_hz`/`max_hz` and after `max_trials` measurements."""
    trials: list[RateTrial] = []

    def state() -> tuple[float | None, bool, float | None]:
        """(highest rate sustained below every failing rate, whether a long trial sustained
        it, the lowest failing rate)."""
        failing = [t.rate_hz for t in trials if not t.sustained]
        worst = min(failing) if failing else None
        ok = [t for t in trials if t.sustained and (worst is None or t.rate_hz < worst)]
        if not ok:
            return None, False, worst
        best = max(t.rate_hz for t in ok)
        return best, any(t.long and t.rate_hz == best for t in ok), worst

    # Within the bounds: from 1e-6 Hz the doubling spent every trial below 0.1 Hz.
    rate, edge = min(max(start_hz, min_hz), max_hz), False
    while len(trials) < max_trials:
        dropped = measure(rate, edge)
        trials.append(RateTrial(rate, dropped, dropped < max_dropped_fraction, edge))
        best, confirmed, worst = state()
        edge = edge or (best is not None and worst is not None)
        if edge and best is not None and not confirmed:
            rate = best
        elif best is not None and worst is not None:
            if worst / best <= 1.0 + rel_tol:
                break
            rate = (best + worst) / 2.0
        elif best is not None:
            if best * growth > max_hz:
                break
            rate = best * growth
        else:
            assert worst is not None
            if worst / growth < min_hz:
                break
            rate = worst / growth
    best, _, worst = state()
    return MaxRateSearch(best, max_dropped_fraction, tuple(trials), limit_found=worst is not None)
