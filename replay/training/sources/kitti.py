"""Training samples from a KITTI object folder (`replay.datasets.kitti_object`).

The vehicle frame is the Velodyne frame (the folder's rigs, `calibration.kitti`). Labels:
- `label_2`: the frame's `label_2/<id>.txt`, each box moved from the rectified camera frame to
  the vehicle frame with the frame's rig (`rig.transform("vehicle", "rect")`): the label's
  (x, y, z) is the bottom centre (y down), so the centre is (x, y - h/2, z) there, and the
  length axis is (cos ry, 0, -sin ry). Car, Pedestrian and Cyclist are the boxes; the other
  classes with a 3D box (Van, Truck, Tram, Person_sitting, Misc) go to `extra["ignore"]`, and
  `DontCare` regions, which have no 3D box, to `extra["ignore_2d"]` as camera `front` pixel
  rectangles (x1, y1, x2, y2), for a trainer to mask;
- `pointpillars`: the boxes of a trained PointPillars (`reference_pred_velo/<id>.txt`, already
  in the Velodyne frame) with score >= `MIN_REFERENCE_SCORE`: a model's outputs standing in for
  labels where a frame has none.

The camera is `front` (image_2; rectified, so its model is the rig's ideal pinhole), with
`camera_from_vehicle` from the rig. Object frames are single snapshots: no velocity, track id,
visibility or point counts (BoxLabel's unknowns).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from calibration import Rig
from calibration.errors import read_text
from replay.datasets.kitti_object import (
    KittiObjectFolder,
    KittiObjectFrame,
    read_image,
    read_kitti_scan,
)
from replay.errors import ReplayError
from replay.evaluation import kitti_label_box, label_numbers, read_pointpillars_boxes
from replay.training.samples import BoxLabel, CameraView, TrainingSample
from replay.training.sources._boxes import split_training

__all__ = ["KITTI_LABELS", "MIN_REFERENCE_SCORE", "KittiSource", "read_label_2"]

#: Label kinds a KittiSource takes.
KITTI_LABELS = ("label_2", "pointpillars")
#: PointPillars boxes at or above this score count as labels.
MIN_REFERENCE_SCORE = 0.5
_CAMERA = "front"
#: The numbers of a label line read (after type, truncated, occluded and alpha).
_BOX_FIELDS = ("x1", "y1", "x2", "y2", "h", "w", "l", "x", "y", "z", "rotation_y")


def read_label_2(
    path: Path, rig: Rig
) -> tuple[list[BoxLabel], list[tuple[float, float, float, float]]]:
    """The 3D boxes of a KITTI `label_2` file in `rig`'s vehicle frame (every class but
    DontCare), and the DontCare 2D regions (pixels of image_2).

    Raises ValueError naming the file (and line) when unreadable, not UTF-8 text or
    malformed."""
    vehicle_from_rect = rig.transform("vehicle", "rect")
    boxes: list[BoxLabel] = []
    dont_care: list[tuple[float, float, float, float]] = []
    for lineno, line in enumerate(read_text(path, "labels", ValueError).splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 15:
            raise ValueError(f"{path}:{lineno}: expected 15 values, got {len(parts)}")
        # Finite: a nan size or position was a box of nan centre, for a trainer to learn from.
        values = label_numbers(parts[4:15], _BOX_FIELDS, f"{path}:{lineno}")
        x1, y1, x2, y2, h, w, length, x, y, z, ry = values
        if parts[0] == "DontCare":
            dont_care.append((x1, y1, x2, y2))
            continue
        center, size, yaw = kitti_label_box((h, w, length, x, y, z, ry), vehicle_from_rect)
        boxes.append(BoxLabel(parts[0], center, size, yaw))
    return boxes, dont_care


class KittiSource:
    """Frames of a KITTI object folder with their labels (`labels`: one of KITTI_LABELS).

    `frames`: frame ids (e.g. "000000"); None: every frame of the folder that has labels.
    `reference_dir`: the PointPillars boxes (default: `kitti_pointpillars/reference_pred_velo`
    beside the `kitti_object` folder, as in the data corpus).

    Raises ValueError naming the folder: not a KITTI object folder, an unknown label kind, a
    frame that is not in the folder or has no labels, or no frame with labels at all."""

    def __init__(
        self,
        root: Path,
        frames: Sequence[str] | None = None,
        labels: str = "label_2",
        reference_dir: Path | None = None,
    ) -> None:
        self.root = Path(root)
        where = f"kitti source {self.root}"
        if labels not in KITTI_LABELS:
            raise ValueError(
                f"{where}: unknown labels {labels!r} (use {' or '.join(KITTI_LABELS)})"
            )
        self.labels = labels
        try:
            self._folder = KittiObjectFolder(self.root)
        except ReplayError as e:
            raise ValueError(f"{where}: {e}") from e
        if labels == "label_2":
            self.label_dir = self.root / "label_2"
        else:
            self.label_dir = (
                Path(reference_dir)
                if reference_dir is not None
                else self.root.parent.parent / "kitti_pointpillars" / "reference_pred_velo"
            )
        if not self.label_dir.is_dir():
            raise ValueError(f"{where}: no {labels} labels (folder {self.label_dir} is missing)")
        by_id = {f.frame_id: f for f in self._folder.frames}
        if frames is None:
            chosen = [f for f in self._folder.frames if self._label_path(f.frame_id).is_file()]
            if not chosen:
                raise ValueError(f"{where}: no frame has {labels} labels in {self.label_dir}")
        else:
            chosen = []
            for frame_id in (str(f) for f in frames):
                if frame_id not in by_id:
                    raise ValueError(f"{where}: frame {frame_id} is not in the folder")
                if not self._label_path(frame_id).is_file():
                    raise ValueError(
                        f"{where}: frame {frame_id} has no labels "
                        f"({self._label_path(frame_id)} is missing)"
                    )
                chosen.append(by_id[frame_id])
            if not chosen:
                raise ValueError(f"{where}: the frames list is empty")
        self.frames: tuple[KittiObjectFrame, ...] = tuple(chosen)
        self.name = f"kitti {self.root.name}"

    def _label_path(self, frame_id: str) -> Path:
        return self.label_dir / f"{frame_id}.txt"

    def __len__(self) -> int:
        return len(self.frames)

    def describe(self) -> str:
        n = len(self)
        return (
            f"KITTI object {self.root} ({self.labels} labels): {n:,} frame{'s' if n != 1 else ''}"
        )

    def __getitem__(self, index: int) -> TrainingSample:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.name}: index {index} out of range ({n} samples)")
        frame = self.frames[index]
        try:
            image = read_image(frame.image_path)
            rig = self._folder.rig(frame, image)
            points = read_kitti_scan(frame.lidar_path)
        except ReplayError as e:
            raise ValueError(f"kitti source {self.root}: frame {frame.frame_id}: {e}") from e
        label_path = self._label_path(frame.frame_id)
        ignore_2d: list[tuple[float, float, float, float]] = []
        if self.labels == "label_2":
            labels, ignore_2d = read_label_2(label_path, rig)
        else:
            labels = [
                BoxLabel(b.label, b.center, b.size, b.yaw)
                for b in read_pointpillars_boxes(label_path)
                if b.score >= MIN_REFERENCE_SCORE
            ]
        boxes, ignored = split_training(labels)
        camera_from_vehicle = rig.transform(f"camera/{_CAMERA}", "vehicle").matrix
        return TrainingSample(
            name=f"kitti:{frame.frame_id}",
            points=points,
            cameras={_CAMERA: CameraView(image, rig.cameras[_CAMERA], camera_from_vehicle)},
            boxes=boxes,
            stamp_ns=0,
            extra={"ignore": ignored, "ignore_2d": {_CAMERA: tuple(ignore_2d)}},
        )
