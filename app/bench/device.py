"""The device the node's engines will actually run on, found before the bench starts the node.

A benchmark must not report a run as `cuda` that ran on the CPU. The bench asks the engine
factory's own placement rule (engines.factory.resolve_placement: TensorRT and cuda-python
present, a CUDA session that ONNX Runtime really takes, torch's CUDA), which is what the node
will do with the same settings: "auto" resolved, a GPU that is not there refused in one line
(or, where the config opts into `engines.fallback`, the fallback reported).
"""

from __future__ import annotations

import dataclasses

from engines.factory import resolve_placement
from engines.settings import EngineSettings

__all__ = ["ResolvedEngines", "resolve_engines"]


@dataclasses.dataclass(frozen=True)
class ResolvedEngines:
    """`engines` with `device` "cpu" or "cuda" (never "auto"); `description`: what runs where,
    for the report ("cpu", "cuda", "tensorrt on cuda", or the fallback spelled out);
    `requested`: the device asked for."""

    engines: EngineSettings
    description: str
    requested: str


def resolve_engines(engines: EngineSettings) -> ResolvedEngines:
    """Where `engines` run on this machine.

    Raises:
        engines.errors.EngineError: the backend or device cannot run here and the settings
            do not opt into a fallback (one line naming the setting and the cause).
    """
    placement = resolve_placement(engines)
    requested = engines.effective_device
    if placement.note is not None:
        # The node falls back itself, from the same settings: say so, keep them as they are.
        return ResolvedEngines(engines, placement.note, requested)
    description = placement.device
    if placement.backend == "tensorrt":
        description = "tensorrt on cuda"
    elif placement.backend == "torch" and placement.device == "cuda":
        # The pretrained camera detector has no torch module: it stays on ONNX Runtime.
        description = "cuda (camera encoder on onnxruntime)"
    resolved = dataclasses.replace(engines, device=placement.device)
    return ResolvedEngines(resolved, description, requested)
