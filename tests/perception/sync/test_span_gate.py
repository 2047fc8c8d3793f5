"""SpanGate: a sweep's span judged against the time since the sweep before it began."""

from __future__ import annotations

import numpy as np
import pytest

from perception.msgs.types import Header, LidarSweep
from perception.sync.span_gate import SpanGate

MS = 1_000_000


def sweep(stamp_ns: int, span_ns: int | None) -> LidarSweep:
    points = np.zeros((3, 4), np.float32)
    offsets = None if span_ns is None else np.array([0, span_ns // 2, span_ns], np.int64)
    return LidarSweep(Header("lidar/top", 0, stamp_ns, "lidar"), points, offsets)


def test_a_span_longer_than_the_interval_allows_is_refused_naming_both() -> None:
    gate = SpanGate()
    assert gate.problem("lidar/top", sweep(0, 1000 * MS)) is None  # nothing to judge by yet
    gate.accepted("lidar/top", 0)
    assert gate.problem("lidar/top", sweep(100 * MS, 100 * MS)) is None
    problem = gate.problem("lidar/top", sweep(100 * MS, 1000 * MS))
    assert problem == (
        "its points' time offsets span 1.000 s, but it began 0.100 s after the sweep before it "
        "(a lidar's sweeps do not overlap)"
    )


def test_a_rate_halved_or_sweeps_lost_pass() -> None:
    gate = SpanGate()
    gate.accepted("lidar/top", 0)
    # 10 Hz to 5 Hz: the first slow sweep spans twice the last interval.
    assert gate.problem("lidar/top", sweep(100 * MS, 200 * MS)) is None
    # Three sweeps lost: judged by the longer interval.
    assert gate.problem("lidar/top", sweep(400 * MS, 800 * MS)) is None
    assert gate.problem("lidar/top", sweep(400 * MS, 900 * MS)) is not None


def test_stamps_that_do_not_advance_and_sweeps_without_offsets_are_not_judged() -> None:
    gate = SpanGate()
    gate.accepted("lidar/top", 10_000 * MS)
    # A clock stepping back: the clock monitor's to judge.
    assert gate.problem("lidar/top", sweep(5_000 * MS, 1000 * MS)) is None
    assert gate.problem("lidar/top", sweep(10_000 * MS, 1000 * MS)) is None
    assert gate.problem("lidar/top", sweep(10_001 * MS, None)) is None


def test_streams_are_judged_apart_and_bounded() -> None:
    gate = SpanGate(max_streams=1)
    gate.accepted("lidar/top", 0)
    gate.accepted("lidar/rear", 0)  # beyond the bound: not remembered
    assert gate.problem("lidar/top", sweep(100 * MS, 1000 * MS)) is not None
    assert gate.problem("lidar/rear", sweep(100 * MS, 1000 * MS)) is None
    with pytest.raises(ValueError, match="factor must be >= 1"):
        SpanGate(factor=0.5)
