"""Real-time settings of the on-vehicle process: CPU affinity, scheduling priority, and garbage
collection held during a frame.

Each setting is applied where the OS permits it; a refusal (no CAP_SYS_NICE for SCHED_FIFO or a
negative nice value, a CPU the machine lacks) is reported, never raised: a node that cannot
raise its priority still runs, and its diagnostics say so.

Garbage collection: CPython's cyclic collector runs whenever allocations pass a threshold, so a
full collection can land in the middle of a frame (tens of ms with large heaps). The node
freezes what exists after warm-up (`gc.freeze`: never scanned again), disables the collector
while a frame runs and collects the youngest generation between frames, where the time is free.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator

from perception.config import RealtimeConfig
from perception.msgs.types import RealtimeStatus

__all__ = ["RealtimeConfig", "RealtimeStatus", "apply_realtime", "gc_held", "lower_this_thread"]


def apply_realtime(config: RealtimeConfig, pid: int = 0) -> RealtimeStatus:
    """Applies `config` to process `pid` (0: this one) and reports the resulting state."""
    refused: list[str] = []
    if config.cpu_affinity:
        try:
            os.sched_setaffinity(pid, config.cpu_affinity)
        except (OSError, ValueError) as e:
            refused.append(f"cpu_affinity {list(config.cpu_affinity)}: {_reason(e)}")
    if config.nice is not None:
        try:
            os.setpriority(os.PRIO_PROCESS, pid, config.nice)
        except OSError as e:
            refused.append(f"nice {config.nice}: {_reason(e)}")
    if config.fifo_priority is not None:
        try:
            os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(config.fifo_priority))
        except (OSError, ValueError) as e:
            refused.append(f"fifo_priority {config.fifo_priority}: {_reason(e)}")
    if config.gc_hold:
        gc.freeze()
    policy = os.sched_getscheduler(pid)
    return RealtimeStatus(
        cpu_affinity=tuple(sorted(os.sched_getaffinity(pid))),
        nice=os.getpriority(os.PRIO_PROCESS, pid),
        scheduler="fifo" if policy == os.SCHED_FIFO else "other",
        gc_hold=config.gc_hold,
        refused=tuple(refused),
    )


def lower_this_thread(nicer_by: int) -> str | None:
    """Runs the calling thread below the rest of the process: on the normal policy (a thread
    of a SCHED_FIFO process would otherwise preempt the pipeline until it blocked) and
    `nicer_by` above its nice value (Linux schedules each thread by its own). For background
    work such as the calibration monitor's search. Lowering one's own priority needs no
    privilege; what the OS refuses anyway is returned (None: applied, or `nicer_by` 0).
    """
    if nicer_by <= 0:
        return None
    tid = threading.get_native_id()
    try:
        if os.sched_getscheduler(tid) != os.SCHED_OTHER:
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        nice = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(nice + nicer_by, 19))
    except (OSError, AttributeError) as e:
        return f"thread nice +{nicer_by}: {_reason(e)}"
    return None


def _reason(error: BaseException) -> str:
    return error.strerror if isinstance(error, OSError) and error.strerror else str(error)


@contextlib.contextmanager
def gc_held(enabled: bool = True) -> Iterator[None]:
    """No automatic garbage collection inside the block; the youngest generation is collected
    when it ends. A no-op when `enabled` is False or the collector is already off."""
    if not enabled or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect(0)
