"""`perception import`: a KITTI object folder, a KITTI raw drive, a ROS 2 bag or a nuScenes
scene into an MCAP drive."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from app.common import Stages, load_node_config, not_for
from perception.msgs.schema import ALTITUDE_RANGE_M, above_a_limit
from replay.datasets.importers import ImportStats, import_kitti_object, import_kitti_raw
from replay.drive import check_not_being_written
from replay.errors import ReplayError
from replay.output import OutputError, check_not_an_input, check_output_file

__all__ = ["cmd_import"]


def _origin(text: str | None) -> tuple[float, float, float] | None:
    if text is None:
        return None
    parts = text.split(",")
    try:
        lat, lon, alt = (float(p) for p in parts)
    except ValueError:
        raise ReplayError(
            f"--origin {text!r}: expected LAT,LON,ALT in degrees and metres"
        ) from None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise ReplayError(f"--origin {text!r}: latitude or longitude out of range")
    low, high = ALTITUDE_RANGE_M
    if not (math.isfinite(alt) and low <= alt <= high):
        # An altitude of 1e300 was blamed on the scene's ego poses, after numpy's warnings.
        raise ReplayError(
            f"--origin {text!r}: altitude out of range ({low:g} to {high:g} m, what a GNSS fix "
            "may hold)"
        )
    return lat, lon, alt


#: The options of one format each: given for another, they would be ignored without a word.
_FORMAT_OPTIONS = {
    "kitti-raw": ("--grey",),
    "rosbag2": ("--topics", "--config"),
    "nuscenes": ("--version", "--scene", "--origin"),
}


def _import(args: argparse.Namespace, source: Path, out: Path, stages: Stages) -> ImportStats:
    others = [o for fmt, options in _FORMAT_OPTIONS.items() if fmt != args.format for o in options]
    not_for(args, f"an import of {args.format}", others)
    progress = stages.callback("import")
    if args.format == "kitti-object":
        return import_kitti_object(source, out, progress=progress, overwrite=args.overwrite)
    if args.format == "kitti-raw":
        return import_kitti_raw(
            source, out, grey=args.grey, progress=progress, overwrite=args.overwrite
        )
    if args.format == "rosbag2":
        from replay.rosbag2 import import_rosbag2  # noqa: PLC0415 (rosbags loads only here)

        topics = Path(args.topics).expanduser() if args.topics else None
        try:
            return import_rosbag2(
                source,
                out,
                topics=topics,
                progress=progress,
                overwrite=args.overwrite,
                limits=load_node_config(args.config).limits,
            )
        except ReplayError as e:
            if args.config is None and above_a_limit(e):
                raise ReplayError(
                    f"{e}; if the node is configured for it, give its config with --config "
                    "(its `limits:` then hold for the drive)"
                ) from e
            raise
    from replay.datasets.nuscenes import import_nuscenes  # noqa: PLC0415

    if not args.scene:
        raise ReplayError("import nuscenes: --scene NAME is required (e.g. scene-0061)")
    return import_nuscenes(
        source,
        out,
        version=args.version,
        scene=args.scene,
        origin=_origin(args.origin),
        progress=progress,
        overwrite=args.overwrite,
    )


def cmd_import(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser()
    if out.suffix != ".mcap":
        # A drive under another name is likely a typo that would replace some other file.
        raise OutputError(f"{out}: --out must end in .mcap (it is an MCAP drive)")
    check_output_file(args.out, "--out")
    source = Path(args.dir).expanduser()
    check_not_an_input(out, [source], "--out")
    if out.exists():
        if source.is_dir() and source.resolve() in out.resolve().parents:
            # A bag's own .mcap, say: the drive would replace the data being imported.
            raise OutputError(
                f"{out}: is a file of the folder being imported; --out must be another file"
            )
        # Replaced, the recorder writing it would go on writing a file no name leads to.
        check_not_being_written(out)
        if not args.overwrite:
            raise OutputError(f"{out}: exists; give --overwrite to replace it, or another --out")
    with Stages("msg", args.quiet, {"import": f"importing {source.name}"}) as stages:
        stats = _import(args, source, out, stages)
    for warning in stats.warnings:
        print(f"warning: {warning}")
    counts = ", ".join(f"{t} {n}" for t, n in sorted(stats.messages.items()))
    print(f"perception import: {out}: {counts} ({stats.bytes / 1e6:.1f} MB, {stats.wall_s:.1f} s)")
    if stats.camera_offsets_ms:
        offsets = ", ".join(f"{k}: {v:.1f}" for k, v in sorted(stats.camera_offsets_ms.items()))
        print(f"cameras follow their sweep stamp by (ms) {offsets}: set sync.camera_offsets_ms")
    return 0
