"""Batch-N copies of batch-1 detectors: each image of a batch gets its own batch-1 output, on
real KITTI images; graphs that mix images are refused."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from engines.camera.batching import BATCH_TOLERANCE, batched_onnx
from engines.camera.detector import CameraDetector
from engines.errors import EngineError
from engines.onnxruntime_backend import OnnxRuntimeEngine
from replay.datasets.kitti_object import read_image


@pytest.fixture(scope="module")
def images(kitti_dir: Path) -> list[np.ndarray]:
    return [read_image(kitti_dir / "image_2" / f"{i}.png") for i in ("000003", "000008")]


def test_batched_yolox_gives_each_camera_its_own_output(
    yolox_path: Path, images: list[np.ndarray], tmp_path: Path
) -> None:
    if not yolox_path.is_file():
        pytest.skip(f"real data not found: {yolox_path}")
    single = CameraDetector(OnnxRuntimeEngine(yolox_path), kind="yolox")
    batched = CameraDetector(OnnxRuntimeEngine(batched_onnx(yolox_path, 3, tmp_path)), kind="yolox")
    assert (single.batch_size, batched.batch_size) == (1, 3)
    # Two cameras in a batch of three: the last slot is padding, one engine call.
    tensors = [single.preprocess(image) for image in images]
    raws = batched.infer_batch([t for t, _ in tensors])
    assert len(raws) == 2
    for (tensor, letterbox), raw in zip(tensors, raws, strict=True):
        alone = single.infer(tensor)
        assert raw.shape == alone.shape
        assert np.max(np.abs(raw - alone)) <= BATCH_TOLERANCE
        ours, theirs = batched.decode(raw, letterbox), single.decode(alone, letterbox)
        assert [b.label for b in ours] == [b.label for b in theirs] and ours
        for a, b in zip(ours, theirs, strict=True):
            assert a.x1 == pytest.approx(b.x1, abs=0.05) and a.y2 == pytest.approx(b.y2, abs=0.05)
    # Five cameras: two calls (3 + 2), outputs in camera order.
    five = batched.infer_batch([t for t, _ in tensors] * 2 + [tensors[0][0]])
    assert len(five) == 5 and np.array_equal(five[4], raws[0])


def test_batched_copy_is_cached(yolox_path: Path, tmp_path: Path) -> None:
    if not yolox_path.is_file():
        pytest.skip(f"real data not found: {yolox_path}")
    first = batched_onnx(yolox_path, 2, tmp_path)
    stamp = first.stat().st_mtime_ns
    assert batched_onnx(yolox_path, 2, tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert batched_onnx(yolox_path, 1, tmp_path) == yolox_path
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]
    with pytest.raises(EngineError, match="batch must be >= 1"):
        batched_onnx(yolox_path, 0, tmp_path)


def test_graphs_that_mix_images_are_refused(data_dir: Path, tmp_path: Path) -> None:
    fastest = data_dir / "camera_detector" / "yolo_fastestv2_coco_352.onnx"
    if not fastest.is_file():
        pytest.skip(f"real data not found: {fastest}")
    with pytest.raises(EngineError, match=r"yolo_fastestv2_coco_352\.onnx: cannot be batched"):
        batched_onnx(fastest, 2, tmp_path)
    assert not list(tmp_path.glob("*.onnx*"))  # nothing half-written left behind


def test_without_onnx_the_error_says_what_to_do(
    yolox_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not yolox_path.is_file():
        pytest.skip(f"real data not found: {yolox_path}")
    monkeypatch.setitem(sys.modules, "onnx", None)  # as on a runtime-only install
    with pytest.raises(EngineError, match=r"pip install onnx\), or camera_model.batch: 1"):
        batched_onnx(yolox_path, 2, tmp_path)


def test_pipeline_with_a_batched_camera_encoder_gives_the_same_detections(
    yolox_path: Path, kitti_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not yolox_path.is_file():
        pytest.skip(f"real data not found: {yolox_path}")
    import engines.camera.batching
    from perception.config import CameraModelConfig
    from perception.pipeline import Pipeline
    from replay.datasets.kitti_object import KittiObjectFolder
    from replay.offline import run_messages

    monkeypatch.setattr(engines.camera.batching, "DEFAULT_BATCH_CACHE_DIR", tmp_path)
    runs = []
    for batch in (1, 2):
        model = CameraModelConfig(path=str(yolox_path), kind="yolox", batch=batch)
        pipeline = Pipeline.from_config(model)
        assert pipeline.detector.batch_size == batch
        folder = KittiObjectFolder(kitti_dir)
        runs.append(list(run_messages(folder.messages(), pipeline)))
    for a, b in zip(*runs, strict=True):
        assert [(d.label, d.sources) for d in a.detections] == [
            (d.label, d.sources) for d in b.detections
        ]
        for x, y in zip(a.detections, b.detections, strict=True):
            assert np.allclose(x.center, y.center, atol=0.01)


def test_the_projects_detector_batches(tmp_path: Path) -> None:
    from replay.synth.demo import SYNTH_DETECTOR_PATH

    single = CameraDetector(OnnxRuntimeEngine(SYNTH_DETECTOR_PATH), kind="yolox")
    batched = CameraDetector(
        OnnxRuntimeEngine(batched_onnx(SYNTH_DETECTOR_PATH, 2, tmp_path)), kind="yolox"
    )
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (375, 1242, 3), dtype=np.uint8) for _ in range(2)]
    tensors = [single.preprocess(image)[0] for image in images]
    for tensor, raw in zip(tensors, batched.infer_batch(tensors), strict=True):
        assert np.max(np.abs(raw - single.infer(tensor))) <= BATCH_TOLERANCE
