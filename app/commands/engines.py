"""`perception engines build|list`: compiled TensorRT engines, ahead of time."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from app.common import cache_dir_arg
from engines.camera.detector import CameraDetector
from engines.errors import EngineError, ModelError
from engines.factory import EngineFactory, build_engines, list_engines
from perception.errors import PerceptionError
from replay.datasets.kitti_object import read_image

__all__ = ["cmd_engines_build", "cmd_engines_list"]


def _calibration_batches(model: str, images_dir: Path, cache: Path | None) -> Callable[[], Any]:
    """INT8 calibration inputs: the recorded images of `images_dir`, preprocessed as the camera
    encoder does for `model`."""
    if not images_dir.is_dir():
        raise PerceptionError(f"{images_dir}: --calibration-images must be a folder of images")
    images = sorted(
        p for p in images_dir.iterdir() if p.suffix.lower() in (".png", ".jpg") and p.is_file()
    )
    if not images:
        raise PerceptionError(f"{images_dir}: no .png/.jpg images for INT8 calibration")
    # Every image decoded once before the build: TensorRT calls for the batches from its own
    # code, which takes an error raised there for the end of the data and builds an engine
    # calibrated on the images before it, without a word.
    for path in images:
        read_image(path)
    # Preprocessing only: the network itself is never run here (ONNX Runtime on the CPU).
    try:
        detector = CameraDetector(EngineFactory(model_cache_dir=cache).camera_encoder(model))
    except ModelError:
        raise  # the model itself is missing or broken, whatever it is for
    except EngineError as e:
        raise PerceptionError(
            f"{model}: --calibration-images calibrates a camera detector, and this model is not "
            f"one ({e})"
        ) from e

    def batches() -> Iterator[dict[str, Any]]:
        for path in images:
            tensor, _ = detector.preprocess(read_image(path))
            yield {detector.input_name: tensor}

    return batches


def cmd_engines_build(args: argparse.Namespace) -> int:
    model_cache = cache_dir_arg(args.model_cache, "--model-cache")
    engine_cache = cache_dir_arg(args.cache_dir)
    if args.precision == "int8" and not args.calibration_images:
        # The library also takes an existing calibration cache, which this command has no
        # option for: its message would name something a user cannot give.
        raise PerceptionError(
            "--precision int8 needs --calibration-images DIR (recorded camera images to "
            "calibrate with)"
        )
    if args.calibration_images and args.precision != "int8":
        raise PerceptionError("--calibration-images is for --precision int8 only")
    groups: list[list[str]] = (
        [[m] for m in args.models] if args.precision == "int8" else [list(args.models)]
    )
    disable = True if args.quiet else None
    with tqdm(total=2 * len(args.models), unit="step", disable=disable) as bar:

        def progress(_done: int, _total: int, message: str) -> None:
            bar.set_description(message)
            bar.update(1)

        for group in groups:
            batches = None
            if args.precision == "int8" and args.calibration_images:
                batches = _calibration_batches(
                    group[0], Path(args.calibration_images).expanduser(), model_cache
                )
            for result in build_engines(
                group,
                args.precision,
                engine_cache,
                model_cache_dir=model_cache,
                calibration_batches=batches,
                progress=progress,
            ):
                tqdm.write(
                    f"{result.model}: {result.status} {result.precision} engine "
                    f"{result.engine_path} ({result.seconds:.1f} s)"
                )
    return 0


def cmd_engines_list(args: argparse.Namespace) -> int:
    entries = list_engines(cache_dir_arg(args.cache_dir))
    if not entries:
        print("no cached engines")
        return 0
    print(f"{'model':<28}{'precision':<10}{'TensorRT':<10}{'GPU':<28}{'MB':>8}  file")
    for e in entries:
        k = e.key
        print(
            f"{k.model_name:<28}{k.precision:<10}{k.tensorrt_version:<10}"
            f"{k.gpu_name + ' sm' + str(k.compute_capability):<28}"
            f"{e.size_bytes / 1e6:>8.1f}  {e.engine_path}"
        )
    return 0
