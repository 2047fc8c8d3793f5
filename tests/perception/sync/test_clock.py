from __future__ import annotations

import numpy as np
import pytest

from perception.sync.clock import ClockEstimator, ClockMonitor

MS = 1_000_000


def _feed(est: ClockEstimator, n: int, offset: int, drift_ppm: float, seed: int, *, t0: int = 0):
    rng = np.random.default_rng(seed)
    jumps = []
    for k in range(n):
        stamp = t0 + k * 100 * MS
        latency = int(rng.exponential(5 * MS))
        if rng.random() < 0.05:
            latency += int(rng.uniform(20, 200) * MS)  # bursts / queueing spikes
        host = stamp + offset + int(drift_ppm * 1e-6 * (stamp - t0)) + latency
        jumps.append(est.add(stamp, host))
    return jumps


def test_offset_and_drift_despite_latency_spikes() -> None:
    est = ClockEstimator()
    jumps = _feed(est, 600, offset=5_000 * MS, drift_ppm=50.0, seed=1)
    assert not any(jumps)
    state = est.state()
    expected = 5_000 * MS + int(50e-6 * 599 * 100 * MS)
    assert state.offset_ns is not None and abs(state.offset_ns - expected) < 1 * MS
    assert state.drift_ppm == pytest.approx(50.0, abs=10.0)


def test_clock_jump_flagged_and_followed() -> None:
    est = ClockEstimator()
    _feed(est, 200, offset=0, drift_ppm=0.0, seed=2)
    # The sensor clock steps 1 s forward: host - stamp falls by 1 s.
    jumps = _feed(est, 50, offset=-1_000 * MS, drift_ppm=0.0, seed=3, t0=20_000 * MS)
    assert jumps[0] and sum(jumps) == 1
    state = est.state()
    assert state.jumps == 1 and state.last_jump_stamp_ns == 20_000 * MS
    assert state.offset_ns is not None and abs(state.offset_ns + 1_000 * MS) < 5 * MS


def test_backward_step_needs_confirmation() -> None:
    est = ClockEstimator(confirm=3)
    _feed(est, 100, offset=0, drift_ppm=0.0, seed=4)
    jumps = _feed(est, 10, offset=2_000 * MS, drift_ppm=0.0, seed=5, t0=10_000 * MS)
    assert jumps.index(True) == 2 and sum(jumps) == 1


def test_monitor_per_stream_and_bounded() -> None:
    mon = ClockMonitor(max_streams=1)
    assert mon.to_host_ns("a", 0) is None
    mon.observe("a", 0, 7 * MS)
    assert not mon.observe("b", 0, 0)
    assert set(mon.diagnostics()) == {"a"}
    assert mon.to_host_ns("a", 100 * MS) == 107 * MS
    with pytest.raises(ValueError):
        ClockEstimator(window=4, chunks=8)
