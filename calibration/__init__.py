"""The sensor rig: frames and transforms, camera models, loaders, geodesy and checks.

See `calibration.rig` for the rig file schema and `calibration.loaders.load_rig` for the formats
read. Nothing here imports the node (`perception`, `engines`, `replay`).
"""

from typing import TYPE_CHECKING, Any

from calibration.camera import CameraModel, FisheyeCamera, PinholeCamera
from calibration.check import CheckResult, calibration_check, describe_rig, read_scan
from calibration.errors import CalibrationError
from calibration.geodesy import LocalTangentPlane, vehicle_pose_from_gnss
from calibration.kitti import load_kitti_object_calib, load_kitti_raw_calib
from calibration.loaders import load_rig
from calibration.pjlab import load_pjlab_calib
from calibration.rig import GNSS_FRAME, VEHICLE_FRAME, FrameEdge, Rig, load_rig_yaml, save_rig_yaml
from calibration.transforms import RigidTransform

if TYPE_CHECKING:
    from calibration.pcd import read_pcd

__all__ = [
    "GNSS_FRAME",
    "VEHICLE_FRAME",
    "CalibrationError",
    "CameraModel",
    "CheckResult",
    "FisheyeCamera",
    "FrameEdge",
    "LocalTangentPlane",
    "PinholeCamera",
    "Rig",
    "RigidTransform",
    "calibration_check",
    "describe_rig",
    "load_kitti_object_calib",
    "load_kitti_raw_calib",
    "load_pjlab_calib",
    "load_rig",
    "load_rig_yaml",
    "read_pcd",
    "read_scan",
    "save_rig_yaml",
    "vehicle_pose_from_gnss",
]


def __getattr__(name: str) -> Any:
    # pypcd4 (and the pydantic under it) cost every process 0.15 s to import; only PCD files
    # need them.
    if name == "read_pcd":
        from calibration.pcd import read_pcd  # noqa: PLC0415

        return read_pcd
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
