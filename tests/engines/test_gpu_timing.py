"""CUDA-event timing of torch engines, reported through the Engine (`last_gpu_ns`) and the
runners: absent off CUDA and on ONNX Runtime, filled on a GPU (marked `gpu`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engines.factory import EngineFactory
from engines.fusion.runner import FusionEngineRunner
from engines.gpu_timing import cuda_event_time
from engines.lidar.config import LidarEncoderConfig
from engines.lidar.runner import LidarEncoderRunner
from engines.settings import EngineSettings

SMALL = LidarEncoderConfig(x_range=(0.0, 4.0), y_range=(-2.0, 2.0), cell_size=0.5, max_points=64)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")


def _fusion_inputs():
    points = np.array([[10.0, 0.2, -1.0, 0.3], [10.2, -0.3, -0.5, 0.3]], np.float32)
    boxes = np.array([[300, 150, 340, 200, 0.9, 0]], np.float32)
    camera_from_vehicle = np.array(
        [[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], np.float64
    )
    k = np.array([[700.0, 0, 320], [0, 700, 180], [0, 0, 1]])
    return points, boxes, camera_from_vehicle, k, (640, 360), (0.0, 0.0, 1.0, 1.73)


def _runners(
    settings: EngineSettings, export_dir: Path
) -> tuple[FusionEngineRunner, LidarEncoderRunner]:
    factory = EngineFactory(settings, export_dir=export_dir)
    return (
        FusionEngineRunner(factory.fusion_engine()),
        LidarEncoderRunner(factory.lidar_encoder(SMALL), SMALL),
    )


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_off_cuda_nothing_is_reported(backend: str, tmp_path: Path) -> None:
    with cuda_event_time("cpu") as gpu:
        torch.ones(8) @ torch.ones(8)
    assert gpu.ns is None
    runner, encoder = _runners(EngineSettings(backend=backend, device="cpu"), tmp_path)
    runner.run(*_fusion_inputs())
    assert runner.last_gpu_ns is None and runner.engine.last_gpu_ns is None
    encoder.encode(np.zeros((3, 4), np.float32))
    assert encoder.last_gpu_ns is None


@pytest.mark.gpu
@needs_cuda
def test_cuda_events_time_the_device_work(tmp_path: Path) -> None:
    a = torch.randn(2048, 2048, device="cuda")
    a @ a  # cuBLAS sets up on the first product (12 ms on an H200, more than 8 warm ones)
    with cuda_event_time("cuda") as small:
        a @ a
    with cuda_event_time("cuda") as large:
        for _ in range(8):
            a @ a
    assert small.ns is not None and large.ns is not None
    assert 0 < small.ns < large.ns
    runner, encoder = _runners(EngineSettings(backend="torch", device="cuda"), tmp_path)
    runner.run(*_fusion_inputs())
    assert runner.last_gpu_ns is not None and runner.last_gpu_ns > 0
    encoder.encode(np.zeros((3, 4), np.float32))
    assert encoder.last_gpu_ns is not None and encoder.last_gpu_ns > 0
