"""MCAP drive write throughput on real KITTI frames (camera image + lidar sweep + rig).

Run: `python -m pytest benchmarks/test_mcap_bench.py --benchmark-enable -s`. Each round writes
every KITTI object frame's messages REPEAT times into a fresh drive; throughput is the payload
(wire bytes of the messages) per second. The drive is read back and compared first.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from perception.msgs import wire
from perception.msgs.types import Message
from replay.datasets.kitti_object import KittiObjectFolder
from replay.drive import DriveReader, DriveWriter

REPEAT = 4


def _messages(kitti_dir: Path) -> list[Message]:
    return list(KittiObjectFolder(kitti_dir).messages(start_ns=0)) * REPEAT


def _payload_bytes(msgs: list[Message]) -> int:
    return sum(sum(memoryview(f).nbytes for f in wire.encode(m)) for m in msgs)


def _write(path: Path, msgs: list[Message], compression: str | None) -> None:
    with DriveWriter(path, compression=compression) as w:
        for i, m in enumerate(msgs):
            w.write(m, i)


@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
def test_mcap_write_throughput(benchmark, kitti_dir: Path, tmp_path: Path, compression) -> None:
    msgs = _messages(kitti_dir)
    path = tmp_path / "bench.mcap"
    _write(path, msgs, compression)
    got = [r.message for r in DriveReader(path).messages()]
    assert len(got) == len(msgs)
    assert all(
        b"".join(bytes(f) for f in wire.encode(a)) == b"".join(bytes(f) for f in wire.encode(b))
        for a, b in zip(msgs, got, strict=True)
    )
    size = _payload_bytes(msgs)
    t0 = time.perf_counter()
    _write(path, msgs, compression)
    elapsed = time.perf_counter() - t0
    ratio = size / path.stat().st_size
    print(
        f"\nMCAP write {compression or 'none'}: {size / elapsed / 1e6:.0f} MB/s "
        f"({len(msgs)} messages, {size / 1e6:.1f} MB payload, file ratio {ratio:.2f}x)"
    )
    benchmark(_write, path, msgs, compression)
