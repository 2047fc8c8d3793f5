"""`perception calib show|check`: a rig's frame tree, lidar-on-image alignment of one scan, and
the calibration monitor over a drive or a KITTI object folder (exit 3 when drift is flagged)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from app.common import check_drive_path
from calibration import (
    CalibrationError,
    Rig,
    calibration_check,
    describe_rig,
    load_rig,
    read_scan,
    save_rig_yaml,
)
from calibration.errors import not_a_file
from calibration.images import check_image_pixels, decode_image_file
from perception.errors import PerceptionError
from perception.msgs.schema import DEFAULT_LIMITS
from replay.output import (
    OutputError,
    atomic_output,
    check_not_an_input,
    check_output_file,
    check_outputs_not_inputs,
)
from replay.pictures import write_picture

__all__ = ["cmd_calib_check", "cmd_calib_show"]

#: Overlay formats OpenCV writes everywhere (it chooses the encoder by the suffix).
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


#: Scan formats `read_scan` reads; anything else would be read as a KITTI .bin.
_SCAN_SUFFIXES = (".bin", ".pcd")


def _load_rig(path: Path, image_size: tuple[int, int] | None = None) -> Rig:
    """`load_rig`, its errors on one line (YAML parser messages span several)."""
    try:
        return load_rig(path, image_size=image_size)
    except CalibrationError as e:
        raise CalibrationError(" ".join(str(e).split())) from e


def cmd_calib_show(args: argparse.Namespace) -> int:
    print(describe_rig(_load_rig(Path(args.rig).expanduser())))
    return 0


def _read_image(path: Path) -> np.ndarray:
    state = not_a_file(path)
    if state is not None:
        raise CalibrationError(f"{path}: image {state}")
    check_image_pixels(path, DEFAULT_LIMITS.max_image_pixels)
    loaded = decode_image_file(path)
    if loaded is None:
        raise CalibrationError(f"{path}: not a readable image")
    return np.asarray(loaded, dtype=np.uint8)


def cmd_calib_check(args: argparse.Namespace) -> int:
    """One scan and image, or a drive / KITTI folder (exit 3 when drift is flagged)."""
    many = args.drive is not None or args.frames is not None
    single = [f"--{name}" for name in ("lidar", "image") if getattr(args, name)]
    if args.drive is not None and args.frames is not None:
        raise PerceptionError("give --drive or --frames, not both")
    if many:
        if single:
            raise PerceptionError(
                f"{', '.join(single)}: only for one scan and image, not with --drive/--frames"
            )
        return _check_many(args)
    extra = [
        f"--{name}"
        for name in ("refine", "perturb", "config", "model")
        if getattr(args, name) is not None
    ]
    if extra:
        raise PerceptionError(f"{', '.join(extra)}: only with --drive or --frames")
    missing = [f"--{name}" for name in ("lidar", "image", "out") if not getattr(args, name)]
    if args.rig is None:
        missing.insert(0, "RIG")
    if missing:
        raise PerceptionError(
            f"give {', '.join(missing)} (one scan and image), or --drive / --frames"
        )
    return _check_one(args)


def _check_many(args: argparse.Namespace) -> int:
    """The calibration monitor over a drive or a KITTI object folder (replay.calibration_check)."""
    from app.common import load_node_config, progress_bar  # noqa: PLC0415 - heavy imports
    from app.models import build_pipeline, choose_camera_model  # noqa: PLC0415
    from calibration.monitor import Correction, MonitorState, corrected_rig  # noqa: PLC0415
    from replay.calibration_check import check_calibration  # noqa: PLC0415
    from replay.datasets.kitti_object import CAMERA_STREAM, KittiObjectFolder  # noqa: PLC0415
    from replay.drive import DriveReader  # noqa: PLC0415
    from replay.mcap_player import check_sensor_drive  # noqa: PLC0415
    from replay.synth.world import (  # noqa: PLC0415
        calibration_caveat,
        drive_files,
        has_ground_truth,
    )

    if args.frames is not None:
        if args.refine is not None:
            raise PerceptionError(
                "--refine: only with --drive (the frames of a KITTI folder each carry their "
                "own calibration)"
            )
        if args.rig is not None:
            raise PerceptionError(
                f"{args.rig}: with --frames each frame's own calibration is checked; give no rig"
            )
        source = Path(args.frames).expanduser()
        kitti = KittiObjectFolder(source)  # a folder that is not one is refused here
        total = len(kitti)
        # No output may lie among the frames' files: named as one, it replaces it.
        folders = [source / sub for sub in ("image_2", "calib", kitti.lidar_dir)]
        inputs = [source]
        synthetic = False
        cameras = [CAMERA_STREAM]
    else:
        source = check_drive_path(Path(args.drive).expanduser())
        folders = []
        inputs = list(drive_files(source))  # the drive and the ground truth beside it
        contents = check_sensor_drive(DriveReader(source), None, command="calib check")
        total = contents.sweeps
        synthetic = has_ground_truth(source)
        cameras = list(contents.topics_of("CameraFrame"))
    names = [c.removeprefix("camera/") for c in cameras]
    if args.camera is not None and args.camera not in names:
        # Before the replay, which takes minutes: a camera the source does not have.
        raise PerceptionError(
            f"--camera {args.camera}: {source} has no such camera (cameras: "
            f"{', '.join(names) or 'none'})"
        )
    if args.rig:
        inputs.append(Path(args.rig).expanduser())
    refine = None
    if args.refine is not None:
        refine = Path(args.refine).expanduser()
        if refine.suffix.lower() not in (".yaml", ".yml"):
            raise PerceptionError(f"{refine}: --refine must be a rig YAML file (.yaml)")
        check_output_file(args.refine, "--refine")
        check_not_an_input(refine, inputs, "--refine", folders=folders)
        _check_new([refine], "--refine", args.overwrite)
    out = None
    if args.out is not None:
        out = _picture_path(args.out)
        pictures = _picture_paths(out, [args.camera] if args.camera is not None else names)
        check_outputs_not_inputs(pictures, inputs, "--out", folders=folders)
        if refine is not None and out.resolve() == refine.resolve():
            raise PerceptionError(f"{out}: --out and --refine name the same file")
        _check_new(pictures, "--out", args.overwrite)
    config = load_node_config(args.config)
    if args.rig is not None:
        rig_path = Path(args.rig).expanduser()
        _load_rig(rig_path)  # a bad rig is one line here, before the pipeline loads
        config = replace(config, rig=str(rig_path))
    config = choose_camera_model(
        config, args.model, config_given=args.config is not None, synthetic=synthetic
    )
    pipeline = build_pipeline(config)
    perturb = None if args.perturb is None else Correction(args.perturb[:3], args.perturb[3:])
    with progress_bar(total=total, unit="sweep", desc=None, quiet=args.quiet) as bar:
        verdicts = check_calibration(
            source,
            config,
            pipeline,
            perturb=perturb,
            topics_from_drive=args.config is None and args.frames is None,
            progress=lambda done: bar.update(done - bar.n),
        )
    checked = [v.camera for v in verdicts]
    if args.camera is not None and args.camera not in checked:
        raise PerceptionError(
            f"--camera {args.camera}: not checked (cameras: {', '.join(checked)})"
        )
    chosen = [v for v in verdicts if args.camera is None or v.camera == args.camera]
    for v in chosen:
        print(_verdict_line(v, config.calibration_monitor.monitor))
        if v.earlier_rigs:
            # The monitor starts over with each rig the drive sends: without this the verdict
            # read as one over the whole drive.
            times = "once" if v.earlier_rigs == 1 else f"{v.earlier_rigs} times"
            print(
                f"  (camera {v.camera}: the drive's rig changed {times}; this verdict is of its "
                f"last rig, over the frames from its change on, and leaves out the "
                f"{v.earlier_frames} frames before it; give a RIG to check one rig over the "
                "whole drive)"
            )
    caveat = None if args.frames is not None else calibration_caveat(source)
    if caveat is not None:
        print(f"  ({caveat})")
    if out is not None:
        _write_pictures(out, chosen, perturb)
    if caveat is not None:
        # The verdict does not check the rig here: a script reading 0 or 3 would take it as
        # one, and a rig refined by it is refined by luck.
        if refine is not None:
            print(f"no rig written to {refine}: this drive cannot check the rig")
        return 4
    undecided = [v.camera for v in chosen if v.estimate.state == MonitorState.COLLECTING]
    if undecided and not any(v.drifted for v in chosen):
        if refine is not None:
            print(f"no rig written to {refine}: no verdict for camera {', '.join(undecided)}")
        return 4
    if refine is not None:
        rig = chosen[0].rig
        for v in chosen:
            rig = corrected_rig(rig, v.camera, v.estimate.correction)
        with atomic_output(refine, "--refine", replace=args.overwrite) as tmp:
            save_rig_yaml(
                rig,
                tmp,
                comment=f"refined by `perception calib check --drive {source.name}`: "
                + "; ".join(_correction_text(v) for v in chosen),
            )
        print(f"refined rig written to {refine}")
    return 3 if any(v.drifted for v in chosen) else 0


def _correction_text(v: Any) -> str:
    c = v.estimate.correction
    rot = ", ".join(f"{x:+.3f}" for x in c.rotation_deg)
    cm = ", ".join(f"{x * 100:+.1f}" for x in c.translation_m)
    return f"camera {v.camera} corrected by rotation ({rot}) deg, translation ({cm}) cm"


def _verdict_line(v: Any, monitor: Any) -> str:
    """One camera's verdict; `monitor`: the monitor's config (calibration.monitor.MonitorConfig)."""
    from calibration.monitor import (  # noqa: PLC0415 - heavy imports
        MonitorState,
        no_evidence_text,
        skip_text,
    )

    e = v.estimate
    c = e.correction
    # "3 skipped: 2 too few lidar points in the image, 1 taken without moving"
    why = skip_text(dict(v.skipped_by))
    skipped = f"{e.skipped} skipped" + (f": {why}" if why else "")
    if e.state == MonitorState.COLLECTING and e.frames == 0:
        return f"camera {v.camera}: NO VERDICT: every frame skipped ({skipped})"
    if e.state == MonitorState.COLLECTING:
        return (
            f"camera {v.camera}: NO VERDICT over {e.frames} frames ({skipped}): "
            f"{no_evidence_text(e, monitor)}"
        )

    def pm(values: Any, scale: float, digits: int) -> str:
        return ", ".join(
            f"{x * scale:.{digits}f}" if math.isfinite(x) else "unobserved" for x in values
        )

    rot = ", ".join(f"{x:+.2f}" for x in c.rotation_deg)
    cm = ", ".join(f"{x * 100:+.1f}" for x in c.translation_m)
    return (
        f"camera {v.camera}: {e.state.upper()} over {e.frames} frames ({skipped}); "
        f"correction rotation ({rot}) deg +- ({pm(e.sigma[:3], 1.0, 2)}), translation ({cm}) "
        f"cm +- ({pm(e.sigma[3:], 100.0, 1)}) [vehicle axes x, y, z]; it moves the "
        f"projection {e.image_motion_px:.1f} +- {e.image_motion_sigma_px:.1f} px (median)"
    )


def _check_new(paths: Sequence[Path], option: str, overwrite: bool) -> None:
    """Refuses, before any work, an output that exists unless `overwrite` (--overwrite): no
    file is replaced without asking, as `import` and `record` ask.

    Raises:
        OutputError: naming the first that exists and how to go on.
    """
    if overwrite:
        return
    for path in paths:
        if path.exists():
            raise OutputError(
                f"{path}: exists; give --overwrite to replace it, or another {option}"
            )


def _camera_picture(out: Path, camera: str) -> Path:
    """Camera `camera`'s picture where several are drawn: `out` with the camera's name added."""
    return out.with_name(f"{out.stem}-{camera}{out.suffix}")


def _picture_paths(out: Path, cameras: Sequence[str]) -> list[Path]:
    """Every file `_write_pictures` may write for `cameras`: `out` (one camera drawn), and with
    several cameras each one's `_camera_picture`."""
    if len(cameras) <= 1:
        return [out]
    return [out, *(_camera_picture(out, c) for c in cameras)]


def _picture_path(given: str) -> Path:
    """`--out` as given, checked before any work: an image file in a folder that can be
    written."""
    out = Path(given).expanduser()
    if out.suffix.lower() not in _IMAGE_SUFFIXES:
        raise CalibrationError(f"{out}: --out must be an image file ({', '.join(_IMAGE_SUFFIXES)})")
    # As given: a trailing / (a folder) is lost in the Path.
    return check_output_file(given, "--out")


def _write_pictures(out: Path, verdicts: Sequence[Any], perturb: Any) -> None:
    """Each camera's last frame used, its points drawn with the extrinsic checked above and
    corrected below (one camera: `out`; several: `out` with the camera's name added)."""
    from calibration.monitor import MonitorState  # noqa: PLC0415 - heavy imports

    drawn = [v for v in verdicts if v.view is not None]
    for v in drawn:
        path = out if len(drawn) == 1 else _camera_picture(out, v.camera)
        moved = "" if perturb is None else " moved by --perturb"
        checked = f"camera {v.camera}: the rig checked{moved} ({v.estimate.state})"
        if v.estimate.state == MonitorState.COLLECTING:
            picture = v.view.draw(checked)
        else:
            picture = v.view.draw(checked, v.estimate.correction, _correction_text(v))
        write_picture(path, picture, "--out")
        print(f"picture written to {path}")
    if not drawn:
        print(f"no picture written to {out}: no frame was used")


def _check_one(args: argparse.Namespace) -> int:
    out = _picture_path(args.out)
    scan = Path(args.lidar).expanduser()
    check_not_an_input(out, [Path(args.image), scan, Path(args.rig)], "--out")
    if scan.suffix.lower() not in _SCAN_SUFFIXES:
        raise CalibrationError(f"{scan}: --lidar must be a KITTI .bin scan or a .pcd file")
    _check_new([out], "--out", args.overwrite)
    image = _read_image(Path(args.image).expanduser())
    rig = _load_rig(Path(args.rig).expanduser(), image_size=(image.shape[1], image.shape[0]))
    for warning in rig.warnings:
        print(f"warning: {warning}")
    camera = args.camera or ("front" if "front" in rig.cameras else next(iter(rig.cameras)))
    if camera not in rig.cameras:
        raise CalibrationError(
            f"{args.rig}: no camera {camera!r} in the rig (cameras: {', '.join(rig.cameras)})"
        )
    # A scan larger than a sweep message may carry is refused from its size, before it is read.
    points = read_scan(scan, DEFAULT_LIMITS.max_points)
    result = calibration_check(rig, camera, points, image)
    write_picture(out, result.overlay, "--out")
    print(
        f"camera {camera}: {result.n_points_in_image} lidar points in the image; "
        f"alignment score {result.score:.4f} (mutual information, nats; larger is better)"
    )
    print(f"overlay written to {out}")
    return 0
