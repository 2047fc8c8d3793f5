"""Recorder over real ipc sockets: record -> play -> re-record loses nothing, drops are counted
exactly when the writer is slower than the burst."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from perception.io.transport import Publisher
from perception.msgs.types import CameraFrame, Header
from replay import drive as drive_module
from replay.datasets.kitti_object import KittiObjectFolder
from replay.drive import DriveReader
from replay.mcap_player import play_drive
from replay.recorder import Recorder
from tests.replay.test_drive import assert_same, wire_bytes

TOPICS = ["rig", "camera/front", "lidar/top"]


def _wait(cond, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _record(endpoint: str, out: Path, send) -> tuple[int, object]:
    recorder = Recorder([endpoint], TOPICS, out, queue_size=1000)
    recorder.start()
    time.sleep(0.5)  # subscriptions reach the publisher (ZeroMQ slow joiner)
    sent = send()
    _wait(lambda: recorder.stats.received >= sent)
    recorder.close()
    return sent, recorder.stats


def test_record_play_rerecord_loses_nothing(kitti_dir: Path, tmp_path: Path) -> None:
    folder = KittiObjectFolder(kitti_dir)
    msgs = list(folder.messages(start_ns=0, period_ns=50_000_000))
    endpoint = f"ipc://{tmp_path}/sock/sensors"
    first, second = tmp_path / "first.mcap", tmp_path / "second.mcap"
    with Publisher(endpoint, hwm=10_000) as pub:

        def send_live() -> int:
            for m in msgs:
                pub.send(m)
                time.sleep(0.002)
            return len(msgs)

        sent, stats1 = _record(endpoint, first, send_live)
        assert stats1.received == stats1.written == sent  # type: ignore[attr-defined]
        assert stats1.dropped == 0  # type: ignore[attr-defined]
        reader1 = DriveReader(first)

        def send_played() -> int:
            return play_drive(reader1, pub, speed=float("inf"))

        sent2, stats2 = _record(endpoint, second, send_played)
        assert sent2 == len(msgs)
        assert stats2.written == sent2 and stats2.dropped == 0  # type: ignore[attr-defined]
        assert stats2.bytes == stats1.bytes  # type: ignore[attr-defined]
    r1, r2 = list(DriveReader(first).messages()), list(DriveReader(second).messages())
    assert DriveReader(first).topics() == DriveReader(second).topics()
    assert len(r1) == len(r2) == len(msgs)
    assert sum(len(wire_bytes(r.message, r.topic)) for r in r1) == sum(
        len(wire_bytes(r.message, r.topic)) for r in r2
    )

    # One socket per topic: order is kept within a topic, not across topics.
    def key(m):
        return (m.header.stream, m.header.seq)

    msgs.sort(key=key)
    r1.sort(key=lambda r: key(r.message))
    r2.sort(key=lambda r: key(r.message))
    for original, a, b in zip(msgs, r1, r2, strict=True):
        assert_same(original, a.message)
        assert_same(a.message, b.message)
        assert wire_bytes(a.message, a.topic) == wire_bytes(b.message, b.topic)


def test_burst_faster_than_the_writer_counts_drops_exactly(
    kitti_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = KittiObjectFolder(kitti_dir)
    camera = folder.frame_messages(0, 0)[1]
    assert isinstance(camera, CameraFrame) and camera.image is not None
    original_write = drive_module.DriveWriter.write

    def slow_write(self, msg, log_time_ns, topic=None):  # a slow disk
        time.sleep(0.02)
        original_write(self, msg, log_time_ns, topic)

    monkeypatch.setattr(drive_module.DriveWriter, "write", slow_write)
    endpoint = f"ipc://{tmp_path}/sock/burst"
    out = tmp_path / "burst.mcap"
    burst = 60
    with Publisher(endpoint, hwm=10_000) as pub:
        recorder = Recorder([endpoint], ["camera/front"], out, queue_size=2, hwm=10_000)
        recorder.start()
        time.sleep(0.5)
        for i in range(burst):
            pub.send(CameraFrame(Header("camera/front", i, i, "camera/front"), image=camera.image))
        _wait(lambda: recorder.stats.received >= burst)
        recorder.close()
    s = recorder.stats
    assert s.received == burst
    assert s.dropped > 0
    assert s.undecodable == 0 and s.failed == 0
    assert s.received == s.written + s.dropped
    recorded = list(DriveReader(out).messages())
    assert len(recorded) == s.written
    seqs = [r.message.header.seq for r in recorded]
    assert seqs == sorted(seqs)
    assert np.array_equal(recorded[0].message.image, camera.image)  # type: ignore[union-attr,arg-type]


def test_run_until_stop_finishes_the_file(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/sock/idle"
    out = tmp_path / "idle.mcap"
    with Publisher(endpoint) as pub:
        pub.socket.send_multipart([b"camera/front", b"garbage"])
        recorder = Recorder([endpoint], ["camera/front"], out)
        stop = threading.Event()
        thread = threading.Thread(target=recorder.run, args=(stop,))
        thread.start()
        time.sleep(0.4)
        pub.socket.send_multipart([b"camera/front", b"garbage"])
        _wait(lambda: recorder.stats.received >= 1)
        stop.set()
        thread.join(10)
        assert not thread.is_alive()
    assert recorder.stats.undecodable == recorder.stats.received
    reader = DriveReader(out)
    assert not reader.truncated and reader.topics() == {}
