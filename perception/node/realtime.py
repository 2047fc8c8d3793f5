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
from collections.abc import Iterator

from perception.config import RealtimeConfig
from perception.msgs.types import RealtimeStatus

__all__ = ["RealtimeConfig", "RealtimeStatus", "apply_realtime", "gc_held"]


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
