"""`perception show`: a run's detections drawn frame by frame, with an index page of scores."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from app.common import check_drive_path, progress_bar
from perception.errors import PerceptionError, SourceError
from perception.msgs.jsonl import read_jsonl_lines
from perception.msgs.types import DetectionList
from replay.output import check_output_dir, output_dir
from replay.runs import check_one_per_frame

__all__ = ["cmd_show", "read_run", "show_run"]


def read_run(path: Path, *, command: str = "show") -> list[DetectionList]:
    """The DetectionLists of a run: JSON Lines (`perception replay ... --out FILE.jsonl`), or
    for `replay --show` the MCAP output of a replay. `command` names the command reading it in
    the errors.

    Raises:
        PerceptionError: naming the file: missing, a folder, not JSON Lines of DetectionLists,
            holding none, or holding one frame twice (`replay.runs.check_one_per_frame`).
    """
    if path.is_dir():
        raise PerceptionError(f"{path}: is a folder, not a run (JSON Lines)")
    if not path.is_file():
        if path.exists():
            raise PerceptionError(
                f"{path}: not a regular file (a device, pipe or socket), so no run"
            )
        raise PerceptionError(f"{path}: no such run (JSON Lines from `perception replay`)")
    if path.suffix == ".mcap":
        from replay.drive import DriveReader  # noqa: PLC0415 (MCAP only where one is read)

        lists = [
            r.message for r in DriveReader(path).messages() if isinstance(r.message, DetectionList)
        ]
        lines = None
    else:
        try:
            numbered = list(read_jsonl_lines(path, DetectionList))
        except SourceError as e:
            raise PerceptionError(
                f"{' '.join(str(e).split())}; {command} takes the detections of `perception "
                "replay ... --out FILE.jsonl`"
            ) from e
        lines = [n for n, _ in numbered]
        lists = [dl for _, dl in numbered]
    if not lists:
        raise PerceptionError(f"{path}: the run holds no DetectionLists")
    check_one_per_frame(lists, path, lines)
    return lists


def show_run(
    lists: Sequence[DetectionList],
    *,
    kitti: Path | None,
    drive: Path | None,
    out_dir: Path,
    reference: Path | None = None,
    quiet: bool = False,
    run_name: str = "",
    inputs: Sequence[Path] = (),
) -> str:
    """Draws the run's pictures and index into `out_dir` from a KITTI folder or a drive (one of
    the two); the line the command prints. `inputs`: the run's file, which no picture may
    replace."""
    from replay.show import score_line, show_drive, show_kitti  # noqa: PLC0415 (OpenCV, MCAP)

    with progress_bar(total=len(lists), unit="frame", desc="pictures", quiet=quiet) as bar:

        def progress(done: int, _total: int) -> None:
            bar.update(done - bar.n)

        if kitti is not None:
            report = show_kitti(
                lists,
                kitti,
                out_dir,
                reference_dir=reference,
                progress=progress,
                run_name=run_name,
                inputs=inputs,
            )
        else:
            assert drive is not None
            report = show_drive(
                lists, drive, out_dir, progress=progress, run_name=run_name, inputs=inputs
            )
    left = f", {report.left_out} DetectionList(s) with no frame in the source" * bool(
        report.left_out
    )
    # A black camera panel reads as a drawing fault unless the line says why.
    # Of the rig's camera: a drive's frames of a camera the rig lacks were said to be none.
    of = f" of the rig's camera {report.camera}" if report.camera else " of a camera"
    left += f", {report.no_image} drawn on black (the drive has no frame{of} for them)" * bool(
        report.no_image
    )
    return (
        f"{len(report.frames)} pictures and {report.index} written "
        f"(all frames: {score_line(report)}{left})"
    )


def check_show_source(kitti: str | None, drive: str | None) -> tuple[Path | None, Path | None]:
    """(KITTI folder, drive) of `--kitti DIR | --drive DRIVE`, exactly one given.

    Raises:
        PerceptionError: both or neither, or a drive that is no file.
    """
    if (kitti is None) == (drive is None):
        raise PerceptionError(
            "give the run's source: --kitti DIR (a KITTI object folder) or --drive DRIVE.mcap, "
            "one of the two"
        )
    if drive is not None:
        return None, check_drive_path(Path(drive).expanduser())
    assert kitti is not None
    return Path(kitti).expanduser(), None


def cmd_show(args: argparse.Namespace) -> int:
    kitti, drive = check_show_source(args.kitti, args.drive)
    if args.reference is not None and kitti is None:
        raise PerceptionError("--reference goes with --kitti (a drive has its own ground truth)")
    run = Path(args.run).expanduser()
    if run.suffix == ".mcap":
        raise PerceptionError(
            f"{run}: is an MCAP file; show takes a run in JSON Lines (`perception replay ... "
            "--out FILE.jsonl`)"
        )
    reference = None if args.reference is None else Path(args.reference).expanduser()
    if kitti is not None:
        from replay.show import check_pictures_folder  # noqa: PLC0415 (OpenCV)

        # Before anything is read: the pictures would replace the images of the frames.
        check_pictures_folder(Path(args.out), kitti, reference, "--out")
    lists = read_run(run)
    # Before any drawing: a wrong --out costs nothing.
    out_dir = check_output_dir(Path(args.out), "--out", create=False)
    # A drawing failing at its first picture (an unreadable first image) left the folder made
    # for it behind, empty; one failing later leaves a partial index (replay.show).
    with output_dir(out_dir, "--out") as pictures:
        line = show_run(
            lists,
            kitti=kitti,
            drive=drive,
            out_dir=pictures,
            reference=reference,
            quiet=args.quiet,
            run_name=str(run),
            inputs=[run],
        )
    print(f"perception show: {line}")
    return 0
