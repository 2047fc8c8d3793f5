"""`perception run --foxglove --metrics` over real sockets on real KITTI frames: a Foxglove
WebSocket client subscribed to every channel decodes the camera image, the point cloud and
SceneUpdates whose boxes are the DetectionLists the node published over ZeroMQ; the Prometheus
endpoint, scraped during the run, shows the counters moving."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from perception.io.transport import Subscriber
from perception.msgs import wire
from perception.msgs.types import DetectionList
from replay.datasets.kitti_object import KittiObjectFolder, read_image, read_kitti_scan
from tests.foxglove_client import FoxgloveClient
from tests.integration.node_harness import node_config, running_node, start_player

pytestmark = pytest.mark.slow

_RECEIVED = "perception_received_total"


def _url(output: list[str], pattern: str) -> str:
    for line in output:
        if m := re.search(pattern, line):
            return m.group(1)
    raise AssertionError(f"no {pattern!r} in the node's output:\n{''.join(output)}")


def _scrape(url: str) -> dict[str, float]:
    """Unlabelled samples by name, and labelled ones as `name{k=v,...}`."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def _collect_detections(sub: Subscriber, out: dict[int, DetectionList]) -> None:
    while (frames := sub.recv(timeout_ms=0)) is not None:
        _, msg = wire.decode(frames)
        assert isinstance(msg, DetectionList)
        out[msg.header.stamp_ns] = msg


def test_live_view_and_metrics_of_a_running_node(
    tmp_path: Path, kitti_dir: Path, yolox_path: Path, record_property
) -> None:
    if not yolox_path.is_file():
        pytest.skip(f"real data not found: {yolox_path}")
    config, sensors, detections_ep = node_config(tmp_path, yolox_path)
    # Every point and the image as it is, to check them byte for byte (the defaults thin them).
    doc = yaml.safe_load(config.read_text())
    doc["view"] = {"max_points": 0, "image_scale": 1.0}
    config.write_text(yaml.safe_dump(doc))
    published: dict[int, DetectionList] = {}
    with (
        running_node(config, "--foxglove", "0", "--metrics", "0") as node,
        Subscriber([detections_ep], ["detections"]) as sub,
    ):
        view_url = _url(node.output, r"live view on (ws://\S+)")
        metrics_url = _url(node.output, r"metrics on (http://\S+)")
        before = _scrape(metrics_url)
        with FoxgloveClient(view_url) as client:
            # Twice through the folder: the first frames advertise the channels.
            scrapes = []
            for _ in range(2):
                player = start_player(kitti_dir, sensors, rate_hz=5.0)
                while player.poll() is None:
                    client.poll(0.1)
                    _collect_detections(sub, published)
                scrapes.append(_scrape(metrics_url))
            during = scrapes[0]
            want = {"camera/front", "lidar/top", "detections", "tracks", "rig", "timings",
                    "diagnostics"}  # fmt: skip
            client.wait_for(want, 10.0)
            client.poll(0.5)
            time.sleep(0.2)
            _collect_detections(sub, published)
        # The counters are those of the node's last Diagnostics (1 Hz).
        deadline = time.monotonic() + 3.0
        while (after := _scrape(metrics_url))[_RECEIVED] <= during[_RECEIVED]:
            assert time.monotonic() < deadline, "the received counter did not move"
            time.sleep(0.2)
    assert node.proc.returncode == 0, "".join(node.output)

    # Every channel the client subscribed to, in the schemas a recorded drive uses.
    schemas = {c["topic"]: c["schemaName"] for c in client.channels.values()}
    assert schemas["camera/front"] == "foxglove.RawImage"
    assert schemas["lidar/top"] == "foxglove.PointCloud"
    assert schemas["detections"] == schemas["tracks"] == "foxglove.SceneUpdate"
    assert schemas["rig"] == "foxglove.FrameTransforms"
    assert schemas["diagnostics"] == "perception.Diagnostics"

    # The camera image and the point cloud are a KITTI frame's, byte for byte.
    folder = KittiObjectFolder(kitti_dir)
    cloud_msg = client.received["lidar/top"][-1]
    cloud = cloud_msg.message
    n_points = len(cloud.data) // cloud.point_stride
    scans = {f.frame_id: read_kitti_scan(f.lidar_path) for f in folder.frames}
    (frame_id,) = [k for k, v in scans.items() if v.tobytes() == cloud.data]
    image_msg = next(
        r for r in client.received["camera/front"] if r.log_time_ns == cloud_msg.log_time_ns
    )
    image = image_msg.message
    expected = read_image(next(f.image_path for f in folder.frames if f.frame_id == frame_id))
    assert (image.height, image.width, image.encoding) == (*expected.shape[:2], "bgr8")
    assert image.data == expected.tobytes()

    # Each SceneUpdate shown is the DetectionList published at its stamp: box for box.
    scenes = client.received["detections"]
    matched = [s for s in scenes if s.log_time_ns in published]
    assert len(matched) >= 3, (len(scenes), len(published))
    n_boxes = 0
    for scene in matched:
        dl = published[scene.log_time_ns]
        (entity,) = scene.message.entities
        assert entity.frame_id == dl.header.frame_id
        assert len(entity.cubes) == len(dl.detections)
        for cube, text, det in zip(entity.cubes, entity.texts, dl.detections, strict=True):
            p, s, q = cube.pose.position, cube.size, cube.pose.orientation
            assert (p.x, p.y, p.z) == pytest.approx(det.center, abs=1e-5)
            assert (s.x, s.y, s.z) == pytest.approx(det.size, abs=1e-5)
            assert 2 * math.atan2(q.z, q.w) == pytest.approx(det.yaw, abs=1e-5)
            assert text.text.startswith(f"{det.label} {det.score:.2f}")
            assert "+".join(det.sources) in text.text
            n_boxes += 1
    assert n_boxes > 0
    timings = next(t.message for t in client.received["timings"] if t.log_time_ns in published)
    dl = published[timings["stamp_ns"]]
    assert timings["stages_ms"] == pytest.approx({k: v / 1e6 for k, v in dl.timings_ns.items()})

    # The counters move: scraped before the drive, between its two passes and after.
    assert before.get(_RECEIVED, 0) < during[_RECEIVED] < after[_RECEIVED]
    fusion = "perception_stage_duration_seconds_count{stage=fusion}"
    assert 0 < during[fusion] < after[fusion]
    assert after["perception_published_total"] >= len(published)
    assert after["perception_sensor_alive{stream=lidar/top}"] == 1
    assert after["perception_sensor_messages_total{stream=camera/front}"] >= 16
    assert after["perception_view_sent_total"] > 0
    record_property("view", {"image": (image.width, image.height), "points": n_points,
                             "scenes_matched": len(matched), "boxes": n_boxes,
                             "view_dropped": after["perception_view_dropped_total"]})  # fmt: skip
    print(f"view: image {image.width}x{image.height} (frame {frame_id}), {n_points} points, "
          f"{len(matched)} SceneUpdates = DetectionLists, {n_boxes} boxes")  # fmt: skip


def test_perception_view_shows_a_node_already_running(
    tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    """`perception view` subscribes to a running node's sensor topics and outputs over
    ZeroMQ and serves them: the same channels, the boxes those of the published lists."""
    if not yolox_path.is_file():
        pytest.skip(f"real data not found: {yolox_path}")
    config, sensors, detections_ep = node_config(tmp_path, yolox_path)
    published: dict[int, DetectionList] = {}
    view = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "view", "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert view.stdout is not None
        first = view.stdout.readline()
        url = _url([first], r"serving (ws://\S+)")
        with (
            running_node(config),
            Subscriber([detections_ep], ["detections"]) as sub,
            FoxgloveClient(url) as client,
        ):
            for _ in range(2):  # the first frames advertise the channels
                player = start_player(kitti_dir, sensors, rate_hz=5.0)
                while player.poll() is None:
                    client.poll(0.1)
                    _collect_detections(sub, published)
            client.wait_for({"camera/front", "lidar/top", "rig", "detections", "tracks",
                             "timings", "diagnostics"}, 10.0)  # fmt: skip
            client.poll(0.3)
            _collect_detections(sub, published)
    finally:
        view.send_signal(signal.SIGINT)
        out, _ = view.communicate(timeout=10)
    assert view.returncode == 0, first + out
    assert "perception view: stopped;" in out
    matched = [s for s in client.received["detections"] if s.log_time_ns in published]
    assert len(matched) >= 3
    for scene in matched:
        (entity,) = scene.message.entities
        dl = published[scene.log_time_ns]
        centers = [(c.pose.position.x, c.pose.position.y, c.pose.position.z) for c in entity.cubes]
        expected = [d.center for d in dl.detections]
        np.testing.assert_allclose(
            np.reshape(centers, (-1, 3)), np.reshape(expected, (-1, 3)), atol=1e-5
        )
    # The view's defaults: images at half size, at most 30,000 points a sweep.
    image = client.received["camera/front"][-1].message
    assert (image.width, image.height) == (621, 188)
    cloud = client.received["lidar/top"][-1].message
    assert 0 < len(cloud.data) // cloud.point_stride <= 30_000
