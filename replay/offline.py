"""Offline runs: recorded messages -> the node's synchroniser and pipeline, no sockets.

Messages are fed in recorded order with their sensor stamps as simulated receive times, so a
run is deterministic and pairs exactly as the live node does for the same arrival order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace

from perception.config import SyncConfig
from perception.messages import DetectionList, Message
from perception.pipeline import Pipeline
from perception.sync import NearestSync

__all__ = ["run_offline"]


def run_offline(
    messages: Iterable[Message],
    pipeline: Pipeline,
    camera_streams: tuple[str, ...],
    sync_config: SyncConfig | None = None,
) -> Iterator[DetectionList]:
    """One DetectionList per lidar sweep. Offline there is no publish, so `latency_ns` is the
    processing time (the sum of the stage timings other than `sync_wait`)."""
    sync = NearestSync.from_config(camera_streams, sync_config or SyncConfig())
    seq = 0
    last_ns = 0
    for msg in messages:
        last_ns = max(last_ns, msg.header.stamp_ns)
        sync.add(msg, receive_ns=msg.header.stamp_ns)
        for bundle in sync.poll(last_ns):
            yield _finish(pipeline.step(bundle, seq))
            seq += 1
    for bundle in sync.poll(last_ns + sync.timeout_ns):
        yield _finish(pipeline.step(bundle, seq))
        seq += 1


def _finish(dl: DetectionList) -> DetectionList:
    processing = sum(v for k, v in dl.timings_ns.items() if k != "sync_wait")
    return replace(dl, latency_ns=processing)
