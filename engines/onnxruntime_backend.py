"""ONNX Runtime backend: one InferenceSession behind named, typed tensor specs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from engines.errors import EngineError, ModelError

__all__ = ["OnnxRuntimeEngine", "TensorSpec"]

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


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor of a model.

    ``dtype`` is a numpy dtype name (``"float32"``); ``shape`` holds ints for static dimensions
    and strings for symbolic (dynamic) ones.
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def matches_shape(self, shape: tuple[int, ...]) -> bool:
        """True when ``shape`` has this rank and equals every static dimension."""
        if len(shape) != len(self.shape):
            return False
        return all(isinstance(d, str) or d == s for d, s in zip(self.shape, shape, strict=True))


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


class OnnxRuntimeEngine:
    """Runs one ONNX model with ONNX Runtime.

    Args:
        model_path: the ``.onnx`` file.
        num_threads: intra-op thread count; ``None`` lets ONNX Runtime choose.
        providers: execution providers in order of preference; those not in this ONNX Runtime
            build are skipped, and the ones actually used are in :attr:`providers_in_use`.

    Raises:
        ModelError: the file is missing, unreadable or not a valid ONNX model
            (message ``"<path>: <problem>"``).
        EngineError: none of ``providers`` is available, or ``num_threads`` < 1.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        num_threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.exists():
            raise ModelError(f"{self.model_path}: model file not found")
        if not self.model_path.is_file():
            raise ModelError(f"{self.model_path}: not a regular file")
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
        if num_threads is not None:
            if num_threads < 1:
                raise EngineError(f"{self.model_path}: num_threads must be >= 1, got {num_threads}")
            options.intra_op_num_threads = num_threads
        try:
            self._session = ort.InferenceSession(
                model_bytes, sess_options=options, providers=usable
            )
        except Exception as exc:  # ORT raises its own untyped exception classes
            raise ModelError(f"{self.model_path}: invalid ONNX model: {_one_line(exc)}") from exc
        self.inputs: tuple[TensorSpec, ...] = tuple(_spec(a) for a in self._session.get_inputs())
        self.outputs: tuple[TensorSpec, ...] = tuple(_spec(a) for a in self._session.get_outputs())
        self._output_names = [o.name for o in self.outputs]

    @property
    def providers_in_use(self) -> tuple[str, ...]:
        """Execution providers the session actually uses, in priority order."""
        return tuple(self._session.get_providers())

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
        expected = {s.name for s in self.inputs}
        extra = sorted(set(inputs) - expected)
        if extra:
            raise EngineError(f"{self.model_path.name}: unexpected input(s) {extra}")
        feed: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            if spec.name not in inputs:
                raise EngineError(f"{self.model_path.name}: missing input {spec.name!r}")
            arr = inputs[spec.name]
            if not isinstance(arr, np.ndarray):
                raise EngineError(
                    f"{self.model_path.name}: input {spec.name!r} must be a numpy array, "
                    f"got {type(arr).__name__}"
                )
            if arr.dtype.name != spec.dtype:
                raise EngineError(
                    f"{self.model_path.name}: input {spec.name!r} has dtype {arr.dtype.name}, "
                    f"expected {spec.dtype}"
                )
            if not spec.matches_shape(arr.shape):
                raise EngineError(
                    f"{self.model_path.name}: input {spec.name!r} has shape {arr.shape}, "
                    f"expected {spec.shape}"
                )
            feed[spec.name] = arr
        try:
            results = self._session.run(self._output_names, feed)
        except Exception as exc:  # ORT raises its own untyped exception classes
            raise EngineError(
                f"{self.model_path.name}: inference failed: {_one_line(exc)}"
            ) from exc
        return {name: np.asarray(r) for name, r in zip(self._output_names, results, strict=True)}

    def describe(self) -> str:
        """A one-line summary: model file, providers and tensor specs."""

        def fmt(specs: tuple[TensorSpec, ...]) -> str:
            return ", ".join(
                f"{s.name}:{s.dtype}[{'x'.join(str(d) for d in s.shape)}]" for s in specs
            )

        return (
            f"onnxruntime {ort.__version__} {self.model_path.name} "
            f"providers={','.join(self.providers_in_use)} "
            f"inputs=({fmt(self.inputs)}) outputs=({fmt(self.outputs)})"
        )
