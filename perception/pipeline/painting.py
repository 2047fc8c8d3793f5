"""PointPainting, box-level: what the cameras said about each lidar point.

Every point is projected into every camera; a point in front of a camera and inside its image
gets the camera flag, and inside a 2D box of one of the learned engine's classes it gets that
box's score in the class's channel (the highest when boxes overlap). A point no camera sees keeps
zeros and flag 0, which is also how a missing camera looks: the learned engine is trained with
cameras removed that way (modality dropout).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from calibration.camera import CameraModel
from engines.camera.detector import Box2D

__all__ = ["PaintView", "paint_points"]


@dataclass(frozen=True)
class PaintView:
    """One camera's say: its pinhole ``model`` (the undistorted image the detector saw),
    ``camera_from_vehicle`` (4 x 4, at the camera's stamp) and its 2D ``boxes``."""

    model: CameraModel
    camera_from_vehicle: npt.NDArray[np.float64]
    boxes: Sequence[Box2D]


def paint_points(
    points: npt.NDArray[np.float32], views: Sequence[PaintView], classes: Sequence[str]
) -> npt.NDArray[np.float32]:
    """``points`` (N x 4 or more: x, y, z in the vehicle frame, intensity) with one score
    channel per class of ``classes`` and the camera flag appended: N x (4 + len(classes) + 1).

    Raises:
        ValueError: ``points`` is not N x >= 4.
    """
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] < 4:
        raise ValueError(f"points to paint must be N x 4 (x, y, z, intensity), got {pts.shape}")
    n = len(pts)
    paint = np.zeros((n, len(classes) + 1), np.float32)
    index = {label: i for i, label in enumerate(classes)}
    homogeneous = np.concatenate([pts[:, :3].astype(np.float64), np.ones((n, 1))], axis=1)
    for view in views:
        # As rows (x, y, z each contiguous, `RigidTransform.apply_rows`): the same values, and
        # the view's culling runs along contiguous memory.
        in_camera = np.asarray(view.camera_from_vehicle, np.float64)[:3] @ homogeneous.T
        # Only the points this camera sees are projected and tested against its boxes (a
        # sweep is mostly behind or beside a camera).
        seen, uv = view.model.in_view(in_camera.T)
        paint[seen, -1] = 1.0
        for box in view.boxes:
            c = index.get(box.label)
            if c is None:
                continue
            inside = seen[
                (uv[:, 0] >= box.x1)
                & (uv[:, 0] < box.x2)
                & (uv[:, 1] >= box.y1)
                & (uv[:, 1] < box.y2)
            ]
            paint[inside, c] = np.maximum(paint[inside, c], np.float32(box.score))
    return np.concatenate([pts[:, :4], paint], axis=1)
