"""ONNX Runtime backend: one InferenceSession behind named, typed tensor specs.

CPU is the default. With ``providers=CUDA_PROVIDERS`` the CUDA execution provider is requested
when this ONNX Runtime build has it (:func:`cuda_provider_available`); the providers actually in
use are read back from the session afterwards, because onnxruntime-gpu lists CUDA as available
even when its libraries are missing and the session silently falls back to the CPU. (TensorRT
runs through the native backend, ``engines.tensorrt_backend``, not ONNX Runtime's TensorRT
provider: that one has no engine cache of ours.)
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import psutil  # type: ignore[import-untyped]

from engines.engine import EngineDescription, TensorSpec, check_inputs, format_specs, run_warmup
from engines.errors import EngineError, ModelError
from engines.settings import MAX_THREADS

__all__ = [
    "CPU_PROVIDERS",
    "CUDA_PROVIDERS",
    "OnnxRuntimeEngine",
    "cuda_provider_available",
    "default_threads",
    "device_for_providers",
]

_log = logging.getLogger(__name__)

CPU_PROVIDERS: tuple[str, ...] = ("CPUExecutionProvider",)
# CUDA first, CPU last so a session always has a fallback (which the factory then checks for).
CUDA_PROVIDERS: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
_CUDA_PROVIDERS = frozenset({"TensorrtExecutionProvider", "CUDAExecutionProvider"})

# ONNX Runtime reports element types as "tensor(<onnx type>)"; map them to numpy dtype names.
_ORT_TO_NUMPY: dict[str, str] = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


def default_threads() -> int:
    """The intra-op thread count for a session given none: what ONNX Runtime chooses (one per
    physical core), but no more than the CPUs this process may run on."""
    # Linux tells which CPUs this process may run on; elsewhere every CPU counts.
    affinity = getattr(os, "sched_getaffinity", None)
    allowed = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or allowed
    return max(1, min(allowed, physical))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _spec(arg: Any) -> TensorSpec:
    dims: list[int | str] = []
    for i, d in enumerate(arg.shape or ()):
        # ONNX Runtime gives None for unnamed dynamic dims; give them a stable symbolic name.
        dims.append(d if isinstance(d, int) else (str(d) if d is not None else f"dim{i}"))
    dtype = _ORT_TO_NUMPY.get(str(arg.type), str(arg.type))
    return TensorSpec(name=str(arg.name), dtype=dtype, shape=tuple(dims))


def cuda_provider_available() -> bool:
    """True when ONNX Runtime's CUDA execution provider is usable here: this build has it
    (onnxruntime-gpu) and a session really takes it. Listed is not enough: without the CUDA
    libraries or a device, ONNX Runtime silently runs a CUDA session on the CPU."""
    return "CUDAExecutionProvider" in ort.get_available_providers() and _cuda_session_works()


@functools.cache
def _cuda_session_works() -> bool:
    """Whether a CUDA session really runs on CUDA: probed once per process, on the packaged
    lidar encoder."""
    from engines.registry import PACKAGED_MODELS_DIR  # noqa: PLC0415 - the probe only

    try:
        session = ort.InferenceSession(
            str(PACKAGED_MODELS_DIR / "lidar_encoder.onnx"),
            providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
        )
    except Exception:  # any failure to take CUDA means: not usable
        return False
    return bool(session.get_providers()[:1] == ["CUDAExecutionProvider"])


def device_for_providers(providers_in_use: Sequence[str], device_id: int = 0) -> str:
    """``"cuda:<id>"`` when the highest-priority provider in use runs on CUDA, else ``"cpu"``."""
    if providers_in_use and providers_in_use[0] in _CUDA_PROVIDERS:
        return f"cuda:{device_id}"
    return "cpu"


class OnnxRuntimeEngine:
    """Runs one ONNX model with ONNX Runtime; implements :class:`engines.engine.Engine`.

    Args:
        model_path: the ``.onnx`` file.
        num_threads: intra-op thread count; ``None``: `default_threads`, the count ONNX Runtime
            would choose, given explicitly (left to choose, it also pins its threads).
        providers: execution providers in order of preference (default CPU only); those not in
            this ONNX Runtime build are skipped, and the ones actually used are in
            :attr:`providers_in_use`. A requested accelerator the session did not take is logged
            as a warning.
        device_id: CUDA device for the CUDA/TensorRT providers.
        allow_spinning: let idle intra-op threads spin-wait (ONNX Runtime's default): lower
            latency for a lone session on idle cores, wasted CPU when sessions share cores.
        memory_arena: keep the CPU buffers of a run for the next (ONNX Runtime's default);
            without, each run allocates and frees them (for sessions that each would keep
            large buffers sized to their own graph, such as the lidar encoder's buckets).

    Raises:
        ModelError: the file is missing, unreadable or not a valid ONNX model
            (message ``"<path>: <problem>"``).
        EngineError: none of ``providers`` is available, or ``num_threads`` is not from 1 to
            `engines.settings.MAX_THREADS`.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        num_threads: int | None = None,
        providers: Sequence[str] = CPU_PROVIDERS,
        device_id: int = 0,
        allow_spinning: bool = False,
        memory_arena: bool = True,
    ) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.exists():
            raise ModelError(f"{self.model_path}: model file not found")
        if not self.model_path.is_file():
            raise ModelError(f"{self.model_path}: not a regular file")
        if num_threads is not None and not 1 <= num_threads <= MAX_THREADS:
            raise EngineError(
                f"{self.model_path}: num_threads must be from 1 to {MAX_THREADS}, got {num_threads}"
            )
        try:
            model_bytes = self.model_path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{self.model_path}: cannot read model: {_one_line(exc)}") from exc
        # Providers missing from this build (e.g. CUDA on a CPU wheel) are skipped rather than
        # fatal, so one config serves GPU and CPU hosts; callers check providers_in_use.
        available = set(ort.get_available_providers())
        usable = [p for p in providers if p in available]
        if not usable:
            raise EngineError(
                f"{self.model_path}: none of the execution providers {list(providers)} is "
                f"available (available: {sorted(available)})"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = memory_arena
        # Left to choose (0), ONNX Runtime also pins each pool thread to a core: beside the
        # node's other threads a pinned thread waits for its busy core while another is idle.
        options.intra_op_num_threads = num_threads or default_threads()
        if not allow_spinning:
            # Idle pool threads spin-wait by default. With the camera, lidar and fusion sessions
            # each owning a pool, and the receiver thread, on a 2-core machine that tripled the
            # CPU per frame (60 -> 180-210 ms) and the frame time (80-110 -> 190-450 ms).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.num_threads = num_threads
        self._threads = options.intra_op_num_threads
        self._device_id = device_id
        #: ONNX Runtime gives no device timing: always None (see Engine.last_gpu_ns).
        self.last_gpu_ns: int | None = None
        provider_args: list[str | tuple[str, dict[str, Any]]] = [
            (p, {"device_id": device_id}) if p in _CUDA_PROVIDERS else p for p in usable
        ]
        try:
            self._session = ort.InferenceSession(
                model_bytes, sess_options=options, providers=provider_args
            )
        except Exception as exc:  # ORT raises its own untyped exception classes
            raise ModelError(f"{self.model_path}: invalid ONNX model: {_one_line(exc)}") from exc
        self._inputs = tuple(_spec(a) for a in self._session.get_inputs())
        self._outputs = tuple(_spec(a) for a in self._session.get_outputs())
        self._output_names = [o.name for o in self._outputs]
        # Listing a provider is no proof it loaded (missing libcudnn etc.): say so loudly.
        dropped = [p for p in usable if p in _CUDA_PROVIDERS and p not in self.providers_in_use]
        if dropped:
            _log.warning(
                "%s: ONNX Runtime fell back from %s to %s (the provider libraries did not load)",
                self.model_path.name,
                ",".join(dropped),
                ",".join(self.providers_in_use),
            )

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Input specs in the model's order."""
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Output specs in the model's order."""
        return self._outputs

    @property
    def providers_in_use(self) -> tuple[str, ...]:
        """Execution providers the session actually uses, in priority order."""
        return tuple(self._session.get_providers())

    @property
    def device(self) -> str:
        """``"cuda:<id>"`` or ``"cpu"``, from the provider actually in use."""
        return device_for_providers(self.providers_in_use, self._device_id)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the model once.

        Args:
            inputs: one array per input spec, keyed by name, with the spec's dtype and shape.

        Returns:
            The outputs keyed by name.

        Raises:
            EngineError: a missing/unexpected input name, a wrong dtype or shape, or a runtime
                failure; the message names the model and the tensor.
        """
        feed = check_inputs(self.model_path.name, self._inputs, inputs)
        try:
            results = self._session.run(self._output_names, feed)
        except Exception as exc:  # ORT raises its own untyped exception classes
            raise EngineError(
                f"{self.model_path.name}: inference failed: {_one_line(exc)}"
            ) from exc
        return {name: np.asarray(r) for name, r in zip(self._output_names, results, strict=True)}

    def warmup(self, iterations: int = 1) -> None:
        """Runs ``iterations`` batches of zeros.

        Raises:
            EngineError: ``iterations`` < 0, or a run fails.
        """
        run_warmup(self, iterations)

    def describe(self) -> EngineDescription:
        """Backend, device from the provider in use, precision and tensor specs.

        ``str()`` of the result is a one-line summary naming the model file.
        """
        precision = "fp16" if any(s.dtype == "float16" for s in self._inputs) else "fp32"
        return EngineDescription(
            backend="onnxruntime",
            device=self.device,
            precision=precision,
            model=self.model_path.name,
            providers=self.providers_in_use,
            extra=(
                ("inputs", f"({format_specs(self._inputs)})"),
                ("outputs", f"({format_specs(self._outputs)})"),
                ("threads", f"{self._threads}" + ("" if self.num_threads else " (auto)")),
                ("version", str(ort.__version__)),
            ),
        )
