"""The packaged synthetic-drive detector finds the synthetic cars; the training script runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.camera_encoder import CameraDetector
from replay.demo import SYNTH_DETECTOR_PATH
from replay.synth import CAMERA_NAME, make_world, render_camera, synth_rig


def test_detector_recall_on_held_out_renders() -> None:
    detector = CameraDetector(SYNTH_DETECTOR_PATH, kind="yolox", score_threshold=0.3)
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


def test_training_script_runs_two_steps(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from replay.train_detector import main

    out = tmp_path / "m.onnx"
    assert main(["--images", "4", "--steps", "2", "--batch", "2", "--out", str(out)]) == 0
    detector = CameraDetector(out, kind="yolox")
    assert detector.input_width == 640 and detector.input_height == 192
