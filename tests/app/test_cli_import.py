"""`perception import`'s --out: never the data being imported, and an existing drive replaced
only when asked (--overwrite), as `record` does. Through `main`, on real files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from app.cli import main
from replay.drive import DriveReader
from tests.app.one_line import fails as _fails
from tests.conftest import copy_kitti_frames
from tests.replay.rosbag2.bags import write_kitti_bag


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def kitti_copy(kitti_dir: Path, tmp_path: Path) -> Path:
    """Two frames of the KITTI object folder."""
    return copy_kitti_frames(kitti_dir, tmp_path / "kitti", ["000000", "000003"])


def test_a_bag_is_never_replaced_by_its_own_import(
    capsys: pytest.CaptureFixture[str], kitti_dir: Path, tmp_path: Path
) -> None:
    bag = write_kitti_bag(kitti_dir, tmp_path / "bag", frames=1).path
    bag_file = bag / "bag.mcap"
    assert bag_file.is_file()
    before = _digest(bag_file)
    err = _fails(capsys, "import", "rosbag2", str(bag_file), "--out", str(bag_file))
    assert err == (
        f"perception import: error: {bag_file}: is also an input of this command; --out must be "
        "another file"
    )
    # The bag's folder, and its file as --out, even with --overwrite.
    err = _fails(capsys, "import", "rosbag2", str(bag), "--out", str(bag_file), "--overwrite")
    assert err == (
        f"perception import: error: {bag_file}: is a file of the folder being imported; --out "
        "must be another file"
    )
    assert _digest(bag_file) == before


def test_an_existing_drive_is_replaced_only_with_overwrite(
    capsys: pytest.CaptureFixture[str], kitti_copy: Path, tmp_path: Path
) -> None:
    out = tmp_path / "drive.mcap"
    out.write_bytes(b"an earlier recording\n")
    err = _fails(capsys, "import", "kitti-object", str(kitti_copy), "--out", str(out))
    assert err == (
        f"perception import: error: {out}: exists; give --overwrite to replace it, or another --out"
    )
    assert out.read_bytes() == b"an earlier recording\n"
    argv = ["import", "kitti-object", str(kitti_copy), "--out", str(out), "--overwrite"]
    assert main([*argv, "--quiet"]) == 0
    assert DriveReader(out).topics()["lidar/top"] == 2
    # A new drive inside the folder being imported reads none of it: allowed.
    inside = kitti_copy / "drive.mcap"
    assert main(["import", "kitti-object", str(kitti_copy), "--out", str(inside), "--quiet"]) == 0
    assert DriveReader(inside).topics()["lidar/top"] == 2


def test_a_scan_larger_than_a_sweep_may_hold_is_refused_unread(
    capsys: pytest.CaptureFixture[str], kitti_copy: Path, tmp_path: Path
) -> None:
    """A 4 GiB scan (sparse: it takes no disk) was read and copied, 8 GB, before the drive
    refused its sweep: refused from its size, and no drive written."""
    scan = kitti_copy / "velodyne_reduced" / "000003.bin"
    with scan.open("r+b") as f:
        f.truncate(4 << 30)
    out = tmp_path / "out.mcap"
    err = _fails(capsys, "import", "kitti-object", str(kitti_copy), "--out", str(out), "--quiet")
    assert err == (
        f"perception import: error: {scan}: lidar scan of {4 << 30} bytes ({4 << 26} points), "
        "above the limit of 1000000 points a sweep may hold"
    )
    assert not out.exists()
