"""`perception export rosbag2`: a drive's or a replay run's detections into a ROS 2 bag."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.common import Stages
from replay.rosbag2 import export_rosbag2

__all__ = ["cmd_export"]


def cmd_export(args: argparse.Namespace) -> int:
    source = Path(args.source).expanduser()
    out = Path(args.out).expanduser()
    with Stages("msg", args.quiet, {"export": f"exporting {source.name}"}) as stages:
        stats = export_rosbag2(
            source,
            out,
            storage=args.storage,
            msgs=args.msgs,
            progress=stages.callback("export"),
        )
    counts = ", ".join(f"{t} {n}" for t, n in sorted(stats.messages.items()))
    skipped = (
        f"; {stats.unreadable} unreadable message(s) of the drive skipped"
        if stats.unreadable
        else ""
    )
    print(
        f"perception export: {out}: {stats.msgtype} on {counts} ({stats.detections} detections, "
        f"{stats.storage}, {stats.wall_s:.1f} s){skipped}"
    )
    return 0
