"""PJLab SensorsCalibration JSON files (`<camera>-intrinsic.json`,
`<lidar>-to-<camera>-extrinsic.json`) as a rig.

Frames: `lidar` (the vehicle frame, as in the KITTI loaders) and `camera/<name>`, where `<name>`
is the intrinsic file's `sensor_name` without a `_camera` suffix (`center_camera` -> `center`),
with `camera_from_lidar` = the extrinsic's 4 x 4 `sensor_calib`. The camera is a pinhole with
plumb-bob distortion `cam_dist` (k1 k2 p1 p2[ k3]) and intrinsics `cam_K`.

Image size mismatch: the intrinsic file states `img_dist_w`/`img_dist_h`, which can disagree
with the images (the sample states 1920x1080, its image is 1920x1200). When the real size is
known (`image_size`, or an image beside the JSON files), the loader uses the real size, keeps K
unchanged and adds a warning to `rig.warnings` naming the file, the fields and both sizes; with
`strict=True` it raises CalibrationError instead. A principal point outside the real image is
always an error.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from calibration.camera import PinholeCamera
from calibration.errors import (
    CalibrationError,
    DuplicateKeyError,
    read_text,
    shown,
    unconverted,
    unique_keys,
)
from calibration.images import find_image, image_size_of
from calibration.rig import MAX_TIME_OFFSET_NS, FrameEdge, Rig, camera_frame
from calibration.transforms import RigidTransform

__all__ = ["PJLAB_SUFFIXES", "find_pjlab_files", "load_pjlab_calib"]

#: How the names of a PJLab pair's files end.
PJLAB_SUFFIXES = ("-intrinsic.json", "-extrinsic.json")


def find_pjlab_files(path: Path) -> tuple[Path, Path]:
    """(intrinsic JSON, extrinsic JSON) for a folder or either file.

    Raises CalibrationError if the folder lacks exactly one of each.
    """
    folder = path if path.is_dir() else path.parent
    intr = sorted(folder.glob("*-intrinsic.json"))
    extr = sorted(folder.glob("*-extrinsic.json"))
    if path.is_file() and path.name.endswith("-intrinsic.json"):
        intr = [path]
    if path.is_file() and path.name.endswith("-extrinsic.json"):
        extr = [path]
    if len(intr) != 1 or len(extr) != 1:
        raise CalibrationError(
            f"{path}: expected one *-intrinsic.json and one *-extrinsic.json in {folder}, found "
            f"{[p.name for p in intr]} and {[p.name for p in extr]}"
        )
    return intr[0], extr[0]


def _read_json(path: Path) -> dict[str, Any]:
    text = read_text(path, "calibration file")
    try:
        doc = json.loads(text, object_pairs_hook=unique_keys)
    except DuplicateKeyError as e:
        raise CalibrationError(f"{path}: {e}") from None
    except json.JSONDecodeError as e:
        raise CalibrationError(f"{path}: not valid JSON ({e})") from e
    except ValueError as e:  # valid JSON that Python refuses to convert
        raise CalibrationError(f"{path}: not valid JSON value ({unconverted(e)})") from None
    except RecursionError:  # the parser recurses per nesting level
        raise CalibrationError(
            f"{path}: not valid JSON (arrays and objects nested too deeply)"
        ) from None
    if not isinstance(doc, dict) or len(doc) != 1:
        raise CalibrationError(f"{path}: expected one top-level entry '<sensor>-<kind>'")
    (value,) = doc.values()
    if not isinstance(value, dict):
        raise CalibrationError(f"{path}: top-level entry must be an object")
    return value


def _get(doc: dict[str, Any], dotted: str, path: Path) -> Any:
    value: Any = doc
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise CalibrationError(f"{path}: missing field {dotted}")
        value = value[key]
    return value


def _matrix(doc: dict[str, Any], dotted: str, path: Path, shape: tuple[int, int]) -> Any:
    m = _numbers(_get(doc, dotted + ".data", path), dotted, path)
    if m.size != shape[0] * shape[1]:
        raise CalibrationError(
            f"{path}: field {dotted}: expected {shape[0]}x{shape[1]} values, got {m.size}"
        )
    return m.reshape(shape)


def _numbers(value: Any, field: str, path: Path) -> npt.NDArray[np.float64]:
    """A field's flat array of numbers (a list, or a list of rows as PJLab writes matrices).

    JSON numbers only: numpy also converts strings, through float() (`"2_109.75"` was
    2109.75, `"nan"` nan), booleans, null (nan) and a bare number."""
    problem = f"{path}: field {field}: expected a list of numbers, got"
    if isinstance(value, list):
        leaves = [v for row in value for v in (row if isinstance(row, list) else (row,))]
        bad = [v for v in leaves if not isinstance(v, int | float) or isinstance(v, bool)]
        if bad:
            raise CalibrationError(f"{problem} {shown(bad[0])} in it")
        with contextlib.suppress(OverflowError):  # an integer of 400 digits
            return np.array(leaves, dtype=np.float64)
    raise CalibrationError(f"{problem} {shown(value)}")


def _pixels(value: Any, field: str, path: Path) -> int:
    """An image side in pixels: a whole number (1920.7 was taken as 1920 without a word)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():  # False for inf and nan
        return int(value)
    raise CalibrationError(
        f"{path}: field {field}: expected a whole number of pixels, got {shown(value)}"
    )


def _time_lag_ms(value: Any, path: Path) -> float:
    """`param.time_lag` (ms): a finite number within the rig's time offsets."""
    if value is None:
        return 0.0
    lag = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an integer of 400 digits
            lag = float(value)
    if not (math.isfinite(lag) and abs(lag) * 1e6 <= MAX_TIME_OFFSET_NS):
        raise CalibrationError(
            f"{path}: field param.time_lag: expected a finite number of milliseconds within "
            f"+-{MAX_TIME_OFFSET_NS / 1e6:.3g}, got {shown(value)}"
        )
    return lag


def load_pjlab_calib(
    path: Path, image_size: tuple[int, int] | None = None, *, strict: bool = False
) -> Rig:
    """Rig from a PJLab calibration folder or one of its JSON files.

    `image_size` (width, height, pixels) is the size of the images the rig is used with; when
    None, an image beside the files (`*.png`/`*.jpg`, the first by name) gives it, else the
    stated `img_dist_w/h` is used. A stated size that differs from the image is reported in
    `rig.warnings` (or raised as CalibrationError with `strict=True`). Raises CalibrationError
    naming the file and field for missing or invalid values.
    """
    path = Path(path)
    intr_path, extr_path = find_pjlab_files(path)
    intr = _read_json(intr_path)
    extr = _read_json(extr_path)
    sensor = intr.get("sensor_name", "camera")
    if not isinstance(sensor, str) or not sensor.strip():
        raise CalibrationError(f"{intr_path}: sensor_name: expected a name, got {shown(sensor)}")
    name = sensor.removesuffix("_camera") or sensor
    k = _matrix(intr, "param.cam_K", intr_path, (3, 3))
    dist_raw = _numbers(_get(intr, "param.cam_dist.data", intr_path), "param.cam_dist", intr_path)
    stated = (
        _pixels(_get(intr, "param.img_dist_w", intr_path), "param.img_dist_w", intr_path),
        _pixels(_get(intr, "param.img_dist_h", intr_path), "param.img_dist_h", intr_path),
    )
    warnings: list[str] = []
    size = stated
    size_from = "stated"
    if image_size is None:
        image = find_image(intr_path.parent)
        if image is not None:
            image_size = image_size_of(image)
            size_from = str(image)
    elif image_size is not None:
        size_from = "the given image size"
    if image_size is not None:
        size = (int(image_size[0]), int(image_size[1]))
        if size != stated:
            msg = (
                f"{intr_path}: param.img_dist_w/img_dist_h state {stated[0]}x{stated[1]} but "
                f"the image is {size[0]}x{size[1]} ({size_from}); using {size[0]}x{size[1]} "
                "with the stated cam_K unchanged"
            )
            if strict:
                raise CalibrationError(msg)
            warnings.append(msg)
    camera = PinholeCamera(
        k, tuple(dist_raw.tolist()), size[0], size[1], context=f"{intr_path}: param.cam_K/cam_dist"
    )
    target = extr.get("target_sensor_name")
    if target is not None and target != sensor:
        raise CalibrationError(
            f"{extr_path}: target_sensor_name is {target!r}, the intrinsics are for {sensor!r}"
        )
    cam_from_lidar = RigidTransform.from_matrix(
        _matrix(extr, "param.sensor_calib", extr_path, (4, 4)),
        f"{extr_path}: param.sensor_calib",
    )
    lag = _time_lag_ms(_get(extr, "param", extr_path).get("time_lag", 0), extr_path)
    offsets = {}
    if lag:
        # SensorsCalibration does not state the unit; its tools use milliseconds.
        offsets[camera_frame(name)] = round(lag * 1e6)
    return Rig(
        cameras={name: camera},
        time_offsets_ns=offsets,
        source=str(path),
        edges={
            "lidar": FrameEdge("vehicle", RigidTransform.identity()),
            camera_frame(name): FrameEdge("lidar", cam_from_lidar.inverse()),
        },
        warnings=warnings,
    )
