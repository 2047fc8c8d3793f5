"""SpanGate: a sweep's span judged against the time since the sweep before it began and the
stream's usual span."""

from __future__ import annotations

import numpy as np
import pytest

from perception.msgs.types import Header, LidarSweep
from perception.sync.span_gate import SpanGate

MS = 1_000_000
TOP = "lidar/top"


def sweep(stamp_ns: int, span_ns: int | None) -> LidarSweep:
    points = np.zeros((3, 4), np.float32)
    offsets = None if span_ns is None else np.array([0, span_ns // 2, span_ns], np.int64)
    return LidarSweep(Header(TOP, 0, stamp_ns, "lidar"), points, offsets)


def fed(*sweeps: LidarSweep) -> SpanGate:
    gate = SpanGate()
    for s in sweeps:
        assert gate.problem(TOP, s) is None
        gate.accepted(TOP, s)
    return gate


def test_a_span_beyond_the_interval_and_the_usual_span_is_refused_naming_them() -> None:
    gate = SpanGate()
    assert gate.problem(TOP, sweep(0, 1000 * MS)) is None  # nothing to judge by yet
    gate = fed(*(sweep(i * 100 * MS, 100 * MS) for i in range(3)))
    assert gate.problem(TOP, sweep(300 * MS, 100 * MS)) is None
    assert gate.problem(TOP, sweep(300 * MS, 1000 * MS)) == (
        "its points' time offsets span 1.000 s, but it began 0.100 s after the sweep before it, "
        "and this lidar's sweeps span 0.100 s"
    )
    # Sweeps without offsets before: the interval alone judges.
    gate = fed(sweep(0, None), sweep(100 * MS, None))
    assert gate.problem(TOP, sweep(200 * MS, 1000 * MS)) == (
        "its points' time offsets span 1.000 s, but it began 0.100 s after the sweep before it"
    )
    assert gate.problem(TOP, sweep(200 * MS, 200 * MS)) is None


def test_a_rate_halved_sweeps_lost_or_a_sector_grown_to_the_circle_pass() -> None:
    gate = fed(sweep(0, 100 * MS))
    # 10 Hz to 5 Hz: the first slow sweep spans twice the last interval.
    assert gate.problem(TOP, sweep(100 * MS, 200 * MS)) is None
    # Three sweeps lost: judged by the longer interval.
    assert gate.problem(TOP, sweep(400 * MS, 800 * MS)) is None
    # A lidar that swept a sector (25 ms) and now sweeps the circle within its period.
    gate = fed(*(sweep(i * 100 * MS, 25 * MS) for i in range(8)))
    assert gate.problem(TOP, sweep(800 * MS, 100 * MS)) is None


def test_a_drive_played_faster_than_recorded_overlaps_but_passes() -> None:
    # `perception bench --rate 25` of a 10 Hz drive: sweeps 40 ms apart, each spanning 100 ms.
    gate = fed(sweep(0, 100 * MS))
    for i in range(1, 20):
        assert gate.problem(TOP, sweep(i * 40 * MS, 100 * MS)) is None
        gate.accepted(TOP, sweep(i * 40 * MS, 100 * MS))
    assert gate.problem(TOP, sweep(800 * MS, 1000 * MS)) is not None


def test_stamps_that_do_not_advance_and_sweeps_without_offsets_are_not_judged() -> None:
    gate = fed(sweep(10_000 * MS, 100 * MS))
    # A clock stepping back: the clock monitor's to judge.
    assert gate.problem(TOP, sweep(5_000 * MS, 1000 * MS)) is None
    assert gate.problem(TOP, sweep(10_000 * MS, 1000 * MS)) is None
    assert gate.problem(TOP, sweep(10_001 * MS, None)) is None


def test_streams_are_judged_apart_and_bounded() -> None:
    gate = SpanGate(max_streams=1)
    gate.accepted(TOP, sweep(0, 100 * MS))
    rear = LidarSweep(Header("lidar/rear", 0, 0, "lidar"), np.zeros((3, 4), np.float32))
    gate.accepted("lidar/rear", rear)  # beyond the bound: not remembered
    assert gate.problem(TOP, sweep(100 * MS, 1000 * MS)) is not None
    assert gate.problem("lidar/rear", sweep(100 * MS, 1000 * MS)) is None
    with pytest.raises(ValueError, match="factor must be >= 1"):
        SpanGate(factor=0.5)
