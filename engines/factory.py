"""Choosing a backend, and the library side of ``perception engines build|list``.

:func:`create_engine` picks TensorRT when it is installed and falls back to ONNX Runtime with a
log line saying so; ``torch.nn.Module`` graphs go to the torch backend. :func:`build_engines`
and :func:`list_engines` are what the CLI calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from engines import tensorrt_backend as trt_backend
from engines.cache import (
    DEFAULT_ENGINE_CACHE_DIR,
    CacheEntry,
    DeviceInfo,
    EngineCache,
    EngineCacheKey,
    file_sha256,
)
from engines.engine import PRECISIONS, Engine, TensorSpec
from engines.errors import EngineError
from engines.onnxruntime_backend import OnnxRuntimeEngine, default_providers
from engines.registry import resolve_model

if TYPE_CHECKING:
    import torch

__all__ = [
    "BACKENDS",
    "BuildProgress",
    "BuildResult",
    "build_engines",
    "create_engine",
    "list_engines",
]

_log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("auto", "tensorrt", "onnxruntime", "torch")

# progress(models_done, models_total, message), called before and after each model.
BuildProgress = Callable[[int, int, str], None]


def create_engine(
    model: str | Path | torch.nn.Module,
    backend: str = "auto",
    *,
    precision: str = "fp32",
    num_threads: int | None = None,
    use_gpu: bool = True,
    inputs: Sequence[TensorSpec] | None = None,
    outputs: Sequence[TensorSpec] | None = None,
    cache_dir: Path | None = None,
    model_cache_dir: Path | None = None,
    source_dir: Path | None = None,
    use_cuda_graph: bool = False,
    device_id: int = 0,
) -> Engine:
    """An engine for ``model`` on the requested backend.

    Args:
        model: an ONNX path or registered model name (tensorrt/onnxruntime), or a
            ``torch.nn.Module`` (torch; ``auto`` picks torch for modules).
        backend: ``"auto"`` (TensorRT when installed, else ONNX Runtime), ``"tensorrt"``
            (falls back to ONNX Runtime with a warning when TensorRT is missing),
            ``"onnxruntime"`` or ``"torch"``.
        precision: TensorRT build precision; ONNX Runtime and torch run the model as exported
            (fp32), which :meth:`Engine.describe` reports.
        num_threads: ONNX Runtime intra-op threads.
        use_gpu: request CUDA (torch: ``auto`` device; ONNX Runtime: TensorRT/CUDA providers
            when this build has them).
        inputs, outputs: the torch backend's tensor specs (required there).
        cache_dir: TensorRT engine cache (default ``~/.cache/perception-node/engines``).
        model_cache_dir, source_dir: where registered model names are fetched to / copied from.
        use_cuda_graph: TensorRT: capture the execute call into a CUDA graph.
        device_id: CUDA device.

    Raises:
        EngineError: unknown backend or precision, a module without specs, a path given to the
            torch backend, or any backend's creation error.
        ModelError: the model file is missing, invalid, or fails verification.
    """
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
    if not isinstance(model, str | Path):
        if backend not in ("auto", "torch"):
            raise EngineError(f"a torch module runs on the torch backend, not {backend!r}")
        if inputs is None or outputs is None:
            raise EngineError("the torch backend needs inputs and outputs specs")
        # torch is a dev/GPU extra, not a runtime dependency: import it only for modules.
        from engines.torch_backend import TorchEngine  # noqa: PLC0415

        return TorchEngine(model, inputs, outputs, device="auto" if use_gpu else "cpu")
    if backend == "torch":
        raise EngineError(
            f"{model}: the torch backend runs torch.nn.Module graphs; use onnxruntime or "
            "tensorrt for ONNX files"
        )
    path = resolve_model(model, model_cache_dir, source_dir=source_dir)
    if backend in ("auto", "tensorrt"):
        if trt_backend.tensorrt_available():
            return trt_backend.load_or_build_engine(
                path,
                options=trt_backend.BuildOptions(precision=precision),
                cache_dir=cache_dir,
                use_cuda_graph=use_cuda_graph,
                device_id=device_id,
            )
        level = logging.WARNING if backend == "tensorrt" else logging.INFO
        _log.log(
            level,
            "%s: TensorRT is not installed; falling back to ONNX Runtime%s",
            path.name,
            f" (runs fp32, not {precision})" if precision != "fp32" else "",
        )
    return OnnxRuntimeEngine(
        path,
        num_threads=num_threads,
        providers=default_providers(use_gpu),
        device_id=device_id,
    )


@dataclass(frozen=True)
class BuildResult:
    """One model's outcome in :func:`build_engines`.

    ``status``: ``"cached"`` (a valid engine was already there), ``"built"`` or ``"rebuilt"``
    (a stale entry was replaced).
    """

    model: str
    onnx_path: Path
    engine_path: Path
    precision: str
    status: Literal["cached", "built", "rebuilt"]
    seconds: float
    key: EngineCacheKey


def build_engines(
    models: Sequence[str | Path],
    precision: str = "fp16",
    cache_dir: Path | None = None,
    *,
    model_cache_dir: Path | None = None,
    source_dir: Path | None = None,
    calibration_batches: Callable[[], Iterable[Mapping[str, np.ndarray]]] | None = None,
    calibration_cache: Path | None = None,
    workspace_bytes: int = 1 << 30,
    optimization_level: int = 3,
    device: DeviceInfo | None = None,
    progress: BuildProgress | None = None,
) -> list[BuildResult]:
    """Builds (or finds cached) TensorRT engines for ``models`` ahead of time.

    Arguments are validated before TensorRT is needed, so a typo fails fast on any machine.

    Args:
        models: ONNX paths or registered model names.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        cache_dir: engine cache (default ``~/.cache/perception-node/engines``).
        model_cache_dir, source_dir: for registered names (see :func:`resolve_model`).
        calibration_batches: INT8: returns an iterable of input dicts (recorded frames).
        calibration_cache: INT8: calibration cache file (read if present, written after).
        workspace_bytes, optimization_level: TensorRT builder options.
        device: the GPU facts (default: queried from CUDA device 0).
        progress: ``progress(done, total, message)`` before and after each model (the CLI
            draws its bar from it; builds take minutes).

    Raises:
        EngineError: no models, bad precision/options, INT8 without calibration data or cache,
            TensorRT not installed ("building engines needs TensorRT ..."), or a build failure.
        ModelError: a model is missing, unknown or fails verification.
    """
    if not models:
        raise EngineError("no models to build")
    options = trt_backend.BuildOptions(
        precision=precision,
        workspace_bytes=workspace_bytes,
        optimization_level=optimization_level,
    )
    if (
        precision == "int8"
        and calibration_batches is None
        and trt_backend.read_calibration_cache(calibration_cache) is None
    ):
        raise EngineError("INT8 needs calibration frames or an existing calibration cache")
    paths = [resolve_model(m, model_cache_dir, source_dir=source_dir) for m in models]
    try:
        trt_backend.require_tensorrt()
    except EngineError as exc:
        raise EngineError(f"building engines needs TensorRT: {exc}") from None
    device = device or trt_backend.query_device_info()
    cache = EngineCache(cache_dir or DEFAULT_ENGINE_CACHE_DIR)
    results: list[BuildResult] = []
    total = len(paths)
    for i, path in enumerate(paths):
        if progress is not None:
            progress(i, total, f"{path.stem}: building {precision}")
        specs = trt_backend.onnx_input_specs(path)
        key = EngineCacheKey.create(
            model_name=path.stem,
            onnx_sha256=file_sha256(path),
            device=device,
            precision=precision,
            input_shapes={s.name: s.static_shape() for s in specs},
            builder_options=options.key_options(),
        )
        start = time.perf_counter()

        def build(path: Path = path) -> bytes:
            return trt_backend.build_serialized_engine(
                path,
                options,
                calibration_batches=calibration_batches() if calibration_batches else None,
                calibration_cache=calibration_cache,
                timing_cache=trt_backend.timing_cache_path(cache.directory, device),
            )

        entry, status = cache.get_or_build(key, build)
        seconds = time.perf_counter() - start
        results.append(
            BuildResult(
                model=path.stem,
                onnx_path=path,
                engine_path=entry.engine_path,
                precision=precision,
                status=status,
                seconds=seconds,
                key=key,
            )
        )
        if progress is not None:
            progress(i + 1, total, f"{path.stem}: {status} in {seconds:.1f} s")
    return results


def list_engines(cache_dir: Path | None = None) -> list[CacheEntry]:
    """The engine cache's entries (model, TensorRT version, GPU, precision, shapes, size).

    An absent cache directory is an empty list.
    """
    return EngineCache(cache_dir or DEFAULT_ENGINE_CACHE_DIR).list_entries()
