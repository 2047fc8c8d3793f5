"""Which camera detector a command runs, by one rule, and the models the node knows.

`choose_camera_model` is the rule `replay`, `run` and `bench` share (the demo always runs the
synthetic detector): `--model` wins; else a config given with `--config` is used as written;
else a synthetic drive (one with ground truth beside it, from `perception demo`) runs the
packaged detector trained on synthetic renders; else the built-in config's registered model
(`yolox_nano_coco_416`), fetched into the model cache. `camera_model_file` turns the choice
into a file, with an error that says how to fetch a registered model on an offline machine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from engines.cache import file_sha256
from engines.camera.detector import CameraDetector
from engines.errors import ModelError
from engines.registry import (
    DEFAULT_MODEL_CACHE_DIR,
    MODELS,
    PACKAGED_MODELS_DIR,
    ModelInfo,
    cached_sha256,
    resolve_model,
)
from perception.config import CameraModelConfig, NodeConfig
from perception.pipeline import Pipeline
from perception.pipeline.pipeline import build_detector as pipeline_build_detector

__all__ = [
    "SYNTH_CAMERA_MODEL",
    "ModelEntry",
    "build_detector",
    "build_pipeline",
    "camera_model_file",
    "choose_camera_model",
    "model_entries",
]

#: The packaged detector trained on synthetic renders, decoded as `perception demo` does.
SYNTH_CAMERA_MODEL = CameraModelConfig(
    str(PACKAGED_MODELS_DIR / "synth_detector.onnx"), kind="yolox", score_threshold=0.15
)


def choose_camera_model(
    config: NodeConfig, model: str | None, *, config_given: bool, synthetic: bool
) -> NodeConfig:
    """`config` with the camera model the command runs (see the module docstring).

    `model`: `--model` (an ONNX file or a registered model name); `config_given`: whether
    `config` came from `--config`; `synthetic`: whether the source is a synthetic drive.
    """
    if model:
        path = Path(model).expanduser()
        chosen = str(path.resolve()) if path.exists() else model
        return replace(config, camera_model=replace(config.camera_model, path=chosen))
    if synthetic and not config_given:
        return replace(config, camera_model=SYNTH_CAMERA_MODEL)
    return config


def _registered(name: str) -> ModelInfo | None:
    key = name.removesuffix(".onnx")
    return MODELS.get(key) if "/" not in name else None


def camera_model_file(config: NodeConfig, cache_dir: Path | None = None) -> Path:
    """The file of `config.camera_model.path`: an existing file as it is, a registered name
    from the model cache (downloaded and verified when absent).

    Raises:
        ModelError: neither a file nor a registered name; or a registered model is not cached
            and cannot be downloaded (the message says how to fetch it from a local folder).
    """
    name = config.camera_model.path
    info = None if Path(name).expanduser().is_file() else _registered(name)
    try:
        return resolve_model(name, cache_dir)
    except ModelError as e:
        if info is None:
            raise
        # The registry's message already names the cache and how to fetch from a local
        # folder; only the CLI's own way out is added (it once said all of it twice).
        raise ModelError(f"camera model {info.name}: {e}; or give --model FILE.onnx") from e


def build_detector(config: NodeConfig) -> CameraDetector:
    """The camera encoder of `config` alone, as `build_pipeline` builds it, with its 2D
    detector (no lidar or fusion engines)."""
    return pipeline_build_detector(config.camera_model, camera_model_file(config), config.engines)


def build_pipeline(config: NodeConfig) -> Pipeline:
    """The pipeline of `config`, its camera model resolved to a file first
    (`camera_model_file`: a missing registered model is reported with how to fetch it)."""
    return Pipeline.from_config(
        config.camera_model,
        camera_model_file(config),
        config.engines,
        config.pipeline,
        detections_stream=config.outputs.detections_topic,
    )


@dataclass(frozen=True)
class ModelEntry:
    """A model `perception models list` shows: registered (fetched into the cache) or packaged
    (shipped inside the package). `cached`: "yes" (sha256 verified), "no", "sha256 mismatch"
    or "packaged"; `path`: where the file is or would be."""

    name: str
    filename: str
    size_bytes: int
    sha256: str
    cached: str
    path: Path
    source: str


def model_entries(cache_dir: Path | None = None) -> list[ModelEntry]:
    """The registered models with their cache state, then the packaged ones.

    Raises:
        OSError: a cached or packaged file cannot be read.
    """
    cache = Path(cache_dir or DEFAULT_MODEL_CACHE_DIR).expanduser()
    entries = []
    for info in sorted(MODELS.values(), key=lambda m: m.name):
        path = cache / info.filename
        if not path.is_file():
            state = "no"
        else:
            state = "yes" if cached_sha256(path, info) == info.sha256 else "sha256 mismatch"
        entries.append(
            ModelEntry(
                info.name, info.filename, info.size_bytes, info.sha256, state, path, info.url
            )
        )
    for path in sorted(PACKAGED_MODELS_DIR.glob("*.onnx")):
        entries.append(
            ModelEntry(
                path.stem,
                path.name,
                path.stat().st_size,
                file_sha256(path),
                "packaged",
                path,
                "perception-node (engines/models)",
            )
        )
    return entries
