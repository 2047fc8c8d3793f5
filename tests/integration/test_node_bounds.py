"""A running node (`perception run`, a child process) against hostile and oversized input over
real sockets: each message refused at decode or while receiving, counted on the node's typed
Diagnostics, its memory bounded, and the node still publishing for valid input afterwards."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import msgpack
import numpy as np
import psutil  # type: ignore[import-untyped]
import pytest

from perception.io.transport import Publisher, Subscriber
from perception.msgs import wire
from perception.msgs.schema import DEFAULT_LIMITS, WireLimits
from perception.msgs.types import (
    CameraFrame,
    DetectionList,
    Diagnostics,
    LidarSweep,
    Message,
    RigMessage,
)
from replay.datasets.kitti_object import KittiObjectFolder
from tests.integration.node_harness import NodeProcess, node_config, running_node

pytestmark = pytest.mark.slow

MB = 1_000_000


def restamped(msgs: list[Message], stamp_ns: int) -> list[Message]:
    return [replace(m, header=replace(m.header, stamp_ns=stamp_ns)) for m in msgs]


@dataclass
class Session:
    """A running node, a publisher into it and a subscriber to what it publishes."""

    node: NodeProcess
    pub: Publisher
    sub: Subscriber
    frame: list[Message]  # KITTI frame 000000: rig, camera, sweep

    def send_frame(self, stamp_ns: int) -> None:
        for msg in restamped(self.frame, stamp_ns):
            self.pub.send(msg)

    def processed(self, timeout_s: float = 30.0) -> DetectionList:
        """Send fresh frames until one comes back processed with its camera (PUB/SUB loses what
        is sent before a subscription arrives, and a connection ZeroMQ dropped takes a moment
        to return)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stamp = time.time_ns()
            self.send_frame(stamp)
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                msg = self.next(0.1)
                if isinstance(msg, DetectionList) and msg.header.stamp_ns == stamp:
                    if not msg.degraded:
                        return msg
                    break
        raise AssertionError(f"no frame processed:\n{''.join(self.node.output)}")

    def next(self, timeout_s: float) -> Message | None:
        frames = self.sub.recv(timeout_ms=round(timeout_s * 1000))
        return None if frames is None else wire.decode(frames)[1]

    def diagnostics(
        self, accept: Callable[[Diagnostics], bool] = lambda d: True, timeout_s: float = 10.0
    ) -> Diagnostics:
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            msg = self.next(0.1)
            if isinstance(msg, Diagnostics):
                last = msg
                if accept(msg):
                    return msg
        raise AssertionError(f"no matching diagnostics; last: {last}")

    def rss(self) -> int:
        return int(psutil.Process(self.node.proc.pid).memory_info().rss)


@contextmanager
def session(tmp_path: Path, kitti_dir: Path, yolox_path: Path) -> Iterator[Session]:
    config, sensors, detections = node_config(tmp_path, yolox_path)
    frame = KittiObjectFolder(kitti_dir).frame_messages(0, 0)
    with (
        running_node(config) as node,
        Publisher(sensors, bind=True, hwm=1000) as pub,
        Subscriber([detections], ["detections", "diagnostics"], hwm=1000) as sub,
    ):
        s = Session(node, pub, sub, frame)
        s.processed()
        yield s
        assert node.proc.poll() is None, "node died"
    assert node.proc.returncode == 0, "".join(node.output)


def deep_rig(depth: int) -> list[bytes]:
    """A RigMessage whose rig holds a list nested `depth` deep, as raw bytes (msgpack's packer
    stops at 512 levels; a sender need not use it)."""
    header = {"stream": "rig", "seq": 1, "stamp_ns": time.time_ns(), "frame_id": "vehicle"}
    doc = {"type": "RigMessage", "version": 1, "header": header, "buffers": []}
    doc["fields"] = {"rig": {"frames": {"lidar": {"rotation": "<>"}}}}
    packed = msgpack.packb(doc).replace(msgpack.packb("<>"), b"\x91" * depth + b"\xc0")
    return [b"rig", packed]


def huge_offsets(sweep: LidarSweep) -> list[bytes]:
    """The sweep with its last point 2^63 - 2 ns after the sweep start. The encoder refuses
    such a sweep, so the offsets frame is written by hand."""
    offsets = np.zeros(len(sweep.points), np.int64)
    frames = [bytes(f) for f in wire.encode(replace(sweep, point_time_offsets_ns=offsets))]
    offsets[-1] = 2**63 - 2
    frames[3] = offsets.tobytes()
    return frames


def test_hostile_and_oversized_messages_are_refused_counted_and_memory_stays_bounded(
    tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    with session(tmp_path, kitti_dir, yolox_path) as s:
        _, camera, sweep = s.frame
        assert isinstance(sweep, LidarSweep) and isinstance(camera, CameraFrame)
        before = s.diagnostics()
        rss_before = s.rss()
        good_sweep = [bytes(f) for f in wire.encode(sweep)]

        # Refused at decode (counted in decode_errors).
        s.pub.send_frames(deep_rig(1000))  # finding 1
        s.pub.send_frames(huge_offsets(sweep))  # finding 2
        # Refused while receiving (receive_refused): 31 frames; 40 MB in 8 MB frames.
        s.pub.send_frames([*good_sweep, *[b"x" * 1000] * 28])
        chunk = np.zeros(8 * MB, np.uint8).data
        s.pub.send_frames([b"camera/front", b"header", *[chunk] * 5])
        # A frame above the byte limit: ZeroMQ refuses it before reading it and drops the
        # connection (input_disconnects), which the node restores. Sent one at a time, each
        # after the connection is back: a 66 MB camera frame (legal under limits raised for it)
        # and one message of 25 frames of 60 MB.
        image = np.zeros((4400, 5000, 3), np.uint8)
        roomy = WireLimits(max_message_bytes=100 * MB, max_image_pixels=30 * MB)
        big_frame = wire.encode(CameraFrame(camera.header, image=image), limits=roomy)
        s.pub.send_frames(big_frame)
        s.processed()
        frame_60 = np.zeros(60 * MB, np.uint8).data
        s.pub.send_frames([b"camera/front", b"header", *[frame_60] * 25])
        after_bad = s.processed()  # the node keeps publishing for valid input
        assert any(d.label == "Pedestrian" for d in after_bad.detections)

        c0 = before.counters
        disconnects = c0["input_disconnects"] + 2
        diag = s.diagnostics(lambda d: d.counters["input_disconnects"] >= disconnects)
        c = diag.counters
        assert c["decode_errors"] - c0["decode_errors"] == 4, c
        assert c["receive_refused"] - c0["receive_refused"] == 2, c
        assert c["received"] - c0["received"] >= 4 + 3, c
        assert diag.sync["bad_rigs"] == before.sync["bad_rigs"], "the deep rig reached the rigs"
        assert c["step_errors"] == 0 and c["publish_errors"] == 0, c
        # Nothing of the big messages is held: the node grew by less than one 66 MB frame.
        rss_after = s.rss()
        print(f"node RSS before {rss_before / MB:.1f} MB, after {rss_after / MB:.1f} MB")
        assert rss_after - rss_before < 60 * MB, (rss_before, rss_after)
    log = "".join(s.node.output)
    assert "too many frames: 31, above the limit of 8" in log
    assert "nests maps and lists deeper than the limit of 32" in log
    assert "point_time_offsets_ns has values above the limit" in log


def big_rig(rig: RigMessage, frames: int, seq: int) -> RigMessage:
    doc = copy.deepcopy(rig.rig)
    lidar = doc["frames"]["lidar"]
    for i in range(frames):
        # Within the 1000 m a frame of a rig may lie from the vehicle (rigs with more frames
        # are refused for their size alone).
        doc["frames"][f"extra/{i}"] = {**lidar, "translation": [seq * 1e-3, 0.0, i * 0.1]}
    return RigMessage(replace(rig.header, seq=seq, stamp_ns=time.time_ns()), doc)


@pytest.mark.serial
def test_output_keeps_flowing_while_big_rigs_arrive(
    tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    # Run alone (serial): it judges the gaps between outputs from receive times, and beside
    # another test worker on two cores a gap once reached 1.06 s with nothing stalled.
    # Finding 4: a 4 MiB rig took 1.1 s to parse with the core's lock held, so nothing was
    # published meanwhile. Now a rig above limits.max_rig_bytes is refused before it is
    # unpacked, and one below it is parsed outside the lock.
    with session(tmp_path, kitti_dir, yolox_path) as s:
        rig = s.frame[0]
        assert isinstance(rig, RigMessage)
        roomy = WireLimits(max_rig_bytes=8 * 2**20)
        huge = [bytes(f) for f in wire.encode(big_rig(rig, 26_000, 0), limits=roomy)]
        assert len(huge[1]) > 4 * 2**20
        # 2,500 frames (400 kB): a legal rig big enough to take long, but not so big that its
        # parse alone (50-110 us a frame on the slower VMs, pure Python on the receiver's
        # thread while the pipeline wants both cores) comes near the 1 s the test allows:
        # at 5,000 frames the gaps reached 0.68-1.01 s there with nothing stalled.
        legal = [big_rig(rig, 2_500, seq) for seq in range(1, 4)]
        assert all(len(wire.encode(r)[1]) < DEFAULT_LIMITS.max_rig_bytes for r in legal)
        before = s.diagnostics()

        stamps: list[int] = []
        received: list[tuple[int, float]] = []  # (stamp, host time)
        start = time.monotonic()
        next_frame = start
        rigs_sent = 0
        while time.monotonic() - start < 8.0:
            now = time.monotonic()
            second = int(now - start)
            if second >= rigs_sent and second < 6:
                # Every second: a 4 MiB rig (refused), then a legal big one (parsed).
                s.pub.send_frames(huge)
                s.pub.send(legal[rigs_sent % len(legal)])
                rigs_sent += 1
            if now >= next_frame and now - start < 6.0:
                stamps.append(time.time_ns())
                s.send_frame(stamps[-1])
                next_frame += 0.2
            msg = s.next(0.01)
            if isinstance(msg, DetectionList) and msg.header.stamp_ns in stamps:
                received.append((msg.header.stamp_ns, time.monotonic()))
        assert len(received) >= 0.6 * len(stamps), (len(received), len(stamps))
        gaps = np.diff([t for _, t in received])
        assert gaps.max() < 1.0, gaps
        diag = s.diagnostics(lambda d: d.counters["received"] > before.counters["received"])
        assert diag.counters["decode_errors"] - before.counters["decode_errors"] == rigs_sent
        assert diag.sync["bad_rigs"] == before.sync["bad_rigs"]
