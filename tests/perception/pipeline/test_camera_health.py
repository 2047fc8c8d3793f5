"""The camera health check on real KITTI images: every real daytime frame is fit, the same frames
darkened or blurred as the demo's degradations are not, and an unfit image is fused as a missing
camera would be (its stream listed as degraded)."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from perception.config import CameraHealthConfig, CameraModelConfig, NodeConfig, SyncConfig
from perception.errors import ConfigError
from perception.msgs.types import CameraFrame, SyncedBundle
from perception.node import NodeCore
from perception.pipeline import Pipeline, PipelineConfig
from perception.pipeline.camera_health import image_problem, measure_image
from perception.sync import Bundler
from replay.datasets.kitti_object import CAMERA_STREAM, KittiObjectFolder

CONFIG = CameraHealthConfig()
STAMP_NS = 1_317_000_000_000_000_000


def _images(kitti_dir: Path) -> list[npt.NDArray[np.uint8]]:
    paths = sorted((kitti_dir / "image_2").glob("*.png"))
    assert len(paths) >= 8
    return [np.asarray(cv2.imread(str(p)), np.uint8) for p in paths]


def _dark(image: npt.NDArray[np.uint8], factor: float = 0.15) -> npt.NDArray[np.uint8]:
    return (image.astype(np.float32) * factor).astype(np.uint8)


def _blurred(image: npt.NDArray[np.uint8], sigma: float = 15.0) -> npt.NDArray[np.uint8]:
    return np.asarray(cv2.GaussianBlur(image, (0, 0), sigma), np.uint8)


def test_real_daytime_frames_are_fit(kitti_dir: Path) -> None:
    for image in _images(kitti_dir):
        quality = measure_image(image)
        assert image_problem(quality, CONFIG) is None, quality
        # With a margin: a frame of a slightly duller day is fit too.
        assert quality.mean_luma > 3 * CONFIG.min_mean_luma
        assert quality.sharpness > 5 * CONFIG.min_sharpness


def test_dark_and_blurred_frames_are_unfit_and_say_why(kitti_dir: Path) -> None:
    for image in _images(kitti_dir):
        dark = image_problem(measure_image(_dark(image)), CONFIG)
        assert dark is not None and dark.startswith("too dark (mean luma")
        blurred = image_problem(measure_image(_blurred(image)), CONFIG)
        assert blurred is not None and blurred.startswith("too blurred (sharpness")


def test_sharpness_does_not_depend_on_exposure(kitti_dir: Path) -> None:
    """A darker exposure of the same scene is as sharp: only darkness makes it unfit."""
    image = _images(kitti_dir)[0]
    full, half = measure_image(image), measure_image(_dark(image, 0.5))
    assert half.mean_luma == pytest.approx(full.mean_luma / 2, rel=0.02)
    assert half.sharpness == pytest.approx(full.sharpness, rel=0.05)
    assert measure_image(_blurred(image, 3.0)).sharpness < full.sharpness / 2


def test_disabled_check_passes_everything_and_odd_images_do_not_break_it() -> None:
    black = np.zeros((375, 1242, 3), np.uint8)
    assert image_problem(measure_image(black), CONFIG) is not None
    assert image_problem(measure_image(black), CameraHealthConfig(enabled=False)) is None
    for shape in ((1, 1, 3), (2, 3, 3), (3, 2)):
        quality = measure_image(np.full(shape, 200, np.uint8))
        assert np.isfinite(quality.mean_luma) and np.isfinite(quality.sharpness)


@pytest.mark.parametrize(
    ("field", "value"),
    [("min_mean_luma", -1.0), ("min_mean_luma", 255.0), ("min_mean_luma", float("nan")),
     ("min_sharpness", -0.5), ("min_sharpness", float("inf"))],
)  # fmt: skip
def test_config_refuses_impossible_thresholds(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        CameraHealthConfig(**{field: value})  # type: ignore[arg-type]


def _bundle(kitti_dir: Path, *, camera: bool = True) -> SyncedBundle:
    sync = Bundler.from_config((CAMERA_STREAM,), SyncConfig(window_ms=50.0, timeout_ms=300.0))
    for msg in KittiObjectFolder(kitti_dir).frame_messages(1, 0):
        if camera or msg.header.stream != CAMERA_STREAM:
            sync.add(msg, receive_ns=0)
    (bundle,) = sync.poll(0) if camera else sync.flush()
    return bundle


def test_an_unfit_image_is_fused_as_a_missing_camera(kitti_dir: Path, yolox_path: Path) -> None:
    pipeline = Pipeline.from_config(CameraModelConfig(path=str(yolox_path), kind="yolox"))
    full = _bundle(kitti_dir)
    frame = full.cameras[CAMERA_STREAM]
    assert isinstance(frame, CameraFrame) and frame.image is not None
    dark = replace(full, cameras={CAMERA_STREAM: replace(frame, image=_dark(frame.image))})

    seen = pipeline.step(full, 0)
    assert seen.valid and seen.degraded == ()
    assert any("camera" in d.sources for d in seen.detections)

    blind = pipeline.step(dark, 1)
    assert blind.degraded == (CAMERA_STREAM,) and not blind.valid
    assert blind.detections and all(d.sources == ("lidar",) for d in blind.detections)
    missing = pipeline.step(_bundle(kitti_dir, camera=False), 2)
    assert missing.degraded == (CAMERA_STREAM,)
    assert blind.detections == missing.detections

    unchecked = Pipeline(
        pipeline.detector,
        PipelineConfig(camera_health=CameraHealthConfig(enabled=False)),
        fusion=pipeline.fusion,
        lidar_objects=pipeline.lidar_objects,
    ).step(dark, 3)
    assert unchecked.degraded == () and unchecked.valid


def test_the_node_counts_unfit_images_and_publishes_them_as_degraded(
    kitti_dir: Path, yolox_path: Path
) -> None:
    config = dataclasses.replace(
        NodeConfig(), camera_model=CameraModelConfig(path=str(yolox_path), kind="yolox")
    )
    core = NodeCore(config, Pipeline.from_config(config.camera_model))
    folder = KittiObjectFolder(kitti_dir)
    outputs = []
    for i, darken in enumerate((False, True, True, False)):
        stamp = STAMP_NS + i * 100_000_000
        for sent in folder.frame_messages(1, stamp):
            msg = sent
            if isinstance(sent, CameraFrame) and darken:
                assert sent.image is not None
                msg = replace(sent, image=_dark(sent.image))
            ready = core.on_message(msg.header.stream, msg, stamp + 1_000_000)
            if ready:
                outputs.append(core.on_bundles(ready))
    outputs += [core.on_bundles(batch) for batch in core.flush(STAMP_NS + 10**9)]
    degraded = [dl.degraded for dl in outputs if dl is not None]
    assert degraded == [(), (CAMERA_STREAM,), (CAMERA_STREAM,), ()]
    assert core.counters.unfit_images == 2
    assert core.diagnostics(STAMP_NS + 10**9).counters["unfit_images"] == 2


def test_a_frame_that_does_not_decode_is_fused_as_a_missing_camera(
    kitti_dir: Path, yolox_path: Path
) -> None:
    """A corrupt JPEG costs its camera's boxes for that sweep, not the lidar's objects: the
    camera is left out and listed as degraded, as an unfit image is, in line and ahead."""
    pipeline = Pipeline.from_config(CameraModelConfig(path=str(yolox_path), kind="yolox"))
    full = _bundle(kitti_dir)
    frame = full.cameras[CAMERA_STREAM]
    assert isinstance(frame, CameraFrame) and frame.image is not None
    ok, jpeg = cv2.imencode(".jpg", frame.image)
    assert ok
    torn = replace(frame, image=None, data=jpeg.tobytes()[:2000], encoding="jpeg")
    corrupt = replace(full, cameras={CAMERA_STREAM: torn})

    out = pipeline.step(corrupt, 0)
    assert out.degraded == (CAMERA_STREAM,) and not out.valid
    missing = pipeline.step(_bundle(kitti_dir, camera=False), 1)
    assert out.detections and out.detections == missing.detections

    camera = full.rig.cameras[pipeline.camera_name(torn, full.rig) or ""]
    encoding = pipeline.encode_camera(torn, camera)
    assert encoding.problem == "does not decode as jpeg" and encoding.boxes == ()
