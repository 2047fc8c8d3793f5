"""Backend choice and fallback, the TensorRT import guard, build_engines/list_engines."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from engines import factory
from engines import tensorrt_backend as trt_backend
from engines.cache import DeviceInfo, EngineCache, EngineCacheKey
from engines.engine import Engine, TensorSpec
from engines.errors import EngineError, ModelError
from engines.factory import build_engines, create_engine, list_engines
from engines.onnxruntime_backend import OnnxRuntimeEngine
from engines.tensorrt_backend import BuildOptions, timing_cache_path

DEVICE = DeviceInfo("10.3.0", "NVIDIA RTX A2000", "8.6")


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    # Makes the tests mean the same thing on a machine that does have TensorRT.
    monkeypatch.setattr(trt_backend, "_trt", None)
    monkeypatch.setattr(trt_backend, "_IMPORT_PROBLEM", "import tensorrt failed: simulated")


# --- import guard --------------------------------------------------------------------------------


def test_import_guard(no_tensorrt: None) -> None:
    assert trt_backend.tensorrt_available() is False
    with pytest.raises(EngineError, match=r"^TensorRT is not installed \(.*simulated"):
        trt_backend.require_tensorrt()
    with pytest.raises(EngineError, match="TensorRT is not installed"):
        trt_backend.TensorRTEngine(b"")
    with pytest.raises(EngineError, match="TensorRT is not installed"):
        trt_backend.query_device_info()
    with pytest.raises(EngineError, match="TensorRT is not installed"):
        trt_backend.build_serialized_engine(Path("x.onnx"), BuildOptions())


def test_real_import_state_is_consistent() -> None:
    try:
        import tensorrt  # noqa: F401

        has_trt = True
    except ImportError:
        has_trt = False
    if not has_trt:
        assert not trt_backend.tensorrt_available()


# --- create_engine -------------------------------------------------------------------------------


def test_auto_falls_back_to_onnxruntime(
    no_tensorrt: None, yolox_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="engines.factory"):
        engine = create_engine(yolox_path, num_threads=1, precision="fp16")
    assert isinstance(engine, OnnxRuntimeEngine)
    assert isinstance(engine, Engine)
    assert engine.describe().backend == "onnxruntime"
    assert engine.describe().precision == "fp32"
    assert (
        "yolox_nano_coco_416.onnx: TensorRT is not installed; falling back to ONNX Runtime "
        "(runs fp32, not fp16)"
    ) in caplog.text


def test_explicit_tensorrt_falls_back_with_warning(
    no_tensorrt: None, yolox_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="engines.factory"):
        engine = create_engine(yolox_path, "tensorrt", num_threads=1)
    assert isinstance(engine, OnnxRuntimeEngine)
    assert any(
        r.levelno == logging.WARNING and "falling back to ONNX Runtime" in r.getMessage()
        for r in caplog.records
    )


def test_onnxruntime_backend_by_registry_name(data_dir: Path, tmp_path: Path) -> None:
    engine = create_engine(
        "yolo_fastestv2_coco_352",
        "onnxruntime",
        model_cache_dir=tmp_path,
        source_dir=data_dir / "camera_detector",
        use_gpu=False,
    )
    assert engine.inputs == (TensorSpec("input.1", "float32", (1, 3, 352, 352)),)
    assert engine.describe().providers == ("CPUExecutionProvider",)


def test_create_engine_argument_errors(yolox_path: Path) -> None:
    with pytest.raises(EngineError, match="unknown backend"):
        create_engine(yolox_path, "openvino")
    with pytest.raises(EngineError, match="unknown precision"):
        create_engine(yolox_path, precision="fp8")
    with pytest.raises(EngineError, match=r"torch\.nn\.Module"):
        create_engine(yolox_path, "torch")
    with pytest.raises(ModelError):
        create_engine("no_such_model", "onnxruntime")


def test_create_engine_torch_module() -> None:
    torch = pytest.importorskip("torch")
    spec_in = (TensorSpec("x", "float32", (2, 4)),)
    spec_out = (TensorSpec("y", "float32", (2, 4)),)
    with pytest.raises(EngineError, match="needs inputs and outputs"):
        create_engine(torch.nn.Identity())
    with pytest.raises(EngineError, match="torch backend"):
        create_engine(torch.nn.Identity(), "onnxruntime", inputs=spec_in, outputs=spec_out)
    engine = create_engine(torch.nn.ReLU(), inputs=spec_in, outputs=spec_out, use_gpu=False)
    assert engine.describe().backend == "torch"
    x = np.array([[-1, 2, -3, 4]] * 2, np.float32)
    np.testing.assert_array_equal(engine.run({"x": x})["y"], np.maximum(x, 0))


# --- build_engines / list_engines ----------------------------------------------------------------


def test_build_engines_validates_before_needing_tensorrt(
    no_tensorrt: None, yolox_path: Path, tmp_path: Path
) -> None:
    with pytest.raises(EngineError, match="no models"):
        build_engines([], cache_dir=tmp_path)
    with pytest.raises(EngineError, match="unknown precision 'fp8'"):
        build_engines([yolox_path], "fp8", tmp_path)
    with pytest.raises(EngineError, match="INT8 needs calibration"):
        build_engines([yolox_path], "int8", tmp_path)
    with pytest.raises(EngineError, match="workspace_bytes"):
        build_engines([yolox_path], cache_dir=tmp_path, workspace_bytes=0)
    with pytest.raises(ModelError, match="not a registered model"):
        build_engines(["nope"], cache_dir=tmp_path)
    with pytest.raises(EngineError, match=r"^building engines needs TensorRT: TensorRT is not"):
        build_engines([yolox_path], "fp16", tmp_path)
    assert not list(tmp_path.iterdir())


def test_build_engines_int8_accepts_existing_calibration_cache(
    no_tensorrt: None, yolox_path: Path, tmp_path: Path
) -> None:
    calib = tmp_path / "yolox.calib"
    calib.write_bytes(b"TRT-1003-EntropyCalibration2\n")
    with pytest.raises(EngineError, match="needs TensorRT"):
        build_engines([yolox_path], "int8", tmp_path, calibration_cache=calib)


def test_build_engines_flow_with_stub_builder(
    yolox_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Everything but the TensorRT build itself: keys, cache, statuses, progress.
    built: list[tuple[str, str]] = []

    def fake_build(path: Path, options: BuildOptions, **kwargs: object) -> bytes:
        built.append((path.name, options.precision))
        timing = kwargs["timing_cache"]
        assert isinstance(timing, Path) and timing.parent == tmp_path
        assert timing.name.startswith("timing-trt10.")
        return b"serialized:" + path.name.encode()

    monkeypatch.setattr(trt_backend, "require_tensorrt", lambda: None)
    monkeypatch.setattr(trt_backend, "build_serialized_engine", fake_build)
    events: list[tuple[int, int, str]] = []
    results = build_engines(
        [yolox_path], "fp16", tmp_path, device=DEVICE, progress=lambda *e: events.append(e)
    )
    assert [r.status for r in results] == ["built"]
    assert built == [("yolox_nano_coco_416.onnx", "fp16")]
    result = results[0]
    assert result.engine_path.read_bytes() == b"serialized:yolox_nano_coco_416.onnx"
    assert result.key.input_shapes == (("images", (1, 3, 416, 416)),)
    assert result.key.onnx_sha256.startswith("e8af0749")
    assert events[0][:2] == (0, 1) and events[-1][:2] == (1, 1)
    assert "built" in events[-1][2]

    again = build_engines([yolox_path], "fp16", tmp_path, device=DEVICE)
    assert [r.status for r in again] == ["cached"] and len(built) == 1

    upgraded = DeviceInfo("10.7.0", DEVICE.gpu_name, DEVICE.compute_capability)
    rebuilt = build_engines([yolox_path], "fp16", tmp_path, device=upgraded)
    assert [r.status for r in rebuilt] == ["rebuilt"] and len(built) == 2

    entries = list_engines(tmp_path)
    assert [(e.name, e.key.tensorrt_version, e.key.precision) for e in entries] == [
        ("yolox_nano_coco_416", "10.7.0", "fp16")
    ]


def test_list_engines(tmp_path: Path) -> None:
    assert list_engines(tmp_path / "absent") == []
    cache = EngineCache(tmp_path)
    key = EngineCacheKey.create(
        model_name="m",
        onnx_sha256="0" * 64,
        device=DEVICE,
        precision="fp16",
        input_shapes={"x": (1, 3)},
    )
    cache.store(key, b"abc")
    [entry] = list_engines(tmp_path)
    assert entry.key == key and entry.size_bytes == 3


def test_build_options_and_calibration_cache_helpers(tmp_path: Path) -> None:
    assert BuildOptions().key_options() == {"workspace_bytes": 1 << 30, "optimization_level": 3}
    with pytest.raises(EngineError, match="optimization_level"):
        BuildOptions(optimization_level=9)
    path = tmp_path / "sub" / "calib.cache"
    assert trt_backend.read_calibration_cache(path) is None
    assert trt_backend.read_calibration_cache(None) is None
    trt_backend.write_calibration_cache(path, b"scales")
    assert trt_backend.read_calibration_cache(path) == b"scales"
    trt_backend.write_calibration_cache(None, b"ignored")
    assert timing_cache_path(tmp_path, DEVICE).name == "timing-trt10.3.0-NVIDIA_RTX_A2000.cache"


def test_onnx_input_specs_requires_static_shapes(yolox_path: Path, tmp_path: Path) -> None:
    assert trt_backend.onnx_input_specs(yolox_path) == (
        TensorSpec("images", "float32", (1, 3, 416, 416)),
    )
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(yolox_path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    dynamic = tmp_path / "dynamic.onnx"
    onnx.save(model, str(dynamic))
    with pytest.raises(EngineError, match="static shapes"):
        trt_backend.onnx_input_specs(dynamic)


def test_factory_all_is_importable() -> None:
    for name in factory.__all__:
        assert hasattr(factory, name)
