"""`perception eval`: detections against reference boxes."""

from __future__ import annotations

import argparse
from pathlib import Path

from perception.errors import PerceptionError
from replay.datasets.kitti_eval import evaluate_kitti_run

__all__ = ["cmd_eval"]


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
    _, report = evaluate_kitti_run(
        _check_text(Path(args.detections).expanduser()),
        Path(args.kitti).expanduser(),
        Path(args.reference).expanduser(),
        max_center_distance_m=args.max_distance,
        min_bev_iou=args.min_iou,
        max_range_m=args.max_range,
        min_reference_score=args.min_score,
    )
    print(report)
    return 0
