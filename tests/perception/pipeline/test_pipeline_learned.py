"""The pipeline with the learned engine and the ensemble, on real KITTI frames (the engine
trained in the session to overfit the labelled frames: these tests check the node's use of it,
not how well it generalises)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from engines.errors import ModelError
from engines.settings import EngineSettings
from perception.config import CameraModelConfig, FusionConfig, SyncConfig
from perception.msgs.types import DetectionList, SyncedBundle
from perception.pipeline import Pipeline, PipelineConfig
from perception.sync import Bundler
from replay.datasets.kitti_object import CAMERA_STREAM, KittiObjectFolder
from replay.evaluation import read_pointpillars_boxes

FRAME_INDEX = 1  # 000003: two cars with reference boxes


def _bundle(kitti_dir: Path, index: int, *, camera: bool = True) -> SyncedBundle:
    sync = Bundler.from_config((CAMERA_STREAM,), SyncConfig(window_ms=50.0, timeout_ms=300.0))
    for msg in KittiObjectFolder(kitti_dir).frame_messages(index, 0):
        if camera or msg.header.stream != CAMERA_STREAM:
            sync.add(msg, receive_ns=0)
    bundles = sync.poll(0) if camera else sync.flush()
    (bundle,) = bundles
    return bundle


def _pipeline(yolox_path: Path, kind: str, model: Path, **engines: Any) -> Pipeline:
    return Pipeline.from_config(
        CameraModelConfig(path=str(yolox_path), kind="yolox"),
        engines=EngineSettings(**engines),
        config=PipelineConfig(fusion=FusionConfig(kind=kind, model=str(model))),
    )


def _cars_found(dl: DetectionList, data_dir: Path) -> list[tuple[float, tuple[str, ...]]]:
    refs = read_pointpillars_boxes(
        data_dir / "kitti_pointpillars" / "reference_pred_velo" / "000003.txt"
    )
    out = []
    for ref in (r for r in refs if r.score >= 0.5 and r.range_m <= 25.0):
        near = [
            d
            for d in dl.detections
            if math.hypot(d.center[0] - ref.center[0], d.center[1] - ref.center[1]) < 1.5
        ]
        assert len(near) == 1, f"reference at {ref.center}: {len(near)} detections"
        out.append((near[0].score, near[0].sources))
        assert near[0].label == "Car"
    return out


@pytest.fixture(scope="module")
def learned_model(kitti_learned: Any) -> Path:
    path: Path = kitti_learned.onnx_path
    return path


def test_learned_fusion_in_the_pipeline(
    kitti_dir: Path, yolox_path: Path, data_dir: Path, learned_model: Path
) -> None:
    pipeline = _pipeline(yolox_path, "learned", learned_model)
    assert [s for s, _ in pipeline.engines()][-1] == "learned_fusion"
    dl = pipeline.step(_bundle(kitti_dir, FRAME_INDEX), 0)
    found = _cars_found(dl, data_dir)
    assert len(found) == 2
    # Both cars are in the camera's boxes: the camera contributed to each.
    assert all(sources == ("camera", "lidar") for _, sources in found)
    assert "fusion" in dl.timings_ns


def test_without_the_camera_the_learned_engine_still_labels_cars(
    kitti_dir: Path, yolox_path: Path, data_dir: Path, learned_model: Path
) -> None:
    pipeline = _pipeline(yolox_path, "learned", learned_model)
    dl = pipeline.step(_bundle(kitti_dir, FRAME_INDEX, camera=False), 0)
    assert dl.degraded == (CAMERA_STREAM,)
    found = _cars_found(dl, data_dir)
    assert found and all(sources == ("lidar",) for _, sources in found)


def test_ensemble_counts_each_object_once(
    kitti_dir: Path, yolox_path: Path, data_dir: Path, learned_model: Path
) -> None:
    ensemble = _pipeline(yolox_path, "ensemble", learned_model)
    dl = ensemble.step(_bundle(kitti_dir, FRAME_INDEX), 0)
    found = _cars_found(dl, data_dir)  # asserts one detection per car
    assert len(found) == 2
    geometric = Pipeline.from_config(CameraModelConfig(path=str(yolox_path), kind="yolox"))
    geo = geometric.step(_bundle(kitti_dir, FRAME_INDEX), 0)
    # A car both fusions found scores at least what either gave it.
    geo_scores = sorted(s for s, _ in _cars_found(geo, data_dir))
    assert all(a >= b - 1e-6 for a, b in zip(sorted(s for s, _ in found), geo_scores, strict=True))


def test_torch_backend_runs_the_same_learned_engine(
    kitti_dir: Path, yolox_path: Path, learned_model: Path
) -> None:
    pytest.importorskip("torch")
    bundle = _bundle(kitti_dir, FRAME_INDEX)
    ort_dl = _pipeline(yolox_path, "learned", learned_model).step(bundle, 0)
    torch_dl = _pipeline(yolox_path, "learned", learned_model, backend="torch").step(bundle, 0)
    assert [d.label for d in ort_dl.detections] == [d.label for d in torch_dl.detections]
    for a, b in zip(ort_dl.detections, torch_dl.detections, strict=True):
        assert a.center == pytest.approx(b.center, abs=1e-3)
        assert a.score == pytest.approx(b.score, abs=1e-4)


def test_a_missing_learned_model_is_one_clear_error(yolox_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found") as info:
        _pipeline(yolox_path, "learned", tmp_path / "none.onnx")
    assert "perception train" in str(info.value)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    with pytest.raises(ModelError, match=r"m\.yaml"):
        _pipeline(yolox_path, "learned", model)
    with pytest.raises(ValueError, match="needs the learned engine"):
        geometric = Pipeline.from_config(CameraModelConfig(path=str(yolox_path), kind="yolox"))
        Pipeline(geometric.detector, replace(geometric.config, fusion=FusionConfig("learned")))


def test_a_learned_model_config_that_is_not_yaml_is_one_line(
    yolox_path: Path, tmp_path: Path
) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    (tmp_path / "m.yaml").write_text("model: [\n")
    with pytest.raises(ModelError, match=r"m\.yaml: not a learned model config") as info:
        _pipeline(yolox_path, "learned", model)
    assert "\n" not in str(info.value)


def test_score_thresholds_of_one_are_said_and_keep_no_camera_box(
    yolox_path: Path, kitti_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A threshold of 1 is allowed but keeps (almost) nothing: the pipeline says so, in its
    notes (the node's diagnostics) and in the log, rather than running blind silently."""
    with caplog.at_level("WARNING", logger="perception.pipeline.pipeline"):
        pipeline = Pipeline.from_config(
            CameraModelConfig(path=str(yolox_path), kind="yolox", score_threshold=1.0),
            config=PipelineConfig(fusion=FusionConfig(kind="ensemble", score_threshold=1.0)),
        )
    camera, learned = pipeline.notes
    assert camera.startswith("camera_model.score_threshold 1: no camera box scores above it")
    assert learned.startswith("learned fusion score threshold 1 for Car, Pedestrian, Cyclist:")
    assert [r.getMessage() for r in caplog.records] == [camera, learned]
    dl = pipeline.step(_bundle(kitti_dir, FRAME_INDEX), 0)
    assert dl.detections, "the lidar alone still finds objects"
    assert not [d for d in dl.detections if "camera" in d.sources]


def test_working_score_thresholds_say_nothing(yolox_path: Path) -> None:
    pipeline = Pipeline.from_config(
        CameraModelConfig(path=str(yolox_path), kind="yolox", score_threshold=0.99),
        config=PipelineConfig(fusion=FusionConfig(kind="learned", score_threshold=0.99)),
    )
    assert pipeline.notes == ()
