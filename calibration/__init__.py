"""The sensor rig: frames and transforms, camera models, loaders."""

from calibration.camera import PinholeCamera
from calibration.errors import CalibrationError
from calibration.kitti import load_kitti_object_calib
from calibration.rig import VEHICLE_FRAME, Rig
from calibration.transforms import RigidTransform

__all__ = [
    "VEHICLE_FRAME",
    "CalibrationError",
    "PinholeCamera",
    "Rig",
    "RigidTransform",
    "load_kitti_object_calib",
]
