"""`perception replay`: recorded drives or KITTI object folders through the pipeline, offline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.commands.show import read_run, show_run
from app.common import load_node_config, not_for, progress_bar, split_source
from app.models import build_pipeline, camera_model_file, choose_camera_model
from perception.config import NodeConfig
from perception.errors import PerceptionError
from replay.datasets.kitti_object import KittiObjectFolder
from replay.distributed import ReplayResult, check_ray_address, replay_many
from replay.drive import DriveReader, check_not_being_written
from replay.mcap_player import check_sensor_drive
from replay.offline import ReplaySummary, max_interval_hint, replay_to_file
from replay.output import (
    check_not_an_input,
    check_output_dir,
    check_output_file,
    output_dir,
)
from replay.synth.world import drive_files, has_ground_truth

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
    check_output_file(args.out, "--out")
    # Renamed over at the end, a drive a recorder is writing lost all it recorded after.
    check_not_being_written(out)
    # The ground truth beside a synthetic drive is read too (it chooses the detector).
    check_not_an_input(out, drive_files(path), "--out")
    show_dir = None
    if args.show is not None:
        show_dir = check_output_dir(Path(args.show), "--show", create=False)
        _check_show_apart(show_dir, out)
    if kind == "kitti-object":
        not_for(args, "a KITTI object folder (its frames have no recorded time)", ("--realtime",))
        if show_dir is not None:
            from replay.show import check_pictures_folder  # noqa: PLC0415 (OpenCV)

            # The pictures are named as the frames' images: never among them.
            check_pictures_folder(show_dir, path, what="--show")
    synthetic = kind == "drive" and has_ground_truth(path)
    config = choose_camera_model(
        config, args.model, config_given=args.config is not None, synthetic=synthetic
    )
    if kind == "kitti-object":
        total = len(KittiObjectFolder(path))  # a folder that is not one is refused here
    else:
        # A drive without lidar sweeps (e.g. recorded detections) would replay to nothing;
        # without --config, it is read on the topics it was recorded on.
        lidar_topic = config.inputs.lidar_topic if args.config is not None else None
        total = check_sensor_drive(DriveReader(path), lidar_topic).sweeps
    if show_dir is not None:
        from replay.show import (  # noqa: PLC0415 (OpenCV)
            check_drive_ground_truth,
            check_kitti_references,
        )

        # Before the model is loaded: found by the drawing, a broken label or ground truth
        # file cost the whole replay.
        if kind == "kitti-object":
            check_kitti_references(path)
        else:
            check_drive_ground_truth(path)
    pipeline = build_pipeline(config)
    with progress_bar(total=total, unit="sweep", desc=None, quiet=args.quiet) as bar:

        def progress(done: int, _total: int | None) -> None:
            bar.update(done - bar.n)

        summary = replay_to_file(
            path,
            out,
            config,
            pipeline,
            speed=1.0 if args.realtime else 0.0,
            progress=progress,
            topics_from_drive=args.config is None,
        )
    c = summary.counters
    skipped = ""
    if summary.unreadable or summary.unwritten:
        skipped = (
            f", {summary.unreadable} unreadable input(s) skipped, {summary.unwritten} output(s) "
            "not writable"
        )
    print(
        f"perception replay: {summary.sweeps} DetectionLists written to {out} "
        f"({c.get('received', 0)} messages, {c.get('decode_errors', 0)} undecodable, "
        f"{c.get('step_errors', 0)} sweeps failed{_passed_over(summary.passed_over)}"
        f"{_dropped(summary.dropped_sweeps, config)}"
        f"{_unmatched(summary, config)}{skipped})"
    )
    if show_dir is not None:
        # A drawing that failed before its first picture (a broken label file) left the
        # folder made for it behind, empty.
        with output_dir(show_dir, "--show") as pictures:
            line = show_run(
                read_run(out),
                kitti=path if kind == "kitti-object" else None,
                drive=path if kind == "drive" else None,
                out_dir=pictures,
                quiet=args.quiet,
                run_name=str(out),
                inputs=[out],
            )
        print(f"perception replay: {line}")
    return 0


def _passed_over(n: int) -> str:
    """The summary's words for the `n` bundles the core made but did not process before the
    input ended ('' for none): counted on diagnostics only, fewer lists than sweeps went
    unexplained."""
    if not n:
        return ""
    return (
        f", {n} bundles passed over (completed after a newer sweep's output, or of the lidar "
        "clock's timeline before a jump)"
    )


def _dropped(dropped: dict[str, int], config: NodeConfig) -> str:
    """The summary's words for the sweeps the synchroniser dropped ('' for none)."""
    if not dropped:
        return ""
    why = ", ".join(f"{reason.replace('_', ' ')} {n}" for reason, n in dropped.items())
    hint = (
        f"; sync.queue_size ({config.sync.queue_size}) or queue_bytes holds fewer sweeps than "
        "wait for their cameras"
        if "queue_full" in dropped
        else ""
    )
    if "unmatched" in dropped and (wide := max_interval_hint(config)):
        hint += f"; {wide}"
    return f", {sum(dropped.values())} sweeps dropped by the synchroniser ({why}{hint})"


def _unmatched(summary: ReplaySummary, config: NodeConfig) -> str:
    """The summary's words for the bundles made without a camera or a GNSS fix ('' for
    none)."""
    words = ""
    # One bundle each is the end of a drive cutting off the last sweep's frames: not said.
    missing = {s: n for s, n in sorted(summary.missing_cameras.items()) if n > 1}
    if missing:
        which = ", ".join(f"{s} {n}" for s, n in missing.items())
        # Frames skipped as unreadable (above the config's limits, damaged) leave their
        # bundles without them too: the window was not the only suspect.
        unread = ", or the frames were unreadable" if summary.unreadable else ""
        words += (
            f", bundles without their camera: {which} (no frame within sync.window_ms or "
            f"camera_windows_ms of the sweep stamp + camera_offsets_ms in time{unread})"
        )
    if summary.without_fix:
        words += (
            f", {summary.without_fix} bundles without a GNSS fix within sync.gnss_window_ms "
            f"({config.sync.gnss_window_ms:g} ms) of the sweep stamp"
        )
    return words


class _NothingReplayedError(Exception):
    """Every source of a many-source replay failed (each says why)."""

    def __init__(self, results: list[ReplayResult]) -> None:
        super().__init__("no source replayed")
        self.results = results


def _check_show_apart(show_dir: Path, out: Path) -> None:
    """Refuses a --show folder that is --out, or inside it: neither exists before the run, so
    the mistake showed only when the pictures were drawn, after the whole replay.

    Raises:
        PerceptionError: naming both.
    """
    show, written = show_dir.resolve(), out.resolve()
    if show == written or written in show.parents:
        raise PerceptionError(
            f"{show_dir}: --show names --out ({out}) or a folder inside it; the pictures need "
            "a folder of their own"
        )


def _replay_many(args: argparse.Namespace, config: NodeConfig) -> int:
    if args.out_dir is None:
        raise PerceptionError("--ray-address needs --out-dir DIR (one output file per source)")
    if args.show is not None:
        raise PerceptionError("--show goes with --out (one source), not with --out-dir")
    # Ignored, it let a user believe the drives had been replayed in real time.
    not_for(args, "--out-dir (many sources are replayed as fast as possible)", ("--realtime",))
    if args.ray_address is not None:
        check_ray_address(args.ray_address)  # before anything is made or loaded
    # Checked now, created only once the run starts: a run that fails before any source is
    # replayed (no model, two sources of one name) left an empty new folder behind.
    check_output_dir(Path(args.out_dir), "--out-dir", create=False)
    sources = [Path(s).expanduser() for s in args.sources if s != "kitti-object"]
    if not sources:
        raise PerceptionError("no sources to replay")
    # The rule of a single replay; one pipeline serves all, so the synthetic detector only
    # when every source is a synthetic drive.
    synthetic = all(has_ground_truth(s) for s in sources)
    config = choose_camera_model(
        config, args.model, config_given=args.config is not None, synthetic=synthetic
    )
    model_path = camera_model_file(config)
    try:
        with (
            output_dir(Path(args.out_dir), "--out-dir") as out_dir,
            progress_bar(total=len(sources), unit="drive", desc=None, quiet=args.quiet) as bar,
        ):
            results = replay_many(
                sources,
                out_dir,
                config=config,
                model_path=model_path,
                ray_address=args.ray_address,
                progress=lambda _done, _total, _result: bar.update(1),
                # Without --config, each drive is read on the topics it was recorded on.
                topics_from_drive=args.config is None,
            )
            if not any(r.ok for r in results):
                # Raised through output_dir, which removes the folder it made, still empty.
                raise _NothingReplayedError(results)
    except _NothingReplayedError as e:
        results = e.results
    failed = 0
    for r in results:
        if r.error:
            failed += 1
            print(f"{r.source}: failed: {r.error}", file=sys.stderr)
        else:
            print(f"{r.source}: {r.sweeps} DetectionLists -> {r.out_path} ({r.wall_s:.1f} s)")
    return 1 if failed else 0
