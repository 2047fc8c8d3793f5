"""Real TensorRT builds and runs (GPU + TensorRT 10 + cuda-python); skipped cleanly elsewhere.

The last tests take the node's path: the engine factory builds all three engines (camera encoder,
lidar encoder, fusion engine) into the engine cache and the pipeline runs them on KITTI frames.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from engines import tensorrt_backend as trt_backend
from engines.cache import EngineCache
from engines.factory import EngineFactory, build_engines, list_engines
from engines.fusion.runner import FusionEngineRunner
from engines.lidar.config import OBSTACLE_CONFIG
from engines.lidar.runner import LidarEncoderRunner
from engines.onnxruntime_backend import OnnxRuntimeEngine
from engines.settings import EngineSettings
from engines.tensorrt_backend import BuildOptions, TensorRTEngine, load_or_build_engine
from tests.conftest import KittiFrame

pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.gpu,
    pytest.mark.skipif(
        not trt_backend.tensorrt_available(),
        reason="TensorRT 10 and cuda-python are not installed",
    ),
]

# TensorRT FP32 may use TF32 and different conv algorithms; FP16 halves the mantissa. Bounds on
# raw YOLOX outputs (box offsets in grid units, sigmoid scores in [0, 1]).
FP32_ATOL = 1e-2
FP16_ATOL = 5e-2


@pytest.fixture(scope="module")
def image_tensor() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, size=(1, 3, 416, 416)).astype(np.float32)


def _ort_output(yolox_path: Path, tensor: np.ndarray) -> np.ndarray:
    return OnnxRuntimeEngine(yolox_path, num_threads=1).run({"images": tensor})["output"]


@pytest.mark.parametrize(("precision", "atol"), [("fp32", FP32_ATOL), ("fp16", FP16_ATOL)])
def test_build_run_and_match_onnxruntime(
    yolox_path: Path, tmp_path: Path, image_tensor: np.ndarray, precision: str, atol: float
) -> None:
    with load_or_build_engine(
        yolox_path, options=BuildOptions(precision=precision), cache_dir=tmp_path
    ) as engine:
        desc = engine.describe()
        assert desc.backend == "tensorrt" and desc.device == "cuda:0"
        assert desc.precision == precision
        out = engine.run({"images": image_tensor})["output"]
    np.testing.assert_allclose(out, _ort_output(yolox_path, image_tensor), rtol=0, atol=atol)
    sidecar = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert sidecar["key"]["tensorrt_version"] == trt_backend.query_device_info().tensorrt_version
    assert list(tmp_path.glob("timing-*.cache"))


def test_cuda_graph_matches_plain_execution(
    yolox_path: Path, tmp_path: Path, image_tensor: np.ndarray
) -> None:
    plain = load_or_build_engine(yolox_path, cache_dir=tmp_path)
    graph = load_or_build_engine(yolox_path, cache_dir=tmp_path, use_cuda_graph=True)
    try:
        graph.warmup(2)
        a = plain.run({"images": image_tensor})["output"]
        b = graph.run({"images": image_tensor})["output"]
        c = graph.run({"images": image_tensor * 0.5})["output"]
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(b, c)
    finally:
        plain.close()
        graph.close()


def test_cache_reused_and_stale_rebuilt(
    yolox_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    [first] = build_engines([yolox_path], "fp16", tmp_path)
    assert first.status == "built"
    [second] = build_engines([yolox_path], "fp16", tmp_path)
    assert second.status == "cached" and second.seconds < first.seconds
    device = trt_backend.query_device_info()
    # Pretend the cached engine came from an older TensorRT: rewrite its sidecar.
    sidecar = first.engine_path.with_suffix(".json")
    data = json.loads(sidecar.read_text())
    data["key"]["tensorrt_version"] = "10.0.0"
    old_stem = first.engine_path.stem.rsplit("-", 1)[0] + "-0000000000000000"
    sidecar.rename(tmp_path / f"{old_stem}.json")
    first.engine_path.rename(tmp_path / f"{old_stem}.engine")
    (tmp_path / f"{old_stem}.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        [third] = build_engines([yolox_path], "fp16", tmp_path)
    assert third.status == "rebuilt"
    assert f"built for TensorRT 10.0.0 on {device.gpu_name}" in caplog.text
    assert [e.key.tensorrt_version for e in list_engines(tmp_path)] == [device.tensorrt_version]


def test_int8_with_calibration_cache(yolox_path: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)

    def batches() -> list[dict[str, np.ndarray]]:
        return [
            {"images": rng.uniform(0, 255, (1, 3, 416, 416)).astype(np.float32)} for _ in range(4)
        ]

    calib = tmp_path / "yolox.calib"
    [result] = build_engines(
        [yolox_path], "int8", tmp_path, calibration_batches=batches, calibration_cache=calib
    )
    assert result.status == "built" and calib.stat().st_size > 0
    # The cache alone is enough for a rebuild (another cache dir, no frames).
    [again] = build_engines([yolox_path], "int8", tmp_path / "other", calibration_cache=calib)
    assert again.status == "built"


def test_factory_builds_through_the_cache(yolox_path: Path, tmp_path: Path) -> None:
    settings = EngineSettings(backend="tensorrt", precision="fp16", cache_dir=str(tmp_path))
    engine = EngineFactory(settings).camera_encoder(yolox_path)
    assert isinstance(engine, TensorRTEngine)
    assert engine.describe().backend == "tensorrt" and engine.describe().precision == "fp16"
    engine.run({"images": np.zeros((1, 3, 416, 416), np.float32)})
    assert engine.last_gpu_ns is not None and engine.last_gpu_ns > 0
    assert len(EngineCache(tmp_path).list_entries()) == 1
    engine.close()


def test_projects_graphs_match_onnxruntime(
    tmp_path: Path, kitti_frame: Callable[[str], KittiFrame]
) -> None:
    # Strict fp32 (no TF32): the geometric graphs keep the tolerances they have on torch.
    trt = EngineFactory(EngineSettings(backend="tensorrt", cache_dir=str(tmp_path)))
    ort = EngineFactory()
    frame = kitti_frame("000000")
    lidar_trt = LidarEncoderRunner(trt.lidar_encoder(), OBSTACLE_CONFIG)
    lidar_ort = LidarEncoderRunner(ort.lidar_encoder(), OBSTACLE_CONFIG)
    above = frame.points[(frame.points[:, 2] > -1.5) & (frame.points[:, 2] < 2.0)].copy()
    above[:, 2] += 1.73  # roughly the height above the KITTI ground
    np.testing.assert_array_equal(lidar_trt.encode(above), lidar_ort.encode(above))
    fusion_trt, fusion_ort = (
        FusionEngineRunner(trt.fusion_engine()),
        FusionEngineRunner(ort.fusion_engine()),
    )
    pedestrian = [[712.40, 143.00, 810.73, 307.92, 0.82, 1.0]]
    args = (
        frame.points,
        np.asarray(pedestrian, np.float32),
        frame.camera_from_vehicle.matrix,
        frame.camera.k,
        (float(frame.camera.width), float(frame.camera.height)),
        (0.0, 0.0, 1.0, 1.73),
    )
    a, b = fusion_trt.run(*args), fusion_ort.run(*args)
    np.testing.assert_array_equal(a.valid, b.valid)
    np.testing.assert_allclose(a.boxes3d, b.boxes3d, atol=1e-3)
    np.testing.assert_allclose(a.fused_score, b.fused_score, atol=1e-5)


def test_node_pipeline_on_tensorrt(yolox_path: Path, kitti_dir: Path, tmp_path: Path) -> None:
    from perception.config import CameraModelConfig
    from perception.pipeline import Pipeline
    from replay.datasets.kitti_object import KittiObjectFolder
    from replay.offline import run_messages

    model = CameraModelConfig(path=str(yolox_path), kind="yolox")
    settings = EngineSettings(backend="tensorrt", device="cuda", cache_dir=str(tmp_path))
    Pipeline.from_config(model, engines=settings)  # builds the three engines on first use
    assert {e.name for e in list_engines(tmp_path)} == {
        "yolox_nano_coco_416",
        "lidar_encoder",
        "fusion_engine",
    }
    pipeline = Pipeline.from_config(model, engines=settings)  # loads them from the cache
    assert all(" tensorrt cuda:0 fp32 " in line for line in pipeline.describe_engines())
    assert pipeline.notes == ()
    runs = [
        list(run_messages(KittiObjectFolder(kitti_dir).messages(), p))
        for p in (pipeline, Pipeline.from_config(model))
    ]
    for trt_list, ort_list in zip(*runs, strict=True):
        assert "lidar_encoder_gpu" in trt_list.timings_ns
        assert [d.label for d in trt_list.detections] == [d.label for d in ort_list.detections]
        for a, b in zip(trt_list.detections, ort_list.detections, strict=True):
            # The camera network's fp32 kernels differ from ONNX Runtime's in the last bits,
            # which can move a 2D box edge by a fraction of a pixel.
            assert np.allclose(a.center, b.center, atol=1e-2)
