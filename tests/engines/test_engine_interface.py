"""The Engine interface: conformance of the ONNX Runtime and torch backends, providers, parity."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import psutil  # type: ignore[import-untyped]
import pytest
import torch

from engines.engine import (
    Engine,
    EngineDescription,
    TensorSpec,
    check_inputs,
    require_specs,
    zero_inputs,
)
from engines.errors import EngineError
from engines.factory import EngineFactory
from engines.lidar.buckets import BucketedLidarEncoder
from engines.onnxruntime_backend import (
    CUDA_PROVIDERS,
    OnnxRuntimeEngine,
    cuda_provider_available,
    default_threads,
    device_for_providers,
)
from engines.torch_backend import TorchEngine, export_onnx, resolve_torch_device

# torch (CPU) and ONNX Runtime (CPU) must agree this closely on the same fp32 graph; both use
# different conv/matmul kernels, so bitwise equality is not expected.
PARITY_ATOL = 1e-5

IN_SPECS = (
    TensorSpec("image", "float32", (2, 3, 16, 16)),
    TensorSpec("points", "float32", (2, 64, 4)),
)
OUT_SPECS = (
    TensorSpec("features", "float32", (2, 8, 8, 8)),
    TensorSpec("pooled", "float32", (2, 24)),
)


class TinyGraph(torch.nn.Module):
    """Two inputs, two outputs: a conv branch and a per-point MLP with max pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16)
        )

    def forward(self, image: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = torch.relu(self.conv(image))
        per_point = self.mlp(points).amax(dim=1)
        pooled = torch.cat([per_point, features.mean(dim=(2, 3))], dim=1)
        return features, pooled


@pytest.fixture(scope="module")
def tiny_module() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyGraph().eval()


@pytest.fixture(scope="module")
def tiny_onnx(tiny_module: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(
        tiny_module, IN_SPECS, OUT_SPECS, tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    )


def _random_inputs(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s.name: rng.normal(size=s.static_shape()).astype(s.dtype) for s in IN_SPECS}


@pytest.fixture(params=["onnxruntime", "torch"])
def engine(request: pytest.FixtureRequest, tiny_module: torch.nn.Module, tiny_onnx: Path) -> Engine:
    if request.param == "onnxruntime":
        return OnnxRuntimeEngine(tiny_onnx, num_threads=1)
    return TorchEngine(tiny_module, IN_SPECS, OUT_SPECS, device="cpu", name="tiny")


# --- conformance --------------------------------------------------------------------------------


def test_conforms_to_engine_protocol(engine: Engine) -> None:
    assert isinstance(engine, Engine)
    assert engine.inputs == IN_SPECS
    assert engine.outputs == OUT_SPECS
    out = engine.run(_random_inputs(1))
    assert list(out) == [s.name for s in OUT_SPECS]
    for spec in OUT_SPECS:
        assert out[spec.name].dtype.name == spec.dtype
        assert out[spec.name].shape == spec.static_shape()
    # Nothing on a CPU can time device work: no GPU time rather than a host-clock guess.
    assert engine.last_gpu_ns is None


def test_require_specs(engine: Engine) -> None:
    require_specs("tiny", engine, IN_SPECS[::-1], OUT_SPECS)  # order free
    with pytest.raises(EngineError, match=r"^tiny: the engine .* has outputs .*expected"):
        require_specs("tiny", engine, IN_SPECS, OUT_SPECS[:1])
    wider = (IN_SPECS[0], TensorSpec("points", "float32", (2, 65, 4)))
    with pytest.raises(EngineError, match=r"has inputs .*points:float32\[2x64x4\]"):
        require_specs("tiny", engine, wider, OUT_SPECS)


def test_warmup(engine: Engine) -> None:
    engine.warmup()
    engine.warmup(iterations=3)
    engine.warmup(iterations=0)
    with pytest.raises(EngineError, match="iterations"):
        engine.warmup(iterations=-1)


def test_describe(engine: Engine) -> None:
    desc = engine.describe()
    assert isinstance(desc, EngineDescription)
    assert desc.backend in ("onnxruntime", "torch")
    assert desc.device == "cpu"
    assert desc.precision == "fp32"
    assert f"device={desc.device}" in str(desc)
    with pytest.raises(AttributeError):
        desc.device = "cuda:0"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        ({"image": np.zeros((2, 3, 16, 16), np.float32)}, "missing input 'points'"),
        (
            {
                "image": np.zeros((2, 3, 16, 16), np.float64),
                "points": np.zeros((2, 64, 4), np.float32),
            },
            "dtype float64",
        ),
        (
            {
                "image": np.zeros((1, 3, 16, 16), np.float32),
                "points": np.zeros((2, 64, 4), np.float32),
            },
            "shape",
        ),
        (
            {
                "image": np.zeros((2, 3, 16, 16), np.float32),
                "points": np.zeros((2, 64, 4), np.float32),
                "bogus": np.zeros(1, np.float32),
            },
            "bogus",
        ),
    ],
)
def test_run_rejects_bad_inputs(engine: Engine, inputs: dict[str, np.ndarray], match: str) -> None:
    with pytest.raises(EngineError, match=match):
        engine.run(inputs)


def test_zero_inputs_and_check_inputs() -> None:
    specs = (TensorSpec("x", "float32", ("batch", 3)), TensorSpec("n", "int32", (1,)))
    zeros = zero_inputs(specs)
    assert zeros["x"].shape == (1, 3) and zeros["n"].dtype == np.int32
    assert list(check_inputs("m", specs, zeros)) == ["x", "n"]
    with pytest.raises(EngineError, match="numpy array"):
        check_inputs("m", specs, {"x": [[0.0, 0.0, 0.0]], "n": zeros["n"]})  # type: ignore[dict-item]
    with pytest.raises(EngineError, match="dynamic"):
        specs[0].static_shape()


# --- parity -------------------------------------------------------------------------------------


def test_torch_and_onnxruntime_agree(tiny_module: torch.nn.Module, tiny_onnx: Path) -> None:
    ort_engine = OnnxRuntimeEngine(tiny_onnx, num_threads=1)
    torch_engine = TorchEngine(tiny_module, IN_SPECS, OUT_SPECS, device="cpu")
    for seed in range(3):
        feed = _random_inputs(seed)
        a, b = ort_engine.run(feed), torch_engine.run(feed)
        for spec in OUT_SPECS:
            np.testing.assert_allclose(a[spec.name], b[spec.name], rtol=0, atol=PARITY_ATOL)


# --- ONNX Runtime providers ----------------------------------------------------------------------


def test_device_for_providers() -> None:
    assert device_for_providers(("CPUExecutionProvider",)) == "cpu"
    assert device_for_providers(("CUDAExecutionProvider", "CPUExecutionProvider")) == "cuda:0"
    assert (
        device_for_providers(("TensorrtExecutionProvider", "CPUExecutionProvider"), 1) == "cuda:1"
    )
    assert device_for_providers(()) == "cpu"


def test_cuda_provider_availability_is_this_builds() -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert not cuda_provider_available()
    assert CUDA_PROVIDERS == ("CUDAExecutionProvider", "CPUExecutionProvider")


def test_providers_read_back_after_silent_fallback(
    tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Simulates onnxruntime-gpu on a machine whose CUDA libraries do not load: the build lists
    # CUDA as available, the session is created without error, but runs on the CPU.
    import onnxruntime as ort

    real_session = ort.InferenceSession
    requested: list[object] = []

    def fake_session(model: bytes, sess_options: object, providers: list[object]) -> object:
        requested.extend(providers)
        return real_session(model, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(
        ort,
        "get_available_providers",
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    monkeypatch.setattr(ort, "InferenceSession", fake_session)
    with caplog.at_level(logging.WARNING, logger="engines.onnxruntime_backend"):
        engine = OnnxRuntimeEngine(tiny_onnx, providers=CUDA_PROVIDERS)
    assert requested[0] == ("CUDAExecutionProvider", {"device_id": 0})
    assert engine.providers_in_use == ("CPUExecutionProvider",)
    assert engine.device == "cpu"
    assert engine.describe().device == "cpu"
    assert "fell back from CUDAExecutionProvider" in caplog.text


def test_onnxruntime_thread_count(tiny_onnx: Path) -> None:
    engine = OnnxRuntimeEngine(tiny_onnx, num_threads=2)
    assert dict(engine.describe().extra)["threads"] == "2"
    with pytest.raises(EngineError, match="num_threads"):
        OnnxRuntimeEngine(tiny_onnx, num_threads=0)
    # ONNX Runtime makes every thread it is told to: 100,000 hung the session's creation.
    with pytest.raises(EngineError, match="num_threads must be from 1 to 256, got 100000"):
        OnnxRuntimeEngine(tiny_onnx, num_threads=100_000)


# --- torch backend specifics --------------------------------------------------------------------


def test_torch_engine_checks_outputs(tiny_module: torch.nn.Module) -> None:
    wrong = (TensorSpec("features", "float32", (2, 8, 8, 8)),)
    with pytest.raises(EngineError, match="returned 2 tensors"):
        TorchEngine(tiny_module, IN_SPECS, wrong, device="cpu").run(_random_inputs(0))
    bad_shape = (OUT_SPECS[0], TensorSpec("pooled", "float32", (2, 99)))
    with pytest.raises(EngineError, match="pooled"):
        TorchEngine(tiny_module, IN_SPECS, bad_shape, device="cpu").run(_random_inputs(0))
    with pytest.raises(EngineError, match="duplicate"):
        TorchEngine(tiny_module, IN_SPECS, (IN_SPECS[0],), device="cpu")


def test_torch_device_resolution() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_torch_device("auto").type == expected
    assert resolve_torch_device("cpu").type == "cpu"
    with pytest.raises(EngineError, match="invalid torch device"):
        resolve_torch_device("quantum")
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="CUDA is not available"):
            resolve_torch_device("cuda")


def test_torch_forward_failure_is_engine_error() -> None:
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    spec = (TensorSpec("x", "float32", (1,)),)
    engine = TorchEngine(Broken(), spec, (TensorSpec("y", "float32", (1,)),), device="cpu")
    with pytest.raises(EngineError, match="forward failed: boom"):
        engine.run({"x": np.zeros(1, np.float32)})


@pytest.mark.gpu
def test_torch_cuda_matches_onnxruntime(tiny_module: torch.nn.Module, tiny_onnx: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    # TF32 convolutions on Ampere+ are not fp32-exact; compare with a looser bound.
    cuda_engine = TorchEngine(tiny_module, IN_SPECS, OUT_SPECS, device="cuda")
    assert cuda_engine.describe().device == "cuda:0"
    ort_engine = OnnxRuntimeEngine(tiny_onnx, num_threads=1)
    feed = _random_inputs(5)
    a, b = ort_engine.run(feed), cuda_engine.run(feed)
    for spec in OUT_SPECS:
        np.testing.assert_allclose(a[spec.name], b[spec.name], rtol=0, atol=1e-3)
    tiny_module.cpu()


def test_onnxruntime_idle_threads_sleep_unless_asked_to_spin(tiny_onnx: Path) -> None:
    key = "session.intra_op.allow_spinning"
    options = OnnxRuntimeEngine(tiny_onnx)._session.get_session_options()
    assert options.get_session_config_entry(key) == "0"
    spinning = OnnxRuntimeEngine(tiny_onnx, allow_spinning=True)._session.get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):
        spinning.get_session_config_entry(key)  # left at ONNX Runtime's default (spin)


def test_onnxruntime_threads_are_counted_not_left_to_it(tiny_onnx: Path) -> None:
    """Left to choose, ONNX Runtime pins its pool threads to cores (which slowed the node's
    camera encoder by a fifth beside its other threads); given no count, the session gets the
    one it would choose, one per physical core the process may run on, explicitly."""
    allowed = len(os.sched_getaffinity(0))
    expected = min(allowed, psutil.cpu_count(logical=False) or allowed)
    assert default_threads() == expected >= 1
    engine = OnnxRuntimeEngine(tiny_onnx)
    assert engine._session.get_session_options().intra_op_num_threads == expected
    assert f"threads={expected} (auto)" in str(engine.describe())
    one = OnnxRuntimeEngine(tiny_onnx, num_threads=1)
    assert one._session.get_session_options().intra_op_num_threads == 1


def test_onnxruntime_default_threads_stay_within_the_process_cpus(tiny_onnx: Path) -> None:
    """A process confined to one CPU (taskset, `realtime.cpu_affinity`) gets one thread."""
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert default_threads() == 1
        engine = OnnxRuntimeEngine(tiny_onnx)
        assert engine._session.get_session_options().intra_op_num_threads == 1
    finally:
        os.sched_setaffinity(0, before)


def test_onnxruntime_default_threads_without_cpu_affinity_count_every_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the OS tells no CPU affinity (macOS), every CPU counts."""
    monkeypatch.delattr(os, "sched_getaffinity")
    cpus = os.cpu_count() or 1
    assert default_threads() == min(cpus, psutil.cpu_count(logical=False) or cpus)


def test_onnxruntime_memory_arena_is_kept_unless_asked_not_to(tiny_onnx: Path) -> None:
    """The lidar encoder's buckets run without ONNX Runtime's arena (each would keep buffers
    sized to its grid); every other session keeps it."""
    assert OnnxRuntimeEngine(tiny_onnx)._session.get_session_options().enable_cpu_mem_arena
    engine = OnnxRuntimeEngine(tiny_onnx, memory_arena=False)
    assert not engine._session.get_session_options().enable_cpu_mem_arena
    a, b = engine.run(_random_inputs(5)), OnnxRuntimeEngine(tiny_onnx).run(_random_inputs(5))
    assert all(np.array_equal(a[s.name], b[s.name]) for s in OUT_SPECS)
    lidar = EngineFactory().lidar_encoder()
    assert isinstance(lidar, BucketedLidarEncoder)
    for n in lidar.sizes:
        bucket = lidar.engine_for(n)
        assert isinstance(bucket, OnnxRuntimeEngine)
        assert not bucket._session.get_session_options().enable_cpu_mem_arena
