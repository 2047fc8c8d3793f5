"""Evaluate a replayed KITTI object run against reference boxes, frame by frame.

The DetectionList with `header.seq` i in the detections file is frame i of the KITTI folder
(the order `perception replay kitti-object` processes them). References are PointPillars
prediction files (`x y z dx dy dz yaw class_id score`) or KITTI `label_2` files, one per frame
id; frames without one are not evaluated.

A DetectionList names its frame by `header.seq` alone, so a run is first checked against the
folder (`check_run_of_folder`). Refused, where the run cannot be a replay of the folder: more
DetectionLists than frames, or a seq naming no frame. Warned about, where it only might not be
(`run_doubts`): stamps a replay of a KITTI folder does not give (it stamps frame i at i times
one period, from 0; a live run of the folder, through `play kitti-object`, is stamped by the
host clock, and a replay that lost a sweep numbers the later frames one less, so a mismatch
may be a run of another source or a pairing gone wrong, not certainly either), and frames of
the folder without a DetectionList (their references would go unscored).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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

__all__ = [
    "check_run_of_folder",
    "evaluate_kitti_run",
    "frame_references",
    "read_references",
    "run_doubts",
    "score_kitti_frame",
]


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
    class, in the frame's camera image), None when `reference_dir` has no file for it.

    Raises:
        ReplayError: the frame's reference file is malformed, or is no regular file.
    """
    frame = folder.frames[index]
    ref_path = reference_dir / f"{frame.frame_id}.txt"
    if not ref_path.is_file():
        if ref_path.exists():
            # A folder or pipe of that name would leave the frame unscored without a word.
            raise ReplayError(
                f"{ref_path}: not a regular file (a folder, device or pipe), so no references "
                f"of frame {frame.frame_id}"
            )
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


def check_run_of_folder(
    runs: Sequence[DetectionList], folder: KittiObjectFolder, detections_path: Path | str
) -> None:
    """Refuses a run that cannot be a replay of `folder`: more DetectionLists than the folder
    has frames (a replay writes one per frame at most), or a `header.seq` naming no frame.

    Raises:
        ReplayError: naming the run, the folder and what does not fit.
    """
    frames = len(folder)
    if len(runs) > frames:
        raise ReplayError(
            f"{detections_path}: {len(runs)} DetectionLists, but {folder.root} holds {frames} "
            "frames (a replay of it writes one per frame): was the run replayed from another "
            "source?"
        )
    for dl in runs:
        if not 0 <= dl.header.seq < frames:
            raise ReplayError(
                f"{detections_path}: header.seq {dl.header.seq} has no frame in {folder.root} "
                f"(frames 0 to {frames - 1}): was the run replayed from another source?"
            )


def run_doubts(
    runs: Sequence[DetectionList], folder: KittiObjectFolder, detections_path: Path
) -> list[str]:
    """What makes a run, paired with `folder`'s frames by `header.seq`, doubtful (one line
    each; see the module docstring): stamps a replay of a KITTI folder does not give, frames
    without a DetectionList. `runs` passed `check_run_of_folder`."""
    doubts = []
    period_ns: int | None = None
    for dl in sorted(runs, key=lambda d: d.header.seq):
        seq, stamp_ns = dl.header.seq, dl.header.stamp_ns
        if seq == 0:
            fits = stamp_ns == 0
        elif period_ns is None:
            fits = stamp_ns > 0 and stamp_ns % seq == 0
            period_ns = stamp_ns // seq
        else:
            fits = stamp_ns == seq * period_ns
        if not fits:
            doubts.append(
                f"{detections_path}: header.seq {seq} has stamp_ns {stamp_ns}, which a replay of "
                "a KITTI folder does not give (frame i at i periods from 0): a run of another "
                "source, or a replay that lost a frame? Its DetectionLists are paired with the "
                f"frames of {folder.root} by header.seq"
            )
            break
    seqs = {dl.header.seq for dl in runs}
    missing = [f.frame_id for i, f in enumerate(folder.frames) if i not in seqs]
    if missing:
        named = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        doubts.append(
            f"{detections_path}: no DetectionList for {len(missing)} of the {len(folder)} frames "
            f"of {folder.root} ({named}): their references are not scored"
        )
    return doubts


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
    warn: Callable[[str], None] | None = None,
) -> tuple[MatchResult, str]:
    """Match every evaluated frame and return the merged result with a printable report.

    References count when their score >= `min_reference_score`, within `max_range_m` and in the
    camera's view; detections beyond `max_range_m` + `max_center_distance_m` are not counted as
    false positives. `runs`: the DetectionLists of `detections_path` where the caller has read
    them already. `warn` gets each of `run_doubts`, before any frame is scored. Raises
    ReplayError naming the path when an input is missing or malformed, or the run cannot be of
    the folder (`check_run_of_folder`).
    """
    if not reference_dir.is_dir():
        state = "is not a folder" if reference_dir.exists() else "does not exist"
        raise ReplayError(f"{reference_dir}: reference folder {state}")
    folder = KittiObjectFolder(kitti_dir)
    if runs is None:
        try:
            runs = list(read_jsonl(detections_path, DetectionList))
        except SourceError as e:
            raise ReplayError(str(e)) from e
    check_run_of_folder(runs, folder, detections_path)
    if warn is not None:
        for doubt in run_doubts(runs, folder, detections_path):
            warn(doubt)
    results: list[MatchResult] = []
    lines: list[str] = []
    for dl in runs:
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
