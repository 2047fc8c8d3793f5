"""The node core is shared: the same inputs - real KITTI frames with a corrupt rig, a garbage
frame and a duplicate sweep in them - given to a live `perception run` over real ZeroMQ
sockets and to offline replay (replay.offline.run_core) give the same DetectionLists and the
same counters."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import zmq

from perception.config import load_config
from perception.io.transport import Subscriber
from perception.msgs import wire
from perception.msgs.types import DetectionList, Diagnostics, Header, Message, RigMessage
from perception.node import NodeCore
from perception.pipeline import Pipeline
from replay.datasets.kitti_object import KittiObjectFolder
from replay.offline import Received, run_core
from tests.integration.node_harness import node_config, running_node

pytestmark = pytest.mark.slow

FRAMES = 4
PERIOD_NS = 400_000_000  # the node keeps up: no bundle is skipped for being behind
GARBAGE = [b"lidar/top", b"\xc1 not a header document", b"\x00" * 64]
# Counters that measure this machine's speed, not what the node decided.
TIMING_COUNTERS = {
    "budget_overruns",
    "consecutive_overruns",
    "longest_overrun_run",
    "clock_jumps",
    "calibration_ns",
    "calibration_cpu_ns",
}


def _corrupt_rig(rig: RigMessage) -> RigMessage:
    doc = dict(rig.rig)
    cameras = {name: dict(camera) for name, camera in doc["cameras"].items()}
    cameras["front"]["k"] = [[-700.0, 0.0, 600.0], [0.0, 700.0, 180.0], [0.0, 0.0, 1.0]]
    doc["cameras"] = cameras
    return RigMessage(Header("rig", 99, rig.header.stamp_ns, "vehicle"), doc)


def _inputs(kitti_dir: Path, start_ns: int) -> list[tuple[str, list[bytes]]]:
    """(topic, wire frames) in send order: per KITTI frame its rig, camera and sweep; after
    frame 0 a rig the calibration rejects (negative focal length), after frame 1 an
    undecodable message, after frame 2 its sweep once more."""
    folder = KittiObjectFolder(kitti_dir)
    out: list[tuple[str, list[bytes]]] = []

    def add(msg: Message) -> None:
        out.append((msg.header.stream, [bytes(f) for f in wire.encode(msg)]))

    for index in range(FRAMES):
        rig, camera, sweep = folder.frame_messages(index, start_ns + index * PERIOD_NS)
        for msg in (rig, camera, sweep):
            add(msg)
        if index == 0:
            assert isinstance(rig, RigMessage)
            add(_corrupt_rig(rig))
        elif index == 1:
            out.append(("lidar/top", list(GARBAGE)))
        elif index == 2:
            add(sweep)
    return out


def _wait_for_subscriptions(xpub: zmq.Socket[bytes], topics: set[str]) -> None:
    """Until the node's SUB sockets have subscribed to every topic (XPUB hears them), whatever
    is published is lost."""
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while not topics <= seen:
        assert time.monotonic() < deadline, f"no subscription for {topics - seen}"
        if xpub.poll(200):
            event = xpub.recv()
            if event[:1] == b"\x01":
                seen.add(event[1:].decode())


def _run_live(
    config: Path, sensors: str, detections: str, kitti_dir: Path
) -> tuple[list, Diagnostics, list[tuple[str, list[bytes]]], int]:
    """The live node's outputs and last diagnostics, and the inputs it was sent, stamped from
    the time the node was ready for them (a node slow to start on a loaded machine must not
    be sent stale sensor stamps), with that time."""
    outputs: list[DetectionList] = []
    last: Diagnostics | None = None
    xpub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    xpub.bind(sensors)
    try:
        with (
            running_node(config),
            Subscriber([detections], ["detections", "diagnostics"]) as sub,
        ):
            _wait_for_subscriptions(xpub, {"lidar/top", "camera/front", "gnss", "rig"})
            # And until this test's own subscription to the node's outputs is in (PUB/SUB: a
            # loaded machine can take longer to connect it than the node takes to answer the
            # first sweeps): the 1 Hz diagnostics come on the same socket.
            deadline = time.monotonic() + 30
            while last is None:
                assert time.monotonic() < deadline, "no diagnostics from the live node"
                got = sub.recv(timeout_ms=200)
                if got is not None and isinstance(wire.decode(got)[1], Diagnostics):
                    break
            start_ns = time.time_ns()
            inputs = _inputs(kitti_dir, start_ns)
            for topic, frames in inputs:
                xpub.send_multipart(frames, copy=True)
                if topic == "rig":
                    # Topics travel on separate sockets, with no order between them: a rig
                    # must be in before the sweep it calibrates (as on a vehicle, where it is
                    # sent once, long before).
                    time.sleep(0.05)
                elif topic == "lidar/top":
                    # The sweep closes its frame: give the node the frame period to process it.
                    time.sleep(PERIOD_NS / 1e9)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                got = sub.recv(timeout_ms=200)
                if got is None:
                    continue
                _, msg = wire.decode(got)
                if isinstance(msg, DetectionList):
                    outputs.append(msg)
                elif isinstance(msg, Diagnostics):
                    last = msg
                    if msg.counters["received"] == len(inputs) and len(outputs) >= FRAMES:
                        break
    finally:
        xpub.close()
    assert last is not None, "no diagnostics from the live node"
    return outputs, last, inputs, start_ns


def _decisions(dl: DetectionList) -> tuple:
    """What the node decided (not how fast): header, detections, degraded, valid."""
    return (dl.header, dl.detections, dl.degraded, dl.valid)


def test_live_node_and_replay_agree_on_outputs_and_counters(
    tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    config_path, sensors, detections = node_config(tmp_path, yolox_path)
    live, diagnostics, inputs, start_ns = _run_live(config_path, sensors, detections, kitti_dir)

    config = load_config(config_path)
    core = NodeCore(config, Pipeline.from_config(config.camera_model, None, config.engines))
    # Offline, each input arrives as it was sent: a millisecond apart, a frame period after
    # each sweep.
    received = []
    receive_ns = start_ns
    for topic, frames in inputs:
        received.append(Received(topic, receive_ns, frames=frames))
        receive_ns += 1_000_000 + (PERIOD_NS if topic == "lidar/top" else 0)
    replayed = list(run_core(core, received))
    replay_diagnostics = core.diagnostics(received[-1].receive_ns)

    assert len(replayed) == FRAMES
    assert [_decisions(d) for d in live] == [_decisions(d) for d in replayed]
    # The bad inputs were seen and dropped the same way by both.
    live_counters = {k: v for k, v in diagnostics.counters.items() if k not in TIMING_COUNTERS}
    replay_counters = {
        k: v for k, v in replay_diagnostics.counters.items() if k not in TIMING_COUNTERS
    }
    assert live_counters == replay_counters
    assert live_counters["decode_errors"] == 1
    assert live_counters["published"] == FRAMES and live_counters["skipped_bundles"] == 0
    assert diagnostics.sync == replay_diagnostics.sync
    assert diagnostics.sync["bad_rigs"] == 1
    assert diagnostics.sync["duplicate_messages"] == 1
    assert diagnostics.missing_by_stream == replay_diagnostics.missing_by_stream
