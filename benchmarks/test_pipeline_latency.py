"""Per-frame latency of the pipeline on a real KITTI frame (one 1242x375 camera + one scan).

Run: `python -m pytest benchmarks --benchmark-enable`. Each benchmark first checks that what it
times is correct.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from perception.config import CameraModelConfig
from perception.messages import CameraFrame
from perception.pipeline import Pipeline
from perception.sync import NearestSync
from replay.kitti_object import CAMERA_STREAM, KittiObjectFolder


@pytest.fixture(scope="module")
def frame_bundle(kitti_dir: Path):
    folder = KittiObjectFolder(kitti_dir)
    sync = NearestSync((CAMERA_STREAM,), window_ns=50_000_000, timeout_ns=300_000_000)
    index = [f.frame_id for f in folder.frames].index("000003")
    for msg in folder.frame_messages(index, 0):
        sync.add(msg, receive_ns=0)
    (bundle,) = sync.poll(0)
    return bundle


@pytest.fixture(scope="module")
def pipeline(yolox_path: Path) -> Pipeline:
    return Pipeline.from_config(CameraModelConfig(path=str(yolox_path), kind="yolox"))


def test_whole_frame(benchmark, pipeline: Pipeline, frame_bundle) -> None:
    first = pipeline.step(frame_bundle, 0)
    assert any(d.label == "Car" for d in first.detections)
    result = benchmark(pipeline.step, frame_bundle, 0)
    assert [d.label for d in result.detections] == [d.label for d in first.detections]


def test_camera_encoder(benchmark, pipeline: Pipeline, frame_bundle) -> None:
    frame: CameraFrame = frame_bundle.cameras[CAMERA_STREAM]
    assert frame.image is not None
    detector = pipeline.detector
    boxes = benchmark(detector.detect, frame.image)
    assert any(b.label == "Car" for b in boxes)
