"""Wire format cost: `perception.msgs.wire.encode` and `decode` of real-sized messages.

Run: `python -m pytest benchmarks/test_wire_bench.py --benchmark-enable`.

Messages: the full KITTI scan 000000 (`velodyne`, 115,384 points, 1.8 MB), with per-point time
offsets too (a 100 ms sweep: the decoder bounds them), and a FOV-cropped one
(`velodyne_reduced` 000003, 18,911 points), the 1242x375 BGR image of KITTI frame 000003, the
KITTI rig of frame 000003 (a RigMessage: its document is walked for nesting and sizes), and a
DetectionList of 30 detections (the busy-street case the node publishes every sweep).

`encode` returns views of the message's arrays and then validates its output with `decode`, so
its cost is the header document plus a full decode (finiteness and range checks included): it is
expected to be at least the decode figure. `decode` is timed on frames copied into `bytes`, as a
receiver holds them (separate memory from the sender's arrays), so the round-trip check before
timing compares real copies, not aliases of the same memory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from perception.msgs import wire
from perception.msgs.types import (
    CameraBox,
    CameraFrame,
    Detection3D,
    DetectionList,
    Header,
    LidarSweep,
    Message,
    RigMessage,
)
from replay.datasets.kitti_object import KittiObjectFolder

FRAME = "000003"
N_DETECTIONS = 30


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found: {path} (set PERCEPTION_DATA to the data corpus)")
    return path


def _sweep(path: Path, offsets: bool = False) -> LidarSweep:
    points = np.fromfile(_require(path), dtype="<f4").reshape(-1, 4)
    # A 100 ms sweep: each point's time after the sweep start, in scan order.
    times = np.linspace(0, 99_999_999, len(points)).astype(np.int64) if offsets else None
    return LidarSweep(Header("lidar/top", 3, 1_000_000_000, "lidar"), points, times)


def _rig(kitti_dir: Path) -> RigMessage:
    _require(kitti_dir / "calib" / f"{FRAME}.txt")
    rig = KittiObjectFolder(kitti_dir).frame_messages(1, 1_000_000_000)[0]
    assert isinstance(rig, RigMessage)
    return rig


def _camera(path: Path) -> CameraFrame:
    decoded = cv2.imread(str(_require(path)), cv2.IMREAD_COLOR)  # BGR, as the node carries it
    assert decoded is not None, f"{path}: unreadable image"
    image = np.ascontiguousarray(decoded, dtype=np.uint8)  # no copy: types it for mypy
    assert image.shape == (375, 1242, 3)
    return CameraFrame(Header("camera/front", 3, 1_000_000_000, "camera/front"), image=image)


def _detections() -> DetectionList:
    # Deterministic but varied values: every optional field present on half the detections, so
    # the header document is as large as a real busy-street list.
    rng = np.random.default_rng(8)
    labels = ("Car", "Pedestrian", "Cyclist")
    dets = []
    for i in range(N_DETECTIONS):
        x, y, z = (float(v) for v in rng.uniform((-40, -20, -2), (40, 20, 1)))
        full = i % 2 == 0
        box = CameraBox("camera/front", *(float(v) for v in np.sort(rng.uniform(0, 1242, 4))))
        dets.append(
            Detection3D(
                label=labels[i % 3],
                score=float(rng.uniform(0.3, 1.0)),
                center=(x, y, z),
                size=(float(rng.uniform(0.5, 5)), float(rng.uniform(0.5, 2)), 1.6),
                yaw=float(rng.uniform(-np.pi, np.pi)),
                sources=("lidar", "camera/front") if full else ("lidar",),
                latitude_deg=49.0 + x * 1e-5 if full else None,
                longitude_deg=8.4 + y * 1e-5 if full else None,
                camera_box=box if full else None,
            )
        )
    timings = {s: 1_000_000 * (k + 1) for k, s in enumerate(("sync", "camera", "fusion", "post"))}
    return DetectionList(
        Header("detections", 3, 1_000_000_000, "vehicle"),
        tuple(dets),
        timings_ns=timings,
        latency_ns=45_000_000,
        degraded=("camera/left",),
    )


# id -> builder given the KITTI training folder (None for synthetic messages: no data needed)
BUILDERS: dict[str, Callable[[Path | None], Message]] = {
    "lidar-full-115k": lambda k: _sweep(_kitti(k) / "velodyne" / "000000.bin"),
    "lidar-full-115k-offsets": lambda k: _sweep(_kitti(k) / "velodyne" / "000000.bin", True),
    "lidar-reduced-19k": lambda k: _sweep(_kitti(k) / "velodyne_reduced" / f"{FRAME}.bin"),
    "camera-bgr-1242x375": lambda k: _camera(_kitti(k) / "image_2" / f"{FRAME}.png"),
    "rig-kitti": lambda k: _rig(_kitti(k)),
    "detections-30": lambda _: _detections(),
}


def _kitti(kitti_dir: Path | None) -> Path:
    assert kitti_dir is not None
    return kitti_dir


@pytest.fixture(scope="module", params=list(BUILDERS))
def message(request: pytest.FixtureRequest) -> Message:
    """One message per id; the KITTI fixture is asked for only by the real-data ones, so the
    synthetic case runs (and the others skip) without the data corpus."""
    name: str = request.param
    kitti_dir = None if name.startswith("detections") else request.getfixturevalue("kitti_dir")
    return BUILDERS[name](kitti_dir)


def _received(msg: Message) -> list[bytes]:
    """The frames of `msg` as a receiver holds them: copies, not views of `msg`'s arrays."""
    return [bytes(f) for f in wire.encode(msg)]


def _assert_round_trip(msg: Message, frames: list[bytes]) -> None:
    topic, out = wire.decode(frames)
    assert topic == msg.header.stream
    assert type(out) is type(msg)
    assert out.header == msg.header
    if isinstance(msg, LidarSweep):
        assert isinstance(out, LidarSweep)
        assert out.points.dtype == np.float32
        np.testing.assert_array_equal(out.points, msg.points)
        if msg.point_time_offsets_ns is None:
            assert out.point_time_offsets_ns is None
        else:
            assert out.point_time_offsets_ns is not None
            np.testing.assert_array_equal(out.point_time_offsets_ns, msg.point_time_offsets_ns)
    elif isinstance(msg, CameraFrame):
        assert isinstance(out, CameraFrame)
        assert out.encoding == msg.encoding and out.image is not None and msg.image is not None
        np.testing.assert_array_equal(out.image, msg.image)
    else:
        assert out == msg  # dataclass equality: every detection and field


def _wire_bytes(frames: list[bytes]) -> int:
    return sum(len(f) for f in frames)


def test_encode(benchmark: BenchmarkFixture, message: Message) -> None:
    frames = _received(message)
    _assert_round_trip(message, frames)
    benchmark.group = "wire encode"
    benchmark.extra_info["wire_bytes"] = _wire_bytes(frames)
    out = benchmark(wire.encode, message)
    assert [bytes(f) for f in out] == frames


def test_decode(benchmark: BenchmarkFixture, message: Message) -> None:
    frames = _received(message)
    _assert_round_trip(message, frames)
    benchmark.group = "wire decode"
    benchmark.extra_info["wire_bytes"] = _wire_bytes(frames)
    topic, out = benchmark(wire.decode, frames)
    assert topic == message.header.stream and out.header == message.header
