"""The torch engine's CUDA graphs: captured on the first run on CUDA, replayed with each run's
own inputs (the same outputs as eager runs), skipped on the CPU and for modules that cannot be
captured (which then run eagerly). The CUDA cases are marked `gpu`."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.engine import TensorSpec
from engines.factory import EngineFactory
from engines.fusion.buckets import BucketedFusionEngine
from engines.lidar.config import LidarEncoderConfig
from engines.settings import EngineSettings
from engines.torch_backend import TorchEngine

SMALL = LidarEncoderConfig(x_range=(0.0, 8.0), y_range=(-4.0, 4.0), cell_size=0.5, max_points=256)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")


class _Scale(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 + 1.0


class _HostSync(torch.nn.Module):
    """Reads a value back to the host mid-forward: no CUDA graph can hold that."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(x.sum().item() > 0)


XS = (TensorSpec("x", "float32", (4, 3)),)
YS = (TensorSpec("y", "float32", (4, 3)),)


def _points(rng: np.random.Generator, n: int) -> np.ndarray:
    xyz = rng.uniform([0, -4, -2], [8, 4, 1], size=(n, 3))
    return np.hstack([xyz, rng.uniform(0, 1, (n, 1))]).astype(np.float32)


def test_on_the_cpu_nothing_is_captured() -> None:
    engine = TorchEngine(_Scale(), XS, YS, device="cpu", cuda_graph=True)
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(engine.run({"x": x})["y"], x * 2 + 1)
    assert not engine.graph_captured


@pytest.mark.gpu
@needs_cuda
def test_replays_give_each_runs_own_outputs(tmp_path: Path) -> None:
    """The real lidar encoder, captured: every replay on new points equals an eager run."""
    factory = EngineFactory(EngineSettings(backend="torch", device="cuda"), export_dir=tmp_path)
    graphed = factory.lidar_encoder(SMALL)
    assert isinstance(graphed, TorchEngine)
    eager = TorchEngine(
        graphed.module, graphed.inputs, graphed.outputs, device="cuda", cuda_graph=False
    )
    rng = np.random.default_rng(3)
    for n in (5, 200, 37):
        points = np.zeros((SMALL.max_points, 4), np.float32)
        points[:n] = _points(rng, n)
        feed: dict[str, np.ndarray] = {"points": points, "num_points": np.array([n], np.int64)}
        got, want = graphed.run(feed), eager.run(feed)
        for name in want:
            # The encoder's scatter-add sums in the order CUDA's atomics land (1 ulp apart).
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)
        assert graphed.graph_captured and not eager.graph_captured
        assert graphed.last_gpu_ns is not None and graphed.last_gpu_ns > 0


@pytest.mark.gpu
@needs_cuda
def test_a_module_that_cannot_be_captured_runs_eagerly(caplog: pytest.LogCaptureFixture) -> None:
    engine = TorchEngine(_HostSync(), XS, YS, device="cuda", name="host_sync")
    x = np.ones((4, 3), np.float32)
    with caplog.at_level(logging.WARNING, logger="engines.torch_backend"):
        first = engine.run({"x": x})["y"]
        second = engine.run({"x": -x})["y"]
    np.testing.assert_array_equal(first, x)
    np.testing.assert_array_equal(second, np.zeros_like(x))
    assert not engine.graph_captured
    assert sum("capture failed" in r.message for r in caplog.records) == 1


@pytest.mark.gpu
@needs_cuda
def test_engines_on_two_threads_each_get_their_own_outputs() -> None:
    """The node runs the lidar branch beside fusion: captures and replays take turns."""
    engines = [TorchEngine(_Scale(), XS, YS, device="cuda", name=f"e{i}") for i in range(2)]
    errors: list[str] = []

    def work(engine: TorchEngine, offset: float) -> None:
        for k in range(200):
            x = np.full((4, 3), offset + k, np.float32)
            y = engine.run({"x": x})["y"]
            if not np.array_equal(y, x * 2 + 1):
                errors.append(f"{engine.name} run {k}")

    threads = [threading.Thread(target=work, args=(e, 1000.0 * i)) for i, e in enumerate(engines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and all(e.graph_captured for e in engines)


@pytest.mark.gpu
@needs_cuda
def test_a_warmed_up_pipeline_has_captured_every_engine_it_runs(yolox_path: Path) -> None:
    """No frame of a drive pays for a capture: warm-up captures the lidar encoder and every
    fusion bucket."""
    from perception.config import CameraModelConfig
    from perception.pipeline import Pipeline

    pipeline = Pipeline.from_config(
        CameraModelConfig(path=str(yolox_path), kind="yolox"),
        engines=EngineSettings(backend="torch", device="cuda"),
    )
    pipeline.warm_up()
    lidar = pipeline.lidar_objects.encoder.engine
    assert isinstance(lidar, TorchEngine) and lidar.graph_captured
    buckets = pipeline.fusion.engine
    assert isinstance(buckets, BucketedFusionEngine)
    for shape in pipeline.fusion.shapes:
        engine = buckets.engine_for(shape)
        assert isinstance(engine, TorchEngine) and engine.graph_captured, shape
