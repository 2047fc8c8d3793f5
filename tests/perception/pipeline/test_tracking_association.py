"""The tracker's association cost and score floor (perception.pipeline.tracking), on cases built
so that the answer is known."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from perception.config import TrackingConfig
from perception.msgs.types import Detection3D
from perception.pipeline.tracking import Tracker
from perception.pipeline.tracking.association import innovation_log_det

DT_NS = 100_000_000


def _car(x: float, y: float, score: float = 0.9, label: str = "Car") -> Detection3D:
    return Detection3D(label, score, (x, y, -0.8), (4.5, 1.8, 1.5), 0.0)


def test_a_confirmed_track_keeps_its_detection_from_a_new_wide_gated_one() -> None:
    tracker = Tracker()
    for k in range(10):
        tracks = tracker.update([_car(10.0, 0.0)], k * DT_NS, None)
    assert tracks is not None and [t.track_id for t in tracks] == [1]
    # A spurious detection beside the car starts a second, tentative track, whose speed is
    # unknown: its gate is metres wide.
    tracker.update([_car(10.0, 0.0), _car(11.0, 0.0)], 10 * DT_NS, None)
    # The car's next detection, 0.3 m off: the new track explains it with a smaller
    # Mahalanobis distance (about 0.1 against 1.5), the confirmed track far more likely.
    tracks = tracker.update([_car(10.3, 0.0)], 11 * DT_NS, None)
    assert tracks is not None
    (car,) = tracks
    assert (car.track_id, car.misses, car.hits) == (1, 0, 12)


def test_detections_below_the_score_floor_are_not_tracked() -> None:
    config = replace(TrackingConfig(), min_score=0.2)
    tracker = Tracker(config)
    for k in range(6):
        tracks = tracker.update([_car(20.0, 5.0, score=0.19)], k * DT_NS, None)
        assert tracks == ()
    for k in range(6, 9):
        tracks = tracker.update([_car(20.0, 5.0, score=0.2)], k * DT_NS, None)
    assert tracks is not None and len(tracks) == 1
    (before,) = tracks
    # A low-scored detection does not move the track (a fragment beside the car).
    tracks = tracker.update([_car(21.0, 5.0, score=0.05)], 9 * DT_NS, None)
    assert tracks is not None
    (after,) = tracks
    assert (after.misses, after.hits) == (1, before.hits)
    assert tracker.skipped_detections == 0  # skipped counts only non-finite detections


def test_the_innovation_log_determinant() -> None:
    cov = np.array([[[1.0, 0.5], [0.5, 2.0]]])
    variances = np.array([0.0, 1.0])
    expected = [np.log(np.linalg.det(cov[0] + v * np.eye(2))) for v in variances]
    assert innovation_log_det(cov, variances)[0] == pytest.approx(expected)


def test_the_score_floor_is_checked() -> None:
    from perception.errors import ConfigError

    with pytest.raises(ConfigError, match="min_score: must be in"):
        TrackingConfig(min_score=1.5)
