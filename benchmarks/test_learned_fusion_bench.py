"""Latency of the learned fusion engine (the packaged model) on a real KITTI frame (000003).

Run: `python -m pytest benchmarks/test_learned_fusion_bench.py --benchmark-enable`. What is
timed is the engine call the node makes per sweep: pillarizing the painted points and running
the engine (with the camera-free attribution copy in the same call), on ONNX Runtime (CPU,
2 threads) and on torch (CPU). The points are painted once beforehand with YOLOX-nano's boxes,
as the node paints them. Each benchmark first checks what it times: the engine's detections
equal the torch graph's of the same weights, computed here without the engine (the packaged
model is trained on synthetic drives only; what it finds on real frames is in RESULTS.md, not
asserted here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration import load_kitti_object_calib
from engines.camera.detector import CameraDetector
from engines.factory import EngineFactory
from engines.fusion.learned_config import PACKAGED_LEARNED_MODEL
from engines.fusion.learned_runner import LearnedDetections, LearnedFusionRunner
from engines.fusion.pillars import pillarize
from engines.onnxruntime_backend import OnnxRuntimeEngine
from engines.settings import EngineSettings
from perception.pipeline.learned_model import load_learned_model
from perception.pipeline.painting import PaintView, paint_points
from replay.datasets.kitti_object import read_image

FRAME = "000003"


@pytest.fixture(scope="module")
def painted(kitti_dir: Path, yolox_path: Path):
    if not PACKAGED_LEARNED_MODEL.is_file():
        pytest.skip(f"no packaged learned model at {PACKAGED_LEARNED_MODEL}")
    calib = kitti_dir / "calib" / f"{FRAME}.txt"
    image = read_image(kitti_dir / "image_2" / f"{FRAME}.png")
    rig = load_kitti_object_calib(calib, image.shape[1], image.shape[0])
    points = np.fromfile(kitti_dir / "velodyne_reduced" / f"{FRAME}.bin", "<f4").reshape(-1, 4)
    detector = CameraDetector(OnnxRuntimeEngine(yolox_path), kind="yolox")
    model = load_learned_model("learned_fusion")
    view = PaintView(
        rig.cameras["front"].undistorted(),
        rig.transform("camera/front", "vehicle").matrix,
        detector.detect(image),
    )
    painted_points = paint_points(points, [view], model.config.classes)
    return painted_points, _reference_rows(painted_points)


def _reference_rows(points: np.ndarray) -> np.ndarray:
    """The detection table of the packaged weights run by torch directly (no engine)."""
    torch = pytest.importorskip("torch")
    from engines.fusion.learned_graph import load_learned_export  # needs torch

    model = load_learned_model("learned_fusion")
    graph = load_learned_export(PACKAGED_LEARNED_MODEL.with_suffix(".pt"), model.config)
    feeds = pillarize(points, model.config).as_feeds()
    with torch.no_grad():
        rows, _free = graph(*(torch.from_numpy(feeds[name]) for name in feeds))
    return np.asarray(rows.numpy(), np.float32)


def _check(result: LearnedDetections, reference: np.ndarray, threshold: np.ndarray) -> None:
    keep = reference[:, 9] >= threshold[reference[:, 10].astype(np.int64)]
    expected = reference[keep]
    assert len(result.rows) == len(expected) and len(expected) > 0
    np.testing.assert_allclose(result.rows, expected, atol=2e-3)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_learned_fusion_engine(benchmark, painted, backend: str) -> None:
    points, reference = painted
    model = load_learned_model("learned_fusion")
    engine = EngineFactory(EngineSettings(backend=backend, threads=2)).learned_fusion_engine(model)
    runner = LearnedFusionRunner.for_model(engine, model)
    _check(runner.run(points), reference, runner.thresholds)
    d = engine.describe()
    benchmark.extra_info["engine"] = f"{d.backend} {d.device} {d.model}"
    result = benchmark(runner.run, points)
    _check(result, reference, runner.thresholds)
