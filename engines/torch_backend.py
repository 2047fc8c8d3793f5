"""torch backend: runs the project's own ``torch.nn.Module`` graphs on CUDA when present, else CPU.

The module's ``forward`` takes one tensor per input spec, positionally in spec order, and returns
one tensor (one output spec) or a tuple/list of tensors in output-spec order. The same module is
exported to ONNX with :func:`export_onnx` (static shapes) so every backend runs the same graph.
On CUDA each run is timed with CUDA events (:attr:`TorchEngine.last_gpu_ns`).
"""

from __future__ import annotations

import logging
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

    Raises:
        EngineError: empty or duplicate specs, or an unusable device.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        *,
        device: str = "auto",
        name: str | None = None,
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
        try:
            # The events bracket the host-to-device copies too, as the TensorRT engine's do.
            with torch.inference_mode(), cuda_event_time(self.device) as gpu:
                args = [
                    torch.from_numpy(np.ascontiguousarray(feed[s.name])).to(self.device)
                    for s in self._inputs
                ]
                result = self.module(*args)
        except Exception as exc:  # any error inside user graphs is reported as an engine error
            raise EngineError(f"{self.name}: forward failed: {exc}") from exc
        self.last_gpu_ns = gpu.ns
        tensors = list(result) if isinstance(result, tuple | list) else [result]
        if len(tensors) != len(self._outputs):
            raise EngineError(
                f"{self.name}: forward returned {len(tensors)} tensors, "
                f"expected {len(self._outputs)} ({format_specs(self._outputs)})"
            )
        out: dict[str, np.ndarray] = {}
        for spec, tensor in zip(self._outputs, tensors, strict=True):
            if not isinstance(tensor, torch.Tensor):
                raise EngineError(f"{self.name}: output {spec.name!r} is not a tensor")
            arr = tensor.detach().cpu().numpy()
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
