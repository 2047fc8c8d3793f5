"""Where and how the node's engines run: the ``engines:`` section of the node config.

:class:`EngineSettings` is the one input of the engine factory (``engines.factory``); the node
config (``perception.config.NodeConfig.engines``) embeds it as is, so the YAML keys are its
fields:

```yaml
engines:
  backend: tensorrt     # onnxruntime | tensorrt | torch
  device: auto          # auto | cpu | cuda; omitted: cpu, or cuda for tensorrt
  precision: fp16       # TensorRT build precision of the camera encoder: fp32 | fp16 | int8
  cache_dir: null       # TensorRT engine cache (null: ~/.cache/perception-node/engines)
  fallback: onnxruntime # null: refuse to start where the backend cannot run
  threads: 0            # intra-op threads per engine (0: one per physical core, unpinned)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engines.cache import DEFAULT_ENGINE_CACHE_DIR
from engines.engine import PRECISIONS
from engines.errors import EngineError

__all__ = ["BACKENDS", "DEVICES", "FALLBACKS", "MAX_THREADS", "EngineSettings"]

#: The node's engine backends: ONNX Runtime, native TensorRT (through the engine cache), torch
#: (the project's own graphs as torch modules; the pretrained camera encoder on ONNX Runtime).
BACKENDS: tuple[str, ...] = ("onnxruntime", "tensorrt", "torch")
#: ``auto``: CUDA when the backend can use it here, else the CPU.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: What may run instead when the backend or device is not available here (ONNX Runtime on the
#: CPU, which every install has). Only on request: a silent fallback would hide a broken GPU
#: install behind a slow node.
FALLBACKS: tuple[str, ...] = ("onnxruntime",)
#: The most intra-op threads an engine may be given: more than any machine this runs on has
#: cores. ONNX Runtime makes every thread it is told to, and 100,000 of them hung a node's start.
MAX_THREADS = 256


@dataclass(frozen=True)
class EngineSettings:
    """Backend, device and build settings of every engine the node runs.

    Attributes:
        backend: one of :data:`BACKENDS`. ``tensorrt`` builds each engine with the native
            TensorRT 10 backend into the engine cache on first use (or finds it there, built by
            ``perception engines build``; stale engines are rebuilt).
        device: one of :data:`DEVICES`, or ``None`` (omitted) for the backend's own:
            ``cpu`` for ONNX Runtime and torch (the embedded default), ``cuda`` for TensorRT,
            which runs on CUDA only (``cpu`` is refused).
        precision: the camera encoder's TensorRT build precision, one of
            :data:`engines.engine.PRECISIONS` (``int8`` needs an engine built ahead of time with
            calibration images). The project's geometric graphs (lidar encoder, fusion engine)
            always build in strict fp32: fp16 cannot hold their 1e6 sentinels and would move
            points across 0.2 m cells. ONNX Runtime and torch run every graph as exported (fp32).
        cache_dir: the TensorRT engine cache; ``None``: the default
            (:data:`engines.cache.DEFAULT_ENGINE_CACHE_DIR`).
        fallback: ``None``, or one of :data:`FALLBACKS`: run that on the CPU where the backend or
            the device cannot run here, and say so (``engines.factory.EngineFactory.notes``).
        threads: intra-op threads of each ONNX Runtime session (and torch's process-wide count
            for the torch backend); 0: one per physical core the process may run on (ONNX
            Runtime's own count, given explicitly so that it does not pin its threads; torch's
            choice), except for the fusion engine's ONNX Runtime sessions, which then run on one
            (a chain of small operators).

    Raises:
        EngineError: a value out of range; the message names the key as in the node config
            (``"engines.backend: must be one of ..."``).
    """

    backend: str = "onnxruntime"
    """`onnxruntime`, `tensorrt` (native TensorRT 10 through the engine cache) or `torch`."""
    device: str | None = None
    """`auto` (CUDA where the backend can use it here), `cpu` or `cuda`; null: the backend's
    own (cpu, or cuda for tensorrt)."""
    precision: str = "fp32"
    """The camera encoder's TensorRT build precision: `fp32`, `fp16` or `int8` (the project's
    graphs always build in fp32)."""
    cache_dir: str | None = None
    """The TensorRT engine cache (null: ~/.cache/perception-node/engines)."""
    fallback: str | None = None
    """null: refuse to start where the backend or device cannot run; `onnxruntime`: run ONNX
    Runtime on the CPU instead, and say so on diagnostics."""
    threads: int = 0
    """Intra-op threads of each engine; 0: one per physical core the process may run on,
    unpinned (the fusion engine: one)."""

    def __post_init__(self) -> None:
        checks = [
            (self.backend in BACKENDS, "backend", f"must be one of {', '.join(BACKENDS)}"),
            (
                self.device is None or self.device in DEVICES,
                "device",
                f"must be one of {', '.join(DEVICES)}",
            ),
            (
                not (self.backend == "tensorrt" and self.device == "cpu"),
                "device",
                "TensorRT runs on CUDA only: use auto or cuda, or backend onnxruntime for the CPU",
            ),
            (self.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}"),
            (
                self.fallback is None or self.fallback in FALLBACKS,
                "fallback",
                f"must be null or one of {', '.join(FALLBACKS)}",
            ),
            (
                self.cache_dir is None or self.cache_dir.strip() != "",
                "cache_dir",
                "must not be empty",
            ),
            (0 <= self.threads <= MAX_THREADS, "threads", f"must be from 0 to {MAX_THREADS}"),
        ]
        for ok, key, problem in checks:
            if not ok:
                value = getattr(self, key)
                raise EngineError(f"engines.{key}: {problem}, got {value!r}")

    @property
    def effective_device(self) -> str:
        """:attr:`device`, or the backend's own when omitted (``cuda`` for TensorRT, else
        ``cpu``)."""
        if self.device is not None:
            return self.device
        return "cuda" if self.backend == "tensorrt" else "cpu"

    @property
    def engine_cache_dir(self) -> Path:
        """The TensorRT engine cache directory (``~`` expanded)."""
        if self.cache_dir is None:
            return DEFAULT_ENGINE_CACHE_DIR
        return Path(self.cache_dir).expanduser()

    @property
    def num_threads(self) -> int | None:
        """:attr:`threads` for ONNX Runtime: ``None`` for 0
        (`engines.onnxruntime_backend.default_threads`)."""
        return self.threads or None
