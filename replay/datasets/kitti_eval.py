"""Evaluate a replayed KITTI object run against reference boxes, frame by frame.

The DetectionList with `header.seq` i in the detections file is frame i of the KITTI folder
(the order `perception replay kitti-object` processes them). References are PointPillars
prediction files (`x y z dx dy dz yaw class_id score`) or KITTI `label_2` files, one per frame
id; frames without one are not evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from calibration.errors import read_text
from perception.errors import SourceError
from perception.msgs.jsonl import read_jsonl
from perception.msgs.types import DetectionList
from replay.datasets.kitti_object import KittiObjectFolder, read_image
from replay.errors import ReplayError
from replay.evaluation import (
    POINTPILLARS_CLASSES,
    MatchResult,
    ReferenceBox,
    filter_references,
    format_report,
    match_detections,
    merge_results,
    read_kitti_labels,
    read_pointpillars_boxes,
)

__all__ = ["evaluate_kitti_run", "frame_references", "read_references", "score_kitti_frame"]


def read_references(path: Path, calib_path: Path) -> list[ReferenceBox]:
    """Boxes of one reference file, in the Velodyne frame, whichever of the two formats it is
    (told by a line's first field: a KITTI label line starts with its type, a PointPillars
    box with a number), so an error is the format's own.

    Raises:
        ReplayError: the file cannot be read, or a line is malformed (the reader's message).
    """
    try:
        lines = read_text(path, "the reference file", ValueError).splitlines()
        first = next((line.split()[0] for line in lines if line.split()), "")
        try:
            float(first)
        except ValueError:
            return read_kitti_labels(path, calib_path)
        return read_pointpillars_boxes(path)
    except (ValueError, OSError) as e:
        raise ReplayError(" ".join(str(e).split())) from e


def frame_references(
    folder: KittiObjectFolder,
    index: int,
    reference_dir: Path,
    *,
    min_score: float = 0.5,
    max_range_m: float = 40.0,
    classes: tuple[str, ...] = POINTPILLARS_CLASSES,
) -> list[ReferenceBox] | None:
    """The reference boxes of frame `index` worth matching (`filter_references`: score, range,
    class, in the frame's camera image), None when `reference_dir` has no file for it."""
    frame = folder.frames[index]
    ref_path = reference_dir / f"{frame.frame_id}.txt"
    if not ref_path.is_file():
        return None
    rig = folder.rig(frame, read_image(frame.image_path))
    return filter_references(
        read_references(ref_path, frame.calib_path),
        min_score=min_score,
        max_range_m=max_range_m,
        classes=classes,
        camera=rig.cameras["front"],
        camera_from_vehicle=rig.transform("camera/front", "vehicle"),
    )


def score_kitti_frame(
    folder: KittiObjectFolder,
    detections: DetectionList,
    reference_dir: Path,
    *,
    max_center_distance_m: float = 1.5,
    min_bev_iou: float | None = None,
    max_range_m: float = 40.0,
    min_reference_score: float = 0.5,
    classes: tuple[str, ...] = POINTPILLARS_CLASSES,
) -> MatchResult | None:
    """The detections of frame `detections.header.seq` matched with its references as
    `evaluate_kitti_run` matches them (its parameters); None when `reference_dir` has no file
    for the frame. The result's matched and missed references are those that count.

    Raises:
        ReplayError: the frame's files or reference file are missing or malformed.
    """
    refs = frame_references(
        folder,
        detections.header.seq,
        reference_dir,
        min_score=min_reference_score,
        max_range_m=max_range_m,
        classes=classes,
    )
    if refs is None:
        return None
    limit = max_range_m + max_center_distance_m
    dets = [
        d
        for d in detections.detections
        if d.label in classes and math.hypot(d.center[0], d.center[1]) <= limit
    ]
    return match_detections(
        dets,
        refs,
        max_center_distance_m=max_center_distance_m,
        min_bev_iou=min_bev_iou,
        classes=classes,
    )


def evaluate_kitti_run(
    detections_path: Path,
    kitti_dir: Path,
    reference_dir: Path,
    *,
    max_center_distance_m: float = 1.5,
    min_bev_iou: float | None = None,
    max_range_m: float = 40.0,
    min_reference_score: float = 0.5,
    classes: tuple[str, ...] = POINTPILLARS_CLASSES,
    runs: Sequence[DetectionList] | None = None,
) -> tuple[MatchResult, str]:
    """Match every evaluated frame and return the merged result with a printable report.

    References count when their score >= `min_reference_score`, within `max_range_m` and in the
    camera's view; detections beyond `max_range_m` + `max_center_distance_m` are not counted as
    false positives. `runs`: the DetectionLists of `detections_path` where the caller has read
    them already. Raises ReplayError naming the path when an input is missing or malformed.
    """
    if not reference_dir.is_dir():
        raise ReplayError(f"{reference_dir}: reference folder does not exist")
    folder = KittiObjectFolder(kitti_dir)
    if runs is None:
        try:
            runs = list(read_jsonl(detections_path, DetectionList))
        except SourceError as e:
            raise ReplayError(str(e)) from e
    results: list[MatchResult] = []
    lines: list[str] = []
    for dl in runs:
        if not 0 <= dl.header.seq < len(folder):
            raise ReplayError(
                f"{detections_path}: header.seq {dl.header.seq} has no frame in {kitti_dir}"
            )
        result = score_kitti_frame(
            folder,
            dl,
            reference_dir,
            max_center_distance_m=max_center_distance_m,
            min_bev_iou=min_bev_iou,
            max_range_m=max_range_m,
            min_reference_score=min_reference_score,
            classes=classes,
        )
        if result is None:
            continue
        results.append(result)
        frame_id = folder.frames[dl.header.seq].frame_id
        lines.append(format_report(result, title=f"frame {frame_id}", details=True))
    if not results:
        raise ReplayError(f"{reference_dir}: no reference file matches a replayed frame")
    merged = merge_results(results)
    lines.append(format_report(merged, title=f"all {len(results)} frames", details=False))
    return merged, "\n\n".join(lines)
