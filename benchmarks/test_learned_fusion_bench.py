"""Latency of the learned fusion engine (the packaged model) on a real KITTI frame (000003).

Run: `python -m pytest benchmarks/test_learned_fusion_bench.py --benchmark-enable`. What is
timed is the engine call the node makes per sweep: pillarizing the painted points and running
the engine (with the camera-free attribution copy in the same call), on ONNX Runtime (CPU,
2 threads) and on torch (CPU). The points are painted once beforehand with YOLOX-nano's boxes,
as the node paints them; each benchmark first checks that it finds the frame's two cars.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from calibration import load_kitti_object_calib
from engines.camera.detector import CameraDetector
from engines.factory import EngineFactory
from engines.fusion.learned_config import PACKAGED_LEARNED_MODEL, resolve_learned_model
from engines.fusion.learned_runner import LearnedDetections, LearnedFusionRunner
from engines.onnxruntime_backend import OnnxRuntimeEngine
from engines.settings import EngineSettings
from perception.pipeline.painting import PaintView, paint_points
from replay.datasets.kitti_object import read_image
from replay.evaluation import read_pointpillars_boxes

FRAME = "000003"


@pytest.fixture(scope="module")
def painted(kitti_dir: Path, data_dir: Path, yolox_path: Path):
    if not PACKAGED_LEARNED_MODEL.is_file():
        pytest.skip(f"no packaged learned model at {PACKAGED_LEARNED_MODEL}")
    calib = kitti_dir / "calib" / f"{FRAME}.txt"
    image = read_image(kitti_dir / "image_2" / f"{FRAME}.png")
    rig = load_kitti_object_calib(calib, image.shape[1], image.shape[0])
    points = np.fromfile(kitti_dir / "velodyne_reduced" / f"{FRAME}.bin", "<f4").reshape(-1, 4)
    detector = CameraDetector(OnnxRuntimeEngine(yolox_path), kind="yolox")
    model = resolve_learned_model("learned_fusion")
    view = PaintView(
        rig.cameras["front"].undistorted(),
        rig.transform("camera/front", "vehicle").matrix,
        detector.detect(image),
    )
    refs = [
        r
        for r in read_pointpillars_boxes(
            data_dir / "kitti_pointpillars" / "reference_pred_velo" / f"{FRAME}.txt"
        )
        if r.score >= 0.5 and r.range_m <= 40.0
    ]
    return paint_points(points, [view], model.config.classes), refs


def _check(result: LearnedDetections, refs) -> None:
    for ref in refs:
        assert any(
            math.hypot(row[0] - ref.center[0], row[1] - ref.center[1]) < 1.5 for row in result.rows
        ), f"no detection of the car at {ref.center}"


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_learned_fusion_engine(benchmark, painted, backend: str) -> None:
    points, refs = painted
    engine, model = EngineFactory(EngineSettings(backend=backend, threads=2)).learned_fusion_engine(
        "learned_fusion"
    )
    runner = LearnedFusionRunner.for_model(engine, model)
    _check(runner.run(points), refs)
    d = engine.describe()
    benchmark.extra_info["engine"] = f"{d.backend} {d.device} {d.model}"
    result = benchmark(runner.run, points)
    _check(result, refs)
