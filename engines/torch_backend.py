"""torch backend: runs the project's own ``torch.nn.Module`` graphs on CUDA when present, else CPU.

The module's ``forward`` takes one tensor per input spec, positionally in spec order, and returns
one tensor (one output spec) or a tuple/list of tensors in output-spec order. The same module is
exported to ONNX with :func:`export_onnx` (static shapes) so every backend runs the same graph.
On CUDA each run is timed with CUDA events (:attr:`TorchEngine.last_gpu_ns`).

On CUDA the module is captured into a CUDA graph on its first run and replayed after: the
project's graphs are static-shaped and made of many small kernels (the geometric fusion engine
launches hundreds), which the host launches slower than an H200 runs them -- measured there,
the fusion engine spent 25 ms of GPU time per frame mostly waiting for launches. A module that
cannot be captured runs eagerly, with a warning. The torch engines of one process take turns on
the GPU (one lock): a capture must not see another thread's launches.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from engines.engine import EngineDescription, TensorSpec, check_inputs, format_specs, run_warmup
from engines.errors import EngineError
from engines.gpu_timing import cuda_event_time
from engines.onnx_ops import export_static_onnx

__all__ = ["TorchEngine", "export_onnx", "resolve_torch_device"]

_log = logging.getLogger(__name__)

# One for the process: a CUDA graph capture fails if another thread launches meanwhile, and the
# engines' runs are short enough on the GPU that taking turns costs less than it would save.
_CUDA_LOCK = threading.Lock()
# Eager runs before the capture, on a side stream, as torch asks (lazy initialisation, cuBLAS
# workspaces and the caching allocator settle there, not inside the graph).
_CAPTURE_WARMUP_RUNS = 2


def resolve_torch_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available else ``cpu``; otherwise ``torch.device(device)``.

    Raises:
        EngineError: an unparsable device, or ``cuda`` requested without CUDA.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise EngineError(f"invalid torch device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"torch device {device!r} requested but CUDA is not available")
    return dev


class TorchEngine:
    """Runs a ``torch.nn.Module`` behind tensor specs; implements :class:`engines.engine.Engine`.

    Args:
        module: the graph (put in eval mode and moved to the device; not copied).
        inputs: input specs, in ``forward`` argument order.
        outputs: output specs, in ``forward`` result order.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        name: model name for messages and :meth:`describe`.
        cuda_graph: on CUDA, capture the module into a CUDA graph on the first run and replay
            it (default :attr:`CUDA_GRAPHS`); ignored on the CPU.

    Raises:
        EngineError: empty or duplicate specs, or an unusable device.
    """

    #: Whether engines capture CUDA graphs unless told otherwise (a benchmark compares both).
    CUDA_GRAPHS = True

    def __init__(
        self,
        module: torch.nn.Module,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        *,
        device: str = "auto",
        name: str | None = None,
        cuda_graph: bool | None = None,
    ) -> None:
        self.name = name or type(module).__name__
        if not inputs or not outputs:
            raise EngineError(f"{self.name}: a torch engine needs input and output specs")
        names = [s.name for s in (*inputs, *outputs)]
        if len(set(names)) != len(names):
            raise EngineError(f"{self.name}: duplicate tensor names in {names}")
        self._inputs = tuple(inputs)
        self._outputs = tuple(outputs)
        self.device = resolve_torch_device(device)
        self.module = module.eval().to(self.device)
        #: GPU time of the last run from CUDA events; None off CUDA (see Engine.last_gpu_ns).
        self.last_gpu_ns: int | None = None
        use_graph = self.CUDA_GRAPHS if cuda_graph is None else cuda_graph
        # A graph replays fixed shapes: the project's graphs have only static ones.
        static = all(s.is_static for s in self._inputs)
        self._graph_wanted = use_graph and static and self.device.type == "cuda"
        self._graph: _CapturedGraph | None = None

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Input specs in ``forward`` argument order."""
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Output specs in ``forward`` result order."""
        return self._outputs

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs ``forward`` under ``torch.inference_mode``.

        Raises:
            EngineError: input validation (as :func:`check_inputs`), a failure inside the module,
                or outputs whose count, dtype or shape differ from the output specs.
        """
        feed = check_inputs(self.name, self._inputs, inputs)
        arrays = [np.ascontiguousarray(feed[s.name]) for s in self._inputs]
        if self.device.type != "cuda":
            tensors = self._forward(arrays)
        else:
            with _CUDA_LOCK:
                if self._graph_wanted and self._graph is None:
                    self._graph = self._capture(arrays)
                tensors = self._forward(arrays)
        return self._outputs_of(tensors)

    def _forward(self, arrays: list[np.ndarray]) -> list[object]:
        """The module on `arrays` (replayed from its CUDA graph when captured), outputs on the
        host."""
        try:
            # The events bracket the host-to-device copies too, as the TensorRT engine's do.
            with torch.inference_mode(), cuda_event_time(self.device) as gpu:
                if self._graph is not None:
                    result = self._graph.replay(arrays)
                else:
                    args = [torch.from_numpy(a).to(self.device) for a in arrays]
                    result = self.module(*args)
                tensors = list(result) if isinstance(result, tuple | list) else [result]
                # Copied out inside the timing, as the engine's caller gets them.
                host = [t.detach().cpu() if isinstance(t, torch.Tensor) else t for t in tensors]
        except Exception as exc:  # any error inside user graphs is reported as an engine error
            raise EngineError(f"{self.name}: forward failed: {exc}") from exc
        self.last_gpu_ns = gpu.ns
        return host

    def _capture(self, arrays: list[np.ndarray]) -> _CapturedGraph | None:
        """The module captured into a CUDA graph on inputs shaped as `arrays`; None (eager
        runs from then on, with a warning) when it cannot be captured."""
        self._graph_wanted = False
        try:
            return _CapturedGraph(self.module, arrays, self.device)
        except Exception as exc:  # torch raises many types for an uncapturable module
            _log.warning("%s: runs eagerly, the CUDA graph capture failed: %s", self.name, exc)
            return None

    @property
    def capture_pending(self) -> bool:
        """Whether the next run captures a CUDA graph (longer than a replay: warm up first)."""
        return self._graph_wanted and self._graph is None

    @property
    def graph_captured(self) -> bool:
        """Whether runs replay a captured CUDA graph (after the first run on CUDA)."""
        return self._graph is not None

    def _outputs_of(self, tensors: list[object]) -> dict[str, np.ndarray]:
        if len(tensors) != len(self._outputs):
            raise EngineError(
                f"{self.name}: forward returned {len(tensors)} tensors, "
                f"expected {len(self._outputs)} ({format_specs(self._outputs)})"
            )
        out: dict[str, np.ndarray] = {}
        for spec, tensor in zip(self._outputs, tensors, strict=True):
            if not isinstance(tensor, torch.Tensor):
                raise EngineError(f"{self.name}: output {spec.name!r} is not a tensor")
            arr = tensor.numpy()
            if arr.dtype.name != spec.dtype or not spec.matches_shape(arr.shape):
                raise EngineError(
                    f"{self.name}: output {spec.name!r} is {arr.dtype.name}{list(arr.shape)}, "
                    f"expected {spec}"
                )
            out[spec.name] = arr
        return out

    def warmup(self, iterations: int = 1) -> None:
        """Runs ``iterations`` batches of zeros (CUDA kernels load on the first).

        Raises:
            EngineError: ``iterations`` < 0, or a run fails.
        """
        run_warmup(self, iterations)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def describe(self) -> EngineDescription:
        """Backend ``torch``, the device in use (with the GPU name on CUDA), fp32."""
        extra: list[tuple[str, str]] = [("version", torch.__version__)]
        device = str(self.device)
        if self.device.type == "cuda":
            index = self.device.index if self.device.index is not None else 0
            device = f"cuda:{index}"
            extra.append(("gpu", torch.cuda.get_device_name(index)))
        else:
            extra.append(("threads", str(torch.get_num_threads())))
        return EngineDescription(
            backend="torch", device=device, precision="fp32", model=self.name, extra=tuple(extra)
        )


def export_onnx(
    module: torch.nn.Module,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    path: Path,
    *,
    opset: int = 17,
) -> Path:
    """Exports ``module`` to ONNX with static shapes and the specs' tensor names.

    Uses the TorchScript exporter (``dynamo=False``): it needs no extra packages and gives
    plain static-shape graphs that ONNX Runtime and TensorRT both take.

    Raises:
        EngineError: a spec with a dynamic shape, or the export fails.
    """
    example = tuple(torch.zeros(s.static_shape(), dtype=getattr(torch, s.dtype)) for s in inputs)
    try:
        export_static_onnx(
            module.cpu(),
            example,
            path,
            [s.name for s in inputs],
            [s.name for s in outputs],
            opset=opset,
        )
    except Exception as exc:  # the exporter raises many unrelated types
        raise EngineError(f"{Path(path).name}: ONNX export failed: {exc}") from exc
    _log.info("exported %s to %s", type(module).__name__, path)
    return Path(path)


class _CapturedGraph:
    """A module captured into a CUDA graph with static input buffers: a replay copies the
    inputs into them and reruns the recorded kernels; the outputs are the graph's own tensors
    (valid until the next replay)."""

    def __init__(self, module: torch.nn.Module, arrays: list[np.ndarray], device: torch.device):
        with torch.inference_mode():
            self.inputs = [torch.from_numpy(a).to(device) for a in arrays]
            side = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(_CAPTURE_WARMUP_RUNS):
                    module(*self.inputs)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.outputs = module(*self.inputs)

    def replay(self, arrays: list[np.ndarray]) -> object:
        for buffer, a in zip(self.inputs, arrays, strict=True):
            buffer.copy_(torch.from_numpy(a))
        self.graph.replay()
        return self.outputs
