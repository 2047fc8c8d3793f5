"""The node's engines come from the engine factory: `engines.backend: tensorrt` through the engine
cache (TensorRT and cuda-python faked at their module boundary, tests/engines/fake_tensorrt.py,
so the factory, the cache, serialization, device buffers and CUDA-event timing run for real),
one-line errors where a backend or device is missing, fallback notes, and what the pipeline says
runs. The real TensorRT build of the same path is tests/engines/test_tensorrt.py (marked)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from engines import tensorrt_backend
from engines.cache import file_sha256
from engines.errors import EngineError
from engines.factory import build_engines, list_engines
from engines.settings import EngineSettings
from perception.config import CameraModelConfig
from perception.msgs.types import DetectionList
from perception.pipeline import Pipeline
from replay.datasets.kitti_object import KittiObjectFolder
from replay.offline import run_messages
from tests.engines.fake_tensorrt import FakeTensorRT, install

NODE_ENGINES = {"yolox_nano_coco_416", "lidar_encoder", "fusion_engine"}


def _pipeline(yolox_path: Path, **settings: object) -> Pipeline:
    model = CameraModelConfig(path=str(yolox_path), kind="yolox")
    return Pipeline.from_config(model, engines=EngineSettings(**settings))  # type: ignore[arg-type]


def _run(pipeline: Pipeline, kitti_dir: Path) -> list[DetectionList]:
    return list(run_messages(KittiObjectFolder(kitti_dir).messages(), pipeline))


def _assert_same_detections(a: list[DetectionList], b: list[DetectionList]) -> None:
    assert len(a) == len(b) and any(dl.detections for dl in a)
    for x, y in zip(a, b, strict=True):
        assert [(d.label, d.sources) for d in x.detections] == [
            (d.label, d.sources) for d in y.detections
        ]
        for d, e in zip(x.detections, y.detections, strict=True):
            assert np.allclose(d.center, e.center, atol=1e-4)
            assert np.allclose(d.size, e.size, atol=1e-4)


@pytest.fixture(scope="module")
def onnxruntime_run(yolox_path: Path, kitti_dir: Path) -> list[DetectionList]:
    return _run(_pipeline(yolox_path), kitti_dir)


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> FakeTensorRT:
    trt, _ = install(monkeypatch)
    return trt


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same meaning on a machine that does have TensorRT.
    monkeypatch.setattr(tensorrt_backend, "_trt", None)
    monkeypatch.setattr(tensorrt_backend, "_IMPORT_PROBLEM", "import tensorrt failed: simulated")


# --- what runs ----------------------------------------------------------------------------------


def test_default_engines_are_onnxruntime_on_the_cpu(yolox_path: Path) -> None:
    pipeline = _pipeline(yolox_path)
    assert pipeline.describe_engines() == (
        "camera_encoder: onnxruntime cpu fp32 yolox_nano_coco_416.onnx",
        "lidar_encoder: onnxruntime cpu fp32 lidar_encoder.onnx",
        "fusion: onnxruntime cpu fp32 fusion_engine.onnx",
    )
    assert pipeline.notes == ()


def test_torch_backend_runs_the_projects_graphs_in_torch(yolox_path: Path) -> None:
    pytest.importorskip("torch")
    pipeline = _pipeline(yolox_path, backend="torch", device="cpu")
    assert pipeline.describe_engines() == (
        # A pretrained ONNX model: the torch backend runs it on ONNX Runtime.
        "camera_encoder: onnxruntime cpu fp32 yolox_nano_coco_416.onnx",
        "lidar_encoder: torch cpu fp32 lidar_encoder",
        "fusion: torch cpu fp32 fusion_engine",
    )


# --- backend tensorrt through the engine cache --------------------------------------------------


def test_tensorrt_builds_on_first_use_then_loads_from_the_cache(
    fake_trt: FakeTensorRT,
    yolox_path: Path,
    kitti_dir: Path,
    tmp_path: Path,
    onnxruntime_run: list[DetectionList],
) -> None:
    cache = tmp_path / "engines"
    first = _pipeline(yolox_path, backend="tensorrt", device="auto", cache_dir=str(cache))
    assert len(fake_trt.builds) == 3
    entries = list_engines(cache)
    assert {e.name for e in entries} == NODE_ENGINES
    assert {(e.key.tensorrt_version, e.key.gpu_name, e.key.precision) for e in entries} == {
        ("10.3.0", "Fake RTX 4000", "fp32")
    }
    # fp32 is strict: no TF32 in any engine, so the geometric graphs keep their tolerances.
    assert all("TF32" not in b.flags and "FP16" not in b.flags for b in fake_trt.builds)
    assert first.describe_engines() == (
        "camera_encoder: tensorrt cuda:0 fp32 yolox_nano_coco_416",
        "lidar_encoder: tensorrt cuda:0 fp32 lidar_encoder",
        "fusion: tensorrt cuda:0 fp32 fusion_engine",
    )
    assert first.notes == ()

    again = _pipeline(yolox_path, backend="tensorrt", device="cuda", cache_dir=str(cache))
    assert len(fake_trt.builds) == 3  # every engine came from the cache
    lists = _run(again, kitti_dir)
    _assert_same_detections(lists, onnxruntime_run)
    # The engines time their device work with CUDA events; the pipeline reports it per stage.
    assert all("lidar_encoder_gpu" in dl.timings_ns for dl in lists)
    assert any("fusion_gpu" in dl.timings_ns for dl in lists)
    assert not any("fusion_gpu" in dl.timings_ns for dl in onnxruntime_run)


def test_precision_applies_to_the_camera_encoder_only(
    fake_trt: FakeTensorRT, yolox_path: Path, tmp_path: Path
) -> None:
    pipeline = _pipeline(
        yolox_path, backend="tensorrt", device="cuda", precision="fp16", cache_dir=str(tmp_path)
    )
    camera, lidar, fusion = fake_trt.builds
    assert camera.inputs == ("images",) and "FP16" in camera.flags
    for graph in (lidar, fusion):
        assert "FP16" not in graph.flags and "TF32" not in graph.flags
    assert [line.split()[3] for line in pipeline.describe_engines()] == ["fp16", "fp32", "fp32"]


def test_stale_engines_are_rebuilt_after_a_tensorrt_upgrade(
    monkeypatch: pytest.MonkeyPatch,
    yolox_path: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    install(monkeypatch, version="10.3.0")
    _pipeline(yolox_path, backend="tensorrt", device="cuda", cache_dir=str(tmp_path))
    upgraded, _ = install(monkeypatch, version="10.7.0")
    with caplog.at_level(logging.WARNING, logger="engines.cache"):
        pipeline = _pipeline(yolox_path, backend="tensorrt", device="cuda", cache_dir=str(tmp_path))
    assert len(upgraded.builds) == 3
    assert (
        "rebuilding yolox_nano_coco_416: cached engine was built for TensorRT 10.3.0 on "
        "Fake RTX 4000 (sm 8.9), now 10.7.0" in caplog.text
    )
    # Engines for another TensorRT can never load again: replaced, not kept beside.
    assert {e.key.tensorrt_version for e in list_engines(tmp_path)} == {"10.7.0"}
    assert len(list_engines(tmp_path)) == 3
    assert pipeline.describe_engines()[0].startswith("camera_encoder: tensorrt cuda:0")


def test_a_cached_engine_that_does_not_load_is_rebuilt(
    fake_trt: FakeTensorRT, yolox_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _pipeline(yolox_path, backend="tensorrt", device="cuda", cache_dir=str(tmp_path))
    [camera] = [e for e in list_engines(tmp_path) if e.name == "yolox_nano_coco_416"]
    data = bytearray(camera.engine_path.read_bytes())
    data[:8] = b"garbage!"
    camera.engine_path.write_bytes(bytes(data))
    # Recorded as built (its size and sha256 in the sidecar): an engine the cache cannot tell
    # from a good one, which TensorRT refuses (e.g. of another TensorRT build of one version).
    sidecar = json.loads(camera.sidecar_path.read_text())
    sidecar["engine_sha256"] = file_sha256(camera.engine_path)
    camera.sidecar_path.write_text(json.dumps(sidecar))
    with caplog.at_level(logging.WARNING, logger="engines.tensorrt_backend"):
        _pipeline(yolox_path, backend="tensorrt", device="cuda", cache_dir=str(tmp_path))
    assert len(fake_trt.builds) == 4
    assert "rebuilding yolox_nano_coco_416: the cached engine does not load" in caplog.text


def test_engines_built_ahead_of_time_are_the_ones_the_node_loads(
    fake_trt: FakeTensorRT, yolox_path: Path, tmp_path: Path
) -> None:
    # `perception engines build yolox... lidar_encoder fusion_engine --precision fp32`
    results = build_engines([yolox_path, "lidar_encoder", "fusion_engine"], "fp32", tmp_path)
    assert [r.status for r in results] == ["built"] * 3
    _pipeline(yolox_path, backend="tensorrt", device="cuda", cache_dir=str(tmp_path))
    assert len(fake_trt.builds) == 3


def test_int8_needs_an_engine_built_ahead_of_time(
    fake_trt: FakeTensorRT, yolox_path: Path, tmp_path: Path
) -> None:
    settings = {"backend": "tensorrt", "device": "cuda", "precision": "int8"}
    with pytest.raises(EngineError) as err:
        _pipeline(yolox_path, **settings, cache_dir=str(tmp_path))
    assert str(err.value) == (
        f"yolox_nano_coco_416.onnx: no INT8 engine for Fake RTX 4000 and TensorRT 10.3.0 in "
        f"{tmp_path}; build it ahead of time with `perception engines build {yolox_path} "
        "--precision int8 --calibration-images DIR`"
    )
    calibration = tmp_path / "yolox.calib"
    calibration.write_bytes(b"TRT-1003-EntropyCalibration2\n")
    build_engines([yolox_path], "int8", tmp_path, calibration_cache=calibration)
    pipeline = _pipeline(yolox_path, **settings, cache_dir=str(tmp_path))
    assert (
        pipeline.describe_engines()[0] == "camera_encoder: tensorrt cuda:0 int8 yolox_nano_coco_416"
    )


# --- missing TensorRT, CUDA or torch: one line, or a fallback when asked for ----------------------


def test_tensorrt_missing_is_one_line(no_tensorrt: None, yolox_path: Path, tmp_path: Path) -> None:
    with pytest.raises(EngineError) as err:
        _pipeline(yolox_path, backend="tensorrt", device="auto", cache_dir=str(tmp_path))
    assert str(err.value) == (
        "engines.backend tensorrt: TensorRT 10 is not installed (import tensorrt failed: "
        "simulated); set engines.fallback: onnxruntime to run ONNX Runtime on the CPU instead"
    )
    assert not any(tmp_path.iterdir())


def test_no_cuda_device_is_one_line(monkeypatch: pytest.MonkeyPatch, yolox_path: Path) -> None:
    install(monkeypatch, devices=0)
    with pytest.raises(EngineError) as err:
        _pipeline(yolox_path, backend="tensorrt", device="cuda")
    assert str(err.value).startswith(
        "engines.backend tensorrt: no usable CUDA device (CUDA call failed: cudaErrorNoDevice); "
        "set engines.fallback: onnxruntime"
    )


def test_fallback_runs_onnxruntime_on_the_cpu_and_says_so(
    no_tensorrt: None,
    yolox_path: Path,
    kitti_dir: Path,
    tmp_path: Path,
    onnxruntime_run: list[DetectionList],
) -> None:
    pipeline = _pipeline(
        yolox_path,
        backend="tensorrt",
        device="auto",
        fallback="onnxruntime",
        cache_dir=str(tmp_path),
    )
    assert pipeline.notes == (
        "engines.backend tensorrt: TensorRT 10 is not installed (import tensorrt failed: "
        "simulated); running onnxruntime on cpu",
    )
    assert all(" onnxruntime cpu fp32 " in line for line in pipeline.describe_engines())
    _assert_same_detections(_run(pipeline, kitti_dir), onnxruntime_run)


def test_device_cuda_without_cuda(monkeypatch: pytest.MonkeyPatch, yolox_path: Path) -> None:
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(EngineError) as err:
        _pipeline(yolox_path, device="cuda")
    assert str(err.value) == (
        "engines.device cuda (onnxruntime): this ONNX Runtime has no usable CUDA execution "
        "provider (onnxruntime-gpu, CUDA, a GPU); set engines.fallback: onnxruntime to run ONNX "
        "Runtime on the CPU instead"
    )
    fallback = _pipeline(yolox_path, device="cuda", fallback="onnxruntime")
    assert fallback.notes == (
        "engines.device cuda (onnxruntime): this ONNX Runtime has no usable CUDA execution "
        "provider (onnxruntime-gpu, CUDA, a GPU); running onnxruntime on cpu",
    )
    # auto is CUDA where usable, else the CPU: no error and nothing to note, the description says.
    auto = _pipeline(yolox_path, device="auto")
    assert auto.notes == () and all(" cpu " in line for line in auto.describe_engines())


def test_torch_on_cuda_without_cuda(monkeypatch: pytest.MonkeyPatch, yolox_path: Path) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EngineError, match=r"^engines\.device cuda \(torch\): torch sees no CUDA"):
        _pipeline(yolox_path, backend="torch", device="cuda")
