"""Lidar encoder latency on real KITTI scans: ONNX Runtime vs torch (CPU), two grids.

Run: `python -m pytest benchmarks/test_lidar_encoder_bench.py --benchmark-enable`. Each benchmark
first checks the two backends agree on the scan it times. The time covers padding (to the
smallest point bucket that holds the scan) plus the encoder, i.e. what a caller of
``LidarEncoderRunner.encode`` pays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.factory import EngineFactory
from engines.lidar.config import FEATURES, LidarEncoderConfig
from engines.lidar.runner import LidarEncoderRunner
from engines.settings import EngineSettings

PARITY_ATOL = 1e-5

SCANS = {
    # the whole 360-degree scan of frame 000000 (~115k points)
    "full_000000": "velodyne/000000.bin",
    # the same frame cropped to the camera's field of view (~20k points)
    "cropped_000000": "velodyne_reduced/000000.bin",
}
GRIDS = {"0.16m": LidarEncoderConfig(), "0.32m": LidarEncoderConfig.coarse()}


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], LidarEncoderRunner]:
    cache = tmp_path_factory.mktemp("engines")
    factories = {
        backend: EngineFactory(EngineSettings(backend=backend), export_dir=cache)
        for backend in ("onnxruntime", "torch")
    }
    return {
        (grid, backend): LidarEncoderRunner(factory.lidar_encoder(cfg), cfg)
        for grid, cfg in GRIDS.items()
        for backend, factory in factories.items()
    }


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("scan", list(SCANS))
def test_lidar_encoder(benchmark, engines, kitti_dir: Path, *, scan: str, grid: str, backend: str):
    points = np.fromfile(kitti_dir / SCANS[scan], dtype=np.float32).reshape(-1, 4)
    engine = engines[(grid, backend)]
    other = engines[(grid, "torch" if backend == "onnxruntime" else "onnxruntime")]
    expected = other.encode(points)
    got = engine.encode(points)
    np.testing.assert_allclose(got, expected, rtol=0, atol=PARITY_ATOL)
    assert got[FEATURES.index("occupancy")].sum() > 1000

    benchmark.group = f"lidar encoder {scan} {grid}"
    benchmark.extra_info.update(
        {"points": len(points), "grid": grid, "backend": backend, "describe": engine.describe()}
    )
    result = benchmark(engine.encode, points)
    np.testing.assert_array_equal(result, got)
