"""Device-side timing of torch work on CUDA with CUDA events.

A host clock around an asynchronous CUDA launch measures the launch, not the kernels; CUDA events
recorded on the stream before and after measure what the GPU spent. Off CUDA the timer records
nothing (the host-side stage timing is then the whole truth).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["DeviceTime", "cuda_event_time"]


@dataclass
class DeviceTime:
    """Filled when the block ends: GPU nanoseconds between the block's start and end events,
    or None off CUDA."""

    ns: int | None = None


@contextmanager
def cuda_event_time(device: Any) -> Iterator[DeviceTime]:
    """Times the block's work on `device`'s current stream (a torch device or its string)."""
    import torch  # noqa: PLC0415 - torch is a dev/GPU dependency

    result = DeviceTime()
    dev = torch.device(device)
    if dev.type != "cuda":
        yield result
        return
    start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    start.record(torch.cuda.current_stream(dev))
    yield result
    end.record(torch.cuda.current_stream(dev))
    end.synchronize()
    result.ns = round(start.elapsed_time(end) * 1e6)  # elapsed_time is in ms
