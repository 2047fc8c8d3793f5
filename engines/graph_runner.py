"""What the runners of the project's own graphs (lidar encoder, fusion engine) share: the same
graph either as its ONNX export on ONNX Runtime or as the torch module on a torch device, fed
numpy arrays by input name, with CUDA-event timing of the torch path on a GPU.

torch is imported only when the torch backend is used: the runtime install has none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from engines.onnxruntime_backend import OnnxRuntimeEngine

__all__ = ["Backend", "GraphRunner", "torch_version"]

Backend = Literal["onnxruntime", "torch"]


def torch_version() -> str:
    """The installed torch's version, read without importing it ("absent" without torch)."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "absent"


class GraphRunner:
    """Base of the graph runners.

    Args:
        name: what the runner is called in messages (``"lidar encoder"``).
        backend: ``"onnxruntime"`` or ``"torch"``.
        onnx_path: called for the ONNX file when the backend is ONNX Runtime (it may export).
        module: called for the torch module when the backend is torch (it imports torch).
        num_threads, providers: ONNX Runtime session options.
        device: the torch device.

    Raises:
        ValueError: an unknown backend.
        engines.errors.EngineError: the ONNX Runtime session cannot be created.
    """

    def __init__(
        self,
        name: str,
        *,
        backend: Backend,
        onnx_path: Callable[[], Path],
        module: Callable[[], Any],
        num_threads: int | None,
        providers: Sequence[str],
        device: str,
    ) -> None:
        self.backend = backend
        #: GPU time of the last run (CUDA events; torch on CUDA only), else None.
        self.last_gpu_ns: int | None = None
        self._name = name
        self._ort: OnnxRuntimeEngine | None = None
        self._module: Any = None
        self._device = device
        if backend == "onnxruntime":
            self._ort = OnnxRuntimeEngine(onnx_path(), num_threads=num_threads, providers=providers)
        elif backend == "torch":
            self._module = module().eval().to(device)
        else:
            raise ValueError(f"{name}: unknown backend {backend!r}; use 'onnxruntime' or 'torch'")

    def _run_graph(
        self, feed: Mapping[str, np.ndarray], inputs: Sequence[str], outputs: Sequence[str]
    ) -> list[np.ndarray]:
        """The graph's outputs (in `outputs` order) for `feed`, on the configured backend."""
        if self._ort is not None:
            out = self._ort.run(feed)
            return [out[name] for name in outputs]
        import torch  # noqa: PLC0415 - the torch backend only

        from engines.gpu_timing import cuda_event_time  # noqa: PLC0415 - imports torch

        with torch.inference_mode(), cuda_event_time(self._device) as gpu:
            tensors = [torch.from_numpy(feed[name]).to(self._device) for name in inputs]
            result = self._module(*tensors)
        self.last_gpu_ns = gpu.ns
        results = result if isinstance(result, tuple | list) else (result,)
        return [np.ascontiguousarray(t.cpu().numpy()) for t in results]

    def _describe(self, details: str) -> str:
        if self._ort is not None:
            return f"{self._name}: {self._ort.describe()}; {details}"
        return f"{self._name}: torch {torch_version()} on {self._device}; {details}"
