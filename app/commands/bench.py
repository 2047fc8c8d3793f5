"""`perception bench`: a drive played into a `perception run` child at a fixed rate."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from app.bench import (
    BenchInterruptedError,
    BenchSettings,
    Sweep,
    check_settings,
    config_for_sweeps,
    format_markdown,
    group_sweeps,
    run_bench,
    sweeps_needed,
    write_report,
)
from app.bench.device import resolve_engines
from app.bench.sweeps import with_engines
from app.common import Stages, load_node_config, stop_on_signals
from app.models import camera_model_file, choose_camera_model
from calibration import Rig
from perception.config import NodeConfig
from perception.errors import PerceptionError
from perception.msgs.types import RigMessage
from replay.datasets.kitti_object import KittiObjectFolder
from replay.drive import DriveReader
from replay.errors import ReplayError, messages_lost
from replay.mcap_player import check_sensor_drive, checked_messages
from replay.output import check_output_dir
from replay.synth.demo import ensure_synthetic_drive
from replay.synth.world import has_ground_truth

__all__ = ["cmd_bench"]

#: Where `perception demo` leaves its drive; the bench's default drive.
DEMO_DRIVE = Path("perception-demo") / "synth_seed0.mcap"


def _bench_drive(
    drive: str | None, limit: int, stages: Stages
) -> tuple[str, list[Sweep], Rig | None, bool]:
    """(description, sweeps, rig, synthetic) of `perception bench [DRIVE]`: an MCAP drive, a
    KITTI object folder (or its parent holding `training/`), or by default the synthetic drive
    of `perception demo` (generated into perception-demo/ unless it is there already)."""
    if drive is None:
        path = DEMO_DRIVE
        check_output_dir(path.parent, "the synthetic drive's folder")
        if not (path.is_file() and has_ground_truth(path)):
            print(f"perception bench: generating the synthetic drive {path}", flush=True)
        ensure_synthetic_drive(path, seed=0, seconds=10.0, progress=stages)
    else:
        path = Path(drive).expanduser()
    if path.is_dir():
        if not (path / "image_2").is_dir() and (path / "training" / "image_2").is_dir():
            path = path / "training"
        folder = KittiObjectFolder(path)
        records = ((m.header.stream, m) for m in folder.messages())
        return f"KITTI object {path}", group_sweeps(records, limit), None, False
    if not path.exists():
        raise PerceptionError(f"{path}: no such drive (.mcap) or KITTI object folder")
    reader = DriveReader(path)
    check_sensor_drive(reader, command="bench")
    lost = 0

    def leave_out(error: ReplayError) -> None:
        nonlocal lost
        lost += messages_lost(error)

    recorded = checked_messages(reader, on_error=leave_out)
    sweeps = group_sweeps(((r.topic, r.message) for r in recorded), limit)
    if lost:
        # A damaged drive still times the node on what it holds; the loss is said, once.
        print(f"perception bench: {path}: {lost} unreadable message(s) left out", flush=True)
    synthetic = has_ground_truth(path)
    return f"{'synthetic drive' if synthetic else 'drive'} {path}", sweeps, reader.rig, synthetic


def _bench_config(args: argparse.Namespace, sweeps: list[Sweep], synthetic: bool) -> NodeConfig:
    """The node config to bench: --config as is, else the defaults with the drive's topics and
    camera offsets; the camera model by the rule replay and run share (app.models), its file
    resolved here so a missing model is reported before the node starts."""
    if args.config:
        config = load_node_config(args.config)
    else:
        config = config_for_sweeps(sweeps, NodeConfig())
    config = choose_camera_model(
        config, args.model, config_given=args.config is not None, synthetic=synthetic
    )
    model_path = str(camera_model_file(config))
    return dataclasses.replace(
        config, camera_model=dataclasses.replace(config.camera_model, path=model_path)
    )


def _check_inputs(
    args: argparse.Namespace, sweeps: list[Sweep], rig: Rig | None, source: str, config: NodeConfig
) -> None:
    """Refuse, before the node starts, what it would wait for in vain: sweeps on a topic its
    config does not subscribe to, or a drive without a rig (each was a minute of "the node
    answered none of 60 sweeps", naming neither)."""
    lidar_topic = sweeps[0][-1][0]
    if config.inputs.lidar_topic != lidar_topic:
        raise PerceptionError(
            f"{source}: no lidar sweeps on {config.inputs.lidar_topic} (inputs.lidar_topic of "
            f"--config {args.config}); its sweeps are on {lidar_topic}"
        )
    recorded_rig = any(isinstance(m, RigMessage) for sweep in sweeps for _, m in sweep)
    if rig is None and config.rig is None and not recorded_rig:
        raise PerceptionError(
            f"{source}: holds no rig (calibration); give one with --config (its `rig`)"
        )


def cmd_bench(args: argparse.Namespace) -> int:
    settings = BenchSettings(
        rate_hz=args.rate,
        duration_s=args.duration,
        backend=args.backend,
        device=args.device,
        find_max_rate=args.find_max_rate,
        window_s=args.window,
    )
    check_settings(settings)
    out = check_output_dir(Path(args.out).expanduser(), "--out", create=False)
    base = load_node_config(args.config)
    # Fail fast on a GPU that is not there, before a drive is generated or loaded.
    resolve_engines(with_engines(base, settings.backend, settings.device).engines)
    labels = {"generate": f"generating the synthetic drive {DEMO_DRIVE}"}
    stop = stop_on_signals()
    with Stages("sweep", args.quiet, labels) as stages:
        source, sweeps, rig, synthetic = _bench_drive(args.drive, sweeps_needed(settings), stages)
        config = _bench_config(args, sweeps, synthetic)
        _check_inputs(args, sweeps, rig, source, config)

        def progress(done: int, total: int, label: str) -> None:
            stages(label, done, total)

        try:
            result = run_bench(
                sweeps, config, settings, out, source=source, rig=rig, stop=stop, progress=progress
            )
        except BenchInterruptedError:
            stages.close()
            print("perception bench: interrupted; the node is stopped", file=sys.stderr)
            return 130
    json_path, md_path, png_path = write_report(result, out)
    print(format_markdown(result))
    print(f"perception bench: written {json_path}, {md_path}, {png_path}")
    return 0
