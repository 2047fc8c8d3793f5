"""`perception replay`: recorded drives or KITTI object folders through the pipeline, offline."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.common import load_node_config, progress_bar, split_source
from app.models import build_pipeline, camera_model_file, choose_camera_model
from perception.config import NodeConfig
from perception.errors import PerceptionError
from perception.msgs.jsonl import write_jsonl_line
from perception.msgs.types import DetectionList
from replay.datasets.kitti_object import CAMERA_STREAM, KittiObjectFolder
from replay.distributed import replay_many
from replay.drive import DriveReader, DriveWriter
from replay.mcap_player import check_sensor_drive, checked_messages
from replay.offline import run_offline, run_recorded
from replay.output import (
    atomic_output,
    check_not_an_input,
    check_output_dir,
    check_output_file,
)
from replay.synth.world import ground_truth_path

__all__ = ["cmd_replay"]


def cmd_replay(args: argparse.Namespace) -> int:
    config = load_node_config(args.config)
    if args.out_dir is not None or args.ray_address is not None:
        return _replay_many(args, config)
    if args.out is None:
        raise PerceptionError("give --out FILE (one source) or --out-dir DIR (many sources)")
    kind, path = split_source(args.sources, "replay")
    out = Path(args.out).expanduser()
    if out.suffix not in (".jsonl", ".mcap"):
        raise PerceptionError(f"{out}: --out must end in .jsonl or .mcap")
    # Before anything is loaded: a wrong --out costs nothing.
    check_output_file(out, "--out")
    check_not_an_input(out, [path], "--out")
    config_given = args.config is not None
    if kind == "kitti-object":
        folder = KittiObjectFolder(path)
        config = choose_camera_model(config, args.model, config_given=config_given, synthetic=False)
        pipeline = build_pipeline(config)
        total = len(folder)
        results = run_offline(folder.messages(), pipeline, (CAMERA_STREAM,), config.sync)
    else:
        reader = DriveReader(path)
        # A drive without lidar sweeps (e.g. recorded detections) would replay to nothing.
        total = check_sensor_drive(reader).sweeps
        synthetic = ground_truth_path(path).is_file()
        config = choose_camera_model(
            config, args.model, config_given=config_given, synthetic=synthetic
        )
        pipeline = build_pipeline(config)
        results = run_recorded(
            checked_messages(reader),
            pipeline,
            config.inputs.camera_topics,
            config.sync,
            default_rig=reader.rig,
            speed=1.0 if args.realtime else 0.0,
        )
    bar = progress_bar(total=total, unit="sweep", desc=None, quiet=args.quiet)
    count = _write(results, out, bar)
    print(f"perception replay: {count} DetectionLists written to {out}")
    return 0


def _write(results: Iterator[DetectionList], out: Path, bar: Any) -> int:
    """Writes `results` into `out` (JSON Lines or MCAP by suffix), which appears, or replaces
    an existing file, only when every sweep is written."""
    count = 0
    with bar, atomic_output(out, "--out") as tmp:
        if out.suffix == ".jsonl":
            with tmp.open("w") as f:
                for dl in results:
                    write_jsonl_line(f, dl)
                    count += 1
                    bar.update(1)
        else:
            with DriveWriter(tmp) as writer:
                for dl in results:
                    writer.write(dl, dl.header.stamp_ns)
                    count += 1
                    bar.update(1)
    return count


def _replay_many(args: argparse.Namespace, config: NodeConfig) -> int:
    if args.out_dir is None:
        raise PerceptionError("--ray-address needs --out-dir DIR (one output file per source)")
    out_dir = check_output_dir(Path(args.out_dir), "--out-dir")
    sources = [Path(s).expanduser() for s in args.sources if s != "kitti-object"]
    if not sources:
        raise PerceptionError("no sources to replay")
    # The rule of a single replay; one pipeline serves all, so the synthetic detector only
    # when every source is a synthetic drive.
    synthetic = all(ground_truth_path(s).is_file() for s in sources)
    config = choose_camera_model(
        config, args.model, config_given=args.config is not None, synthetic=synthetic
    )
    model_path = camera_model_file(config)
    with progress_bar(total=len(sources), unit="drive", desc=None, quiet=args.quiet) as bar:
        results = replay_many(
            sources,
            out_dir,
            config=config,
            model_path=model_path,
            ray_address=args.ray_address,
            progress=lambda _done, _total, _result: bar.update(1),
        )
    failed = 0
    for r in results:
        if r.error:
            failed += 1
            print(f"{r.source}: failed: {r.error}", file=sys.stderr)
        else:
            print(f"{r.source}: {r.sweeps} DetectionLists -> {r.out_path} ({r.wall_s:.1f} s)")
    return 1 if failed else 0
