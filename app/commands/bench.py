"""`perception bench`: a drive played into a `perception run` child at a fixed rate."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

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
)
from app.bench.device import resolve_engines
from app.bench.report import REPORT_FILES
from app.bench.runner import NODE_FILES, RIG_FILE
from app.bench.sweeps import with_engines
from app.common import Stages, load_node_config, stop_on_signals
from app.models import camera_model_file, choose_camera_model
from calibration import Rig
from perception.config import NodeConfig
from perception.errors import PerceptionError
from perception.msgs.schema import DEFAULT_LIMITS, WireLimits
from perception.msgs.types import RigMessage
from replay.datasets.kitti_object import KittiObjectFolder
from replay.drive import DriveReader
from replay.errors import ReplayError, messages_lost
from replay.mcap_player import check_sensor_drive, checked_messages
from replay.output import OutputError, check_output_dir, find_output_input
from replay.synth.demo import ensure_synthetic_drive
from replay.synth.world import drive_files, has_ground_truth

__all__ = ["cmd_bench"]

#: Where `perception demo` leaves its drive; the bench's default drive.
DEMO_DRIVE = Path("perception-demo") / "synth_seed0.mcap"

_T = TypeVar("_T")


def _drive_path(drive: str | None) -> Path:
    """The drive or KITTI object folder `perception bench [DRIVE]` reads (a folder holding
    `training/`: that), by default the synthetic drive of `perception demo`."""
    if drive is None:
        return DEMO_DRIVE
    path = Path(drive).expanduser()
    training = path / "training"
    if path.is_dir() and not (path / "image_2").is_dir() and (training / "image_2").is_dir():
        return training
    return path


def _until_stopped(items: Iterable[_T], stop: threading.Event) -> Iterator[_T]:
    """`items`, ending in BenchInterruptedError once `stop` is set: reading a drive's sweeps
    (200 KITTI frames, a damaged drive read past) took seconds after a Ctrl-C, and then the
    node was started anyway."""
    for item in items:
        if stop.is_set():
            raise BenchInterruptedError("interrupted while the drive was read")
        yield item


def _bench_drive(
    drive: str | None,
    limit: int,
    stages: Stages,
    stop: threading.Event | None = None,
    *,
    limits: WireLimits | None = None,
) -> tuple[str, list[Sweep], Rig | None, bool, WireLimits]:
    """(description, sweeps, rig, synthetic, wire limits) of `perception bench [DRIVE]`: an
    MCAP drive, a KITTI object folder (or its parent holding `training/`), or by default the
    synthetic drive of `perception demo` (generated into perception-demo/ unless it is there
    already). A drive is read with `limits` (a config's), else with those it was recorded
    under (`DriveReader.limits`), which are returned. `stop` set: BenchInterruptedError (also
    while the synthetic drive is generated)."""
    stop = stop or threading.Event()
    path = _drive_path(drive)
    if drive is None:
        check_output_dir(path.parent, "the synthetic drive's folder")
        if not (path.is_file() and has_ground_truth(path)):
            print(f"perception bench: generating the synthetic drive {path}", flush=True)

        def generating(label: str, done: int, total: int) -> None:
            # Raised out of the generator: its partial files are removed on the way out.
            if stop.is_set():
                raise BenchInterruptedError("interrupted while the drive was generated")
            stages(label, done, total)

        ensure_synthetic_drive(path, seed=0, seconds=10.0, progress=generating)
    if path.is_dir():
        folder = KittiObjectFolder(path)
        records = ((m.header.stream, m) for m in _until_stopped(folder.messages(), stop))
        return f"KITTI object {path}", group_sweeps(records, limit), None, False, DEFAULT_LIMITS
    if not path.exists():
        raise PerceptionError(f"{path}: no such drive (.mcap) or KITTI object folder")
    reader = DriveReader(path, limits=limits)
    check_sensor_drive(reader, command="bench")
    lost = 0

    def leave_out(error: ReplayError) -> None:
        nonlocal lost
        lost += messages_lost(error)

    recorded = _until_stopped(checked_messages(reader, on_error=leave_out), stop)
    sweeps = group_sweeps(((r.topic, r.message) for r in recorded), limit)
    if lost:
        # A damaged drive still times the node on what it holds; the loss is said, once.
        print(f"perception bench: {path}: {lost} unreadable message(s) left out", flush=True)
    synthetic = has_ground_truth(path)
    what = f"{'synthetic drive' if synthetic else 'drive'} {path}"
    return what, sweeps, reader.rig, synthetic, reader.limits


def _bench_config(
    args: argparse.Namespace,
    given: NodeConfig | None,
    sweeps: list[Sweep],
    synthetic: bool,
    limits: WireLimits,
) -> NodeConfig:
    """The node config to bench: --config as is (`given`), else the defaults with the drive's
    topics, camera offsets and wire `limits`; the camera model by the rule replay and run share
    (app.models), its file resolved here so a missing model is reported before the node
    starts."""
    if given is not None:
        config = given
    else:
        config = dataclasses.replace(config_for_sweeps(sweeps, NodeConfig()), limits=limits)
    config = choose_camera_model(
        config, args.model, config_given=given is not None, synthetic=synthetic
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


def _inputs(drive: Path, args: argparse.Namespace, config: NodeConfig) -> list[tuple[str, Path]]:
    """(what, path) of each file the bench reads that is not in a KITTI object folder: the
    drive and its ground truth, --config, the camera model, the config's rig and keys."""
    found: list[tuple[str, Path]] = []
    if not drive.is_dir():
        main, truth = drive_files(drive)
        found += [("the drive", main), ("the drive's ground truth", truth)]
    if args.config:
        found.append(("--config", Path(args.config)))
    model = args.model or config.camera_model.path
    if model:
        found.append(("--model" if args.model else "the config's camera model", Path(model)))
    if config.rig is not None:
        found.append(("the config's rig", Path(config.rig)))
    keys = config.security
    for what, key in (("secret_key", keys.secret_key), ("server_key", keys.server_key)):
        if key:
            found.append((f"the config's security.{what}", Path(key)))
    return found


def _check_out(out: Path, drive: Path, args: argparse.Namespace, config: NodeConfig) -> None:
    """Refuses an --out folder where the bench would write over what it reads: a KITTI
    object folder read (or one of its data folders), or a file named as one the bench writes
    (`--config node.yaml --out .` replaced the user's config by the bench's node config, a
    drive named bench.json was replaced by the report), symbolic links resolved.

    Raises:
        OutputError: naming --out, the file it would write and the input it would replace.
    """
    if drive.is_dir():
        from replay.show import check_pictures_folder  # noqa: PLC0415 (OpenCV)

        check_pictures_folder(out, drive, what="--out")
    names = [*REPORT_FILES, *NODE_FILES, *([RIG_FILE] if config.rig is None else [])]
    inputs: dict[Path, str] = {}
    for what, path in _inputs(drive, args, config):
        inputs.setdefault(path, what)
    found = find_output_input([out / name for name in names], inputs, "a file the bench writes")
    if found is not None:
        written, path = found
        raise OutputError(
            f"--out {out}: the bench writes {written.name} there, which is {inputs[path]} "
            f"({path}); give another --out folder"
        )


def cmd_bench(args: argparse.Namespace) -> int:
    settings = BenchSettings(
        rate_hz=args.rate,
        duration_s=args.duration,
        backend=args.backend,
        device=args.device,
        find_max_rate=args.find_max_rate,
        window_s=args.window,
        ready_timeout_s=args.ready_timeout,
    )
    check_settings(settings)
    out = check_output_dir(Path(args.out).expanduser(), "--out", create=False)
    base = load_node_config(args.config)
    _check_out(out, _drive_path(args.drive), args, base)
    # Fail fast on a GPU that is not there, before a drive is generated or loaded.
    resolve_engines(with_engines(base, settings.backend, settings.device).engines)
    stop = stop_on_signals()
    try:
        return _bench(args, settings, out, stop, base if args.config else None)
    except BenchInterruptedError:
        print(f"perception bench: {stop.how}; the node is stopped", file=sys.stderr)
        return 128 + (stop.signum or signal.SIGINT)


def _bench(
    args: argparse.Namespace,
    settings: BenchSettings,
    out: Path,
    stop: threading.Event,
    given: NodeConfig | None,
) -> int:
    """The bench of `cmd_bench`; `given`: the --config, loaded (None without one)."""
    labels = {"generate": f"generating the synthetic drive {DEMO_DRIVE}"}
    with Stages("sweep", args.quiet, labels) as stages:
        # Read as the node configured so receives it; without a config, as it was recorded.
        source, sweeps, rig, synthetic, limits = _bench_drive(
            args.drive,
            sweeps_needed(settings),
            stages,
            stop,
            limits=None if given is None else given.limits,
        )
        config = _bench_config(args, given, sweeps, synthetic, limits)
        _check_inputs(args, sweeps, rig, source, config)

        def progress(done: int, total: int, label: str) -> None:
            stages(label, done, total)

        # The report is written by run_bench, with the node's files, all at once.
        result = run_bench(
            sweeps, config, settings, out, source=source, rig=rig, stop=stop, progress=progress,
            report=True,
        )  # fmt: skip
    print(format_markdown(result))
    written = ", ".join(str(out / name) for name in REPORT_FILES)
    print(f"perception bench: written {written}")
    return 0
