"""`perception run`'s own parts (the node itself is tested as a process in tests/integration)."""

from __future__ import annotations

import threading
import time

import pytest

from app.commands.run import announce_when_ready


def test_a_node_ready_after_a_long_warm_up_still_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The ready line was awaited 60 s at most: a node whose warm-up took longer (TensorRT
    building its engines on first use, a loaded machine) served without ever saying it was
    ready, and the bench, waiting for that line, stopped it. Here the wait has no deadline: it
    ends when the node is ready, or has stopped."""
    ready, done = threading.Event(), threading.Event()
    waiter = threading.Thread(target=announce_when_ready, args=(ready, done, lambda: "ready!"))
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive() and capsys.readouterr().out == ""
    ready.set()
    waiter.join(timeout=5.0)
    assert not waiter.is_alive()
    assert capsys.readouterr().out == "ready!\n"


def test_a_node_stopped_before_it_was_ready_says_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ready, done = threading.Event(), threading.Event()
    waiter = threading.Thread(target=announce_when_ready, args=(ready, done, lambda: "ready!"))
    waiter.start()
    done.set()
    waiter.join(timeout=5.0)
    assert not waiter.is_alive()
    ready.set()
    assert capsys.readouterr().out == ""
