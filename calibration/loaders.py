"""`load_rig`: one entry point for every calibration format the package reads."""

from __future__ import annotations

from pathlib import Path

from calibration.errors import CalibrationError
from calibration.images import IMAGE_SUFFIXES, image_size_of
from calibration.kitti import KITTI_RAW_FILES, load_kitti_object_calib, load_kitti_raw_calib
from calibration.pjlab import PJLAB_SUFFIXES, load_pjlab_calib
from calibration.rig import Rig, load_rig_yaml

__all__ = ["KITTI_DEFAULT_SIZE", "load_rig"]

# The most common KITTI rectified image size; used only when no image is known.
KITTI_DEFAULT_SIZE = (1242, 375)


def _kitti_object_image(calib: Path) -> Path | None:
    """`<root>/image_2/<stem>.png` for `<root>/calib/<stem>.txt`, if it exists."""
    for suffix in IMAGE_SUFFIXES:
        candidate = calib.parent.parent / "image_2" / f"{calib.stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def load_rig(path: Path | str, image_size: tuple[int, int] | None = None) -> Rig:
    """Load and validate a rig from any supported calibration:

    - a rig file (`.yaml`/`.yml`, see `calibration.rig`);
    - a KITTI object calib file (`.txt` with P0..P3, R0_rect, Tr_velo_to_cam): the image size is
      `image_size`, else that of `../image_2/<stem>.png`, else 1242x375 (with a warning);
    - a KITTI raw calibration folder (or one of its `calib_*_to_*.txt` files);
    - a PJLab SensorsCalibration folder or JSON file (`*-intrinsic.json`/`*-extrinsic.json`).

    `image_size` is (width, height) in pixels of the camera images the rig is used with.
    Size disagreements are reported in `rig.warnings`. Raises CalibrationError naming the file
    (and field) for unreadable, unrecognised or invalid calibrations.
    """
    p = Path(path)
    if p.is_dir():
        raw = [(p / name).is_file() for name in KITTI_RAW_FILES]
        if all(raw):
            return load_kitti_raw_calib(p, image_size)
        if any(p.glob("*-intrinsic.json")):
            return load_pjlab_calib(p, image_size)
        for name in ("rig.yaml", "rig.yml"):
            if (p / name).is_file():
                return load_rig_yaml(p / name)
        if any(raw):
            missing = [name for name, there in zip(KITTI_RAW_FILES, raw, strict=True) if not there]
            raise CalibrationError(
                f"{p}: a KITTI raw calibration folder without {', '.join(missing)}"
            )
        raise CalibrationError(
            f"{p}: not a recognised calibration folder (expected {', '.join(KITTI_RAW_FILES)}, "
            "a PJLab *-intrinsic.json + *-extrinsic.json pair, or rig.yaml)"
        )
    if not p.is_file():
        if p.exists():
            raise CalibrationError(f"{p}: not a regular file (a device, pipe or socket)")
        raise CalibrationError(f"{p}: no such calibration file or folder")
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return load_rig_yaml(p)
    if suffix == ".json":
        if not p.name.endswith(PJLAB_SUFFIXES):
            # The PJLab loader reads the pair in the file's folder: any other JSON file there
            # was taken for that pair, its own content unread.
            raise CalibrationError(
                f"{p}: not a PJLab calibration file (its name must end in "
                f"{' or '.join(PJLAB_SUFFIXES)}); a rig file is YAML (.yaml)"
            )
        return load_pjlab_calib(p, image_size)
    if p.name in KITTI_RAW_FILES:
        return load_kitti_raw_calib(p.parent, image_size)
    if suffix == ".txt":
        warnings: list[str] = []
        if image_size is None:
            image = _kitti_object_image(p)
            if image is not None:
                image_size = image_size_of(image)
            else:
                image_size = KITTI_DEFAULT_SIZE
                warnings.append(
                    f"{p}: image size unknown (no ../image_2/{p.stem}.png); assumed "
                    f"{image_size[0]}x{image_size[1]}"
                )
        rig = load_kitti_object_calib(p, int(image_size[0]), int(image_size[1]))
        rig.warnings = rig.warnings + tuple(warnings)
        return rig
    raise CalibrationError(
        f"{p}: unrecognised calibration file type {suffix!r} (expected .yaml, .txt or .json)"
    )
