"""A running node given malformed messages keeps running, counts them, and still processes the
next good message."""

from __future__ import annotations

import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import yaml

from perception.io.transport import Publisher, Subscriber
from perception.msgs import wire
from perception.msgs.types import DetectionList, Diagnostics, LidarSweep
from replay.datasets.kitti_object import KittiObjectFolder, read_kitti_scan
from tests.integration.node_harness import node_config, running_node

pytestmark = pytest.mark.slow

MAX_POINTS = 100_000


def _edit_header(frames: list, edit) -> list:
    doc = msgpack.unpackb(bytes(frames[1]), raw=False)
    edit(doc)
    return [frames[0], msgpack.packb(doc, use_bin_type=True), *frames[2:]]


def _malformed(sweep: LidarSweep, full_scan: np.ndarray) -> dict[str, list]:
    good = [bytes(f) for f in wire.encode(sweep)]
    nan_points = sweep.points.copy()
    nan_points[5, 0] = np.nan
    big = LidarSweep(sweep.header, full_scan)
    return {
        "truncated (buffer frame missing)": good[:2],
        "truncated buffer bytes": [*good[:2], good[2][:-7]],
        "wrong dtype": _edit_header(good, lambda d: d["buffers"][0].update(dtype="<f8")),
        "shape vs byte length": _edit_header(
            good, lambda d: d["buffers"][0].update(shape=[sweep.points.shape[0] + 1, 4])
        ),
        "NaN points": [*good[:2], nan_points.tobytes()],
        "unknown schema version": _edit_header(good, lambda d: d.update(version=99)),
        "garbage header": [good[0], b"\xc1\xff not msgpack", *good[2:]],
        "oversize sweep": [bytes(f) for f in wire.encode(big)],
    }


def _restamp(msgs, stamp_ns: int):
    from dataclasses import replace

    return [replace(m, header=replace(m.header, stamp_ns=stamp_ns)) for m in msgs]


def test_node_survives_malformed_messages(tmp_path: Path, kitti_dir: Path, yolox_path: Path):
    config, sensors, detections = node_config(tmp_path, yolox_path)
    doc = yaml.safe_load(config.read_text())
    doc["limits"] = {"max_points": MAX_POINTS}
    config.write_text(yaml.safe_dump(doc))
    folder = KittiObjectFolder(kitti_dir)
    frame = folder.frame_messages(0, 0)
    sweep = frame[-1]
    assert isinstance(sweep, LidarSweep)
    full_scan = read_kitti_scan(kitti_dir / "velodyne" / "000000.bin")
    assert full_scan.shape[0] > MAX_POINTS
    bad = _malformed(sweep, full_scan)

    with (
        running_node(config) as node,
        Publisher(sensors, bind=True, hwm=1000) as pub,
        Subscriber([detections], ["detections", "diagnostics"]) as sub,
    ):
        # PUB/SUB: until the node's subscriptions arrive, what is sent is lost; send good frames
        # until one comes back processed.
        first = None
        deadline = time.monotonic() + 30
        while first is None and time.monotonic() < deadline:
            for msg in _restamp(frame, time.time_ns()):
                pub.send(msg)
            first = _next_detections(sub, 1.0)
        assert first is not None, "".join(node.output)
        received_before = _wait_diagnostics(sub, lambda d: True).counters["received"]

        for frames in bad.values():
            pub.send_frames(frames)
        stamp = time.time_ns()
        for msg in _restamp(frame, stamp):
            pub.send(msg)
        after = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            dl = _next_detections(sub, 1.0)
            if dl is not None and dl.header.stamp_ns == stamp:
                after = dl
                break
        assert after is not None, "the good message after the bad ones was not processed"
        assert any(d.label == "Pedestrian" for d in after.detections)

        diag = _wait_diagnostics(
            sub, lambda d: d.counters["received"] >= received_before + len(bad) + 3
        )
        assert diag.counters["decode_errors"] == len(bad), diag
        # The sensor clocks are tracked per stream against the host clock.
        clocks = {c.stream: c for c in diag.clocks}
        assert {"lidar/top", "camera/front"} <= set(clocks)
        assert clocks["lidar/top"].samples >= 2
        assert node.proc.poll() is None, "node died"
    assert node.proc.returncode == 0
    log = "".join(node.output)
    assert "dropped message" in log


def _next_detections(sub: Subscriber, timeout_s: float) -> DetectionList | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        frames = sub.recv(timeout_ms=100)
        if frames is None:
            continue
        _, msg = wire.decode(frames)
        if isinstance(msg, DetectionList):
            return msg
    return None


def _wait_diagnostics(sub: Subscriber, accept, timeout_s: float = 10.0) -> Diagnostics:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        frames = sub.recv(timeout_ms=100)
        if frames is None:
            continue
        _, msg = wire.decode(frames)
        if isinstance(msg, Diagnostics) and accept(msg):
            return msg
    raise AssertionError("no matching diagnostics message")
