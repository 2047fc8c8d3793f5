"""KITTI object calibration files (`calib/NNNNNN.txt`) as a rig.

The vehicle frame is the Velodyne frame (so boxes compare directly with KITTI and PointPillars
Velodyne-frame boxes). Camera `front` is the rectified left colour camera (cam 2), modelled as
K = P2[:, :3] and `cam2_from_velo` = [I | K^-1 P2[:, 3]] · R0_rect · Tr_velo_to_cam, so that
projection through the rig equals P2 · R0_rect · Tr_velo_to_cam exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from calibration.camera import PinholeCamera
from calibration.errors import CalibrationError
from calibration.rig import Rig
from calibration.transforms import RigidTransform

__all__ = ["kitti_label_to_velo", "load_kitti_object_calib", "read_kitti_calib_fields"]

_SIZES = {"P0": 12, "P1": 12, "P2": 12, "P3": 12, "R0_rect": 9, "Tr_velo_to_cam": 12}


def read_kitti_calib_fields(path: Path) -> dict[str, npt.NDArray[np.float64]]:
    """Read `KEY: v v v ...` lines, checking the fields the object format requires."""
    try:
        text = path.read_text()
    except OSError as e:
        raise CalibrationError(f"{path}: cannot read calibration file ({e.strerror})") from e
    fields: dict[str, npt.NDArray[np.float64]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise CalibrationError(f"{path}:{lineno}: expected 'KEY: values', got {line[:40]!r}")
        try:
            fields[key.strip()] = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError as e:
            raise CalibrationError(f"{path}:{lineno}: field {key.strip()}: {e}") from e
    for key, n in _SIZES.items():
        if key not in fields:
            raise CalibrationError(f"{path}: missing field {key}")
        if fields[key].size != n:
            raise CalibrationError(
                f"{path}: field {key} has {fields[key].size} values, expected {n}"
            )
        if not np.all(np.isfinite(fields[key])):
            raise CalibrationError(f"{path}: field {key} has non-finite values")
    return fields


def _rect_from_velo(fields: dict[str, npt.NDArray[np.float64]], path: Path) -> RigidTransform:
    r0 = np.eye(4)
    r0[:3, :3] = fields["R0_rect"].reshape(3, 3)
    velo = RigidTransform.from_matrix(
        fields["Tr_velo_to_cam"].reshape(3, 4), f"{path}: Tr_velo_to_cam"
    )
    RigidTransform.from_matrix(r0, f"{path}: R0_rect")
    return RigidTransform(r0 @ velo.matrix)


def load_kitti_object_calib(path: Path, width: int, height: int) -> Rig:
    """Rig of a KITTI object frame; `width` x `height` is the size of that frame's image_2."""
    fields = read_kitti_calib_fields(path)
    p2 = fields["P2"].reshape(3, 4)
    k = p2[:, :3].copy()
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise CalibrationError(f"{path}: P2 focal lengths must be positive")
    cam2_from_rect = np.eye(4)
    cam2_from_rect[:3, 3] = np.linalg.solve(k, p2[:, 3])
    cam2_from_velo = RigidTransform(cam2_from_rect) @ _rect_from_velo(fields, path)
    camera = PinholeCamera(k=k, distortion=(), width=width, height=height)
    return Rig(
        vehicle_from={"lidar": RigidTransform.identity(), "camera/front": cam2_from_velo.inverse()},
        cameras={"front": camera},
        source=str(path),
    )


def kitti_label_to_velo(
    calib_path: Path, bottom_center_rect: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """A KITTI label's bottom-centre (camera-rect frame) moved into the Velodyne frame."""
    fields = read_kitti_calib_fields(calib_path)
    velo_from_rect = _rect_from_velo(fields, calib_path).inverse()
    point = np.asarray(bottom_center_rect, dtype=np.float64).reshape(1, 3)
    out: npt.NDArray[np.float64] = velo_from_rect.apply(point)[0]
    return out
