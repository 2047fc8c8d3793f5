"""What a killed recorder loses, and how long a stop with a full queue takes: `perception record`
as a process over ipc, measured from the publishing side.

Run: `python -m pytest benchmarks/test_recorder_bench.py -s`. Each figure is checked against its
bound before it is printed.

- Kill: GNSS fixes at 100 Hz (a slow topic: a 256 KB chunk would take minutes to fill), alone or
  beside the KITTI camera and lidar at 10 Hz; SIGKILL after 3 s at a random phase of the
  flush interval. Loss = kill time - send time of the first message of a topic missing from
  the drive (the messages before it are all there), the worst topic; KILLS kills.
- Stop: KITTI camera frames (1.4 MB raw) published faster than the writer compresses them until
  the queue is full, then SIGINT; time from the signal to the process's exit, and the counts.
"""

from __future__ import annotations

import random
import signal
import statistics
import time
from pathlib import Path

import pytest

from perception.io.transport import Publisher
from perception.msgs.types import Message
from replay.datasets.kitti_object import KittiObjectFolder
from replay.drive import DriveReader
from tests.integration.test_drive_failures import SUMMARY, _fix, _start

KILLS = 10
STOP_TIMEOUT_S = 3.0


def _kill_once(tmp_path: Path, name: str, frames: list[list[Message]]) -> float:
    endpoint = f"ipc://{tmp_path}/{name}-sock"
    out = tmp_path / f"{name}.mcap"
    topics = ["gnss", *sorted({m.header.stream for frame in frames for m in frame})]
    sent_at: dict[str, list[float]] = {t: [] for t in topics}
    with Publisher(endpoint, hwm=100_000) as pub:
        proc = _start([*topics, "--out", str(out), "--endpoint", endpoint])
        t0 = time.monotonic()
        duration_s = 3.0 + random.uniform(0.0, 0.5)  # a random phase against the flushes
        tick = 0
        while time.monotonic() < t0 + duration_s:
            pub.send(_fix(tick))
            sent_at["gnss"].append(time.monotonic())
            if frames and tick % 10 == 0:
                for msg in frames[(tick // 10) % len(frames)]:
                    pub.send(msg)
                    sent_at[msg.header.stream].append(time.monotonic())
            tick += 1
            time.sleep(max(0.0, t0 + tick * 0.01 - time.monotonic()))
        proc.kill()
        killed_at = time.monotonic()
        proc.communicate(timeout=30)
    got: dict[str, int] = dict.fromkeys(topics, 0)
    for rec in DriveReader(out).messages():
        got[rec.topic] += 1
    lost = []
    for topic, times in sent_at.items():
        n = got[topic]
        lost.append(killed_at - times[n] if n < len(times) else 0.0)
    return max(lost)


@pytest.mark.parametrize("load", ["gnss", "gnss+kitti"])
def test_killed_recorder_loss(kitti_dir: Path, tmp_path: Path, load: str) -> None:
    frames: list[list[Message]] = []
    if load == "gnss+kitti":
        folder = KittiObjectFolder(kitti_dir)
        # Camera and lidar of each frame (the rig is not a sensor stream).
        frames = [folder.frame_messages(i, i * 100_000_000)[1:] for i in range(len(folder))]
    losses_ms = [_kill_once(tmp_path, f"{load}-{k}", frames) * 1e3 for k in range(KILLS)]
    assert max(losses_ms) <= 1000.0, losses_ms
    print(
        f"\nkilled recorder ({load}): lost the last {statistics.median(losses_ms):.0f} ms median, "
        f"{max(losses_ms):.0f} ms max, {min(losses_ms):.0f} ms min ({KILLS} kills)"
    )


def test_stop_with_a_full_queue(kitti_dir: Path, tmp_path: Path) -> None:
    folder = KittiObjectFolder(kitti_dir)
    camera = [folder.frame_messages(i, i * 100_000_000)[1] for i in range(len(folder))]
    endpoint = f"ipc://{tmp_path}/stop-sock"
    out = tmp_path / "stop.mcap"
    args = ["camera/front", "--out", str(out), "--endpoint", endpoint, "--queue-size", "200"]
    with Publisher(endpoint, hwm=100_000) as pub:
        proc = _start([*args, "--stop-timeout", str(STOP_TIMEOUT_S)])
        t_end = time.monotonic() + 4.0
        sent = 0
        while time.monotonic() < t_end:
            pub.send(camera[sent % len(camera)])
            sent += 1
            time.sleep(0.002)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        stop_s = time.monotonic() - t0
    assert proc.returncode == 0, stdout + stderr
    match = SUMMARY.search(stdout)
    assert match, stdout
    received, written, dropped, undecodable, failed = map(int, match.groups())
    assert received == written + dropped + undecodable + failed
    assert dropped > 0  # the queue was full
    assert len(list(DriveReader(out).messages())) == written
    assert stop_s < STOP_TIMEOUT_S + 2.0
    print(
        f"\nstop with a full queue (200 camera frames, --stop-timeout {STOP_TIMEOUT_S:g}): "
        f"{stop_s:.2f} s from SIGINT to exit; {sent} sent, {received} received, {written} "
        f"written, {dropped} dropped, {failed} failed"
    )
