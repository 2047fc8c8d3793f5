"""Progress on the long commands, as a user at a terminal sees it: the commands run in a
pseudo-terminal (bars are drawn only when stderr is a terminal) and the bars are read back."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from replay.datasets.kitti_object import KittiObjectFolder
from replay.drive import DriveWriter


def _in_terminal(*argv: str, cwd: Path, timeout_s: float = 120.0) -> tuple[int, str]:
    """Runs `perception argv` with stdout and stderr on a pseudo-terminal; (exit code, text)."""
    leader, follower = pty.openpty()
    # A fresh pseudo-terminal is 0 columns wide; a bar needs a terminal's width.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", *argv],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process has exited
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    code = proc.wait(timeout=10)
    return code, b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def kitti_drive(tmp_path_factory: pytest.TempPathFactory, kitti_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("drives") / "kitti.mcap"
    with DriveWriter(path) as writer:
        for msg in KittiObjectFolder(kitti_dir).messages():
            writer.write(msg, msg.header.stamp_ns)
    return path


def test_replay_of_a_drive_shows_its_sweep_count(
    kitti_drive: Path, yolox_path: Path, tmp_path: Path
) -> None:
    code, text = _in_terminal(
        "replay", str(kitti_drive), "--out", "d.jsonl", "--model", str(yolox_path), cwd=tmp_path
    )
    assert code == 0, text
    assert "8/8" in text and "sweep" in text
    code, text = _in_terminal(
        "replay", str(kitti_drive), "--out", "q.jsonl", "--model", str(yolox_path), "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0 and "8/8" not in text


def test_import_shows_progress(kitti_dir: Path, tmp_path: Path) -> None:
    code, text = _in_terminal("import", "kitti-object", str(kitti_dir), "--out", "k.mcap",
                              cwd=tmp_path)  # fmt: skip
    assert code == 0, text
    assert "importing training" in text and "8/8" in text


@pytest.mark.slow
def test_demo_shows_the_generation_and_the_run(tmp_path: Path) -> None:
    code, text = _in_terminal("demo", "--seconds", "0.5", "--out-dir", "d", cwd=tmp_path)
    assert code == 0, text
    assert "generating the drive" in text and "running the pipeline" in text
    assert "5/5" in text
    assert "recall" in text  # the report follows the bars
