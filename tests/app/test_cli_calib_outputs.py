"""`perception calib check`'s outputs and inputs, through `main` on real files: no output
replaces an input (a frame's image, the drive) or an existing file without --overwrite; a pipe
given as an input is named, not waited on; a scan larger than a sweep may hold is refused from
its size, before it is read. Each refusal is one line and exit 2, before any work."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from app.cli import main
from perception.msgs.schema import DEFAULT_LIMITS
from tests.app.one_line import fails as _fails
from tests.conftest import copy_kitti_frames

_FRAMES = ["000000", "000003"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def kitti_copy(kitti_dir: Path, tmp_path: Path) -> Path:
    """Two frames of the KITTI object folder, which a test may write beside."""
    return copy_kitti_frames(kitti_dir, tmp_path / "kitti", _FRAMES)


def _single(
    kitti: Path, out: Path, *, lidar: Path | None = None, image: Path | None = None
) -> list[str]:
    """`calib check` of frame 000003 of `kitti` (one scan and image) into `out`."""
    return [
        "calib", "check", str(kitti / "calib" / "000003.txt"),
        "--lidar", str(lidar or kitti / "velodyne_reduced" / "000003.bin"),
        "--image", str(image or kitti / "image_2" / "000003.png"),
        "--out", str(out),
    ]  # fmt: skip


def test_frames_out_never_replaces_a_frames_file(
    capsys: pytest.CaptureFixture[str], kitti_copy: Path, tmp_path: Path
) -> None:
    """--out (and the pictures named after it) among the files the frames are read from
    replaced an image: refused, also through a link to the folder, before the replay."""
    image = kitti_copy / "image_2" / "000003.png"
    before = _digest(image)
    (tmp_path / "link").symlink_to(kitti_copy / "image_2")
    for out, folder in (
        (image, kitti_copy / "image_2"),
        (tmp_path / "link" / "000003.png", kitti_copy / "image_2"),
        (kitti_copy / "calib" / "new.png", kitti_copy / "calib"),
        (kitti_copy / "velodyne_reduced" / "new.png", kitti_copy / "velodyne_reduced"),
    ):
        err = _fails(capsys, "calib", "check", "--frames", str(kitti_copy), "--out", str(out))
        assert err == (
            f"perception calib check: error: {out}: is in {folder}, which this command reads; "
            "--out must be written elsewhere"
        )
    assert _digest(image) == before
    assert not (kitti_copy / "calib" / "new.png").exists()


def test_drive_outputs_never_name_the_drive_or_replace_a_file(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    synth_drive: Callable[[int, float], Path],
) -> None:
    """A drive named as a picture is no --out; an existing --out or --refine is replaced only
    with --overwrite (as `import` and `record` ask), refused before the replay."""
    drive = tmp_path / "drive.png"
    shutil.copyfile(synth_drive(2, 1.0), drive)
    before = _digest(drive)
    err = _fails(capsys, "calib", "check", "--drive", str(drive), "--out", str(drive))
    assert err == (
        f"perception calib check: error: {drive}: is also an input of this command; --out must "
        "be another file"
    )
    assert _digest(drive) == before
    picture, refined = tmp_path / "p.png", tmp_path / "r.yaml"
    picture.write_bytes(b"kept")
    refined.write_text("kept: 1\n")
    for option, path in (("--out", picture), ("--refine", refined)):
        err = _fails(capsys, "calib", "check", "--drive", str(drive), option, str(path))
        assert err == (
            f"perception calib check: error: {path}: exists; give --overwrite to replace it, "
            f"or another {option}"
        )
    assert picture.read_bytes() == b"kept" and refined.read_text() == "kept: 1\n"


def test_an_existing_overlay_is_replaced_only_with_overwrite(
    capsys: pytest.CaptureFixture[str], kitti_copy: Path, tmp_path: Path
) -> None:
    out = tmp_path / "overlay.png"
    out.write_bytes(b"kept")
    err = _fails(capsys, *_single(kitti_copy, out))
    assert err == (
        f"perception calib check: error: {out}: exists; give --overwrite to replace it, or "
        "another --out"
    )
    assert out.read_bytes() == b"kept"
    assert main([*_single(kitti_copy, out), "--overwrite"]) == 0
    assert f"overlay written to {out}" in capsys.readouterr().out
    assert out.read_bytes().startswith(b"\x89PNG")


@pytest.mark.timeout(30)  # the read blocked for ever on a pipe without a writer
@pytest.mark.parametrize(
    ("name", "what"), [("scan.bin", "lidar scan"), ("scan.pcd", "point cloud")]
)
def test_a_pipe_as_the_scan_is_named_not_waited_on(
    capsys: pytest.CaptureFixture[str], kitti_copy: Path, tmp_path: Path, name: str, what: str
) -> None:
    pipe = tmp_path / name
    os.mkfifo(pipe)
    err = _fails(capsys, *_single(kitti_copy, tmp_path / "o.png", lidar=pipe))
    assert err == (
        f"perception calib check: error: {pipe}: {what} is not a regular file (a device, pipe "
        "or socket)"
    )
    assert not (tmp_path / "o.png").exists()


def test_a_pipe_as_the_image_is_named_not_missing(
    capsys: pytest.CaptureFixture[str], kitti_copy: Path, tmp_path: Path
) -> None:
    pipe = tmp_path / "image.png"
    os.mkfifo(pipe)
    err = _fails(capsys, *_single(kitti_copy, tmp_path / "o.png", image=pipe))
    assert err == (
        f"perception calib check: error: {pipe}: image is not a regular file (a device, pipe or "
        "socket)"
    )


def test_a_scan_larger_than_a_sweep_may_hold_is_refused_unread(
    capsys: pytest.CaptureFixture[str], kitti_copy: Path, tmp_path: Path
) -> None:
    """A 4 GiB scan (sparse: it takes no disk) was read whole and OOM-killed the check."""
    scan = tmp_path / "huge.bin"
    with scan.open("wb") as f:
        f.truncate(4 << 30)
    err = _fails(capsys, *_single(kitti_copy, tmp_path / "o.png", lidar=scan))
    assert err == (
        f"perception calib check: error: {scan}: lidar scan of {4 << 30} bytes ({4 << 26} "
        f"points), above the limit of {DEFAULT_LIMITS.max_points} points a sweep may hold"
    )
