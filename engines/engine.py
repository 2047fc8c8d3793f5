"""The ``Engine`` interface every backend implements, and the tensor specs it is described by.

An engine has named inputs and outputs with a numpy dtype and a (static, for the project's own
graphs) shape, runs one batch with :meth:`Engine.run`, can be warmed up, describes itself
(backend, device, precision) so benchmarks and logs say what actually ran, and reports the GPU
time of its last run where it can measure it (CUDA events; ``None`` elsewhere).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from engines.errors import EngineError

__all__ = [
    "PRECISIONS",
    "Engine",
    "EngineDescription",
    "TensorSpec",
    "check_inputs",
    "format_specs",
    "require_specs",
    "run_warmup",
    "zero_inputs",
]

# Numeric precisions an engine can run in; "fp32" is every backend's default.
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")


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

    @property
    def is_static(self) -> bool:
        """True when every dimension is a fixed int."""
        return all(isinstance(d, int) for d in self.shape)

    def static_shape(self) -> tuple[int, ...]:
        """The shape as ints.

        Raises:
            EngineError: a dimension is symbolic.
        """
        if not self.is_static:
            raise EngineError(f"tensor {self.name!r} has a dynamic shape {self.shape}")
        return tuple(int(d) for d in self.shape)

    def __str__(self) -> str:
        return f"{self.name}:{self.dtype}[{'x'.join(str(d) for d in self.shape)}]"


def format_specs(specs: Sequence[TensorSpec]) -> str:
    """``"a:float32[1x3], b:int32[4]"`` for logs and descriptions."""
    return ", ".join(str(s) for s in specs)


@dataclass(frozen=True)
class EngineDescription:
    """What an engine actually runs on.

    ``backend`` is ``"onnxruntime"``, ``"tensorrt"`` or ``"torch"``; ``device`` is ``"cpu"`` or
    ``"cuda:<index>"`` as in use (not as requested); ``precision`` is one of :data:`PRECISIONS`;
    ``providers`` lists ONNX Runtime execution providers in use (empty for other backends);
    ``extra`` holds backend-specific facts as sorted ``(key, value)`` pairs.
    """

    backend: str
    device: str
    precision: str
    model: str = ""
    providers: tuple[str, ...] = ()
    extra: tuple[tuple[str, str], ...] = field(default=())

    def __str__(self) -> str:
        parts = [self.backend, self.model, f"device={self.device}", f"precision={self.precision}"]
        if self.providers:
            parts.append(f"providers={','.join(self.providers)}")
        parts.extend(f"{k}={v}" for k, v in self.extra)
        return " ".join(p for p in parts if p)


@runtime_checkable
class Engine(Protocol):
    """One compiled/loaded model behind named, typed tensors."""

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Input specs in the model's order."""
        ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Output specs in the model's order."""
        ...

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs one batch.

        Raises:
            EngineError: a missing/unexpected input, wrong dtype or shape, or a runtime failure.
        """
        ...

    def warmup(self, iterations: int = 1) -> None:
        """Runs ``iterations`` batches of zeros so the first real frame is not slow.

        Raises:
            EngineError: ``iterations`` < 0, or a run fails.
        """
        ...

    def describe(self) -> EngineDescription:
        """Backend, device and precision actually in use."""
        ...

    @property
    def last_gpu_ns(self) -> int | None:
        """GPU time of the last :meth:`run` in nanoseconds, from CUDA events recorded around the
        device work; ``None`` for engines that cannot time it (CPU, ONNX Runtime).

        A host clock around an asynchronous launch measures the launch, not the kernels, so
        this is what the node reports as the ``<stage>_gpu`` timing.
        """
        ...


def check_inputs(
    model: str, specs: Sequence[TensorSpec], inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Validates ``inputs`` against ``specs``; returns them in spec order.

    Raises:
        EngineError: a missing or unexpected name, a non-array, a wrong dtype or shape; the
            message names ``model`` and the tensor.
    """
    expected = {s.name for s in specs}
    extra = sorted(set(inputs) - expected)
    if extra:
        raise EngineError(f"{model}: unexpected input(s) {extra}")
    feed: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.name not in inputs:
            raise EngineError(f"{model}: missing input {spec.name!r}")
        arr = inputs[spec.name]
        if not isinstance(arr, np.ndarray):
            raise EngineError(
                f"{model}: input {spec.name!r} must be a numpy array, got {type(arr).__name__}"
            )
        if arr.dtype.name != spec.dtype:
            raise EngineError(
                f"{model}: input {spec.name!r} has dtype {arr.dtype.name}, expected {spec.dtype}"
            )
        if not spec.matches_shape(arr.shape):
            raise EngineError(
                f"{model}: input {spec.name!r} has shape {arr.shape}, expected {spec.shape}"
            )
        feed[spec.name] = arr
    return feed


def require_specs(
    name: str,
    engine: Engine,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
) -> None:
    """Checks that ``engine`` has exactly these input and output tensors (by name; order free,
    as backends may list them differently).

    Raises:
        EngineError: a tensor is missing, extra, or has another dtype or shape; the message
            names ``name``, the engine's model and both spec lists.
    """
    for kind, want, got in (
        ("inputs", inputs, engine.inputs),
        ("outputs", outputs, engine.outputs),
    ):
        if {s.name: s for s in want} != {s.name: s for s in got}:
            raise EngineError(
                f"{name}: the engine {engine.describe().model or '?'} has {kind} "
                f"({format_specs(got)}), expected ({format_specs(want)}); was it exported for "
                "another config?"
            )


def zero_inputs(specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Zeros for every spec; symbolic dimensions become 1 (the smallest valid batch)."""
    return {
        s.name: np.zeros(tuple(d if isinstance(d, int) else 1 for d in s.shape), dtype=s.dtype)
        for s in specs
    }


def run_warmup(engine: Engine, iterations: int) -> None:
    """Shared :meth:`Engine.warmup` body.

    Raises:
        EngineError: ``iterations`` < 0, or a run fails.
    """
    if iterations < 0:
        raise EngineError(f"warmup iterations must be >= 0, got {iterations}")
    feed = zero_inputs(engine.inputs)
    for _ in range(iterations):
        engine.run(feed)
