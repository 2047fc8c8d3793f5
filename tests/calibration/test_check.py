"""Calibration check on real frames: the score falls for wrong extrinsics; overlays are drawn.

Set PERCEPTION_OVERLAY_DIR to also write the overlays there (to look at them).
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration import CalibrationError, RigidTransform, calibration_check, load_rig, read_scan
from calibration.check import CheckResult, read_kitti_bin

KITTI_FRAMES = ["000000", "000003", "000004", "000005", "000006", "000007", "000008", "000009"]

# Perturbations in the camera frame (x right, y down, z forward): 1 degree about each axis,
# 10 cm along each axis.
DEG = np.radians(1.0)
PERTURBATIONS = {
    "pitch_1deg": RigidTransform.from_rotvec([DEG, 0, 0]),
    "yaw_1deg": RigidTransform.from_rotvec([0, DEG, 0]),
    "roll_1deg": RigidTransform.from_rotvec([0, 0, DEG]),
    "x_10cm": RigidTransform.from_rotvec([0, 0, 0], [0.1, 0, 0]),
    "y_10cm": RigidTransform.from_rotvec([0, 0, 0], [0, 0.1, 0]),
    "z_10cm": RigidTransform.from_rotvec([0, 0, 0], [0, 0, 0.1]),
}
# Minimum relative drop of the score (nominal - perturbed) / nominal. Measured minima over the
# 9 frames: pitch 18 %, yaw 12 %, roll 2 %, x 2.8 %, y 6 %. A 10 cm shift along the optical axis
# is a ~1 % scale change of the image and is not required to be detected.
MIN_DROP = {
    "pitch_1deg": 0.10,
    "yaw_1deg": 0.08,
    "roll_1deg": 0.01,
    "x_10cm": 0.015,
    "y_10cm": 0.03,
}


def _case(data_dir: Path, frame: str) -> tuple[Path, str, Path, Path]:
    if frame == "pjlab":
        d = data_dir / "lidar_camera_calib_pjlab"
        return d, "center", d / "0.pcd", d / "0.png"
    root = data_dir / "kitti_object" / "training"
    scan_dir = "velodyne" if frame == "000000" else "velodyne_reduced"
    return (
        root / "calib" / f"{frame}.txt",
        "front",
        root / scan_dir / f"{frame}.bin",
        root / "image_2" / f"{frame}.png",
    )


def _overlay_dirs(tmp_path: Path) -> list[Path]:
    dirs = [tmp_path]
    env = os.environ.get("PERCEPTION_OVERLAY_DIR")
    if env:
        Path(env).mkdir(parents=True, exist_ok=True)
        dirs.append(Path(env))
    return dirs


@pytest.mark.parametrize("frame", [*KITTI_FRAMES, "pjlab"])
def test_score_falls_for_wrong_extrinsics_and_overlay_is_written(
    data_dir: Path, tmp_path: Path, frame: str
) -> None:
    calib, camera, scan, image_path = _case(data_dir, frame)
    rig = load_rig(calib)
    points = read_scan(scan)
    loaded = cv2.imread(str(image_path))
    assert loaded is not None
    image = np.asarray(loaded, dtype=np.uint8)
    nominal = calibration_check(rig, camera, points, image)
    assert isinstance(nominal, CheckResult)
    assert nominal.n_points_in_image > (9000 if frame == "pjlab" else 15000)
    assert nominal.score > 0.05
    cam_from_lidar = rig.transform(f"camera/{camera}", "lidar")
    drops = {}
    for name, perturbation in PERTURBATIONS.items():
        wrong = calibration_check(
            rig, camera, points, image, camera_from_lidar=perturbation @ cam_from_lidar
        )
        drops[name] = (nominal.score - wrong.score) / nominal.score
    for name, minimum in MIN_DROP.items():
        assert drops[name] > minimum, (name, drops)
    # The overlay: the image with coloured points, same size; write it (and a wrong one).
    assert nominal.overlay.shape == image.shape and nominal.overlay.dtype == np.uint8
    changed = np.any(nominal.overlay != image, axis=2).sum()
    assert changed > nominal.n_points_in_image  # 2 x 2 px dots
    wrong = calibration_check(
        rig, camera, points, image, camera_from_lidar=PERTURBATIONS["yaw_1deg"] @ cam_from_lidar
    )
    for out_dir in _overlay_dirs(tmp_path):
        for suffix, result in (("", nominal), ("_yaw1deg", wrong)):
            path = out_dir / f"overlay_{frame}{suffix}.png"
            assert cv2.imwrite(str(path), result.overlay)
            assert path.stat().st_size > 10_000


def test_projected_points_sit_on_the_labelled_pedestrian(kitti_dir: Path) -> None:
    # KITTI 000000 label: Pedestrian box [712.40, 143.00, 810.73, 307.92] px at ~8.4 m.
    rig = load_rig(kitti_dir / "calib" / "000000.txt")
    points = read_scan(kitti_dir / "velodyne" / "000000.bin")
    cam = rig.cameras["front"]
    uv, depth, visible = cam.visible(rig.transform("camera/front", "lidar").apply(points))
    in_box = visible & (uv[:, 0] > 722) & (uv[:, 0] < 800) & (uv[:, 1] > 160) & (uv[:, 1] < 290)
    on_pedestrian = in_box & (np.abs(depth - 8.4) < 0.8)
    assert on_pedestrian.sum() > 0.3 * in_box.sum() > 15


def test_overlay_has_a_depth_colour_legend() -> None:
    """The overlay says what its colours mean: a near (red) to far (blue) scale with depths, in
    the bottom-right corner; the rest of the image is left alone."""
    from calibration.check import draw_overlay

    image = np.full((375, 1242, 3), 128, np.uint8)
    overlay = draw_overlay(image, np.zeros((0, 2)), np.zeros(0))
    changed = np.any(overlay != image, axis=2)
    rows, cols = np.nonzero(changed)
    assert rows.min() > 375 // 2 and cols.min() > 1242 // 2
    corner = overlay[rows.min() :, cols.min() :].reshape(-1, 3).astype(int)
    b, r = corner[:, 0], corner[:, 2]
    assert np.count_nonzero((r > 200) & (b < 60)) > 50  # the near end
    assert np.count_nonzero((b > 200) & (r < 60)) > 50  # the far end
    assert np.count_nonzero(np.all(corner > 200, axis=1)) > 30  # the tick labels (white)


# -- reading scans -----------------------------------------------------------------------------


def test_a_scan_above_max_points_is_refused_from_its_size_unread(tmp_path: Path) -> None:
    """A 4 GiB scan (sparse: no disk taken) was read whole, then copied: 8 GB before a check
    could say it is larger than any sweep. Refused from its size; nothing of it is read."""
    huge = tmp_path / "huge.bin"
    with huge.open("wb") as f:
        f.truncate(4 << 30)
    tracemalloc.start()
    try:
        with pytest.raises(CalibrationError) as info:
            read_scan(huge, 1_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(info.value) == (
        f"{huge}: lidar scan of {4 << 30} bytes ({4 << 26} points), above the limit of 1000000 "
        "points a sweep may hold"
    )
    assert peak < 1 << 20
    # At the limit a scan is read; one point more is refused.
    scan = tmp_path / "scan.bin"
    np.arange(12, dtype="<f4").tofile(scan)
    assert read_kitti_bin(scan, 3).shape == (3, 4)
    with pytest.raises(CalibrationError, match=r"\(3 points\), above the limit of 2 points"):
        read_kitti_bin(scan, 2)
    assert read_kitti_bin(scan).shape == (3, 4)  # no limit given: none


@pytest.mark.timeout(30)  # the read blocked for ever on a pipe without a writer
@pytest.mark.parametrize(("name", "what"), [("s.bin", "lidar scan"), ("s.pcd", "point cloud")])
def test_a_pipe_or_device_as_a_scan_is_refused_without_blocking(
    tmp_path: Path, name: str, what: str
) -> None:
    pipe = tmp_path / name
    os.mkfifo(pipe)
    for path in (pipe, Path("/dev/zero")):
        with pytest.raises(CalibrationError) as info:
            read_scan(path) if path == pipe else read_kitti_bin(path)
        assert str(info.value) == (
            f"{path}: {'lidar scan' if path != pipe else what} is not a regular file (a device, "
            "pipe or socket)"
        )
