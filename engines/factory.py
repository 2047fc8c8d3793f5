"""The one engine factory: every engine the node runs, built from :class:`EngineSettings`.

:class:`EngineFactory` resolves once where the engines run (:func:`resolve_placement`: the
backend and device asked for, or -- only when ``engines.fallback`` asks for it -- ONNX Runtime on
the CPU, with a note saying why), then builds each engine there:

- the camera encoder: a registered model name or an ONNX file, batched over cameras when asked
  (``engines.camera.batching``);
- the lidar encoder and the fusion engine: the packaged ONNX exports of the project's graphs (or
  an export of another config), or their torch modules for the torch backend.

``backend: tensorrt`` is the native TensorRT 10 backend through the engine cache: an engine is
built on first use, or found where ``perception engines build`` put it, and rebuilt when stale.
Where TensorRT, CUDA or torch is missing, creation fails with one line naming the setting and the
cause (:class:`EngineError`), unless the settings opt into a fallback.

:func:`build_engines` and :func:`list_engines` are what ``perception engines build|list`` call.
"""

from __future__ import annotations

import importlib.util
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
)
from engines.camera.batching import batched_onnx
from engines.engine import Engine, TensorSpec
from engines.errors import EngineError, ModelError
from engines.fusion.buckets import BucketedFusionEngine
from engines.fusion.config import FusionEngineConfig, Shape
from engines.fusion.config import packaged_model_path as packaged_fusion_path
from engines.fusion.learned_buckets import BucketedLearnedEngine
from engines.fusion.learned_config import LearnedModel
from engines.lidar.buckets import BucketedLidarEncoder
from engines.lidar.config import OBSTACLE_CONFIG, LidarEncoderConfig
from engines.lidar.config import packaged_model_path as packaged_lidar_path
from engines.onnxruntime_backend import (
    CPU_PROVIDERS,
    CUDA_PROVIDERS,
    OnnxRuntimeEngine,
    cuda_provider_available,
)
from engines.registry import resolve_model
from engines.settings import EngineSettings

if TYPE_CHECKING:
    import torch

__all__ = [
    "BuildProgress",
    "BuildResult",
    "EngineFactory",
    "NodeEngines",
    "Placement",
    "build_engines",
    "create_node_engines",
    "list_engines",
    "resolve_placement",
]

_log = logging.getLogger(__name__)

# progress(models_done, models_total, message), called before and after each model.
BuildProgress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Placement:
    """Where the engines run on this machine: ``backend`` (one of ``engines.settings.BACKENDS``)
    and ``device`` (``"cpu"`` or ``"cuda"``, ``auto`` resolved); ``note`` says why this is not
    what the settings asked for (a fallback), else ``None``."""

    backend: str
    device: str
    note: str | None = None


_NO_ORT_CUDA = (
    "this ONNX Runtime has no usable CUDA execution provider (onnxruntime-gpu, CUDA, a GPU)"
)


def _torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def _torch_cuda_available() -> bool:
    import torch  # noqa: PLC0415 - torch is a dev/GPU extra, imported only for the torch backend

    return bool(torch.cuda.is_available())


def resolve_placement(settings: EngineSettings) -> Placement:
    """Where ``settings`` run here: the backend asked for, on CUDA where ``device`` is ``cuda``
    (or ``auto`` and the backend can use CUDA here), else on the CPU.

    Raises:
        EngineError: the backend or the device cannot run here (TensorRT or cuda-python not
            installed, no CUDA device, torch missing, no CUDA for ONNX Runtime or torch) and
            ``settings.fallback`` is ``None``; one line naming the setting, the cause and the
            fallback setting.
    """
    backend, device = settings.backend, settings.effective_device
    subject = f"engines.backend {backend}"
    problem: str | None
    if backend == "tensorrt":
        problem = trt_backend.unavailable_reason()
        if problem is None:
            return Placement("tensorrt", "cuda")
    elif backend == "torch" and not _torch_installed():
        problem = "torch is not installed (pip install torch)"
    else:
        if backend == "torch":
            cuda = device != "cpu" and _torch_cuda_available()
            missing = "torch sees no CUDA device (torch.cuda.is_available() is false)"
        else:
            cuda = device != "cpu" and cuda_provider_available()
            missing = _NO_ORT_CUDA
        if cuda or device != "cuda":
            return Placement(backend, "cuda" if cuda else "cpu")
        subject = f"engines.device cuda ({backend})"
        problem = missing
    if settings.fallback is None:
        raise EngineError(
            f"{subject}: {problem}; set engines.fallback: onnxruntime to run ONNX Runtime on the "
            "CPU instead"
        )
    return Placement(
        settings.fallback, "cpu", f"{subject}: {problem}; running {settings.fallback} on cpu"
    )


class EngineFactory:
    """Builds engines from one :class:`EngineSettings`; where they run is resolved at creation.

    Args:
        settings: the node config's ``engines`` section (default: ONNX Runtime on the CPU).
        model_cache_dir, source_dir: where registered camera models are fetched to / copied
            from (``engines.registry.resolve_model``).
        export_dir: where exports of non-packaged graph configs and batched camera models are
            kept (default: ``engines.exports.DEFAULT_EXPORT_DIR`` and
            ``engines.camera.batching.DEFAULT_BATCH_CACHE_DIR``).

    Raises:
        EngineError: as :func:`resolve_placement`.
    """

    def __init__(
        self,
        settings: EngineSettings | None = None,
        *,
        model_cache_dir: Path | None = None,
        source_dir: Path | None = None,
        export_dir: Path | None = None,
    ) -> None:
        self.settings = settings or EngineSettings()
        self.placement = resolve_placement(self.settings)
        self._model_cache_dir = model_cache_dir
        self._source_dir = source_dir
        self._export_dir = export_dir
        # Once a session shows ONNX Runtime's CUDA libraries do not load, later ones go straight
        # to the CPU instead of failing over (and warning) one by one.
        self._ort_cuda = self.placement.device == "cuda"
        self._notes: list[str] = []
        if self.placement.note is not None:
            self._note(self.placement.note)
        if self.placement.backend == "torch" and self.settings.threads:
            import torch  # noqa: PLC0415 - the torch backend only

            # torch's intra-op pool is process-wide: the node process owns it.
            torch.set_num_threads(self.settings.threads)

    @property
    def notes(self) -> tuple[str, ...]:
        """Human-readable notes on what runs other than asked (fallbacks), in order, for the
        node's diagnostics; empty when everything runs as configured."""
        return tuple(self._notes)

    def _note(self, text: str) -> None:
        if text not in self._notes:
            _log.warning("%s", text)
            self._notes.append(text)

    # --- ONNX models -----------------------------------------------------------------------------

    def onnx_engine(
        self,
        model: str | Path,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        memory_arena: bool = True,
    ) -> Engine:
        """An ONNX model on TensorRT (through the engine cache, at ``precision``) or ONNX
        Runtime (as exported), as placed; the torch backend runs ONNX models on ONNX Runtime.

        Args:
            model: an ONNX path or a registered model name.
            precision: the TensorRT build precision.
            threads: ONNX Runtime intra-op threads (default: ``settings.threads``).
            memory_arena: ONNX Runtime keeps its CPU buffers between runs (its default).

        Raises:
            ModelError: the model is missing, invalid or fails verification.
            EngineError: a build, load or session failure; device ``cuda`` whose CUDA libraries
                do not load (without a fallback); INT8 with no engine built ahead of time.
        """
        path = resolve_model(model, self._model_cache_dir, source_dir=self._source_dir)
        if self.placement.backend == "tensorrt":
            return self._tensorrt(path, precision)
        return self._onnxruntime(path, threads, memory_arena)

    def _tensorrt(self, path: Path, precision: str) -> Engine:
        options = trt_backend.BuildOptions(precision=precision)
        cache_dir = self.settings.engine_cache_dir
        if precision == "int8":
            # INT8 needs calibration frames, which a starting node does not have: the engine
            # must have been built ahead of time.
            device = trt_backend.query_device_info()
            key = trt_backend.engine_cache_key(path, options, device)
            if EngineCache(cache_dir).lookup(key).status != "hit":
                raise EngineError(
                    f"{path.name}: no INT8 engine for {device.gpu_name} and TensorRT "
                    f"{device.tensorrt_version} in {cache_dir}; build it ahead of time with "
                    f"`perception engines build {path} --precision int8 --calibration-images DIR`"
                )
        return trt_backend.load_or_build_engine(path, options=options, cache_dir=cache_dir)

    def _onnxruntime(self, path: Path, threads: int | None, memory_arena: bool = True) -> Engine:
        num_threads = threads if threads is not None else self.settings.num_threads
        cuda = self._ort_cuda and cuda_provider_available()
        engine = OnnxRuntimeEngine(
            path,
            num_threads=num_threads,
            providers=CUDA_PROVIDERS if cuda else CPU_PROVIDERS,
            memory_arena=memory_arena,
        )
        if self._ort_cuda and engine.device == "cpu":
            self._ort_cuda = False
            why = "ONNX Runtime's CUDA provider did not load" if cuda else _NO_ORT_CUDA
            if self.placement.backend == "onnxruntime" and self.settings.effective_device == "cuda":
                if self.settings.fallback is None:
                    raise EngineError(
                        f"engines.device cuda (onnxruntime): {why}; set engines.fallback: "
                        "onnxruntime to run ONNX Runtime on the CPU instead"
                    )
                self._note(f"engines.device cuda (onnxruntime): {why}; running onnxruntime on cpu")
            elif self.placement.backend == "torch":
                self._note(
                    f"engines.backend torch: the camera encoder runs onnxruntime on cpu ({why})"
                )
        return engine

    # --- the node's engines ----------------------------------------------------------------------

    def camera_encoder(
        self, model: str | Path, *, batch: int = 1, threads: int | None = None
    ) -> Engine:
        """The camera encoder (a pretrained 2D detector): ``model`` is a registered name or an
        ONNX file; ``batch`` > 1 runs a batch-N copy (one call for N cameras); TensorRT builds
        it at ``settings.precision``.

        Raises:
            ModelError: the model is missing, invalid or fails verification.
            EngineError: it cannot be batched, built or loaded.
        """
        path = resolve_model(model, self._model_cache_dir, source_dir=self._source_dir)
        path = batched_onnx(path, batch, self._export_dir)
        return self.onnx_engine(path, precision=self.settings.precision, threads=threads)

    def lidar_encoder(
        self, config: LidarEncoderConfig = OBSTACLE_CONFIG, *, threads: int | None = None
    ) -> Engine:
        """The lidar encoder for ``config``: the packaged exports for
        :data:`engines.lidar.config.OBSTACLE_CONFIG`, exports of any other grid (made on first
        use, needs torch), or the torch module; TensorRT builds it in strict fp32. ``threads``:
        ONNX Runtime intra-op threads (default: ``settings.threads``).

        On ONNX Runtime and torch it is a :class:`BucketedLidarEncoder`: the graph at each of
        the grid's point buckets, a scan running on the smallest that holds it (the same
        output, far less padding); the full count's engine is made here, the others on first
        use. TensorRT runs the full count only.

        Raises:
            EngineError: torch is needed but missing, or a build, load or session failure.
        """

        def bucketed(make: Callable[[int], Engine]) -> Engine:
            if len(config.point_buckets()) == 1:
                return make(config.max_points)
            return BucketedLidarEncoder(config, make)

        if self.placement.backend == "torch":
            from engines.lidar.graph import LidarEncoder  # noqa: PLC0415 - needs torch

            encoder = LidarEncoder(config)  # any padded count: one module for every bucket
            return bucketed(
                lambda n: self._torch(
                    encoder, config.input_specs(n), config.output_specs(), "lidar_encoder"
                )
            )

        def onnx_path(n: int) -> Path:
            if config == OBSTACLE_CONFIG:
                return packaged_lidar_path(n)
            grid = config.at_points(n)
            return self._export("lidar encoder", lambda d: _lidar_export(grid, d))

        def make(n: int) -> Engine:
            # Without ONNX Runtime's arena: each bucket would keep buffers sized to the 512 x 512
            # grid (13 MB a bucket on the obstacle grid); allocating them per run cost nothing
            # measurable (2.83 against 2.86 ms a demo sweep).
            return self.onnx_engine(onnx_path(n), threads=threads, memory_arena=False)

        if self.placement.backend == "tensorrt":
            # The full count only: on the GPU the padding costs little, and each bucket would
            # be another engine build.
            return make(config.max_points)
        return bucketed(make)

    def fusion_engine(self, config: FusionEngineConfig | None = None) -> Engine:
        """The fusion engine for ``config`` (default :class:`FusionEngineConfig`): the packaged
        exports for the default config, exports of any other (made on first use, needs torch),
        or the torch module; TensorRT builds it in strict fp32.

        On ONNX Runtime and torch it is a :class:`BucketedFusionEngine`: the graph at each of the
        config's bucket shapes, a frame running on the smallest that holds it (same outputs as
        the full shape, far less padding); the full shape's engine is made here, the others on
        first use. ONNX Runtime runs it on one intra-op thread unless ``settings.threads`` says
        otherwise: the graph is a chain of a thousand small operators, and waking a thread pool
        for each cost more than it saved. TensorRT runs the full shape only: on the GPU the
        padding costs little, and each bucket would be another engine build of minutes.

        Raises:
            EngineError: torch is needed but missing, or a build, load or session failure.
        """
        config = config if config is not None else FusionEngineConfig()
        if self.placement.backend == "torch":
            from engines.fusion.graph import FusionEngine  # noqa: PLC0415 - needs torch

            module = FusionEngine(config)
            return BucketedFusionEngine(
                config,
                lambda shape: self._torch(
                    module, config.input_specs(shape), config.output_specs(shape), "fusion_engine"
                ),
            )
        if self.placement.backend == "tensorrt":
            return self.onnx_engine(self._fusion_onnx(config, config.full_shape))
        threads = self.settings.num_threads or 1
        return BucketedFusionEngine(
            config,
            lambda shape: self.onnx_engine(self._fusion_onnx(config, shape), threads=threads),
        )

    def _fusion_onnx(self, config: FusionEngineConfig, shape: Shape) -> Path:
        """The fusion graph's ONNX file at ``shape``: packaged for the default config, else
        exported (cached)."""
        if config == FusionEngineConfig():
            return packaged_fusion_path(shape)
        return self._export("fusion engine", lambda d: _fusion_export(config, d, shape))

    def learned_fusion_engine(self, learned: LearnedModel) -> Engine:
        """The learned fusion engine of ``learned`` (the packaged one or an export of
        ``perception train``, with the config it was trained with: read by
        ``perception.pipeline.learned_model.load_learned_model``, as its ``.yaml`` is a user's
        file and this package has no bounded YAML loader): its export on ONNX Runtime or
        TensorRT (strict fp32), or its graph with the saved weights on torch.

        On ONNX Runtime (where the model has its exports at smaller pillar counts) and torch it
        is a :class:`BucketedLearnedEngine`: a sweep runs at the smallest pillar count holding
        it, the same table as the full count for less padding; TensorRT runs the full count (on
        the GPU the padding costs little, and each count would be another engine build).

        Raises:
            ModelError: (torch) its weights are missing or invalid.
            EngineError: torch is needed but missing, or a build, load or session failure.
        """
        if self.placement.backend == "torch":
            if learned.weights_path is None:
                raise ModelError(
                    f"{learned.onnx_path}: the torch backend needs the weights beside the "
                    f"export ({learned.onnx_path.with_suffix('.pt').name}), which are missing"
                )
            from engines.fusion.learned_graph import load_learned_export  # noqa: PLC0415

            try:
                module = load_learned_export(learned.weights_path, learned.config)
            except (OSError, RuntimeError) as e:
                raise ModelError(f"{learned.weights_path}: cannot load the weights ({e})") from e
            cfg = learned.config
            return BucketedLearnedEngine(
                cfg,
                cfg.pillar_buckets,
                lambda n: self._torch(
                    module, cfg.input_specs(n), cfg.output_specs(), learned.onnx_path.name
                ),
            )
        if self.placement.backend == "tensorrt" or not learned.bucket_paths:
            return self.onnx_engine(learned.onnx_path)
        paths = {**dict(learned.bucket_paths), learned.config.max_pillars: learned.onnx_path}
        return BucketedLearnedEngine(
            learned.config, tuple(paths), lambda n: self.onnx_engine(paths[n])
        )

    def _torch(
        self,
        module: torch.nn.Module,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        name: str,
    ) -> Engine:
        from engines.torch_backend import TorchEngine  # noqa: PLC0415 - needs torch

        return TorchEngine(module, inputs, outputs, device=self.placement.device, name=name)

    def _export(self, what: str, export: Callable[[Path | None], Path]) -> Path:
        if not _torch_installed():
            raise EngineError(
                f"{what}: a config other than the packaged one is exported from its torch graph, "
                "and torch is not installed (pip install torch)"
            )
        try:
            return export(self._export_dir)
        except OSError as exc:
            raise EngineError(f"{what}: cannot write its ONNX export: {exc}") from exc


def _lidar_export(config: LidarEncoderConfig, directory: Path | None) -> Path:
    from engines.lidar.graph import cached_lidar_encoder_onnx  # noqa: PLC0415 - needs torch

    return cached_lidar_encoder_onnx(config, directory)


def _fusion_export(config: FusionEngineConfig, directory: Path | None, shape: Shape) -> Path:
    from engines.fusion.graph import cached_fusion_engine_onnx  # noqa: PLC0415 - needs torch

    return cached_fusion_engine_onnx(config, directory, shape)


@dataclass(frozen=True)
class NodeEngines:
    """The node's three engines and the notes on what runs other than configured."""

    camera: Engine
    lidar: Engine
    fusion: Engine
    notes: tuple[str, ...] = ()
    learned: tuple[Engine, LearnedModel] | None = None


def create_node_engines(
    settings: EngineSettings,
    camera_model: str | Path,
    *,
    camera_batch: int = 1,
    camera_threads: int | None = None,
    lidar_threads: int | None = None,
    lidar_config: LidarEncoderConfig = OBSTACLE_CONFIG,
    fusion_config: FusionEngineConfig | None = None,
    model_cache_dir: Path | None = None,
    source_dir: Path | None = None,
    learned_model: LearnedModel | None = None,
) -> NodeEngines:
    """Every engine the node runs, from its ``engines`` settings: the camera encoder
    (``camera_model``, ``camera_batch`` cameras per call, ``camera_threads`` overriding
    ``settings.threads``), the lidar encoder (``lidar_threads`` likewise) and the fusion
    engine, and the learned fusion engine of ``learned_model`` (with its config) when given.
    With ``backend: tensorrt`` this also builds whatever the engine cache lacks, so calling it
    ahead of time prepares a node's start.

    Raises:
        EngineError: as :class:`EngineFactory` and its methods.
        ModelError: the camera model is missing, invalid or fails verification.
    """
    factory = EngineFactory(settings, model_cache_dir=model_cache_dir, source_dir=source_dir)
    camera = factory.camera_encoder(camera_model, batch=camera_batch, threads=camera_threads)
    fusion = factory.fusion_engine(fusion_config)
    lidar = factory.lidar_encoder(lidar_config, threads=lidar_threads)
    learned = None
    if learned_model is not None:
        learned = factory.learned_fusion_engine(learned_model), learned_model
    return NodeEngines(
        camera=camera, lidar=lidar, fusion=fusion, notes=factory.notes, learned=learned
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

    Arguments are validated before TensorRT is needed, so a typo fails fast on any machine. An
    engine built here with the default builder options is the one the node's factory loads for
    the same model and precision (the project's graphs, ``lidar_encoder`` and ``fusion_engine``,
    run in ``fp32`` there).

    Args:
        models: ONNX paths, registered model names or packaged model names.
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
        key = trt_backend.engine_cache_key(path, options, device)
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
