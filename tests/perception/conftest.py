"""Fixtures for the fusion and evaluation tests: real KITTI object frames and reference boxes.

The data is found through the root conftest's `data_dir` (env PERCEPTION_DATA, default
../shared/data); tests that need a missing file are skipped with the path in the reason.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from calibration import CameraModel, RigidTransform, load_kitti_object_calib


@dataclass(frozen=True)
class KittiFrame:
    """One KITTI object frame: FOV-cropped scan (Velodyne = vehicle frame) and camera 2."""

    frame_id: str
    points: npt.NDArray[np.float32]
    camera: CameraModel
    camera_from_vehicle: RigidTransform
    calib_path: Path


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG header, without decoding the image."""
    with path.open("rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found: {path} (set PERCEPTION_DATA to the data corpus)")
    return path


@pytest.fixture(scope="session")
def reference_dir(data_dir: Path) -> Path:
    """PointPillars reference boxes (Velodyne frame) of frames 000000 and 000003-000005."""
    return _require(data_dir / "kitti_pointpillars" / "reference_pred_velo")


@pytest.fixture(scope="session")
def kitti_frame(kitti_dir: Path) -> Callable[[str], KittiFrame]:
    """Loader of a KITTI object frame by id (cached); skips when its files are absent."""
    cache: dict[str, KittiFrame] = {}

    def load(frame_id: str) -> KittiFrame:
        if frame_id not in cache:
            calib = _require(kitti_dir / "calib" / f"{frame_id}.txt")
            image = _require(kitti_dir / "image_2" / f"{frame_id}.png")
            scan = _require(kitti_dir / "velodyne_reduced" / f"{frame_id}.bin")
            width, height = png_size(image)
            rig = load_kitti_object_calib(calib, width, height)
            points = np.fromfile(scan, dtype="<f4").reshape(-1, 4).astype(np.float32)
            cache[frame_id] = KittiFrame(
                frame_id,
                points,
                rig.cameras["front"],
                rig.transform("camera/front", "vehicle"),
                calib,
            )
        return cache[frame_id]

    return load
