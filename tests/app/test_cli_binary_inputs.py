"""A binary file where a command reads text (a calibration, a timestamps or oxts file, a node
config, a rig), and a KITTI object frame without its scan: one line on stderr naming the file,
exit 2, as every other malformed input. In-process through `main`, on real files."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.cli import main
from tests.app.one_line import fails as _fails
from tests.conftest import copy_kitti_frames
from tests.replay.rosbag2.bags import write_kitti_bag

GARBAGE = b"\xff\xfe\x00garbage\n"
RAW_DATE = "2011_09_26"
RAW_DRIVE = f"{RAW_DATE}_drive_0001_sync"


def _kitti_copy(kitti_dir: Path, root: Path) -> Path:
    """Frames 000000 and 000003 of the KITTI object folder, copied to `root`."""
    return copy_kitti_frames(kitti_dir, root, ["000000", "000003"])


@pytest.fixture
def binary_calib(kitti_dir: Path, tmp_path: Path) -> Path:
    """A KITTI object folder copy whose frame 000003 has a binary calib file."""
    root = _kitti_copy(kitti_dir, tmp_path / "kitti")
    (root / "calib" / "000003.txt").write_bytes(GARBAGE)
    return root


@pytest.fixture
def binary_config(tmp_path: Path) -> Path:
    path = tmp_path / "node.yaml"
    path.write_bytes(b"\xd9\x01\x00\x7f")
    return path


def test_replay_and_import_name_a_binary_calib(
    capsys, binary_calib: Path, tmp_path: Path, yolox_path: Path
) -> None:
    calib = binary_calib / "calib" / "000003.txt"
    out = tmp_path / "o.jsonl"
    # The model given, not left to the user's model cache (empty on a fresh machine).
    err = _fails(capsys, "replay", "kitti-object", str(binary_calib), "--out", str(out),
                 "--model", str(yolox_path), "--quiet")  # fmt: skip
    assert err == f"perception replay: error: {calib}: not UTF-8 text (byte 0xff at offset 0)"
    drive = tmp_path / "i.mcap"
    err = _fails(capsys, "import", "kitti-object", str(binary_calib), "--out", str(drive),
                 "--quiet")  # fmt: skip
    assert err == f"perception import: error: {calib}: not UTF-8 text (byte 0xff at offset 0)"
    assert not drive.exists()


def test_play_names_the_binary_calib_of_the_frame_it_skips(
    capsys, caplog: pytest.LogCaptureFixture, binary_calib: Path, tmp_path: Path
) -> None:
    """`play` keeps going past a broken frame (the node takes frames one by one); the line
    saying it skipped one names the file at fault."""
    endpoint = f"ipc://{tmp_path}/sensors"
    code = main(["play", "kitti-object", str(binary_calib), "--endpoint", endpoint, "--wait", "0",
                 "--rate", "100"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "1 frames published" in out and "1 unreadable" in out
    calib = binary_calib / "calib" / "000003.txt"
    assert f"frame 1 skipped: {calib}: not UTF-8 text (byte 0xff at offset 0)" in caplog.text


@pytest.mark.parametrize("scans", ["velodyne_reduced", "velodyne"])
def test_a_frame_without_its_scan_is_refused(
    capsys, kitti_dir: Path, tmp_path: Path, scans: str
) -> None:
    root = _kitti_copy(kitti_dir, tmp_path / "kitti")
    if scans == "velodyne":
        (root / "velodyne_reduced").rename(root / "velodyne")
    missing = root / scans / "000003.bin"
    missing.unlink()
    expected = f"{missing}: missing for frame 000003"
    out = tmp_path / "o.jsonl"
    err = _fails(capsys, "replay", "kitti-object", str(root), "--out", str(out), "--quiet")
    assert err == f"perception replay: error: {expected}"
    assert not out.exists()
    drive = tmp_path / "i.mcap"
    err = _fails(capsys, "import", "kitti-object", str(root), "--out", str(drive), "--quiet")
    assert err == f"perception import: error: {expected}"
    assert not drive.exists()
    endpoint = f"ipc://{tmp_path}/sensors"
    err = _fails(capsys, "play", "kitti-object", str(root), "--endpoint", endpoint, "--wait", "0")
    assert err == f"perception play: error: {expected}"


@pytest.mark.parametrize(
    "argv",
    [
        ["replay", "kitti-object", "{kitti}", "--out", "{tmp}/o.jsonl", "--quiet"],
        ["record", "--out", "{tmp}/r.mcap", "--endpoint", "ipc://{tmp}/in"],
        ["play", "kitti-object", "{kitti}", "--endpoint", "ipc://{tmp}/out", "--wait", "0"],
        ["echo", "detections", "--endpoint", "ipc://{tmp}/det"],
    ],
)
def test_a_binary_node_config_is_named(
    capsys, kitti_dir: Path, tmp_path: Path, binary_config: Path, argv: list[str]
) -> None:
    args = [a.format(kitti=kitti_dir, tmp=tmp_path) for a in argv]
    err = _fails(capsys, *args, "--config", str(binary_config))
    assert err == (
        f"perception {args[0]}: error: {binary_config}: not UTF-8 text (byte 0xd9 at offset 0)"
    )


@pytest.fixture(scope="module")
def raw_drive(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the real KITTI raw drive (timestamps, calibration, first oxts packet) with
    small synthetic images, scans and packets for every timestamp."""
    source = data_dir / "kitti_raw" / RAW_DATE
    if not (source / RAW_DRIVE / "oxts" / "data" / "0000000000.txt").is_file():
        pytest.skip(f"real data not found: {source / RAW_DRIVE}")
    root = tmp_path_factory.mktemp("kitti_raw") / RAW_DATE
    shutil.copytree(source, root)
    drive = root / RAW_DRIVE
    ok, png = cv2.imencode(".png", np.zeros((375, 1242, 3), np.uint8))
    assert ok
    scan = np.array([[10.0, 0.0, -1.0, 0.5]], np.float32).tobytes()
    packet = (drive / "oxts" / "data" / "0000000000.txt").read_bytes()
    count = len((drive / "image_02" / "timestamps.txt").read_text().split()) // 2
    for cam in ("image_02", "image_03"):
        (drive / cam / "data").mkdir()
    (drive / "velodyne_points" / "data").mkdir()
    for i in range(count):
        for cam in ("image_02", "image_03"):
            (drive / cam / "data" / f"{i:010d}.png").write_bytes(png.tobytes())
        (drive / "velodyne_points" / "data" / f"{i:010d}.bin").write_bytes(scan)
        (drive / "oxts" / "data" / f"{i:010d}.txt").write_bytes(packet)
    return drive


@pytest.mark.parametrize(
    "damaged",
    [
        lambda d: d.parent / "calib_cam_to_cam.txt",
        lambda d: d / "oxts" / "data" / "0000000003.txt",
        lambda d: d / "image_02" / "timestamps.txt",
    ],
)
def test_import_kitti_raw_names_a_binary_file(
    capsys, raw_drive: Path, tmp_path: Path, damaged: Callable[[Path], Path]
) -> None:
    copy = tmp_path / RAW_DATE
    shutil.copytree(raw_drive.parent, copy)
    path = damaged(copy / RAW_DRIVE)
    path.write_bytes(GARBAGE)
    out = tmp_path / "raw.mcap"
    err = _fails(capsys, "import", "kitti-raw", str(copy / RAW_DRIVE), "--out", str(out),
                 "--quiet")  # fmt: skip
    assert err == f"perception import: error: {path}: not UTF-8 text (byte 0xff at offset 0)"
    assert not out.exists()


def test_import_rosbag2_names_a_binary_rig(capsys, kitti_dir: Path, tmp_path: Path) -> None:
    bag = write_kitti_bag(kitti_dir, tmp_path / "bag", frames=1)
    rig = tmp_path / "rigbin.yaml"
    rig.write_bytes(GARBAGE)
    topics = tmp_path / "topics.yaml"
    topics.write_text("rig: rigbin.yaml\n")
    out = tmp_path / "drive.mcap"
    err = _fails(capsys, "import", "rosbag2", str(bag.path), "--out", str(out), "--topics",
                 str(topics), "--quiet")  # fmt: skip
    assert err == (
        f"perception import: error: --topics rig: {rig.resolve()}: not UTF-8 text "
        "(byte 0xff at offset 0)"
    )
    assert not out.exists()
