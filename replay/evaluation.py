"""Compare fused detections with reference 3D boxes (KITTI labels, PointPillars predictions).

All boxes are in the vehicle frame (for KITTI the Velodyne frame: x forward, y left, z up),
metres and radians; ``center`` is the box centre and ``size`` is (length, width, height) with the
length along ``yaw``. Matching is greedy by BEV centre distance, per class; heading errors are
taken modulo 180 degrees because the front of a box cannot be told from its back by the fusion.

Reference formats read here:
- PointPillars (NVIDIA CUDA-PointPillars ``SaveBoxPred``): one box per line,
  ``x y z dx dy dz yaw class_id score`` (Velodyne frame, z = box centre; class 0 Car,
  1 Pedestrian, 2 Cyclist).
- KITTI ``label_2``: ``type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y`` in the
  rectified camera frame (y down, x, y, z = bottom centre); moved to the Velodyne frame with the
  frame's calibration (``R0_rect`` and ``Tr_velo_to_cam``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from calibration.camera import CameraModel
from calibration.errors import parse_float, read_text
from calibration.kitti import read_kitti_calib_fields
from calibration.transforms import RigidTransform
from perception.msgs.types import Detection3D
from perception.pipeline.boxes import bev_iou

if TYPE_CHECKING:
    from replay.synth.world import GroundTruthFrame

__all__ = [
    "CLASS_MATCH_DISTANCE_M",
    "GROUND_TRUTH_LABELS",
    "KITTI_TYPES",
    "MAX_GROUND_TRUTH_SPEED_MPS",
    "MIN_IN_IMAGE",
    "MIN_UNOCCLUDED",
    "NEIGHBOUR_LABELS",
    "POINTPILLARS_CLASSES",
    "QUALITY_RANGE_M",
    "ClassStats",
    "Match",
    "MatchResult",
    "ReferenceBox",
    "average_precision",
    "box_corners",
    "check_ground_truth_frame",
    "drive_ground_truth",
    "filter_references",
    "format_report",
    "kitti_label_box",
    "label_numbers",
    "match_detections",
    "merge_results",
    "project_box",
    "quality_counted",
    "read_kitti_labels",
    "read_pointpillars_boxes",
    "score_frame",
    "score_truth_frame",
    "visible_fraction",
    "yaw_error_deg",
]

FloatArray = npt.NDArray[np.float64]

POINTPILLARS_CLASSES: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")
#: The object types of KITTI's ``label_2`` files (DontCare: a region left unlabelled).
KITTI_TYPES: tuple[str, ...] = (
    "Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare",
)  # fmt: skip

_POINTPILLARS_FIELDS = ("x", "y", "z", "dx", "dy", "dz", "yaw", "class_id", "score")
# The numbers of a KITTI label line, after its type.
_KITTI_FIELDS = (
    "truncated", "occluded", "alpha", "x1", "y1", "x2", "y2", "h", "w", "l", "x", "y", "z",
    "rotation_y",
)  # fmt: skip


@dataclass(frozen=True)
class ReferenceBox:
    """A reference 3D box in the vehicle frame: centre (m), size (length, width, height; m),
    yaw (rad, heading of the length axis about +z), score (1.0 for labels)."""

    label: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float
    score: float = 1.0

    @property
    def range_m(self) -> float:
        """BEV distance of the centre from the vehicle origin (m)."""
        return math.hypot(self.center[0], self.center[1])


def read_pointpillars_boxes(
    path: Path, class_names: Sequence[str] = POINTPILLARS_CLASSES
) -> list[ReferenceBox]:
    """Boxes of a PointPillars prediction file (``x y z dx dy dz yaw class_id score`` lines).

    Raises ValueError naming the file, the line and the value on a malformed line: not nine
    numbers, a value not finite, a negative size, an unknown class id or a score outside
    [0, 1]; naming the file when it cannot be read or is not UTF-8 text.
    """
    boxes: list[ReferenceBox] = []
    for lineno, line in enumerate(read_text(path, "boxes", ValueError).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        where = f"{path}:{lineno}"
        if len(parts) != len(_POINTPILLARS_FIELDS):
            raise ValueError(
                f"{where}: expected 9 values ({' '.join(_POINTPILLARS_FIELDS)}), got {len(parts)}"
            )
        values = label_numbers(parts, _POINTPILLARS_FIELDS, where)
        x, y, z, dx, dy, dz, yaw, class_value, score = values
        class_id = int(class_value)
        if class_id != class_value or not 0 <= class_id < len(class_names):
            known = ", ".join(f"{i} {name}" for i, name in enumerate(class_names))
            raise ValueError(f"{where}: unknown class id {parts[7]} (known: {known})")
        _check_sizes(parts[3:6], (dx, dy, dz), _POINTPILLARS_FIELDS[3:6], where)
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"{where}: score {parts[8]} is outside [0, 1]")
        boxes.append(ReferenceBox(class_names[class_id], (x, y, z), (dx, dy, dz), yaw, score))
    return boxes


def label_numbers(parts: Sequence[str], names: Sequence[str], where: str) -> list[float]:
    """`parts`, the fields `names` of a label or box line, as finite floats (read by
    `calibration.errors.parse_float`: `1_89` is no 189). Raises a ValueError naming `where`,
    the field and the text if one is not."""
    values = []
    for name, text in zip(names, parts, strict=True):
        try:
            value = parse_float(text)
        except ValueError:
            raise ValueError(f"{where}: {name} {text!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{where}: {name} {text} is not finite")
        values.append(value)
    return values


def _check_sizes(
    parts: Sequence[str], sizes: Sequence[float], names: Sequence[str], where: str
) -> None:
    for text, size, name in zip(parts, sizes, names, strict=True):
        if size < 0:
            raise ValueError(f"{where}: {name} {text} is negative (a box size, m)")


def _velo_from_rect(calib_path: Path) -> RigidTransform:
    fields = read_kitti_calib_fields(calib_path)
    r0 = np.eye(4)
    r0[:3, :3] = fields["R0_rect"].reshape(3, 3)
    tr = RigidTransform.from_matrix(fields["Tr_velo_to_cam"].reshape(3, 4), "Tr_velo_to_cam")
    return RigidTransform(r0 @ tr.matrix).inverse()


def read_kitti_labels(
    label_path: Path, calib_path: Path, *, skip: Iterable[str] = ("DontCare",)
) -> list[ReferenceBox]:
    """KITTI ``label_2`` boxes moved into the Velodyne frame with the frame's calibration.

    The label's (x, y, z) is the bottom centre in the rectified camera frame (y down), so the box
    centre is (x, y - h/2, z) there. The heading is the label's length axis,
    (cos ry, 0, -sin ry) in the rect frame, rotated into the Velodyne frame; for the usual KITTI
    calibration this is ``-rotation_y - pi/2``. Rows whose type is in ``skip`` are left out.

    Raises ValueError naming the file, the line and the value on a malformed line (fewer than
    15 values, a type not in `KITTI_TYPES`, a value not finite, a negative size), and for a
    file of PointPillars boxes the error `read_pointpillars_boxes` finds in it;
    calibration.CalibrationError on a bad calibration file; ValueError naming the label file
    when it cannot be read or is not UTF-8 text.
    """
    velo_from_rect = _velo_from_rect(calib_path)
    skipped = set(skip)
    boxes: list[ReferenceBox] = []
    for lineno, line in enumerate(
        read_text(label_path, "labels", ValueError).splitlines(), start=1
    ):
        parts = line.split()
        if not parts or parts[0] in skipped:
            continue
        where = f"{label_path}:{lineno}"
        if _is_number(parts[0]):
            # A label line starts with its type: this is a PointPillars file, whose own reader
            # names what is wrong with it better than "expected 15 values".
            read_pointpillars_boxes(label_path)
            raise ValueError(f"{where}: a PointPillars box, not a KITTI label line")
        if len(parts) < 15:
            raise ValueError(f"{where}: expected 15 values, got {len(parts)}")
        if parts[0] not in KITTI_TYPES:
            raise ValueError(
                f"{where}: unknown object type {parts[0]!r} (KITTI's: {', '.join(KITTI_TYPES)})"
            )
        values = label_numbers(parts[1:15], _KITTI_FIELDS, where)
        h, w, length, x, y, z, ry = values[7:14]
        # DontCare rows (when not skipped) carry -1 sizes by KITTI's convention: no box.
        if parts[0] != "DontCare":
            _check_sizes(parts[8:11], (h, w, length), _KITTI_FIELDS[7:10], where)
        center, size, yaw = kitti_label_box((h, w, length, x, y, z, ry), velo_from_rect)
        boxes.append(ReferenceBox(parts[0], center, size, yaw))
    return boxes


def _is_number(text: str) -> bool:
    # Which reader's format a line is, not a value: a first field `1_0` is a box's x, for
    # read_pointpillars_boxes to refuse as such, not an unknown object type.
    try:
        float(text)
    except ValueError:
        return False
    return True


def kitti_label_box(
    values: Sequence[float], vehicle_from_rect: RigidTransform
) -> tuple[tuple[float, float, float], tuple[float, float, float], float]:
    """The box of a KITTI label's ``h w l x y z rotation_y`` in the frame ``vehicle_from_rect``
    maps the rectified camera frame to: centre, (length, width, height), yaw. The label's
    (x, y, z) is the bottom centre in the rectified frame (y down), so the centre is
    (x, y - h/2, z) there; the heading is the length axis (cos ry, 0, -sin ry) rotated over."""
    h, w, length, x, y, z, ry = values
    c = vehicle_from_rect.apply(np.array([[x, y - h / 2.0, z]]))[0]
    heading = vehicle_from_rect.rotation @ np.array([math.cos(ry), 0.0, -math.sin(ry)])
    yaw = math.atan2(float(heading[1]), float(heading[0]))
    return (float(c[0]), float(c[1]), float(c[2])), (length, w, h), yaw


#: The labels a drive's ground truth may give an object: the synthetic worlds' road users
#: (replay.synth.scene.ROAD_USER_LABELS), the nuScenes import's
#: (replay.datasets.nuscenes_geometry.CATEGORY_LABELS, and `unknown` for the other categories)
#: and KITTI's types.
GROUND_TRUTH_LABELS: frozenset[str] = frozenset(
    {"Bicycle", "Barrier", "Bus", "Construction_vehicle", "Motorcycle", "Traffic_cone",
     "Trailer", "unknown"}
    | set(KITTI_TYPES) - {"DontCare"}
)  # fmt: skip
#: A ground-truth object faster than this over the ground (m/s, 360 km/h) is a broken file.
MAX_GROUND_TRUTH_SPEED_MPS = 100.0


def _finite_numbers(value: Any, count: int) -> bool:
    return (
        isinstance(value, tuple | list)
        and len(value) == count
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
    )


def check_ground_truth_frame(frame: GroundTruthFrame, where: str) -> None:
    """Refuses a frame of ground truth holding values no object can have: a label not in
    `GROUND_TRUTH_LABELS`, a centre or size not three finite numbers, a negative size, a yaw
    not finite, a camera-visible fraction outside [0, 1], negative lidar returns, or a speed of
    `MAX_GROUND_TRUTH_SPEED_MPS` or more. Left in, such an object is silently never matched (a
    NaN centre) or makes the scores infinite (a huge velocity).

    Raises:
        ValueError: naming `where` (the file and line, or the drive and sweep), the object and
            the value.
    """
    for i, box in enumerate(frame.boxes):
        who = f"object {frame.ids[i]}" if frame.ids else f"box {i}"
        label: Any = box.label
        if not isinstance(label, str) or label not in GROUND_TRUTH_LABELS:
            known = ", ".join(sorted(GROUND_TRUTH_LABELS))
            raise ValueError(f"{where}: {who}: unknown label {label!r} (known: {known})")
        who = f"{who} ({label})"
        if not _finite_numbers(box.center, 3):
            raise ValueError(f"{where}: {who}: center {list(box.center)} is not 3 finite numbers")
        if not _finite_numbers(box.size, 3):
            raise ValueError(f"{where}: {who}: size {list(box.size)} is not 3 finite numbers")
        if min(box.size) < 0:
            raise ValueError(f"{where}: {who}: size {list(box.size)} is negative")
        if not _finite_numbers((box.yaw,), 1):
            raise ValueError(f"{where}: {who}: yaw {box.yaw!r} is not a finite number")
        visible = frame.camera_visible[i]
        if not 0.0 <= visible <= 1.0:
            raise ValueError(f"{where}: {who}: camera_visible {visible} is outside [0, 1]")
        if frame.lidar_points[i] < 0:
            raise ValueError(f"{where}: {who}: lidar_points {frame.lidar_points[i]} is negative")
        if frame.velocities:
            vx, vy = frame.velocities[i]
            if not math.hypot(vx, vy) < MAX_GROUND_TRUTH_SPEED_MPS:
                raise ValueError(
                    f"{where}: {who}: velocity [{vx}, {vy}] m/s is faster than "
                    f"{MAX_GROUND_TRUTH_SPEED_MPS:g} m/s"
                )


def drive_ground_truth(drive: Path) -> list[GroundTruthFrame]:
    """The ground truth of a drive, checked (`check_ground_truth_frame`): the file beside it
    (`<drive>.gt.jsonl`) when there is one that holds any, else its ground-truth channel;
    empty when it has neither.

    Raises:
        ValueError: a malformed document or an impossible value, naming the file and line (or
            the drive and sweep).
        replay.errors.ReplayError: the drive cannot be read.
    """
    # Imported here: replay.synth.world imports this module (ReferenceBox).
    from replay.synth.world import (  # noqa: PLC0415
        ground_truth_path,
        has_ground_truth,
        read_drive_ground_truth,
        read_numbered_ground_truth,
    )

    beside = ground_truth_path(drive)
    # An empty file beside the drive hid its channel, and the error then said it had neither.
    numbered = read_numbered_ground_truth(beside) if has_ground_truth(drive) else []
    if numbered:
        frames = [frame for _, frame in numbered]
        places = [f"{beside}:{n}" for n, _ in numbered]
    else:
        frames = read_drive_ground_truth(drive)
        places = [f"{drive}: ground truth of sweep {f.seq}" for f in frames]
    for frame, where in zip(frames, places, strict=True):
        check_ground_truth_frame(frame, where)
    return frames


# Corner signs (length, width) of a box's face, counter-clockwise seen from above, and the 12
# edges of the 8 corners that box_corners returns.
_CCW = ((1, 1), (-1, 1), (-1, -1), (1, -1))
_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7),
)  # fmt: skip


def box_corners(box: ReferenceBox | Detection3D) -> FloatArray:
    """The 8 corners (8 x 3) of a box: bottom face counter-clockwise, then the top face."""
    length, w, h = box.size
    c, s = math.cos(box.yaw), math.sin(box.yaw)
    local = np.array(
        [[sx * length / 2, sy * w / 2, sz * h / 2] for sz in (-1, 1) for sx, sy in _CCW],
        dtype=np.float64,
    )
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    out: FloatArray = local @ rot.T + np.asarray(box.center, dtype=np.float64)
    return out


def project_box(
    box: ReferenceBox | Detection3D,
    camera: CameraModel,
    camera_from_vehicle: RigidTransform,
    *,
    near_m: float = 0.1,
) -> tuple[float, float, float, float] | None:
    """The 2D box (x1, y1, x2, y2; pixels, clipped to the image) of a 3D box, or None if unseen.

    The box is clipped by the plane ``near_m`` (metres) in front of the camera before projection
    (its vertices in front plus the edge crossings), so boxes reaching behind the camera project
    correctly. With lens distortion only these vertices are projected (edges bend slightly, so
    the box may be a few pixels small). Returns None when nothing of the box is in front of the
    camera or the clipped 2D box is empty.
    """
    corners = camera_from_vehicle.apply(box_corners(box))
    z = corners[:, 2]
    pts = [corners[i] for i in range(8) if z[i] >= near_m]
    for i, j in _EDGES:
        if (z[i] >= near_m) != (z[j] >= near_m):
            t = (near_m - z[i]) / (z[j] - z[i])
            pts.append(corners[i] + t * (corners[j] - corners[i]))
    if not pts:
        return None
    uv, _ = camera.project(np.array(pts))
    uv = uv[np.all(np.isfinite(uv), axis=1)]  # outside a distortion model's valid angle
    if len(uv) == 0:
        return None
    x1 = max(0.0, float(uv[:, 0].min()))
    y1 = max(0.0, float(uv[:, 1].min()))
    x2 = min(float(camera.width), float(uv[:, 0].max()))
    y2 = min(float(camera.height), float(uv[:, 1].max()))
    if x2 <= x1 or y2 <= y1:
        return None
    return (x1, y1, x2, y2)


def visible_fraction(
    box: ReferenceBox | Detection3D,
    camera: CameraModel,
    camera_from_vehicle: RigidTransform,
    *,
    samples: int = 6,
) -> float:
    """Fraction of the box's volume (a ``samples``^3 grid) that projects into the image."""
    t = (np.arange(samples) + 0.5) / samples - 0.5
    grid = np.stack(np.meshgrid(t, t, t, indexing="ij"), axis=-1).reshape(-1, 3)
    c, s = math.cos(box.yaw), math.sin(box.yaw)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    pts = (grid * np.asarray(box.size)) @ rot.T + np.asarray(box.center)
    uv, depth = camera.project(camera_from_vehicle.apply(pts))
    return float(np.mean(camera.in_image(uv) & (depth > 0)))


def filter_references(
    references: Iterable[ReferenceBox],
    *,
    min_score: float = 0.5,
    max_range_m: float = 40.0,
    classes: Iterable[str] | None = None,
    camera: CameraModel | None = None,
    camera_from_vehicle: RigidTransform | None = None,
    min_visible_fraction: float = 0.05,
) -> list[ReferenceBox]:
    """The references worth matching: score >= ``min_score``, BEV range <= ``max_range_m``, label
    in ``classes`` (all if None) and, when a camera is given, at least ``min_visible_fraction`` of
    the box volume in its image. Raises ValueError when only one of camera/transform is given."""
    if (camera is None) != (camera_from_vehicle is None):
        raise ValueError("camera and camera_from_vehicle must be given together")
    wanted = None if classes is None else set(classes)
    out: list[ReferenceBox] = []
    for ref in references:
        if ref.score < min_score or ref.range_m > max_range_m:
            continue
        if wanted is not None and ref.label not in wanted:
            continue
        if (
            camera is not None
            and camera_from_vehicle is not None
            and visible_fraction(ref, camera, camera_from_vehicle) < min_visible_fraction
        ):
            continue
        out.append(ref)
    return out


def yaw_error_deg(a: float, b: float) -> float:
    """Heading difference in degrees, modulo 180 (in [0, 90])."""
    # Each heading is wrapped (exactly) before the difference: a finite yaw far beyond a turn
    # (1e308 rad, which a detections file may hold) overflowed to inf in degrees, and the
    # report's yaw error read nan.
    d = math.degrees(math.remainder(a, math.tau) - math.remainder(b, math.tau)) % 180.0
    return min(d, 180.0 - d)


@dataclass(frozen=True)
class Match:
    """A detection paired with a reference: BEV centre error (m), z error (m, detection minus
    reference), yaw error (degrees, modulo 180), BEV IoU of the rotated footprints."""

    detection: Detection3D
    reference: ReferenceBox
    center_error_m: float
    z_error_m: float
    yaw_error_deg: float
    bev_iou: float = 0.0


@dataclass(frozen=True)
class ClassStats:
    """Counts and errors of one class; recall/precision are None when undefined (0/0)."""

    label: str
    true_positives: int
    false_negatives: int
    false_positives: int
    median_center_error_m: float | None
    max_center_error_m: float | None
    median_yaw_error_deg: float | None

    @property
    def recall(self) -> float | None:
        n = self.true_positives + self.false_negatives
        return self.true_positives / n if n else None

    @property
    def precision(self) -> float | None:
        n = self.true_positives + self.false_positives
        return self.true_positives / n if n else None


@dataclass(frozen=True)
class MatchResult:
    """Matched pairs, missed references and unmatched detections of one or more frames."""

    matches: tuple[Match, ...] = ()
    missed: tuple[ReferenceBox, ...] = ()
    false_positives: tuple[Detection3D, ...] = ()
    classes: tuple[str, ...] = field(default=())

    def stats(self, label: str) -> ClassStats:
        """Counts and errors of ``label``."""
        matched = [m for m in self.matches if m.reference.label == label]
        centre = [m.center_error_m for m in matched]
        yaw = [m.yaw_error_deg for m in matched]
        return ClassStats(
            label=label,
            true_positives=len(matched),
            false_negatives=sum(1 for r in self.missed if r.label == label),
            false_positives=sum(1 for d in self.false_positives if d.label == label),
            median_center_error_m=statistics.median(centre) if centre else None,
            max_center_error_m=max(centre) if centre else None,
            median_yaw_error_deg=statistics.median(yaw) if yaw else None,
        )

    @property
    def per_class(self) -> dict[str, ClassStats]:
        """Stats of every class, in ``classes`` order."""
        return {label: self.stats(label) for label in self.classes}

    def recall(self, label: str) -> float | None:
        return self.stats(label).recall

    def precision(self, label: str) -> float | None:
        return self.stats(label).precision


def match_detections(
    detections: Sequence[Detection3D],
    references: Sequence[ReferenceBox],
    *,
    max_center_distance_m: float = 1.5,
    min_bev_iou: float | None = None,
    classes: Iterable[str] | None = None,
) -> MatchResult:
    """Greedy one-to-one matching per class, KITTI style: detections in descending score order,
    each takes the closest unmatched reference (by BEV centre distance).

    A pair qualifies when the centres are at most ``max_center_distance_m`` apart and, when
    ``min_bev_iou`` is given, the rotated BEV footprints overlap by at least that IoU. Only
    labels in ``classes`` take part (default: every label among references and detections).
    Ties are broken by input order, so the result is deterministic.
    Raises ValueError when ``max_center_distance_m`` is negative or ``min_bev_iou`` is outside
    [0, 1].
    """
    if not max_center_distance_m >= 0:
        raise ValueError(f"max_center_distance_m: must be >= 0, got {max_center_distance_m}")
    if min_bev_iou is not None and not 0.0 <= min_bev_iou <= 1.0:
        raise ValueError(f"min_bev_iou: must be in [0, 1], got {min_bev_iou}")
    if classes is None:
        labels = sorted({r.label for r in references} | {d.label for d in detections})
    else:
        labels = list(dict.fromkeys(classes))
    matches: list[Match] = []
    missed: list[ReferenceBox] = []
    false_pos: list[Detection3D] = []
    for label in labels:
        dets = sorted((d for d in detections if d.label == label), key=lambda d: -d.score)
        refs = [r for r in references if r.label == label]
        used_r: set[int] = set()
        for d in dets:
            best: tuple[float, int, float] | None = None
            for j, r in enumerate(refs):
                if j in used_r:
                    continue
                dist = math.hypot(d.center[0] - r.center[0], d.center[1] - r.center[1])
                if dist > max_center_distance_m or (best is not None and dist >= best[0]):
                    continue
                iou = bev_iou(d, r)
                if min_bev_iou is not None and iou < min_bev_iou:
                    continue
                best = (dist, j, iou)
            if best is None:
                false_pos.append(d)
                continue
            dist, j, iou = best
            used_r.add(j)
            r = refs[j]
            matches.append(
                Match(d, r, dist, d.center[2] - r.center[2], yaw_error_deg(d.yaw, r.yaw), iou)
            )
        missed += [r for j, r in enumerate(refs) if j not in used_r]
    return MatchResult(tuple(matches), tuple(missed), tuple(false_pos), tuple(labels))


def average_precision(result: MatchResult, label: str, *, recall_points: int = 40) -> float | None:
    """KITTI-style interpolated AP of ``label`` over the frames merged in ``result``: the
    detections ranked by score (true positives = matched), precision interpolated as the best
    precision at any recall >= r, averaged over ``recall_points`` recall levels 1/n .. 1 (R40).
    None when there is no reference of ``label``. Assumes the matching was score-ordered, as
    ``match_detections`` does."""
    n_refs = sum(1 for m in result.matches if m.reference.label == label) + sum(
        1 for r in result.missed if r.label == label
    )
    if n_refs == 0:
        return None
    ranked = sorted(
        [(m.detection.score, 1) for m in result.matches if m.reference.label == label]
        + [(d.score, 0) for d in result.false_positives if d.label == label],
        key=lambda x: -x[0],
    )
    if not ranked:
        return 0.0
    hits = np.cumsum([tp for _, tp in ranked])
    recall = hits / n_refs
    precision = hits / np.arange(1, len(ranked) + 1)
    levels = np.arange(1, recall_points + 1) / recall_points
    total = 0.0
    for level in levels:
        reached = precision[recall >= level - 1e-9]
        total += float(reached.max()) if reached.size else 0.0
    return total / recall_points


#: The quality protocol the demo's table and the learned engine's validation share: objects
#: within this BEV range (m) count...
QUALITY_RANGE_M = 40.0
#: ...when at least this fraction of them is unoccluded (where the source knows it)...
MIN_UNOCCLUDED = 0.5
#: ...and at least this fraction of their volume is in the camera image (where a camera is
#: given)...
MIN_IN_IMAGE = 0.5
#: ...and a detection matches within this BEV centre distance (m): a car 1 m, the narrow
#: classes 0.5 m.
CLASS_MATCH_DISTANCE_M: Mapping[str, float] = {"Car": 1.0, "Pedestrian": 0.5, "Cyclist": 0.5}
#: KITTI's neighbouring classes: a detection of a class on a reference of its neighbour (a van
#: called a car) is neither a true nor a false positive, and the neighbour is never missed.
NEIGHBOUR_LABELS: Mapping[str, tuple[str, ...]] = {
    "Car": ("Van",),
    "Pedestrian": ("Person_sitting",),
}


def quality_counted(
    references: Sequence[ReferenceBox],
    unoccluded: Sequence[float],
    camera: CameraModel | None = None,
    camera_from_vehicle: RigidTransform | None = None,
    *,
    range_m: float = QUALITY_RANGE_M,
) -> list[bool]:
    """Per reference, whether the quality protocol counts it: within ``range_m`` (BEV), at
    least `MIN_UNOCCLUDED` of it unoccluded (``unoccluded``: one fraction per reference) and,
    when a camera is given, at least `MIN_IN_IMAGE` of its volume in that camera's image.

    Raises:
        ValueError: ``unoccluded`` is not one fraction per reference, or only one of camera and
            transform is given.
    """
    if len(unoccluded) != len(references):
        raise ValueError(
            f"unoccluded: {len(unoccluded)} fractions for {len(references)} references"
        )
    if (camera is None) != (camera_from_vehicle is None):
        raise ValueError("camera and camera_from_vehicle must be given together")
    return [
        r.range_m <= range_m
        and u >= MIN_UNOCCLUDED
        and (
            camera is None
            or camera_from_vehicle is None
            or visible_fraction(r, camera, camera_from_vehicle) >= MIN_IN_IMAGE
        )
        for r, u in zip(references, unoccluded, strict=True)
    ]


def score_frame(
    detections: Sequence[Detection3D],
    references: Sequence[ReferenceBox],
    scored: Sequence[bool],
    *,
    classes: Sequence[str],
    match_distance_m: float | Mapping[str, float],
    range_m: float,
) -> MatchResult:
    """One frame scored the way the demo and KITTI's evaluation do, per class: references within
    ``range_m`` whose ``scored`` flag is set (e.g. visible enough) count; detections within
    ``range_m`` plus the match distance take part, each matched (greedily, by score) to the
    nearest reference of its class within the distance (``match_distance_m``, per class or one
    for all). A detection of a reference that does not count (too far, hidden, out of view) is
    ignored rather than called a false positive, and so is one on a reference of a neighbouring
    class (`NEIGHBOUR_LABELS`, KITTI's rule: a van called a car).

    Raises:
        ValueError: ``scored`` is not one flag per reference.
    """
    if len(scored) != len(references):
        raise ValueError(f"scored: {len(scored)} flags for {len(references)} references")
    results = []
    for label in classes:
        d = (
            match_distance_m.get(label, 1.0)
            if isinstance(match_distance_m, Mapping)
            else match_distance_m
        )
        refs = [(r, s) for r, s in zip(references, scored, strict=True) if r.label == label]
        neighbours = [
            replace(r, label=label)
            for r in references
            if r.label in NEIGHBOUR_LABELS.get(label, ()) and r.range_m <= range_m + 2 * d
        ]
        nearby = [r for r, _ in refs if r.range_m <= range_m + 2 * d] + neighbours
        counted = {id(r) for r, s in refs if s and r.range_m <= range_m}
        dets = [
            x for x in detections if x.label == label and math.hypot(*x.center[:2]) <= range_m + d
        ]
        raw = match_detections(dets, nearby, max_center_distance_m=d, classes=(label,))
        matched = {id(m.reference) for m in raw.matches}
        results.append(
            MatchResult(
                tuple(m for m in raw.matches if id(m.reference) in counted),
                tuple(r for r, _ in refs if id(r) in counted and id(r) not in matched),
                raw.false_positives,
                (label,),
            )
        )
    return merge_results(results)


def score_truth_frame(
    detections: Sequence[Detection3D],
    references: Sequence[ReferenceBox],
    unoccluded: Sequence[float],
    camera: CameraModel,
    camera_from_vehicle: RigidTransform,
    *,
    classes: Sequence[str] = POINTPILLARS_CLASSES,
) -> MatchResult:
    """One frame of ground truth scored by the quality protocol (`quality_counted` with the
    camera, `score_frame` at `CLASS_MATCH_DISTANCE_M` within `QUALITY_RANGE_M`): the demo's
    scores, and `perception show`'s for a drive with ground truth. ``unoccluded``: one
    fraction per reference.

    Raises:
        ValueError: ``unoccluded`` is not one fraction per reference.
    """
    scored = quality_counted(references, unoccluded, camera, camera_from_vehicle)
    return score_frame(
        detections,
        references,
        scored,
        classes=classes,
        match_distance_m=CLASS_MATCH_DISTANCE_M,
        range_m=QUALITY_RANGE_M,
    )


def merge_results(results: Iterable[MatchResult]) -> MatchResult:
    """One result over several frames (classes in first-seen order)."""
    matches: list[Match] = []
    missed: list[ReferenceBox] = []
    false_pos: list[Detection3D] = []
    classes: dict[str, None] = {}
    for r in results:
        matches += r.matches
        missed += r.missed
        false_pos += r.false_positives
        classes.update(dict.fromkeys(r.classes))
    return MatchResult(tuple(matches), tuple(missed), tuple(false_pos), tuple(classes))


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_report(result: MatchResult, *, title: str = "", details: bool = True) -> str:
    """A plain-text table: per class counts, recall, precision and errors; with ``details``, one
    line per matched pair and per miss / false positive."""
    lines = [title] if title else []
    header = (
        f"{'class':<12}{'TP':>4}{'FN':>4}{'FP':>4}{'recall':>8}{'prec':>7}"
        f"{'AP':>6}{'med err m':>11}{'max err m':>11}{'med yaw°':>10}"
    )
    lines += [header, "-" * len(header)]
    for label, s in result.per_class.items():
        lines.append(
            f"{label:<12}{s.true_positives:>4}{s.false_negatives:>4}{s.false_positives:>4}"
            f"{_fmt(s.recall, '.2f'):>8}{_fmt(s.precision, '.2f'):>7}"
            f"{_fmt(average_precision(result, label), '.2f'):>6}"
            f"{_fmt(s.median_center_error_m, '.2f'):>11}{_fmt(s.max_center_error_m, '.2f'):>11}"
            f"{_fmt(s.median_yaw_error_deg, '.1f'):>10}"
        )
    if details:
        for m in result.matches:
            r = m.reference
            lines.append(
                f"  match {r.label} ref ({r.center[0]:.2f}, {r.center[1]:.2f}) range "
                f"{r.range_m:.1f} m: centre err {m.center_error_m:.2f} m, z err "
                f"{m.z_error_m:+.2f} m, yaw err {m.yaw_error_deg:.1f}°, BEV IoU {m.bev_iou:.2f}"
            )
        for r in result.missed:
            lines.append(
                f"  missed {r.label} ({r.center[0]:.2f}, {r.center[1]:.2f}) range "
                f"{r.range_m:.1f} m score {r.score:.2f}"
            )
        for d in result.false_positives:
            lines.append(
                f"  false positive {d.label} ({d.center[0]:.2f}, {d.center[1]:.2f}) "
                f"score {d.score:.2f}"
            )
    return "\n".join(lines)
