"""Offline runs: recorded messages -> the node's synchroniser and pipeline, no sockets.

Messages are fed in recorded order with their sensor stamps as simulated receive times, so a
run is deterministic and pairs exactly as the live node does for the same arrival order.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

from perception.config import SyncConfig
from perception.msgs.types import DetectionList, Message
from perception.pipeline import Pipeline
from perception.sync import Bundler
from replay.drive import RecordedMessage

__all__ = ["run_offline", "run_recorded"]


def run_offline(
    messages: Iterable[Message],
    pipeline: Pipeline,
    camera_streams: tuple[str, ...],
    sync_config: SyncConfig | None = None,
    *,
    default_rig: Any = None,
) -> Iterator[DetectionList]:
    """One DetectionList per lidar sweep, each message taken as received at its sensor stamp.
    Offline there is no publish, so `latency_ns` is the processing time (the sum of the stage
    timings other than `sync_wait`)."""
    pairs = ((msg, msg.header.stamp_ns) for msg in messages)
    return _run(pairs, pipeline, camera_streams, sync_config, default_rig)


def run_recorded(
    records: Iterable[RecordedMessage],
    pipeline: Pipeline,
    camera_streams: tuple[str, ...],
    sync_config: SyncConfig | None = None,
    *,
    default_rig: Any = None,
    speed: float = 0.0,
) -> Iterator[DetectionList]:
    """As `run_offline` for a recorded drive: each message is taken as received at its recorded
    log time, so pairing matches what the live node saw. `speed` > 0 paces the run by log time
    (1.0 = real time); 0 runs as fast as possible."""
    pairs: Iterable[tuple[Message, int]] = ((r.message, r.log_time_ns) for r in records)
    if speed > 0:
        pairs = _paced(pairs, speed)
    return _run(pairs, pipeline, camera_streams, sync_config, default_rig)


def _paced(pairs: Iterable[tuple[Message, int]], speed: float) -> Iterator[tuple[Message, int]]:
    start_host = time.monotonic_ns()
    first: int | None = None
    for msg, log_ns in pairs:
        first = log_ns if first is None else first
        delay_ns = (log_ns - first) / speed - (time.monotonic_ns() - start_host)
        if delay_ns > 0:
            time.sleep(delay_ns / 1e9)
        yield msg, log_ns


def _run(
    pairs: Iterable[tuple[Message, int]],
    pipeline: Pipeline,
    camera_streams: tuple[str, ...],
    sync_config: SyncConfig | None,
    default_rig: Any,
) -> Iterator[DetectionList]:
    sync = Bundler.from_config(camera_streams, sync_config or SyncConfig(), default_rig)
    seq = 0
    last_ns = 0
    for msg, receive_ns in pairs:
        last_ns = max(last_ns, receive_ns)
        # A message the bundler rejects is dropped and counted (sync.stats), as in the node.
        sync.add(msg, receive_ns=receive_ns)
        for bundle in sync.poll(last_ns):
            yield _finish(pipeline.step(bundle, seq))
            seq += 1
    for bundle in sync.flush():
        yield _finish(pipeline.step(bundle, seq))
        seq += 1


def _finish(dl: DetectionList) -> DetectionList:
    processing = sum(v for k, v in dl.timings_ns.items() if k != "sync_wait")
    return replace(dl, latency_ns=processing)
