"""ApproximateTimePolicy against the cases of ROS 2 message_filters' own test suite
(test/test_approximate_time_policy.cpp): same input stamps, same published sets."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from perception.sync import ApproximateTimePolicy

S = 1_000_000_000


def _run(
    inputs: Sequence[tuple[float, int]], num_streams: int = 2, queue_size: int = 10, **kw
) -> list[tuple[int, ...]]:
    policy = ApproximateTimePolicy(num_streams, queue_size, **kw)
    out: list[tuple[int, ...]] = []
    for t, stream in inputs:
        out += policy.add(stream, round(t * S))
    return out


def _sets(*sets: tuple[float, ...]) -> list[tuple[int, ...]]:
    return [tuple(round(t * S) for t in s) for s in sets]


def test_exact_match() -> None:
    inputs = [(0, 0), (0, 1), (3, 0), (3, 1), (6, 0), (6, 1)]
    assert _run(inputs) == _sets((0, 0), (3, 3), (6, 6))


def test_perfect_match() -> None:
    inputs = [(0, 0), (1, 1), (3, 0), (4, 1), (6, 0), (7, 1)]
    assert _run(inputs) == _sets((0, 1), (3, 4))


def test_imperfect_match() -> None:
    inputs = [(0, 0), (1, 1), (2, 0), (3, 0), (5, 1), (6, 0), (7, 1)]
    assert _run(inputs) == _sets((0, 1), (6, 5))


def test_acceleration() -> None:
    inputs = [(0, 0), (7, 1), (12, 0), (15, 1), (17, 0), (18, 1)]
    assert _run(inputs) == _sets((12, 7), (17, 18))


DROPPED = [(0, 0), (1, 1), (3, 1), (4, 0), (7, 1), (8, 0), (10, 0), (11, 1), (13, 0), (14, 1)]


def test_dropped_messages_queue_too_small() -> None:
    assert _run(DROPPED, queue_size=1) == _sets((4, 3), (10, 11))


def test_dropped_messages_queue_just_enough() -> None:
    assert _run(DROPPED, queue_size=2) == _sets((0, 1), (4, 3), (8, 7), (10, 11))


def test_long_queue() -> None:
    a = [(t, 0) for t in range(9)]
    inputs = [*a, (3, 1), (9, 0), (10, 0), (11, 0), (12, 0), (10, 1), (13, 0)]
    assert _run(inputs, queue_size=5) == _sets((10, 10))


def test_double_publish() -> None:
    inputs = [(0, 0), (1, 1), (3, 1), (3, 0)]
    assert _run(inputs) == _sets((0, 1), (3, 3))


def test_four_topics() -> None:
    inputs = [
        (0, 0), (1, 1), (2, 2), (3, 3), (5, 0), (5, 3), (6, 1), (6, 2),
        (8, 0), (9, 1), (10, 2), (11, 3), (10, 0), (13, 0), (14, 1),
    ]  # fmt: skip
    assert _run(inputs, num_streams=4) == _sets((0, 1, 2, 3), (5, 6, 6, 5), (10, 9, 10, 11))


def test_early_publish() -> None:
    inputs = [(0, 0), (1, 1), (2, 2), (3, 3), (7, 0)]
    assert _run(inputs, num_streams=4) == _sets((0, 1, 2, 3))


RATE = [(0, 0), (1, 1), (3, 0), (4, 1), (6, 0), (7, 1)]


def test_rate_bound_one_and_a_half() -> None:
    bounds = [round(1.5 * S), 0]
    assert _run(RATE, inter_message_lower_bounds_ns=bounds) == _sets((0, 1), (3, 4))


def test_rate_bound_two_publishes_early() -> None:
    # With A known to come at most every 2 s, (c, C) is provably optimal as soon as C arrives.
    bounds = [2 * S, 0]
    assert _run(RATE, inter_message_lower_bounds_ns=bounds) == _sets((0, 1), (3, 4), (6, 7))


def test_max_interval_rejects_wide_sets() -> None:
    inputs = [(0, 0), (5, 1), (6, 0), (11, 1), (12, 0)]
    assert _run(inputs) == _sets((6, 5))
    assert _run(inputs, max_interval_ns=S // 2) == []


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        ApproximateTimePolicy(1, 10)
    with pytest.raises(ValueError):
        ApproximateTimePolicy(2, 0)
    with pytest.raises(ValueError):
        ApproximateTimePolicy(2, 10, inter_message_lower_bounds_ns=[0])
    with pytest.raises(ValueError):
        ApproximateTimePolicy(2, 10).add(2, 0)
