"""Box-level PointPainting on a real KITTI frame."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from engines.camera.detector import Box2D
from perception.pipeline.painting import PaintView, paint_points
from replay.evaluation import box_corners, read_kitti_labels
from tests.conftest import KittiFrame

CLASSES = ("Car", "Pedestrian", "Cyclist")


def _label_box(kitti_dir: Path) -> tuple[float, float, float, float]:
    parts = (kitti_dir / "label_2" / "000000.txt").read_text().split()
    x1, y1, x2, y2 = (float(v) for v in parts[4:8])
    return x1, y1, x2, y2


def test_points_of_the_labelled_pedestrian_get_its_score(
    kitti_frame: Callable[[str], KittiFrame], kitti_dir: Path
) -> None:
    frame = kitti_frame("000000")
    x1, y1, x2, y2 = _label_box(kitti_dir)
    view = PaintView(
        frame.camera,
        frame.camera_from_vehicle.matrix,
        [Box2D("Pedestrian", 0, 0.8, x1, y1, x2, y2), Box2D("traffic light", 9, 0.9, 0, 0, 50, 50)],
    )
    painted = paint_points(frame.points, [view], CLASSES)
    assert painted.shape == (len(frame.points), 8)
    np.testing.assert_array_equal(painted[:, :4], frame.points)
    # Every point of this FOV-cropped scan is in the image: all flagged.
    assert (painted[:, 7] == 1.0).all()
    (label,) = read_kitti_labels(kitti_dir / "label_2" / "000000.txt", frame.calib_path)
    corners = box_corners(label)
    lo, hi = corners.min(0), corners.max(0)
    inside = np.all((frame.points[:, :3] >= lo) & (frame.points[:, :3] <= hi), axis=1)
    assert inside.sum() >= 20
    np.testing.assert_allclose(painted[inside, 5], 0.8)
    # The 2D box also paints what lies behind the pedestrian, but nothing outside the box;
    # classes the engine does not learn paint nothing.
    painted_ped = painted[:, 5] > 0
    uv, _ = frame.camera.project(frame.camera_from_vehicle.apply(frame.points[:, :3]))
    assert (uv[painted_ped, 0] >= x1).all() and (uv[painted_ped, 0] < x2).all()
    assert painted[:, [4, 6]].max() == 0.0


def test_overlapping_boxes_keep_the_best_score_and_unseen_points_stay_blank(
    kitti_frame: Callable[[str], KittiFrame],
) -> None:
    frame = kitti_frame("000003")
    w, h = frame.camera.width, frame.camera.height
    boxes = [Box2D("Car", 2, 0.4, 0, 0, w, h), Box2D("Car", 2, 0.9, 0, 0, w / 2, h)]
    painted = paint_points(
        np.concatenate([frame.points, [[-10.0, 0.0, 0.0, 0.3]]]).astype(np.float32),
        [PaintView(frame.camera, frame.camera_from_vehicle.matrix, boxes)],
        CLASSES,
    )
    uv, _ = frame.camera.project(frame.camera_from_vehicle.apply(frame.points[:, :3]))
    left = uv[:, 0] < w / 2
    np.testing.assert_allclose(painted[:-1][left, 4], 0.9)
    np.testing.assert_allclose(painted[:-1][~left, 4], 0.4)
    # The point behind the vehicle is in no camera: no flag, no score.
    assert not painted[-1, 4:].any()
    # No camera at all: every point is blank, as a removed camera is in training.
    assert not paint_points(frame.points, [], CLASSES)[:, 4:].any()


def test_painting_refuses_points_without_xyz_and_intensity() -> None:
    with pytest.raises(ValueError, match="N x 4"):
        paint_points(np.zeros((3, 3), np.float32), [], CLASSES)
