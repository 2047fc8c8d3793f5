"""The device the node's engines will actually run on, found before the bench starts the node.

ONNX Runtime skips execution providers it cannot load (one config serves GPU and CPU hosts),
so `engines.device: cuda` on a machine without a usable GPU runs on the CPU. A benchmark must
not report such a run as `cuda`: `resolve_engines` probes the same libraries the node uses (an
ONNX Runtime session on a packaged model with the providers the pipeline asks for; torch's
CUDA for the torch backend), resolves "auto", and refuses a GPU that is not there.
"""

from __future__ import annotations

import dataclasses
from functools import cache

from engines.errors import EngineError
from engines.onnxruntime_backend import CPU_PROVIDERS, GPU_PROVIDERS, OnnxRuntimeEngine
from engines.registry import PACKAGED_MODELS_DIR
from perception.config import EngineConfig
from perception.errors import PerceptionError

__all__ = ["ResolvedEngines", "onnxruntime_providers_in_use", "resolve_engines"]

_PROBE_MODEL = PACKAGED_MODELS_DIR / "lidar_encoder.onnx"
_CUDA = ("CUDAExecutionProvider", *CPU_PROVIDERS)


@dataclasses.dataclass(frozen=True)
class ResolvedEngines:
    """`engines` with `device` "cpu" or "cuda" (never "auto"); `description`: what runs where,
    for the report ("cpu", "cuda", or e.g. "cuda (camera encoder on cpu)"); `requested`: the
    device asked for."""

    engines: EngineConfig
    description: str
    requested: str


@cache
def onnxruntime_providers_in_use(providers: tuple[str, ...]) -> tuple[str, ...]:
    """The providers an ONNX Runtime session asking for `providers` really uses here."""
    try:
        return OnnxRuntimeEngine(_PROBE_MODEL, providers=providers).providers_in_use
    except EngineError:
        return ()


def _torch_cuda() -> bool:
    try:
        import torch  # noqa: PLC0415 (a dev/GPU dependency, imported for the torch backend only)
    except ImportError as e:
        raise PerceptionError(
            f"--backend torch needs torch ({e}): pip install torch, or --backend onnxruntime"
        ) from None
    return bool(torch.cuda.is_available())


def resolve_engines(engines: EngineConfig) -> ResolvedEngines:
    """See the module docstring.

    Raises:
        PerceptionError: `cuda` (or the tensorrt backend) asked for where no usable GPU
            provider is; torch asked for but not installed.
    """
    backend, requested = engines.backend, engines.device
    if backend == "tensorrt":
        used = onnxruntime_providers_in_use(GPU_PROVIDERS)
        if not used or used[0] == "CPUExecutionProvider":
            raise PerceptionError(
                "--backend tensorrt: ONNX Runtime has no usable TensorRT or CUDA execution "
                f"provider here (it runs on {', '.join(used) or 'nothing'}); use --backend "
                "onnxruntime --device cpu"
            )
        how = (
            "cuda"
            if used[0] == "TensorrtExecutionProvider"
            else "cuda (CUDA provider: no TensorRT)"
        )
        return ResolvedEngines(dataclasses.replace(engines, device="cuda"), how, requested)
    if requested == "cpu":
        return ResolvedEngines(engines, "cpu", requested)
    ort_cuda = onnxruntime_providers_in_use(_CUDA)[:1] == ("CUDAExecutionProvider",)
    cuda = _torch_cuda() if backend == "torch" else ort_cuda
    if not cuda:
        if requested == "cuda":
            what = (
                "torch sees no CUDA device"
                if backend == "torch"
                else (
                    "ONNX Runtime's CUDA execution provider is not usable here (providers in use: "
                    f"{', '.join(onnxruntime_providers_in_use(_CUDA))})"
                )
            )
            raise PerceptionError(f"--device cuda: {what}; use --device cpu or auto")
        return ResolvedEngines(dataclasses.replace(engines, device="cpu"), "cpu", requested)
    description = "cuda" if ort_cuda else "cuda (camera encoder on cpu)"
    return ResolvedEngines(dataclasses.replace(engines, device="cuda"), description, requested)
