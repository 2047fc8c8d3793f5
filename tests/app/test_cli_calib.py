from __future__ import annotations

from pathlib import Path

import cv2

from app.cli import main


def test_calib_show(capsys, kitti_dir: Path) -> None:
    assert main(["calib", "show", str(kitti_dir / "calib" / "000000.txt")]) == 0
    out = capsys.readouterr().out
    assert "camera/front" in out and "fx=707.0493" in out


def test_calib_check_kitti(capsys, tmp_path: Path, kitti_dir: Path) -> None:
    out_png = tmp_path / "overlay.png"
    code = main(
        [
            "calib",
            "check",
            str(kitti_dir / "calib" / "000003.txt"),
            "--lidar",
            str(kitti_dir / "velodyne_reduced" / "000003.bin"),
            "--image",
            str(kitti_dir / "image_2" / "000003.png"),
            "--out",
            str(out_png),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "alignment score" in out
    overlay = cv2.imread(str(out_png))
    assert overlay is not None and overlay.shape == (375, 1242, 3)


def test_calib_check_pjlab_reports_size_mismatch(capsys, tmp_path: Path, data_dir: Path) -> None:
    pj = data_dir / "lidar_camera_calib_pjlab"
    code = main(
        [
            "calib",
            "check",
            str(pj),
            "--lidar",
            str(pj / "0.pcd"),
            "--image",
            str(pj / "0.png"),
            "--out",
            str(tmp_path / "pj.png"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "1920x1080" in out and "1920x1200" in out


def test_calib_check_bad_image(capsys, tmp_path: Path, kitti_dir: Path) -> None:
    code = main(
        [
            "calib",
            "check",
            str(kitti_dir / "calib" / "000003.txt"),
            "--lidar",
            str(kitti_dir / "velodyne_reduced" / "000003.bin"),
            "--image",
            str(tmp_path / "none.png"),
            "--out",
            str(tmp_path / "o.png"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "none.png: image does not exist" in err
