"""The one sample type every training source yields (synthetic drives, MCAP drives with a
ground-truth channel, KITTI object folders with ``label_2``).

A sample is what the node sees for one lidar sweep plus what it should have found: the points in
the vehicle frame, each camera's image with the model and the transform that projects vehicle
points into it (motion between the sweep stamp and the camera's stamp already applied, as the
node's pipeline does), and the ground-truth boxes in the vehicle frame. Box conventions are those
of ``replay.evaluation``: centre (m), size (length, width, height; m) with the length along
``yaw`` (rad, about +z).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from calibration.camera import CameraModel

__all__ = ["TRAINING_CLASSES", "BoxLabel", "CameraView", "TrainingSample"]

#: The classes the learned fusion engine is trained on, in head order (KITTI names, as the node
#: reports them).
TRAINING_CLASSES: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")


@dataclass(frozen=True)
class BoxLabel:
    """One ground-truth object of a sample, in the vehicle frame at the sweep stamp.

    ``velocity`` is over ground (m/s, vehicle-frame axes) and NaN where the source does not know
    it (KITTI object frames); ``track_id`` is -1 where unknown; ``visibility`` is the fraction of
    the object the camera sees (0-1), NaN where unknown; ``lidar_points`` the returns on it, -1
    where unknown."""

    label: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float
    velocity: tuple[float, float] = (math.nan, math.nan)
    track_id: int = -1
    visibility: float = math.nan
    lidar_points: int = -1


@dataclass(frozen=True)
class CameraView:
    """One camera of a sample: the image (H x W x 3 uint8 BGR, undistorted: the model is the
    pinhole the pipeline's detector sees), its model and ``camera_from_vehicle`` (4 x 4) at the
    camera's stamp."""

    image: npt.NDArray[np.uint8]
    model: CameraModel
    camera_from_vehicle: npt.NDArray[np.float64]


@dataclass(frozen=True)
class TrainingSample:
    """One lidar sweep with its cameras and ground truth. ``name`` says where it came from
    (e.g. ``kitti:000003``, ``synth:seed=4:seq=17``), for error messages and logs."""

    name: str
    points: npt.NDArray[np.float32]  # N x 4: x, y, z (vehicle frame, m), intensity
    cameras: Mapping[str, CameraView]
    boxes: tuple[BoxLabel, ...]
    stamp_ns: int = 0
    extra: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        pts = self.points
        if pts.ndim != 2 or pts.shape[1] != 4 or pts.dtype != np.float32:
            raise ValueError(
                f"{self.name}: points must be N x 4 float32, got {pts.shape} {pts.dtype}"
            )
