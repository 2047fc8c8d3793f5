"""`perception eval`: detections against reference boxes, or tracks against ground truth."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from app.commands.show import read_run
from app.common import check_drive_path
from perception.errors import PerceptionError
from replay.datasets.kitti_eval import evaluate_kitti_run
from replay.evaluation import drive_ground_truth

if TYPE_CHECKING:
    from replay.drive import DriveReader

__all__ = ["cmd_eval"]

#: The options that tune the matching of detections with references: (flag, namespace
#: attribute).
_DETECTION_OPTIONS = (
    ("--max-distance", "max_distance"),
    ("--min-iou", "min_iou"),
    ("--max-range", "max_range"),
    ("--min-score", "min_score"),
)


def _check_text(path: Path) -> Path:
    """`path` if it is UTF-8 text (JSON Lines); a binary file (an MCAP drive given by mistake)
    is named here rather than failing inside the JSON reader."""
    if not path.is_file():
        return path  # the reader names a missing file or a folder
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise PerceptionError(
            f"{path}: not a JSON Lines file ({e.reason} at byte {e.start}); eval takes the "
            "detections of `perception replay ... --out FILE.jsonl`"
        ) from e
    return path


def cmd_eval(args: argparse.Namespace) -> int:
    if args.tracks is not None:
        return _eval_tracks(args)
    if args.drive is not None:
        raise PerceptionError("--drive goes with --tracks (tracks against a drive's ground truth)")
    missing = [
        name
        for name, value in (
            ("DETECTIONS", args.detections),
            ("--kitti", args.kitti),
            ("--reference", args.reference),
        )
        if value is None
    ]
    if missing:
        raise PerceptionError(
            f"missing {', '.join(missing)}: eval takes DETECTIONS --kitti DIR --reference DIR, "
            "or --tracks OUT.mcap --drive DRIVE.mcap"
        )
    detections = _check_text(Path(args.detections).expanduser())
    # Read here, where a run of no DetectionList (else blamed on the references) or of one
    # frame twice (else counted twice) is refused, and handed to the evaluation.
    runs = read_run(detections, command="eval")
    _, report = evaluate_kitti_run(
        detections,
        Path(args.kitti).expanduser(),
        Path(args.reference).expanduser(),
        max_center_distance_m=args.max_distance,
        min_bev_iou=args.min_iou,
        max_range_m=args.max_range,
        min_reference_score=args.min_score,
        runs=runs,
        warn=lambda text: print(f"perception eval: warning: {text}", file=sys.stderr),
    )
    print(report)
    return 0


def _eval_tracks(args: argparse.Namespace) -> int:
    """`eval --tracks OUT.mcap --drive DRIVE.mcap`: the TrackLists of a replay's MCAP output
    scored against the ground truth of the drive replayed (`replay.tracking_eval`)."""
    given = [
        name
        for name, value in (
            ("DETECTIONS", args.detections),
            ("--kitti", args.kitti),
            ("--reference", args.reference),
        )
        if value is not None
    ]
    # The detections' matching options do nothing for tracks, which are matched by the demo's
    # protocol: ignored without a word, they let a user believe the scores used them.
    defaults = args.option_defaults  # the parser's (app.cli.with_option_defaults)
    given += [flag for flag, dest in _DETECTION_OPTIONS if getattr(args, dest) != defaults[dest]]
    if given:
        raise PerceptionError(
            f"--tracks takes no {', '.join(given)}: it scores the tracks of a replay's MCAP "
            "output against the drive's ground truth (--drive DRIVE.mcap), matched as the "
            "demo matches them"
        )
    if args.drive is None:
        raise PerceptionError(
            "--tracks needs --drive DRIVE.mcap: the drive replayed, whose ground truth the "
            "tracks are scored against"
        )
    # Imported here: py-motmetrics brings pandas (a second to import) that the detections'
    # evaluation does without.
    from perception.msgs.types import TrackList  # noqa: PLC0415
    from replay.drive import DriveReader  # noqa: PLC0415
    from replay.synth.world import ground_truth_path  # noqa: PLC0415
    from replay.tracking_eval import evaluate_tracks, format_tracking_report  # noqa: PLC0415

    tracks_path = check_drive_path(Path(args.tracks).expanduser())
    drive = check_drive_path(Path(args.drive).expanduser())
    output = DriveReader(tracks_path)
    topics = output.topics()
    lists = [r.message for r in output.messages() if isinstance(r.message, TrackList)]
    if not lists:
        held = ", ".join(sorted(topics)) or "nothing"
        raise PerceptionError(
            f"{tracks_path}: no TrackLists (it holds: {held}); --tracks takes the MCAP output "
            "of `perception replay DRIVE --out OUT.mcap`"
        )
    beside = ground_truth_path(drive)
    try:
        truth = drive_ground_truth(drive)
    except ValueError as e:
        raise PerceptionError(str(e)) from e
    if not truth:
        where = (
            f"{beside.name} beside it is empty and it has no ground-truth channel"
            if beside.is_file()
            else f"neither {beside.name} beside it nor a ground-truth channel in it"
        )
        raise PerceptionError(
            f"{drive}: no ground truth ({where}); --drive takes a synthetic drive "
            "(`perception demo`)"
        )
    stamps = {f.stamp_ns for f in truth}
    if not any(t.header.stamp_ns in stamps for t in lists):
        raise PerceptionError(
            f"{tracks_path}: no TrackList has the stamp of a sweep of {drive}: were the tracks "
            "replayed from another drive?"
        )
    # After the stamps: tracks sharing no stamp with the drive are refused on one line alone.
    _check_replayed_from(output, tracks_path, drive)
    rig = DriveReader(drive).rig or output.rig
    try:
        result = evaluate_tracks(lists, truth, rig=rig)
    except ValueError as e:
        raise PerceptionError(f"{drive}: {e}") from e
    print(format_tracking_report(result, title=f"tracks: {tracks_path}\ndrive: {drive}"))
    return 0


def _check_replayed_from(output: DriveReader, tracks_path: Path, drive: Path) -> None:
    """Refuses tracks replayed from another synthetic world than `drive`'s: synthetic drives
    share their stamps, so the stamp check passed and the tracks of one drive were scored
    against another's ground truth. Where the worlds cannot be compared (a drive written
    before drives named their world) but the replay names a drive of another name, warns."""
    from replay.drive import REPLAY_METADATA, SYNTHETIC_METADATA, DriveReader  # noqa: PLC0415

    replayed = output.metadata(REPLAY_METADATA) or {}
    world = DriveReader(drive).metadata(SYNTHETIC_METADATA) or {}
    # The length is recorded since drives of one seed and two lengths were scored against each
    # other (MOTA -1.4, no word): the road users are spread over the drive. Older drives compare
    # without it.
    keys = [k for k in ("scene", "seed", "lidar", "seconds") if k in replayed and k in world]
    source = replayed.get("source")
    if {"scene", "seed", "lidar"} <= set(keys):
        if any(replayed[k] != world[k] for k in keys):

            def named(meta: dict[str, str]) -> str:
                return ", ".join(f"{k} {meta[k]}" for k in keys)

            raise PerceptionError(
                f"{tracks_path}: replayed from {source} (synthetic: {named(replayed)}), not "
                f"from {drive} ({named(world)}): score the tracks against the drive replayed"
            )
    elif source is not None and source != drive.name:
        print(
            f"perception eval: warning: {tracks_path}: replayed from {source}, scored against "
            f"{drive}, and their synthetic worlds cannot be compared (not both drives name "
            "theirs): is it the drive replayed?",
            file=sys.stderr,
        )
