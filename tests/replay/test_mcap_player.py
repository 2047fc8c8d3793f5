"""Drive playback over a real ipc socket: pacing by recorded log time, speed, start, topics."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from pathlib import Path

import pytest

from perception.io.transport import Publisher, Subscriber
from perception.msgs import foxglove, wire
from perception.msgs.types import GnssFix, Header, LidarSweep
from replay.datasets.kitti_object import KittiObjectFolder
from replay.drive import DriveReader, DriveWriter
from replay.errors import ReplayError
from replay.mcap_player import MAX_PACED_GAP_NS, PlayStats, check_sensor_drive, play_drive
from replay.player import play_kitti_object

MS = 1_000_000
SPAN_S = 0.8


@pytest.fixture()
def drive(tmp_path: Path) -> DriveReader:
    path = tmp_path / "gnss.mcap"
    with DriveWriter(path) as w:
        for i in range(9):
            t = 5_000 * MS + i * 100 * MS
            w.write(GnssFix(Header("gnss", i, t - 3 * MS, "gnss"), 49.0, 8.4, 100.0), t)
            w.write(GnssFix(Header("gnss2", i, t, "gnss"), 49.0, 8.4, 100.0), t + MS)
    return DriveReader(path)


def _timed(drive: DriveReader, pub: Publisher, **kwargs) -> tuple[int, float]:
    t0 = time.monotonic()
    n = play_drive(drive, pub, **kwargs).sent
    return n, time.monotonic() - t0


def test_pacing_follows_recorded_time_and_speed(drive: DriveReader, tmp_path: Path) -> None:
    with Publisher(f"ipc://{tmp_path}/p") as pub:
        n1, real = _timed(drive, pub, speed=1.0)
        n2, fast = _timed(drive, pub, speed=2.0)
        n3, asap = _timed(drive, pub, speed=0.0)
    span = SPAN_S + 0.001
    assert n1 == n2 == n3 == 18
    assert span * 0.95 <= real < span + 0.5
    assert span / 2 * 0.95 <= fast < span / 2 + 0.5
    assert fast < real
    assert asap < span / 2


def test_start_topics_restamp_and_loop(drive: DriveReader, tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/q"
    with Publisher(endpoint, hwm=1000) as pub, Subscriber([endpoint], ["gnss"], hwm=1000) as sub:
        time.sleep(0.3)
        n = play_drive(drive, pub, speed=0, start_s=0.45, topics=["gnss"], restamp=True).sent
        assert n == 4
        got = []
        while (frames := sub.recv(500)) is not None:
            got.append(wire.decode([f.buffer for f in frames])[1])
        assert [m.header.seq for m in got] == [5, 6, 7, 8]
        now = time.time_ns()
        assert all(abs(m.header.stamp_ns - now) < 60 * 1_000 * MS for m in got)
        stop = threading.Event()
        timer = threading.Timer(0.5, stop.set)
        timer.start()
        looped = play_drive(drive, pub, speed=4.0, loop=True, stop=stop).sent
        timer.join()
        assert looped > 18  # more than one pass before the stop
    with pytest.raises(ValueError):
        play_drive(drive, pub, start_s=-1.0)


def test_restamped_stamps_keep_pace_with_the_sends_from_the_first_message_played(
    drive: DriveReader, tmp_path: Path
) -> None:
    """--restamp --start: the stamps were shifted from the drive's first message, so those
    played were --start seconds ahead of the host clock (a node drops them as stamped in the
    future); at --speed 2 they drew ahead by a second every two."""
    endpoint = f"ipc://{tmp_path}/r"
    with Publisher(endpoint, hwm=1000) as pub, Subscriber([endpoint], ["gnss"], hwm=1000) as sub:
        time.sleep(0.3)
        before = time.time_ns()
        play_drive(drive, pub, speed=2.0, start_s=0.45, topics=["gnss"], restamp=True)
        after = time.time_ns()
        got = _received(sub)
    stamps = [m.header.stamp_ns for m in got]
    assert [m.header.seq for m in got] == [5, 6, 7, 8]
    # The first one played is stamped as recorded after its log time (3 ms), from the start.
    assert before - 3 * MS <= stamps[0] <= after
    assert stamps[-1] <= after
    # 100 ms apart as recorded, played twice as fast.
    assert [b - a for a, b in itertools.pairwise(stamps)] == [50 * MS] * 3


def broken_kitti_copy(kitti_dir: Path, dest: Path, broken: int = 3) -> Path:
    """A copy of the KITTI object folder (links to its files) whose frame `broken` has a scan
    that is not one (7 bytes: not a whole point)."""
    for sub in kitti_dir.iterdir():
        if not sub.is_dir():
            continue
        (dest / sub.name).mkdir(parents=True)
        for f in sub.iterdir():
            (dest / sub.name / f.name).symlink_to(f)
    stem = KittiObjectFolder(kitti_dir).frames[broken].lidar_path.stem
    for lidar in ("velodyne", "velodyne_reduced"):
        scan = dest / lidar / f"{stem}.bin"
        if scan.is_symlink():
            scan.unlink()
            scan.write_bytes(b"\x00" * 7)
    return dest


def _received(sub: Subscriber) -> list:
    got = []
    while (frames := sub.recv(500)) is not None:
        got.append(wire.decode([f.buffer for f in frames])[1])
    return got


def test_a_bad_message_is_skipped_and_counted_never_fatal(tmp_path: Path) -> None:
    """A damaged record cannot be read; a stamp that restamping pushes past the plausible
    range (2^62 ns, perception.msgs.schema.MAX_STAMP_NS) cannot be encoded: each is skipped
    and counted, the rest is played."""
    path = tmp_path / "bad.mcap"
    with DriveWriter(path) as w:
        for i in range(6):
            t = 5_000 * MS + i * MS
            stamp = 2**62 - 10 if i == 4 else t
            w.write(GnssFix(Header("gnss", i, stamp, "gnss"), 49.0, 8.4, 100.0), t)
            if i == 1:
                base, companion = w._channels[("gnss", "GnssFix")]
                w._writer.add_message(base, t + 1, b"", t + 1, 999)
                w._writer.add_message(companion, t + 1, b"{not json", t + 1, 999)
    endpoint = f"ipc://{tmp_path}/bad"
    with Publisher(endpoint, hwm=1000) as pub, Subscriber([endpoint], ["gnss"], hwm=1000) as sub:
        time.sleep(0.3)
        stats = play_drive(DriveReader(path), pub, speed=0, restamp=True)
        got = _received(sub)
    assert stats == PlayStats(sent=5, unreadable=1, unpublishable=1)
    assert [m.header.seq for m in got] == [0, 1, 2, 3, 5]


def test_a_broken_kitti_frame_is_skipped_and_counted(kitti_dir: Path, tmp_path: Path) -> None:
    folder = KittiObjectFolder(broken_kitti_copy(kitti_dir, tmp_path / "kitti"))
    endpoint = f"ipc://{tmp_path}/frames"
    with (
        Publisher(endpoint, hwm=1000) as pub,
        Subscriber([endpoint], ["lidar/top"], hwm=1000) as sub,
    ):
        time.sleep(0.3)
        stats = play_kitti_object(folder, pub, rate_hz=50.0)
        got = _received(sub)
    assert stats == PlayStats(sent=7, unreadable=1, unpublishable=0)
    assert len(got) == 7


def test_a_topic_none_of_whose_messages_can_be_read_is_named_as_such(
    kitti_dir: Path, tmp_path: Path
) -> None:
    """Every lidar record damaged: the drive is said to hold lidar/top unreadable, not to hold
    no lidar at all."""
    path = tmp_path / "damaged-lidar.mcap"
    with DriveWriter(path) as w:
        for msg in KittiObjectFolder(kitti_dir).messages():
            if not isinstance(msg, LidarSweep):
                w.write(msg, msg.header.stamp_ns)
                continue
            base, companion = w._channel_ids(
                "lidar/top", "LidarSweep", foxglove.to_foxglove(msg, "lidar/top")
            )
            t = msg.header.stamp_ns
            w._writer.add_message(base, t, b"", t, 0)
            w._writer.add_message(companion, t, b"{not json", t, 0)
    with pytest.raises(ReplayError) as info:
        check_sensor_drive(DriveReader(path))
    assert str(info.value) == (
        f"{path}: no lidar sweeps to replay (it holds: camera/front, rig; lidar/top with 8 "
        "message(s), none readable); the pipeline runs once per lidar sweep"
    )


S = 1_000_000_000
#: Log times of a drive with a gap of exactly `MAX_PACED_GAP_NS` (paced) and one of 3e9 s (a
#: century: a clock that jumped), which pacing skips.
GAPPED_TIMES = [5 * S, 15 * S, 15 * S + MAX_PACED_GAP_NS, 3 * 10**18, 3 * 10**18 + 10 * S]
#: When each message is due, s after the first, with the long gap skipped.
GAPPED_DUE_S = [10.0, 70.0, 70.0, 80.0]


def gapped_drive(path: Path) -> Path:
    with DriveWriter(path) as w:
        for i, t in enumerate(GAPPED_TIMES):
            w.write(GnssFix(Header("gnss", i, t, "gnss"), 49.0, 8.4, 100.0), t)
    return path


class _RecordedWaits(threading.Event):
    """A stop event whose waits return at once, recorded: pacing seen without waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        return False


def test_a_gap_over_a_minute_is_skipped_with_a_warning_not_waited_through(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A drive whose log times jump by 3e9 s (the clock of its second half shifted) was played
    for a century; the gap is skipped with one warning naming the drive, the gap and where,
    and the timing elsewhere (a gap of exactly the bound included) is kept."""
    path = gapped_drive(tmp_path / "gapped.mcap")
    stop = _RecordedWaits()
    with Publisher(f"ipc://{tmp_path}/gap") as pub, caplog.at_level(logging.WARNING):
        stats = play_drive(DriveReader(path), pub, speed=1.0, stop=stop)
    assert stats.sent == 5
    assert len(stop.waits) == 4
    for waited, due in zip(stop.waits, GAPPED_DUE_S, strict=True):
        assert due - 1.0 < waited <= due
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"{path}: no message for {(GAPPED_TIMES[3] - GAPPED_TIMES[2]) / 1e9:.2f} s of log time, "
        f"from {GAPPED_TIMES[2]} to {GAPPED_TIMES[3]} ns (70.00 s after the first message); the "
        "gap is skipped, not waited through (pacing skips gaps over 60 s)"
    ]
    # Twice as fast: the kept timing halves, the gap is still skipped.
    stop = _RecordedWaits()
    with Publisher(f"ipc://{tmp_path}/gap2") as pub:
        play_drive(DriveReader(path), pub, speed=2.0, stop=stop)
    assert max(stop.waits) <= GAPPED_DUE_S[-1] / 2


def test_a_loop_keeps_the_period_across_the_seam(drive: DriveReader, tmp_path: Path) -> None:
    """Each pass started the moment the last ended: gnss, 100 ms apart in the drive, came
    1 ms apart at every seam (the drive's last message, gnss2, is 1 ms after its last gnss)."""
    endpoint = f"ipc://{tmp_path}/s"
    with Publisher(endpoint, hwm=1000) as pub, Subscriber([endpoint], ["gnss"], hwm=1000) as sub:
        time.sleep(0.3)
        stop = threading.Event()
        received: list[int] = []

        def receive() -> None:
            while (frames := sub.recv(200)) is not None:
                if wire.decode([f.buffer for f in frames])[0] == "gnss":
                    received.append(time.monotonic_ns())

        receiver = threading.Thread(target=receive)
        receiver.start()
        timer = threading.Timer(1.4, stop.set)  # at speed 2: three passes of 0.45 s
        timer.start()
        play_drive(drive, pub, speed=2.0, loop=True, stop=stop)
        timer.join()
        receiver.join()
    gaps = [(b - a) / MS for a, b in itertools.pairwise(received)]
    assert len(received) > 18
    assert min(gaps) > 20, gaps  # 50 ms at speed 2, across the seams too (not 1 ms)


def test_a_drive_without_a_period_is_not_looped_back_to_back(tmp_path: Path) -> None:
    """A drive of one message looped as fast as the CPU went (6000 a second)."""
    path = tmp_path / "one.mcap"
    with DriveWriter(path) as w:
        w.write(GnssFix(Header("gnss", 0, 5_000 * MS, "gnss"), 49.0, 8.4, 100.0), 5_000 * MS)
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    try:
        with (
            Publisher(f"ipc://{tmp_path}/o") as pub,
            pytest.raises(
                ReplayError, match=r"no topic repeats in the drive \(one message each\), so"
            ),
        ):
            play_drive(DriveReader(path), pub, loop=True, stop=stop)
    finally:
        timer.cancel()
    # As fast as possible is what --speed 0 asks for, loops included.
    timer = threading.Timer(0.2, stop.set)
    stop.clear()
    timer.start()
    with Publisher(f"ipc://{tmp_path}/o") as pub:
        assert play_drive(DriveReader(path), pub, speed=0, loop=True, stop=stop).sent > 1
    timer.join()
