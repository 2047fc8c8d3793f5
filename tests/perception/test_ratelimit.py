"""The rate-limited logger: once per key and interval, and bounded in memory and line length
whatever keys a sender makes it use (the fuzzer found the node's memory growing with every new
topic a message came on)."""

from __future__ import annotations

import logging
import time

import pytest

from perception.ratelimit import (
    MAX_KEY_CHARS,
    MAX_MESSAGE_CHARS,
    OVERFLOW_KEY,
    RateLimitedLogger,
)


@pytest.fixture
def logger(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    caplog.set_level(logging.WARNING, logger="test.ratelimit")
    return logging.getLogger("test.ratelimit")


def test_each_key_once_per_interval_then_with_what_it_held(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    limited = RateLimitedLogger(logger, interval_s=0.05)
    assert limited.warning("a", "first")
    assert not limited.warning("a", "second")
    assert not limited.warning("a", "third")
    assert limited.warning("b", "other key")
    time.sleep(0.06)
    assert limited.warning("a", "fourth")
    assert [r.getMessage() for r in caplog.records] == [
        "first",
        "other key",
        "fourth (2 similar messages suppressed)",
    ]


def test_new_keys_without_end_keep_the_table_bounded(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    limited = RateLimitedLogger(logger, interval_s=60.0, max_keys=100)
    for i in range(10_000):
        limited.warning(f"decode:lidar/top{i}", f"dropped message {i}")
    assert len(limited) == 101  # the keys, and the one the rest share
    assert len(caplog.records) == 101
    assert caplog.records[-1].getMessage() == "dropped message 100"
    assert not limited.warning(OVERFLOW_KEY, "held with the others")


def test_idle_keys_make_room(logger: logging.Logger) -> None:
    limited = RateLimitedLogger(logger, interval_s=0.05, max_keys=10)
    for i in range(10):
        limited.warning(f"old {i}", "x")
    time.sleep(0.06)
    assert limited.warning("new", "logged under its own key")
    assert not limited.warning("new", "then held")
    assert len(limited) == 1


def test_long_keys_and_messages_are_cut(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    limited = RateLimitedLogger(logger)
    topic = "camera/front" * 100_000
    message = f"dropped message on {topic}"
    assert limited.warning(f"decode:{topic}", message)
    assert not limited.warning(f"decode:{topic}x", "same key once cut")
    (record,) = caplog.records
    text = record.getMessage()
    assert len(text) < MAX_MESSAGE_CHARS + 100 and text.endswith(f"({len(message)} characters)")
    assert MAX_KEY_CHARS < 1000
