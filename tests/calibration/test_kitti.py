from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration import CalibrationError, Rig, RigidTransform, load_kitti_object_calib
from calibration.kitti import kitti_label_to_velo, read_kitti_calib_fields
from replay.kitti_object import read_kitti_scan


def _direct_projection(calib: Path, points: np.ndarray) -> np.ndarray:
    f = read_kitti_calib_fields(calib)
    r0 = np.eye(4)
    r0[:3, :3] = f["R0_rect"].reshape(3, 3)
    tr = np.eye(4)
    tr[:3] = f["Tr_velo_to_cam"].reshape(3, 4)
    h = np.c_[points[:, :3], np.ones(len(points))] @ (f["P2"].reshape(3, 4) @ r0 @ tr).T
    return h[:, :2] / h[:, 2:]


@pytest.mark.parametrize("frame", ["000000", "000003", "000006"])
def test_rig_projection_equals_kitti_matrices(kitti_dir: Path, frame: str) -> None:
    calib = kitti_dir / "calib" / f"{frame}.txt"
    rig = load_kitti_object_calib(calib, 1242, 375)
    points = read_kitti_scan(kitti_dir / "velodyne_reduced" / f"{frame}.bin")
    uv, depth = rig.cameras["front"].project(rig.transform("camera/front", "lidar").apply(points))
    assert np.all(depth > 0)
    np.testing.assert_allclose(uv, _direct_projection(calib, points), atol=1e-4)


def test_rig_document_round_trip(kitti_dir: Path) -> None:
    rig = load_kitti_object_calib(kitti_dir / "calib" / "000000.txt", 1224, 370)
    back = Rig.from_dict(rig.to_dict())
    np.testing.assert_array_equal(
        back.transform("camera/front", "lidar").matrix,
        rig.transform("camera/front", "lidar").matrix,
    )
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
