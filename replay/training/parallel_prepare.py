"""Training samples prepared in worker processes: the synthetic world's ray casting and
rendering, and the camera painting, dominate a training run's start on a CPU.

Each worker opens the sources from their config entries and builds its own painter (nothing
is shared across the process boundary but the entries and the prepared samples), then prepares
the indices it is handed; samples come back in index order, so the result is exactly the one
process result. Workers are spawned, not forked: the parent holds ONNX Runtime sessions and
torch thread pools that a fork would copy in an undefined state. This module imports no torch,
so a worker starts without it.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from engines.camera.detector import CameraDetector
from engines.factory import EngineFactory
from engines.fusion.learned_config import LearnedFusionConfig
from engines.registry import PACKAGED_MODELS_DIR
from replay.training.fusion_config import CameraPaintConfig
from replay.training.fusion_data import Detect, PreparedSample, prepare
from replay.training.sources import TrainingSource, open_source

__all__ = ["build_painter", "prepare_in_workers"]

_CHUNK = 4

# One worker's state, set by `_start` (a worker prepares for one run only).
_sources: list[TrainingSource] = []
_painter: Detect | None = None
_model: LearnedFusionConfig | None = None


def build_painter(camera: CameraPaintConfig, cache_dir: Path | None = None) -> Detect | None:
    """The detector that paints training points (``None`` for ``model: none``).

    Raises:
        engines.errors.ModelError / EngineError: the model cannot be found or loaded.
    """
    if camera.model == "none":
        return None
    path = PACKAGED_MODELS_DIR / "synth_detector.onnx" if camera.model == "synth" else camera.model
    engine = EngineFactory(model_cache_dir=cache_dir).camera_encoder(path)
    detector = CameraDetector(engine, kind=camera.kind, score_threshold=camera.score_threshold)
    return detector.detect


def _start(
    specs: Sequence[Mapping[str, Any]],
    base_dir: Path,
    camera: CameraPaintConfig,
    cache_dir: Path | None,
    model: LearnedFusionConfig,
) -> None:
    global _painter, _model  # noqa: PLW0603 - a worker process's own state
    _sources[:] = [open_source(spec, base_dir) for spec in specs]
    _painter = build_painter(camera, cache_dir)
    _model = model


def _prepare(where: tuple[int, int]) -> PreparedSample:
    assert _model is not None
    source, index = where
    return prepare(_sources[source][index], _painter, _model)


def prepare_in_workers(
    specs: Sequence[Mapping[str, Any]],
    base_dir: Path,
    camera: CameraPaintConfig,
    model: LearnedFusionConfig,
    workers: int,
    *,
    cache_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[PreparedSample]:
    """Every sample of ``specs`` painted by ``camera``'s detector, prepared by ``workers``
    processes, in index order (``replay.training.train_fusion.prepare_sources`` in one).

    Raises:
        ValueError: a bad source spec (names it), or fewer than 1 worker.
    """
    if workers < 1:
        raise ValueError(f"prepare workers must be >= 1, got {workers}")
    sources = [open_source(spec, base_dir) for spec in specs]  # bad specs fail here, at once
    where = [(s, i) for s, source in enumerate(sources) for i in range(len(source))]
    out: list[PreparedSample] = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_start,
        initargs=(list(specs), base_dir, camera, cache_dir, model),
    ) as pool:
        for sample in pool.map(_prepare, where, chunksize=_CHUNK):
            out.append(sample)
            if progress is not None:
                progress(len(out), len(where))
    return out
