"""Recorder over real ipc sockets: record -> play -> re-record loses nothing, drops are counted
exactly when the writer is slower than the burst, a message that cannot be written costs that
message only, and a stop with a full queue is bounded in time. In every test the counts add up:
received == written + dropped + undecodable + failed, and `written` is what the drive holds."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from perception.io.transport import Publisher
from perception.msgs import wire
from perception.msgs.schema import DEFAULT_LIMITS
from perception.msgs.types import CameraFrame, GnssFix, Header, RigMessage
from replay import drive as drive_module
from replay.datasets.kitti_object import KittiObjectFolder
from replay.drive import DriveReader
from replay.mcap_player import play_drive
from replay.recorder import Recorder, RecorderStats
from tests.replay.test_drive import assert_same, wire_bytes
from tests.replay.test_drive_limits import ROOMY, big_frame

TOPICS = ["rig", "camera/front", "lidar/top"]


def _wait(cond, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def assert_counts_add_up(stats: RecorderStats, out: Path) -> None:
    """Every received message is accounted for once, and `written` is what the drive holds."""
    assert stats.received == stats.written + stats.dropped + stats.undecodable + stats.failed
    assert len(list(DriveReader(out).messages())) == stats.written


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
            return play_drive(reader1, pub, speed=float("inf")).sent

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
    assert_counts_add_up(s, out)
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


def _fix(seq: int) -> GnssFix:
    return GnssFix(Header("gnss", seq, 1_000_000 + seq, "gnss"), 49.0, 8.4, 100.0)


@contextlib.contextmanager
def _recording_fixes(
    tmp_path: Path, name: str, topics: list[str], fixes: int, **recorder_options: Any
) -> Iterator[tuple[Recorder, Path]]:
    """A started Recorder of `topics` on a fresh endpoint, and the drive it writes, once the
    `fixes` GNSS fixes published to it have been received; its publisher lives for the block."""
    endpoint = f"ipc://{tmp_path}/sock/{name}"
    out = tmp_path / f"{name}.mcap"
    with Publisher(endpoint, hwm=10_000) as pub:
        recorder = Recorder([endpoint], topics, out, **recorder_options)
        recorder.start()
        time.sleep(0.5)  # subscriptions reach the publisher (ZeroMQ slow joiner)
        for seq in range(fixes):
            pub.send(_fix(seq))
        _wait(lambda: recorder.stats.received >= fixes)
        yield recorder, out


def deep_rig_frames(depth: int = 1000) -> list[bytes]:
    """A rig message whose document holds a list nested `depth` deep: the wire decoder of this
    branch takes it, but its JSON companion cannot be written (RecursionError in json.dumps).
    With decode-time nesting bounds it is undecodable instead; either way it is one message."""
    frames = wire.encode(RigMessage(Header("rig", 0, 1, "vehicle"), {"marker": 0}))
    doc = msgpack.unpackb(bytes(frames[1]), raw=False)
    doc["fields"]["rig"] = "MARKER"
    packed = msgpack.packb(doc, use_bin_type=True)
    deep = b"\x81\xa1x" + b"\x91" * depth + b"\xc0"  # {"x": [[[...[None]...]]]}
    return [b"rig", packed.replace(msgpack.packb("MARKER"), deep)]


def test_a_message_that_cannot_be_written_costs_that_message_only(tmp_path: Path) -> None:
    """Finding 7: a rig nested 1,000 deep killed the writer thread, and every message after it
    vanished uncounted."""
    endpoint = f"ipc://{tmp_path}/sock/hostile"
    out = tmp_path / "hostile.mcap"
    with Publisher(endpoint, hwm=10_000) as pub:
        recorder = Recorder([endpoint], ["gnss", "rig"], out, hwm=10_000)
        recorder.start()
        time.sleep(0.5)
        for seq in range(50):
            pub.send(_fix(seq))
        pub.socket.send_multipart(deep_rig_frames())
        for seq in range(50, 300):
            pub.send(_fix(seq))
        _wait(lambda: recorder.stats.received >= 301)
        recorder.close()
    s = recorder.stats
    assert s.received == 301
    assert s.failed + s.undecodable == 1 and s.dropped == 0
    assert s.written == 300 and s.error is None
    assert_counts_add_up(s, out)
    assert [r.message.header.seq for r in DriveReader(out).messages()] == list(range(300))


def test_any_exception_while_writing_a_message_is_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a write raises (a bug, an exotic message), the writer goes on."""
    original_write = drive_module.DriveWriter.write
    faults = {7: KeyError("k"), 8: RecursionError("deep"), 9: MemoryError(), 10: AssertionError()}

    def faulty_write(self, msg, log_time_ns, topic=None):
        fault = faults.get(msg.header.seq)
        if fault is not None:
            raise fault
        original_write(self, msg, log_time_ns, topic)

    monkeypatch.setattr(drive_module.DriveWriter, "write", faulty_write)
    with _recording_fixes(tmp_path, "faulty", ["gnss"], 20) as (recorder, out):
        recorder.close()
    s = recorder.stats
    assert (s.received, s.written, s.failed, s.dropped) == (20, 16, 4, 0)
    assert_counts_add_up(s, out)
    assert [r.message.header.seq for r in DriveReader(out).messages()] == [
        i for i in range(20) if i not in faults
    ]


def test_stop_with_a_full_queue_is_bounded_and_counts_what_was_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 7: with its queue full, SIGINT hung forever. Now the queue is written for
    `stop_timeout_s`, the rest counted as dropped, and the drive finished."""
    original_write = drive_module.DriveWriter.write

    def slow_write(self, msg, log_time_ns, topic=None):  # a disk far slower than the input
        time.sleep(0.05)
        original_write(self, msg, log_time_ns, topic)

    monkeypatch.setattr(drive_module.DriveWriter, "write", slow_write)
    endpoint = f"ipc://{tmp_path}/sock/full"
    out = tmp_path / "full.mcap"
    stop_timeout_s = 1.0
    with Publisher(endpoint, hwm=10_000) as pub:
        recorder = Recorder(
            [endpoint], ["gnss"], out, queue_size=500, hwm=10_000, stop_timeout_s=stop_timeout_s
        )
        stop = threading.Event()
        thread = threading.Thread(target=recorder.run, args=(stop,))
        thread.start()
        time.sleep(0.5)
        for seq in range(1000):
            pub.send(_fix(seq))
        _wait(lambda: recorder.stats.received >= 1000)
        assert recorder.stats.dropped > 0  # the queue is full
        t0 = time.monotonic()
        stop.set()
        thread.join(30)
        stop_s = time.monotonic() - t0
        assert not thread.is_alive()
    s = recorder.stats
    print(f"stop with a full queue: {stop_s:.2f} s (stop_timeout_s {stop_timeout_s:g})")
    assert stop_s < stop_timeout_s + 1.0
    assert s.error is None and s.failed == 0
    assert s.received == 1000 and s.written < 500 and s.dropped > 500
    assert_counts_add_up(s, out)
    assert not DriveReader(out).truncated  # finished: summary and footer


def test_recent_messages_reach_the_file_within_the_flush_interval(tmp_path: Path) -> None:
    """A slow topic fills a chunk in minutes; its messages are in the file (readable by another
    process, as after a kill) within the flush interval all the same."""
    fixes = _recording_fixes(tmp_path, "slow", ["gnss"], 5, flush_interval_s=0.3)
    with fixes as (recorder, out):
        _wait(lambda: recorder.stats.written == 5, timeout_s=2.0)
        on_disk = [r.message.header.seq for r in DriveReader(out).messages()]
        recorder.close()
    assert on_disk == [0, 1, 2, 3, 4]
    assert_counts_add_up(recorder.stats, out)


def test_the_counts_say_which_topic_nothing_arrived_on(tmp_path: Path) -> None:
    """A topic subscribed to that nothing publishes (a name the sensors do not use) is recorded
    as nothing: `arrived` counts it 0, beside the others' messages."""
    topics = ["gnss", "lidar/top"]
    with _recording_fixes(tmp_path, "named", topics, 20, hwm=10_000) as (recorder, _):
        assert recorder.stats.arrived == (("gnss", 20), ("lidar/top", 0))
        recorder.close()
    assert recorder.stats.arrived == (("gnss", 20), ("lidar/top", 0))
    assert recorder.stats.written == 20


def test_a_stop_timeout_shorter_than_a_poll_still_stops_the_receivers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """--stop-timeout 0.001 bounds the writing of what is queued; the receivers, which stop
    within a poll (50 ms), were given that millisecond too: an error said they did not stop,
    and their sockets were left open."""
    fixes = _recording_fixes(tmp_path, "short", ["gnss"], 5, stop_timeout_s=0.001)
    with fixes as (recorder, out):
        recorder.close()
    assert "did not stop" not in caplog.text
    assert recorder.stats.error is None
    assert not any(r.is_alive() for r in recorder._receivers)
    assert_counts_add_up(recorder.stats, out)


def test_messages_refused_while_receiving_are_counted(tmp_path: Path) -> None:
    """A publisher sending messages of too many frames, or too many bytes, had them refused by
    the subscriber before the recorder saw them: the summary said "0 received" and "nothing
    arrived; is anything publishing?" while it was flooded. Each is received and undecodable."""
    endpoint = f"ipc://{tmp_path}/sock/refused"
    out = tmp_path / "refused.mcap"
    with Publisher(endpoint, hwm=10_000) as pub:
        recorder = Recorder([endpoint], ["gnss"], out, hwm=10_000)
        recorder.start()
        time.sleep(0.5)  # subscriptions reach the publisher (ZeroMQ slow joiner)
        pub.send(_fix(0))
        for _ in range(3):
            pub.socket.send_multipart([b"gnss"] + [b"x"] * 20)  # above max_frames
        big = b"y" * (20 * 1024 * 1024)  # each frame within the limit, the message above it
        pub.socket.send_multipart([b"gnss", b"h", big, big])
        pub.send(_fix(1))
        _wait(lambda: recorder.stats.received >= 6)
        recorder.close()
    s = recorder.stats
    assert (s.received, s.written, s.undecodable, s.dropped, s.failed) == (6, 2, 4, 0, 0)
    assert_counts_add_up(s, out)
    assert [r.message.header.seq for r in DriveReader(out).messages()] == [0, 1]


def test_a_recorder_closed_before_it_started_closes_its_sockets(tmp_path: Path) -> None:
    """`close` never raises, the docstring says; before `start` it raised ValueError (its
    sockets zipped with the receivers, which did not exist yet), leaving the sockets open."""
    endpoint = f"ipc://{tmp_path}/sock/unstarted"
    out = tmp_path / "unstarted.mcap"
    with Publisher(endpoint, hwm=10_000):
        recorder = Recorder([endpoint], ["gnss", "rig"], out)
        recorder.close()
    assert recorder.stats == RecorderStats(arrived=(("gnss", 0), ("rig", 0)))
    assert not DriveReader(out).truncated
    with pytest.raises(Exception, match="closed"):
        recorder._subscribers[0].recv(0)


def test_a_recorder_keeps_what_its_node_limits_allow(tmp_path: Path) -> None:
    """`perception record` decoded with the default limits: a 12 MP camera, served by a node
    whose limits were raised for it, was counted undecodable and lost. Given the node's limits,
    it is recorded, and the drive reads it back under them."""
    endpoint = f"ipc://{tmp_path}/sock/big"
    counts = {}
    for name, limits in (("default", DEFAULT_LIMITS), ("roomy", ROOMY)):
        out = tmp_path / f"{name}.mcap"
        with Publisher(endpoint, hwm=10_000, limits=ROOMY) as pub:
            recorder = Recorder([endpoint], ["camera/front"], out, limits=limits)
            recorder.start()
            time.sleep(0.5)  # subscriptions reach the publisher (ZeroMQ slow joiner)
            for seq in range(3):
                pub.send(big_frame(seq))
            _wait(lambda r=recorder: r.stats.received >= 3)
            recorder.close()
        s = recorder.stats
        counts[name] = (s.received, s.written, s.undecodable)
        assert_counts_add_up(s, out)
    assert counts == {"default": (3, 0, 3), "roomy": (3, 3, 0)}
    frames = [r.message for r in DriveReader(tmp_path / "roomy.mcap").messages()]
    assert [f.header.seq for f in frames] == [0, 1, 2]


def test_a_drive_deleted_while_being_recorded_stops_the_recording_and_says_so(
    tmp_path: Path,
) -> None:
    """A recorder whose folder was deleted wrote on into a file no name led to, then said
    every message was written (exit 0, nothing on disk). It now stops by itself within the
    flush interval: nothing written, every message counted failed, the error says why."""
    stop = threading.Event()
    fixes = _recording_fixes(tmp_path, "deleted", ["gnss"], 5, flush_interval_s=0.2)
    with fixes as (recorder, out):
        _wait(lambda: recorder.stats.written == 5, timeout_s=2.0)
        out.unlink()
        thread = threading.Thread(target=recorder.run, args=(stop,))
        thread.start()
        assert recorder.stopped_by_itself.wait(5), "the recording went on into a deleted file"
        thread.join(10)
    stats = recorder.stats
    assert (stats.received, stats.written, stats.failed) == (5, 0, 5)
    assert stats.error == (
        f"{out}: was deleted while being written (the file or its folder): the 5 message(s) "
        "written are lost with it"
    )
    assert not out.exists()
