"""Real-time settings: applied to a real child process where permitted, refusals reported."""

from __future__ import annotations

import gc
import json
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


_LOWERED_THREAD = """
import json, os, sys, threading
from perception.node.realtime import lower_this_thread
fifo = sys.argv[1] == "fifo"
if fifo:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except OSError:
        print(json.dumps({"skip": "no SCHED_FIFO here"}))
        sys.exit(0)
out = {}
def work():
    tid = threading.get_native_id()
    out["refused"] = lower_this_thread(int(sys.argv[2]))
    out["policy"] = os.sched_getscheduler(tid)
    out["nice"] = os.getpriority(os.PRIO_PROCESS, tid)
t = threading.Thread(target=work)
t.start()
t.join()
out["main_policy"] = os.sched_getscheduler(0)
out["main_nice"] = os.getpriority(os.PRIO_PROCESS, 0)
print(json.dumps(out))
"""


@pytest.mark.parametrize(("policy", "by"), [("other", 10), ("other", 0), ("fifo", 10)])
def test_a_background_thread_is_lowered_and_the_rest_are_not(policy: str, by: int) -> None:
    """In a child process (nice 3, and SCHED_FIFO where permitted): one thread lowers itself;
    it runs on the normal policy, `by` nicer; the main thread keeps its priority."""
    proc = subprocess.run(
        [sys.executable, "-c", _LOWERED_THREAD, policy, str(by)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        preexec_fn=lambda: os.nice(3),
    )
    out = json.loads(proc.stdout)
    if "skip" in out:
        pytest.skip(out["skip"])
    assert out["refused"] is None
    main_policy = os.SCHED_FIFO if policy == "fifo" else os.SCHED_OTHER
    assert (out["main_policy"], out["main_nice"]) == (main_policy, 3)
    if by == 0:
        assert (out["policy"], out["nice"]) == (main_policy, 3)
    else:
        assert (out["policy"], out["nice"]) == (os.SCHED_OTHER, 3 + by)
