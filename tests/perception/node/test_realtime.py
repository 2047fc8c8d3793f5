"""Real-time settings: applied to a real child process where permitted, refusals reported."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from perception.node.realtime import RealtimeConfig, apply_realtime, gc_held


@pytest.fixture
def child() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_affinity_and_nice_are_applied(child: int) -> None:
    report = apply_realtime(RealtimeConfig(cpu_affinity=(0,), nice=7, gc_hold=False), child)
    assert report.refused == ()
    assert report.cpu_affinity == (0,) and os.sched_getaffinity(child) == {0}
    assert report.nice == 7 and os.getpriority(os.PRIO_PROCESS, child) == 7
    assert report.scheduler == "other"


def test_refusals_are_reported_not_raised(child: int) -> None:
    before = os.sched_getaffinity(child)
    report = apply_realtime(RealtimeConfig(cpu_affinity=(4096,), fifo_priority=500), child)
    assert [line.split(":")[0] for line in report.refused] == [
        "cpu_affinity [4096]",
        "fifo_priority 500",
    ]
    assert os.sched_getaffinity(child) == before and report.scheduler == "other"


def test_fifo_scheduling_where_permitted(child: int) -> None:
    report = apply_realtime(RealtimeConfig(fifo_priority=1, gc_hold=False), child)
    if report.refused:  # no CAP_SYS_NICE: reported, and the process runs on as before
        assert report.refused[0].startswith("fifo_priority 1:") and report.scheduler == "other"
    else:
        assert report.scheduler == "fifo" and os.sched_getscheduler(child) == os.SCHED_FIFO


def test_gc_is_held_inside_a_frame_and_young_garbage_collected_after() -> None:
    assert gc.isenabled()
    with gc_held():
        assert not gc.isenabled()
        a: list[object] = []
        a.append(a)  # a reference cycle only the collector frees
        del a
        young = gc.get_count()[0]
    assert gc.isenabled()
    assert gc.get_count()[0] < young
    with gc_held(enabled=False):
        assert gc.isenabled()
