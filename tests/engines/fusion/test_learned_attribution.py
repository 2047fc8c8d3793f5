"""Attribution of the packaged learned engine on synthetic frames training never saw: each
detection says what the camera contributed (its score minus its score with the camera features
removed, in the same engine call), `sources` follows it, an object the camera cannot see owes
its score to the lidar alone, and an object the camera sees and names gets both modalities.

The figures per class, in both worlds, are in benchmarks/RESULTS.md (`python -m
benchmarks.attribution`)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from engines.fusion.learned_config import PACKAGED_LEARNED_MODEL
from perception.config import FusionConfig
from perception.pipeline.painting import PaintView, paint_points
from replay.training.attribution import attributed_detections
from replay.training.sources import SyntheticSource

# The camera's half field of view is 40.7 degrees; objects well outside it and well inside it.
OUTSIDE_DEG = 50.0
INSIDE_DEG = 30.0
#: "About 0": an object outside the view may still see in-view points at the edge of the BEV
#: net's receptive field; its score moves by less than this when the camera is removed.
OUTSIDE_TOLERANCE = 0.02
CAMERA_CONTRIBUTION = FusionConfig().camera_contribution
#: Of the objects in view that the camera's detector names (a 2D box of their class covers
#: their points), at least this share lists the camera; the rest are objects the camera
#: contributed little to (a camera box of another class, or a weak one).
BOTH_MODALITIES = 0.8


@pytest.mark.skipif(not PACKAGED_LEARNED_MODEL.is_file(), reason="no packaged learned model")
def test_camera_contribution_is_zero_outside_the_view_and_both_modalities_inside() -> None:
    source = SyntheticSource([4, 5], seconds=1.0)  # seeds training never used
    frames = (source[i] for i in range(0, len(source), 2))
    outside: list[float] = []
    # Per class: whether each object in view, named by the camera, lists the camera.
    named: dict[str, list[bool]] = defaultdict(list)
    for found in attributed_detections(frames, camera_contribution=CAMERA_CONTRIBUTION):
        det = found.detection
        gain = det.score - found.camera_free_score
        assert ("camera" in det.sources) == (gain > CAMERA_CONTRIBUTION)
        # Each detection says what the camera contributed: the same difference.
        assert det.camera_contribution == pytest.approx(gain, abs=1e-9)
        if not found.matched:
            continue
        if found.bearing_deg > OUTSIDE_DEG:
            outside.append(gain)
        elif found.bearing_deg < INSIDE_DEG and found.named_by_camera:
            named[det.label].append("camera" in det.sources)
    assert len(outside) >= 5, outside
    assert max(abs(g) for g in outside) < OUTSIDE_TOLERANCE, outside
    # Every class of the engine (Car, Pedestrian, Cyclist), 30 objects or more.
    assert sum(len(v) for v in named.values()) >= 30 and len(named) == 3, named
    shares = {label: float(np.mean(v)) for label, v in named.items()}
    overall = float(np.mean([x for v in named.values() for x in v]))
    assert overall >= BOTH_MODALITIES, shares
    assert min(shares.values()) >= BOTH_MODALITIES - 0.15, shares


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
