"""Native TensorRT 10.x backend: ONNX -> serialized engine (FP32/FP16/INT8) -> CUDA execution.

Written against the TensorRT 10 Python API (``trt.Builder``, ``create_network(0)`` -- explicit
batch is the only mode in 10 --, ``trt.OnnxParser``, ``IBuilderConfig.set_flag`` /
``set_memory_pool_limit`` / ``create_timing_cache`` / ``set_timing_cache``,
``build_serialized_network``, ``trt.Runtime.deserialize_cuda_engine``, the named-tensor I/O API
``num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode`` / ``get_tensor_shape`` /
``get_tensor_dtype``, ``set_tensor_address`` and ``execute_async_v3``) and cuda-python's runtime
API for device buffers, copies, streams and CUDA graphs.

Both are optional: importing this module never fails; :func:`tensorrt_available` says whether
they loaded, :func:`unavailable_reason` whether this machine can run engines at all (a CUDA device
too), and everything that needs them raises :class:`EngineError` ("TensorRT is not installed
...") otherwise. Only static input shapes are supported (the project exports its graphs with
static, padded shapes), so no optimisation profiles are needed.

``fp32`` means IEEE fp32: TensorRT's default TF32 math (10-bit mantissas in matmuls and
convolutions on Ampere and later) is switched off for it, because the project's geometric graphs
must agree with ONNX Runtime and torch to 1e-3 m, and TF32 alone moves a point at 50 m by
centimetres. ``fp16``/``int8`` are explicit requests for reduced precision.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from engines.cache import (
    DEFAULT_ENGINE_CACHE_DIR,
    DeviceInfo,
    EngineCache,
    EngineCacheKey,
    file_sha256,
)
from engines.engine import PRECISIONS, EngineDescription, TensorSpec, check_inputs, run_warmup
from engines.errors import EngineError, ModelError
from engines.onnxruntime_backend import OnnxRuntimeEngine

__all__ = [
    "BuildOptions",
    "TensorRTEngine",
    "build_serialized_engine",
    "engine_cache_key",
    "load_or_build_engine",
    "onnx_input_specs",
    "query_device_info",
    "read_calibration_cache",
    "require_tensorrt",
    "tensorrt_available",
    "timing_cache_path",
    "unavailable_reason",
    "write_calibration_cache",
]

_log = logging.getLogger(__name__)
#: The longest entry name made from a file name (`_entry_name`).
_MAX_ENTRY_NAME = 128


def _import_optional() -> tuple[Any, Any, str]:
    """(tensorrt module or None, cudart module or None, why they are unavailable)."""
    problems: list[str] = []
    try:
        trt_mod: Any = importlib.import_module("tensorrt")
    except Exception as exc:  # a broken install raises more than ImportError (missing .so)
        trt_mod = None
        problems.append(f"import tensorrt failed: {exc}")
    cudart_mod: Any = None
    cuda_problems: list[str] = []
    # cuda-python >= 12.6 moved the bindings to cuda.bindings; older releases have cuda.cudart.
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            cudart_mod = importlib.import_module(name)
            break
        except Exception as exc:
            cuda_problems.append(f"import {name} failed: {exc}")
    if cudart_mod is None:
        problems.extend(cuda_problems)
    return trt_mod, cudart_mod, "; ".join(problems)


_trt, _cudart, _IMPORT_PROBLEM = _import_optional()


def tensorrt_available() -> bool:
    """True when both TensorRT and cuda-python import (a GPU is needed to actually run)."""
    return _trt is not None and _cudart is not None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def unavailable_reason(device_id: int = 0) -> str | None:
    """Why this machine cannot run TensorRT engines on CUDA device ``device_id``, in one line
    (``"TensorRT 10 is not installed (import tensorrt failed: ...)"``, ``"no usable CUDA device
    (CUDA call failed: cudaErrorNoDevice)"``), or ``None`` when it can."""
    if _trt is None:
        # The first problem is tensorrt's own import; cuda-python's, if any, follows.
        first = _IMPORT_PROBLEM.split("; ")[0]
        return _one_line(f"TensorRT 10 is not installed ({first})")
    if _cudart is None:
        return _one_line(f"cuda-python is not installed ({_IMPORT_PROBLEM})")
    try:
        count = int(_cuda(_cudart.cudaGetDeviceCount()))
    except EngineError as exc:  # no driver, no device: cuda-python reports it as an error code
        return _one_line(f"no usable CUDA device ({exc})")
    if count <= device_id:
        return f"no CUDA device {device_id} ({count} found)"
    return None


def require_tensorrt() -> None:
    """Raises unless TensorRT and cuda-python are importable.

    Raises:
        EngineError: ``"TensorRT is not installed (...)"`` naming what failed to import.
    """
    if not tensorrt_available():
        raise EngineError(
            f"TensorRT is not installed ({_IMPORT_PROBLEM}); the tensorrt backend needs the "
            "TensorRT 10.x Python wheel and cuda-python on a machine with an NVIDIA GPU "
            "(use the onnxruntime or torch backend otherwise)"
        )


def _cuda(result: Any) -> Any:
    """Unpacks a cuda-python ``(err, *values)`` tuple; raises on a non-success error code."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != _cudart.cudaError_t.cudaSuccess:
        _, name = _cudart.cudaGetErrorName(err)
        text = name.decode() if isinstance(name, bytes) else str(name)
        raise EngineError(f"CUDA call failed: {text}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


_TRT_LOGGER: Any = None


def _trt_logger() -> Any:
    """A trt.ILogger routing TensorRT messages to :mod:`logging` (TensorRT's own prints)."""
    global _TRT_LOGGER  # noqa: PLW0603 -- TensorRT wants one logger per process
    if _TRT_LOGGER is None:
        sev = _trt.ILogger.Severity
        levels = {
            sev.INTERNAL_ERROR: logging.CRITICAL,
            sev.ERROR: logging.ERROR,
            sev.WARNING: logging.WARNING,
            sev.INFO: logging.INFO,
            sev.VERBOSE: logging.DEBUG,
        }

        base: Any = _trt.ILogger

        class _Logger(base):  # type: ignore[misc]
            def __init__(self) -> None:
                _trt.ILogger.__init__(self)

            def log(self, severity: Any, msg: str) -> None:
                _log.log(levels.get(severity, logging.INFO), "TensorRT: %s", msg)

        _TRT_LOGGER = _Logger()
    return _TRT_LOGGER


def query_device_info(device_id: int = 0) -> DeviceInfo:
    """TensorRT version, GPU name and compute capability of CUDA device ``device_id``.

    Raises:
        EngineError: TensorRT/cuda-python missing, or no such CUDA device.
    """
    require_tensorrt()
    props = _cuda(_cudart.cudaGetDeviceProperties(device_id))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return DeviceInfo(
        tensorrt_version=str(_trt.__version__),
        gpu_name=name.strip("\x00 "),
        compute_capability=f"{props.major}.{props.minor}",
    )


@dataclass(frozen=True)
class BuildOptions:
    """How to build an engine.

    ``precision``: ``"fp32"`` (strict: TF32 off, see the module docstring), ``"fp16"`` or
    ``"int8"`` (INT8 also enables FP16 for layers without INT8 kernels); ``workspace_bytes``: the
    builder's workspace memory pool limit; ``optimization_level``: TensorRT builder optimisation
    level 0-5 (3 is TensorRT's default).

    Raises:
        EngineError: a value out of range.
    """

    precision: str = "fp16"
    workspace_bytes: int = 1 << 30
    optimization_level: int = 3

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EngineError(f"unknown precision {self.precision!r}; use one of {PRECISIONS}")
        if self.workspace_bytes <= 0:
            raise EngineError(f"workspace_bytes must be > 0, got {self.workspace_bytes}")
        if not 0 <= self.optimization_level <= 5:
            raise EngineError(f"optimization_level must be in 0..5, got {self.optimization_level}")

    @property
    def tf32(self) -> bool:
        """Whether TensorRT may use TF32 math: everywhere but in strict ``fp32`` builds."""
        return self.precision != "fp32"

    def key_options(self) -> dict[str, object]:
        """The options that change the built engine (precision is its own key field; TF32 is
        listed because engines cached before it was switched off for fp32 used it)."""
        return {
            "workspace_bytes": self.workspace_bytes,
            "optimization_level": self.optimization_level,
            "tf32": self.tf32,
        }


def read_calibration_cache(path: Path | None) -> bytes | None:
    """The INT8 calibration cache at ``path``, or ``None`` when absent or empty."""
    if path is None or not path.is_file():
        return None
    data = path.read_bytes()
    return data or None


def write_calibration_cache(path: Path | None, data: bytes) -> None:
    """Stores an INT8 calibration cache (no-op for ``path=None``), creating parent folders."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    _log.info("wrote INT8 calibration cache %s (%d bytes)", path, len(data))


def timing_cache_path(cache_dir: Path, device: DeviceInfo) -> Path:
    """The builder timing cache for this TensorRT version and GPU (timings are per GPU)."""
    gpu = "".join(c if c.isalnum() else "_" for c in device.gpu_name)
    return Path(cache_dir) / f"timing-trt{device.tensorrt_version}-{gpu}.cache"


def onnx_input_specs(onnx_path: Path) -> tuple[TensorSpec, ...]:
    """The ONNX model's input specs, read with ONNX Runtime (no GPU needed).

    Raises:
        ModelError: the file is missing or not a valid model.
        EngineError: an input has a dynamic dimension (export with static shapes).
    """
    specs = OnnxRuntimeEngine(Path(onnx_path), num_threads=1).inputs
    for spec in specs:
        if not spec.is_static:
            raise EngineError(
                f"{Path(onnx_path).name}: input {spec.name!r} has dynamic shape {spec.shape}; "
                "the TensorRT backend needs static shapes (export with fixed, padded inputs)"
            )
    return specs


class _DeviceBuffer:
    """One cudaMalloc allocation."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(_cuda(_cudart.cudaMalloc(self.nbytes)))

    def free(self) -> None:
        if self.ptr:
            _cuda(_cudart.cudaFree(self.ptr))
            self.ptr = 0


def _make_calibrator(
    inputs: tuple[TensorSpec, ...],
    batches: Iterable[Mapping[str, np.ndarray]],
    cache_path: Path | None,
) -> Any:
    """An IInt8EntropyCalibrator2 feeding ``batches`` (arrays matching ``inputs``).

    With a readable calibration cache at ``cache_path`` TensorRT skips the batches entirely;
    after calibration the cache is written there.
    """

    base: Any = _trt.IInt8EntropyCalibrator2

    class _Calibrator(base):  # type: ignore[misc]
        def __init__(self) -> None:
            _trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(batches)
            self._buffers = {
                s.name: _DeviceBuffer(int(np.prod(s.static_shape())) * np.dtype(s.dtype).itemsize)
                for s in inputs
            }
            self.count = 0

        def get_batch_size(self) -> int:
            # Explicit-batch networks take the batch from the input shape; TensorRT wants 1.
            return 1

        def get_batch(self, names: list[str], *_: Any) -> list[int] | None:
            try:
                batch = next(self._batches)
            except StopIteration:
                return None
            feed = check_inputs("INT8 calibration", inputs, batch)
            for name, arr in feed.items():
                host = np.ascontiguousarray(arr)
                _cuda(
                    _cudart.cudaMemcpy(
                        self._buffers[name].ptr,
                        host.ctypes.data,
                        host.nbytes,
                        _cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                    )
                )
            self.count += 1
            return [self._buffers[n].ptr for n in names]

        def read_calibration_cache(self) -> bytes | None:
            data = read_calibration_cache(cache_path)
            if data is not None:
                _log.info("using INT8 calibration cache %s", cache_path)
            return data

        def write_calibration_cache(self, cache: Any) -> None:
            write_calibration_cache(cache_path, bytes(cache))

        def free(self) -> None:
            for buf in self._buffers.values():
                buf.free()

    return _Calibrator()


def build_serialized_engine(
    onnx_path: Path,
    options: BuildOptions,
    *,
    calibration_batches: Iterable[Mapping[str, np.ndarray]] | None = None,
    calibration_cache: Path | None = None,
    timing_cache: Path | None = None,
) -> bytes:
    """Builds a serialized TensorRT engine from an ONNX file.

    Args:
        onnx_path: the model (static input shapes).
        options: precision, workspace, optimisation level.
        calibration_batches: INT8 only: input dicts of recorded frames for the entropy
            calibrator (not needed when ``calibration_cache`` exists).
        calibration_cache: INT8 only: calibration cache file, read when present and written
            after calibration.
        timing_cache: builder timing cache file, read when present and updated afterwards,
            which makes rebuilds much faster.

    Raises:
        EngineError: TensorRT missing, INT8 without calibration data or cache, a parse or
            build failure.
        ModelError: the ONNX file cannot be read.
    """
    require_tensorrt()
    onnx_path = Path(onnx_path)
    if options.precision == "int8" and (
        calibration_batches is None and read_calibration_cache(calibration_cache) is None
    ):
        raise EngineError(
            f"{onnx_path.name}: INT8 needs calibration_batches or an existing calibration cache"
        )
    try:
        onnx_bytes = onnx_path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{onnx_path}: cannot read model: {exc}") from exc
    logger = _trt_logger()
    builder = _trt.Builder(logger)
    network = builder.create_network(0)
    parser = _trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"{onnx_path}: TensorRT cannot parse the ONNX model: {errors}")
    specs: list[TensorSpec] = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(int(d) for d in tensor.shape)
        if any(d < 0 for d in shape):
            raise EngineError(
                f"{onnx_path.name}: input {tensor.name!r} has dynamic shape {shape}; "
                "export with static shapes"
            )
        specs.append(TensorSpec(tensor.name, np.dtype(_trt.nptype(tensor.dtype)).name, shape))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(_trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    config.builder_optimization_level = options.optimization_level
    if not options.tf32:
        config.clear_flag(_trt.BuilderFlag.TF32)  # on by default in TensorRT
    calibrator: Any = None
    if options.precision in ("fp16", "int8"):
        if not getattr(builder, "platform_has_fast_fp16", True):  # deprecated in 10.x
            _log.warning("%s: this GPU has no fast FP16; FP16 kernels may be slow", onnx_path.name)
        config.set_flag(_trt.BuilderFlag.FP16)
    if options.precision == "int8":
        if not getattr(builder, "platform_has_fast_int8", True):
            _log.warning("%s: this GPU has no fast INT8", onnx_path.name)
        config.set_flag(_trt.BuilderFlag.INT8)
        calibrator = _make_calibrator(tuple(specs), calibration_batches or (), calibration_cache)
        config.int8_calibrator = calibrator
    old_timings = _read_timing_cache(timing_cache)
    timing = config.create_timing_cache(old_timings)
    # ignore_mismatch=False: a cache from another GPU/TensorRT is refused rather than misused.
    config.set_timing_cache(timing, False)
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if serialized is None:
        raise EngineError(
            f"{onnx_path.name}: TensorRT build failed ({options.precision}); see the TensorRT "
            "log lines above"
        )
    if timing_cache is not None:
        _write_timing_cache(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


# The timing cache only makes later builds faster: a folder or an unwritable file in its place
# cost the engine just built (minutes of work) and failed the command; now it is said and
# skipped.


def _read_timing_cache(path: Path | None) -> bytes:
    if path is None or not path.is_file():
        return b""
    try:
        return path.read_bytes()
    except OSError as exc:
        _log.warning(
            "cannot read the TensorRT timing cache %s (%s); building without it", path, exc
        )
        return b""


def _write_timing_cache(path: Path, data: bytes) -> None:
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole, then renamed: two builds at once must not leave a torn cache.
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        tmp = Path(name)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        _log.warning("cannot write the TensorRT timing cache %s (%s)", path, exc)
        if tmp is not None:
            tmp.unlink(missing_ok=True)


class _UnloadableEngineError(EngineError):
    """TensorRT refused a serialized engine (another version or GPU, or a damaged file)."""


class TensorRTEngine:
    """Runs a serialized TensorRT engine; implements :class:`engines.engine.Engine`.

    Inputs are copied to device buffers, the engine is enqueued with ``execute_async_v3`` on a
    private CUDA stream (or, with ``use_cuda_graph``, a CUDA graph captured from that call, which
    removes per-layer launch overhead for small models), and outputs are copied back. CUDA events
    recorded on the stream before the input copies and after the execution give
    :attr:`last_gpu_ns`.

    Args:
        engine: a serialized engine (bytes) or a ``.engine`` file.
        name: model name for messages and :meth:`describe`.
        precision: what the engine was built with (for :meth:`describe`).
        use_cuda_graph: capture the execute call into a CUDA graph on the first run; falls back
            to plain execution (with a warning) when capture fails.
        device_id: CUDA device.

    Raises:
        EngineError: TensorRT missing, an engine that does not deserialize (built for another
            TensorRT version or GPU), or dynamic I/O shapes.
    """

    def __init__(
        self,
        engine: bytes | Path,
        *,
        name: str = "engine",
        precision: str = "fp32",
        use_cuda_graph: bool = False,
        device_id: int = 0,
    ) -> None:
        require_tensorrt()
        data = Path(engine).read_bytes() if isinstance(engine, Path) else bytes(engine)
        self.name = name
        self.precision = precision
        self.use_cuda_graph = use_cuda_graph
        self.device_id = device_id
        self._buffers: dict[str, _DeviceBuffer] = {}
        self._graph_exec: Any = None
        self._stream: Any = None
        self._events: tuple[Any, Any] | None = None
        #: GPU time of the last run, from CUDA events (see Engine.last_gpu_ns).
        self.last_gpu_ns: int | None = None
        _cuda(_cudart.cudaSetDevice(device_id))
        self._runtime = _trt.Runtime(_trt_logger())
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise _UnloadableEngineError(
                f"{name}: TensorRT {_trt.__version__} cannot deserialize this engine (built for "
                "another TensorRT version or GPU?); rebuild it"
            )
        self._context = self._engine.create_execution_context()
        inputs: list[TensorSpec] = []
        outputs: list[TensorSpec] = []
        for i in range(self._engine.num_io_tensors):
            tname = self._engine.get_tensor_name(i)
            shape = tuple(int(d) for d in self._engine.get_tensor_shape(tname))
            dtype = np.dtype(_trt.nptype(self._engine.get_tensor_dtype(tname)))
            if any(d < 0 for d in shape):
                raise EngineError(f"{name}: tensor {tname!r} has dynamic shape {shape}")
            spec = TensorSpec(tname, dtype.name, shape)
            is_input = self._engine.get_tensor_mode(tname) == _trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(spec)
            buf = _DeviceBuffer(int(np.prod(shape)) * dtype.itemsize)
            self._buffers[tname] = buf
            self._context.set_tensor_address(tname, buf.ptr)
        self._inputs = tuple(inputs)
        self._outputs = tuple(outputs)
        self._stream = _cuda(_cudart.cudaStreamCreate())
        self._events = (_cuda(_cudart.cudaEventCreate()), _cuda(_cudart.cudaEventCreate()))

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Input specs in engine order."""
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Output specs in engine order."""
        return self._outputs

    def _execute(self) -> None:
        if not self._context.execute_async_v3(int(self._stream)):
            raise EngineError(f"{self.name}: execute_async_v3 failed")

    def _capture_graph(self) -> None:
        # TensorRT defers some setup to the first enqueue; that must not land in the graph.
        self._execute()
        _cuda(_cudart.cudaStreamSynchronize(self._stream))
        mode = _cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _cuda(_cudart.cudaStreamBeginCapture(self._stream, mode))
        try:
            self._execute()
        finally:
            # Always end the capture, or the stream stays unusable after a failed enqueue.
            graph = _cuda(_cudart.cudaStreamEndCapture(self._stream))
        self._graph_exec = _cuda(_cudart.cudaGraphInstantiate(graph, 0))
        _cuda(_cudart.cudaGraphDestroy(graph))

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copies inputs to the device, executes, copies outputs back.

        Raises:
            EngineError: input validation (as :func:`check_inputs`), a CUDA or TensorRT failure.
        """
        feed = check_inputs(self.name, self._inputs, inputs)
        # The runtime API's current device is per host thread, and the pipeline runs its lidar
        # branch on a thread of its own (pipeline.parallel_branches).
        _cuda(_cudart.cudaSetDevice(self.device_id))
        h2d = _cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = _cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        # Host arrays must outlive the async copies: keep references until the sync below.
        hosts = {n: np.ascontiguousarray(a) for n, a in feed.items()}
        if self._events is None:
            raise EngineError(f"{self.name}: the engine was closed")
        start, end = self._events
        _cuda(_cudart.cudaEventRecord(start, self._stream))
        for name, host in hosts.items():
            _cuda(
                _cudart.cudaMemcpyAsync(
                    self._buffers[name].ptr, host.ctypes.data, host.nbytes, h2d, self._stream
                )
            )
        if self.use_cuda_graph and self._graph_exec is None:
            try:
                self._capture_graph()
            except EngineError as exc:
                _log.warning("%s: CUDA graph capture failed (%s); running without", self.name, exc)
                self.use_cuda_graph = False
        if self.use_cuda_graph:
            _cuda(_cudart.cudaGraphLaunch(self._graph_exec, self._stream))
        else:
            self._execute()
        _cuda(_cudart.cudaEventRecord(end, self._stream))
        results = {s.name: np.empty(s.static_shape(), dtype=s.dtype) for s in self._outputs}
        for name, out in results.items():
            _cuda(
                _cudart.cudaMemcpyAsync(
                    out.ctypes.data, self._buffers[name].ptr, out.nbytes, d2h, self._stream
                )
            )
        _cuda(_cudart.cudaStreamSynchronize(self._stream))
        elapsed_ms = float(_cuda(_cudart.cudaEventElapsedTime(start, end)))
        self.last_gpu_ns = round(elapsed_ms * 1e6)
        return results

    def warmup(self, iterations: int = 1) -> None:
        """Runs ``iterations`` batches of zeros (the first also captures the CUDA graph).

        Raises:
            EngineError: ``iterations`` < 0, or a run fails.
        """
        run_warmup(self, iterations)

    def describe(self) -> EngineDescription:
        """Backend ``tensorrt``, the CUDA device, build precision, TensorRT version."""
        return EngineDescription(
            backend="tensorrt",
            device=f"cuda:{self.device_id}",
            precision=self.precision,
            model=self.name,
            extra=(
                ("cuda_graph", str(self.use_cuda_graph)),
                ("version", str(_trt.__version__)),
            ),
        )

    def close(self) -> None:
        """Frees the CUDA graph, events, stream and device buffers (idempotent)."""
        if self._events is not None:
            for event in self._events:
                _cudart.cudaEventDestroy(event)
            self._events = None
        if self._graph_exec is not None:
            _cudart.cudaGraphExecDestroy(self._graph_exec)
            self._graph_exec = None
        if self._stream is not None:
            _cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        for buf in self._buffers.values():
            buf.free()
        self._buffers.clear()

    def __enter__(self) -> TensorRTEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def engine_cache_key(
    onnx_path: Path, options: BuildOptions, device: DeviceInfo, *, name: str | None = None
) -> EngineCacheKey:
    """The cache key of ``onnx_path`` built with ``options`` on ``device``: ONNX sha256, TensorRT
    version, GPU, precision, input shapes and builder options (``name``: default the file stem,
    made a valid entry name).

    Raises:
        ModelError: the ONNX file is missing or invalid.
        EngineError: an input with a dynamic shape, or an invalid name.
    """
    onnx_path = Path(onnx_path)
    specs = onnx_input_specs(onnx_path)
    try:
        digest = file_sha256(onnx_path)
    except OSError as exc:
        raise ModelError(f"{onnx_path}: cannot read model: {exc}") from exc
    return EngineCacheKey.create(
        model_name=name or _entry_name(onnx_path.stem),
        onnx_sha256=digest,
        device=device,
        precision=options.precision,
        input_shapes={s.name: s.static_shape() for s in specs},
        builder_options=options.key_options(),
    )


def _entry_name(stem: str) -> str:
    """A cache entry name for an ONNX file's stem: the cache names its files with letters,
    digits and ``_.+-`` only, and a file named otherwise (``front camera.onnx``, ``détecteur``)
    could not be built at all. The name only labels the entry (the digest tells entries
    apart), so the other characters become ``_``, and a long one is cut to leave room in a file
    name (255 bytes) for the digest and the suffixes."""
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", stem)[:_MAX_ENTRY_NAME]
    return name if name[:1].isascii() and name[:1].isalnum() else f"model{name}"


def load_or_build_engine(
    onnx_path: Path,
    *,
    name: str | None = None,
    options: BuildOptions | None = None,
    cache_dir: Path | None = None,
    device: DeviceInfo | None = None,
    calibration_batches: Callable[[], Iterable[Mapping[str, np.ndarray]]] | None = None,
    calibration_cache: Path | None = None,
    use_cuda_graph: bool = False,
    device_id: int = 0,
) -> TensorRTEngine:
    """A :class:`TensorRTEngine` for ``onnx_path``, from the engine cache or freshly built.

    Stale cache entries (another TensorRT version, GPU, precision, shapes or ONNX file) are
    reported and rebuilt by :meth:`EngineCache.get_or_build`; a cached engine that TensorRT
    refuses to load anyway (a damaged file of the right size) is reported, removed and rebuilt
    once.

    Raises:
        EngineError: TensorRT missing, build or load failure.
        ModelError: the ONNX file is missing or invalid.
    """
    require_tensorrt()
    onnx_path = Path(onnx_path)
    options = options or BuildOptions()
    cache = EngineCache(cache_dir or DEFAULT_ENGINE_CACHE_DIR)
    device = device or query_device_info(device_id)
    key = engine_cache_key(onnx_path, options, device, name=name)

    def build() -> bytes:
        return build_serialized_engine(
            onnx_path,
            options,
            calibration_batches=calibration_batches() if calibration_batches else None,
            calibration_cache=calibration_cache,
            timing_cache=timing_cache_path(cache.directory, device),
        )

    def load(path: Path) -> TensorRTEngine:
        return TensorRTEngine(
            path,
            name=key.model_name,
            precision=options.precision,
            use_cuda_graph=use_cuda_graph,
            device_id=device_id,
        )

    entry, status = cache.get_or_build(key, build)
    try:
        return load(entry.engine_path)
    except _UnloadableEngineError as exc:
        if status != "cached":
            raise
        _log.warning("rebuilding %s: the cached engine does not load (%s)", key.model_name, exc)
        cache.remove(entry)
    entry, _ = cache.get_or_build(key, build)
    return load(entry.engine_path)
