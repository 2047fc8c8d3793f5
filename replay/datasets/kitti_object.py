"""A KITTI object folder (image_2, velodyne or velodyne_reduced, calib) as node messages.

KITTI object frames are independent snapshots (often from different drives and calibrations), so
each frame is sent as a RigMessage (its own calibration), a CameraFrame and a LidarSweep, stamped
`period_ns` apart. The vehicle frame is the Velodyne frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from calibration import CalibrationError, Rig, load_kitti_object_calib
from calibration.check import read_kitti_bin
from calibration.images import check_image_pixels, decode_image_file
from perception.msgs.schema import DEFAULT_LIMITS
from perception.msgs.types import CameraFrame, Header, LidarSweep, Message, RigMessage
from replay.errors import ReplayError

__all__ = [
    "CAMERA_STREAM",
    "LIDAR_STREAM",
    "RIG_STREAM",
    "KittiObjectFolder",
    "KittiObjectFrame",
    "read_kitti_scan",
]

CAMERA_STREAM = "camera/front"
LIDAR_STREAM = "lidar/top"
RIG_STREAM = "rig"
_LIDAR_DIRS = ("velodyne", "velodyne_reduced")


@dataclass(frozen=True)
class KittiObjectFrame:
    """File paths of one KITTI object frame."""

    frame_id: str
    image_path: Path
    lidar_path: Path
    calib_path: Path


def read_kitti_scan(
    path: Path, max_points: int = DEFAULT_LIMITS.max_points
) -> npt.NDArray[np.float32]:
    """A KITTI `.bin` scan as N x 4 float32 (x, y, z, reflectance), Velodyne frame.
    `max_points`: the most points it may hold, by default what a sweep message may carry (a
    larger scan can never be sent or recorded), checked from the file's size before it is read.

    Raises ReplayError naming the file when it cannot be read or is not a regular file, holds
    more than `max_points` points, is empty (a sweep of 0 points is a broken file, not an empty
    scene: a spinning lidar always sees the ground), is not a whole number of 16-byte points,
    or holds non-finite values."""
    try:
        points = read_kitti_bin(path, max_points)
    except CalibrationError as e:
        raise ReplayError(str(e)) from e
    if not np.all(np.isfinite(points)):
        raise ReplayError(f"{path}: scan has non-finite values")
    return points


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    """An image file as H x W x 3 uint8 BGR (no larger than the wire's max_image_pixels).

    Raises:
        ReplayError: naming the file: missing, not an image, or too large.
    """
    try:
        check_image_pixels(path, DEFAULT_LIMITS.max_image_pixels)
    except CalibrationError as e:
        if path.exists():
            raise ReplayError(str(e)) from e
    image = decode_image_file(path)
    if image is None:
        state = "does not exist" if not path.exists() else "is not a readable image"
        raise ReplayError(f"{path}: image {state}")
    return np.ascontiguousarray(image, dtype=np.uint8)


class KittiObjectFolder:
    """The frames of a KITTI object split folder (e.g. `training/`).

    `lidar_dir` names the scan folder; by default `velodyne` when it has a scan for every image,
    else `velodyne_reduced`, and the frames are those with an image or a scan, in name order.
    A `lidar_dir` given picks frames instead: those with a scan in it (e.g. `velodyne` holding
    the full scans of a few frames). Each frame must have its image, scan and calib file.

    Raises ReplayError naming the path when the folder, a scan folder or a frame's files are
    missing.
    """

    def __init__(self, root: Path, lidar_dir: str | None = None) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ReplayError(f"{self.root}: is a file, not a KITTI object folder")
        if not self.root.is_dir():
            raise ReplayError(f"{self.root}: KITTI object folder does not exist")
        for sub in ("image_2", "calib"):
            if not (self.root / sub).is_dir():
                # KITTI's download unpacks to <root>/training and <root>/testing.
                inside = [p for p in ("training", "testing") if (self.root / p / sub).is_dir()]
                hint = f"; {self.root / inside[0]} is one" if inside else ""
                raise ReplayError(f"{self.root}: not a KITTI object folder (no {sub}/){hint}")
        self.lidar_dir = lidar_dir or self._choose_lidar_dir()
        scan_dir = self.root / self.lidar_dir
        stems = {p.stem for p in scan_dir.glob("*.bin")}
        if not stems:
            raise ReplayError(f"{scan_dir}: no .bin scans")
        if lidar_dir is None:
            # An image without its scan is a broken frame, as a scan without its image is: it
            # must be refused, not left out of the replay without a word.
            stems |= {p.stem for p in (self.root / "image_2").glob("*.png")}
        self.frames: list[KittiObjectFrame] = []
        for stem in sorted(stems):
            frame = KittiObjectFrame(
                frame_id=stem,
                image_path=self.root / "image_2" / f"{stem}.png",
                lidar_path=scan_dir / f"{stem}.bin",
                calib_path=self.root / "calib" / f"{stem}.txt",
            )
            for path in (frame.image_path, frame.lidar_path, frame.calib_path):
                if not path.is_file():
                    # A pipe would block its reader: named for what it is, as missing is, and
                    # a link to nowhere (or to itself) is no missing file.
                    if path.is_symlink() and not path.exists():
                        state = "a broken or looping link"
                    else:
                        state = "not a regular file" if path.exists() else "missing"
                    raise ReplayError(f"{path}: {state} for frame {stem}")
            self.frames.append(frame)

    def _choose_lidar_dir(self) -> str:
        images = {p.stem for p in (self.root / "image_2").glob("*.png")}
        present = [d for d in _LIDAR_DIRS if (self.root / d).is_dir()]
        if not present:
            raise ReplayError(f"{self.root}: no velodyne/ or velodyne_reduced/ folder")
        for d in present:
            if images <= {p.stem for p in (self.root / d).glob("*.bin")}:
                return d
        return max(present, key=lambda d: len(list((self.root / d).glob("*.bin"))))

    def __len__(self) -> int:
        return len(self.frames)

    def rig(self, frame: KittiObjectFrame, image: npt.NDArray[np.uint8]) -> Rig:
        try:
            return load_kitti_object_calib(frame.calib_path, image.shape[1], image.shape[0])
        except CalibrationError as e:
            raise ReplayError(str(e)) from e

    def frame_messages(self, index: int, stamp_ns: int) -> list[Message]:
        """Messages of frame `index`, in send order: rig, camera, then the lidar sweep (the sweep
        is the synchroniser's reference, so it goes last)."""
        frame = self.frames[index]
        image = read_image(frame.image_path)
        rig = self.rig(frame, image)
        points = read_kitti_scan(frame.lidar_path)
        return [
            RigMessage(Header(RIG_STREAM, index, stamp_ns, "vehicle"), rig.to_dict()),
            CameraFrame(Header(CAMERA_STREAM, index, stamp_ns, "camera/front"), image=image),
            LidarSweep(Header(LIDAR_STREAM, index, stamp_ns, "lidar"), points=points),
        ]

    def messages(self, start_ns: int = 0, period_ns: int = 100_000_000) -> Iterator[Message]:
        """Every frame's messages, frames stamped `period_ns` apart from `start_ns`."""
        for i in range(len(self.frames)):
            yield from self.frame_messages(i, start_ns + i * period_ns)
