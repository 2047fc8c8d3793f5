"""Per-frame latency of the pipeline on a real KITTI frame (one 1242x375 camera + one scan).

Run: `python -m pytest benchmarks --benchmark-enable`. Each benchmark first checks that what it
times is correct.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from perception.config import CameraModelConfig, SyncConfig
from perception.msgs.types import CameraFrame
from perception.pipeline import Pipeline
from perception.sync import Bundler
from replay.datasets.kitti_object import CAMERA_STREAM, KittiObjectFolder


@pytest.fixture(scope="module")
def frame_bundle(kitti_dir: Path):
    folder = KittiObjectFolder(kitti_dir)
    sync = Bundler.from_config((CAMERA_STREAM,), SyncConfig(window_ms=50.0, timeout_ms=300.0))
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


def test_lidar_only_objects(benchmark, pipeline: Pipeline, frame_bundle) -> None:
    """The lidar encoder on the obstacle grid plus clustering and box fitting (the lidar-only
    branch's whole cost: its encode runs in the lidar_encoder stage, its detect in fusion)."""
    from perception.pipeline.ground import estimate_ground

    points = pipeline._points_in_vehicle(frame_bundle)
    ground = estimate_ground(points, pipeline.config.ground)
    branch = pipeline.lidar_objects

    def run():
        obstacle, bev = branch.encode(points, ground)
        return branch.detect(obstacle, bev, ground)

    first = run()
    assert first and {d.sources for d in first} == {("lidar",)}
    result = benchmark(run)
    assert [d.center for d in result] == [d.center for d in first]


def test_stage_shares(pipeline: Pipeline, frame_bundle) -> None:
    """Median of each stage over 40 frames and its share of the median frame (printed; run with
    -s). Not a pytest-benchmark: the stages are timed inside one `step`, as the node reports."""
    import statistics

    pipeline.step(frame_bundle, 0)
    runs = [pipeline.step(frame_bundle, 0).timings_ns for _ in range(40)]
    stages = ("preprocess", "camera_encoder", "lidar_encoder", "fusion", "postprocess")
    assert all(set(stages) <= set(r) for r in runs)
    totals = sorted(sum(r[s] for s in stages) for r in runs)
    frame = statistics.median(totals)
    p99 = totals[int(0.99 * len(totals))]
    print(f"\nframe median {frame / 1e6:.1f} ms, p99 {p99 / 1e6:.1f} ms")
    for stage in stages:
        values = sorted(r[stage] for r in runs)
        median = statistics.median(values)
        print(f"{stage:15s} median {median / 1e6:6.2f} ms  p99 {values[-1] / 1e6:6.2f} ms  "
              f"share {median / frame:5.1%}")  # fmt: skip
