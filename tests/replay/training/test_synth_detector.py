"""The packaged synthetic-drive detector finds the synthetic cars; the training script runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.camera.detector import Box2D, CameraDetector
from engines.onnxruntime_backend import OnnxRuntimeEngine
from replay.synth.demo import SYNTH_DETECTOR_PATH
from replay.synth.world import CAMERA_NAME, Box2DTruth, make_world, render_camera, synth_rig


def test_detector_recall_on_held_out_renders() -> None:
    detector = CameraDetector(
        OnnxRuntimeEngine(SYNTH_DETECTOR_PATH), kind="yolox", score_threshold=0.3
    )
    assert SYNTH_DETECTOR_PATH.stat().st_size < 5_000_000
    rig = synth_rig()
    camera = rig.cameras[CAMERA_NAME]
    vehicle_from_camera = rig.transform("camera/front", "vehicle").inverse()
    world = make_world(np.random.default_rng(12345), 10.0)  # a seed training never used
    found = total = 0
    for t in (0.5, 3.0, 6.5, 9.0):
        image, truth = render_camera(world, t, camera, vehicle_from_camera, distort=False)  # type: ignore[arg-type]
        boxes = detector.detect(image)
        cars = [b for b in boxes if b.label == "Car"]
        for gt in truth:
            if gt.label != "Car" or gt.visible < 0.5 or gt.distance_m > 40 or gt.y2 - gt.y1 < 12:
                continue
            total += 1
            for b in cars:
                ix = max(0.0, min(b.x2, gt.x2) - max(b.x1, gt.x1))
                iy = max(0.0, min(b.y2, gt.y2) - max(b.y1, gt.y1))
                union = (b.x2 - b.x1) * (b.y2 - b.y1) + (gt.x2 - gt.x1) * (gt.y2 - gt.y1) - ix * iy
                if ix * iy / union >= 0.5:
                    found += 1
                    break
    assert total >= 10
    assert found / total >= 0.85


def test_boxes_of_cars_cut_off_by_the_image_edge_reach_it() -> None:
    # The fusion engine anchors a car cut off by the image edge at its far end only when its 2D
    # box touches the edge (within FusionEngineConfig.image_edge_margin_px = 2 px).
    detector = CameraDetector(
        OnnxRuntimeEngine(SYNTH_DETECTOR_PATH), kind="yolox", score_threshold=0.3
    )
    rig = synth_rig()
    camera = rig.cameras[CAMERA_NAME]
    vehicle_from_camera = rig.transform("camera/front", "vehicle").inverse()
    world = make_world(np.random.default_rng(12345), 10.0)  # a seed training never used
    reached = total = 0
    for t in np.arange(0.25, 10.0, 0.5):
        image, truth = render_camera(world, float(t), camera, vehicle_from_camera, distort=False)  # type: ignore[arg-type]
        cars = [b for b in detector.detect(image) if b.label == "Car"]
        for gt in truth:
            left, right = gt.x1 <= 0.5, gt.x2 >= camera.width - 0.5
            if gt.label != "Car" or gt.visible < 0.5 or not (left or right):
                continue
            best = max(cars, key=lambda b: _iou(b, gt), default=None)
            if best is None or _iou(best, gt) < 0.5:
                continue
            total += 1
            reached += (not left or best.x1 <= 2.0) and (not right or best.x2 >= camera.width - 2)
    assert total >= 8
    assert reached / total >= 0.9


def _iou(a: Box2D, b: Box2DTruth) -> float:
    ix = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    iy = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - ix * iy
    return ix * iy / union


def test_training_boxes_cut_off_by_the_edge_extend_past_it() -> None:
    pytest.importorskip("torch")
    from replay.training.train_detector import EDGE_EXTEND_PX, _extend_cut

    cut = Box2DTruth(0, "Car", 0.0, 150.0, 1242.0, 375.0, 1.0, 5.0)
    assert _extend_cut(cut, 1242, 375) == (
        -EDGE_EXTEND_PX,
        150.0,
        1242.0 + EDGE_EXTEND_PX,
        375.0 + EDGE_EXTEND_PX,
    )
    inside = Box2DTruth(0, "Car", 10.0, 150.0, 1200.0, 300.0, 1.0, 5.0)
    assert _extend_cut(inside, 1242, 375) == (10.0, 150.0, 1200.0, 300.0)


def test_training_script_runs_two_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    from replay.training.train_detector import main, train

    out = tmp_path / "m.onnx"
    assert main(["--images", "4", "--steps", "2", "--batch", "2", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "rendered 4 images" in said and "step    1 loss" in said and f"wrote {out}" in said
    # The training itself says nothing unless told where to.
    train(seed=0, images=2, steps=1, batch=1)
    assert capsys.readouterr().out == ""
    detector = CameraDetector(OnnxRuntimeEngine(out), kind="yolox")
    assert detector.input_width == 640 and detector.input_height == 192
