"""KITTI calibrations as rigs: object calib files (`calib/NNNNNN.txt`) and raw calib folders.

The vehicle frame is the Velodyne frame (so boxes compare directly with KITTI and PointPillars
Velodyne-frame boxes). Frames, the same for both loaders:

- `lidar`: the Velodyne, identity to `vehicle`.
- `imu`: the OXTS unit, parent `lidar` (`Tr_imu_to_velo`); the GNSS lever arm (frame `gnss`)
  is the IMU origin, since OXTS fixes refer to that point.
- `rect`: the rectified reference camera (rectified camera 0; KITTI labels live here), parent
  `lidar`, `rect_from_lidar = R0_rect · Tr_velo_to_cam`.
- `camera/<name>`: rectified camera i, parent `rect`, `cam_i_from_rect = [I | K_i⁻¹ P_i[:, 3]]`
  with `K_i = P_i[:, :3]`, so that `K_i · cam_i_from_lidar = P_i · R0_rect · Tr_velo_to_cam`.
  Camera 2 (left colour, `image_2`) is `front`, the node's default camera; cameras 0, 1, 3
  are `cam0`, `cam1`, `cam3`. All are ideal pinholes (the images are rectified).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from calibration.camera import CameraModel, PinholeCamera
from calibration.errors import CalibrationError, parse_float, read_text
from calibration.rig import FrameEdge, Rig, camera_frame
from calibration.transforms import RigidTransform

__all__ = [
    "KITTI_CAMERA_NAMES",
    "KITTI_RAW_FILES",
    "kitti_label_to_velo",
    "load_kitti_object_calib",
    "load_kitti_raw_calib",
    "read_kitti_calib_fields",
]

FloatArray = npt.NDArray[np.float64]

KITTI_CAMERA_NAMES = {0: "cam0", 1: "cam1", 2: "front", 3: "cam3"}
KITTI_RAW_FILES = ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt")

_OBJECT_SIZES = {"P0": 12, "P1": 12, "P2": 12, "P3": 12, "R0_rect": 9, "Tr_velo_to_cam": 12}
# Text-valued fields of the raw files.
_TEXT_FIELDS = {"calib_time"}


def _read_fields(path: Path, required: dict[str, int]) -> dict[str, FloatArray]:
    # A byte order mark (an editor's "UTF-8 with BOM") read as part of the first key made it
    # "missing field P0" in a file that starts with P0.
    text = read_text(path, "calibration file").removeprefix("\ufeff")
    fields: dict[str, FloatArray] = {}
    lines: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise CalibrationError(f"{path}:{lineno}: expected 'KEY: values', got {line[:40]!r}")
        key = key.strip()
        if key in _TEXT_FIELDS:
            continue
        if key in lines:
            # The last one was taken without a word: which of the two is right is not ours to say.
            raise CalibrationError(
                f"{path}:{lineno}: field {key[:40]} given twice (first on line {lines[key]})"
            )
        lines[key] = lineno
        try:
            fields[key] = np.array([parse_float(v) for v in rest.split()], dtype=np.float64)
        except ValueError as e:
            raise CalibrationError(f"{path}:{lineno}: field {key}: {e}") from e
    for key, n in required.items():
        if key not in fields:
            raise CalibrationError(f"{path}: missing field {key}")
        if fields[key].size != n:
            raise CalibrationError(
                f"{path}: field {key} has {fields[key].size} values, expected {n}"
            )
        if not np.all(np.isfinite(fields[key])):
            raise CalibrationError(f"{path}: field {key} has non-finite values")
    return fields


def read_kitti_calib_fields(path: Path) -> dict[str, FloatArray]:
    """Read an object calib file's `KEY: v v v ...` lines (row-major matrices as flat arrays).

    Raises CalibrationError naming the file (and line or field) if it cannot be read, a line is
    malformed, or P0-P3, R0_rect, Tr_velo_to_cam are missing, mis-sized or non-finite.
    """
    return _read_fields(Path(path), _OBJECT_SIZES)


def _rect_from_velo(r0_rect: FloatArray, tr_velo_to_cam: FloatArray, where: str) -> RigidTransform:
    velo = RigidTransform.from_matrix(tr_velo_to_cam.reshape(3, 4), f"{where}: Tr_velo_to_cam")
    r0 = np.eye(4)
    r0[:3, :3] = r0_rect.reshape(3, 3)
    RigidTransform.from_matrix(r0, f"{where}: R0_rect")
    return RigidTransform(r0 @ velo.matrix)


def _rectified_camera(
    p: FloatArray, size: tuple[int, int], where: str
) -> tuple[CameraModel, RigidTransform]:
    """Camera model and `rect_from_cam` of a rectified 3 x 4 projection matrix."""
    k = p[:, :3].copy()
    camera = PinholeCamera(k, (), size[0], size[1], context=where)
    rect_from_cam = np.eye(4)
    rect_from_cam[:3, 3] = -np.linalg.solve(k, p[:, 3])
    return camera, RigidTransform(rect_from_cam)


def _kitti_rig(
    *,
    projections: dict[int, FloatArray],
    sizes: dict[int, tuple[int, int]],
    rect_from_velo: RigidTransform,
    velo_from_imu: RigidTransform | None,
    source: str,
    field_names: dict[int, str],
    warnings: list[str],
) -> Rig:
    edges: dict[str, FrameEdge] = {
        "lidar": FrameEdge("vehicle", RigidTransform.identity()),
        "rect": FrameEdge("lidar", rect_from_velo.inverse()),
    }
    cameras: dict[str, CameraModel] = {}
    for i, p in sorted(projections.items()):
        name = KITTI_CAMERA_NAMES[i]
        camera, rect_from_cam = _rectified_camera(p, sizes[i], f"{source}: {field_names[i]}")
        cameras[name] = camera
        edges[camera_frame(name)] = FrameEdge("rect", rect_from_cam)
    lever = None
    if velo_from_imu is not None:
        edges["imu"] = FrameEdge("lidar", velo_from_imu)
        lever = velo_from_imu.translation.copy()
    return Rig(
        cameras=cameras, source=source, edges=edges, gnss_lever_arm_m=lever, warnings=warnings
    )


def load_kitti_object_calib(path: Path, width: int, height: int) -> Rig:
    """Rig of a KITTI object frame; `width` x `height` (pixels) is the size of its image_2.

    Cameras `cam0`, `cam1`, `front` (camera 2) and `cam3` (all the given size); see the module
    docstring for the frames. Raises CalibrationError naming the file and field.
    """
    path = Path(path)
    fields = read_kitti_calib_fields(path)
    where = str(path)
    velo_from_imu = None
    if "Tr_imu_to_velo" in fields:
        if fields["Tr_imu_to_velo"].size != 12:
            raise CalibrationError(
                f"{path}: field Tr_imu_to_velo has {fields['Tr_imu_to_velo'].size} values, "
                "expected 12"
            )
        velo_from_imu = RigidTransform.from_matrix(
            fields["Tr_imu_to_velo"].reshape(3, 4), f"{path}: Tr_imu_to_velo"
        )
    return _kitti_rig(
        projections={i: fields[f"P{i}"].reshape(3, 4) for i in range(4)},
        sizes=dict.fromkeys(range(4), (width, height)),
        rect_from_velo=_rect_from_velo(fields["R0_rect"], fields["Tr_velo_to_cam"], where),
        velo_from_imu=velo_from_imu,
        source=where,
        field_names={i: f"P{i}" for i in range(4)},
        warnings=[],
    )


def load_kitti_raw_calib(folder: Path, image_size: tuple[int, int] | None = None) -> Rig:
    """Rig of a KITTI raw calibration folder (`calib_cam_to_cam.txt`, `calib_velo_to_cam.txt`,
    `calib_imu_to_velo.txt`, e.g. `2011_09_26/`): the rectified cameras 00-03 from
    `P_rect_0i`, `R_rect_00` and their sizes `S_rect_0i`.

    `image_size` (width, height in pixels), when given, is the size of the images the rig is
    used with; a size that differs from `S_rect_0i` is kept and reported in `rig.warnings`.
    Raises CalibrationError naming the file and field.
    """
    folder = Path(folder)
    cam_path, velo_path, imu_path = (folder / name for name in KITTI_RAW_FILES)
    cam_fields = {"R_rect_00": 9}
    for i in range(4):
        cam_fields |= {f"P_rect_0{i}": 12, f"S_rect_0{i}": 2}
    cam = _read_fields(cam_path, cam_fields)
    velo = _read_fields(velo_path, {"R": 9, "T": 3})
    imu = _read_fields(imu_path, {"R": 9, "T": 3})
    tr_velo_to_cam = np.column_stack([velo["R"].reshape(3, 3), velo["T"]])
    velo_from_imu = RigidTransform.from_matrix(
        np.column_stack([imu["R"].reshape(3, 3), imu["T"]]), f"{imu_path}: R, T"
    )
    sizes: dict[int, tuple[int, int]] = {}
    warnings: list[str] = []
    for i in range(4):
        s = cam[f"S_rect_0{i}"]
        if np.any(s != np.round(s)) or np.any(s <= 0):
            raise CalibrationError(
                f"{cam_path}: field S_rect_0{i}: image size must be positive integers, "
                f"got {s.tolist()}"
            )
        stated = (int(s[0]), int(s[1]))
        if image_size is not None and tuple(image_size) != stated:
            warnings.append(
                f"{cam_path}: S_rect_0{i} states {stated[0]}x{stated[1]} but the image is "
                f"{image_size[0]}x{image_size[1]}; using the image size with the stated intrinsics"
            )
        sizes[i] = (int(image_size[0]), int(image_size[1])) if image_size else stated
    return _kitti_rig(
        projections={i: cam[f"P_rect_0{i}"].reshape(3, 4) for i in range(4)},
        sizes=sizes,
        rect_from_velo=_rect_from_velo(
            cam["R_rect_00"], tr_velo_to_cam, f"{cam_path} + {velo_path}"
        ),
        velo_from_imu=velo_from_imu,
        source=str(folder),
        field_names={i: f"{cam_path.name}: P_rect_0{i}" for i in range(4)},
        warnings=warnings,
    )


def kitti_label_to_velo(calib_path: Path, bottom_center_rect: npt.ArrayLike) -> FloatArray:
    """A KITTI label's bottom-centre (camera-rect frame, metres) moved into the Velodyne frame.

    Raises CalibrationError naming the file and field for an invalid calib file.
    """
    fields = read_kitti_calib_fields(Path(calib_path))
    rect_from_velo = _rect_from_velo(fields["R0_rect"], fields["Tr_velo_to_cam"], str(calib_path))
    point = np.asarray(bottom_center_rect, dtype=np.float64).reshape(1, 3)
    out: FloatArray = rect_from_velo.inverse().apply(point)[0]
    return out
