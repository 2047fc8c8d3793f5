"""`perception import`: a KITTI object folder or KITTI raw drive into an MCAP drive."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.common import Stages
from replay.datasets.importers import import_kitti_object, import_kitti_raw
from replay.output import OutputError, check_output_file

__all__ = ["cmd_import"]


def cmd_import(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser()
    if out.suffix != ".mcap":
        # A drive under another name is likely a typo that would replace some other file.
        raise OutputError(f"{out}: --out must end in .mcap (it is an MCAP drive)")
    check_output_file(out, "--out")
    source = Path(args.dir).expanduser()
    with Stages("msg", args.quiet, {"import": f"importing {source.name}"}) as stages:
        if args.format == "kitti-object":
            stats = import_kitti_object(source, out, progress=stages.callback("import"))
        else:
            stats = import_kitti_raw(
                source, out, grey=args.grey, progress=stages.callback("import")
            )
    for warning in stats.warnings:
        print(f"warning: {warning}")
    counts = ", ".join(f"{t} {n}" for t, n in sorted(stats.messages.items()))
    print(f"perception import: {out}: {counts} ({stats.bytes / 1e6:.1f} MB, {stats.wall_s:.1f} s)")
    if stats.camera_offsets_ms:
        offsets = ", ".join(f"{k}: {v:.1f}" for k, v in sorted(stats.camera_offsets_ms.items()))
        print(f"cameras follow their sweep stamp by (ms) {offsets}: set sync.camera_offsets_ms")
    return 0
