"""Engine settings, where the engines run (placement and its fallback), the factory's engines, the
TensorRT import guard, build_engines/list_engines."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from engines import factory
from engines import tensorrt_backend as trt_backend
from engines.cache import DEFAULT_ENGINE_CACHE_DIR, DeviceInfo, EngineCache, EngineCacheKey
from engines.engine import TensorSpec
from engines.errors import EngineError, ModelError
from engines.factory import (
    EngineFactory,
    Placement,
    build_engines,
    create_node_engines,
    list_engines,
    resolve_placement,
)
from engines.fusion.buckets import BucketedFusionEngine
from engines.fusion.config import FusionEngineConfig
from engines.lidar.buckets import BucketedLidarEncoder
from engines.lidar.config import OBSTACLE_CONFIG
from engines.onnxruntime_backend import OnnxRuntimeEngine
from engines.settings import EngineSettings
from engines.tensorrt_backend import BuildOptions, timing_cache_path
from tests.engines.fake_tensorrt import install

DEVICE = DeviceInfo("10.3.0", "NVIDIA RTX A2000", "8.6")


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    # Makes the tests mean the same thing on a machine that does have TensorRT.
    monkeypatch.setattr(trt_backend, "_trt", None)
    monkeypatch.setattr(trt_backend, "_IMPORT_PROBLEM", "import tensorrt failed: simulated")


# --- import guard --------------------------------------------------------------------------------


def test_import_guard(no_tensorrt: None) -> None:
    assert trt_backend.tensorrt_available() is False
    assert trt_backend.unavailable_reason() == (
        "TensorRT 10 is not installed (import tensorrt failed: simulated)"
    )
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


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "openvino"}, "engines.backend: must be one of onnxruntime, tensorrt, torch"),
        ({"device": "tpu"}, "engines.device: must be one of auto, cpu, cuda, got 'tpu'"),
        ({"backend": "tensorrt", "device": "cpu"}, "engines.device: TensorRT runs on CUDA only"),
        ({"precision": "fp8"}, "engines.precision: must be one of fp32, fp16, int8"),
        ({"fallback": "torch"}, "engines.fallback: must be null or one of onnxruntime"),
        ({"threads": -2}, "engines.threads: must be from 0 to 256, got -2"),
        ({"threads": 257}, "engines.threads: must be from 0 to 256, got 257"),
    ],
)
def test_settings_name_the_key(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(EngineError) as err:
        EngineSettings(**kwargs)  # type: ignore[arg-type]
    assert str(err.value).startswith(message)


def test_settings_defaults() -> None:
    settings = EngineSettings()
    assert (settings.backend, settings.effective_device, settings.precision) == (
        "onnxruntime",
        "cpu",
        "fp32",
    )
    assert EngineSettings(backend="tensorrt").effective_device == "cuda"
    assert settings.fallback is None and settings.num_threads is None
    assert settings.engine_cache_dir == DEFAULT_ENGINE_CACHE_DIR
    assert EngineSettings(threads=3).num_threads == 3


# --- placement -----------------------------------------------------------------------------------


def test_placement_of_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    import engines.factory

    assert resolve_placement(EngineSettings()) == Placement("onnxruntime", "cpu")
    monkeypatch.setattr(engines.factory, "cuda_provider_available", lambda: False)
    assert resolve_placement(EngineSettings(device="auto")) == Placement("onnxruntime", "cpu")
    monkeypatch.setattr(engines.factory, "cuda_provider_available", lambda: True)
    assert resolve_placement(EngineSettings(device="auto")) == Placement("onnxruntime", "cuda")
    assert resolve_placement(EngineSettings(device="cpu")) == Placement("onnxruntime", "cpu")


def test_placement_of_tensorrt(no_tensorrt: None, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = EngineSettings(backend="tensorrt", device="cuda")
    with pytest.raises(EngineError, match=r"^engines\.backend tensorrt: TensorRT 10 is not"):
        resolve_placement(settings)
    fallback = resolve_placement(EngineSettings(backend="tensorrt", fallback="onnxruntime"))
    assert (fallback.backend, fallback.device) == ("onnxruntime", "cpu")
    assert fallback.note is not None and fallback.note.endswith("; running onnxruntime on cpu")
    install(monkeypatch)
    assert resolve_placement(settings) == Placement("tensorrt", "cuda")


def test_torch_missing_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails, as without the wheel
    with pytest.raises(EngineError) as err:
        EngineFactory(EngineSettings(backend="torch"))
    assert str(err.value) == (
        "engines.backend torch: torch is not installed (pip install torch); set "
        "engines.fallback: onnxruntime to run ONNX Runtime on the CPU instead"
    )
    factory = EngineFactory(EngineSettings(backend="torch", fallback="onnxruntime"))
    assert factory.placement == Placement(
        "onnxruntime",
        "cpu",
        "engines.backend torch: torch is not installed (pip install torch); "
        "running onnxruntime on cpu",
    )
    assert factory.notes == (factory.placement.note,)


# --- the factory's engines ---------------------------------------------------------------------


def test_onnx_engine_by_registry_name(data_dir: Path, tmp_path: Path) -> None:
    factory = EngineFactory(
        EngineSettings(threads=1),
        model_cache_dir=tmp_path,
        source_dir=data_dir / "camera_detector",
    )
    engine = factory.camera_encoder("yolo_fastestv2_coco_352")
    assert isinstance(engine, OnnxRuntimeEngine)
    assert engine.inputs == (TensorSpec("input.1", "float32", (1, 3, 352, 352)),)
    assert engine.describe().providers == ("CPUExecutionProvider",)
    assert dict(engine.describe().extra)["threads"] == "1"
    # The camera's own thread count wins over the engines' one.
    assert (
        dict(factory.camera_encoder(engine.model_path, threads=2).describe().extra)["threads"]
        == "2"
    )
    with pytest.raises(ModelError, match="not a registered model"):
        factory.camera_encoder("no_such_model")


def test_torch_backend_builds_the_graphs_as_torch_modules(yolox_path: Path) -> None:
    pytest.importorskip("torch")
    from engines.torch_backend import TorchEngine

    factory = EngineFactory(EngineSettings(backend="torch", device="cpu"))
    lidar, fusion = factory.lidar_encoder(), factory.fusion_engine()
    assert isinstance(lidar, BucketedLidarEncoder) and isinstance(fusion, BucketedFusionEngine)
    assert lidar.inputs == OBSTACLE_CONFIG.input_specs()
    # Every point bucket is the one torch module behind that count's specs.
    small_lidar = lidar.engine_for(8192)
    assert isinstance(small_lidar, TorchEngine) and isinstance(lidar.full, TorchEngine)
    assert small_lidar.module is lidar.full.module
    assert small_lidar.inputs == OBSTACLE_CONFIG.input_specs(8192)
    assert fusion.outputs == FusionEngineConfig().output_specs()
    # Every bucket is the one torch module behind that shape's specs.
    small = fusion.engine_for((8192, 4))
    assert isinstance(small, TorchEngine) and isinstance(fusion.full, TorchEngine)
    assert small.module is fusion.full.module
    assert small.inputs == FusionEngineConfig().input_specs((8192, 4))
    assert isinstance(factory.camera_encoder(yolox_path), OnnxRuntimeEngine)
    assert factory.notes == ()


def test_the_torch_graphs_equal_their_packaged_exports() -> None:
    pytest.importorskip("torch")
    # The same tensors in and out on every backend: a runner takes either engine.
    ort_factory, torch_factory = EngineFactory(), EngineFactory(EngineSettings(backend="torch"))
    for make in ("lidar_encoder", "fusion_engine"):
        a, b = getattr(ort_factory, make)(), getattr(torch_factory, make)()
        assert {s.name: s for s in a.inputs} == {s.name: s for s in b.inputs}
        assert {s.name: s for s in a.outputs} == {s.name: s for s in b.outputs}


def test_create_node_engines(yolox_path: Path) -> None:
    engines = create_node_engines(EngineSettings(), yolox_path, camera_threads=1)
    assert [e.describe().model for e in (engines.camera, engines.lidar, engines.fusion)] == [
        "yolox_nano_coco_416.onnx",
        "lidar_encoder.onnx",
        "fusion_engine.onnx",
    ]
    assert engines.notes == ()


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
    assert BuildOptions().key_options() == {
        "workspace_bytes": 1 << 30,
        "optimization_level": 3,
        "tf32": True,
    }
    assert BuildOptions(precision="fp32").key_options()["tf32"] is False
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


def test_a_timing_cache_that_cannot_be_written_costs_no_engine(
    yolox_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The timing cache only speeds later builds up: a folder in its place failed the command
    after the build, and the engine built (minutes of work) was never stored."""
    install(monkeypatch)
    device = trt_backend.query_device_info()
    timing_cache_path(tmp_path, device).mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="engines.tensorrt_backend"):
        [result] = build_engines([yolox_path], "fp16", tmp_path)
    assert result.status == "built" and result.engine_path.is_file()
    assert "cannot write the TensorRT timing cache" in caplog.text
    assert [e.engine_path for e in list_engines(tmp_path)] == [result.engine_path]
