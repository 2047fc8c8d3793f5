"""A stand-in for the ``tensorrt`` and cuda-python runtime modules, for machines without them.

Only the boundary is fake: :func:`install` puts a :class:`FakeTensorRT` and a
:class:`FakeCudaRuntime` where ``engines.tensorrt_backend`` keeps the imported modules, so
everything of ours -- the builder configuration, serialization, the engine cache (keys, lookups,
stale rebuilds), deserialization, device buffers, copies, streams, CUDA-event timing and the
factory -- runs for real against them.

The fake "GPU" is host memory (``cudaMalloc`` returns the address of a ctypes buffer, copies are
``memmove``), a "serialized engine" is a small header (magic, TensorRT version, builder flags)
followed by the ONNX bytes, and ``execute_async_v3`` runs those ONNX bytes with ONNX Runtime on
the CPU, reading the inputs from and writing the outputs to the tensor addresses it was given.
Deserializing an engine of another TensorRT version gives ``None``, as TensorRT does.
"""

# The fakes keep cuda-python's and TensorRT's own names (cudaSuccess, cudaMemcpyKind, ...).
# ruff: noqa: N815

from __future__ import annotations

import ctypes
import enum
import json
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from engines import tensorrt_backend

__all__ = ["BuildRecord", "FakeCudaRuntime", "FakeTensorRT", "install"]

_MAGIC = b"FAKE-TRT"

_ORT_TYPES = {
    "tensor(float)": "FLOAT",
    "tensor(float16)": "HALF",
    "tensor(int8)": "INT8",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
}
_NUMPY = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}


class _Error(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorNoDevice = 100


class _MemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class _BuilderFlag(enum.Enum):
    FP16 = 1
    INT8 = 2
    TF32 = 3


class _MemoryPoolType(enum.Enum):
    WORKSPACE = 0


class _TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class _DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 8


class _Severity(enum.Enum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


@dataclass
class _Event:
    ns: int = 0


class FakeCudaRuntime:
    """The subset of ``cuda.bindings.runtime`` the backend uses; ``devices=0`` is a machine
    whose driver reports no device."""

    cudaError_t = _Error
    cudaMemcpyKind = _MemcpyKind

    def __init__(self, devices: int = 1, gpu_name: str = "Fake RTX 4000", sm: str = "8.9") -> None:
        self.devices = devices
        self.gpu_name = gpu_name
        self.sm = sm
        self.allocations: dict[int, ctypes.Array[ctypes.c_char]] = {}

    def cudaGetErrorName(self, err: _Error) -> tuple[_Error, bytes]:
        return _Error.cudaSuccess, _Error(err).name.encode()

    def cudaGetDeviceCount(self) -> tuple[_Error, int]:
        if self.devices == 0:
            return _Error.cudaErrorNoDevice, 0
        return _Error.cudaSuccess, self.devices

    def cudaGetDeviceProperties(self, device: int) -> tuple[_Error, Any]:
        if device >= self.devices:
            return _Error.cudaErrorInvalidValue, None
        major, minor = (int(v) for v in self.sm.split("."))
        return _Error.cudaSuccess, SimpleNamespace(
            name=self.gpu_name.encode() + b"\x00" * 4, major=major, minor=minor
        )

    def cudaSetDevice(self, device: int) -> tuple[_Error]:
        return (_Error.cudaSuccess if device < self.devices else _Error.cudaErrorInvalidValue,)

    def cudaMalloc(self, nbytes: int) -> tuple[_Error, int]:
        buffer = ctypes.create_string_buffer(nbytes)
        ptr = ctypes.addressof(buffer)
        self.allocations[ptr] = buffer
        return _Error.cudaSuccess, ptr

    def cudaFree(self, ptr: int) -> tuple[_Error]:
        known = self.allocations.pop(ptr, None) is not None
        return (_Error.cudaSuccess if known else _Error.cudaErrorInvalidValue,)

    def cudaMemcpy(self, dst: int, src: int, nbytes: int, kind: _MemcpyKind) -> tuple[_Error]:
        ctypes.memmove(dst, src, nbytes)
        return (_Error.cudaSuccess,)

    def cudaMemcpyAsync(
        self, dst: int, src: int, nbytes: int, kind: _MemcpyKind, stream: int
    ) -> tuple[_Error]:
        return self.cudaMemcpy(dst, src, nbytes, kind)

    def cudaStreamCreate(self) -> tuple[_Error, int]:
        return _Error.cudaSuccess, 7

    def cudaStreamSynchronize(self, stream: int) -> tuple[_Error]:
        return (_Error.cudaSuccess,)

    def cudaStreamDestroy(self, stream: int) -> tuple[_Error]:
        return (_Error.cudaSuccess,)

    def cudaEventCreate(self) -> tuple[_Error, _Event]:
        return _Error.cudaSuccess, _Event()

    def cudaEventRecord(self, event: _Event, stream: int) -> tuple[_Error]:
        event.ns = time.perf_counter_ns()
        return (_Error.cudaSuccess,)

    def cudaEventElapsedTime(self, start: _Event, end: _Event) -> tuple[_Error, float]:
        return _Error.cudaSuccess, (end.ns - start.ns) / 1e6

    def cudaEventDestroy(self, event: _Event) -> tuple[_Error]:
        return (_Error.cudaSuccess,)


@dataclass(frozen=True)
class BuildRecord:
    """One ``build_serialized_network`` call: the network's inputs and the builder settings."""

    inputs: tuple[str, ...]
    flags: frozenset[str]
    workspace_bytes: int
    optimization_level: int


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: Any


@dataclass
class _Network:
    onnx: bytes = b""
    inputs: list[_Tensor] = field(default_factory=list)

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, index: int) -> _Tensor:
        return self.inputs[index]


class FakeTensorRT:
    """The subset of the ``tensorrt`` 10 module the backend uses (see the module docstring)."""

    def __init__(self, version: str = "10.3.0") -> None:
        self.__version__ = version
        self.builds: list[BuildRecord] = []
        fake = self

        class ILogger:
            Severity = _Severity

        class IInt8EntropyCalibrator2:
            """Never asked for batches: the fake "calibrates" nothing."""

        self.ILogger = ILogger
        self.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
        self.BuilderFlag = _BuilderFlag
        self.MemoryPoolType = _MemoryPoolType
        self.TensorIOMode = _TensorIOMode
        self.DataType = _DataType

        class TimingCache:
            def __init__(self, data: bytes) -> None:
                self.data = bytes(data) or b"fake timing cache"

            def serialize(self) -> bytes:
                return self.data

        class BuilderConfig:
            def __init__(self) -> None:
                # TensorRT builder configs start with TF32 allowed.
                self.flags = {"TF32"}
                self.workspace = 0
                self.builder_optimization_level = 3
                self.int8_calibrator: Any = None
                self.timing_cache: TimingCache | None = None

            def set_memory_pool_limit(self, pool: Any, size: int) -> None:
                assert pool is fake.MemoryPoolType.WORKSPACE
                self.workspace = size

            def set_flag(self, flag: enum.Enum) -> None:
                self.flags.add(flag.name)

            def clear_flag(self, flag: enum.Enum) -> None:
                self.flags.discard(flag.name)

            def create_timing_cache(self, data: bytes) -> TimingCache:
                return TimingCache(data)

            def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
                self.timing_cache = cache
                return True

            def get_timing_cache(self) -> TimingCache:
                assert self.timing_cache is not None
                return self.timing_cache

        class Builder:
            def __init__(self, logger: Any) -> None:
                self.logger = logger

            def create_network(self, flags: int) -> _Network:
                assert flags == 0, "TensorRT 10 networks are explicit-batch; flags must be 0"
                return _Network()

            def create_builder_config(self) -> BuilderConfig:
                return BuilderConfig()

            def build_serialized_network(self, network: _Network, config: BuilderConfig) -> bytes:
                fake.builds.append(
                    BuildRecord(
                        inputs=tuple(t.name for t in network.inputs),
                        flags=frozenset(config.flags),
                        workspace_bytes=config.workspace,
                        optimization_level=config.builder_optimization_level,
                    )
                )
                header = json.dumps(
                    {"version": fake.__version__, "flags": sorted(config.flags)}
                ).encode()
                return _MAGIC + len(header).to_bytes(4, "little") + header + network.onnx

        class OnnxParser:
            def __init__(self, network: _Network, logger: Any) -> None:
                self.network = network
                self.errors: list[str] = []

            def parse(self, data: bytes) -> bool:
                try:
                    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
                except Exception as exc:  # ORT's own exception types
                    self.errors.append(str(exc))
                    return False
                self.network.onnx = bytes(data)
                self.network.inputs = [
                    _Tensor(a.name, tuple(a.shape), fake.DataType[_ORT_TYPES[a.type]])
                    for a in session.get_inputs()
                ]
                return True

            @property
            def num_errors(self) -> int:
                return len(self.errors)

            def get_error(self, index: int) -> str:
                return self.errors[index]

        class ExecutionContext:
            def __init__(self, engine: CudaEngine) -> None:
                self.engine = engine
                self.addresses: dict[str, int] = {}

            def set_tensor_address(self, name: str, ptr: int) -> bool:
                self.addresses[name] = ptr
                return True

            def execute_async_v3(self, stream: int) -> bool:
                feed = {}
                for tensor in self.engine.tensors:
                    if tensor.name in self.engine.input_names:
                        dtype = np.dtype(_NUMPY[tensor.dtype.name])
                        size = int(np.prod(tensor.shape)) * dtype.itemsize
                        raw = ctypes.string_at(self.addresses[tensor.name], size)
                        feed[tensor.name] = np.frombuffer(raw, dtype).reshape(tensor.shape)
                names = [t.name for t in self.engine.tensors if t.name not in feed]
                for name, value in zip(names, self.engine.session.run(names, feed), strict=True):
                    spec = next(t for t in self.engine.tensors if t.name == name)
                    out: np.ndarray = np.ascontiguousarray(value, dtype=_NUMPY[spec.dtype.name])
                    ctypes.memmove(self.addresses[name], out.ctypes.data, out.nbytes)
                return True

        class CudaEngine:
            def __init__(self, onnx: bytes) -> None:
                self.session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
                self.input_names = {a.name for a in self.session.get_inputs()}
                self.tensors = [
                    _Tensor(a.name, tuple(a.shape), fake.DataType[_ORT_TYPES[a.type]])
                    for a in (*self.session.get_inputs(), *self.session.get_outputs())
                ]

            @property
            def num_io_tensors(self) -> int:
                return len(self.tensors)

            def get_tensor_name(self, index: int) -> str:
                return self.tensors[index].name

            def _tensor(self, name: str) -> _Tensor:
                return next(t for t in self.tensors if t.name == name)

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                return self._tensor(name).shape

            def get_tensor_dtype(self, name: str) -> Any:
                return self._tensor(name).dtype

            def get_tensor_mode(self, name: str) -> Any:
                mode = fake.TensorIOMode
                return mode.INPUT if name in self.input_names else mode.OUTPUT

            def create_execution_context(self) -> ExecutionContext:
                return ExecutionContext(self)

        class Runtime:
            def __init__(self, logger: Any) -> None:
                self.logger = logger

            def deserialize_cuda_engine(self, data: bytes) -> CudaEngine | None:
                if not data.startswith(_MAGIC):
                    return None
                size = int.from_bytes(data[len(_MAGIC) : len(_MAGIC) + 4], "little")
                start = len(_MAGIC) + 4
                header = json.loads(data[start : start + size])
                if header["version"] != fake.__version__:
                    return None  # TensorRT refuses plans of another version
                return CudaEngine(data[start + size :])

        self.Builder = Builder
        self.OnnxParser = OnnxParser
        self.Runtime = Runtime

    def nptype(self, dtype: enum.Enum) -> Any:
        return _NUMPY[dtype.name]


def install(
    monkeypatch: pytest.MonkeyPatch,
    *,
    version: str = "10.3.0",
    devices: int = 1,
    tensorrt: FakeTensorRT | None = None,
) -> tuple[FakeTensorRT, FakeCudaRuntime]:
    """Makes ``engines.tensorrt_backend`` see a fake TensorRT ``version`` and a CUDA runtime
    with ``devices`` GPUs (undone by ``monkeypatch``); returns both fakes."""
    trt = tensorrt or FakeTensorRT(version)
    cudart = FakeCudaRuntime(devices)
    monkeypatch.setattr(tensorrt_backend, "_trt", trt)
    monkeypatch.setattr(tensorrt_backend, "_cudart", cudart)
    monkeypatch.setattr(tensorrt_backend, "_IMPORT_PROBLEM", "")
    # The backend keeps one TensorRT logger per process, derived from the module's ILogger.
    monkeypatch.setattr(tensorrt_backend, "_TRT_LOGGER", None)
    return trt, cudart
