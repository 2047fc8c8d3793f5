from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from perception.msgs.schema import DEFAULT_LIMITS
from perception.msgs.types import CameraFrame, LidarSweep, RigMessage
from replay.datasets.kitti_object import KittiObjectFolder, read_kitti_scan
from replay.errors import ReplayError


def test_frames_and_messages(kitti_dir: Path) -> None:
    folder = KittiObjectFolder(kitti_dir)
    # velodyne/ has only 000000, so the folder covering every image is chosen.
    assert folder.lidar_dir == "velodyne_reduced"
    assert [f.frame_id for f in folder.frames] == [
        "000000",
        "000003",
        "000004",
        "000005",
        "000006",
        "000007",
        "000008",
        "000009",
    ]
    msgs = list(folder.messages(start_ns=1_000))
    assert len(msgs) == 3 * len(folder)
    sweeps = [m for m in msgs if isinstance(m, LidarSweep)]
    assert [s.header.stamp_ns for s in sweeps] == [1_000 + i * 100_000_000 for i in range(8)]
    rig, cam, sweep = msgs[:3]
    assert isinstance(rig, RigMessage) and isinstance(cam, CameraFrame)
    assert cam.image is not None and cam.image.shape == (370, 1224, 3)
    assert rig.rig["cameras"]["front"]["width"] == 1224
    assert isinstance(sweep, LidarSweep) and sweep.points.dtype == np.float32


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="does not exist"):
        KittiObjectFolder(tmp_path / "nowhere")


def test_the_folder_above_training_names_it(tmp_path: Path, kitti_dir: Path) -> None:
    """KITTI's download unpacks to <root>/training: the root given, the error names it."""
    root = tmp_path / "kitti"
    shutil.copytree(kitti_dir, root / "training")
    with pytest.raises(ReplayError, match=rf"no image_2/\); {root / 'training'} is one$"):
        KittiObjectFolder(root)
    with pytest.raises(ReplayError, match=r"not a KITTI object folder \(no image_2/\)$"):
        KittiObjectFolder(root / "training" / "calib")


def test_missing_calib_for_a_frame(tmp_path: Path, kitti_dir: Path) -> None:
    shutil.copytree(kitti_dir, tmp_path / "t")
    (tmp_path / "t" / "calib" / "000004.txt").unlink()
    with pytest.raises(ReplayError, match=r"000004\.txt: missing for frame 000004"):
        KittiObjectFolder(tmp_path / "t")


@pytest.mark.parametrize("lidar_dir", ["velodyne_reduced", "velodyne"])
def test_missing_scan_for_a_frame(tmp_path: Path, kitti_dir: Path, lidar_dir: str) -> None:
    """An image without its scan is refused as a scan without its image is, whichever scan
    folder is chosen: not left out of the frames."""
    root = tmp_path / "t"
    for sub in ("image_2", "calib", lidar_dir):
        (root / sub).mkdir(parents=True)
    for stem in ("000000", "000003"):
        shutil.copy(kitti_dir / "image_2" / f"{stem}.png", root / "image_2")
        shutil.copy(kitti_dir / "calib" / f"{stem}.txt", root / "calib")
    shutil.copy(kitti_dir / lidar_dir / "000000.bin", root / lidar_dir)
    with pytest.raises(ReplayError) as info:
        KittiObjectFolder(root)
    missing = root / lidar_dir / "000003.bin"
    assert str(info.value) == f"{missing}: missing for frame 000003"


def test_missing_image_for_a_frame(tmp_path: Path, kitti_dir: Path) -> None:
    shutil.copytree(kitti_dir, tmp_path / "t")
    (tmp_path / "t" / "image_2" / "000004.png").unlink()
    with pytest.raises(ReplayError, match=r"000004\.png: missing for frame 000004$"):
        KittiObjectFolder(tmp_path / "t")
    # A pipe in its place would block its reader: named for what it is.
    os.mkfifo(tmp_path / "t" / "image_2" / "000004.png")
    with pytest.raises(ReplayError, match=r"000004\.png: not a regular file for frame 000004$"):
        KittiObjectFolder(tmp_path / "t")


def test_a_scan_folder_given_picks_the_frames(kitti_dir: Path) -> None:
    # velodyne/ holds the full scan of 000000 only: asked for, it is the one frame.
    folder = KittiObjectFolder(kitti_dir, lidar_dir="velodyne")
    assert [f.frame_id for f in folder.frames] == ["000000"]


def test_binary_calib_is_named(tmp_path: Path, kitti_dir: Path) -> None:
    shutil.copytree(kitti_dir, tmp_path / "t")
    calib = tmp_path / "t" / "calib" / "000003.txt"
    calib.write_bytes(b"\xff\xfe\x00garbage\n")
    folder = KittiObjectFolder(tmp_path / "t")
    with pytest.raises(ReplayError) as info:
        folder.frame_messages(1, 0)
    assert str(info.value) == f"{calib}: not UTF-8 text (byte 0xff at offset 0)"


def test_truncated_scan(tmp_path: Path) -> None:
    p = tmp_path / "x.bin"
    p.write_bytes(b"\0" * 18)
    with pytest.raises(ReplayError, match="not a multiple of 16"):
        read_kitti_scan(p)


def test_unreadable_image(tmp_path: Path, kitti_dir: Path) -> None:
    shutil.copytree(kitti_dir, tmp_path / "t")
    (tmp_path / "t" / "image_2" / "000003.png").write_bytes(b"not a png")
    folder = KittiObjectFolder(tmp_path / "t")
    with pytest.raises(ReplayError, match=r"000003\.png: image is not a readable image"):
        folder.frame_messages(1, 0)


def test_a_scan_larger_than_a_sweep_may_hold_is_refused_unread(tmp_path: Path) -> None:
    """A 4 GiB scan (sparse) was read and copied (8 GB) before the drive refused the sweep."""
    huge = tmp_path / "huge.bin"
    with huge.open("wb") as f:
        f.truncate(4 << 30)
    with pytest.raises(ReplayError) as info:
        read_kitti_scan(huge)
    assert str(info.value) == (
        f"{huge}: lidar scan of {4 << 30} bytes ({4 << 26} points), above the limit of "
        f"{DEFAULT_LIMITS.max_points} points a sweep may hold"
    )
