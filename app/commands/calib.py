"""`perception calib show|check`: a rig's frame tree, and lidar-on-image alignment."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from calibration import (
    CalibrationError,
    Rig,
    calibration_check,
    describe_rig,
    load_rig,
    read_scan,
)
from replay.output import atomic_output, check_not_an_input, check_output_file

__all__ = ["cmd_calib_check", "cmd_calib_show"]

#: Overlay formats OpenCV writes everywhere (it chooses the encoder by the suffix).
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


#: Scan formats `read_scan` reads; anything else would be read as a KITTI .bin.
_SCAN_SUFFIXES = (".bin", ".pcd")


def _load_rig(path: Path, image_size: tuple[int, int] | None = None) -> Rig:
    """`load_rig`, its errors on one line (YAML parser messages span several) and a binary
    file named as such."""
    try:
        return load_rig(path, image_size=image_size)
    except CalibrationError as e:
        raise CalibrationError(" ".join(str(e).split())) from e
    except UnicodeDecodeError as e:
        raise CalibrationError(f"{path}: not a text calibration file ({e.reason})") from e


def cmd_calib_show(args: argparse.Namespace) -> int:
    print(describe_rig(_load_rig(Path(args.rig).expanduser())))
    return 0


def _read_image(path: Path) -> np.ndarray:
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise CalibrationError(f"{path}: image {state}")
    loaded = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if loaded is None:
        raise CalibrationError(f"{path}: not a readable image")
    return np.asarray(loaded, dtype=np.uint8)


def cmd_calib_check(args: argparse.Namespace) -> int:
    out = Path(args.out).expanduser()
    if out.suffix.lower() not in _IMAGE_SUFFIXES:
        raise CalibrationError(f"{out}: --out must be an image file ({', '.join(_IMAGE_SUFFIXES)})")
    check_output_file(out, "--out")
    scan = Path(args.lidar).expanduser()
    check_not_an_input(out, [Path(args.image), scan, Path(args.rig)], "--out")
    if scan.suffix.lower() not in _SCAN_SUFFIXES:
        raise CalibrationError(f"{scan}: --lidar must be a KITTI .bin scan or a .pcd file")
    image = _read_image(Path(args.image).expanduser())
    rig = _load_rig(Path(args.rig).expanduser(), image_size=(image.shape[1], image.shape[0]))
    for warning in rig.warnings:
        print(f"warning: {warning}")
    camera = args.camera or ("front" if "front" in rig.cameras else next(iter(rig.cameras)))
    if camera not in rig.cameras:
        raise CalibrationError(
            f"{args.rig}: no camera {camera!r} in the rig (cameras: {', '.join(rig.cameras)})"
        )
    result = calibration_check(rig, camera, read_scan(scan), image)
    with atomic_output(out, "--out") as tmp:
        if not cv2.imwrite(str(tmp), result.overlay):
            raise CalibrationError(f"{out}: cannot write the overlay")
    print(
        f"camera {camera}: {result.n_points_in_image} lidar points in the image; "
        f"alignment score {result.score:.4f} (mutual information, nats; larger is better)"
    )
    print(f"overlay written to {out}")
    return 0
