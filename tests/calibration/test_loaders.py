"""`load_rig` dispatch, the PJLab loader and its image-size check, scan readers."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from calibration import CalibrationError, load_pjlab_calib, load_rig, read_scan


def test_dispatch_recognises_every_format(data_dir: Path, kitti_dir: Path) -> None:
    obj = load_rig(kitti_dir / "calib" / "000000.txt")
    assert obj.cameras["front"].size == (1224, 370)  # from image_2/000000.png
    assert obj.warnings == ()
    raw_dir = data_dir / "kitti_raw" / "2011_09_26"
    assert set(load_rig(raw_dir).cameras) == {"cam0", "cam1", "front", "cam3"}
    assert set(load_rig(raw_dir / "calib_velo_to_cam.txt").cameras) == {
        "cam0",
        "cam1",
        "front",
        "cam3",
    }
    pj = data_dir / "lidar_camera_calib_pjlab"
    for path in (pj, pj / "center_camera-intrinsic.json"):
        assert set(load_rig(path).cameras) == {"center"}


def test_object_calib_without_image_warns(tmp_path: Path, kitti_dir: Path) -> None:
    calib = tmp_path / "000003.txt"
    shutil.copy(kitti_dir / "calib" / "000003.txt", calib)
    rig = load_rig(calib)
    assert rig.cameras["front"].size == (1242, 375)
    assert rig.warnings == (
        f"{calib}: image size unknown (no ../image_2/000003.png); assumed 1242x375",
    )
    assert load_rig(calib, image_size=(1238, 374)).cameras["front"].size == (1238, 374)


def test_unrecognised_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match=r"not a recognised calibration folder"):
        load_rig(tmp_path)
    other = tmp_path / "calib.xml"
    other.write_text("<x/>")
    with pytest.raises(CalibrationError, match=r"calib\.xml: unrecognised calibration file type"):
        load_rig(other)


def test_pjlab_loader_values(data_dir: Path) -> None:
    rig = load_pjlab_calib(data_dir / "lidar_camera_calib_pjlab")
    cam = rig.cameras["center"]
    np.testing.assert_array_equal(cam.k, [[2109.75, 0, 949.828], [0, 2071.72, 576.237], [0, 0, 1]])
    assert cam.distortion[0] == pytest.approx(-0.10814499855041504)
    cam_from_lidar = rig.transform("camera/center", "lidar").matrix
    assert cam_from_lidar[0, 1] == -0.999895 and cam_from_lidar[2, 3] == pytest.approx(-0.574468)
    # The data README: 9,962 points of 0.pcd fall in the image with z > 1 m.
    pts = read_scan(data_dir / "lidar_camera_calib_pjlab" / "0.pcd")
    cam_pts = rig.transform("camera/center", "lidar").apply(pts)
    _, _, visible = cam.visible(cam_pts)
    assert int((visible & (cam_pts[:, 2] > 1.0)).sum()) == 9962


def test_pjlab_image_size_mismatch_is_reported(data_dir: Path, tmp_path: Path) -> None:
    folder = data_dir / "lidar_camera_calib_pjlab"
    intrinsic = folder / "center_camera-intrinsic.json"
    rig = load_rig(folder)  # 0.png beside the files is 1920x1200
    assert rig.cameras["center"].size == (1920, 1200)
    assert rig.warnings == (
        f"{intrinsic}: param.img_dist_w/img_dist_h state 1920x1080 but the image is 1920x1200 "
        f"({folder / '0.png'}); using 1920x1200 with the stated cam_K unchanged",
    )
    given = load_pjlab_calib(intrinsic, image_size=(1920, 1200))
    assert "(the given image size)" in given.warnings[0]
    with pytest.raises(
        CalibrationError,
        match=r"center_camera-intrinsic\.json: param\.img_dist_w"
        r"/img_dist_h state 1920x1080 but the image is 1920x1200",
    ):
        load_pjlab_calib(folder, strict=True)
    # Without an image the stated size is used, silently.
    for name in (
        "center_camera-intrinsic.json",
        "top_center_lidar-to-center_camera-extrinsic.json",
    ):
        shutil.copy(folder / name, tmp_path / name)
    bare = load_rig(tmp_path)
    assert bare.cameras["center"].size == (1920, 1080) and bare.warnings == ()
    # A principal point outside the real image is an error, not a warning.
    with pytest.raises(
        CalibrationError,
        match=r"principal point \(949\.828, 576\.237\) lies "
        r"outside the 1920x500 image",
    ):
        load_rig(tmp_path, image_size=(1920, 500))


def test_pjlab_missing_field_is_named(data_dir: Path, tmp_path: Path) -> None:
    folder = data_dir / "lidar_camera_calib_pjlab"
    for name in (
        "center_camera-intrinsic.json",
        "top_center_lidar-to-center_camera-extrinsic.json",
    ):
        text = (folder / name).read_text()
        (tmp_path / name).write_text(text.replace('"cam_K"', '"camK"'))
    with pytest.raises(CalibrationError, match=r"intrinsic\.json: missing field param\.cam_K"):
        load_rig(tmp_path)


def test_pjlab_key_given_twice_is_refused(data_dir: Path, tmp_path: Path) -> None:
    """json keeps the last of two values without a word: an image width given twice was the
    file's order's choice."""
    folder = data_dir / "lidar_camera_calib_pjlab"
    for name in (
        "center_camera-intrinsic.json",
        "top_center_lidar-to-center_camera-extrinsic.json",
    ):
        text = (folder / name).read_text()
        (tmp_path / name).write_text(
            text.replace('"img_dist_w": 1920,', '"img_dist_w": 1920, "img_dist_w": 1280,')
        )
    with pytest.raises(CalibrationError) as info:
        load_rig(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'center_camera-intrinsic.json'}: the key 'img_dist_w' given twice"
    )


def test_pjlab_binary_file_is_named(data_dir: Path, tmp_path: Path) -> None:
    folder = data_dir / "lidar_camera_calib_pjlab"
    intrinsic = tmp_path / "center_camera-intrinsic.json"
    intrinsic.write_bytes(b"\xff\xfe{}")
    extrinsic = "top_center_lidar-to-center_camera-extrinsic.json"
    (tmp_path / extrinsic).write_bytes((folder / extrinsic).read_bytes())
    with pytest.raises(CalibrationError) as info:
        load_rig(tmp_path)
    assert str(info.value) == f"{intrinsic}: not UTF-8 text (byte 0xff at offset 0)"
    # The parser recurses per level: this was a RecursionError, "a bug" to the CLI.
    intrinsic.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CalibrationError) as info:
        load_rig(tmp_path)
    assert str(info.value) == (
        f"{intrinsic}: not valid JSON (arrays and objects nested too deeply)"
    )


def test_pjlab_integer_longer_than_python_converts_is_named(data_dir: Path, tmp_path: Path) -> None:
    """Valid JSON that `int()` refuses (more than `sys.get_int_max_str_digits()` digits): it was
    "unexpected ValueError ... a bug" to `perception calib show`."""
    folder = data_dir / "lidar_camera_calib_pjlab"
    intrinsic = tmp_path / "center_camera-intrinsic.json"
    extrinsic = "top_center_lidar-to-center_camera-extrinsic.json"
    digits = sys.get_int_max_str_digits()
    text = (folder / intrinsic.name).read_text()
    intrinsic.write_text(text.replace('"img_dist_w": 1920', '"img_dist_w": 1' + "0" * digits))
    shutil.copy(folder / extrinsic, tmp_path / extrinsic)
    with pytest.raises(CalibrationError) as info:
        load_rig(tmp_path)
    assert str(info.value) == (
        f"{intrinsic}: not valid JSON value (an integer of more than {digits} digits)"
    )


def test_bin_scan_of_odd_size_is_named(tmp_path: Path) -> None:
    # PCD files: tests/calibration/test_pcd.py.
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\0" * 20)
    with pytest.raises(CalibrationError, match=r"odd\.bin: size \d+ bytes is not a multiple of 16"):
        read_scan(odd)


_INTRINSIC = "center_camera-intrinsic.json"
_EXTRINSIC = "top_center_lidar-to-center_camera-extrinsic.json"


def _pjlab_with(data_dir: Path, folder: Path, file: str, field: str, value: object) -> Path:
    """A copy of the PJLab pair in `folder` with `param.<field>` of `file` set to `value`; the
    file changed."""
    src = data_dir / "lidar_camera_calib_pjlab"
    for name in (_INTRINSIC, _EXTRINSIC):
        shutil.copy(src / name, folder / name)
    path = folder / file
    doc = json.loads(path.read_text())
    (entry,) = doc.values()
    node = entry["param"]
    *parents, last = field.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # Each of these was "unexpected ValueError/TypeError ... a bug" to `calib show`.
        ((_INTRINSIC, "cam_dist.data", ["a"]), "field param.cam_dist: expected a list of numbers"),
        ((_INTRINSIC, "cam_dist.data", [[1, [2]]]), "field param.cam_dist: expected a list of"),
        ((_INTRINSIC, "cam_dist.data", {"a": 1}), "field param.cam_dist: expected a list of"),
        ((_INTRINSIC, "cam_dist.data", None), "field param.cam_dist: expected a list of numbers"),
        ((_INTRINSIC, "img_dist_w", "abc"), "field param.img_dist_w: expected a whole number of"),
        ((_INTRINSIC, "img_dist_h", None), "field param.img_dist_h: expected a whole number of"),
        ((_INTRINSIC, "img_dist_w", [1]), "field param.img_dist_w: expected a whole number of"),
        ((_EXTRINSIC, "time_lag", "abc"), "field param.time_lag: expected a finite number of ms"),
        ((_EXTRINSIC, "time_lag", [1]), "field param.time_lag: expected a finite number of ms"),
        ((_EXTRINSIC, "time_lag", math.inf), "field param.time_lag: expected a finite number"),
        ((_EXTRINSIC, "time_lag", 1e300), "field param.time_lag: expected a finite number of ms"),
        # Taken without a word: 1920.7 as 1920, true as 1 pixel.
        ((_INTRINSIC, "img_dist_w", 1920.7), "field param.img_dist_w: expected a whole number"),
        ((_INTRINSIC, "img_dist_w", True), "field param.img_dist_w: expected a whole number of"),
    ],
)
def test_pjlab_values_of_the_wrong_kind_are_named(
    data_dir: Path, tmp_path: Path, change: tuple[str, str, object], message: str
) -> None:
    path = _pjlab_with(data_dir, tmp_path, *change)
    with pytest.raises(CalibrationError) as info:
        load_rig(tmp_path)
    text = str(info.value).replace("milliseconds", "ms")
    assert text.startswith(f"{path}: {message}"), text
    assert len(text) < 300


@pytest.mark.parametrize(
    ("change", "got"),
    [
        # numpy converted strings through float(): 2109.75 and a 10 m lever, without a word.
        ((_INTRINSIC, "cam_K", "2_109.75"), "'2_109.75' in it"),
        ((_EXTRINSIC, "sensor_calib", "1_0"), "'1_0' in it"),
        ((_INTRINSIC, "cam_dist", "-0.1"), "'-0.1' in it"),
        ((_INTRINSIC, "cam_K", True), "True in it"),
        # numpy's OverflowError: "unexpected OverflowError" to `calib show`.
        ((_INTRINSIC, "cam_K", 10**400), "[[100000000000000000"),
    ],
)
def test_pjlab_matrix_values_that_are_no_json_numbers_are_refused(
    data_dir: Path, tmp_path: Path, change: tuple[str, str, object], got: str
) -> None:
    file, field, value = change
    doc = json.loads((data_dir / "lidar_camera_calib_pjlab" / file).read_text())
    (entry,) = doc.values()
    rows = entry["param"][field]["data"]
    rows[0][0] = value  # the first value of the first row
    path = _pjlab_with(data_dir, tmp_path, file, f"{field}.data", rows)
    with pytest.raises(CalibrationError) as info:
        load_rig(tmp_path)
    assert str(info.value).startswith(
        f"{path}: field param.{field}: expected a list of numbers, got {got}"
    ), str(info.value)


def test_pjlab_sensor_name_must_be_a_name(data_dir: Path, tmp_path: Path) -> None:
    """A list or an empty string was taken for the camera's name ('[1]', '')."""
    src = data_dir / "lidar_camera_calib_pjlab"
    shutil.copy(src / _EXTRINSIC, tmp_path / _EXTRINSIC)
    doc = json.loads((src / _INTRINSIC).read_text())
    for name in ([1], ""):
        doc["center_camera-intrinsic"]["sensor_name"] = name
        (tmp_path / _INTRINSIC).write_text(json.dumps(doc))
        with pytest.raises(CalibrationError) as info:
            load_rig(tmp_path)
        assert str(info.value) == (
            f"{tmp_path / _INTRINSIC}: sensor_name: expected a name, got {name!r}"
        )


def test_a_json_file_of_no_pjlab_pair_is_refused(data_dir: Path, tmp_path: Path) -> None:
    """Any other .json beside a PJLab pair was taken for the pair: `calib show other.json`
    showed the pair's rig, the file itself unread."""
    src = data_dir / "lidar_camera_calib_pjlab"
    for name in (_INTRINSIC, _EXTRINSIC):
        shutil.copy(src / name, tmp_path / name)
    other = tmp_path / "rig.json"
    other.write_text("{}")
    with pytest.raises(CalibrationError) as info:
        load_rig(other)
    assert str(info.value) == (
        f"{other}: not a PJLab calibration file (its name must end in -intrinsic.json or "
        "-extrinsic.json); a rig file is YAML (.yaml)"
    )
    assert set(load_rig(tmp_path / _EXTRINSIC).cameras) == {"center"}


def test_a_kitti_raw_folder_without_one_of_its_files_names_it(
    data_dir: Path, tmp_path: Path
) -> None:
    src = data_dir / "kitti_raw" / "2011_09_26"
    for name in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt"):
        shutil.copy(src / name, tmp_path / name)
    with pytest.raises(CalibrationError) as info:
        load_rig(tmp_path)
    assert str(info.value) == (
        f"{tmp_path}: a KITTI raw calibration folder without calib_imu_to_velo.txt"
    )
