from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration import (
    CalibrationError,
    Rig,
    RigidTransform,
    load_kitti_object_calib,
    load_kitti_raw_calib,
    load_rig,
    read_scan,
)
from calibration.images import image_size_of
from calibration.kitti import kitti_label_to_velo, read_kitti_calib_fields

FRAMES = ["000000", "000003", "000004", "000005", "000006", "000007", "000008", "000009"]


def _direct_projection(p2: np.ndarray, r0_rect: np.ndarray, tr: np.ndarray, points: np.ndarray):
    """P2 · R0_rect · Tr_velo_to_cam applied to homogeneous points, in float64."""
    r0 = np.eye(4)
    r0[:3, :3] = r0_rect.reshape(3, 3)
    tr4 = np.eye(4)
    tr4[:3] = tr.reshape(3, 4)
    pts = points[:, :3].astype(np.float64)
    h = np.c_[pts, np.ones(len(pts))] @ (p2.reshape(3, 4) @ r0 @ tr4).T
    return h[:, :2] / h[:, 2:]


@pytest.mark.parametrize("frame", FRAMES)
def test_rig_projection_equals_kitti_matrices(kitti_dir: Path, frame: str) -> None:
    calib = kitti_dir / "calib" / f"{frame}.txt"
    rig = load_rig(calib)  # image size from ../image_2
    assert (rig.cameras["front"].width, rig.cameras["front"].height) == image_size_of(
        kitti_dir / "image_2" / f"{frame}.png"
    )
    points = read_scan(kitti_dir / "velodyne_reduced" / f"{frame}.bin")
    uv, depth, visible = rig.cameras["front"].visible(
        rig.transform("camera/front", "lidar").apply(points)
    )
    f = read_kitti_calib_fields(calib)
    expected = _direct_projection(f["P2"], f["R0_rect"], f["Tr_velo_to_cam"], points)
    assert np.all(depth > 0)
    assert np.max(np.abs(uv - expected)) < 1e-6
    # The data README: every FOV-cropped point lies inside its frame's image.
    assert visible.mean() > 0.999


def test_all_object_cameras_match_their_projection_matrices(kitti_dir: Path) -> None:
    calib = kitti_dir / "calib" / "000000.txt"
    rig = load_kitti_object_calib(calib, 1224, 370)
    points = read_scan(kitti_dir / "velodyne_reduced" / "000000.bin")
    f = read_kitti_calib_fields(calib)
    for i, name in enumerate(["cam0", "cam1", "front", "cam3"]):
        uv, _ = rig.cameras[name].project(rig.transform(f"camera/{name}", "lidar").apply(points))
        expected = _direct_projection(f[f"P{i}"], f["R0_rect"], f["Tr_velo_to_cam"], points)
        assert np.max(np.abs(uv - expected)) < 1e-6, name


def test_raw_and_object_loaders_agree_on_camera_2(data_dir: Path, kitti_dir: Path) -> None:
    raw_dir = data_dir / "kitti_raw" / "2011_09_26"
    raw = load_kitti_raw_calib(raw_dir)
    # Object frames 000003-000005 and 000007-000009 were recorded on 2011_09_26: same numbers.
    matching = []
    for frame in FRAMES:
        f = read_kitti_calib_fields(kitti_dir / "calib" / f"{frame}.txt")
        if np.array_equal(f["P2"], _raw_field(raw_dir, "P_rect_02")):
            matching.append(frame)
    assert matching == ["000003", "000004", "000005", "000007", "000008", "000009"]
    obj = load_kitti_object_calib(kitti_dir / "calib" / "000003.txt", 1242, 375)
    points = read_scan(kitti_dir / "velodyne_reduced" / "000003.bin")
    uv_raw, _ = raw.cameras["front"].project(raw.transform("camera/front", "lidar").apply(points))
    uv_obj, _ = obj.cameras["front"].project(obj.transform("camera/front", "lidar").apply(points))
    assert np.max(np.abs(uv_raw - uv_obj)) < 1e-6
    # ... and both equal P_rect_02 · R_rect_00 · Tr_velo_to_cam from the raw files.
    velo = _raw_fields(raw_dir / "calib_velo_to_cam.txt")
    tr = np.column_stack([velo["R"].reshape(3, 3), velo["T"]])
    expected = _direct_projection(
        _raw_field(raw_dir, "P_rect_02"), _raw_field(raw_dir, "R_rect_00"), tr, points
    )
    assert np.max(np.abs(uv_raw - expected)) < 1e-6
    assert (raw.cameras["front"].width, raw.cameras["front"].height) == (1242, 375)
    # Tr_imu_to_velo agrees too.
    assert raw.transform("lidar", "imu").almost_equal(obj.transform("lidar", "imu"), 1e-12)
    arm = raw.gnss_lever_arm_m
    assert arm is not None
    np.testing.assert_allclose(arm, np.array([-0.8086759, 0.3195559, -0.7997231]))


def _raw_fields(path: Path) -> dict[str, np.ndarray]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        try:
            out[key.strip()] = np.array([float(v) for v in rest.split()])
        except ValueError:
            continue
    return out


def _raw_field(raw_dir: Path, key: str) -> np.ndarray:
    return _raw_fields(raw_dir / "calib_cam_to_cam.txt")[key]


def test_raw_loader_reports_image_size_mismatch(data_dir: Path) -> None:
    rig = load_kitti_raw_calib(data_dir / "kitti_raw" / "2011_09_26", image_size=(1224, 370))
    assert rig.cameras["front"].width == 1224
    assert any("S_rect_02 states 1242x375 but the image is 1224x370" in w for w in rig.warnings)


def test_raw_loader_names_missing_field(tmp_path: Path, data_dir: Path) -> None:
    src = data_dir / "kitti_raw" / "2011_09_26"
    for name in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt"):
        (tmp_path / name).write_text((src / name).read_text())
    text = (tmp_path / "calib_cam_to_cam.txt").read_text()
    (tmp_path / "calib_cam_to_cam.txt").write_text(
        "\n".join(line for line in text.splitlines() if not line.startswith("R_rect_00"))
    )
    with pytest.raises(CalibrationError, match=r"calib_cam_to_cam\.txt: missing field R_rect_00"):
        load_rig(tmp_path)


def test_rig_document_round_trip(kitti_dir: Path) -> None:
    rig = load_kitti_object_calib(kitti_dir / "calib" / "000000.txt", 1224, 370)
    back = Rig.from_dict(rig.to_dict())
    np.testing.assert_array_equal(
        back.transform("camera/front", "lidar").matrix,
        rig.transform("camera/front", "lidar").matrix,
    )
    assert back.source == rig.source
    assert back.cameras["front"].width == 1224


def test_label_to_velo_matches_reference_pedestrian(data_dir: Path, kitti_dir: Path) -> None:
    # The labelled pedestrian's bottom centre, lifted by half its height (1.89 m) to its centre.
    bottom = kitti_label_to_velo(kitti_dir / "calib" / "000000.txt", [1.84, 1.47, 8.41])
    ref = np.loadtxt(data_dir / "kitti_pointpillars" / "reference_pred_velo" / "000000.txt")
    ped = ref[(ref[:, 7] == 1) & (ref[:, 8] > 0.8)][0]
    assert np.hypot(*(bottom[:2] - ped[:2])) < 0.15


def test_missing_field_is_named(tmp_path: Path, kitti_dir: Path) -> None:
    text = (kitti_dir / "calib" / "000000.txt").read_text()
    bad = tmp_path / "calib.txt"
    bad.write_text("\n".join(line for line in text.splitlines() if not line.startswith("P2")))
    with pytest.raises(CalibrationError, match=r"calib\.txt: missing field P2"):
        load_kitti_object_calib(bad, 1242, 375)


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match=r"nope\.txt: cannot read"):
        load_kitti_object_calib(tmp_path / "nope.txt", 1242, 375)


def test_binary_object_calib_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "000003.txt"
    bad.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(CalibrationError) as info:
        load_kitti_object_calib(bad, 1242, 375)
    assert str(info.value) == f"{bad}: not UTF-8 text (byte 0xff at offset 0)"


def test_binary_raw_calib_is_named(tmp_path: Path, data_dir: Path) -> None:
    for name in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt"):
        text = (data_dir / "kitti_raw" / "2011_09_26" / name).read_bytes()
        (tmp_path / name).write_bytes(text)
    bad = tmp_path / "calib_cam_to_cam.txt"
    bad.write_bytes(b"calib_time: \xff\xfe\n" + bad.read_bytes())
    with pytest.raises(CalibrationError) as info:
        load_kitti_raw_calib(tmp_path)
    assert str(info.value) == f"{bad}: not UTF-8 text (byte 0xff at offset 12)"


def test_non_orthonormal_rotation_rejected() -> None:
    m = np.eye(4)
    m[0, 0] = 1.1
    with pytest.raises(CalibrationError, match="Tr: rotation is not orthonormal"):
        RigidTransform.from_matrix(m, name="Tr")


def test_transform_composition_and_inverse() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    m = np.eye(4)
    m[:3, :3] = q
    m[:3, 3] = [1.0, -2.0, 0.5]
    a_from_b = RigidTransform.from_matrix(m)
    p = rng.normal(size=(5, 3))
    np.testing.assert_allclose((a_from_b.inverse() @ a_from_b).apply(p), p, atol=1e-12)


def test_a_field_given_twice_is_refused_naming_both_lines(tmp_path: Path, data_dir: Path) -> None:
    """The last of two lines of a field was taken without a word (here a reflection, given
    after the right rotation)."""
    src = data_dir / "kitti_raw" / "2011_09_26"
    for name in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt"):
        (tmp_path / name).write_text((src / name).read_text())
    imu = tmp_path / "calib_imu_to_velo.txt"
    lines = imu.read_text().splitlines()
    imu.write_text("\n".join([*lines, "R: 0 1 0 1 0 0 0 0 1"]) + "\n")
    with pytest.raises(CalibrationError) as info:
        load_rig(tmp_path)
    first = 1 + next(i for i, line in enumerate(lines) if line.startswith("R:"))
    assert str(info.value) == (
        f"{imu}:{len(lines) + 1}: field R given twice (first on line {first})"
    )


def test_an_object_calib_saved_with_a_byte_order_mark_is_read(
    tmp_path: Path, kitti_dir: Path
) -> None:
    """An editor's "UTF-8 with BOM": it was "missing field P0" in a file starting with P0."""
    text = (kitti_dir / "calib" / "000000.txt").read_text()
    marked = tmp_path / "000000.txt"
    marked.write_text("\ufeff" + text, encoding="utf-8")
    rig = load_kitti_object_calib(marked, 1224, 370)
    plain = load_kitti_object_calib(kitti_dir / "calib" / "000000.txt", 1224, 370)
    np.testing.assert_array_equal(rig.cameras["cam0"].k, plain.cameras["cam0"].k)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # float() read 7215.377 (a focal length ten times too long) and a full-width 7 as 7.
        ("P2: 7.215377000000e+02", "P2: 7_215.377"),
        ("P2: 7.215377000000e+02", "P2: \uff17.215377000000e+02"),  # a full-width 7
    ],
)
def test_an_object_calib_number_float_alone_would_read_is_refused(
    tmp_path: Path, kitti_dir: Path, old: str, new: str
) -> None:
    text = (kitti_dir / "calib" / "000003.txt").read_text()
    assert text.count(old) == 1
    path = tmp_path / "000003.txt"
    path.write_text(text.replace(old, new), encoding="utf-8")
    token = new.split()[1]
    with pytest.raises(CalibrationError) as info:
        load_kitti_object_calib(path, 1242, 375)
    assert str(info.value) == f"{path}:3: field P2: could not convert string to float: {token!r}"


@pytest.mark.parametrize(
    ("name", "edit", "field"),
    [
        # An image size of 1_242 x 375 was read as the file's stated 1242 x 375.
        ("calib_cam_to_cam.txt", ("S_rect_02: 1.242000e+03", "S_rect_02: 1_242"), "S_rect_02"),
        ("calib_velo_to_cam.txt", ("T: -4.069766e-03", "T: -4_0.069766e-03"), "T"),
        ("calib_imu_to_velo.txt", ("T: -8.086759e-01", "T: -8.086_759e-01"), "T"),
    ],
)
def test_a_raw_calib_number_with_an_underscore_is_refused(
    tmp_path: Path, data_dir: Path, name: str, edit: tuple[str, str], field: str
) -> None:
    old, new = edit
    src = data_dir / "kitti_raw" / "2011_09_26"
    for each in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt"):
        (tmp_path / each).write_text((src / each).read_text())
    path = tmp_path / name
    lines = path.read_text().splitlines()
    lineno = 1 + next(i for i, line in enumerate(lines) if line.startswith(old))
    path.write_text(path.read_text().replace(old, new))
    with pytest.raises(CalibrationError) as info:
        load_kitti_raw_calib(tmp_path)
    assert str(info.value) == (
        f"{path}:{lineno}: field {field}: could not convert string to float: {new.split()[1]!r}"
    )
