"""The live node encodes a camera frame as it arrives (`pipeline.camera_ahead`): a sweep
completed after its camera frame waits for no camera encoder. Real sockets, real KITTI frames."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from perception.io.transport import Publisher
from perception.msgs.types import DetectionList, LidarSweep
from replay.datasets.kitti_object import KittiObjectFolder
from tests.integration.listen import Outputs
from tests.integration.node_harness import node_config, running_node

pytestmark = pytest.mark.slow

FRAMES = 6
#: How long after its camera frame a sweep is complete (a spinning lidar's sweep ends after the
#: camera fired within it).
LEAD_S = 0.15


def _count_at_least(n: int) -> Callable[[Outputs], bool]:
    return lambda o: len(o.detections) >= n


def _run(tmp_path: Path, kitti_dir: Path, yolox_path: Path, ahead: bool) -> list[DetectionList]:
    tmp_path.mkdir()
    config, sensors, detections = node_config(tmp_path, yolox_path)
    doc = yaml.safe_load(config.read_text())
    doc["pipeline"] = {"camera_ahead": ahead}
    config.write_text(yaml.safe_dump(doc))
    folder = KittiObjectFolder(kitti_dir)
    with (
        running_node(config) as node,
        Publisher(sensors, bind=True) as pub,
        Outputs(detections) as outputs,
    ):
        time.sleep(1.0)
        for k in range(FRAMES):
            stamp_ns = time.time_ns()
            *before, sweep = folder.frame_messages(k % len(folder), stamp_ns)
            assert isinstance(sweep, LidarSweep)
            for msg in before:  # the rig, then the camera frame
                pub.send(replace(msg, header=replace(msg.header, seq=k)))
            time.sleep(LEAD_S)
            pub.send(replace(sweep, header=replace(sweep.header, seq=k)))
            outputs.wait_for(_count_at_least(k + 1), 30.0, f"{k + 1} outputs")
        assert node.proc.poll() is None
        return [dl for _, dl in outputs.detections]


def test_a_sweep_after_its_camera_frame_waits_for_no_camera_encoder(
    tmp_path: Path, kitti_dir: Path, yolox_path: Path
) -> None:
    ahead = _run(tmp_path / "ahead", kitti_dir, yolox_path, ahead=True)
    inline = _run(tmp_path / "inline", kitti_dir, yolox_path, ahead=False)
    assert len(ahead) == len(inline) == FRAMES
    for dl in ahead[1:]:
        # Encoded while the sweep was still coming: the frame waited for none of it.
        assert dl.timings_ns["camera_wait"] * 5 < dl.timings_ns["camera_encoder"], dl.timings_ns
    assert all("camera_wait" not in dl.timings_ns for dl in inline)
    # The same detections either way.
    for a, b in zip(ahead, inline, strict=True):
        assert [(d.label, d.center) for d in a.detections] == [
            (d.label, d.center) for d in b.detections
        ]
