"""Latency of the fusion engine on a real KITTI frame (000003, two cars): ONNX Runtime, torch CPU.

Run: `python -m pytest benchmarks/test_fusion_engine_bench.py --benchmark-enable`. Each benchmark
first checks that what it times is correct (both cars within 0.8 m of their reference boxes).
The graph has static shapes, so the time depends on the padded sizes (n_max, b_max), not on the
number of boxes given.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from calibration import load_kitti_object_calib
from engines.factory import EngineFactory
from engines.fusion.config import FusionEngineConfig
from engines.fusion.graph import export_fusion_engine_onnx
from engines.fusion.runner import FusionEngineResult, FusionEngineRunner
from engines.onnxruntime_backend import OnnxRuntimeEngine
from engines.settings import EngineSettings
from perception.pipeline.ground import estimate_ground
from replay.evaluation import filter_references, project_box, read_pointpillars_boxes
from tests.conftest import png_size

FRAME = "000003"


@pytest.fixture(scope="module")
def frame_inputs(kitti_dir: Path, data_dir: Path):
    calib = kitti_dir / "calib" / f"{FRAME}.txt"
    image = kitti_dir / "image_2" / f"{FRAME}.png"
    scan = kitti_dir / "velodyne_reduced" / f"{FRAME}.bin"
    reference = data_dir / "kitti_pointpillars" / "reference_pred_velo" / f"{FRAME}.txt"
    for path in (calib, image, scan, reference):
        if not path.exists():
            pytest.skip(f"real data not found: {path}")
    width, height = png_size(image)
    rig = load_kitti_object_calib(calib, width, height)
    camera = rig.cameras["front"]
    camera_from_vehicle = rig.transform("camera/front", "vehicle")
    points = np.fromfile(scan, dtype="<f4").reshape(-1, 4)
    refs = filter_references(
        read_pointpillars_boxes(reference),
        classes=["Car"],
        camera=camera,
        camera_from_vehicle=camera_from_vehicle,
    )
    car = FusionEngineConfig().class_index("Car")
    boxes = []
    for ref in refs:
        projected = project_box(ref, camera, camera_from_vehicle)
        assert projected is not None
        boxes.append([*projected, ref.score, car])
    plane = estimate_ground(points)
    args = (
        points,
        np.asarray(boxes, np.float32),
        camera_from_vehicle.matrix,
        camera.k,
        (float(camera.width), float(camera.height)),
        (*plane.normal, plane.offset),
    )
    return args, refs


def _check(result: FusionEngineResult, refs) -> None:
    assert result.valid.all() and len(result.valid) == len(refs) == 2
    for box, ref in zip(result.boxes3d, refs, strict=True):
        assert math.hypot(box[0] - ref.center[0], box[1] - ref.center[1]) < 0.8


def test_fusion_engine_onnxruntime(benchmark, frame_inputs, tmp_path: Path) -> None:
    args, refs = frame_inputs
    runner = FusionEngineRunner(
        OnnxRuntimeEngine(export_fusion_engine_onnx(tmp_path / "fusion.onnx"))
    )
    _check(runner.run(*args), refs)
    benchmark.extra_info["engine"] = runner.describe()
    result = benchmark(runner.run, *args)
    _check(result, refs)


def test_fusion_engine_torch_cpu(benchmark, frame_inputs) -> None:
    args, refs = frame_inputs
    runner = FusionEngineRunner(EngineFactory(EngineSettings(backend="torch")).fusion_engine())
    _check(runner.run(*args), refs)
    benchmark.extra_info["engine"] = f"{runner.describe()}, {torch.get_num_threads()} threads"
    result = benchmark(runner.run, *args)
    _check(result, refs)
