"""The live view (perception.node.view) against a real Foxglove WebSocket client: what it
advertises, sends and decodes to, the bounded queue, and a port in use."""

from __future__ import annotations

import base64
import json
import math
import os
import socket
import struct
import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration import load_rig
from perception.config import ViewConfig
from perception.errors import TransportError
from perception.msgs.foxglove import to_foxglove
from perception.msgs.types import (
    CameraFrame,
    Detection3D,
    DetectionList,
    Diagnostics,
    EgoPose,
    GnssFix,
    Header,
    LidarSweep,
    RigMessage,
    SyncedBundle,
    Track,
    TrackList,
)
from perception.node.view import FoxgloveView, ViewFrame, ViewMessage, ViewTopics
from perception.sync.ego import world_from_vehicle
from tests.foxglove_client import FoxgloveClient

RIG = Path(__file__).parents[3] / "calibration" / "examples" / "kitti_rig.yaml"
STAMP = 1_700_000_000_000_000_000


def _detections(stamp_ns: int) -> DetectionList:
    return DetectionList(
        Header("detections", 3, stamp_ns, "vehicle"),
        (
            Detection3D(
                "car", 0.875, (10.0, -2.0, -0.8), (3.9, 1.6, 1.5), 0.3, ("lidar", "camera")
            ),
            Detection3D("unknown", 0.25, (5.0, 3.0, -0.5), (1.0, 0.8, 1.2), -1.0, ("lidar",)),
        ),
        timings_ns={"fusion": 2_000_000, "publish": 150_000},
        latency_ns=41_000_000,
    )


def _frame(stamp_ns: int) -> ViewFrame:
    rng = np.random.default_rng(0)
    rig = load_rig(RIG)
    points = rng.normal(size=(1000, 4)).astype(np.float32)
    lidar = LidarSweep(Header("lidar/top", 3, stamp_ns, "lidar"), points)
    image = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    camera = CameraFrame(Header("camera/front", 3, stamp_ns + 1000, "camera/front"), image)
    fix = GnssFix(Header("gnss", 9, stamp_ns, "gnss"), 49.01, 8.43, 112.0)
    pose = EgoPose(stamp_ns, (12.0, -4.0, 0.5), 0.7, (5.0, 4.0, 0.0))
    bundle = SyncedBundle(lidar, {"camera/front": camera}, rig, gnss=fix, ego_pose=pose)
    track = Track(
        7, "car", 0.9, (10.0, -2.0, -0.8), (4.0, 1.7, 1.5), 0.3, (3.0, 4.0), (20.0, 1.0, 0.0),
        1.0, (3.0, 4.0), 0.0, (0.0,) * 16, 1_000_000_000, 12, 0,
    )  # fmt: skip
    tracks = TrackList(Header("tracks", 3, stamp_ns, "vehicle"), (track,))
    return ViewFrame(bundle, _detections(stamp_ns), tracks)


@pytest.fixture
def view():
    with FoxgloveView(ViewConfig(foxglove=True, port=0, image_scale=1.0), ViewTopics()) as v:
        yield v


def _wait(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _subscribed(view: FoxgloveView, client: FoxgloveClient) -> None:
    """Until the client subscribed to every channel (advertised as it connected)."""

    def done() -> bool:
        client.poll(0.05)
        return all(c.has_sinks() for c, _ in view._channels.values())

    _wait(done)


def test_a_frame_shows_as_foxglove_messages(view: FoxgloveView) -> None:
    """Every channel is advertised as a client connects; subscribed to all of them, it gets
    the frame: image, points, GNSS, rig and ego transforms, boxes, timings."""
    frame = _frame(STAMP)
    with FoxgloveClient(view.url) as client:
        _subscribed(view, client)
        advertised = {c["topic"]: c["schemaName"] for c in client.channels.values()}
        view.offer("frame", frame)
        want = {"lidar/top", "camera/front", "gnss", "rig", "ego_pose", "detections", "tracks",
                "timings"}  # fmt: skip
        client.wait_for(want, 5.0)
    assert advertised == ViewTopics().schemas()
    got = {topic: r[-1] for topic, r in client.received.items()}
    assert client.subprotocol == "foxglove.sdk.v1"

    image = got["camera/front"].message
    assert got["camera/front"].schema_name == "foxglove.RawImage"
    assert (image.width, image.height, image.encoding, image.step) == (64, 48, "bgr8", 192)
    bundle = frame.bundle
    assert bundle is not None and bundle.ego_pose is not None
    assert image.data == bundle.cameras["camera/front"].image.tobytes()  # type: ignore[union-attr]
    assert got["camera/front"].log_time_ns == STAMP + 1000

    cloud = got["lidar/top"].message
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "intensity"]
    points = np.frombuffer(cloud.data, dtype=np.float32).reshape(-1, 4)
    np.testing.assert_array_equal(points, bundle.lidar.points)
    assert cloud.frame_id == "lidar"

    (entity,) = got["detections"].message.entities
    assert len(entity.cubes) == 2 and entity.frame_id == "vehicle"
    for cube, det in zip(entity.cubes, frame.detections.detections, strict=True):
        p, s, q = cube.pose.position, cube.size, cube.pose.orientation
        assert (p.x, p.y, p.z) == pytest.approx(det.center)
        assert (s.x, s.y, s.z) == pytest.approx(det.size)
        assert 2 * math.atan2(q.z, q.w) == pytest.approx(det.yaw)
    assert [t.text for t in entity.texts] == ["car 0.88 [lidar+camera]", "unknown 0.25 [lidar]"]
    (tracks,) = got["tracks"].message.entities
    assert [t.text for t in tracks.texts] == ["#7 car 5.0 m/s"]

    (ego,) = got["ego_pose"].message.transforms
    expected = world_from_vehicle(bundle.ego_pose, bundle.rig.gnss_lever_arm_m)
    assert (ego.parent_frame_id, ego.child_frame_id) == ("enu", "vehicle")
    t = ego.translation
    assert (t.x, t.y, t.z) == pytest.approx(tuple(expected.translation))
    assert 2 * math.atan2(ego.rotation.z, ego.rotation.w) == pytest.approx(0.7)
    edges = {(tf.parent_frame_id, tf.child_frame_id) for tf in got["rig"].message.transforms}
    assert ("vehicle", "lidar") in edges and ("rect", "camera/front") in edges
    assert got["gnss"].message.latitude == pytest.approx(49.01)

    timings = got["timings"].message
    assert timings["stages_ms"] == {"fusion": 2.0, "publish": 0.15}
    assert timings["latency_ms"] == pytest.approx(41.0)
    assert view.stats.errors == 0


def test_nothing_is_converted_for_topics_nobody_subscribes_to(
    view: FoxgloveView, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a client nothing is converted, but a topic of no expected channel: its first
    message is, to advertise the channel it needs."""
    import perception.node.view as module

    converted: list[str] = []

    def counting(msg, topic):
        converted.append(topic)
        return to_foxglove(msg, topic)

    monkeypatch.setattr(module, "to_foxglove", counting)
    for i in range(5):
        view.offer("frame", _frame(STAMP + i))
        sweep = LidarSweep(
            Header("lidar/rear", i, STAMP + i, "lidar"), np.zeros((4, 4), np.float32)
        )
        view.offer("lidar/rear", ViewMessage("lidar/rear", sweep))
        _wait(lambda: not any(view._queues.values()))
    time.sleep(0.05)
    assert converted == ["lidar/rear"] and view.stats.sent == 0 and view.stats.offered == 10


def test_a_full_queue_drops_its_oldest_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The producer never waits: with the view's thread stuck, the newest entries stay."""
    v = FoxgloveView(ViewConfig(foxglove=True, port=0, queue_size=2))  # not started: no thread
    frames = [_frame(STAMP + i) for i in range(5)]
    start = time.perf_counter()
    for f in frames:
        v.offer("frame", f)
    # Waiting on a queue no thread empties would hang; a loaded machine may take milliseconds.
    assert time.perf_counter() - start < 2.0
    v.offer("diagnostics", ViewMessage("diagnostics", Diagnostics(Header("diagnostics", 0, 1, ""))))
    assert (v.stats.offered, v.stats.dropped) == (6, 3)
    assert list(v._queues["frame"]) == frames[-2:]
    assert len(v._queues["diagnostics"]) == 1


def test_perception_view_derives_the_ego_pose_from_gnss_and_rig(view: FoxgloveView) -> None:
    """Messages received from a running node: the ego pose at a DetectionList's stamp comes
    from the GNSS fixes around it (ENU around the first fix), the lever arm from the rig."""
    rig = load_rig(RIG)
    with FoxgloveClient(view.url) as client:
        _subscribed(view, client)
        view.offer(
            "rig", ViewMessage("rig", RigMessage(Header("rig", 0, STAMP, ""), rig.to_dict()))
        )
        for i in range(3):
            fix = GnssFix(Header("gnss", i, STAMP + i * 100_000_000, "gnss"),
                          49.0, 8.4 + i * 1e-5, 110.0, heading_rad=0.0)  # fmt: skip
            view.offer("gnss", ViewMessage("gnss", fix))
            _wait(lambda: not any(view._queues.values()))  # none dropped
        dl = _detections(STAMP + 100_000_000)
        view.offer("detections", ViewMessage("detections", dl))
        client.wait_for({"ego_pose", "rig", "detections", "timings", "gnss"}, 5.0)
    (ego,) = client.received["ego_pose"][-1].message.transforms
    # One fix east of the origin, 1e-5 deg of longitude: ~0.73 m at 49 deg N.
    arm = rig.gnss_lever_arm_m
    assert ego.translation.x == pytest.approx(0.73 - (0.0 if arm is None else arm[0]), abs=0.01)
    assert ego.rotation.w == pytest.approx(1.0)


def test_a_port_in_use_is_one_error_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        v = FoxgloveView(ViewConfig(foxglove=True, port=port))
        with pytest.raises(TransportError, match=rf"127\.0\.0\.1:{port}: .*in use"):
            v.start()
        v.close()


def test_a_dense_sweep_is_thinned_and_frames_are_shown_at_most_at_the_rate() -> None:
    """`max_points` thins a sweep to every k-th point, `image_scale` scales an image;
    `rate_hz` shows a frame (points, images, boxes) at most that often by their stamps, its
    timings every frame."""
    config = ViewConfig(foxglove=True, port=0, max_points=30_000, rate_hz=5.0)
    assert config.image_scale == 0.5
    with FoxgloveView(config, ViewTopics()) as view, FoxgloveClient(view.url) as client:
        _subscribed(view, client)
        frames = []
        for i in range(4):  # a 10 Hz sensor, 1 ms of jitter early
            frame = _frame(STAMP + i * 100_000_000 - (1_000_000 if i == 2 else 0))
            bundle = frame.bundle
            assert bundle is not None
            dense = np.random.default_rng(i).normal(size=(100_001, 4)).astype(np.float32)
            lidar = LidarSweep(bundle.lidar.header, dense, np.arange(100_001, dtype=np.int64))
            frame = ViewFrame(SyncedBundle(lidar, bundle.cameras, bundle.rig), frame.detections)
            frames.append(frame)
            view.offer("frame", frame)
            _wait(lambda: not any(view._queues.values()))  # none dropped

        def all_timings() -> bool:
            client.poll(0.05)
            return len(client.received["timings"]) == 4

        _wait(all_timings)
        client.poll(0.2)
    clouds = client.received["lidar/top"]
    assert [r.log_time_ns for r in clouds] == [STAMP, STAMP + 199_000_000]
    shown = [r.log_time_ns for r in client.received["detections"]]
    assert shown == [STAMP, STAMP + 199_000_000]
    images = client.received["camera/front"]
    assert [r.log_time_ns for r in images] == [STAMP + 1000, STAMP + 199_001_000]
    image = images[-1].message  # image_scale 0.5 by default: 64 x 48 -> 32 x 24
    assert (image.width, image.height, image.step) == (32, 24, 96)
    original = frames[2].bundle.cameras["camera/front"].image  # type: ignore[union-attr]
    assert original is not None
    want_image = cv2.resize(original, (32, 24), interpolation=cv2.INTER_AREA)
    assert image.data == want_image.tobytes()
    cloud = clouds[-1].message
    assert [f.name for f in cloud.fields][-1] == "t_offset_ns"
    packed = np.frombuffer(cloud.data, dtype=np.uint8).reshape(-1, cloud.point_stride)
    points = packed[:, :16].copy().view(np.float32)
    offsets = packed[:, 16:24].copy().view(np.float64)[:, 0]
    np.testing.assert_array_equal(offsets, np.arange(0, 100_001, 4))
    want = frames[2].bundle.lidar.points[::4]  # type: ignore[union-attr]
    assert points.shape == (25_001, 4)  # 100,001 points, every 4th: at most 30,000
    np.testing.assert_array_equal(points, want)
    assert view.stats.errors == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_points", -1),
        ("rate_hz", -1.0),
        ("rate_hz", math.inf),
        ("image_scale", 0.0),
        ("image_scale", 1.5),
        ("nice", -1),
        ("nice", 20),
    ],
)
def test_bad_view_limits_are_refused_naming_the_field(field: str, value: float) -> None:
    from perception.errors import ConfigError

    with pytest.raises(ConfigError, match=field):
        ViewConfig(**{field: value})  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="thread priorities are Linux's")
@pytest.mark.parametrize("nice", [0, 10, 19])
def test_the_views_thread_runs_nicer_than_the_node(nice: int) -> None:
    """Where the CPU is short, the node's threads come first: the view's thread has its own
    nice value, `view.nice` above the thread that started it (capped at 19)."""
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with FoxgloveView(ViewConfig(foxglove=True, port=0, nice=nice), ViewTopics()) as view:
        thread = view._thread
        assert thread is not None and thread.native_id is not None
        want = min(base + nice, 19)
        _wait(lambda: os.getpriority(os.PRIO_PROCESS, thread.native_id) == want)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_client_that_never_reads_costs_a_bounded_backlog() -> None:
    """The SDK held 1,024 messages for each client that did not read (130 MB of points and
    images each; 50 such clients took 6.9 GB). Here 300 frames of 1.6 MB of points each are
    shown to one such client; the view holds at most `CLIENT_BACKLOG_MESSAGES` of them."""
    config = ViewConfig(foxglove=True, port=0, image_scale=1.0, max_points=0, rate_hz=0.0)
    points = np.random.default_rng(1).normal(size=(100_000, 4)).astype(np.float32)
    with FoxgloveView(config, ViewTopics()) as view:
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(10)
        try:
            slow.connect(("127.0.0.1", view.port))
            key = base64.b64encode(os.urandom(16)).decode()
            slow.sendall(
                f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: foxglove.sdk.v1\r\n\r\n".encode()
            )
            assert b" 101 " in slow.recv(4096).split(b"\r\n")[0]
            # Channel ids count on across the process's views: the ones of this view's.
            channel_ids = [c.id() for c, _ in view._channels.values()]
            ids = [{"id": i, "channelId": i} for i in channel_ids]
            body = json.dumps({"op": "subscribe", "subscriptions": ids}).encode()
            slow.sendall(struct.pack("!BBH", 0x81, 0x80 | 126, len(body)) + bytes(4) + body)
            _wait(lambda: all(c.has_sinks() for c, _ in view._channels.values()))
            before = _rss_bytes()
            for k in range(300):
                frame = _frame(STAMP + k * 100_000_000)
                assert frame.bundle is not None
                lidar = replace(frame.bundle.lidar, points=points)
                view.offer("frame", replace(frame, bundle=replace(frame.bundle, lidar=lidar)))
                time.sleep(0.01)
            time.sleep(1.0)
            grown = _rss_bytes() - before
        finally:
            slow.close()
    assert grown < 100 * 2**20, grown / 2**20  # 13 MB here; 204 MB with the default backlog
