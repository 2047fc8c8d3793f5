"""Attribution of the packaged learned engine on synthetic frames training never saw: an object
the camera cannot see owes its score to the lidar alone (removing the camera features in the
same engine call leaves it), and `sources` follows the score the camera adds.

How much the camera adds for objects it sees is a property of the trained model, reported in
benchmarks/RESULTS.md: the packaged one leans on the lidar (its camera raises a seen object's
score by a few thousandths at the median)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engines.factory import EngineFactory
from engines.fusion.learned_config import PACKAGED_LEARNED_MODEL
from engines.fusion.learned_runner import LearnedFusionRunner
from perception.pipeline.ensemble import learned_detections
from perception.pipeline.painting import PaintView, paint_points
from replay.training.fusion_config import CameraPaintConfig
from replay.training.fusion_data import prepare
from replay.training.sources import SyntheticSource
from replay.training.train_fusion import build_painter

# The camera's half field of view is 40.7 degrees; objects well outside it and well inside it.
OUTSIDE_DEG = 50.0
INSIDE_DEG = 30.0
#: "About 0": an object outside the view may still see in-view points at the edge of the BEV
#: net's receptive field; its score moves by less than this when the camera is removed.
OUTSIDE_TOLERANCE = 0.02
CAMERA_CONTRIBUTION = 0.05


@pytest.mark.skipif(not PACKAGED_LEARNED_MODEL.is_file(), reason="no packaged learned model")
def test_camera_contribution_is_zero_outside_the_view_and_sources_follow_it() -> None:
    engine, model = EngineFactory().learned_fusion_engine("learned_fusion")
    runner = LearnedFusionRunner.for_model(engine, model)
    painter = build_painter(CameraPaintConfig(model="synth", kind="yolox", score_threshold=0.15))
    source = SyntheticSource([4, 5], seconds=1.0)  # seeds training never used
    outside: list[float] = []
    inside: list[float] = []
    for index in range(0, len(source), 2):
        sample = source[index]
        found = runner.run(prepare(sample, painter, model.config).points)
        dets = learned_detections(
            found.rows, found.camera_free_score, model.config.classes,
            camera_seen=True, camera_contribution=CAMERA_CONTRIBUTION,
        )  # fmt: skip
        for det, free in zip(dets, found.camera_free_score, strict=True):
            gain = det.score - float(free)
            assert ("camera" in det.sources) == (gain > CAMERA_CONTRIBUTION)
            if not any(math.dist(b.center[:2], det.center[:2]) < 1.0 for b in sample.boxes):
                continue
            bearing = abs(math.degrees(math.atan2(det.center[1], det.center[0])))
            if bearing > OUTSIDE_DEG:
                outside.append(gain)
            elif bearing < INSIDE_DEG:
                inside.append(gain)
    assert len(outside) >= 5 and len(inside) >= 20
    assert max(abs(g) for g in outside) < OUTSIDE_TOLERANCE, outside
    # Inside the view the camera features do reach the score (the attribution is not vacuous).
    assert max(abs(g) for g in inside) > 2 * max(abs(g) for g in outside)
    assert np.median(np.abs(inside)) > np.median(np.abs(outside))


def test_painting_marks_only_points_the_camera_sees() -> None:
    """The premise of the attribution: points outside the view carry no camera channel."""
    source = SyntheticSource([4], seconds=0.1)
    sample = source[0]
    view = sample.cameras["front"]
    painted = paint_points(
        sample.points, [PaintView(view.model, view.camera_from_vehicle, [])], ("Car",)
    )
    bearing = np.degrees(np.abs(np.arctan2(painted[:, 1], painted[:, 0])))
    assert not painted[(bearing > 45.0) | (painted[:, 0] < 0), -1].any()
    assert painted[(bearing < 35.0) & (painted[:, 0] > 8.0), -1].all()
